"""Run edgepbx's media test vectors against aiortp (DESIGN.md: "a library may replace
hand-written code here only if it passes the same tests").

    python -m venv /tmp/aiortp-venv && /tmp/aiortp-venv/bin/pip install aiortp
    /tmp/aiortp-venv/bin/python bench/media/aiortp_compare.py

aiortp is not a dependency of edgepbx; run this from a scratch venv that has it.
Prints one line per vector: ours / aiortp pass counts, then a parse+serialize timing.
"""

from __future__ import annotations

import random
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

import aiortp
from aiortp.dtmf import DtmfReceiver as ARDtmf
from aiortp.jitterbuffer import JitterBuffer as ARJitter
from aiortp.packet import RtpPacket as ARPacket
from mediakit import dtmf_packets, dtmf_received  # tests/mediakit.py

from sipstack.media.jitter import Frame, JitterBuffer
from sipstack.media.rtp import RtpPacket, RtpParseError, parse_rtp

RESULTS: list[tuple[str, str, str]] = []


def report(name: str, ours: str, theirs: str) -> None:
    RESULTS.append((name, ours, theirs))
    print(f"{name:<44} ours: {ours:<14} aiortp: {theirs}")


# ---- RTP round trip ------------------------------------------------------------------

SAMPLE = bytes.fromhex("80801234deadbeef11223344") + b"\xff" * 160
RICH = (bytes.fromhex("b2" "08" "0001" "00000002" "00000003")
        + bytes.fromhex("0000000a" "0000000b") + bytes.fromhex("bede0001" "01020304")
        + b"abc" + b"\x00\x00\x03")


def ar_roundtrip(raw: bytes) -> bool:
    try:
        p = ARPacket.parse(raw)
        again = p.serialize()
    except Exception:  # noqa: BLE001 - any failure is a failed vector
        return False
    pad = p.padding_size
    return len(again) == len(raw) and again[: len(raw) - pad] == raw[: len(raw) - pad]


def our_roundtrip(raw: bytes) -> bool:
    try:
        p = parse_rtp(raw)
    except RtpParseError:
        return False
    again = p.to_bytes()
    return len(again) == len(raw) and again[: len(raw) - p.padding] == raw[: len(raw) - p.padding]


def random_packets(n: int) -> list[bytes]:
    rng = random.Random(3550)
    out = []
    for _ in range(n):
        ext = rng.random() < 0.3
        out.append(RtpPacket(
            rng.randrange(128), rng.randrange(65536), rng.randrange(1 << 32),
            rng.randrange(1 << 32), rng.randbytes(rng.randrange(200)),
            marker=rng.random() < 0.5,
            csrc=tuple(rng.randrange(1 << 32) for _ in range(rng.randrange(4))),
            ext_profile=rng.randrange(65536) if ext else None,
            ext_data=rng.randbytes(4 * rng.randrange(4)) if ext else b"",
            padding=rng.choice([0, 0, 1, 4, 17]),
        ).to_bytes())
    return out


