"""Transfers, park and pickup on the virtual clock (see tests/callkit.py)."""

from __future__ import annotations

import pytest
from callkit import FakeEnv, Harness, Phone, only, sdp

from agent.calls.env import UserInfo
from dialplan.restriction import ClassOfRestriction
from sipstack.message import Request, Response
from sipstack.sdp import parse_sdp, rtpmap


@pytest.fixture
def h() -> Harness:
    env = FakeEnv([("1001", "Alice"), ("1002", "Bob"), ("1003", "Carol"), ("1004", "Dave")])
    for ext in ("1001", "1002", "1003", "1004"):
        env.set_user(ext, voicemail=False)
    return Harness(env)


def _phone(h: Harness, ext: str) -> Phone:
    phone = Phone(h, ext, f"10.0.0.{ext[-1]}")
    h.env.register(ext, phone.peer)
    return phone


def _request(out: list, phone: Phone, method: str) -> Request:
    found = only(out, method=method, peer=phone.peer)
    assert found, out
    message = found[-1]
    assert isinstance(message, Request)
    return message


def _call(h: Harness, caller: Phone, callee: Phone) -> Request:
    invite = _request(caller.invite(callee.extension), callee, "INVITE")
    out = callee.respond(invite, 200, body=sdp(callee.peer.host, 5000))
    ok = only(out, status=200, peer=caller.peer)[0]
    assert isinstance(ok, Response)
    caller.ack(ok.to.tag or "")
    return invite


def _sipfrags(out: list, phone: Phone) -> list[bytes]:
    return [m.body for m in only(out, method="NOTIFY", peer=phone.peer)]


def test_blind_transfer_joins_the_other_party_to_the_target(h: Harness) -> None:
    alice, bob, carol = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1003")
    to_bob = _call(h, alice, bob)
    out = bob.request_to(to_bob, "REFER", cseq=2, extra="Refer-To: <sip:1003@pbx.test>")
    assert only(out, status=202, peer=bob.peer)
    assert [b.split(b"\r\n")[0] for b in _sipfrags(out, bob)] == [b"SIP/2.0 100 Trying",
                                                                 b"SIP/2.0 200 OK"]
    to_carol = _request(out, carol, "INVITE")
    assert to_carol.body == b""  # delayed offer: carol's answer will carry the offer
    assert "Alice" in (to_carol.headers.get("from") or "")
    out = carol.respond(to_carol, 200, tag="carol", body=sdp("10.0.0.3", 6000))
    reinvite = _request(out, alice, "INVITE")
    assert b"10.0.0.3" in reinvite.body
    out = alice.respond(reinvite, 200, tag=alice.tag, body=sdp("10.0.0.1", 4000))
    acks = only(out, method="ACK", peer=carol.peer)
    assert acks and b"10.0.0.1" in acks[0].body  # carol gets alice's answer in the ACK
    assert only(out, method="ACK", peer=alice.peer)
    [first] = h.calls.take_records()
    assert (first.caller, first.callee, first.cause) == ("1001", "1002", "transferred")
    [call] = h.calls.calls.values()
    assert call.peer is not None and call.peer.label == "1003"
    # Alice and Carol now talk; Alice hangs up and the new call ends.
    out = alice.in_dialog("BYE")
    assert only(out, method="BYE", peer=carol.peer)
    [second] = h.calls.take_records()
    assert (second.caller, second.callee, second.disposition) == ("1001", "1003", "answered")
    assert h.calls.calls == {}


def test_transfer_to_a_restricted_number_is_refused_and_the_call_stays(h: Harness) -> None:
    alice, bob = _phone(h, "1001"), _phone(h, "1002")
    h.env.set_user("1002", cor=ClassOfRestriction.INTERNAL)
    to_bob = _call(h, alice, bob)
    out = bob.request_to(to_bob, "REFER", cseq=2, extra="Refer-To: <sip:900112345678@pbx.test>")
    frags = _sipfrags(out, bob)
    assert frags and not frags[-1].startswith(b"SIP/2.0 200")
    assert len(h.calls.calls) == 1


