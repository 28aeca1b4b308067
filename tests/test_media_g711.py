"""G.711 µ-law / A-law: known vectors, exhaustive round trips, bulk frame conversion."""

from __future__ import annotations

import bisect
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipstack.media import g711

ULAW = [g711.decode_ulaw_sample(c) for c in range(256)]
ALAW = [g711.decode_alaw_sample(c) for c in range(256)]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x01, -31100), (0x02, -30076), (0x03, -29052),
     (0x0F, -16764), (0x80, 32124), (0xFE, 8), (0x7E, -8)],
)
def test_ulaw_decode_vectors(code: int, value: int) -> None:
    assert g711.decode_ulaw_sample(code) == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0x00, -5504), (0x01, -5248), (0x02, -6016), (0x03, -5760),
     (0xAA, 32256), (0x2A, -32256), (0xD4, 24)],
)
def test_alaw_decode_vectors(code: int, value: int) -> None:
    assert g711.decode_alaw_sample(code) == value


@pytest.mark.parametrize(
    ("x", "ulaw", "alaw"),
    [(0, 0xFF, 0xD5), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (8, 0xFE, 0xD5),
     (-8, 0x7E, 0x55), (-1, 0x7F, 0x55)],
)
def test_encode_vectors(x: int, ulaw: int, alaw: int) -> None:
    assert g711.encode_ulaw_sample(x) == ulaw
    assert g711.encode_alaw_sample(x) == alaw


def test_encode_decode_codes_round_trip() -> None:
    for c in range(256):
        want = 0xFF if c == 0x7F else c  # µ-law has two zeros; +0 is the canonical one
        assert g711.encode_ulaw_sample(ULAW[c]) == want, hex(c)
        assert g711.encode_alaw_sample(ALAW[c]) == c, hex(c)
    assert len(set(ULAW)) == 255 and len(set(ALAW)) == 256


@pytest.mark.parametrize(("enc", "dec"), [
    (g711.encode_ulaw_sample, ULAW), (g711.encode_alaw_sample, ALAW)])
def test_quantisation_picks_a_neighbouring_level(enc: object, dec: list[int]) -> None:
    assert callable(enc)
    levels = sorted(set(dec))
    for x in range(-32768, 32768, 7):
        y = dec[enc(x)]
        i = bisect.bisect_left(levels, x)
        lo = levels[max(0, i - 1)]
        hi = levels[min(len(levels) - 1, i)]
        assert lo <= y <= hi or (x > levels[-1] and y == levels[-1]) or (
            x < levels[0] and y == levels[0]), (x, y)
        assert abs(y - x) <= max(hi - lo, 1024), (x, y)  # 1024: µ-law's top-segment clip


def test_bulk_decode_matches_tables() -> None:
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes) == struct.pack("<256h", *ULAW)
    assert g711.alaw_decode(codes) == struct.pack("<256h", *ALAW)
    assert g711.ulaw_decode(b"") == b""


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_bulk_encode_matches_samples(xs: list[int]) -> None:
    pcm = struct.pack(f"<{len(xs)}h", *xs)
    assert g711.ulaw_encode(pcm) == bytes(g711.encode_ulaw_sample(x) for x in xs)
    assert g711.alaw_encode(pcm) == bytes(g711.encode_alaw_sample(x) for x in xs)


@given(st.binary(max_size=320))
def test_bulk_code_round_trip(codes: bytes) -> None:
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes
    assert g711.ulaw_encode(g711.ulaw_decode(codes)) == codes.replace(b"\x7f", b"\xff")


def test_transcoding_goes_through_the_nearest_level() -> None:
    codes = bytes(range(256))
    assert g711.ulaw_to_alaw(codes) == g711.alaw_encode(g711.ulaw_decode(codes))
    assert g711.alaw_to_ulaw(codes) == g711.ulaw_encode(g711.alaw_decode(codes))


def test_odd_pcm_length_rejected() -> None:
    with pytest.raises(ValueError):
        g711.ulaw_encode(b"\x00\x00\x00")
