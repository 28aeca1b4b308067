from __future__ import annotations

import logging
import os
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import systemd


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    systemd._reset_for_tests()
    yield
    systemd._reset_for_tests()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_no_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready("x") is False
    assert systemd.watchdog() is False


def test_uses_systemd_python_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    daemon = types.ModuleType("systemd.daemon")
    def notify(state: str) -> bool:
        sent.append(state)
        return True

    daemon.notify = notify  # type: ignore[attr-defined]
    pkg = types.ModuleType("systemd")
    pkg.daemon = daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", pkg)
    monkeypatch.setitem(sys.modules, "systemd.daemon", daemon)
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/whatever")
    assert systemd.ready("serving\n4 users")
    assert systemd.status("reloading")
    assert systemd.watchdog()
    assert systemd.stopping()
    assert systemd.reloading()
    assert sent[:4] == ["READY=1\nSTATUS=serving 4 users", "STATUS=reloading", "WATCHDOG=1",
                        "STOPPING=1"]
    assert sent[4].startswith("RELOADING=1\nMONOTONIC_USEC=")


def test_missing_module_logs_once_and_sends_directly(
    monkeypatch: pytest.MonkeyPatch, notify_socket: socket.socket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)
    with caplog.at_level(logging.ERROR, logger="agent.systemd"):
        assert systemd.ready("up")
        assert systemd.watchdog()
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=up"
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    errors = [r for r in caplog.records if "systemd-python is not installed" in r.getMessage()]
    assert len(errors) == 1


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)
    name = f"edgepbx-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.stopping()
        assert sock.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),
        ("0", None, None),
        ("junk", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert systemd.watchdog_interval() == expected


def test_the_cloud_drop_in_runs_the_unit_s_command_plus_the_cloud_link() -> None:
    from pathlib import Path

    from agent.main import build_parser

    packaging = Path(__file__).resolve().parent.parent / "packaging"

    def exec_start(path: Path) -> list[str]:
        return [line.split("=", 1)[1] for line in path.read_text().splitlines()
                if line.startswith("ExecStart=")]

    [unit] = exec_start(packaging / "edgepbx.service")
    empty, drop_in = exec_start(packaging / "edgepbx-cloud.conf")
    assert empty == ""  # clears the unit's ExecStart before setting its own
    assert drop_in == unit + " --cloud /etc/edgepbx/cloud.yaml"
    args = build_parser().parse_args(drop_in.replace("${STATE_DIRECTORY}", "/var/lib/x")
                                     .split()[1:])
    assert str(args.cloud) == "/etc/edgepbx/cloud.yaml"
