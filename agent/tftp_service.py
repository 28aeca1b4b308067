"""TFTP for phone provisioning: the thin asyncio adapter around :mod:`provisioning.tftp`.

Sockets and the clock live here; every TFTP decision is the sans-I/O
:class:`~provisioning.tftp.TftpServer`'s. One UDP endpoint on ``(host, port)`` takes
requests; every accepted transfer gets its own ephemeral UDP socket bound to
``(host, 0)`` (its RFC 1350 TID), whose datagrams go to ``receive_on_transfer``. The
socket is closed on TransferCompleted/TransferFailed.

One timer for the whole server: after every input the output and events are drained
and a single ``loop.call_at`` is re-armed to ``get_timer()``. The clock is
``loop.time()`` throughout (monotonic).

``file_source(filename, client)`` returns the file or None; an exception from it is
logged and answered as "file not found", never raised into the event loop. The optional
``observer`` sees every core event (TransferStarted, TransferCompleted, ...) after it is
logged; its exceptions are logged too.

Access is logged: every completed, failed and refused transfer at info, with the
fields ``client``, ``file_name`` (``filename`` is a reserved LogRecord attribute),
``bytes`` and ``reason``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import cast

from agent.listen import hostport
from provisioning.tftp import (
    Client,
    FileSource,
    RequestRefused,
    TftpEvent,
    TftpServer,
    TransferCompleted,
    TransferFailed,
    TransferId,
    TransferStarted,
)

__all__ = ["FileSource", "TftpService"]

log = logging.getLogger(__name__)


def _client(addr: tuple[str | int, ...]) -> Client:
    """asyncio gives IPv6 peers as (host, port, flowinfo, scope_id): keep (host, port)."""
    return str(addr[0]), int(addr[1])


class _Endpoint(asyncio.DatagramProtocol):
    """One bound UDP socket: datagrams to ``sink(data, client)``."""

    def __init__(self, sink: Callable[[bytes, Client], None]) -> None:
        self._sink = sink
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._sink(data, _client(addr))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the retransmission timer gives up in time.
        log.debug("tftp udp error", extra={"error": str(exc)})

    def send(self, data: bytes, client: Client) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Channel:
    """The socket of one transfer. Opening it is asynchronous: datagrams the core
    produces before it is open wait in ``pending``."""

    __slots__ = ("closed", "endpoint", "opener", "pending")

    def __init__(self) -> None:
        self.endpoint: _Endpoint | None = None
        self.pending: list[tuple[bytes, Client]] = []
        self.opener: asyncio.Task[None] | None = None
        self.closed = False

    def send(self, data: bytes, client: Client) -> None:
        if self.endpoint is None:
            self.pending.append((data, client))
        else:
            self.endpoint.send(data, client)

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        if self.endpoint is not None:
            self.endpoint.close()
        elif self.opener is not None:
            self.opener.cancel()


class TftpService:
    """Serve ``file_source`` over TFTP on ``(host, port)`` (read-only).

    The other keyword arguments are :class:`~provisioning.tftp.TftpServer`'s. ``port`` 0
    binds an ephemeral port; ``local`` holds the bound address after ``start()``.
    """

    def __init__(self, file_source: FileSource, *, host: str, port: int,
                 default_blksize: int = 512, max_blksize: int = 1428,
                 default_timeout: float = 1.0, max_retries: int = 5,
                 max_transfers: int = 1000, max_filename: int = 255,
                 observer: Callable[[TftpEvent], None] | None = None) -> None:
        self._file_source = file_source
        self._observer = observer
        self.host = host
        self.port = port
        self._server = TftpServer(
            self._lookup, default_blksize=default_blksize, max_blksize=max_blksize,
            default_timeout=default_timeout, max_retries=max_retries,
            max_transfers=max_transfers, max_filename=max_filename)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: _Endpoint | None = None
        self._channels: dict[TransferId, _Channel] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._source_errors = 0
        self._socket_errors = 0
        self.local: Client = ("", 0)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the listening socket. ``local`` is then the bound (host, port)."""
        if self._listener is not None:
            raise RuntimeError("TftpService already started")
        self._loop = asyncio.get_running_loop()
        _transport, endpoint = await self._loop.create_datagram_endpoint(
            lambda: _Endpoint(self._on_request), local_addr=(self.host, self.port)
        )
        self._listener = endpoint
        assert endpoint.transport is not None
        self.local = _client(endpoint.transport.get_extra_info("sockname"))
        log.info("tftp listening", extra={"address": hostport(*self.local)})

    async def stop(self) -> None:
        """Abort live transfers (logged as failed), close every socket, stop the timer."""
        if self._listener is None:
            return
        for tid in self._server.active_transfers():
            self._server.abort(tid, "server stopping")
        self._pump()
        self._cancel_timer()
        openers = [ch.opener for ch in self._channels.values() if ch.opener is not None]
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._listener.close()
        self._listener = None
        if openers:
            await asyncio.gather(*openers, return_exceptions=True)
        log.info("tftp stopped", extra={"address": hostport(*self.local)})

    def stats(self) -> dict[str, int]:
        """The core's counters plus the adapter's: open sockets and file source errors."""
        out = {k: int(v) for k, v in dataclasses.asdict(self._server.stats).items()}
        out["sockets"] = len(self._channels)
        out["source_errors"] = self._source_errors
        out["socket_errors"] = self._socket_errors
        return out

    # -- input --------------------------------------------------------------------------------
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _lookup(self, filename: str, client: Client) -> bytes | None:
        try:
            return self._file_source(filename, client)
        except Exception:
            self._source_errors += 1
            log.exception("tftp file source failed",
                          extra={"client": hostport(*client), "file_name": filename})
            return None

    def _on_request(self, data: bytes, client: Client) -> None:
        tid = self._server.receive_request(data, client, self._now())
        if tid is not None and tid not in self._channels:
            self._open(tid)
        self._pump()

    def _on_transfer(self, tid: TransferId, data: bytes, source: Client) -> None:
        self._server.receive_on_transfer(tid, data, source, self._now())
        self._pump()

    def _on_timer(self) -> None:
        fired_at = self._timer_at
        self._timer = None
        self._timer_at = None
        now = self._now()
        # call_at may run a hair before its deadline (clock resolution): never hand the
        # core a `now` before the deadline it asked for, or it would spin on it.
        if fired_at is not None and now < fired_at:
            now = fired_at
        self._server.handle_timer(now)
        self._pump()

    # -- per-transfer sockets -----------------------------------------------------------------
    def _open(self, tid: TransferId) -> None:
        channel = _Channel()
        self._channels[tid] = channel
        channel.opener = asyncio.get_running_loop().create_task(self._open_socket(tid, channel))

    async def _open_socket(self, tid: TransferId, channel: _Channel) -> None:
        assert self._loop is not None
        try:
            _transport, endpoint = await self._loop.create_datagram_endpoint(
                lambda: _Endpoint(lambda data, source: self._on_transfer(tid, data, source)),
                local_addr=(self.host, 0),
            )
        except OSError as exc:
            self._socket_errors += 1
            log.error("tftp transfer socket failed", extra={"error": str(exc)})
            channel.opener = None
            if not channel.closed:
                self._server.abort(tid, f"socket: {exc}")
                self._pump()
            return
        channel.opener = None
        channel.endpoint = endpoint
        if channel.closed:  # the transfer ended while the socket was being opened
            endpoint.close()
            return
        pending, channel.pending = channel.pending, []
        for data, client in pending:
            endpoint.send(data, client)

    # -- output -------------------------------------------------------------------------------
    def _pump(self) -> None:
        server = self._server
        for out in server.datagrams_to_send():
            if out.tid is None:
                if self._listener is not None:
                    self._listener.send(out.data, out.client)
            else:
                channel = self._channels.get(out.tid)
                if channel is not None:
                    channel.send(out.data, out.client)
        for event in server.events():
            self._log_event(event)
            if self._observer is not None:
                try:
                    self._observer(event)
                except Exception:
                    log.exception("tftp event observer failed")
            if isinstance(event, TransferCompleted | TransferFailed):
                channel = self._channels.pop(event.tid, None)
                if channel is not None:
                    channel.close()
        self._rearm()

    def _log_event(self, event: object) -> None:
        if isinstance(event, TransferStarted):
            log.debug("tftp transfer started", extra={
                "client": hostport(*event.client), "file_name": event.filename,
                "bytes": event.size, "blksize": event.blksize})
        elif isinstance(event, TransferCompleted):
            log.info("tftp transfer completed", extra={
                "client": hostport(*event.client), "file_name": event.filename,
                "bytes": event.bytes_sent, "duration_ms": round(event.duration * 1000)})
        elif isinstance(event, TransferFailed):
            log.info("tftp transfer failed", extra={
                "client": hostport(*event.client), "file_name": event.filename,
                "reason": event.reason})
        elif isinstance(event, RequestRefused):
            log.info("tftp request refused", extra={
                "client": hostport(*event.client), "file_name": event.filename,
                "code": event.code, "reason": event.message})

    def _rearm(self) -> None:
        deadline = self._server.get_timer()
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None
