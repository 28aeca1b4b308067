"""Cutting a byte stream (TCP, TLS) into SIP messages, sans-I/O.

RFC 3261 §18.3: on a stream, Content-Length is mandatory and frames the body.
RFC 5626 §3.5.1: a double CRLF between messages is a keep-alive "ping" that is
answered with a single CRLF "pong". The framer caps how much it will hold for
an unfinished message so that a peer that never finishes cannot grow memory.
"""

from __future__ import annotations

import re
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
        self._scanned = 0  # how far the buffer is known to hold no CRLFCRLF
        self.failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def unfinished(self) -> bool:
        """Part of a message is held. A CRLF that may become a ping does not count:
        some phones keep connections alive with a lone CRLF."""
        buf = self._buf
        return bool(buf) and not (self._need is None and _PING.startswith(buf))

    def feed(self, data: bytes) -> list[FrameEvent]:
        if self.failed:
            return []
        self._buf += data
        events: list[FrameEvent] = []
        buf = self._buf
        while buf:
            if self._need is None:
                # Keep-alives and stray CRLFs between messages.
                if buf.startswith(_PING):
                    del buf[:4]
                    events.append(Ping())
                    continue
                if buf.startswith(b"\r\n"):
                    if len(buf) < 4 and _PING.startswith(buf):
                        break  # maybe the start of a ping; wait for more
                    del buf[:2]
                    continue
                # Resume the search where the last one ended (less the 3 bytes a
                # CRLFCRLF split across reads may have left): a peer that drips
                # its header block costs linear time, not quadratic.
                end = buf.find(_PING, max(0, self._scanned - 3), self._max_head + 4)
                if end < 0:
                    if len(buf) > self._max_head:
                        return self._fail(
                            events, SipParseError(513, "header block too large"), _cut_head(buf)
                        )
                    self._scanned = len(buf)
                    break
                self._scanned = 0
                head = bytes(buf[: end + 4])  # at most max_head + 4 bytes: the find is bounded
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
        self._need = None
        events.append(FramingError(error, head))
        return events


_PING = b"\r\n\r\n"
_FOLD_RE = re.compile(rb"\r\n[ \t]+")


def _cut_head(buf: bytearray) -> bytes:
    """The start of a header block that never ended: enough to answer from (the routing
    headers come first in practice), cut at a line end so no field is half there."""
    head = bytes(buf[:_SALVAGE_HEAD])
    cut = head.rfind(b"\r\n")
    return head[: cut + 2] if cut > 0 else b""


_SALVAGE_HEAD = 8192


def _content_length(head: bytes) -> int | SipParseError:
    found: int | None = None
    if b"\r\n " in head or b"\r\n\t" in head:
        head = _FOLD_RE.sub(b" ", head)  # read the fields as the parser will
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() in (b"content-length", b"l"):
            text = value.strip(b" \t")
            if found is not None:
                return SipParseError(400, "more than one Content-Length")
            if not text.isdigit() or len(text) > 9:
                return SipParseError(400, "malformed Content-Length")
            found = int(text)
    if found is None:
        return SipParseError(400, "Content-Length is mandatory on stream transports")
    return found
