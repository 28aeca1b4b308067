"""Where a call can be sent: the small vocabulary shared by hunt groups, night service,
forwarding and the auto attendant.

It lives in its own module so that hunt, attendant and model can all name a target
without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TargetKind(enum.Enum):
    """What kind of thing a Target names; the runtime resolves each kind differently."""

    NUMBER = "number"  # anything dialable: an extension, a hunt pilot, an outside number
    VOICEMAIL = "voicemail"  # a mailbox, by extension
    ATTENDANT = "attendant"  # an auto attendant, by name
    HANGUP = "hangup"  # nowhere: end the call politely


@dataclass(frozen=True, slots=True)
class Target:
    """A destination. `value` is the number, mailbox or attendant name ("" for HANGUP)."""

    kind: TargetKind
    value: str = ""

    @classmethod
    def number(cls, value: str) -> Target:
        return cls(TargetKind.NUMBER, value)

    @classmethod
    def voicemail(cls, mailbox: str) -> Target:
        return cls(TargetKind.VOICEMAIL, mailbox)

    @classmethod
    def attendant(cls, name: str) -> Target:
        return cls(TargetKind.ATTENDANT, name)

    @classmethod
    def hangup(cls) -> Target:
        return cls(TargetKind.HANGUP)
