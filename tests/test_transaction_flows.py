"""Message flows through the transaction layer: ACKs, absorption, CANCEL, matching."""

from __future__ import annotations

import pytest
from txkit import PHONE_UDP, TCP, UDP, Clock, ack_for, first_line, request, response, same

from sipstack.message import Request, Response, make_response, parse_message
from sipstack.peer import Peer
from sipstack.transaction import (
    AckReceived,
    CancelReceived,
    ClientTxKey,
    LayerConfig,
    RequestReceived,
    ResponseReceived,
    RetransmissionAbsorbed,
    ServerTxKey,
    State,
    StrayResponse,
    TransactionLayer,
    TransactionLimitError,
    TransactionLimitReached,
    TransactionStateError,
    TransactionTerminated,
    TransactionTimeout,
    TransactionUsageError,
    TransportError,
    UnknownTransactionError,
    make_ack,
    make_cancel,
    new_branch,
)


def parse_req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def server_key(layer: TransactionLayer, req: Request, peer: Peer = PHONE_UDP) -> ServerTxKey:
    layer.receive(req, peer, 0.0)
    events = layer.events()
    (ev,) = [e for e in events if isinstance(e, RequestReceived)]
    return ev.key


def lines(layer: TransactionLayer) -> list[str]:
    return [first_line(d) for d, _p in layer.datagrams_to_send()]


# --------------------------------------------------------------------------- ICT


def test_ict_acks_non_2xx_itself() -> None:
    layer = TransactionLayer()
    invite = request(
        "INVITE",
        routes=("<sip:proxy1.example;lr>", "<sip:proxy2.example;lr>"),
        body=b"v=0\r\n",
    )
    key = layer.send_request(invite, UDP, 0.0)
    layer.datagrams_to_send()
    busy = response(invite, 486, to_tag="callee")
    layer.receive(busy, UDP, 0.3)
    out = layer.datagrams_to_send()
    assert len(out) == 1 and out[0][1] == UDP
    ack = parse_req(out[0][0])
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.top_via.branch == invite.top_via.branch
    assert len(ack.vias) == 1
    assert ack.headers.get_all("route") == invite.headers.get_all("route")
    assert ack.to.tag == "callee"
    assert ack.from_.tag == invite.from_.tag
    assert ack.call_id == invite.call_id
    assert (ack.cseq.number, ack.cseq.method) == (invite.cseq.number, "ACK")
    assert ack.body == b""
    events = layer.events()
    assert [type(e) for e in events] == [ResponseReceived]
    assert layer.state_of(key) is State.COMPLETED
    # A retransmitted 486 is ACKed again (same bytes) and not passed up.
    layer.receive(response(invite, 486, to_tag="callee"), UDP, 1.0)
    again = layer.datagrams_to_send()
    assert again == out
    assert [type(e) for e in layer.events()] == [RetransmissionAbsorbed]


def test_make_ack_and_cancel_helpers() -> None:
    invite = request(
        "INVITE", routes=("<sip:p.example;lr>",), extra_vias=("SIP/2.0/UDP x:1;branch=z9hG4bKo",)
    )
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.top_via.branch == invite.top_via.branch
    assert len(cancel.vias) == 1
    assert cancel.headers.get("to") == invite.headers.get("to")
    assert cancel.headers.get("from") == invite.headers.get("from")
    assert cancel.call_id == invite.call_id
    assert str(cancel.cseq) == f"{invite.cseq.number} CANCEL"
    assert cancel.headers.get_all("route") == ["<sip:p.example;lr>"]
    assert cancel.max_forwards == 70
    # Round-trips through the parser.
    assert parse_req(cancel.to_bytes()).cseq.method == "CANCEL"
    ack = make_ack(invite, response(invite, 404, to_tag="t9"))
    assert ack.to.tag == "t9" and ack.cseq.method == "ACK"
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()


def test_ict_2xx_goes_to_tu_and_retransmissions_too() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    key = layer.send_request(invite, UDP, 0.0)
    layer.receive(response(invite, 180), UDP, 0.1)
    layer.receive(response(invite, 200, to_tag="a"), UDP, 0.2)
    layer.receive(response(invite, 200, to_tag="a"), UDP, 0.7)
    # A forked 2xx from another UAS is passed up as well (RFC 6026).
    layer.receive(response(invite, 200, to_tag="b"), UDP, 0.8)
    layer.receive(response(invite, 486, to_tag="c"), UDP, 0.9)  # ignored in Accepted
    got = [e for e in layer.events() if isinstance(e, ResponseReceived)]
    assert [(e.response.status, e.response.to.tag) for e in got] == [
        (180, "tt1"), (200, "a"), (200, "a"), (200, "b"),
    ]
    assert all(e.key == key for e in got)
    assert [line for line in lines(layer) if line.startswith("ACK")] == []
    assert layer.stats.ignored == 1