def rtp_vectors() -> None:
    for name, raw in (("rtp: G.711 sample packet", SAMPLE), ("rtp: CSRC+ext+padding", RICH)):
        report(name, str(our_roundtrip(raw)), str(ar_roundtrip(raw)))
    pkts = random_packets(2000)
    report("rtp: 2000 random packets round trip",
           f"{sum(map(our_roundtrip, pkts))}/2000", f"{sum(map(ar_roundtrip, pkts))}/2000")
    no_ext = [p for p in pkts if not p[0] & 0x10]
    report(f"rtp: the {len(no_ext)} without header extension",
           f"{sum(map(our_roundtrip, no_ext))}/{len(no_ext)}",
           f"{sum(map(ar_roundtrip, no_ext))}/{len(no_ext)}")
    malformed = [b"", bytes(11), bytes.fromhex("40000000000000000000000000"),
                 bytes.fromhex("820000000000000000000000") + bytes(4),
                 bytes.fromhex("900000000000000000000000") + b"\xbe\xde",
                 bytes.fromhex("900000000000000000000000") + bytes.fromhex("bede0002") + bytes(4),
                 bytes.fromhex("a00000000000000000000000") + b"\x00",
                 bytes.fromhex("a00000000000000000000000") + b"\x05"]

    def ar_rejects(raw: bytes) -> bool:
        try:
            ARPacket.parse(raw)
        except ValueError:
            return True
        return False

    def our_rejects(raw: bytes) -> bool:
        try:
            parse_rtp(raw)
        except RtpParseError:
            return True
        return False

    report("rtp: malformed rejected", f"{sum(map(our_rejects, malformed))}/{len(malformed)}",
           f"{sum(map(ar_rejects, malformed))}/{len(malformed)}")
    t_ours = min(timeit.repeat(lambda: parse_rtp(SAMPLE).to_bytes(), number=20000, repeat=3))
    t_ar = min(timeit.repeat(lambda: ARPacket.parse(SAMPLE).serialize(), number=20000, repeat=3))
    report("rtp: parse+serialize, us/packet", f"{t_ours / 20000 * 1e6:.2f}",
           f"{t_ar / 20000 * 1e6:.2f}")


# ---- RFC 4733 de-duplication ---------------------------------------------------------


def ar_dtmf(stream: list[tuple[int, bytes]]) -> str:
    got: list[str] = []
    rx = ARDtmf(lambda digit, duration: got.append(digit))
    for seq, (ts, pl) in enumerate(stream):
        rx.handle_packet(ARPacket(payload_type=101, sequence_number=seq & 0xFFFF,
                                  timestamp=ts, payload=pl))
    return "".join(got)


def dtmf_vectors() -> None:
    cases = {
        "clean": lambda s: s,
        "start packets lost": lambda s: [p for i, p in enumerate(s) if i % 7 not in (0, 1)],
        "only the end packets": lambda s: [p for i, p in enumerate(s) if i % 7 >= 4],
        "end packets all lost": lambda s: [p for i, p in enumerate(s) if i % 7 < 4],
        "every packet twice": lambda s: [p for p in s for _ in (0, 1)],
        "late packet of the previous digit": lambda s: [*s[:9], s[5], *s[9:]],
        "reordered inside each digit": lambda s: [
            p for k in range(0, len(s), 7) for p in reversed(s[k : k + 7])],
    }
    for name, mangle in cases.items():
        stream = mangle(dtmf_packets("1955#"))
        report(f"dtmf: {name}", str(dtmf_received(stream) == "1955#"),
               f"{ar_dtmf(stream) == '1955#'} ({ar_dtmf(stream)})")
    wrap = dtmf_packets("7777", ts0=0xFFFFFFFF - 2000)
    report("dtmf: same digit 4x across ts wrap", str(dtmf_received(wrap) == "7777"),
           str(ar_dtmf(wrap) == "7777"))
    rng = random.Random(4733)
    digits = "0123456789*#ABCD" * 3
    ok_ours = ok_ar = 0
    for _ in range(30):
        stream = dtmf_packets(digits)
        mangled = []
        for k in range(0, len(stream), 7):
            group = [p for p in stream[k : k + 7] if rng.random() > 0.4] or [stream[k + 6]]
            group += rng.sample(group, min(2, len(group)))
            rng.shuffle(group)
            mangled += group
        ok_ours += dtmf_received(mangled) == digits
        ok_ar += ar_dtmf(mangled) == digits
    report("dtmf: 30 random loss/dup/reorder runs", f"{ok_ours}/30", f"{ok_ar}/30")


# ---- jitter buffer ---------------------------------------------------------------------


def pkt(n: int, seq0: int, ts0: int) -> tuple[int, int, bytes]:
    return (seq0 + n) & 0xFFFF, (ts0 + 160 * n) & 0xFFFFFFFF, bytes([n & 0xFF]) * 160


