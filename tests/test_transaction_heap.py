"""One timer heap for all transactions: ordering, lazy deletion, compaction."""

from __future__ import annotations

import random

from txkit import TCP, UDP, Clock, request, response

from sipstack.transaction import State, TransactionLayer

E_SCHEDULE = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def test_many_transactions_fire_in_order_on_schedule() -> None:
    rng = random.Random(3261)
    layer = TransactionLayer()
    clock = Clock(layer)
    plan = []  # (start, answered_at or None, request)
    for _ in range(1500):
        start = round(rng.uniform(0, 20), 3)
        answered = round(start + rng.uniform(0.01, 40), 3) if rng.random() < 0.4 else None
        plan.append((start, answered, request("OPTIONS")))
    actions = sorted(
        [(s, 0, i) for i, (s, _a, _r) in enumerate(plan)]
        + [(a, 1, i) for i, (_s, a, _r) in enumerate(plan) if a is not None]
    )
    for at, kind, i in actions:
        clock.advance(at)
        req = plan[i][2]
        if kind == 0:
            layer.send_request(req, UDP, at)
        else:
            layer.receive(response(req, 200), UDP, at)
        clock.drain()
        deadline = layer.get_timer()
        assert deadline is None or deadline > at
    clock.advance(200.0)
    assert layer.active_count() == 0
    assert layer.get_timer() is None

    # Each transaction transmitted exactly on the E schedule from its start, up to its
    # answer (if any), and the virtual clock never went backwards.
    assert [s.at for s in clock.sent] == sorted(s.at for s in clock.sent)
    by_branch: dict[bytes, list[float]] = {}
    for s in clock.sent:
        branch = s.data.split(b"branch=", 1)[1].split(b"\r\n", 1)[0]
        by_branch.setdefault(branch, []).append(s.at)
    for start, answered, req in plan:
        got = by_branch[(req.top_via.branch or "").encode()]
        limit = answered if answered is not None else float("inf")
        expected = [round(start + t, 6) for t in E_SCHEDULE if start + t <= limit]
        assert [round(t, 6) for t in got] == expected


def test_get_timer_is_the_earliest_deadline() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), UDP, 10.0)  # E at 10.5
    assert layer.get_timer() == 10.5
    layer.send_request(request("INVITE"), UDP, 9.8)  # A at 10.3
    assert layer.get_timer() == 10.3
    layer.send_request(request("OPTIONS", transport="TCP"), TCP, 0.0)  # F at 32
    assert layer.get_timer() == 10.3
    layer.handle_timer(10.3)
    assert layer.get_timer() == 10.5


def test_late_handle_timer_rearms_from_now() -> None:
    """A clock that jumps fires each due timer once and re-arms relative to now."""
    clock = Clock(TransactionLayer())
    key = clock.layer.send_request(request("OPTIONS"), UDP, 0.0)
    clock.drain()
    clock.now = 10.0
    clock.layer.handle_timer(10.0)
    clock.drain()
    assert clock.times("OPTIONS") == [0.0, 10.0]
    assert clock.layer.get_timer() == 11.0  # E doubled to 1 s, from now
    assert clock.layer.state_of(key) is State.TRYING


def test_cancelled_timers_are_compacted() -> None:
    layer = TransactionLayer()
    reqs = [request("INVITE") for _ in range(6000)]
    for r in reqs:
        layer.send_request(r, UDP, 0.0)
    assert layer.stats.heap_size == 12000  # A and B each
    for r in reqs:
        layer.receive(response(r, 180), UDP, 0.1)  # stops A and B
    # Lazy deletion left stale entries; compaction keeps the heap bounded.
    assert layer.stats.heap_size <= 4096 * 2 + 2
    assert layer.get_timer() is None
    assert layer.active_count() == 6000
    layer.handle_timer(1000.0)
    assert layer.active_count() == 6000  # Proceeding has no timer: the TU owns it
    assert all(layer.state_of(k) is State.PROCEEDING for k in list(layer._clients))
