"""The sans-I/O front door: parsing, RFC 3581 Via stamping, stateless answers, bad input."""

from __future__ import annotations

import random
import re

import pytest

from sipstack.endpoint import (
    Endpoint,
    EndpointConfig,
    IncomingRequest,
    IncomingResponse,
    RecentReplies,
    response_destination,
    stamp_via,
)
from sipstack.errors import SipParseError
from sipstack.message import Request, Response, make_response, parse_message
from sipstack.peer import Peer
from sipstack.validate import check_request

SRC = Peer("udp", "192.0.2.1", 9988)
T0 = 1_700_000_000.0


def req_bytes(
    method: str = "OPTIONS",
    *,
    via: str = "SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff",
    to: str = "<sip:pbx.example.com>",
    extra: list[str] | None = None,
    ruri: str = "sip:pbx.example.com",
    body: bytes = b"",
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=ft1",
        f"To: {to}",
        "Call-ID: cid-1@example.com",
        f"CSeq: 1 {method}",
        *(extra or []),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def endpoint(**kw: object) -> Endpoint:
    return Endpoint(EndpointConfig(server_header="edgepbx/test"), **kw)  # type: ignore[arg-type]


def sent(ep: Endpoint) -> list[tuple[Response, Peer]]:
    out = []
    for data, peer in ep.datagrams_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Response), data
        out.append((msg, peer))
    return out


# --------------------------------------------------------------------------- RFC 3581


@pytest.mark.parametrize(
    ("via", "peer", "params", "host_port"),
    [
        # RFC 3581 §4's example: rport gets the source port, received the source address.
        ("SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff", Peer("udp", "192.0.2.1", 9988),
         {"rport": "9988", "received": "192.0.2.1", "branch": "z9hG4bKkjshdyff"},
         ("10.1.1.1", 4540)),
        # With rport, received is added even when it equals sent-by (RFC 3581 §4).
        ("SIP/2.0/UDP 192.0.2.1:9988;rport;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 9988),
         {"rport": "9988", "received": "192.0.2.1", "branch": "z9hG4bK1"}, ("192.0.2.1", 9988)),
        # No rport, sent-by is the source address: nothing to add (RFC 3261 §18.2.1).
        ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 5060),
         {"branch": "z9hG4bK1"}, ("192.0.2.1", 5060)),
        # No rport, another address: received only.
        ("SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 5060),
         {"branch": "z9hG4bK1", "received": "192.0.2.1"}, ("10.1.1.1", 5060)),
        # A host name in sent-by always gets received.
        ("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 5060),
         {"branch": "z9hG4bK1", "received": "192.0.2.1"}, ("phone.example.com", None)),
        # IPv6 (RFC 5118): received carries the address without brackets.
        ("SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bK1;rport",
         Peer("udp", "2001:db8::9:255", 5070),
         {"branch": "z9hG4bK1", "rport": "5070", "received": "2001:db8::9:255"},
         ("[2001:db8::9:1]", 5060)),
        ("SIP/2.0/UDP [2001:DB8::1]:5060;branch=z9hG4bK1", Peer("udp", "2001:db8::1", 5060),
         {"branch": "z9hG4bK1"}, ("[2001:DB8::1]", 5060)),
        # Over TCP the same stamping applies.
        ("SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bK1;rport", Peer("tcp", "203.0.113.9", 40000),
         {"branch": "z9hG4bK1", "rport": "40000", "received": "203.0.113.9"},
         ("10.0.0.5", 5060)),
    ],
)
def test_stamp_via(
    via: str, peer: Peer, params: dict[str, str | None], host_port: tuple[str, int | None]
) -> None:
    req = parse_req(req_bytes(via=via + ", SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp"))
    stamp_via(req, peer)
    top = req.top_via
    assert top.params == params
    assert (top.host, top.port) == host_port
    # The header text itself changed (responses copy it), and only the first element.
    reparsed = parse_req(req.to_bytes())
    assert reparsed.top_via.params == params
    assert reparsed.vias[1].host == "proxy.example.com"
    assert len(reparsed.vias) == 2


