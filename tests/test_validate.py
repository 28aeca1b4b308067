"""sipstack.validate.check_request: the RFC 3261 §8.2 checks, one rule at a time.

The torture corpus (test_torture.py) covers these rules with the RFCs' own
messages; here each rule gets its boundary cases, including the ones the
parser already refuses on the wire and so can only be reached with a request
built in code.
"""

from __future__ import annotations

import pytest

from sipstack.headers import Headers
from sipstack.message import Request, parse_message
from sipstack.validate import check_request, unsupported_requirements

BASE = [
    ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc"),
    ("From", '"Alice" <sip:alice@example.com>;tag=1928'),
    ("To", "<sip:bob@example.com>"),
    ("Call-ID", "a84b4c76e66710@pc33.example.com"),
    ("Max-Forwards", "70"),
]


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@example.com",
    extra: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    *,
    cseq: str | None = None,
    drop: tuple[str, ...] = (),
) -> Request:
    """A request as it arrives: written out and parsed, so it is what the parser makes of it."""
    fields = [(n, v) for n, v in BASE if n not in drop]
    fields.append(("CSeq", cseq or f"314159 {method}"))
    fields.extend(extra)
    head = f"{method} {uri} SIP/2.0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    message = parse_message(head.encode() + body)
    assert isinstance(message, Request)
    return message


def built(method: str, fields: list[tuple[str, str]]) -> Request:
    """A request made in code, for what the parser would refuse before check_request."""
    headers = Headers()
    for name, value in fields:
        headers.add(name, value)
    return Request(method, "sip:bob@example.com", headers)


SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def test_a_plain_invite_passes() -> None:
    assert check_request(request(body=SDP, extra=(("Content-Type", "application/sdp"),))) is None


# -- 400: mandatory fields -------------------------------------------------------------


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_field_is_400(missing: str) -> None:
    fields = [*BASE, ("CSeq", "1 OPTIONS")]
    req = built("OPTIONS", [(n, v) for n, v in fields if n != missing])
    assert check_request(req) == (400, "Bad Request")


def test_missing_max_forwards_is_accepted() -> None:
    # RFC 2543 senders leave it out (RFC 4475 §3.4.1).
    assert check_request(request(drop=("Max-Forwards",))) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Via", "SIP/2.0/UDP"),
        ("From", "<sip:alice@example.com"),
        ("To", '"Bob <sip:bob@example.com>'),
        ("Max-Forwards", "256"),
        ("Max-Forwards", "seventy"),
    ],
)
def test_malformed_view_is_400(name: str, value: str) -> None:
    fields = [(n, v) for n, v in BASE if n != name]
    fields += [(name, value), ("CSeq", "1 OPTIONS")]
    assert check_request(built("OPTIONS", fields)) == (400, "Bad Request")


def test_duplicated_single_value_field_is_400() -> None:
    # The parser refuses duplicated From/To/Call-ID/CSeq/Max-Forwards itself;
    # check_request covers the other single-value fields too.
    req = request("REGISTER", "sip:example.com", (("Expires", "60"), ("Expires", "3600")))
    assert check_request(req) == (400, "Bad Request")


def test_cseq_method_mismatch_is_400() -> None:
    req = built("OPTIONS", [*BASE, ("CSeq", "8 INVITE")])
    assert check_request(req) == (400, "Bad Request")


# -- 501 -------------------------------------------------------------------------------


def test_unknown_method_is_501() -> None:
    assert check_request(request("FROBNICATE")) == (501, "Not Implemented")


def test_unknown_method_with_cseq_mismatch_prefers_501() -> None:
    # RFC 4475 §3.1.2.18: 501 "has better future-proof characteristics".
    req = built("NEWMETHOD", [*BASE, ("CSeq", "8 INVITE")])
    assert check_request(req) == (501, "Not Implemented")


def test_methods_are_configurable() -> None:
    allowed = frozenset({"REGISTER", "OPTIONS"})
    assert check_request(request("INVITE"), methods=allowed) == (501, "Not Implemented")
    assert check_request(request("OPTIONS"), methods=allowed) is None


# -- 400: other field semantics ---------------------------------------------------------


def test_request_uri_with_headers_is_400() -> None:
    assert check_request(request(uri="sip:bob@example.com?Subject=hi")) == (400, "Bad Request")


