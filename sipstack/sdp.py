"""SDP (RFC 8866, formerly RFC 4566): parse, inspect, rewrite and serialize.

Pure: bytes in, objects out, bytes out. Enough for a B2BUA that passes SDP
through (with a NAT-aware rewrite of the connection address) and for the
offer/answer of media applications (RFC 3264): directions, hold, rtpmap.

Parsing is strict where a wrong guess would misroute media (the v=/o=/s=
header, c=, m=, t=, b=) and lenient elsewhere: LF or CRLF line ends, blank
lines ignored, a space in the o= username tolerated, an m= line without
formats accepted, lines of unknown type kept. Malformed input raises
:class:`SdpError` (a ``ValueError``) and nothing else.

Lines the model does not interpret (i=, u=, e=, p=, z=, k=, a second media
c=, unknown types) are kept in ``other``, verbatim and in their order within
each slot of the RFC 8866 §5 grammar, and are written back in that slot, so
``parse_sdp(sdp.serialize()) == sdp``: serialization round-trips semantically,
not byte for byte (CRLF is always written, lines out of grammar order are put
in order, runs of blanks inside structured lines become one space).

The dataclasses are mutable, but the module-level helpers that return a
:class:`SessionDescription` never change their argument: they work on a copy.

Hold. A stream is on hold from its author's side when it is ``sendonly`` or
``inactive``. The RFC 2543 way, ``c=0.0.0.0`` (and its IPv6 analogue ``::``),
says "do not send to me" without saying whether the author still sends, so
:func:`direction` treats it as removing the *receive* half of whatever the
direction attributes say: sendrecv becomes sendonly, recvonly becomes
inactive, sendonly and inactive stay. A stream with port 0 is rejected or
disabled (RFC 3264 §6, §8.2) and is ``inactive``.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field

__all__ = [
    "DIRECTIONS",
    "MAX_LINES",
    "MAX_LINE_BYTES",
    "Attribute",
    "Bandwidth",
    "Connection",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "Timing",
    "bump_version",
    "direction",
    "fmtp",
    "is_hold",
    "is_private_address",
    "media_endpoint",
    "parse_sdp",
    "rtpmap",
    "set_direction",
    "with_connection_address",
]

MAX_LINES = 512
MAX_LINE_BYTES = 4096

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# (name, value): ``a=sendonly`` is ("sendonly", None), ``a=foo:`` is ("foo", "").
Attribute = tuple[str, str | None]

_DIGITS = re.compile(r"[0-9]+")
_FIELD_SEP = re.compile(r"[ \t]+")
_TYPE_LETTER = re.compile(r"[A-Za-z]")

# Where uninterpreted lines go (RFC 8866 §5 order). The parser sorts ``other`` by
# these slots (stably), so what it returns is what serialize() writes back.
_SESSION_BEFORE_C = "iuep"  # v o s [i u e p] c b t r [z k] [unknown] a
_SESSION_AFTER_T = "zk"
_MEDIA_BEFORE_C = "i"  # m [i] c [c...] b [k] [unknown] a
_MEDIA_AFTER_B = "k"


def _session_slot(line: tuple[str, str]) -> int:
    kind = line[0]
    if kind in _SESSION_BEFORE_C:
        return 0
    return 1 if kind in _SESSION_AFTER_T else 2


def _media_slot(line: tuple[str, str]) -> int:
    kind = line[0]
    if kind in _MEDIA_BEFORE_C:
        return 0
    if kind == "c":
        return 1
    return 2 if kind in _MEDIA_AFTER_B else 3


class SdpError(ValueError):
    """Bytes that are not an acceptable session description."""


@dataclass
class Origin:
    """``o=``: the session's identity; ``sess_version`` grows with each change."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def line(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class Connection:
    """``c=``. ``address`` is as written, including a multicast ``/ttl[/n]`` suffix."""

    nettype: str
    addrtype: str
    address: str

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]

    def line(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass
class Bandwidth:
    """``b=<bwtype>:<bandwidth>``, e.g. AS (kbit/s) or TIAS (bit/s)."""

    bwtype: str
    bandwidth: int

    def line(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass
class Timing:
    """``t=<start> <stop>`` and the ``r=`` lines after it (kept verbatim)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


class _Attributes:
    """Attribute look-ups shared by the session and media levels."""

    attributes: list[Attribute]

    def has_attribute(self, name: str) -> bool:
        return any(n == name for n, _ in self.attributes)

    def get_attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value``; None if absent or a flag."""
        for n, v in self.attributes:
            if n == name:
                return v
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [v for n, v in self.attributes if n == name and v is not None]


@dataclass
class MediaDescription(_Attributes):
    """One ``m=`` section."""

    media: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        other = sorted(((_media_slot(o), f"{o[0]}={o[1]}") for o in self.other),
                       key=lambda slot_line: slot_line[0])
        out = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        out += [line for slot, line in other if slot == 0]
        if self.connection is not None:
            out.append(f"c={self.connection.line()}")
        out += [line for slot, line in other if slot == 1]
        out += [f"b={b.line()}" for b in self.bandwidths]
        out += [line for slot, line in other if slot >= 2]
        out += [f"a={_attribute_text(a)}" for a in self.attributes]
        return out


@dataclass
class SessionDescription(_Attributes):
    """A whole session description; ``serialize()`` gives the body bytes (CRLF)."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    times: list[Timing] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        other = sorted(((_session_slot(o), f"{o[0]}={o[1]}") for o in self.other),
                       key=lambda slot_line: slot_line[0])
        out = [f"v={self.version}", f"o={self.origin.line()}", f"s={self.session_name}"]
        out += [line for slot, line in other if slot == 0]
        if self.connection is not None:
            out.append(f"c={self.connection.line()}")
        out += [f"b={b.line()}" for b in self.bandwidths]
        for timing in self.times:
            out.append(f"t={timing.start} {timing.stop}")
            out += [f"r={r}" for r in timing.repeats]
        out += [line for slot, line in other if slot >= 1]
        out += [f"a={_attribute_text(a)}" for a in self.attributes]
        for media in self.media:
            out += media.lines()
        return out

    def serialize(self) -> bytes:
        return ("\r\n".join(self.lines()) + "\r\n").encode("utf-8")


def _attribute_text(attribute: Attribute) -> str:
    name, value = attribute
    return name if value is None else f"{name}:{value}"


# --- parsing -------------------------------------------------------------------------


def _fields(value: str) -> list[str]:
    value = value.strip(" \t")
    return _FIELD_SEP.split(value) if value else []


def _number(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise SdpError(f"{what} is not a number: {text!r}")
    return int(text)


def _parse_origin(value: str) -> Origin:
    parts = _fields(value)
    if len(parts) < 6:
        raise SdpError(f"o= needs 6 fields, got {len(parts)}: {value!r}")
    # Tolerate a username with spaces (seen in the wild): the last five are fixed.
    username = " ".join(parts[:-5])
    sess_id, version, nettype, addrtype, address = parts[-5:]
    _number(sess_id, "o= sess-id")
    return Origin(username, sess_id, _number(version, "o= sess-version"),
                  nettype, addrtype, address)


def _parse_connection(value: str) -> Connection:
    parts = _fields(value)
    if len(parts) != 3:
        raise SdpError(f"c= needs <nettype> <addrtype> <address>: {value!r}")
    return Connection(*parts)


def _parse_bandwidth(value: str) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    bwtype = bwtype.strip(" \t")
    if not sep or not bwtype:
        raise SdpError(f"b= needs <bwtype>:<bandwidth>: {value!r}")
    return Bandwidth(bwtype, _number(amount.strip(" \t"), "b= bandwidth"))


def _parse_timing(value: str) -> Timing:
    parts = _fields(value)
    if len(parts) != 2:
        raise SdpError(f"t= needs <start> <stop>: {value!r}")
    return Timing(_number(parts[0], "t= start"), _number(parts[1], "t= stop"))


def _parse_media(value: str) -> MediaDescription:
    parts = _fields(value)
    if len(parts) < 3:
        raise SdpError(f"bad m= line, needs <media> <port> <proto> <fmt>...: {value!r}")
    media, port_text, proto, *formats = parts
    port_part, slash, count_part = port_text.partition("/")
    port = _number(port_part, "m= port")
    if port > 65535:
        raise SdpError(f"bad m= line, port out of range: {port}")
    port_count = None
    if slash:
        port_count = _number(count_part, "m= number of ports")
        if port_count == 0:
            raise SdpError("bad m= line, number of ports is 0")
    return MediaDescription(media, port, proto, formats, port_count)


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    name = name.strip(" \t")
    if not name:
        raise SdpError(f"a= without an attribute name: {value!r}")
    return (name, rest if sep else None)


def _split_lines(data: bytes) -> list[bytes]:
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    if len(raw) > MAX_LINES:
        raise SdpError(f"too many lines: {len(raw)} > {MAX_LINES}")
    lines = []
    for number, raw_line in enumerate(raw, 1):
        line = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        if len(line) > MAX_LINE_BYTES:
            raise SdpError(f"line {number} too long: {len(line)} > {MAX_LINE_BYTES} bytes")
        lines.append(line)
    return lines


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse a session description; raise :class:`SdpError` if it is malformed."""
    raw_lines = _split_lines(data)
    try:
        text_lines = [line.decode("utf-8") for line in raw_lines]
    except UnicodeDecodeError as exc:
        raise SdpError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None

    parsed: list[tuple[int, str, str]] = []
    for number, line in enumerate(text_lines, 1):
        if not line.strip(" \t"):
            continue  # blank lines, e.g. a trailing empty line after the body
        if "\r" in line or "\0" in line:
            raise SdpError(f"line {number}: CR or NUL inside a line")
        kind, eq, value = line[:1], line[1:2], line[2:]
        if not _TYPE_LETTER.fullmatch(kind) or eq != "=":
            raise SdpError(f"line {number}: not <type>=<value>: {line[:60]!r}")
        parsed.append((number, kind, value))

    if not parsed or parsed[0][1] != "v":
        raise SdpError("missing v= (it must be the first line)")
    return _build(parsed)


def _build(parsed: list[tuple[int, str, str]]) -> SessionDescription:
    version: int | None = None
    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = []
    times: list[Timing] = []
    attributes: list[Attribute] = []
    other: list[tuple[str, str]] = []
    media: list[MediaDescription] = []

    for number, kind, value in parsed:
        try:
            if kind == "m":
                media.append(_parse_media(value))
            elif media:
                _media_line(media[-1], kind, value)
            elif kind == "v":
                if version is not None:
                    raise SdpError("more than one v=")
                version = _number(value.strip(" \t"), "v= version")
            elif kind == "o":
                if origin is not None:
                    raise SdpError("more than one o=")
                origin = _parse_origin(value)
            elif kind == "s":
                if session_name is not None:
                    raise SdpError("more than one s=")
                session_name = value
            elif kind == "c":
                if connection is not None:
                    raise SdpError("more than one session-level c=")
                connection = _parse_connection(value)
            elif kind == "b":
                bandwidths.append(_parse_bandwidth(value))
            elif kind == "t":
                times.append(_parse_timing(value))
            elif kind == "r":
                if not times:
                    raise SdpError("r= without a t= before it")
                times[-1].repeats.append(value)
            elif kind == "a":
                attributes.append(_parse_attribute(value))
            else:
                other.append((kind, value))
        except SdpError as exc:
            raise SdpError(f"line {number}: {exc}") from None

    if origin is None:
        raise SdpError("missing o=")
    if session_name is None:
        raise SdpError("missing s=")
    assert version is not None  # parse_sdp checked the first line
    other.sort(key=_session_slot)
    for m in media:
        m.other.sort(key=_media_slot)
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        version=version,
        connection=connection,
        bandwidths=bandwidths,
        times=times,
        attributes=attributes,
        media=media,
        other=other,
    )


def _media_line(media: MediaDescription, kind: str, value: str) -> None:
    if kind in "vostr":
        raise SdpError(f"{kind}= inside a media section")
    if kind == "c":
        if media.connection is None:
            media.connection = _parse_connection(value)
        else:  # layered multicast (RFC 8866 §5.7): kept, not interpreted
            _parse_connection(value)
            media.other.append((kind, " ".join(_fields(value))))
    elif kind == "b":
        media.bandwidths.append(_parse_bandwidth(value))
    elif kind == "a":
        media.attributes.append(_parse_attribute(value))
    else:
        media.other.append((kind, value))


# --- inspection ----------------------------------------------------------------------


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _effective_connection(
    media: MediaDescription, session: SessionDescription | None
) -> Connection | None:
    if media.connection is not None:
        return media.connection
    return session.connection if session is not None else None


def _direction_attribute(attributes: list[Attribute]) -> str | None:
    found = None
    for name, value in attributes:
        if value is None and name in DIRECTIONS:
            found = name  # the last one wins; RFC 3264 allows only one
    return found


def direction(media: MediaDescription, session: SessionDescription | None = None) -> str:
    """sendrecv, sendonly, recvonly or inactive, as the SDP's author means it.

    A media-level attribute wins over a session-level one; without either the
    stream is sendrecv (RFC 3264 §5.1). Port 0 is inactive. A connection
    address of 0.0.0.0 or :: (RFC 2543 hold) takes away the receive half:
    sendrecv -> sendonly, recvonly -> inactive.
    """
    if media.port == 0:
        return "inactive"
    value = _direction_attribute(media.attributes)
    if value is None and session is not None:
        value = _direction_attribute(session.attributes)
    value = value or "sendrecv"
    conn = _effective_connection(media, session)
    if conn is not None and _is_unspecified(conn.host):
        value = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(value, value)
    return value


def is_hold(sdp: SessionDescription) -> bool:
    """Whether this SDP puts the other side on hold.

    True when there is at least one active (port != 0) audio stream and every
    active audio stream is sendonly or inactive, c=0.0.0.0 included (see
    :func:`direction`). An SDP without active audio is not a hold.
    """
    audio = [m for m in sdp.media if m.media == "audio" and m.port != 0]
    return bool(audio) and all(direction(m, sdp) in ("sendonly", "inactive") for m in audio)


# RFC 3551 §6 static payload types: encoding, clock rate, channels.
_STATIC_PT: dict[int, tuple[str, int, str | None]] = {
    0: ("PCMU", 8000, None), 3: ("GSM", 8000, None), 4: ("G723", 8000, None),
    5: ("DVI4", 8000, None), 6: ("DVI4", 16000, None), 7: ("LPC", 8000, None),
    8: ("PCMA", 8000, None), 9: ("G722", 8000, None), 10: ("L16", 44100, "2"),
    11: ("L16", 44100, "1"), 12: ("QCELP", 8000, None), 13: ("CN", 8000, None),
    14: ("MPA", 90000, None), 15: ("G728", 8000, None), 16: ("DVI4", 11025, None),
    17: ("DVI4", 22050, None), 18: ("G729", 8000, None), 25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None), 28: ("nv", 90000, None), 31: ("H261", 90000, None),
    32: ("MPV", 90000, None), 33: ("MP2T", 90000, None), 34: ("H263", 90000, None),
}


