"""edgepbx-agent as a process: startup, SIGHUP reloads, SIGTERM, systemd notifications.

Most tests run the real ``agent.main.main`` with the SIP service replaced by
``agent_fakes.FakeService`` (fast, and independent of sipstack); the last ones run the real
console script with the real SIP service.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.control import AgentNotRunning, ControlClient, ControlError
from agent.store import Store

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

LAUNCH = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from agent_fakes import FakeService; from agent.main import main; "
    "sys.exit(main(sys.argv[1:], service_factory=FakeService))"
)


def site_yaml(name: str = "Office", *, users: int = 2, extension0: str = "101") -> str:
    lines = [f"site: {{name: {name}, timezone: Europe/Berlin, realm: pbx.test}}", "users:"]
    for i in range(users):
        ext = extension0 if i == 0 else str(101 + i)
        lines.append(f"  - {{id: u{i}, name: User {i}, extension: '{ext}', "
                     f"sip: {{username: user{i}, password: pw-{i}}}}}")
    return "\n".join(lines) + "\n"


class AgentRun:
    def __init__(self, state_dir: Path, site: Path, *, fake: bool = True,
                 listens: tuple[str, ...] = ("udp:127.0.0.1:0",),
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.site = site
        self.log = state_dir.parent / f"{state_dir.name}.log"
        args = ["--site", str(site), "--state-dir", str(state_dir)]
        for spec in listens:
            args += ["--listen", spec]
        if fake:
            cmd = [sys.executable, "-c", LAUNCH, str(TESTS), *args]
        else:
            cmd = [str(Path(sys.executable).parent / "edgepbx-agent"), *args]
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}
        full_env.update(env or {})
        self._log_fh = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=REPO, env=full_env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.text()}")
            try:
                ControlClient(self.state_dir, timeout=2).request("ping")
                return
            except (AgentNotRunning, ControlError):
                time.sleep(0.02)
        raise AssertionError(f"agent not ready:\n{self.text()}")

    def wait_log(self, needle: str, timeout: float = 10.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not logged {count}x:\n{self.text()}")

    def status(self) -> dict[str, Any]:
        result = ControlClient(self.state_dir).request("status")
        assert isinstance(result, dict)
        return result

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log_fh.close()
        return rc


@pytest.fixture
def launch(state_dir: Path) -> Iterator[Callable[..., AgentRun]]:
    runs: list[AgentRun] = []

    def start(site_text: str | None = None, *, wait: bool = True, sub: str = "s",
              **kwargs: Any) -> AgentRun:
        site = state_dir / f"{sub}-site.yaml"
        if site_text is not None or not site.exists():
            site.write_text(site_text or site_yaml())
        run = AgentRun(state_dir / sub, site, **kwargs)
        runs.append(run)
        if wait:
            run.wait_ready()
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.stop()


def test_start_status_sigterm(launch: Callable[..., AgentRun]) -> None:
    run = launch()
    status = run.status()
    assert status["fake"] is True
    assert status["pid"] == run.proc.pid
    assert status["site"]["name"] == "Office"
    assert status["site"]["version"] == 1
    assert len(status["site"]["fingerprint"]) == 64
    assert status["users"] == 2
    assert status["uptime_s"] >= 0
    assert status["listeners"] == [{"transport": "udp", "address": "127.0.0.1:0"}]
    phones = ControlClient(run.state_dir).request("phones")
    assert phones[0]["user"] == "u0"
    assert run.stop() == 0
    assert not (run.state_dir / "control.sock").exists()
    assert (run.state_dir / "fake-service.log").read_text().splitlines() == [
        "init listens=udp:127.0.0.1:0 tls=False", "start", "stop"]
    text = run.text()
    assert "level=info logger=agent.main msg=ready" in text
    assert "msg=stopping reason=SIGTERM" in text
    with Store.open(run.state_dir) as store:
        assert [e.action for e in store.audit_entries()] == ["agent.start", "agent.stop"]
        latest = store.latest_site_version()
        assert latest is not None and latest.version == 1
        # The record of versions needs no secrets: they stay out of it.
        assert latest.document["users"][0]["sip"]["password"] == "**********"


def test_sigint_also_exits_zero(launch: Callable[..., AgentRun]) -> None:
    run = launch()
    run.signal(signal.SIGINT)
    assert run.proc.wait(15) == 0
    run.stop()


def test_sighup_invalid_keeps_running_config_then_valid_applies(
    launch: Callable[..., AgentRun],
) -> None:
    run = launch()
    before = run.status()["site"]
    run.site.write_text(site_yaml("Broken", extension0="0101").replace("Europe/Berlin", "Mars/X"))
    run.signal(signal.SIGHUP)
    run.wait_log("keeping the running configuration", count=2)
    text = run.text()
    assert 'error="site.timezone: \\"Mars/X\\" is not a known IANA time zone"' in text
    assert 'error="users[0].extension: \\"0101\\" must not start with 0"' in text
    assert run.proc.poll() is None
    assert run.status()["site"] == before
    assert run.status()["applied"] == 0

    run.site.write_text(site_yaml("Renamed", users=3))
    run.signal(signal.SIGHUP)
    run.wait_log("msg=\"site reloaded\"")
    after = run.status()
    assert after["site"]["name"] == "Renamed"
    assert after["site"]["version"] == 2
    assert after["site"]["fingerprint"] != before["fingerprint"]
    assert after["users"] == 3
    assert after["applied"] == 1

    # the service may refuse; the agent keeps the site it has
    run.site.write_text(site_yaml("refuse"))
    run.signal(signal.SIGHUP)
    run.wait_log("the SIP service refused the new site")
    assert run.status()["site"]["name"] == "Renamed"

    # unchanged file: nothing to apply
    run.site.write_text(site_yaml("Renamed", users=3))
    run.signal(signal.SIGHUP)
    run.wait_log("site file unchanged")
    assert run.stop() == 0
    with Store.open(run.state_dir) as store:
        actions = [e.action for e in store.audit_entries()]
        assert actions == ["agent.start", "site.reload_rejected", "site.applied",
                           "site.reload_failed", "agent.stop"]
        rejected = store.audit_entries(action="site.reload_rejected")[0]
        assert rejected.actor == "signal:SIGHUP"
        assert len(rejected.detail["errors"]) == 2
        latest = store.latest_site_version()
        assert latest is not None and latest.version == 2
    assert "apply Renamed" in (run.state_dir / "fake-service.log").read_text()


def test_invalid_site_at_startup_exits_2_listing_every_error(
    launch: Callable[..., AgentRun],
) -> None:
    run = launch(site_yaml(extension0="0101").replace("pbx.test", '"a\\"b"'), wait=False)
    assert run.proc.wait(15) == 2
    run.stop()
    lines = run.text().splitlines()
    assert 'site.realm: "a\\"b" must be printable ASCII without quotes or backslashes' in lines
    assert 'users[0].extension: "0101" must not start with 0' in lines
    assert any("not starting: the site file is invalid" in line and "errors=2" in line
               for line in lines)


def test_bad_listen_exits_2(launch: Callable[..., AgentRun]) -> None:
    run = launch(wait=False, listens=("udp:[::1:5060",))
    assert run.proc.wait(15) == 2
    run.stop()
    assert "missing ']'" in run.text()


def test_service_start_failure_exits_1(launch: Callable[..., AgentRun]) -> None:
    run = launch(site_yaml("fail-start"), wait=False)
    assert run.proc.wait(15) == 1
    run.stop()
    assert "cannot start the SIP service" in run.text()
    assert not (run.state_dir / "control.sock").exists()


def test_second_agent_on_same_state_dir_is_refused(launch: Callable[..., AgentRun]) -> None:
    first = launch()
    second = launch(wait=False)
    assert second.proc.wait(15) == 1
    second.stop()
    assert "another edgepbx-agent is running" in second.text()
    assert first.status()["pid"] == first.proc.pid


def test_systemd_ready_watchdog_stopping(launch: Callable[..., AgentRun], state_dir: Path) -> None:
    path = state_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        run = launch(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"})
        messages: list[str] = []
        while sum(m == "WATCHDOG=1" for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        run.signal(signal.SIGHUP)
        while not any(m.startswith("RELOADING=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        assert run.stop() == 0
        sock.settimeout(0.5)
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    ready = [m for m in messages if m.startswith("READY=1")]
    assert ready and "STATUS=site 'Office' v1 (2 users); listening on udp:127.0.0.1:0" in ready[0]
    assert messages.index(ready[0]) < messages.index("WATCHDOG=1")
    assert messages[-1] == "STOPPING=1" or "STOPPING=1" in messages


# ----------------------------------------------------------------------------------------
# The real service (agent/sipservice.py) through the console scripts.

real_service = pytest.mark.skipif(
    not (REPO / "agent" / "sipservice.py").exists(), reason="agent/sipservice.py not written yet"
)


def cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "edgepbx"), "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=30, check=False,
    )


@real_service
def test_real_agent_status_phones_reload_stop(launch: Callable[..., AgentRun]) -> None:
    run = launch(fake=False, listens=("udp:127.0.0.1:0", "tcp:127.0.0.1:0"))
    res = cli(run.state_dir, "status")
    assert res.returncode == 0, res.stderr
    assert "edgepbx-agent" in res.stdout and "Office" in res.stdout
    status = json.loads(cli(run.state_dir, "status", "--json").stdout)
    assert status["site"]["version"] == 1
    assert status["pid"] == run.proc.pid
    res = cli(run.state_dir, "phones")
    assert res.returncode == 0, res.stderr
    assert json.loads(cli(run.state_dir, "phones", "--json").stdout) == []

    run.site.write_text(site_yaml(extension0="0101"))
    run.signal(signal.SIGHUP)
    run.wait_log("keeping the running configuration")
    assert json.loads(cli(run.state_dir, "status", "--json").stdout)["site"]["version"] == 1
    run.site.write_text(site_yaml("Renamed", users=3))
    run.signal(signal.SIGHUP)
    run.wait_log('msg="site reloaded"')
    status = json.loads(cli(run.state_dir, "status", "--json").stdout)
    assert status["site"]["name"] == "Renamed" and status["site"]["version"] == 2
    assert run.stop() == 0
    res = cli(run.state_dir, "status")
    assert res.returncode == 2
    assert "no agent running" in res.stderr


@real_service
def test_real_agent_with_tls_listener_makes_a_certificate(launch: Callable[..., AgentRun]) -> None:
    run = launch(fake=False, listens=("udp:127.0.0.1:0", "tls:127.0.0.1:0"))
    assert (run.state_dir / "tls" / "sip-cert.pem").exists()
    assert oct(os.stat(run.state_dir / "tls" / "sip-key.pem").st_mode & 0o777) == "0o600"
    assert run.stop() == 0
