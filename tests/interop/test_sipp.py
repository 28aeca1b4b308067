"""SIPp (Debian sip-tester) against a running edgepbx-agent, over UDP and TCP.

Each test starts its own agent on fresh state and random free ports on 127.0.0.1, runs
one scenario from scenarios/ and then asks the agent itself, through `edgepbx phones
--json`, whether the registrar ended up where the SIP answers said it did.

Debian's SIPp 3.6.1 answers only the first WWW-Authenticate of a 401 and only knows MD5
(it aborts with "authentication must use MD5 or AKAv1-MD5" on a SHA-256 challenge), so
these sites offer MD5 only, the setting meant for such phones. The default challenge
order (SHA-256 first) is checked on the wire by test_default_challenge_order below.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from conftest import LOOPBACK, bound_users, free_port, make_users, source_of

TRANSPORTS = ["udp", "tcp"]
MD5_ONLY = {"sip": {"digest_algorithms": ["MD5"]}}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_answered_with_allow_and_supported(agent_factory, sipp, transport):
    agent = agent_factory(make_users(1))
    sipp.expect_success("options.xml", agent.port, transport=transport, calls=3)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_digest_register_creates_bindings(agent_factory, sipp, transport):
    users = make_users(3)
    agent = agent_factory(users, site_extra=MD5_ONLY)
    sipp.expect_success("register.xml", agent.port, users=users, transport=transport,
                        expires=600)

    phones = agent.phones()
    assert bound_users(phones) == {u.extension for u in users}, phones
    for entry in phones:
        assert entry["transport"].lower() == transport, entry
        assert source_of(entry)[0] == LOOPBACK, entry
        assert 0 < entry["expires_in"] <= 600, entry
        assert entry["user_agent"] == "SIPp-edgepbx-tests", entry


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_refresh_unregister(agent_factory, sipp, transport):
    users = make_users(2)
    agent = agent_factory(users, site_extra=MD5_ONLY)
    # The scenario checks every 200: contact listed after REGISTER and re-REGISTER,
    # no contact listed after the Expires: 0 REGISTER.
    sipp.expect_success("reg_lifecycle.xml", agent.port, users=users, transport=transport)
    assert agent.phones() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wildcard_unregister(agent_factory, sipp, transport):
    users = make_users(2)
    agent = agent_factory(users, site_extra=MD5_ONLY)
    sipp.expect_success("reg_wildcard.xml", agent.port, users=users, transport=transport)
    assert agent.phones() == []


def test_wrong_password_is_not_registered(agent_factory, sipp):
    users = make_users(2)
    agent = agent_factory(users, site_extra=MD5_ONLY)
    impostors = [
        type(u)(u.id, u.name, u.extension, u.username, u.password + "-wrong") for u in users
    ]
    result = sipp.run("register.xml", agent.port, users=impostors, timeout=10)
    # The second REGISTER is challenged again (or refused) instead of answered 200.
    assert result.returncode == 1, result.explain()
    assert "while expecting '200'" in result.errors, result.explain()
    assert agent.phones() == []


def test_bindings_survive_agent_restart(agent_factory, sipp):
    users = make_users(3)
    agent = agent_factory(users, site_extra=MD5_ONLY)
    sipp.expect_success("register.xml", agent.port, users=users, expires=900)
    before = {(p["user"], p["contact"], p["source"]) for p in agent.phones()}
    assert len(before) == 3

    agent.restart()
    after = {(p["user"], p["contact"], p["source"]) for p in agent.phones()}
    assert after == before


def test_default_challenge_order(agent_factory):
    """Without the MD5-only setting the 401 offers SHA-256 first, then MD5 (RFC 8760)."""
    user = make_users(1)[0]
    agent = agent_factory([user])
    lport = free_port()
    branch = "z9hG4bK-" + uuid.uuid4().hex[:16]
    request = (
        f"REGISTER sip:{LOOPBACK} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{lport};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user.username}@{LOOPBACK}>;tag=t{uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{user.username}@{LOOPBACK}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user.username}@{LOOPBACK}:{lport}>\r\n"
        "Expires: 600\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, lport))
        sock.settimeout(5)
        sock.sendto(request, (LOOPBACK, agent.port))
        answer = sock.recv(65535).decode("latin-1")
    assert answer.startswith("SIP/2.0 401 "), answer
    challenges = [line.split(":", 1)[1] for line in answer.split("\r\n")
                  if line.lower().startswith("www-authenticate:")]
    algorithms = [c.split("algorithm=", 1)[1].split(",", 1)[0].strip().strip('"').upper()
                  for c in challenges]
    assert algorithms[:2] == ["SHA-256", "MD5"], answer