def test_stray_response_after_termination() -> None:
    clock = Clock(TransactionLayer())
    invite = request("INVITE")
    clock.layer.send_request(invite, UDP, 0.0)
    clock.layer.receive(response(invite, 200), UDP, 0.1)
    clock.advance(40.0)
    assert clock.layer.active_count() == 0
    clock.layer.events()
    late = response(invite, 200)
    clock.layer.receive(late, UDP, 41.0)
    assert clock.layer.events() == [StrayResponse(late, UDP)]


def test_response_without_branch_or_unknown_is_stray() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", branch="")
    resp = response(req, 200)
    layer.receive(resp, UDP, 0.0)
    assert layer.events() == [StrayResponse(resp, UDP)]


def test_ict_client_matching_uses_cseq_method() -> None:
    """A response with the INVITE branch but CSeq CANCEL belongs to the CANCEL."""
    layer = TransactionLayer()
    invite = request("INVITE")
    ikey = layer.send_request(invite, UDP, 0.0)
    layer.receive(response(invite, 180), UDP, 0.1)
    cancel = make_cancel(invite)
    ckey = layer.send_request(cancel, UDP, 0.2)
    assert ckey == ClientTxKey(ikey.branch, "CANCEL")
    layer.events()
    layer.receive(response(cancel, 200), UDP, 0.3)
    layer.receive(response(invite, 487), UDP, 0.35)
    got = [(e.key.method, e.response.status) for e in layer.events()
           if isinstance(e, ResponseReceived)]
    assert got == [("CANCEL", 200), ("INVITE", 487)]


def test_cancel_restarts_timer_b_in_proceeding() -> None:
    clock = Clock(TransactionLayer())
    invite = request("INVITE")
    key = clock.layer.send_request(invite, UDP, 0.0)
    clock.layer.receive(response(invite, 180), UDP, 0.1)
    clock.advance(100.0)
    assert clock.layer.state_of(key) is State.PROCEEDING  # rings for ever without CANCEL
    clock.layer.send_request(make_cancel(invite), UDP, 100.0)
    clock.layer.receive(response(make_cancel(invite), 200), UDP, 100.1)
    clock.advance(131.9)
    assert clock.layer.state_of(key) is State.PROCEEDING
    clock.advance(132.1)
    assert clock.layer.state_of(key) is None
    assert TransactionTimeout(key, "B") in clock.layer.events()


def test_cancel_before_provisional_is_refused() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    layer.send_request(invite, UDP, 0.0)
    with pytest.raises(TransactionStateError):
        layer.send_request(make_cancel(invite), UDP, 0.1)
    assert layer.active_count() == 1  # no CANCEL transaction was created
    layer.receive(response(invite, 100), UDP, 0.2)
    layer.send_request(make_cancel(invite), UDP, 0.3)
    assert layer.active_count() == 2


# --------------------------------------------------------------------------- NICT


def test_nict_absorbs_response_retransmissions() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    key = layer.send_request(req, UDP, 0.0)
    layer.receive(response(req, 401), UDP, 0.1)
    layer.receive(response(req, 401), UDP, 0.2)
    events = layer.events()
    assert [type(e) for e in events] == [ResponseReceived, RetransmissionAbsorbed]
    assert events[1] == RetransmissionAbsorbed(key)


def test_absorbed_events_can_be_switched_off() -> None:
    layer = TransactionLayer(LayerConfig(absorbed_events=False))
    req = request("REGISTER")
    layer.send_request(req, UDP, 0.0)
    layer.receive(response(req, 200), UDP, 0.1)
    layer.receive(response(req, 200), UDP, 0.2)
    assert [type(e) for e in layer.events()] == [ResponseReceived]
    assert layer.stats.absorbed == 1


# --------------------------------------------------------------------------- NIST


