"""The voicemail store: mailboxes, messages, greetings, PINs, MWI counts.

Audio in and out is **8 kHz G.711 µ-law codes**, one byte a sample: what the prompts use
and what a PCMU leg carries. An application recording 16-bit PCM converts first with
``sipstack.media.g711.ulaw_encode``; one recording from a PCMA leg with ``alaw_to_ulaw``.

On disk (``STATE_DIR/voicemail/``, 0700)::

    key                     32-byte AES-256-GCM key, 0600, created once, never rewritten
    pepper                  32-byte PIN pepper, 0600, likewise
    <mailbox>/              0700, one per extension
        <id>.msg            a message, sealed (agent.voicemail.sealed), 0600
        <kind>-<id>.grt     a greeting (unavailable | busy | name), sealed, 0600

Metadata lives in the SQLite store (``vm_messages``, ``vm_greetings``, ``vm_pins``). The
order of every write is *file durable, then row committed*; of every delete *row
committed, then file removed*. So after a crash at any point the only debris is a file
without a row, which :meth:`VoicemailStore.recover` (run on construction) deletes. A row
whose file is gone (someone deleted it, a restored database) is logged and removed there
too, and listed in :attr:`VoicemailStore.recovery`.

All methods block (fsync, scrypt): call them from a thread (``asyncio.to_thread``) in the
daemon. Change hooks run in the calling thread. One process should own the store (the
agent): recovery at construction assumes no other writer is half-way through a save.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.prompts.wavfile import write_wav
from agent.store import (
    Store,
    StoreError,
    VoicemailGreetingRow,
    VoicemailMessageRow,
    VoicemailPinRow,
)

from . import pin as pins
from .sealed import (
    TEMP_PREFIX,
    CorruptFile,
    SealError,
    associated_data,
    ensure_private_dir,
    load_or_create_secret,
    open_sealed,
    seal,
    write_durable,
)

__all__ = [
    "FOLDERS",
    "GREETING_KINDS",
    "REASONS",
    "SAMPLE_RATE",
    "BadMailbox",
    "ChangeHook",
    "CorruptAudio",
    "GreetingInfo",
    "MailboxFull",
    "MessageInfo",
    "MessageTooLong",
    "NoSuchMessage",
    "PinResult",
    "RecoveryReport",
    "StorageError",
    "VoicemailError",
    "VoicemailStore",
    "WeakPin",
]

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 8000  # µ-law: one byte a sample
FOLDERS: Final = ("new", "saved")
REASONS: Final = ("busy", "no-answer", "forward", "direct")
GREETING_KINDS: Final = ("unavailable", "busy", "name")
#: Recording stops on the app's timer, so the last RTP frames can overrun a little.
LENGTH_GRACE_SECONDS: Final = 1.0
SUBDIR: Final = "voicemail"
_MAILBOX_RE: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.+-]{0,63}")
_MSG_RE: Final = re.compile(r"([0-9a-f]{16})\.msg")
_GREETING_RE: Final = re.compile(r"(unavailable|busy|name)-([0-9a-f]{16})\.grt")

MessageInfo = VoicemailMessageRow
GreetingInfo = VoicemailGreetingRow
#: ``hook(mailbox, new, saved)`` after a change of a mailbox's counts.
ChangeHook = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- errors


class VoicemailError(Exception):
    """Base of the voicemail store's errors; ``str()`` is a sentence fit for a log or a UI."""


