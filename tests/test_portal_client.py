"""The portal client against a small in-test HTTPS portal with mutual TLS.

The stub portal is http.server + ssl in a thread; its certificates come from a throwaway CA
(test_cloud_identity.make_ca). "The tunnel's inner address" is a loopback address here.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID
from test_cloud_identity import CA, enrolled_identity, issue, make_ca, sign_csr

from agent.cdr import CallRecord, DailyCallStats
from agent.cloud.identity import DeviceIdentity, NotEnrolled
from agent.cloud.portal_client import (
    BACKUP_ENCRYPTION,
    DEFAULT_AUTHOR,
    MAX_RESPONSE_BYTES,
    Author,
    BadResponse,
    Change,
    Conflict,
    EnrollmentClient,
    Heartbeat,
    OptInRequired,
    OptIns,
    PortalClient,
    PortalRejected,
    PortalUnavailable,
    PortalUntrusted,
    ResponseTooLarge,
    TunnelNotReady,
    UsageReport,
    check_inner_address,
    enroll_identity,
    open_voicemail_backup,
    renew_identity,
    seal_voicemail_backup,
)

INNER = "127.0.0.1"

# ---------------------------------------------------------------------- the stub portal


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer_cn: str | None
    client_ip: str

    def json(self) -> Any:
        return json.loads(self.body)


#: A route returns (status, body, headers): body a dict/list (JSON), bytes or None; or a
#: callable that writes the whole response itself.
Reply = tuple[int, Any, dict[str, str]]
Route = Callable[[Seen], "Reply | Callable[[BaseHTTPRequestHandler], None]"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        self.request.do_handshake()  # in the handler thread, not in accept()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        cert = self.request.getpeercert()
        cn = None
        if cert:
            cn = next((v for rdn in cert["subject"] for k, v in rdn if k == "commonName"), None)
        seen = Seen(self.command, url.path, parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()}, body, cn,
                    self.client_address[0])
        stub = self.server.stub
        stub.seen.append(seen)
        route = stub.routes.get((self.command, url.path))
        result: Any = route(seen) if route else (404, {"error": "no such route"}, {})
        if callable(result):
            result(self)
            return
        status, payload, headers = result
        data = payload if isinstance(payload, bytes) else (
            b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        if payload is not None and not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: Stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.stub.errors += 1  # failed handshakes, clients that hung up: expected in tests


@dataclass
class Stub:
    server: _Server
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    errors: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"


def start_stub(tmp: Path, server_ca: CA, client_ca: CA | None) -> Stub:
    """An HTTPS server with a cert for 127.0.0.1 from ``server_ca``; with ``client_ca`` it
    requires a client certificate from that CA (mutual TLS)."""
    tmp.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp / "server-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp / "server-cert.pem").write_bytes(
        issue(server_ca, key.public_key(), "portal", server_names=("127.0.0.1", "localhost")))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "server-cert.pem", tmp / "server-key.pem")
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.pem.decode())
    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                    do_handshake_on_connect=False)
    stub = Stub(server)
    server.stub = stub
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return stub


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca()


@pytest.fixture
def portal(tmp_path, ca):
    stub = start_stub(tmp_path / "portal", ca, client_ca=ca)
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@pytest.fixture
def ident(tmp_path, ca) -> DeviceIdentity:
    return enrolled_identity(tmp_path / "state", ca)


def client(ident: DeviceIdentity, stub: Stub, **kw) -> PortalClient:
    kw.setdefault("inner_address", INNER)
    return PortalClient.from_identity(ident, stub.url, **kw)


def run(coro):
    return asyncio.run(coro)


def record(call_id: str = "c1") -> CallRecord:
    return CallRecord(
        call_id=call_id, direction="internal", caller="201", caller_name="Ann",
        callee="202", dialed="202", start=1000.0, answer=1003.0, end=1063.0,
        disposition="answered", hold_seconds=0.0, hunt_group=None, trunk=None,
        cause="caller-bye")


# ---------------------------------------------------------------------- enrollment


def test_enroll_over_server_auth_tls_with_a_claim_token(tmp_path, ca):
    enroll = start_stub(tmp_path / "enroll", ca, client_ca=None)  # no client cert
    ident = DeviceIdentity.load_or_create(tmp_path / "state")

    def handle(seen: Seen) -> Reply:
        body = seen.json()
        if body["claim_token"] != "tok-1":
            return 401, {"error": "bad or used claim token"}, {}
        csr = x509.load_pem_x509_csr(body["csr_pem"].encode())
        if csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != ident.serial:
            return 400, {"error": "CN must be the device serial"}, {}
        return 200, {"certificate_pem": sign_csr(ca, body["csr_pem"]).decode(),
                     "ca_chain_pem": ca.pem.decode()}, {}

    enroll.routes[("POST", "/v1/enroll")] = handle

    async def main() -> None:
        async with EnrollmentClient(enroll.url, ca_pem=ca.pem) as ec:
            with pytest.raises(PortalRejected) as info:
                await ec.enroll("wrong", ident.csr_pem())
            assert info.value.status == 401 and "claim token" in info.value.message
            await enroll_identity(ident, ec, "tok-1")

    try:
        run(main())
    finally:
        enroll.server.shutdown()
        enroll.server.server_close()
    assert ident.enrolled and enroll.seen[-1].peer_cn is None
    assert DeviceIdentity.load_or_create(tmp_path / "state").enrolled


def test_enrollment_refuses_a_portal_from_another_ca(tmp_path, ca):
    rogue = start_stub(tmp_path / "rogue", make_ca("rogue"), client_ca=None)
    rogue.routes[("POST", "/v1/enroll")] = lambda s: (200, {}, {})
    ident = DeviceIdentity.load_or_create(tmp_path / "state")

    async def main() -> None:
        async with EnrollmentClient(rogue.url, ca_pem=ca.pem) as ec:
            await ec.enroll("tok", ident.csr_pem())

    with pytest.raises(PortalUntrusted):
        run(main())
    assert rogue.seen == []  # the token never reached it
    rogue.server.shutdown()
    rogue.server.server_close()


def test_urls_must_be_https(ca):
    with pytest.raises(ValueError, match="https"):
        EnrollmentClient("http://portal.example", ca_pem=ca.pem)


# ---------------------------------------------------------------------- the tunnel address


def test_refuses_to_run_without_the_inner_address(ident, portal):
    with pytest.raises(TunnelNotReady, match="not configured"):
        client(ident, portal, inner_address=None)
    with pytest.raises(TunnelNotReady, match="not present on this host"):
        client(ident, portal, inner_address="198.51.100.99")
    with pytest.raises(TunnelNotReady, match="not an IP address"):
        client(ident, portal, inner_address="portal.example")
    with pytest.raises(TunnelNotReady):
        check_inner_address("0.0.0.0")
    assert portal.seen == []


def test_connections_are_bound_to_the_inner_address(ident, portal):
    portal.routes[("POST", "/v1/heartbeat")] = lambda s: (200, {}, {})

    async def main() -> None:
        async with client(ident, portal, inner_address="127.0.0.2") as pc:
            await pc.heartbeat(Heartbeat("0.1.0", 12.5, 3, 1, "up", 7, ident.expires_at()))

    run(main())
    assert portal.seen[0].client_ip == "127.0.0.2"
    assert portal.seen[0].peer_cn == ident.serial  # mutual TLS with the device certificate
    assert portal.seen[0].json() == {
        "version": "0.1.0", "uptime": 12.5, "registered_phones": 3, "active_calls": 1,
        "tunnel": "up", "site_version": 7, "cert_expires": ident.expires_at()}


def test_proxy_environment_is_ignored(ident, portal, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    portal.routes[("POST", "/v1/heartbeat")] = lambda s: (204, None, {})  # 204 is fine too

    async def main() -> None:
        async with client(ident, portal) as pc:
            await pc.heartbeat(Heartbeat("0.1.0", 1.0, 0, 0, "up", 1, 0.0))

    run(main())
    assert len(portal.seen) == 1


def test_unenrolled_identity_has_no_portal_client(tmp_path, portal):
    with pytest.raises(NotEnrolled):
        client(DeviceIdentity.load_or_create(tmp_path / "fresh"), portal)


# ---------------------------------------------------------------------- trust


def test_a_portal_certificate_from_another_ca_is_refused(tmp_path, ident, ca):
    rogue = start_stub(tmp_path / "rogue", make_ca("rogue"), client_ca=ca)
    rogue.routes[("GET", "/v1/site")] = lambda s: (200, {"version": 1, "document": {}},
                                                   {"ETag": '"1-x"'})

    async def main() -> None:
        async with client(ident, rogue) as pc:
            await pc.get_site()

    with pytest.raises(PortalUntrusted, match="not trusted"):
        run(main())
    assert rogue.seen == []
    rogue.server.shutdown()
    rogue.server.server_close()


def test_a_client_without_a_device_certificate_is_refused_by_the_portal(portal, ca):
    """The mTLS portal's refusal (a TLS alert) is a typed error, not a raw ssl.SSLError."""
    portal.routes[("POST", "/v1/enroll")] = lambda s: (200, {}, {})

    async def main() -> None:
        async with EnrollmentClient(portal.url, ca_pem=ca.pem) as ec:
            await ec.enroll("tok", "csr")

    with pytest.raises(PortalUnavailable, match=r"TLS|unreachable"):
        run(main())
    assert portal.seen == []


