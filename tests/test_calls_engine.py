"""Call control flows on a virtual clock: scripted phones against the B2BUA core."""

from __future__ import annotations

import pytest
from callkit import FakeEnv, Harness, Phone, only, sdp

from sipstack.message import Request, Response


@pytest.fixture
def h() -> Harness:
    env = FakeEnv([("1001", "Alice"), ("1002", "Bob"), ("1003", "Carol")])
    return Harness(env)


def _phones(h: Harness) -> tuple[Phone, Phone]:
    alice = Phone(h, "1001", "10.0.0.1")
    bob = Phone(h, "1002", "10.0.0.2")
    h.env.register("1002", bob.peer)
    return alice, bob


def _invite_to(out: list, phone: Phone) -> Request:
    found = only(out, method="INVITE", peer=phone.peer)
    assert len(found) == 1, out
    message = found[0]
    assert isinstance(message, Request)
    return message


def _answered_call(h: Harness) -> tuple[Phone, Phone, Request, Response]:
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    out = bob.respond(invite, 200, body=sdp("10.0.0.2", 5000))
    ok = only(out, status=200, peer=alice.peer)[0]
    assert isinstance(ok, Response)
    alice.ack(ok.to.tag or "")
    return alice, bob, invite, ok


def test_invite_without_credentials_is_challenged(h: Harness) -> None:
    alice, _ = _phones(h)
    out = alice.invite("1002", auth=False)
    challenge = only(out, status=407)
    assert challenge and challenge[0].headers.get("proxy-authenticate")
    assert not only(out, method="INVITE")
    assert h.calls.calls == {} or all(c.state.value == "ended" for c in h.calls.calls.values())


def test_wrong_password_is_challenged_again_and_counted(h: Harness) -> None:
    alice, bob = _phones(h)
    out = alice.invite("1002", password="wrong")
    assert only(out, status=407)
    assert not only(out, method="INVITE", peer=bob.peer)
    assert h.calls.auth_failures == 1


def test_unknown_user_gets_the_same_challenge_as_a_wrong_password(h: Harness) -> None:
    stranger = Phone(h, "9999", "10.0.0.9")
    out = stranger.invite("1002")
    assert only(out, status=407)


def test_answered_call_relays_sdp_and_ends_with_bye(h: Harness) -> None:
    alice, bob, invite, ok = _answered_call(h)
    assert (invite.headers.get("from") or "").startswith('"Alice"')
    assert b"10.0.0.1" in invite.body  # the caller's offer, passed through
    assert b"10.0.0.2" in ok.body  # the callee's answer, passed through
    assert only(h.sent, method="ACK", peer=bob.peer)  # offer in INVITE: ACKed at once
    assert len(h.calls.calls) == 1
    out = alice.in_dialog("BYE")
    assert only(out, status=200, peer=alice.peer)
    bye = only(out, method="BYE", peer=bob.peer)
    assert bye
    assert h.calls.calls == {}
    [record] = h.calls.take_records()
    assert record.disposition == "answered"
    assert (record.caller, record.callee, record.dialed) == ("1001", "1002", "1002")
    assert record.cause == "caller-bye"


def test_bye_from_callee_hangs_up_caller(h: Harness) -> None:
    alice, bob, invite, _ = _answered_call(h)
    out = bob.request_to(invite, "BYE")
    assert only(out, status=200, peer=bob.peer)
    assert only(out, method="BYE", peer=alice.peer)
    [record] = h.calls.take_records()
    assert record.cause == "callee-bye"


def test_ringing_is_relayed_and_cancel_ends_both_sides(h: Harness) -> None:
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    out = bob.respond(invite, 180)
    assert only(out, status=180, peer=alice.peer)
    out = alice.cancel()
    assert only(out, status=200, peer=alice.peer)  # the CANCEL
    assert only(out, status=487, peer=alice.peer)  # the INVITE
    assert only(out, method="CANCEL", peer=bob.peer)
    [record] = h.calls.take_records()
    assert record.disposition == "abandoned"
    assert h.calls.calls == {}


