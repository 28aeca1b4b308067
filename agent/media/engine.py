"""The media engine: RTP/RTCP sockets and one timer around pure media sessions.

``MediaEngine`` owns a range of UDP ports. Each :class:`MediaLeg` is an even RTP port
and the odd RTCP port above it, bound with ``loop.create_datagram_endpoint``, and,
once negotiated, a :class:`~sipstack.media.session.MediaSession`. The engine does the
four adapter jobs of DESIGN.md: feed datagrams in, drain events (to the leg's
callback), transmit what the session queued, and re-arm a single ``loop.call_at``.

One timer for the whole engine, not one per leg: every session's send grid is aligned
to the engine's 20 ms grid, so one wake-up serves every leg (the sessions' own
``get_timer`` still decides; the engine sleeps until the earliest). Ports freed by a
closed leg go to the back of the free list: they are reused, but not at once, so
late packets of an old call do not land in a new one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from sipstack.media.session import (
    Address,
    MediaEvent,
    MediaParams,
    MediaSession,
    accept_answer,
    make_offer,
    negotiate,
)
from sipstack.sdp import SessionDescription

log = logging.getLogger(__name__)

EventCallback = Callable[["MediaLeg", MediaEvent], None]
GRID = 0.02
_EARLY = 0.001  # a deadline within 1 ms is served now (call_at may wake a hair early)


class PortRangeExhausted(RuntimeError):
    """No free even/odd port pair is left in the engine's range."""


class _Socket(asyncio.DatagramProtocol):
    __slots__ = ("leg", "rtcp", "transport")

    def __init__(self, leg: MediaLeg, rtcp: bool) -> None:
        self.leg = leg
        self.rtcp = rtcp
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.leg._received(data, addr, self.rtcp)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: the phone is not listening (yet). Counted, not fatal.
        self.leg.send_errors += 1


class MediaLeg:
    """One RTP/RTCP port pair and, after :meth:`start`, its media session."""

    def __init__(self, engine: MediaEngine, port: int, on_event: EventCallback | None) -> None:
        self.engine = engine
        self.port = port
        self.rtcp_port = port + 1
        self.on_event = on_event
        self.session: MediaSession | None = None
        self.dropped_before_start = 0
        self.send_errors = 0
        self._rtp: _Socket | None = None
        self._rtcp: _Socket | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"MediaLeg(port={self.port}, started={self.session is not None})"

    def start(self, params: MediaParams, **session_options: Any) -> MediaSession:
        """Create the session from a negotiation and put it on the engine's timer.

        ``session_options`` go to :class:`MediaSession` (``inband_dtmf``,
        ``comfort_silence``, ``receive_audio``, ``rng``...).
        """
        if self._closed:
            raise RuntimeError("media leg is closed")
        if self.session is not None:
            self.session.set_params(params)
            return self.session
        loop = self.engine.loop
        now = loop.time()
        options = dict(self.engine.session_defaults)
        options.update(session_options)
        self.session = MediaSession(
            params, now, start=self.engine._grid_point(now),
            clock_offset=time.time() - now, **options,
        )
        self.engine._add(self)
        return self.session

    @property
    def closed(self) -> bool:
        return self._closed

    def send_multicast(self, interface: str, ttl: int = 1) -> None:
        """Make the RTP socket fit to send to an IPv4 multicast group: out of the
        interface with address ``interface``, ``ttl`` hops (1: this LAN segment only),
        looped back to listeners on this host too."""
        transport = self._rtp.transport if self._rtp is not None else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            raise RuntimeError("media leg has no RTP socket")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)

    def close(self) -> None:
        """Stop the session (RTCP BYE goes out) and give the ports back."""
        if self._closed:
            return
        self._closed = True
        session = self.session
        if session is not None:
            session.close(self.engine.loop.time())
            self._flush()
            self._deliver()
        for sock in (self._rtp, self._rtcp):
            if sock is not None and sock.transport is not None:
                sock.transport.close()
        self.engine._release(self)

    # ---- engine side ----------------------------------------------------------------

    def _received(self, data: bytes, addr: Any, rtcp: bool) -> None:
        session = self.session
        if session is None or self._closed:
            self.dropped_before_start += 1
            return
        peer: Address = (addr[0], addr[1]) if len(addr) != 2 else addr
        if rtcp:
            session.receive_rtcp(data, peer, self.engine.loop.time())
        else:
            session.receive_rtp(data, peer, self.engine.loop.time())
        if session.has_events:
            self._deliver()

    def _flush(self) -> None:
        session = self.session
        if session is None:
            return
        out = session.datagrams_to_send()
        if not out:
            return
        rtp = self._rtp.transport if self._rtp is not None else None
        rtcp = self._rtcp.transport if self._rtcp is not None else None
        for data, addr, is_rtcp in out:
            transport = rtcp if is_rtcp else rtp
            if transport is not None and not transport.is_closing():
                transport.sendto(data, addr)

    def _deliver(self) -> None:
        session = self.session
        callback = self.on_event
        if session is None:
            return
        while (event := session.next_event()) is not None:
            if callback is None:
                continue
            try:
                callback(self, event)
            except Exception:  # an app's bug must not stop the media of others
                log.exception("media event callback failed", extra={"port": self.port})


