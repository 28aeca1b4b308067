"""In-band DTMF detection on synthesised 8 kHz PCM."""

from __future__ import annotations

import math
import random
import struct

import pytest

from sipstack.media.goertzel import COLS, KEYS, ROWS, DtmfDetector, classify_block

RATE = 8000


def tone(f1: float, f2: float, ms: float, amp: float = 6000.0, amp2: float | None = None,
         phase: float = 0.0) -> list[int]:
    a2 = amp if amp2 is None else amp2
    return [
        int(amp * math.sin(2 * math.pi * f1 * i / RATE + phase)
            + a2 * math.sin(2 * math.pi * f2 * i / RATE))
        for i in range(int(RATE * ms / 1000))
    ]


def key_tone(key: str, ms: float, **kw: float) -> list[int]:
    r = next(i for i, row in enumerate(KEYS) if key in row)
    return tone(ROWS[r], COLS[KEYS[r].index(key)], ms, **kw)


def silence(ms: float) -> list[int]:
    return [0] * int(RATE * ms / 1000)


def detect(samples: list[int], chunk: int = 160) -> list[str]:
    d = DtmfDetector()
    out: list[str] = []
    for i in range(0, len(samples), chunk):
        out += d.feed(samples[i : i + chunk])
    return out + d.flush()


@pytest.mark.parametrize("key", list("0123456789*#ABCD"))
def test_each_key_detected_once(key: str) -> None:
    assert detect(silence(30) + key_tone(key, 70) + silence(60)) == [key]


def test_pcm_bytes_interface() -> None:
    d = DtmfDetector()
    pcm = struct.pack(f"<{RATE // 5}h", *(silence(50) + key_tone("8", 80) + silence(70)))
    out = []
    for i in range(0, len(pcm), 320):  # 20 ms frames
        out += d.feed_pcm(pcm[i : i + 320])
    assert out == ["8"]


@pytest.mark.parametrize("offset_ms", [0, 3, 7, 11])
def test_two_digits_50ms_apart(offset_ms: float) -> None:
    sig = silence(offset_ms) + key_tone("5", 60) + silence(50) + key_tone("5", 60) + silence(60)
    assert detect(sig) == ["5", "5"]


def test_sequence_of_digits() -> None:
    sig: list[int] = []
    for k in "19*0#":
        sig += key_tone(k, 50) + silence(50)
    assert detect(sig, chunk=97) == list("19*0#")


@pytest.mark.parametrize("key", ["1", "3", "D", "#"])
def test_42ms_is_enough_and_25ms_is_not_at_every_block_alignment(key: str) -> None:
    for offset in range(102):
        assert detect([0] * offset + key_tone(key, 42) + silence(60)) == [key], offset
        assert detect([0] * offset + key_tone(key, 25) + silence(60)) == [], offset


def test_dial_tone_is_not_a_digit() -> None:
    assert detect(tone(350, 440, 2000, amp=5000)) == []


def test_white_noise_is_not_a_digit() -> None:
    rng = random.Random(1)
    assert detect([int(rng.gauss(0, 5000)) for _ in range(RATE * 3)]) == []


def test_speech_like_harmonics_are_not_a_digit() -> None:
    # A voiced vowel: 120..200 Hz fundamental with decaying harmonics through the DTMF band.
    sig: list[int] = []
    for f0 in (120, 140, 160, 180, 200):
        for i in range(int(RATE * 0.3)):
            sig.append(int(sum(3000 / h * math.sin(2 * math.pi * f0 * h * i / RATE)
                               for h in range(1, 20))))
    assert detect(sig) == []


def test_twist_limits() -> None:
    # 6 dB louder row is normal twist (accepted); a 10 dB louder column is not.
    assert detect(key_tone("6", 80, amp=8000, amp2=4000) + silence(60)) == ["6"]
    assert detect(key_tone("6", 80, amp=2000, amp2=6400) + silence(60)) == []


def test_single_frequency_and_quiet_tones_rejected() -> None:
    assert detect(tone(770, 770, 200, amp=4000)) == []
    assert detect(key_tone("2", 200, amp=60) + silence(60)) == []
    assert detect(key_tone("2", 200, amp=400) + silence(60)) == ["2"]


def test_tone_in_moderate_noise_detected() -> None:
    rng = random.Random(7)
    sig = [x + int(rng.gauss(0, 300)) for x in silence(40) + key_tone("9", 80) + silence(60)]
    assert detect(sig) == ["9"]


def test_classify_block_direct() -> None:
    blk = key_tone("D", 13)[:102]
    from array import array

    assert classify_block(array("h", blk)) == "D"
    assert classify_block(array("h", [0] * 102)) is None
