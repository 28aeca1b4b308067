"""agent.provisioning_http: the strict HTTP/1.1 request parser, target checks, the
User-Agent hints, and the server over loopback (HTTP and HTTPS) with per-device
credentials: Basic over HTTPS only, Digest over HTTP, another phone's credentials and
unknown MACs refused, fetches recorded like TFTP's."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import short_tempdir
from test_site_phones import LISTENS, base

from agent.provisioning_http import (
    MAX_HEAD,
    REALM,
    HttpError,
    HttpProvisioning,
    http_auth_config,
    parse_request,
    request_name,
    user_agent_hint,
)
from agent.provisioning_map import provisioning_model
from agent.provisioning_service import ProvisioningService
from agent.site import parse_site
from agent.store import Store
from agent.tlscert import ensure_self_signed
from provisioning import file_for, render_cisco_default
from sipstack.digest import DigestClient

LOOPBACK = "127.0.0.1"
CISCO = "SEPAABBCCDDEE01.cnf.xml"  # phones[0], CP-7841
YEALINK = "aabbccddee02.cfg"  # phones[1], yealink-t46
PASSWORDS = (b"pw-101", b"pw-102", b"pw-103")


# --------------------------------------------------------------------------------------------
# The parser


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_parse_a_plain_get() -> None:
    req = parse_request(head("GET /x.cfg?mac=1 HTTP/1.1", "Host: pbx", "User-Agent: a b",
                             "Connection: keep-alive"))
    assert (req.method, req.target, req.version) == ("GET", "/x.cfg?mac=1", (1, 1))
    assert req.header("host") == "pbx" and req.header("user-agent") == "a b"
    assert req.keep_alive
    assert not parse_request(head("GET / HTTP/1.1", "Host: a", "Connection: Close")).keep_alive
    assert not parse_request(head("HEAD / HTTP/1.0")).keep_alive  # 1.0: no Host needed


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /x HTTP/1.1\r\nHost: a\r\n", 400),  # not terminated
    (head("GET  /x HTTP/1.1", "Host: a"), 400),  # two spaces
    (head("GET /x", "Host: a"), 400),  # HTTP/0.9
    (head("GET /x HTTP/1.1 extra", "Host: a"), 400),
    (head("GET /x HTTP/2.0", "Host: a"), 505),
    (head("GET /x HTTP/1", "Host: a"), 400),
    (head("G\x01T /x HTTP/1.1", "Host: a"), 400),
    (b"GET /\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (head("GET /x HTTP/1.1"), 400),  # no Host
    (head("GET /x HTTP/1.1", "Host: a", "Host: b"), 400),
    (head("GET /x HTTP/1.1", "Host : a"), 400),  # space before the colon
    (head("GET /x HTTP/1.1", "Host: a", " folded"), 400),  # obs-fold
    (head("GET /x HTTP/1.1", "Host: a", "X: a\x00b"), 400),
    (b"GET /x HTTP/1.1\nHost: a\r\n\r\n", 400),  # bare LF
    (head("GET /x HTTP/1.1", "Host: a", "Content-Length: 5"), 400),
    (head("GET /x HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"), 400),
    (head("GET /x HTTP/1.1", "Host: a", *[f"X-{i}: v" for i in range(70)]), 431),
    (head("GET /x HTTP/1.1", "Host: a", "X: " + "v" * MAX_HEAD), 431),
    (head("GET /" + "a" * 2000 + " HTTP/1.1", "Host: a"), 414),
    (head("POST /x HTTP/1.1", "Host: a"), 405),
    (head("PUT /x HTTP/1.1", "Host: a"), 405),
    (head("OPTIONS * HTTP/1.1", "Host: a"), 405),
    (head("get /x HTTP/1.1", "Host: a"), 405),  # methods are case-sensitive
])
def test_malformed_requests(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_request(raw)
    assert info.value.status == status, info.value.reason


@pytest.mark.parametrize("target", [
    "http://pbx/x.cfg", "https://pbx:443/SEPAABBCCDDEE01.cnf.xml", "pbx:80", "*", "x.cfg",
    "/../etc/passwd", "/a/../b", "/%2e%2e/etc/passwd", "/%2E%2E%2Fetc%2Fpasswd", "/.",
    "/%2e", "/x%2f..%2f..%2fy", "/a\\..\\b", "/a%5cb", "/x%zz", "/x%2", "/x%00.cfg",
    "/%ff.cfg", "/x.cfg#frag",
])
def test_targets_refused(target: str) -> None:
    with pytest.raises(HttpError) as info:
        request_name(target)
    assert info.value.status == 400


def test_targets_accepted() -> None:
    assert request_name("/SEPAABBCCDDEE01.cnf.xml") == "SEPAABBCCDDEE01.cnf.xml"
    assert request_name("/aabbccddee02.cfg?model=T46") == "aabbccddee02.cfg"
    assert request_name("/%61abbccddee02.cfg") == "aabbccddee02.cfg"
    assert request_name("/") is None
    assert request_name("/prov/aabbccddee02.cfg") is None  # sub-directory: 404


def test_user_agent_hints() -> None:
    assert user_agent_hint("Yealink SIP-T46U 66.86.0.15 80:5e:c0:00:00:01") == ("yealink", "T46U")
    assert user_agent_hint("Yealink SIP-T54W 96.86.0.70") == ("yealink", "T54W")
    assert user_agent_hint("FileTransport PolycomVVX-VVX_450-UA/6.4.3.5018 Type/Application"
                           ) == ("polycom", "VVX 450")
    assert user_agent_hint("Cisco-CP8841/12.8.1") == ("cisco", "CP-8841")
    assert user_agent_hint("Cisco-CP-7841-3PCC/11.3.1") == ("cisco", "CP-7841")
    assert user_agent_hint("curl/7.88.1") == (None, None)
    assert user_agent_hint(None) == (None, None)


# --------------------------------------------------------------------------------------------
# The server


def site_doc(*, own: bool = True, default: bool = True) -> dict[str, Any]:
    doc = base()
    doc["users"].append({"id": "u4", "name": "Four", "extension": "104",
                         "sip": {"username": "104", "password": "pw-104"}})
    if default:
        doc["provisioning"]["http_auth"] = {"username": "site", "password": "site-pw"}
    if own:
        doc["phones"][1]["http_username"] = "t46"
        doc["phones"][1]["http_password"] = "t46-pw"
    doc["phones"].append({"mac": "001122330003", "model": "yealink-t46",
                          "lines": [{"extension": "104"}],
                          "http_username": "other", "http_password": "other-pw"})
    doc["phones"].append({"mac": "001122330004", "model": "polycom-vvx450",
                          "lines": [{"extension": "103", "shared": True}]})
    return doc


def rendered(doc: dict[str, Any], name: str) -> bytes:
    model = provisioning_model(parse_site(doc), LISTENS, default_host="192.0.2.10")
    found = file_for(model.site, model.phones, name)
    assert found is not None
    return found[0]


class Resp:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def get(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Resp:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    length = int(next(v for k, v in headers if k.lower() == "content-length"))
    body = b"" if head_only else await reader.readexactly(length)
    return Resp(status, headers, body)


class Conn:
    """One keep-alive connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: HttpProvisioning, ctx: ssl.SSLContext | None = None) -> Conn:
        reader, writer = await asyncio.open_connection(*server.local, ssl=ctx)
        return cls(reader, writer)

    async def get(self, target: str, *, method: str = "GET", auth: str | None = None,
                  ua: str | None = None) -> Resp:
        lines = [f"{method} {target} HTTP/1.1", "Host: pbx"]
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        if ua is not None:
            lines.append(f"User-Agent: {ua}")
        self.writer.write(head(*lines))
        return await read_response(self.reader, head_only=method == "HEAD")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def digest_get(conn: Conn, target: str, user: str, password: str) -> Resp:
    first = await conn.get(target)
    assert first.status == 401
    challenges = first.get("WWW-Authenticate")
    client = DigestClient(user, password, realm=REALM)
    chosen = client.choose(challenges)
    assert chosen is not None, challenges
    return await conn.get(target, auth=client.authorize(chosen, "GET", target))


