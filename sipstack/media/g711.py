"""G.711 µ-law and A-law (ITU-T G.711), with our own tables built at import.

Bulk conversion works on frames: bytes of signed 16-bit little-endian PCM <-> bytes
of G.711, one code per sample. Decoding is two ``bytes.translate`` calls (low and
high byte) interleaved by slice assignment; encoding maps each 16-bit sample through
a 65536-entry table.
"""

from __future__ import annotations

import sys
from array import array

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_ulaw",
    "decode_alaw_sample",
    "decode_ulaw_sample",
    "encode_alaw_sample",
    "encode_ulaw_sample",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_alaw",
]

_BIAS = 0x84
_CLIP = 32635
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5
_BIG_ENDIAN = sys.byteorder == "big"


def encode_ulaw_sample(x: int) -> int:
    """µ-law code of one signed 16-bit sample (G.711 table 2, 14-bit magnitude)."""
    sign = 0
    if x < 0:
        x = -x
        sign = 0x80
    x = min(x, _CLIP)
    x += _BIAS
    exponent = 7
    mask = 0x4000
    while exponent and not x & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (x >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def decode_ulaw_sample(code: int) -> int:
    """Signed 16-bit value of one µ-law code."""
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return _BIAS - t if u & 0x80 else t - _BIAS


def encode_alaw_sample(x: int) -> int:
    """A-law code of one signed 16-bit sample (G.711 table 1, 13-bit magnitude)."""
    x >>= 3
    if x >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        x = -x - 1
    seg = 0
    bound = 0x1F
    while seg < 8 and x > bound:
        seg += 1
        bound = (bound << 1) | 1
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (x >> 1) & 0x0F if seg < 2 else (x >> seg) & 0x0F
    return aval ^ mask


def decode_alaw_sample(code: int) -> int:
    """Signed 16-bit value of one A-law code."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def _decode_tables(decode: list[int]) -> tuple[bytes, bytes]:
    lo = bytes(v & 0xFF for v in decode)
    hi = bytes((v >> 8) & 0xFF for v in decode)
    return lo, hi


def _encode_table(encode_sample: object) -> bytes:
    assert callable(encode_sample)
    # Index: the sample read as an unsigned 16-bit value.
    return bytes(encode_sample(i - 65536 if i >= 32768 else i) for i in range(65536))


ULAW_DECODE: tuple[int, ...] = tuple(decode_ulaw_sample(c) for c in range(256))
ALAW_DECODE: tuple[int, ...] = tuple(decode_alaw_sample(c) for c in range(256))
_ULAW_LO, _ULAW_HI = _decode_tables(list(ULAW_DECODE))
_ALAW_LO, _ALAW_HI = _decode_tables(list(ALAW_DECODE))
_ULAW_ENC = _encode_table(encode_ulaw_sample)
_ALAW_ENC = _encode_table(encode_alaw_sample)
_ULAW_TO_ALAW = bytes(_ALAW_ENC[ULAW_DECODE[c] & 0xFFFF] for c in range(256))
_ALAW_TO_ULAW = bytes(_ULAW_ENC[ALAW_DECODE[c] & 0xFFFF] for c in range(256))


def _decode(codes: bytes, lo: bytes, hi: bytes) -> bytes:
    out = bytearray(2 * len(codes))
    out[0::2] = codes.translate(lo)
    out[1::2] = codes.translate(hi)
    return bytes(out)


def _samples(pcm: bytes) -> memoryview | array[int]:
    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    if _BIG_ENDIAN:  # pragma: no cover - little-endian hosts only in CI
        a = array("H", pcm)
        a.byteswap()
        return a
    return memoryview(pcm).cast("H")


def ulaw_decode(codes: bytes) -> bytes:
    """µ-law codes -> signed 16-bit little-endian PCM."""
    return _decode(codes, _ULAW_LO, _ULAW_HI)


def alaw_decode(codes: bytes) -> bytes:
    """A-law codes -> signed 16-bit little-endian PCM."""
    return _decode(codes, _ALAW_LO, _ALAW_HI)


def ulaw_encode(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM -> µ-law codes."""
    return bytes(map(_ULAW_ENC.__getitem__, _samples(pcm)))


def alaw_encode(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM -> A-law codes."""
    return bytes(map(_ALAW_ENC.__getitem__, _samples(pcm)))


def ulaw_to_alaw(codes: bytes) -> bytes:
    """Transcode µ-law to A-law without going through PCM."""
    return codes.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(codes: bytes) -> bytes:
    """Transcode A-law to µ-law without going through PCM."""
    return codes.translate(_ALAW_TO_ULAW)