def _payload_type(text: str) -> int | None:
    if _DIGITS.fullmatch(text) and int(text) <= 127:
        return int(text)
    return None


def rtpmap(media: MediaDescription) -> dict[int, tuple[str, int, str | None]]:
    """Payload type -> (encoding, clock rate, channels or None), in m= preference order.

    Only the formats the m= line lists are included: from their a=rtpmap, or,
    for RTP profiles, from the RFC 3551 static table when a=rtpmap is absent.
    Malformed a=rtpmap values are skipped.
    """
    mapped: dict[int, tuple[str, int, str | None]] = {}
    for value in media.attribute_values("rtpmap"):
        pt_text, _, rest = value.strip(" \t").partition(" ")
        pt = _payload_type(pt_text)
        parts = rest.strip(" \t").split("/")
        if pt is None or pt in mapped or len(parts) not in (2, 3) or not parts[0]:
            continue
        if not _DIGITS.fullmatch(parts[1]):
            continue
        channels = parts[2] if len(parts) == 3 else None
        mapped[pt] = (parts[0], int(parts[1]), channels)

    result: dict[int, tuple[str, int, str | None]] = {}
    is_rtp = "RTP/" in media.proto.upper()
    for fmt in media.formats:
        pt = _payload_type(fmt) if is_rtp else None
        if pt is None or pt in result:
            continue
        if pt in mapped:
            result[pt] = mapped[pt]
        elif pt in _STATIC_PT:
            result[pt] = _STATIC_PT[pt]
    return result


