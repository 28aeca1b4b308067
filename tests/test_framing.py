"""Cutting TCP/TLS byte streams into SIP messages (RFC 3261 §18.3, RFC 5626 §3.5.1)."""

from __future__ import annotations

import random

import pytest

from sipstack.endpoint import salvage_error_response
from sipstack.framing import PONG, Frame, FramingError, Ping, StreamFramer
from sipstack.message import Request, parse_message


def message(
    body: bytes = b"", *, cseq: int = 1, extra: str = "", length: str | None = None
) -> bytes:
    head = (
        "MESSAGE sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK{cseq}\r\n"
        "From: <sip:alice@example.com>;tag=1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: framing-test\r\n"
        f"CSeq: {cseq} MESSAGE\r\n"
        f"{extra}"
    )
    if length is None:
        length = str(len(body))
    if length != "none":
        head += f"Content-Length: {length}\r\n"
    return head.encode() + b"\r\n" + body


BODIES = [
    b"", b"hello", "héllo wörld ☎\r\n\r\nafter a blank line".encode(), b"\r\n\r\n",
    b"x" * 3000,
]


def frames(events: list[object]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Frame)]


@pytest.mark.parametrize("body", BODIES)
def test_split_at_every_byte_boundary_reassembles(body: bytes) -> None:
    data = message(body)
    for cut in range(len(data) + 1):
        framer = StreamFramer()
        events = framer.feed(data[:cut]) + framer.feed(data[cut:])
        assert frames(events) == [data], cut
        assert framer.buffered == 0
        assert not framer.failed


def test_byte_by_byte_and_random_chunks() -> None:
    stream = b"".join(message(b, cseq=i + 1) for i, b in enumerate(BODIES))
    expected = [message(b, cseq=i + 1) for i, b in enumerate(BODIES)]
    framer = StreamFramer()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += frames(framer.feed(stream[i : i + 1]))
    assert got == expected
    rng = random.Random(5626)
    for _ in range(50):
        framer = StreamFramer()
        got = []
        pos = 0
        while pos < len(stream):
            step = rng.randrange(1, 700)
            got += frames(framer.feed(stream[pos : pos + step]))
            pos += step
        assert got == expected


def test_pipelined_messages_in_one_chunk() -> None:
    msgs = [message(b"one", cseq=1), message(b"", cseq=2), message(b"three!", cseq=3)]
    framer = StreamFramer()
    events = framer.feed(b"".join(msgs))
    assert frames(events) == msgs
    for data in frames(events):
        assert isinstance(parse_message(data), Request)


def test_ping_gets_ping_event_and_pong_is_crlf() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [Ping()]
    assert PONG == b"\r\n"
    assert framer.buffered == 0


def test_ping_split_and_between_messages() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == [Ping()]
    m1, m2 = message(b"a", cseq=1), message(b"b", cseq=2)
    events = framer.feed(m1 + b"\r\n\r\n" + m2 + b"\r\n\r\n\r\n\r\n")
    assert events == [Frame(m1), Ping(), Frame(m2), Ping(), Ping()]


def test_single_crlf_before_a_message_is_skipped() -> None:
    framer = StreamFramer()
    m = message(b"x")
    assert framer.feed(b"\r\n") == []
    assert frames(framer.feed(m)) == [m]


def test_a_lone_crlf_is_not_an_unfinished_message() -> None:
    # Some phones send a single CRLF as keep-alive; it must not count as a stalled message.
    framer = StreamFramer()
    framer.feed(b"\r\n")
    assert not framer.unfinished
    framer.feed(b"\r")
    assert not framer.unfinished
    framer.feed(b"\n")
    assert framer.buffered == 0 and not framer.unfinished
    framer.feed(b"MESS")
    assert framer.unfinished
    m = message()
    framer.feed(m[4:])
    assert not framer.unfinished


def test_missing_content_length_is_a_400_framing_error() -> None:
    framer = StreamFramer()
    data = message(b"", length="none")
    [event] = framer.feed(data)
    assert isinstance(event, FramingError)
    assert event.error.status == 400
    assert event.head == data  # the whole header block, to answer from
    assert framer.failed
    assert framer.feed(message()) == []  # a failed stream yields nothing more


