"""MWI (RFC 3842 message-summary over RFC 6665 subscriptions) on the virtual clock."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from callkit import REALM, FakeEnv, Harness, Phone, only

from agent.calls.mwi import CONTENT_TYPE, BindingSeen, Mwi, MwiConfig
from agent.sipservice import SipService
from agent.site import parse_site
from agent.store import Store
from sipstack.digest import DigestClient
from sipstack.message import Request, Response, parse_message
from sipstack.peer import Peer

Sent = list[tuple[Request | Response, Peer]]
_n = itertools.count(1)


class MemoryStore:
    """The user_state part of agent.store.Store, in memory."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def user_state(self) -> dict[str, dict[str, Any]]:
        return {ext: dict(keys) for ext, keys in self.state.items()}

    def set_user_state(self, extension: str, key: str, value: Any, now: float) -> None:
        self.writes += 1
        if value is None:
            self.state.get(extension, {}).pop(key, None)
        else:
            self.state.setdefault(extension, {})[key] = value


class Subscriber:
    """A phone's MWI side: SUBSCRIBE (answering the 407), refresh, and NOTIFY answers."""

    def __init__(self, h: Harness, extension: str, host: str, port: int = 5060) -> None:
        self.h = h
        self.extension = extension
        self.peer = Peer("udp", host, port)
        self.client = DigestClient(extension, h.env.passwords.get(extension, "x"))
        self.call_id = f"sub{next(_n)}@{host}"
        self.tag = f"s{next(_n)}"
        self.cseq = 0
        self.remote_tag: str | None = None
        self.mailbox = extension

    def _request(self, *, expires: int | None, event: str, auth: str = "") -> bytes:
        self.cseq += 1
        uri = f"sip:{self.mailbox}@{REALM}"
        to = f"<{uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        lines = [
            f"SUBSCRIBE {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.peer.host}:{self.peer.port};branch=z9hG4bK{next(_n)}m;rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.extension}@{REALM}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} SUBSCRIBE",
            f"Contact: <sip:{self.extension}@{self.peer.host}:{self.peer.port}>",
            f"Event: {event}",
            f"Accept: {CONTENT_TYPE}",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth:
            lines.append(f"Proxy-Authorization: {auth}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def subscribe(self, mailbox: str | None = None, *, expires: int | None = 3600,
                  event: str = "message-summary", password: str | None = None) -> Sent:
        """A new subscription, answering the 407 as a phone does."""
        self.mailbox = mailbox or self.extension
        out = self.h.feed(self._request(expires=expires, event=event), self.peer)
        challenges = only(out, status=407)
        if not challenges:
            return out
        client = self.client if password is None else DigestClient(self.extension, password)
        value = client.authorize(challenges[0].headers.get_all("proxy-authenticate")[0],
                                 "SUBSCRIBE", f"sip:{self.mailbox}@{REALM}")
        out = self.h.feed(self._request(expires=expires, event=event, auth=value), self.peer)
        ok = only(out, status=200)
        if ok:
            self.remote_tag = ok[0].to.tag
        return out

    def refresh(self, expires: int | None, event: str = "message-summary") -> Sent:
        return self.h.feed(self._request(expires=expires, event=event), self.peer)

    def answer(self, notify: Request, status: int = 200) -> Sent:
        lines = [f"SIP/2.0 {status} Whatever"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            lines += [f"{name}: {value}" for value in notify.headers.get_all(name)]
        lines.append("Content-Length: 0")
        return self.h.feed(("\r\n".join(lines) + "\r\n\r\n").encode(), self.peer)


def notifies(out: Sent, peer: Peer) -> list[Request]:
    found = only(out, method="NOTIFY", peer=peer)
    return [m for m in found if isinstance(m, Request)]


def one_notify(out: Sent, peer: Peer) -> Request:
    found = notifies(out, peer)
    assert len(found) == 1, out
    return found[0]


def body(counts: tuple[int, int], extension: str = "1001") -> bytes:
    waiting = "yes" if counts[0] else "no"
    return (f"Messages-Waiting: {waiting}\r\nMessage-Account: sip:{extension}@{REALM}\r\n"
            f"Voice-Message: {counts[0]}/{counts[1]} (0/0)\r\n").encode()


@pytest.fixture
def h() -> Harness:
    return Harness(FakeEnv([("1001", "Alice"), ("1002", "Bob")]))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def mwi(h: Harness, store: MemoryStore) -> Mwi:
    return Mwi(h.calls, store)


def subscribed(h: Harness, mwi: Mwi, extension: str = "1001",
               host: str = "10.0.0.1") -> Subscriber:
    phone = Subscriber(h, extension, host)
    out = phone.subscribe()
    phone.answer(one_notify(out, phone.peer))
    assert len(mwi.subscriptions) >= 1
    return phone


# -- subscribing ---------------------------------------------------------------------------
def test_subscribe_is_challenged_then_accepted_with_an_immediate_notify(
    h: Harness, mwi: Mwi,
) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    first = h.feed(phone._request(expires=3600, event="message-summary"), phone.peer)
    assert only(first, status=407) and not only(first, method="NOTIFY")
    phone.cseq = 0
    out = phone.subscribe()
    ok = only(out, status=200, peer=phone.peer)[0]
    assert ok.headers.get("expires") == "3600"
    assert ok.to.tag and ok.headers.get("contact")
    notify = one_notify(out, phone.peer)
    assert notify.headers.get("event") == "message-summary"
    assert notify.headers.get("subscription-state") == "active;expires=3600"
    assert notify.headers.get("content-type") == CONTENT_TYPE
    assert notify.body == body((0, 0))
    # Inside the dialog the 200 made: our tag in From, theirs in To, to their Contact.
    assert notify.from_.tag == ok.to.tag and notify.to.tag == phone.tag
    assert notify.call_id == phone.call_id
    assert str(notify.request_uri) == "sip:1001@10.0.0.1:5060"
    assert notify.headers.get("contact")
    assert len(mwi.subscriptions) == 1


def test_the_notify_carries_the_current_counts(h: Harness, mwi: Mwi) -> None:
    mwi.set_counts("1001", 2, 5, h.now, urgent_new=1)
    h.collect()
    phone = Subscriber(h, "1001", "10.0.0.1")
    notify = one_notify(phone.subscribe(), phone.peer)
    assert notify.body == (b"Messages-Waiting: yes\r\nMessage-Account: sip:1001@pbx.test\r\n"
                           b"Voice-Message: 2/5 (1/0)\r\n")


def test_someone_elses_mailbox_is_forbidden(h: Harness, mwi: Mwi) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    out = phone.subscribe("1002")
    assert only(out, status=403) and not only(out, method="NOTIFY")
    assert mwi.subscriptions == {}


def test_a_wrong_password_gets_another_challenge(h: Harness, mwi: Mwi) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    out = phone.subscribe(password="wrong")
    assert only(out, status=407) and mwi.subscriptions == {}


def test_other_event_packages_get_489(h: Harness, mwi: Mwi) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    out = phone.subscribe(event="presence")
    refusal = only(out, status=489)
    assert refusal and refusal[0].headers.get("allow-events") == "message-summary"
    assert mwi.subscriptions == {}


def test_without_mwi_every_subscribe_still_gets_489(h: Harness) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    assert only(phone.subscribe(), status=489)


def test_too_brief_an_interval_gets_423(h: Harness, mwi: Mwi) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    out = phone.subscribe(expires=30)
    refusal = only(out, status=423)
    assert refusal and refusal[0].headers.get("min-expires") == "60"
    assert mwi.subscriptions == {}


def test_a_long_interval_is_cut_to_the_maximum(h: Harness, mwi: Mwi) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    out = phone.subscribe(expires=86400)
    assert only(out, status=200)[0].headers.get("expires") == "3600"
    assert one_notify(out, phone.peer).headers.get("subscription-state") == "active;expires=3600"


def test_no_expires_gets_the_default(h: Harness) -> None:
    Mwi(h.calls, None, MwiConfig(default_expires=1800))
    phone = Subscriber(h, "1001", "10.0.0.1")
    out = phone.subscribe(expires=None)
    assert only(out, status=200)[0].headers.get("expires") == "1800"


def test_expires_zero_is_a_fetch(h: Harness, mwi: Mwi) -> None:
    phone = Subscriber(h, "1001", "10.0.0.1")
    out = phone.subscribe(expires=0)
    assert only(out, status=200)[0].headers.get("expires") == "0"
    notify = one_notify(out, phone.peer)
    assert notify.headers.get("subscription-state") == "terminated;reason=timeout"
    assert mwi.subscriptions == {}


# -- refresh, unsubscribe, expiry -----------------------------------------------------------
def test_a_refresh_extends_the_subscription(h: Harness, mwi: Mwi) -> None:
    phone = subscribed(h, mwi)
    h.advance(3500)
    out = phone.refresh(3600)
    assert only(out, status=200)[0].headers.get("expires") == "3600"
    notify = one_notify(out, phone.peer)
    assert notify.headers.get("subscription-state") == "active;expires=3600"
    phone.answer(notify)
    out = h.advance(200)  # past the first expiry
    assert not notifies(out, phone.peer)
    assert len(mwi.subscriptions) == 1


def test_a_refresh_with_another_event_gets_489(h: Harness, mwi: Mwi) -> None:
    phone = subscribed(h, mwi)
    assert only(phone.refresh(3600, event="presence"), status=489)
    assert len(mwi.subscriptions) == 1


def test_a_refresh_below_the_minimum_gets_423_and_keeps_the_subscription(
    h: Harness, mwi: Mwi,
) -> None:
    phone = subscribed(h, mwi)
    assert only(phone.refresh(10), status=423)
    assert len(mwi.subscriptions) == 1


def test_unsubscribe_terminates(h: Harness, mwi: Mwi) -> None:
    phone = subscribed(h, mwi)
    out = phone.refresh(0)
    assert only(out, status=200)[0].headers.get("expires") == "0"
    notify = one_notify(out, phone.peer)
    assert notify.headers.get("subscription-state") == "terminated;reason=timeout"
    assert mwi.subscriptions == {}
    assert only(phone.refresh(3600), status=481)  # the dialog is gone


def test_a_subscription_not_refreshed_expires(h: Harness, mwi: Mwi) -> None:
    phone = subscribed(h, mwi)
    assert not notifies(h.advance(3599), phone.peer)
    out = h.advance(1)
    notify = one_notify(out, phone.peer)
    assert notify.headers.get("subscription-state") == "terminated;reason=timeout"
    assert mwi.subscriptions == {}
    h.env.register("1001", phone.peer)
    assert not notifies(h.collect(), phone.peer)


def test_cseq_out_of_order_in_the_dialog_gets_500(h: Harness, mwi: Mwi) -> None:
    phone = subscribed(h, mwi)
    phone.cseq -= 1
    assert only(phone.refresh(3600), status=500)


# -- counts change ---------------------------------------------------------------------------
def test_set_counts_notifies_subscribers_and_unsolicited_to_the_others(
    h: Harness, mwi: Mwi, store: MemoryStore,
) -> None:
    desk = subscribed(h, mwi)  # subscribes and is registered from the same address
    h.env.register("1001", desk.peer)
    dect = Phone(h, "1001", "10.0.0.5")  # never subscribes
    h.env.register("1001", dect.peer)
    bob = Phone(h, "1002", "10.0.0.2")
    h.env.register("1002", bob.peer)
    mwi.set_counts("1001", 3, 1, h.now)
    out = h.collect()
    solicited = one_notify(out, desk.peer)
    assert solicited.headers.get("subscription-state") == "active;expires=3600"
    assert solicited.body == body((3, 1))
    unsolicited = one_notify(out, dect.peer)
    assert unsolicited.to.tag is None and unsolicited.call_id != desk.call_id
    assert str(unsolicited.request_uri) == "sip:1001@10.0.0.5:5060"
    assert unsolicited.headers.get("event") == "message-summary"
    assert unsolicited.headers.get("subscription-state") == "terminated"
    assert unsolicited.headers.get("content-type") == CONTENT_TYPE
    assert unsolicited.body == body((3, 1))
    assert not notifies(out, bob.peer)
    assert store.state["1001"]["mwi"] == {"new": 3, "old": 1, "urgent_new": 0, "urgent_old": 0}


def test_unsolicited_can_be_turned_off(h: Harness) -> None:
    mwi = Mwi(h.calls, None, MwiConfig(unsolicited_off=frozenset({"1001"})))
    dect = Phone(h, "1001", "10.0.0.5")
    h.env.register("1001", dect.peer)
    mwi.set_counts("1001", 1, 0, h.now)
    assert not notifies(h.collect(), dect.peer)
    mwi_all_off = Mwi(h.calls, None, MwiConfig(unsolicited=False))
    mwi_all_off.set_counts("1001", 1, 0, h.now)
    assert not notifies(h.collect(), dect.peer)


def test_a_notify_answered_481_drops_the_subscription(h: Harness, mwi: Mwi) -> None:
    phone = subscribed(h, mwi)
    h.env.register("1001", phone.peer)
    mwi.set_counts("1001", 1, 0, h.now)
    phone.answer(one_notify(h.collect(), phone.peer), 481)
    assert mwi.subscriptions == {}
    # From now on the phone is a non-subscriber: unsolicited.
    mwi.set_counts("1001", 2, 0, h.now)
    notify = one_notify(h.collect(), phone.peer)
    assert notify.headers.get("subscription-state") == "terminated" and notify.to.tag is None


def test_a_notify_never_answered_drops_the_subscription(h: Harness, mwi: Mwi) -> None:
    phone = subscribed(h, mwi)
    mwi.set_counts("1001", 1, 0, h.now)
    assert notifies(h.collect(), phone.peer)
    h.advance(40)  # timer F (64*T1) without an answer
    assert mwi.subscriptions == {}


def test_counts_are_written_only_when_they_change(h: Harness, store: MemoryStore) -> None:
    mwi = Mwi(h.calls, store)
    mwi.set_counts("1001", 1, 0, h.now)
    mwi.set_counts("1001", 1, 0, h.now)
    assert store.writes == 1


# -- restarts and re-registration ------------------------------------------------------------
def test_counts_survive_a_restart_and_are_sent_again(tmp_path: Path) -> None:
    env = FakeEnv([("1001", "Alice"), ("1002", "Bob")])
    with Store.open(tmp_path / "state") as store:
        before = Harness(env)
        Mwi(before.calls, store).set_counts("1001", 4, 2, before.now)
        Mwi(before.calls, store).set_counts("1002", 0, 7, before.now)
    alice = Phone(before, "1001", "10.0.0.1")
    bob = Phone(before, "1002", "10.0.0.2")
    env.register("1001", alice.peer)
    env.register("1002", bob.peer)
    with Store.open(tmp_path / "state") as store:
        after = Harness(env)
        mwi = Mwi(after.calls, store)
        assert mwi.counts("1001").new == 4 and mwi.counts("1002").old == 7
        assert mwi.start(after.now) == 1  # only the mailbox with new messages
        out = after.collect()
        notify = one_notify(out, alice.peer)
        assert notify.body == body((4, 2))
        assert not notifies(out, bob.peer)


def test_a_new_binding_gets_the_state_again(h: Harness, mwi: Mwi) -> None:
    mwi.set_counts("1001", 1, 0, h.now)
    h.collect()
    phone = Phone(h, "1001", "10.0.0.1")
    h.env.register("1001", phone.peer)
    uri = "sip:1001@10.0.0.1:5060"
    assert mwi.registered(BindingSeen("1001", uri, "reg-a", h.now + 600), h.now)
    assert one_notify(h.collect(), phone.peer).body == body((1, 0))
    # A refresh of that binding: nothing.
    assert not mwi.registered(BindingSeen("1001", uri, "reg-a", h.now + 900), h.now + 300)
    # The phone rebooted (new Call-ID): sent again.
    assert mwi.registered(BindingSeen("1001", uri, "reg-b", h.now + 1000), h.now + 400)
    # The binding lapsed before the phone came back: sent again.
    assert mwi.registered(BindingSeen("1001", uri, "reg-b", h.now + 3000), h.now + 2000)
    assert len(notifies(h.collect(), phone.peer)) == 2


def test_a_reregistration_reaches_the_subscription_when_there_is_one(
    h: Harness, mwi: Mwi,
) -> None:
    phone = subscribed(h, mwi)
    mwi.set_counts("1001", 1, 0, h.now)
    phone.answer(one_notify(h.collect(), phone.peer))
    h.env.register("1001", phone.peer)
    assert mwi.registered(BindingSeen("1001", "sip:1001@10.0.0.1:5060", "reg", h.now + 600),
                          h.now)
    notify = one_notify(h.collect(), phone.peer)
    assert notify.call_id == phone.call_id  # in the subscription's dialog


def test_no_state_no_resend(h: Harness, mwi: Mwi) -> None:
    h.env.register("1001", Peer("udp", "10.0.0.1", 5060))
    assert not mwi.registered(BindingSeen("1001", "sip:1001@10.0.0.1:5060", "r", h.now + 60),
                              h.now)
    assert mwi.start(h.now) == 0


def test_loaded_bindings_are_not_taken_for_new_ones(h: Harness, mwi: Mwi) -> None:
    mwi.set_counts("1001", 1, 0, h.now)
    h.env.register("1001", Peer("udp", "10.0.0.1", 5060))
    h.collect()
    uri = "sip:1001@10.0.0.1:5060"
    mwi.start(h.now, [BindingSeen("1001", uri, "reg", h.now + 600)])
    h.collect()
    assert not mwi.registered(BindingSeen("1001", uri, "reg", h.now + 900), h.now + 300)


# -- through the SIP service: a REGISTER triggers the re-send -------------------------------
def _register(call_id: str, cseq: int, auth: str | None = None) -> bytes:
    head = (
        "REGISTER sip:pbx.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK{next(_n)}r;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:201@pbx.test>;tag=regtag\r\n"
        "To: <sip:201@pbx.test>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        "Contact: <sip:201@10.0.0.7:5060>\r\n"
        "Expires: 600\r\n"
    )
    if auth is not None:
        head += f"Authorization: {auth}\r\n"
    return (head + "Content-Length: 0\r\n\r\n").encode()


def test_the_sip_service_resends_mwi_when_a_phone_registers(tmp_path: Path) -> None:
    site = parse_site({
        "site": {"name": "T", "timezone": "UTC", "realm": "pbx.test"},
        "users": [{"id": "ann", "name": "Ann", "extension": "201",
                   "sip": {"username": "ann", "password": "pw-ann"}}],
    })
    with Store.open(tmp_path) as store:
        service = SipService(site=site, store=store, listens=[], state_dir=tmp_path)
        sent: list[tuple[Request | Response, Peer]] = []
        service._send = lambda data, peer: sent.append((parse_message(data), peer))  # type: ignore[method-assign]
        service.set_mwi("201", 2, 0)
        assert not sent  # nobody registered yet
        peer = Peer("udp", "10.0.0.7", 5060)
        client = DigestClient("ann", "pw-ann")

        def register(call_id: str, cseq: int) -> None:
            service.endpoint.receive(_register(call_id, cseq), peer, time.time())
            service._flush()
            challenge = only(sent, status=401)[-1]
            auth = client.authorize(challenge.headers.get_all("www-authenticate")[0],
                                    "REGISTER", "sip:pbx.test")
            service.endpoint.receive(_register(call_id, cseq + 1, auth), peer, time.time())
            service._flush()

        register("boot-1", 1)
        assert only(sent, status=200, peer=peer)
        notify = one_notify(sent, peer)
        assert notify.body == body((2, 0), "201")
        sent.clear()
        register("boot-1", 3)  # a plain refresh: nothing new to tell
        assert not notifies(sent, peer)
        register("boot-2", 1)  # rebooted: a new Call-ID
        assert one_notify(sent, peer).body == body((2, 0), "201")
        assert service.status()["mwi"]["unsolicited"] == 2
        assert Mwi(service.calls, store).counts("201").new == 2
