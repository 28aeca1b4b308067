"""SIPp as a pytest fixture: run a scenario from scenarios/ against a host:port and check it.

The scenarios were first validated against Kamailio configured as a digest registrar
(the benchmark anchor), so a failure here points at the agent, not at the scenario.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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

    def run(
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
        extra: Sequence[str] = (),
    ) -> SippResult:
        self.runs += 1
        tag = f"{Path(scenario).stem}-{transport}-{self.runs}"
        errors = self.workdir / f"{tag}-errors.log"
        messages = self.workdir / f"{tag}-messages.log"
        cmd = [
            self.binary,
            "-sf", str(SCENARIOS / scenario),
            f"{target_host}:{target_port}",
            "-i", LOOPBACK,
            # An explicit free local port: SIPp's default is 5060, which `make run` uses.
            "-p", str(free_port()),
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
        proc = subprocess.run(
            cmd,
            check=False,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout + 15,
        )

        def read(p: Path) -> str:
            return p.read_text(errors="replace") if p.exists() else ""

        return SippResult(proc.returncode, proc.stdout + proc.stderr, read(errors),
                          read(messages), cmd)

    def expect_success(self, scenario: str, target_port: int, **kwargs: object) -> SippResult:
        result = self.run(scenario, target_port, **kwargs)  # type: ignore[arg-type]
        # SIPp: 0 = every call succeeded, 1 = at least one failed, 97/99/255 = aborted.
        assert result.returncode == 0, result.explain()
        return result


@pytest.fixture
def sipp() -> Iterator[Sipp]:
    binary = require_binary("sipp", "sip-tester")
    with short_tempdir("sipp-") as work:
        yield Sipp(binary, work)