Body = Callable[[ProvisioningService, ssl.SSLContext], Awaitable[None]]


def run_service(body: Body, doc: dict[str, Any], store: Store | None = None) -> None:
    with short_tempdir() as tmp:
        cert, key = ensure_self_signed(tmp, "pbx.test")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False
        site = parse_site(doc)
        model = provisioning_model(site, LISTENS, default_host="192.0.2.10")

        async def main() -> None:
            service = ProvisioningService(
                model, store=store, host=None, http=(LOOPBACK, 0), https=(LOOPBACK, 0),
                ssl_context=server_ctx, auth=http_auth_config(site), flush_interval=0.01)
            await service.start()
            try:
                await body(service, client_ctx)
            finally:
                await service.stop()

        asyncio.run(main())


def test_yealink_file_needs_its_credentials() -> None:
    doc = site_doc()
    want = rendered(doc, YEALINK)
    fetched: list[str] = []

    async def body(service: ProvisioningService, ctx: ssl.SSLContext) -> None:
        service.on_fetched = lambda mac, when: fetched.append(mac)
        http, https = service.http
        conn = await Conn.open(http)
        none = await conn.get("/" + YEALINK)
        assert none.status == 401 and none.body == b"Unauthorized\n"
        assert all(v.startswith("Digest ") for v in none.get("WWW-Authenticate"))
        assert not any(pw in none.body for pw in PASSWORDS)
        # Basic over plain HTTP: refused even with the right password.
        refused = await conn.get("/" + YEALINK, auth=basic("t46", "t46-pw"))
        assert refused.status == 401 and b"pw-102" not in refused.body
        ok = await digest_get(conn, "/" + YEALINK, "t46", "t46-pw")
        assert ok.status == 200 and ok.body == want
        assert ok.get("Content-Type") == ["text/plain; charset=utf-8"]
        for user, password in (("t46", "wrong"), ("other", "other-pw"), ("site", "site-pw")):
            bad = await digest_get(conn, "/" + YEALINK, user, password)
            assert bad.status == 401 and b"pw-102" not in bad.body, user
        await conn.close()

        tls = await Conn.open(https, ctx)
        challenge = await tls.get("/" + YEALINK)
        assert challenge.status == 401
        assert challenge.get("WWW-Authenticate")[0].startswith("Basic ")
        ok = await tls.get("/" + YEALINK, auth=basic("t46", "t46-pw"))
        assert ok.status == 200 and ok.body == want
        for auth in (basic("t46", "nope"), basic("other", "other-pw"), basic("site", "site-pw"),
                     "Basic !!!", "Bearer x"):
            bad = await tls.get("/" + YEALINK, auth=auth)
            assert bad.status == 401 and bad.body == b"Unauthorized\n", auth
        ok = await digest_get(tls, "/" + YEALINK, "t46", "t46-pw")  # Digest over HTTPS too
        assert ok.status == 200 and ok.body == want
        head_only = await tls.get("/" + YEALINK, method="HEAD", auth=basic("t46", "t46-pw"))
        assert head_only.status == 200 and head_only.body == b""
        assert head_only.get("Content-Length") == [str(len(want))]
        await tls.close()
        # HEAD is not a fetch: three GETs went out complete.
        assert fetched == ["aabbccddee02"] * 3
        assert service.status()["http_unauthorized"] == 9  # 2 + 1 + 3 * 2
        assert service.status()["https_ok"] == 3

    run_service(body, doc)