def test_attended_transfer_with_replaces(h: Harness) -> None:
    alice, bob, carol = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1003")
    _call(h, alice, bob)  # call 1: alice -> bob
    to_carol = _call(h, bob, carol)  # call 2: bob consults carol
    # Bob transfers alice to carol, naming his own dialog of call 2 (he is its caller).
    replaces = f"{bob.call_id}%3Bto-tag%3D{bob.remote_tag}%3Bfrom-tag%3D{bob.tag}"
    first = next(c for c in h.calls.calls.values() if c.caller == "1001")
    bob_leg = first.peer
    assert bob_leg is not None and bob_leg.invite is not None
    out = bob.request_to(bob_leg.invite, "REFER", cseq=3,
                         extra=f"Refer-To: <sip:1003@pbx.test?Replaces={replaces}>")
    assert only(out, status=202, peer=bob.peer)
    reinvite_carol = _request(out, carol, "INVITE")
    assert reinvite_carol.body == b""
    out = carol.respond(reinvite_carol, 200, tag="callee", body=sdp("10.0.0.3", 6000))
    reinvite_alice = _request(out, alice, "INVITE")
    assert b"10.0.0.3" in reinvite_alice.body
    out = alice.respond(reinvite_alice, 200, tag=alice.tag, body=sdp("10.0.0.1", 4000))
    ack = only(out, method="ACK", peer=carol.peer)
    assert ack and b"10.0.0.1" in ack[0].body
    assert _sipfrags(out, bob)[-1].startswith(b"SIP/2.0 200")
    records = h.calls.take_records()
    assert sorted(r.cause for r in records) == ["transferred", "transferred"]
    [joined] = h.calls.calls.values()
    assert {joined.a.label, joined.peer.label} == {"1001", "1003"}  # type: ignore[union-attr]
    assert to_carol is not None


def test_park_and_retrieve(h: Harness) -> None:
    alice, bob, dave = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1004")
    to_bob = _call(h, alice, bob)
    out = bob.request_to(to_bob, "REFER", cseq=2, extra="Refer-To: <sip:*703@pbx.test>")
    assert only(out, status=202, peer=bob.peer)
    assert _sipfrags(out, bob)[-1].startswith(b"SIP/2.0 200")
    assert 3 in h.calls.features.parked
    [parked] = h.calls.calls.values()
    assert parked.summary(h.now)["parked"] == 3
    out = dave.invite("*713")
    reinvite = _request(out, alice, "INVITE")
    assert b"10.0.0.4" in reinvite.body  # dave's offer goes to the parked alice
    out = alice.respond(reinvite, 200, tag=alice.tag, body=sdp("10.0.0.1", 4000))
    ok = only(out, status=200, peer=dave.peer)
    assert ok and b"10.0.0.1" in ok[0].body
    assert h.calls.features.parked == {}
    [call] = h.calls.calls.values()
    assert call.peer is not None and call.peer.label == "1004"
    dave.ack(ok[0].to.tag or "")
    out = dave.in_dialog("BYE")
    assert only(out, method="BYE", peer=alice.peer)


def test_parked_call_rings_back_the_parker(h: Harness) -> None:
    alice, bob = _phone(h, "1001"), _phone(h, "1002")
    h.calls.features.park_timeout = 60
    to_bob = _call(h, alice, bob)
    bob.request_to(to_bob, "REFER", cseq=2, extra="Refer-To: <sip:*70@pbx.test>")
    assert 1 in h.calls.features.parked
    out = h.advance(61)
    ring_back = _request(out, bob, "INVITE")
    assert ring_back.body == b""


def test_retrieving_an_empty_slot_gets_404(h: Harness) -> None:
    dave = _phone(h, "1004")
    out = dave.invite("*715")
    assert only(out, status=404, peer=dave.peer)


def test_directed_pickup_answers_both_with_each_others_media(h: Harness) -> None:
    alice, bob, carol = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1003")
    to_bob = _request(alice.invite("1002"), bob, "INVITE")
    bob.respond(to_bob, 180)
    out = carol.invite("**1002")
    to_alice = only(out, status=200, peer=alice.peer)
    to_carol = only(out, status=200, peer=carol.peer)
    assert to_alice and to_carol
    assert b"10.0.0.3" in to_alice[0].body and b"10.0.0.1" in to_carol[0].body
    answer = parse_sdp(to_alice[0].body)
    assert set(rtpmap(answer.media[0])) <= {0, 8, 101}
    assert only(out, method="CANCEL", peer=bob.peer)
    [call] = h.calls.calls.values()
    assert call.peer is not None and call.peer.label == "1003"


def test_group_pickup_needs_the_same_group(h: Harness) -> None:
    alice, bob, carol = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1003")
    to_bob = _request(alice.invite("1002"), bob, "INVITE")
    bob.respond(to_bob, 180)
    out = carol.invite("*8")
    assert only(out, status=404, peer=carol.peer)
    h.env.users["1002"] = UserInfo("1002", "Bob", pickup_group="sales")
    h.env.users["1003"] = UserInfo("1003", "Carol", pickup_group="sales")
    out = carol.invite("*8")
    assert only(out, status=200, peer=alice.peer)


def test_forward_all_set_from_the_phone(h: Harness) -> None:
    alice, bob, carol = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1003")
    out = bob.invite("*721003")
    assert only(out, status=480, peer=bob.peer)
    out = alice.invite("1002")
    to_carol = _request(out, carol, "INVITE")
    assert "1002" in (to_carol.headers.get("diversion") or "")
    assert not only(out, method="INVITE", peer=bob.peer)
