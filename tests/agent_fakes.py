"""Test doubles for the agent: a control provider and a SIP service stand-in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.control import ControlServer


class FakeProvider:
    def __init__(self, status: dict[str, Any] | None = None,
                 phones: list[dict[str, Any]] | None = None,
                 calls: list[dict[str, Any]] | None = None) -> None:
        self._status = status if status is not None else {"version": "0.0.test", "pid": 1}
        self._phones = phones if phones is not None else []
        self.active_calls: list[dict[str, Any]] = calls if calls is not None else []

    def status(self) -> dict[str, Any]:
        return self._status

    def phones(self) -> list[dict[str, Any]]:
        return self._phones

    def calls(self) -> list[dict[str, Any]]:
        return self.active_calls


@contextmanager
def control_server(state_dir: Path, provider: Any) -> Iterator[ControlServer]:
    """Serve the control socket from a background event loop."""
    loop = asyncio.new_event_loop()
    server = ControlServer(state_dir, provider)
    started = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    if errors:
        raise errors[0]
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


class FakeService:
    """Stands in for agent.sipservice.SipService in agent process tests.

    It journals its calls to STATE_DIR/fake-service.log. Site names steer it: "fail-start"
    makes start() raise OSError, "refuse" makes apply_site() raise ValueError.
    """

    def __init__(self, *, site: Any, store: Any, listens: list[Any], state_dir: Path,
                 tls_cert: tuple[Path, Path] | None) -> None:
        self.site = site
        self.store = store
        self.listens = listens
        self.journal = state_dir / "fake-service.log"
        self.tls_cert = tls_cert
        self.applied = 0
        self._note(f"init listens={','.join(str(s) for s in listens)} tls={tls_cert is not None}")

    def _note(self, text: str) -> None:
        with self.journal.open("a") as fh:
            fh.write(text + "\n")

    async def start(self) -> None:
        if self.site.site.name == "fail-start":
            raise OSError(98, "Address already in use")
        self._note("start")

    async def stop(self) -> None:
        self._note("stop")

    def apply_site(self, site: Any) -> None:
        if site.site.name == "refuse":
            raise ValueError("refused by the fake")
        self.site = site
        self.applied += 1
        self._note(f"apply {site.site.name}")

    def status(self) -> dict[str, Any]:
        return {"fake": True, "applied": self.applied, "bindings": 0,
                "listeners": [{"transport": s.transport, "address": s.hostport}
                              for s in self.listens]}

    def phones(self) -> list[dict[str, Any]]:
        return [{"user": u.id, "contact": f"sip:{u.sip.username}@192.0.2.1", "transport": "udp",
                 "source": "192.0.2.1:5060", "user_agent": "fake", "expires_in": 60}
                for u in self.site.users[:1]]

    def active_calls(self) -> list[dict[str, Any]]:
        return []
