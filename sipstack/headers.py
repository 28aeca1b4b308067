"""Header storage and the structured header types the core relies on.

Header values are kept as the text received (unfolded), so unknown headers
travel verbatim and serialization is exact. Structured views (Via, NameAddr,
CSeq) are parsed on demand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from sipstack.errors import SipParseError
from sipstack.grammar import (
    format_params,
    is_number,
    is_token,
    parse_params,
    read_quoted,
    split_commas,
    unquote,
)
from sipstack.uri import Uri, parse_uri

# RFC 3261 §7.3.3 and later RFCs' compact forms.
COMPACT: dict[str, str] = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "e": "content-encoding",
    "k": "supported",
    "s": "subject",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# How known headers are spelled on the wire (lower-case key -> canonical name).
CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length",
        "Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language",
        "Supported", "Require", "Proxy-Require", "Unsupported", "Allow", "Accept",
        "Accept-Encoding", "Accept-Language", "Expires", "Min-Expires", "Route",
        "Record-Route", "Path", "Service-Route", "User-Agent", "Server", "Subject",
        "Event", "Allow-Events", "Subscription-State", "Refer-To", "Referred-By",
        "Replaces", "Session-Expires", "Min-SE", "Authorization", "Proxy-Authorization",
        "WWW-Authenticate", "Proxy-Authenticate", "Authentication-Info", "Date",
        "Timestamp", "Organization", "Priority", "Retry-After", "Warning", "Alert-Info",
        "Call-Info", "Error-Info", "In-Reply-To", "Reply-To", "MIME-Version", "RAck",
        "RSeq", "P-Asserted-Identity", "P-Preferred-Identity", "Privacy", "Reason",
        "Accept-Contact", "Reject-Contact", "Request-Disposition", "Identity",
        "Identity-Info", "Security-Client", "Security-Server", "Security-Verify",
        "Diversion", "History-Info", "Flow-Timer",
    )
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1).
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "path", "service-route", "allow",
        "supported", "require", "proxy-require", "unsupported", "accept",
        "accept-encoding", "accept-language", "allow-events", "content-encoding",
        "content-language", "warning", "alert-info", "call-info", "error-info",
        "in-reply-to", "proxy-authorization", "p-asserted-identity", "reason",
        "security-client", "security-server", "security-verify", "history-info",
        "diversion",
    }
)

# Headers that may appear at most once; duplicates make a request invalid.
SINGLE_HEADERS = frozenset(
    {
        "from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type",
        "expires", "min-expires", "session-expires", "subject", "event", "refer-to",
        "replaces", "rack", "rseq", "date", "timestamp", "min-se",
    }
)


_KEY_CACHE: dict[str, str] = {}


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact form expanded."""
    key = _KEY_CACHE.get(name)
    if key is None:
        key = name.lower()
        key = COMPACT.get(key, key)
        if len(_KEY_CACHE) < 512:  # names come from our own code; stay bounded anyway
            _KEY_CACHE[name] = key
    return key


class Headers:
    """An ordered multimap of header fields: ``(key, name, value)`` triples."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str, str]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = items if items is not None else []

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _key, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str, str]]:
        return self._items

    def get(self, name: str) -> str | None:
        key = header_key(name)
        for k, _n, v in self._items:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key = header_key(name)
        return [v for k, _n, v in self._items if k == key]

    def values(self, name: str) -> list[str]:
        """All values of a header, comma lists split (for list-valued headers)."""
        key = header_key(name)
        out: list[str] = []
        for k, _n, v in self._items:
            if k == key:
                if key in LIST_HEADERS:
                    out.extend(split_commas(v))
                else:
                    out.append(v)
        return out

    def count(self, name: str) -> int:
        key = header_key(name)
        return sum(1 for k, _n, _v in self._items if k == key)

    def add(self, name: str, value: str) -> None:
        key = header_key(name)
        self._items.append((key, CANONICAL.get(key, name), value))

    def insert_first(self, name: str, value: str) -> None:
        key = header_key(name)
        self._items.insert(0, (key, CANONICAL.get(key, name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of ``name`` by one, at the place of the first."""
        key = header_key(name)
        for idx, (k, n, _v) in enumerate(self._items):
            if k == key:
                self._items[idx] = (k, n, value)
                self._items[idx + 1 :] = [it for it in self._items[idx + 1 :] if it[0] != key]
                return
        self.add(name, value)

    def remove(self, name: str) -> int:
        key = header_key(name)
        before = len(self._items)
        self._items = [it for it in self._items if it[0] != key]
        return before - len(self._items)

    def replace_first_value(self, name: str, value: str) -> None:
        """Replace the first element of a list header, keeping the rest of its line."""
        key = header_key(name)
        for idx, (k, n, v) in enumerate(self._items):
            if k == key:
                rest = split_commas(v)[1:] if "," in v else []
                self._items[idx] = (k, n, ", ".join([value, *rest]))
                return
        raise KeyError(name)

    def copy(self) -> Headers:
        return Headers(list(self._items))


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(400, "malformed CSeq")
    num, method = parts
    if not is_number(num) or len(num.lstrip("0")) > 10 or int(num) >= 2**31:
        raise SipParseError(400, "CSeq number out of range")
    if not is_token(method):
        raise SipParseError(400, "malformed CSeq method")
    return CSeq(int(num), method)


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host.lower(), self.port

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


