"""The VPN reconnect/backoff state machine (agent/vpn/core.py): pure, on a virtual clock."""

from __future__ import annotations

import itertools

import pytest

from agent.vpn.core import (
    TRANSITIONS,
    BackoffPolicy,
    Initiate,
    Input,
    Kind,
    Load,
    State,
    Terminate,
    VpnCore,
)

NO_JITTER = BackoffPolicy(base=1.0, factor=2.0, cap=60.0, jitter=0.0, stable_after=30.0)


def core(policy: BackoffPolicy = NO_JITTER, u: float = 0.5) -> VpnCore:
    return VpnCore(policy=policy, rng=lambda: u)


def bring_up(c: VpnCore, now: float = 0.0, ike_id: str = "1") -> None:
    actions = c.handle(Input(Kind.START), now) if c.state is State.DOWN else c.handle_timer(now)
    (load,) = actions
    assert isinstance(load, Load)
    assert c.handle(Input(Kind.LOAD_OK, attempt=load.attempt), now) == [Initiate(load.attempt)]
    assert c.handle(Input(Kind.INITIATE_OK, attempt=load.attempt, ike_id=ike_id), now) == []
    assert c.state is State.UP


def fail_attempt(c: VpnCore, now: float, *, at_load: bool = False) -> float:
    """Run the attempt the timer starts at now into a failure; return the backoff delay."""
    (load,) = c.handle_timer(now)
    assert isinstance(load, Load) and c.state is State.CONNECTING
    if at_load:
        c.handle(Input(Kind.LOAD_FAILED, attempt=load.attempt, error="no socket"), now)
    else:
        c.handle(Input(Kind.LOAD_OK, attempt=load.attempt), now)
        c.handle(Input(Kind.INITIATE_FAILED, attempt=load.attempt, error="timeout"), now)
    assert c.state is State.BACKOFF
    deadline = c.get_timer()
    assert deadline is not None
    return deadline - now


# --------------------------------------------------------------------------- the table


def test_the_table_covers_every_state_and_input():
    assert set(TRANSITIONS) == set(itertools.product(State, Kind))


@pytest.mark.parametrize(("state", "kind"), list(itertools.product(State, Kind)))
def test_every_pair_is_handled_without_error(state, kind):
    c = core()
    c.state = state
    c.attempt = 3
    c.since = 0.0
    c.next_attempt = 5.0 if state is State.BACKOFF else None
    actions = c.handle(Input(kind, attempt=3, error="x", ike_id="1"), 10.0)
    assert all(isinstance(a, Load | Initiate | Terminate) for a in actions)
    assert c.state in State


# (state, input, next state, actions) for the current attempt (3) at t=10 with no jitter.
CASES = [
    (State.DOWN, Kind.START, State.CONNECTING, [Load(4, False)]),
    (State.DOWN, Kind.STOP, State.DOWN, []),
    (State.DOWN, Kind.INITIATE_OK, State.DOWN, []),
    (State.CONNECTING, Kind.LOAD_OK, State.CONNECTING, [Initiate(3)]),
    (State.CONNECTING, Kind.LOAD_FAILED, State.BACKOFF, []),
    (State.CONNECTING, Kind.INITIATE_OK, State.UP, []),
    (State.CONNECTING, Kind.INITIATE_FAILED, State.BACKOFF, []),
    (State.CONNECTING, Kind.SA_DOWN, State.CONNECTING, []),
    (State.CONNECTING, Kind.STOP, State.DOWN, [Terminate()]),
    (State.UP, Kind.SA_DOWN, State.BACKOFF, []),
    (State.UP, Kind.SESSION_LOST, State.BACKOFF, []),
    (State.UP, Kind.STOP, State.DOWN, [Terminate()]),
    (State.UP, Kind.START, State.UP, []),
    (State.BACKOFF, Kind.TIMER, State.CONNECTING, [Load(4, False)]),
    (State.BACKOFF, Kind.STOP, State.DOWN, [Terminate()]),
    (State.BACKOFF, Kind.SA_DOWN, State.BACKOFF, []),
]


