"""Property tests of the SIP parser: no input crashes it, and what it accepts round-trips.

Bad input from the network must become a SipParseError (and from that a reply
or a counted drop), never another exception escaping the event loop. That
holds for parse_message and also for the header views it parses on demand,
and for sipstack.validate.check_request, which must not raise at all.
"""

from __future__ import annotations

import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.message import Request, Response, parse_message
from sipstack.validate import check_request

DATA = Path(__file__).parent / "data"
TORTURE = sorted((*DATA.glob("rfc4475/*.dat"), *DATA.glob("rfc5118/*.dat")))
TORTURE_BYTES = [p.read_bytes() for p in TORTURE]

# No example database: the suite must not write into the work tree, and the
# examples are cheap enough to regenerate.
FAST = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Message = Request | Response


def exercise(message: Message) -> None:
    """Touch everything a caller may read; only SipParseError may come out of a view."""
    views = ["call_id", "cseq", "vias", "from_", "to", "max_forwards"]
    if isinstance(message, Request):
        views.append("request_uri")
    for view in views:
        try:
            getattr(message, view)
        except SipParseError:
            pass
    wire = message.to_bytes()
    assert isinstance(wire, bytes)
    if isinstance(message, Request):
        verdict = check_request(message)
        assert verdict is None or (isinstance(verdict[0], int) and isinstance(verdict[1], str))


def parse_or_refuse(data: bytes) -> Message | None:
    try:
        message = parse_message(data)
    except SipParseError as exc:
        assert 400 <= exc.status <= 599
        return None
    assert isinstance(message, Request | Response)
    exercise(message)
    return message


# -- (a) arbitrary bytes -----------------------------------------------------------------

FRAGMENTS = [
    b"INVITE sip:a@b.example SIP/2.0\r\n",
    b"REGISTER sip:b.example SIP/2.0\r\n",
    b"SIP/2.0 200 OK\r\n",
    b"Via: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\n",
    b"v: SIP/2.0/TCP [2001:db8::1]:5060;received=[::1]\r\n",
    b'From: "A \\" B" <sip:a@b.example>;tag=1\r\n',
    b"To: b <sip:b@[::ffff:1.2.3.4]:5070;lr>\r\n",
    b"t: sip:c@d;tag=x\r\n",
    b"Call-ID: x@y\r\n",
    b"CSeq: 1 INVITE\r\n",
    b"Max-Forwards: 70\r\n",
    b"Contact: *\r\n",
    b"m: <sip:u@h?Route=%3Csip:x%3E>;expires=0, <tel:+1>\r\n",
    b"Content-Length: 3\r\n",
    b"l: 0\r\n",
    b"Content-Type: application/sdp\r\n",
    b"Require: 100rel\r\n",
    b"Accept: */*\r\n",
    b"\r\n",
    b"\r\n ",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b'"',
    b"\\",
    b"<",
    b">",
    b"[",
    b"]",
    b"%",
    b"=",
    b"\x00",
    b"\xff",
    b"\xd0\xbd",
    b"\r",
    b"\n",
]

sipish_bytes = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=6)), max_size=40
).map(b"".join)


@settings(FAST, max_examples=2500)
@given(st.one_of(st.binary(max_size=1500), sipish_bytes))
def test_arbitrary_bytes_parse_or_raise_sip_parse_error(data: bytes) -> None:
    parse_or_refuse(data)


# -- (b) generated requests round-trip -------------------------------------------------

TOKEN = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(alphabet=TOKEN, min_size=1, max_size=10)
labels = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
hosts = st.one_of(domains, ipv4, ipv6)
ports = st.one_of(st.none(), st.integers(min_value=1, max_value=65535))
users = st.text(alphabet=string.ascii_letters + string.digits + "-_.!~*'()+$,;?/&=", max_size=10)
display_names = st.one_of(
    st.none(),
    st.text(alphabet=string.ascii_letters + string.digits + " .,@:<>", max_size=12).map(
        lambda s: '"' + s + '"'
    ),
    st.lists(st.text(alphabet=string.ascii_letters, min_size=1, max_size=6), min_size=1,
             max_size=3).map(" ".join),
)
METHODS = ["INVITE", "REGISTER", "OPTIONS", "BYE", "CANCEL", "ACK", "INFO", "MESSAGE", "NOTIFY"]
methods = st.one_of(st.sampled_from(METHODS), tokens)
# Names that are neither known headers nor compact forms.
unknown_names = tokens.map(lambda t: "X-" + t)
# Header values: printable ASCII and UTF-8, no line breaks.
values = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\r\n"),
    max_size=30,
)


