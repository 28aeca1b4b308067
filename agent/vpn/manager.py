"""The VPN manager: keeps the IKEv2 tunnel to the portal up, driving charon over VICI.

This is the thin asyncio adapter around :class:`agent.vpn.core.VpnCore` (the sans-I/O
reconnect/backoff state machine). It

* carries out the core's actions (``Load``, ``Initiate``, ``Terminate``) on **one worker
  thread** with one VICI command session (the ``vici`` package is blocking and a session is
  not thread-safe), and feeds the results back to the core;
* arms a single ``loop.call_at`` for the core's backoff deadline;
* listens for ``ike-updown`` / ``child-updown`` on a **separate VICI event session in a
  daemon thread** (``Session.listen`` blocks; it is run with a 0.5 s receive timeout so the
  thread can notice stop) and hands each event to the loop with ``call_soon_threadsafe``;
* polls ``list-sas`` every ``poll_interval`` seconds while up, and at once after any
  up/down event of our connection.

Why events *and* a poll: events are immediate but can be missed (the listener reconnects
after charon restarts, and a reauthentication emits "down" for an old IKE_SA while a new one
is up). So an event only pokes the poll, and the poll (is our CHILD_SA INSTALLED?) is what
declares the SA down. The poll also refreshes the byte counters for ``status()``. A charon
restart is seen by the listener as its socket closing (``SESSION_LOST``): the core then
reconnects the command session and reloads everything at the next attempt.

Portal traffic only goes through the tunnel: :meth:`VpnManager.inner_address_ready` gives
the inner address only while our CHILD_SA is INSTALLED *and* the address is on a local
interface; the portal client refuses to run without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.vpn import vici_ops
from agent.vpn.core import (
    Action,
    BackoffPolicy,
    Initiate,
    Input,
    Kind,
    Load,
    State,
    Terminate,
    VpnCore,
)
from agent.vpn.vici_ops import SESSION_ERRORS, VICI_ERRORS, SaInfo, VpnConfig, VpnError

__all__ = ["VpnManager", "address_is_local"]

log = logging.getLogger(__name__)

EVENTS = ("ike-updown", "child-updown")
LISTEN_TIMEOUT = 0.5  # the listener thread checks for stop this often
LISTENER_RETRY = 0.5  # reconnecting the event session after charon went away


def address_is_local(address: str) -> bool:
    """True if a socket can bind to address here, i.e. it is on a local interface."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


