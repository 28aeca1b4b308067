"""In-band DTMF detection (Goertzel) for 8 kHz signed 16-bit PCM.

Blocks of 102 samples (12.75 ms) are tested on the 8 DTMF frequencies. A block
holds a digit when the strongest row and column tones are both loud enough, within
the twist limits, clearly stronger than the other tones of their group, and carry most
of the block's energy. A digit is reported once, after it was present for at least
40 ms (three blocks) and then gone (one dropped block inside a tone is tolerated).
Whatever the block alignment, tones of 42 ms or more are always reported and tones of
25 ms or less never are (ITU-T Q.24 asks for 40 ms accepted, about 20 ms rejected).
"""

from __future__ import annotations

import math
import sys
from array import array

__all__ = ["DtmfDetector"]

SAMPLE_RATE = 8000
BLOCK = 102
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*#0D")

_NORMAL_TWIST = 10 ** (8 / 10)  # row may be up to 8 dB louder than column
_REVERSE_TWIST = 10 ** (4 / 10)  # column may be up to 4 dB louder than row
_RELATIVE_PEAK = 10 ** (6 / 10)  # best tone vs. others of its group
_TO_TOTAL = 0.6  # share of the block energy in the two tones
_MIN_AMPLITUDE = 150.0  # per tone, of 32767 (about -36 dBm0 in µ-law terms)
_BIG_ENDIAN = sys.byteorder == "big"


def _coeff(freq: float) -> float:
    return 2.0 * math.cos(2.0 * math.pi * freq / SAMPLE_RATE)


class DtmfDetector:
    """Streaming detector; feed PCM (bytes, little-endian) or samples, get digits."""

    __slots__ = (
        "_buf",
        "_cur",
        "_hits",
        "_misses",
        "min_hits",
    )

    def __init__(self, min_duration_ms: float = 40.0) -> None:
        self.min_hits = max(1, round(min_duration_ms * SAMPLE_RATE / 1000.0 / BLOCK))
        self._buf: array[int] = array("h")
        self._cur: str | None = None
        self._hits = 0
        self._misses = 0

    def feed_pcm(self, pcm: bytes) -> list[str]:
        a = array("h")
        a.frombytes(pcm[: len(pcm) & ~1])
        if _BIG_ENDIAN:  # pragma: no cover
            a.byteswap()
        return self.feed(a)

    def feed(self, samples: array[int] | list[int]) -> list[str]:
        """Append samples; returns the digits completed by them (usually none)."""
        buf = self._buf
        buf.extend(samples)
        out: list[str] = []
        n = BLOCK
        if len(buf) < n:
            return out
        start = 0
        while start + n <= len(buf):
            d = classify_block(buf[start : start + n])
            start += n
            done = self._step(d)
            if done is not None:
                out.append(done)
        del buf[:start]
        return out

    def flush(self) -> list[str]:
        """End of stream: report a digit still in progress."""
        d = self._cur
        hits = self._hits
        self._cur, self._hits, self._misses = None, 0, 0
        self._buf = array("h")
        return [d] if d is not None and hits >= self.min_hits else []

    def _step(self, d: str | None) -> str | None:
        cur = self._cur
        if d is not None and d == cur:
            self._hits += 1
            self._misses = 0
            return None
        if d is None and cur is not None and self._misses < 1:
            self._misses += 1
            return None
        done = cur if cur is not None and self._hits >= self.min_hits else None
        self._cur = d
        self._hits = 1 if d is not None else 0
        self._misses = 0
        return done


_ROW_C = tuple(_coeff(f) for f in ROWS)
_COL_C = tuple(_coeff(f) for f in COLS)
_MIN_POWER = _MIN_AMPLITUDE * _MIN_AMPLITUDE * BLOCK / 2.0


def _goertzel_powers(x: array[int], coeffs: tuple[float, ...]) -> list[float]:
    """Normalised power (A**2 * N / 2 for amplitude A) at each coefficient's frequency."""
    out = []
    scale = 2.0 / len(x)
    for c in coeffs:
        s1 = 0.0
        s2 = 0.0
        for v in x:
            s1, s2 = v + c * s1 - s2, s1
        out.append((s1 * s1 + s2 * s2 - c * s1 * s2) * scale)
    return out


def classify_block(x: array[int]) -> str | None:
    """The DTMF key held in one block, or None."""
    total = sum(v * v for v in x)
    if total < 2 * _MIN_POWER:
        return None  # silence: skip the filters
    rows = _goertzel_powers(x, _ROW_C)
    r = max(range(4), key=rows.__getitem__)
    row = rows[r]
    if row < _MIN_POWER:
        return None
    cols = _goertzel_powers(x, _COL_C)
    c = max(range(4), key=cols.__getitem__)
    col = cols[c]
    if col < _MIN_POWER:
        return None
    if col > row * _REVERSE_TWIST or row > col * _NORMAL_TWIST:
        return None
    for i in range(4):
        if i != r and rows[i] * _RELATIVE_PEAK > row:
            return None
        if i != c and cols[i] * _RELATIVE_PEAK > col:
            return None
    if row + col < _TO_TOTAL * total:
        return None
    return KEYS[r][c]
