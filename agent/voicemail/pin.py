"""Voicemail PINs: the policy (what is too weak) and the verifier (never the PIN itself).

Verifier: ``scrypt(HMAC-SHA256(pepper, pin), salt, n=2**14, r=8, p=1, dklen=32)`` with a
16-byte random salt per PIN. The pepper is a 32-byte secret in a file of its own
(``STATE_DIR/voicemail/pepper``), never in the database, so a copy of the database alone
cannot be brute-forced (a 4-digit PIN would fall in seconds otherwise). The scrypt
parameters are stored beside each verifier so they can be raised later.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = [
    "PIN_SCHEME",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "PinVerifier",
    "make_verifier",
    "pin_problem",
    "verify",
]

PIN_SCHEME: Final = "scrypt-hmac-sha256"
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
DIGEST_BYTES: Final = 32
_MAXMEM: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PinVerifier:
    scheme: str
    salt: bytes
    digest: bytes
    n: int
    r: int
    p: int


def _derive(pin: str, pepper: bytes, *, salt: bytes, n: int, r: int, p: int) -> bytes:
    peppered = hmac.new(pepper, pin.encode("utf-8"), hashlib.sha256).digest()
    return hashlib.scrypt(peppered, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=DIGEST_BYTES)


def make_verifier(pin: str, pepper: bytes) -> PinVerifier:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _derive(pin, pepper, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return PinVerifier(PIN_SCHEME, salt, digest, SCRYPT_N, SCRYPT_R, SCRYPT_P)


def verify(pin: str, pepper: bytes, verifier: PinVerifier) -> bool:
    """Constant-time check of ``pin`` (the scrypt runs whatever ``pin`` looks like)."""
    if verifier.scheme != PIN_SCHEME:
        return False
    candidate = _derive(pin, pepper, salt=verifier.salt, n=verifier.n, r=verifier.r, p=verifier.p)
    return hmac.compare_digest(candidate, verifier.digest)


def _is_sequence(pin: str) -> bool:
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    return steps in ({1}, {9})  # 1234, 7890, 4321, 0987


def pin_problem(pin: str, mailbox: str, *, min_length: int = 4, max_length: int = 12) -> str | None:
    """Why ``pin`` is refused for ``mailbox``, or None if it is acceptable."""
    if not (pin.isascii() and pin.isdigit()):
        return "a PIN must be digits only"
    if not min_length <= len(pin) <= max_length:
        return f"a PIN must have {min_length} to {max_length} digits"
    if len(set(pin)) == 1:
        return "a PIN must not be one digit repeated"
    if _is_sequence(pin):
        return "a PIN must not be a run of consecutive digits (like 1234 or 4321)"
    if pin == mailbox or pin == mailbox[::-1]:
        return "a PIN must not be the extension number"
    return None