# ---------------------------------------------------------------------- happy paths


def test_renew_rotates_the_key_over_mtls(ident, portal, ca):
    def handle(seen: Seen) -> Reply:
        assert seen.peer_cn == ident.serial
        return 200, {"certificate_pem": sign_csr(ca, seen.json()["csr_pem"]).decode(),
                     "ca_chain_pem": ca.pem.decode()}, {}

    portal.routes[("POST", "/v1/renew")] = handle
    old_key = ident.key_path.read_bytes()

    async def main() -> None:
        async with client(ident, portal) as pc:
            await renew_identity(ident, pc)
        async with client(ident, portal) as pc:  # the new certificate works
            await renew_identity(ident, pc)

    run(main())
    assert ident.key_path.read_bytes() != old_key
    assert len(portal.seen) == 2


def test_get_site_and_long_poll(ident, portal):
    changed = threading.Event()
    doc = {"site": {"name": "Acme"}}

    def handle(seen: Seen) -> Reply:
        wait = int(seen.query["wait"][0])
        if seen.headers.get("if-none-match") == '"3-abc"':
            if not changed.wait(wait):
                return 304, None, {"ETag": '"3-abc"'}
            return 200, {"version": 4, "document": doc}, {"ETag": '"4-def"'}
        return 200, {"version": 3, "document": doc}, {"ETag": '"3-abc"'}

    portal.routes[("GET", "/v1/site")] = handle

    async def main() -> None:
        async with client(ident, portal) as pc:
            first = await pc.get_site()
            assert first is not None and (first.version, first.etag) == (3, '"3-abc"')
            assert first.document == doc
            started = time.monotonic()
            assert await pc.get_site(etag=first.etag, wait=1) is None  # 304 after waiting
            assert time.monotonic() - started >= 0.9
            held = asyncio.create_task(pc.get_site(etag="3-abc", wait=30))
            await asyncio.sleep(0.3)
            changed.set()
            started = time.monotonic()
            second = await held
            assert time.monotonic() - started < 5
            assert second is not None and (second.version, second.etag) == (4, '"4-def"')
            await pc.get_site(wait=600)  # clamped

    run(main())
    assert [s.query["wait"] for s in portal.seen] == [["0"], ["1"], ["30"], ["60"]]
    assert portal.seen[2].headers["if-none-match"] == '"3-abc"'  # quoted


