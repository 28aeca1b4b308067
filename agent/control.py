"""The local control socket: ``STATE_DIR/control.sock`` (AF_UNIX stream, mode 0600).

Protocol: newline-delimited JSON. Each request is one line ``{"cmd": "status"}``; each reply is
one line, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. A connection may
carry several requests. Commands: ``status`` -> object, ``phones`` -> list of objects,
``calls`` -> list of objects (the active calls), ``devices`` -> list of objects (devices
seen by the provisioning server; only when the provider has ``devices``), ``ping``.

The server dispatches to a :class:`ControlProvider`; the agent supplies one that merges its own
status with the SIP service's. :class:`ControlClient` is the small synchronous client of the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

__all__ = [
    "CONTROL_SOCKET",
    "AgentNotRunning",
    "ControlClient",
    "ControlError",
    "ControlProvider",
    "ControlServer",
    "device_entry",
    "phone_entry",
]

from agent.listen import hostport

log = logging.getLogger(__name__)

CONTROL_SOCKET: Final = "control.sock"
MAX_LINE: Final = 64 * 1024
IDLE_TIMEOUT: Final = 60.0
_UNIX_PATH_MAX: Final = 107


@runtime_checkable
class ControlProvider(Protocol):
    """What the control socket can ask. Methods may also be ``async``."""

    def status(self) -> dict[str, Any]: ...

    def phones(self) -> list[dict[str, Any]]: ...

    def calls(self) -> list[dict[str, Any]]:
        """The active calls, one object each. Keys (all optional for the CLI): id, state,
        caller, caller_name, callee, dialed, started_at and answered_at (epoch seconds;
        answered_at None until answered), or age_s / answered_s (seconds since)."""
        ...


class ControlError(Exception):
    """The agent answered with an error, or the exchange failed."""


class AgentNotRunning(ControlError):
    """No agent is listening on the state directory's control socket."""


def socket_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / CONTROL_SOCKET


def _check_path_length(path: Path) -> None:
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise ControlError(
            f"control socket path is too long for AF_UNIX ({len(os.fsencode(path))} > "
            f"{_UNIX_PATH_MAX} bytes): {path}"
        )


def phone_entry(row: Any, now: float, *, user_name: str | None = None) -> dict[str, Any]:
    """One ``phones`` entry from a binding row (``agent.store.BindingRow`` or alike).

    Keys: user, aor, contact, source (host:port), source_transport, source_host, source_port,
    user_agent, expires_at, expires_in (whole seconds), instance_id, reg_id, q.
    """
    host = str(row.source_host)
    entry: dict[str, Any] = {
        "user": row.aor,
        "aor": row.aor,
        "contact": row.contact,
        "source": hostport(host, row.source_port),
        "source_transport": row.source_transport,
        "source_host": host,
        "source_port": row.source_port,
        "user_agent": row.user_agent,
        "expires_at": row.expires_at,
        "expires_in": max(0, int(row.expires_at - now)),
        "instance_id": row.instance_id,
        "reg_id": row.reg_id,
        "q": row.q,
    }
    if user_name is not None:
        entry["user_name"] = user_name
    return entry


def device_entry(row: Any, assigned_model: str | None) -> dict[str, Any]:
    """One ``devices`` entry from a device row (``agent.store.DeviceRow`` or alike), plus
    ``assigned`` (the MAC is in the site's ``phones:``) and ``model`` (the site's model
    for it, else None)."""
    return {
        "mac": row.mac,
        "assigned": assigned_model is not None,
        "model": assigned_model,
        "vendor": row.vendor,
        "model_hint": row.model_hint,
        "ip": row.ip,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "last_file": row.last_file,
        "fetched_at": row.fetched_at,
        "fetched_file": row.fetched_file,
        "fetched_sha256": row.fetched_sha256,
    }


# --------------------------------------------------------------------------------------------
# Server


