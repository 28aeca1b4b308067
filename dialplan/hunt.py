"""Hunt groups: who rings, in what order, for how long, and where the call goes after.

`plan` is a pure function from the group and the members' current state (passed in by
the runtime: registrations, busy calls, DND, logins, last-call times) to a HuntPlan. The
runtime walks the plan step by step; nothing here waits or remembers. A plan is computed
when the call arrives: a member who frees up during the hunt is not added, which matches
what callers of small-office systems expect and keeps the plan testable.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from dialplan.target import Target

MAX_MEMBERS = 32
DEFAULT_RING_TIME = 20  # seconds


class Strategy(enum.Enum):
    SEQUENTIAL = "sequential"  # in list order, every call
    CIRCULAR = "circular"  # round-robin: start after the member offered the last call
    LONGEST_IDLE = "longest-idle"  # whoever finished a call longest ago first
    PARALLEL = "parallel"  # ring everyone at once


@dataclass(frozen=True, slots=True)
class Member:
    """A member extension. Dynamic members ring only while logged in (feature code)."""

    extension: str
    ring_time: int = DEFAULT_RING_TIME
    dynamic: bool = False

    def __post_init__(self) -> None:
        if self.ring_time <= 0:
            raise ValueError(f"ring time of {self.extension} must be positive")


@dataclass(frozen=True, slots=True)
class HuntGroup:
    """A hunt group reached by its pilot number."""

    pilot: str
    strategy: Strategy
    members: tuple[Member, ...]
    final: Target
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.members) > MAX_MEMBERS:
            raise ValueError(f"hunt group {self.pilot} has {len(self.members)} members (max 32)")
        extensions = [m.extension for m in self.members]
        if len(set(extensions)) != len(extensions):
            raise ValueError(f"hunt group {self.pilot} lists a member twice")


@dataclass(frozen=True, slots=True)
class HuntState:
    """What the runtime knows right now.

    unavailable: busy, DND or unregistered extensions (the reason does not change the plan).
    logged_in: dynamic members currently logged in to this group.
    last_offered: the member offered the previous call (circular).
    last_call_end: epoch seconds when each member's last call ended (longest-idle);
    a member missing from it has never had a call and counts as idle the longest.
    """

    unavailable: frozenset[str] = frozenset()
    logged_in: frozenset[str] = frozenset()
    last_offered: str | None = None
    last_call_end: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """Ring `targets` together for `timeout` seconds."""

    targets: tuple[str, ...]
    timeout: int


@dataclass(frozen=True, slots=True)
class HuntPlan:
    """The steps in order, then the final destination if nobody answered."""

    pilot: str
    steps: tuple[Step, ...]
    final: Target


def eligible(group: HuntGroup, state: HuntState) -> list[Member]:
    """Members that may ring now, in list order."""
    return [
        m
        for m in group.members
        if m.extension not in state.unavailable
        and (not m.dynamic or m.extension in state.logged_in)
    ]


def _circular(group: HuntGroup, members: list[Member], last: str | None) -> list[Member]:
    # Rotate by position in the *full* member list, so that the rotation continues
    # correctly even when the last member offered is now busy or logged out.
    positions = {m.extension: i for i, m in enumerate(group.members)}
    if last not in positions:
        return members
    pivot = positions[last]
    return sorted(members, key=lambda m: (positions[m.extension] <= pivot, positions[m.extension]))


def _longest_idle(members: list[Member], last_end: Mapping[str, float]) -> list[Member]:
    # sorted() is stable: ties (including never-called members) keep list order.
    return sorted(members, key=lambda m: last_end.get(m.extension, float("-inf")))


def plan(group: HuntGroup, state: HuntState) -> HuntPlan:
    """The hunt plan for one call. No eligible member: no steps, straight to final."""
    members = eligible(group, state)
    if group.strategy is Strategy.PARALLEL:
        if not members:
            return HuntPlan(group.pilot, (), group.final)
        # One timeout for the whole ring-all: the longest member ring time, so that no
        # member rings for less than configured.
        step = Step(tuple(m.extension for m in members), max(m.ring_time for m in members))
        return HuntPlan(group.pilot, (step,), group.final)
    if group.strategy is Strategy.CIRCULAR:
        members = _circular(group, members, state.last_offered)
    elif group.strategy is Strategy.LONGEST_IDLE:
        members = _longest_idle(members, state.last_call_end)
    steps = tuple(Step((m.extension,), m.ring_time) for m in members)
    return HuntPlan(group.pilot, steps, group.final)
