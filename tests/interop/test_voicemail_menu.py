"""The mailbox menu (*97) against a real peer: SIPp calls as the mailbox's owner and keys
in DTMF as RFC 4733 events (the pcap files Debian's sip-tester ships).

- A message is left (SIPp speaks g711a.pcap into the mailbox of an unregistered user),
  the test sets the owner's PIN (the voicemail store, from this process, while the agent
  runs), and the owner dials *97: PIN and #, 1 (listen), 3 (delete) while the message
  plays, and hangs up. The mailbox is then empty.
- Wrong PINs: five calls each key in a wrong PIN and hang up; the mailbox is locked
  (``is_locked``, audited once as ``voicemail.locked``), and then even the right PIN
  gets "mailbox locked", goodbye and the agent's BYE.
- A caller who keys in one wrong PIN and hangs up is charged one attempt, not one for
  every prompt the menu would have played after the hang-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import AgentProcess, SiteUser, free_port, make_users

from agent.apps.runtime import HANGUP_GRACE
from agent.store import Store
from agent.voicemail import VoicemailStore
from interop.test_assigner import prompts  # noqa: F401 - the fixture

PCAPS = Path("/usr/share/sip-tester")
PIN = "2468"  # what the scenarios key in as the right PIN; vm_menu_wrong_pin_uac: 1357
OWN_MAILBOX = "*97"
SITE = {"sip": {"digest_algorithms": ["MD5"]}}  # SIPp knows only MD5


def _require_pcaps() -> None:
    missing = [p for p in ("g711a.pcap", "dtmf_2833_pound.pcap") if not (PCAPS / p).exists()]
    if missing:
        pytest.fail(f"sip-tester's pcaps {missing} are missing; `make deps` installs them")


def _inf(path: Path, user: SiteUser, number: str) -> list[str]:
    path.write_text(f"SEQUENTIAL\n{user.username};[authentication username={user.username} "
                    f"password={user.password}];{number}\n")
    return ["-inf", str(path)]


class Mailboxes:
    """The agent's voicemail store, opened from the test (no recovery: the agent owns it)."""

    def __init__(self, agent: AgentProcess) -> None:
        self.store = Store.open(agent.state_dir)
        self.vm = VoicemailStore(agent.state_dir, self.store, recover=False)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def mailboxes() -> object:
    opened: list[Mailboxes] = []

    def open_(agent: AgentProcess) -> Mailboxes:
        box = Mailboxes(agent)
        opened.append(box)
        return box

    yield open_
    for box in opened:
        box.close()


def test_owner_listens_to_and_deletes_a_message_from_the_keypad(
        agent_factory, sipp, prompts, mailboxes, tmp_path: Path) -> None:  # noqa: F811
    _require_pcaps()
    caller, owner = make_users(2, first_extension=201)
    agent = agent_factory([caller, owner], site_extra=SITE)

    # 1. A message: the owner is not registered, so the call goes to the mailbox.
    result = sipp.run("vm_leave_uac.xml", agent.port, calls=1, timeout=40,
                      extra=[*_inf(tmp_path / "leave.csv", caller, owner.extension),
                             "-mp", str(free_port())])
    assert result.returncode == 0, result.explain()
    box = mailboxes(agent)
    deadline = time.monotonic() + 5  # saved just after the caller's hang-up
    while not box.vm.list_messages(owner.extension) and time.monotonic() < deadline:
        time.sleep(0.1)
    [message] = box.vm.list_messages(owner.extension)
    assert message.folder == "new" and message.caller == caller.extension, message

    # 2. The owner's PIN, set as an administrator would.
    box.vm.set_pin(owner.extension, PIN, actor="interop test", role="admin")

    # 3. *97: PIN #, 1 (listen), 3 (delete), hang up.
    result = sipp.run("vm_menu_uac.xml", agent.port, calls=1, timeout=60,
                      extra=[*_inf(tmp_path / "menu.csv", owner, OWN_MAILBOX),
                             "-mp", str(free_port())])
    assert result.returncode == 0, result.explain()

    deadline = time.monotonic() + 5
    while box.vm.list_messages(owner.extension) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert box.vm.list_messages(owner.extension) == [], agent.log_tail(80)
    assert box.vm.counts(owner.extension) == (0, 0)
    assert not box.vm.is_locked(owner.extension)
    assert agent.calls() == []


def test_five_wrong_pins_lock_the_mailbox_and_the_lock_is_audited(
        agent_factory, sipp, prompts, mailboxes, tmp_path: Path) -> None:  # noqa: F811
    _require_pcaps()
    [owner] = make_users(1, first_extension=301)
    agent = agent_factory([owner], site_extra=SITE)
    box = mailboxes(agent)
    box.vm.set_pin(owner.extension, PIN, actor="interop test", role="admin")
    inf = _inf(tmp_path / "menu.csv", owner, OWN_MAILBOX)

    def wrong_pin_calls(n: int) -> None:
        # One call at a time (-l 1): each keys in 1357 # and hangs up during the
        # "not correct" prompt, so each counts exactly one wrong PIN.
        result = sipp.run("vm_menu_wrong_pin_uac.xml", agent.port, calls=n, timeout=30 * n,
                          extra=[*inf, "-l", "1", "-mp", str(free_port())])
        assert result.returncode == 0, result.explain()

    wrong_pin_calls(5)
    assert box.vm.is_locked(owner.extension), agent.log_tail(60)
    [entry] = box.store.audit_entries(action="voicemail.locked")
    assert owner.extension in str(entry.detail), entry

    # Locked: even the right PIN is refused, and the agent hangs up (the scenario
    # expects its BYE after "mailbox locked, goodbye").
    result = sipp.run("vm_menu_locked_uac.xml", agent.port, calls=1, timeout=40,
                      extra=[*inf, "-mp", str(free_port())])
    assert result.returncode == 0, result.explain()
    assert box.vm.is_locked(owner.extension)
    assert len(box.store.audit_entries(action="voicemail.locked")) == 1
    assert agent.calls() == []


def test_one_wrong_pin_and_hang_up_counts_one_attempt(
        agent_factory, sipp, prompts, mailboxes, tmp_path: Path) -> None:  # noqa: F811
    _require_pcaps()
    [owner] = make_users(1, first_extension=401)
    agent = agent_factory([owner], site_extra=SITE)
    box = mailboxes(agent)
    box.vm.set_pin(owner.extension, PIN, actor="interop test", role="admin")
    result = sipp.run("vm_menu_wrong_pin_uac.xml", agent.port, calls=1, timeout=30,
                      extra=[*_inf(tmp_path / "menu.csv", owner, OWN_MAILBOX),
                             "-mp", str(free_port())])
    assert result.returncode == 0, result.explain()
    time.sleep(HANGUP_GRACE + 1)  # what the application may still do after the BYE
    row = box.store.vm_pin(owner.extension)
    assert row is not None and row.failures == 1, row
