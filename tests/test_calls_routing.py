"""Hunt groups, trunks, forwards and single number reach through call control,
on the virtual clock (see tests/callkit.py)."""

from __future__ import annotations

import pytest
from callkit import FakeEnv, Harness, Phone, only, sdp

from agent.calls.env import TrunkInfo
from dialplan.hunt import HuntGroup, Member, Strategy
from dialplan.model import Forward
from dialplan.restriction import ClassOfRestriction
from dialplan.target import Target
from sipstack.digest import DigestClient, DigestServer
from sipstack.message import Request, Response
from sipstack.peer import Peer

CARRIER = Peer("udp", "198.51.100.7", 5060)
MEMBERS = ("1002", "1003", "1004")


def _env(strategy: Strategy = Strategy.SEQUENTIAL, *, final: Target | None = None,
         dynamic: frozenset[str] = frozenset()) -> FakeEnv:
    group = HuntGroup(
        pilot="6000", strategy=strategy,
        members=tuple(Member(ext, ring_time=10, dynamic=ext in dynamic) for ext in MEMBERS),
        final=final or Target.hangup(), name="sales",
    )
    trunk = TrunkInfo(name="carrier", peer=CARRIER, domain="carrier.example",
                      caller_id="+15550001000", from_domain="carrier.example",
                      digest=DigestClient("acct", "trunkpw"))
    env = FakeEnv([("1001", "Alice"), ("1002", "Bob"), ("1003", "Carol"), ("1004", "Dave"),
                   ("1005", "Erin")], hunt_groups=(group,), trunks=[trunk])
    for ext in ("1001", "1002", "1003", "1004", "1005"):
        env.set_user(ext, voicemail=False)
    return env


def _phones(h: Harness) -> dict[str, Phone]:
    phones = {ext: Phone(h, ext, f"10.0.0.{ext[-1]}") for ext in
              ("1001", "1002", "1003", "1004", "1005")}
    for ext, phone in phones.items():
        if ext != "1001":
            h.env.register(ext, phone.peer)
    return phones


def _invites(out: list) -> list[tuple[str, Request]]:
    return [(m.to.uri.user, m) for m, _ in out  # type: ignore[union-attr]
            if isinstance(m, Request) and m.method == "INVITE"]


def test_sequential_hunt_rings_members_in_order_skipping_busy_ones() -> None:
    h = Harness(_env(Strategy.SEQUENTIAL))
    p = _phones(h)
    out = p["1001"].invite("6000")
    [(first, invite)] = _invites(out)
    assert first == "1002"
    out = p["1002"].respond(invite, 486)  # busy: the next member at once
    [(second, invite)] = _invites(out)
    assert second == "1003"
    p["1003"].respond(invite, 180)
    out = h.advance(10.1)  # ring time of 1003 is over
    assert only(out, method="CANCEL", peer=p["1003"].peer)
    [(third, invite)] = _invites(out)
    assert third == "1004"
    out = p["1004"].respond(invite, 200, body=sdp("10.0.0.4"))
    assert only(out, status=200, peer=p["1001"].peer)
    p["1001"].ack(only(out, status=200)[0].to.tag or "")  # type: ignore[union-attr]
    p["1001"].in_dialog("BYE")
    [record] = h.calls.take_records()
    assert (record.hunt_group, record.callee, record.disposition) == ("6000", "1004", "answered")


def test_parallel_hunt_rings_everyone_and_the_first_answer_wins() -> None:
    h = Harness(_env(Strategy.PARALLEL))
    p = _phones(h)
    out = p["1001"].invite("6000")
    ringing = dict(_invites(out))
    assert set(ringing) == set(MEMBERS)
    out = p["1003"].respond(ringing["1003"], 200, body=sdp("10.0.0.3"))
    assert only(out, status=200, peer=p["1001"].peer)
    cancelled = {m.to.uri.user for m in only(out, method="CANCEL")}  # type: ignore[union-attr]
    assert cancelled <= {"1002", "1004"}


def test_circular_hunt_starts_after_the_member_offered_the_last_call() -> None:
    h = Harness(_env(Strategy.CIRCULAR))
    p = _phones(h)
    out = p["1001"].invite("6000")
    [(first, invite)] = _invites(out)
    assert first == "1002"
    p["1002"].respond(invite, 200, body=sdp("10.0.0.2"))
    p["1001"].ack("callee")
    p["1001"].in_dialog("BYE")
    out = p["1005"].invite("6000")
    [(nxt, _)] = _invites(out)
    assert nxt == "1003"


