"""route(): from what a caller dialed to a Decision, composing the other modules.

Order of checks (each a deliberate choice):
1. the caller's speed dials (exact match), expanded once and routed like a dial string;
2. malformed strings -> Invalid;
3. emergency numbers -> the trunk, always, whoever the caller (even unknown);
4. numbers of the site (users, hunt pilots, attendants), before feature codes and the
   outside line, so an exact internal match is never sent out;
5. feature codes -> FeatureCode (the agent applies them; routing has no state);
6. outside line -> translation -> class of restriction -> trunk;
7. anything else -> NotFound (the agent answers 404).

Diversions (forward all, night service) re-route the new destination with the
*diverting user's* class of restriction, so a forward can reach no further than its
owner could dial, and they are capped in depth to break forwarding loops.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from dialplan.hunt import HuntPlan, HuntState, plan
from dialplan.model import FEATURE_ARGUMENT, Argument, Feature, SiteModel, Trunk, User
from dialplan.numbers import Kind, classify, translate
from dialplan.restriction import Category, ClassOfRestriction, RestrictionDecision, decide
from dialplan.schedule import is_open
from dialplan.target import Target, TargetKind

MAX_DIVERSIONS = 5


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class ToTrunk:
    """Send `number` (translated) out of `trunk`."""

    trunk: str
    number: str
    emergency: bool = False


@dataclass(frozen=True, slots=True)
class ToUser:
    """Ring the user's registered contacts; on busy / no answer go to those targets (None:
    answer busy / stop ringing). `mobile` is single number reach, already checked against
    the user's class of restriction (None if absent or not allowed)."""

    extension: str
    no_answer_timeout: int
    busy: Target | None
    no_answer: Target | None
    mobile: ToTrunk | None = None
    mobile_delay: int = 0


@dataclass(frozen=True, slots=True)
class ToVoicemail:
    mailbox: str
    reason: str


@dataclass(frozen=True, slots=True)
class Busy:
    """Answer 486: the user is in DND without voicemail."""

    extension: str
    reason: str


@dataclass(frozen=True, slots=True)
class ToHuntGroup:
    plan: HuntPlan


@dataclass(frozen=True, slots=True)
class ToAttendant:
    name: str


@dataclass(frozen=True, slots=True)
class ToService:
    """A number answered by one of the agent's own applications (e.g. the assigner)."""

    name: str


@dataclass(frozen=True, slots=True)
class FeatureCode:
    """A recognised feature code for the agent to apply, with its digits if any."""

    feature: Feature
    argument: str | None = None


class DiversionReason(enum.Enum):
    FORWARD_ALL = "forward-all"
    NIGHT_SERVICE = "night-service"


@dataclass(frozen=True, slots=True)
class Diverted:
    """`number` was diverted; `then` is where the call goes (for the record: Diversion)."""

    number: str
    reason: DiversionReason
    then: Decision


@dataclass(frozen=True, slots=True)
class Restricted:
    """The caller's class of restriction refuses the number (the agent answers 403)."""

    number: str
    decision: RestrictionDecision


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str


@dataclass(frozen=True, slots=True)
class NotFound:
    dialed: str


@dataclass(frozen=True, slots=True)
class Invalid:
    dialed: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unroutable:
    """Well-formed and allowed, but there is no way there (no trunk, a forwarding loop)."""

    dialed: str
    reason: str


Decision = (
    ToTrunk
    | ToUser
    | ToVoicemail
    | Busy
    | ToHuntGroup
    | ToAttendant
    | ToService
    | FeatureCode
    | Diverted
    | Restricted
    | HangUp
    | NotFound
    | Invalid
    | Unroutable
)


# ---------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class _Context:
    site: SiteModel
    now: datetime
    hunt_states: Mapping[str, HuntState]


def route(
    site: SiteModel,
    caller: str | None,
    dialed: str,
    now: datetime,
    hunt_states: Mapping[str, HuntState] | None = None,
) -> Decision:
    """Decide where a call from `caller` (an extension, or None for an unknown/inbound
    source) to `dialed` goes at the instant `now` (aware). Never raises on any dial string."""
    ctx = _Context(site, now, hunt_states or {})
    return _route(ctx, site.user(caller), dialed, depth=0, speed_dials=True)


def route_target(
    site: SiteModel,
    caller: str | None,
    target: Target,
    now: datetime,
    hunt_states: Mapping[str, HuntState] | None = None,
) -> Decision:
    """Resolve a Target (a hunt group's final destination, a busy/no-answer forward, an
    attendant transfer) into a Decision, as `caller` would reach it."""
    ctx = _Context(site, now, hunt_states or {})
    return _target(ctx, site.user(caller), target, depth=0)


def _target(ctx: _Context, caller: User | None, target: Target, depth: int) -> Decision:
    if target.kind is TargetKind.VOICEMAIL:
        return ToVoicemail(target.value, "direct")
    if target.kind is TargetKind.ATTENDANT:
        return ToAttendant(target.value)
    if target.kind is TargetKind.HANGUP:
        return HangUp("configured")
    return _route(ctx, caller, target.value, depth=depth, speed_dials=False)