@pytest.mark.parametrize(
    ("via", "peer", "dest"),
    [
        # rport: back to the source address and port (RFC 3581 §4).
        ("SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 9988),
         Peer("udp", "192.0.2.1", 9988)),
        # No rport: received address, Via port (RFC 3261 §18.2.2).
        ("SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 9988),
         Peer("udp", "192.0.2.1", 4540)),
        # No rport, no port in Via: 5060.
        ("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 9988),
         Peer("udp", "192.0.2.1", 5060)),
        ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", Peer("udp", "192.0.2.1", 5060),
         Peer("udp", "192.0.2.1", 5060)),
        # Streams: always the connection it came on.
        ("SIP/2.0/TCP 10.1.1.1:4540;branch=z9hG4bK1", Peer("tcp", "192.0.2.1", 33333),
         Peer("tcp", "192.0.2.1", 33333)),
        ("SIP/2.0/TLS 10.1.1.1:4540;branch=z9hG4bK1", Peer("tls", "192.0.2.1", 33333),
         Peer("tls", "192.0.2.1", 33333)),
    ],
)
def test_response_destination(via: str, peer: Peer, dest: Peer) -> None:
    req = parse_req(req_bytes(via=via))
    stamp_via(req, peer)
    assert response_destination(req, peer) == dest
    # And the endpoint really sends the OPTIONS answer there.
    ep = endpoint()
    ep.receive(req_bytes(via=via), peer, T0)
    [(resp, to)] = sent(ep)
    assert resp.status == 200
    assert to == dest


