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
                 phones: list[dict[str, Any]] | None = None) -> None:
        self._status = status if status is not None else {"version": "0.0.test", "pid": 1}
        self._phones = phones if phones is not None else []

    def status(self) -> dict[str, Any]:
        return self._status

    def phones(self) -> list[dict[str, Any]]:
        return self._phones


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