def test_nist_absorbs_and_resends_last_response() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="x")
    key = server_key(layer, bye)
    layer.receive(same(bye), PHONE_UDP, 0.1)  # Trying: nothing to resend
    assert lines(layer) == []
    assert layer.events() == [RetransmissionAbsorbed(key)]
    layer.send_response(key, make_response(bye, 100), 0.2)
    layer.receive(same(bye), PHONE_UDP, 0.3)
    assert lines(layer) == ["SIP/2.0 100 Trying", "SIP/2.0 100 Trying"]
    layer.send_response(key, make_response(bye, 200), 0.4)
    first = layer.datagrams_to_send()
    layer.receive(same(bye), PHONE_UDP, 0.5)
    layer.receive(same(bye), PHONE_UDP, 5.0)
    again = layer.datagrams_to_send()
    assert again == first * 2  # the very same bytes
    with pytest.raises(TransactionStateError):
        layer.send_response(key, make_response(bye, 500), 0.6)
    with pytest.raises(TransactionStateError):
        layer.send_response(key, make_response(bye, 180), 0.6)


def test_send_response_errors() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="x")
    key = server_key(layer, bye)
    with pytest.raises(TransactionUsageError):
        layer.send_response(key, Response(99, "Odd"), 0.1)
    unknown = key._replace(branch="z9hG4bK-nope")
    with pytest.raises(UnknownTransactionError):
        layer.send_response(unknown, make_response(bye, 200), 0.1)
    assert issubclass(UnknownTransactionError, TransactionStateError)


def test_server_match_needs_same_sent_by() -> None:
    """Two clients that picked the same branch get two transactions (§17.2.3)."""
    layer = TransactionLayer()
    a = request("OPTIONS", branch="z9hG4bK-same", sent_by="192.0.2.20:5062")
    b = request("OPTIONS", branch="z9hG4bK-same", sent_by="192.0.2.21:5062")
    ka = server_key(layer, a)
    kb = server_key(layer, b, Peer("udp", "192.0.2.21", 5062))
    assert ka != kb
    assert layer.active_count() == 2
    # Host comparison is case-insensitive.
    c = request("OPTIONS", branch="z9hG4bK-case", sent_by="Phone.EXAMPLE:5062")
    kc = server_key(layer, c)
    layer.receive(same(request("OPTIONS", branch="z9hG4bK-case", sent_by="phone.example:5062")),
                  PHONE_UDP, 0.1)
    assert layer.events() == [RetransmissionAbsorbed(kc)]


def test_same_branch_different_method_is_another_transaction() -> None:
    layer = TransactionLayer()
    server_key(layer, request("OPTIONS", branch="z9hG4bK-m"))
    server_key(layer, request("INFO", branch="z9hG4bK-m"))
    assert layer.active_count() == 2


# --------------------------------------------------------------------------- IST


def test_ist_absorbs_invite_retransmissions_and_resends_provisional() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    key = server_key(layer, invite)
    layer.send_response(key, make_response(invite, 180, to_tag="s"), 0.05)
    assert lines(layer) == ["SIP/2.0 180 Ringing"]
    layer.receive(same(invite), PHONE_UDP, 0.5)
    assert lines(layer) == ["SIP/2.0 180 Ringing"]
    assert layer.events() == [RetransmissionAbsorbed(key)]
    layer.send_response(key, make_response(invite, 603, to_tag="s"), 1.0)
    layer.receive(same(invite), PHONE_UDP, 1.1)
    assert lines(layer) == ["SIP/2.0 603 Decline", "SIP/2.0 603 Decline"]


def test_ist_ack_for_non_2xx_is_absorbed() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    key = server_key(layer, invite)
    busy = make_response(invite, 486, to_tag="s")
    layer.send_response(key, busy, 0.1)
    layer.receive(ack_for(invite, busy), PHONE_UDP, 0.2)
    assert layer.state_of(key) is State.CONFIRMED
    layer.receive(ack_for(invite, busy), PHONE_UDP, 0.3)
    layer.receive(same(invite), PHONE_UDP, 0.4)
    events = layer.events()
    assert not any(isinstance(e, AckReceived) for e in events)
    assert events.count(RetransmissionAbsorbed(key)) == 2
    assert lines(layer) == ["SIP/2.0 486 Busy Here"]  # nothing resent in Confirmed


