"""Sealed files: AES-256-GCM file format, durable writes, and the 0600 secret files.

File format (``.msg`` / ``.grt``)::

    b"EPVM" | version (1 byte, 1) | nonce (12 bytes, fresh per file) | ciphertext + 16-byte tag

The associated data is the 5-byte header followed by canonical JSON of the object's
identity: ``{"created", "id", "kind", "mailbox"}``. The reader rebuilds it from the
database row, never from the file, so a file copied or moved to another mailbox or
message id (or whose row was changed) fails authentication just like a flipped bit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "HEADER",
    "KEY_BYTES",
    "NONCE_BYTES",
    "CorruptFile",
    "SealError",
    "associated_data",
    "ensure_private_dir",
    "fsync_dir",
    "load_or_create_secret",
    "open_sealed",
    "seal",
    "write_durable",
]

MAGIC: Final = b"EPVM"
VERSION: Final = 1
HEADER: Final = MAGIC + bytes([VERSION])
NONCE_BYTES: Final = 12  # 96 bits, GCM's native nonce size
KEY_BYTES: Final = 32  # AES-256
TAG_BYTES: Final = 16
TEMP_PREFIX: Final = ".tmp-"


class SealError(Exception):
    """A sealed file or a secret file that cannot be written or read. ``errno`` is the
    OS error number when there was one (``errno.ENOSPC``: the disk is full)."""

    def __init__(self, message: str, *, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class CorruptFile(SealError):
    """Decryption failed: the file was altered, truncated, or belongs to another object."""


def associated_data(*, mailbox: str, object_id: str, kind: str, created: float) -> bytes:
    ident = {"created": float(created), "id": object_id, "kind": kind, "mailbox": mailbox}
    return HEADER + json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()


def seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return HEADER + nonce + aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM, blob: bytes, aad: bytes, *, what: str) -> bytes:
    if len(blob) < len(HEADER) + NONCE_BYTES + TAG_BYTES or not blob.startswith(MAGIC):
        raise CorruptFile(f"{what}: not an edgepbx voicemail file (truncated or damaged)")
    if blob[len(MAGIC)] != VERSION:
        raise CorruptFile(f"{what}: unknown file format version {blob[len(MAGIC)]}")
    nonce = blob[len(HEADER) : len(HEADER) + NONCE_BYTES]
    try:
        return aead.decrypt(nonce, blob[len(HEADER) + NONCE_BYTES :], aad)
    except InvalidTag:
        raise CorruptFile(
            f"{what}: cannot be decrypted: the file was altered, or it belongs to another "
            "mailbox or message, or the voicemail key changed"
        ) from None


# --------------------------------------------------------------------------- files


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (0700) if missing, fsyncing its parent; tighten an existing one."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not path.is_dir() or path.is_symlink():
            raise SealError(f"{path} exists and is not a directory") from None
    else:
        fsync_dir(path.parent)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_durable(directory: Path, name: str, data: bytes) -> Path:
    """Write ``directory/name`` (0600) so that it is either absent or complete and durable:
    temp file, write, fsync, rename, fsync the directory. ``name`` must not exist yet (names
    are unique). On any error nothing is left behind (neither the temp nor the final file)
    and :class:`SealError` is raised with the OS error number.
    """
    final = directory / name
    tmp: str | None = None
    renamed = False
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)  # 0600, O_EXCL
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        renamed = True
        fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if tmp is not None:
                os.unlink(final if renamed else tmp)
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = f"the disk is full ({reason})"
        raise SealError(f"cannot write {final}: {reason}", errno_=exc.errno) from exc
    return final


def load_or_create_secret(path: Path, size: int = KEY_BYTES) -> bytes:
    """Read a ``size``-byte secret file, creating it (random, 0600) if missing.

    Creation is atomic: the secret is written and fsynced under a temp name and then
    hard-linked to ``path``, which fails if another process created it first (then theirs
    is used). An existing file is never rewritten; one of the wrong size raises
    :class:`SealError` rather than being replaced (that would orphan everything sealed
    with it).
    """
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SealError(f"cannot read {path}: {exc.strerror}", errno_=exc.errno) from exc
        else:
            try:
                st = os.fstat(fd)
                if stat.S_IMODE(st.st_mode) & 0o077:
                    os.fchmod(fd, 0o600)
                secret = os.read(fd, size + 1)
            finally:
                os.close(fd)
            if len(secret) != size:
                raise SealError(
                    f"{path} is damaged ({len(secret)} bytes, expected {size}); refusing to "
                    "replace it (everything sealed with it would be lost): restore it from a "
                    "backup, or move it away to start afresh"
                )
            return secret
        secret = secrets.token_bytes(size)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
            try:
                _write_all(fd, secret)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue  # created meanwhile by someone else: read theirs
            fsync_dir(path.parent)
            return secret
        except OSError as exc:
            raise SealError(f"cannot create {path}: {exc.strerror}", errno_=exc.errno) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    raise SealError(f"cannot read or create {path}")