def cased(name: str) -> st.SearchStrategy[str]:
    # Header names are case-insensitive (RFC 3261 §7.3.1).
    return st.sampled_from([name, name.lower(), name.upper()])


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    user = draw(users)
    host = draw(hosts)
    port = draw(ports)
    params = draw(st.dictionaries(tokens.map(str.lower), st.one_of(st.none(), tokens),
                                  max_size=2))
    text = "sip:" + (f"{user}@" if user else "") + host + ("" if port is None else f":{port}")
    return text + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@st.composite
def name_addrs(draw: st.DrawFn, tag: bool) -> str:
    display = draw(display_names)
    uri = draw(sip_uris())
    text = f"{display} <{uri}>" if display else f"<{uri}>"
    if tag:
        text += ";tag=" + draw(tokens)
    return text


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    method = draw(methods)
    branch = "z9hG4bK" + draw(tokens)
    cseq = draw(st.integers(min_value=0, max_value=2**31 - 1))
    via_host = draw(hosts)
    via_port = draw(ports)
    sent_by = via_host + ("" if via_port is None else f":{via_port}")
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]))
    fields: list[tuple[str, str]] = [
        (draw(st.sampled_from(["Via", "via", "v", "V"])),
         f"SIP/2.0/{transport} {sent_by};branch={branch}"),
        (draw(st.sampled_from(["From", "f"])), draw(name_addrs(tag=True))),
        (draw(st.sampled_from(["To", "t"])), draw(name_addrs(tag=draw(st.booleans())))),
        (draw(st.sampled_from(["Call-ID", "i"])), draw(tokens) + "@" + draw(domains)),
        (draw(cased("CSeq")), f"{cseq} {method}"),
    ]
    if draw(st.booleans()):
        fields.append((draw(cased("Max-Forwards")), str(draw(st.integers(0, 255)))))
    for _ in range(draw(st.integers(0, 4))):
        value = draw(values)
        if draw(st.booleans()) and " " in value.strip():
            # Line folding (RFC 3261 §7.3.1): the parser must unfold it to one SP.
            value = value.strip().replace(" ", "\r\n ", 1)
        fields.append((draw(unknown_names), value))
    fields = draw(st.permutations(fields))
    body = draw(st.one_of(st.just(b""), st.binary(max_size=200)))
    if body:
        fields.append(("Content-Type", "application/sdp"))
    fields.append((draw(st.sampled_from(["Content-Length", "l"])), str(len(body))))
    head = f"{method} {draw(sip_uris())} SIP/2.0\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
    facts = {"method": method, "branch": branch, "cseq": cseq, "body": body}
    return head.encode("utf-8") + body, facts


def canonical(message: Message) -> tuple[object, dict[str, list[str]], bytes]:
    start: tuple[object, ...]
    if isinstance(message, Request):
        start = (message.method, message.uri)
    else:
        start = (message.status, message.reason)
    fields: dict[str, list[str]] = {}
    for name, value in message.headers:
        if name.lower() != "content-length":
            fields.setdefault(name.lower(), []).append(value)
    return start, fields, message.body


@settings(FAST, max_examples=600)
@given(requests())
def test_generated_requests_round_trip(case: tuple[bytes, dict[str, object]]) -> None:
    data, facts = case
    first = parse_message(data)
    assert isinstance(first, Request)
    assert first.method == facts["method"]
    assert first.top_via.branch == facts["branch"]
    assert first.cseq.number == facts["cseq"]
    assert first.body == facts["body"]
    assert first.from_.tag is not None
    wire = first.to_bytes()
    second = parse_message(wire)
    assert canonical(second) == canonical(first)
    assert second.to_bytes() == wire
    exercise(first)


# -- (c) mutated torture messages ------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TORTURE_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "dup-line"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from(b"\x00\r\n :;,\"<>[]%\\\x7f\xff"))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([*FRAGMENTS, b"\r\n\r\n", b"\x00\x00"]))
        elif op == "truncate":
            del data[pos:]
        else:
            start = data.rfind(b"\r\n", 0, pos) + 2
            end = data.find(b"\r\n", pos)
            if end > start:
                data[end:end] = b"\r\n" + data[start:end]
    return bytes(data)


@settings(FAST, max_examples=1500)
@given(mutated())
def test_mutated_torture_messages_only_raise_sip_parse_error(data: bytes) -> None:
    message = parse_or_refuse(data)
    if message is not None:
        # Whatever was accepted must serialize to something that parses back the same.
        wire = message.to_bytes()
        again = parse_or_refuse(wire)
        assert again is not None
        assert canonical(again) == canonical(message)
        assert again.to_bytes() == wire