def test_ist_accepted_retransmits_2xx_until_ack_with_new_branch() -> None:
    clock = Clock(TransactionLayer())
    invite = request("INVITE")
    key = server_key(clock.layer, invite)
    ok = make_response(invite, 200, to_tag="s")
    clock.layer.send_response(key, ok, 0.0)
    assert clock.layer.state_of(key) is State.ACCEPTED
    clock.advance(2.0)
    assert clock.times("SIP/2.0 200") == [0.0, 0.5, 1.5]
    # INVITE retransmissions are absorbed, not answered (RFC 6026).
    clock.layer.receive(same(invite), PHONE_UDP, 2.0)
    assert clock.drain() == []
    # The ACK for a 2xx has a new branch; it still stops the retransmissions and
    # reaches the TU with the INVITE transaction's key.
    ack = ack_for(invite, ok, branch="z9hG4bK-ack2xx")
    clock.layer.receive(ack, PHONE_UDP, 2.1)
    assert AckReceived(ack, PHONE_UDP, key) in clock.layer.events()
    clock.advance(40.0)
    assert clock.times("SIP/2.0 200") == [0.0, 0.5, 1.5]
    assert clock.layer.state_of(key) is None
    assert not any(isinstance(e, TransactionTimeout) for e in clock.layer.events())
    # After Timer L the ACK retransmission is a stray ACK for the dialog layer.
    clock.layer.receive(ack, PHONE_UDP, 41.0)
    assert clock.layer.events() == [AckReceived(ack, PHONE_UDP, None)]


def test_ist_2xx_never_acked_reports_timer_l() -> None:
    clock = Clock(TransactionLayer())
    invite = request("INVITE")
    key = server_key(clock.layer, invite)
    clock.layer.send_response(key, make_response(invite, 200, to_tag="s"), 0.0)
    clock.advance(100.0)
    assert clock.times("SIP/2.0 200") == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]
    events = clock.layer.events()
    assert TransactionTimeout(key, "L") in events
    assert events[-1] == TransactionTerminated(key)


def test_ist_without_layer_2xx_retransmission_is_plain_rfc6026() -> None:
    clock = Clock(TransactionLayer(LayerConfig(retransmit_2xx=False)))
    invite = request("INVITE")
    key = server_key(clock.layer, invite)
    ok = make_response(invite, 200, to_tag="s")
    clock.layer.send_response(key, ok, 0.0)
    clock.advance(1.0)
    clock.layer.send_response(key, ok, 1.0)  # the TU retransmits through the transaction
    clock.advance(40.0)
    assert clock.times("SIP/2.0 200") == [0.0, 1.0]
    assert not any(isinstance(e, TransactionTimeout) for e in clock.layer.events())


def test_ist_reliable_2xx_not_retransmitted() -> None:
    clock = Clock(TransactionLayer())
    invite = request("INVITE", transport="TCP")
    peer = Peer("tcp", "192.0.2.20", 40000)
    key = server_key(clock.layer, invite, peer)
    clock.layer.send_response(key, make_response(invite, 200, to_tag="s"), 0.0)
    clock.advance(31.0)
    assert clock.layer.state_of(key) is State.ACCEPTED
    clock.advance(40.0)
    assert clock.times("SIP/2.0 200") == [0.0]
    assert clock.layer.state_of(key) is None


def test_ist_tu_misuse() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    key = server_key(layer, invite)
    layer.send_response(key, make_response(invite, 200, to_tag="s"), 0.0)
    with pytest.raises(TransactionStateError):
        layer.send_response(key, make_response(invite, 180, to_tag="s"), 0.1)
    with pytest.raises(TransactionStateError):
        layer.send_response(key, make_response(invite, 486, to_tag="s"), 0.1)
    layer.send_response(key, make_response(invite, 200, to_tag="s"), 0.2)  # allowed


# --------------------------------------------------------------------------- CANCEL (server)


def test_cancel_matches_pending_invite() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    ikey = server_key(layer, invite)
    cancel = make_cancel(invite)
    layer.receive(cancel, PHONE_UDP, 1.0)
    (ev,) = layer.events()
    assert isinstance(ev, CancelReceived)
    assert ev.invite_key == ikey and ev.pending
    assert ev.key.method == "CANCEL" and ev.key.branch == ikey.branch
    # The TU answers both: 200 to the CANCEL, 487 to the INVITE.
    layer.send_response(ev.key, make_response(cancel, 200), 1.0)
    layer.send_response(ikey, make_response(invite, 487, to_tag="s"), 1.0)
    assert lines(layer) == ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
    # A CANCEL retransmission hits the CANCEL's own transaction.
    layer.receive(make_cancel(invite), PHONE_UDP, 1.5)
    assert lines(layer) == ["SIP/2.0 200 OK"]
    assert layer.events() == [RetransmissionAbsorbed(ev.key)]


