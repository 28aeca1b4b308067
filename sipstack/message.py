"""SIP requests and responses: parse from bytes, serialize from structure.

The parser does the framing work eagerly (start line, header fields, body by
Content-Length in bytes) and checks what every element needs before it can
answer at all: Via, From, To, Call-ID and CSeq. Everything else is parsed on
demand, so a REGISTER on the hot path pays only for the headers it reads.
"""

from __future__ import annotations

import hashlib
import re

from sipstack.errors import SipParseError
from sipstack.grammar import is_number as _is_number
from sipstack.grammar import is_token
from sipstack.headers import (
    CANONICAL,
    COMPACT,
    CSeq,
    Headers,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from sipstack.uri import Uri, parse_uri

MAX_DATAGRAM = 65535
MAX_HEADERS = 128
_FOLD_RE = re.compile(r"\r\n[ \t]+")
# Control characters other than HT may only appear escaped in a quoted-pair
# (RFC 3261 §25.1); anywhere else they would be echoed into our replies.
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Every byte but those controls: deleting them leaves b"" for a clean message,
# which bytes.translate finds far faster than a regex search.
_NOT_CTL_BYTES = bytes(
    b for b in range(256) if not ((b < 0x20 and b not in (9, 10, 13)) or b == 0x7F)
)
_BAD_NAME_CHARS = frozenset(" \t\r\n\x00")
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_ONCE = ("from", "to", "call-id", "cseq", "max-forwards")
_TRACKED = frozenset({*_REQUIRED, *_ONCE, "content-length"})


class Message:
    """What requests and responses share: headers, body and cached views."""

    __slots__ = ("_contacts", "_cseq", "_from", "_to", "_vias", "body", "headers")

    def __init__(self, headers: Headers, body: bytes = b"") -> None:
        self.headers = headers
        self.body = body
        self._cseq: CSeq | None = None
        self._vias: list[Via] | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._contacts: list[NameAddr] | None = None

    # -- header views -----------------------------------------------------------
    def _required(self, key: str) -> str:
        value = self.headers.get(key)
        if value is None:
            raise SipParseError(400, f"missing {CANONICAL.get(key, key)} header")
        return value

    @property
    def call_id(self) -> str:
        return self._required("call-id")

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = parse_cseq(self._required("cseq"))
        return self._cseq

    @property
    def vias(self) -> list[Via]:
        if self._vias is None:
            self._vias = [parse_via(v) for v in self.headers.values("via")]
            if not self._vias:
                raise SipParseError(400, "missing Via header")
        return self._vias

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def from_(self) -> NameAddr:
        if self._from is None:
            self._from = parse_name_addr(self._required("from"))
        return self._from

    @property
    def to(self) -> NameAddr:
        if self._to is None:
            self._to = parse_name_addr(self._required("to"))
        return self._to

    @property
    def is_wildcard_contact(self) -> bool:
        """``Contact: *`` (alone or not: the registrar decides what a mix means)."""
        return any(v == "*" for v in self.headers.values("contact"))

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact value parsed; raises SipParseError for ``*`` or a bad value."""
        if self._contacts is None:
            self._contacts = [parse_name_addr(v) for v in self.headers.values("contact")]
        return self._contacts

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("max-forwards")
        if value is None:
            return None
        value = value.strip()
        if not _is_number(value) or len(value.lstrip("0")) > 3 or int(value) > 255:
            raise SipParseError(400, "malformed Max-Forwards")
        return int(value)

    def invalidate(self) -> None:
        """Forget cached views after editing headers directly."""
        self._cseq = None
        self._vias = None
        self._from = None
        self._to = None
        self._contacts = None

    # -- serialization ----------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        parts = [self._start_line()]
        parts.extend(f"{n}: {v}" for k, n, v in self.headers.items() if k != "content-length")
        parts.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(parts).encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    __slots__ = ("_ruri", "method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.method = method
        self.uri = uri
        self.version = version
        self._ruri: Uri | None = None

    @property
    def request_uri(self) -> Uri:
        if self._ruri is None:
            self._ruri = parse_uri(self.uri)
        return self._ruri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.status = status
        self.reason = reason
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def parse_message(
    data: bytes,
    *,
    max_size: int = MAX_DATAGRAM,
    max_headers: int = MAX_HEADERS,
) -> Request | Response:
    """Parse one whole message (a datagram, or a frame cut by the stream framer)."""
    if len(data) > max_size:
        raise SipParseError(513, f"message of {len(data)} bytes exceeds {max_size}")
    start = 0
    # RFC 3261 §7.5: ignore CRLFs before the start line.
    while data.startswith(b"\r\n", start):
        start += 2
    sep = data.find(b"\r\n\r\n", start)
    if sep < 0:
        raise SipParseError(400, "no empty line after the header fields")
    head = data[start:sep].decode("utf-8", "surrogateescape")
    crlf = head.count("\r\n")
    if head.count("\n") != crlf or head.count("\r") != crlf:
        # A bare CR or LF would end a header line for some parsers and not
        # others: refuse it rather than relay a header-injection.
        raise SipParseError(400, "bare CR or LF in the header block")
    if "\r\n " in head or "\r\n\t" in head:
        head = _FOLD_RE.sub(" ", head)
    if data[start:sep].translate(None, _NOT_CTL_BYTES) and _CTL_RE.search(head):
        _check_controls(head)
    lines = head.split("\r\n")
    if len(lines) - 1 > max_headers:
        raise SipParseError(400, f"more than {max_headers} header fields")

    items: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    length_text: str | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(400, f"header line without colon: {line[:40]!r}")
        key = name.lower().rstrip(" \t")
        if key in CANONICAL:
            name = CANONICAL[key]
        elif key in COMPACT:
            key = COMPACT[key]
            name = CANONICAL[key]
        else:
            name = name.rstrip(" \t")
            if not is_token(name) or any(c in _BAD_NAME_CHARS for c in name):
                raise SipParseError(400, f"malformed header name {name[:40]!r}")
        value = value.strip(" \t")
        if key in _TRACKED:
            seen[key] = seen.get(key, 0) + 1
            if key == "content-length":
                length_text = value
        items.append((key, name, value))
    headers = Headers(items)

    body = data[sep + 4 :]
    if length_text is not None:
        if seen["content-length"] > 1:
            raise SipParseError(400, "more than one Content-Length")
        if not _is_number(length_text) or len(length_text) > 9:
            raise SipParseError(400, "malformed Content-Length")
        length = int(length_text)
        if length > len(body):
            raise SipParseError(400, "Content-Length larger than the message body")
        # A datagram may carry junk after the body; RFC 3261 §18.3 says discard it.
        body = body[:length]

    message = _start_line(lines[0], headers, body)
    _check_required(message, seen)
    return message


def _check_controls(head: str) -> None:
    for match in _CTL_RE.finditer(head):
        at = match.start()
        if at == 0 or head[at - 1] != "\\":
            raise SipParseError(400, "control character in the header block")


def _start_line(line: str, headers: Headers, body: bytes) -> Request | Response:
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError(400, "malformed status line")
        version, code = parts[0], parts[1]
        if version.upper() != "SIP/2.0":
            raise SipParseError(505, f"unsupported version {version[:20]!r}")
        if len(code) != 3 or not _is_number(code) or not 100 <= int(code) <= 699:
            raise SipParseError(400, f"bad status code {code[:20]!r}")
        return Response(int(code), parts[2] if len(parts) == 3 else "", headers, body, version)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(400, "malformed request line")
    method, uri, version = parts
    if not is_token(method):
        raise SipParseError(400, "malformed method")
    if version.upper() != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise SipParseError(505, f"unsupported version {version[:20]!r}")
        raise SipParseError(400, "malformed request line")
    if uri.startswith("<") or ":" not in uri:
        raise SipParseError(400, "malformed Request-URI")
    return Request(method, uri, headers, body, version)


def _check_required(message: Request | Response, seen: dict[str, int]) -> None:
    for key in _REQUIRED:
        if key not in seen:
            raise SipParseError(400, f"missing {CANONICAL[key]} header")
    for key in _ONCE:
        if seen.get(key, 0) > 1:
            raise SipParseError(400, f"more than one {CANONICAL[key]} header")
    cseq = message.cseq
    if isinstance(message, Request) and cseq.method != message.method:
        raise SipParseError(400, "CSeq method does not match the request method")
    if not message.call_id:
        raise SipParseError(400, "empty Call-ID")


def stateless_tag(request: Request) -> str:
    """A To tag that is the same for every retransmission of a request (§8.2.7).

    It reads the header fields as text, so it works even for a request we are
    about to refuse because one of those fields cannot be parsed.
    """
    headers = request.headers
    vias = headers.get_all("via")
    seed = "|".join(
        (
            headers.get("call-id") or "",
            headers.get("cseq") or "",
            vias[0] if vias else "",
            headers.get("from") or "",
        )
    )
    return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
) -> Response:
    """A response whose Via, From, To, Call-ID and CSeq come from the request (§8.2.6)."""
    items: list[tuple[str, str, str]] = []
    for item in request.headers.items():
        key = item[0]
        if key in ("via", "from", "call-id", "cseq"):
            items.append(item)
        elif key == "to":
            if to_tag is not None and request.to.tag is None:
                items.append((key, item[1], f"{item[2]};tag={to_tag}"))
            else:
                items.append(item)
    return Response(status, reason or REASON_PHRASES.get(status, ""), Headers(items))


REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
