"""REGISTER end to end in the pure core: digest authentication, the no-enumeration rule,
authorization of the AOR, then the registrar."""

from __future__ import annotations

import re
import secrets

import pytest

from sipstack.digest import DigestClient, DigestServer, ha1, parse_challenge
from sipstack.message import Request, Response, parse_message, stateless_tag
from sipstack.peer import Peer
from sipstack.registrar import Registrar, RegistrarConfig, Upsert
from sipstack.registration import RegistrationHandler

REALM = "pbx.example.com"
T0 = 1_700_000_000.0
PEER = Peer("udp", "198.51.100.7", 5060)
PASSWORDS = {"1000": "secret-1000", "alice": "wonder land"}


class FakeDirectory:
    """Users: 1000 (ext 1000, AOR u1000) and alice (ext 2001, AOR u-alice)."""

    def __init__(self) -> None:
        self.targets = {"1000": "u1000", "alice": "u-alice", "2001": "u-alice"}
        self.by_username = {"1000": "u1000", "alice": "u-alice"}
        self.lookups: list[str] = []

    def aor_for_target(self, user: str) -> str | None:
        return self.targets.get(user)

    def aor_for_username(self, username: str) -> str | None:
        return self.by_username.get(username)

    def ha1(self, username: str, algorithm: str) -> str | None:
        self.lookups.append(username)
        pw = PASSWORDS.get(username)
        return None if pw is None else ha1(username, REALM, pw, algorithm)


def make_handler(*, lifetime: float = 300.0) -> RegistrationHandler:
    return RegistrationHandler(
        Registrar(RegistrarConfig()),
        DigestServer(REALM, secrets.token_bytes(32), nonce_lifetime=lifetime),
        FakeDirectory(),
    )


def register(
    user: str,
    *,
    authorization: str | None = None,
    call_id: str = "reg-call-1",
    cseq: int = 1,
    contact: str | None = None,
    ruri: str = f"sip:{REALM}",
    from_user: str | None = None,
) -> Request:
    from_user = from_user or user
    lines = [
        f"REGISTER {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-{call_id}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}@{REALM}>;tag=fromtag1",
        f"To: <sip:{user}@{REALM}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: {contact or f'<sip:{user}@192.0.2.10:5060>'}",
        "Expires: 600",
    ]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def challenges(response: Response) -> list[str]:
    return response.headers.get_all("www-authenticate")


def login(
    handler: RegistrationHandler,
    username: str,
    password: str,
    *,
    target: str | None = None,
    now: float = T0,
    call_id: str = "reg-call-1",
    cseq: int = 1,
    uri: str | None = None,
    client: DigestClient | None = None,
) -> tuple[Response, Request]:
    """Challenge then answer it; returns the final response and the request sent."""
    target = target or username
    first = handler(register(target, call_id=call_id, cseq=cseq), PEER, now)
    assert first.status == 401
    client = client or DigestClient(username, password)
    chosen = client.choose(challenges(first))
    assert chosen is not None
    auth = client.authorize(chosen, "REGISTER", f"sip:{REALM}" if uri is None else uri)
    req = register(target, authorization=auth, call_id=call_id, cseq=cseq + 1)
    return handler(req, PEER, now), req


# --------------------------------------------------------------------------- masking

_NONCE_RE = re.compile(r'nonce="([^"]*)"')
_TAG_RE = re.compile(r"(;tag=)([^;\r\n]*)")


def masked(response: Response, user: str) -> bytes:
    """The response bytes with only nonce values (and the stateless To tag, whose value
    is a hash of the request) replaced by same-length placeholders, and the user name
    of the request (echoed in From/To) replaced by a placeholder."""
    text = response.to_bytes().decode()
    text = _NONCE_RE.sub(lambda m: 'nonce="' + "N" * len(m.group(1)) + '"', text)
    text = _TAG_RE.sub(lambda m: m.group(1) + "T" * len(m.group(2)), text)
    return text.replace(f"sip:{user}@", "sip:USER@").encode()


def shape(response: Response) -> list[tuple[str, list[tuple[str, int]]]]:
    """Header names in order; for challenges, parameter names and value lengths."""
    out = []
    for name, value in response.headers:
        params: list[tuple[str, int]] = []
        if name == "WWW-Authenticate":
            for part in value[len("Digest "):].split(", "):
                key, _, val = part.partition("=")
                params.append((key, len(val)))
        out.append((name, params))
    return out


