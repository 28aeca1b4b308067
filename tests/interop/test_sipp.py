"""SIPp (Debian sip-tester) against a running edgepbx-agent, over UDP and TCP.

Each test starts its own agent on fresh state and random free ports on 127.0.0.1, runs
one scenario from scenarios/ and then asks the agent itself, through `edgepbx phones
--json`, whether the registrar ended up where the SIP answers said it did.
"""

from __future__ import annotations

import pytest
from conftest import LOOPBACK, bound_users, make_users

TRANSPORTS = ["udp", "tcp"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_answered_with_allow_and_supported(agent_factory, sipp, transport):
    agent = agent_factory(make_users(1))
    sipp.expect_success("options.xml", agent.port, transport=transport, calls=3)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_digest_register_creates_bindings(agent_factory, sipp, transport):
    users = make_users(3)
    agent = agent_factory(users)
    sipp.expect_success("register.xml", agent.port, users=users, transport=transport,
                        expires=600)

    phones = agent.phones()
    assert bound_users(phones) == {u.username for u in users}, phones
    for entry in phones:
        assert entry["source_transport"].lower() == transport, entry
        assert entry["source_host"] == LOOPBACK, entry
        assert 0 < entry["expires_in"] <= 600, entry
        assert "SIPp" in (entry.get("user_agent") or ""), entry


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_refresh_unregister(agent_factory, sipp, transport):
    users = make_users(2)
    agent = agent_factory(users)
    # The scenario checks every 200: contact listed after REGISTER and re-REGISTER,
    # no contact listed after the Expires: 0 REGISTER.
    sipp.expect_success("reg_lifecycle.xml", agent.port, users=users, transport=transport)
    assert agent.phones() == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wildcard_unregister(agent_factory, sipp, transport):
    users = make_users(2)
    agent = agent_factory(users)
    sipp.expect_success("reg_wildcard.xml", agent.port, users=users, transport=transport)
    assert agent.phones() == []


def test_wrong_password_is_not_registered(agent_factory, sipp):
    users = make_users(2)
    agent = agent_factory(users)
    impostors = [
        type(u)(u.id, u.name, u.extension, u.username, u.password + "-wrong") for u in users
    ]
    result = sipp.run("register.xml", agent.port, users=impostors, timeout=10)
    # The second REGISTER is challenged again rather than answered 200: every call fails.
    assert result.returncode != 0, result.explain()
    assert "200 OK" not in result.messages.split("CSeq: 2 REGISTER")[-1]
    assert agent.phones() == []


def test_bindings_survive_agent_restart(agent_factory, sipp):
    users = make_users(3)
    agent = agent_factory(users)
    sipp.expect_success("register.xml", agent.port, users=users, expires=900)
    before = {(p["aor"], p["contact"]) for p in agent.phones()}
    assert len(before) == 3

    agent.restart()
    after = {(p["aor"], p["contact"]) for p in agent.phones()}
    assert after == before
