"""A sans-I/O RTP session for one call leg: what voice applications attach to.

Bytes and ``now`` go in; datagrams, events and decoded audio come out. Like aioquic,
the session exposes :meth:`MediaSession.get_timer` and :meth:`MediaSession.handle_timer`;
the asyncio adapter (``agent.media.engine``) owns the sockets and one ``call_at``.

Negotiation (RFC 3264): :func:`negotiate` answers an offer with PCMU or PCMA (the
offer's order decides) plus telephone-event with the offer's payload type, ptime 20;
:func:`make_offer` and :func:`accept_answer` cover the case where we offer.

Receive path: RTP is parsed, malformed packets and unexpected payload types are
dropped and counted. Symmetric RTP: until the first valid packet arrives the remote is
the SDP's c=/port; the first valid packet's source is latched (phones behind NAT), a
packet from another address afterwards is dropped and counted unless the latched source
has been silent for more than :data:`RELATCH_AFTER` seconds. Audio goes through the
recording jitter buffer, is decoded to 16-bit little-endian PCM and collected for
:meth:`MediaSession.read_audio`. RFC 4733 events become one :class:`DtmfReceived` per
key press, reported at the end of the event (end bit, or a new event, or
:data:`DTMF_END_TIMEOUT` without packets) with its duration; optional in-band (Goertzel)
detection for phones that send tones in the audio.

Send path: a tick every ``ptime`` on a grid anchored at the start time
(``start + n * ptime``, so the error never accumulates). Each tick takes one frame from
the playout queue (PCM given to :meth:`MediaSession.play`, or G.711 given to
:meth:`MediaSession.play_encoded`), builds RTP and queues it for the (latched) remote.
The timestamp advances by one frame per tick even when nothing is sent; the marker bit
starts each talkspurt; an empty queue sends nothing, or silence when ``comfort_silence``
is set. :meth:`MediaSession.send_dtmf` sends RFC 4733 events (three end packets) in
place of audio, or in-band tones when the peer did not negotiate telephone-event.
RTCP: SR (or RR when we did not send) with SDES CNAME about every 5 s, BYE on close.
"""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..sdp import (
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
    direction,
    media_endpoint,
    rtpmap,
)
from .dtmf import DtmfReceiver, DtmfSender, OutgoingEvent, parse_dtmf_relay
from .g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from .goertzel import COLS, KEYS, ROWS, DtmfDetector
from .jitter import Frame, JitterBuffer, Loss
from .rtcp import (
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from .rtp import RtpParseError, is_rtcp, parse_rtp
from .stats import MediaSummary, ReceiverStats, SenderStats, rtt_from_report

__all__ = [
    "CLOCK_RATE",
    "DTMF_END_TIMEOUT",
    "RELATCH_AFTER",
    "Address",
    "Datagram",
    "DtmfReceived",
    "MediaEvent",
    "MediaParams",
    "MediaSession",
    "NegotiationError",
    "PlayoutDone",
    "RemoteLatched",
    "SessionStats",
    "accept_answer",
    "make_offer",
    "negotiate",
]

CLOCK_RATE = 8000
PTIME_MS = 20
RELATCH_AFTER = 2.0  # seconds of silence from the latched source before another may take over
DTMF_END_TIMEOUT = 0.5  # seconds without a packet of an event before it counts as ended
RTCP_INTERVAL = 5.0
MAX_CATCHUP = 3  # ticks sent late in one go; beyond that ticks are skipped (counted)
DTMF_GAP_TICKS = 3  # silence between two queued outgoing digits (60 ms)
SUPPORTED = ("PCMU", "PCMA")
_STATIC_PT = {"PCMU": 0, "PCMA": 8}
_GRID_EPS = 1e-6  # seconds: a deadline this close counts as reached (float rounding)

Address = tuple[str, int]
# (payload, destination, is_rtcp): what the adapter sends, on the RTP or the RTCP socket.
Datagram = tuple[bytes, Address, bool]

_HDR = struct.Struct("!BBHII")
_COMPLEMENT = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
               "inactive": "inactive"}


