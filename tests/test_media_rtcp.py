"""RTCP SR/RR/SDES/BYE and compound packets; NTP helpers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.media.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    serialize_rtcp,
    unix_from_ntp,
)

FAST = settings(max_examples=300, deadline=None)


def test_sr_wire_format() -> None:
    block = ReportBlock(0xAABBCCDD, 64, -3, 0x0001_0005, 42, 0x11112222, 0x00010000)
    sr = SenderReport(0x01020304, 0xE000_0000_8000_0000, 1000, 50, 8000, (block,))
    raw = serialize_rtcp([sr])
    assert raw[:4] == bytes.fromhex("81c8000c")  # V=2 RC=1, PT=200, 12 words follow
    assert len(raw) == 52
    assert raw[4:8] == bytes.fromhex("01020304")
    # fraction 64, cumulative -3 as signed 24-bit 0xfffffd
    assert raw[28 + 4 : 28 + 8] == bytes.fromhex("40fffffd")
    assert parse_rtcp(raw) == [sr]


def test_compound_rr_sdes_bye() -> None:
    rr = ReceiverReport(7, (ReportBlock(9, 0, 0, 100, 3, 0, 0),))
    sdes = SourceDescription((SdesChunk(7, ((1, b"user@host"), (6, b"edgepbx"))),))
    bye = Bye((7,), b"hangup")
    raw = serialize_rtcp([rr, sdes, bye])
    assert len(raw) % 4 == 0
    parsed = parse_rtcp(raw)
    assert parsed == [rr, sdes, bye]
    assert isinstance(parsed[1], SourceDescription)
    assert parsed[1].chunks[0].cname == b"user@host"


def test_sdes_chunk_alignment_when_items_fill_a_word() -> None:
    # 4 (ssrc) + 2 + 2 = 8 octets of items: the null terminator needs a whole new word.
    sdes = SourceDescription((SdesChunk(1, ((1, b"ab"),)), SdesChunk(2, ((1, b"c"),))))
    raw = serialize_rtcp([sdes])
    assert raw[4:16] == bytes.fromhex("00000001" "01026162" "00000000")
    assert parse_rtcp(raw) == [sdes]


def test_padding_on_last_packet_is_stripped() -> None:
    rr = serialize_rtcp([ReceiverReport(5)])
    padded = bytes([rr[0] | 0x20, rr[1], 0, 2]) + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp(padded) == [ReceiverReport(5)]


def test_unknown_packet_type_kept() -> None:
    app = UnknownRtcp(204, 3, b"name" + b"data")
    assert parse_rtcp(serialize_rtcp([app])) == [app]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80\xc9",
        bytes.fromhex("40c90001") + bytes(4),  # version 1
        bytes.fromhex("80c90002") + bytes(4),  # length past the end
        bytes.fromhex("81c90001") + bytes(4),  # RR claims a block it lacks
        bytes.fromhex("80c80001") + bytes(4),  # SR without sender info
        bytes.fromhex("81ca0001") + bytes.fromhex("00000001"),  # SDES chunk with no end
        bytes.fromhex("81ca0002") + bytes.fromhex("00000001" "0109aaaa"),  # item too long
        bytes.fromhex("82cb0001") + bytes(4),  # BYE with two SSRCs, one present
        bytes.fromhex("80cb0001") + bytes.fromhex("09616263"),  # BYE reason too long
        bytes.fromhex("a0c90001") + bytes.fromhex("00000000"),  # padding count 0
        bytes.fromhex("a0c90001") + bytes(4) + bytes.fromhex("80c90001") + bytes(4),
        bytes.fromhex("80c90001") + bytes(4) + b"\x80",  # trailing garbage
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(RtcpParseError):
        parse_rtcp(raw)


u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock, u32, st.integers(0, 255), st.integers(-0x800000, 0x7FFFFF), u32, u32, u32, u32
)
block_lists = st.lists(blocks, max_size=4).map(tuple)
items = st.tuples(st.integers(1, 255), st.binary(max_size=20))
rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(SenderReport, u32, st.integers(0, (1 << 64) - 1), u32, u32, u32, block_lists),
    st.builds(ReceiverReport, u32, block_lists),
    st.builds(
        SourceDescription,
        st.lists(st.builds(SdesChunk, u32, st.lists(items, max_size=3).map(tuple)),
                 max_size=3).map(tuple),
    ),
    st.builds(Bye, st.lists(u32, max_size=4).map(tuple), st.none() | st.binary(max_size=30)),
    st.builds(
        UnknownRtcp,
        st.integers(204, 210),
        st.integers(0, 31),
        st.binary(max_size=24).map(lambda b: b[: len(b) & ~3]),
    ),
)


@FAST
@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_round_trip(pkts: list[RtcpPacket]) -> None:
    raw = serialize_rtcp(pkts)
    assert parse_rtcp(raw) == pkts
    assert serialize_rtcp(parse_rtcp(raw)) == raw


@FAST
@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_parse_error(raw: bytes) -> None:
    try:
        parse_rtcp(raw)
    except RtcpParseError:
        pass


@FAST
@given(st.lists(rtcp_packets, min_size=1, max_size=3), st.data())
def test_corrupted_compound_raises_only_parse_error(pkts: list[RtcpPacket], data: st.DataObject
                                                    ) -> None:
    raw = bytearray(serialize_rtcp(pkts))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        parse_rtcp(bytes(raw[:cut]))
    except RtcpParseError:
        pass


def test_ntp_helpers() -> None:
    # 1970-01-01 is NTP second 2208988800; half a second is 0x80000000 in the fraction.
    assert ntp_from_unix(0.5) == (2_208_988_800 << 32) | 0x8000_0000
    assert unix_from_ntp(ntp_from_unix(1_700_000_000.25)) == pytest.approx(1_700_000_000.25)
    ntp = struct.unpack("!Q", bytes.fromhex("0123456789abcdef"))[0]
    assert ntp_middle32(ntp) == 0x456789AB


def test_cumulative_lost_clamped_on_serialize() -> None:
    raw = ReportBlock(1, 0, 10_000_000, 0, 0).pack()
    assert raw[5:8] == bytes.fromhex("7fffff")
    raw = ReportBlock(1, 0, -10_000_000, 0, 0).pack()
    assert raw[5:8] == bytes.fromhex("800000")
