"""RTP parse/serialize round trips, malformed input, and wrap-safe arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.media.rtp import (
    RtpPacket,
    RtpParseError,
    SeqExtender,
    extend_seq,
    is_rtcp,
    parse_rtp,
    seq_diff,
    seq_lt,
    ts_diff,
)

FAST = settings(max_examples=400, deadline=None)

# A G.711 packet captured from a phone: V=2, M=1, PT=0, seq=0x1234, ts=0xDEADBEEF.
SAMPLE = bytes.fromhex("80801234deadbeef11223344") + b"\xff" * 160


def test_known_packet() -> None:
    p = parse_rtp(SAMPLE)
    assert (p.payload_type, p.marker, p.seq, p.timestamp, p.ssrc) == (
        0, True, 0x1234, 0xDEADBEEF, 0x11223344,
    )
    assert p.payload == b"\xff" * 160
    assert p.csrc == () and p.ext_profile is None and p.padding == 0
    assert p.to_bytes() == SAMPLE


def test_csrc_extension_padding() -> None:
    raw = (
        bytes.fromhex("b2" "08" "0001" "00000002" "00000003")  # V=2 P X CC=2, PT 8
        + bytes.fromhex("0000000a" "0000000b")  # CSRCs
        + bytes.fromhex("bede0001" "01020304")  # one-word extension
        + b"abc"
        + b"\x00\x00\x03"  # three padding octets
    )
    p = parse_rtp(raw)
    assert p.csrc == (10, 11)
    assert p.ext_profile == 0xBEDE and p.ext_data == b"\x01\x02\x03\x04"
    assert p.payload == b"abc" and p.padding == 3 and p.payload_type == 8
    assert p.to_bytes() == raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (bytes(11), "short"),
        (bytes.fromhex("40000000000000000000000000"), "version 1"),
        (bytes.fromhex("820000000000000000000000") + bytes(4), "CSRC count 2, one present"),
        (bytes.fromhex("900000000000000000000000") + b"\xbe\xde", "truncated ext header"),
        (bytes.fromhex("900000000000000000000000") + bytes.fromhex("bede0002") + bytes(4),
         "ext longer than packet"),
        (bytes.fromhex("a00000000000000000000000") + b"\x00", "padding length 0"),
        (bytes.fromhex("a00000000000000000000000") + b"\x05", "padding past header"),
    ],
)
def test_malformed(raw: bytes, why: str) -> None:
    with pytest.raises(RtpParseError):
        parse_rtp(raw)


packets = st.builds(
    RtpPacket,
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    ext_profile=st.none() | st.integers(0, 0xFFFF),
    ext_data=st.binary(max_size=16).map(lambda b: b[: len(b) & ~3]),
    padding=st.integers(0, 255) | st.just(0),
)


@FAST
@given(packets)
def test_round_trip(p: RtpPacket) -> None:
    if p.ext_profile is None:
        p.ext_data = b""
    raw = p.to_bytes()
    assert parse_rtp(raw) == p
    assert parse_rtp(raw).to_bytes() == raw


@FAST
@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_parse_error(raw: bytes) -> None:
    try:
        p = parse_rtp(raw)
    except RtpParseError:
        return
    assert len(p.to_bytes()) == len(raw)  # anything accepted re-serializes to the same size


@FAST
@given(st.binary(min_size=12, max_size=60))
def test_mutated_valid_packets(tail: bytes) -> None:
    raw = bytes([0x80 | (tail[0] & 0x3F)]) + tail[1:]
    try:
        p = parse_rtp(raw)
    except RtpParseError:
        return
    again = p.to_bytes()  # padding octets other than the count are not kept
    assert len(again) == len(raw) and again[: len(raw) - p.padding] == raw[: len(raw) - p.padding]
    assert parse_rtp(again) == p


def test_is_rtcp() -> None:
    assert not is_rtcp(SAMPLE)
    assert is_rtcp(bytes.fromhex("80c80006"))  # SR
    assert is_rtcp(bytes.fromhex("81c90007"))  # RR
    assert not is_rtcp(b"\x80")


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [
        (5, 3, 2),
        (3, 5, -2),
        (0, 65535, 1),
        (65535, 0, -1),
        (10, 65530, 16),
        (32767, 0, 32767),
        (32768, 0, -32768),
    ],
)
def test_seq_diff(a: int, b: int, diff: int) -> None:
    assert seq_diff(a, b) == diff
    assert seq_lt(a, b) == (diff < 0)


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [
        (160, 0, 160),
        (0, 0xFFFFFF60, 160),
        (0xFFFFFF60, 0, -160),
        (0x7FFFFFFF, 0, 0x7FFFFFFF),
        (0x80000000, 0, -0x80000000),
    ],
)
def test_ts_diff(a: int, b: int, diff: int) -> None:
    assert ts_diff(a, b) == diff


@given(st.integers(0, 0xFFFF), st.integers(-32768, 32767))
def test_seq_diff_inverse(a: int, d: int) -> None:
    assert seq_diff((a + d) & 0xFFFF, a) == d


@given(st.integers(0, 1 << 40), st.integers(-32768, 32767))
def test_extend_seq_nearest(ref: int, d: int) -> None:
    assert extend_seq((ref + d) & 0xFFFF, ref) == ref + d


def test_seq_extender_wraps_and_reorders() -> None:
    ex = SeqExtender()
    seqs = [65533, 65534, 65535, 1, 0, 2, 65535, 3]
    assert [ex.extend(s) for s in seqs] == [65533, 65534, 65535, 65537, 65536, 65538, 65535,
                                            65539]
    assert ex.cycles == 65536
    assert ex.max_ext == 65539
