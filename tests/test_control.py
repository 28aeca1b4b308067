from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeProvider, control_server

from agent.control import AgentNotRunning, ControlClient, ControlError, phone_entry
from agent.store import BindingRow


def raw_exchange(path: Path, payload: bytes) -> list[Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_status_and_phones(state_dir: Path) -> None:
    provider = FakeProvider({"version": "1", "listeners": ["udp:127.0.0.1:5060"]},
                            [{"user": "alice", "contact": "sip:a@h"}])
    with control_server(state_dir, provider) as server:
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(server.path).st_mode)
        client = ControlClient(state_dir)
        assert client.request("status") == {"version": "1", "listeners": ["udp:127.0.0.1:5060"]}
        assert client.request("phones") == [{"user": "alice", "contact": "sip:a@h"}]
        with pytest.raises(ControlError, match="unknown command 'nope'"):
            client.request("nope")
    assert not server.path.exists()


def test_several_requests_and_bad_ones_on_one_connection(state_dir: Path) -> None:
    with control_server(state_dir, FakeProvider()) as server:
        replies = raw_exchange(
            server.path,
            b'{"cmd": "ping"}\n\nnot json\n[1]\n{"cmd": "status"}\n',
        )
    assert replies == [
        {"ok": True, "result": {"pong": True}},
        {"ok": False, "error": "request is not valid JSON"},
        {"ok": False, "error": 'request must be an object with a "cmd" string'},
        {"ok": True, "result": {"version": "0.0.test", "pid": 1}},
    ]


def test_oversized_request_is_refused(state_dir: Path) -> None:
    with control_server(state_dir, FakeProvider()) as server:
        replies = raw_exchange(server.path, b"x" * 200_000 + b"\n")
        assert replies == [{"ok": False, "error": "request line too long"}]
        # the server still answers others
        assert ControlClient(state_dir).request("ping") == {"pong": True}


class Broken(FakeProvider):
    def status(self) -> dict[str, Any]:
        raise RuntimeError("kaput")

    async def phones(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [{"async": True}]


def test_provider_errors_and_async_methods(state_dir: Path) -> None:
    with control_server(state_dir, Broken()):
        client = ControlClient(state_dir)
        with pytest.raises(ControlError, match="internal error while running 'status'"):
            client.request("status")
        assert client.request("phones") == [{"async": True}]


def test_stale_socket_is_replaced_and_live_one_refused(state_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(state_dir / "control.sock"))
    stale.close()  # file left behind, nobody listening (as after kill -9)
    with pytest.raises(AgentNotRunning, match="not answering"):
        ControlClient(state_dir).request("status")
    with control_server(state_dir, FakeProvider()):
        assert ControlClient(state_dir).request("ping") == {"pong": True}
        with pytest.raises(ControlError, match="another agent"), \
                control_server(state_dir, FakeProvider()):
            pass


def test_client_without_agent(state_dir: Path) -> None:
    with pytest.raises(AgentNotRunning) as err:
        ControlClient(state_dir).request("status")
    assert str(err.value) == f"no agent running on {state_dir} (control socket missing)"


def test_phone_entry() -> None:
    row = BindingRow("alice", "sip:alice@[2001:db8::1]:5060", 1100.5, "c", 1, None, "tcp",
                     "2001:db8::1", 5060, "UA", None, None, 1000.0)
    entry = phone_entry(row, 1000.0, user_name="Alice")
    assert entry["source"] == "[2001:db8::1]:5060"
    assert entry["expires_in"] == 100
    assert entry["user_name"] == "Alice"
    json.dumps(entry)


def test_client_state_dir_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ControlError, match="control socket"):
        ControlClient(tmp_path / "file").request("status")
