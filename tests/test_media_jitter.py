"""The recording jitter buffer: reordering, duplicates, late packets, loss markers, wraps."""

from __future__ import annotations

import random

import pytest

from sipstack.media.jitter import Frame, JitterBuffer, Loss, PushResult

T0 = 1000.0
PT = 0.02  # 20 ms packets of 160 samples


def pkt(n: int, seq0: int = 0, ts0: int = 0) -> tuple[int, int, bytes]:
    return (seq0 + n) & 0xFFFF, (ts0 + 160 * n) & 0xFFFFFFFF, bytes([n & 0xFF]) * 160


def run(order: list[int], *, seq0: int = 0, ts0: int = 0, depth: float = 0.2,
        delay: dict[int, float] | None = None) -> tuple[list[Frame | Loss], JitterBuffer]:
    """Push packets in ``order`` (packet n sent at T0 + n*PT, plus delay); pop as we go."""
    jb = JitterBuffer(depth=depth)
    delay = delay or {}
    out: list[Frame | Loss] = []
    arrivals = sorted((T0 + n * PT + delay.get(n, 0.0), i, n) for i, n in enumerate(order))
    for now, _, n in arrivals:
        out += jb.pop(now)
        jb.push(*pkt(n, seq0, ts0), now)
        out += jb.pop(now)
    return out + jb.flush(), jb


def shape(items: list[Frame | Loss]) -> list[object]:
    """Frames as their packet index (payload byte), losses as ('loss', packets, samples)."""
    return [("loss", i.packets, i.samples) if isinstance(i, Loss) else i.payload[0]
            for i in items]


@pytest.mark.parametrize(
    ("name", "order", "want"),
    [
        ("in order", list(range(6)), [0, 1, 2, 3, 4, 5]),
        ("swap", [0, 2, 1, 3], [0, 1, 2, 3]),
        ("reversed block", [0, 5, 4, 3, 2, 1, 6], [0, 1, 2, 3, 4, 5, 6]),
        ("duplicates", [0, 1, 1, 2, 0, 2, 3], [0, 1, 2, 3]),
        ("one lost", [0, 1, 3, 4], [0, 1, ("loss", 1, 160), 3, 4]),
        ("burst lost", [0, 6, 7], [0, ("loss", 5, 800), 6, 7]),
        ("lost then reordered", [0, 3, 2, 5], [0, ("loss", 1, 160), 2, 3, ("loss", 1, 160), 5]),
    ],
)
def test_table(name: str, order: list[int], want: list[object]) -> None:
    for seq0, ts0 in [(0, 0), (65533, 0), (100, 0xFFFFFFFF - 300), (65534, 0xFFFFFF00)]:
        out, _ = run(order, seq0=seq0, ts0=ts0)
        assert shape(out) == want, (name, seq0, ts0)


def test_in_order_packets_are_released_immediately() -> None:
    jb = JitterBuffer(depth=0.2)
    assert jb.push(*pkt(0), T0) is PushResult.ACCEPTED
    assert jb.pop(T0 + 0.1) == []  # the first packet waits: an earlier one may be late
    jb.push(*pkt(1), T0 + 0.02)
    assert shape(jb.pop(T0 + 0.2)) == [0, 1]
    jb.push(*pkt(3), T0 + 0.21)
    assert jb.pop(T0 + 0.21) == []  # waiting for 2
    jb.push(*pkt(2), T0 + 0.22)
    assert shape(jb.pop(T0 + 0.22)) == [2, 3]


def test_gap_waits_depth_then_loss_and_late_packet_dropped() -> None:
    jb = JitterBuffer(depth=0.2)
    jb.push(*pkt(0), T0)
    assert shape(jb.pop(T0 + 0.2)) == [0]
    jb.push(*pkt(2), T0 + 0.04)
    assert jb.pop(T0 + 0.239) == []
    out = jb.pop(T0 + 0.24)
    assert shape(out) == [("loss", 1, 160), 2]
    loss = out[0]
    assert isinstance(loss, Loss) and loss.first_seq == 1
    assert jb.push(*pkt(1), T0 + 0.3) is PushResult.LATE
    assert jb.push(*pkt(2), T0 + 0.3) is PushResult.LATE
    assert (jb.late, jb.lost, jb.received) == (2, 1, 2)