def test_cancel_before_the_callee_said_anything_waits_for_its_provisional(h: Harness) -> None:
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    out = alice.cancel()
    assert not only(out, method="CANCEL", peer=bob.peer)  # RFC 3261 §9.1: not before a 1xx
    out = bob.respond(invite, 180)
    assert only(out, method="CANCEL", peer=bob.peer)
    assert not only(out, status=180, peer=alice.peer)


def test_answer_racing_the_cancel_is_acked_and_hung_up(h: Harness) -> None:
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    bob.respond(invite, 180)
    alice.cancel()
    out = bob.respond(invite, 200, body=sdp("10.0.0.2"))
    assert only(out, method="ACK", peer=bob.peer)
    assert only(out, method="BYE", peer=bob.peer)
    assert not only(out, status=200, peer=alice.peer)


def test_all_contacts_ring_and_the_first_answer_wins(h: Harness) -> None:
    alice, bob = _phones(h)
    desk2 = Phone(h, "1002", "10.0.0.22")
    h.env.register("1002", desk2.peer)
    out = alice.invite("1002")
    first = _invite_to(out, bob)
    second = _invite_to(out, desk2)
    bob.respond(first, 180)
    desk2.respond(second, 180)
    out = desk2.respond(second, 200, body=sdp("10.0.0.22"))
    assert only(out, status=200, peer=alice.peer)
    assert only(out, method="CANCEL", peer=bob.peer)
    [call] = h.calls.calls.values()
    assert call.peer is not None and call.peer.peer == desk2.peer


def test_busy_callee_gives_486(h: Harness) -> None:
    h.env.set_user("1002", voicemail=False)
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    out = bob.respond(invite, 486)
    assert only(out, status=486, peer=alice.peer)
    [record] = h.calls.take_records()
    assert record.disposition == "busy"


def test_no_answer_times_out_with_480(h: Harness) -> None:
    h.env.set_user("1002", voicemail=False)
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    bob.respond(invite, 180)
    out = h.advance(19.9)
    assert not only(out, status=480)
    out = h.advance(0.2)
    assert only(out, status=480, peer=alice.peer)
    assert only(out, method="CANCEL", peer=bob.peer)
    [record] = h.calls.take_records()
    assert record.disposition == "no-answer"


def test_callee_that_never_responds_gives_408(h: Harness) -> None:
    h.env.set_user("1002", voicemail=False)
    alice, _ = _phones(h)
    alice.invite("1002")
    # Timer B (32 s) fires before... no: the 20 s no-answer timer ends it first, and
    # with no provisional the CANCEL waits; the INVITE then times out.
    out = h.advance(60)
    assert only(h.sent, status=480, peer=alice.peer)
    assert h.calls.calls == {}
    assert out is not None


def test_unknown_number_gets_404(h: Harness) -> None:
    alice, _ = _phones(h)
    out = alice.invite("4321")
    assert only(out, status=404, peer=alice.peer)


def test_unregistered_user_gets_480(h: Harness) -> None:
    h.env.set_user("1003", voicemail=False)
    alice, _ = _phones(h)
    out = alice.invite("1003")
    assert only(out, status=480, peer=alice.peer)


def test_bye_for_an_unknown_dialog_gets_481(h: Harness) -> None:
    alice, _ = _phones(h)
    alice.call_id, alice.tag, alice.remote_tag, alice.uri = "nope", "x", "y", "sip:1002@pbx.test"
    out = alice.in_dialog("BYE")
    assert only(out, status=481)


def test_max_forwards_zero_gets_483(h: Harness) -> None:
    alice, _ = _phones(h)
    alice.call_id, alice.tag, alice.uri = "mf", "mf", "sip:1002@pbx.test"
    head = alice._head("INVITE", alice.uri, 1, "z9hG4bKmf0").replace(
        "Max-Forwards: 70", "Max-Forwards: 0")
    out = h.feed((head + "Content-Length: 0\r\n\r\n").encode(), alice.peer)
    assert only(out, status=483)


