"""Paging and intercom on the virtual clock (see tests/callkit.py).

The paging application's signalling half (agent.calls.paging.Page) is driven here the
way agent.apps.paging drives it, with a fixed SDP offer instead of a media leg.
"""

from __future__ import annotations

import pytest
from callkit import PBX, FakeEnv, Harness, Phone, only, sdp

from agent.calls.model import Call
from agent.calls.paging import PAGE_ANSWER_TIMEOUT, Page, PageMember, PagingGroup
from agent.calls.plan import ToApplication, plan_for
from dialplan.route import ToService
from sipstack.message import Request, Response
from sipstack.peer import Peer

MEMBERS = ("1002", "1003", "1004", "1006")
OUR_OFFER = sdp(PBX.host, 30002, "sendonly")
Sent = list[tuple[Request | Response, Peer]]


class PagingApp:
    """What agent.apps.paging does with Page, minus the media."""

    def __init__(self, h: Harness, group: PagingGroup) -> None:
        self.h = h
        self.group = group
        self.pages: list[Page] = []
        self.answered: list[PageMember] = []
        self.left: list[PageMember] = []

    def __call__(self, call: Call, plan: ToApplication, now: float) -> bool:
        assert plan.value == self.group.name
        cc = self.h.calls
        assert cc.answer_app(call, sdp(PBX.host, 30000), f"paging:{plan.value}", now)
        page = Page(cc, call, self.group, clock=lambda: self.h.now,
                    on_answer=lambda m, t: self.answered.append(m),
                    on_leave=self.left.append)
        page.attach()
        for member in page.targets(now):
            page.invite(member, OUR_OFFER, now)
        self.pages.append(page)
        return True


@pytest.fixture
def h() -> Harness:
    users = [("1001", "Pager"), ("1002", "Bob"), ("1003", "Carol"), ("1004", "Dave"),
             ("1005", "Erin"), ("1006", "Frank")]
    env = FakeEnv(users, services={"7000": "paging:all"})
    for ext, _ in users:
        env.set_user(ext, voicemail=False)
    return Harness(env)


def _phone(h: Harness, ext: str, host: str | None = None, *, register: bool = True) -> Phone:
    phone = Phone(h, ext, host or f"10.0.0.{ext[-1]}")
    if register:
        h.env.register(ext, phone.peer)
    return phone


def _invites(out: Sent, peer: Peer) -> list[Request]:
    return [m for m in only(out, method="INVITE", peer=peer) if isinstance(m, Request)]


def _answer(phone: Phone, invite: Request, tag: str) -> Sent:
    return phone.respond(invite, 200, tag=tag, body=sdp(phone.peer.host, 5000, "recvonly"))


def _busy_call(h: Harness, caller: Phone, callee: Phone) -> None:
    [invite] = _invites(caller.invite(callee.extension), callee.peer)
    out = callee.respond(invite, 200, tag="busy", body=sdp(callee.peer.host, 5000))
    ok = only(out, status=200, peer=caller.peer)[0]
    assert isinstance(ok, Response)
    caller.ack(ok.to.tag or "")


def _page(h: Harness, app: PagingApp, pager: Phone) -> tuple[Sent, Response]:
    out = pager.invite("7000")
    ok = only(out, status=200, peer=pager.peer)
    assert ok, out
    response = ok[0]
    assert isinstance(response, Response)
    pager.ack(response.to.tag or "")
    return out, response


def test_paging_numbers_route_to_the_paging_application() -> None:
    assert plan_for(ToService("paging:all")) == ToApplication("paging", "all")
    assert plan_for(ToService("assigner")) == ToApplication("assigner", "assigner")