@pytest.mark.parametrize(("author", "expected"), [
    ({"role": "partner", "id": "pat"}, Author("partner", "pat")),
    ({"role": "user", "id": "ann"}, Author("user", "ann")),
    (None, DEFAULT_AUTHOR),  # absent: an older portal; the customer admin, "portal"
])
def test_get_site_reads_the_author(ident, portal, author, expected):
    body: dict[str, Any] = {"version": 5, "document": {"site": {}}}
    if author is not None:
        body["author"] = author
    portal.routes[("GET", "/v1/site")] = lambda s: (200, body, {"ETag": '"5-e"'})
    update = run(_get_site(ident, portal))
    assert update is not None and update.author == expected
    assert expected.actor == f"{expected.role}:{expected.id}"
    assert (DEFAULT_AUTHOR.role, DEFAULT_AUTHOR.id) == ("admin", "portal")


@pytest.mark.parametrize("author", [
    "pat", None, {"role": "reseller", "id": "x"}, {"role": "partner"},
    {"role": "partner", "id": ""}, {"role": "admin", "id": 7},
])
def test_a_malformed_author_is_a_bad_response(ident, portal, author):
    body = {"version": 5, "document": {}, "author": author}
    portal.routes[("GET", "/v1/site")] = lambda s: (200, body, {"ETag": '"5-e"'})
    with pytest.raises(BadResponse, match="author"):
        run(_get_site(ident, portal))