@pytest.mark.parametrize(("state", "kind", "after", "actions"), CASES)
def test_transition_table(state, kind, after, actions):
    c = core()
    c.state, c.attempt, c.since = state, 3, 0.0
    c.next_attempt = 10.0 if state is State.BACKOFF else None
    assert c.handle(Input(kind, attempt=3, error="boom"), 10.0) == actions
    assert c.state is after


# --------------------------------------------------------------------------- scenarios


def test_initiate_ok_goes_up():
    c = core()
    (load,) = c.handle(Input(Kind.START), 0.0)
    assert load == Load(1, reconnect=False)
    assert c.state is State.CONNECTING and c.since == 0.0
    assert c.handle(Input(Kind.LOAD_OK, attempt=1), 0.1) == [Initiate(1)]
    assert c.handle(Input(Kind.INITIATE_OK, attempt=1, ike_id="7"), 0.4) == []
    assert c.state is State.UP and c.since == 0.4 and c.ike_id == "7"
    assert c.get_timer() is None


def test_failures_back_off_doubling_up_to_the_cap():
    c = core()
    assert c.handle(Input(Kind.START), 0.0) == [Load(1, reconnect=False)]
    c.handle(Input(Kind.LOAD_OK, attempt=1), 0.0)
    c.handle(Input(Kind.INITIATE_FAILED, attempt=1, error="peer not responding"), 0.0)
    assert c.state is State.BACKOFF
    assert c.last_error == "peer not responding"
    now = 0.0
    delays = [c.get_timer()]
    for _ in range(9):
        now = c.get_timer() or 0.0
        # an early wake-up does nothing
        assert c.handle_timer(now - 0.01) == [] and c.state is State.BACKOFF
        delays.append(now + fail_attempt(c, now, at_load=True))
    gaps = [b - a for a, b in itertools.pairwise([0.0, *delays])]
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert c.failures == 10


def test_jitter_stays_within_bounds_and_under_the_cap():
    policy = BackoffPolicy(base=1.0, cap=60.0, jitter=0.2)
    assert policy.delay(1, 0.0) == pytest.approx(0.8)
    assert policy.delay(1, 0.999999) == pytest.approx(1.2, abs=1e-5)
    assert policy.delay(3, 0.5) == 4.0
    assert policy.delay(20, 0.999999) <= 60.0
    assert policy.delay(20, 0.0) == pytest.approx(48.0)


def test_success_resets_the_backoff():
    c = core()
    c.handle(Input(Kind.START), 0.0)
    c.handle(Input(Kind.LOAD_FAILED, attempt=1, error="x"), 0.0)
    fail_attempt(c, 1.0)
    assert c.failures == 2
    bring_up(c, now=c.get_timer() or 0.0)
    up_at = c.since
    # Up long enough: the next drop starts again at the base delay.
    c.handle(Input(Kind.SA_DOWN, error="deleted by peer"), up_at + 100)
    assert c.state is State.BACKOFF and c.failures == 1
    assert c.get_timer() == up_at + 101


def test_a_flapping_tunnel_keeps_backing_off():
    c = core()
    c.handle(Input(Kind.START), 0.0)
    c.handle(Input(Kind.LOAD_FAILED, attempt=1, error="x"), 0.0)  # failures 1
    bring_up(c, now=1.0)
    c.handle(Input(Kind.SA_DOWN, error="gone"), 2.0)  # up for 1 s only: failures 2
    assert c.failures == 2 and c.get_timer() == 4.0


def test_sa_deleted_reconnects_without_a_new_session():
    c = core()
    bring_up(c)
    c.handle(Input(Kind.SA_DOWN, error="the tunnel went down (no IKE_SA)"), 50.0)
    assert c.state is State.BACKOFF and c.last_error == "the tunnel went down (no IKE_SA)"
    assert c.handle_timer(51.0) == [Load(2, reconnect=False)]
    assert c.state is State.CONNECTING


