"""From a dialplan Decision to what call control does: ring, refuse, or hand over.

Pure: the engine calls :func:`plan_for` with a decision and gets back one of
RingPlan (legs to ring, step by step), Refuse (a final status for the caller),
ToApplication (voicemail, attendant: the media applications' hook) or the
dialplan FeatureCode itself. Diversions are unwrapped here and named in the plan,
so the B leg can carry a Diversion header and the record can say why.
"""

from __future__ import annotations

from dataclasses import dataclass

from dialplan.route import (
    Busy,
    Decision,
    Diverted,
    FeatureCode,
    HangUp,
    Invalid,
    NotFound,
    Restricted,
    ToAttendant,
    ToHuntGroup,
    ToService,
    ToTrunk,
    ToUser,
    ToVoicemail,
    Unroutable,
)
from dialplan.target import Target


@dataclass(frozen=True, slots=True)
class Dest:
    """One thing to ring: a local extension (all its contacts) or a number on a trunk."""

    extension: str | None = None
    trunk: str | None = None
    number: str | None = None
    delay: float = 0.0  # seconds after the step starts (single number reach)
    emergency: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # added to its INVITE (intercom: auto-answer)

    @property
    def label(self) -> str:
        return self.extension or self.number or ""


@dataclass(frozen=True, slots=True)
class Step:
    """Ring ``dests`` together; give up after ``timeout`` seconds (None: the far end's
    own timers decide, as for a trunk call)."""

    dests: tuple[Dest, ...]
    timeout: float | None


@dataclass(frozen=True, slots=True)
class RingPlan:
    steps: tuple[Step, ...]
    on_busy: Target | None = None
    on_no_answer: Target | None = None
    owner: str | None = None  # the extension whose forwards these are (their class applies)
    hunt_group: str | None = None
    diversion: str | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    status: int
    reason: str  # for the log, the Warning header and the call record
    disposition: str = "failed"


@dataclass(frozen=True, slots=True)
class ToApplication:
    """A media application: "voicemail" (value: mailbox), "attendant" (value: name),
    "paging" (value: the paging group's name), "assigner"."""

    kind: str
    value: str
    reason: str = ""
    diversion: str | None = None


Plan = RingPlan | Refuse | ToApplication | FeatureCode


def plan_for(decision: Decision, diversion: str | None = None) -> Plan:
    """What to do for ``decision``; ``diversion`` is the number that diverted the call."""
    if isinstance(decision, Diverted):
        return plan_for(decision.then, diversion or decision.number)
    if isinstance(decision, ToUser):
        dests = [Dest(extension=decision.extension)]
        if decision.mobile is not None:
            dests.append(Dest(trunk=decision.mobile.trunk, number=decision.mobile.number,
                              delay=float(decision.mobile_delay)))
        step = Step(tuple(dests), float(decision.no_answer_timeout))
        return RingPlan((step,), decision.busy, decision.no_answer, decision.extension,
                        diversion=diversion)
    if isinstance(decision, ToHuntGroup):
        hunt = decision.plan
        steps = tuple(
            Step(tuple(Dest(extension=ext) for ext in s.targets), float(s.timeout))
            for s in hunt.steps
        )
        return RingPlan(steps, None, hunt.final, None, hunt.pilot, diversion)
    if isinstance(decision, ToTrunk):
        dest = Dest(trunk=decision.trunk, number=decision.number, emergency=decision.emergency)
        return RingPlan((Step((dest,), None),), diversion=diversion)
    if isinstance(decision, ToVoicemail):
        return ToApplication("voicemail", decision.mailbox, decision.reason, diversion)
    if isinstance(decision, ToAttendant):
        return ToApplication("attendant", decision.name, "", diversion)
    if isinstance(decision, ToService):
        # "kind:value" (a paging group: "paging:<name>") or a bare application name.
        kind, _, value = decision.name.partition(":")
        return ToApplication(kind, value or kind, "", diversion)
    if isinstance(decision, FeatureCode):
        return decision
    if isinstance(decision, Busy):
        return Refuse(486, f"{decision.extension}: {decision.reason}", "busy")
    if isinstance(decision, Restricted):
        return Refuse(403, f"{decision.number} not allowed: {decision.decision.reason}")
    if isinstance(decision, NotFound):
        return Refuse(404, f"{decision.dialed} is not a number here")
    if isinstance(decision, Invalid):
        return Refuse(484, decision.reason)
    if isinstance(decision, Unroutable):
        return Refuse(503 if "trunk" in decision.reason else 482, decision.reason)
    if isinstance(decision, HangUp):
        return Refuse(480, decision.reason, "no-answer")
    raise AssertionError(f"unhandled decision {decision!r}")
