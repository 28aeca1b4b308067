"""Hostile traffic against the real asyncio transports, with the SIP service in-process.

Every test runs agent.sipservice.SipService on 127.0.0.1 (UDP, TCP and TLS on ports the
kernel picks) with a temporary store, throws bad input at it, and checks that it keeps
answering everybody else.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent.listen import ListenSpec
from agent.sipservice import SipService
from agent.site import Site
from agent.store import Store
from sipstack.digest import DigestClient
from sipstack.message import Response, parse_message
from sipstack.transport import StreamLimits

HOST = "127.0.0.1"
REALM = "pbx.test"
PASSWORD = "Pw-1000-correct-horse"
TIMEOUT = 5.0

SITE = {
    "site": {"name": "Robustness", "timezone": "Europe/Berlin", "realm": REALM},
    "users": [
        {"id": "u1000", "name": "Alice", "extension": "1000",
         "sip": {"username": "1000", "password": PASSWORD}},
    ],
}


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from agent.tlscert import ensure_self_signed

    return ensure_self_signed(tmp_path_factory.mktemp("tls"), "localhost")


class Harness:
    def __init__(self, service: SipService) -> None:
        self.service = service
        self.ports = {ls.spec.transport: ls.bound[1] for ls in service.listeners}

    def addr(self, transport: str) -> tuple[str, int]:
        return HOST, self.ports[transport]


@asynccontextmanager
async def running(
    tmp_path: Path, tls_cert: tuple[Path, Path], limits: StreamLimits | None = None
) -> AsyncIterator[Harness]:
    store = Store.open(tmp_path / "state")
    service = SipService(
        site=Site.model_validate(SITE),
        store=store,
        listens=[ListenSpec("udp", HOST, 0), ListenSpec("tcp", HOST, 0),
                 ListenSpec("tls", HOST, 0)],
        state_dir=tmp_path / "state",
        tls_cert=tls_cert,
        stream_limits=limits,
    )
    try:
        await service.start()
        yield Harness(service)
    finally:
        await service.stop()
        store.close()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro(), 25)

    asyncio.run(main())


# --------------------------------------------------------------------------- SIP helpers


def branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex


def options(transport: str, lport: int, *, extra: str = "") -> bytes:
    return (
        f"OPTIONS sip:{REALM} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {HOST}:{lport};branch={branch()};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{REALM}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{REALM}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def register(transport: str, lport: int, *, call_id: str, cseq: int, auth: str | None = None,
             user_agent: bytes = b"TestPhone/1") -> bytes:
    head = (
        f"REGISTER sip:{REALM} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {HOST}:{lport};branch={branch()};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1000@{REALM}>;tag=regtag\r\n"
        f"To: <sip:1000@{REALM}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:1000@{HOST}:{lport};transport={transport}>\r\n"
        "Expires: 600\r\n"
    ).encode()
    head += b"User-Agent: " + user_agent + b"\r\n"
    if auth is not None:
        head += f"Authorization: {auth}\r\n".encode()
    return head + b"Content-Length: 0\r\n\r\n"


class Udp:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    async def send(self, data: bytes, addr: tuple[str, int]) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, addr)

    async def recv(self, timeout: float = TIMEOUT) -> bytes:
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), timeout)
        return data

    def close(self) -> None:
        self.sock.close()


async def read_message(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    msg = parse_message(head + body)
    assert isinstance(msg, Response), head
    return msg


async def wait_closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Read until EOF; return what came. Fails if the server keeps the connection open."""
    got = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                return got
            got += chunk
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return got


async def udp_options_ok(h: Harness) -> None:
    client = Udp()
    try:
        await client.send(options("udp", client.port), h.addr("udp"))
        resp = parse_message(await client.recv())
        assert isinstance(resp, Response) and resp.status == 200
    finally:
        client.close()