def test_hold_is_relayed_and_timed(h: Harness) -> None:
    alice, bob, _, _ = _answered_call(h)
    h.advance(5)
    out = alice.in_dialog("INVITE", body=sdp("10.0.0.1", direction="sendonly"))
    reinvite = _invite_to(out, bob)
    assert b"a=sendonly" in reinvite.body
    out = bob.respond(reinvite, 200, tag="callee", body=sdp("10.0.0.2", direction="recvonly"))
    ok = only(out, status=200, peer=alice.peer)
    assert ok and b"recvonly" in ok[0].body
    h.advance(12)
    out = alice.in_dialog("INVITE", body=sdp("10.0.0.1"))
    reinvite = _invite_to(out, bob)
    bob.respond(reinvite, 200, tag="callee", body=sdp("10.0.0.2"))
    h.advance(3)
    alice.in_dialog("BYE")
    [record] = h.calls.take_records()
    assert record.hold_seconds == pytest.approx(12, abs=0.01)


def test_reinvite_glare_gets_491(h: Harness) -> None:
    alice, bob, invite, _ = _answered_call(h)
    out = alice.in_dialog("INVITE", body=sdp("10.0.0.1", direction="sendonly"))
    _invite_to(out, bob)
    out = bob.request_to(invite, "INVITE", cseq=5, body=sdp("10.0.0.2", direction="sendonly"))
    assert only(out, status=491, peer=bob.peer)


def test_no_ack_for_our_answer_hangs_up_both(h: Harness) -> None:
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    bob.respond(invite, 200, body=sdp("10.0.0.2"))
    out = h.advance(33)  # Timer L = 64*T1
    assert only(out, method="BYE", peer=bob.peer)
    assert h.calls.calls == {}
    [record] = h.calls.take_records()
    assert record.cause == "no-ack"


def test_vanished_phone_is_found_by_keepalive(h: Harness) -> None:
    alice, _, _, _ = _answered_call(h)
    out = h.advance(30.1)
    probes = only(out, method="OPTIONS")
    assert len(probes) == 2
    options_to_alice = next(m for m, p in out if p == alice.peer and isinstance(m, Request))
    alice.respond(options_to_alice, 200, tag=alice.tag)  # alice answers; bob is gone
    out = h.advance(40)
    assert only(out, method="BYE", peer=alice.peer)
    assert h.calls.calls == {}
    [record] = h.calls.take_records()
    assert record.cause == "keepalive-timeout"


def test_dnd_feature_code_changes_routing(h: Harness) -> None:
    h.env.set_user("1002", voicemail=False)
    alice, bob = _phones(h)
    out = bob.invite("*78")
    assert only(out, status=480, peer=bob.peer)
    assert h.env.model().user("1002").dnd  # type: ignore[union-attr]
    out = alice.invite("1002")
    assert only(out, status=486, peer=alice.peer)


def test_calls_drop_back_to_zero_and_every_call_has_a_record(h: Harness) -> None:
    h.env.set_user("1002", voicemail=False)
    for _ in range(5):
        alice, _, _, _ = _answered_call(h)
        alice.in_dialog("BYE")
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    bob.respond(invite, 486)
    assert h.calls.calls == {}
    assert len(h.calls.take_records()) == 6
    h.advance(120)
    assert h.calls.timers.get_timer() is None


@pytest.mark.parametrize("source, sdp_ip, rewritten", [
    ("203.0.113.5", "192.168.1.20", True),  # behind NAT: the public source wins
    ("203.0.113.5", "10.1.2.3", True),
    ("203.0.113.5", "172.20.0.9", True),
    ("203.0.113.5", "203.0.113.5", False),  # public phone: as it said
    ("192.168.1.20", "192.168.1.20", False),  # on the office LAN
    ("127.0.0.1", "10.0.0.1", False),  # loopback: nothing crossed a NAT
])
def test_sdp_of_a_phone_behind_nat_gets_its_public_address(
    source: str, sdp_ip: str, rewritten: bool
) -> None:
    from agent.calls.engine import nat_fixed
    from sipstack.peer import Peer

    body = sdp(sdp_ip)
    fixed = nat_fixed(body, "application/sdp", Peer("udp", source, 5060))
    assert (fixed != body) == rewritten
    if rewritten:
        assert f"c=IN IP4 {source}".encode() in fixed


