"""SIPp as a pytest fixture: run a scenario from scenarios/ against a host:port and check it.

The scenarios were first validated against Kamailio configured as a digest registrar
(the benchmark anchor), so a failure here points at the agent, not at the scenario.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import LOOPBACK, SiteUser, free_port, require_binary, short_tempdir

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.interop)


def write_injection(path: Path, users: Sequence[SiteUser]) -> Path:
    """SIPp injection file: field0 = username, field1 = the [authentication] keyword."""
    lines = ["SEQUENTIAL"]
    for u in users:
        # ';' separates fields, so it cannot appear in a password here.
        assert ";" not in u.password and "]" not in u.password
        lines.append(f"{u.username};[authentication username={u.username} password={u.password}]")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


@dataclass
class SippResult:
    returncode: int
    stdout: str
    errors: str
    messages: str
    command: list[str]

    def explain(self) -> str:
        return (
            f"sipp exited {self.returncode}\ncommand: {' '.join(self.command)}\n"
            f"--- errors ---\n{self.errors[-6000:]}\n--- messages (tail) ---\n"
            f"{self.messages[-6000:]}\n--- screen (tail) ---\n{self.stdout[-3000:]}"
        )


class Sipp:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.runs = 0
        self.background: list[SippProcess] = []

    def command(
        self,
        scenario: str,
        target_port: int,
        *,
        users: Sequence[SiteUser] = (),
        transport: str = "udp",
        calls: int | None = None,
        rate: int = 10,
        domain: str = LOOPBACK,
        expires: int = 600,
        target_host: str = LOOPBACK,
        timeout: float = 30.0,
        local_port: int | None = None,
        local_ip: str = LOOPBACK,
        extra: Sequence[str] = (),
    ) -> tuple[list[str], Path, Path]:
        """The SIPp command line, and its error and message log paths."""
        self.runs += 1
        tag = f"{Path(scenario).stem}-{transport}-{self.runs}"
        errors = self.workdir / f"{tag}-errors.log"
        messages = self.workdir / f"{tag}-messages.log"
        cmd = [
            self.binary,
            "-sf", str(SCENARIOS / scenario),
            f"{target_host}:{target_port}",
            "-i", local_ip,
            # An explicit free local port: SIPp's default is 5060, which `make run` uses.
            # A given one: e.g. the port a callee registered from and now answers on.
            "-p", str(local_port if local_port is not None else free_port()),
            "-t", {"udp": "u1", "tcp": "t1"}[transport],
            "-key", "domain", domain,
            "-key", "expires", str(expires),
            # SIPp hashes "sip:" + the remote host:port as the digest-uri unless told
            # otherwise; RFC 3261 22.4 wants the Request-URI, which is sip:[domain].
            "-auth_uri", domain,
            "-m", str(calls if calls is not None else max(1, len(users))),
            "-r", str(rate),
            # Abort a call on an unexpected answer, but send no BYE: a REGISTER has no dialog.
            "-default_behaviors", "abortunexp",
            "-nostdin",
            "-timeout", f"{int(timeout)}s",
            "-timeout_error",
            "-trace_err", "-error_file", str(errors),
            "-trace_msg", "-message_file", str(messages),
        ]
        if users:
            cmd += ["-inf", str(write_injection(self.workdir / f"{tag}.csv", users))]
        cmd += list(extra)
        return cmd, errors, messages

    def run(self, scenario: str, target_port: int, *, timeout: float = 30.0,
            **kwargs: Any) -> SippResult:
        """Run a scenario to its end (keyword arguments: see command())."""
        return self.start(scenario, target_port, timeout=timeout, **kwargs).wait()

    def start(self, scenario: str, target_port: int, *, timeout: float = 30.0,
              **kwargs: Any) -> SippProcess:
        """Start a scenario in the background, e.g. a UAS; wait() for its result. Still
        running at the fixture's teardown: killed."""
        cmd, errors, messages = self.command(scenario, target_port, timeout=timeout, **kwargs)
        screen = messages.with_name(messages.name.replace("-messages.log", "-screen.log"))
        handle = screen.open("w+b")
        proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                stdout=handle, stderr=subprocess.STDOUT)
        running = SippProcess(proc, cmd, errors, messages, handle, timeout + 15)
        self.background.append(running)
        return running

    def expect_success(self, scenario: str, target_port: int, **kwargs: object) -> SippResult:
        result = self.run(scenario, target_port, **kwargs)  # type: ignore[arg-type]
        # SIPp: 0 = every call succeeded, 1 = at least one failed, 97/99/255 = aborted.
        assert result.returncode == 0, result.explain()
        return result

    def close(self) -> None:
        for running in self.background:
            running.kill()


class SippProcess:
    """A SIPp started by Sipp.start()."""

    def __init__(self, proc: subprocess.Popen[bytes], command: list[str], errors: Path,
                 messages: Path, screen: Any, limit: float) -> None:
        self.proc = proc
        self.command = command
        self.errors = errors
        self.messages = messages
        self._screen = screen
        self.limit = limit
        self.result: SippResult | None = None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Its result once it exits (SIPp ends after -m calls, or at its -timeout)."""
        if self.result is not None:
            return self.result
        try:
            rc = self.proc.wait(timeout=self.limit if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"sipp did not end: {' '.join(self.command)}\n"
                                 + self._read_screen()[-3000:]) from None
        self.result = SippResult(rc, self._read_screen(), _read(self.errors),
                                 _read(self.messages), self.command)
        self._screen.close()
        return self.result

    def stop(self) -> SippResult:
        """End it now (SIGTERM), e.g. a peer that must have received nothing, and return its
        result. SIPp writes its message log as it goes, so the log is complete."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(timeout=10)

    def _read_screen(self) -> str:
        self._screen.flush()
        self._screen.seek(0)
        return self._screen.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self._screen.closed:
            self._screen.close()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def sipp() -> Iterator[Sipp]:
    binary = require_binary("sipp", "sip-tester")
    with short_tempdir("sipp-") as work:
        runner = Sipp(binary, work)
        try:
            yield runner
        finally:
            runner.close()