def fmtp(media: MediaDescription) -> dict[int, str]:
    """Payload type -> its a=fmtp parameters (e.g. ``101: "0-16"``)."""
    result: dict[int, str] = {}
    for value in media.attribute_values("fmtp"):
        pt_text, _, params = value.strip(" \t").partition(" ")
        pt = _payload_type(pt_text)
        if pt is not None and pt not in result:
            result[pt] = params.strip(" \t")
    return result


def media_endpoint(sdp: SessionDescription, index: int = 0) -> tuple[str, int] | None:
    """(address, port) RTP for stream ``index`` goes to, or None.

    None when there is no such stream, its port is 0, it has no connection
    address, or the address is 0.0.0.0/:: (hold: send nothing).
    """
    if not 0 <= index < len(sdp.media):
        return None
    media = sdp.media[index]
    conn = _effective_connection(media, sdp)
    if media.port == 0 or conn is None or _is_unspecified(conn.host):
        return None
    return conn.host, media.port


# --- rewriting -----------------------------------------------------------------------


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def with_connection_address(
    sdp: SessionDescription, address: str, *, only_private: bool = False
) -> SessionDescription:
    """A copy with every c= address (session and media) and a=rtcp address replaced.

    For NAT traversal: replace the private address a phone wrote with the
    public address its packets came from. The address type follows the new
    address (IP4/IP6). Hold addresses (0.0.0.0, ::) are left alone, and with
    ``only_private`` so is every address that :func:`is_private_address`
    does not call private. o= is not changed. Raises ValueError if
    ``address`` is not an IP address.
    """
    new_ip = ipaddress.ip_address(_strip_brackets(address))
    new_host = str(new_ip)
    addrtype = "IP4" if new_ip.version == 4 else "IP6"

    def wanted(host: str) -> bool:
        if _is_unspecified(host):
            return False
        return is_private_address(host) if only_private else True

    def rewrite(conn: Connection | None) -> Connection | None:
        if conn is None or not wanted(conn.host):
            return conn
        return Connection(conn.nettype, addrtype, new_host)

    result = copy.deepcopy(sdp)
    result.connection = rewrite(result.connection)
    for media in result.media:
        media.connection = rewrite(media.connection)
        attributes: list[Attribute] = []
        for name, value in media.attributes:
            parts = _fields(value) if name == "rtcp" and value is not None else []
            # RFC 3605: a=rtcp:<port> [<nettype> <addrtype> <address>]
            if len(parts) == 4 and wanted(parts[3]):
                attributes.append((name, f"{parts[0]} {parts[1]} {addrtype} {new_host}"))
            else:
                attributes.append((name, value))
        media.attributes = attributes
    return result