def test_duplicate_while_held() -> None:
    jb = JitterBuffer()
    jb.push(*pkt(0), T0)
    jb.flush()
    assert jb.push(*pkt(3), T0) is PushResult.ACCEPTED
    assert jb.push(*pkt(3), T0) is PushResult.DUPLICATE
    assert len(jb) == 1 and jb.duplicates == 1


def test_capacity_forces_release() -> None:
    jb = JitterBuffer(depth=10.0, max_packets=5)
    jb.push(*pkt(0), T0)
    jb.flush()
    for n in range(2, 9):
        jb.push(*pkt(n), T0)
    out = jb.pop(T0)
    assert shape(out) == [("loss", 1, 160), 2, 3, 4, 5, 6, 7, 8]


def test_loss_marker_is_capped() -> None:
    jb = JitterBuffer(max_loss_samples=1600)
    jb.push(*pkt(0), T0)
    jb.push(*pkt(2000), T0 + 1)
    out = jb.flush()
    assert shape(out) == [0, ("loss", 1999, 1600), 2000 & 0xFF]


def test_samples_per_packet_from_caller() -> None:
    # 30 ms packets of a codec whose payload size is not the sample count.
    jb = JitterBuffer()
    jb.push(0, 0, b"x" * 20, T0, samples=240)
    jb.push(2, 480, b"y" * 20, T0 + 0.06, samples=240)
    assert shape(jb.flush()) == [ord("x"), ("loss", 1, 240), ord("y")]


def test_heavy_random_reordering_loss_and_duplicates() -> None:
    rng = random.Random(3550)
    for trial in range(20):
        seq0 = rng.choice([0, 65000, 65535, rng.randrange(65536)])
        ts0 = rng.choice([0, 0xFFFFFFFF - 160 * 50, rng.randrange(1 << 32)])
        n = 400
        sent = [i for i in range(n) if i == 0 or rng.random() > 0.1]  # 10% loss, bursts too
        burst = rng.randrange(50, 350)
        sent = [i for i in sent if not burst <= i < burst + 7] or [0]
        order = sent + rng.sample(sent, 40)  # duplicates
        delay = {i: rng.uniform(0, 0.15) for i in range(n)}  # < depth: nothing is late
        out, jb = run(order, seq0=seq0, ts0=ts0, delay=delay)
        frames = [i for i in out if isinstance(i, Frame)]
        assert [f.ext_seq - frames[0].ext_seq for f in frames] == [s - sent[0] for s in sent], trial
        covered = sum(160 for _ in frames) + sum(i.samples for i in out if isinstance(i, Loss))
        assert covered == 160 * (sent[-1] - sent[0] + 1)
        lost = sum(i.packets for i in out if isinstance(i, Loss))
        assert lost == (sent[-1] - sent[0] + 1) - len(sent)
        assert jb.duplicates + jb.late == 40
        assert len(jb) == 0


def test_first_packets_reordered() -> None:
    out, jb = run([2, 0, 1, 3], delay={2: 0.0, 0: 0.05, 1: 0.05})
    assert shape(out) == [0, 1, 2, 3] and jb.late == 0


def test_very_late_packets_are_dropped_not_reordered() -> None:
    # packet 3 arrives 500 ms late, beyond the 200 ms depth: a loss, then dropped as late.
    out, jb = run(list(range(10)), delay={3: 0.5})
    assert shape(out) == [0, 1, 2, ("loss", 1, 160), 4, 5, 6, 7, 8, 9]
    assert jb.late == 1