def test_longest_idle_hunt_offers_the_member_idle_longest() -> None:
    env = _env(Strategy.LONGEST_IDLE)
    env.last_end.update({"1002": 500.0, "1003": 100.0, "1004": 900.0})
    h = Harness(env)
    p = _phones(h)
    out = p["1001"].invite("6000")
    [(first, _)] = _invites(out)
    assert first == "1003"


def test_hunt_skips_members_already_on_a_call() -> None:
    h = Harness(_env(Strategy.SEQUENTIAL))
    p = _phones(h)
    out = p["1005"].invite("1002")  # bob is on a call with erin
    [(_, invite)] = _invites(out)
    p["1002"].respond(invite, 200, tag="b1", body=sdp("10.0.0.2"))
    out = p["1001"].invite("6000")
    [(first, _)] = _invites(out)
    assert first == "1003"


def test_dynamic_members_ring_only_while_logged_in() -> None:
    env = _env(Strategy.SEQUENTIAL, dynamic=frozenset({"1002"}))
    h = Harness(env)
    p = _phones(h)
    [(first, _)] = _invites(p["1001"].invite("6000"))
    assert first == "1003"
    env.logged_in.add("1002")
    [(first, _)] = _invites(p["1005"].invite("6000"))
    assert first == "1002"


def test_nobody_answers_so_the_final_destination_rings() -> None:
    h = Harness(_env(Strategy.PARALLEL, final=Target.number("1005")))
    p = _phones(h)
    out = p["1001"].invite("6000")
    for _, invite in _invites(out):
        p[invite.to.uri.user].respond(invite, 180)  # type: ignore[union-attr]
    out = h.advance(10.1)
    [(final, invite)] = _invites(out)
    assert final == "1005"
    p["1005"].respond(invite, 200, body=sdp("10.0.0.5"))
    [call] = h.calls.calls.values()
    assert call.callee == "1005" and call.hunt_group == "6000"


def test_caller_hanging_up_in_the_hunt_is_abandoned() -> None:
    h = Harness(_env(Strategy.SEQUENTIAL))
    p = _phones(h)
    [(_, invite)] = _invites(p["1001"].invite("6000"))
    p["1002"].respond(invite, 180)
    h.advance(3)
    p["1001"].cancel()
    [record] = h.calls.take_records()
    assert (record.disposition, record.hunt_group) == ("abandoned", "6000")


def test_forward_on_no_answer_goes_to_the_target_after_the_timeout() -> None:
    env = _env()
    env.set_user("1002", forward=Forward(no_answer="1003", no_answer_timeout=5))
    h = Harness(env)
    p = _phones(h)
    [(_, invite)] = _invites(p["1001"].invite("1002"))
    p["1002"].respond(invite, 180)
    out = h.advance(5.1)
    [(target, _)] = _invites(out)
    assert target == "1003"


def test_forward_on_busy() -> None:
    env = _env()
    env.set_user("1002", forward=Forward(busy="1004"))
    h = Harness(env)
    p = _phones(h)
    [(_, invite)] = _invites(p["1001"].invite("1002"))
    out = p["1002"].respond(invite, 486)
    [(target, _)] = _invites(out)
    assert target == "1004"


def test_single_number_reach_rings_the_mobile_after_the_delay() -> None:
    env = _env()
    env.set_user("1002", mobile="915551234567", mobile_delay=4, cor=ClassOfRestriction.NATIONAL)
    h = Harness(env)
    p = _phones(h)
    out = p["1001"].invite("1002")
    assert [u for u, _ in _invites(out)] == ["1002"]
    out = h.advance(4.1)
    [to_mobile] = only(out, method="INVITE", peer=CARRIER)
    assert to_mobile.uri.startswith("sip:5551234567@") or "5551234567" in to_mobile.uri  # type: ignore[union-attr]


def test_outbound_call_answers_the_carriers_challenge_once() -> None:
    h = Harness(_env())
    p = _phones(h)
    out = p["1001"].invite("915551234567")
    [invite] = only(out, method="INVITE", peer=CARRIER)
    assert "+15550001000" in (invite.headers.get("from") or "")
    carrier = DigestServer("carrier.example", b"c" * 32, algorithms=("MD5",))
    lines = ["SIP/2.0 407 Proxy Authentication Required"]
    lines += [f"{n}: {v}" for n in ("via", "from", "call-id", "cseq")
              for v in invite.headers.get_all(n)]
    lines.append(f"To: {invite.headers.get('to')};tag=c1")
    lines += [f"Proxy-Authenticate: {v}" for v in carrier.challenge(h.now)]
    lines.append("Content-Length: 0")
    out = h.feed(("\r\n".join(lines) + "\r\n\r\n").encode(), CARRIER)
    [retry] = only(out, method="INVITE", peer=CARRIER)
    assert retry.headers.get("proxy-authorization")
    assert retry.cseq.number == invite.cseq.number + 1  # type: ignore[union-attr]
    record_trunk = h.calls.calls[next(iter(h.calls.calls))].trunk
    assert record_trunk == "carrier"


