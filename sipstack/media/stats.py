"""Receiver statistics (RFC 3550 A.1, A.3, A.8) and round-trip time from LSR/DLSR.

Fed with (sequence number, RTP timestamp, arrival time) per packet; produces RTCP
report blocks and a :class:`MediaSummary` for the call record. Pure: ``now`` and
``arrival`` are passed in (seconds, any monotonic or epoch base, used consistently).
"""

from __future__ import annotations

from dataclasses import dataclass

from .rtcp import ReportBlock, SenderReport, ntp_from_unix, ntp_middle32
from .rtp import SEQ_MOD

__all__ = ["MediaSummary", "ReceiverStats", "SenderStats", "rtt_from_report"]

MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass(frozen=True, slots=True)
class MediaSummary:
    """What the call record keeps about one received stream."""

    packets_received: int
    packets_expected: int
    packets_lost: int
    loss_percent: float
    jitter_ms: float
    max_jitter_ms: float
    rtt_ms: float | None


class ReceiverStats:
    """Statistics for one received SSRC.

    ``min_sequential`` is A.1's probation: how many in-sequence packets a new source
    needs before it counts (0 or 1: accept from the first packet).
    """

    __slots__ = (
        "_bad_seq",
        "_expected_prior",
        "_jitter",
        "_last_sr",
        "_last_sr_at",
        "_max_jitter",
        "_probation",
        "_received_prior",
        "_started",
        "_transit",
        "base_seq",
        "bytes_received",
        "clock_rate",
        "cycles",
        "max_seq",
        "received",
        "rtt",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int = 8000, min_sequential: int = 0) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.bytes_received = 0
        self._bad_seq = SEQ_MOD + 1
        self._received_prior = 0
        self._expected_prior = 0
        self._probation = max(0, min_sequential)
        self._transit: float | None = None
        self._jitter = 0.0
        self._max_jitter = 0.0
        self._last_sr = 0
        self._last_sr_at = 0.0
        self.rtt: float | None = None
        self._started = False

    # ---- A.1: sequence number validation ------------------------------------------

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def _update_seq(self, seq: int) -> bool:
        if not self._started:
            self._started = True
            self._init_seq(seq)
            if self._probation <= 1:
                self._probation = 0
                return True
            self.max_seq = (seq - 1) & 0xFFFF
        udelta = (seq - self.max_seq) & 0xFFFF
        if self._probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self.max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    return True
            else:
                self._probation -= 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                self._init_seq(seq)  # two sequential packets: the source restarted
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted
        return True

    # ---- per packet -----------------------------------------------------------------

    def update(self, seq: int, rtp_timestamp: int, arrival: float, size: int = 0) -> bool:
        """Account one packet; returns False if it was not counted (probation, jump)."""
        if not self._update_seq(seq):
            return False
        self.received += 1
        self.bytes_received += size
        # A.8: transit time in timestamp units; only differences matter.
        transit = arrival * self.clock_rate - rtp_timestamp
        prev = self._transit
        self._transit = transit
        if prev is not None:
            d = transit - prev
            # an RTP timestamp wrap shows up as a jump of 2**32 units
            if d > 2147483648.0:
                d -= 4294967296.0
            elif d < -2147483648.0:
                d += 4294967296.0
            if d < 0:
                d = -d
            self._jitter += (d - self._jitter) / 16.0
            self._max_jitter = max(self._max_jitter, self._jitter)
        return True

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        """Remember the peer's last SR for LSR/DLSR in our next report block."""
        self._last_sr = ntp_middle32(sr.ntp_timestamp)
        self._last_sr_at = now

    def on_report_block(self, block: ReportBlock, now: float) -> float | None:
        """A peer's report block about OUR stream: update and return the RTT (seconds)."""
        rtt = rtt_from_report(block, now)
        if rtt is not None:
            self.rtt = rtt
        return rtt

    # ---- A.3: derived figures -------------------------------------------------------

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if not self.received:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative lost packets (negative with duplicates), clamped to signed 24 bits."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    @property
    def jitter(self) -> float:
        """Interarrival jitter in timestamp units."""
        return self._jitter

    def report_block(self, now: float) -> ReportBlock:
        """The report block for our next SR/RR; starts a new fraction-lost interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.received - self._received_prior
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._last_sr:
            dlsr = max(0, int((now - self._last_sr_at) * 65536)) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            cumulative_lost=self.lost,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=int(self._jitter),
            lsr=self._last_sr,
            dlsr=dlsr,
        )

    def summary(self) -> MediaSummary:
        expected = self.expected
        lost = max(0, expected - self.received)
        ms = 1000.0 / self.clock_rate
        return MediaSummary(
            packets_received=self.received,
            packets_expected=expected,
            packets_lost=lost,
            loss_percent=(100.0 * lost / expected) if expected else 0.0,
            jitter_ms=self._jitter * ms,
            max_jitter_ms=self._max_jitter * ms,
            rtt_ms=None if self.rtt is None else self.rtt * 1000.0,
        )


def rtt_from_report(block: ReportBlock, now: float) -> float | None:
    """Round-trip time in seconds from a report block about our stream (RFC 3550 6.4.1).

    ``now`` is the Unix epoch time the report arrived. None when the peer has not
    seen an SR from us yet (LSR = 0).
    """
    if block.lsr == 0:
        return None
    arrival = ntp_middle32(ntp_from_unix(now))
    rtt = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:  # negative: clocks or the report are bogus
        return None
    return rtt / 65536.0


class SenderStats:
    """Counters for our own stream, for the sender info of an SR."""

    __slots__ = ("last_rtp_timestamp", "octet_count", "packet_count", "ssrc")

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.packet_count = 0
        self.octet_count = 0
        self.last_rtp_timestamp = 0

    def on_sent(self, rtp_timestamp: int, payload_len: int) -> None:
        self.packet_count += 1
        self.octet_count += payload_len
        self.last_rtp_timestamp = rtp_timestamp

    def sender_report(
        self, now: float, rtp_timestamp: int, reports: tuple[ReportBlock, ...] = ()
    ) -> SenderReport:
        """An SR for wall-clock ``now`` (epoch) with the RTP timestamp of that instant."""
        return SenderReport(
            self.ssrc,
            ntp_from_unix(now),
            rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
            reports,
        )