@pytest.mark.parametrize(
    ("method", "contacts", "expected"),
    [
        ("REGISTER", ["*"], None),
        ("REGISTER", ["*", "<sip:a@192.0.2.1>"], 400),
        ("INVITE", ["*"], 400),
        ("REGISTER", ["sip:a@192.0.2.1?Route=x"], 400),
        ("REGISTER", ["<sip:a@192.0.2.1?Route=x>"], None),
        ("INVITE", ["<sip:a@192.0.2.1;transport=tcp>;expires=60, <sip:b@192.0.2.2>"], None),
    ],
)
def test_contact(method: str, contacts: list[str], expected: int | None) -> None:
    uri = "sip:example.com" if method == "REGISTER" else "sip:bob@example.com"
    extra = tuple(("Contact", c) for c in contacts)
    if method == "REGISTER":
        extra += (("Expires", "0"),)
    verdict = check_request(request(method, uri, extra))
    assert (verdict and verdict[0]) == expected


def test_register_needs_a_sip_aor() -> None:
    fields = [(n, v) for n, v in BASE if n != "To"]
    fields += [("To", "<tel:+15551234567>"), ("CSeq", "1 REGISTER")]
    assert check_request(built("REGISTER", fields)) == (400, "Bad Request")


# -- 416 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:bob@example.com", None),
        ("sips:bob@example.com", None),
        ("tel:+15551234567", None),
        ("mailto:bob@example.com", 416),
        ("urn:service:sos", 416),
    ],
)
def test_request_uri_scheme(uri: str, expected: int | None) -> None:
    verdict = check_request(request("OPTIONS", uri))
    assert (verdict and verdict[0]) == expected


# -- 483 -------------------------------------------------------------------------------


def test_max_forwards_zero_is_483() -> None:
    req = request(extra=(), drop=("Max-Forwards",))
    req.headers.add("Max-Forwards", "0")
    assert check_request(req) == (483, "Too Many Hops")


def test_max_forwards_zero_options_is_answered() -> None:
    # RFC 3261 §16.3 step 3 and RFC 4475 §3.3.11: the element answers it itself.
    req = request("OPTIONS", drop=("Max-Forwards",))
    req.headers.add("Max-Forwards", "0")
    assert check_request(req) is None


# -- 420 -------------------------------------------------------------------------------


def test_unknown_require_is_420_with_the_tags_to_list() -> None:
    req = request(extra=(("Require", "100rel, timer"), ("Require", "foo")))
    assert check_request(req) == (420, "Bad Extension")
    assert unsupported_requirements(req, frozenset({"TIMER"})) == ("100rel", "foo")
    assert check_request(req, supported=frozenset({"100rel", "timer", "foo"})) is None


def test_proxy_require_is_not_a_uas_matter() -> None:
    assert check_request(request(extra=(("Proxy-Require", "foo"),))) is None


def test_cancel_is_not_refused_for_require() -> None:
    assert check_request(request("CANCEL", extra=(("Require", "foo"),))) is None


# -- 415 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((("Content-Type", "application/sdp"),), None),
        ((("Content-Type", "Application/SDP; charset=utf-8"),), None),
        ((("Content-Type", "application/unknownformat"),), 415),
        ((), 415),
        ((("Content-Type", "application/sdp"), ("Content-Encoding", "gzip")), 415),
        ((("Content-Type", "application/sdp"), ("Content-Encoding", "identity")), None),
    ],
)
def test_body_types(extra: tuple[tuple[str, str], ...], expected: int | None) -> None:
    verdict = check_request(request(extra=extra, body=SDP))
    assert (verdict and verdict[0]) == expected


def test_content_type_without_body_is_fine() -> None:
    assert check_request(request(extra=(("Content-Type", "application/foo"),))) is None


# -- 406 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/sdp", None),
        ("application/*", None),
        ("*/*", None),
        ("text/plain, application/sdp;q=0.5", None),
        ("text/nobodyKnowsThis", 406),
        ("", 406),
    ],
)
def test_invite_accept(accept: str, expected: int | None) -> None:
    verdict = check_request(request(extra=(("Accept", accept),)))
    assert (verdict and verdict[0]) == expected


def test_accept_only_matters_for_invite() -> None:
    assert check_request(request("OPTIONS", extra=(("Accept", "text/plain"),))) is None


def test_never_raises_on_a_malformed_list() -> None:
    req = request(extra=(("Require", 'foo, "unterminated'),))
    assert check_request(req) == (400, "Bad Request")