@pytest.mark.parametrize("length", ["abc", "-1", "1.0", "9999999999", ""])
def test_malformed_content_length_is_400(length: str) -> None:
    [event] = StreamFramer().feed(message(b"", length=length))
    assert isinstance(event, FramingError) and event.error.status == 400


def test_two_content_lengths_are_400() -> None:
    [event] = StreamFramer().feed(message(b"ab", extra="l: 2\r\n"))
    assert isinstance(event, FramingError) and event.error.status == 400


def test_compact_content_length_frames() -> None:
    data = message(b"abc", length="none", extra="l: 3\r\n")
    assert frames(StreamFramer().feed(data)) == [data]


def test_content_length_with_spaces_and_case() -> None:
    data = message(b"abc", length="none", extra="cOnTeNt-LeNgTh  :   3\r\n")
    assert frames(StreamFramer().feed(data)) == [data]


def test_folded_content_length_agrees_with_the_parser() -> None:
    # A folded value is legal (RFC 3261 §7.3.1): the framer must read what the parser reads.
    data = message(b"abc", length="none", extra="Content-Length:\r\n 3\r\n")
    [frame] = frames(StreamFramer().feed(data))
    assert parse_message(frame).body == b"abc"


def test_continuation_line_is_not_taken_for_a_content_length() -> None:
    # " l: 99" continues the Subject line; it is not a header of its own.
    data = message(b"abc", extra="Subject: hi\r\n l: 99\r\n")
    [frame] = frames(StreamFramer().feed(data))
    msg = parse_message(frame)
    assert msg.body == b"abc"
    assert msg.headers.get("subject") == "hi l: 99"


def test_head_cap_gives_513_and_keeps_a_salvageable_head() -> None:
    framer = StreamFramer(max_head=4096)
    start = message().split(b"Content-Length")[0]  # routing headers, then a flood
    events = framer.feed(start)
    assert events == []
    flood = b"X-Flood: " + b"a" * 100 + b"\r\n"
    got: list[object] = []
    for _ in range(100):
        got += framer.feed(flood)
        if got:
            break
    [event] = got
    assert isinstance(event, FramingError)
    assert event.error.status == 513
    assert framer.failed and framer.buffered == 0
    assert event.head.startswith(b"MESSAGE sip:bob@example.com SIP/2.0\r\n")
    response = salvage_error_response(event.head, event.error)
    assert response is not None and response.status == 513
    assert response.headers.get("call-id") == "framing-test"


def test_head_cap_applies_to_a_head_that_arrives_whole() -> None:
    # A 20 kB header block in one read must not slip past a 4 kB cap.
    framer = StreamFramer(max_head=4096)
    data = message(b"", extra="X-Big: " + "a" * 20_000 + "\r\n")
    [event] = framer.feed(data)
    assert isinstance(event, FramingError)
    assert event.error.status == 513


def test_head_exactly_at_cap_is_fine() -> None:
    base = message(b"")
    framer = StreamFramer(max_head=len(base))
    assert frames(framer.feed(base)) == [base]


def test_body_cap_gives_513() -> None:
    framer = StreamFramer(max_body=1000)
    data = message(b"x" * 1001)
    [event] = framer.feed(data[:600])
    assert isinstance(event, FramingError)
    assert event.error.status == 513
    assert b"Content-Length: 1001" in event.head
    response = salvage_error_response(event.head, event.error)
    assert response is not None and response.status == 513


def test_body_exactly_at_cap_is_fine() -> None:
    framer = StreamFramer(max_body=1000)
    data = message(b"x" * 1000)
    assert frames(framer.feed(data)) == [data]


def test_garbage_without_end_is_capped() -> None:
    framer = StreamFramer(max_head=1000)
    events: list[object] = []
    for _ in range(20):
        events += framer.feed(bytes(range(256)).replace(b"\r", b"").replace(b"\n", b""))
    [event] = events
    assert isinstance(event, FramingError) and event.error.status == 513
    assert salvage_error_response(event.head, event.error) is None


def test_random_streams_never_raise_and_stay_bounded() -> None:
    rng = random.Random(3261)
    alphabet = b"\r\n:Content-Length0123456789 l"
    for _ in range(300):
        framer = StreamFramer(max_head=2048, max_body=2048)
        for _ in range(50):
            chunk = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 200)))
            for event in framer.feed(chunk):
                assert isinstance(event, Frame | Ping | FramingError)
            assert framer.buffered <= 2048 + 2048 + 200
