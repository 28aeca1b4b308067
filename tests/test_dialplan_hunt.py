"""dialplan.hunt: each strategy's order and timeouts, skip rules, final destination."""

from __future__ import annotations

import pytest

from dialplan.hunt import (
    MAX_MEMBERS,
    HuntGroup,
    HuntPlan,
    HuntState,
    Member,
    Step,
    Strategy,
    plan,
)
from dialplan.target import Target

VM = Target.voicemail("100")
MEMBERS = (
    Member("101", ring_time=10),
    Member("102", ring_time=15),
    Member("103", ring_time=20),
    Member("104", ring_time=25, dynamic=True),
)


def group(strategy: Strategy, members: tuple[Member, ...] = MEMBERS) -> HuntGroup:
    return HuntGroup("2000", strategy, members, final=VM)


def order(result: HuntPlan) -> list[tuple[tuple[str, ...], int]]:
    return [(s.targets, s.timeout) for s in result.steps]


SEQ, CIRC, IDLE, PAR = (
    Strategy.SEQUENTIAL,
    Strategy.CIRCULAR,
    Strategy.LONGEST_IDLE,
    Strategy.PARALLEL,
)


LOGGED = frozenset({"104"})

CASES = [
    # (id, strategy, state, expected [(targets, timeout)])
    ("seq-static-only", SEQ, HuntState(),
     [(("101",), 10), (("102",), 15), (("103",), 20)]),
    ("seq-dynamic-logged-in", SEQ, HuntState(logged_in=LOGGED),
     [(("101",), 10), (("102",), 15), (("103",), 20), (("104",), 25)]),
    ("seq-skips-unavailable", SEQ, HuntState(unavailable=frozenset({"102"}), logged_in=LOGGED),
     [(("101",), 10), (("103",), 20), (("104",), 25)]),
    ("seq-logged-in-but-busy", SEQ, HuntState(unavailable=frozenset({"104"}), logged_in=LOGGED),
     [(("101",), 10), (("102",), 15), (("103",), 20)]),
    ("circ-no-history-starts-first", CIRC, HuntState(),
     [(("101",), 10), (("102",), 15), (("103",), 20)]),
    ("circ-after-101", CIRC, HuntState(last_offered="101"),
     [(("102",), 15), (("103",), 20), (("101",), 10)]),
    ("circ-after-last-wraps", CIRC, HuntState(last_offered="103"),
     [(("101",), 10), (("102",), 15), (("103",), 20)]),
    ("circ-after-102-with-dynamic", CIRC, HuntState(last_offered="102", logged_in=LOGGED),
     [(("103",), 20), (("104",), 25), (("101",), 10), (("102",), 15)]),
    # 104 was offered last but has logged out since: the rotation still moves past it.
    ("circ-last-offered-now-logged-out", CIRC, HuntState(last_offered="104"),
     [(("101",), 10), (("102",), 15), (("103",), 20)]),
    ("circ-after-103-skips-busy-101", CIRC,
     HuntState(last_offered="103", unavailable=frozenset({"101"})),
     [(("102",), 15), (("103",), 20)]),
    ("circ-unknown-last-offered", CIRC, HuntState(last_offered="999"),
     [(("101",), 10), (("102",), 15), (("103",), 20)]),
    ("idle-oldest-end-first", IDLE,
     HuntState(last_call_end={"101": 300.0, "102": 100.0, "103": 200.0}),
     [(("102",), 15), (("103",), 20), (("101",), 10)]),
    ("idle-never-called-first-in-list-order", IDLE,
     HuntState(last_call_end={"101": 300.0}, logged_in=LOGGED),
     [(("102",), 15), (("103",), 20), (("104",), 25), (("101",), 10)]),
    ("idle-ties-keep-list-order", IDLE,
     HuntState(last_call_end={"101": 5.0, "102": 5.0, "103": 5.0}),
     [(("101",), 10), (("102",), 15), (("103",), 20)]),
    ("idle-skips-unavailable", IDLE,
     HuntState(last_call_end={"101": 1.0, "102": 2.0, "103": 3.0},
               unavailable=frozenset({"101"})),
     [(("102",), 15), (("103",), 20)]),
    ("parallel-one-step-longest-ring-time", PAR, HuntState(logged_in=LOGGED),
     [(("101", "102", "103", "104"), 25)]),
    ("parallel-timeout-from-eligible-only", PAR, HuntState(),
     [(("101", "102", "103"), 20)]),
    ("parallel-skips-unavailable", PAR, HuntState(unavailable=frozenset({"101", "103"})),
     [(("102",), 15)]),
]


@pytest.mark.parametrize(
    ("strategy", "state", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_order_and_timeouts(
    strategy: Strategy, state: HuntState, expected: list[tuple[tuple[str, ...], int]]
) -> None:
    result = plan(group(strategy), state)
    assert order(result) == expected
    assert result.final == VM
    assert result.pilot == "2000"


@pytest.mark.parametrize("strategy", list(Strategy), ids=[s.value for s in Strategy])
def test_nobody_available_goes_straight_to_final(strategy: Strategy) -> None:
    state = HuntState(unavailable=frozenset({"101", "102", "103"}), logged_in=frozenset())
    final = Target.attendant("main")
    result = plan(HuntGroup("2000", strategy, MEMBERS, final=final), state)
    assert result.steps == ()
    assert result.final == final


@pytest.mark.parametrize(
    "final",
    [Target.number("100"), Target.voicemail("2000"), Target.attendant("main")],
    ids=["extension", "voicemail", "attendant"],
)
def test_final_destination_kinds(final: Target) -> None:
    assert plan(HuntGroup("2000", SEQ, MEMBERS, final=final), HuntState()).final == final


def test_32_members_accepted_33_refused() -> None:
    members = tuple(Member(str(1000 + i)) for i in range(MAX_MEMBERS))
    result = plan(HuntGroup("2000", PAR, members, final=VM), HuntState())
    assert result.steps == (Step(tuple(m.extension for m in members), 20),)
    with pytest.raises(ValueError, match="max 32"):
        HuntGroup("2000", PAR, (*members, Member("1999")), final=VM)


@pytest.mark.parametrize(
    "build",
    [lambda: Member("101", ring_time=0),
     lambda: HuntGroup("2000", SEQ, (Member("101"), Member("101")), final=VM)],
    ids=["zero-ring-time", "duplicate-member"],
)
def test_bad_group_rejected(build: object) -> None:
    assert callable(build)
    with pytest.raises(ValueError):
        build()