class StorageError(VoicemailError):
    """The audio could not be written or read (disk full, I/O error, database error).
    Nothing already stored was changed. ``errno`` is the OS error number when known."""

    def __init__(self, message: str, *, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class CorruptAudio(StorageError):
    """A stored file fails authentication: tampered, truncated, moved, or the key changed."""


class MailboxFull(VoicemailError):
    """The mailbox holds its maximum number of messages ("the mailbox is full")."""


class MessageTooLong(VoicemailError, ValueError):
    """The recording exceeds the maximum message length."""


class NoSuchMessage(VoicemailError, LookupError):
    """No such message (or greeting) in that mailbox."""


class BadMailbox(VoicemailError, ValueError):
    """Not a valid mailbox name (mailboxes are extensions)."""


class WeakPin(VoicemailError, ValueError):
    """A PIN refused by the PIN policy; the message says why."""


@dataclass(frozen=True, slots=True)
class PinResult:
    ok: bool
    locked: bool  #: the mailbox is locked (now, or by this attempt)
    remaining: int  #: wrong PINs left before the lock (0 when locked)
    reason: str  #: "ok" | "wrong PIN" | "locked" | "no PIN set"
    locked_until: float | None = None  #: when locked: None = until an admin unlocks


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`VoicemailStore.recover` cleaned up."""

    removed_files: list[str] = field(default_factory=list)  #: debris: temp or row-less
    missing: list[str] = field(default_factory=list)  #: rows whose file was gone (removed)
    unknown: list[str] = field(default_factory=list)  #: files left alone (not ours)


# --------------------------------------------------------------------------- the store


class VoicemailStore:
    """Mailboxes over ``state_dir/voicemail`` (files) and ``store`` (metadata)."""

    def __init__(
        self,
        state_dir: str | Path,
        store: Store,
        *,
        max_messages: int = 100,
        max_seconds: float = 180.0,
        pin_attempts: int = 5,
        lockout_seconds: float | None = 15 * 60,
        pin_min_length: int = 4,
        pin_max_length: int = 12,
        clock: Callable[[], float] = time.time,
        recover: bool = True,
    ) -> None:
        if max_messages < 1 or max_seconds <= 0 or pin_attempts < 1:
            raise ValueError("max_messages, max_seconds and pin_attempts must be positive")
        self.root = Path(state_dir) / SUBDIR
        self.store = store
        self.max_messages = max_messages
        self.max_seconds = max_seconds
        self.pin_attempts = pin_attempts
        self.lockout_seconds = lockout_seconds
        self.pin_min_length = pin_min_length
        self.pin_max_length = pin_max_length
        self.clock = clock
        self._hooks: list[ChangeHook] = []
        self._lock = threading.Lock()  # guards _pin_locks and greeting replacement
        self._pin_locks: dict[str, threading.Lock] = {}
        try:
            Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            ensure_private_dir(self.root)
            self._aead = AESGCM(load_or_create_secret(self.root / "key"))
            self._pepper = load_or_create_secret(self.root / "pepper")
        except (OSError, SealError) as exc:
            raise StorageError(f"voicemail storage unusable: {exc}") from exc
        self.recovery = self.recover() if recover else RecoveryReport()

    # ---- hooks ------------------------------------------------------------------

    def on_change(self, hook: ChangeHook) -> Callable[[], None]:
        """Call ``hook(mailbox, new, saved)`` whenever a mailbox's counts change (MWI).
        Returns a function that unsubscribes it. A hook that raises is logged, not fatal."""
        self._hooks.append(hook)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._hooks.remove(hook)

        return unsubscribe

    def _changed(self, mailbox: str, counts: tuple[int, int] | None = None) -> None:
        if not self._hooks:
            return
        new, saved = counts if counts is not None else self.counts(mailbox)
        for hook in list(self._hooks):
            try:
                hook(mailbox, new, saved)
            except Exception:
                log.exception("voicemail change hook failed for mailbox %s", mailbox)

    # ---- paths and crypto -------------------------------------------------------

    @staticmethod
    def _check_mailbox(mailbox: str) -> str:
        if not isinstance(mailbox, str) or not _MAILBOX_RE.fullmatch(mailbox):
            raise BadMailbox(f"bad mailbox {mailbox!r}: mailboxes are extension numbers")
        return mailbox

    def _dir(self, mailbox: str) -> Path:
        return self.root / mailbox

    def _message_path(self, row: VoicemailMessageRow) -> Path:
        return self._dir(row.mailbox) / f"{row.id}.msg"

    def _greeting_path(self, row: VoicemailGreetingRow) -> Path:
        return self._dir(row.mailbox) / f"{row.kind}-{row.id}.grt"

    @staticmethod
    def _message_aad(row: VoicemailMessageRow) -> bytes:
        return associated_data(
            mailbox=row.mailbox, object_id=row.id, kind="message", created=row.received_at
        )

    @staticmethod
    def _greeting_aad(row: VoicemailGreetingRow) -> bytes:
        return associated_data(
            mailbox=row.mailbox,
            object_id=row.id,
            kind=f"greeting-{row.kind}",
            created=row.created,
        )

    def _write(self, mailbox: str, name: str, sealed: bytes) -> Path:
        try:
            ensure_private_dir(self._dir(mailbox))
            return write_durable(self._dir(mailbox), name, sealed)
        except SealError as exc:
            raise StorageError(
                f"cannot store voicemail for mailbox {mailbox}: {exc}", errno_=exc.errno
            ) from exc
        except OSError as exc:
            raise StorageError(
                f"cannot store voicemail for mailbox {mailbox}: {exc.strerror}", errno_=exc.errno
            ) from exc

    def _read(self, path: Path, aad: bytes, what: str) -> bytes:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{what}: its audio file is missing ({path})") from None
        except OSError as exc:
            raise StorageError(
                f"{what}: cannot read {path}: {exc.strerror}", errno_=exc.errno
            ) from exc
        try:
            return open_sealed(self._aead, blob, aad, what=what)
        except CorruptFile as exc:
            raise CorruptAudio(str(exc)) from None

    def _check_audio(self, audio: bytes, what: str) -> float:
        if not isinstance(audio, bytes | bytearray | memoryview):
            raise TypeError(f"{what} audio must be µ-law bytes")
        if not audio:
            raise ValueError(f"{what}: the recording is empty")
        seconds = len(audio) / SAMPLE_RATE
        if seconds > self.max_seconds + LENGTH_GRACE_SECONDS:
            raise MessageTooLong(
                f"{what}: the recording is {seconds:.0f} s long; at most "
                f"{self.max_seconds:.0f} s are allowed"
            )
        return seconds

    # ---- messages ---------------------------------------------------------------

    def save_message(
        self,
        mailbox: str,
        audio_ulaw: bytes,
        caller: str = "",
        caller_name: str = "",
        reason: str = "no-answer",
    ) -> MessageInfo:
        """Store a new message (8 kHz µ-law codes) in the ``new`` folder; returns its info.

        Raises :class:`MailboxFull`, :class:`MessageTooLong`, :class:`StorageError` (disk
        full, I/O: nothing is left behind and earlier messages are untouched),
        :class:`BadMailbox`, ``ValueError`` (empty audio, unknown reason).
        """
        self._check_mailbox(mailbox)
        if reason not in REASONS:
            raise ValueError(f"bad reason {reason!r}; one of {', '.join(REASONS)}")
        seconds = self._check_audio(audio_ulaw, f"message for mailbox {mailbox}")
        if sum(self.counts(mailbox)) >= self.max_messages:
            raise MailboxFull(f"the mailbox {mailbox} is full ({self.max_messages} messages)")
        row = VoicemailMessageRow(
            id=secrets.token_hex(8),
            mailbox=mailbox,
            caller=caller,
            caller_name=caller_name,
            received_at=self.clock(),
            duration=seconds,
            folder="new",
            reason=reason,
            size=len(audio_ulaw),
        )
        path = self._write(
            mailbox, f"{row.id}.msg", seal(self._aead, bytes(audio_ulaw), self._message_aad(row))
        )
        try:
            counts = self.store.vm_add_message(row, max_messages=self.max_messages)
        except (sqlite3.Error, StoreError) as exc:
            self._unlink(path)
            raise StorageError(f"cannot record the message for mailbox {mailbox}: {exc}") from exc
        except BaseException:
            self._unlink(path)
            raise
        if counts is None:  # filled up meanwhile
            self._unlink(path)
            raise MailboxFull(f"the mailbox {mailbox} is full ({self.max_messages} messages)")
        self._changed(mailbox, counts)
        return row

    def list_messages(self, mailbox: str, folder: str | None = None) -> list[MessageInfo]:
        """Messages of a mailbox (optionally one folder), oldest first."""
        self._check_mailbox(mailbox)
        if folder is not None and folder not in FOLDERS:
            raise ValueError(f"bad folder {folder!r}; one of {', '.join(FOLDERS)}")
        return self.store.vm_messages(mailbox, folder)

    def message(self, mailbox: str, message_id: str) -> MessageInfo:
        row = self.store.vm_message(self._check_mailbox(mailbox), message_id)
        if row is None:
            raise NoSuchMessage(f"no message {message_id!r} in mailbox {mailbox}")
        return row

    def read_audio(self, mailbox: str, message_id: str) -> bytes:
        """The decrypted µ-law audio of a message. :class:`CorruptAudio` if the file fails
        authentication, :class:`StorageError` if it cannot be read."""
        row = self.message(mailbox, message_id)
        return self._read(
            self._message_path(row),
            self._message_aad(row),
            f"message {message_id} of mailbox {mailbox}",
        )

    def mark_saved(self, mailbox: str, message_id: str) -> None:
        self._move(mailbox, message_id, "saved")

    def mark_new(self, mailbox: str, message_id: str) -> None:
        self._move(mailbox, message_id, "new")

    def _move(self, mailbox: str, message_id: str, folder: str) -> None:
        row = self.message(mailbox, message_id)
        if row.folder != folder and self.store.vm_set_folder(mailbox, message_id, folder):
            self._changed(mailbox)

    def delete(self, mailbox: str, message_id: str) -> None:
        """Delete a message (row first, then its file: a crash leaves only debris)."""
        row = self.message(mailbox, message_id)
        if self.store.vm_delete_message(mailbox, message_id):
            self._unlink(self._message_path(row))
            self._changed(mailbox)

    def purge_older_than(self, seconds: float) -> int:
        """Retention: delete every message received more than ``seconds`` ago (any folder,
        any mailbox). Returns how many were deleted."""
        cutoff = self.clock() - seconds
        touched: set[str] = set()
        count = 0
        for row in self.store.vm_messages(received_before=cutoff):
            if self.store.vm_delete_message(row.mailbox, row.id):
                self._unlink(self._message_path(row))
                touched.add(row.mailbox)
                count += 1
        for mailbox in sorted(touched):
            self._changed(mailbox)
        return count

    def counts(self, mailbox: str) -> tuple[int, int]:
        """(new, saved) message counts: for MWI ("Messages-Waiting", "Voice-Message: n/m")."""
        return self.store.vm_counts(mailbox)

    # ---- greetings --------------------------------------------------------------

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in GREETING_KINDS:
            raise ValueError(f"bad greeting kind {kind!r}; one of {', '.join(GREETING_KINDS)}")

    def save_greeting(self, mailbox: str, kind: str, audio_ulaw: bytes) -> GreetingInfo:
        """Store (replacing) the mailbox's ``kind`` greeting: 8 kHz µ-law codes (an upload
        goes through :func:`agent.prompts.convert_upload` first). The new file gets a new
        id, so the old greeting stays intact until the new row is committed."""
        self._check_mailbox(mailbox)
        self._check_kind(kind)
        seconds = self._check_audio(audio_ulaw, f"{kind} greeting of mailbox {mailbox}")
        row = VoicemailGreetingRow(
            mailbox=mailbox,
            kind=kind,
            id=secrets.token_hex(8),
            created=self.clock(),
            duration=seconds,
            size=len(audio_ulaw),
        )
        path = self._write(
            mailbox,
            f"{kind}-{row.id}.grt",
            seal(self._aead, bytes(audio_ulaw), self._greeting_aad(row)),
        )
        try:
            old = self.store.vm_put_greeting(row)
        except (sqlite3.Error, StoreError) as exc:
            self._unlink(path)
            raise StorageError(f"cannot record the greeting for mailbox {mailbox}: {exc}") from exc
        except BaseException:
            self._unlink(path)
            raise
        if old is not None:
            self._unlink(self._greeting_path(old))
        return row

    def greeting(self, mailbox: str, kind: str) -> bytes | None:
        """The decrypted µ-law audio of a greeting, or None if the mailbox has none."""
        self._check_mailbox(mailbox)
        self._check_kind(kind)
        row = self.store.vm_greeting(mailbox, kind)
        if row is None:
            return None
        return self._read(
            self._greeting_path(row),
            self._greeting_aad(row),
            f"{kind} greeting of mailbox {mailbox}",
        )

    def greetings(self, mailbox: str) -> list[GreetingInfo]:
        return self.store.vm_greetings(self._check_mailbox(mailbox))

    def delete_greeting(self, mailbox: str, kind: str) -> bool:
        """Remove a greeting (back to the system one). True if there was one."""
        self._check_mailbox(mailbox)
        self._check_kind(kind)
        old = self.store.vm_delete_greeting(mailbox, kind)
        if old is None:
            return False
        self._unlink(self._greeting_path(old))
        return True

    # ---- PINs -------------------------------------------------------------------

    def pin_problem(self, mailbox: str, pin: str) -> str | None:
        """Why the policy refuses ``pin`` for ``mailbox`` (None: acceptable)."""
        return pins.pin_problem(
            pin, mailbox, min_length=self.pin_min_length, max_length=self.pin_max_length
        )

    def set_pin(
        self, mailbox: str, pin: str, *, actor: str = "system", role: str = "system"
    ) -> None:
        """Set (or change) a mailbox's PIN: :class:`WeakPin` if the policy refuses it.
        Clears the wrong-PIN count and any lock; audited (``voicemail.pin_set``, no PIN)."""
        self._check_mailbox(mailbox)
        problem = self.pin_problem(mailbox, pin)
        if problem is not None:
            raise WeakPin(problem)
        v = pins.make_verifier(pin, self._pepper)
        now = self.clock()
        with self._pin_lock(mailbox):
            self.store.vm_set_pin(
                mailbox, scheme=v.scheme, salt=v.salt, digest=v.digest, n=v.n, r=v.r, p=v.p, now=now
            )
        self.store.append_audit(
            actor=actor, role=role, action="voicemail.pin_set", detail={"mailbox": mailbox}, ts=now
        )

    def has_pin(self, mailbox: str) -> bool:
        return self.store.vm_pin(self._check_mailbox(mailbox)) is not None

    def _pin_lock(self, mailbox: str) -> threading.Lock:
        with self._lock:
            return self._pin_locks.setdefault(mailbox, threading.Lock())

    @staticmethod
    def _locked(row: VoicemailPinRow, now: float) -> bool:
        return row.locked_at is not None and (row.locked_until is None or now < row.locked_until)

    def check_pin(self, mailbox: str, pin: str, now: float | None = None) -> PinResult:
        """Check a PIN entered at the phone. Wrong PINs count per mailbox (persisted); the
        ``pin_attempts``-th locks the mailbox for ``lockout_seconds`` (None: until
        :meth:`unlock`), audited as ``voicemail.locked``. While locked nothing is checked.
        Attempts on one mailbox are serialised, so parallel calls cannot exceed the count.
        """
        self._check_mailbox(mailbox)
        now = self.clock() if now is None else now
        with self._pin_lock(mailbox):
            row = self.store.vm_pin(mailbox)
            if row is None:
                return PinResult(False, False, self.pin_attempts, "no PIN set")
            if self._locked(row, now):
                return PinResult(False, True, 0, "locked", row.locked_until)
            verifier = pins.PinVerifier(row.scheme, row.salt, row.digest, row.n, row.r, row.p)
            if pins.verify(pin, self._pepper, verifier):
                if row.failures or row.locked_at is not None:
                    self.store.vm_pin_clear_failures(mailbox)
                return PinResult(True, False, self.pin_attempts, "ok")
            after = self.store.vm_pin_failed(
                mailbox,
                now,
                max_attempts=self.pin_attempts,
                lockout_seconds=self.lockout_seconds,
            )
        if after is None:  # PIN removed meanwhile
            return PinResult(False, False, self.pin_attempts, "no PIN set")
        if self._locked(after, now):
            log.warning("voicemail mailbox %s locked after %d wrong PINs", mailbox, after.failures)
            return PinResult(False, True, 0, "locked", after.locked_until)
        return PinResult(False, False, max(0, self.pin_attempts - after.failures), "wrong PIN")

    def is_locked(self, mailbox: str, now: float | None = None) -> bool:
        row = self.store.vm_pin(self._check_mailbox(mailbox))
        return row is not None and self._locked(row, self.clock() if now is None else now)

    def unlock(self, mailbox: str, *, actor: str = "system", role: str = "admin") -> bool:
        """Lift a lock and clear the wrong-PIN count (admin). True if there was anything to
        clear; audited as ``voicemail.unlocked`` when so."""
        self._check_mailbox(mailbox)
        with self._pin_lock(mailbox):
            cleared = self.store.vm_pin_clear_failures(mailbox)
        if cleared:
            self.store.append_audit(
                actor=actor,
                role=role,
                action="voicemail.unlocked",
                detail={"mailbox": mailbox},
                ts=self.clock(),
            )
        return cleared

    # ---- privacy ----------------------------------------------------------------

    def export(self, mailbox: str) -> Iterator[tuple[str, bytes]]:
        """Privacy export: ``(name, content)`` pairs, one at a time (the caller zips or
        writes them): ``messages/<folder>/<UTC time>-<id>.wav`` and ``greetings/<kind>.wav``
        (decrypted, 8 kHz µ-law WAV), then ``mailbox.json`` (the metadata). Never the PIN."""
        self._check_mailbox(mailbox)
        messages = self.list_messages(mailbox)
        greetings = self.greetings(mailbox)
        for row in messages:
            stamp = datetime.fromtimestamp(row.received_at, UTC).strftime("%Y%m%dT%H%M%SZ")
            yield (
                f"messages/{row.folder}/{stamp}-{row.id}.wav",
                write_wav(self.read_audio(mailbox, row.id)),
            )
        for g in greetings:
            audio = self._read(
                self._greeting_path(g),
                self._greeting_aad(g),
                f"{g.kind} greeting of mailbox {mailbox}",
            )
            yield f"greetings/{g.kind}.wav", write_wav(audio)
        meta = {
            "mailbox": mailbox,
            "messages": [
                {
                    "id": m.id,
                    "caller": m.caller,
                    "caller_name": m.caller_name,
                    "received_at": m.received_at,
                    "duration": m.duration,
                    "folder": m.folder,
                    "reason": m.reason,
                }
                for m in messages
            ],
            "greetings": [
                {"kind": g.kind, "created": g.created, "duration": g.duration} for g in greetings
            ],
            "pin_set": self.has_pin(mailbox),
        }
        yield "mailbox.json", json.dumps(meta, indent=2, ensure_ascii=False).encode()

    def delete_mailbox(self, mailbox: str) -> int:
        """Privacy purge / user removed: every message, greeting and the PIN. Returns the
        number of messages deleted."""
        self._check_mailbox(mailbox)
        messages, greetings = self.store.vm_delete_mailbox(mailbox)
        for m in messages:
            self._unlink(self._message_path(m))
        for g in greetings:
            self._unlink(self._greeting_path(g))
        with contextlib.suppress(OSError):
            self._dir(mailbox).rmdir()  # only if empty: unknown files stay
        if messages:
            self._changed(mailbox, (0, 0))
        return len(messages)

    # ---- recovery ---------------------------------------------------------------

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc.strerror)

    def recover(self) -> RecoveryReport:
        """Reconcile files and rows after a crash: delete temp files and files without a
        row; remove (and report) rows without a file. Run at construction."""
        report = RecoveryReport()
        messages: dict[str, set[str]] = {}
        greetings: dict[str, set[tuple[str, str]]] = {}
        for m in self.store.vm_messages():
            messages.setdefault(m.mailbox, set()).add(m.id)
        for g in self.store.vm_greetings():
            greetings.setdefault(g.mailbox, set()).add((g.kind, g.id))
        present: set[tuple[str, str]] = set()
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                if entry.name.startswith(TEMP_PREFIX):
                    self._unlink(entry)
                    report.removed_files.append(str(entry))
                continue
            mailbox = entry.name
            for f in sorted(entry.iterdir()):
                name = f.name
                msg = _MSG_RE.fullmatch(name)
                grt = _GREETING_RE.fullmatch(name)
                if (msg and msg[1] in messages.get(mailbox, ())) or (
                    grt and (grt[1], grt[2]) in greetings.get(mailbox, ())
                ):
                    present.add((mailbox, name))
                elif msg or grt or name.startswith(TEMP_PREFIX):
                    self._unlink(f)
                    report.removed_files.append(str(f))
                else:
                    report.unknown.append(str(f))
        touched: set[str] = set()
        for mailbox, ids in messages.items():
            for mid in sorted(ids):
                if (mailbox, f"{mid}.msg") not in present:
                    self.store.vm_delete_message(mailbox, mid)
                    report.missing.append(f"message {mid} of mailbox {mailbox}")
                    touched.add(mailbox)
        for mailbox, kinds in greetings.items():
            for kind, gid in sorted(kinds):
                if (mailbox, f"{kind}-{gid}.grt") not in present:
                    self.store.vm_delete_greeting(mailbox, kind)
                    report.missing.append(f"{kind} greeting of mailbox {mailbox}")
        if report.removed_files:
            log.info(
                "voicemail: removed %d unfinished file(s) left by a crash",
                len(report.removed_files),
            )
        for what in report.missing:
            log.warning("voicemail: the audio of %s is missing; removed its entry", what)
        for path in report.unknown:
            log.warning("voicemail: unexpected file %s left alone", path)
        for mailbox in sorted(touched):
            self._changed(mailbox)
        return report