# --------------------------------------------------------------------------- challenges


def test_challenge_offers_sha256_first_then_md5_with_qop_auth() -> None:
    handler = make_handler()
    resp = handler(register("1000"), PEER, T0)
    assert (resp.status, resp.reason) == (401, "Unauthorized")
    parsed = [parse_challenge(v) for v in challenges(resp)]
    assert [c.algorithm for c in parsed if c] == ["SHA-256", "MD5"]
    assert all(c is not None and c.qop == ("auth",) and c.realm == REALM for c in parsed)
    assert all(c is not None and not c.stale for c in parsed)
    # Both challenges share one fresh nonce.
    assert len({c.nonce for c in parsed if c}) == 1
    assert resp.to.tag == stateless_tag(register("1000"))
    assert handler.pending_changes == []


@pytest.mark.parametrize("credentials", ["none", "wrong-password", "garbage", "other-realm"])
def test_no_enumeration_unknown_and_known_user_answers_are_identical(credentials: str) -> None:
    handler = make_handler()
    responses = {}
    for user in ("1000", "9999"):  # known, unknown; same length on purpose
        # A fresh challenge for each, so that each answer below is to a valid nonce.
        first = handler(register(user, call_id="c-1"), PEER, T0)
        nonce_challenge = challenges(first)[0]
        client = DigestClient(user, "definitely-not-the-password")
        auth: str | None
        if credentials == "none":
            auth = None
        elif credentials == "wrong-password":
            auth = client.authorize(nonce_challenge, "REGISTER", f"sip:{REALM}")
        elif credentials == "garbage":
            auth = 'Digest username="' + user + '", realm="' + REALM + '", nonce="abc", ' \
                   'uri="sip:pbx.example.com", response="00", qop=auth, nc=00000001, cnonce="x"'
        else:
            auth = client.authorize(nonce_challenge.replace(REALM, "elsewhere.example"),
                                    "REGISTER", f"sip:{REALM}")
        req = register(user, authorization=auth, call_id="c-1", cseq=2)
        responses[user] = handler(req, PEER, T0 + 1)
    known, unknown = responses["1000"], responses["9999"]
    assert known.status == unknown.status == 401
    assert known.reason == unknown.reason
    assert shape(known) == shape(unknown)
    assert masked(known, "1000") == masked(unknown, "9999")
    assert len(known.to.tag or "") == len(unknown.to.tag or "") > 0
    assert handler.pending_changes == []


def test_no_enumeration_bytes_differ_only_in_nonce_for_same_request_shape() -> None:
    # Even the raw bytes are the same length and differ only inside nonce="...".
    handler = make_handler()
    a = handler(register("1000"), PEER, T0).to_bytes()
    b = handler(register("9999"), PEER, T0).to_bytes()
    assert len(a) == len(b)
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    spans = [(m.start(1), m.end(1)) for m in _NONCE_RE.finditer(a.decode())]
    spans += [(m.start(2), m.end(2)) for m in _TAG_RE.finditer(a.decode())]
    spans += [(m.start(), m.end()) for m in re.finditer(r"sip:1000@", a.decode())]
    assert all(any(s <= i < e for s, e in spans) for i in diff)


def test_unknown_user_costs_the_same_lookup() -> None:
    handler = make_handler()
    directory = handler.directory
    assert isinstance(directory, FakeDirectory)
    first = handler(register("9999"), PEER, T0)
    auth = DigestClient("9999", "x").authorize(challenges(first)[0], "REGISTER", f"sip:{REALM}")
    handler(register("9999", authorization=auth, cseq=2), PEER, T0)
    assert directory.lookups == ["9999"]


# --------------------------------------------------------------------------- success and failure


