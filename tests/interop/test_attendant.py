"""The auto attendant end to end: a SIPp caller dials the attendant's number, hears its
greeting (the agent answers with media), presses 1 as an RFC 4733 event (a pcap Debian's
sip-tester ships), and is blind-transferred to a registered SIPp extension: the
extension is rung without SDP, answers with an offer, and the agent re-INVITEs the
caller with it; then the two talk, and the caller hangs up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, make_users

from interop.test_assigner import PCAPS, prompts  # noqa: F401 - a fixture
from interop.test_sipp_calls import (
    Phones,
    caller_injection,
    requests,
    site_extra,
    wait_idle,
)

ATTENDANT_NUMBER = "5000"


def test_a_caller_picks_an_option_and_is_transferred(
        agent_factory: Any, sipp: Any, prompts: None, tmp_path: Path) -> None:  # noqa: F811
    if not (PCAPS / "dtmf_2833_1.pcap").exists():
        pytest.fail("sip-tester's DTMF pcaps are missing; `make deps` installs them")
    caller, callee = make_users(2, first_extension=201)
    attendant = {
        "name": "main", "number": ATTENDANT_NUMBER, "open_menu": "main",
        "menus": [{"name": "main", "greeting": ["att_welcome", "att_operator"],
                   "options": {"1": {"type": "extension", "value": callee.extension}}}],
    }
    agent = agent_factory([caller, callee],
                          site_extra=site_extra([caller, callee], attendants=[attendant]))
    phones = Phones(sipp, agent)
    uas = phones.callee(callee, timeout=30)

    inf = caller_injection(tmp_path / "caller.csv", caller, ATTENDANT_NUMBER)
    result = sipp.run("attendant_uac.xml", agent.port, calls=1, timeout=30,
                      extra=[*inf, "-mp", str(free_port())])
    assert result.returncode == 0, result.explain()
    answered = uas.wait(timeout=15)
    assert answered.returncode == 0, answered.explain()

    # The extension was rung with a delayed offer, and the caller got its offer.
    [invite] = requests(answered.messages, "INVITE")
    assert "content-length: 0" in invite.lower(), invite
    [reinvite] = requests(result.messages, "INVITE")
    assert "m=audio" in reinvite, reinvite

    wait_idle(agent)
    records = sorted(agent.cdr(), key=lambda r: r["start"])
    assert [(r["caller"], r["callee"], r["disposition"], r["cause"]) for r in records] == [
        (caller.extension, "attendant", "answered", "transferred"),
        (caller.extension, callee.extension, "answered", "caller-bye"),
    ], records
