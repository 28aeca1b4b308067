"""The routing model: the part of the site that routing needs, as frozen dataclasses.

The agent maps its pydantic site configuration into this model; dialplan never sees
pydantic, so it stays pure and its tests build sites in a few lines. Cross-references
(unique numbers, known schedules, pilot length) are checked here too, so that a model
that exists is one route() can use without guarding every lookup.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dialplan.attendant import Attendant
from dialplan.hunt import HuntGroup
from dialplan.numbers import NumberingPlan, is_extension_shape
from dialplan.restriction import ClassOfRestriction, RestrictionRules
from dialplan.schedule import Schedule
from dialplan.target import Target

HUNT_PILOT_LENGTH = 4
DEFAULT_NO_ANSWER_TIMEOUT = 20  # seconds


class Feature(enum.Enum):
    DND_ON = "dnd-on"
    DND_OFF = "dnd-off"
    FORWARD_ALL_SET = "forward-all-set"
    FORWARD_ALL_CLEAR = "forward-all-clear"
    FORWARD_BUSY_SET = "forward-busy-set"
    FORWARD_BUSY_CLEAR = "forward-busy-clear"
    FORWARD_NO_ANSWER_SET = "forward-no-answer-set"
    FORWARD_NO_ANSWER_CLEAR = "forward-no-answer-clear"
    HUNT_LOGIN = "hunt-login"
    HUNT_LOGOUT = "hunt-logout"
    VOICEMAIL_OWN = "voicemail-own"
    VOICEMAIL_ANY = "voicemail-any"
    PICKUP_GROUP = "pickup-group"
    PICKUP_DIRECTED = "pickup-directed"
    PARK = "park"
    RETRIEVE = "retrieve"
    INTERCOM = "intercom"  # two-way auto-answer call to the extension that follows


class Argument(enum.Enum):
    """Whether digits may follow a feature code (*72 + 1001: forward all to 1001)."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


FEATURE_ARGUMENT: Mapping[Feature, Argument] = MappingProxyType(
    {
        Feature.DND_ON: Argument.NONE,
        Feature.DND_OFF: Argument.NONE,
        Feature.FORWARD_ALL_SET: Argument.REQUIRED,
        Feature.FORWARD_ALL_CLEAR: Argument.NONE,
        Feature.FORWARD_BUSY_SET: Argument.REQUIRED,
        Feature.FORWARD_BUSY_CLEAR: Argument.NONE,
        Feature.FORWARD_NO_ANSWER_SET: Argument.REQUIRED,
        Feature.FORWARD_NO_ANSWER_CLEAR: Argument.NONE,
        Feature.HUNT_LOGIN: Argument.OPTIONAL,  # the pilot; none: every group of the user
        Feature.HUNT_LOGOUT: Argument.OPTIONAL,
        Feature.VOICEMAIL_OWN: Argument.NONE,
        Feature.VOICEMAIL_ANY: Argument.OPTIONAL,  # the mailbox; none: the menu asks
        Feature.PICKUP_GROUP: Argument.NONE,
        Feature.PICKUP_DIRECTED: Argument.REQUIRED,  # the ringing extension
        Feature.PARK: Argument.OPTIONAL,  # the slot; none: the first free one
        Feature.RETRIEVE: Argument.REQUIRED,  # the slot
        Feature.INTERCOM: Argument.REQUIRED,  # the extension
    }
)

# Common North American / Cisco-style codes, so phones' printed guides mostly apply.
DEFAULT_FEATURE_CODES: Mapping[Feature, str] = MappingProxyType(
    {
        Feature.DND_ON: "*78",
        Feature.DND_OFF: "*79",
        Feature.FORWARD_ALL_SET: "*72",
        Feature.FORWARD_ALL_CLEAR: "*73",
        Feature.FORWARD_BUSY_SET: "*90",
        Feature.FORWARD_BUSY_CLEAR: "*91",
        Feature.FORWARD_NO_ANSWER_SET: "*92",
        Feature.FORWARD_NO_ANSWER_CLEAR: "*93",
        Feature.HUNT_LOGIN: "*50",
        Feature.HUNT_LOGOUT: "*51",
        Feature.VOICEMAIL_OWN: "*97",
        Feature.VOICEMAIL_ANY: "*98",
        Feature.PICKUP_GROUP: "*8",
        Feature.PICKUP_DIRECTED: "**",
        Feature.PARK: "*70",
        Feature.RETRIEVE: "*71",
        Feature.INTERCOM: "*96",
    }
)