def test_response_carries_stamped_via() -> None:
    ep = endpoint()
    ep.receive(req_bytes(), SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.top_via.params["received"] == "192.0.2.1"
    assert resp.top_via.params["rport"] == "9988"


# --------------------------------------------------------------------------- OPTIONS


def test_options_gets_200_with_allow_accept_supported() -> None:
    ep = Endpoint(
        EndpointConfig(server_header="edgepbx/9", allow=("REGISTER", "OPTIONS", "INVITE"),
                       supported=("path", "outbound"), accept=("application/sdp",)),
    )
    ep.receive(req_bytes(), SRC, T0)
    [(resp, _)] = sent(ep)
    assert (resp.status, resp.reason) == (200, "OK")
    assert resp.headers.values("allow") == ["REGISTER", "OPTIONS", "INVITE"]
    assert resp.headers.values("accept") == ["application/sdp"]
    assert resp.headers.values("supported") == ["path", "outbound"]
    assert resp.headers.get("server") == "edgepbx/9"
    assert resp.call_id == "cid-1@example.com"
    assert resp.cseq.method == "OPTIONS"
    # §8.2.6.2: a To tag on every final response; the same one on a retransmission.
    assert resp.to.tag
    ep.receive(req_bytes(), SRC, T0 + 1)
    [(again, _)] = sent(ep)
    assert again.to.tag == resp.to.tag
    assert ep.events() == []
    assert ep.stats.by_method == {"OPTIONS": 2}


def test_options_inside_a_dialog_goes_to_the_transaction_user() -> None:
    ep = endpoint()
    ep.receive(req_bytes(to="<sip:bob@example.com>;tag=dialog"), SRC, T0)
    assert sent(ep) == []
    [event] = ep.events()
    assert isinstance(event, IncomingRequest)
    assert event.peer == SRC
    assert event.request.top_via.params["rport"] == "9988"  # already stamped


def test_other_requests_become_events() -> None:
    ep = endpoint()
    ep.receive(req_bytes("INVITE"), SRC, T0)
    assert sent(ep) == []
    [event] = ep.events()
    assert isinstance(event, IncomingRequest) and event.request.method == "INVITE"
    assert ep.events() == []


def test_responses_become_events_and_are_never_answered() -> None:
    ep = endpoint()
    req = parse_req(req_bytes("INVITE"))
    ep.receive(make_response(req, 180, to_tag="x").to_bytes(), SRC, T0)
    assert ep.datagrams_to_send() == []
    [event] = ep.events()
    assert isinstance(event, IncomingResponse) and event.response.status == 180


# --------------------------------------------------------------------------- REGISTER


def test_register_goes_to_the_handler_and_its_answer_is_routed() -> None:
    calls: list[tuple[str, Peer, float]] = []

    def on_register(request: Request, peer: Peer, now: float) -> Response:
        calls.append((request.method, peer, now))
        return make_response(request, 401, to_tag="t1")

    ep = endpoint(on_register=on_register)
    ep.receive(req_bytes("REGISTER", via="SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bK1"), SRC, T0)
    assert calls == [("REGISTER", SRC, T0)]
    [(resp, to)] = sent(ep)
    assert resp.status == 401
    assert to == Peer("udp", "192.0.2.1", 4540)  # no rport: Via port
    assert resp.headers.get("server") == "edgepbx/test"


def test_register_handler_parse_error_becomes_400_with_warning() -> None:
    def on_register(request: Request, peer: Peer, now: float) -> Response:
        raise SipParseError(400, 'malformed "Expires"')

    ep = endpoint(on_register=on_register)
    ep.receive(req_bytes("REGISTER"), SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.status == 400
    assert resp.headers.get("warning") == '399 edgepbx "malformed Expires"'
    assert resp.to.tag
    assert ep.stats.parse_errors == 1


def test_register_handler_bug_becomes_500_and_is_counted() -> None:
    def on_register(request: Request, peer: Peer, now: float) -> Response:
        raise ValueError("a bug")

    ep = endpoint(on_register=on_register)
    ep.receive(req_bytes("REGISTER"), SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.status == 500
    assert ep.stats.internal_errors == 1
    # The endpoint keeps working.
    ep.receive(req_bytes(), SRC, T0)
    [(ok, _)] = sent(ep)
    assert ok.status == 200


def test_register_without_handler_is_an_event() -> None:
    ep = endpoint()
    ep.receive(req_bytes("REGISTER"), SRC, T0)
    [event] = ep.events()
    assert isinstance(event, IncomingRequest)


# --------------------------------------------------------------------------- keep-alives


@pytest.mark.parametrize("data", [b"\r\n\r\n", b"\r\n", b" ", b"\r\n\r\n\r\n\r\n", b"\t\r\n "])
def test_crlf_keepalive_datagrams_are_ignored(data: bytes) -> None:
    ep = endpoint()
    ep.receive(data, SRC, T0)
    assert ep.datagrams_to_send() == []
    assert ep.events() == []
    assert ep.stats.keepalives == 1
    assert ep.stats.parse_errors == 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"garbage",
        b"\xff" * 100,
        b"SIP/2.0 200 OK\r\n\r\n",  # a response we cannot parse: never answered
        b"OPTIONS sip:a@b SIP/2.0\r\n\r\n",  # no routing headers to answer with
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",  # no blank line, no From/To/...
    ],
)
def test_garbage_is_dropped_without_raising(data: bytes) -> None:
    ep = endpoint()
    ep.receive(data, SRC, T0)
    assert ep.datagrams_to_send() == []
    assert ep.events() == []


def check_well_formed_response(data: bytes) -> None:
    """What we send is framed right even when it echoes a broken header back: a status
    line, header lines without stray control characters, a blank line, Content-Length."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep and body == b""
    lines = head.split(b"\r\n")
    assert re.fullmatch(rb"SIP/2\.0 (200|400|413|414|416|420|481|483|500|505|513) [A-Za-z /]+",
                        lines[0]), lines[0]
    for line in lines[1:]:
        assert re.fullmatch(rb"[A-Za-z-]+: [^\x00-\x08\x0a-\x1f\x7f]*", line), line
    assert lines[-1] == b"Content-Length: 0"
    for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq"):
        assert any(line.startswith(name + b": ") for line in lines[1:]), name


def test_random_bytes_never_raise() -> None:
    rng = random.Random(4475)
    ep = endpoint()
    good = req_bytes()
    for i in range(3000):
        if i % 3 == 0:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        else:  # mutations of a good request reach deeper into the parser
            buf = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                pos = rng.randrange(len(buf))
                op = rng.random()
                if op < 0.5:
                    buf[pos] = rng.choice(b" \t\r\n:;,<>\"@=?[]%\\/0123456789\x00\xffaZ")
                elif op < 0.8:
                    del buf[pos]
                else:
                    buf.insert(pos, rng.getrandbits(8))
            data = bytes(buf)
        ep.receive(data, SRC, T0)
        for out, _peer in ep.datagrams_to_send():
            assert re.match(rb"SIP/2\.0 [1-6][0-9][0-9] ", out), out[:80]
            assert b"\r\n\r\n" in out
        ep.events()
    assert ep.stats.received == 3000
    assert ep.stats.internal_errors == 0


@pytest.mark.parametrize(
    "data",
    [
        req_bytes(via="SIP/2.0/UDP 10.1.1.1:4540;r\nort;branch=z9hG4bK1"),
        req_bytes(via="SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bK1\rX-Injected: 1"),
        req_bytes().replace(b"Call-ID: cid-1", b"Call-ID: cid\n-1"),
    ],
)
def test_a_bare_cr_or_lf_is_never_echoed_back(data: bytes) -> None:
    ep = endpoint()
    ep.receive(data, SRC, T0)
    for out, _peer in ep.datagrams_to_send():
        check_well_formed_response(out)


@pytest.mark.parametrize(
    "data",
    [
        req_bytes(via="SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bK\x001"),
        req_bytes(via="SIP/2.0/UDP 10.1.1\x001:4540;rport;branch=z9hG4bK1"),
        req_bytes().replace(b"tag=ft1", b"tag=f\x08t1"),
    ],
)
def test_control_characters_are_never_echoed_back(data: bytes) -> None:
    ep = endpoint()
    ep.receive(data, SRC, T0)
    for out, _peer in ep.datagrams_to_send():
        check_well_formed_response(out)


def test_salvaged_responses_are_well_formed() -> None:
    ep = endpoint()
    data = req_bytes().replace(b"Content-Length: 0", b"Content-Length: 5")
    ep.receive(data, SRC, T0)
    [(out, _)] = ep.datagrams_to_send()
    check_well_formed_response(out)
    # A routing line with a bare LF is not copied: the request is dropped instead.
    bad = data.replace(b"Call-ID: cid-1", b"Call-ID: cid\n-1")
    ep.receive(bad, SRC, T0)
    assert ep.datagrams_to_send() == []


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda d: d.replace(b"Content-Length: 0", b"Content-Length: 99"), 400),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), 400),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nMax-Forwards: 70"), 400),
        (lambda d: d.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1), 505),
        (lambda d: d.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"x" * 70000 + b"\r\n\r\n"), 513),
        (lambda d: d.replace(b"Contact:", b"Bad Name: x\r\nContact:"), 400),
        (lambda d: d.replace(b"Contact: <sip:a@10.1.1.1>", b"Contact: <sip:a@10.1.1.1>\r\nX"),
         400),
    ],
)
def test_salvage_answers_unparseable_requests_with_warning(mutate: object, status: int) -> None:
    ep = endpoint()
    data = mutate(req_bytes("INVITE", extra=["Contact: <sip:a@10.1.1.1>"]))  # type: ignore[operator]
    with pytest.raises(SipParseError):
        parse_message(data)
    ep.receive(data, SRC, T0)
    [(resp, to)] = sent(ep)
    assert resp.status == status
    assert resp.headers.get("warning", ).startswith('399 edgepbx "')  # type: ignore[union-attr]
    assert resp.call_id == "cid-1@example.com"
    assert resp.cseq.method == "INVITE"
    assert resp.headers.get("from") == "<sip:alice@example.com>;tag=ft1"
    assert resp.headers.get("server") == "edgepbx/test"
    assert to == SRC
    assert ep.events() == []
    assert ep.stats.parse_errors == 1


def test_salvage_refuses_duplicate_routing_headers() -> None:
    ep = endpoint()
    data = req_bytes().replace(b"Call-ID: cid-1@example.com",
                               b"Call-ID: a\r\nCall-ID: b\r\nContent-Length: 9")
    ep.receive(data, SRC, T0)
    assert ep.datagrams_to_send() == []
    assert ep.stats.dropped == 1


@pytest.mark.parametrize(
    "via",
    [
        "garbage",
        "SIP/2.0/UDP host:99999;branch=z9hG4bK1",
        "SIP/2.0/UDP [::1;branch=z9hG4bK1",
    ],
)
def test_unparseable_via_is_answered_400_to_the_source(via: str) -> None:
    ep = endpoint()
    ep.receive(req_bytes(via=via), SRC, T0)
    [(resp, to)] = sent(ep)
    assert resp.status == 400
    assert to == SRC
    assert resp.headers.get("via") == via
    assert ep.stats.internal_errors == 0


def test_malformed_to_is_answered_without_raising() -> None:
    ep = endpoint()
    ep.receive(req_bytes(to="<sip:pbx.example.com"), SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.status == 400


def test_made_up_methods_do_not_grow_the_stats() -> None:
    ep = endpoint()
    for i in range(500):
        ep.receive(req_bytes(f"XMETHOD{i}"), SRC, T0)
    ep.events()
    assert len(ep.stats.by_method) <= 2
    assert sum(ep.stats.by_method.values()) == 500


# --------------------------------------------------------------------------- ACK


ACK_CASES = [
    req_bytes("ACK", to="<sip:bob@example.com>;tag=x"),
    req_bytes("ACK", via="garbage"),
    req_bytes("ACK").replace(b"Content-Length: 0", b"Content-Length: 99"),
    req_bytes("ACK").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1),
    req_bytes("ACK", extra=["Require: foo"]),
    req_bytes("ACK", extra=["Content-Type: application/x-unknown"], body=b"xx"),
    req_bytes("ACK", to="<sip:bob@example.com"),
]


@pytest.mark.parametrize("data", ACK_CASES)
def test_ack_is_never_answered(data: bytes) -> None:
    def on_register(request: Request, peer: Peer, now: float) -> Response:
        raise AssertionError("not a REGISTER")

    ep = endpoint(
        on_register=on_register, check_request=lambda r: check_request(r, supported=frozenset())
    )
    ep.receive(data, SRC, T0)
    assert ep.datagrams_to_send() == []


# --------------------------------------------------------------------------- with validate


def validating_endpoint() -> Endpoint:
    supported = frozenset({"path", "outbound"})
    return Endpoint(
        EndpointConfig(server_header="edgepbx/test", supported=tuple(sorted(supported))),
        check_request=lambda r: check_request(r, supported=supported),
    )


def test_420_lists_unsupported() -> None:
    ep = validating_endpoint()
    ep.receive(req_bytes(extra=["Require: outbound, 100rel, foo"]), SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.status == 420
    assert resp.headers.values("unsupported") == ["100rel", "foo"]
    assert resp.to.tag


def test_415_lists_accept() -> None:
    ep = validating_endpoint()
    ep.receive(req_bytes("MESSAGE", extra=["Content-Type: application/x-weird"], body=b"hi"),
               SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.status == 415
    assert resp.headers.values("accept") == ["application/sdp"]


def test_unknown_method_is_501() -> None:
    ep = validating_endpoint()
    ep.receive(req_bytes("FOOBAR"), SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.status == 501
    assert ep.events() == []


def test_register_goes_to_its_handler_before_inspection() -> None:
    # RFC 3261 §8.2: authenticate first, then inspect. The REGISTER handler does
    # both (see test_registration), so the endpoint must not inspect it first.
    called = []

    def on_register(request: Request, peer: Peer, now: float) -> Response:
        called.append(request)
        return make_response(request, 401)

    supported = frozenset({"path"})
    ep = Endpoint(EndpointConfig(), on_register=on_register,
                  check_request=lambda r: check_request(r, supported=supported))
    ep.receive(req_bytes("REGISTER", extra=["Require: gruu"]), SRC, T0)
    [(resp, _)] = sent(ep)
    assert resp.status == 401
    assert len(called) == 1


def test_inspect_builds_the_full_refusal() -> None:
    supported = frozenset({"path"})
    ep = Endpoint(EndpointConfig(supported=("path",)),
                  check_request=lambda r: check_request(r, supported=supported))
    refusal = ep.inspect(parse_req(req_bytes("REGISTER", extra=["Require: gruu"])))
    assert refusal is not None and refusal.status == 420
    assert refusal.headers.get("unsupported") == "gruu"
    assert ep.inspect(parse_req(req_bytes("REGISTER"))) is None


# --------------------------------------------------------------------------- retransmissions


def counting_register_handler() -> tuple[list[int], object]:
    calls: list[int] = []

    def handler(request: Request, peer: Peer, now: float) -> Response:
        calls.append(1)
        # A fresh value per call, as a new digest nonce would be.
        response = make_response(request, 401)
        response.headers.add("WWW-Authenticate", f'Digest nonce="n{len(calls)}"')
        return response

    return calls, handler


def test_a_udp_retransmission_gets_the_same_bytes_without_reprocessing() -> None:
    calls, handler = counting_register_handler()
    ep = endpoint(on_register=handler)
    data = req_bytes("REGISTER", to="<sip:alice@example.com>")
    ep.receive(data, SRC, T0)
    first = ep.datagrams_to_send()
    ep.receive(data, SRC, T0 + 0.5)
    again = ep.datagrams_to_send()
    assert again == first and len(calls) == 1
    assert ep.stats.retransmissions == 1


def test_a_new_transaction_is_processed_again() -> None:
    calls, handler = counting_register_handler()
    ep = endpoint(on_register=handler)
    ep.receive(req_bytes("REGISTER", to="<sip:alice@example.com>"), SRC, T0)
    other_branch = "SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKother"
    ep.receive(req_bytes("REGISTER", to="<sip:alice@example.com>", via=other_branch), SRC, T0)
    first, second = ep.datagrams_to_send()
    assert first[0] != second[0] and len(calls) == 2


@pytest.mark.parametrize("later, transport, reprocessed", [
    (5.0, "udp", True),  # past the cache's lifetime
    (0.5, "tcp", True),  # a reliable transport never retransmits: nothing is cached
])
def test_when_a_repeat_is_processed_again(later: float, transport: str, reprocessed: bool) -> None:
    calls, handler = counting_register_handler()
    ep = endpoint(on_register=handler)
    peer = Peer(transport, SRC.host, SRC.port)
    data = req_bytes("REGISTER", to="<sip:alice@example.com>")
    ep.receive(data, peer, T0)
    ep.receive(data, peer, T0 + later)
    assert (len(calls) == 2) is reprocessed


def test_recent_replies_stay_bounded() -> None:
    cache = RecentReplies(ttl=4.0, max_entries=3)
    for i in range(10):
        cache.put((f"z9hG4bK{i}", "h", None, "REGISTER", 1), T0, (b"x", SRC))
    assert len(cache) == 3
    assert cache.get(("z9hG4bK9", "h", None, "REGISTER", 1), T0) == (b"x", SRC)
    assert cache.get(("z9hG4bK0", "h", None, "REGISTER", 1), T0) is None


def test_a_flood_of_bug_triggering_requests_logs_one_traceback_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_register(request: Request, peer: Peer, now: float) -> Response:
        raise ValueError("a bug")

    ep = endpoint(on_register=on_register)
    caplog.set_level("ERROR", logger="sipstack.endpoint")
    for i in range(100):
        ep.receive(req_bytes("REGISTER"), SRC, T0 + i * 0.02)  # 2 s of a 50/s flood
    assert ep.stats.internal_errors == 100
    assert len(caplog.records) == 2
    assert all(status == 500 for status in (r.status for r, _ in sent(ep)))
