"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed from text.

Objects keep the components as written (escapes included) so that ``str()``
gives back what was parsed; comparison follows RFC 3261 §19.1.4.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote as _pct_decode

from sipstack.errors import SipParseError
from sipstack.grammar import format_params, parse_params

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9\-_.]*[A-Za-z0-9_])?\.?")
_BUGGY_V4_TAIL = re.compile(r"(.*::):(\d+\.\d+\.\d+\.\d+)")
# RFC 3261 user/password characters: unreserved, escaped and user-unreserved.
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_MAX_URI = 4096
_COMMON_SCHEMES = frozenset({"sip", "sips", "tel"})
# RFC 3261 §19.1.4 (and its examples for transport): never ignored when only one URI has them.
_MUST_MATCH_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})


@dataclass(slots=True)
class SipUri:
    scheme: str  # "sip" or "sips", lower case
    host: str  # hostname or IPv4, or IPv6 with brackets
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def host_bare(self) -> str:
        """The host without IPv6 brackets, lower case: what a socket wants."""
        if self.host.startswith("["):
            return _ipv6_literal(self.host[1:-1]) or self.host[1:-1].lower()
        return self.host.lower()

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else _pct_decode(self.user)

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def equivalent(self, other: object) -> bool:
        """RFC 3261 §19.1.4 comparison."""
        if not isinstance(other, SipUri):
            return False
        if self.scheme != other.scheme or self.port != other.port:
            return False
        if self.user_unescaped != other.user_unescaped:
            return False
        if (self.password and _pct_decode(self.password)) != (
            other.password and _pct_decode(other.password)
        ):
            return False
        if self.host_bare != other.host_bare:
            return False
        # Parameters in both must match; these must match even when only one has them.
        for name in self.params.keys() | other.params.keys():
            in_both = name in self.params and name in other.params
            if in_both or name in _MUST_MATCH_PARAMS:
                mine, theirs = self.params.get(name), other.params.get(name)
                if (mine or "").lower() != (theirs or "").lower() or (mine is None) != (
                    theirs is None
                ):
                    return False
        return {k.lower(): _pct_decode(v) for k, v in self.headers.items()} == {
            k.lower(): _pct_decode(v) for k, v in other.headers.items()
        }


@dataclass(slots=True)
class TelUri:
    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    scheme = "tel"

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"

    def equivalent(self, other: object) -> bool:
        return (
            isinstance(other, TelUri)
            and _strip_visual(self.number) == _strip_visual(other.number)
            and self.params == other.params
        )


@dataclass(slots=True)
class AbsoluteUri:
    """A URI of a scheme we do not interpret; kept so it can be relayed or refused (416)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def equivalent(self, other: object) -> bool:
        return isinstance(other, AbsoluteUri) and str(self) == str(other)


Uri = SipUri | TelUri | AbsoluteUri


def _ipv6_literal(text: str) -> str | None:
    """The compressed form of an IPv6 literal, or None when it is not one.

    RFC 5118 §4.10: the three-colon form before an embedded IPv4 address
    (``2001:db8:::192.0.2.1``), from an ABNF bug in RFC 3261, is tolerated.
    """
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        pass
    match = _BUGGY_V4_TAIL.fullmatch(text)
    if match is None:
        return None
    try:
        return str(ipaddress.IPv6Address(match.group(1) + match.group(2)))
    except ValueError:
        return None


def _strip_visual(number: str) -> str:
    return "".join(c for c in number if c not in "-.()")


def parse_uri(text: str) -> Uri:
    if len(text) > _MAX_URI:
        raise SipParseError(414, "URI too long")
    colon = text.find(":")
    if colon <= 0:
        raise SipParseError(400, f"not a URI: {text[:60]!r}")
    scheme = text[:colon]
    if scheme not in _COMMON_SCHEMES:
        if _SCHEME_RE.fullmatch(scheme) is None:
            raise SipParseError(400, f"bad URI scheme {scheme[:20]!r}")
        scheme = scheme.lower()
    rest = text[colon + 1 :]
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise SipParseError(400, "empty tel URI")
        return TelUri(number, parse_params(params))
    if not rest or any(c in rest for c in " \t<>\""):
        raise SipParseError(400, f"malformed {scheme} URI")
    return AbsoluteUri(scheme, rest)


# The shape nearly every URI on the wire has: no escapes, no IPv6, no URI
# headers. Matching it with one regex is several times cheaper than the
# general parser below, which handles everything else (and must agree).
_COMMON_SIP = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,]*))?@)?"
    r"([A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9_])?\.?)"
    r"(?::([0-9]{1,5}))?"
    r"(;[^?]*)?"
)


def _parse_sip(scheme: str, rest: str) -> SipUri:
    match = _COMMON_SIP.fullmatch(rest)
    # An "@" the user group did not take belongs to a shape only the general
    # parser reads (e.g. a user part before an IPv6 host).
    if match is not None and (match.group(1) is not None or "@" not in rest):
        user, password, host, port_text, ptext = match.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise SipParseError(400, "malformed port in SIP URI")
        params = parse_params(ptext) if ptext else {}
        return SipUri(scheme, host, user, password, port, params, {})
    return _parse_sip_general(scheme, rest)


def _parse_sip_general(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        password = pw if sep else None
        if not user or _USER_RE.fullmatch(user) is None:
            raise SipParseError(400, "malformed user part in SIP URI")
        if password is not None and _PASSWORD_RE.fullmatch(password) is None:
            raise SipParseError(400, "malformed password in SIP URI")
    # host
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise SipParseError(400, "unterminated IPv6 reference")
        host = rest[: end + 1]
        if _ipv6_literal(host[1:-1]) is None:
            raise SipParseError(400, "malformed IPv6 reference")
        i = end + 1
    else:
        i = 0
        n = len(rest)
        while i < n and rest[i] not in ":;?":
            i += 1
        host = rest[:i]
        if not host or _HOSTNAME_RE.fullmatch(host) is None:
            raise SipParseError(400, f"malformed host {host[:60]!r} in SIP URI")
    port: int | None = None
    n = len(rest)
    if i < n and rest[i] == ":":
        j = i + 1
        while j < n and rest[j] in "0123456789":
            j += 1
        digits = rest[i + 1 : j]
        if not digits or len(digits) > 5 or int(digits) > 65535:
            raise SipParseError(400, "malformed port in SIP URI")
        port = int(digits)
        i = j
    params: dict[str, str | None] = {}
    headers: dict[str, str] = {}
    if i < n and rest[i] == ";":
        q = rest.find("?", i)
        ptext = rest[i:] if q < 0 else rest[i:q]
        params = parse_params(ptext)
        i = n if q < 0 else q
    if i < n and rest[i] == "?":
        for item in rest[i + 1 :].split("&"):
            name, sep, value = item.partition("=")
            if not name or not sep:
                raise SipParseError(400, "malformed URI header")
            headers[name] = value
        i = n
    if i != n:
        raise SipParseError(400, "trailing characters in SIP URI")
    return SipUri(scheme, host, user, password, port, params, headers)