# Via as phones write it: SIP/2.0/UDP host[:port][;params]. Anything else
# (LWS inside the protocol, IPv6 sent-by, ...) takes the general path.
_COMMON_VIA = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?)(?::([0-9]{1,5}))?"
    r"[ \t]*(;.*)?"
)


def parse_via(value: str) -> Via:
    """Parse one Via element (not a comma list)."""
    match = _COMMON_VIA.fullmatch(value)
    if match is not None:
        transport, host, port_text, ptext = match.groups()
        port = int(port_text) if port_text is not None else None
        if port is not None and port > 65535:
            raise SipParseError(400, "malformed port in Via")
        return Via(transport.upper(), host, port, parse_params(ptext) if ptext else {})
    return _parse_via_general(value)


def _parse_via_general(value: str) -> Via:
    first = value.find("/")
    second = value.find("/", first + 1)
    if first < 0 or second < 0:
        raise SipParseError(400, "malformed Via sent-protocol")
    name = value[:first].strip()
    version = value[first + 1 : second].strip()
    rest = value[second + 1 :].lstrip(" \t")
    cut = 0
    while cut < len(rest) and rest[cut] not in " \t":
        cut += 1
    transport = rest[:cut]
    if not (is_token(name) and is_token(version) and is_token(transport)):
        raise SipParseError(400, "malformed Via sent-protocol")
    rest = rest[cut:].lstrip(" \t")
    semi = rest.find(";")
    sent_by = (rest if semi < 0 else rest[:semi]).rstrip(" \t")
    params = parse_params(rest[semi:]) if semi >= 0 else {}
    host, port = _split_hostport(sent_by)
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


def _split_hostport(text: str) -> tuple[str, int | None]:
    if not text:
        raise SipParseError(400, "missing sent-by in Via")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(400, "malformed IPv6 sent-by")
        host, tail = text[: end + 1], text[end + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        tail = sep + port_text
    tail = tail.strip(" \t")
    if not tail:
        return host, None
    digits = tail[1:].strip(" \t") if tail.startswith(":") else ""
    if not is_number(digits) or len(digits) > 5 or int(digits) > 65535:
        raise SipParseError(400, "malformed port in Via")
    if any(c in host for c in " \t<>\"@,"):
        raise SipParseError(400, "malformed host in Via")
    return host, int(digits)


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header params."""

    uri: Uri
    display: str | None = None  # as written: token(s) or a quoted-string
    params: dict[str, str | None] = field(default_factory=dict)
    raw_uri: str = ""  # the URI text as received; kept for exact relaying

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def display_name(self) -> str | None:
        return None if self.display is None else unquote(self.display)

    def __str__(self) -> str:
        uri = self.raw_uri or str(self.uri)
        display = f"{self.display} " if self.display else ""
        return f"{display}<{uri}>{format_params(self.params)}"


# The shapes From, To and Contact nearly always have: <uri>;params or
# "Display" <uri>;params, with nothing quoted or escaped in the params.
_COMMON_NAME_ADDR = re.compile(r'[ \t]*(?:("[^"\\]*")[ \t]*)?<([^<>"\s]+)>[ \t]*(;[^"]*)?')


def parse_name_addr(value: str) -> NameAddr:
    match = _COMMON_NAME_ADDR.fullmatch(value)
    if match is not None:
        display, raw_uri, ptext = match.groups()
        ptext = ptext.rstrip(" \t") if ptext else ""
        return NameAddr(parse_uri(raw_uri), display, parse_params(ptext), raw_uri)
    return _parse_name_addr_general(value)


def _parse_name_addr_general(value: str) -> NameAddr:
    text = value.strip(" \t")
    i = 0
    n = len(text)
    display: str | None = None
    if text.startswith('"'):
        display, i = read_quoted(text, 0)
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "<":
            raise SipParseError(400, "display name without <URI>")
    else:
        lt = text.find("<")
        if lt >= 0:
            words = text[:lt].split()
            for word in words:
                if not is_token(word):
                    raise SipParseError(400, "display name needs quotes")
            display = " ".join(words) or None
            i = lt
    if i < n and text[i] == "<":
        gt = text.find(">", i)
        if gt < 0:
            raise SipParseError(400, "unterminated <URI>")
        raw_uri = text[i + 1 : gt].strip(" \t")
        rest = text[gt + 1 :]
    else:
        # addr-spec: header parameters start at the first ';' and the URI
        # cannot carry parameters, headers or commas of its own.
        semi = text.find(";")
        raw_uri = text if semi < 0 else text[:semi]
        raw_uri = raw_uri.strip(" \t")
        rest = "" if semi < 0 else text[semi:]
        if any(c in raw_uri for c in "?, \t"):
            raise SipParseError(400, "addr-spec with reserved characters needs <>")
    rest = rest.strip(" \t")
    if rest and not rest.startswith(";"):
        raise SipParseError(400, "junk after URI")
    uri = parse_uri(raw_uri)
    return NameAddr(uri, display, parse_params(rest), raw_uri)