class MediaEngine:
    """RTP port pairs from ``port_range`` (inclusive) on ``bind_host``, one timer.

    ``session_defaults`` are passed to every :class:`MediaSession` the engine starts.
    """

    def __init__(
        self,
        port_range: tuple[int, int] = (16384, 32767),
        bind_host: str = "0.0.0.0",
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        session_defaults: dict[str, Any] | None = None,
    ) -> None:
        lo, hi = port_range
        if not 0 < lo <= hi < 65536:
            raise ValueError(f"bad RTP port range {lo}-{hi}")
        first = lo + (lo & 1)
        ports = range(first, hi, 2)  # port + 1 must be in range too
        if not ports:
            raise ValueError(f"RTP port range {lo}-{hi} holds no even/odd pair")
        self.port_range = (lo, hi)
        self.bind_host = bind_host
        self._loop = loop
        self.session_defaults: dict[str, Any] = dict(session_defaults or {})
        self._free: deque[int] = deque(ports)
        self._legs: dict[int, MediaLeg] = {}
        self._active: list[MediaLeg] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._grid0: float | None = None
        self._compact = False
        self.timer_runs = 0
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def in_use(self) -> int:
        return len(self._legs)

    @property
    def free(self) -> int:
        return len(self._free)

    # ---- legs -----------------------------------------------------------------------

    async def open_leg(self, on_event: EventCallback | None = None) -> MediaLeg:
        """Bind a free even RTP port and RTCP on the port above it.

        Ports another program holds are skipped (and tried again later). Raises
        :class:`PortRangeExhausted` when no pair can be bound.
        """
        if self.closed:
            raise RuntimeError("media engine is closed")
        loop = self.loop
        busy: list[int] = []
        try:
            while self._free:
                port = self._free.popleft()
                leg = MediaLeg(self, port, on_event)
                try:
                    await self._bind(loop, leg)
                except OSError:
                    busy.append(port)
                    continue
                self._legs[port] = leg
                return leg
        finally:
            self._free.extend(busy)
        lo, hi = self.port_range
        raise PortRangeExhausted(
            f"no free RTP/RTCP port pair in {lo}-{hi} on {self.bind_host}: "
            f"{len(self._legs)} in use by media sessions, {len(busy)} held by other programs"
        )

    async def _bind(self, loop: asyncio.AbstractEventLoop, leg: MediaLeg) -> None:
        rtp_t, rtp_p = await loop.create_datagram_endpoint(
            lambda: _Socket(leg, rtcp=False), local_addr=(self.bind_host, leg.port))
        try:
            _rtcp_t, rtcp_p = await loop.create_datagram_endpoint(
                lambda: _Socket(leg, rtcp=True), local_addr=(self.bind_host, leg.rtcp_port))
        except OSError:
            rtp_t.close()
            raise
        leg._rtp, leg._rtcp = rtp_p, rtcp_p

    async def answer(
        self, offer: SessionDescription, local_ip: str,
        on_event: EventCallback | None = None, **session_options: Any,
    ) -> tuple[MediaLeg, SessionDescription]:
        """Open a leg, answer ``offer`` for it and start it: (leg, answer SDP).

        Raises NegotiationError (the leg is closed again) or PortRangeExhausted.
        """
        leg = await self.open_leg(on_event)
        try:
            answer, params = negotiate(offer, local_ip, leg.port)
        except Exception:
            leg.close()
            raise
        leg.start(params, **session_options)
        return leg, answer

    async def offer(
        self, local_ip: str, on_event: EventCallback | None = None,
    ) -> tuple[MediaLeg, SessionDescription]:
        """Open a leg and make an offer for it; start it later with :meth:`start_answered`."""
        leg = await self.open_leg(on_event)
        return leg, make_offer(local_ip, leg.port)

    @staticmethod
    def start_answered(leg: MediaLeg, answer: SessionDescription,
                       **session_options: Any) -> MediaSession:
        return leg.start(accept_answer(answer), **session_options)

    async def close(self) -> None:
        """Close every leg and stop the timer."""
        self.closed = True
        for leg in list(self._legs.values()):
            leg.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await asyncio.sleep(0)  # let the transports finish closing

    # ---- timer ----------------------------------------------------------------------

    def _grid_point(self, now: float) -> float:
        if self._grid0 is None:
            self._grid0 = now
            return now
        k = math.ceil((now - self._grid0) / GRID - 1e-9)
        return self._grid0 + k * GRID

    def _add(self, leg: MediaLeg) -> None:
        self._active.append(leg)
        session = leg.session
        assert session is not None
        deadline = session.get_timer()
        if deadline is not None and deadline < self._timer_at:
            self._arm(deadline)

    def _release(self, leg: MediaLeg) -> None:
        if self._legs.pop(leg.port, None) is not None:
            self._free.append(leg.port)
        if leg.session is not None:
            # Removed from _active by the next timer run: a leg may be closed from an
            # event callback while _on_timer walks the list.
            self._compact = True

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self.timer_runs += 1
        now = self.loop.time()
        horizon = now + _EARLY
        earliest = math.inf
        for leg in self._active:
            session = leg.session
            assert session is not None
            deadline = session.get_timer()
            if deadline is None:
                continue
            if deadline <= horizon:
                try:
                    session.handle_timer(deadline if deadline > now else now)
                except Exception:  # one broken session must not stop the rest
                    log.exception("media session failed; closing it", extra={"port": leg.port})
                    self.loop.call_soon(leg.close)
                    continue
                leg._flush()
                if session.has_events:
                    leg._deliver()
                deadline = session.get_timer()
                if deadline is None:
                    continue
            earliest = min(earliest, deadline)
        if self._compact:
            self._compact = False
            self._active = [leg for leg in self._active if not leg.closed]
        if earliest < math.inf and not self.closed:
            self._arm(earliest)
