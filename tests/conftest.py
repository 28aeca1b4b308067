"""Shared fixtures: free ports, short state directories, site files, and the agent as a process.

The agent is always run the way systemd or `make run` runs it: as the `edgepbx-agent`
console script in its own process, talked to over SIP on 127.0.0.1 and through the
`edgepbx` CLI (control socket in the state directory). Nothing here imports the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sipprobe import LOOPBACK, free_port, sip_options_probe

REPO = Path(__file__).resolve().parent.parent
REALM = "edgepbx.test"


# --------------------------------------------------------------------------- ports


@pytest.fixture
def port() -> int:
    return free_port()


# --------------------------------------------------------------------------- state dirs


@contextlib.contextmanager
def short_tempdir(prefix: str = "epbx-") -> Iterator[Path]:
    """A temporary directory with a short path.

    The control socket lives in the state directory and AF_UNIX paths are capped at
    107 bytes; pytest's tmp_path under /tmp/pytest-of-USER/... can come close.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with short_tempdir() as path:
        yield path


# --------------------------------------------------------------------------- site files


@dataclass(frozen=True)
class SiteUser:
    id: str
    name: str
    extension: str
    username: str
    password: str

    def as_site_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "extension": self.extension,
            "sip": {"username": self.username, "password": self.password},
        }


def make_users(count: int, *, first_extension: int = 1000) -> list[SiteUser]:
    """count users with consecutive extensions; the digest username is the extension.

    Passwords are random per call so a test can never pass on a guessed or default one.
    """
    users = []
    for i in range(count):
        ext = str(first_extension + i)
        users.append(
            SiteUser(
                id=f"u{ext}",
                name=f"Test User {ext}",
                extension=ext,
                username=ext,
                password=f"Pw{ext}-{secrets.token_hex(6)}",
            )
        )
    return users