def test_page_calls_free_registered_members_with_auto_answer_and_sendonly(h: Harness) -> None:
    app = PagingApp(h, PagingGroup("all", MEMBERS))
    h.calls.applications["paging"] = app
    pager, bob = _phone(h, "1001"), _phone(h, "1002")
    carol, erin = _phone(h, "1003"), _phone(h, "1005")
    _phone(h, "1004", register=False)  # Dave: not registered
    frank_desk, frank_soft = _phone(h, "1006"), _phone(h, "1006", "10.0.1.6")
    _busy_call(h, erin, carol)  # Carol is busy
    h.calls.take_records()

    out, ok = _page(h, app, pager)
    assert ok.body and b"m=audio 30000" in ok.body  # the agent answered the pager
    [page] = app.pages
    assert page.skipped == {"1003": "busy", "1004": "unregistered"}
    assert not _invites(out, carol.peer)
    invites = {phone.peer: _invites(out, phone.peer) for phone in (bob, frank_desk, frank_soft)}
    assert all(len(found) == 1 for found in invites.values()), invites
    for [invite] in invites.values():
        assert invite.uri.startswith("sip:10")
        assert invite.headers.get("call-info") == "<sip:pbx.test>;answer-after=0"
        alert = invite.headers.get("alert-info") or ""
        assert "info=alert-autoanswer" in alert
        assert invite.body == OUR_OFFER
        assert b"a=sendonly" in invite.body
        assert '"Pager" <sip:1001@pbx.test>' in (invite.headers.get("from") or "")
    assert len(h.calls.calls) == 2  # the page and Erin's call; member legs are not calls
    # A member leg makes nobody busy (a page is no reason to skip a hunt group member).
    assert "1002" not in h.calls.busy_extensions()

    # The phones answer by themselves; each 2xx is ACKed at once (our INVITE had the offer).
    [to_bob] = invites[bob.peer]
    out = _answer(bob, to_bob, "bob")
    assert only(out, method="ACK", peer=bob.peer)
    [to_desk] = invites[frank_desk.peer]
    out = _answer(frank_desk, to_desk, "desk")
    assert only(out, method="ACK", peer=frank_desk.peer)
    [to_soft] = invites[frank_soft.peer]
    frank_soft.respond(to_soft, 180, tag="soft")
    assert [m.extension for m in app.answered] == ["1002", "1006"]
    assert all(b"a=recvonly" in m.answer for m in app.answered)

    # Bob hangs up: he just leaves; the page goes on.
    out = bob.request_to(to_bob, "BYE", tag="bob", cseq=2)
    assert only(out, status=200, peer=bob.peer)
    assert [m.extension for m in app.left] == ["1002"]
    assert page.active
    assert not only(out, method="BYE")

    # The pager hangs up: the answered member gets a BYE, the ringing one a CANCEL.
    out = pager.in_dialog("BYE")
    assert only(out, status=200, peer=pager.peer)
    assert only(out, method="BYE", peer=frank_desk.peer)
    assert only(out, method="CANCEL", peer=frank_soft.peer)
    assert not only(out, method="BYE", peer=bob.peer)
    assert page.ended and len(app.left) == 3
    [record] = h.calls.take_records()
    assert (record.caller, record.callee, record.dialed) == ("1001", "paging:all", "7000")
    assert record.disposition == "answered"
    assert list(h.calls.calls) != [] and len(h.calls.calls) == 1  # only Erin's call is left


def test_member_that_does_not_answer_by_itself_is_cancelled(h: Harness) -> None:
    app = PagingApp(h, PagingGroup("all", ("1002",)))
    h.calls.applications["paging"] = app
    pager, bob = _phone(h, "1001"), _phone(h, "1002")
    out, _ = _page(h, app, pager)
    [invite] = _invites(out, bob.peer)
    bob.respond(invite, 180, tag="bob")
    out = h.advance(PAGE_ANSWER_TIMEOUT + 0.1)
    assert only(out, method="CANCEL", peer=bob.peer)
    [page] = app.pages
    assert not page.active  # nobody left to hear it: the application ends the page
    out = bob.respond(invite, 487, tag="bob")
    assert only(out, method="ACK", peer=bob.peer)


