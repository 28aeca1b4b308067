"""RTP packets (RFC 3550 §5.1) and wrap-safe sequence/timestamp arithmetic.

Pure: bytes in, objects out. Malformed input raises :class:`RtpParseError` and
nothing else, so the socket adapter can count and drop it.
"""

from __future__ import annotations

import struct

__all__ = [
    "RtpPacket",
    "RtpParseError",
    "SeqExtender",
    "extend_seq",
    "is_rtcp",
    "parse_rtp",
    "seq_diff",
    "seq_lt",
    "ts_diff",
]

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_CSRC = [struct.Struct("!" + "I" * n) for n in range(16)]

SEQ_MOD = 1 << 16


class RtpParseError(ValueError):
    """Bytes that are not a valid RTP packet."""


class RtpPacket:
    """One RTP packet. ``padding`` is the number of padding octets (0 = no P bit)."""

    __slots__ = (
        "csrc",
        "ext_data",
        "ext_profile",
        "marker",
        "padding",
        "payload",
        "payload_type",
        "seq",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        payload: bytes = b"",
        *,
        marker: bool = False,
        csrc: tuple[int, ...] = (),
        ext_profile: int | None = None,
        ext_data: bytes = b"",
        padding: int = 0,
    ) -> None:
        self.payload_type = payload_type
        self.seq = seq
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.marker = marker
        self.csrc = csrc
        self.ext_profile = ext_profile
        self.ext_data = ext_data
        self.padding = padding

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, seq={self.seq}, ts={self.timestamp}, "
            f"ssrc={self.ssrc:#010x}, m={self.marker}, len={len(self.payload)})"
        )

    def to_bytes(self) -> bytes:
        """Serialize; raises ValueError for out-of-range fields."""
        if not 0 <= self.payload_type < 128:
            raise ValueError("payload type out of range")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")
        if not 0 <= self.padding < 256:
            raise ValueError("padding out of range")
        has_ext = self.ext_profile is not None
        b0 = 0x80 | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if has_ext:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        head = _HEADER.pack(b0, b1, self.seq, self.timestamp, self.ssrc)
        if not self.csrc and not has_ext and not self.padding:
            return head + self.payload
        parts = [head]
        if self.csrc:
            parts.append(_CSRC[len(self.csrc)].pack(*self.csrc))
        if has_ext:
            data = self.ext_data
            if len(data) % 4:
                raise ValueError("extension data must be a multiple of 4 octets")
            parts.append(_EXT_HEADER.pack(self.ext_profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raises :class:`RtpParseError` on malformed input."""
    n = len(data)
    if n < 12:
        raise RtpParseError("shorter than the fixed header")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 & 0xC0 != 0x80:
        raise RtpParseError("not RTP version 2")
    cc = b0 & 0x0F
    off = 12
    csrc: tuple[int, ...] = ()
    if cc:
        end = off + 4 * cc
        if end > n:
            raise RtpParseError("truncated CSRC list")
        csrc = _CSRC[cc].unpack_from(data, off)
        off = end
    ext_profile: int | None = None
    ext_data = b""
    if b0 & 0x10:
        if off + 4 > n:
            raise RtpParseError("truncated extension header")
        ext_profile, words = _EXT_HEADER.unpack_from(data, off)
        off += 4
        end = off + 4 * words
        if end > n:
            raise RtpParseError("truncated extension")
        ext_data = bytes(data[off:end])
        off = end
    padding = 0
    end = n
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or off + padding > n:
            raise RtpParseError("bad padding length")
        end = n - padding
    return RtpPacket(
        b1 & 0x7F,
        seq,
        ts,
        ssrc,
        bytes(data[off:end]),
        marker=bool(b1 & 0x80),
        csrc=csrc,
        ext_profile=ext_profile,
        ext_data=ext_data,
        padding=padding,
    )


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192..223 in the second octet."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_lt(a: int, b: int) -> bool:
    """True when sequence number a comes before b (modulo 2**16)."""
    return seq_diff(a, b) < 0


def ts_diff(a: int, b: int) -> int:
    """Signed distance a - b between 32-bit RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def extend_seq(seq: int, ref: int) -> int:
    """The extended (unwrapped) sequence number of 16-bit ``seq`` nearest to ``ref``."""
    return ref + seq_diff(seq, ref & 0xFFFF)


class SeqExtender:
    """Unwraps a stream of 16-bit sequence numbers into extended ones (RFC 3550 A.1).

    The highest extended number seen is ``max_ext``; ``cycles`` counts wraps (times 2**16).
    Old (reordered) packets get extended numbers below ``max_ext`` without moving it.
    """

    __slots__ = ("max_ext",)

    def __init__(self) -> None:
        self.max_ext: int | None = None

    def extend(self, seq: int) -> int:
        ref = self.max_ext
        if ref is None:
            self.max_ext = seq & 0xFFFF
            return self.max_ext
        ext = ref + (((seq - ref + 0x8000) & 0xFFFF) - 0x8000)
        if ext > ref:
            self.max_ext = ext
        return ext

    @property
    def cycles(self) -> int:
        return 0 if self.max_ext is None else self.max_ext & ~0xFFFF