def test_site_default_credentials_and_cisco_without() -> None:
    doc = site_doc(own=False)
    polycom = rendered(doc, "001122330004-edgepbx.cfg")

    async def body(service: ProvisioningService, ctx: ssl.SSLContext) -> None:
        http = service.http[0]
        conn = await Conn.open(http)
        ok = await digest_get(conn, "/" + YEALINK, "site", "site-pw")
        assert ok.status == 200 and b"pw-102" in ok.body
        assert (await digest_get(conn, "/" + YEALINK, "other", "other-pw")).status == 401
        # A phone with its own credentials does not take the site default.
        assert (await digest_get(conn, "/001122330003.cfg", "site", "site-pw")).status == 401
        ok = await digest_get(conn, "/001122330004-edgepbx.cfg", "site", "site-pw")
        assert ok.status == 200 and ok.body == polycom
        # Cisco: no authentication, the file as rendered.
        cisco = await conn.get("/" + CISCO)
        assert cisco.status == 200 and cisco.body == rendered(doc, CISCO)
        # Common files need nothing and carry no credentials.
        common = await conn.get("/y000000000000.cfg")
        assert common.status == 200 and not any(pw in common.body for pw in PASSWORDS)
        await conn.close()

    run_service(body, doc)


def test_no_credentials_configured_serves_without() -> None:
    doc = base()

    async def body(service: ProvisioningService, ctx: ssl.SSLContext) -> None:
        conn = await Conn.open(service.http[0])
        ok = await conn.get("/" + YEALINK)
        assert ok.status == 200 and ok.body == rendered(doc, YEALINK)
        await conn.close()

    run_service(body, doc)