def set_direction(
    sdp: SessionDescription, value: str, index: int | None = None
) -> SessionDescription:
    """A copy with stream ``index`` (all streams if None) set to direction ``value``.

    The media-level direction attribute is replaced in place, or appended.
    With ``index=None`` session-level direction attributes are removed too.
    Does not bump o= (see :func:`bump_version`). ValueError for a bad
    direction or index.
    """
    if value not in DIRECTIONS:
        raise ValueError(f"not a direction: {value!r}")
    result = copy.deepcopy(sdp)
    if index is None:
        targets = result.media
        result.attributes = [
            a for a in result.attributes if not (a[1] is None and a[0] in DIRECTIONS)
        ]
    elif 0 <= index < len(result.media):
        targets = [result.media[index]]
    else:
        raise ValueError(f"no media stream {index}")
    for media in targets:
        attributes: list[Attribute] = []
        placed = False
        for name, attr_value in media.attributes:
            if attr_value is None and name in DIRECTIONS:
                if not placed:
                    attributes.append((value, None))
                    placed = True
                continue
            attributes.append((name, attr_value))
        if not placed:
            attributes.append((value, None))
        media.attributes = attributes
    return result


def bump_version(sdp: SessionDescription) -> SessionDescription:
    """A copy with o= sess-version increased by one, for a changed re-offer (RFC 3264 §8)."""
    result = copy.deepcopy(sdp)
    result.origin.sess_version += 1
    return result


