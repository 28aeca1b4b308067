"""Message waiting indication to a real phone: baresip 1.0 with its ``mwi`` module.

baresip registers as user B and, once registered, SUBSCRIBEs to ``message-summary`` for
its own account (RFC 3842). The agent challenges the SUBSCRIBE (407), accepts it and
NOTIFYs at once: the phone hears "no messages" and ``edgepbx status`` counts the
subscription. Then:

1. SIPp calls B as A. The phone rings but does not answer (``answermode=manual``);
   after B's ``forward.no_answer_timeout`` (5 s, the least allowed) the call goes to
   B's mailbox and SIPp speaks sip-tester's g711a.pcap. The agent NOTIFYs inside the
   subscription: ``Messages-Waiting: yes``, ``Voice-Message: 1/0 (0/0)``.
2. SIPp calls *97 as B, keys in the PIN (set by the test through the voicemail store),
   1 to listen and 3 to delete. The phone is told ``Messages-Waiting: no``, ``0/0``.

What the phone got is checked on the phone's side: baresip's mwi module raises a
``MWI_NOTIFY`` event (on ctrl_tcp) with the NOTIFY body for every NOTIFY it accepts in
its subscription.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    LOOPBACK,
    REALM,
    AgentProcess,
    SiteUser,
    bound_users,
    free_port,
    make_users,
)

from agent.store import Store
from agent.voicemail import VoicemailStore
from interop.test_assigner import prompts  # noqa: F401 - the fixture
from interop.test_baresip_call import BaresipProcess, baresip_processes, wait_for

MODULE_DIR = Path("/usr/lib/baresip/modules")
MODULES = ("g711.so",)
# menu: `accept`/`hangup` and the incoming-call handling; mwi: the subscription.
APP_MODULES = ("account.so", "menu.so", "ctrl_tcp.so", "mwi.so")
PCAPS = Path("/usr/share/sip-tester")
PIN = "2468"  # the PIN vm_menu_uac.xml keys in
NO_ANSWER_TIMEOUT = 5  # seconds; the site schema's minimum


class MwiPhone(BaresipProcess):
    """A headless baresip registered as one user, subscribed to its mailbox, never
    answering by itself."""

    def __init__(self, binary: str, confdir: Path, user: SiteUser, agent_port: int) -> None:
        self.user = user
        self.ctrl_port = free_port()
        self.sip_port = free_port()
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t{LOOPBACK}:{self.sip_port}",
            f"net_interface\t\t{LOOPBACK}",
            # No audio module at all: a ringing call needs no sound card.
            "audio_player\t\taufile,/dev/null",
            "audio_alert\t\taufile,/dev/null",
            "statmode_default\toff",
            f"ctrl_tcp_listen\t\t{LOOPBACK}:{self.ctrl_port}",
            f"module_path\t\t{MODULE_DIR}",
            *[f"module\t\t\t{m}" for m in MODULES],
            *[f"module_app\t\t{m}" for m in APP_MODULES],
            "",
        ]
        (confdir / "config").write_text("\n".join(lines), encoding="ascii")
        account = (
            f"<sip:{user.username}@{LOOPBACK}:{agent_port};transport=udp>"
            f";auth_pass={user.password};regint=600;answermode=manual;mwi=yes\n"
        )
        # Added with `uanew` once running (see add_account), not from the accounts file.
        self.account = account.strip()
        (confdir / "accounts").write_text("", encoding="ascii")
        (confdir / "contacts").write_text("", encoding="ascii")
        self._launch(binary, confdir)

    def add_account(self) -> None:
        """Create the user agent, which then registers and (on REGISTER_OK) subscribes.

        Not from the accounts file: baresip 1.0's mwi module re-subscribes everything in
        its list from a one-shot timer armed at module load (1 ms), iterating a list that
        mwi_subscribe() appends to. When the REGISTER's 200 is handled before that timer
        fires (a fast registrar on loopback), the loop never ends: tens of thousands of
        SUBSCRIBEs a second. Adding the account after the timer has run avoids it."""
        assert self.ctrl is not None
        time.sleep(0.3)
        reply = self.ctrl.command("uanew", self.account)
        assert reply.get("ok"), (reply, self.log()[-3000:])

    def events(self, kind: str) -> list[dict[str, Any]]:
        assert self.ctrl is not None
        return [e for e in list(self.ctrl.seen) if e.get("event") and e.get("type") == kind]

    def mwi_bodies(self) -> list[str]:
        """The bodies of the NOTIFYs the mwi module accepted, in order."""
        return [str(e.get("param", "")) for e in self.events("MWI_NOTIFY")]


@pytest.fixture
def mwi_phone() -> Iterator[Callable[[SiteUser, int], MwiPhone]]:
    with baresip_processes("bmwi-", (*MODULES, *APP_MODULES), MODULE_DIR) as launch:

        def start(user: SiteUser, agent_port: int) -> MwiPhone:
            return launch(lambda binary, confdir: MwiPhone(binary, confdir, user, agent_port),
                          MwiPhone.add_account)

        yield start


def _fields(body: str) -> dict[str, str]:
    out = {}
    for line in body.replace("\r\n", "\n").split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            out[name.strip().lower()] = value.strip()
    return out


def _inf(path: Path, user: SiteUser, number: str) -> list[str]:
    path.write_text(f"SEQUENTIAL\n{user.username};[authentication username={user.username} "
                    f"password={user.password}];{number}\n")
    return ["-inf", str(path)]


def test_baresip_subscribes_and_sees_its_messages_waiting_come_and_go(
        agent_factory: Callable[..., AgentProcess], mwi_phone: Callable[..., MwiPhone],
        sipp: Any, prompts: None, tmp_path: Path) -> None:  # noqa: F811
    for pcap in ("g711a.pcap", "dtmf_2833_pound.pcap"):
        if not (PCAPS / pcap).exists():
            pytest.fail(f"sip-tester's {pcap} is missing; `make deps` installs it")
    caller, owner = make_users(2, first_extension=2100)
    agent = agent_factory(
        [caller, owner], transports=("udp",),
        site_extra={"sip": {"digest_algorithms": ["MD5"]},
                    "users": [caller.as_site_entry(),
                              {**owner.as_site_entry(),
                               "forward": {"no_answer_timeout": NO_ANSWER_TIMEOUT}}]},
    )
    phone = mwi_phone(owner, agent.port)
    mailbox = owner.extension

    def logs() -> str:
        return (f"--- baresip ---\n{phone.log()[-8000:]}\n"
                f"--- MWI_NOTIFY bodies ---\n{phone.mwi_bodies()}\n"
                f"--- agent ---\n{agent.log_tail(80)}")

    def mwi_status() -> dict[str, Any]:
        status = agent.status()
        found = status.get("mwi") or status.get("sip", {}).get("mwi")
        assert isinstance(found, dict), status
        return found

    def notified(waiting: str, voice: str, after: int) -> Callable[[], bool]:
        def check() -> bool:
            assert phone.proc.poll() is None, "baresip exited:\n" + logs()
            return any(
                _fields(b).get("messages-waiting") == waiting
                and _fields(b).get("voice-message") == voice
                for b in phone.mwi_bodies()[after:]
            )
        return check

    # Registered, subscribed, and told at once: nothing waiting.
    wait_for(lambda: bound_users(agent.phones()) == {mailbox}, 20, "baresip to register", logs)
    wait_for(lambda: mwi_status().get("subscriptions") == 1, 15,
             "the agent to hold baresip's message-summary subscription", logs)
    wait_for(notified("no", "0/0 (0/0)", 0), 10, "the initial NOTIFY (no messages)", logs)
    [first] = phone.mwi_bodies()[:1]
    assert _fields(first).get("message-account") == f"sip:{mailbox}@{REALM}", first
    trace = phone.log()
    assert "SUBSCRIBE sip:" in trace and "407 " in trace, "the SUBSCRIBE was not challenged"
    seen = len(phone.mwi_bodies())

    # 1. A calls B: the phone rings, nobody answers, the caller leaves a message.
    result = sipp.run("vm_leave_uac.xml", agent.port, calls=1, timeout=50,
                      extra=[*_inf(tmp_path / "leave.csv", caller, mailbox),
                             "-mp", str(free_port())])
    assert result.returncode == 0, result.explain() + "\n" + logs()
    assert phone.events("CALL_INCOMING"), "the phone never rang\n" + logs()
    assert not phone.events("CALL_ESTABLISHED"), logs()
    store = Store.open(agent.state_dir)
    try:
        vm = VoicemailStore(agent.state_dir, store, recover=False)
        deadline = time.monotonic() + 5  # saved just after the caller's hang-up
        while not vm.list_messages(mailbox) and time.monotonic() < deadline:
            time.sleep(0.1)
        [message] = vm.list_messages(mailbox)
        assert message.folder == "new" and message.reason == "no-answer", message
        wait_for(notified("yes", "1/0 (0/0)", seen), 10,
                 "the phone to be told a message is waiting", logs)
        seen = len(phone.mwi_bodies())

        # 2. B deletes it from the keypad (*97): the lamp goes off.
        vm.set_pin(mailbox, PIN, actor="interop test", role="admin")
        result = sipp.run("vm_menu_uac.xml", agent.port, calls=1, timeout=60,
                          extra=[*_inf(tmp_path / "menu.csv", owner, "*97"),
                                 "-mp", str(free_port())])
        assert result.returncode == 0, result.explain() + "\n" + logs()
        assert vm.list_messages(mailbox) == [], logs()
    finally:
        store.close()
    wait_for(notified("no", "0/0 (0/0)", seen), 10, "the phone to be told: no messages", logs)
    assert mwi_status().get("subscriptions") == 1, logs()
    assert phone.stop() == 0, phone.log()[-4000:]