async def _get_site(ident: DeviceIdentity, stub: Stub) -> Any:
    async with client(ident, stub) as pc:
        return await pc.get_site()


def test_site_status_and_changes(ident, portal):
    portal.routes[("POST", "/v1/site/status")] = lambda s: (200, {}, {})

    def changes(seen: Seen) -> Reply:
        body = seen.json()
        paths = [c["path"] for c in body["changes"]]
        if "users[ann].forward.all" in paths and body["base_version"] < 5:
            return 409, {"error": "conflict", "current_version": 5,
                         "conflicts": ["users[ann].forward.all"]}, {}
        return 200, {"version": 6}, {}

    portal.routes[("POST", "/v1/site/changes")] = changes

    async def main() -> None:
        async with client(ident, portal) as pc:
            await pc.post_site_status(version=4, state="failed", errors=["users[0]: bad"],
                                      applied_at=1234.5)
            with pytest.raises(Conflict) as info:
                await pc.push_changes(
                    base_version=4, author_role="user", author_id="ann",
                    changes=[Change("users[ann].forward.all", "0123456789"),
                             Change("users[ann].speed_dials[1]", "203")])
            assert info.value.status == 409
            assert info.value.current_version == 5
            assert info.value.conflicts == ["users[ann].forward.all"]
            assert await pc.push_changes(
                base_version=5, author_role="admin", author_id="boss",
                changes=[Change("users[ann].forward.all", None)]) == 6
            with pytest.raises(ValueError):
                await pc.post_site_status(version=4, state="done", applied_at=0)
            with pytest.raises(ValueError):
                await pc.push_changes(base_version=1, author_role="partner", author_id="p",
                                      changes=[])
            for secret in ("users[ann].voicemail.pin", "trunks[0].password",
                           "phones[0].device_password", "users[ann].sip_ha1"):
                with pytest.raises(ValueError, match="secrets never leave"):
                    await pc.push_changes(base_version=5, author_role="user", author_id="ann",
                                          changes=[Change(secret, "1234")])

    run(main())
    assert portal.seen[0].json() == {"version": 4, "state": "failed",
                                     "errors": ["users[0]: bad"], "applied_at": 1234.5}
    assert portal.seen[1].json()["author"] == {"role": "user", "id": "ann"}
    assert portal.seen[1].json()["changes"][0] == {
        "path": "users[ann].forward.all", "value": "0123456789"}
    assert len(portal.seen) == 3


