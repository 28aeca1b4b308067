"""Cutting a byte stream (TCP, TLS) into SIP messages, sans-I/O.

RFC 3261 §18.3: on a stream, Content-Length is mandatory and frames the body.
RFC 5626 §3.5.1: a double CRLF between messages is a keep-alive "ping" that is
answered with a single CRLF "pong". The framer caps how much it will hold for
an unfinished message so that a peer that never finishes cannot grow memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipstack.errors import SipParseError

PONG = b"\r\n"


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole message, ready for :func:`sipstack.message.parse_message`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A CRLFCRLF keep-alive; answer with :data:`PONG`."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any more; answer if possible, then close."""

    error: SipParseError
    head: bytes  # the header block, if one was complete, to build a response from


FrameEvent = Frame | Ping | FramingError


class StreamFramer:
    def __init__(self, *, max_head: int = 16384, max_body: int = 65535) -> None:
        self._buf = bytearray()
        self._max_head = max_head
        self._max_body = max_body
        self._need: int | None = None  # total frame length once the head is known
        self.failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[FrameEvent]:
        if self.failed:
            return []
        self._buf += data
        events: list[FrameEvent] = []
        buf = self._buf
        while buf:
            if self._need is None:
                # Keep-alives and stray CRLFs between messages.
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    events.append(Ping())
                    continue
                if buf.startswith(b"\r\n"):
                    if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        break  # maybe the start of a ping; wait for more
                    del buf[:2]
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > self._max_head:
                        return self._fail(events, SipParseError(513, "header block too large"), b"")
                    break
                head = bytes(buf[: end + 4])
                length = _content_length(head)
                if isinstance(length, SipParseError):
                    return self._fail(events, length, head)
                if length > self._max_body:
                    return self._fail(events, SipParseError(513, "body too large"), head)
                self._need = end + 4 + length
            if len(buf) < self._need:
                break
            events.append(Frame(bytes(buf[: self._need])))
            del buf[: self._need]
            self._need = None
        return events

    def _fail(
        self, events: list[FrameEvent], error: SipParseError, head: bytes
    ) -> list[FrameEvent]:
        self.failed = True
        self._buf.clear()
        events.append(FramingError(error, head))
        return events


def _content_length(head: bytes) -> int | SipParseError:
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if found is not None:
                return SipParseError(400, "more than one Content-Length")
            if not text.isdigit() or len(text) > 9:
                return SipParseError(400, "malformed Content-Length")
            found = int(text)
    if found is None:
        return SipParseError(400, "Content-Length is mandatory on stream transports")
    return found
