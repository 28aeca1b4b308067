"""A minimal asyncio SIP UAC over UDP for bench/media/run.py.

One socket for every call. A call: INVITE with an SDP offer (PCMU + telephone-event, the
media port given), 407, ACK, INVITE with Proxy-Authorization (sipstack.digest), 200,
ACK; later BYE, 200. Requests the agent sends inside a dialog (its BYE, OPTIONS...) get
200. INVITE and BYE are retransmitted every 0.5 s until answered (RFC 3261 timers
simplified: loopback, and a benchmark, not a phone).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field

from sipstack.digest import DigestClient
from sipstack.message import Request, Response, parse_message

RETRANSMIT = 0.5
TRIES = 10
_ids = itertools.count(1)


@dataclass(frozen=True)
class Dial:
    username: str
    password: str
    number: str
    mode: str  # "vm" (speak after the tone) or "listen"


@dataclass
class Call:
    dial: Dial
    call_id: str
    tag: str
    uri: str
    media_port: int
    cseq: int = 1
    remote_tag: str | None = None
    remote_target: str | None = None
    remote_media: tuple[str, int] = ("", 0)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: dict[tuple[int, str], asyncio.Future[Response]] = field(default_factory=dict)
    provisional: set[tuple[int, str]] = field(default_factory=set)


def options_probe(host: str, port: int, timeout: float = 0.1) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {host}:{lport};branch=z9hG4bK-probe{next(_ids)};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=p{next(_ids)}\r\n"
               f"To: <sip:{host}:{port}>\r\nCall-ID: probe-{time.monotonic_ns()}@{host}\r\n"
               f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), (host, port))
        try:
            return s.recv(4096).startswith(b"SIP/2.0")
        except OSError:
            return False


async def wait_ready(host: str, port: int, proc: subprocess.Popen[bytes], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited with {proc.returncode} before answering")
        if await asyncio.to_thread(options_probe, host, port):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the agent is not answering after {limit} s")


class UserAgent(asyncio.DatagramProtocol):
    def __init__(self, host: str, port: int) -> None:
        self.server = (host, port)
        self.host = host
        self.transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.calls: dict[str, Call] = {}

    @classmethod
    async def start(cls, host: str, port: int) -> UserAgent:
        loop = asyncio.get_running_loop()
        _, ua = await loop.create_datagram_endpoint(lambda: cls(host, port),
                                                    local_addr=(host, 0))
        return ua

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.local_port = sock.getsockname()[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- messages --------------------------------------------------------------------

    def _head(self, call: Call, method: str, uri: str, cseq: int, branch: str,  # noqa: PLR0917
              extra: str = "") -> str:
        to = f"<{call.uri}>" + (f";tag={call.remote_tag}" if call.remote_tag else "")
        d = call.dial
        return (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.host}:{self.local_port};branch={branch};rport\r\n"
                f"Max-Forwards: 70\r\n"
                f"From: <sip:{d.username}@{self.server[0]}>;tag={call.tag}\r\n"
                f"To: {to}\r\nCall-ID: {call.call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:{d.username}@{self.host}:{self.local_port}>\r\n"
                f"User-Agent: edgepbx-media-bench\r\n{extra}")

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.server)

    async def _transaction(self, call: Call, cseq: int, method: str, data: bytes,
                           final_only: bool) -> Response | None:
        """Send and retransmit until a (final, if final_only) response; the final one."""
        key = (cseq, method)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        call.waiters[key] = fut
        try:
            for _ in range(TRIES):
                self._send(data)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), RETRANSMIT)
                except TimeoutError:
                    if key in call.provisional and not final_only:
                        return await asyncio.wait_for(fut, 60)
            return None
        except TimeoutError:
            return None
        finally:
            call.waiters.pop(key, None)

    def _offer(self, port: int) -> bytes:
        return (f"v=0\r\no=bench {next(_ids)} 1 IN IP4 {self.host}\r\ns=-\r\n"
                f"c=IN IP4 {self.host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n"
                f"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                f"a=fmtp:101 0-16\r\na=rtcp:{port}\r\na=ptime:20\r\na=sendrecv\r\n").encode()

    def _invite(self, call: Call, branch: str, extra: str = "") -> bytes:
        body = self._offer(call.media_port)
        head = self._head(call, "INVITE", call.uri, call.cseq, branch, extra)
        return (f"{head}Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
                .encode() + body)

    async def call(self, dial: Dial, media_port: int) -> Call | None:
        """Place a call; the answered Call (ACK sent), or None."""
        n = next(_ids)
        call = Call(dial, f"mb-{n}-{time.monotonic_ns()}@{self.host}", f"t{n}",
                    f"sip:{dial.number}@{self.server[0]}:{self.server[1]}", media_port)
        self.calls[call.call_id] = call
        branch = f"z9hG4bK-mb{n}-1"
        resp = await self._transaction(call, 1, "INVITE", self._invite(call, branch), False)
        if resp is not None and resp.status == 407:
            ack = self._head(call, "ACK", call.uri, 1, branch).replace(
                f"To: <{call.uri}>\r\n", f"To: <{call.uri}>;tag={resp.to.tag}\r\n")
            self._send((ack + "Content-Length: 0\r\n\r\n").encode())
            client = DigestClient(dial.username, dial.password)
            value = client.authorize(resp.headers.get_all("proxy-authenticate")[0], "INVITE",
                                     call.uri)
            call.cseq = 2
            resp = await self._transaction(
                call, 2, "INVITE",
                self._invite(call, f"z9hG4bK-mb{n}-2", f"Proxy-Authorization: {value}\r\n"),
                False)
        if resp is None or resp.status != 200:
            self.calls.pop(call.call_id, None)
            return None
        call.remote_tag = resp.to.tag
        contacts = resp.contacts
        call.remote_target = contacts[0].raw_uri if contacts else call.uri
        body = resp.body.decode(errors="replace")
        c = re.search(r"^c=IN IP4 (\S+)", body, re.M)
        m = re.search(r"^m=audio (\d+)", body, re.M)
        call.remote_media = (c.group(1) if c else self.server[0], int(m.group(1)) if m else 0)
        self._ack(call)
        return call

    def _ack(self, call: Call) -> None:
        head = self._head(call, "ACK", call.remote_target or call.uri, call.cseq,
                          f"z9hG4bK-mb{next(_ids)}-ack")
        self._send((head + "Content-Length: 0\r\n\r\n").encode())

    async def bye(self, call: Call) -> bool:
        call.cseq += 1
        head = self._head(call, "BYE", call.remote_target or call.uri, call.cseq,
                          f"z9hG4bK-mb{next(_ids)}-bye")
        resp = await self._transaction(call, call.cseq, "BYE",
                                       (head + "Content-Length: 0\r\n\r\n").encode(), True)
        call.ended.set()
        self.calls.pop(call.call_id, None)
        return resp is not None and 200 <= resp.status < 300

    # -- receiving -------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if not data.strip():
            return  # keep-alive
        try:
            msg = parse_message(data)
        except Exception:  # noqa: BLE001 - a benchmark ignores what it cannot read
            return
        if isinstance(msg, Response):
            call = self.calls.get(msg.call_id)
            if call is None:
                return
            key = (msg.cseq.number, msg.cseq.method)
            if msg.status < 200:
                call.provisional.add(key)
                return
            fut = call.waiters.get(key)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif msg.cseq.method == "INVITE" and msg.status == 200 and call.remote_tag:
                self._ack(call)  # a retransmitted 200: our ACK was lost
            return
        assert isinstance(msg, Request)
        if msg.method == "ACK":
            return
        lines = ["SIP/2.0 200 OK"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            lines += [f"{name}: {v}" for v in msg.headers.get_all(name)]
        lines.append("Content-Length: 0")
        assert self.transport is not None
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)
        if msg.method == "BYE":
            call = self.calls.pop(msg.call_id, None)
            if call is not None:
                call.ended.set()
