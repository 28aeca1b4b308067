"""The VPN reconnect state machine, sans-I/O.

No sockets, no clock, no asyncio: every input carries ``now`` (monotonic seconds) and the
core answers with actions for the adapter (:mod:`agent.vpn.manager`) to carry out. The
adapter asks :meth:`VpnCore.get_timer` for the one deadline to arm and calls
:meth:`VpnCore.handle_timer` when it passes.

States::

    DOWN --start--> CONNECTING --load ok--> (Initiate) --initiate ok--> UP
                        |  load/initiate failed              | SA deleted, VICI lost
                        v                                     v
                     BACKOFF <--------------------------------+
                        |  timer (1 s, 2 s, 4 s ... 60 s, +-jitter)
                        +--> CONNECTING
    any --stop--> DOWN

Every attempt is *Load then Initiate*: the adapter (re)connects the VICI command session if
needed and loads key, certificates and connection each time. Reloading is idempotent and
cheap, so a charon that restarted behind our back (its memory empty) or a renewed device
certificate on disk is picked up by the next attempt whatever we noticed. After the VICI
socket was seen to go away (:data:`Kind.SESSION_LOST`) the next Load also drops and reopens
the session (``reconnect=True``).

Results carry the attempt number they answer; a result from an older attempt (stop and start
raced with a slow initiate) is ignored. Transitions are a table (``TRANSITIONS``) covering
every (state, input) pair; tests walk all of them.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from agent.backoff import Backoff


class State(enum.Enum):
    DOWN = "down"
    CONNECTING = "connecting"
    UP = "up"
    BACKOFF = "backoff"


class Kind(enum.Enum):
    START = "start"
    STOP = "stop"
    TIMER = "timer"
    LOAD_OK = "load-ok"
    LOAD_FAILED = "load-failed"
    INITIATE_OK = "initiate-ok"
    INITIATE_FAILED = "initiate-failed"
    SA_DOWN = "sa-down"  # ike-updown/child-updown "down", or a poll found no installed SA
    SESSION_LOST = "session-lost"  # the VICI socket closed: charon stopped or restarted


@dataclass(frozen=True)
class Input:
    kind: Kind
    attempt: int = 0  # for results: the attempt they answer
    error: str | None = None
    ike_id: str | None = None  # INITIATE_OK: the IKE_SA's unique id; SA_DOWN: which one


# ---------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Load:
    """(Re)connect the VICI command session if needed, load key, certs and the connection."""

    attempt: int
    reconnect: bool  # drop and reopen the session first: it was seen to go away


@dataclass(frozen=True)
class Initiate:
    """Initiate the CHILD_SA (adopting one that is already installed)."""

    attempt: int


@dataclass(frozen=True)
class Terminate:
    """Tear down our IKE_SA, best effort (stop)."""


Action = Load | Initiate | Terminate


# ---------------------------------------------------------------------- backoff


@dataclass(frozen=True, slots=True)
class BackoffPolicy(Backoff):
    """:class:`agent.backoff.Backoff`, plus when a tunnel counts as having worked."""

    # An SA that stayed up this long counts as a success: the next failure starts at base.
    # One that drops sooner keeps the count growing, so a flapping tunnel backs off too.
    stable_after: float = 30.0


# ---------------------------------------------------------------------- the core


@dataclass
class VpnCore:
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    rng: Callable[[], float] = random.random
    state: State = State.DOWN
    since: float = 0.0
    attempt: int = 0
    failures: int = 0
    last_error: str | None = None
    next_attempt: float | None = None
    ike_id: str | None = None
    reconnect: bool = False  # the VICI session was lost: reopen it at the next Load
    transitions: int = 0

    # -- the adapter's entry points

    def handle(self, event: Input, now: float) -> list[Action]:
        try:
            handler = TRANSITIONS[(self.state, event.kind)]
        except KeyError:  # pragma: no cover - the table is complete (tested)
            raise AssertionError(f"no transition for {self.state} + {event.kind}") from None
        return handler(self, event, now)

    def get_timer(self) -> float | None:
        return self.next_attempt if self.state is State.BACKOFF else None

    def handle_timer(self, now: float) -> list[Action]:
        return self.handle(Input(Kind.TIMER), now)

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value, "since": self.since, "attempt": self.attempt,
            "failures": self.failures, "last_error": self.last_error,
            "next_attempt": self.get_timer(), "ike_id": self.ike_id,
        }

    # -- helpers

    def _enter(self, state: State, now: float) -> None:
        if state is not self.state:
            self.state = state
            self.since = now
            self.transitions += 1

    def _attempt(self, now: float) -> list[Action]:
        self.attempt += 1
        self.next_attempt = None
        self.ike_id = None
        self._enter(State.CONNECTING, now)
        reconnect, self.reconnect = self.reconnect, False
        return [Load(self.attempt, reconnect)]

    def _fail(self, error: str | None, now: float) -> list[Action]:
        self.failures += 1
        self.last_error = error or "unknown error"
        self.ike_id = None
        self.next_attempt = now + self.policy.delay(self.failures, self.rng())
        self._enter(State.BACKOFF, now)
        return []

    def _current(self, event: Input) -> bool:
        return event.attempt == self.attempt

    # -- transition handlers: (self, event, now) -> actions

    def _ignore(self, event: Input, now: float) -> list[Action]:
        return []

    def _start(self, event: Input, now: float) -> list[Action]:
        self.failures = 0
        return self._attempt(now)

    def _stop(self, event: Input, now: float) -> list[Action]:
        self.failures = 0
        self.next_attempt = None
        self.ike_id = None
        self.attempt += 1  # whatever is in flight is now stale
        self._enter(State.DOWN, now)
        return [Terminate()]

    def _timer(self, event: Input, now: float) -> list[Action]:
        if self.next_attempt is not None and now < self.next_attempt:
            return []  # early wakeup: keep waiting
        return self._attempt(now)

    def _load_ok(self, event: Input, now: float) -> list[Action]:
        if not self._current(event):
            return []
        return [Initiate(self.attempt)]

    def _attempt_failed(self, event: Input, now: float) -> list[Action]:
        if not self._current(event):
            return []
        return self._fail(event.error, now)

    def _initiate_ok(self, event: Input, now: float) -> list[Action]:
        if not self._current(event):
            return []
        self.ike_id = event.ike_id
        self.next_attempt = None
        self._enter(State.UP, now)
        return []

    def _up_lost(self, event: Input, now: float) -> list[Action]:
        if self.ike_id is not None and event.ike_id is not None and event.ike_id != self.ike_id:
            return []  # an older IKE_SA going away is not ours any more
        if now - self.since >= self.policy.stable_after:
            self.failures = 0
        return self._fail(event.error or "the SA went down", now)

    def _session_lost(self, event: Input, now: float) -> list[Action]:
        self.reconnect = True
        return []

    def _up_session_lost(self, event: Input, now: float) -> list[Action]:
        self.reconnect = True
        return self._up_lost(Input(Kind.SA_DOWN, error=event.error or "VICI session lost"), now)


_H = Callable[[VpnCore, Input, float], list[Action]]
S, K = State, Kind

TRANSITIONS: Final[dict[tuple[State, Kind], _H]] = {
    # DOWN: only start does anything; results and events are stale.
    (S.DOWN, K.START): VpnCore._start,
    (S.DOWN, K.STOP): VpnCore._ignore,
    (S.DOWN, K.TIMER): VpnCore._ignore,
    (S.DOWN, K.LOAD_OK): VpnCore._ignore,
    (S.DOWN, K.LOAD_FAILED): VpnCore._ignore,
    (S.DOWN, K.INITIATE_OK): VpnCore._ignore,
    (S.DOWN, K.INITIATE_FAILED): VpnCore._ignore,
    (S.DOWN, K.SA_DOWN): VpnCore._ignore,
    (S.DOWN, K.SESSION_LOST): VpnCore._session_lost,
    # CONNECTING: one Load or Initiate in flight; its result decides.
    (S.CONNECTING, K.START): VpnCore._ignore,
    (S.CONNECTING, K.STOP): VpnCore._stop,
    (S.CONNECTING, K.TIMER): VpnCore._ignore,
    (S.CONNECTING, K.LOAD_OK): VpnCore._load_ok,
    (S.CONNECTING, K.LOAD_FAILED): VpnCore._attempt_failed,
    (S.CONNECTING, K.INITIATE_OK): VpnCore._initiate_ok,
    (S.CONNECTING, K.INITIATE_FAILED): VpnCore._attempt_failed,
    # A failing attempt reports through its own result; down events are its echo.
    (S.CONNECTING, K.SA_DOWN): VpnCore._ignore,
    (S.CONNECTING, K.SESSION_LOST): VpnCore._session_lost,
    # UP: watch for the SA or the daemon going away.
    (S.UP, K.START): VpnCore._ignore,
    (S.UP, K.STOP): VpnCore._stop,
    (S.UP, K.TIMER): VpnCore._ignore,
    (S.UP, K.LOAD_OK): VpnCore._ignore,
    (S.UP, K.LOAD_FAILED): VpnCore._ignore,
    (S.UP, K.INITIATE_OK): VpnCore._ignore,
    (S.UP, K.INITIATE_FAILED): VpnCore._ignore,
    (S.UP, K.SA_DOWN): VpnCore._up_lost,
    (S.UP, K.SESSION_LOST): VpnCore._up_session_lost,
    # BACKOFF: wait for the timer.
    (S.BACKOFF, K.START): VpnCore._ignore,
    (S.BACKOFF, K.STOP): VpnCore._stop,  # a half-open IKE_SA may linger: best effort
    (S.BACKOFF, K.TIMER): VpnCore._timer,
    (S.BACKOFF, K.LOAD_OK): VpnCore._ignore,
    (S.BACKOFF, K.LOAD_FAILED): VpnCore._ignore,
    (S.BACKOFF, K.INITIATE_OK): VpnCore._ignore,
    (S.BACKOFF, K.INITIATE_FAILED): VpnCore._ignore,
    (S.BACKOFF, K.SA_DOWN): VpnCore._ignore,
    (S.BACKOFF, K.SESSION_LOST): VpnCore._session_lost,
}