def test_sa_down_for_an_older_ike_sa_is_ignored():
    c = core()
    bring_up(c, ike_id="5")
    assert c.handle(Input(Kind.SA_DOWN, ike_id="4"), 50.0) == []
    assert c.state is State.UP
    c.handle(Input(Kind.SA_DOWN, ike_id="5"), 50.0)
    assert c.state is State.BACKOFF


def test_charon_socket_gone_reconnects_the_session_and_reloads():
    c = core()
    bring_up(c)
    c.handle(Input(Kind.SESSION_LOST, error="VICI socket lost"), 40.0)
    assert c.state is State.BACKOFF and c.last_error == "VICI socket lost"
    # The next attempt reopens the session and loads everything again...
    assert c.handle_timer(41.0) == [Load(2, reconnect=True)]
    # ... charon is not back yet: the one after reconnects anyway (the session is gone).
    c.handle(Input(Kind.LOAD_FAILED, attempt=2, error="no socket"), 41.0)
    assert c.get_timer() == 43.0
    (load,) = c.handle_timer(43.0)
    assert load == Load(3, reconnect=False)
    c.handle(Input(Kind.LOAD_OK, attempt=3), 43.0)
    c.handle(Input(Kind.INITIATE_OK, attempt=3, ike_id="1"), 43.5)
    assert c.state is State.UP


def test_session_lost_while_connecting_or_in_backoff_marks_a_reconnect():
    c = core()
    c.handle(Input(Kind.START), 0.0)
    c.handle(Input(Kind.SESSION_LOST), 0.1)
    assert c.state is State.CONNECTING  # the in-flight operation reports for itself
    c.handle(Input(Kind.LOAD_FAILED, attempt=1, error="closed"), 0.2)
    assert c.handle_timer(1.2) == [Load(2, reconnect=True)]
    c.handle(Input(Kind.INITIATE_FAILED, attempt=2, error="x"), 1.3)
    c.handle(Input(Kind.SESSION_LOST), 1.4)
    assert c.handle_timer(10.0) == [Load(3, reconnect=True)]


def test_stop_goes_down_from_every_state_and_stale_results_are_ignored():
    c = core()
    c.handle(Input(Kind.START), 0.0)
    c.handle(Input(Kind.LOAD_OK, attempt=1), 0.0)
    assert c.handle(Input(Kind.STOP), 1.0) == [Terminate()]
    assert c.state is State.DOWN and c.since == 1.0 and c.get_timer() is None
    # the initiate that was in flight finishes after the stop
    assert c.handle(Input(Kind.INITIATE_OK, attempt=1, ike_id="1"), 2.0) == []
    assert c.state is State.DOWN
    # start again: a late result of the old attempt must not count for the new one
    (load,) = c.handle(Input(Kind.START), 3.0)
    assert load.attempt > 1
    assert c.handle(Input(Kind.INITIATE_OK, attempt=1), 3.1) == []
    assert c.state is State.CONNECTING
    c.handle(Input(Kind.LOAD_OK, attempt=load.attempt), 4.0)
    c.handle(Input(Kind.INITIATE_OK, attempt=load.attempt, ike_id="2"), 4.0)
    assert c.handle(Input(Kind.STOP), 5.0) == [Terminate()]
    assert c.state is State.DOWN and c.failures == 0


def test_stop_in_backoff_cancels_the_timer():
    c = core()
    c.handle(Input(Kind.START), 0.0)
    c.handle(Input(Kind.LOAD_FAILED, attempt=1, error="x"), 0.0)
    assert c.get_timer() == 1.0
    c.handle(Input(Kind.STOP), 0.5)
    assert c.get_timer() is None and c.state is State.DOWN
    assert c.handle_timer(1.0) == [] and c.state is State.DOWN


def test_snapshot_is_plain_data():
    c = core()
    c.handle(Input(Kind.START), 0.0)
    c.handle(Input(Kind.LOAD_FAILED, attempt=1, error="no socket"), 0.0)
    snap = c.snapshot()
    assert snap["state"] == "backoff" and snap["last_error"] == "no socket"
    assert snap["next_attempt"] == 1.0 and snap["failures"] == 1