def test_unknown_mac_never_gets_credentials_and_is_recorded(tmp_path: Path) -> None:
    doc = site_doc()
    store = Store.open(tmp_path)

    async def body(service: ProvisioningService, ctx: ssl.SSLContext) -> None:
        http, https = service.http
        conn = await Conn.open(http)
        for auth in (None, basic("t46", "t46-pw")):
            sep = await conn.get("/SEP001122334455.cnf.xml", auth=auth)
            assert sep.status == 200
            assert sep.body == render_cisco_default(service.model.site)
            assert sep.get("WWW-Authenticate") == []
        ua = "Yealink SIP-T46U 66.86.0.15 00:11:22:33:44:66"
        missing = await conn.get("/001122334466.cfg", ua=ua)
        assert missing.status == 404 and missing.get("WWW-Authenticate") == []
        assert (await digest_get_or_404(conn, "/001122334477-edgepbx.cfg")).status == 404
        # A known Yealink's MAC in a Cisco name: the default, no challenge, no credentials.
        other = await conn.get("/SEPAABBCCDDEE02.cnf.xml")
        assert other.status == 200 and not any(pw in other.body for pw in PASSWORDS)
        await conn.close()
        tls = await Conn.open(https, ctx)
        gone = await tls.get("/001122334488.cfg", auth=basic("t46", "t46-pw"))
        assert gone.status == 404
        await tls.close()
        devices = {d["mac"]: d for d in service.devices()}
        assert devices["001122334466"]["vendor"] == "yealink"
        assert devices["001122334466"]["model_hint"] == "T46U"
        assert devices["001122334466"]["ip"] == LOOPBACK
        assert devices["001122334455"]["vendor"] == "cisco"
        assert all(not devices[m]["assigned"] and devices[m]["fetched_at"] is None
                   for m in ("001122334455", "001122334466", "001122334477", "001122334488"))

    run_service(body, doc, store)
    store.close()


async def digest_get_or_404(conn: Conn, target: str) -> Resp:
    return await conn.get(target)


def test_fetch_recorded_with_sha256(tmp_path: Path) -> None:
    doc = site_doc()
    store = Store.open(tmp_path)
    want = rendered(doc, YEALINK)

    async def body(service: ProvisioningService, ctx: ssl.SSLContext) -> None:
        conn = await Conn.open(service.http[0])
        refused = await conn.get("/" + YEALINK, ua="Yealink SIP-T46U 66.86.0.15")
        assert refused.status == 401
        rows = {d["mac"]: d for d in service.devices()}
        assert rows["aabbccddee02"]["fetched_at"] is None  # seen, not fetched
        assert (await digest_get(conn, "/" + YEALINK, "t46", "t46-pw")).status == 200
        await conn.close()
        rows = {d["mac"]: d for d in service.devices()}
        assert rows["aabbccddee02"]["assigned"] is True
        assert rows["aabbccddee02"]["fetched_file"] == YEALINK
        assert rows["aabbccddee02"]["fetched_sha256"] == hashlib.sha256(want).hexdigest()

    run_service(body, doc, store)
    store.close()


async def raw_exchange(server: HttpProvisioning, data: bytes, *, head_only: bool = False
                       ) -> tuple[list[Resp], bool]:
    """Send ``data``; the responses read until the server closes (and whether it did)."""
    reader, writer = await asyncio.open_connection(*server.local)
    writer.write(data)
    out: list[Resp] = []
    closed = False
    try:
        while True:
            out.append(await asyncio.wait_for(read_response(reader, head_only=head_only), 2.0))
    except asyncio.IncompleteReadError:
        closed = True
    except TimeoutError:
        pass
    writer.close()
    return out, closed