async def stream_options_ok(h: Harness, transport: str) -> None:
    ctx = client_ssl() if transport == "tls" else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*h.addr(transport), ssl=ctx), TIMEOUT
    )
    try:
        lport = writer.get_extra_info("sockname")[1]
        writer.write(options(transport, lport))
        resp = await read_message(reader)
        assert resp.status == 200
        assert resp.headers.values("allow")
    finally:
        writer.close()


def client_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------- (a) UDP junk


def test_random_and_oversized_datagrams_do_not_stop_it(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    async def body() -> None:
        async with running(tmp_path, tls_cert) as h:
            attacker = Udp()
            rng = random.Random(1)
            target = h.addr("udp")
            good = options("udp", attacker.port)
            for i in range(1000):
                if i % 2:
                    blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 1400)))
                else:
                    blob = bytearray(good)
                    for _ in range(rng.randrange(1, 8)):
                        blob[rng.randrange(len(blob))] = rng.getrandbits(8)
                    blob = bytes(blob)
                await attacker.send(blob, target)
            # The largest datagrams IPv4 can carry: junk, and a SIP message that is too big.
            max_udp = 65_507
            await attacker.send(b"\xff" * max_udp, target)
            big = good.replace(b"Content-Length: 0\r\n\r\n",
                               b"X-Pad: " + b"a" * (max_udp - len(good) - 10) + b"\r\n\r\n")
            await attacker.send(big[:max_udp], target)
            with pytest.raises(OSError):  # 70 kB cannot even leave this host over UDP
                attacker.sock.sendto(b"x" * 70_000, target)
            await udp_options_ok(h)
            await stream_options_ok(h, "tcp")
            stats = h.service.endpoint.stats
            assert stats.received >= 1002
            assert stats.internal_errors == 0
            attacker.close()

    run(body)


# --------------------------------------------------------------------------- (b) streams


