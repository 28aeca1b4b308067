"""Unit tests of the SIP message layer: sipstack.message, headers, uri, grammar, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sipstack.errors import SipParseError
from sipstack.headers import Headers, parse_name_addr, parse_via
from sipstack.message import (
    MAX_HEADERS,
    Request,
    Response,
    make_response,
    parse_message,
)
from sipstack.uri import AbsoluteUri, SipUri, TelUri, parse_uri

CRLF = "\r\n"


def build(
    start: str = "OPTIONS sip:pbx.example.com SIP/2.0",
    *,
    method: str = "OPTIONS",
    extra: list[str] | None = None,
    body: bytes = b"",
    content_length: int | str | None = "auto",
    via: str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds",
) -> bytes:
    lines = [
        start,
        f"Via: {via}",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@example.com>;tag=1928301774',
        "To: <sip:bob@example.com>",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        f"CSeq: 314159 {method}",
        *(extra or []),
    ]
    if content_length == "auto":
        lines.append(f"Content-Length: {len(body)}")
    elif content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return (CRLF.join(lines) + CRLF + CRLF).encode("utf-8") + body


def parse_error(data: bytes, **kw: int) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kw)
    return info.value


# --------------------------------------------------------------------------- start lines


def test_parse_request_basics() -> None:
    msg = parse_message(build())
    assert isinstance(msg, Request)
    assert msg.method == "OPTIONS"
    assert msg.uri == "sip:pbx.example.com"
    assert msg.version == "SIP/2.0"
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.cseq.number == 314159 and msg.cseq.method == "OPTIONS"
    assert msg.from_.tag == "1928301774"
    assert msg.from_.display_name == "Alice"
    assert msg.to.tag is None
    assert msg.max_forwards == 70
    assert msg.top_via.host == "192.0.2.10"
    assert msg.top_via.port == 5060
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert isinstance(msg.request_uri, SipUri)
    assert msg.body == b""


def test_parse_response_basics() -> None:
    data = build("SIP/2.0 180 Ringing", method="INVITE")
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.cseq.method == "INVITE"


def test_response_reason_may_have_spaces_or_be_empty() -> None:
    msg = parse_message(build("SIP/2.0 481 Call/Transaction Does Not Exist"))
    assert isinstance(msg, Response)
    assert msg.reason == "Call/Transaction Does Not Exist"
    msg = parse_message(build("SIP/2.0 200 "))
    assert isinstance(msg, Response) and msg.status == 200 and msg.reason == ""


def test_leading_crlfs_before_start_line_are_ignored() -> None:
    msg = parse_message(b"\r\n\r\n" + build())
    assert isinstance(msg, Request) and msg.method == "OPTIONS"


@pytest.mark.parametrize(
    ("start", "status"),
    [
        ("OPTIONS sip:pbx.example.com SIP/7.0", 505),
        ("OPTIONS sip:pbx.example.com SIP/2.1", 505),
        ("SIP/3.0 200 OK", 505),
        ("OPTIONS  sip:pbx.example.com SIP/2.0", 400),  # two spaces
        ("OPTIONS sip:pbx.example.com", 400),
        ("OPTIONS <sip:pbx.example.com> SIP/2.0", 400),
        ("OPT@ONS sip:pbx.example.com SIP/2.0", 400),
        ("OPTIONS sip:pbx.example.com HTTP/1.1", 400),
        ("SIP/2.0 2000 OK", 400),
        ("SIP/2.0 099 Low", 400),
        ("SIP/2.0 700 High", 400),
        ("SIP/2.0 abc OK", 400),
        ("SIP/2.0", 400),
    ],
)
def test_bad_start_lines_carry_status(start: str, status: int) -> None:
    err = parse_error(build(start))
    assert err.status == status
    assert err.reason  # a reason phrase to answer with
    assert str(status) in str(err)


# --------------------------------------------------------------------------- headers


def test_compact_forms_are_expanded_and_canonically_named() -> None:
    data = (
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP host.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\n"
        b"t: <sip:bob@example.com>\r\n"
        b"i: abc@host\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:alice@192.0.2.1>\r\n"
        b"k: path, outbound\r\n"
        b"c: application/sdp\r\n"
        b"s: hello\r\n"
        b"o: presence\r\n"
        b"u: talk\r\n"
        b"l: 0\r\n\r\n"
    )
    msg = parse_message(data)
    names = [name for name, _ in msg.headers]
    assert names == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Content-Type",
        "Subject", "Event", "Allow-Events", "Content-Length",
    ]
    assert msg.headers.get("contact") == "<sip:alice@192.0.2.1>"
    assert msg.headers.get("m") == "<sip:alice@192.0.2.1>"  # lookup by compact name too
    assert msg.headers.get("SUPPORTED") == "path, outbound"
    assert msg.call_id == "abc@host"
    out = msg.to_bytes()
    assert b"\r\nContact: <sip:alice@192.0.2.1>\r\n" in out
    assert b"\r\nm:" not in out


def test_header_names_are_case_insensitive_and_canonicalised() -> None:
    data = build(extra=["cOnTaCt: <sip:a@192.0.2.1>", "USER-AGENT: phone/1.0"])
    msg = parse_message(data)
    assert msg.headers.get("Contact") == "<sip:a@192.0.2.1>"
    assert msg.headers.get("user-agent") == "phone/1.0"
    assert b"\r\nContact: <sip:a@192.0.2.1>\r\n" in msg.to_bytes()
    assert b"\r\nUser-Agent: phone/1.0\r\n" in msg.to_bytes()


def test_unknown_headers_are_kept_verbatim_and_in_order() -> None:
    extra = [
        "X-Vendor-Thing: a=1;b=\"two, three\"  ,  four",
        "P-Weird_Name.~: \x7e!%*",
        "X-Empty:",
        "X-Vendor-Thing: second line",
    ]
    msg = parse_message(build(extra=extra))
    assert msg.headers.get_all("x-vendor-thing") == [
        'a=1;b="two, three"  ,  four',
        "second line",
    ]
    assert msg.headers.get("P-Weird_Name.~") == "~!%*"
    assert msg.headers.get("x-empty") == ""
    out = msg.to_bytes()
    assert b'\r\nX-Vendor-Thing: a=1;b="two, three"  ,  four\r\n' in out
    assert b"\r\nP-Weird_Name.~: ~!%*\r\n" in out
    assert out.index(b"X-Vendor-Thing: a=1") < out.index(b"P-Weird") < out.index(
        b"X-Vendor-Thing: second"
    )


def test_multi_value_headers_split_across_lines_and_commas() -> None:
    extra = [
        'Contact: "Bob, Jr." <sip:bob@192.0.2.4>;q=0.5, <sip:bob@192.0.2.5;a=b,c>',
        "Contact: sip:bob@192.0.2.6",
        "Allow: INVITE, ACK ,OPTIONS",
        "Allow: BYE",
        "Subject: a, b",  # not a list header: one value
    ]
    msg = parse_message(build(extra=extra, via="SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , "
                                                "SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2"))
    assert msg.headers.values("contact") == [
        '"Bob, Jr." <sip:bob@192.0.2.4>;q=0.5',
        "<sip:bob@192.0.2.5;a=b,c>",
        "sip:bob@192.0.2.6",
    ]
    assert msg.headers.values("allow") == ["INVITE", "ACK", "OPTIONS", "BYE"]
    assert msg.headers.values("subject") == ["a, b"]
    assert [v.host for v in msg.vias] == ["a.example.com", "b.example.com"]
    assert msg.vias[1].transport == "TCP" and msg.vias[1].port == 5070
    assert msg.headers.count("contact") == 2


def test_header_folding_is_unfolded() -> None:
    extra = ["Subject: I know you're there,\r\n     pick up the phone\r\n\tand talk to me!"]
    msg = parse_message(build(extra=extra))
    assert msg.headers.get("subject") == "I know you're there, pick up the phone and talk to me!"
    data = build().replace(b"To: <sip:bob@example.com>", b"To:\r\n  <sip:bob@example.com>")
    msg = parse_message(data)
    assert str(msg.to.uri) == "sip:bob@example.com"


def test_whitespace_around_colon_is_allowed() -> None:
    data = build().replace(b"Call-ID: ", b"Call-ID  \t:   ")
    assert parse_message(data).call_id == "a84b4c76e66710@pc33.example.com"


@pytest.mark.parametrize(
    ("missing", "needle"),
    [
        ("Via", b"Via: "),
        ("From", b"From: "),
        ("To", b"To: "),
        ("Call-ID", b"Call-ID: "),
        ("CSeq", b"CSeq: "),
    ],
)
def test_missing_required_header_is_400(missing: str, needle: bytes) -> None:
    data = build()
    start = data.index(needle)
    end = data.index(b"\r\n", start) + 2
    err = parse_error(data[:start] + data[end:])
    assert err.status == 400
    assert missing in err.detail


@pytest.mark.parametrize("name", ["From", "To", "Call-ID", "CSeq", "Max-Forwards"])
def test_duplicated_single_header_is_400(name: str) -> None:
    value = {
        "From": "<sip:x@example.com>;tag=2",
        "To": "<sip:y@example.com>",
        "Call-ID": "other",
        "CSeq": "314159 OPTIONS",
        "Max-Forwards": "70",
    }[name]
    assert parse_error(build(extra=[f"{name}: {value}"])).status == 400


@pytest.mark.parametrize(
    "line",
    [
        "No colon here",
        "Bad Name: x",
        "Bad\x00Name: x",
        "Bad<Name>: x",
        ": empty name",
    ],
)
def test_malformed_header_lines_are_400(line: str) -> None:
    assert parse_error(build(extra=[line])).status == 400


def test_cseq_method_must_match_request_method() -> None:
    data = build().replace(b"CSeq: 314159 OPTIONS", b"CSeq: 314159 INVITE")
    assert parse_error(data).status == 400


@pytest.mark.parametrize("cseq", ["x OPTIONS", "-1 OPTIONS", "2147483648 OPTIONS", "1", "1 2 3"])
def test_bad_cseq_is_400(cseq: str) -> None:
    data = build().replace(b"CSeq: 314159 OPTIONS", f"CSeq: {cseq}".encode())
    assert parse_error(data).status == 400


def test_cseq_max_value_is_accepted() -> None:
    data = build().replace(b"CSeq: 314159 OPTIONS", b"CSeq: 2147483647 OPTIONS")
    assert parse_message(data).cseq.number == 2**31 - 1


@pytest.mark.parametrize("value", ["256", "-1", "abc", "99999999999999"])
def test_bad_max_forwards_is_a_typed_400(value: str) -> None:
    msg = parse_message(build().replace(b"Max-Forwards: 70", f"Max-Forwards: {value}".encode()))
    with pytest.raises(SipParseError) as info:
        _ = msg.max_forwards
    assert info.value.status == 400


# A digit that str.isdigit() accepts but int() refuses ("²", "³", "①"...): each of these
# must be a typed 400, never a bare ValueError. The parser checks with str.isdigit().
UNICODE_DIGIT = "\u00b2"


def test_unicode_digit_content_length_is_a_typed_error() -> None:
    data = build(content_length=UNICODE_DIGIT)
    assert parse_error(data).status == 400


def test_unicode_digit_via_port_is_a_typed_error() -> None:
    with pytest.raises(SipParseError):
        parse_via(f"SIP/2.0/UDP host:5{UNICODE_DIGIT};branch=z9hG4bK1")


def test_unicode_digit_max_forwards_is_a_typed_error() -> None:
    msg = parse_message(build().replace(b"Max-Forwards: 70", f"Max-Forwards: {UNICODE_DIGIT}"
                                        .encode()))
    with pytest.raises(SipParseError):
        _ = msg.max_forwards


def test_unicode_digit_cseq_is_a_typed_error() -> None:
    data = build().replace(b"CSeq: 314159", f"CSeq: 31{UNICODE_DIGIT}".encode())
    assert parse_error(data).status == 400


# --------------------------------------------------------------------------- bodies


def test_body_length_counts_bytes_with_multibyte_utf8() -> None:
    body = "héllo wörld — ☎ 电话\r\n".encode()
    assert len(body) != len(body.decode())
    data = build(method="MESSAGE", start="MESSAGE sip:bob@example.com SIP/2.0",
                 extra=["Content-Type: text/plain;charset=utf-8"], body=body)
    msg = parse_message(data)
    assert msg.body == body
    assert msg.to_bytes() == data
    assert f"Content-Length: {len(body)}\r\n".encode() in msg.to_bytes()


def test_serialized_content_length_follows_the_body_not_the_stale_header() -> None:
    msg = parse_message(build(body=b"abc", extra=["Content-Type: text/plain"]))
    msg.body = "ü".encode()
    out = msg.to_bytes()
    assert out.count(b"Content-Length") == 1
    assert out.endswith(b"Content-Length: 2\r\n\r\n\xc3\xbc")


def test_body_with_invalid_utf8_bytes_round_trips() -> None:
    body = bytes(range(256))
    data = build(body=body, extra=["Content-Type: application/octet-stream"])
    msg = parse_message(data)
    assert msg.body == body
    assert msg.to_bytes() == data


def test_non_utf8_header_bytes_round_trip() -> None:
    data = build(extra=["X-Latin1: caf\u00e9"]).replace("caf\u00e9".encode(), b"caf\xe9")
    assert parse_message(data).to_bytes() == data


def test_content_length_larger_than_body_is_400() -> None:
    data = build(body=b"hello", content_length=6)
    err = parse_error(data)
    assert err.status == 400


def test_junk_after_the_body_is_truncated() -> None:
    data = build(body=b"hello", content_length=5) + b"JUNK AFTER THE BODY"
    msg = parse_message(data)
    assert msg.body == b"hello"
    assert not msg.to_bytes().endswith(b"JUNK AFTER THE BODY")


def test_missing_content_length_on_a_datagram_takes_the_rest() -> None:
    msg = parse_message(build(body=b"v=0\r\n", content_length=None))
    assert msg.body == b"v=0\r\n"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1234567890", " "])
def test_malformed_content_length_is_400(value: str) -> None:
    assert parse_error(build(content_length=value)).status == 400


def test_two_content_lengths_are_400() -> None:
    data = build(body=b"x", extra=["l: 1"])
    assert parse_error(data).status == 400


def test_no_blank_line_is_400() -> None:
    data = build()[:-4]
    assert parse_error(data).status == 400


# --------------------------------------------------------------------------- caps


def test_oversized_message_is_513() -> None:
    data = build(body=b"x" * 70_000, extra=["Content-Type: text/plain"])
    err = parse_error(data)
    assert err.status == 513
    assert err.reason == "Message Too Large"


def test_size_cap_is_configurable_and_exact() -> None:
    data = build()
    assert isinstance(parse_message(data, max_size=len(data)), Request)
    assert parse_error(data, max_size=len(data) - 1).status == 513


def test_too_many_headers_is_refused() -> None:
    extra = [f"X-H{i}: v" for i in range(MAX_HEADERS + 10)]
    err = parse_error(build(extra=extra))
    assert err.status == 400
    assert "header" in err.detail


def test_header_cap_is_configurable() -> None:
    data = build(extra=["X-A: 1", "X-B: 2"])
    count = data.split(b"\r\n\r\n")[0].count(b"\r\n")  # header lines after the start line
    assert isinstance(parse_message(data, max_headers=count), Request)
    assert parse_error(data, max_headers=count - 1).status == 400


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"\r\n\r\n", 400),
        (b"garbage", 400),
        (b"\x00" * 100, 400),
        (b"INVITE sip:a@b SIP/2.0\r\n\r\n", 400),
    ],
)
def test_junk_is_a_typed_error(data: bytes, status: int) -> None:
    assert parse_error(data).status == status


# --------------------------------------------------------------------------- round trip


def test_round_trip_is_exact_for_canonical_input() -> None:
    data = build(
        start="INVITE sip:bob@biloxi.example.com SIP/2.0",
        method="INVITE",
        extra=["Contact: <sip:alice@192.0.2.1:5060;transport=udp>",
               "Content-Type: application/sdp", "X-Custom: keep me"],
        body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
    )
    msg = parse_message(data)
    assert msg.to_bytes() == data
    again = parse_message(msg.to_bytes())
    assert again.to_bytes() == data


def test_build_request_from_structure() -> None:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc")
    headers.add("From", "<sip:a@example.com>;tag=1")
    headers.add("To", "<sip:b@example.com>")
    headers.add("Call-ID", "xyz")
    headers.add("CSeq", "1 MESSAGE")
    headers.add("X-Foo", "bar")
    req = Request("MESSAGE", "sip:b@example.com", headers, "ok ✓".encode())
    out = req.to_bytes()
    assert out.startswith(b"MESSAGE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP")
    assert b"\r\nContent-Length: 6\r\n\r\nok \xe2\x9c\x93" in out
    parsed = parse_message(out)
    assert isinstance(parsed, Request) and parsed.headers.get("x-foo") == "bar"


def test_headers_set_remove_insert() -> None:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    h.add("Contact", "<sip:a@b>")
    h.add("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")
    h.insert_first("Via", "SIP/2.0/UDP c;branch=z9hG4bK3")
    assert h.values("via")[0].startswith("SIP/2.0/UDP c")
    h.set("Via", "SIP/2.0/UDP d;branch=z9hG4bK4")
    assert h.get_all("via") == ["SIP/2.0/UDP d;branch=z9hG4bK4"]
    assert [k for k, _n, _v in h.items()] == ["via", "contact"]
    assert h.remove("contact") == 1
    assert h.remove("contact") == 0
    h.set("Expires", "60")
    assert list(h) == [("Via", "SIP/2.0/UDP d;branch=z9hG4bK4"), ("Expires", "60")]
    h.set("X-New-Header", "1")
    assert ("X-New-Header", "1") in list(h)


# --------------------------------------------------------------------------- make_response


def test_make_response_copies_routing_headers_and_adds_tag() -> None:
    data = build(
        start="INVITE sip:bob@example.com SIP/2.0",
        method="INVITE",
        via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;received=192.0.2.99, "
            "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK0",
        extra=["Via: SIP/2.0/TCP edge.example.com;branch=z9hG4bKz",
               "Contact: <sip:alice@192.0.2.10>", "Record-Route: <sip:p.example.com;lr>",
               "Content-Type: application/sdp"],
        body=b"v=0\r\n",
    )
    req = parse_message(data)
    assert isinstance(req, Request)
    resp = make_response(req, 486, to_tag="abc123")
    assert (resp.status, resp.reason) == (486, "Busy Here")
    assert resp.headers.get_all("via") == req.headers.get_all("via")
    assert resp.headers.get("from") == req.headers.get("from")
    assert resp.headers.get("call-id") == req.headers.get("call-id")
    assert resp.headers.get("cseq") == req.headers.get("cseq")
    assert resp.headers.get("to") == "<sip:bob@example.com>;tag=abc123"
    assert resp.headers.get("contact") is None
    assert resp.headers.get("record-route") is None
    assert resp.body == b""
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, Response)
    assert parsed.to.tag == "abc123"
    assert parsed.to_bytes() == resp.to_bytes()


def test_make_response_keeps_an_existing_to_tag() -> None:
    data = build().replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=old")
    req = parse_message(data)
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="new")
    assert resp.headers.get("to") == "<sip:bob@example.com>;tag=old"


def test_make_response_without_tag_and_custom_reason() -> None:
    req = parse_message(build())
    assert isinstance(req, Request)
    resp = make_response(req, 100)
    assert resp.reason == "Trying"
    assert resp.headers.get("to") == "<sip:bob@example.com>"
    assert make_response(req, 299, "Custom Thing").reason == "Custom Thing"


def test_make_response_to_addr_spec_to() -> None:
    data = build().replace(b"To: <sip:bob@example.com>", b"t: sip:bob@example.com")
    req = parse_message(data)
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="t1")
    parsed = parse_message(resp.to_bytes())
    assert parsed.to.tag == "t1"
    assert str(parsed.to.uri) == "sip:bob@example.com"


# --------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("sip:alice@atlanta.com",
         {"scheme": "sip", "user": "alice", "host": "atlanta.com", "port": None}),
        ("sip:alice:secretword@atlanta.com;transport=tcp",
         {"user": "alice", "password": "secretword", "params": {"transport": "tcp"}}),
        ("sips:alice@atlanta.com?subject=project%20x&priority=urgent",
         {"scheme": "sips", "headers": {"subject": "project%20x", "priority": "urgent"}}),
        ("sip:+1-212-555-1212:1234@gateway.com;user=phone",
         {"user": "+1-212-555-1212", "password": "1234", "params": {"user": "phone"}}),
        ("sips:1212@gateway.com", {"scheme": "sips", "user": "1212"}),
        ("sip:alice@192.0.2.4", {"host": "192.0.2.4"}),
        ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
         {"user": None, "host": "atlanta.com", "params": {"method": "REGISTER"},
          "headers": {"to": "alice%40atlanta.com"}}),
        ("sip:alice;day=tuesday@atlanta.com", {"user": "alice;day=tuesday"}),
        ("sip:[2001:db8::10]:5070;transport=tcp",
         {"host": "[2001:db8::10]", "port": 5070, "user": None}),
        ("sip:bob@[::ffff:192.0.2.128]", {"host": "[::ffff:192.0.2.128]"}),
        ("sip:host.example.com:0", {"port": 0}),
        ("sip:host.example.com.:65535", {"host": "host.example.com.", "port": 65535}),
        ("sip:a@b;lr;maddr=239.255.255.1;ttl=15",
         {"params": {"lr": None, "maddr": "239.255.255.1", "ttl": "15"}}),
    ],
)
def test_sip_uri_parse(text: str, fields: dict[str, object]) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    for name, value in fields.items():
        assert getattr(uri, name) == value, name
    assert str(uri) == text


def test_uri_escapes_and_helpers() -> None:
    uri = parse_uri("sip:%61lice%20b@[2001:DB8::1]:5060;transport=TLS")
    assert isinstance(uri, SipUri)
    assert uri.user == "%61lice%20b"  # kept as written
    assert uri.user_unescaped == "alice b"
    assert uri.host_bare == "2001:db8::1"
    assert uri.transport == "tls"
    assert parse_uri("sips:a@b").transport == "tls"  # type: ignore[union-attr]
    assert parse_uri("sip:a@b").transport == "udp"  # type: ignore[union-attr]


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(uri, TelUri)
    assert uri.number == "+1-201-555-0123"
    assert uri.params == {"phone-context": "example.com"}
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
    assert uri.equivalent(parse_uri("tel:+1.201.555.0123;phone-context=example.com"))
    assert not uri.equivalent(parse_uri("tel:+1-201-555-0124;phone-context=example.com"))


def test_other_scheme_is_kept() -> None:
    uri = parse_uri("mailto:alice@example.com")
    assert isinstance(uri, AbsoluteUri)
    assert str(uri) == "mailto:alice@example.com"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("nocolon", 400),
        (":nouser", 400),
        ("1sip:a@b", 400),
        ("sip:", 400),
        ("sip:@host", 400),
        ("sip:a@", 400),
        ("sip:a@host:99999", 400),
        ("sip:a@host:", 400),
        ("sip:a@[2001:db8::1", 400),
        ("sip:a@[zz::1]", 400),
        ("sip:a b@host", 400),
        ("sip:a@ho st", 400),
        ("sip:a@host;=v", 400),
        ("sip:a@host?novalue", 400),
        ("sip:a@host>junk", 400),
        ("tel:", 400),
        ("sip:a@" + "h" * 5000, 414),
    ],
)
def test_bad_uris(text: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == status


# RFC 3261 §19.1.4: the equivalent and non-equivalent pairs given as examples.
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ("sip:[2001:DB8::1]:5060", "sip:[2001:db8::1]:5060"),
]
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice@atlanta.com", "sip:alice@atlanta.com;user=phone"),
    ("sip:alice@atlanta.com", "sip:alice@atlanta.com;maddr=192.0.2.1"),
    ("sip:alice@atlanta.com", "tel:+12125551212"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_uri_equivalence(a: str, b: str) -> None:
    assert parse_uri(a).equivalent(parse_uri(b))
    assert parse_uri(b).equivalent(parse_uri(a))


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT)
def test_uri_non_equivalence(a: str, b: str) -> None:
    assert not parse_uri(a).equivalent(parse_uri(b))
    assert not parse_uri(b).equivalent(parse_uri(a))


# --------------------------------------------------------------------------- name-addr


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ('"Alice Liddell" <sip:alice@example.com>;tag=abc', "Alice Liddell",
         "sip:alice@example.com", {"tag": "abc"}),
        ("Alice <sip:alice@example.com>", "Alice", "sip:alice@example.com", {}),
        ("Alice  Liddell   <sip:alice@example.com>", "Alice Liddell", "sip:alice@example.com",
         {}),
        ("<sip:alice@example.com;transport=tcp>;expires=60;q=0.5", None,
         "sip:alice@example.com;transport=tcp", {"expires": "60", "q": "0.5"}),
        ("sip:alice@example.com;tag=x", None, "sip:alice@example.com", {"tag": "x"}),
        ('"" <sip:alice@example.com>', "", "sip:alice@example.com", {}),
        ('"Quote \\"me\\" \\\\ ok" <sip:a@example.com>', 'Quote "me" \\ ok', "sip:a@example.com",
         {}),
        ('"Bob, Jr." <sip:bob@example.com>', "Bob, Jr.", "sip:bob@example.com", {}),
        ("<tel:+12125551212>;tag=1", None, "tel:+12125551212", {"tag": "1"}),
        ("< sip:alice@example.com >", None, "sip:alice@example.com", {}),
        ('"Alice"<sip:alice@example.com>', "Alice", "sip:alice@example.com", {}),
        ('<sip:a@b>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1',
         None, "sip:a@b", {"+sip.instance": '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
                           "reg-id": "1"}),
    ],
)
def test_name_addr_forms(
    text: str, display: str | None, uri: str, params: dict[str, str | None]
) -> None:
    na = parse_name_addr(text)
    assert na.display_name == display
    assert str(na.uri) == uri
    assert na.raw_uri == uri
    assert na.params == params
    again = parse_name_addr(str(na))
    assert again.display_name == display and again.params == params and again.raw_uri == uri


@pytest.mark.parametrize(
    "text",
    [
        "Alice Liddell@example <sip:a@b>",  # display name with a non-token needs quotes
        '"unterminated <sip:a@b>',
        "<sip:a@b",
        "<sip:a@b> junk",
        "sip:a@b?subject=x",  # addr-spec with '?' needs <>
        "sip:a@b, sip:c@d",
        '"Alice" sip:a@b',
        "<not a uri>",
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_name_addr(text)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("text", "host", "port", "transport", "params"),
    [
        ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", "192.0.2.1", 5060, "UDP",
         {"branch": "z9hG4bK1"}),
        ("SIP / 2.0 / tcp host.example.com ;branch=z9hG4bK1;rport", "host.example.com", None,
         "TCP", {"branch": "z9hG4bK1", "rport": None}),
        ("SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK1;received=2001:db8::9",
         "[2001:db8::1]", 5061, "TLS", {"branch": "z9hG4bK1", "received": "2001:db8::9"}),
        ("SIP/2.0/WSS abc.invalid;branch=z9hG4bK1", "abc.invalid", None, "WSS",
         {"branch": "z9hG4bK1"}),
    ],
)
def test_via_forms(
    text: str, host: str, port: int | None, transport: str, params: dict[str, str | None]
) -> None:
    via = parse_via(text)
    assert (via.host, via.port, via.transport, via.params) == (host, port, transport, params)
    assert parse_via(str(via)).params == params


@pytest.mark.parametrize(
    "text",
    ["SIP/2.0 192.0.2.1", "SIP/2.0/UDP", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host:x",
     "SIP/2.0/UDP [::1;branch=x", "SIP/2.0/UDP host;=x"],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_via(text)
    assert info.value.status == 400


# The common-shape fast paths must read exactly what the general parsers read.
FAST_PATH_URIS = [
    "sip:u0@127.0.0.1:16000;transport=UDP", "sip:pbx.test", "sip:alice:pw@host.example.com",
    "sip:host;lr", "sip:a;b@host", "sip:0;@[::]", "sip:host.:5060", "sip:h:70000",
    "sip:+1-201-555-0123;phone-context=x@gw;user=phone", "sip:u@h;maddr=239.1.1.1;ttl=15",
    "sip:u@h;tag=1;;x", "sip:u@h?subject=x", "sip:u%40x@h", "sip:-bad@-h",
]
FAST_PATH_VIAS = [
    "SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-1;rport", "SIP/2.0/TCP host", "SIP/2.0/tls h:5061",
    "SIP/2.0/UDP h:99999;branch=x", "SIP/2.0/UDP h ;branch=x", "SIP/2.0/UDP [::1]:5060;branch=x",
    "SIP/2.0/UDP h;branch=x;received=1.2.3.4", "SIP/2.0/UDP -h", "SIP/2.0/UDP h;=x",
]
FAST_PATH_NAME_ADDRS = [
    "<sip:u0@pbx.test>;tag=11054SIPpTag1", '"Alice" <sip:alice@example.com>;tag=1', "<sip:a@b>",
    '  "A B" <sip:a@b> ;tag=x ', '"" <sip:a@b>', "<sip:a@b>;expires=60;q=0.5", "<sip:a@b>;;",
    "<sip:a@b>;tag", "<sip:a@b>junk", "<sip:a@b>;=x", '"x\\"y" <sip:a@b>', "< sip:a@b >",
    "<tel:+123;phone-context=x>", "<sip:a@[::1]:5060;transport=tcp>;+sip.instance=\"<urn:x>\"",
    "<sip:a@b>;tag=a b", "<isbn:2983792873>",
]


def _sip_uri_fast(text: str) -> object:
    from sipstack.uri import _parse_sip

    return _parse_sip("sip", text.split(":", 1)[1])


def _sip_uri_general(text: str) -> object:
    from sipstack.uri import _parse_sip_general

    return _parse_sip_general("sip", text.split(":", 1)[1])


def _via_general(text: str) -> object:
    from sipstack.headers import _parse_via_general

    return _parse_via_general(text)


def _name_addr_general(text: str) -> object:
    from sipstack.headers import _parse_name_addr_general

    return _parse_name_addr_general(text)


FAST_PATH_CASES = [
    *((_sip_uri_fast, _sip_uri_general, t) for t in FAST_PATH_URIS),
    *((parse_via, _via_general, t) for t in FAST_PATH_VIAS),
    *((parse_name_addr, _name_addr_general, t) for t in FAST_PATH_NAME_ADDRS),
]


@pytest.mark.parametrize(("fast", "general", "text"), FAST_PATH_CASES,
                         ids=[f"{g.__name__}:{t}" for _f, g, t in FAST_PATH_CASES])
def test_fast_path_agrees_with_the_general_parser(
    fast: Callable[[str], object], general: Callable[[str], object], text: str
) -> None:
    outcomes = []
    for parse in (fast, general):
        try:
            outcomes.append(repr(parse(text)))
        except SipParseError as exc:
            outcomes.append(f"error {exc.status}")
    assert outcomes[0] == outcomes[1]