def test_valid_credentials_register() -> None:
    handler = make_handler()
    resp, req = login(handler, "1000", PASSWORDS["1000"])
    assert resp.status == 200
    assert resp.headers.get_all("contact") == ["<sip:1000@192.0.2.10:5060>;expires=600"]
    assert resp.headers.get("date") is not None
    assert resp.headers.get("www-authenticate") is None
    assert resp.to.tag == stateless_tag(req)
    [change] = handler.take_changes()
    assert isinstance(change, Upsert)
    assert change.binding.aor == "u1000"
    assert change.binding.source == PEER
    assert handler.take_changes() == []
    assert [b.contact for b in handler.registrar.lookup("u1000", T0)] == [
        "sip:1000@192.0.2.10:5060"
    ]


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_both_algorithms_work(algorithm: str) -> None:
    handler = make_handler()
    client = DigestClient("1000", PASSWORDS["1000"], algorithms=[algorithm])
    resp, _ = login(handler, "1000", PASSWORDS["1000"], client=client)
    assert resp.status == 200


def test_registering_by_extension_in_the_to_uri() -> None:
    handler = make_handler()
    resp, _ = login(handler, "alice", PASSWORDS["alice"], target="2001")
    assert resp.status == 200
    assert len(handler.registrar.lookup("u-alice", T0)) == 1


def test_credentials_of_a_for_the_aor_of_b_is_403() -> None:
    handler = make_handler()
    resp, _ = login(handler, "1000", PASSWORDS["1000"], target="alice")
    assert resp.status == 403
    assert resp.to.tag
    assert handler.take_changes() == []
    assert handler.registrar.lookup("u-alice", T0) == []
    # An unknown target is not "found" either: same 403.
    resp2, _ = login(handler, "1000", PASSWORDS["1000"], target="7777", call_id="c2")
    assert (resp2.status, resp2.reason) == (resp.status, resp.reason)


def test_wrong_password_is_401_and_counted() -> None:
    handler = make_handler()
    resp, _ = login(handler, "1000", "wrong")
    assert resp.status == 401
    assert handler.failures == 1
    assert handler.take_changes() == []


def test_stale_nonce_gets_stale_true() -> None:
    handler = make_handler(lifetime=60)
    first = handler(register("1000"), PEER, T0)
    client = DigestClient("1000", PASSWORDS["1000"])
    auth = client.authorize(client.choose(challenges(first)) or "", "REGISTER", f"sip:{REALM}")
    resp = handler(register("1000", authorization=auth, cseq=2), PEER, T0 + 61)
    assert resp.status == 401
    parsed = [parse_challenge(v) for v in challenges(resp)]
    assert [c.stale for c in parsed if c] == [True, True]
    assert [c.algorithm for c in parsed if c] == ["SHA-256", "MD5"]
    # Answering the new challenge works.
    auth = client.authorize(client.choose(challenges(resp)) or "", "REGISTER", f"sip:{REALM}")
    ok = handler(register("1000", authorization=auth, cseq=3), PEER, T0 + 62)
    assert ok.status == 200


def test_stale_is_never_shown_for_a_wrong_password() -> None:
    handler = make_handler(lifetime=60)
    first = handler(register("1000"), PEER, T0)
    auth = DigestClient("1000", "wrong").authorize(challenges(first)[0], "REGISTER",
                                                   f"sip:{REALM}")
    resp = handler(register("1000", authorization=auth, cseq=2), PEER, T0 + 61)
    assert resp.status == 401
    assert all("stale" not in v for v in challenges(resp))


def test_nonce_count_replay_is_401() -> None:
    handler = make_handler()
    resp, req = login(handler, "1000", PASSWORDS["1000"])
    assert resp.status == 200
    auth = req.headers.get("authorization")
    assert auth is not None
    # Same Authorization (same nonce and nc) on a new request: a replay.
    replay = register("1000", authorization=auth, cseq=3)
    out = handler(replay, PEER, T0 + 1)
    assert out.status == 401
    assert all("stale" not in v for v in challenges(out))
    assert handler.take_changes() != []  # only the first login's change
    assert handler.take_changes() == []


def test_exact_retransmission_is_accepted_idempotently() -> None:
    handler = make_handler()
    resp, req = login(handler, "1000", PASSWORDS["1000"])
    assert resp.status == 200
    handler.take_changes()
    again = handler(parse_message(req.to_bytes()), PEER, T0 + 0.5)  # type: ignore[arg-type]
    assert again.status == 200
    assert again.to.tag == resp.to.tag
    assert again.headers.get_all("contact") == resp.headers.get_all("contact")
    assert handler.take_changes() == []
    assert len(handler.registrar.lookup("u1000", T0)) == 1


