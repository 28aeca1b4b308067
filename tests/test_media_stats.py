"""RFC 3550 receiver statistics: loss (A.3), jitter (A.8), RTT from LSR/DLSR."""

from __future__ import annotations

import pytest

from sipstack.media.rtcp import (
    ReportBlock,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    serialize_rtcp,
)
from sipstack.media.stats import ReceiverStats, SenderStats, rtt_from_report

T0 = 1_700_000_000.0


def feed(stats: ReceiverStats, seqs: list[int], *, start_ts: int = 0, first_seq: int = 0,
         late: dict[int, float] | None = None) -> None:
    """Packets of 20 ms (160 samples); RTP ts and arrival follow the seq; late adds delay."""
    late = late or {}
    for s in seqs:
        n = (s - first_seq) & 0xFFFF
        stats.update(s & 0xFFFF, (start_ts + 160 * n) & 0xFFFFFFFF, T0 + 0.02 * n + late.get(n, 0))


@pytest.mark.parametrize(
    ("first", "seqs", "expected", "lost", "fraction", "highest"),
    [
        (0, list(range(100)), 100, 0, 0, 99),
        (0, [s for s in range(100) if not 10 <= s < 20], 100, 10, 25, 99),
        (65500, [(65500 + i) & 0xFFFF for i in range(100)], 100, 0, 0, 65500 + 99),
        (65530, [65530, 65531, 65535, 2, 3], 10, 5, 128, 65536 + 3),
        (5, [5, 6, 6, 7, 7, 8], 4, -2, 0, 8),  # duplicates: negative cumulative loss
        (5, [5, 7, 6, 8], 4, 0, 0, 8),  # reordering is not loss
    ],
)
def test_loss_table(first: int, seqs: list[int], expected: int, lost: int, fraction: int,
                    highest: int) -> None:
    st = ReceiverStats(ssrc=1)
    feed(st, seqs, first_seq=first)
    assert st.expected == expected
    assert st.lost == lost
    block = st.report_block(T0 + 10)
    assert block.cumulative_lost == lost
    assert block.fraction_lost == fraction
    assert block.highest_seq == highest


def test_fraction_lost_is_per_interval() -> None:
    st = ReceiverStats(ssrc=1)
    feed(st, [s for s in range(50) if s not in (3, 4, 5, 6, 7)])
    assert st.report_block(T0).fraction_lost == (5 * 256) // 50
    feed(st, list(range(50, 100)))
    b = st.report_block(T0)
    assert b.fraction_lost == 0
    assert b.cumulative_lost == 5
    # an interval with nothing received reports no fraction (expected_interval 0)
    assert st.report_block(T0).fraction_lost == 0


def test_cumulative_loss_clamps_to_24_bits() -> None:
    st = ReceiverStats(ssrc=1)
    st.update(0, 0, T0)
    st.cycles = 1 << 30  # as if billions of packets were expected
    assert st.lost == 0x7FFFFF


def test_jitter_constant_transit_is_zero_even_across_ts_wrap() -> None:
    st = ReceiverStats(ssrc=1)
    feed(st, list(range(200)), start_ts=0xFFFFFFFF - 160 * 100)
    assert st.jitter == pytest.approx(0.0, abs=1e-3)


def test_jitter_alternating_delay_converges_per_a8() -> None:
    st = ReceiverStats(ssrc=1, clock_rate=8000)
    late = {n: 0.010 for n in range(1, 40, 2)}  # every other packet 10 ms late: |D| = 80
    feed(st, list(range(40)), late=late)
    want = 80.0 * (1 - (15 / 16) ** 39)  # J += (|D| - J) / 16, 39 times
    assert st.jitter == pytest.approx(want, abs=0.01)  # epoch floats: ~0.002 units of noise
    s = st.summary()
    assert s.jitter_ms == pytest.approx(want / 8, abs=0.01)
    assert s.max_jitter_ms >= s.jitter_ms
    assert st.report_block(T0).jitter == int(want)


def test_probation_counts_from_the_second_sequential_packet() -> None:
    st = ReceiverStats(ssrc=1, min_sequential=2)
    assert not st.update(100, 0, T0)
    assert st.update(101, 160, T0 + 0.02)
    assert st.received == 1 and st.base_seq == 101
    assert st.update(102, 320, T0 + 0.04)
    assert st.expected == 2


def test_big_jump_is_a_restart_after_two_sequential() -> None:
    st = ReceiverStats(ssrc=1)
    feed(st, list(range(10)))
    assert not st.update(20000, 0, T0 + 1)
    assert st.received == 10
    assert st.update(20001, 160, T0 + 1.02)  # the source restarted: statistics restart
    assert st.base_seq == 20001 and st.received == 1 and st.lost == 0


def test_summary_loss_percent() -> None:
    st = ReceiverStats(ssrc=1)
    feed(st, [s for s in range(200) if s % 10 != 3])
    s = st.summary()
    assert (s.packets_expected, s.packets_received, s.packets_lost) == (200, 180, 20)
    assert s.loss_percent == pytest.approx(10.0)
    assert s.rtt_ms is None
    assert ReceiverStats(ssrc=2).summary().loss_percent == 0.0


def test_rtt_from_lsr_dlsr_end_to_end() -> None:
    # A sends an SR at T0; B gets it 50 ms later; B reports 200 ms after that; A gets the
    # report 50 ms later. RTT = 100 ms, whatever B's clock says.
    a = SenderStats(ssrc=0xA)
    a.on_sent(0, 160)
    sr = a.sender_report(T0, rtp_timestamp=0)
    b = ReceiverStats(ssrc=0xA)
    b.update(0, 0, T0 + 0.05, size=160)
    (sr_parsed,) = parse_rtcp(serialize_rtcp([sr]))
    assert sr_parsed == sr
    b.on_sender_report(sr, now=T0 + 0.05)
    block = b.report_block(T0 + 0.25)
    assert block.dlsr == int(0.2 * 65536)
    rtt = rtt_from_report(block, T0 + 0.30)
    assert rtt == pytest.approx(0.10, abs=2 / 65536)
    assert b.on_report_block(block, T0 + 0.30) == rtt
    assert b.summary().rtt_ms == pytest.approx(100.0, abs=0.05)


def test_rtt_unknown_without_lsr_or_when_negative() -> None:
    assert rtt_from_report(ReportBlock(1, 0, 0, 0, 0, lsr=0, dlsr=0), T0) is None
    future = ntp_middle32(ntp_from_unix(T0 + 5))
    assert rtt_from_report(ReportBlock(1, 0, 0, 0, 0, lsr=future, dlsr=0), T0) is None


def test_sender_report_counts() -> None:
    s = SenderStats(ssrc=3)
    for i in range(50):
        s.on_sent(160 * i, 160)
    sr = s.sender_report(T0, 8000)
    assert (sr.packet_count, sr.octet_count, sr.rtp_timestamp) == (50, 8000, 8000)
