"""The agent's SQLite store: registrations, site versions, the audit log, call records.

One file, ``STATE_DIR/edgepbx.db``, mode 0600, in WAL mode with ``synchronous=NORMAL``: a
commit is atomic and survives a crash of the process (``kill -9``); a power cut can lose
the last commits before the next WAL sync, never the database's consistency. That is
SQLite's recommended setting for WAL, and it keeps fsync off the SIP hot path. Every write
is one transaction. The schema is versioned by ordered migrations recorded in
``schema_version``.

Hot path: the registrar batches binding changes and hands them to
:meth:`Store.apply_binding_changes`, which applies a whole batch in ONE transaction (group
commit). The store is synchronous; calls are short. It may be used from one thread at a time
(an internal lock serialises callers, so an executor thread is also fine).

Call detail records are the exception to ``synchronous=NORMAL``:
:meth:`Store.append_call_records` commits with ``synchronous=FULL`` (the WAL is fsynced at
that commit), so a crash or a power cut loses no finished call. CDR batches are rare next to
REGISTERs, so the extra fsync costs little. :meth:`Store.open_readonly` is for the CLI: it
reads the same file without writing anything, also while the agent is down.

The upload outbox (migration 8, used by agent.cloud.outbox) lives here too: CDRs are queued
in the transaction that stores them, the byte bound is enforced in the transaction that
grows the queue (oldest dropped first), and every drop is logged (``event=outbox.drop``)
and counted per kind in ``outbox_drops``.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final, TypeVar

from agent.cdr import (
    CALL_RECORD_FIELDS,
    CallRecord,
    DailyCallStats,
    daily_stats,
    record_as_dict,
    zone,
)

__all__ = [
    "CDR_SCHEMA_VERSION",
    "DB_FILENAME",
    "DEVICES_SCHEMA_VERSION",
    "MIGRATIONS",
    "OUTBOX_DEFAULT_MAX_BYTES",
    "OUTBOX_SCHEMA_VERSION",
    "VM_EMAIL_SCHEMA_VERSION",
    "VOICEMAIL_SCHEMA_VERSION",
    "AuditEntry",
    "BindingChange",
    "BindingRow",
    "DeleteAllBindings",
    "DeleteBinding",
    "DeviceEvent",
    "DeviceFetched",
    "DeviceRow",
    "DeviceSeen",
    "OutboxDiskFull",
    "OutboxDrop",
    "OutboxEnqueued",
    "OutboxRow",
    "SiteVersion",
    "Store",
    "StoreError",
    "UpsertBinding",
    "VmEmailJob",
    "VoicemailGreetingRow",
    "VoicemailMessageRow",
    "VoicemailPinRow",
    "cdr_outbox_payload",
]

DB_FILENAME: Final = "edgepbx.db"

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class StoreError(Exception):
    """The store cannot be opened or used (newer schema, unreadable file, ...)."""


class OutboxDiskFull(StoreError):
    """SQLite said "database or disk is full" while the upload outbox grew, and dropping
    the oldest queued items (reported) did not make room. Nothing was written by the
    failed call; everything queued before it is still there."""


@dataclass(frozen=True, slots=True)
class BindingRow:
    """One registration binding (RFC 3261 §10): an address-of-record to one contact."""

    aor: str  #: the user id the binding belongs to
    contact: str  #: the Contact URI as registered
    expires_at: float  #: epoch seconds
    call_id: str
    cseq: int
    q: float | None
    source_transport: str  #: "udp" | "tcp" | "tls" | ...: where the REGISTER came from
    source_host: str
    source_port: int
    user_agent: str | None
    instance_id: str | None  #: RFC 5626 +sip.instance
    reg_id: int | None  #: RFC 5626 reg-id
    updated_at: float  #: epoch seconds


_BINDING_COLUMNS: Final = tuple(f.name for f in fields(BindingRow))
# dataclasses.astuple deep-copies; on the REGISTER path a flat getter is what we need.
_row_values: Final = operator.attrgetter(*_BINDING_COLUMNS)


@dataclass(frozen=True, slots=True)
class UpsertBinding:
    """Insert or replace the binding ``(row.aor, row.contact)`` with the full row."""

    row: BindingRow


@dataclass(frozen=True, slots=True)
class DeleteBinding:
    """Remove one binding (unregister one contact)."""

    aor: str
    contact: str


@dataclass(frozen=True, slots=True)
class DeleteAllBindings:
    """Remove every binding of an AOR (``Contact: *``)."""

    aor: str


BindingChange = UpsertBinding | DeleteBinding | DeleteAllBindings


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts: float
    actor: str
    role: str
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A provisioning request naming ``mac``: a device exists there (known or not)."""

    mac: str  #: 12 lowercase hex digits
    vendor: str | None
    model_hint: str | None
    ip: str
    at: float  #: epoch seconds
    file: str


@dataclass(frozen=True, slots=True)
class DeviceFetched:
    """A completed transfer of a file rendered for the phone ``mac``."""

    mac: str
    file: str
    sha256: str
    at: float


DeviceEvent = DeviceSeen | DeviceFetched


@dataclass(frozen=True, slots=True)
class DeviceRow:
    mac: str
    vendor: str | None
    model_hint: str | None
    ip: str
    first_seen: float
    last_seen: float
    last_file: str
    fetched_at: float | None
    fetched_file: str | None
    fetched_sha256: str | None


_DEVICE_COLUMNS: Final = tuple(f.name for f in fields(DeviceRow))


@dataclass(frozen=True, slots=True)
class SiteVersion:
    version: int
    fingerprint: str
    applied_at: float
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VoicemailMessageRow:
    """One voicemail message's metadata (the audio is a file; see agent.voicemail)."""

    id: str  #: random hex token, also the file name
    mailbox: str  #: the user's extension
    caller: str  #: calling number ("" if unknown)
    caller_name: str  #: calling name ("" if unknown)
    received_at: float  #: epoch seconds
    duration: float  #: seconds of audio
    folder: str  #: "new" | "saved"
    reason: str  #: "busy" | "no-answer" | "forward" | "direct"
    size: int  #: bytes of audio (8 kHz µ-law: one byte a sample)


_VM_MESSAGE_COLUMNS: Final = tuple(f.name for f in fields(VoicemailMessageRow))


@dataclass(frozen=True, slots=True)
class VoicemailGreetingRow:
    mailbox: str
    kind: str  #: "unavailable" | "busy" | "name"
    id: str  #: random hex token of this recording's file (a new one per upload)
    created: float
    duration: float
    size: int


_VM_GREETING_COLUMNS: Final = tuple(f.name for f in fields(VoicemailGreetingRow))


@dataclass(frozen=True, slots=True)
class VoicemailPinRow:
    """A mailbox's PIN verifier (never the PIN) and its wrong-PIN state."""

    mailbox: str
    scheme: str  #: "scrypt-hmac-sha256" (scrypt of HMAC-SHA256(pepper, pin))
    salt: bytes
    digest: bytes
    n: int
    r: int
    p: int
    updated_at: float
    failures: int  #: consecutive wrong PINs since the last good one / unlock
    locked_at: float | None  #: set while locked
    locked_until: float | None  #: None while locked: until an admin unlocks


