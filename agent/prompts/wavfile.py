"""Just enough RIFF/WAVE for prompt files: 8 kHz mono G.711 µ-law (and 16-bit PCM).

The standard library's :mod:`wave` reads and writes PCM only (WAVE_FORMAT_PCM); prompt
files are WAVE_FORMAT_MULAW (7), so this module writes and reads them itself. Anything
more exotic (an admin's upload in ADPCM, 44.1 kHz stereo float, ...) goes through sox
first, see :func:`agent.prompts.convert_upload`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "WAVE_FORMAT_ALAW",
    "WAVE_FORMAT_MULAW",
    "WAVE_FORMAT_PCM",
    "WavError",
    "WavInfo",
    "is_riff_wave",
    "read_wav",
    "write_wav",
]

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    """Not a WAV file this module reads."""


@dataclass(frozen=True)
class WavInfo:
    format_tag: int
    channels: int
    sample_rate: int
    bits_per_sample: int
    data: bytes

    @property
    def frames(self) -> int:
        width = max(1, self.bits_per_sample // 8) * self.channels
        return len(self.data) // width

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_riff_wave(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def write_wav(
    data: bytes, *, format_tag: int = WAVE_FORMAT_MULAW, sample_rate: int = 8000
) -> bytes:
    """A mono WAV file holding ``data`` (G.711 codes, or 16-bit LE PCM for format 1)."""
    if format_tag == WAVE_FORMAT_PCM:
        bits = 16
        if len(data) % 2:
            raise ValueError("16-bit PCM must have an even number of bytes")
    elif format_tag in (WAVE_FORMAT_MULAW, WAVE_FORMAT_ALAW):
        bits = 8
    else:
        raise ValueError(f"unsupported WAV format tag {format_tag}")
    block = bits // 8
    chunks = []
    if format_tag == WAVE_FORMAT_PCM:
        fmt = struct.pack("<HHIIHH", format_tag, 1, sample_rate, sample_rate * block, block, bits)
    else:
        # Non-PCM formats carry cbSize (0) and a fact chunk with the sample count.
        fmt = struct.pack(
            "<HHIIHHH", format_tag, 1, sample_rate, sample_rate * block, block, bits, 0
        )
    chunks.append(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
    if format_tag != WAVE_FORMAT_PCM:
        chunks.append(b"fact" + struct.pack("<II", 4, len(data) // block))
    pad = b"\x00" if len(data) % 2 else b""
    chunks.append(b"data" + struct.pack("<I", len(data)) + data + pad)
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def read_wav(blob: bytes) -> WavInfo:
    """Parse a WAV file: the fmt chunk's fields and the data chunk's bytes."""
    if not is_riff_wave(blob):
        raise WavError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    data: bytes | None = None
    while pos + 8 <= len(blob):
        cid = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = blob[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise WavError("fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # first field of the GUID
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            data = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise WavError("no fmt chunk")
    if data is None:
        raise WavError("no data chunk")
    tag, channels, rate, bits = fmt
    return WavInfo(tag, channels, rate, bits, data)