class ControlServer:
    """Serves the control socket for a provider. ``await start()``, then ``await stop()``."""

    def __init__(self, state_dir: str | Path, provider: ControlProvider) -> None:
        self.path = socket_path(state_dir)
        self._provider = provider
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._commands: dict[str, Callable[[], Any]] = {
            "status": provider.status,
            "phones": provider.phones,
            "calls": provider.calls,
            "ping": lambda: {"pong": True},
        }
        devices = getattr(provider, "devices", None)
        if callable(devices):
            self._commands["devices"] = devices

    async def start(self) -> None:
        _check_path_length(self.path)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # On Linux the socket file takes the mode of the socket inode: set it before bind
            # so there is no moment where the file is more open than 0600.
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(os.fspath(self.path))
            os.chmod(self.path, 0o600)
            sock.listen(64)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=MAX_LINE
            )
        except BaseException:
            sock.close()
            raise
        log.info("control socket listening", extra={"path": str(self.path)})

    def _remove_stale(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.settimeout(1.0)
            probe.connect(os.fspath(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: nobody listens
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                raise
        else:
            raise ControlError(f"another agent is already answering on {self.path}")
        finally:
            probe.close()
        self.path.unlink(missing_ok=True)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for task in list(self._clients):
                task.cancel()
            if self._clients:
                await asyncio.gather(*self._clients, return_exceptions=True)
            await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so the task is tracked from the moment it exists: stop()
        # can then cancel even a connection whose task has not started yet.
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (TimeoutError, ConnectionError):
                    break
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error": "request line too long"})
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                reply = await self._handle(line)
                if not await self._reply(writer, reply):
                    break
        except asyncio.CancelledError:
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:
                # The event loop is already closed (a task abandoned at shutdown):
                # there is nothing left to close or wait for.
                return
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a "cmd" string'}
        cmd = request["cmd"]
        handler = self._commands.get(cmd)
        if handler is None:
            known = ", ".join(sorted(self._commands))
            return {"ok": False, "error": f"unknown command {cmd!r} (known: {known})"}
        try:
            result = handler()
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("control command failed", extra={"cmd": cmd})
            return {"ok": False, "error": f"internal error while running {cmd!r}"}
        return {"ok": True, "result": result}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> bool:
        try:
            data = json.dumps(reply, default=_json_default, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            log.error("control reply not serialisable", extra={"error": str(exc)})
            data = json.dumps({"ok": False, "error": "internal error: reply not serialisable"})
        try:
            writer.write(data.encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            return False
        return True


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# --------------------------------------------------------------------------------------------
# Client


class ControlClient:
    """Synchronous client: ``ControlClient(state_dir).request("status")``."""

    def __init__(self, state_dir: str | Path, *, timeout: float = 10.0) -> None:
        self.state_dir = Path(state_dir)
        self.path = socket_path(state_dir)
        self.timeout = timeout

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one command; return its ``result``. Raises :class:`AgentNotRunning` or
        :class:`ControlError`."""
        _check_path_length(self.path)
        try:
            os.stat(self.path)
        except FileNotFoundError:
            raise AgentNotRunning(
                f"no agent running on {self.state_dir} (control socket missing)"
            ) from None
        except PermissionError:
            raise ControlError(
                f"permission denied on {self.state_dir} (run as the agent's user or root)"
            ) from None
        except OSError as exc:
            raise ControlError(f"control socket {self.path}: {exc.strerror or exc}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(os.fspath(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                raise AgentNotRunning(
                    f"no agent running on {self.state_dir} (control socket not answering)"
                ) from None
            except PermissionError:
                raise ControlError(
                    f"permission denied on {self.path} (run as the agent's user or root)"
                ) from None
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            reply = _read_line(sock)
        except TimeoutError:
            raise ControlError(f"the agent did not answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"control socket {self.path}: {exc.strerror or exc}") from None
        finally:
            sock.close()
        try:
            message = json.loads(reply)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ControlError("the agent sent an unreadable reply") from None
        if not isinstance(message, dict):
            raise ControlError("the agent sent an unreadable reply")
        if not message.get("ok"):
            raise ControlError(str(message.get("error", "unknown error")))
        return message.get("result")


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            if not chunks:
                raise ControlError("the agent closed the connection without answering")
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
        if size > 64 * 1024 * 1024:
            raise ControlError("reply too large")
    return b"".join(chunks).split(b"\n", 1)[0]