def test_cancel_after_final_response_is_not_pending() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    ikey = server_key(layer, invite)
    layer.send_response(ikey, make_response(invite, 200, to_tag="s"), 0.5)
    layer.receive(make_cancel(invite), PHONE_UDP, 1.0)
    (ev,) = layer.events()
    assert isinstance(ev, CancelReceived)
    assert ev.invite_key == ikey and not ev.pending


def test_cancel_without_invite() -> None:
    layer = TransactionLayer()
    layer.receive(make_cancel(request("INVITE")), PHONE_UDP, 1.0)
    (ev,) = layer.events()
    assert isinstance(ev, CancelReceived)
    assert ev.invite_key is None and not ev.pending


# --------------------------------------------------------------------------- RFC 2543


def legacy_invite(**kw: object) -> Request:
    return request("INVITE", branch="", **kw)  # type: ignore[arg-type]


def test_rfc2543_invite_retransmission_and_ack() -> None:
    layer = TransactionLayer()
    invite = legacy_invite()
    key = server_key(layer, invite)
    assert key.legacy is not None
    layer.receive(same(invite), PHONE_UDP, 0.1)
    assert layer.events() == [RetransmissionAbsorbed(key)]
    busy = make_response(invite, 486, to_tag="srv")
    layer.send_response(key, busy, 0.2)
    # An ACK with a different To tag does not match (it acknowledges something else).
    wrong = ack_for(invite, make_response(invite, 486, to_tag="other"))
    layer.receive(wrong, PHONE_UDP, 0.3)
    assert layer.events() == [AckReceived(wrong, PHONE_UDP, None)]
    assert layer.state_of(key) is State.COMPLETED
    layer.receive(ack_for(invite, busy), PHONE_UDP, 0.4)
    assert layer.state_of(key) is State.CONFIRMED


def test_rfc2543_matching_elements() -> None:
    layer = TransactionLayer()
    invite = legacy_invite(call_id="legacy-1", from_tag="f", cseq=5)
    server_key(layer, invite)
    # Different CSeq, From tag, Call-ID, Request-URI or Via: a new transaction each.
    for changed in (
        dict(cseq=6),
        dict(from_tag="g"),
        dict(call_id="legacy-2"),
        dict(uri="sip:1002@pbx.example"),
        dict(sent_by="192.0.2.20:5063"),
    ):
        args = dict(call_id="legacy-1", from_tag="f", cseq=5)
        args.update(changed)  # type: ignore[arg-type]
        layer.receive(legacy_invite(**args), PHONE_UDP, 0.1)
    assert layer.active_count() == 6
    layer.events()
    # A non-cookie branch is still RFC 2543 matching, not branch matching.
    old_branch = request("OPTIONS", branch="1234")
    k = server_key(layer, old_branch)
    assert k.legacy is not None


def test_rfc2543_cancel_and_2xx_ack() -> None:
    layer = TransactionLayer()
    invite = legacy_invite()
    ikey = server_key(layer, invite)
    layer.receive(make_cancel(invite), PHONE_UDP, 0.1)
    (ev,) = layer.events()
    assert isinstance(ev, CancelReceived) and ev.invite_key == ikey and ev.pending
    ok = make_response(invite, 200, to_tag="srv")
    layer.send_response(ikey, ok, 0.2)
    ack = ack_for(invite, ok)  # RFC 2543: same Via, response's To tag
    layer.receive(ack, PHONE_UDP, 0.3)
    assert AckReceived(ack, PHONE_UDP, ikey) in layer.events()


# --------------------------------------------------------------------------- misc


def test_stray_ack_goes_to_tu() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    ack = ack_for(invite, response(invite, 200))
    layer.receive(ack, PHONE_UDP, 0.0)
    assert layer.events() == [AckReceived(ack, PHONE_UDP, None)]
    assert layer.active_count() == 0