_VM_PIN_COLUMNS: Final = tuple(f.name for f in fields(VoicemailPinRow))


@dataclass(frozen=True, slots=True)
class VmEmailJob:
    """A queued voicemail-to-e-mail delivery: references only, never audio or addresses
    (those are read at send time: the audio decrypted from the store, the address from
    the current site)."""

    id: int
    mailbox: str
    message_id: str
    attempts: int  #: failed attempts so far
    next_attempt_at: float  #: epoch seconds
    last_error: str | None
    created_at: float


_VM_EMAIL_COLUMNS: Final = tuple(f.name for f in fields(VmEmailJob))


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued upload (agent.cloud.outbox): a CDR, a day's usage or a voicemail backup."""

    id: int  #: queue order (AUTOINCREMENT: never reused)
    kind: str  #: "cdr" | "usage" | "voicemail_backup"
    item_key: str  #: unique per item: "cdr:<call_id>", "usage-YYYY-MM-DD", "vmb:<backup_id>"
    payload: bytes
    size: int  #: bytes counted against the outbox bound (the payload's length)
    created_at: float
    attempts: int  #: refused attempts so far (the portal said no)
    next_attempt_at: float  #: not sent before this (epoch seconds)
    last_error: str | None


_OUTBOX_COLUMNS: Final = tuple(f.name for f in fields(OutboxRow))


@dataclass(frozen=True, slots=True)
class OutboxDrop:
    """Queued items of one kind removed before delivery (never silently: each is logged
    and counted in ``outbox_drops``)."""

    kind: str
    items: int
    bytes: int
    reason: str  #: "bound" | "disk-full" | "rejected: <message>"


@dataclass(frozen=True, slots=True)
class OutboxEnqueued:
    inserted: int  #: new items (an item_key already queued is not queued twice)
    drops: tuple[OutboxDrop, ...]  #: oldest items dropped to stay within the bound


# --------------------------------------------------------------------------------------------
# Migrations: append only. Never edit a released one; add a new one.

Migration = Callable[[sqlite3.Connection], None]


