"""baresip (Debian baresip-core) as a real softphone against edgepbx-agent.

baresip runs headless: no audio device, no UI module, configured from a private
directory with `-f`. It must register with digest, show up in `edgepbx phones`, and
its binding must still be listed after the agent restarts on the same state directory
(bindings persist in SQLite), without baresip sending anything in between.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    LOOPBACK,
    AgentProcess,
    SiteUser,
    bound_users,
    free_port,
    make_users,
    require_binary,
    short_tempdir,
)

MODULE_DIR = Path("/usr/lib/baresip/modules")
# Long enough that baresip cannot refresh during the test: a binding listed after the
# restart must come from the agent's store, not from a new REGISTER.
REGINT = 3600


def baresip_config(confdir: Path, user: SiteUser, agent_port: int) -> None:
    listen = free_port()
    modules = [m for m in ("g711.so",) if (MODULE_DIR / m).exists()]
    lines = [
        "poll_method\t\tepoll",
        f"sip_listen\t\t{LOOPBACK}:{listen}",
        # Nothing may touch a sound card: CI machines have none.
        "audio_player\t\taufile,/dev/null",
        "audio_source\t\taufile,/dev/null",
        "audio_alert\t\taufile,/dev/null",
        f"module_path\t\t{MODULE_DIR}",
        *[f"module\t\t\t{m}" for m in modules],
        "module_app\t\taccount.so",
        "",
    ]
    (confdir / "config").write_text("\n".join(lines), encoding="ascii")
    account = (
        f"<sip:{user.username}@{LOOPBACK}:{agent_port};transport=udp>"
        f";auth_pass={user.password};regint={REGINT}\n"
    )
    (confdir / "accounts").write_text(account, encoding="ascii")
    (confdir / "contacts").write_text("", encoding="ascii")


class Baresip:
    def __init__(self, binary: str, confdir: Path) -> None:
        self.confdir = confdir
        self.log_path = confdir / "baresip.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # -s traces SIP to the log, which makes a failure readable.
        self.proc = subprocess.Popen(
            [binary, "-f", str(confdir), "-s"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=confdir,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM: baresip unregisters (REGISTER Expires: 0) and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return int(self.proc.returncode)


@pytest.fixture
def baresip_factory() -> Iterator[Callable[[SiteUser, int], Baresip]]:
    binary = require_binary("baresip", "baresip-core")
    running: list[Baresip] = []
    with contextlib.ExitStack() as stack:

        def start(user: SiteUser, agent_port: int) -> Baresip:
            confdir = stack.enter_context(short_tempdir("baresip-"))
            baresip_config(confdir, user, agent_port)
            phone = Baresip(binary, confdir)
            running.append(phone)
            return phone

        yield start
        for phone in running:
            phone.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log()[-6000:]}")


def test_baresip_registers_and_binding_survives_restart(agent_factory, baresip_factory):
    user = make_users(1, first_extension=2000)[0]
    # baresip 1.0 (libre 1.x) gives up with ENOSYS when any challenge is not MD5, even
    # after an MD5 one: such phones need the MD5-only setting.
    agent: AgentProcess = agent_factory(
        [user], transports=("udp",), site_extra={"sip": {"digest_algorithms": ["MD5"]}}
    )
    phone = baresip_factory(user, agent.port)

    def registered() -> bool:
        assert phone.proc.poll() is None, "baresip exited:\n" + phone.log()
        return user.username in bound_users(agent.phones())

    wait_for(registered, 15, "baresip to register", lambda: phone.log() + agent.log_tail())
    [entry] = agent.phones()
    assert "baresip" in (entry.get("user_agent") or "").lower(), entry
    assert entry["transport"].lower() == "udp"
    contact_before = entry["contact"]
    sent_before = phone.log().count("REGISTER sip:")
    # Else the check below could not fail: the trace must show the REGISTERs it sent.
    assert sent_before >= 1, phone.log()

    agent.restart()
    after = agent.phones()
    assert [e["contact"] for e in after] == [contact_before], after
    # The binding came back from the store: baresip sent no REGISTER meanwhile.
    assert phone.log().count("REGISTER sip:") == sent_before

    # A clean stop unregisters; the agent, still up, must drop the binding.
    assert phone.stop() == 0, phone.log()
    wait_for(lambda: agent.phones() == [], 10, "the unregister", phone.log)