def test_cdr_upload_needs_the_opt_in(ident, portal):
    portal.routes[("POST", "/v1/cdr")] = lambda s: (200, {"stored": 1, "duplicates": 1}, {})
    opt = {"on": False}

    async def main() -> None:
        async with client(ident, portal,
                          opt_ins=lambda: OptIns(cdr_upload=opt["on"])) as pc:
            with pytest.raises(OptInRequired):
                await pc.upload_cdrs("batch-1", [record()])
            assert portal.seen == []  # nothing left the box
            opt["on"] = True
            result = await pc.upload_cdrs("batch-1", [record("c1"), record("c2")])
            assert (result.stored, result.duplicates) == (1, 1)

    run(main())
    seen = portal.seen[0]
    assert seen.headers["idempotency-key"] == "batch-1"
    assert [r["call_id"] for r in seen.json()["records"]] == ["c1", "c2"]
    assert seen.json()["records"][0]["time_to_answer"] == 3.0


def test_usage_is_aggregates_only_and_always_allowed(ident, portal):
    portal.routes[("POST", "/v1/usage")] = lambda s: (200, {}, {})
    stats = DailyCallStats(day="2026-11-23", calls=10, answered=8, abandoned=1, busy=1,
                           no_answer=0, failed=0, avg_time_to_answer=4.5, avg_hold=None,
                           total_talk_seconds=900.0)

    async def main() -> None:
        async with client(ident, portal) as pc:  # default opt-ins: all off
            await pc.post_usage("usage-2026-11-23", UsageReport.from_stats(stats, 12))

    run(main())
    assert portal.seen[0].headers["idempotency-key"] == "usage-2026-11-23"
    assert portal.seen[0].json() == {
        "day": "2026-11-23", "calls": 10, "answered": 8, "abandoned": 1,
        "avg_time_to_answer": 4.5, "avg_hold": None, "registered_phones": 12}


def test_voicemail_backup_is_sealed_and_needs_the_opt_in(ident, portal):
    portal.routes[("PUT", "/v1/voicemail-backups/vm-201-0001")] = lambda s: (200, {}, {})
    admin_key = X25519PrivateKey.generate()
    public_b64 = __import__("base64").b64encode(admin_key.public_key().public_bytes_raw())
    audio = b"RIFF....WAVEfmt " + bytes(range(256)) * 40
    sealed = seal_voicemail_backup(public_b64.decode(), "vm-201-0001", "201", audio)
    assert audio not in sealed.data

    async def main(on: bool) -> None:
        async with client(ident, portal,
                          opt_ins=lambda: OptIns(voicemail_backup=on)) as pc:
            await pc.put_voicemail_backup(sealed)

    with pytest.raises(OptInRequired):
        run(main(False))
    assert portal.seen == []
    run(main(True))
    seen = portal.seen[0]
    assert seen.method == "PUT"
    assert seen.headers["content-type"] == "application/octet-stream"
    assert seen.headers["x-edgepbx-mailbox"] == "201"
    assert seen.headers["x-edgepbx-encryption"] == BACKUP_ENCRYPTION
    # restore path: the admin's private key opens what the portal stored
    assert open_voicemail_backup(admin_key, "vm-201-0001", "201", seen.body) == audio
    with pytest.raises(ValueError, match="authenticate"):
        open_voicemail_backup(admin_key, "vm-201-0002", "201", seen.body)  # swapped id
    with pytest.raises(ValueError):
        open_voicemail_backup(X25519PrivateKey.generate(), "vm-201-0001", "201", seen.body)


# ---------------------------------------------------------------------- bad responses


def _oversized_with_length(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(MAX_RESPONSE_BYTES + 1))
    h.end_headers()
    h.close_connection = True