def test_tcp_peer_that_never_finishes_its_head_is_capped_with_513(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    async def body() -> None:
        async with running(tmp_path, tls_cert, StreamLimits(linger=0.3)) as h:
            reader, writer = await asyncio.open_connection(*h.addr("tcp"))
            lport = writer.get_extra_info("sockname")[1]
            received = asyncio.create_task(wait_closed_by_peer(reader, TIMEOUT))
            start = options("tcp", lport).split(b"Content-Length")[0]
            writer.write(start)
            flood = b"X-Flood: " + b"a" * 200 + b"\r\n"
            try:
                for _ in range(2000):  # 400 kB, far past the 16 kB head cap
                    writer.write(flood)
                    await writer.drain()
                    await asyncio.sleep(0)
                    if received.done():
                        break
            except (ConnectionResetError, BrokenPipeError):
                pass
            got = await received
            assert got.startswith(b"SIP/2.0 513 "), got[:200]
            resp = parse_message(got)
            assert isinstance(resp, Response) and resp.status == 513
            assert resp.headers.get("call-id")
            assert h.service._streams["tcp"].connections == {}
            writer.close()
            await stream_options_ok(h, "tcp")
            await udp_options_ok(h)

    run(body)


def test_tcp_peer_that_stalls_mid_message_is_closed(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    limits = StreamLimits(unfinished_timeout=0.5, sweep_interval=0.05)

    async def body() -> None:
        async with running(tmp_path, tls_cert, limits) as h:
            # Mid-head.
            r1, w1 = await asyncio.open_connection(*h.addr("tcp"))
            w1.write(options("tcp", 1)[:40])
            # Mid-body.
            r2, w2 = await asyncio.open_connection(*h.addr("tcp"))
            w2.write(options("tcp", 2).replace(b"Content-Length: 0", b"Content-Length: 100")
                     + b"only part of the body")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await wait_closed_by_peer(r1, 3) == b""
            assert await wait_closed_by_peer(r2, 3) == b""
            elapsed = loop.time() - t0
            assert 0.4 < elapsed < 2.5
            await stream_options_ok(h, "tcp")
            w1.close()
            w2.close()

    run(body)


def test_busy_connection_ending_reads_mid_message_is_not_taken_for_stalled(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    # Every read ends inside a message, but each message completes well within the
    # unfinished timeout: the connection must live on.
    limits = StreamLimits(unfinished_timeout=0.6, sweep_interval=0.05)

    async def body() -> None:
        async with running(tmp_path, tls_cert, limits) as h:
            reader, writer = await asyncio.open_connection(*h.addr("tcp"))
            lport = writer.get_extra_info("sockname")[1]
            msgs = [options("tcp", lport) for _ in range(8)]
            half = len(msgs[0]) // 2
            writer.write(msgs[0][:half])
            for i in range(len(msgs) - 1):
                await asyncio.sleep(0.25)  # 8 x 0.25 s: well past the timeout in total
                writer.write(msgs[i][half:] + msgs[i + 1][:half])
            await asyncio.sleep(0.25)
            writer.write(msgs[-1][half:])
            for _ in msgs:
                assert (await read_message(reader)).status == 200
            writer.close()

    run(body)


def test_lone_crlf_keepalive_is_not_an_unfinished_message(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    limits = StreamLimits(unfinished_timeout=0.3, sweep_interval=0.05)

    async def body() -> None:
        async with running(tmp_path, tls_cert, limits) as h:
            reader, writer = await asyncio.open_connection(*h.addr("tcp"))
            lport = writer.get_extra_info("sockname")[1]
            writer.write(b"\r\n")
            await asyncio.sleep(0.8)
            writer.write(options("tcp", lport))
            assert (await read_message(reader)).status == 200
            writer.close()

    run(body)


# --------------------------------------------------------------------------- (c) header flood


def test_header_flood_gets_400_and_others_are_still_answered(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    async def body() -> None:
        async with running(tmp_path, tls_cert) as h:
            flood = "".join(f"X-H{i}: v\r\n" for i in range(2000))
            attacker = Udp()
            data = options("udp", attacker.port, extra=flood)
            assert len(data) < 65_507
            await attacker.send(data, h.addr("udp"))
            resp = parse_message(await attacker.recv())
            assert isinstance(resp, Response) and resp.status == 400
            assert resp.headers.get("warning")
            await udp_options_ok(h)
            # The same over TCP: the frame is fine, the message is not; the connection lives.
            reader, writer = await asyncio.open_connection(*h.addr("tcp"))
            lport = writer.get_extra_info("sockname")[1]
            short = "".join("X: v\r\n" for _ in range(2000))
            writer.write(options("tcp", lport, extra=short))
            assert (await read_message(reader)).status == 400
            writer.write(options("tcp", lport))
            assert (await read_message(reader)).status == 200
            writer.close()
            attacker.close()

    run(body)


# --------------------------------------------------------------------------- (d) TLS


def test_stalled_tls_handshake_blocks_nobody_and_is_dropped(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    limits = StreamLimits(handshake_timeout=1.0)

    async def body() -> None:
        async with running(tmp_path, tls_cert, limits) as h:
            loop = asyncio.get_running_loop()
            stalled = [await asyncio.open_connection(*h.addr("tls")) for _ in range(5)]
            # One more that starts a ClientHello and stops.
            half_r, half_w = await asyncio.open_connection(*h.addr("tls"))
            half_w.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            t0 = loop.time()
            await stream_options_ok(h, "tls")
            await stream_options_ok(h, "tcp")
            await udp_options_ok(h)
            assert loop.time() - t0 < 1.0  # nobody waited for the stalled handshakes
            for reader, _writer in [*stalled, (half_r, half_w)]:
                assert await wait_closed_by_peer(reader, 5) == b""
            assert 0.9 < loop.time() - t0 < 5
            for _reader, writer in [*stalled, (half_r, half_w)]:
                writer.close()

    run(body)


# --------------------------------------------------------------------------- (e) ping/pong


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_crlfcrlf_ping_gets_crlf_pong(
    tmp_path: Path, tls_cert: tuple[Path, Path], transport: str
) -> None:
    async def body() -> None:
        async with running(tmp_path, tls_cert) as h:
            ctx = client_ssl() if transport == "tls" else None
            reader, writer = await asyncio.open_connection(*h.addr(transport), ssl=ctx)
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\r\n"
            writer.write(b"\r\n\r\n\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"\r\n\r\n"
            # A ping right after a message on the same connection.
            lport = writer.get_extra_info("sockname")[1]
            # The pong may come before the 200: the answer waits for the end of the
            # event-loop pass (group commit), the pong does not. Either order is fine.
            writer.write(options(transport, lport) + b"\r\n\r\n")
            buf = b""
            while not (buf.count(b"\r\n\r\n") >= 1 and len(buf) - len(buf.strip(b"\r\n")) >= 6):
                buf += await asyncio.wait_for(reader.read(4096), TIMEOUT)
            resp = parse_message(buf.lstrip(b"\r\n").rstrip(b"\r\n") + b"\r\n\r\n")
            assert isinstance(resp, Response) and resp.status == 200
            writer.close()

    run(body)


def test_crlf_datagram_keepalive_gets_no_answer(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    async def body() -> None:
        async with running(tmp_path, tls_cert) as h:
            client = Udp()
            await client.send(b"\r\n\r\n", h.addr("udp"))
            with pytest.raises(TimeoutError):
                await client.recv(timeout=0.3)
            assert h.service.endpoint.stats.keepalives == 1
            client.close()

    run(body)


# --------------------------------------------------------------------------- (f) REGISTER


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_register_over_a_stream_is_answered_on_the_same_connection(
    tmp_path: Path, tls_cert: tuple[Path, Path], transport: str
) -> None:
    async def body() -> None:
        async with running(tmp_path, tls_cert) as h:
            ctx = client_ssl() if transport == "tls" else None
            reader, writer = await asyncio.open_connection(*h.addr(transport), ssl=ctx)
            lport = writer.get_extra_info("sockname")[1]
            writer.write(register(transport, lport, call_id="tcp-reg", cseq=1))
            challenge = await read_message(reader)
            assert challenge.status == 401
            client = DigestClient("1000", PASSWORD)
            chosen = client.choose(challenge.headers.get_all("www-authenticate"))
            assert chosen is not None
            auth = client.authorize(chosen, "REGISTER", f"sip:{REALM}")
            writer.write(register(transport, lport, call_id="tcp-reg", cseq=2, auth=auth))
            ok = await read_message(reader)
            assert ok.status == 200
            assert ok.headers.values("contact") == [
                f"<sip:1000@{HOST}:{lport};transport={transport}>;expires=600"
            ]
            [binding] = h.service.registrar.lookup("u1000", time.time())
            assert binding.source.transport == transport
            assert binding.source.port == lport
            # Committed before the 200 went out (group commit).
            rows = h.service.store.load_bindings(0)
            assert [(r.aor, r.source_transport, r.source_port) for r in rows] == [
                ("u1000", transport, lport)
            ]
            writer.close()

    run(body)


def test_register_with_latin1_user_agent_is_persisted(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    # Header bytes that are not UTF-8 must not make the store refuse the batch.
    async def body() -> None:
        async with running(tmp_path, tls_cert) as h:
            client = Udp()
            ua = b"T\xe9l\xe9phone/1.0"
            await client.send(register("udp", client.port, call_id="l1", cseq=1, user_agent=ua),
                              h.addr("udp"))
            challenge = parse_message(await client.recv())
            assert isinstance(challenge, Response) and challenge.status == 401
            dc = DigestClient("1000", PASSWORD)
            auth = dc.authorize(dc.choose(challenge.headers.get_all("www-authenticate")) or "",
                                "REGISTER", f"sip:{REALM}")
            await client.send(register("udp", client.port, call_id="l1", cseq=2, auth=auth,
                                       user_agent=ua), h.addr("udp"))
            ok = parse_message(await client.recv())
            assert isinstance(ok, Response) and ok.status == 200
            assert h.service.store_errors == 0
            [row] = h.service.store.load_bindings(0)
            assert row.user_agent == "T\ufffdl\ufffdphone/1.0"
            client.close()

    run(body)


def test_peer_that_never_reads_its_answers_is_dropped(
    tmp_path: Path, tls_cert: tuple[Path, Path]
) -> None:
    # Replies pile up for a peer that only writes; past max_write_buffer it is cut off
    # instead of growing our memory without bound.
    limits = StreamLimits(max_write_buffer=64 * 1024)

    async def body() -> None:
        async with running(tmp_path, tls_cert, limits) as h:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, h.addr("tcp"))
            lport = sock.getsockname()[1]
            batch = b"".join(options("tcp", lport) for _ in range(200))
            dropped = False
            for _ in range(200):  # up to 40 000 requests, ~16 MB
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, batch), 2)
                except (ConnectionResetError, BrokenPipeError):
                    dropped = True
                    break
                except TimeoutError:
                    pass  # our own send buffer is full: the server stopped reading us
                if not h.service._streams["tcp"].connections:
                    dropped = True
                    break
            assert dropped
            sock.close()
            await stream_options_ok(h, "tcp")

    run(body)


def test_no_enumeration_on_the_wire(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    async def body() -> None:
        async with running(tmp_path, tls_cert) as h:
            client = Udp()
            answers = {}
            for user in ("1000", "9999"):
                data = register("udp", client.port, call_id="same", cseq=1)
                await client.send(data.replace(b"1000@", f"{user}@".encode()), h.addr("udp"))
                answers[user] = await client.recv()
            known, unknown = answers["1000"], answers["9999"]
            mask = re.compile(rb'(nonce="|tag=|branch=)[^";\r\n]*')
            known = mask.sub(rb"\1X", known).replace(b"1000@", b"USER@")
            unknown = mask.sub(rb"\1X", unknown).replace(b"9999@", b"USER@")
            assert known.startswith(b"SIP/2.0 401 ")
            assert known == unknown
            client.close()

    run(body)


# ------------------------------------------------------------- what it does not serve yet


def request(method: str, lport: int, *, to_tag: str = "") -> bytes:
    return (
        options("udp", lport)
        .replace(b"OPTIONS sip:", f"{method} sip:".encode(), 1)
        .replace(b"CSeq: 1 OPTIONS", f"CSeq: 1 {method}".encode())
        .replace(f"To: <sip:{REALM}>".encode(), f"To: <sip:{REALM}>{to_tag}".encode())
    )


@pytest.mark.parametrize("method, to_tag, status", [
    ("INVITE", "", 407),  # served: a caller must authenticate first
    ("SUBSCRIBE", "", 489),  # no event package served yet
    ("PUBLISH", "", 405),  # known, not served: 405 with Allow
    ("BYE", ";tag=gone", 481),  # no such dialog
    ("OPTIONS", ";tag=gone", 481),
    ("CANCEL", "", 481),  # no such transaction
    ("FROBNICATE", "", 501),  # unknown method
])
def test_requests_it_does_not_serve_get_the_right_refusal(
    tmp_path: Path, tls_cert: tuple[Path, Path], method: str, to_tag: str, status: int
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, tls_cert) as h:
            client = Udp()
            try:
                await client.send(request(method, client.port, to_tag=to_tag), h.addr("udp"))
                resp = parse_message(await client.recv())
                assert isinstance(resp, Response) and resp.status == status
                assert resp.to.tag is not None
                if status == 405:
                    assert "INVITE" in (resp.headers.get("allow") or "")
            finally:
                client.close()

    run(scenario)


def test_ack_is_never_answered(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        async with running(tmp_path, tls_cert) as h:
            client = Udp()
            try:
                await client.send(request("ACK", client.port), h.addr("udp"))
                await client.send(options("udp", client.port), h.addr("udp"))
                resp = parse_message(await client.recv())
                # The first answer is the OPTIONS': the ACK got none.
                assert isinstance(resp, Response) and resp.cseq.method == "OPTIONS"
            finally:
                client.close()

    run(scenario)
