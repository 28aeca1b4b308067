"""RFC 4733 telephone-events: payload format, de-duplicating receiver, sender; SIP INFO."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediakit import dtmf_packets, dtmf_received

from sipstack.media.dtmf import (
    DtmfParseError,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    digit_to_event,
    parse_dtmf_relay,
    parse_telephone_event,
)


def test_payload_wire_format() -> None:
    ev = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert ev.to_bytes() == bytes.fromhex("0b8a0320")
    assert parse_telephone_event(bytes.fromhex("0b8a0320")) == ev
    assert ev.digit == "#"
    assert parse_telephone_event(bytes.fromhex("050a00a0")) == TelephoneEvent(5, False, 10, 160)
    with pytest.raises(DtmfParseError):
        parse_telephone_event(b"\x05\x0a\x00")


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    ev = TelephoneEvent(event, end, volume, duration)
    assert parse_telephone_event(ev.to_bytes()) == ev


def test_sender_sequence() -> None:
    pkts = DtmfSender().packets("5", timestamp=1000, duration=800)
    evs = [parse_telephone_event(p.payload) for p in pkts]
    assert [p.marker for p in pkts] == [True] + [False] * 6
    assert {p.timestamp for p in pkts} == {1000}
    assert [e.duration for e in evs] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in evs] == [False] * 4 + [True] * 3
    assert {e.event for e in evs} == {5}
    assert [p.offset for p in pkts] == [0, 160, 320, 480, 640, 800, 960]
    short = DtmfSender().packets("#", timestamp=0xFFFFFFFF, duration=100)
    assert [p.marker for p in short] == [True, False, False]
    assert all(parse_telephone_event(p.payload).end for p in short)
    with pytest.raises(ValueError):
        DtmfSender().packets("x", 0)


@pytest.mark.parametrize(
    ("name", "mangle"),
    [
        ("clean", lambda s: s),
        ("start packets lost", lambda s: [p for i, p in enumerate(s) if i % 7 not in (0, 1)]),
        ("only the end packets", lambda s: [p for i, p in enumerate(s) if i % 7 >= 4]),
        ("every packet twice", lambda s: [p for p in s for _ in (0, 1)]),
        ("late packet of the previous digit", lambda s: [*s[:9], s[3], *s[9:]]),
        ("reordered inside each digit", lambda s: [
            p for k in range(0, len(s), 7) for p in reversed(s[k : k + 7])]),
    ],
)
def test_receiver_reports_each_digit_once(name: str, mangle: object) -> None:
    assert callable(mangle)
    assert dtmf_received(mangle(dtmf_packets("1955#"))) == "1955#", name


def test_same_digit_twice_and_timestamp_wrap() -> None:
    assert dtmf_received(dtmf_packets("7777", ts0=0xFFFFFFFF - 2000)) == "7777"


def test_receiver_ignores_junk_and_non_dtmf_events() -> None:
    rx = DtmfReceiver()
    assert rx.feed(100, b"\x01") is None
    assert rx.feed(200, TelephoneEvent(16, False, 10, 160).to_bytes()) is None  # flash
    d = rx.feed(400, TelephoneEvent(0, False, 10, 160).to_bytes())
    assert d is not None and (d.digit, d.timestamp, d.duration) == ("0", 400, 160)
    assert rx.events_ignored == 2


def test_receiver_flood_of_new_events_stays_bounded() -> None:
    rx = DtmfReceiver()
    n = sum(
        rx.feed(ts, TelephoneEvent(ts % 16, True, 0, 160).to_bytes()) is not None
        for ts in range(0, 160 * 5000, 160)
    )
    assert n == 5000
    assert len(rx._recent_set) <= 32


def test_random_loss_and_duplication_never_doubles_a_digit() -> None:
    rng = random.Random(4733)
    digits = "0123456789*#ABCD" * 3
    for _ in range(30):
        stream = dtmf_packets(digits)
        mangled = []
        for k in range(0, len(stream), 7):
            group = [p for p in stream[k : k + 7] if rng.random() > 0.4] or [stream[k + 6]]
            group += rng.sample(group, min(2, len(group)))  # duplicates
            rng.shuffle(group)
            mangled += group
        assert dtmf_received(mangled) == digits


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        (b"Signal=5\r\nDuration=160\r\n", "5"),
        (b"Signal= *\r\nDuration= 250", "*"),
        (b"signal=#\n", "#"),
        (b"Signal=a\r\n", "A"),
        (b"Signal=10\r\nDuration=100\r\n", "*"),
        (b"Signal=11\r\n", "#"),
        (b"Duration=160\r\n", None),
        (b"Signal=\r\n", None),
        (b"Signal=X\r\n", None),
        (b"Signal=99\r\n", None),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_parse_dtmf_relay(body: bytes, digit: str | None) -> None:
    assert parse_dtmf_relay(body) == digit


def test_digit_to_event() -> None:
    assert [digit_to_event(c) for c in "09*#aD"] == [0, 9, 10, 11, 12, 15]
    with pytest.raises(ValueError):
        digit_to_event("55")


@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.binary(max_size=8)), max_size=50))
def test_receiver_arbitrary_packets_never_raise_or_repeat(stream: list[tuple[int, bytes]]
                                                          ) -> None:
    rx = DtmfReceiver()
    seen = [d.timestamp for ts, pl in stream if (d := rx.feed(ts, pl)) is not None]
    assert len(seen) == len(set(seen))


@given(st.binary(max_size=64))
def test_parse_dtmf_relay_arbitrary_bytes(body: bytes) -> None:
    assert parse_dtmf_relay(body) in (None, *"0123456789*#ABCD")


def test_a_sender_that_starts_over_with_old_timestamps_is_heard_after_a_pause() -> None:
    from sipstack.media.dtmf import DtmfReceiver

    def packet(event: int, end: bool) -> bytes:
        return bytes([event, 0x80 if end else 0, 0, 160])

    rx = DtmfReceiver()
    assert rx.feed(23200, packet(2, False), 0.0) is not None
    assert rx.feed(23200, packet(2, True), 0.05) is None  # the same press
    assert rx.feed(17632, packet(0, False), 0.3) is None  # older: a late packet
    again = rx.feed(23200, packet(2, False), 2.0)  # a replay, a second later
    assert again is not None and again.digit == "2"
    assert rx.feed(17632, packet(0, False), 3.5) is not None