def test_member_refusing_leaves_and_a_late_2xx_after_the_page_ended_is_hung_up(
    h: Harness,
) -> None:
    app = PagingApp(h, PagingGroup("all", ("1002", "1006")))
    h.calls.applications["paging"] = app
    pager, bob, frank = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1006")
    out, _ = _page(h, app, pager)
    [to_bob] = _invites(out, bob.peer)
    [to_frank] = _invites(out, frank.peer)
    bob.respond(to_bob, 486, tag="bob")  # busy on a call we did not know of
    assert [m.extension for m in app.left] == ["1002"]
    frank.respond(to_frank, 100)
    out = pager.in_dialog("BYE")
    assert only(out, method="CANCEL", peer=frank.peer)  # a 100 is enough to CANCEL
    out = _answer(frank, to_frank, "frank")  # the 2xx crossed the CANCEL
    assert only(out, method="ACK", peer=frank.peer)
    assert only(out, method="BYE", peer=frank.peer)
    assert len(h.calls.take_records()) == 1


def test_pager_that_is_a_member_is_not_paged(h: Harness) -> None:
    app = PagingApp(h, PagingGroup("all", ("1001", "1002")))
    h.calls.applications["paging"] = app
    pager, bob = _phone(h, "1001"), _phone(h, "1002")
    out, _ = _page(h, app, pager)
    assert app.pages[0].skipped == {"1001": "pager"}
    assert not [m for m in only(out, method="INVITE") if isinstance(m, Request)
                and m.uri.startswith("sip:1001@")]
    assert _invites(out, bob.peer)


# ---------------------------------------------------------------------------- intercom


def test_intercom_rings_the_extension_with_auto_answer_and_passes_sdp(h: Harness) -> None:
    alice, bob = _phone(h, "1001"), _phone(h, "1002")
    out = alice.invite("*961002")
    [invite] = _invites(out, bob.peer)
    assert invite.headers.get("call-info") == "<sip:pbx.test>;answer-after=0"
    assert "info=alert-autoanswer" in (invite.headers.get("alert-info") or "")
    assert invite.body == alice.body  # two-way, phone to phone: the SDP goes through
    out = bob.respond(invite, 200, tag="bob", body=sdp(bob.peer.host, 5000))
    ok = only(out, status=200, peer=alice.peer)
    assert ok and isinstance(ok[0], Response) and b"10.0.0.2" in ok[0].body
    alice.ack(ok[0].to.tag or "")
    out = alice.in_dialog("BYE")
    assert only(out, method="BYE", peer=bob.peer)
    [record] = h.calls.take_records()
    assert (record.caller, record.callee, record.dialed) == ("1001", "1002", "*961002")


def test_ordinary_calls_carry_no_auto_answer_headers(h: Harness) -> None:
    alice, bob = _phone(h, "1001"), _phone(h, "1002")
    [invite] = _invites(alice.invite("1002"), bob.peer)
    assert invite.headers.get("call-info") is None and invite.headers.get("alert-info") is None


def test_intercom_neither_forwards_nor_goes_to_voicemail(h: Harness) -> None:
    h.env.set_user("1002", voicemail=True)
    alice, bob, _carol = _phone(h, "1001"), _phone(h, "1002"), _phone(h, "1003")
    out = alice.invite("*961002")
    [invite] = _invites(out, bob.peer)
    bob.respond(invite, 180, tag="bob")
    out = h.advance(25)
    assert only(out, method="CANCEL", peer=bob.peer)
    bob.respond(invite, 487, tag="bob")
    out = h.sent
    assert only(out, status=480, peer=alice.peer)
    assert h.calls.calls == {}


@pytest.mark.parametrize(("dialed", "status"), [("*969999", 404), ("*961001", 403)])
def test_intercom_to_no_one_is_refused(h: Harness, dialed: str, status: int) -> None:
    alice = _phone(h, "1001")
    out = alice.invite(dialed)
    assert only(out, status=status, peer=alice.peer)


def test_intercom_to_dnd_is_busy(h: Harness) -> None:
    h.env.set_user("1002", dnd=True)
    alice, _bob = _phone(h, "1001"), _phone(h, "1002")
    out = alice.invite("*961002")
    assert only(out, status=486, peer=alice.peer)
