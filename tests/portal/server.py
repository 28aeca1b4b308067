"""The edgepbx reference portal: a real HTTPS server over SQLite, for tests and demos.

Three listeners (see README.md in this directory for the full contract):

* device port  - HTTPS with MUTUAL TLS: a client certificate signed by the portal CA is
  required in the handshake; its CN is the device serial. All /v1 endpoints.
* enroll port  - HTTPS with server authentication only (a new device has no certificate
  yet). Serves POST /v1/enroll and nothing else.
* admin port   - plain HTTP, bound to 127.0.0.1 (or the namespace address): the partner /
  customer-admin JSON API under /api and minimal HTML pages under /.

Run:  python -m tests.portal --data DIR        (or python tests/portal/server.py --data DIR)
      python -m tests.portal make-pki DIR --ip 10.0.0.1 --dns portal.test
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import hashlib
import html
import json
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509

try:
    from . import docpath, pki
    from .store import Store, now_iso
except ImportError:  # run as a script: python tests/portal/server.py
    import docpath  # type: ignore[no-redef]
    import pki  # type: ignore[no-redef]
    from store import Store, now_iso  # type: ignore[no-redef]

MAX_JSON_BODY = 8 * 1024 * 1024
MAX_BACKUP_BODY = 64 * 1024 * 1024
MAX_WAIT = 60.0
BACKUP_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SERIAL = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
AUTHOR_ROLES = ("user", "admin")
PORTAL_ROLES = ("partner", "admin")


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, obj: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(obj).encode(), "application/json", dict(headers))


def parse_duration(text: str) -> dt.timedelta:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 90d, 12h, 30s)")
    mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return dt.timedelta(seconds=float(m.group(1)) * mult)


def default_document(serial: str) -> dict[str, Any]:
    return {"site": {"name": serial, "timezone": "UTC"}, "users": []}


# ---------------------------------------------------------------------------- the portal


class Portal:
    """The portal's behaviour, independent of the HTTP plumbing."""

    def __init__(self, data_dir: Path, pki_paths: pki.PkiPaths, *,
                 cert_lifetime: dt.timedelta = dt.timedelta(days=90),
                 token_ttl: dt.timedelta = dt.timedelta(days=7),
                 partner_access_path: str = "privacy.partner_access") -> None:
        self.store = Store(data_dir)
        self.pki = pki_paths
        self.ca_pem = pki_paths.ca_cert.read_text()
        self.cert_lifetime = cert_lifetime
        self.token_ttl = token_ttl
        self.partner_access_path = partner_access_path
        self.changed = threading.Condition()
        self.faults: dict[str, Any] | None = None
        self.fault_lock = threading.Lock()
        self.fault_hits = 0

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -------------------------------------------------------------- faults

    def set_faults(self, spec: dict[str, Any]) -> dict[str, Any]:
        allowed = {"status", "delay", "truncate", "invalid_site", "paths", "count", "ports"}
        if unknown := set(spec) - allowed:
            raise HttpError(400, f"unknown fault keys: {sorted(unknown)}")
        status = spec.get("status")
        if status is not None and not (isinstance(status, int) and 400 <= status <= 599):
            raise HttpError(400, "status must be an HTTP error status (400-599) or null")
        delay = spec.get("delay", 0)
        if not isinstance(delay, int | float) or not 0 <= delay <= 120:
            raise HttpError(400, "delay must be 0-120 seconds")
        count = spec.get("count")
        if count is not None and not (isinstance(count, int) and count > 0):
            raise HttpError(400, "count must be a positive integer or null (until cleared)")
        paths = spec.get("paths")
        if paths is not None and not (isinstance(paths, list)
                                      and all(isinstance(p, str) for p in paths)):
            raise HttpError(400, "paths must be a list of path prefixes")
        ports = spec.get("ports", ["device", "enroll"])
        if not (isinstance(ports, list) and set(ports) <= {"device", "enroll"}):
            raise HttpError(400, "ports must be a list of 'device'/'enroll'")
        invalid = spec.get("invalid_site", False)
        if invalid not in (False, True, "schema", "json"):
            raise HttpError(400, "invalid_site must be false, true/'schema' or 'json'")
        faults = {"status": status, "delay": float(delay), "truncate": bool(spec.get("truncate")),
                  "invalid_site": "schema" if invalid is True else invalid,
                  "paths": paths, "count": count, "ports": ports}
        with self.fault_lock:
            self.faults = faults
            self.fault_hits = 0
        return faults

    def clear_faults(self) -> None:
        with self.fault_lock:
            self.faults = None

    def take_fault(self, port_kind: str, path: str) -> dict[str, Any] | None:
        with self.fault_lock:
            f = self.faults
            if f is None or port_kind not in f["ports"]:
                return None
            if f["paths"] is not None and not any(path.startswith(p) for p in f["paths"]):
                return None
            if f["invalid_site"] and not f["status"] and not f["delay"] and not f["truncate"] \
                    and not path.startswith("/v1/site"):
                return None
            self.fault_hits += 1
            if f["count"] is not None:
                f["count"] -= 1
                if f["count"] <= 0:
                    self.faults = None
            return dict(f)

    # -------------------------------------------------------------- partner / admin side

    def create_device(self, serial: str, document: Any, role: str, author: str) -> dict[str, Any]:
        if not isinstance(serial, str) or not SERIAL.match(serial):
            raise HttpError(400, "serial must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if document is None:
            document = default_document(serial)
        if not isinstance(document, dict):
            raise HttpError(400, "document must be a JSON object")
        with self.store.tx() as db:
            if db.execute("SELECT 1 FROM devices WHERE serial = ?", (serial,)).fetchone():
                raise HttpError(409, f"device {serial} exists; POST .../claim-token for a "
                                     "new token")
            db.execute("INSERT INTO devices (serial, created_at) VALUES (?, ?)",
                       (serial, now_iso()))
            version = self.store.add_version(db, serial, document, source="portal", role=role,
                                             author=author, changed=[""])
            token = self._new_token(db, serial)
        self.notify()
        return {"serial": serial, "claim_token": token, "site_version": version}

    def new_claim_token(self, serial: str) -> dict[str, Any]:
        self.require_device(serial)
        with self.store.tx() as db:
            token = self._new_token(db, serial)
        return {"serial": serial, "claim_token": token}

    def _new_token(self, db: Any, serial: str) -> str:
        # Never a leading "-": it would read as an option on `edgepbx cloud claim TOKEN`.
        token = "ct_" + secrets.token_urlsafe(24)
        expires = dt.datetime.now(dt.UTC) + self.token_ttl
        db.execute("INSERT INTO claim_tokens VALUES (?,?,?,?,NULL)",
                   (Store.token_hash(token), serial, now_iso(),
                    expires.isoformat(timespec="seconds")))
        return token

    def require_device(self, serial: str) -> Any:
        row = self.store.device(serial)
        if row is None:
            raise HttpError(404, f"no device {serial}")
        return row

    def check_role(self, serial: str | None, role: str, *, write: bool = False,
                   force: bool = False) -> None:
        """``force`` (test only, partner writes): skip the partner-access check, to simulate
        a portal that fails to enforce it, so the device's own refusal can be tested."""
        if force and write:
            return
        if role == "partner" and serial is not None and \
                not self.require_device(serial)["partner_access"]:
            raise HttpError(403, "partner access is turned off for this site by the "
                                 "customer admin")
        del write

    def put_document(self, serial: str, document: Any, role: str, author: str,
                     base_version: int | None, *, force: bool = False) -> dict[str, Any]:
        self.check_role(serial, role, write=True, force=force)
        if not isinstance(document, dict):
            raise HttpError(400, "document must be a JSON object")
        with self.store.tx() as db:
            cur = self.store.current_site(serial)
            assert cur is not None
            if base_version is not None and base_version != cur["version"]:
                raise HttpError(409, "the site changed since base_version",
                                current_version=cur["version"], conflicts=[])
            old = json.loads(cur["document"])
            try:
                new = docpath.restore_masked(document, old)
            except docpath.PathError as exc:
                raise HttpError(400, str(exc)) from None
            changed = docpath.diff(old, new)
            if not changed:
                return {"version": cur["version"], "changed_paths": []}
            version = self.store.add_version(db, serial, new, source="portal", role=role,
                                             author=author, changed=changed)
        self.notify()
        return {"version": version, "changed_paths": changed}

    def portal_changes(self, serial: str, changes: Any, role: str, author: str, *,
                       force: bool = False) -> dict[str, Any]:
        self.check_role(serial, role, write=True, force=force)
        changes = self._check_changes(changes)
        with self.store.tx() as db:
            cur = self.store.current_site(serial)
            assert cur is not None
            doc = json.loads(cur["document"])
            paths = self._apply(doc, changes)
            version = self.store.add_version(db, serial, doc, source="portal", role=role,
                                             author=author, changed=paths)
        self.notify()
        return {"version": version}

    def set_partner_access(self, serial: str, enabled: Any, author: str) -> dict[str, Any]:
        if not isinstance(enabled, bool):
            raise HttpError(400, "enabled must be true or false")
        self.require_device(serial)
        version = None
        with self.store.tx() as db:
            db.execute("UPDATE devices SET partner_access = ? WHERE serial = ?",
                       (int(enabled), serial))
            if self.partner_access_path:
                cur = self.store.current_site(serial)
                assert cur is not None
                doc = json.loads(cur["document"])
                try:
                    before = docpath.get(doc, self.partner_access_path)
                except docpath.PathError:
                    before = None
                if before is not enabled:
                    docpath.set_path(doc, self.partner_access_path, enabled)
                    version = self.store.add_version(
                        db, serial, doc, source="portal", role="admin", author=author,
                        changed=[self.partner_access_path])
        self.notify()
        return {"serial": serial, "partner_access": enabled, "site_version": version}

    def site_view(self, serial: str, role: str, version: int | None,
                  secrets_: bool) -> dict[str, Any]:
        self.check_role(serial, role)
        if secrets_ and role != "admin":
            raise HttpError(403, "only the customer admin may read secrets")
        if version is None:
            row = self.store.current_site(serial)
        else:
            row = self.store.one("SELECT * FROM site_versions WHERE serial = ? AND version = ?",
                                 serial, version)
        if row is None:
            raise HttpError(404, "no such version")
        doc = json.loads(row["document"])
        return {"version": row["version"], "etag": row["etag"],
                "document": doc if secrets_ else docpath.mask_secrets(doc),
                "source": row["source"], "author": {"role": row["author_role"],
                                                    "id": row["author_id"]},
                "changed_paths": json.loads(row["changed_paths"]),
                "created_at": row["created_at"]}

    def summary(self, serial: str, role: str) -> dict[str, Any]:
        dev = self.require_device(serial)
        cur = self.store.current_site(serial)
        status = self.store.one("SELECT * FROM site_status WHERE serial = ? ORDER BY id DESC "
                                "LIMIT 1", serial)
        hb = self.store.one("SELECT * FROM heartbeats WHERE serial = ?", serial)
        count = self.store.one("SELECT COUNT(*) AS n FROM cdrs WHERE serial = ?", serial)
        usage = self.store.one("SELECT COUNT(*) AS n FROM usage WHERE serial = ?", serial)
        out: dict[str, Any] = {
            "serial": serial, "created_at": dev["created_at"],
            "partner_access": bool(dev["partner_access"]),
            "enrolled_at": dev["enrolled_at"], "cert_not_after": dev["cert_not_after"],
            "site_version": cur["version"] if cur else None,
            "last_status": status_row(status) if status else None,
            "last_heartbeat_at": hb["received_at"] if hb else None,
            "cdr_count": count["n"] if count else 0,
            "usage_count": usage["n"] if usage else 0,
        }
        if role == "admin":
            n = self.store.one("SELECT COUNT(*) AS n FROM voicemail_backups WHERE serial = ?",
                               serial)
            out["voicemail_backup_count"] = n["n"] if n else 0
        return out

    # -------------------------------------------------------------- device side

    def enroll(self, body: dict[str, Any]) -> dict[str, Any]:
        token, csr_pem = body.get("claim_token"), body.get("csr_pem")
        if not isinstance(token, str) or not token:
            raise HttpError(400, "claim_token must be a non-empty string")
        if not isinstance(csr_pem, str):
            raise HttpError(400, "csr_pem must be a string")
        th = Store.token_hash(token)
        row = self.store.one("SELECT * FROM claim_tokens WHERE token_sha256 = ?", th)
        if row is None:
            raise HttpError(401, "unknown claim token")
        if row["used_at"] is not None:
            raise HttpError(401, "claim token already used")
        if dt.datetime.fromisoformat(row["expires_at"]) < dt.datetime.now(dt.UTC):
            raise HttpError(401, "claim token expired")
        serial = row["serial"]
        try:
            csr = pki.check_csr(csr_pem, serial)
        except pki.CsrError as exc:
            raise HttpError(400, str(exc)) from None
        cert = pki.sign_device_csr(self.pki, csr, serial, self.cert_lifetime)
        with self.store.tx() as db:
            cur = db.execute("UPDATE claim_tokens SET used_at = ? WHERE token_sha256 = ? AND "
                             "used_at IS NULL", (now_iso(), th))
            if cur.rowcount != 1:
                raise HttpError(401, "claim token already used")
            self._record_cert(db, serial, cert, enrolled=True)
        return self._cert_reply(cert)

    def renew(self, serial: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            csr = pki.check_csr(body.get("csr_pem"), serial)  # type: ignore[arg-type]
        except pki.CsrError as exc:
            raise HttpError(400, str(exc)) from None
        cert = pki.sign_device_csr(self.pki, csr, serial, self.cert_lifetime)
        with self.store.tx() as db:
            self._record_cert(db, serial, cert, enrolled=False)
        return self._cert_reply(cert)

    def _record_cert(self, db: Any, serial: str, cert: x509.Certificate, *,
                     enrolled: bool) -> None:
        sql = "UPDATE devices SET cert_serial = ?, cert_not_after = ?"
        args: list[Any] = [format(cert.serial_number, "x"),
                           cert.not_valid_after_utc.isoformat(timespec="seconds")]
        if enrolled:
            sql += ", enrolled_at = ?"
            args.append(now_iso())
        db.execute(sql + " WHERE serial = ?", (*args, serial))

    def _cert_reply(self, cert: x509.Certificate) -> dict[str, Any]:
        return {"certificate_pem": pki.cert_pem(cert).decode(), "ca_chain_pem": self.ca_pem}

    def site_get(self, serial: str, if_none_match: str | None, wait: float,
                 invalid: str | None) -> Reply:
        deadline = time.monotonic() + wait
        with self.changed:
            while True:
                row = self.store.current_site(serial)
                if row is None:
                    raise HttpError(404, "no site document for this device")
                if invalid:
                    return self._invalid_site(row, invalid)
                etag = row["etag"]
                if not etag_matches(if_none_match, etag):
                    author = json.dumps({"role": row["author_role"], "id": row["author_id"]})
                    body = (f'{{"version": {row["version"]}, "document": {row["document"]}, '
                            f'"author": {author}}}')
                    return Reply(200, body.encode(), headers={"ETag": f'"{etag}"',
                                                     "Cache-Control": "no-store"})
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Reply(304, headers={"ETag": f'"{etag}"'})
                self.changed.wait(remaining)

    def _invalid_site(self, row: Any, kind: str) -> Reply:
        version = row["version"] + 1
        if kind == "json":
            return Reply(200, b'{"version": %d, "document": {"site": ' % version,
                         headers={"ETag": f'"{version}-0000000000000000"'})
        doc = {"site": {"name": 42, "timezone": "Not/AZone"}, "users": "not-a-list",
               "unknown_section": True}
        etag = f"{version}-{hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]}"
        return json_reply(200, {"version": version, "document": doc}, ETag=f'"{etag}"')

    def site_status(self, serial: str, body: dict[str, Any]) -> dict[str, Any]:
        version, state = body.get("version"), body.get("state")
        errors, applied_at = body.get("errors", []), body.get("applied_at")
        if not isinstance(version, int) or isinstance(version, bool):
            raise HttpError(400, "version must be an integer")
        if state not in ("applied", "failed"):
            raise HttpError(400, "state must be 'applied' or 'failed'")
        if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
            raise HttpError(400, "errors must be a list of strings")
        if isinstance(applied_at, int | float) and not isinstance(applied_at, bool):
            try:  # epoch seconds (what agent/cloud/portal_client.py sends) or ISO 8601
                applied_at = dt.datetime.fromtimestamp(applied_at, dt.UTC).isoformat()
            except (OverflowError, OSError, ValueError):
                raise HttpError(400, "applied_at out of range") from None
        if applied_at is not None and not isinstance(applied_at, str):
            raise HttpError(400, "applied_at must be epoch seconds, an ISO 8601 string or null")
        with self.store.tx() as db:
            db.execute("INSERT INTO site_status (serial, version, state, errors, applied_at, "
                       "received_at) VALUES (?,?,?,?,?,?)",
                       (serial, version, state, json.dumps(errors), applied_at, now_iso()))
        return {"stored": True}

    @staticmethod
    def _check_changes(changes: Any) -> list[tuple[str, Any]]:
        if not isinstance(changes, list) or not changes:
            raise HttpError(400, "changes must be a non-empty list of {path, value}")
        out = []
        for n, c in enumerate(changes):
            if not isinstance(c, dict) or "path" not in c or "value" not in c:
                raise HttpError(400, f"changes[{n}] must be an object with path and value")
            try:
                path = docpath.fmt(docpath.parse(c["path"]))
            except docpath.PathError as exc:
                raise HttpError(400, f"changes[{n}]: {exc}") from None
            out.append((path, c["value"]))
        return out

    @staticmethod
    def _apply(doc: dict[str, Any], changes: list[tuple[str, Any]]) -> list[str]:
        for path, value in changes:
            try:
                docpath.set_path(doc, path, value)
            except docpath.PathError as exc:
                raise HttpError(400, str(exc)) from None
        return [p for p, _ in changes]

    def device_changes(self, serial: str, body: dict[str, Any]) -> Reply:
        base, author = body.get("base_version"), body.get("author")
        if not isinstance(base, int) or isinstance(base, bool) or base < 1:
            raise HttpError(400, "base_version must be a positive integer")
        if not isinstance(author, dict) or author.get("role") not in AUTHOR_ROLES or \
                not isinstance(author.get("id"), str) or not author["id"]:
            raise HttpError(400, "author must be {role: user|admin, id: str}")
        changes = self._check_changes(body.get("changes"))
        with self.store.tx() as db:
            cur = self.store.current_site(serial)
            if cur is None:
                raise HttpError(404, "no site document for this device")
            current = cur["version"]
            if base > current:
                raise HttpError(409, f"base_version {base} is newer than the portal's",
                                current_version=current, conflicts=[])
            portal_paths: list[str] = []
            for row in db.execute("SELECT changed_paths FROM site_versions WHERE serial = ? "
                                  "AND version > ? AND source = 'portal'", (serial, base)):
                portal_paths += json.loads(row["changed_paths"])
            conflicts = [p for p, _ in changes
                         if any(q == "" or docpath.overlaps(p, q) for q in portal_paths)]
            if conflicts:
                raise HttpError(409, "changed at the portal since base_version",
                                current_version=current, conflicts=conflicts)
            doc = json.loads(cur["document"])
            before = copy.deepcopy(doc)
            paths = self._apply(doc, changes)
            if doc == before:
                return json_reply(200, {"version": current})
            version = self.store.add_version(db, serial, doc, source="device",
                                             role=author["role"], author=author["id"],
                                             changed=paths)
        self.notify()
        return json_reply(200, {"version": version})

    def _idempotent(self, serial: str, endpoint: str, key: str | None,
                    raw: bytes) -> tuple[str, str, Reply | None]:
        if not key:
            raise HttpError(400, "Idempotency-Key header required")
        if len(key) > 200:
            raise HttpError(400, "Idempotency-Key too long")
        sha = hashlib.sha256(raw).hexdigest()
        row = self.store.one("SELECT * FROM idempotency WHERE serial = ? AND endpoint = ? AND "
                             "key = ?", serial, endpoint, key)
        if row is None:
            return key, sha, None
        if row["body_sha256"] != sha:
            raise HttpError(422, "Idempotency-Key reused with a different body")
        reply = Reply(200, row["response"].encode(), headers={"Idempotent-Replayed": "true"})
        return key, sha, reply

    def cdr(self, serial: str, key: str | None, raw: bytes, body: dict[str, Any]) -> Reply:
        key, sha, replay = self._idempotent(serial, "cdr", key, raw)
        if replay:
            return replay
        records = body.get("records")
        if not isinstance(records, list):
            raise HttpError(400, "records must be a list")
        for n, r in enumerate(records):
            if not isinstance(r, dict) or not isinstance(r.get("call_id"), str) or \
                    not r["call_id"]:
                raise HttpError(400, f"records[{n}] needs a non-empty string call_id")
        stored = dups = 0
        with self.store.tx() as db:
            if db.execute("SELECT 1 FROM idempotency WHERE serial=? AND endpoint='cdr' AND "
                          "key=?", (serial, key)).fetchone():
                raise HttpError(409, "concurrent request with the same Idempotency-Key")
            ts = now_iso()
            for r in records:
                cur = db.execute("INSERT OR IGNORE INTO cdrs VALUES (?,?,?,?,?)",
                                 (serial, r["call_id"], json.dumps(r), key, ts))
                if cur.rowcount == 1:
                    stored += 1
                else:
                    dups += 1
            response = json.dumps({"stored": stored, "duplicates": dups})
            db.execute("INSERT INTO idempotency VALUES (?,?,?,?,?,?)",
                       (serial, "cdr", key, sha, response, ts))
        return Reply(200, response.encode())

    def usage(self, serial: str, key: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if not key:
            raise HttpError(400, "Idempotency-Key header required")
        day = body.get("day", body.get("date"))
        if day is None:
            day = dt.datetime.now(dt.UTC).date().isoformat()
        if not isinstance(day, str) or not DAY.match(day):
            raise HttpError(400, "day must be YYYY-MM-DD")
        with self.store.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO usage VALUES (?,?,?,?,?)",
                             (serial, day, key, json.dumps(body), now_iso()))
        new = cur.rowcount == 1
        return {"stored": int(new), "duplicates": int(not new), "day": day}

    def voicemail_backup(self, serial: str, backup_id: str, mailbox: str | None,
                         encryption: str | None, content: bytes) -> dict[str, Any]:
        if not BACKUP_ID.match(backup_id):
            raise HttpError(400, "backup_id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        if not mailbox or not encryption:
            raise HttpError(400, "X-Edgepbx-Mailbox and X-Edgepbx-Encryption headers required")
        if not content:
            raise HttpError(400, "empty backup")
        sha = hashlib.sha256(content).hexdigest()
        with self.store.tx() as db:
            row = db.execute("SELECT serial, sha256 FROM voicemail_backups WHERE backup_id = ?",
                             (backup_id,)).fetchone()
            if row is not None:
                if row["serial"] != serial or row["sha256"] != sha:
                    raise HttpError(409, "backup_id already stored with different content")
                return {"backup_id": backup_id, "stored": False, "size": len(content),
                        "sha256": sha}
            db.execute("INSERT INTO voicemail_backups VALUES (?,?,?,?,?,?,?,?)",
                       (backup_id, serial, mailbox, encryption, sha, len(content),
                        content, now_iso()))
        return {"backup_id": backup_id, "stored": True, "size": len(content), "sha256": sha}

    def heartbeat(self, serial: str, body: dict[str, Any]) -> dict[str, Any]:
        ts = now_iso()
        with self.store.tx() as db:
            db.execute("INSERT INTO heartbeats (serial, body, received_at) VALUES (?,?,?) "
                       "ON CONFLICT(serial) DO UPDATE SET body = excluded.body, "
                       "received_at = excluded.received_at, count = count + 1",
                       (serial, json.dumps(body), ts))
        return {"ok": True, "received_at": ts}


def status_row(row: Any) -> dict[str, Any]:
    return {"version": row["version"], "state": row["state"],
            "errors": json.loads(row["errors"]), "applied_at": row["applied_at"],
            "received_at": row["received_at"]}


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for part in header.split(","):
        tag = part.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == etag:
            return True
    return False


# ---------------------------------------------------------------------------- HTTP plumbing


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgepbx-reference-portal/1"
    timeout = 120  # idle keep-alive connections; long-polls hold at most 60 s
    server: PortalHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"[{self.server.kind}] {self.address_string()} {format % args}\n")

    @property
    def portal(self) -> Portal:
        return self.server.portal

    def read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > limit:
                    self.close_connection = True
                    raise HttpError(413, "body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, "bad Content-Length") from None
        if n > limit:
            self.close_connection = True
            raise HttpError(413, "body too large")
        return self.rfile.read(n)

    def json_body(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HttpError(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return body

    def send(self, reply: Reply, *, truncate: bool = False) -> None:
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if reply.status != 304:
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if reply.status == 304 or self.command == "HEAD":
            return
        if truncate:
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        self._truncate = False
        try:
            reply = self.route(method)
        except HttpError as exc:
            reply = json_reply(exc.status, {"error": exc.message, **exc.extra})
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
            return
        except Exception as exc:  # noqa: BLE001 - a bug: answer 500 rather than drop the connection
            reply = json_reply(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})
        try:
            self.send(reply, truncate=self._truncate)
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            self.close_connection = True

    def route(self, method: str) -> Reply:
        raise NotImplementedError


class DeviceHandler(Handler):
    """Both TLS ports. On the device port the client certificate is already verified by
    the handshake (CERT_REQUIRED against the portal CA); its CN names the device."""

    def device_serial(self) -> str:
        cert = self.connection.getpeercert()  # type: ignore[attr-defined]
        cn = None
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        if not cn:
            raise HttpError(403, "client certificate has no common name")
        row = self.portal.store.device(cn)
        if row is None:
            raise HttpError(403, f"unknown device {cn}")
        return cn

    def route(self, method: str) -> Reply:
        url = urlsplit(self.path)
        path = url.path
        fault = self.portal.take_fault(self.server.kind, path)
        if fault:
            if fault["delay"]:
                time.sleep(fault["delay"])
            if fault["status"]:
                self.close_connection = True  # the body is not read
                return json_reply(fault["status"], {"error": "injected fault"},
                                  **({"Retry-After": "1"} if fault["status"] == 503 else {}))
            self._truncate = fault["truncate"]
        limit = MAX_BACKUP_BODY if path.startswith("/v1/voicemail-backups/") else MAX_JSON_BODY
        raw = self.read_body(limit) if method in ("POST", "PUT") else b""
        p = self.portal
        if path == "/v1/enroll":
            self._method(method, "POST")
            return json_reply(200, p.enroll(self.json_body(raw)))
        if self.server.kind == "enroll":
            raise HttpError(404, "the enrollment port serves only POST /v1/enroll; use the "
                                 "mutual-TLS device port with the enrolled certificate")
        serial = self.device_serial()
        if path == "/v1/renew":
            self._method(method, "POST")
            return json_reply(200, p.renew(serial, self.json_body(raw)))
        if path == "/v1/site":
            self._method(method, "GET")
            wait = _wait_param(parse_qs(url.query))
            invalid = fault["invalid_site"] if fault else None
            return p.site_get(serial, self.headers.get("If-None-Match"), wait, invalid or None)
        if path == "/v1/site/status":
            self._method(method, "POST")
            return json_reply(200, p.site_status(serial, self.json_body(raw)))
        if path == "/v1/site/changes":
            self._method(method, "POST")
            return p.device_changes(serial, self.json_body(raw))
        if path == "/v1/cdr":
            self._method(method, "POST")
            return p.cdr(serial, self.headers.get("Idempotency-Key"), raw, self.json_body(raw))
        if path == "/v1/usage":
            self._method(method, "POST")
            return json_reply(200, p.usage(serial, self.headers.get("Idempotency-Key"),
                                           self.json_body(raw)))
        if path.startswith("/v1/voicemail-backups/"):
            self._method(method, "PUT")
            backup_id = unquote(path.removeprefix("/v1/voicemail-backups/"))
            return json_reply(200, p.voicemail_backup(
                serial, backup_id, self.headers.get("X-Edgepbx-Mailbox"),
                self.headers.get("X-Edgepbx-Encryption"), raw))
        if path == "/v1/heartbeat":
            self._method(method, "POST")
            return json_reply(200, p.heartbeat(serial, self.json_body(raw)))
        raise HttpError(404, f"no endpoint {path}")

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(405, f"use {allowed}")


def _wait_param(query: dict[str, list[str]]) -> float:
    values = query.get("wait")
    if not values:
        return 0.0
    try:
        wait = float(values[-1])
    except ValueError:
        raise HttpError(400, "wait must be a number of seconds (0-60)") from None
    if not 0 <= wait <= MAX_WAIT:
        raise HttpError(400, "wait must be 0-60 seconds")
    return wait


class AdminHandler(Handler):
    """Partner / customer-admin interface: JSON under /api, HTML under /."""

    def role(self, query: dict[str, list[str]], *, required: bool = True) -> str:
        role = self.headers.get("X-Portal-Role") or (query.get("role") or [""])[-1]
        if role not in PORTAL_ROLES:
            if not required:
                return ""
            raise HttpError(401, "X-Portal-Role header (partner|admin) required")
        return role

    def author(self, query: dict[str, list[str]], role: str) -> str:
        return self.headers.get("X-Portal-User") or (query.get("user") or [role])[-1]

    def route(self, method: str) -> Reply:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(s) for s in url.path.strip("/").split("/") if s]
        if parts[:1] == ["api"]:
            return self.api(method, parts[1:], query)
        return self.html_page(method, parts, query)

    def api(self, method: str, parts: list[str], query: dict[str, list[str]]) -> Reply:
        p = self.portal
        if parts == ["health"]:
            return json_reply(200, {"ok": True})
        role = self.role(query)
        author = self.author(query, role)
        raw = self.read_body(MAX_JSON_BODY) if method in ("POST", "PUT") else b""
        if parts == ["faults"]:
            if role != "admin":
                raise HttpError(403, "fault injection is admin only")
            if method == "GET":
                return json_reply(200, {"faults": p.faults, "hits": p.fault_hits})
            if method in ("POST", "PUT"):
                return json_reply(200, {"faults": p.set_faults(self.json_body(raw))})
            if method == "DELETE":
                p.clear_faults()
                return json_reply(200, {"faults": None})
            raise HttpError(405, "use GET, POST or DELETE")
        if parts == ["devices"]:
            if method == "GET":
                rows = p.store.all("SELECT serial FROM devices ORDER BY serial")
                return json_reply(200, {"devices": [p.summary(r["serial"], role) for r in rows]})
            if method == "POST":
                body = self.json_body(raw)
                return json_reply(201, p.create_device(body.get("serial"), body.get("document"),
                                                       role, author))
            raise HttpError(405, "use GET or POST")
        if len(parts) < 2 or parts[0] != "devices":
            raise HttpError(404, "not found")
        serial, rest = parts[1], parts[2:]
        p.require_device(serial)
        # ?force=1 (test only): store a partner's site write although partner access is off,
        # simulating a portal that fails to enforce it (the device must refuse the version).
        force = (query.get("force") or ["0"])[-1] in ("1", "true") and \
            rest in (["site"], ["site", "changes"]) and method in ("PUT", "POST")
        p.check_role(serial, role, write=force, force=force)
        if rest == [] and method == "GET":
            return json_reply(200, p.summary(serial, role))
        if rest == ["claim-token"] and method == "POST":
            return json_reply(201, p.new_claim_token(serial))
        if rest == ["site"]:
            if method == "GET":
                version = (query.get("version") or [None])[-1]
                return json_reply(200, p.site_view(
                    serial, role, int(version) if version else None,
                    (query.get("secrets") or ["0"])[-1] in ("1", "true")))
            if method == "PUT":
                body = self.json_body(raw)
                base = body.get("base_version")
                if base is not None and not isinstance(base, int):
                    raise HttpError(400, "base_version must be an integer")
                return json_reply(200, p.put_document(serial, body.get("document"), role,
                                                      author, base, force=force))
        if rest == ["site", "versions"] and method == "GET":
            rows = p.store.all("SELECT version, etag, source, author_role, author_id, "
                               "changed_paths, created_at FROM site_versions WHERE serial = ? "
                               "ORDER BY version", serial)
            return json_reply(200, {"versions": [
                {**dict(r), "changed_paths": json.loads(r["changed_paths"])} for r in rows]})
        if rest == ["site", "changes"] and method == "POST":
            return json_reply(200, p.portal_changes(serial, self.json_body(raw).get("changes"),
                                                    role, author, force=force))
        if rest == ["partner-access"] and method in ("PUT", "POST"):
            if role != "admin":
                raise HttpError(403, "only the customer admin may change partner access")
            return json_reply(200, p.set_partner_access(serial,
                                                        self.json_body(raw).get("enabled"),
                                                        author))
        if rest == ["status"] and method == "GET":
            rows = p.store.all("SELECT * FROM site_status WHERE serial = ? ORDER BY id", serial)
            return json_reply(200, {"reports": [status_row(r) for r in rows]})
        if rest == ["cdrs"] and method == "GET":
            rows = p.store.all("SELECT call_id, record, received_at FROM cdrs WHERE serial = ? "
                               "ORDER BY received_at, call_id", serial)
            if role != "admin":  # partners get usage, not call records
                return json_reply(200, {"count": len(rows)})
            return json_reply(200, {"count": len(rows), "call_ids": [r["call_id"] for r in rows],
                                    "records": [json.loads(r["record"]) for r in rows]})
        if rest == ["usage"] and method == "GET":
            rows = p.store.all("SELECT * FROM usage WHERE serial = ? ORDER BY day, received_at",
                               serial)
            return json_reply(200, {"count": len(rows), "usage": [
                {"day": r["day"], "idempotency_key": r["idempotency_key"],
                 "body": json.loads(r["body"]), "received_at": r["received_at"]} for r in rows]})
        if rest == ["heartbeat"] and method == "GET":
            row = p.store.one("SELECT * FROM heartbeats WHERE serial = ?", serial)
            return json_reply(200, {"heartbeat": None if row is None else {
                "body": json.loads(row["body"]), "received_at": row["received_at"],
                "count": row["count"]}})
        if rest[:1] == ["voicemail-backups"] and method == "GET":
            if role != "admin":
                raise HttpError(403, "voicemail backups are for the customer admin only")
            if len(rest) == 1:
                rows = p.store.all("SELECT backup_id, mailbox, encryption, sha256, size, "
                                   "received_at FROM voicemail_backups WHERE serial = ? "
                                   "ORDER BY received_at", serial)
                return json_reply(200, {"count": len(rows), "backups": [dict(r) for r in rows]})
            row = p.store.one("SELECT * FROM voicemail_backups WHERE serial = ? AND "
                              "backup_id = ?", serial, rest[1])
            if row is None or len(rest) != 2:
                raise HttpError(404, "no such backup")
            return Reply(200, bytes(row["content"]), "application/octet-stream",
                         {"X-Edgepbx-Mailbox": row["mailbox"],
                          "X-Edgepbx-Encryption": row["encryption"]})
        raise HttpError(404, "not found")

    # -------------------------------------------------------------- HTML (minimal)

    def html_page(self, method: str, parts: list[str], query: dict[str, list[str]]) -> Reply:
        p = self.portal
        role = self.role(query, required=False)
        if not role:
            return page("edgepbx portal", "<p>Choose a role: <a href='/?role=partner'>partner"
                        "</a> | <a href='/?role=admin'>customer admin</a></p>")
        q = f"?role={role}"
        form: dict[str, list[str]] = {}
        if method == "POST":
            form = parse_qs(self.read_body(MAX_JSON_BODY).decode(errors="replace"))
        esc = html.escape
        if parts == [] and method == "GET":
            rows = p.store.all("SELECT serial FROM devices ORDER BY serial")
            items = "".join(f"<li><a href='/devices/{esc(r['serial'])}{q}'>{esc(r['serial'])}"
                            "</a></li>" for r in rows)
            return page("devices", f"<p>role: {role}</p><ul>{items}</ul>"
                        f"<form method='post' action='/devices{q}'>serial <input name='serial'>"
                        "<button>create device + claim token</button></form>")
        if parts == ["devices"] and method == "POST":
            out = p.create_device((form.get("serial") or [""])[0], None, role, role)
            return page("device created", f"<p>device {esc(out['serial'])}; claim token "
                        f"(shown once): <code>{esc(out['claim_token'])}</code></p>"
                        f"<a href='/devices/{esc(out['serial'])}{q}'>open</a>")
        if len(parts) >= 2 and parts[0] == "devices":
            serial = parts[1]
            if parts[2:] == ["site"] and method == "POST":
                try:
                    doc = json.loads((form.get("document") or [""])[0])
                except json.JSONDecodeError as exc:
                    raise HttpError(400, f"document is not JSON: {exc}") from None
                p.put_document(serial, doc, role, role, None)
                return Reply(303, headers={"Location": f"/devices/{serial}{q}"})
            if parts[2:] == ["partner-access"] and method == "POST":
                if role != "admin":
                    raise HttpError(403, "only the customer admin may change partner access")
                p.set_partner_access(serial, (form.get("enabled") or [""])[0] == "1", role)
                return Reply(303, headers={"Location": f"/devices/{serial}{q}"})
            if parts[2:] == [] and method == "GET":
                return self.device_page(serial, role)
        raise HttpError(404, "not found")

    def device_page(self, serial: str, role: str) -> Reply:
        p, esc, q = self.portal, html.escape, f"?role={role}"
        s = p.summary(serial, role)
        p.check_role(serial, role)
        site = p.site_view(serial, role, None, False)
        reports = p.store.all("SELECT * FROM site_status WHERE serial = ? ORDER BY id DESC "
                              "LIMIT 10", serial)
        rep = "".join(f"<li>v{r['version']} {esc(r['state'])} {esc(r['applied_at'] or '')} "
                      f"{esc(', '.join(json.loads(r['errors'])))}</li>" for r in reports)
        body = (f"<p><a href='/{q}'>devices</a> | role: {role}</p>"
                f"<pre>{esc(json.dumps(s, indent=2))}</pre><h2>status reports</h2><ul>{rep}</ul>"
                f"<h2>site v{site['version']}</h2>"
                f"<form method='post' action='/devices/{esc(serial)}/site{q}'>"
                f"<textarea name='document' rows='25' cols='100'>"
                f"{esc(json.dumps(site['document'], indent=2))}</textarea><br>"
                "<button>save as new version</button></form>")
        if role == "admin":
            flip = "0" if s["partner_access"] else "1"
            body += (f"<form method='post' action='/devices/{esc(serial)}/partner-access{q}'>"
                     f"<input type='hidden' name='enabled' value='{flip}'><button>turn partner "
                     f"access {'off' if s['partner_access'] else 'on'}</button></form>")
        return page(f"device {serial}", body)


def page(title: str, body: str) -> Reply:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Reply(200, doc.encode(), "text/html; charset=utf-8")


class PortalHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], handler: type[Handler], portal: Portal,
                 kind: str, tls: ssl.SSLContext | None, verbose: bool = False) -> None:
        self.portal, self.kind, self.tls, self.verbose = portal, kind, tls, verbose
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(10)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            if self.verbose:
                sys.stderr.write(f"[{self.kind}] TLS handshake from {client_address} "
                                 f"refused: {exc}\n")
            return
        try:
            conn.settimeout(None)
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


def tls_context(paths: pki.PkiPaths, *, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(paths.server_cert, paths.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(paths.ca_cert))
    return ctx


@dataclass
class Running:
    portal: Portal
    servers: dict[str, PortalHTTPServer]
    threads: list[threading.Thread]

    @property
    def ports(self) -> dict[str, int]:
        return {k: s.server_address[1] for k, s in self.servers.items()}

    def stop(self) -> None:
        for s in self.servers.values():
            s.shutdown()
            s.server_close()
        self.portal.notify()
        self.portal.store.close()


def start(data_dir: Path, pki_paths: pki.PkiPaths, *, host: str = "127.0.0.1",
          admin_host: str = "127.0.0.1", device_port: int = 0, enroll_port: int = 0,
          admin_port: int = 0, verbose: bool = False, **portal_opts: Any) -> Running:
    """Start the three listeners in threads of this process (tests may also do this)."""
    portal = Portal(data_dir, pki_paths, **portal_opts)
    servers = {
        "device": PortalHTTPServer((host, device_port), DeviceHandler, portal, "device",
                                   tls_context(pki_paths, require_client_cert=True), verbose),
        "enroll": PortalHTTPServer((host, enroll_port), DeviceHandler, portal, "enroll",
                                   tls_context(pki_paths, require_client_cert=False), verbose),
        "admin": PortalHTTPServer((admin_host, admin_port), AdminHandler, portal, "admin",
                                  None, verbose),
    }
    threads = []
    for name, s in servers.items():
        t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                             name=f"portal-{name}", daemon=True)
        t.start()
        threads.append(t)
    return Running(portal, servers, threads)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make-pki"]:
        ap = argparse.ArgumentParser(prog="python -m tests.portal make-pki")
        ap.add_argument("dir", type=Path)
        ap.add_argument("--ip", action="append", default=None)
        ap.add_argument("--dns", action="append", default=None)
        ap.add_argument("--force", action="store_true")
        a = ap.parse_args(argv[1:])
        paths = pki.make_pki(a.dir, ips=a.ip or ["127.0.0.1"], hostnames=a.dns or ["localhost"],
                             force=a.force)
        print(json.dumps({k: str(v) for k, v in paths.__dict__.items()}))
        return 0
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    ap = argparse.ArgumentParser(prog="python -m tests.portal",
                                 description="edgepbx reference portal (test tool)")
    ap.add_argument("--data", type=Path, required=True, help="state directory (SQLite, PKI)")
    ap.add_argument("--pki", type=Path, help="PKI directory (default DATA/pki; made if absent)")
    ap.add_argument("--host", default="127.0.0.1", help="address of the TLS ports")
    ap.add_argument("--device-port", type=int, default=8443, help="mutual-TLS port (0: any)")
    ap.add_argument("--enroll-port", type=int, default=8444, help="enrollment port (0: any)")
    ap.add_argument("--admin-host", default="127.0.0.1")
    ap.add_argument("--admin-port", type=int, default=8080, help="partner/admin port (0: any)")
    ap.add_argument("--server-name", action="append", default=None,
                    help="DNS name for the server certificate (repeatable; default localhost)")
    ap.add_argument("--server-ip", action="append", default=None,
                    help="IP for the server certificate (repeatable; default --host)")
    ap.add_argument("--cert-lifetime", type=parse_duration, default=dt.timedelta(days=90),
                    help="device certificate lifetime, e.g. 90d, 10m, 30s")
    ap.add_argument("--token-ttl", type=parse_duration, default=dt.timedelta(days=7))
    ap.add_argument("--partner-access-path", default="privacy.partner_access",
                    help="where the partner-access switch is mirrored in the site document "
                         "('' to not mirror)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    ips = a.server_ip or ([a.host] if a.host not in ("0.0.0.0", "::") else ["127.0.0.1"])
    paths = pki.make_pki(a.pki or a.data / "pki", ips=ips,
                         hostnames=a.server_name or ["localhost"])
    running = start(a.data, paths, host=a.host, admin_host=a.admin_host,
                    device_port=a.device_port, enroll_port=a.enroll_port,
                    admin_port=a.admin_port, verbose=a.verbose,
                    cert_lifetime=a.cert_lifetime, token_ttl=a.token_ttl,
                    partner_access_path=a.partner_access_path)
    ready = {"event": "ready", "pid": os.getpid(), "host": a.host, "admin_host": a.admin_host,
             **{f"{k}_port": v for k, v in running.ports.items()},
             "ca_cert": str(paths.ca_cert), "data_dir": str(a.data)}
    (a.data / "ready.json").write_text(json.dumps(ready))
    print(json.dumps(ready), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