def site_document(
    users: Sequence[SiteUser], *, realm: str = REALM, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "site": {"name": "Interop test site", "timezone": "Europe/Berlin", "realm": realm},
        "users": [u.as_site_entry() for u in users],
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def write_site(path: Path, document: dict[str, Any]) -> Path:
    # JSON is valid YAML, and the agent accepts both: JSON needs no third-party writer.
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the agent


def _script(name: str) -> list[str]:
    """The console script from the interpreter running the tests (the project venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which(name)
    if found:
        return [found]
    # A missing console script is a broken install (pip install -e . or
    # [project.scripts]); working around it would hide exactly that.
    pytest.fail(f"the {name} console script is not installed: run `make venv`")


@dataclass
class AgentProcess:
    """edgepbx-agent running in the foreground as a child process."""

    site_file: Path
    state_dir: Path
    port: int
    transports: tuple[str, ...] = ("udp", "tcp")
    host: str = LOOPBACK
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after: float = 0.0
    _log_file: Any = None

    @property
    def listens(self) -> list[str]:
        return [f"{t}:{self.host}:{self.port}" for t in self.transports]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [*_script("edgepbx-agent"), "--site", str(self.site_file)]
        cmd += ["--state-dir", str(self.state_dir)]
        for listen in self.listens:
            cmd += ["--listen", listen]
        return cmd + list(self.extra_args)

    def start(self, *, timeout: float = 20.0) -> AgentProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.log_path is None:
            self.log_path = self.state_dir.parent / f"{self.state_dir.name}-agent.log"
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        # Not under systemd: make sure an inherited NOTIFY_SOCKET cannot confuse it.
        env.pop("NOTIFY_SOCKET", None)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.state_dir.parent),
        )
        self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, *, timeout: float = 20.0) -> float:
        """Block until the agent answers; returns seconds from spawn to ready."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"edgepbx-agent exited with {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            if self.is_ready():
                self.ready_after = time.monotonic() - self.started_at
                return self.ready_after
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"edgepbx-agent not ready after {timeout}s:\n" + self.log_tail())

    def is_ready(self) -> bool:
        if "udp" in self.transports:
            return sip_options_probe(self.host, self.port, transport="udp") is not None
        if "tcp" in self.transports:
            return sip_options_probe(self.host, self.port, transport="tcp") is not None
        return (self.state_dir / "control.sock").exists() and self.cli("status").returncode == 0

    def stop(self, *, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the agent's contract is a clean exit 0."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"edgepbx-agent ignored SIGTERM for {timeout}s:\n" + self.log_tail()
                ) from None
        rc = self.proc.returncode
        self._close_log()
        return int(rc)

    def stop_expect_clean(self) -> None:
        rc = self.stop()
        assert rc == 0, f"edgepbx-agent exited {rc} on SIGTERM:\n" + self.log_tail()

    def restart(self) -> AgentProcess:
        self.stop_expect_clean()
        self.proc = None
        return self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no agent log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # -- the CLI, as an operator would use it -------------------------------------------

    def cli(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        cmd = [*_script("edgepbx"), "--state-dir", str(self.state_dir), *args]
        return subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def phones(self) -> list[dict[str, Any]]:
        res = self.cli("phones", "--json")
        assert res.returncode == 0, f"edgepbx phones --json failed: {res.stderr}\n{res.stdout}"
        data = json.loads(res.stdout)
        if isinstance(data, dict):  # tolerate {"phones": [...]} as well as a bare list
            data = data.get("phones", [])
        assert isinstance(data, list), f"unexpected phones output: {res.stdout!r}"
        return data

    def calls(self) -> list[dict[str, Any]]:
        """Active calls, from `edgepbx calls --json`."""
        res = self.cli("calls", "--json")
        assert res.returncode == 0, f"edgepbx calls --json failed: {res.stderr}\n{res.stdout}"
        data = json.loads(res.stdout)
        if isinstance(data, dict):  # tolerate {"calls": [...]} as well as a bare list
            data = data.get("calls", [])
        assert isinstance(data, list), f"unexpected calls output: {res.stdout!r}"
        return data

    def cdr(self) -> list[dict[str, Any]]:
        """Finished calls, newest first, from `edgepbx cdr --format json` (read from the store)."""
        res = self.cli("cdr", "--format", "json")
        assert res.returncode == 0, f"edgepbx cdr --format json failed: {res.stderr}\n{res.stdout}"
        data = json.loads(res.stdout)
        assert isinstance(data, list), f"unexpected cdr output: {res.stdout!r}"
        return data

    def status(self) -> dict[str, Any]:
        res = self.cli("status", "--json")
        assert res.returncode == 0, f"edgepbx status --json failed: {res.stderr}\n{res.stdout}"
        data = json.loads(res.stdout)
        assert isinstance(data, dict)
        return data


def bound_users(phones: list[dict[str, Any]]) -> set[str]:
    """Extensions with at least one binding (make_users makes username == extension)."""
    return {str(p["extension"]) for p in phones}


def source_of(entry: dict[str, Any]) -> tuple[str, int]:
    """A phones entry's "source" ("host:port", IPv6 in brackets) as (host, port)."""
    host, _, port = str(entry["source"]).rpartition(":")
    return host.strip("[]"), int(port)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item so fixtures can tell whether the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def agent_factory(
    state_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., AgentProcess]]:
    """Start agents on demand; every one is stopped at teardown and must exit 0.

    When the test failed, the tail of each agent's log is printed (pytest shows it under
    "Captured stdout teardown"), since the agent's view is usually the missing half.
    """
    started: list[AgentProcess] = []

    def start(
        users: Sequence[SiteUser],
        *,
        transports: tuple[str, ...] = ("udp", "tcp"),
        realm: str = REALM,
        site_extra: dict[str, Any] | None = None,
        state: Path | None = None,
        extra_args: Sequence[str] | Callable[[], Sequence[str]] = (),
    ) -> AgentProcess:
        sdir = state or state_dir / f"agent{len(started)}"
        sdir.mkdir(parents=True, exist_ok=True)
        site = write_site(
            sdir.parent / f"{sdir.name}-site.json",
            site_document(users, realm=realm, extra=site_extra),
        )
        last: AssertionError | None = None
        # The free port can be taken between free_port() and the agent's bind: retry.
        for _ in range(3):
            # A callable gives fresh arguments per attempt (e.g. another free port).
            args = list(extra_args() if callable(extra_args) else extra_args)
            agent = AgentProcess(site_file=site, state_dir=sdir, port=free_port(),
                                 transports=transports, extra_args=args)
            try:
                agent.start()
            except AssertionError as exc:
                last = exc
                if "in use" not in str(exc).lower():
                    raise
                continue
            started.append(agent)
            return agent
        assert last is not None
        raise last

    yield start

    call_report = getattr(request.node, "rep_call", None)
    if call_report is not None and call_report.failed:
        for agent in started:
            print(f"--- edgepbx-agent log ({agent.log_path}) ---\n{agent.log_tail(80)}")
    problems = []
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            rc = agent.stop()
            if rc != 0:
                problems.append(f"exit {rc} on SIGTERM:\n{agent.log_tail()}")
        elif agent.proc is not None and agent.proc.returncode not in (0, None):
            problems.append(f"had died with {agent.proc.returncode}:\n{agent.log_tail()}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- peers


def is_root() -> bool:
    return os.geteuid() == 0


def require_binary(name: str, package: str) -> str:
    """Path of a peer binary. Missing: skip only when we could not have installed it.

    `make deps` installs the Debian packages when run as root, so as root a missing
    binary is a broken setup and fails the test rather than hiding behind a skip.
    """
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path:
        return path
    if is_root() or os.environ.get("CI"):
        # CI must run what it claims to: a missing peer there is a missing install step.
        pytest.fail(f"{name} is missing: run `make deps` as root (Debian {package})")
    pytest.skip(f"{name} not installed and not root, so `make deps` could not install {package}")


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Surface a leaked coroutine or task in the test that leaked it, not in a later one.

    Only modules that run event loops can leak those, and a full collection per
    test costs milliseconds, so pure table tests skip it.
    """
    yield
    if {"asyncio", "control_server", "main"} & vars(request.module).keys():
        import gc

        gc.collect()
