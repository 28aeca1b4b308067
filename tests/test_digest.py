"""Tests for sipstack.digest (RFC 7616 / RFC 8760 / RFC 3261 §22 digest authentication)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack import digest
from sipstack.digest import (
    SUPPORTED_ALGORITHMS,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestError,
    DigestServer,
    Verdict,
    compute_response,
    ha1,
    parse_challenge,
    parse_credentials,
    userhash,
)

REALM = "pbx.example.com"
SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0
URI = "sip:pbx.example.com"
USERS = {"alice": "wonderland", "bob": 'p"w\\d'}

HAS_SHA512_256 = "SHA-512-256" in SUPPORTED_ALGORITHMS


def lookup(username: str, algorithm: str) -> str | None:
    pw = USERS.get(username)
    return None if pw is None else ha1(username, REALM, pw, algorithm)


def server(**kw: object) -> DigestServer:
    kw.setdefault("instance_id", b"\x01\x02\x03\x04")
    return DigestServer(REALM, SECRET, **kw)  # type: ignore[arg-type]


def creds_for(
    srv: DigestServer,
    user: str = "alice",
    password: str | None = None,
    *,
    now: float = T0,
    method: str = "REGISTER",
    client: DigestClient | None = None,
) -> tuple[DigestClient, DigestCredentials]:
    cl = client or DigestClient(user, USERS.get(user, "x") if password is None else password)
    chosen = cl.choose(srv.challenge(now))
    assert chosen is not None
    c = parse_credentials(cl.authorize(chosen, method, URI))
    assert c is not None
    return cl, c


def check(srv: DigestServer, c: DigestCredentials, now: float = T0 + 1, **kw: object) -> Verdict:
    kw.setdefault("method", "REGISTER")
    return srv.verify(c, now=now, ha1_lookup=lookup, **kw).verdict  # type: ignore[arg-type]


# --------------------------------------------------------------------------- RFC vectors

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        # RFC 7616 §3.9.1 (password "Circle of Life", lower-case "of": erratum 4495).
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1(algorithm: str, expected: str) -> None:
    challenge = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm},'
        f' nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    cl = DigestClient("Mufasa", "Circle of Life")
    header = cl.authorize(challenge, "GET", "/dir/index.html", cnonce=RFC7616_CNONCE)
    c = parse_credentials(header)
    assert c is not None
    assert c.response == expected
    assert (c.qop, c.nc, c.cnonce, c.opaque, c.algorithm) == (
        "auth",
        "00000001",
        RFC7616_CNONCE,
        RFC7616_OPAQUE,
        algorithm,
    )
    h1 = ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    assert expected == compute_response(
        ha1=h1,
        algorithm=algorithm,
        method="GET",
        uri="/dir/index.html",
        nonce=RFC7616_NONCE,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )


def test_rfc7616_authorization_header_as_printed_parses() -> None:
    # The SHA-256 Authorization example of RFC 7616 §3.9.1, folded across lines as printed.
    header = (
        'Digest username="Mufasa",\r\n    realm="http-auth@example.org",\r\n'
        '    uri="/dir/index.html",\r\n    algorithm=SHA-256,\r\n'
        f'    nonce="{RFC7616_NONCE}",\r\n    nc=00000001,\r\n'
        f'    cnonce="{RFC7616_CNONCE}",\r\n    qop=auth,\r\n'
        '    response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",\r\n'
        f'    opaque="{RFC7616_OPAQUE}"'
    )
    c = parse_credentials(header)
    assert c == DigestCredentials(
        username="Mufasa",
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        uri="/dir/index.html",
        response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        algorithm="SHA-256",
        cnonce=RFC7616_CNONCE,
        nc="00000001",
        qop="auth",
        opaque=RFC7616_OPAQUE,
    )


def test_rfc2617_md5_example() -> None:
    # RFC 2617 §3.5 (password "Circle Of Life" with capital O).
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int",'
        ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = DigestClient("Mufasa", "Circle Of Life").authorize(
        challenge, "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    c = parse_credentials(header)
    assert c is not None and c.response == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_style_no_qop_vector() -> None:
    # No-qop (RFC 2069) form; the value is the one the digest-access crate checks for
    # Mufasa / "CircleOfLife" and is reproduced independently here.
    challenge = (
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
        ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = DigestClient("Mufasa", "CircleOfLife").authorize(challenge, "GET", "/dir/index.html")
    c = parse_credentials(header)
    assert c is not None
    assert c.response == "1949323746fe6a43ef61f9606e7febea"
    assert (c.qop, c.nc, c.cnonce) == (None, None, None)


@pytest.mark.skipif(not HAS_SHA512_256, reason="hashlib lacks sha512_256")
def test_sha512_256_primitive_is_fips_180_4() -> None:
    # FIPS 180-4 SHA-512/256 example "abc"; RFC 7616 §3.9.2's example values are disputed
    # (erratum 4897), so the primitive is pinned instead.
    h = digest._ALGS["SHA-512-256"].new(b"abc").hexdigest()
    assert h == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"


def test_ha1_helper_and_sess_uses_base() -> None:
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == ha1(
        "Mufasa", "testrealm@host.com", "Circle Of Life", "md5-SESS"
    )
    assert len(ha1("a", "b", "c", "SHA-256")) == 64
    assert userhash("a", "b", "SHA-256") == digest._ALGS["SHA-256"].new(b"a:b").hexdigest()
    with pytest.raises(DigestError):
        ha1("a", "b", "c", "SHA-1")


# --------------------------------------------------------------------------- challenges


CHALLENGE_RE = re.compile(
    r'Digest realm="pbx\.example\.com", qop="auth", algorithm=(?P<alg>[A-Z0-9-]+(?:-sess)?), '
    r'nonce="(?P<nonce>[A-Za-z0-9_-]{48})", opaque="(?P<opaque>[A-Za-z0-9_-]{16})"'
    r"(?P<stale>, stale=true)?"
)


def test_challenge_shape_and_order() -> None:
    srv = server(algorithms=("MD5", "SHA-256"))  # configured order does not matter
    hs = srv.challenge(T0)
    ms = [CHALLENGE_RE.fullmatch(h) for h in hs]
    assert all(ms)
    assert [m["alg"] for m in ms if m] == ["SHA-256", "MD5"]
    assert len({m["nonce"] for m in ms if m}) == 1
    assert all(m["opaque"] == srv.opaque and m["stale"] is None for m in ms if m)
    stale = srv.challenge(T0, stale=True)
    assert all(h.endswith(", stale=true") for h in stale)
    parsed = parse_challenge(stale[0])
    assert parsed is not None and parsed.stale and parsed.qop == ("auth",)


def test_challenges_differ_only_in_nonce() -> None:
    # No-enumeration rule: the challenge takes no username at all; two challenges (e.g.
    # one for a known and one for an unknown user) differ in the nonce value only.
    srv = server()
    a, b = srv.challenge(T0), srv.challenge(T0)  # same millisecond: counter keeps them apart
    assert [len(x) for x in a] == [len(x) for x in b]
    na, nb = (CHALLENGE_RE.fullmatch(x[0]) for x in (a, b))
    assert na and nb and na["nonce"] != nb["nonce"]
    assert [x.replace(na["nonce"], "N") for x in a] == [x.replace(nb["nonce"], "N") for x in b]


@pytest.mark.skipif(not HAS_SHA512_256, reason="hashlib lacks sha512_256")
def test_strongest_first_with_all_algorithms() -> None:
    srv = server(algorithms=("MD5", "SHA-256-sess", "SHA-512-256", "SHA-256"))
    assert srv.algorithms == ("SHA-512-256", "SHA-256", "SHA-256-sess", "MD5")


def test_sha512_256_left_out_when_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    algs = {k: v for k, v in digest._ALGS.items() if not k.startswith("SHA-512-256")}
    monkeypatch.setattr(digest, "_ALGS", algs)
    assert server(algorithms=("SHA-512-256", "SHA-256", "MD5")).algorithms == ("SHA-256", "MD5")
    with pytest.raises(ValueError, match="no usable"):
        server(algorithms=("SHA-512-256",))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"algorithms": ("SHA-1",)},
        {"algorithms": ()},
        {"nonce_lifetime": 0},
        {"max_tracked_nonces": 0},
        {"instance_id": b"\x00"},
    ],
)
def test_server_rejects_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        server(**kwargs)


def test_server_rejects_short_secret_and_ctl_realm() -> None:
    with pytest.raises(ValueError):
        DigestServer(REALM, b"short")
    with pytest.raises(ValueError):
        DigestServer("a\r\nb", SECRET)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
@pytest.mark.parametrize("user", sorted(USERS))
def test_round_trip_each_algorithm(algorithm: str, user: str) -> None:
    srv = server(algorithms=(algorithm,))
    cl, c = creds_for(srv, user)
    assert c.algorithm == algorithm
    assert check(srv, c) is Verdict.OK
    # A new challenge (new nonce) for another request: nc restarts at 1.
    c2 = parse_credentials(cl.authorize(srv.challenge(T0)[0], "INVITE", URI))
    assert c2 is not None and c2.nc == "00000001" and c2.nonce != c.nonce
    assert check(srv, c2, method="INVITE") is Verdict.OK


def test_nonce_reuse_increments_nc() -> None:
    srv = server()
    challenge = srv.challenge(T0)[0]
    cl = DigestClient("alice", USERS["alice"])
    for i in range(1, 4):
        c = parse_credentials(cl.authorize(challenge, "REGISTER", URI))
        assert c is not None and c.nc == f"{i:08x}"
        assert check(srv, c) is Verdict.OK


def test_wrong_password_invalid() -> None:
    srv = server()
    _, c = creds_for(srv, "alice", "not-the-password")
    r = srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason, r.ok) == (Verdict.INVALID, "bad-credentials", False)


def test_wrong_method_or_uri_invalid() -> None:
    srv = server()
    _, c = creds_for(srv, method="REGISTER")
    assert check(srv, c, method="INVITE") is Verdict.INVALID
    assert check(srv, replace(c, uri="sip:other.example.com")) is Verdict.INVALID


def test_unknown_user_invalid_same_reason() -> None:
    srv = server()
    _, c = creds_for(srv, "mallory", "guess")
    r = srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.INVALID, "bad-credentials")


def test_unknown_user_never_ok_even_if_dummy_ha1_matches() -> None:
    # Pin the dummy HA1 to something the "attacker" can compute: still INVALID.
    srv = server(algorithms=("SHA-256",))
    srv._dummy["SHA-256"] = ha1("mallory", REALM, "pw", "SHA-256")
    _, c = creds_for(srv, "mallory", "pw")
    r = srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.INVALID, "bad-credentials")
    assert srv.tracked_nonces == 0


def _counting_algs(counter: list[int]) -> dict[str, digest._Alg]:
    def wrap(factory: Callable[[bytes], digest._Hasher]) -> Callable[[bytes], digest._Hasher]:
        def counted(data: bytes) -> digest._Hasher:
            counter.append(len(data))
            return factory(data)

        return counted

    return {k: replace(v, new=wrap(v.new)) for k, v in digest._ALGS.items()}


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5-sess"])
def test_unknown_user_does_same_hash_work(monkeypatch: pytest.MonkeyPatch, algorithm: str) -> None:
    """Timing equalisation: unknown user → dummy HA1, identical hashing, same verdict."""
    calls: list[int] = []
    monkeypatch.setattr(digest, "_ALGS", _counting_algs(calls))
    srv = server(algorithms=(algorithm,))
    _, known_bad = creds_for(srv, "alice", "wrong")
    _, unknown = creds_for(srv, "alicf", "wrong")  # same-length username, same cnonce length
    base = algorithm.removesuffix("-sess")
    table = {"alice": ha1("alice", REALM, USERS["alice"], base)}  # computed before counting
    lookups: list[tuple[str, str]] = []

    def spy(u: str, a: str) -> str | None:
        lookups.append((u, a))
        return table.get(u)

    calls.clear()
    r1 = srv.verify(known_bad, method="REGISTER", now=T0, ha1_lookup=spy)
    work_known = list(calls)
    calls.clear()
    r2 = srv.verify(unknown, method="REGISTER", now=T0, ha1_lookup=spy)
    work_unknown = list(calls)
    assert r1 == r2 and r1.verdict is Verdict.INVALID
    assert work_known == work_unknown  # same number of hashes over same-sized inputs
    assert len(work_known) == (3 if algorithm.endswith("-sess") else 2)  # [sess,] HA2, response
    assert lookups == [("alice", base), ("alicf", base)]


@pytest.mark.parametrize(
    ("stored", "ok"),
    [
        (lambda h: h, True),
        (lambda h: h.upper(), True),
        (lambda h: h.encode(), True),
        (bytes.fromhex, True),
        (lambda h: h[:-1], False),
        (lambda h: h[:-1] + "g", False),
        (lambda h: "\u00e9" * len(h), False),
        (lambda h: b"\xff" * len(h), False),
        (lambda h: None, False),
    ],
)
def test_ha1_lookup_formats(stored: Callable[[str], bytes | str | None], ok: bool) -> None:
    srv = server(algorithms=("SHA-256",))
    _, c = creds_for(srv)
    real = ha1("alice", REALM, USERS["alice"], "SHA-256")
    r = srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lambda u, a: stored(real))
    assert r.ok is ok


# --------------------------------------------------------------------------- nonce checks


def test_expired_nonce_is_stale_only_with_right_password() -> None:
    srv = server(nonce_lifetime=30.0)
    _, good = creds_for(srv)
    _, bad = creds_for(srv, "alice", "wrong")
    _, ghost = creds_for(srv, "nobody", "x")
    later = T0 + 30.5
    assert check(srv, good, now=T0 + 29.9) is Verdict.OK
    r = srv.verify(good, method="REGISTER", now=later, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.STALE, "nonce-expired")
    assert check(srv, bad, now=later) is Verdict.INVALID
    assert check(srv, ghost, now=later) is Verdict.INVALID


def test_nonce_from_the_future_is_stale() -> None:
    srv = server()
    _, c = creds_for(srv, now=T0 + 3600)
    assert check(srv, c, now=T0) is Verdict.STALE
    _, c2 = creds_for(srv, now=T0 + 2)  # within the small tolerance
    assert check(srv, c2, now=T0) is Verdict.OK


def _flip(s: str, i: int) -> str:
    return s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1 :]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: _flip(n, 0),  # instance id
        lambda n: _flip(n, 7),  # timestamp
        lambda n: _flip(n, 19),  # counter
        lambda n: _flip(n, 30),  # mac
        lambda n: _flip(n, 47),
        lambda n: n[:-1],
        lambda n: n + "A",
        lambda n: n[:-2] + "==",
        lambda n: "!" * 48,
        lambda n: "\u00e9" * 48,
        lambda n: "",
        lambda n: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
    ],
)
def test_tampered_nonce_invalid(mutate: Callable[[str], str]) -> None:
    srv = server()
    cl = DigestClient("alice", USERS["alice"])
    ch = parse_challenge(srv.challenge(T0)[0])
    assert ch is not None
    forged = replace(ch, nonce=mutate(ch.nonce))
    c = parse_credentials(cl.authorize(forged, "REGISTER", URI))
    assert c is not None  # a correct response over a forged nonce
    r = srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.INVALID, "nonce-invalid")


def test_nonce_from_other_secret_or_realm_invalid() -> None:
    other_secret = DigestServer(REALM, b"x" * 32, instance_id=b"\x01\x02\x03\x04")
    _, c = creds_for(other_secret)
    assert check(server(), c) is Verdict.INVALID
    other_realm = DigestServer("other.example.com", SECRET, instance_id=b"\x01\x02\x03\x04")
    nonce = parse_challenge(other_realm.challenge(T0)[0])
    assert nonce is not None
    cl = DigestClient("alice", USERS["alice"])
    ch = parse_challenge(server().challenge(T0)[0])
    assert ch is not None
    c2 = parse_credentials(cl.authorize(replace(ch, nonce=nonce.nonce), "REGISTER", URI))
    assert c2 is not None and check(server(), c2) is Verdict.INVALID


def test_realm_mismatch_invalid() -> None:
    srv = server()
    cl = DigestClient("alice", USERS["alice"])
    ch = parse_challenge(srv.challenge(T0)[0])
    assert ch is not None
    c = parse_credentials(cl.authorize(replace(ch, realm="evil.example.com"), "REGISTER", URI))
    assert c is not None
    r = srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.INVALID, "realm-mismatch")


def test_restart_makes_old_nonces_stale() -> None:
    old = server(instance_id=b"\x00\x00\x00\x01")
    _, good = creds_for(old)
    _, bad = creds_for(old, "alice", "wrong")
    new = server(instance_id=b"\x00\x00\x00\x02")  # same secret, new process
    r = new.verify(good, method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.STALE, "nonce-from-other-instance")
    assert check(new, bad) is Verdict.INVALID


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"algorithm": "MD5"}, "algorithm-not-offered"),
        ({"algorithm": "SHA-1"}, "algorithm-not-offered"),
        ({"qop": "auth-int"}, "qop-not-supported"),
        ({"qop": None, "nc": None, "cnonce": None}, "qop-not-supported"),
        ({"userhash": True}, "userhash-not-supported"),
        ({"opaque": "bm90LW91cnM"}, "opaque-mismatch"),
        ({"nc": "00000000"}, "nonce-count-invalid"),
        ({"nc": "zzzzzzzz"}, "nonce-count-invalid"),
        ({"response": "\u00e9" * 64}, "bad-credentials"),
        ({"response": "0" * 64}, "bad-credentials"),
    ],
)
def test_invalid_parameters(change: dict[str, object], reason: str) -> None:
    srv = server(algorithms=("SHA-256",))
    _, c = creds_for(srv)
    bad = replace(c, **change)  # type: ignore[arg-type]
    r = srv.verify(bad, method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.INVALID, reason)


def test_opaque_may_be_omitted_and_response_case_insensitive() -> None:
    srv = server()
    _, c = creds_for(srv)
    assert check(srv, replace(c, opaque=None, response=c.response.upper())) is Verdict.OK


def test_no_qop_only_when_allowed() -> None:
    challenge_no_qop = 'Digest realm="{}", nonce="{}", algorithm=MD5'
    for allow, expected in ((False, Verdict.INVALID), (True, Verdict.OK)):
        srv = server(allow_no_qop=allow, algorithms=("MD5", "MD5-sess"))
        ch = parse_challenge(srv.challenge(T0)[0])
        assert ch is not None
        hdr = DigestClient("alice", USERS["alice"]).authorize(
            challenge_no_qop.format(REALM, ch.nonce), "REGISTER", URI
        )
        c = parse_credentials(hdr)
        assert c is not None and c.qop is None
        assert check(srv, c) is expected
        if allow:  # no nonce-count → no replay defence beyond the lifetime (documented)
            assert check(srv, c) is Verdict.OK
            assert check(srv, replace(c, algorithm="MD5-sess")) is Verdict.INVALID


# --------------------------------------------------------------------------- replay


def test_nc_replay_and_retransmission() -> None:
    srv = server()
    challenge = srv.challenge(T0)[0]
    cl = DigestClient("alice", USERS["alice"])
    c1 = parse_credentials(cl.authorize(challenge, "REGISTER", URI))
    c2 = parse_credentials(cl.authorize(challenge, "REGISTER", URI))
    assert c1 is not None and c2 is not None
    k1, k2 = "call-1 1 REGISTER", "call-1 2 REGISTER"
    steps = [
        (c1, k1, Verdict.OK, "ok"),
        (c1, k1, Verdict.OK, "retransmission"),  # UDP retransmission: same nonce, nc, key
        (c1, k1, Verdict.OK, "retransmission"),
        (c1, "call-9 1 REGISTER", Verdict.REPLAY, "nonce-count-replay"),
        (c1, None, Verdict.REPLAY, "nonce-count-replay"),
        (c2, k2, Verdict.OK, "ok"),
        (c2, k2, Verdict.OK, "retransmission"),
        (c1, k1, Verdict.REPLAY, "nonce-count-replay"),  # older nc, even with its own key
        (c2, None, Verdict.REPLAY, "nonce-count-replay"),
    ]
    for c, key, verdict, reason in steps:
        r = srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lookup, retransmission_key=key)
        assert (r.verdict, r.reason) == (verdict, reason), (c.nc, key)


def test_replay_without_key_is_rejected() -> None:
    srv = server()
    _, c = creds_for(srv)
    assert check(srv, c) is Verdict.OK
    assert check(srv, c) is Verdict.REPLAY


def test_first_use_may_skip_nc() -> None:
    srv = server()
    _, c = creds_for(srv)
    c5 = replace(c, nc="00000005")
    # Recompute the response for nc=5 (the client lost four requests in the network).
    h1 = ha1("alice", REALM, USERS["alice"], c.algorithm)
    resp = compute_response(
        ha1=h1, algorithm=c.algorithm, method="REGISTER", uri=URI, nonce=c.nonce,
        qop="auth", nc="00000005", cnonce=c.cnonce,
    )  # fmt: skip
    assert check(srv, replace(c5, response=resp)) is Verdict.OK
    assert check(srv, c) is Verdict.REPLAY  # nc=1 after nc=5


def test_eviction_forgets_safely() -> None:
    srv = server(max_tracked_nonces=2)
    old_unused = creds_for(srv)[1]  # counter 1, never presented before eviction
    used = [creds_for(srv)[1] for _ in range(3)]  # counters 2, 3, 4
    for c in used:
        assert check(srv, c) is Verdict.OK
    assert srv.tracked_nonces == 2  # counter 2 was evicted (FIFO by first use)
    # The evicted nonce must never be accepted again, not even at nc=1.
    r = srv.verify(used[0], method="REGISTER", now=T0, ha1_lookup=lookup)
    assert (r.verdict, r.reason) == (Verdict.STALE, "nonce-forgotten")
    # An older, never-used nonce is below the watermark: one extra STALE round trip.
    assert check(srv, old_unused) is Verdict.STALE
    # Tracked ones keep their state; newer unused nonces are fine.
    assert check(srv, used[2]) is Verdict.REPLAY
    fresh = creds_for(srv)[1]
    assert check(srv, fresh) is Verdict.OK
    assert srv.tracked_nonces == 2
    # The client recovers transparently with a stale=true challenge.
    _, again = creds_for(srv)
    assert check(srv, again) is Verdict.OK


def test_failed_attempts_are_not_tracked() -> None:
    srv = server(max_tracked_nonces=1)
    _, good = creds_for(srv)
    assert check(srv, good) is Verdict.OK
    for _ in range(5):  # attackers without the password cannot flush the table
        _, bad = creds_for(srv, "alice", "wrong")
        assert check(srv, bad) is Verdict.INVALID
    assert srv.tracked_nonces == 1
    assert check(srv, good) is Verdict.REPLAY


def test_tracking_memory_is_bounded() -> None:
    srv = server(max_tracked_nonces=50)
    cl = DigestClient("alice", USERS["alice"])
    for _ in range(200):
        _, c = creds_for(srv, client=cl)
        assert check(srv, c) is Verdict.OK
    assert srv.tracked_nonces == 50 and len(srv._order) == 50


# --------------------------------------------------------------------------- parsing


GOOD = (
    'Digest username="bob", realm="biloxi.com", nonce="dcd98b", uri="sip:bob@biloxi.com",'
    ' response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b",'
    ' opaque="5ccc", qop=auth, nc=00000001'
)
BASE = DigestCredentials(
    username="bob",
    realm="biloxi.com",
    nonce="dcd98b",
    uri="sip:bob@biloxi.com",
    response="6629fae49393a05397450978507c4ef1",
    algorithm="MD5",
    cnonce="0a4f113b",
    nc="00000001",
    qop="auth",
    opaque="5ccc",
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (GOOD, BASE),
        # Scheme and parameter names are case-insensitive; algorithm canonicalised.
        (GOOD.replace("Digest", "dIGEST").replace("username", "UserName"), BASE),
        (GOOD.replace("algorithm=MD5", "algorithm=sha-256"), replace(BASE, algorithm="SHA-256")),
        (
            GOOD.replace("algorithm=MD5", 'algorithm="MD5-SESS"'),
            replace(BASE, algorithm="MD5-sess"),
        ),
        (GOOD.replace("algorithm=MD5", "algorithm=SHA-1"), replace(BASE, algorithm="SHA-1")),
        (GOOD.replace(" algorithm=MD5,", ""), BASE),  # default MD5
        # LWS around '=' and ',', folded lines, empty list elements, leading/trailing junk.
        (GOOD.replace(", ", " ,\r\n\t").replace("=", " = "), BASE),
        ("  " + GOOD.replace(", ", ",,, ") + " , ", BASE),
        # Quoted values with escapes; token forms where quoted is required.
        (GOOD.replace('"bob"', r'"b\"o\\b\x"'), replace(BASE, username='b"o\\bx')),
        (GOOD.replace("qop=auth", 'qop="auth"'), BASE),
        (GOOD.replace('"dcd98b"', "dcd98b"), BASE),
        (
            GOOD.replace('"bob"', '"J\u00e4s\u00f8n Doe"'),
            replace(BASE, username="J\u00e4s\u00f8n Doe"),
        ),
        (GOOD.replace('"bob"', '""'), replace(BASE, username="")),
        # RFC 8187 username*.
        (
            GOOD.replace('username="bob"', "username*=UTF-8''J%C3%A4s%C3%B8n%20Doe"),
            replace(BASE, username="J\u00e4s\u00f8n Doe"),
        ),
        (
            GOOD.replace('username="bob"', "username*=iso-8859-1'en'J%E4s%F8n"),
            replace(BASE, username="J\u00e4s\u00f8n"),
        ),
        (GOOD + ", userhash=TRUE", replace(BASE, userhash=True)),
        (GOOD + ', userhash="false", foo=bar, x-ext="y"', BASE),
        # No qop (RFC 2069 style) parses; the server decides whether to accept it.
        (
            'Digest username="bob", realm="r", nonce="n", uri="u", response="abc"',
            DigestCredentials("bob", "r", "n", "u", "abc"),
        ),
        # Not Digest, or malformed → None.
        ("", None),
        ("Digest", None),
        ("Digest ", None),
        ('Digestusername="bob"', None),
        ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", None),
        ("Digest ,,, ", None),
        (GOOD + ', username="eve"', None),  # duplicate
        (GOOD + ', USERNAME="eve"', None),  # duplicate, other case
        (GOOD.replace('username="bob"', "username=\"bob\", username*=UTF-8''bob"), None),
        (GOOD.replace('username="bob"', "username*=UTF-7''bob"), None),
        (GOOD.replace('username="bob"', "username*=UTF-8''%FF"), None),
        (GOOD.replace('username="bob"', "username*=UTF-8''a%0Db"), None),
        (GOOD.replace('username="bob"', "username*=bob"), None),
        (GOOD.replace('username="bob", ', ""), None),  # missing required
        (GOOD.replace(' response="6629fae49393a05397450978507c4ef1",', ""), None),
        (GOOD.replace('response="6629fae49393a05397450978507c4ef1"', 'response=""'), None),
        (GOOD.replace(' cnonce="0a4f113b",', ""), None),  # qop without cnonce
        (GOOD.replace(", nc=00000001", ""), None),  # qop without nc
        (GOOD.replace("nc=00000001", "nc=1"), None),
        (GOOD.replace("nc=00000001", "nc=0000000g"), None),
        (GOOD.replace('"bob"', '"bob'), None),  # unterminated
        (GOOD.replace('"bob"', '"b\r\nVia: x"'), None),  # header injection
        (GOOD.replace('"bob"', '"b\x00"'), None),
        (GOOD.replace('"bob"', '"b\\\n"'), None),
        (GOOD.replace('"bob"', 'bob"x"'), None),
        (GOOD.replace("qop=auth", "qop=auth auth"), None),
        (GOOD.replace("qop=auth", "qop="), None),
        (GOOD + ", userhash=maybe", None),
        (GOOD + ", =x", None),
        (GOOD + ", foo", None),
        (GOOD + ' "trailing"', None),
        (GOOD + ", x=" + "a" * 9000, None),  # too long
        ("Digest " + ", ".join(f"p{i}=v" for i in range(65)) + ', username="a"', None),
    ],
)
def test_parse_credentials_table(header: str, expected: DigestCredentials | None) -> None:
    assert parse_credentials(header) == expected


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    for candidate in (text, "Digest " + text, GOOD + text, GOOD[: len(text) % len(GOOD)] + text):
        parse_credentials(candidate)
        parse_challenge(candidate)


_PIECES = st.sampled_from(
    ['"', "\\", ",", "=", " ", "\r\n ", "Digest", "username", "nc", "qop", "auth", "*", "'",
     "%", "realm", "\u00e9", "\x00", "00000001", "nonce", "uri", "response"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=40))
def test_parse_never_raises_on_near_miss(pieces: list[str]) -> None:
    s = "".join(pieces)
    c = parse_credentials("Digest " + s)
    if c is not None:
        srv = server()
        assert srv.verify(c, method="REGISTER", now=T0, ha1_lookup=lookup).verdict in Verdict


@settings(max_examples=150, deadline=None)
@given(
    user=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20),
    password=st.text(max_size=20),
    uri=st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30),
    algorithm=st.sampled_from(SUPPORTED_ALGORITHMS),
)
def test_round_trip_arbitrary_identities(
    user: str, password: str, uri: str, algorithm: str
) -> None:
    srv = server(algorithms=(algorithm,))
    cl = DigestClient(user, password)
    hdr = cl.authorize(srv.challenge(T0)[0], "REGISTER", uri)
    c = parse_credentials(hdr)
    assert c is not None and (c.username, c.uri) == (user, uri)
    ok = srv.verify(
        c, method="REGISTER", now=T0, ha1_lookup=lambda u, a: ha1(user, REALM, password, a)
    )
    assert ok.verdict is Verdict.OK
    wrong = srv.verify(
        c, method="REGISTER", now=T0, ha1_lookup=lambda u, a: ha1(user, REALM, password + "x", a)
    )
    assert wrong.verdict is Verdict.INVALID


def test_verify_survives_surrogates() -> None:
    srv = server()
    _, c = creds_for(srv)
    weird = replace(c, username="\udcff", uri="\ud800", cnonce="\udc80")
    assert check(srv, weird) is Verdict.INVALID


# --------------------------------------------------------------------------- client


def _ch(alg: str, qop: str | None = '"auth"', realm: str = "r", extra: str = "") -> str:
    q = "" if qop is None else f", qop={qop}"
    return f'Digest realm="{realm}", nonce="n-{alg}", algorithm={alg}{q}{extra}'


@pytest.mark.parametrize(
    ("challenges", "expected"),
    [
        ([_ch("MD5"), _ch("SHA-256")], 1),
        ([_ch("SHA-256"), _ch("MD5")], 0),
        ([_ch("MD5"), _ch("SHA-256", qop='"auth-int"')], 0),  # auth-int only: unusable
        ([_ch("SHA-1"), _ch("MD5")], 1),
        (['Basic realm="r"', "garbage", _ch("MD5")], 2),
        ([_ch("MD5", qop=None)], 0),  # RFC 2069 server
        ([_ch("MD5-sess", qop=None)], None),  # -sess needs qop
        ([_ch("SHA-1"), 'Basic realm="r"'], None),
        ([], None),
        ([_ch("MD5", qop='"auth-int, AUTH"')], 0),
    ],
)
def test_client_choose(challenges: list[str], expected: int | None) -> None:
    got = DigestClient("u", "p").choose(challenges)
    assert got == (None if expected is None else challenges[expected])


@pytest.mark.skipif(not HAS_SHA512_256, reason="hashlib lacks sha512_256")
def test_client_choose_prefers_sha512_256_and_honours_preferences() -> None:
    chs = [_ch("MD5"), _ch("SHA-512-256"), _ch("SHA-256")]
    assert DigestClient("u", "p").choose(chs) == chs[1]
    assert DigestClient("u", "p", algorithms=["sha-256", "MD5"]).choose(chs) == chs[2]


def test_client_realm_restriction_and_errors() -> None:
    cl = DigestClient("u", "p", realm="trunk.example")
    assert cl.choose([_ch("MD5", realm="elsewhere")]) is None
    with pytest.raises(DigestError):
        cl.authorize(_ch("MD5", realm="elsewhere"), "REGISTER", "sip:x")
    with pytest.raises(DigestError):
        cl.authorize("Basic realm=x", "REGISTER", "sip:x")
    with pytest.raises(DigestError):
        cl.authorize(_ch("MD5", realm="trunk.example"), "REGISTER", "sip:x\r\nVia: evil")
    with pytest.raises(ValueError):
        DigestClient("u\r\n", "p")
    with pytest.raises(ValueError):
        DigestClient("u", "p", algorithms=["SHA-1"])
    with pytest.raises(DigestError):
        compute_response(ha1="0" * 32, algorithm="MD5-sess", method="A", uri="b", nonce="n")
    with pytest.raises(DigestError):
        compute_response(ha1="0" * 32, algorithm="MD5", method="A", uri="b", nonce="n", qop="auth")


def test_client_nc_per_nonce_is_bounded() -> None:
    cl = DigestClient("u", "p", max_nonces=2)
    ncs = []
    for nonce in ["a", "b", "a", "c", "b", "a"]:
        c = parse_credentials(
            cl.authorize(f'Digest realm="r", nonce="{nonce}", qop="auth"', "REGISTER", "sip:r")
        )
        assert c is not None
        ncs.append(c.nc)
    # "b" is forgotten when "c" arrives (a was used more recently), "a" after "b" returns.
    assert ncs == ["00000001", "00000001", "00000002", "00000001", "00000001", "00000001"]


def test_client_userhash_and_no_qop_format() -> None:
    cl = DigestClient("Mufasa", "Circle of Life")
    hdr = cl.authorize(_ch("SHA-256", extra=", userhash=true"), "REGISTER", "sip:r")
    c = parse_credentials(hdr)
    assert c is not None and c.userhash
    assert c.username == userhash("Mufasa", "r", "SHA-256")
    hdr2 = cl.authorize(_ch("MD5", qop=None, extra=', opaque="o"'), "REGISTER", "sip:r")
    assert hdr2.startswith('Digest username="Mufasa", realm="r", nonce="n-MD5", uri="sip:r"')
    assert "qop" not in hdr2 and "nc=" not in hdr2 and "cnonce" not in hdr2
    assert hdr2.endswith('algorithm=MD5, opaque="o"')


def test_parse_challenge_fields() -> None:
    ch = parse_challenge(
        'Digest realm="a\\"b", domain="sip:x sip:y", nonce="n", opaque="o", stale=TRUE,'
        ' algorithm=sha-512-256, qop="auth-int , auth", userhash=true'
    )
    assert ch == DigestChallenge(
        realm='a"b',
        nonce="n",
        algorithm="SHA-512-256",
        qop=("auth-int", "auth"),
        opaque="o",
        stale=True,
        userhash=True,
        domain="sip:x sip:y",
    )
    assert parse_challenge('Digest realm="r"') is None
    assert parse_challenge('Digest nonce="n"') is None