def test_next_nc_on_the_same_nonce_refreshes() -> None:
    handler = make_handler()
    client = DigestClient("1000", PASSWORDS["1000"])
    first = handler(register("1000"), PEER, T0)
    chosen = client.choose(challenges(first)) or ""
    for cseq in (2, 3, 4):
        auth = client.authorize(chosen, "REGISTER", f"sip:{REALM}")
        req = register("1000", authorization=auth, cseq=cseq)
        assert handler(req, PEER, T0 + cseq).status == 200


@pytest.mark.parametrize("uri", ["http://pbx.example.com/", "not a uri", "tel:+15551234", ""])
def test_digest_uri_that_is_not_a_sip_uri_is_401(uri: str) -> None:
    handler = make_handler()
    resp, _ = login(handler, "1000", PASSWORDS["1000"], uri=uri)
    assert resp.status == 401
    assert handler.take_changes() == []


@pytest.mark.parametrize(
    "uri", ["sip:PBX.example.COM", "sip:192.0.2.1:5060", "sips:pbx.example.com"]
)
def test_digest_uri_may_name_the_server_instead_of_the_request_uri(uri: str) -> None:
    # A deliberate relaxation of RFC 3261 §22.4 (see registration._plausible_digest_uri):
    # SIPp and several phones put the server's address there; Kamailio accepts it.
    handler = make_handler()
    resp, _ = login(handler, "1000", PASSWORDS["1000"], uri=uri)
    assert resp.status == 200


def test_credentials_for_another_method_are_refused() -> None:
    handler = make_handler()
    first = handler(register("1000"), PEER, T0)
    client = DigestClient("1000", PASSWORDS["1000"])
    auth = client.authorize(client.choose(challenges(first)) or "", "INVITE", f"sip:{REALM}")
    assert handler(register("1000", authorization=auth, cseq=2), PEER, T0).status == 401


def test_malformed_register_after_auth_raises_typed_error() -> None:
    # The handler lets SipParseError out for the endpoint to answer 400.
    from sipstack.errors import SipParseError

    handler = make_handler()
    first = handler(register("1000"), PEER, T0)
    client = DigestClient("1000", PASSWORDS["1000"])
    auth = client.authorize(client.choose(challenges(first)) or "", "REGISTER", f"sip:{REALM}")
    bad = register("1000", authorization=auth, cseq=2, contact="<sip:1000@192.0.2.10>;expires=x")
    with pytest.raises(SipParseError) as info:
        handler(bad, PEER, T0)
    assert info.value.status == 400
    assert handler.take_changes() == []


def test_stateless_tag_is_stable_per_request_and_differs_between_requests() -> None:
    a = stateless_tag(register("1000", cseq=1))
    assert a == stateless_tag(register("1000", cseq=1))
    assert a != stateless_tag(register("1000", cseq=2))
    assert a != stateless_tag(register("1000", call_id="other"))
    assert re.fullmatch(r"[0-9a-f]{12}", a)


def test_inspection_comes_after_authentication() -> None:
    # RFC 3261 §8.2 order: an unauthenticated REGISTER is challenged whatever it
    # carries; once authenticated it is inspected, and refused with the full answer.
    from sipstack.endpoint import Endpoint, EndpointConfig
    from sipstack.validate import check_request

    handler = make_handler()
    endpoint = Endpoint(
        EndpointConfig(supported=("path",)),
        check_request=lambda r: check_request(r, supported=frozenset({"path"})),
    )
    handler.inspect = endpoint.inspect

    def with_require(req: Request) -> Request:
        req.headers.add("Require", "gruu")
        return req

    first = handler(with_require(register("1000")), PEER, T0)
    assert first.status == 401
    client = DigestClient("1000", PASSWORDS["1000"])
    auth = client.authorize(client.choose(challenges(first)) or "", "REGISTER", f"sip:{REALM}")
    refused = handler(with_require(register("1000", authorization=auth, cseq=2)), PEER, T0)
    assert refused.status == 420
    assert refused.headers.get("unsupported") == "gruu"
    assert handler.take_changes() == []
