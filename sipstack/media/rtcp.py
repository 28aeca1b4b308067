"""RTCP (RFC 3550 §6): SR, RR, SDES, BYE and compound packets, plus NTP time helpers.

Pure: ``now`` is always passed in as a Unix epoch float. Malformed input raises
:class:`RtcpParseError` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpParseError",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_rtcp",
    "serialize_rtcp",
    "unix_from_ntp",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

SDES_END = 0
SDES_CNAME = 1

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

_COMMON = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_SR_INFO = struct.Struct("!IQIII")  # ssrc, ntp, rtp ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|lost, ext highest seq, jitter, lsr, dlsr


class RtcpParseError(ValueError):
    """Bytes that are not a valid RTCP (compound) packet."""


def ntp_from_unix(now: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for a Unix epoch time."""
    return round((now + NTP_EPOCH_OFFSET) * 4294967296.0) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    """Unix epoch time of a 64-bit NTP timestamp (era 0)."""
    return ntp / 4294967296.0 - NTP_EPOCH_OFFSET


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as used in LSR (1/65536 s units)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 0..255, the fraction lost since the last report * 256
    cumulative_lost: int  # signed 24-bit
    highest_seq: int  # extended highest sequence number received (32 bits)
    jitter: int  # timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp, 0 if none
    dlsr: int = 0  # delay since the last SR, 1/65536 s

    def pack(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> bytes | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...] = ()


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...] = ()
    reason: bytes | None = None


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """Any other packet type (APP, RTPFB, XR...), kept as its body."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _parse_blocks(body: bytes, off: int, count: int) -> tuple[ReportBlock, ...]:
    if off + 24 * count > len(body):
        raise RtcpParseError("truncated report blocks")
    blocks = []
    for _ in range(count):
        ssrc, fl, hs, jit, lsr, dlsr = _BLOCK.unpack_from(body, off)
        lost = fl & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        blocks.append(ReportBlock(ssrc, fl >> 24, lost, hs, jit, lsr, dlsr))
        off += 24
    return tuple(blocks)


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    off = 0
    n = len(body)
    for _ in range(count):
        if off + 4 > n:
            raise RtcpParseError("truncated SDES chunk")
        (ssrc,) = _U32.unpack_from(body, off)
        off += 4
        items = []
        while True:
            if off >= n:
                raise RtcpParseError("SDES chunk without end")
            kind = body[off]
            if kind == SDES_END:
                off = (off + 4) & ~3  # the null item plus padding to a 32-bit boundary
                break
            if off + 2 > n or off + 2 + body[off + 1] > n:
                raise RtcpParseError("truncated SDES item")
            length = body[off + 1]
            items.append((kind, bytes(body[off + 2 : off + 2 + length])))
            off += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_one(pt: int, count: int, body: bytes) -> RtcpPacket:
    if pt == RTCP_SR:
        if len(body) < 24:
            raise RtcpParseError("truncated SR")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, 24, count))
    if pt == RTCP_RR:
        if len(body) < 4:
            raise RtcpParseError("truncated RR")
        (ssrc,) = _U32.unpack_from(body)
        return ReceiverReport(ssrc, _parse_blocks(body, 4, count))
    if pt == RTCP_SDES:
        return _parse_sdes(body, count)
    if pt == RTCP_BYE:
        if 4 * count > len(body):
            raise RtcpParseError("truncated BYE")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = None
        off = 4 * count
        if off < len(body):
            length = body[off]
            if off + 1 + length > len(body):
                raise RtcpParseError("truncated BYE reason")
            reason = bytes(body[off + 1 : off + 1 + length])
        return Bye(tuple(ssrcs), reason)
    return UnknownRtcp(pt, count, bytes(body))


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet into its parts; raises :class:`RtcpParseError`."""
    n = len(data)
    if n < 4:
        raise RtcpParseError("shorter than an RTCP header")
    out: list[RtcpPacket] = []
    off = 0
    while off < n:
        if off + 4 > n:
            raise RtcpParseError("trailing bytes after the last packet")
        b0, pt, words = _COMMON.unpack_from(data, off)
        if b0 & 0xC0 != 0x80:
            raise RtcpParseError("not RTCP version 2")
        end = off + 4 + 4 * words
        if end > n:
            raise RtcpParseError("packet length exceeds the datagram")
        body_end = end
        if b0 & 0x20:
            if end != n:
                raise RtcpParseError("padding only allowed on the last packet")
            pad = data[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtcpParseError("bad padding")
            body_end = end - pad
        out.append(_parse_one(pt, b0 & 0x1F, data[off + 4 : body_end]))
        off = end
    return out


def _header(pt: int, count: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("RTCP body must be 32-bit aligned")
    if count > 31:
        raise ValueError("RTCP count field is 5 bits")
    return _COMMON.pack(0x80 | count, pt, body_len // 4)


def _serialize_one(p: RtcpPacket) -> bytes:
    if isinstance(p, SenderReport):
        body = _SR_INFO.pack(
            p.ssrc, p.ntp_timestamp, p.rtp_timestamp & 0xFFFFFFFF, p.packet_count & 0xFFFFFFFF,
            p.octet_count & 0xFFFFFFFF,
        ) + b"".join(b.pack() for b in p.reports)
        return _header(RTCP_SR, len(p.reports), len(body)) + body
    if isinstance(p, ReceiverReport):
        body = _U32.pack(p.ssrc) + b"".join(b.pack() for b in p.reports)
        return _header(RTCP_RR, len(p.reports), len(body)) + body
    if isinstance(p, SourceDescription):
        parts = []
        for chunk in p.chunks:
            c = bytearray(_U32.pack(chunk.ssrc))
            for kind, value in chunk.items:
                if not 0 < kind < 256 or len(value) > 255:
                    raise ValueError("bad SDES item")
                c += bytes((kind, len(value))) + value
            c += bytes(4 - len(c) % 4)  # at least one null octet, then 32-bit alignment
            parts.append(bytes(c))
        body = b"".join(parts)
        return _header(RTCP_SDES, len(p.chunks), len(body)) + body
    if isinstance(p, Bye):
        body = struct.pack(f"!{len(p.ssrcs)}I", *p.ssrcs)
        if p.reason is not None:
            if len(p.reason) > 255:
                raise ValueError("BYE reason too long")
            r = bytes((len(p.reason),)) + p.reason
            body += r + bytes(-len(r) % 4)
        return _header(RTCP_BYE, len(p.ssrcs), len(body)) + body
    return _header(p.packet_type, p.count, len(p.body)) + p.body


def serialize_rtcp(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """Serialize packets into one compound RTCP datagram (no padding)."""
    return b"".join(_serialize_one(p) for p in packets)