_COMPLEMENT = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
               "inactive": "inactive"}


def answer_from(offer: SessionDescription, source: SessionDescription) -> SessionDescription:
    """An RFC 3264 answer to ``offer`` that points media at ``source``'s addresses.

    For joining two parties that each made an offer (call pickup: the caller's
    INVITE and the picker's INVITE): each gets, as its answer, the other's
    session, cut down to what it offered. Per m= line of the offer, in order:
    the codecs both sides have (matched by encoding name and clock rate) with
    the offer's payload numbers (RFC 3264 §6.1), the source's address and port,
    and the direction that complements the offer's. A stream the source lacks,
    or with no common codec, is rejected (port 0).
    """
    answer = copy.deepcopy(source)
    answer.attributes = [a for a in answer.attributes
                         if not (a[1] is None and a[0] in DIRECTIONS)]
    answer.origin.sess_version += 1
    streams: list[MediaDescription] = []
    for index, wanted in enumerate(offer.media):
        have = answer.media[index] if index < len(source.media) else None
        offered = rtpmap(wanted)
        theirs = rtpmap(have) if have is not None and have.media == wanted.media else {}
        names = {(enc.lower(), rate) for enc, rate, _ in theirs.values()}
        common = [pt for pt, (enc, rate, _) in offered.items() if (enc.lower(), rate) in names]
        if have is None or not common or wanted.port == 0 or have.port == 0:
            streams.append(MediaDescription(wanted.media, 0, wanted.proto, wanted.formats[:1]))
            continue
        maps = {pt: v for pt, v in fmtp(wanted).items() if pt in common}
        attributes: list[Attribute] = [
            (name, value) for name, value in have.attributes
            if name not in ("rtpmap", "fmtp") and not (value is None and name in DIRECTIONS)
        ]
        for pt in common:
            enc, rate, channels = offered[pt]
            suffix = f"/{channels}" if channels else ""
            attributes.append(("rtpmap", f"{pt} {enc}/{rate}{suffix}"))
            if pt in maps:
                attributes.append(("fmtp", f"{pt} {maps[pt]}"))
        attributes.append((_COMPLEMENT[direction(wanted, offer)], None))
        have.formats = [str(pt) for pt in common]
        have.attributes = attributes
        if have.connection is None and answer.connection is None and source.connection:
            have.connection = source.connection
        streams.append(have)
    answer.media = streams
    return answer


# --- addresses -----------------------------------------------------------------------

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # RFC 6598 carrier-grade NAT
        "169.254.0.0/16",  # link-local
        "fe80::/10",
        "fc00::/7",  # RFC 4193 unique local
    )
)


def is_private_address(host: str) -> bool:
    """Whether ``host`` is an RFC 1918, CGNAT, link-local or ULA address.

    Not an IP address (a host name, garbage) is False. IPv4-mapped IPv6
    addresses are judged by their IPv4 address; ``[...]`` and ``%zone`` are
    accepted.
    """
    try:
        ip = ipaddress.ip_address(_strip_brackets(host.strip()))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in _PRIVATE_NETWORKS)
