"""dialplan.attendant: walks through the menu state machine, and its transition table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time
from types import MappingProxyType

import pytest

from dialplan.attendant import (
    ENTER_EXTENSION,
    GOODBYE,
    INVALID_OPTION,
    NO_INPUT,
    PLEASE_HOLD,
    TRANSITIONS,
    Action,
    Attendant,
    AttendantError,
    CollectDigits,
    Digit,
    Event,
    Hangup,
    Menu,
    Option,
    OptionKind,
    Phase,
    Play,
    PromptFinished,
    Start,
    State,
    Timeout,
    Transfer,
    step,
)
from dialplan.schedule import Hours, Schedule
from dialplan.target import Target

OPEN_HOURS = Schedule(
    "office", "Europe/Berlin", tuple(Hours(d, time(8, 0), time(18, 0)) for d in range(5))
)
MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
SUNDAY = datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
OPERATOR = Target.number("100")

MAIN = Menu(
    "main",
    ("main-greeting",),
    MappingProxyType({
        "1": Option(OptionKind.TRANSFER, target=Target.number("2000")),
        "2": Option(OptionKind.SUBMENU, menu="support"),
        "3": Option(OptionKind.DIAL_BY_EXTENSION),
        "4": Option(OptionKind.TRANSFER, target=Target.voicemail("101")),
        "0": Option(OptionKind.OPERATOR),
        "9": Option(OptionKind.REPEAT),
        "*": Option(OptionKind.BACK),
        "#": Option(OptionKind.TRANSFER, target=Target.hangup()),
    }),
)


SUPPORT = Menu(
    "support",
    ("support-menu",),
    MappingProxyType({
        "1": Option(OptionKind.TRANSFER, target=Target.number("2001")),
        "*": Option(OptionKind.BACK),
    }),
    timeout=8.0,
)
CLOSED = Menu(
    "closed",
    ("closed-greeting",),
    MappingProxyType({
        "1": Option(OptionKind.TRANSFER, target=Target.voicemail("100")),
        "0": Option(OptionKind.OPERATOR),
    }),
)
ATT = Attendant(
    name="main",
    menus=(MAIN, SUPPORT, CLOSED),
    open_menu="main",
    closed_menu="closed",
    schedule=OPEN_HOURS,
    operator=OPERATOR,
    extensions=frozenset({"101", "102", "10101"}),
)
NO_OPERATOR = replace(ATT, operator=None)
NO_CLOSED_MENU = replace(ATT, closed_menu=None)

PF = PromptFinished()
TO = Timeout()


def D(digit: str) -> Digit:
    return Digit(digit)


COLLECT = CollectDigits(1, 5.0)
PLAY_MAIN = Play(("main-greeting",))
# A walk: the events in order and, for each, the actions expected back.
Walk = list[tuple[Event, tuple[Action, ...]]]
WALKS: list[tuple[str, Attendant, Walk, Phase]] = [
    ("valid-path", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (D("1"), (Transfer(Target.number("2000")),)),
    ], Phase.DONE),
    ("barge-in-during-prompt", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("4"), (Transfer(Target.voicemail("101")),)),
    ], Phase.DONE),
    ("invalid-twice-to-operator", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (D("7"), (Play((INVALID_OPTION, "main-greeting")),)),
        (PF, (COLLECT,)),
        (D("8"), (Play((PLEASE_HOLD,)), Transfer(OPERATOR))),
    ], Phase.DONE),
    ("timeout-then-valid", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (TO, (Play((NO_INPUT, "main-greeting")),)),
        (PF, (COLLECT,)),
        (D("4"), (Transfer(Target.voicemail("101")),)),
    ], Phase.DONE),
    ("timeout-twice-to-operator", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (TO, (Play((NO_INPUT, "main-greeting")),)),
        (PF, (COLLECT,)),
        (TO, (Play((PLEASE_HOLD,)), Transfer(OPERATOR))),
    ], Phase.DONE),
    ("invalid-then-timeout-to-operator", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("7"), (Play((INVALID_OPTION, "main-greeting")),)),
        (PF, (COLLECT,)),
        (TO, (Play((PLEASE_HOLD,)), Transfer(OPERATOR))),
    ], Phase.DONE),
    ("no-operator-says-goodbye", NO_OPERATOR, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("7"), (Play((INVALID_OPTION, "main-greeting")),)),
        (D("7"), (Play((GOODBYE,)), Hangup())),
    ], Phase.DONE),
    ("operator-key", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("0"), (Play((PLEASE_HOLD,)), Transfer(OPERATOR))),
    ], Phase.DONE),
    ("hangup-option", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("#"), (Play((GOODBYE,)), Hangup())),
    ], Phase.DONE),
    ("repeat", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (D("9"), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
    ], Phase.COLLECTING),
    ("submenu-and-back", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (D("2"), (Play(("support-menu",)),)),
        (PF, (CollectDigits(1, 8.0),)),
        (D("*"), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (D("1"), (Transfer(Target.number("2000")),)),
    ], Phase.DONE),
    ("submenu-transfer", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("2"), (Play(("support-menu",)),)),
        (D("1"), (Transfer(Target.number("2001")),)),
    ], Phase.DONE),
    ("submenu-resets-failures", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("7"), (Play((INVALID_OPTION, "main-greeting")),)),
        (D("2"), (Play(("support-menu",)),)),
        (D("5"), (Play((INVALID_OPTION, "support-menu")),)),
    ], Phase.PLAYING),
    ("back-at-top-repeats", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("*"), (PLAY_MAIN,)),
    ], Phase.PLAYING),
    ("dial-by-extension-hash", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("3"), (Play((ENTER_EXTENSION,)),)),
        (PF, (CollectDigits(5, 5.0),)),
        (D("1"), ()),
        (D("0"), ()),
        (D("1"), ()),
        (D("#"), (Transfer(Target.number("101")),)),
    ], Phase.DONE),
    ("dial-by-extension-barge-in-and-timeout", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("3"), (Play((ENTER_EXTENSION,)),)),
        (D("1"), ()),
        (D("0"), ()),
        (D("2"), ()),
        (TO, (Transfer(Target.number("102")),)),
    ], Phase.DONE),
    ("dial-by-extension-max-digits", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("3"), (Play((ENTER_EXTENSION,)),)),
        *[(D(d), ()) for d in "1010"],
        (D("1"), (Transfer(Target.number("10101")),)),
    ], Phase.DONE),
    ("dial-by-extension-unknown-is-invalid", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("3"), (Play((ENTER_EXTENSION,)),)),
        (D("2"), ()),
        (D("0"), ()),
        (D("0"), ()),
        (D("0"), ()),
        (D("#"), (Play((INVALID_OPTION, "main-greeting")),)),
    ], Phase.PLAYING),
    ("dial-by-extension-no-digits-timeout", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("3"), (Play((ENTER_EXTENSION,)),)),
        (PF, (CollectDigits(5, 5.0),)),
        (TO, (Play((NO_INPUT, "main-greeting")),)),
    ], Phase.PLAYING),
    ("dial-by-extension-star-cancels", ATT, [
        (Start(MONDAY_10), (PLAY_MAIN,)),
        (D("3"), (Play((ENTER_EXTENSION,)),)),
        (D("1"), ()),
        (D("*"), (PLAY_MAIN,)),
        (PF, (COLLECT,)),
        (D("1"), (Transfer(Target.number("2000")),)),
    ], Phase.DONE),
    ("closed-hours-menu", ATT, [
        (Start(SUNDAY), (Play(("closed-greeting",)),)),
        (PF, (COLLECT,)),
        (D("2"), (Play((INVALID_OPTION, "closed-greeting")),)),
        (D("1"), (Transfer(Target.voicemail("100")),)),
    ], Phase.DONE),
    ("closed-hours-without-closed-menu", NO_CLOSED_MENU, [
        (Start(SUNDAY), (PLAY_MAIN,)),
    ], Phase.PLAYING),
]


@pytest.mark.parametrize(
    ("att", "walk", "final_phase"), [w[1:] for w in WALKS], ids=[w[0] for w in WALKS]
)
def test_walk(att: Attendant, walk: Walk, final_phase: Phase) -> None:
    state = State()
    for number, (event, expected) in enumerate(walk):
        result = step(att, state, event)
        assert result.actions == expected, f"step {number}: {event}"
        state = result.state
    assert state.phase is final_phase


EVENTS: list[Event] = [Start(MONDAY_10), Digit("1"), Timeout(), PromptFinished()]
MISSING = [
    (phase, event)
    for phase in Phase
    for event in EVENTS
    if (phase, type(event)) not in TRANSITIONS
]


@pytest.mark.parametrize(
    ("phase", "event"), MISSING, ids=[f"{p.value}-{type(e).__name__}" for p, e in MISSING]
)
def test_pairs_outside_the_table_raise(phase: Phase, event: Event) -> None:
    state = State(phase=phase, stack=("main",))
    with pytest.raises(AttendantError):
        step(ATT, state, event)


def test_done_accepts_nothing() -> None:
    assert not [k for k in TRANSITIONS if k[0] is Phase.DONE]


BAD = [
    ("unknown-open-menu", lambda: replace(ATT, open_menu="nope")),
    ("unknown-submenu", lambda: Attendant("x", (Menu("m", (), {"1": Option(
        OptionKind.SUBMENU, menu="gone")}),), open_menu="m")),
    ("transfer-without-target", lambda: Option(OptionKind.TRANSFER)),
    ("submenu-without-menu", lambda: Option(OptionKind.SUBMENU)),
    ("two-key-option", lambda: Menu("m", (), {"12": Option(OptionKind.REPEAT)})),
    ("zero-failures", lambda: replace(ATT, max_failures=0)),
    ("bad-digit-event", lambda: Digit("A")),
]


@pytest.mark.parametrize("build", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_attendant_rejected(build: object) -> None:
    assert callable(build)
    with pytest.raises(ValueError):
        build()