def _route(
    ctx: _Context, caller: User | None, dialed: str, *, depth: int, speed_dials: bool
) -> Decision:
    site = ctx.site
    if depth > MAX_DIVERSIONS:
        return Unroutable(dialed, "too many diversions (a forwarding loop?)")
    if speed_dials and caller is not None and dialed in caller.speed_dials:
        # Expanded once: a speed dial does not expand into another speed dial.
        return _route(ctx, caller, caller.speed_dials[dialed], depth=depth, speed_dials=False)
    classified = classify(dialed, site.numbering)
    if classified.kind is Kind.INVALID:
        return Invalid(dialed, classified.reason)
    if classified.kind is Kind.EMERGENCY:
        trunk = _trunk(site, emergency=True)
        if trunk is None:
            return Unroutable(dialed, "no trunk carries emergency calls")
        return ToTrunk(trunk.name, classified.number, emergency=True)
    if site.is_local_number(dialed):
        return _local(ctx, caller, dialed, depth)
    if classified.kind is Kind.FEATURE_CODE:
        return _feature(site, caller, dialed)
    if classified.kind is Kind.OUTSIDE:
        return _outside(site, caller, dialed, classified.number)
    return NotFound(dialed)


def _local(ctx: _Context, caller: User | None, number: str, depth: int) -> Decision:
    site = ctx.site
    for night in site.night_services:
        if number in night.numbers and not is_open(site.schedule(night.schedule), ctx.now):
            then = _target(ctx, caller, night.destination, depth + 1)
            return Diverted(number, DiversionReason.NIGHT_SERVICE, then)
    service = site.services.get(number)
    if service is not None:
        return ToService(service)
    group = site.hunt_group(number)
    if group is not None:
        return ToHuntGroup(plan(group, ctx.hunt_states.get(number, HuntState())))
    attendant = site.attendant_at(number)
    if attendant is not None:
        return ToAttendant(attendant.name)
    user = site.user(number)
    assert user is not None  # is_local_number said so
    return _user(ctx, user, depth)


def _user(ctx: _Context, user: User, depth: int) -> Decision:
    forward = user.forward
    # Forward-all wins over DND: an explicit destination serves the caller better than
    # voicemail, and it is what the user asked for most recently in practice.
    if forward.all is not None:
        then = _route(ctx, user, forward.all, depth=depth + 1, speed_dials=False)
        return Diverted(user.extension, DiversionReason.FORWARD_ALL, then)
    voicemail = Target.voicemail(user.extension) if user.voicemail else None
    if user.dnd:
        if voicemail is not None:
            return ToVoicemail(user.extension, "dnd")
        return Busy(user.extension, "dnd")
    mobile: ToTrunk | None = None
    if user.mobile is not None:
        decision = _route(ctx, user, user.mobile, depth=depth + 1, speed_dials=False)
        mobile = decision if isinstance(decision, ToTrunk) else None
    return ToUser(
        extension=user.extension,
        no_answer_timeout=forward.no_answer_timeout,
        busy=Target.number(forward.busy) if forward.busy else voicemail,
        no_answer=Target.number(forward.no_answer) if forward.no_answer else voicemail,
        mobile=mobile,
        mobile_delay=user.mobile_delay,
    )


def _feature(site: SiteModel, caller: User | None, dialed: str) -> Decision:
    codes = sorted(site.feature_codes.codes.items(), key=lambda fc: -len(fc[1]))
    for feature, code in codes:
        if not dialed.startswith(code):
            continue
        argument = dialed[len(code):]
        rule = FEATURE_ARGUMENT[feature]
        if argument and rule is Argument.NONE:
            continue  # maybe a shorter code's argument; else NotFound below
        if not argument and rule is Argument.REQUIRED:
            return Invalid(dialed, f"{feature.value} needs a number after {code}")
        if argument and not re.fullmatch(r"[0-9]+", argument):
            return Invalid(dialed, f"{feature.value}: argument {argument!r} is not digits")
        if caller is None:
            return Invalid(dialed, "feature codes need a known caller")
        return FeatureCode(feature, argument or None)
    return NotFound(dialed)


def _outside(site: SiteModel, caller: User | None, dialed: str, number: str) -> Decision:
    translated = translate(number, site.numbering.translations)
    # Unknown callers (inbound, unauthenticated) get the lowest class: toll fraud defence.
    cor = caller.cor if caller is not None else ClassOfRestriction.INTERNAL
    verdict = decide(translated, cor, site.restriction, site.numbering.emergency_numbers)
    if not verdict.allowed:
        return Restricted(translated, verdict)
    emergency = verdict.category is Category.EMERGENCY
    # A number that translates to an emergency number needs a trunk that carries them.
    trunk = _trunk(site, emergency=emergency)
    if trunk is None:
        return Unroutable(dialed, "no trunk carries emergency calls" if emergency else "no trunk")
    return ToTrunk(trunk.name, translated, emergency=emergency)


def _trunk(site: SiteModel, *, emergency: bool) -> Trunk | None:
    """The first trunk that may carry the call."""
    return next((t for t in site.trunks if t.emergency or not emergency), None)
