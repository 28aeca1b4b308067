"""Thin asyncio adapters: bytes in from sockets, bytes out to sockets.

They do no SIP work. Each hands what it reads to a ``sink(data, peer)``
callable and sends what it is given; framing of streams is done by the pure
:class:`~sipstack.framing.StreamFramer`. Limits that protect the process
(unfinished messages, connection counts, stalled TLS handshakes) live here
because they are about sockets, not SIP.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sipstack.framing import PONG, Frame, FramingError, Ping, StreamFramer
from sipstack.peer import Peer

log = logging.getLogger(__name__)

Sink = Callable[[bytes, Peer], None]
ErrorSink = Callable[[FramingError, Peer], None]


def _addr_host(addr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    return addr[0], addr[1]


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = _addr_host(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._sink(data, Peer("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the peer went away; nothing to do here.
        log.debug("udp error", extra={"error": str(exc)})

    def send(self, data: bytes, peer: Peer) -> None:
        if self.transport is not None:
            self.transport.sendto(data, (peer.host, peer.port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_connections: int = 10_000
    max_per_ip: int = 200
    max_head: int = 16_384
    max_body: int = 65_535
    unfinished_timeout: float = 30.0  # a message must complete within this
    idle_timeout: float = 7_200.0  # no bytes at all for this long: close
    handshake_timeout: float = 10.0
    # Replies queued for a peer that does not read them: past this, drop the peer
    # rather than buffer without bound.
    max_write_buffer: int = 1_048_576
    sweep_interval: float = 1.0
    # After a framing error: keep reading (and dropping) this long before closing, so
    # the error response is not lost to the RST that closing on unread data causes.
    linger: float = 2.0


class _StreamConnection(asyncio.Protocol):
    def __init__(self, server: StreamServer) -> None:
        self.server = server
        self.framer = StreamFramer(max_head=server.limits.max_head, max_body=server.limits.max_body)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_rx = time.monotonic()
        self.partial_since: float | None = None
        self.draining = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        host, port = _addr_host(transport.get_extra_info("peername"))
        self.transport = transport
        self.peer = Peer(self.server.transport_name, host, port)
        if not self.server.admit(self):
            transport.abort()
            self.transport = None

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        if self.draining:
            return
        now = time.monotonic()
        self.last_rx = now
        completed = False
        for event in self.framer.feed(data):
            if isinstance(event, Frame):
                completed = True
                self.server.sink(event.data, self.peer)
            elif isinstance(event, Ping):
                completed = True
                self.write(PONG)
            else:
                self.server.on_framing_error(event, self.peer)
                self._drain_then_close()
                return
        # The clock of an unfinished message starts when that message started, not
        # when some earlier message of a busy connection did.
        if not self.framer.unfinished:
            self.partial_since = None
        elif completed or self.partial_since is None:
            self.partial_since = now

    def _drain_then_close(self) -> None:
        self.draining = True
        self.partial_since = None
        asyncio.get_running_loop().call_later(self.server.limits.linger, self.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            if transport.get_write_buffer_size() > self.server.limits.max_write_buffer:
                log.info("closing stream connection", extra={"peer": str(self.peer),
                                                              "why": "not reading"})
                transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class StreamServer:
    """A listening TCP or TLS socket and its connections, keyed by peer."""

    def __init__(
        self,
        sink: Sink,
        on_framing_error: ErrorSink,
        *,
        transport_name: str,
        limits: StreamLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.sink = sink
        self.on_framing_error = on_framing_error
        self.transport_name = transport_name
        self.limits = limits or StreamLimits()
        self.ssl_context = ssl_context
        self.connections: dict[Peer, _StreamConnection] = {}
        self._per_ip: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.local: tuple[str, int] = ("", 0)
        self.refused = 0
        # Outbound connections (a trunk over TCP/TLS, a phone whose flow closed): the
        # messages queued while connecting, by peer; a failed connect is reported.
        self.on_unreachable: Callable[[Peer], None] | None = None
        self.client_ssl_context: ssl.SSLContext | None = None
        self.server_names: dict[Peer, str] = {}  # TLS: the name to verify, by peer
        self._connecting: dict[Peer, list[bytes]] = {}
        self.connect_failures = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _StreamConnection(self),
            host,
            port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.limits.handshake_timeout if self.ssl_context else None,
            reuse_address=True,
        )
        self.local = _addr_host(self._server.sockets[0].getsockname())
        self._schedule_sweep()

    def admit(self, conn: _StreamConnection) -> bool:
        assert conn.peer is not None
        ip = conn.peer.host
        if (
            len(self.connections) >= self.limits.max_connections
            or self._per_ip.get(ip, 0) >= self.limits.max_per_ip
        ):
            self.refused += 1
            return False
        self.connections[conn.peer] = conn
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return True

    def forget(self, conn: _StreamConnection) -> None:
        peer = conn.peer
        if peer is not None and self.connections.get(peer) is conn:
            del self.connections[peer]
            left = self._per_ip.get(peer.host, 1) - 1
            if left:
                self._per_ip[peer.host] = left
            else:
                self._per_ip.pop(peer.host, None)

    def send(self, data: bytes, peer: Peer) -> bool:
        """Write to the connection with ``peer``; with none, open one (RFC 3261 §18.1.1)
        and send once it is up. False only when the peer cannot be connected to at all."""
        conn = self.connections.get(peer)
        if conn is not None:
            conn.write(data)
            return True
        queued = self._connecting.get(peer)
        if queued is not None:
            if sum(map(len, queued)) + len(data) <= self.limits.max_write_buffer:
                queued.append(data)
            return True
        if self.transport_name == "tls" and self.client_ssl_context is None:
            return False
        self._connecting[peer] = [data]
        asyncio.get_running_loop().create_task(self._connect(peer))
        return True

    async def _connect(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        tls = self.transport_name == "tls"
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamConnection(self), peer.host, peer.port,
                    ssl=self.client_ssl_context if tls else None,
                    server_hostname=self.server_names.get(peer, peer.host) if tls else None,
                ),
                timeout=self.limits.handshake_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.connect_failures += 1
            self._connecting.pop(peer, None)
            log.info("could not connect", extra={"peer": str(peer), "why": str(exc)})
            if self.on_unreachable is not None:
                self.on_unreachable(peer)
            return
        for data in self._connecting.pop(peer, []):
            conn.write(data)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.limits.sweep_interval, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        limits = self.limits
        for conn in list(self.connections.values()):
            since = conn.partial_since
            stalled = since is not None and now - since > limits.unfinished_timeout
            if stalled or now - conn.last_rx > limits.idle_timeout:
                log.info(
                    "closing stream connection",
                    extra={"peer": str(conn.peer), "why": "unfinished" if stalled else "idle"},
                )
                if conn.transport is not None:
                    conn.transport.abort()
        self._schedule_sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()


async def open_udp(host: str, port: int, sink: Sink) -> UdpEndpoint:
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(sink), local_addr=(host, port)
    )
    return protocol


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