class VpnManager:
    """Keeps one tunnel up. ``await start()``, ``await stop()``; ``status()`` at any time."""

    def __init__(
        self, config: VpnConfig, *, policy: BackoffPolicy | None = None,
        poll_interval: float = 5.0,
        address_check: Callable[[str], bool] = address_is_local,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.poll_interval = poll_interval
        self._address_check = address_check
        self._on_change = on_change
        self._core = VpnCore(policy=policy or BackoffPolicy())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._poll_task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._changed = asyncio.Event()
        # The command session: used only on the executor thread; the lock guards swapping
        # it against stop() shutting the socket down from the loop thread.
        self._cmd: Any = None
        self._cmd_sock: socket.socket | None = None
        self._cmd_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ev_sock: socket.socket | None = None
        self._sa: SaInfo | None = None
        self._cert_not_after: dt.datetime | None = None
        self._last_state = State.DOWN

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> State:
        return self._core.state

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpn-vici")
        self._stopping.clear()
        self._listener = threading.Thread(target=self._listen_thread, name="vpn-events",
                                          daemon=True)
        self._listener.start()
        self._poll_task = asyncio.create_task(self._poll_loop(), name="vpn-poll")
        log.info("vpn: starting %s to %s (inner %s)", self.config.name,
                 self.config.remote_addr, self.config.inner_address)
        self._feed(Input(Kind.START))

    async def stop(self) -> None:
        """Tear the tunnel down (best effort) and stop every thread; idempotent."""
        if self._loop is None:
            return
        if self._core.state is State.CONNECTING:
            self._abort_command()  # an initiate may block for initiate_timeout
        self._feed(Input(Kind.STOP))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        self._stopping.set()
        vici_ops.close(self._ev_sock)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5.0)
            self._listener = None
        assert self._executor is not None
        await self._loop.run_in_executor(self._executor, self._drop_command)
        self._executor.shutdown(wait=True)
        self._executor = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None
        log.info("vpn: stopped")

    async def wait_for(self, *states: State, timeout: float) -> State:
        """Wait until the state is one of states; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while self._core.state not in states:
                self._changed.clear()
                await self._changed.wait()
        return self._core.state

    # ------------------------------------------------------------------ what others ask

    def inner_address_ready(self) -> str | None:
        """The inner address, only while our CHILD_SA is INSTALLED and the address is local.

        The portal client binds every connection to this address and refuses to run
        without it, so portal traffic never leaves outside the tunnel.
        """
        sa = self._sa
        if self._core.state is not State.UP or sa is None or not sa.installed:
            return None
        address = self.config.inner_address
        return address if self._address_check(address) else None

    async def refresh(self) -> dict[str, Any]:
        """Ask charon now (fresh byte counters, is the SA still there?); then status()."""
        loop, pool = self._loop, self._executor
        if loop is not None and pool is not None and self._core.state is State.UP:
            attempt = self._core.attempt
            try:
                sa = await loop.run_in_executor(pool, self._op_query)
            except VICI_ERRORS:
                sa = None
            if self._core.state is State.UP and self._core.attempt == attempt:
                if sa is not None and sa.installed:
                    self._sa = sa
                else:
                    self._poke.set()  # the poll loop decides and reports why
                    await asyncio.sleep(0)
        return self.status()

    def status(self) -> dict[str, Any]:
        """For `edgepbx status`: state, since, last error, next attempt, SA details."""
        core = self._core
        now_mono = self._loop.time() if self._loop is not None else time.monotonic()
        now_wall = time.time()

        def wall(mono: float | None) -> float | None:
            return None if mono is None else now_wall + (mono - now_mono)

        next_at = core.get_timer()
        up = core.state is State.UP and self._sa is not None
        return {
            "state": core.state.value,
            "since": _iso(wall(core.since)) if core.transitions else None,
            "for_seconds": round(now_mono - core.since, 1) if core.transitions else None,
            "last_error": core.last_error,
            "failures": core.failures,
            "next_attempt": _iso(wall(next_at)),
            "next_attempt_in": None if next_at is None else round(max(0.0, next_at - now_mono),
                                                                   1),
            "connection": self.config.name,
            "remote": self.config.remote_addr,
            "inner_address": self.config.inner_address,
            "remote_ts": list(self.config.remote_ts),
            "inner_address_ready": self.inner_address_ready() is not None,
            "sa": self._sa.as_dict() if up and self._sa is not None else None,
            "certificate_not_after": (self._cert_not_after.isoformat(timespec="seconds")
                                      if self._cert_not_after else None),
        }

    # ------------------------------------------------------------------ the core's loop

    def _feed(self, event: Input) -> None:
        loop = self._loop
        if loop is None:
            return
        actions = self._core.handle(event, loop.time())
        self._rearm()
        state = self._core.state
        if state is not self._last_state:
            log.info("vpn: %s -> %s%s", self._last_state.value, state.value,
                     f" ({self._core.last_error})" if state is State.BACKOFF else "")
            if state is State.BACKOFF:
                nxt = self._core.get_timer()
                log.info("vpn: next attempt in %.1fs", (nxt or loop.time()) - loop.time())
            self._last_state = state
            if state is not State.UP:
                self._sa = None
            self._changed.set()
            if self._on_change is not None:
                self._on_change(state.value)
        for action in actions:
            self._dispatch(action)

    def _rearm(self) -> None:
        assert self._loop is not None
        deadline = self._core.get_timer()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._loop is None:
            return
        self._feed(Input(Kind.TIMER))

    def _dispatch(self, action: Action) -> None:
        task = asyncio.create_task(self._run(action), name=f"vpn-{type(action).__name__}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, action: Action) -> None:
        assert self._loop is not None and self._executor is not None
        loop, pool = self._loop, self._executor
        try:
            if isinstance(action, Load):
                not_after = await loop.run_in_executor(pool, self._op_load, action.reconnect)
                self._cert_not_after = not_after
                self._feed(Input(Kind.LOAD_OK, attempt=action.attempt))
            elif isinstance(action, Initiate):
                sa = await loop.run_in_executor(pool, self._op_initiate)
                self._sa = sa
                log.info("vpn: CHILD_SA installed: %s === %s (%s)", ",".join(sa.local_ts),
                         ",".join(sa.remote_ts), sa.esp_proposal)
                self._feed(Input(Kind.INITIATE_OK, attempt=action.attempt, ike_id=sa.ike_id))
            elif isinstance(action, Terminate):
                await loop.run_in_executor(pool, self._op_terminate)
        except VICI_ERRORS as exc:
            error = _describe(exc)
            log.warning("vpn: %s failed: %s", type(action).__name__.lower(), error)
            if isinstance(action, Load):
                self._feed(Input(Kind.LOAD_FAILED, attempt=action.attempt, error=error))
            elif isinstance(action, Initiate):
                self._feed(Input(Kind.INITIATE_FAILED, attempt=action.attempt, error=error))
        except Exception as exc:  # the reconnect loop must never stall: log, back off
            log.exception("vpn: unexpected error in %s", type(action).__name__)
            error = f"internal error: {exc!r}"
            if isinstance(action, Load):
                self._feed(Input(Kind.LOAD_FAILED, attempt=action.attempt, error=error))
            elif isinstance(action, Initiate):
                self._feed(Input(Kind.INITIATE_FAILED, attempt=action.attempt, error=error))

    # ------------------------------------------------------------------ the poll

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._poke.wait()
            self._poke.clear()
            if self._core.state is not State.UP or self._loop is None:
                continue
            attempt = self._core.attempt
            try:
                assert self._executor is not None
                sa = await self._loop.run_in_executor(self._executor, self._op_query)
            except VICI_ERRORS as exc:
                if self._core.state is State.UP and self._core.attempt == attempt:
                    kind = Kind.SESSION_LOST if isinstance(exc, SESSION_ERRORS) else Kind.SA_DOWN
                    self._feed(Input(kind, error=f"list-sas: {_describe(exc)}"))
                continue
            if self._core.state is not State.UP or self._core.attempt != attempt:
                continue
            if sa is None or not sa.installed:
                what = "no IKE_SA" if sa is None else f"IKE {sa.ike_state}, CHILD {sa.child_state}"
                self._feed(Input(Kind.SA_DOWN, error=f"the tunnel went down ({what})"))
            else:
                self._sa = sa

    # ------------------------------------------------------------------ executor side

    def _session(self, *, reconnect: bool = False) -> Any:
        with self._cmd_lock:
            if reconnect and self._cmd_sock is not None:
                vici_ops.close(self._cmd_sock)
                self._cmd = self._cmd_sock = None
            if self._cmd is None:
                self._cmd, self._cmd_sock = vici_ops.connect(
                    self.config.vici_socket, timeout=self.config.connect_timeout,
                    io_timeout=self.config.initiate_timeout + 15.0)
            return self._cmd

    def _drop_command(self) -> None:
        with self._cmd_lock:
            vici_ops.close(self._cmd_sock)
            self._cmd = self._cmd_sock = None

    def _abort_command(self) -> None:
        """From the loop thread: unblock an in-flight VICI call (its op then fails)."""
        with self._cmd_lock:
            if self._cmd_sock is not None:
                with contextlib.suppress(OSError):
                    self._cmd_sock.shutdown(socket.SHUT_RDWR)

    def _guarded(self, fn: Callable[[Any], Any], *, reconnect: bool = False) -> Any:
        """Run fn(session); a broken session is dropped so the next call reconnects."""
        try:
            return fn(self._session(reconnect=reconnect))
        except SESSION_ERRORS:
            self._drop_command()
            raise

    def _op_load(self, reconnect: bool) -> dt.datetime:
        loaded = self._guarded(lambda s: vici_ops.load_all(s, self.config), reconnect=reconnect)
        return loaded.cert_not_after  # type: ignore[no-any-return]

    def _op_initiate(self) -> SaInfo:
        return self._guarded(lambda s: vici_ops.initiate(s, self.config))  # type: ignore[no-any-return]

    def _op_query(self) -> SaInfo | None:
        return self._guarded(lambda s: vici_ops.find_sa(s, self.config))  # type: ignore[no-any-return]

    def _op_terminate(self) -> None:
        try:
            self._guarded(lambda s: vici_ops.terminate(s, self.config, wait_ms=2000))
        except VICI_ERRORS as exc:
            log.info("vpn: terminate on stop: %s", _describe(exc))

    # ------------------------------------------------------------------ the event thread

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or self._stopping.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            loop.call_soon_threadsafe(fn, *args)

    def _listen_thread(self) -> None:
        connected_before = False
        while not self._stopping.is_set():
            try:
                session, sock = vici_ops.connect(self.config.vici_socket,
                                                 timeout=self.config.connect_timeout,
                                                 io_timeout=None)
            except OSError:
                self._stopping.wait(LISTENER_RETRY)
                continue
            self._ev_sock = sock
            if connected_before:
                log.info("vpn: event session reconnected")
            connected_before = True
            # Events may have been missed while we were not listening: check now.
            self._post(self._poke.set)
            error = "VICI event session closed"
            try:
                for label, event in session.listen(list(EVENTS), timeout=LISTEN_TIMEOUT):
                    if self._stopping.is_set():
                        break
                    if label is not None:
                        self._post(self._on_vici_event, label.decode(), event)
            except VICI_ERRORS as exc:
                error = f"VICI socket lost (charon stopped or restarted?): {_describe(exc)}"
            finally:
                self._ev_sock = None
                vici_ops.close(sock)
            if not self._stopping.is_set():
                self._post(self._on_session_lost, error)
                self._stopping.wait(LISTENER_RETRY)

    def _on_vici_event(self, name: str, event: dict[str, Any]) -> None:
        ours = event.get(self.config.name)
        if ours is None:
            return
        up = event.get("up") == b"yes"
        log.info("vpn: %s %s for %s", name, "up" if up else "down", self.config.name)
        self._poke.set()  # the poll decides: is our CHILD_SA still INSTALLED?

    def _on_session_lost(self, error: str) -> None:
        log.warning("vpn: %s", error)
        self._feed(Input(Kind.SESSION_LOST, error=error))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, VpnError):
        return text
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return f"charon's VICI socket is not there ({text})"
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text