def test_restricted_caller_never_reaches_the_trunk() -> None:
    env = _env()
    env.set_user("1001", cor=ClassOfRestriction.INTERNAL)
    h = Harness(env)
    p = _phones(h)
    out = p["1001"].invite("915551234567")
    assert only(out, status=403, peer=p["1001"].peer)
    assert not only(out, method="INVITE", peer=CARRIER)


def _carrier_invite(h: Harness, did: str, *, to_user: str | None = None) -> list:
    body = sdp("198.51.100.20")
    lines = [
        f"INVITE sip:{did}@192.0.2.1 SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKcarrier1",
        "Max-Forwards: 70",
        "From: \"Caller\" <sip:+15557654321@carrier.example>;tag=cx",
        f"To: <sip:{to_user or did}@carrier.example>",
        "Call-ID: inbound-1@carrier", "CSeq: 1 INVITE",
        "Contact: <sip:+15557654321@198.51.100.7:5060>",
        "Content-Type: application/sdp", f"Content-Length: {len(body)}",
    ]
    return h.feed(("\r\n".join(lines) + "\r\n\r\n").encode() + body, CARRIER)


def test_inbound_did_from_the_carrier_is_not_challenged_and_rings_its_user() -> None:
    env = _env()
    env.dids["+15550001002"] = Target.number("1002")
    h = Harness(env)
    p = _phones(h)
    out = _carrier_invite(h, "+15550001002")
    assert not only(out, status=407)
    [(user, invite)] = _invites(out)
    assert user == "1002"
    out = p["1002"].respond(invite, 200, body=sdp("10.0.0.2"))
    assert only(out, status=200, peer=CARRIER)
    [call] = h.calls.calls.values()
    assert (call.direction, call.caller, call.trunk) == ("inbound", "+15557654321", "carrier")


def test_inbound_did_in_the_to_header_only() -> None:
    env = _env()
    env.dids["+15550001003"] = Target.number("1003")
    h = Harness(env)
    _phones(h)
    out = _carrier_invite(h, "acct", to_user="+15550001003")
    assert [u for u, _ in _invites(out)] == ["1003"]


@pytest.mark.parametrize("did", ["+15559999999", "915551234567"])
def test_inbound_to_an_unknown_did_gets_404_and_never_goes_back_out(did: str) -> None:
    h = Harness(_env())
    _phones(h)
    out = _carrier_invite(h, did)
    assert only(out, status=404, peer=CARRIER)
    assert not only(out, method="INVITE")


def test_an_unknown_source_must_authenticate_even_to_dial_out() -> None:
    h = Harness(_env())
    stranger = Phone(h, "7777", "203.0.113.66")
    out = stranger.invite("915551234567")
    assert only(out, status=407)
    assert not only(out, method="INVITE", peer=CARRIER)


def test_record_of_a_failed_trunk_call() -> None:
    h = Harness(_env())
    p = _phones(h)
    out = p["1001"].invite("915551234567")
    [invite] = only(out, method="INVITE", peer=CARRIER)
    lines = ["SIP/2.0 404 Not Found"]
    lines += [f"{n}: {v}" for n in ("via", "from", "call-id", "cseq")
              for v in invite.headers.get_all(n)]
    lines += [f"To: {invite.headers.get('to')};tag=c2", "Content-Length: 0"]
    out = h.feed(("\r\n".join(lines) + "\r\n\r\n").encode(), CARRIER)
    assert only(out, status=404, peer=p["1001"].peer)
    [record] = h.calls.take_records()
    assert (record.direction, record.trunk, record.disposition) == ("outbound", "carrier", "failed")
    assert isinstance(invite, Request) and not isinstance(invite, Response)


def test_speed_dial_of_the_caller() -> None:
    env = _env()
    env.set_user("1001", speed_dials={"7": "1004"})
    h = Harness(env)
    p = _phones(h)
    [(target, _)] = _invites(p["1001"].invite("7"))
    assert target == "1004"
