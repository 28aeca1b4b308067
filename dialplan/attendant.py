"""The auto attendant's menu logic as a pure state machine.

The runtime (agent/) owns the RTP leg, the prompt player, the DTMF detector and the
timers. It feeds events in and executes the actions that come out, in order: a Play
followed by more actions is played to its end first; a Play that ends the list is
reported back with PromptFinished (only for that Play: a Play replaces any playback).

The transitions are a table of (phase, event type) -> handler, in the style of h11: a
pair missing from the table is a runtime bug and raises AttendantError instead of being
silently ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from dialplan.schedule import Schedule, is_open
from dialplan.target import Target, TargetKind

# Prompt ids of the shipped system prompts (packaging/ provides the audio).
INVALID_OPTION = "invalid-option"
NO_INPUT = "no-input"
ENTER_EXTENSION = "enter-extension"
PLEASE_HOLD = "please-hold"
GOODBYE = "goodbye"

DIGITS = frozenset("0123456789*#")


class AttendantError(Exception):
    """An event arrived that the current phase does not expect (a runtime bug)."""


class OptionKind(enum.Enum):
    DIAL_BY_EXTENSION = "dial-by-extension"
    TRANSFER = "transfer"  # to an extension, hunt group, voicemail (the Target says which)
    OPERATOR = "operator"
    REPEAT = "repeat"
    SUBMENU = "submenu"
    BACK = "back"


@dataclass(frozen=True, slots=True)
class Option:
    kind: OptionKind
    target: Target | None = None  # TRANSFER
    menu: str | None = None  # SUBMENU

    def __post_init__(self) -> None:
        if (self.kind is OptionKind.TRANSFER) != (self.target is not None):
            raise ValueError("a transfer option, and only it, has a target")
        if (self.kind is OptionKind.SUBMENU) != (self.menu is not None):
            raise ValueError("a submenu option, and only it, names a menu")


@dataclass(frozen=True, slots=True)
class Menu:
    """A menu: its prompts, one option per key, and how long to wait for a key."""

    id: str
    prompts: tuple[str, ...]
    options: Mapping[str, Option]
    timeout: float = 5.0

    def __post_init__(self) -> None:
        for key in self.options:
            if key not in DIGITS:
                raise ValueError(f"menu {self.id}: option key {key!r} is not a single DTMF key")


@dataclass(frozen=True, slots=True)
class Attendant:
    """An auto attendant: open and closed menus chosen by schedule, and the operator.

    extensions: the numbers dial-by-extension may reach; anything else is invalid input,
    so that a caller cannot use the attendant to reach a pilot or feature it should not.
    operator: where failures go; None means say goodbye and hang up.
    max_failures: invalid keys plus timeouts in a menu before the operator takes over.
    """

    name: str
    menus: tuple[Menu, ...]
    open_menu: str
    closed_menu: str | None = None
    schedule: Schedule | None = None
    operator: Target | None = None
    extensions: frozenset[str] = frozenset()
    max_failures: int = 2
    extension_digits: int = 5
    number: str | None = None  # a dialable pilot number, if any

    def __post_init__(self) -> None:
        ids = {m.id for m in self.menus}
        if len(ids) != len(self.menus):
            raise ValueError(f"attendant {self.name}: duplicate menu id")
        for menu_id in (self.open_menu, self.closed_menu):
            if menu_id is not None and menu_id not in ids:
                raise ValueError(f"attendant {self.name}: no menu {menu_id!r}")
        for menu in self.menus:
            for option in menu.options.values():
                if option.menu is not None and option.menu not in ids:
                    raise ValueError(f"menu {menu.id}: no sub-menu {option.menu!r}")
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")

    def menu(self, menu_id: str) -> Menu:
        return next(m for m in self.menus if m.id == menu_id)


# ---------------------------------------------------------------- events and actions


@dataclass(frozen=True, slots=True)
class Start:
    now: datetime


@dataclass(frozen=True, slots=True)
class Digit:
    digit: str

    def __post_init__(self) -> None:
        if self.digit not in DIGITS:
            raise ValueError(f"{self.digit!r} is not a DTMF key")


@dataclass(frozen=True, slots=True)
class Timeout:
    pass


@dataclass(frozen=True, slots=True)
class PromptFinished:
    pass


Event = Start | Digit | Timeout | PromptFinished


@dataclass(frozen=True, slots=True)
class Play:
    prompts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CollectDigits:
    max_digits: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Transfer:
    target: Target


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


Action = Play | CollectDigits | Transfer | Hangup


class Phase(enum.Enum):
    IDLE = "idle"
    PLAYING = "playing"  # menu prompts; a key barges in
    COLLECTING = "collecting"  # waiting for a menu key
    EXT_PLAYING = "ext-playing"  # "enter the extension"
    EXT_COLLECTING = "ext-collecting"  # collecting extension digits
    DONE = "done"


@dataclass(frozen=True, slots=True)
class State:
    """Where a call is: the menu stack (current last), failures in this menu, and the
    extension digits entered so far."""

    phase: Phase = Phase.IDLE
    stack: tuple[str, ...] = ()
    failures: int = 0
    digits: str = ""

    @property
    def menu(self) -> str:
        return self.stack[-1]


@dataclass(frozen=True, slots=True)
class Result:
    state: State
    actions: tuple[Action, ...]


# ---------------------------------------------------------------- transitions


def _play_menu(att: Attendant, state: State, prefix: tuple[str, ...] = ()) -> Result:
    menu = att.menu(state.menu)
    new = replace(state, phase=Phase.PLAYING, digits="")
    return Result(new, (Play(prefix + menu.prompts),))


def _done(state: State, *actions: Action) -> Result:
    return Result(replace(state, phase=Phase.DONE), actions)


def _goodbye(state: State) -> Result:
    return _done(state, Play((GOODBYE,)), Hangup())


def _transfer(state: State, target: Target) -> Result:
    if target.kind is TargetKind.HANGUP:
        return _goodbye(state)
    return _done(state, Transfer(target))


def _operator(att: Attendant, state: State) -> Result:
    if att.operator is None:
        return _goodbye(state)
    return _done(state, Play((PLEASE_HOLD,)), Transfer(att.operator))


def _failure(att: Attendant, state: State, prompt: str) -> Result:
    failures = state.failures + 1
    if failures >= att.max_failures:
        return _operator(att, replace(state, failures=failures))
    return _play_menu(att, replace(state, failures=failures), (prompt,))


def _on_start(att: Attendant, state: State, event: Event) -> Result:
    assert isinstance(event, Start)
    menu_id = att.open_menu
    closed = att.schedule is not None and not is_open(att.schedule, event.now)
    if closed and att.closed_menu is not None:
        menu_id = att.closed_menu
    return _play_menu(att, State(stack=(menu_id,)))


def _on_menu_prompt_finished(att: Attendant, state: State, event: Event) -> Result:
    menu = att.menu(state.menu)
    return Result(replace(state, phase=Phase.COLLECTING), (CollectDigits(1, menu.timeout),))


def _on_menu_digit(att: Attendant, state: State, event: Event) -> Result:
    assert isinstance(event, Digit)
    option = att.menu(state.menu).options.get(event.digit)
    if option is None:
        return _failure(att, state, INVALID_OPTION)
    kind = option.kind
    if kind is OptionKind.TRANSFER:
        assert option.target is not None
        return _transfer(state, option.target)
    if kind is OptionKind.OPERATOR:
        return _operator(att, state)
    if kind is OptionKind.REPEAT:
        return _play_menu(att, state)
    if kind is OptionKind.SUBMENU:
        assert option.menu is not None
        return _play_menu(att, State(stack=(*state.stack, option.menu)))
    if kind is OptionKind.BACK:
        # Back from the top menu repeats it: there is nowhere else to go.
        stack = state.stack[:-1] if len(state.stack) > 1 else state.stack
        return _play_menu(att, State(stack=stack))
    # DIAL_BY_EXTENSION
    new = replace(state, phase=Phase.EXT_PLAYING, digits="")
    return Result(new, (Play((ENTER_EXTENSION,)),))


def _on_menu_timeout(att: Attendant, state: State, event: Event) -> Result:
    return _failure(att, state, NO_INPUT)


def _on_ext_prompt_finished(att: Attendant, state: State, event: Event) -> Result:
    menu = att.menu(state.menu)
    new = replace(state, phase=Phase.EXT_COLLECTING)
    return Result(new, (CollectDigits(att.extension_digits, menu.timeout),))


def _finish_extension(att: Attendant, state: State) -> Result:
    if state.digits in att.extensions:
        return _done(state, Transfer(Target.number(state.digits)))
    return _failure(att, state, INVALID_OPTION)


def _on_ext_digit(att: Attendant, state: State, event: Event) -> Result:
    assert isinstance(event, Digit)
    if event.digit == "*":  # cancel: back to the menu, not a failure
        return _play_menu(att, state)
    if event.digit == "#":
        return _finish_extension(att, state)
    state = replace(state, phase=Phase.EXT_COLLECTING, digits=state.digits + event.digit)
    if len(state.digits) >= att.extension_digits:
        return _finish_extension(att, state)
    return Result(state, ())


def _on_ext_timeout(att: Attendant, state: State, event: Event) -> Result:
    if not state.digits:
        return _failure(att, state, NO_INPUT)
    return _finish_extension(att, state)


Handler = Callable[[Attendant, State, Event], Result]

TRANSITIONS: dict[tuple[Phase, type[Event]], Handler] = {
    (Phase.IDLE, Start): _on_start,
    (Phase.PLAYING, PromptFinished): _on_menu_prompt_finished,
    (Phase.PLAYING, Digit): _on_menu_digit,  # barge-in
    (Phase.COLLECTING, Digit): _on_menu_digit,
    (Phase.COLLECTING, Timeout): _on_menu_timeout,
    (Phase.EXT_PLAYING, PromptFinished): _on_ext_prompt_finished,
    (Phase.EXT_PLAYING, Digit): _on_ext_digit,  # barge-in
    (Phase.EXT_COLLECTING, Digit): _on_ext_digit,
    (Phase.EXT_COLLECTING, Timeout): _on_ext_timeout,
}


def step(att: Attendant, state: State, event: Event) -> Result:
    """Feed one event; get the next state and the actions to run, in order."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise AttendantError(f"{type(event).__name__} not expected in phase {state.phase.value}")
    return handler(att, state, event)