def test_send_request_usage_errors() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionUsageError):
        layer.send_request(request("ACK"), UDP, 0.0)
    with pytest.raises(TransactionUsageError):
        layer.send_request(request("OPTIONS", branch="abc"), UDP, 0.0)
    with pytest.raises(TransactionUsageError):
        layer.send_request(request("OPTIONS", branch=""), UDP, 0.0)
    req = request("OPTIONS")
    layer.send_request(req, UDP, 0.0)
    with pytest.raises(TransactionUsageError):
        layer.send_request(req, UDP, 0.0)
    bad = request("OPTIONS")
    bad.method = "INFO"
    with pytest.raises(TransactionUsageError):
        layer.send_request(bad, UDP, 0.0)
    broken = Request("OPTIONS", "sip:x@y")
    with pytest.raises(TransactionUsageError):
        layer.send_request(broken, UDP, 0.0)


def test_transaction_limit() -> None:
    layer = TransactionLayer(LayerConfig(max_transactions=3))
    for _ in range(3):
        server_key(layer, request("OPTIONS"))
    extra = request("OPTIONS")
    layer.receive(extra, PHONE_UDP, 0.0)
    assert layer.events() == [TransactionLimitReached(extra, PHONE_UDP, 3)]
    with pytest.raises(TransactionLimitError):
        layer.send_request(request("OPTIONS"), UDP, 0.0)
    assert layer.active_count() == 3
    assert layer.stats.limit_hits == 2
    # ACKs need no transaction and still get through.
    invite = request("INVITE")
    ack = ack_for(invite, response(invite, 200))
    layer.receive(ack, PHONE_UDP, 0.0)
    assert layer.events() == [AckReceived(ack, PHONE_UDP, None)]


def test_transport_error_by_peer_and_key() -> None:
    layer = TransactionLayer()
    a = layer.send_request(request("INVITE"), UDP, 0.0)
    b = layer.send_request(request("OPTIONS"), UDP, 0.0)
    other = layer.send_request(request("OPTIONS"), TCP, 0.0)
    layer.events()
    assert layer.transport_error(UDP, 0.1) == 2
    events = layer.events()
    assert TransportError(a, UDP) in events and TransportError(b, UDP) in events
    assert layer.active_count() == 1
    assert layer.transport_error(TCP, 0.2, key=other) == 1
    assert layer.transport_error(TCP, 0.3, key=other) == 0


def test_response_routing() -> None:
    """force_rport (default) answers the source; RFC mode uses the Via sent-by port."""
    src = Peer("udp", "198.51.100.7", 31000)
    for cfg, via_params, expected in (
        (LayerConfig(), "", src),
        (LayerConfig(force_rport=False), ";rport", src),
        (LayerConfig(force_rport=False), "", Peer("udp", "198.51.100.7", 5062)),
    ):
        layer = TransactionLayer(cfg)
        req = request("OPTIONS", via_params=via_params)
        key = server_key(layer, req, src)
        layer.send_response(key, make_response(req, 200), 0.0)
        ((_data, peer),) = layer.datagrams_to_send()
        assert peer == expected
    layer = TransactionLayer(LayerConfig(force_rport=False))
    req = request("OPTIONS", sent_by="192.0.2.20")
    key = server_key(layer, req, src)
    layer.send_response(key, make_response(req, 200), 0.0)
    assert layer.datagrams_to_send()[0][1] == Peer("udp", "198.51.100.7", 5060)


def test_unparseable_headers_are_dropped_not_raised() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    req.headers.set("via", "garbage")
    req.invalidate()
    layer.receive(req, PHONE_UDP, 0.0)
    assert layer.stats.dropped == 1
    assert layer.events() == []


def test_send_stateless_and_next_event() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_stateless(make_response(req, 503), PHONE_UDP)
    assert lines(layer) == ["SIP/2.0 503 Service Unavailable"]
    layer.receive(req, PHONE_UDP, 0.0)
    assert isinstance(layer.next_event(), RequestReceived)
    assert layer.next_event() is None


def test_request_serialized_once() -> None:
    calls = 0

    class Counting(Request):
        __slots__ = ()

        def to_bytes(self) -> bytes:
            nonlocal calls
            calls += 1
            return super().to_bytes()

    parsed = request("OPTIONS")
    req = Counting(parsed.method, parsed.uri, parsed.headers, parsed.body)
    clock = Clock(TransactionLayer())
    clock.layer.send_request(req, UDP, 0.0)
    clock.advance(10.0)
    assert calls == 1
    datas = {s.data for s in clock.sent}
    assert len(datas) == 1 and len(clock.sent) > 3
