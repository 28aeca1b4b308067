"""Tests for sipstack.client_registration (RFC 3261 §10.2 outbound registration).

Time is a plain float (a virtual clock); the "carrier" is a DigestServer plus a few
lines that answer REGISTERs, so digest answers are really verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipstack.client_registration import (
    MIN_REFRESH_INTERVAL,
    RegistrationClient,
    RegistrationConfig,
    RegistrationState,
)
from sipstack.digest import (
    DigestServer,
    Verdict,
    VerifyResult,
    compute_response,
    ha1,
    parse_credentials,
)
from sipstack.message import Request, Response, make_response, parse_message

T0 = 1000.0
REALM = "carrier.example"
REGISTRAR = "sip:carrier.example:5060"
AOR = "sip:trunkuser@carrier.example"
CONTACT = "sip:trunkuser@192.0.2.10:5060"
USER, PASSWORD = "trunkuser", "s3cret-pw"
SECRET = b"0123456789abcdef0123456789abcdef"

S = RegistrationState


def config(**kw: object) -> RegistrationConfig:
    base: dict[str, object] = {
        "registrar_uri": REGISTRAR,
        "aor": AOR,
        "contact": CONTACT,
        "username": USER,
        "password": PASSWORD,
        "local_sent_by": "192.0.2.10:5060",
    }
    base.update(kw)
    return RegistrationConfig(**base)  # type: ignore[arg-type]


def client(**kw: object) -> RegistrationClient:
    return RegistrationClient(config(**kw), call_id="reg-call-1@192.0.2.10")


def wire(req: Request) -> Request:
    """The request as the carrier sees it: serialized and parsed back."""
    msg = parse_message(req.to_bytes())
    assert isinstance(msg, Request)
    return msg


def reply(
    req: Request, status: int, *headers: tuple[str, str], reason: str | None = None
) -> Response:
    resp = make_response(req, status, reason, to_tag="carrier-tag")
    for name, value in headers:
        resp.headers.add(name, value)
    msg = parse_message(resp.to_bytes())
    assert isinstance(msg, Response)
    return msg


def one(c: RegistrationClient) -> Request:
    reqs = c.take_requests()
    assert len(reqs) == 1, reqs
    return wire(reqs[0])


@dataclass
class Carrier:
    """A registrar with digest auth: verifies what the client computes."""

    password: str = PASSWORD
    grant: int | None = None  # None: grant what is asked
    server: DigestServer = field(
        default_factory=lambda: DigestServer(REALM, SECRET, instance_id=b"\x00\x01\x02\x03")
    )
    verdicts: list[VerifyResult] = field(default_factory=list)

    def lookup(self, username: str, algorithm: str) -> str | None:
        return ha1(USER, REALM, self.password, algorithm) if username == USER else None

    def challenge(self, req: Request, now: float, *, stale: bool = False) -> Response:
        values = self.server.challenge(now, stale=stale)
        return reply(req, 401, *(("WWW-Authenticate", v) for v in values))

    def handle(self, req: Request, now: float) -> Response:
        value = req.headers.get("authorization")
        if value is None:
            return self.challenge(req, now)
        creds = parse_credentials(value)
        assert creds is not None
        assert creds.uri == REGISTRAR
        result = self.server.verify(
            creds,
            method="REGISTER",
            now=now,
            ha1_lookup=self.lookup,
            retransmission_key=f"{req.call_id}|{req.cseq.number}",
        )
        self.verdicts.append(result)
        if result.verdict is Verdict.STALE:
            return self.challenge(req, now, stale=True)
        if not result.ok:
            return self.challenge(req, now)
        asked = int(req.headers.get("expires") or "3600")
        granted = asked if self.grant is None or asked == 0 else self.grant
        return reply(req, 200, ("Contact", f"<{CONTACT}>;expires={granted}"))


def register(c: RegistrationClient, carrier: Carrier, now: float) -> list[Request]:
    """Run request/response rounds at ``now`` until nothing more is sent."""
    sent: list[Request] = []
    for _ in range(10):
        reqs = c.take_requests()
        if not reqs:
            return sent
        assert len(reqs) == 1
        req = wire(reqs[0])
        sent.append(req)
        c.on_response(carrier.handle(req, now), now)
    raise AssertionError("no end to the exchange")


# --------------------------------------------------------------------------- basics


def test_happy_path_with_digest() -> None:
    c, carrier = client(), Carrier()
    assert c.state is S.IDLE and c.get_timer() is None
    c.start(T0)
    assert c.state is S.REGISTERING
    first = one(c)
    assert first.method == "REGISTER" and first.uri == REGISTRAR
    assert first.headers.get("authorization") is None
    assert first.headers.get("expires") == "600"
    assert first.headers.get("user-agent") == "edgepbx"
    assert str(first.to.uri) == AOR and str(first.from_.uri) == AOR
    assert first.from_.tag and first.to.tag is None
    assert [str(c.uri) for c in first.contacts] == [CONTACT]
    via = first.top_via
    assert via.transport == "UDP" and via.host == "192.0.2.10" and via.port == 5060
    assert "rport" in via.params and via.branch and via.branch.startswith("z9hG4bK")

    c.on_response(reply(first, 100), T0)  # provisional: ignored
    assert c.state is S.REGISTERING and c.take_requests() == []
    c.on_response(carrier.handle(first, T0), T0 + 0.1)
    assert c.last_status == 401
    second = one(c)
    c.on_response(carrier.handle(second, T0 + 0.2), T0 + 0.2)
    assert [v.verdict for v in carrier.verdicts] == [Verdict.OK]

    creds = parse_credentials(second.headers.get("authorization") or "")
    assert creds is not None and creds.username == USER and creds.realm == REALM
    assert creds.qop == "auth" and creds.nc == "00000001" and creds.cnonce
    expected = compute_response(
        ha1=ha1(USER, REALM, PASSWORD, creds.algorithm),
        algorithm=creds.algorithm,
        method="REGISTER",
        uri=REGISTRAR,
        nonce=creds.nonce,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    assert creds.response == expected

    assert second.call_id == first.call_id == "reg-call-1@192.0.2.10"
    assert second.cseq.number == first.cseq.number + 1
    assert second.from_.tag == first.from_.tag
    assert second.top_via.branch != first.top_via.branch
    assert c.state is S.REGISTERED
    assert c.last_status == 200 and c.last_error is None and c.failures == 0
    # Lifetime counts from when the REGISTER was sent (T0 + 0.1, the answer to the 401).
    assert c.expires_at == pytest.approx(T0 + 0.1 + 600)
    assert c.next_attempt_at == pytest.approx(T0 + 0.1 + 300)
    assert c.get_timer() == pytest.approx(T0 + 0.1 + 300)
    st = c.status(T0 + 1)
    assert st["state"] == "registered" and st["granted_expires"] == 600
    assert st["expires_in"] == pytest.approx(599.1)


def test_no_credentials_registers_without_auth() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    req = one(c)
    c.on_response(reply(req, 200, ("Expires", "120")), T0)
    assert c.state is S.REGISTERED and c.expires_at == T0 + 120


def test_no_credentials_but_challenged_fails_clearly() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    req = one(c)
    c.on_response(Carrier().challenge(req, T0), T0)
    assert c.state is S.FAILED
    assert c.last_error is not None and "no credentials" in c.last_error


def test_requests_keep_call_id_and_increase_cseq_over_refreshes() -> None:
    c, carrier = client(expires=60), Carrier()
    c.start(T0)
    sent = register(c, carrier, T0)
    now = T0
    for _ in range(4):
        timer = c.get_timer()
        assert timer is not None
        now = timer
        c.handle_timer(now)
        sent += register(c, carrier, now)
        assert c.state is S.REGISTERED
    assert len({r.call_id for r in sent}) == 1
    assert len({r.from_.tag for r in sent}) == 1
    numbers = [r.cseq.number for r in sent]
    assert numbers == list(range(numbers[0], numbers[0] + len(sent)))
    assert len({r.top_via.branch for r in sent}) == len(sent)
    assert all((r.top_via.branch or "").startswith("z9hG4bK") for r in sent)
    # The refreshes reuse the challenge pre-emptively: no 401 round trip each time.
    assert len(sent) == 2 + 4
    assert all(v.verdict is Verdict.OK for v in carrier.verdicts)


# --------------------------------------------------------------------------- lifetime


@pytest.mark.parametrize(
    ("headers", "asked", "granted"),
    [
        ([("Contact", f"<{CONTACT}>;expires=300")], 600, 300),
        ([("Contact", f"<{CONTACT}>;expires=300"), ("Expires", "900")], 600, 300),
        ([("Expires", "900")], 600, 900),
        ([], 600, 600),
        # Another device's binding first: ours is found by URI comparison.
        (
            [
                ("Contact", "<sip:other@198.51.100.7>;expires=50"),
                ("Contact", f"<{CONTACT.upper().replace('SIP:', 'sip:')}>;expires=200"),
            ],
            600,
            600,
        ),
        (
            [
                ("Contact", "<sip:other@198.51.100.7>;expires=50"),
                ("Contact", f"<{CONTACT}>;expires=200"),
            ],
            600,
            200,
        ),
        # One Contact that is not ours (rewritten by the registrar): taken as ours.
        ([("Contact", "<sip:trunkuser@203.0.113.5:40000>;expires=180")], 600, 180),
        # Garbage expires values fall through to the next source.
        ([("Contact", f"<{CONTACT}>;expires=soon"), ("Expires", "240")], 600, 240),
        ([("Contact", f"<{CONTACT}>;expires=99999999999")], 600, 600),
        ([("Contact", "<<>>bad"), ("Expires", "90")], 600, 90),
    ],
)
def test_granted_lifetime(headers: list[tuple[str, str]], asked: int, granted: int) -> None:
    c = client(username=None, password=None, expires=asked)
    c.start(T0)
    req = one(c)
    c.on_response(reply(req, 200, *headers), T0 + 1)
    assert c.state is S.REGISTERED
    assert c.status()["granted_expires"] == granted
    assert c.expires_at == T0 + granted


@pytest.mark.parametrize(
    ("granted", "answer_delay", "refresh_at"),
    [
        (600, 0.0, T0 + 300),
        (3600, 2.0, T0 + 1800),
        (60, 0.0, T0 + 30),
        (8, 0.0, T0 + MIN_REFRESH_INTERVAL),  # half would be 4 s: floored
        (1, 0.0, T0 + MIN_REFRESH_INTERVAL),
        (40, 31.0, T0 + 31.0 + MIN_REFRESH_INTERVAL),  # half-time already past at the 2xx
    ],
)
def test_refresh_timing(granted: int, answer_delay: float, refresh_at: float) -> None:
    c = client(username=None, password=None)
    c.start(T0)
    req = one(c)
    c.on_response(reply(req, 200, ("Expires", str(granted))), T0 + answer_delay)
    assert c.next_attempt_at == pytest.approx(refresh_at)
    c.handle_timer(refresh_at - 0.001)
    assert c.take_requests() == []
    c.handle_timer(refresh_at)
    refresh = one(c)
    assert refresh.cseq.number == req.cseq.number + 1
    # Still bound while the refresh is out, unless the binding has already lapsed.
    assert c.state is (S.REGISTERED if granted > refresh_at - T0 else S.REGISTERING)
    assert c.next_attempt_at is None


def test_binding_lapses_while_refresh_outstanding() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    c.on_response(reply(one(c), 200, ("Expires", "10")), T0)
    c.handle_timer(T0 + 5)
    refresh = one(c)
    assert c.get_timer() == T0 + 10
    c.handle_timer(T0 + 10)
    assert c.state is S.REGISTERING and c.expires_at is None
    c.on_response(reply(refresh, 200, ("Expires", "10")), T0 + 11)
    assert c.state is S.REGISTERED and c.expires_at == T0 + 15


def test_granted_zero_is_a_failure() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    c.on_response(reply(one(c), 200, ("Expires", "0")), T0)
    assert c.state is S.FAILED and "no lifetime" in (c.last_error or "")


# --------------------------------------------------------------------------- 423


def test_423_raises_expires_and_retries_at_once() -> None:
    c, carrier = client(expires=60), Carrier()
    c.start(T0)
    register(c, carrier, T0)  # 401, then 200
    assert c.state is S.REGISTERED
    c.handle_timer(T0 + 30)
    req = one(c)
    assert req.headers.get("expires") == "60"
    c.on_response(reply(req, 423, ("Min-Expires", "1800")), T0 + 30)
    retry = one(c)
    assert retry.headers.get("expires") == "1800"
    assert retry.cseq.number == req.cseq.number + 1
    assert c.requested_expires == 1800
    c.on_response(carrier.handle(retry, T0 + 30), T0 + 30)
    assert c.state is S.REGISTERED and c.expires_at == T0 + 30 + 1800
    assert carrier.verdicts[-1].verdict is Verdict.OK


@pytest.mark.parametrize("min_expires", [None, "30", "60", "abc", "99999999999"])
def test_423_without_usable_min_expires_fails(min_expires: str | None) -> None:
    c = client(username=None, password=None, expires=60)
    c.start(T0)
    req = one(c)
    headers = [] if min_expires is None else [("Min-Expires", min_expires)]
    c.on_response(reply(req, 423, *headers), T0)
    assert c.state is S.FAILED
    assert "Min-Expires" in (c.last_error or "")
    assert c.take_requests() == []


def test_423_loop_is_bounded() -> None:
    c = client(username=None, password=None, expires=60)
    c.start(T0)
    for n in range(1, 10):
        reqs = c.take_requests()
        if not reqs:
            break
        c.on_response(reply(wire(reqs[0]), 423, ("Min-Expires", str(60 + n))), T0)
    assert c.state is S.FAILED and "repeated" in (c.last_error or "")


# --------------------------------------------------------------------------- challenges


def test_stale_nonce_is_answered_once_more() -> None:
    c, carrier = client(), Carrier()
    c.start(T0)
    first = one(c)
    c.on_response(carrier.challenge(first, T0), T0)
    second = one(c)
    c.on_response(carrier.challenge(second, T0, stale=True), T0)
    third = one(c)
    n2 = parse_credentials(second.headers.get("authorization") or "")
    n3 = parse_credentials(third.headers.get("authorization") or "")
    assert n2 is not None and n3 is not None and n2.nonce != n3.nonce
    c.on_response(carrier.handle(third, T0), T0)
    assert c.state is S.REGISTERED
    assert carrier.verdicts[-1].verdict is Verdict.OK


def test_second_stale_challenge_fails() -> None:
    c, carrier = client(), Carrier()
    c.start(T0)
    c.on_response(carrier.challenge(one(c), T0), T0)
    c.on_response(carrier.challenge(one(c), T0, stale=True), T0)
    c.on_response(carrier.challenge(one(c), T0, stale=True), T0)
    assert c.state is S.FAILED and "rejected" in (c.last_error or "")
    assert c.take_requests() == []


def test_expired_nonce_on_refresh_gets_stale_and_recovers() -> None:
    # The server's nonces live 300 s; the pre-emptive answer at the refresh is stale.
    carrier = Carrier(server=DigestServer(REALM, SECRET, nonce_lifetime=100.0))
    c = client(expires=600)
    c.start(T0)
    register(c, carrier, T0)
    c.handle_timer(T0 + 300)
    sent = register(c, carrier, T0 + 300)
    assert len(sent) == 2
    assert [v.verdict for v in carrier.verdicts] == [Verdict.OK, Verdict.STALE, Verdict.OK]
    assert c.state is S.REGISTERED


def test_wrong_password_fails_then_backs_off_doubling_capped() -> None:
    c, carrier = client(retry_min=5.0, retry_max=60.0), Carrier(password="other")
    c.start(T0)
    now = T0
    delays: list[float] = []
    for attempt in range(1, 8):
        sent = register(c, carrier, now)
        assert len(sent) == 2  # REGISTER, 401, answer, 401 -> give up
        assert c.state is S.FAILED and c.failures == attempt
        assert "credentials rejected" in (c.last_error or "")
        assert c.last_status == 401
        timer = c.get_timer()
        assert timer is not None
        delays.append(timer - now)
        now = timer
        c.handle_timer(now)
        assert c.state is S.REGISTERING
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert all(v.verdict is Verdict.INVALID for v in carrier.verdicts)
    # The password is fixed at the carrier: the next attempt succeeds and resets.
    carrier.password = PASSWORD
    register(c, carrier, now)
    assert c.state is S.REGISTERED and c.failures == 0 and c.last_error is None


def test_proxy_challenge_then_www_challenge() -> None:
    c, carrier = client(), Carrier()
    c.start(T0)
    req = one(c)
    proxy = DigestServer("proxy.example", SECRET)
    c.on_response(reply(req, 407, *(("Proxy-Authenticate", v) for v in proxy.challenge(T0))), T0)
    second = one(c)
    pa = parse_credentials(second.headers.get("proxy-authorization") or "")
    assert pa is not None and pa.realm == "proxy.example"
    assert second.headers.get("authorization") is None
    c.on_response(carrier.challenge(second, T0), T0)  # a different kind: answered
    third = one(c)
    assert third.headers.get("proxy-authorization") and third.headers.get("authorization")
    c.on_response(carrier.handle(third, T0), T0)
    assert c.state is S.REGISTERED


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (401, [], "without a usable digest challenge"),
        (401, [("WWW-Authenticate", "Basic realm=x")], "without a usable digest challenge"),
        (401, [("WWW-Authenticate", 'Digest realm="x"')], "without a usable digest challenge"),
        (
            401,
            [("WWW-Authenticate", 'Digest realm="x", nonce="n", algorithm=FOO')],
            "without a usable digest challenge",
        ),
        (
            401,
            [("WWW-Authenticate", 'Digest realm="x", nonce="n", qop="auth-int"')],
            "without a usable digest challenge",
        ),
        (
            407,
            [("WWW-Authenticate", 'Digest realm="x", nonce="n"')],
            "without a usable digest challenge",
        ),
        (403, [], "403 Forbidden"),
        (404, [], "404 Not Found"),
        (302, [("Contact", "<sip:elsewhere.example>")], "302"),
        (500, [], "500"),
        (603, [], "603 Decline"),
    ],
)
def test_failures_from_responses(status: int, headers: list[tuple[str, str]], error: str) -> None:
    c = client()
    c.start(T0)
    c.on_response(reply(one(c), status, *headers), T0)
    assert c.state is S.FAILED
    assert c.last_status == status
    assert error in (c.last_error or "")
    assert c.next_attempt_at == T0 + 5.0
    assert c.take_requests() == []


def test_no_qop_challenge_is_answered() -> None:
    c = client()
    c.start(T0)
    c.on_response(reply(one(c), 401, ("WWW-Authenticate", 'Digest realm="r", nonce="abc"')), T0)
    creds = parse_credentials(one(c).headers.get("authorization") or "")
    assert creds is not None and creds.qop is None
    assert creds.response == compute_response(
        ha1=ha1(USER, "r", PASSWORD),
        algorithm="MD5",
        method="REGISTER",
        uri=REGISTRAR,
        nonce="abc",
    )


# --------------------------------------------------------------------------- failures


def test_timeout_backs_off_and_success_resets() -> None:
    c = client(username=None, password=None, retry_min=2.0, retry_max=16.0)
    c.start(T0)
    now = T0
    delays = []
    for _ in range(6):
        req = one(c)
        now += 32.0
        c.on_failure(now, "Timer F fired", request=req)
        assert c.state is S.FAILED and c.last_status is None
        assert "Timer F" in (c.last_error or "")
        nxt = c.get_timer()
        assert nxt is not None
        delays.append(nxt - now)
        now = nxt
        c.handle_timer(now)
    assert delays == [2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    assert c.failures == 6
    c.on_response(reply(one(c), 200), now)
    assert c.state is S.REGISTERED and c.failures == 0


def test_guard_timer_fails_when_nothing_is_reported() -> None:
    c = client(username=None, password=None, request_timeout=40.0)
    c.start(T0)
    req = one(c)
    assert c.get_timer() == T0 + 40.0
    c.handle_timer(T0 + 39.0)
    assert c.state is S.REGISTERING
    c.handle_timer(T0 + 40.0)
    assert c.state is S.FAILED and "no final response" in (c.last_error or "")
    # The late answer to that request is no longer ours to act on.
    c.on_response(reply(req, 200), T0 + 41)
    assert c.state is S.FAILED


def test_failure_report_for_an_older_request_is_ignored() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    old = one(c)
    c.handle_timer(T0 + 40.0)  # guard
    c.handle_timer(T0 + 45.0)  # retry
    new = one(c)
    c.on_failure(T0 + 72.0, "Timer F", request=old)
    assert c.outstanding
    c.on_response(reply(new, 200), T0 + 73)
    assert c.state is S.REGISTERED


def test_retry_after_is_honoured() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    c.on_response(reply(one(c), 503, ("Retry-After", "120 (maintenance);duration=60")), T0)
    assert c.next_attempt_at == T0 + 120
    c.handle_timer(T0 + 120)
    c.on_response(reply(one(c), 503, ("Retry-After", "999999")), T0 + 120)
    assert c.next_attempt_at == T0 + 120 + 3600
    c.handle_timer(T0 + 120 + 3600)
    c.on_response(reply(one(c), 503, ("Retry-After", "junk")), T0 + 3720)
    assert c.next_attempt_at == T0 + 3720 + 20.0  # third failure: 5 * 2**2


def test_refresh_failure_goes_failed_and_retries() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    c.on_response(reply(one(c), 200), T0)
    c.handle_timer(T0 + 300)
    c.on_response(reply(one(c), 480), T0 + 300)
    assert c.state is S.FAILED and c.expires_at is None
    c.handle_timer(T0 + 305)
    c.on_response(reply(one(c), 200), T0 + 305)
    assert c.state is S.REGISTERED


# --------------------------------------------------------------------------- what to ignore


def test_responses_not_for_the_outstanding_request_are_ignored() -> None:
    c = client(username=None, password=None)
    c.on_response(reply(wire(_foreign()), 200), T0)  # nothing outstanding
    c.on_failure(T0, "nothing")
    assert c.state is S.IDLE
    c.start(T0)
    req = one(c)
    other_call = reply(req, 200)
    other_call.headers.set("Call-ID", "someone-else")
    other_call.invalidate()
    old_cseq = reply(req, 200)
    old_cseq.headers.set("CSeq", f"{req.cseq.number - 1} REGISTER")
    old_cseq.invalidate()
    wrong_method = reply(req, 200)
    wrong_method.headers.set("CSeq", f"{req.cseq.number} OPTIONS")
    wrong_method.invalidate()
    broken = reply(req, 200)
    broken.headers.set("CSeq", "garbage")
    broken.invalidate()
    for resp in (other_call, old_cseq, wrong_method, broken, reply(req, 180)):
        c.on_response(resp, T0)
        assert c.state is S.REGISTERING and c.outstanding
    c.on_response(reply(req, 200), T0)
    assert c.state is S.REGISTERED
    c.on_response(reply(req, 500), T0)  # a late or repeated final: nothing outstanding
    assert c.state is S.REGISTERED and c.take_requests() == []


def _foreign() -> Request:
    return Request(
        "REGISTER",
        REGISTRAR,
        parse_message(
            b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n"
        ).headers,
    )


def test_handle_timer_early_and_idle_is_harmless() -> None:
    c = client()
    c.handle_timer(T0)
    assert c.state is S.IDLE and c.take_requests() == []
    c.start(T0)
    c.start(T0)  # already started: no second request
    assert len(c.take_requests()) == 1
    c.handle_timer(T0 + 1)
    assert c.take_requests() == []


# --------------------------------------------------------------------------- stop


def test_stop_sends_expires_zero_then_stopped() -> None:
    c, carrier = client(), Carrier()
    c.start(T0)
    register(c, carrier, T0)
    c.stop(T0 + 10)
    assert c.state is S.UNREGISTERING
    bye = one(c)
    assert bye.headers.get("expires") == "0"
    assert [str(x.uri) for x in bye.contacts] == [CONTACT]  # ours, not "*"
    assert bye.headers.get("authorization")  # the cached challenge, pre-emptively
    c.on_response(carrier.handle(bye, T0 + 10), T0 + 10)
    assert carrier.verdicts[-1].verdict is Verdict.OK
    assert c.state is S.STOPPED and c.get_timer() is None and c.expires_at is None
    c.handle_timer(T0 + 1000)
    assert c.take_requests() == []


def test_stop_unregister_answers_challenge() -> None:
    c, carrier = client(), Carrier()
    c.start(T0)
    register(c, carrier, T0)
    c.stop(T0 + 10)
    bye = one(c)
    c.on_response(carrier.challenge(bye, T0 + 10), T0 + 10)
    again = one(c)
    assert again.headers.get("expires") == "0"
    c.on_response(carrier.handle(again, T0 + 10), T0 + 10)
    assert c.state is S.STOPPED


@pytest.mark.parametrize("status", [403, 500, None])
def test_stop_ends_stopped_even_when_unregister_fails(status: int | None) -> None:
    c = client(username=None, password=None)
    c.start(T0)
    c.on_response(reply(one(c), 200), T0)
    c.stop(T0 + 1)
    bye = one(c)
    if status is None:
        c.on_failure(T0 + 33, "Timer F")
    else:
        c.on_response(reply(bye, status), T0 + 2)
    assert c.state is S.STOPPED and c.take_requests() == []
    assert c.get_timer() is None


def test_stop_when_not_bound_sends_nothing() -> None:
    c = client(username=None, password=None)
    c.stop(T0)
    assert c.state is S.STOPPED
    c.start(T0)
    c.on_response(reply(one(c), 403), T0)
    c.stop(T0 + 1)
    assert c.state is S.STOPPED and c.take_requests() == []


def test_stop_while_failed_but_still_bound_unregisters() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    c.on_response(reply(one(c), 200), T0)  # bound until T0 + 600
    c.handle_timer(T0 + 300)
    c.on_response(reply(one(c), 500), T0 + 300)
    assert c.state is S.FAILED
    c.stop(T0 + 301)
    assert one(c).headers.get("expires") == "0"


def test_stop_waits_for_outstanding_register() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    req = one(c)
    c.stop(T0 + 0.5)
    assert c.state is S.UNREGISTERING and c.take_requests() == []  # §10.2: one at a time
    c.on_response(reply(req, 200), T0 + 1)  # that REGISTER bound: remove it
    bye = one(c)
    assert bye.headers.get("expires") == "0"
    c.on_response(reply(bye, 200), T0 + 1)
    assert c.state is S.STOPPED


def test_stop_while_outstanding_register_is_challenged() -> None:
    c, carrier = client(), Carrier()
    c.start(T0)
    req = one(c)
    c.stop(T0)
    c.on_response(carrier.challenge(req, T0), T0)  # never bound: nothing to remove
    assert c.state is S.STOPPED and c.take_requests() == []


def test_stop_while_refresh_is_challenged_unregisters_with_new_nonce() -> None:
    c, carrier = client(), Carrier()
    c.start(T0)
    register(c, carrier, T0)
    c.handle_timer(T0 + 300)
    refresh = one(c)
    c.stop(T0 + 300)
    c.on_response(carrier.challenge(refresh, T0 + 300, stale=True), T0 + 300)
    bye = one(c)
    assert bye.headers.get("expires") == "0"
    c.on_response(carrier.handle(bye, T0 + 300), T0 + 300)
    assert carrier.verdicts[-1].verdict is Verdict.OK
    assert c.state is S.STOPPED


def test_restart_after_stop() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    first = one(c)
    c.on_response(reply(first, 200), T0)
    c.stop(T0)
    c.on_response(reply(one(c), 200), T0)
    c.start(T0 + 5)
    again = one(c)
    assert again.headers.get("expires") == "600"
    assert again.call_id == first.call_id and again.cseq.number == first.cseq.number + 2


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kw",
    [
        {"registrar_uri": "tel:+15551234"},
        {"registrar_uri": "not a uri"},
        {"aor": "mailto:x@y"},
        {"contact": "<<bad"},
        {"username": "u", "password": None},
        {"expires": 0},
        {"transport": "U D P"},
        {"local_sent_by": ""},
        {"local_sent_by": "a b"},
        {"user_agent": "x\r\nInjected: 1"},
        {"retry_min": 0},
        {"retry_min": 10.0, "retry_max": 5.0},
        {"request_timeout": 0},
    ],
)
def test_bad_config_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        config(**kw)


def test_contact_with_params_and_tcp_transport() -> None:
    c = client(
        username=None,
        password=None,
        transport="tcp",
        contact='<sip:trunkuser@192.0.2.10:5060;transport=tcp>;+sip.instance="<urn:x>"',
    )
    c.start(T0)
    req = one(c)
    assert req.top_via.transport == "TCP"
    assert req.contacts[0].uri.params == {"transport": "tcp"}  # type: ignore[union-attr]
    contact = "<sip:trunkuser@192.0.2.10:5060;transport=tcp>;expires=77"
    c.on_response(reply(req, 200, ("Contact", contact), ("Expires", "5")), T0)
    assert c.expires_at == T0 + 77


def test_public_address_from_via() -> None:
    c = client(username=None, password=None)
    c.start(T0)
    req = one(c)
    resp = reply(req, 200)
    via = req.headers.values("via")[0].replace(";rport", ";rport=40001;received=203.0.113.9")
    resp.headers.set("Via", via)
    resp.invalidate()
    c.on_response(resp, T0)
    assert c.status()["public_address"] == "203.0.113.9:40001"


def test_default_call_id_is_random() -> None:
    a, b = RegistrationClient(config()), RegistrationClient(config())
    assert a.call_id != b.call_id


def test_digest_error_while_answering_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from sipstack.digest import DigestClient, DigestError

    def refuse(*_a: object, **_k: object) -> str:
        raise DigestError("boom")

    monkeypatch.setattr(DigestClient, "authorize", refuse)
    c, carrier = client(), Carrier()
    c.start(T0)
    req = one(c)
    c.on_response(carrier.challenge(req, T0), T0)
    assert c.state is S.FAILED and "boom" in (c.last_error or "")
    assert c.take_requests() == []
    assert c.status()["cseq"] == req.cseq.number  # no request was numbered for it