@dataclass(frozen=True, slots=True)
class FeatureCodes:
    """Feature code per feature; a site overrides some and keeps the defaults for the rest.

    Codes are matched longest first, so "*8" (group pickup) and "*88" could coexist; a
    code must still not equal another, and must start with '*'.
    """

    overrides: Mapping[Feature, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        codes = list(self.codes.values())
        if len(set(codes)) != len(codes):
            raise ValueError("two features share a code")
        for code in codes:
            if not re.fullmatch(r"\*[0-9*#]+", code):
                raise ValueError(f"feature code {code!r} must be '*' and then keys")

    @property
    def codes(self) -> dict[Feature, str]:
        return {**DEFAULT_FEATURE_CODES, **self.overrides}


@dataclass(frozen=True, slots=True)
class Forward:
    """Call forwarding; each target is a dial string as the user would dial it."""

    all: str | None = None
    busy: str | None = None
    no_answer: str | None = None
    no_answer_timeout: int = DEFAULT_NO_ANSWER_TIMEOUT


@dataclass(frozen=True, slots=True)
class User:
    """A user and the extension they answer on.

    mobile: single number reach, dialed as the user would dial it (so the class of
    restriction applies to it), rung `mobile_delay` seconds after the desk phone.
    """

    extension: str
    cor: ClassOfRestriction = ClassOfRestriction.NATIONAL
    forward: Forward = field(default_factory=Forward)
    dnd: bool = False
    voicemail: bool = True
    speed_dials: Mapping[str, str] = field(default_factory=dict)
    mobile: str | None = None
    mobile_delay: int = 0
    name: str = ""


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    emergency: bool = True  # may carry emergency calls


@dataclass(frozen=True, slots=True)
class NightService:
    """While `schedule` is closed, calls to any of `numbers` go to `destination`."""

    schedule: str
    numbers: frozenset[str]
    destination: Target


@dataclass(frozen=True, slots=True)
class SiteModel:
    users: tuple[User, ...] = ()
    hunt_groups: tuple[HuntGroup, ...] = ()
    attendants: tuple[Attendant, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    night_services: tuple[NightService, ...] = ()
    trunks: tuple[Trunk, ...] = ()
    numbering: NumberingPlan = field(default_factory=NumberingPlan)
    restriction: RestrictionRules = field(default_factory=RestrictionRules)
    feature_codes: FeatureCodes = field(default_factory=FeatureCodes)
    # Numbers answered by the agent's own applications (the extension assigner, ...):
    # number -> application name.
    services: Mapping[str, str] = field(default_factory=dict)
    # Lookup tables, built once in __post_init__.
    _users: dict[str, User] = field(init=False, repr=False, compare=False)
    _hunts: dict[str, HuntGroup] = field(init=False, repr=False, compare=False)
    _attendants: dict[str, Attendant] = field(init=False, repr=False, compare=False)
    _schedules: dict[str, Schedule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        numbers: list[str] = [u.extension for u in self.users]
        numbers += [h.pilot for h in self.hunt_groups]
        numbers += [a.number for a in self.attendants if a.number is not None]
        numbers += list(self.services)
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        if duplicates:
            raise ValueError(f"numbers used twice: {', '.join(duplicates)}")
        for user in self.users:
            if not is_extension_shape(user.extension, self.numbering):
                raise ValueError(f"extension {user.extension!r} is not 3-5 digits without 0")
        for group in self.hunt_groups:
            if not (group.pilot.isascii() and group.pilot.isdigit()
                    and len(group.pilot) == HUNT_PILOT_LENGTH):
                raise ValueError(f"hunt pilot {group.pilot!r} is not 4 digits")
        schedules = {s.name: s for s in self.schedules}
        for night in self.night_services:
            if night.schedule not in schedules:
                raise ValueError(f"night service names unknown schedule {night.schedule!r}")
        object.__setattr__(self, "_users", {u.extension: u for u in self.users})
        object.__setattr__(self, "_hunts", {h.pilot: h for h in self.hunt_groups})
        object.__setattr__(
            self, "_attendants", {a.number: a for a in self.attendants if a.number is not None}
        )
        object.__setattr__(self, "_schedules", schedules)

    def user(self, extension: str | None) -> User | None:
        return None if extension is None else self._users.get(extension)

    def hunt_group(self, pilot: str) -> HuntGroup | None:
        return self._hunts.get(pilot)

    def attendant_at(self, number: str) -> Attendant | None:
        return self._attendants.get(number)

    def schedule(self, name: str) -> Schedule:
        return self._schedules[name]

    def is_local_number(self, number: str) -> bool:
        return (number in self._users or number in self._hunts or number in self._attendants
                or number in self.services)