def _m1_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE bindings (
            aor              TEXT NOT NULL,
            contact          TEXT NOT NULL,
            expires_at       REAL NOT NULL,
            call_id          TEXT NOT NULL,
            cseq             INTEGER NOT NULL,
            q                REAL,
            source_transport TEXT NOT NULL,
            source_host      TEXT NOT NULL,
            source_port      INTEGER NOT NULL,
            user_agent       TEXT,
            instance_id      TEXT,
            reg_id           INTEGER,
            updated_at       REAL NOT NULL,
            PRIMARY KEY (aor, contact)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX bindings_expires_at ON bindings (expires_at)")
    db.execute(
        """
        CREATE TABLE audit_log (
            id     INTEGER PRIMARY KEY AUTOINCREMENT,
            ts     REAL NOT NULL,
            actor  TEXT NOT NULL,
            role   TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute(
        """
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END
        """
    )
    db.execute(
        """
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END
        """
    )
    db.execute(
        """
        CREATE TABLE site_versions (
            version     INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            applied_at  REAL NOT NULL,
            document    TEXT NOT NULL
        )
        """
    )


def _m2_cdr(db: sqlite3.Connection) -> None:
    # No "day" column: days depend on the site's time zone, which can change; they are
    # computed at query time (agent.cdr.daily_stats).
    db.execute(
        """
        CREATE TABLE cdr (
            call_id      TEXT PRIMARY KEY,
            direction    TEXT NOT NULL,
            caller       TEXT NOT NULL,
            caller_name  TEXT NOT NULL,
            callee       TEXT NOT NULL,
            dialed       TEXT NOT NULL,
            start        REAL NOT NULL,
            answer       REAL,
            "end"        REAL NOT NULL,
            disposition  TEXT NOT NULL,
            hold_seconds REAL NOT NULL,
            hunt_group   TEXT,
            trunk        TEXT,
            cause        TEXT NOT NULL
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX cdr_start ON cdr (start)")


def _m3_user_state(db: sqlite3.Connection) -> None:
    # What users change from their phones with feature codes (DND, forwards, hunt group
    # logins): it overrides the site document until changed again, and survives restarts.
    db.execute(
        """
        CREATE TABLE user_state (
            extension  TEXT NOT NULL,
            key        TEXT NOT NULL,
            value      TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (extension, key)
        ) WITHOUT ROWID
        """
    )


def _m4_devices(db: sqlite3.Connection) -> None:
    # Phones seen by the provisioning server, by MAC: assigned (in the site's phones:) or
    # not; which is decided against the current site when listed, not stored. fetched_*:
    # the last completed transfer of a file rendered for that phone (resync checks it).
    db.execute(
        """
        CREATE TABLE devices (
            mac            TEXT PRIMARY KEY,
            vendor         TEXT,
            model_hint     TEXT,
            ip             TEXT NOT NULL,
            first_seen     REAL NOT NULL,
            last_seen      REAL NOT NULL,
            last_file      TEXT NOT NULL,
            fetched_at     REAL,
            fetched_file   TEXT,
            fetched_sha256 TEXT
        ) WITHOUT ROWID
        """
    )


def _m5_voicemail(db: sqlite3.Connection) -> None:
    # Voicemail metadata; the audio lives in encrypted files under STATE_DIR/voicemail/
    # (agent.voicemail.store), named by id. A rowid table: messages list in arrival order.
    db.execute(
        """
        CREATE TABLE vm_messages (
            id          TEXT NOT NULL UNIQUE,
            mailbox     TEXT NOT NULL,
            caller      TEXT NOT NULL,
            caller_name TEXT NOT NULL,
            received_at REAL NOT NULL,
            duration    REAL NOT NULL,
            folder      TEXT NOT NULL CHECK (folder IN ('new', 'saved')),
            reason      TEXT NOT NULL
                        CHECK (reason IN ('busy', 'no-answer', 'forward', 'direct')),
            size        INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX vm_messages_mailbox ON vm_messages (mailbox, folder)")
    db.execute("CREATE INDEX vm_messages_received_at ON vm_messages (received_at)")
    db.execute(
        """
        CREATE TABLE vm_greetings (
            mailbox  TEXT NOT NULL,
            kind     TEXT NOT NULL CHECK (kind IN ('unavailable', 'busy', 'name')),
            id       TEXT NOT NULL UNIQUE,
            created  REAL NOT NULL,
            duration REAL NOT NULL,
            size     INTEGER NOT NULL,
            PRIMARY KEY (mailbox, kind)
        ) WITHOUT ROWID
        """
    )
    # PIN verifiers only (never a PIN); the lockout state is here so it survives restarts.
    db.execute(
        """
        CREATE TABLE vm_pins (
            mailbox      TEXT PRIMARY KEY,
            scheme       TEXT NOT NULL,
            salt         BLOB NOT NULL,
            digest       BLOB NOT NULL,
            n            INTEGER NOT NULL,
            r            INTEGER NOT NULL,
            p            INTEGER NOT NULL,
            updated_at   REAL NOT NULL,
            failures     INTEGER NOT NULL DEFAULT 0,
            locked_at    REAL,
            locked_until REAL
        ) WITHOUT ROWID
        """
    )


def _m6_vm_email_queue(db: sqlite3.Connection) -> None:
    # Voicemail-to-e-mail jobs (agent.voicemail.email): one per message, references only.
    db.execute(
        """
        CREATE TABLE vm_email_queue (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            mailbox         TEXT NOT NULL,
            message_id      TEXT NOT NULL,
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error      TEXT,
            created_at      REAL NOT NULL,
            UNIQUE (mailbox, message_id)
        )
        """
    )
    db.execute("CREATE INDEX vm_email_queue_due ON vm_email_queue (next_attempt_at)")


#: Ordered; migration ``i`` (0-based) brings the schema to version ``i + 1``.
#: The schema version from which call records carry media quality.
CDR_MEDIA_SCHEMA_VERSION: Final = 7


def _m7_cdr_media(db: sqlite3.Connection) -> None:
    # Call quality, where the agent handled the media (agent.cdr.CallRecord).
    for column in ("jitter_ms", "loss_percent", "rtt_ms"):
        db.execute(f"ALTER TABLE cdr ADD COLUMN {column} REAL")


#: The schema version from which the upload outbox tables exist.
OUTBOX_SCHEMA_VERSION: Final = 8


def _m8_outbox(db: sqlite3.Connection) -> None:
    # The upload outbox (agent.cloud.outbox): items waiting for the portal, oldest first.
    db.execute(
        """
        CREATE TABLE outbox (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            kind            TEXT NOT NULL,
            item_key        TEXT NOT NULL UNIQUE,
            payload         BLOB NOT NULL,
            size            INTEGER NOT NULL,
            created_at      REAL NOT NULL,
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            last_error      TEXT
        )
        """
    )
    db.execute("CREATE INDEX outbox_kind ON outbox (kind, id)")
    # Queued items and bytes per kind, kept by triggers in the same transaction as every
    # insert and delete, so checking the bound never scans the queue.
    db.execute(
        """
        CREATE TABLE outbox_totals (
            kind  TEXT PRIMARY KEY,
            items INTEGER NOT NULL,
            bytes INTEGER NOT NULL
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TRIGGER outbox_totals_insert AFTER INSERT ON outbox BEGIN
            INSERT INTO outbox_totals (kind, items, bytes) VALUES (NEW.kind, 1, NEW.size)
            ON CONFLICT (kind) DO UPDATE SET items = items + 1, bytes = bytes + excluded.bytes;
        END
        """
    )
    db.execute(
        """
        CREATE TRIGGER outbox_totals_delete AFTER DELETE ON outbox BEGIN
            UPDATE outbox_totals SET items = items - 1, bytes = bytes - OLD.size
            WHERE kind = OLD.kind;
        END
        """
    )
    db.execute(
        """
        CREATE TRIGGER outbox_fixed_size BEFORE UPDATE OF kind, size, payload ON outbox
        BEGIN SELECT RAISE(ABORT, 'outbox items are not rewritten'); END
        """
    )
    # Items removed before delivery, per kind, for ever (the heartbeat and status report
    # them): bound reached, disk full, refused by the portal too often.
    db.execute(
        """
        CREATE TABLE outbox_drops (
            kind        TEXT PRIMARY KEY,
            items       INTEGER NOT NULL DEFAULT 0,
            bytes       INTEGER NOT NULL DEFAULT 0,
            first_at    REAL,
            last_at     REAL,
            last_reason TEXT
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE TABLE outbox_state (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID")
    # A random epoch in the CDR batch ids: a store made anew (same serial, ids from 1 again)
    # never reuses an idempotency key the portal already answered.
    db.execute("INSERT INTO outbox_state (key, value) VALUES ('epoch', lower(hex(randomblob(4))))")


#: How a masked secret reads in a stored document (as agent.site's default dumps write it).
MASKED_SECRET: Final = "**********"


def _is_secret_key(key: str) -> bool:
    return key == "password" or key.endswith(("_password", "_pin"))


def _masked(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: MASKED_SECRET if _is_secret_key(k) and isinstance(v, str) else _masked(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_masked(v) for v in node]
    return node


def _m9_mask_site_secrets(db: sqlite3.Connection) -> None:
    # The record of site versions needs no secrets (the running site comes from the site
    # file, or the sealed last good portal document): mask what earlier versions stored.
    rows = db.execute("SELECT version, document FROM site_versions").fetchall()
    for version, document in rows:
        db.execute("UPDATE site_versions SET document = ? WHERE version = ?",
                   (json.dumps(_masked(json.loads(document))), version))


MIGRATIONS: Final[Sequence[Migration]] = (
    _m1_initial, _m2_cdr, _m3_user_state, _m4_devices, _m5_voicemail, _m6_vm_email_queue,
    _m7_cdr_media, _m8_outbox, _m9_mask_site_secrets,
)

#: The schema version from which the ``vm_email_queue`` table exists.
VM_EMAIL_SCHEMA_VERSION: Final = 6

#: The schema version from which the ``vm_*`` tables exist.
VOICEMAIL_SCHEMA_VERSION: Final = 5

#: The schema version from which the ``devices`` table exists.
DEVICES_SCHEMA_VERSION: Final = 4

#: The schema version from which the ``cdr`` table exists.
CDR_SCHEMA_VERSION: Final = 2

# "end" is an SQL keyword: every column name is quoted.
_CDR_COLUMNS_SQL: Final = ", ".join(f'"{name}"' for name in CALL_RECORD_FIELDS)
_cdr_values: Final = operator.attrgetter(*CALL_RECORD_FIELDS)

#: The outbox bound when the caller gives none (payload bytes of all queued items).
OUTBOX_DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: On "disk full", at least this much more than the new items is dropped from the outbox.
_DISK_FULL_HEADROOM: Final = 256 * 1024


def cdr_outbox_payload(record: CallRecord) -> bytes:
    """The outbox payload of a CDR: compact JSON of :func:`agent.cdr.record_as_dict`
    (a non-finite quality figure becomes null: the portal client sends strict JSON)."""
    data = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in record_as_dict(record).items()
    }
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(exc)
    )


def _report_drops(drops: Sequence[OutboxDrop]) -> None:
    for d in drops:
        log.warning("outbox items dropped before upload", extra={
            "event": "outbox.drop", "kind": d.kind, "items": d.items, "bytes": d.bytes,
            "reason": d.reason,
        })


# --------------------------------------------------------------------------------------------


def _create_private_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Store:
    """The SQLite store. Open with :meth:`open`; close with :meth:`close` (or ``with``)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = threading.RLock()

    # ---- lifecycle

    @classmethod
    def open(cls, state_dir: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> Store:
        """Open (creating if needed) ``state_dir/edgepbx.db`` and bring its schema up to date."""
        state = Path(state_dir)
        try:
            state.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = state / DB_FILENAME
            # Create the file ourselves so it is 0600 from the first byte; SQLite gives the
            # -wal and -shm files the same mode as the database.
            _create_private_file(path)
            db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {state / DB_FILENAME}: {exc}") from exc
        store = cls(db, path)
        try:
            store._configure()
            store._migrate(migrations)
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot open {path}: {exc}") from exc
        except StoreError:
            db.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, state_dir: str | Path) -> Store:
        """Open an existing ``state_dir/edgepbx.db`` for reading only (the CLI's reports).

        Nothing is created, migrated or written (``mode=ro``, ``query_only``); the agent may be
        running or not. The schema may be older than this edgepbx's (check
        :meth:`schema_version`). Raises :class:`StoreError` when there is no readable store.
        """
        path = Path(state_dir) / DB_FILENAME
        if not path.is_file():
            raise StoreError(f"no store at {path}")
        try:
            db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                check_same_thread=False, timeout=10.0,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        store = cls(db, path)
        try:
            db.execute("PRAGMA query_only=ON")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot read {path}: {exc}") from exc
        return store

    def _configure(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        with self._tx():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
        current = self.schema_version()
        if current > len(migrations):
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this edgepbx "
                f"understands ({len(migrations)}); refusing to touch it"
            )
        for index in range(current, len(migrations)):
            with self._tx():
                # Re-check inside the write lock: another process may have migrated.
                if self.schema_version() > index:
                    continue
                migrations[index](self._db)
                self._db.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (index + 1, time.time()),
                )

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                # Some errors (SQLITE_FULL, SQLITE_NOMEM, ...) roll back by themselves.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:  # e.g. disk full writing the WAL: leave no open transaction
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # ---- introspection

    def schema_version(self) -> int:
        with self._lock:
            exists = self._db.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if exists is None:  # an empty file opened read-only
                return 0
            row = self._db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version"
            ).fetchone()
        return int(row[0])

    def pragma(self, name: str) -> Any:
        """Read a PRAGMA (diagnostics and tests), e.g. ``pragma("journal_mode")``."""
        if not name.replace("_", "").isalpha():
            raise ValueError(f"bad pragma name {name!r}")
        with self._lock:
            row = self._db.execute(f"PRAGMA {name}").fetchone()
        return None if row is None else row[0]

    def integrity_check(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._db.execute("PRAGMA integrity_check")]

    # ---- bindings

    _UPSERT_SQL: Final = (
        f"INSERT OR REPLACE INTO bindings ({', '.join(_BINDING_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in _BINDING_COLUMNS)})"
    )
    _DELETE_SQL: Final = "DELETE FROM bindings WHERE aor = ? AND contact = ?"
    _DELETE_ALL_SQL: Final = "DELETE FROM bindings WHERE aor = ?"

    def apply_binding_changes(self, changes: Iterable[BindingChange]) -> int:
        """Apply a batch of changes, in order, in ONE transaction. Returns how many were applied.

        Consecutive changes of the same kind go through one ``executemany``. Either the whole
        batch is committed or (on any error) none of it.
        """
        batch = list(changes)
        if not batch:
            return 0
        with self._tx() as db:
            run: list[tuple[Any, ...]] = []
            run_sql: str | None = None
            for change in batch:
                if isinstance(change, UpsertBinding):
                    sql, params = self._UPSERT_SQL, _row_values(change.row)
                elif isinstance(change, DeleteBinding):
                    sql, params = self._DELETE_SQL, (change.aor, change.contact)
                elif isinstance(change, DeleteAllBindings):
                    sql, params = self._DELETE_ALL_SQL, (change.aor,)
                else:
                    raise TypeError(f"not a binding change: {change!r}")
                if sql != run_sql and run:
                    assert run_sql is not None
                    db.executemany(run_sql, run)
                    run = []
                run_sql = sql
                run.append(params)
            if run and run_sql is not None:
                db.executemany(run_sql, run)
        return len(batch)

    def load_bindings(self, now: float) -> list[BindingRow]:
        """Delete expired bindings (``expires_at <= now``) and return the rest, ordered by
        (aor, contact)."""
        with self._tx() as db:
            db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
            rows = db.execute(
                f"SELECT {', '.join(_BINDING_COLUMNS)} FROM bindings ORDER BY aor, contact"
            ).fetchall()
        return [BindingRow(*r) for r in rows]

    def purge_expired_bindings(self, now: float) -> int:
        """Delete bindings with ``expires_at <= now``; returns how many went."""
        with self._tx() as db:
            return db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,)).rowcount

    def count_bindings(self, now: float | None = None) -> int:
        with self._lock:
            if now is None:
                row = self._db.execute("SELECT COUNT(*) FROM bindings").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM bindings WHERE expires_at > ?", (now,)
                ).fetchone()
        return int(row[0])

    # ---- audit log (append-only; UPDATE and DELETE are refused by triggers)

    def append_audit(
        self, *, actor: str, role: str, action: str, detail: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> int:
        """Append one audit entry; returns its id. ``detail`` must be JSON-serialisable and
        must not contain secrets."""
        text = json.dumps(dict(detail or {}), sort_keys=True, ensure_ascii=False, default=str)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO audit_log (ts, actor, role, action, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time() if ts is None else ts, actor, role, action, text),
            )
            return int(cur.lastrowid or 0)

    def audit_entries(self, *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries, oldest first."""
        sql = "SELECT id, ts, actor, role, action, detail FROM audit_log"
        params: list[Any] = []
        if action is not None:
            sql += " WHERE action = ?"
            params.append(action)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in reversed(rows)]

    # ---- site versions

    def record_site_version(
        self, fingerprint: str, document: Mapping[str, Any], *, applied_at: float | None = None
    ) -> int:
        """Record an applied site document; returns its version number.

        Versions are monotonic. Recording the same fingerprint as the latest version is a no-op
        that returns the latest version (restarts do not create versions). The document
        includes secrets: this is why the database file is 0600.
        """
        text = json.dumps(dict(document), sort_keys=True, ensure_ascii=False)
        with self._tx() as db:
            row = db.execute(
                "SELECT version, fingerprint FROM site_versions ORDER BY version DESC LIMIT 1"
            ).fetchone()
            if row is not None and row[1] == fingerprint:
                return int(row[0])
            version = 1 if row is None else int(row[0]) + 1
            db.execute(
                "INSERT INTO site_versions (version, fingerprint, applied_at, document) "
                "VALUES (?, ?, ?, ?)",
                (version, fingerprint, time.time() if applied_at is None else applied_at, text),
            )
            return version

    def latest_site_version(self) -> SiteVersion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT version, fingerprint, applied_at, document FROM site_versions "
                "ORDER BY version DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return SiteVersion(int(row[0]), str(row[1]), float(row[2]), json.loads(row[3]))

    # ---- call detail records

    _CDR_INSERT_SQL: Final = (
        f"INSERT OR IGNORE INTO cdr ({_CDR_COLUMNS_SQL}) "
        f"VALUES ({', '.join('?' for _ in CALL_RECORD_FIELDS)})"
    )

    def append_call_records(
        self, records: Sequence[CallRecord], *, outbox_cdrs: bool = False,
        outbox_max_bytes: int | None = None,
    ) -> int:
        """Write a batch of finished calls in ONE transaction; returns how many were new.

        Durable against power loss: the rest of the store commits with
        ``synchronous=NORMAL``, which in WAL mode may lose the last commits on a power cut
        (never consistency). A finished call must not be lost, so this commit runs with
        ``synchronous=FULL`` (the WAL is fsynced before COMMIT returns): a crash loses no
        finished call. The setting is per connection and cannot change inside a
        transaction, so it is switched before BEGIN and restored to NORMAL afterwards, all
        under the store's lock so no other commit runs in between.

        Idempotent: ``INSERT OR IGNORE`` on ``call_id``, so a retried batch (or a record
        already written) never duplicates; the first version of a call id wins.

        ``outbox_cdrs`` (pass the site's CDR-upload opt-in): every record that is new here
        (not an ignored duplicate) is also queued for upload in the SAME transaction (kind
        ``cdr``, key ``cdr:<call_id>``, payload :func:`cdr_outbox_payload`), and the outbox
        bound (``outbox_max_bytes``, default :data:`OUTBOX_DEFAULT_MAX_BYTES`) is enforced
        there too, dropping the oldest queued items (logged and counted). If SQLite finds
        the disk full, the batch is written once more in one transaction that first drops
        the oldest outbox items (reported); if that fails too: :class:`OutboxDiskFull`, and
        nothing of the batch (nor any drop) is written.
        """
        batch = list(records)
        for record in batch:
            if not isinstance(record, CallRecord):
                raise TypeError(f"not a CallRecord: {record!r}")
        if not batch:
            return 0
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                if not outbox_cdrs:
                    with self._tx() as db:
                        cur = db.executemany(
                            self._CDR_INSERT_SQL, [_cdr_values(r) for r in batch])
                        return max(0, cur.rowcount)
                payloads = [cdr_outbox_payload(r) for r in batch]
                now = time.time()

                def write(db: sqlite3.Connection) -> int:
                    items: list[tuple[str, str, bytes]] = []
                    for record, payload in zip(batch, payloads, strict=True):
                        if db.execute(self._CDR_INSERT_SQL, _cdr_values(record)).rowcount == 1:
                            items.append(("cdr", f"cdr:{record.call_id}", payload))
                    self._outbox_insert(db, items, now)
                    return len(items)

                new, _drops = self._outbox_write(
                    write, needed=sum(map(len, payloads)), now=now,
                    max_bytes=OUTBOX_DEFAULT_MAX_BYTES if outbox_max_bytes is None
                    else outbox_max_bytes,
                )
                return new
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def call_records(
        self, since: float | None = None, until: float | None = None, limit: int | None = None,
        newest_first: bool = True,
    ) -> list[CallRecord]:
        """Calls that started in ``[since, until)`` (epoch seconds; None: unbounded), ordered by
        start (newest first by default); at most ``limit`` of them (the newest, or the oldest
        with ``newest_first=False``)."""
        columns = _CDR_COLUMNS_SQL
        if self.schema_version() < CDR_MEDIA_SCHEMA_VERSION:
            # A store an older agent wrote, opened read-only (never migrated here).
            columns += ", NULL, NULL, NULL"
            columns = columns.replace(', "jitter_ms", "loss_percent", "rtt_ms"', "")
        sql = f"SELECT {columns} FROM cdr"
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("start >= ?")
            params.append(since)
        if until is not None:
            where.append("start < ?")
            params.append(until)
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY start {order}, call_id {order}"
        if limit is not None:
            if limit < 0:
                raise ValueError("limit must not be negative")
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [CallRecord(*r) for r in rows]

    def daily_call_stats(
        self, tz: str, since: float | None = None, until: float | None = None
    ) -> list[DailyCallStats]:
        """Per-day aggregates of the calls that started in ``[since, until)``, by the day of
        their start in the time zone ``tz`` (IANA name, ``ValueError`` if unknown); oldest day
        first, days with no calls omitted. Computed in Python: fine for an office's volume."""
        zone_info = zone(tz)  # refuse a bad zone before reading anything
        return daily_stats(self.call_records(since, until, newest_first=False), zone_info)


    # -- upload outbox (agent.cloud.outbox) -------------------------------------------
    _OUTBOX_SELECT: Final = f"SELECT {', '.join(_OUTBOX_COLUMNS)} FROM outbox"

    @staticmethod
    def _outbox_insert(
        db: sqlite3.Connection, items: Sequence[tuple[str, str, bytes]], now: float
    ) -> int:
        if not items:
            return 0
        cur = db.executemany(
            "INSERT OR IGNORE INTO outbox (kind, item_key, payload, size, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(kind, key, payload, len(payload), now) for kind, key, payload in items],
        )
        return max(0, cur.rowcount)

    @staticmethod
    def _outbox_count_drops(
        db: sqlite3.Connection, per_kind: Mapping[str, tuple[int, int]], now: float,
        reason: str,
    ) -> list[OutboxDrop]:
        drops: list[OutboxDrop] = []
        for kind, (items, size) in sorted(per_kind.items()):
            db.execute(
                "INSERT INTO outbox_drops (kind, items, bytes, first_at, last_at, last_reason)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind) DO UPDATE SET"
                " items = items + excluded.items, bytes = bytes + excluded.bytes,"
                " first_at = COALESCE(first_at, excluded.first_at),"
                " last_at = excluded.last_at, last_reason = excluded.last_reason",
                (kind, items, size, now, now, reason),
            )
            drops.append(OutboxDrop(kind, items, size, reason))
        return drops

    def _outbox_drop_oldest(
        self, db: sqlite3.Connection, need: int, now: float, reason: str
    ) -> list[OutboxDrop]:
        """Delete the oldest items (any kind) until ``need`` bytes are freed; count them."""
        per_kind: dict[str, tuple[int, int]] = {}
        freed, last_id = 0, 0
        while freed < need:
            rows = db.execute(
                "SELECT id, kind, size FROM outbox WHERE id > ? ORDER BY id LIMIT 256",
                (last_id,),
            ).fetchall()
            if not rows:
                break
            for item_id, kind, size in rows:
                items, total = per_kind.get(kind, (0, 0))
                per_kind[kind] = (items + 1, total + size)
                freed += size
                last_id = item_id
                if freed >= need:
                    break
        if not per_kind:
            return []
        db.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))
        return self._outbox_count_drops(db, per_kind, now, reason)

    @staticmethod
    def _outbox_bytes(db: sqlite3.Connection) -> int:
        (total,) = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM outbox_totals").fetchone()
        return int(total)

    def _outbox_enforce(
        self, db: sqlite3.Connection, max_bytes: int, now: float
    ) -> list[OutboxDrop]:
        excess = self._outbox_bytes(db) - max_bytes
        return self._outbox_drop_oldest(db, excess, now, "bound") if excess > 0 else []

    def _outbox_write(
        self, write: Callable[[sqlite3.Connection], _T], *, needed: int, max_bytes: int,
        now: float,
    ) -> tuple[_T, list[OutboxDrop]]:
        """``write`` (which queues about ``needed`` bytes) and the bound, in ONE transaction.

        On "database or disk is full" (SQLite rolls the transaction back): once more, in ONE
        transaction that first drops the oldest items (at least twice ``needed`` plus some
        headroom, or a sixteenth of the queue), so a failure there leaves everything as it
        was. Drops are logged (``event=outbox.drop``) and counted in ``outbox_drops``.
        """
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        try:
            with self._tx() as db:
                result = write(db)
                drops = self._outbox_enforce(db, max_bytes, now)
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                raise
            first: sqlite3.OperationalError = exc
        else:
            _report_drops(drops)
            return result, drops
        with self._lock:
            queued = self._outbox_bytes(self._db)
        need = max(2 * needed + _DISK_FULL_HEADROOM, queued // 16)
        log.error("store full while queueing uploads; dropping the oldest outbox items and "
                  "trying once more", extra={"event": "outbox.disk_full", "queued_bytes": queued,
                                             "to_free": min(need, queued), "error": str(first)})
        if queued == 0:
            raise OutboxDiskFull(
                f"{self.path}: the disk is full ({first}) and the upload outbox is empty, so "
                f"nothing can be dropped to make room; nothing was written. Free disk space "
                f"in {self.path.parent}."
            ) from first
        try:
            with self._tx() as db:
                drops = self._outbox_drop_oldest(db, need, now, "disk-full")
                result = write(db)
                drops += self._outbox_enforce(db, max_bytes, now)
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                raise
            raise OutboxDiskFull(
                f"{self.path}: the disk is full ({exc}), even after dropping the oldest "
                f"{min(need, queued)} of {queued} queued outbox bytes; nothing was written "
                f"and nothing queued was lost. Free disk space in {self.path.parent}."
            ) from exc
        _report_drops(drops)
        return result, drops

    def outbox_enqueue(
        self, items: Iterable[tuple[str, str, bytes]], *, now: float,
        max_bytes: int | None = None, state: Mapping[str, str] | None = None,
    ) -> OutboxEnqueued:
        """Queue ``(kind, item_key, payload)`` items (an ``item_key`` already queued is left
        as it is) and set ``state`` keys (see :meth:`outbox_state`), in ONE transaction
        committed with ``synchronous=FULL``; then the bound ``max_bytes`` (default
        :data:`OUTBOX_DEFAULT_MAX_BYTES`) is enforced by dropping the oldest items. Disk full:
        as :meth:`append_call_records` (:class:`OutboxDiskFull` when nothing helps)."""
        batch = [(str(k), str(key), bytes(p)) for k, key, p in items]
        limit = OUTBOX_DEFAULT_MAX_BYTES if max_bytes is None else max_bytes

        def write(db: sqlite3.Connection) -> int:
            inserted = self._outbox_insert(db, batch, now)
            for key, value in (state or {}).items():
                db.execute("INSERT OR REPLACE INTO outbox_state (key, value) VALUES (?, ?)",
                           (key, value))
            return inserted

        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                inserted, drops = self._outbox_write(
                    write, needed=sum(len(p) for _, _, p in batch), max_bytes=limit, now=now)
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
        return OutboxEnqueued(inserted, tuple(drops))

    def outbox_enforce_bound(self, max_bytes: int, *, now: float) -> list[OutboxDrop]:
        """Drop the oldest items until at most ``max_bytes`` are queued (e.g. after the
        bound was lowered); the drops are logged and counted."""
        _, drops = self._outbox_write(lambda db: None, needed=0, max_bytes=max_bytes, now=now)
        return drops

    def outbox_due(self, kind: str, *, now: float, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` items of ``kind`` due at ``now``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                self._OUTBOX_SELECT + " WHERE kind = ? AND next_attempt_at <= ?"
                " ORDER BY id LIMIT ?",
                (kind, now, limit),
            ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def outbox_next_due(self) -> float | None:
        """The earliest ``next_attempt_at`` of any queued item (None: the outbox is empty)."""
        with self._lock:
            (due,) = self._db.execute("SELECT MIN(next_attempt_at) FROM outbox").fetchone()
        return None if due is None else float(due)

    def outbox_delete(self, ids: Iterable[int]) -> int:
        """Remove delivered items; returns how many were still there."""
        with self._tx() as db:
            cur = db.executemany("DELETE FROM outbox WHERE id = ?", [(int(i),) for i in ids])
            return max(0, cur.rowcount)

    def outbox_retry_later(
        self, ids: Iterable[int], *, next_attempt_at: float, error: str,
        count_attempt: bool = True,
    ) -> int:
        """Record a refused attempt (``attempts + 1`` unless ``count_attempt`` is false),
        the error and when to try again; returns how many items were still there."""
        with self._tx() as db:
            cur = db.executemany(
                "UPDATE outbox SET attempts = attempts + ?, next_attempt_at = ?, last_error = ?"
                " WHERE id = ?",
                [(int(count_attempt), next_attempt_at, error, int(i)) for i in ids],
            )
            return max(0, cur.rowcount)

    def outbox_drop(self, ids: Iterable[int], *, reason: str, now: float) -> list[OutboxDrop]:
        """Remove undeliverable items as drops (logged, counted in ``outbox_drops``)."""
        wanted = [int(i) for i in ids]
        with self._tx() as db:
            per_kind: dict[str, tuple[int, int]] = {}
            for item_id in wanted:
                row = db.execute(
                    "DELETE FROM outbox WHERE id = ? RETURNING kind, size", (item_id,)
                ).fetchone()
                if row is not None:
                    items, total = per_kind.get(row[0], (0, 0))
                    per_kind[row[0]] = (items + 1, total + int(row[1]))
            drops = self._outbox_count_drops(db, per_kind, now, reason)
        _report_drops(drops)
        return drops

    def outbox_purge(self, kind: str) -> tuple[int, int]:
        """Remove every queued item of ``kind`` (an opt-in was turned off: they must never
        leave the box). Not counted as drops; returns (items, bytes) removed."""
        with self._tx() as db:
            row = db.execute(
                "SELECT items, bytes FROM outbox_totals WHERE kind = ?", (kind,)
            ).fetchone()
            db.execute("DELETE FROM outbox WHERE kind = ?", (kind,))
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def outbox_queued(self) -> dict[str, tuple[int, int, float | None]]:
        """Per kind with items queued: (items, bytes, created_at of the oldest)."""
        if self.schema_version() < OUTBOX_SCHEMA_VERSION:
            return {}
        with self._lock:
            out: dict[str, tuple[int, int, float | None]] = {}
            for kind, items, size in self._db.execute(
                "SELECT kind, items, bytes FROM outbox_totals WHERE items > 0 ORDER BY kind"
            ).fetchall():
                oldest = self._db.execute(
                    "SELECT created_at FROM outbox WHERE kind = ? ORDER BY id LIMIT 1", (kind,)
                ).fetchone()
                out[str(kind)] = (int(items), int(size),
                                  None if oldest is None else float(oldest[0]))
        return out

    def outbox_dropped(self) -> dict[str, dict[str, Any]]:
        """Per kind, everything dropped so far: items, bytes, first_at, last_at, last_reason."""
        if self.schema_version() < OUTBOX_SCHEMA_VERSION:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, items, bytes, first_at, last_at, last_reason FROM outbox_drops"
                " ORDER BY kind"
            ).fetchall()
        return {str(r[0]): {"items": int(r[1]), "bytes": int(r[2]), "first_at": r[3],
                            "last_at": r[4], "last_reason": r[5]} for r in rows}

    def outbox_state(self, key: str) -> str | None:
        """A small outbox bookmark (e.g. ``usage_last_day``, ``epoch``); None if unset."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM outbox_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_outbox_state(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM outbox_state WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO outbox_state (key, value) VALUES (?, ?)",
                           (key, value))

    # -- user state (feature codes) -------------------------------------------------
    def user_state(self) -> dict[str, dict[str, Any]]:
        """Every user's feature-code state: extension -> key -> JSON value."""
        with self._lock:
            rows = self._db.execute("SELECT extension, key, value FROM user_state").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for extension, key, value in rows:
            out.setdefault(extension, {})[key] = json.loads(value)
        return out

    def set_user_state(self, extension: str, key: str, value: Any, now: float) -> None:
        """Set (or with ``value`` None, clear) one key of a user's feature-code state."""
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM user_state WHERE extension = ? AND key = ?",
                           (extension, key))
            else:
                db.execute(
                    "INSERT INTO user_state (extension, key, value, updated_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (extension, key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (extension, key, json.dumps(value), now),
                )

    # -- provisioning devices -----------------------------------------------------------
    def apply_device_events(self, events: Iterable[DeviceEvent]) -> int:
        """Record a batch of sightings and fetches, in order, in ONE transaction."""
        batch = list(events)
        if not batch:
            return 0
        with self._tx() as db:
            for event in batch:
                if isinstance(event, DeviceSeen):
                    db.execute(
                        "INSERT INTO devices (mac, vendor, model_hint, ip, first_seen, last_seen,"
                        " last_file) VALUES (?,?,?,?,?,?,?) ON CONFLICT (mac) DO UPDATE SET"
                        " vendor = COALESCE(excluded.vendor, vendor),"
                        " model_hint = COALESCE(excluded.model_hint, model_hint),"
                        " ip = excluded.ip, last_seen = excluded.last_seen,"
                        " last_file = excluded.last_file",
                        (event.mac, event.vendor, event.model_hint, event.ip, event.at,
                         event.at, event.file),
                    )
                else:
                    db.execute(
                        "UPDATE devices SET fetched_at = ?, fetched_file = ?, fetched_sha256 = ?"
                        " WHERE mac = ?",
                        (event.at, event.file, event.sha256, event.mac),
                    )
        return len(batch)

    def devices(self) -> list[DeviceRow]:
        """Every device seen, most recently seen first. Empty on a store older than the
        ``devices`` table (read-only opens do not migrate)."""
        if self.schema_version() < DEVICES_SCHEMA_VERSION:
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices ORDER BY last_seen DESC"
            ).fetchall()
        return [DeviceRow(*r) for r in rows]

    # -- voicemail (metadata; audio files and crypto are agent.voicemail's) ---------------
    _VM_MSG_SELECT: Final = f"SELECT {', '.join(_VM_MESSAGE_COLUMNS)} FROM vm_messages"
    _VM_GREETING_SELECT: Final = f"SELECT {', '.join(_VM_GREETING_COLUMNS)} FROM vm_greetings"

    def vm_add_message(
        self, row: VoicemailMessageRow, *, max_messages: int
    ) -> tuple[int, int] | None:
        """Insert a message unless its mailbox already holds ``max_messages``; returns the
        mailbox's new (new, saved) counts, or None when it is full (nothing written).

        Committed with ``synchronous=FULL`` like CDRs: a voicemail acknowledged to the
        caller must survive a power cut (the audio file is already fsynced by then).
        """
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                with self._tx() as db:
                    (count,) = db.execute(
                        "SELECT COUNT(*) FROM vm_messages WHERE mailbox = ?", (row.mailbox,)
                    ).fetchone()
                    if count >= max_messages:
                        return None
                    db.execute(
                        f"INSERT INTO vm_messages ({', '.join(_VM_MESSAGE_COLUMNS)}) "
                        f"VALUES ({', '.join('?' for _ in _VM_MESSAGE_COLUMNS)})",
                        tuple(getattr(row, c) for c in _VM_MESSAGE_COLUMNS),
                    )
                    return self._vm_counts(db, row.mailbox)
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _vm_counts(db: sqlite3.Connection, mailbox: str) -> tuple[int, int]:
        new, saved = db.execute(
            "SELECT COALESCE(SUM(folder = 'new'), 0), COALESCE(SUM(folder = 'saved'), 0)"
            " FROM vm_messages WHERE mailbox = ?",
            (mailbox,),
        ).fetchone()
        return int(new), int(saved)

    def vm_counts(self, mailbox: str) -> tuple[int, int]:
        """(new, saved) message counts of a mailbox (index-only query)."""
        with self._lock:
            return self._vm_counts(self._db, mailbox)

    def vm_messages(
        self, mailbox: str | None = None, folder: str | None = None,
        received_before: float | None = None,
    ) -> list[VoicemailMessageRow]:
        """Messages (of one mailbox / folder / older than a time), oldest first."""
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("mailbox = ?", mailbox), ("folder = ?", folder),
                              ("received_at < ?", received_before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = self._VM_MSG_SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at, rowid"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [VoicemailMessageRow(*r) for r in rows]

    def vm_message(self, mailbox: str, message_id: str) -> VoicemailMessageRow | None:
        with self._lock:
            r = self._db.execute(
                self._VM_MSG_SELECT + " WHERE mailbox = ? AND id = ?", (mailbox, message_id)
            ).fetchone()
        return None if r is None else VoicemailMessageRow(*r)

    def vm_set_folder(self, mailbox: str, message_id: str, folder: str) -> bool:
        """Move a message to ``folder``; True if it existed and was elsewhere."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE vm_messages SET folder = ? WHERE mailbox = ? AND id = ? AND folder != ?",
                (folder, mailbox, message_id, folder),
            )
            return cur.rowcount > 0

    def vm_delete_message(self, mailbox: str, message_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM vm_messages WHERE mailbox = ? AND id = ?", (mailbox, message_id)
            )
            return cur.rowcount > 0

    def vm_put_greeting(self, row: VoicemailGreetingRow) -> VoicemailGreetingRow | None:
        """Insert or replace a mailbox's greeting of ``row.kind``; returns the replaced one."""
        with self._tx() as db:
            old = db.execute(
                self._VM_GREETING_SELECT + " WHERE mailbox = ? AND kind = ?",
                (row.mailbox, row.kind),
            ).fetchone()
            db.execute(
                f"INSERT OR REPLACE INTO vm_greetings ({', '.join(_VM_GREETING_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _VM_GREETING_COLUMNS)})",
                tuple(getattr(row, c) for c in _VM_GREETING_COLUMNS),
            )
        return None if old is None else VoicemailGreetingRow(*old)

    def vm_greetings(self, mailbox: str | None = None) -> list[VoicemailGreetingRow]:
        sql = self._VM_GREETING_SELECT
        params: tuple[Any, ...] = ()
        if mailbox is not None:
            sql += " WHERE mailbox = ?"
            params = (mailbox,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY mailbox, kind", params).fetchall()
        return [VoicemailGreetingRow(*r) for r in rows]

    def vm_greeting(self, mailbox: str, kind: str) -> VoicemailGreetingRow | None:
        with self._lock:
            r = self._db.execute(
                self._VM_GREETING_SELECT + " WHERE mailbox = ? AND kind = ?", (mailbox, kind)
            ).fetchone()
        return None if r is None else VoicemailGreetingRow(*r)

    def vm_delete_greeting(self, mailbox: str, kind: str) -> VoicemailGreetingRow | None:
        """Remove a greeting row; returns it (None if there was none)."""
        with self._tx() as db:
            r = db.execute(
                self._VM_GREETING_SELECT + " WHERE mailbox = ? AND kind = ?", (mailbox, kind)
            ).fetchone()
            db.execute("DELETE FROM vm_greetings WHERE mailbox = ? AND kind = ?", (mailbox, kind))
        return None if r is None else VoicemailGreetingRow(*r)

    def vm_pin(self, mailbox: str) -> VoicemailPinRow | None:
        with self._lock:
            r = self._db.execute(
                f"SELECT {', '.join(_VM_PIN_COLUMNS)} FROM vm_pins WHERE mailbox = ?", (mailbox,)
            ).fetchone()
        return None if r is None else VoicemailPinRow(*r)

    def vm_set_pin(
        self, mailbox: str, *, scheme: str, salt: bytes, digest: bytes, n: int, r: int, p: int,
        now: float,
    ) -> None:
        """Store a new PIN verifier; clears the wrong-PIN count and any lock."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO vm_pins (mailbox, scheme, salt, digest, n, r, p,"
                " updated_at, failures, locked_at, locked_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL)",
                (mailbox, scheme, salt, digest, n, r, p, now),
            )

    def vm_pin_failed(
        self, mailbox: str, now: float, *, max_attempts: int, lockout_seconds: float | None,
        audit_actor: str = "voicemail", audit_role: str = "system",
    ) -> VoicemailPinRow | None:
        """Count one wrong PIN, in ONE transaction; returns the updated row (None: no PIN).

        An expired lock is cleared first. Reaching ``max_attempts`` locks the mailbox until
        ``now + lockout_seconds`` (None: until :meth:`vm_unlock`), and the lockout is
        appended to the audit log (action ``voicemail.locked``) in the same transaction.
        """
        with self._tx() as db:
            r = db.execute(
                f"SELECT {', '.join(_VM_PIN_COLUMNS)} FROM vm_pins WHERE mailbox = ?", (mailbox,)
            ).fetchone()
            if r is None:
                return None
            row = VoicemailPinRow(*r)
            if row.locked_at is not None:
                if row.locked_until is None or now < row.locked_until:
                    return row  # already locked: nothing to count
                row = replace(row, failures=0, locked_at=None, locked_until=None)
            failures = row.failures + 1
            locked_at: float | None = None
            locked_until: float | None = None
            if failures >= max_attempts:
                locked_at = now
                locked_until = None if lockout_seconds is None else now + lockout_seconds
                detail = {"mailbox": mailbox, "failures": failures, "locked_until": locked_until}
                db.execute(
                    "INSERT INTO audit_log (ts, actor, role, action, detail)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (now, audit_actor, audit_role, "voicemail.locked",
                     json.dumps(detail, sort_keys=True)),
                )
            db.execute(
                "UPDATE vm_pins SET failures = ?, locked_at = ?, locked_until = ?"
                " WHERE mailbox = ?",
                (failures, locked_at, locked_until, mailbox),
            )
        return replace(row, failures=failures, locked_at=locked_at, locked_until=locked_until)

    def vm_pin_clear_failures(self, mailbox: str) -> bool:
        """Reset the wrong-PIN count and lift any lock; True if there was anything to clear."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE vm_pins SET failures = 0, locked_at = NULL, locked_until = NULL"
                " WHERE mailbox = ? AND (failures != 0 OR locked_at IS NOT NULL)",
                (mailbox,),
            )
            return cur.rowcount > 0

    def vm_delete_mailbox(self, mailbox: str) -> tuple[list[VoicemailMessageRow],
                                                        list[VoicemailGreetingRow]]:
        """Remove a mailbox's messages, greetings and PIN rows; returns what was removed."""
        with self._tx() as db:
            msgs = [VoicemailMessageRow(*r) for r in db.execute(
                self._VM_MSG_SELECT + " WHERE mailbox = ?", (mailbox,))]
            greets = [VoicemailGreetingRow(*r) for r in db.execute(
                self._VM_GREETING_SELECT + " WHERE mailbox = ?", (mailbox,))]
            db.execute("DELETE FROM vm_messages WHERE mailbox = ?", (mailbox,))
            db.execute("DELETE FROM vm_greetings WHERE mailbox = ?", (mailbox,))
            db.execute("DELETE FROM vm_pins WHERE mailbox = ?", (mailbox,))
        return msgs, greets

    # -- voicemail to e-mail queue (agent.voicemail.email) ---------------------------------
    _VM_EMAIL_SELECT: Final = f"SELECT {', '.join(_VM_EMAIL_COLUMNS)} FROM vm_email_queue"

    def vm_email_enqueue(self, mailbox: str, message_id: str, now: float) -> int | None:
        """Queue a delivery of one message, due now; returns the job id, or None if that
        message already has a job."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO vm_email_queue"
                " (mailbox, message_id, attempts, next_attempt_at, last_error, created_at)"
                " VALUES (?, ?, 0, ?, NULL, ?)",
                (mailbox, message_id, now, now),
            )
            return int(cur.lastrowid) if cur.rowcount and cur.lastrowid else None

    def vm_email_jobs(self, *, due_before: float | None = None,
                      limit: int | None = None) -> list[VmEmailJob]:
        """Queued jobs (those due at ``due_before`` or earlier), soonest first."""
        sql = self._VM_EMAIL_SELECT
        params: list[Any] = []
        if due_before is not None:
            sql += " WHERE next_attempt_at <= ?"
            params.append(due_before)
        sql += " ORDER BY next_attempt_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [VmEmailJob(*r) for r in rows]

    def vm_email_next_due(self) -> float | None:
        """When the soonest job is due (None: the queue is empty)."""
        with self._lock:
            (due,) = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM vm_email_queue").fetchone()
        return None if due is None else float(due)

    def vm_email_failed(self, job_id: int, *, attempts: int, next_attempt_at: float,
                        error: str) -> bool:
        """Record a failed attempt and when to try again; False if the job is gone."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE vm_email_queue SET attempts = ?, next_attempt_at = ?, last_error = ?"
                " WHERE id = ?",
                (attempts, next_attempt_at, error, job_id),
            )
            return cur.rowcount > 0

    def vm_email_finish(self, job_id: int, *, audit: Mapping[str, Any] | None = None,
                        now: float | None = None) -> bool:
        """Remove a job (delivered, dropped or given up); with ``audit``, append that
        audit entry (actor ``voicemail-email``, role ``system``) in the same transaction.
        False if the job was already gone (nothing audited then)."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM vm_email_queue WHERE id = ?", (job_id,))
            if cur.rowcount == 0:
                return False
            if audit is not None:
                detail = {k: v for k, v in audit.items() if k != "action"}
                db.execute(
                    "INSERT INTO audit_log (ts, actor, role, action, detail)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (time.time() if now is None else now, "voicemail-email", "system",
                     str(audit["action"]), json.dumps(detail, sort_keys=True, default=str)),
                )
            return True