def _oversized_chunked(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b" " * (1024 * 1024)
    try:
        for _ in range(10):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass  # the client hung up, as it should
    h.close_connection = True


def _truncated(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.write(b'{"version": 1, "docu')
    h.wfile.flush()
    h.close_connection = True


@pytest.mark.parametrize("writer,error", [
    (_oversized_with_length, ResponseTooLarge),
    (_oversized_chunked, ResponseTooLarge),
    (_truncated, BadResponse),
])
def test_oversized_and_truncated_responses_are_errors(ident, portal, writer, error):
    portal.routes[("GET", "/v1/site")] = lambda s: writer

    async def main() -> None:
        async with client(ident, portal) as pc:
            await pc.get_site()

    with pytest.raises(error):
        run(main())


@pytest.mark.parametrize("status,body,error", [
    (200, b"not json", BadResponse),
    (200, {"version": "1", "document": {}}, BadResponse),
    (200, {"version": 1, "document": {}}, BadResponse),  # no ETag
    (404, {"error": "unknown device"}, PortalRejected),
    (500, {"error": "boom"}, PortalUnavailable),
    (429, b"", PortalUnavailable),
    (302, b"", BadResponse),
])
def test_status_and_body_mapping(ident, portal, status, body, error):
    portal.routes[("GET", "/v1/site")] = lambda s: (status, body, {})

    async def main() -> None:
        async with client(ident, portal) as pc:
            await pc.get_site()

    with pytest.raises(error) as info:
        run(main())
    if error is PortalRejected:
        assert info.value.status == 404 and info.value.message == "unknown device"
        assert not isinstance(info.value, PortalUnavailable)
    if status == 500:
        assert info.value.status == 500


def test_portal_down_is_unavailable(ident, portal):
    url = portal.url
    portal.server.shutdown()
    portal.server.server_close()

    async def main() -> None:
        async with PortalClient.from_identity(ident, url, inner_address=INNER) as pc:
            await pc.heartbeat(Heartbeat("0.1.0", 1.0, 0, 0, "up", 1, 0.0))

    with pytest.raises(PortalUnavailable):
        run(main())


def test_ids_are_checked_before_sending(ident, portal):
    async def main() -> None:
        async with client(ident, portal, opt_ins=lambda: OptIns(True, True)) as pc:
            with pytest.raises(ValueError):
                await pc.upload_cdrs("../x", [])
            with pytest.raises(ValueError):
                await pc.post_usage("", UsageReport("2026-11-23", 0, 0, 0, None, None, 0))
            with pytest.raises(ValueError):
                await pc.post_usage("k", UsageReport("23/11/2026", 0, 0, 0, None, None, 0))

    run(main())
    with pytest.raises(ValueError):
        seal_voicemail_backup(X25519PrivateKey.generate().public_key(), "a/b", "201", b"")
    assert portal.seen == []


# ---------------------------------------------------------------------- the published contract


def test_openapi_document_has_every_path_and_matches_the_code():
    import yaml

    from agent.cdr import CALL_RECORD_FIELDS

    spec = yaml.safe_load((Path(__file__).parent.parent / "docs/portal-api.yaml").read_text())
    assert spec["openapi"].startswith("3.1")
    assert {(p, m) for p, ops in spec["paths"].items() for m in ops} == {
        ("/v1/enroll", "post"), ("/v1/renew", "post"), ("/v1/site", "get"),
        ("/v1/site/status", "post"), ("/v1/site/changes", "post"), ("/v1/cdr", "post"),
        ("/v1/usage", "post"), ("/v1/voicemail-backups/{backup_id}", "put"),
        ("/v1/heartbeat", "post")}

    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(spec):
        target = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]  # KeyError: a dangling $ref
    schemas = spec["components"]["schemas"]
    assert set(schemas["CallRecord"]["properties"]) == {*CALL_RECORD_FIELDS, "time_to_answer"}
    assert set(schemas["Usage"]["properties"]) == set(
        UsageReport("2026-01-01", 0, 0, 0, None, None, 0).as_json())
    assert set(schemas["Heartbeat"]["properties"]) == set(
        Heartbeat("v", 0, 0, 0, "up", 0, 0, outbox={}).as_json())
    assert spec["paths"]["/v1/enroll"]["post"]["security"] == []  # the one exception