class NegotiationError(ValueError):
    """An offer or answer we cannot use (no audio stream, no common codec)."""


# ---------------------------------------------------------------------------- negotiation


@dataclass(frozen=True, slots=True)
class MediaParams:
    """What a negotiation settled: enough to run a :class:`MediaSession`.

    ``direction`` is ours (sendrecv, sendonly, recvonly, inactive). ``remote_rtp`` is
    None when the peer gave no usable address (hold with c=0.0.0.0, port 0).
    """

    codec: str  # "PCMU" or "PCMA"
    payload_type: int
    dtmf_payload_type: int | None
    remote_rtp: Address | None
    remote_rtcp: Address | None
    direction: str = "sendrecv"
    ptime_ms: int = PTIME_MS

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def samples_per_frame(self) -> int:
        return CLOCK_RATE * self.ptime_ms // 1000


def _addrtype(ip: str) -> str:
    return "IP6" if ":" in ip else "IP4"


def _session_skeleton(local_ip: str, session_id: int | None, version: int) -> SessionDescription:
    sid = session_id if session_id is not None else random.getrandbits(62)
    return SessionDescription(
        origin=Origin("edgepbx", str(sid), version, "IN", _addrtype(local_ip), local_ip),
        session_name="edgepbx",
        connection=Connection("IN", _addrtype(local_ip), local_ip),
        times=[Timing(0, 0)],
    )


def _audio_stream(
    local_port: int, codecs: list[tuple[int, str]], dtmf_pt: int | None, ptime_ms: int,
    dirn: str,
) -> MediaDescription:
    formats = [str(pt) for pt, _ in codecs]
    attributes: list[tuple[str, str | None]] = [
        ("rtpmap", f"{pt} {name}/{CLOCK_RATE}") for pt, name in codecs
    ]
    if dtmf_pt is not None:
        formats.append(str(dtmf_pt))
        attributes.append(("rtpmap", f"{dtmf_pt} telephone-event/{CLOCK_RATE}"))
        attributes.append(("fmtp", f"{dtmf_pt} 0-16"))
    attributes.append(("ptime", str(ptime_ms)))
    attributes.append((dirn, None))
    return MediaDescription("audio", local_port, "RTP/AVP", formats, attributes=attributes)


def _rtcp_address(media: MediaDescription, rtp: Address | None) -> Address | None:
    """RFC 3605 a=rtcp, else the RTP port + 1."""
    if rtp is None:
        return None
    value = media.get_attribute("rtcp")
    if value is not None:
        parts = value.split()
        if parts and parts[0].isdigit() and 0 < int(parts[0]) < 65536:
            host = parts[3] if len(parts) == 4 else rtp[0]
            return (host, int(parts[0]))
    return (rtp[0], rtp[1] + 1)


def _pick(media: MediaDescription, codecs: Iterable[str]) -> tuple[int, str, int | None]:
    wanted = {c.upper() for c in codecs}
    mapped = rtpmap(media)
    chosen: tuple[int, str] | None = None
    dtmf: int | None = None
    for pt, (enc, rate, channels) in mapped.items():
        name = enc.upper()
        if chosen is None and name in wanted and rate == CLOCK_RATE and channels in (None, "1"):
            chosen = (pt, name)
        elif dtmf is None and name == "TELEPHONE-EVENT" and rate == CLOCK_RATE:
            dtmf = pt
    if chosen is None:
        offered = ", ".join(f"{e}/{r}" for e, r, _ in mapped.values()) or "none"
        raise NegotiationError(f"no common codec: offered {offered}; we have {sorted(wanted)}")
    return chosen[0], chosen[1], dtmf


def _audio_index(sdp: SessionDescription) -> int:
    for i, m in enumerate(sdp.media):
        if m.media == "audio" and m.port != 0 and m.proto.upper() == "RTP/AVP":
            return i
    raise NegotiationError("no usable audio stream (m=audio ... RTP/AVP with a port)")