def test_wire_errors_and_keep_alive() -> None:
    async def body(service: ProvisioningService, ctx: ssl.SSLContext) -> None:
        http = service.http[0]
        # Two pipelined requests on one connection, then close.
        got, closed = await raw_exchange(http, head("GET /XmlDefault.cnf.xml HTTP/1.1",
                                                    "Host: a") +
                                         head("GET /nope.cfg HTTP/1.1", "Host: a",
                                              "Connection: close"))
        assert [r.status for r in got] == [200, 404] and closed
        got, closed = await raw_exchange(http, head("DELETE /x HTTP/1.1", "Host: a",
                                                    "Connection: close"))
        assert [r.status for r in got] == [405] and got[0].get("Allow") == ["GET, HEAD"]
        got, closed = await raw_exchange(http, b"GET /x HTTP/1.1\r\nHost: a\r\nX: " +
                                         b"v" * (MAX_HEAD + 100) + b"\r\n\r\n")
        assert [r.status for r in got] == [431] and closed
        got, closed = await raw_exchange(http, head("GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1",
                                                    "Host: a"))
        assert [r.status for r in got] == [400] and closed
        got, closed = await raw_exchange(http, head("GET http://a/XmlDefault.cnf.xml HTTP/1.1",
                                                    "Host: a"))
        assert [r.status for r in got] == [400] and closed
        got, closed = await raw_exchange(http, b"garbage\r\n\r\n")
        assert [r.status for r in got] == [400] and closed
        got, closed = await raw_exchange(http, head("HEAD /XmlDefault.cnf.xml HTTP/1.0"),
                                         head_only=True)
        assert [r.status for r in got] == [200] and closed  # HTTP/1.0: one request
        assert got[0].body == b"" and int(got[0].get("Content-Length")[0]) > 0
        stats = service.status()
        assert stats["http_refused"] == 5 and stats["http_ok"] >= 2
        assert stats["http_not_found"] == 1

    run_service(body, base())


def test_head_timeout_and_connection_cap() -> None:
    async def main() -> None:
        model = provisioning_model(parse_site(base()), LISTENS, default_host="192.0.2.10")
        service = ProvisioningService(model, store=None, host=None)
        server = HttpProvisioning(service, host=LOOPBACK, port=0, max_connections=1,
                                  head_timeout=0.2)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection(*server.local)
            writer.write(b"GET /XmlDef")  # and nothing more
            await asyncio.sleep(0.05)
            # The second connection is over the cap: closed at once.
            reader2, writer2 = await asyncio.open_connection(*server.local)
            assert await asyncio.wait_for(reader2.read(), 1.0) == b""
            writer2.close()
            resp = await asyncio.wait_for(read_response(reader), 2.0)
            assert resp.status == 408
            assert await reader.read() == b""
            writer.close()
            assert server.stats()["connections_refused"] == 1
        finally:
            await server.stop()

    asyncio.run(main())


def test_site_fields() -> None:
    from agent.site import SiteError, site_document

    doc = site_doc()
    site = parse_site(doc)
    shown = site_document(site)
    assert shown["provisioning"]["http_auth"] == {"username": "site", "password": "**********"}
    assert shown["phones"][1]["http_password"] == "**********"
    config = http_auth_config(site)
    assert config.for_phone("aabbccddee02") == ("t46", "t46-pw")
    assert config.for_phone("001122330004") == ("site", "site-pw")  # Polycom: site default
    assert config.for_phone("aabbccddee01") is None  # Cisco: never
    assert config.for_phone("ffffffffffff") is None  # not in the site
    half = site_doc()
    del half["phones"][1]["http_password"]
    with pytest.raises(SiteError) as info:
        parse_site(half)
    assert info.value.errors == [
        "phones[1].http_password: http_username and http_password go together"]
    cisco = site_doc()
    cisco["phones"][0].update(http_username="c", http_password="c-pw")
    with pytest.raises(SiteError) as info:
        parse_site(cisco)
    assert "does not support HTTP authentication" in info.value.errors[0]
    assert info.value.errors[0].startswith("phones[0].http_username:")


def test_reload_changes_the_credentials() -> None:
    doc = site_doc()
    changed = site_doc()
    changed["phones"][1]["http_password"] = "t46-new"

    async def body(service: ProvisioningService, ctx: ssl.SSLContext) -> None:
        tls = await Conn.open(service.http[1], ctx)
        assert (await tls.get("/" + YEALINK, auth=basic("t46", "t46-pw"))).status == 200
        site = parse_site(changed)
        service.apply(provisioning_model(site, LISTENS, default_host="192.0.2.10"),
                      http_auth_config(site))
        assert (await tls.get("/" + YEALINK, auth=basic("t46", "t46-pw"))).status == 401
        assert (await tls.get("/" + YEALINK, auth=basic("t46", "t46-new"))).status == 200
        await tls.close()

    run_service(body, doc)
