"""SQLite storage of the reference portal (one file, portal.db, in the data directory).

One connection guarded by a lock; every write is one transaction (WAL, synchronous=FULL),
so a killed portal comes back with everything it answered 200 for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    serial TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    partner_access INTEGER NOT NULL DEFAULT 1,
    enrolled_at TEXT,
    cert_serial TEXT,
    cert_not_after TEXT
);
CREATE TABLE IF NOT EXISTS claim_tokens (
    token_sha256 TEXT PRIMARY KEY,
    serial TEXT NOT NULL REFERENCES devices(serial),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE TABLE IF NOT EXISTS site_versions (
    serial TEXT NOT NULL REFERENCES devices(serial),
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    etag TEXT NOT NULL,
    source TEXT NOT NULL,            -- portal | device
    author_role TEXT NOT NULL,
    author_id TEXT NOT NULL,
    changed_paths TEXT NOT NULL,     -- JSON list
    created_at TEXT NOT NULL,
    PRIMARY KEY (serial, version)
);
CREATE TABLE IF NOT EXISTS site_status (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    errors TEXT NOT NULL,
    applied_at TEXT,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cdrs (
    serial TEXT NOT NULL,
    call_id TEXT NOT NULL,
    record TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (serial, call_id)
);
CREATE TABLE IF NOT EXISTS usage (
    serial TEXT NOT NULL,
    day TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (serial, day, idempotency_key)
);
CREATE TABLE IF NOT EXISTS idempotency (
    serial TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    key TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (serial, endpoint, key)
);
CREATE TABLE IF NOT EXISTS voicemail_backups (
    backup_id TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    encryption TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    content BLOB NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    serial TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1
);
"""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def etag_for(version: int, doc: Any) -> str:
    """ETag value (without quotes): "<version>-<first 16 hex of sha256(canonical JSON)>"."""
    return f"{version}-{hashlib.sha256(canonical(doc)).hexdigest()[:16]}"


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "portal.db"
        self.lock = threading.RLock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self.path.chmod(0o600)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self.lock:
            return self.db.execute(sql, args).fetchone()

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ devices, tokens

    def device(self, serial: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM devices WHERE serial = ?", serial)

    def current_site(self, serial: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM site_versions WHERE serial = ? "
                        "ORDER BY version DESC LIMIT 1", serial)

    def add_version(self, db: sqlite3.Connection, serial: str, document: Any, *, source: str,
                    role: str, author: str, changed: list[str]) -> int:
        row = db.execute("SELECT MAX(version) FROM site_versions WHERE serial = ?",
                         (serial,)).fetchone()
        version = (row[0] or 0) + 1
        db.execute(
            "INSERT INTO site_versions VALUES (?,?,?,?,?,?,?,?,?)",
            (serial, version, json.dumps(document), etag_for(version, document), source, role,
             author, json.dumps(changed), now_iso()))
        return version

    @staticmethod
    def token_hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