def negotiate(
    offer: SessionDescription,
    local_ip: str,
    local_port: int,
    *,
    codecs: Iterable[str] = SUPPORTED,
    session_id: int | None = None,
    ptime_ms: int = PTIME_MS,
) -> tuple[SessionDescription, MediaParams]:
    """Answer ``offer`` (RFC 3264) for a media session on ``local_ip:local_port``.

    The first usable audio stream gets the offer's most preferred of ``codecs`` and the
    offer's telephone-event payload type; every other stream is rejected (port 0).
    Raises :class:`NegotiationError` when there is no audio stream or no common codec.
    """
    index = _audio_index(offer)
    media = offer.media[index]
    pt, name, dtmf = _pick(media, codecs)
    ours = _COMPLEMENT[direction(media, offer)]
    answer = _session_skeleton(local_ip, session_id, 0)
    for i, m in enumerate(offer.media):
        if i == index:
            answer.media.append(_audio_stream(local_port, [(pt, name)], dtmf, ptime_ms, ours))
        else:
            answer.media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
    remote = media_endpoint(offer, index)
    params = MediaParams(name, pt, dtmf, remote, _rtcp_address(media, remote), ours, ptime_ms)
    return answer, params


def make_offer(
    local_ip: str,
    local_port: int,
    *,
    dtmf_payload_type: int = 101,
    session_id: int | None = None,
    ptime_ms: int = PTIME_MS,
    direction: str = "sendrecv",
) -> SessionDescription:
    """An offer of PCMU, PCMA and telephone-event (101 unless told), ptime 20."""
    offer = _session_skeleton(local_ip, session_id, 0)
    offer.media.append(_audio_stream(
        local_port, [(0, "PCMU"), (8, "PCMA")], dtmf_payload_type, ptime_ms, direction,
    ))
    return offer


def accept_answer(
    answer: SessionDescription, *, codecs: Iterable[str] = SUPPORTED, ptime_ms: int = PTIME_MS,
) -> MediaParams:
    """The :class:`MediaParams` for an answer to our :func:`make_offer`."""
    index = _audio_index(answer)
    media = answer.media[index]
    pt, name, dtmf = _pick(media, codecs)
    remote = media_endpoint(answer, index)
    ours = _COMPLEMENT[direction(media, answer)]
    return MediaParams(name, pt, dtmf, remote, _rtcp_address(media, remote), ours, ptime_ms)


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """One key press. ``duration`` in ms (0 when unknown: in-band, SIP INFO)."""

    digit: str
    duration: int
    source: str = "rfc4733"  # or "inband", "info"


@dataclass(frozen=True, slots=True)
class RemoteLatched:
    """Symmetric RTP: media now goes to ``address`` (the source of the peer's RTP)."""

    address: Address
    previous: Address | None


@dataclass(frozen=True, slots=True)
class PlayoutDone:
    """The playout queue ran empty after playing something (a prompt finished)."""