def ours_jitter(order: list[int], seq0: int, ts0: int) -> list[int]:
    jb = JitterBuffer(depth=0.2)
    out: list[int] = []
    for k, n in enumerate(order):
        jb.push(*pkt(n, seq0, ts0), 1000.0 + 0.02 * k)
        out += [f.payload[0] for f in jb.pop(1000.0 + 0.02 * k) if isinstance(f, Frame)]
    return out + [f.payload[0] for f in jb.flush() if isinstance(f, Frame)]


def ar_jitter(order: list[int], seq0: int, ts0: int, skip: bool = True) -> list[int]:
    jb = ARJitter(capacity=128, skip_audio_gaps=skip)
    out: list[int] = []
    for n in order:
        seq, ts, payload = pkt(n, seq0, ts0)
        _, frame = jb.add(ARPacket(payload_type=0, sequence_number=seq, timestamp=ts,
                                   payload=payload))
        while frame is not None:  # drain everything that became complete
            out.append(frame.data[0])
            frame = jb._remove_frame(seq)
    return out  # aiortp has no flush: the last frame waits for a next timestamp


def jitter_vectors() -> None:
    table = {
        "in order": (list(range(6)), [0, 1, 2, 3, 4, 5]),
        "swap": ([0, 2, 1, 3], [0, 1, 2, 3]),
        "reversed block": ([0, 5, 4, 3, 2, 1, 6], [0, 1, 2, 3, 4, 5, 6]),
        "duplicates": ([0, 1, 1, 2, 0, 2, 3], [0, 1, 2, 3]),
        "one lost": ([0, 1, 3, 4], [0, 1, 3, 4]),
    }
    starts = [(0, 0), (65533, 0), (100, 0xFFFFFFFF - 300), (65534, 0xFFFFFF00)]
    for name, (order, want) in table.items():
        ours = sum(ours_jitter(order, s, t) == want for s, t in starts)
        theirs = sum(ar_jitter(order, s, t) == want for s, t in starts)
        # aiortp never releases the newest frame (no flush, no time-out): compare it fairly too
        but_last = sum(ar_jitter(order, s, t) == want[:-1] for s, t in starts)
        waiting = sum(ar_jitter(order, s, t, skip=False) == want[:-1] for s, t in starts)
        report(f"jitter: {name} (4 wrap offsets)", f"{ours}/4",
               f"{theirs}/4 exact, {but_last}/4 all but the last; "
               f"without skip_audio_gaps {waiting}/4")
    rng = random.Random(3550)
    ok_ours = ok_ar = ok_wait = 0
    for _ in range(20):
        seq0, ts0 = rng.choice([0, 65000, 65535]), rng.choice([0, 0xFFFFFFFF - 8000])
        order = list(range(400))
        for i in range(0, 400, 10):  # heavy local reordering, no loss
            block = order[i : i + 10]
            rng.shuffle(block)
            order[i : i + 10] = block
        ok_ours += ours_jitter(order, seq0, ts0) == [n & 0xFF for n in range(400)]
        ar = ar_jitter(order, seq0, ts0)
        ok_ar += ar == [n & 0xFF for n in range(len(ar))] and len(ar) >= 390
        wait = ar_jitter(order, seq0, ts0, skip=False)
        ok_wait += wait == [n & 0xFF for n in range(len(wait))] and len(wait) >= 390
    report("jitter: 20 runs, 400 packets shuffled in 10s", f"{ok_ours}/20",
           f"{ok_ar}/20; without skip_audio_gaps {ok_wait}/20")


def main() -> None:
    print(f"aiortp {aiortp.__version__}, Python {sys.version.split()[0]}")
    rtp_vectors()
    dtmf_vectors()
    jitter_vectors()


if __name__ == "__main__":
    main()
