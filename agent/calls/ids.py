"""Tags, Call-IDs and call ids: unique, unguessable across restarts, and cheap.

A random prefix per process (128 bits from the OS) plus a counter: unique without
asking the OS for randomness on every message, which uuid4() does and which showed
in profiles of the call path. Tags only need to be unique (RFC 3261 §19.3); the
prefix also keeps Call-IDs of one box from colliding with those of a restarted one.
"""

from __future__ import annotations

import itertools
import secrets

_PREFIX = secrets.token_hex(8)
_counter = itertools.count(1)


def new_id() -> str:
    """An id for a Call-ID or a call record: 16 hex characters of prefix and a counter."""
    return f"{_PREFIX}{next(_counter):x}"


def new_tag() -> str:
    """A From/To tag."""
    return f"{_PREFIX[:8]}{next(_counter):x}"