MediaEvent = DtmfReceived | RemoteLatched | PlayoutDone


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Counters and quality figures of one session (see also ``summary`` for the CDR)."""

    packets_sent: int
    octets_sent: int
    dtmf_packets_sent: int
    packets_received: int
    malformed: int
    unexpected_payload_type: int
    wrong_source: int
    relatched: int
    rtcp_received: int
    rtcp_malformed: int
    ticks_skipped: int
    late: int
    duplicates: int
    audio_dropped_bytes: int
    remote: Address | None
    latched: bool
    summary: MediaSummary | None  # RFC 3550 jitter, loss and RTT of the received stream


# ---------------------------------------------------------------------------- session


class _PendingDigit:
    __slots__ = ("digit", "duration", "last_seen", "timestamp")

    def __init__(self, digit: str, timestamp: int, duration: int, now: float) -> None:
        self.digit = digit
        self.timestamp = timestamp
        self.duration = duration
        self.last_seen = now


def _tone_pcm(digit: str, ms: int = 100, gap_ms: int = 60, amplitude: float = 5000.0) -> bytes:
    row = next((i for i, keys in enumerate(KEYS) if digit.upper() in keys), None)
    if row is None or len(digit) != 1:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    f1, f2 = ROWS[row], COLS[KEYS[row].index(digit.upper())]
    n = CLOCK_RATE * ms // 1000
    w1, w2 = 2 * math.pi * f1 / CLOCK_RATE, 2 * math.pi * f2 / CLOCK_RATE
    samples = [int(amplitude * (math.sin(w1 * i) + math.sin(w2 * i))) for i in range(n)]
    samples += [0] * (CLOCK_RATE * gap_ms // 1000)
    return struct.pack(f"<{len(samples)}h", *samples)


class MediaSession:
    """One RTP session (one audio stream, G.711 + telephone-event), sans I/O.

    ``now`` is any monotonic clock in seconds, used consistently; ``clock_offset`` is
    added to it for RTCP's wall-clock (NTP) timestamps (``time.time() - loop.time()``).
    ``start`` anchors the send grid (default ``now``); the adapter may align sessions
    to a shared grid. ``rng`` makes SSRC, initial sequence number and timestamp and the
    RTCP interval reproducible in tests; ``ssrc``, ``initial_seq`` and
    ``initial_timestamp`` pin them.

    ``receive_audio``: decode received audio for :meth:`read_audio` (recording,
    speech); at most ``max_audio_seconds`` are kept unread. ``inband_dtmf``: detect
    DTMF tones in the audio (turned off by itself once RFC 4733 events arrive).
    ``comfort_silence``: send silence frames when the playout queue is empty.
    """

    def __init__(
        self,
        params: MediaParams,
        now: float,
        *,
        start: float | None = None,
        clock_offset: float = 0.0,
        rng: random.Random | None = None,
        ssrc: int | None = None,
        initial_seq: int | None = None,
        initial_timestamp: int | None = None,
        receive_audio: bool = True,
        inband_dtmf: bool = False,
        comfort_silence: bool = False,
        jitter_depth: float = 0.2,
        max_audio_seconds: float = 10.0,
        cname: bytes = b"edgepbx",
    ) -> None:
        rng = rng if rng is not None else random.Random()
        self._rng = rng
        self.clock_offset = clock_offset
        self.ssrc = ssrc if ssrc is not None else rng.getrandbits(32)
        self._seq = (initial_seq if initial_seq is not None else rng.getrandbits(16)) & 0xFFFF
        self._ts = (
            initial_timestamp if initial_timestamp is not None else rng.getrandbits(32)
        ) & 0xFFFFFFFF
        self.cname = cname
        self.receive_audio = receive_audio
        self.comfort_silence = comfort_silence
        self._jitter_depth = jitter_depth
        self._max_audio_bytes = int(max_audio_seconds * CLOCK_RATE) * 2
        self._start = now if start is None else start
        self._n = 0  # index of the next tick on the grid
        self._closed = False
        self._events: deque[MediaEvent] = deque()
        self._out: list[Datagram] = []
        # send side
        self._queue: deque[bytes] = deque()  # encoded audio chunks
        self._queue_off = 0  # read offset into _queue[0]
        self._queued = 0  # encoded octets queued
        self._talkspurt = True  # the next audio packet starts a talkspurt (marker bit)
        self._playing = False  # something was played since the queue was last empty
        self._dtmf_out: deque[str] = deque()
        self._dtmf_packets: list[OutgoingEvent] = []
        self._dtmf_tick = 0  # ticks into the current outgoing event
        self._dtmf_gap = 0  # ticks of gap still to wait before the next digit
        self._dtmf_sender = DtmfSender()
        self._tx = SenderStats(self.ssrc)
        self._sent_since_report = False
        self.dtmf_packets_sent = 0
        self.ticks_skipped = 0
        # receive side
        self._remote: Address | None = None
        self._remote_rtcp: Address | None = None
        self._latched: Address | None = None
        self._rtcp_from: Address | None = None
        self._last_rx = -math.inf
        self._rx_ssrc: int | None = None
        self._rx: ReceiverStats | None = None
        self._jb = JitterBuffer(depth=jitter_depth)
        self._audio = bytearray()
        self._dtmf_rx = DtmfReceiver()
        self._pending: _PendingDigit | None = None
        self._inband = DtmfDetector() if inband_dtmf else None
        self._rtt: float | None = None
        self.packets_received = 0
        self.malformed = 0
        self.unexpected_pt = 0
        self.wrong_source = 0
        self.relatched = 0
        self.rtcp_received = 0
        self.rtcp_malformed = 0
        self.audio_dropped = 0
        self._late_prev = 0
        self._dup_prev = 0
        self._next_rtcp = self._start + RTCP_INTERVAL * rng.uniform(0.25, 0.75)
        self.set_params(params)

    # ---- configuration ---------------------------------------------------------------

    def set_params(self, params: MediaParams) -> None:
        """Apply a (re-)negotiation: codec, payload types, remote, direction.

        A new remote address from the SDP forgets the latched source; sequence numbers
        and timestamps go on (same SSRC).
        """
        self.params = params
        self._pt = params.payload_type
        self._dtmf_pt = params.dtmf_payload_type if params.dtmf_payload_type is not None else -1
        self._frame = params.samples_per_frame
        self._ptime = params.ptime_ms / 1000.0
        if params.codec == "PCMU":
            self._encode, self._decode = ulaw_encode, ulaw_decode
            self._silence = bytes([ULAW_SILENCE]) * self._frame
        elif params.codec == "PCMA":
            self._encode, self._decode = alaw_encode, alaw_decode
            self._silence = bytes([ALAW_SILENCE]) * self._frame
        else:
            raise ValueError(f"unsupported codec {params.codec!r}")
        if params.remote_rtp is None or params.remote_rtp != self._remote:
            self._remote = params.remote_rtp
            self._remote_rtcp = params.remote_rtcp
            self._latched = None
            self._rtcp_from = None
        self._sends = params.sends

    # ---- aioquic-style driving ------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (the next tick), None if closed."""
        if self._closed:
            return None
        return self._start + self._n * self._ptime

    def handle_timer(self, now: float) -> None:
        """Run every tick due at ``now``, release received audio, RTCP, DTMF timeouts."""
        if self._closed:
            return
        start, ptime = self._start, self._ptime
        last_due = math.floor((now - start) / ptime + _GRID_EPS)
        due = last_due - self._n + 1
        if due <= 0:
            return
        if due > MAX_CATCHUP:  # the loop stalled: don't burst, skip (timestamps go on)
            skip = due - MAX_CATCHUP
            self._n += skip
            self._ts = (self._ts + skip * self._frame) & 0xFFFFFFFF
            self.ticks_skipped += skip
            self._talkspurt = True
            due = MAX_CATCHUP
        for _ in range(due):
            self._tick()
        self._release_audio(now)
        pending = self._pending
        if pending is not None and now - pending.last_seen > DTMF_END_TIMEOUT:
            self._emit_pending()
        if now >= self._next_rtcp:
            self._send_rtcp(now, ())
            self._next_rtcp = now + RTCP_INTERVAL * self._rng.uniform(0.5, 1.5)

    def datagrams_to_send(self) -> list[Datagram]:
        """Datagrams queued since the last call: (bytes, address, is_rtcp)."""
        out = self._out
        if out:
            self._out = []
        return out

    def next_event(self) -> MediaEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def close(self, now: float) -> None:
        """Stop: a final RTCP report with BYE is queued; received audio is flushed."""
        if self._closed:
            return
        self._send_rtcp(now, (Bye((self.ssrc,)),))
        self._append_frames(self._jb.flush())
        if self._pending is not None:
            self._emit_pending()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- application API ------------------------------------------------------------

    def play(self, pcm: bytes) -> None:
        """Queue signed 16-bit little-endian 8 kHz PCM for sending."""
        if len(pcm) % 2:
            raise ValueError("16-bit PCM must have an even number of bytes")
        if pcm:
            self._enqueue(self._encode(pcm))

    def play_encoded(self, codes: bytes) -> None:
        """Queue audio already encoded in the session's codec (a G.711 prompt file)."""
        if codes:
            self._enqueue(bytes(codes))

    def clear(self) -> None:
        """Drop queued audio and queued (not yet started) digits (barge-in)."""
        self._queue.clear()
        self._queue_off = 0
        self._queued = 0
        self._dtmf_out.clear()
        self._playing = False

    @property
    def queued_seconds(self) -> float:
        return self._queued / CLOCK_RATE

    def send_dtmf(self, digits: str) -> None:
        """Send digits as RFC 4733 events (100 ms each, three end packets), or as
        in-band tones when telephone-event was not negotiated."""
        for d in digits:
            if self._dtmf_pt < 0:
                self.play(_tone_pcm(d))
            else:
                self._dtmf_sender.packets(d, 0)  # validates the digit now
                self._dtmf_out.append(d)

    def receive_dtmf_info(self, body: bytes) -> None:
        """A SIP INFO ``application/dtmf-relay`` body, so apps see one DTMF stream."""
        digit = parse_dtmf_relay(body)
        if digit is not None:
            self._events.append(DtmfReceived(digit, 0, "info"))

    def read_audio(self) -> bytes:
        """Received audio released so far, in order, gaps filled with silence (PCM)."""
        data = bytes(self._audio)
        self._audio.clear()
        return data

    @property
    def remote(self) -> Address | None:
        """Where RTP goes: the latched source, else the SDP's address."""
        return self._latched if self._latched is not None else self._remote

    def stats(self) -> SessionStats:
        rx = self._rx
        summary = None
        if rx is not None:
            s = rx.summary()
            rtt_ms = None if self._rtt is None else self._rtt * 1000.0
            summary = MediaSummary(s.packets_received, s.packets_expected, s.packets_lost,
                                   s.loss_percent, s.jitter_ms, s.max_jitter_ms, rtt_ms)
        jb = self._jb
        return SessionStats(
            packets_sent=self._tx.packet_count,
            octets_sent=self._tx.octet_count,
            dtmf_packets_sent=self.dtmf_packets_sent,
            packets_received=self.packets_received,
            malformed=self.malformed,
            unexpected_payload_type=self.unexpected_pt,
            wrong_source=self.wrong_source,
            relatched=self.relatched,
            rtcp_received=self.rtcp_received,
            rtcp_malformed=self.rtcp_malformed,
            ticks_skipped=self.ticks_skipped,
            late=self._late_prev + jb.late,
            duplicates=self._dup_prev + jb.duplicates,
            audio_dropped_bytes=self.audio_dropped,
            remote=self.remote,
            latched=self._latched is not None,
            summary=summary,
        )

    # ---- receive --------------------------------------------------------------------

    def receive_rtp(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from the RTP socket (RTCP multiplexed on it is accepted too)."""
        if self._closed:
            return
        if is_rtcp(data):
            self.receive_rtcp(data, addr, now)
            return
        try:
            p = parse_rtp(data)
        except RtpParseError:
            self.malformed += 1
            return
        pt = p.payload_type
        if pt not in (self._pt, self._dtmf_pt):
            self.unexpected_pt += 1
            return
        latched = self._latched
        if latched is None:
            self._latch(addr)
        elif addr != latched:
            if now - self._last_rx <= RELATCH_AFTER:
                self.wrong_source += 1
                return
            self.relatched += 1
            self._latch(addr)
        self._last_rx = now
        self.packets_received += 1
        if p.ssrc != self._rx_ssrc:
            self._new_source(p.ssrc)
        rx = self._rx
        assert rx is not None
        rx.update(p.seq, p.timestamp, now, len(p.payload))
        if pt == self._dtmf_pt:
            self._on_event(p.timestamp, p.payload, now)
        elif self.receive_audio or self._inband is not None:
            self._jb.push(p.seq, p.timestamp, p.payload, now)

    def receive_rtcp(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from the RTCP socket. Accepted from the RTP source's host only
        (from anywhere before RTP arrived)."""
        if self._closed:
            return
        try:
            packets = parse_rtcp(data)
        except RtcpParseError:
            self.rtcp_malformed += 1
            return
        latched = self._latched
        if latched is not None and addr[0] != latched[0]:
            self.wrong_source += 1
            return
        self.rtcp_received += 1
        self._rtcp_from = addr
        epoch = now + self.clock_offset
        for pkt in packets:
            blocks: tuple[ReportBlock, ...] = ()
            if isinstance(pkt, SenderReport):
                if self._rx is not None and pkt.ssrc == self._rx_ssrc:
                    self._rx.on_sender_report(pkt, now)
                blocks = pkt.reports
            elif isinstance(pkt, ReceiverReport):
                blocks = pkt.reports
            for block in blocks:
                if block.ssrc == self.ssrc:
                    rtt = rtt_from_report(block, epoch)
                    if rtt is not None:
                        self._rtt = rtt

    def _latch(self, addr: Address) -> None:
        previous = self.remote
        self._latched = addr
        if addr != previous:
            self._events.append(RemoteLatched(addr, previous))

    def _new_source(self, ssrc: int) -> None:
        if self._rx_ssrc is not None:  # the peer restarted its stream: keep what we had
            self._append_frames(self._jb.flush())
            self._late_prev += self._jb.late
            self._dup_prev += self._jb.duplicates
            self._jb = JitterBuffer(depth=self._jitter_depth)
        self._rx_ssrc = ssrc
        self._rx = ReceiverStats(ssrc, CLOCK_RATE)

    def _on_event(self, timestamp: int, payload: bytes, now: float) -> None:
        self._inband = None  # the phone sends RFC 4733: don't also listen for tones
        found = self._dtmf_rx.feed(timestamp, payload, now)
        end = len(payload) >= 4 and payload[1] & 0x80
        if found is not None:
            if self._pending is not None:
                self._emit_pending()
            if end:
                self._events.append(DtmfReceived(found.digit, found.duration // 8))
            else:
                self._pending = _PendingDigit(found.digit, timestamp, found.duration, now)
            return
        pending = self._pending
        if pending is not None and timestamp == pending.timestamp and len(payload) >= 4:
            pending.duration = max(pending.duration, (payload[2] << 8) | payload[3])
            pending.last_seen = now
            if end:
                self._emit_pending()

    def _emit_pending(self) -> None:
        p = self._pending
        if p is not None:
            self._events.append(DtmfReceived(p.digit, p.duration * 1000 // CLOCK_RATE))
            self._pending = None

    def _release_audio(self, now: float) -> None:
        if len(self._jb):
            self._append_frames(self._jb.pop(now))

    def _append_frames(self, items: list[Frame | Loss]) -> None:
        if not items:
            return
        decode = self._decode
        start = len(self._audio)
        audio = self._audio
        for item in items:
            if isinstance(item, Frame):
                audio += decode(item.payload)
            else:
                audio += bytes(2 * item.samples)
        detector = self._inband
        if detector is not None:
            for digit in detector.feed_pcm(bytes(audio[start:])):
                self._events.append(DtmfReceived(digit, 0, "inband"))
        if not self.receive_audio:
            del audio[start:]
            return
        excess = len(audio) - self._max_audio_bytes
        if excess > 0:
            del audio[:excess]
            self.audio_dropped += excess

    # ---- send -----------------------------------------------------------------------

    def _enqueue(self, codes: bytes) -> None:
        self._queue.append(codes)
        self._queued += len(codes)
        self._playing = True

    def _take_frame(self) -> bytes:
        need = self._frame
        queue = self._queue
        head = queue[0]
        off = self._queue_off
        if len(head) - off >= need:
            frame = head[off : off + need]
            off += need
            if off == len(head):
                queue.popleft()
                off = 0
            self._queue_off = off
            self._queued -= need
            return frame
        parts = bytearray()
        while queue and len(parts) < need:
            head = queue[0]
            piece = head[off : off + need - len(parts)]
            parts += piece
            off += len(piece)
            if off == len(head):
                queue.popleft()
                off = 0
        self._queue_off = off
        self._queued -= len(parts)
        if len(parts) < need:  # the end of the audio: pad the last frame with silence
            parts += self._silence[len(parts):]
        return bytes(parts)

    def _tick(self) -> None:
        ts = self._ts
        if self._dtmf_packets or (self._dtmf_out and not self._dtmf_gap):
            self._tick_dtmf(ts)
        elif self._queued:
            if self._dtmf_gap:
                self._dtmf_gap -= 1
            if self._send(self._pt, self._take_frame(), ts, self._talkspurt):
                self._talkspurt = False
        else:
            if self._dtmf_gap:
                self._dtmf_gap -= 1
            if self._playing:
                self._playing = False
                self._events.append(PlayoutDone())
            if self.comfort_silence:
                if self._send(self._pt, self._silence, ts, self._talkspurt):
                    self._talkspurt = False
            else:
                self._talkspurt = True
        self._n += 1
        self._ts = (ts + self._frame) & 0xFFFFFFFF

    def _tick_dtmf(self, ts: int) -> None:
        if not self._dtmf_packets:
            digit = self._dtmf_out.popleft()
            self._dtmf_packets = self._dtmf_sender.packets(digit, ts)
            self._dtmf_tick = 0
        packets = self._dtmf_packets
        frame = self._frame
        tick = self._dtmf_tick
        while packets and packets[0].offset // frame <= tick:
            p = packets.pop(0)
            self._send(self._dtmf_pt, p.payload, p.timestamp, p.marker)
            self.dtmf_packets_sent += 1
        self._dtmf_tick = tick + 1
        if not packets:
            self._dtmf_gap = DTMF_GAP_TICKS
            self._talkspurt = True

    def _send(self, pt: int, payload: bytes, ts: int, marker: bool) -> bool:
        remote = self._latched if self._latched is not None else self._remote
        if remote is None or not self._sends:
            return False  # on hold / no address: time goes on, nothing leaves (seq stays)
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        b1 = pt | 0x80 if marker else pt
        self._out.append((_HDR.pack(0x80, b1, seq, ts, self.ssrc) + payload, remote, False))
        self._tx.on_sent(ts, len(payload))
        self._sent_since_report = True
        return True

    def _rtcp_destination(self) -> Address | None:
        if self._rtcp_from is not None:
            return self._rtcp_from
        if self._latched is not None:
            return (self._latched[0], self._latched[1] + 1)
        return self._remote_rtcp

    def _send_rtcp(self, now: float, extra: tuple[RtcpPacket, ...]) -> None:
        dest = self._rtcp_destination()
        if dest is None:
            return
        blocks: tuple[ReportBlock, ...] = ()
        if self._rx is not None and self._rx.received:
            blocks = (self._rx.report_block(now),)
        report: RtcpPacket
        if self._sent_since_report:
            # RTP timestamp of this instant: the next tick's minus the time to it.
            to_next = self._start + self._n * self._ptime - now
            rtp_now = (self._ts - round(to_next * CLOCK_RATE)) & 0xFFFFFFFF
            report = self._tx.sender_report(now + self.clock_offset, rtp_now, blocks)
        else:
            report = ReceiverReport(self.ssrc, blocks)
        self._sent_since_report = False
        sdes = SourceDescription((SdesChunk(self.ssrc, ((SDES_CNAME, self.cname),)),))
        self._out.append((serialize_rtcp([report, sdes, *extra]), dest, True))

