"""The reference portal, run as a process (python tests/portal/server.py) on 127.0.0.1 with
ephemeral ports, talked to over real mutual TLS with certificates from /v1/enroll."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from . import docpath
from .pki import cert_pem, key_pem, make_ca, make_csr, new_rsa_key

SERVER = Path(__file__).resolve().parent / "server.py"
HOST = "127.0.0.1"

SITE = {
    "site": {"name": "Test Office", "timezone": "Europe/Berlin"},
    "users": [
        {"id": "ann", "name": "Ann", "extension": "101",
         "sip": {"username": "ann", "password": "ann-secret-101"}},
        {"id": "bob", "name": "Bob", "extension": "102",
         "sip": {"username": "bob", "password": "bob-secret-102"}},
    ],
    "hunt_groups": [{"name": "team", "pilot": "6000",
                     "members": [{"extension": "101"}, {"extension": "102"}]}],
}


# --------------------------------------------------------------------------- process


class PortalProcess:
    def __init__(self, data: Path, *extra: str) -> None:
        self.data, self.extra = data, extra
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, int] = {}

    def start(self, ports: dict[str, int] | None = None) -> PortalProcess:
        ports = ports or {"device": 0, "enroll": 0, "admin": 0}
        cmd = [sys.executable, str(SERVER), "--data", str(self.data),
               "--device-port", str(ports["device"]), "--enroll-port", str(ports["enroll"]),
               "--admin-port", str(ports["admin"]), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"portal did not start (rc={self.proc.poll()})"
        ready = json.loads(line)
        self.ports = {k: ready[f"{k}_port"] for k in ("device", "enroll", "admin")}
        self.ca = Path(ready["ca_cert"])
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    # ------------------------------------------------------------------ admin API

    def admin(self, method: str, path: str, body: Any = None, role: str = "admin",
              raw: bool = False) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(HOST, self.ports["admin"], timeout=30)
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"X-Portal-Role": role} if role else {})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        if raw:
            return resp.status, payload
        return resp.status, json.loads(payload) if payload else None

    def create_device(self, document: Any = None) -> tuple[str, str]:
        serial = f"EPX-{uuid.uuid4().hex[:10]}"
        status, out = self.admin("POST", "/api/devices",
                                 {"serial": serial, "document": document or SITE}, "partner")
        assert status == 201, out
        return serial, out["claim_token"]

    # ------------------------------------------------------------------ TLS clients

    def server_ctx(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        return ctx

    def request(self, port: str, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, ctx: ssl.SSLContext | None = None,
                timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection(HOST, self.ports[port], context=ctx or
                                           self.server_ctx(), timeout=timeout)
        if isinstance(body, bytes):
            data = body
        else:
            data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return resp.status, dict(resp.getheaders()), payload

    def enroll(self, token: str, csr_pem: str) -> tuple[int, Any]:
        status, _, payload = self.request("enroll", "POST", "/v1/enroll",
                                          {"claim_token": token, "csr_pem": csr_pem})
        return status, json.loads(payload)


@dataclass
class Device:
    portal: PortalProcess
    serial: str
    ctx: ssl.SSLContext
    cert: x509.Certificate

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[
            int, dict[str, str], Any]:
        status, hdrs, payload = self.portal.request(
            "device", method, path, body, {k.replace("_", "-"): v for k, v in headers.items()},
            self.ctx)
        try:
            parsed = json.loads(payload) if payload else None
        except json.JSONDecodeError:
            parsed = payload
        return status, hdrs, parsed


def client_ctx(portal: PortalProcess, tmp: Path, key: Any, cert_pem: str) -> ssl.SSLContext:
    name = uuid.uuid4().hex
    (tmp / f"{name}.key").write_bytes(key_pem(key))
    (tmp / f"{name}.pem").write_text(cert_pem)
    ctx = portal.server_ctx()
    ctx.load_cert_chain(tmp / f"{name}.pem", tmp / f"{name}.key")
    return ctx


def enrolled(portal: PortalProcess, tmp: Path, document: Any = None) -> Device:
    serial, token = portal.create_device(document)
    key = new_rsa_key()
    status, out = portal.enroll(token, make_csr(key, serial))
    assert status == 200, out
    return Device(portal, serial, client_ctx(portal, tmp, key, out["certificate_pem"]),
                  x509.load_pem_x509_certificate(out["certificate_pem"].encode()))


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalProcess]:
    p = PortalProcess(tmp_path_factory.mktemp("portal"), "--cert-lifetime", "2h").start()
    yield p
    p.stop()


@pytest.fixture
def device(portal: PortalProcess, tmp_path: Path) -> Device:
    return enrolled(portal, tmp_path)


# --------------------------------------------------------------------------- enrollment


def test_enroll_happy_path_and_token_is_one_time(portal: PortalProcess) -> None:
    serial, token = portal.create_device()
    key = new_rsa_key()
    # A wrong CN or a weak key is a 400 and does not use the token up.
    status, out = portal.enroll(token, make_csr(key, "SOMEONE-ELSE"))
    assert status == 400 and "common name" in out["error"]
    status, out = portal.enroll(token, make_csr(new_rsa_key(1024), serial))
    assert status == 400 and "2048" in out["error"]
    status, out = portal.enroll(token, "not a csr")
    assert status == 400

    status, out = portal.enroll(token, make_csr(key, serial))
    assert status == 200, out
    cert = x509.load_pem_x509_certificate(out["certificate_pem"].encode())
    ca = x509.load_pem_x509_certificate(out["ca_chain_pem"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == serial
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=110) < lifetime <= dt.timedelta(hours=2)

    assert portal.enroll(token, make_csr(key, serial))[0] == 401  # reuse
    assert portal.enroll("no-such-token", make_csr(key, serial))[0] == 401
    _, summary = portal.admin("GET", f"/api/devices/{serial}")
    assert summary["enrolled_at"] and summary["cert_not_after"]


def test_enroll_port_serves_only_enroll(portal: PortalProcess) -> None:
    status, _, payload = portal.request("enroll", "GET", "/v1/site")
    assert status == 404 and "error" in json.loads(payload)


def test_renew_issues_a_new_certificate(device: Device) -> None:
    key = new_rsa_key()
    status, _, out = device.call("POST", "/v1/renew", {"csr_pem": make_csr(key, device.serial)})
    assert status == 200, out
    cert = x509.load_pem_x509_certificate(out["certificate_pem"].encode())
    assert cert.serial_number != device.cert.serial_number
    status, _, out = device.call("POST", "/v1/renew", {"csr_pem": make_csr(key, "OTHER")})
    assert status == 400


# --------------------------------------------------------------------------- mutual TLS


def test_device_port_requires_a_client_certificate_from_the_portal_ca(
        portal: PortalProcess, device: Device, tmp_path: Path) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        portal.request("device", "GET", "/v1/site")  # no client certificate

    # A certificate with the right CN, signed by another CA.
    ca_key, ca_cert = make_ca("rogue CA")
    key = new_rsa_key()
    now = dt.datetime.now(dt.UTC)
    rogue = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device.serial)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    ctx = client_ctx(portal, tmp_path, key, cert_pem(rogue).decode())
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        portal.request("device", "GET", "/v1/site", ctx=ctx)

    status, _, _ = device.call("GET", "/v1/site")
    assert status == 200


# --------------------------------------------------------------------------- site sync


def test_site_etag_304_and_long_poll_returns_early_on_admin_edit(
        portal: PortalProcess, device: Device) -> None:
    status, headers, body = device.call("GET", "/v1/site")
    assert status == 200
    assert body["document"] == SITE  # the device gets the real secrets
    etag = headers["ETag"]
    assert etag.startswith(f'"{body["version"]}-') and len(etag.strip('"').split("-")[1]) == 16

    status, headers, _ = device.call("GET", "/v1/site?wait=0", If_None_Match=etag)
    assert status == 304 and headers["ETag"] == etag
    t0 = time.monotonic()
    status, _, _ = device.call("GET", "/v1/site?wait=0.5", If_None_Match=etag)
    assert status == 304 and 0.4 < time.monotonic() - t0 < 5
    assert device.call("GET", "/v1/site?wait=61")[0] == 400

    result: dict[str, Any] = {}

    def poll() -> None:
        t = time.monotonic()
        result["reply"] = device.call("GET", "/v1/site?wait=20", If_None_Match=etag)
        result["took"] = time.monotonic() - t

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    doc = json.loads(json.dumps(SITE))
    doc["site"]["name"] = "Renamed Office"
    status, out = portal.admin("PUT", f"/api/devices/{device.serial}/site", {"document": doc})
    assert status == 200 and out["changed_paths"] == ["site.name"]
    thread.join(15)
    status, headers, body = result["reply"]
    assert status == 200 and result["took"] < 5
    assert body["version"] == out["version"]
    assert body["document"]["site"]["name"] == "Renamed Office"
    assert headers["ETag"] != etag

    report = {"version": body["version"], "state": "applied", "errors": [],
              "applied_at": "2026-01-01T00:00:00Z"}
    assert device.call("POST", "/v1/site/status", report)[0] == 200
    assert device.call("POST", "/v1/site/status", {**report, "state": "meh"})[0] == 400
    assert device.call("POST", "/v1/site/status", {**report, "applied_at": 1767225600.5})[0] == 200
    _, out = portal.admin("GET", f"/api/devices/{device.serial}/status")
    assert out["reports"][0]["version"] == body["version"]
    _, summary = portal.admin("GET", f"/api/devices/{device.serial}")
    assert summary["last_status"]["state"] == "applied"


def test_device_changes_merge_and_conflict(portal: PortalProcess, device: Device) -> None:
    base = device.call("GET", "/v1/site")[2]["version"]
    status, out = portal.admin("POST", f"/api/devices/{device.serial}/site/changes", {
        "changes": [{"path": "users[ann].forward.all", "value": "+4930111"}]}, role="partner")
    assert status == 200
    portal_version = out["version"]

    user = {"role": "user", "id": "bob"}
    status, _, out = device.call("POST", "/v1/site/changes", {
        "base_version": base, "author": user,
        "changes": [{"path": "users[bob].forward.all", "value": "+4930222"}]})
    assert status == 200 and out["version"] == portal_version + 1
    doc = device.call("GET", "/v1/site")[2]["document"]
    bob = next(u for u in doc["users"] if u["id"] == "bob")
    ann = next(u for u in doc["users"] if u["id"] == "ann")
    assert bob["forward"] == {"all": "+4930222"} and ann["forward"] == {"all": "+4930111"}

    for path in ("users[ann].forward.all", "users[ann]", "users[ann].forward.all.x"):
        status, _, out = device.call("POST", "/v1/site/changes", {
            "base_version": base, "author": {"role": "admin", "id": "it"},
            "changes": [{"path": path, "value": "+4930333"},
                        {"path": "users[bob].name", "value": "Robert"}]})
        assert status == 409, out
        assert out["conflicts"] == [path] and out["current_version"] == portal_version + 1
    # Based on a version that includes the portal's edit, the same path merges.
    status, _, out = device.call("POST", "/v1/site/changes", {
        "base_version": portal_version, "author": {"role": "user", "id": "ann"},
        "changes": [{"path": "users[ann].forward.all", "value": "+4930444"}]})
    assert status == 200
    assert device.call("POST", "/v1/site/changes", {
        "base_version": base, "author": {"role": "partner", "id": "x"},
        "changes": [{"path": "site.name", "value": "x"}]})[0] == 400
    assert device.call("POST", "/v1/site/changes", {
        "base_version": base, "author": user,
        "changes": [{"path": "users[nobody].forward.all", "value": "1"}]})[0] == 400


# --------------------------------------------------------------------------- uploads


def test_cdr_exactly_once_across_retries_and_resplits(portal: PortalProcess,
                                                      device: Device) -> None:
    recs = [{"call_id": f"c{i}", "caller": "101", "callee": "102"} for i in range(5)]
    assert device.call("POST", "/v1/cdr", {"records": recs[:3]})[0] == 400  # no key
    status, _, out = device.call("POST", "/v1/cdr", {"records": recs[:3]}, Idempotency_Key="k1")
    assert (status, out) == (200, {"stored": 3, "duplicates": 0})
    status, headers, out = device.call("POST", "/v1/cdr", {"records": recs[:3]},
                                       Idempotency_Key="k1")
    assert (status, out) == (200, {"stored": 3, "duplicates": 0})
    assert headers.get("Idempotent-Replayed") == "true"
    status, _, out = device.call("POST", "/v1/cdr", {"records": recs[1:5]}, Idempotency_Key="k2")
    assert out == {"stored": 2, "duplicates": 2}
    assert device.call("POST", "/v1/cdr", {"records": recs[:1]}, Idempotency_Key="k1")[0] == 422
    _, out = portal.admin("GET", f"/api/devices/{device.serial}/cdrs")
    assert out["count"] == 5 and sorted(out["call_ids"]) == [f"c{i}" for i in range(5)]
    _, out = portal.admin("GET", f"/api/devices/{device.serial}/cdrs", role="partner")
    assert out == {"count": 5}

    usage = {"day": "2026-03-01", "calls": 12, "avg_answer_s": 4.2}
    assert device.call("POST", "/v1/usage", usage, Idempotency_Key="u1")[2]["stored"] == 1
    assert device.call("POST", "/v1/usage", usage, Idempotency_Key="u1")[2]["duplicates"] == 1
    assert device.call("POST", "/v1/usage", {**usage, "day": "2026-03-02"},
                       Idempotency_Key="u1")[2]["stored"] == 1
    _, out = portal.admin("GET", f"/api/devices/{device.serial}/usage", role="partner")
    assert out["count"] == 2

    status, _, out = device.call("POST", "/v1/heartbeat", {"uptime": 5})
    assert status == 200
    device.call("POST", "/v1/heartbeat", {"uptime": 65})
    _, out = portal.admin("GET", f"/api/devices/{device.serial}/heartbeat")
    assert out["heartbeat"]["body"] == {"uptime": 65} and out["heartbeat"]["count"] == 2


def test_partner_never_sees_passwords_or_voicemail_backups(portal: PortalProcess,
                                                           device: Device) -> None:
    blob = os.urandom(3000)
    vm_headers = {"X_Edgepbx_Mailbox": "101", "X_Edgepbx_Encryption": "aes-256-gcm;kid=1",
                  "Content_Type": "application/octet-stream"}
    status, _, out = device.call("PUT", "/v1/voicemail-backups/vm-1", blob, **vm_headers)
    assert status == 200 and out["stored"] is True
    status, _, out = device.call("PUT", "/v1/voicemail-backups/vm-1", blob, **vm_headers)
    assert status == 200 and out["stored"] is False
    assert device.call("PUT", "/v1/voicemail-backups/vm-1", blob + b"x", **vm_headers)[0] == 409
    assert device.call("PUT", "/v1/voicemail-backups/vm-2", blob)[0] == 400  # headers missing

    base = f"/api/devices/{device.serial}"
    for role in ("partner", "admin"):
        _, view = portal.admin("GET", f"{base}/site", role=role)
        text = json.dumps(view)
        assert "secret-10" not in text and view["document"]["users"][0]["sip"]["password"] == \
            docpath.MASK
    assert portal.admin("GET", f"{base}/site?secrets=1", role="partner")[0] == 403
    _, view = portal.admin("GET", f"{base}/site?secrets=1", role="admin")
    assert view["document"]["users"][0]["sip"]["password"] == "ann-secret-101"
    status, page = portal.admin("GET", f"/devices/{device.serial}?role=partner", raw=True)
    assert status == 200 and b"secret-10" not in page

    assert portal.admin("GET", f"{base}/voicemail-backups", role="partner")[0] == 403
    assert portal.admin("GET", f"{base}/voicemail-backups/vm-1", role="partner")[0] == 403
    _, summary = portal.admin("GET", base, role="partner")
    assert "voicemail_backup_count" not in summary
    _, listing = portal.admin("GET", f"{base}/voicemail-backups")
    assert listing["count"] == 1 and listing["backups"][0]["mailbox"] == "101"
    status, content = portal.admin("GET", f"{base}/voicemail-backups/vm-1", raw=True)
    assert status == 200 and content == blob

    # A partner edits the masked view and saves it: the secrets survive untouched.
    _, view = portal.admin("GET", f"{base}/site", role="partner")
    view["document"]["users"][1]["name"] = "Bobby"
    status, out = portal.admin("PUT", f"{base}/site", {"document": view["document"]},
                               role="partner")
    assert status == 200 and out["changed_paths"] == ["users[bob].name"]
    doc = device.call("GET", "/v1/site")[2]["document"]
    assert [u["sip"]["password"] for u in doc["users"]] == ["ann-secret-101", "bob-secret-102"]


def test_partner_edits_refused_when_partner_access_is_off(portal: PortalProcess,
                                                          device: Device) -> None:
    base = f"/api/devices/{device.serial}"
    doc = json.loads(json.dumps(SITE))
    doc["site"]["name"] = "by partner"
    assert portal.admin("PUT", f"{base}/partner-access", {"enabled": False},
                        role="partner")[0] == 403
    status, out = portal.admin("PUT", f"{base}/partner-access", {"enabled": False})
    assert status == 200 and out["partner_access"] is False
    assert portal.admin("PUT", f"{base}/site", {"document": doc}, role="partner")[0] == 403
    assert portal.admin("GET", f"{base}/site", role="partner")[0] == 403
    # The switch travels to the device in the site document (the device enforces it too).
    assert device.call("GET", "/v1/site")[2]["document"]["privacy"]["partner_access"] is False
    assert portal.admin("PUT", f"{base}/site", {"document": {**doc, "privacy": {
        "partner_access": False}}}, role="admin")[0] == 200
    portal.admin("PUT", f"{base}/partner-access", {"enabled": True})
    assert portal.admin("PUT", f"{base}/site", {"document": doc}, role="partner")[0] == 200
    assert portal.admin("GET", "/api/devices", role="")[0] == 401


def test_site_get_carries_the_author_and_force_simulates_a_lax_portal(
        portal: PortalProcess, device: Device) -> None:
    base = f"/api/devices/{device.serial}"
    body = device.call("GET", "/v1/site")[2]
    assert body["author"] == {"role": "partner", "id": "partner"}  # create_device's
    doc = json.loads(json.dumps(SITE))
    doc["site"]["name"] = "by pat"
    status, out = portal.admin("PUT", f"{base}/site?user=pat", {"document": doc}, "partner")
    assert status == 200
    assert device.call("GET", "/v1/site")[2]["author"] == {"role": "partner", "id": "pat"}
    status, out = device.call("POST", "/v1/site/changes", {
        "base_version": out["version"], "author": {"role": "user", "id": "ann"},
        "changes": [{"path": "users[ann].dnd", "value": True}]})[::2]
    assert status == 200
    body = device.call("GET", "/v1/site")[2]
    assert (body["version"], body["author"]) == (out["version"], {"role": "user", "id": "ann"})

    assert portal.admin("PUT", f"{base}/partner-access", {"enabled": False})[0] == 200
    doc["site"]["name"] = "forced"
    assert portal.admin("PUT", f"{base}/site", {"document": doc}, "partner")[0] == 403
    # ?force=1: a portal that fails to enforce partner access stores the write anyway.
    status, out = portal.admin("PUT", f"{base}/site?force=1&user=pat", {"document": doc},
                               "partner")
    assert status == 200
    body = device.call("GET", "/v1/site")[2]
    assert body["version"] == out["version"] and body["document"]["site"]["name"] == "forced"
    assert body["author"] == {"role": "partner", "id": "pat"}
    status, out = portal.admin("POST", f"{base}/site/changes?force=1", {
        "changes": [{"path": "site.name", "value": "forced again"}]}, "partner")
    assert status == 200
    # force opens only the partner write paths: reads stay refused.
    assert portal.admin("GET", f"{base}/site?force=1", role="partner")[0] == 403
    assert portal.admin("GET", f"{base}?force=1", role="partner")[0] == 403
    portal.admin("PUT", f"{base}/partner-access", {"enabled": True})


# --------------------------------------------------------------------------- faults


def test_fault_injection_switches(portal: PortalProcess, device: Device) -> None:
    assert portal.admin("POST", "/api/faults", {"status": 503}, role="partner")[0] == 403
    try:
        status, _ = portal.admin("POST", "/api/faults", {"status": 503, "count": 2})
        assert status == 200
        for _ in range(2):
            status, headers, out = device.call("GET", "/v1/site")
            assert status == 503 and out == {"error": "injected fault"}
            assert headers["Retry-After"] == "1"
        assert device.call("GET", "/v1/site")[0] == 200  # count used up

        portal.admin("POST", "/api/faults", {"delay": 1.0, "paths": ["/v1/heartbeat"]})
        t0 = time.monotonic()
        assert device.call("GET", "/v1/site")[0] == 200
        assert time.monotonic() - t0 < 0.9
        assert device.call("POST", "/v1/heartbeat", {})[0] == 200
        assert time.monotonic() - t0 >= 1.0

        portal.admin("POST", "/api/faults", {"truncate": True, "paths": ["/v1/site"]})
        with pytest.raises(http.client.IncompleteRead):
            device.call("GET", "/v1/site")

        portal.admin("DELETE", "/api/faults")
        assert device.call("GET", "/v1/heartbeat")[0] == 405
        version = device.call("GET", "/v1/site")[2]["version"]
        portal.admin("POST", "/api/faults", {"invalid_site": True})
        status, _, body = device.call("GET", "/v1/site")
        assert status == 200 and body["version"] == version + 1
        assert body["document"]["users"] == "not-a-list"
        assert device.call("POST", "/v1/heartbeat", {})[0] == 200  # other endpoints unaffected
        assert portal.admin("POST", "/api/faults", {"bogus": 1})[0] == 400
    finally:
        portal.admin("DELETE", "/api/faults")
    assert device.call("GET", "/v1/site")[2]["version"] == version


# --------------------------------------------------------------------------- restart


def test_data_survives_a_kill_and_restart(tmp_path: Path) -> None:
    p = PortalProcess(tmp_path / "data").start()
    try:
        serial, token = p.create_device()
        key = new_rsa_key()
        _, out = p.enroll(token, make_csr(key, serial))
        dev = Device(p, serial, client_ctx(p, tmp_path, key, out["certificate_pem"]),
                     x509.load_pem_x509_certificate(out["certificate_pem"].encode()))
        dev.call("POST", "/v1/cdr", {"records": [{"call_id": "a"}, {"call_id": "b"}]},
                 Idempotency_Key="k")
        dev.call("PUT", "/v1/voicemail-backups/b1", b"\x00ciphertext", X_Edgepbx_Mailbox="1",
                 X_Edgepbx_Encryption="aes-256-gcm")
        etag = dev.call("GET", "/v1/site")[1]["ETag"]
        ports = p.ports
        p.stop(signal.SIGKILL)

        p.start(ports)  # same data directory, same ports, same CA
        assert p.ports == ports
        status, headers, _ = dev.call("GET", "/v1/site?wait=0", If_None_Match=etag)
        assert status == 304 and headers["ETag"] == etag
        _, _, out = dev.call("POST", "/v1/cdr", {"records": [{"call_id": "b"}, {"call_id": "c"}]},
                          Idempotency_Key="k2")
        assert out == {"stored": 1, "duplicates": 1}
        assert p.admin("GET", f"/api/devices/{serial}/cdrs")[1]["count"] == 3
        assert p.admin("GET", f"/api/devices/{serial}/voicemail-backups")[1]["count"] == 1
        assert p.enroll(token, make_csr(key, serial))[0] == 401
    finally:
        p.stop()


# --------------------------------------------------------------------------- paths


def test_document_paths() -> None:
    doc = json.loads(json.dumps(SITE))
    docpath.set_path(doc, "users[ann].forward.all", "+491")
    assert docpath.get(doc, "users[ann].forward") == {"all": "+491"}
    docpath.set_path(doc, "hunt_groups[team].members[102].ring_time", 20)
    assert doc["hunt_groups"][0]["members"][1] == {"extension": "102", "ring_time": 20}
    docpath.set_path(doc, "users[cat]", {"name": "Cat", "extension": "103"})
    assert doc["users"][-1]["id"] == "cat"
    docpath.set_path(doc, "users[cat]", None)
    assert [u["id"] for u in doc["users"]] == ["ann", "bob"]
    for bad in ("", "a..b", "[x]", "a.", "users[nobody].name"):
        with pytest.raises(docpath.PathError):
            docpath.set_path(doc, bad, 1)
    assert docpath.overlaps("users[ann]", "users[ann].forward.all")
    assert not docpath.overlaps("users[ann].forward", "users[bob].forward")
    assert not docpath.overlaps("users[ann].name", "users[ann].forward")
    new = json.loads(json.dumps(doc))
    new["users"][1]["sip"]["password"] = "changed"
    new["users"].append({"id": "dan"})
    new["site"]["timezone"] = "UTC"
    assert docpath.diff(doc, new) == ["site.timezone", "users[bob].sip.password", "users[dan]"]
    masked = docpath.mask_secrets(new)
    assert docpath.restore_masked(masked, new) == new


def test_chunked_upload_is_accepted(portal: PortalProcess, device: Device) -> None:
    conn = http.client.HTTPSConnection(HOST, portal.ports["device"], context=device.ctx,
                                       timeout=10)
    parts = [b"a" * 1000, b"b" * 70000, b"c"]
    conn.request("PUT", "/v1/voicemail-backups/chunked-1", body=iter(parts),
                 headers={"X-Edgepbx-Mailbox": "102", "X-Edgepbx-Encryption": "aes-256-gcm"},
                 encode_chunked=True)
    resp = conn.getresponse()
    out = json.loads(resp.read())
    assert resp.status == 200 and out["size"] == 71001
    # Keep-alive still works after a chunked body.
    conn.request("POST", "/v1/heartbeat", body=b"{}", headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 200
    conn.close()


def test_docpath_appends_to_an_empty_list_keyed_by_the_element_s_own_identity():
    doc: dict = {"phones": []}
    phone = {"mac": "805ec0000042", "model": "T46U", "lines": [{"extension": "201"}]}
    docpath.set_path(doc, "phones[805ec0000042]", phone)
    assert doc["phones"] == [phone]  # no invented "id" key
    docpath.set_path(doc, "missing[805ec0000042]", phone)
    assert doc["missing"] == [phone]