def test_invite_from_a_phone_behind_nat_reaches_the_callee_with_its_public_address(
    h: Harness,
) -> None:
    alice = Phone(h, "1001", "203.0.113.5", 40000)
    bob = Phone(h, "1002", "10.0.0.2")
    h.env.register("1002", bob.peer)
    out = alice.invite("1002", body=sdp("192.168.1.20"))
    invite = _invite_to(out, bob)
    assert b"c=IN IP4 203.0.113.5" in invite.body


def test_a_contact_pointing_back_at_us_is_a_loop(h: Harness) -> None:
    from callkit import PBX

    h.env.set_user("1002", voicemail=False)
    alice, _ = _phones(h)
    h.env.registered["1002"] = []
    h.env.register("1002", PBX)
    out = alice.invite("1002")
    assert only(out, status=482, peer=alice.peer)
    assert not only(out, method="INVITE")


def test_a_retransmitted_answer_is_acked_again(h: Harness) -> None:
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    bob.respond(invite, 200, body=sdp("10.0.0.2"))
    out = bob.respond(invite, 200, body=sdp("10.0.0.2"))  # our ACK was lost
    assert len(only(out, method="ACK", peer=bob.peer)) == 1
    assert not only(out, status=200, peer=alice.peer)  # the caller is not told twice


def test_new_calls_get_503_while_overloaded_and_calls_up_go_on(h: Harness) -> None:
    alice, bob, _, _ = _answered_call(h)
    h.calls.overloaded = True
    carol = Phone(h, "1003", "10.0.0.3")
    out = carol.invite("1002", auth=False)
    [busy] = only(out, status=503, peer=carol.peer)
    assert busy.headers.get("retry-after") == "5"
    out = alice.in_dialog("BYE")  # the call already up is not disturbed
    assert only(out, method="BYE", peer=bob.peer)
    h.calls.overloaded = False
    assert only(carol.invite("1002", auth=False), status=407)


def test_unsolicited_notify_goes_to_the_contact_and_reports_its_answer(h: Harness) -> None:
    _, bob = _phones(h)
    seen: list[int] = []
    h.calls.notify_out_of_dialog(
        "sip:1002@10.0.0.2:5060", bob.peer, h.now, to="<sip:1002@pbx.test>",
        event="check-sync;reboot=false", handler=lambda r, status, t: seen.append(status))
    [notify] = only(h.collect(), method="NOTIFY", peer=bob.peer)
    assert notify.headers.get("event") == "check-sync;reboot=false"
    assert notify.headers.get("subscription-state") is not None
    bob.respond(notify, 200)
    assert seen == [200]


def test_the_487_of_a_cancelled_leg_does_not_reroute_again(h: Harness) -> None:
    launched: list[str] = []

    def voicemail(call: object, plan: object, now: float) -> bool:
        launched.append(getattr(plan, "value", ""))
        return True

    h.calls.applications["voicemail"] = voicemail
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002"), bob)
    bob.respond(invite, 180)
    out = h.advance(20.1)  # no answer: cancelled, and on to the mailbox
    assert only(out, method="CANCEL", peer=bob.peer)
    assert launched == ["1002"]
    bob.respond(invite, 487)
    assert launched == ["1002"]


def test_delayed_offer_the_callers_ack_carries_the_answer_to_the_callee(h: Harness) -> None:
    alice, bob = _phones(h)
    invite = _invite_to(alice.invite("1002", body=b""), bob)
    assert invite.body == b""
    out = bob.respond(invite, 200, body=sdp("10.0.0.2"))  # the offer
    ok = only(out, status=200, peer=alice.peer)[0]
    assert b"10.0.0.2" in ok.body
    assert not only(out, method="ACK", peer=bob.peer)  # waits for the answer
    answer = sdp("10.0.0.1")
    head = alice._head("ACK", alice.uri, alice.cseq, "z9hG4bKdelayed", to_tag=ok.to.tag)
    out = h.feed(head.encode() + b"Content-Type: application/sdp\r\n"
                 + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer, alice.peer)
    [ack] = only(out, method="ACK", peer=bob.peer)
    assert ack.body == answer and ack.cseq.number == invite.cseq.number  # type: ignore[union-attr]
