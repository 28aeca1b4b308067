"""dialplan.route: one decision of each kind, from a small but complete site."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialplan.attendant import Attendant, Menu
from dialplan.hunt import HuntGroup, HuntPlan, HuntState, Member, Step, Strategy
from dialplan.model import (
    Feature,
    FeatureCodes,
    Forward,
    NightService,
    SiteModel,
    Trunk,
    User,
)
from dialplan.numbers import NumberingPlan, Translation
from dialplan.restriction import Category, ClassOfRestriction, RestrictionRules, decide
from dialplan.route import (
    MAX_DIVERSIONS,
    Busy,
    Decision,
    DiversionReason,
    Diverted,
    FeatureCode,
    HangUp,
    Invalid,
    NotFound,
    Restricted,
    ToAttendant,
    ToHuntGroup,
    ToTrunk,
    ToUser,
    ToVoicemail,
    Unroutable,
    route,
    route_target,
)
from dialplan.schedule import Hours, Schedule
from dialplan.target import Target

COR = ClassOfRestriction
OPEN = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday 10:00 in Berlin
CLOSED = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # Monday 21:00 in Berlin

OFFICE = Schedule(
    "office", "Europe/Berlin", tuple(Hours(d, time(8, 0), time(18, 0)) for d in range(5))
)
NANP = (
    Translation(r"([2-9]\d{9})", r"+1\1"),
    Translation(r"1([2-9]\d{9})", r"+1\1"),
    Translation(r"011(\d+)", r"+\1"),
    Translation(r"([2-9]\d{6})", r"+1212\1"),
)
SALES = HuntGroup(
    "2000",
    Strategy.SEQUENTIAL,
    (Member("101", 10), Member("106", 15), Member("109", 20, dynamic=True)),
    final=Target.voicemail("2000"),
)
SUPPORT = HuntGroup(
    "2001", Strategy.PARALLEL, (Member("101"), Member("106")), final=Target.attendant("main")
)


SITE = SiteModel(
    users=(
        User("101", COR.NATIONAL, speed_dials={"#1": "92125551234", "#2": "9011442071234567"},
             mobile="93105559999", mobile_delay=5),
        User("102", COR.INTERNAL, dnd=True),
        User("103", COR.LOCAL, dnd=True, voicemail=False),
        User("104", COR.INTERNATIONAL, forward=Forward(all="102")),
        User("105", COR.LOCAL, forward=Forward(all="9011442071234567")),
        User("106", COR.NATIONAL, forward=Forward(busy="101", no_answer="2000",
                                                   no_answer_timeout=15)),
        User("107", forward=Forward(all="108")),
        User("108", forward=Forward(all="107")),
        User("109", COR.INTERNATIONAL, voicemail=False),
        User("110", COR.LOCAL, mobile="93105559999"),
        User("111", forward=Forward(all="3000"), dnd=True),
        User("950"),  # starts with the outside digit: reachable because the site knows it
    ),
    hunt_groups=(SALES, SUPPORT),
    attendants=(Attendant("main", (Menu("m", ("hello",), {}),), "m", number="3000"),),
    schedules=(OFFICE,),
    night_services=(
        NightService("office", frozenset({"2000"}), Target.number("101")),
        NightService("office", frozenset({"3000"}), Target.voicemail("100")),
        NightService("office", frozenset({"2001"}), Target.hangup()),
    ),
    trunks=(Trunk("carrier"),),
    numbering=NumberingPlan(translations=NANP),
    restriction=RestrictionRules(local_prefixes=("+1212",)),
)

VM101 = Target.voicemail("101")
MOBILE = ToTrunk("carrier", "+13105559999")


def restricted(number: str, cor: ClassOfRestriction, category: Category) -> Restricted:
    """The Restricted decision expected for `number` and a caller of class `cor`, with the
    category stated in the table (so a wrong categorisation fails here too)."""
    verdict = decide(number, cor, SITE.restriction, SITE.numbering.emergency_numbers)
    assert (verdict.allowed, verdict.category) == (False, category)
    return Restricted(number, verdict)


CASES: list[tuple[str, str | None, str, datetime, object]] = [
    # extensions
    ("ext-with-single-number-reach", "102", "101", OPEN,
     ToUser("101", 20, busy=VM101, no_answer=VM101, mobile=MOBILE, mobile_delay=5)),
    ("ext-forward-busy-and-no-answer", "101", "106", OPEN,
     ToUser("106", 15, busy=Target.number("101"), no_answer=Target.number("2000"))),
    ("ext-without-voicemail", "101", "109", OPEN, ToUser("109", 20, busy=None, no_answer=None)),
    ("ext-mobile-beyond-class-dropped", "101", "110", OPEN,
     ToUser("110", 20, busy=Target.voicemail("110"), no_answer=Target.voicemail("110"))),
    ("ext-starting-with-outside-digit", "101", "950", OPEN,
     ToUser("950", 20, busy=Target.voicemail("950"), no_answer=Target.voicemail("950"))),
    ("dnd-to-voicemail", "101", "102", OPEN, ToVoicemail("102", "dnd")),
    ("dnd-without-voicemail-busy", "101", "103", OPEN, Busy("103", "dnd")),
    ("forward-all-internal", "101", "104", OPEN,
     Diverted("104", DiversionReason.FORWARD_ALL, ToVoicemail("102", "dnd"))),
    ("forward-all-beats-dnd", "101", "111", OPEN,
     Diverted("111", DiversionReason.FORWARD_ALL, ToAttendant("main"))),
    ("forward-all-limited-by-forwarders-class", "109", "105", OPEN,
     Diverted("105", DiversionReason.FORWARD_ALL,
              restricted("+442071234567", COR.LOCAL, Category.INTERNATIONAL))),
    ("unknown-extension", "101", "199", OPEN, NotFound("199")),
    # hunt groups, attendant, night service
    ("hunt-pilot-open", "101", "2000", OPEN,
     ToHuntGroup(HuntPlan("2000", (Step(("101",), 10), Step(("106",), 15)),
                          Target.voicemail("2000")))),
    ("hunt-pilot-closed-night-service", "102", "2000", CLOSED,
     Diverted("2000", DiversionReason.NIGHT_SERVICE,
              ToUser("101", 20, busy=VM101, no_answer=VM101, mobile=MOBILE, mobile_delay=5))),
    ("hunt-night-service-hangup", "101", "2001", CLOSED,
     Diverted("2001", DiversionReason.NIGHT_SERVICE, HangUp("configured"))),
    ("unknown-pilot", "101", "2999", OPEN, NotFound("2999")),
    ("attendant-open", None, "3000", OPEN, ToAttendant("main")),
    ("attendant-closed-to-voicemail", None, "3000", CLOSED,
     Diverted("3000", DiversionReason.NIGHT_SERVICE, ToVoicemail("100", "direct"))),
    # feature codes
    ("dnd-on", "101", "*78", OPEN, FeatureCode(Feature.DND_ON)),
    ("dnd-off", "101", "*79", OPEN, FeatureCode(Feature.DND_OFF)),
    ("forward-all-set", "101", "*721001", OPEN, FeatureCode(Feature.FORWARD_ALL_SET, "1001")),
    ("forward-all-set-outside", "101", "*7292125551234", OPEN,
     FeatureCode(Feature.FORWARD_ALL_SET, "92125551234")),
    ("forward-all-set-needs-number", "101", "*72", OPEN, Invalid("*72", "")),
    ("forward-all-clear", "101", "*73", OPEN, FeatureCode(Feature.FORWARD_ALL_CLEAR)),
    ("forward-busy-set", "101", "*90102", OPEN, FeatureCode(Feature.FORWARD_BUSY_SET, "102")),
    ("forward-busy-clear", "101", "*91", OPEN, FeatureCode(Feature.FORWARD_BUSY_CLEAR)),
    ("forward-no-answer-set", "101", "*92102", OPEN,
     FeatureCode(Feature.FORWARD_NO_ANSWER_SET, "102")),
    ("forward-no-answer-clear", "101", "*93", OPEN, FeatureCode(Feature.FORWARD_NO_ANSWER_CLEAR)),
    ("hunt-login-all", "109", "*50", OPEN, FeatureCode(Feature.HUNT_LOGIN)),
    ("hunt-login-pilot", "109", "*502000", OPEN, FeatureCode(Feature.HUNT_LOGIN, "2000")),
    ("hunt-logout", "109", "*51", OPEN, FeatureCode(Feature.HUNT_LOGOUT)),
    ("voicemail-own", "101", "*97", OPEN, FeatureCode(Feature.VOICEMAIL_OWN)),
    ("voicemail-any", "101", "*98", OPEN, FeatureCode(Feature.VOICEMAIL_ANY)),
    ("voicemail-any-mailbox", "101", "*98102", OPEN, FeatureCode(Feature.VOICEMAIL_ANY, "102")),
    ("pickup-group", "101", "*8", OPEN, FeatureCode(Feature.PICKUP_GROUP)),
    ("pickup-directed", "101", "**102", OPEN, FeatureCode(Feature.PICKUP_DIRECTED, "102")),
    ("park-any-slot", "101", "*70", OPEN, FeatureCode(Feature.PARK)),
    ("park-slot", "101", "*7012", OPEN, FeatureCode(Feature.PARK, "12")),
    ("retrieve-slot", "101", "*7112", OPEN, FeatureCode(Feature.RETRIEVE, "12")),
    ("feature-argument-not-allowed", "101", "*781", OPEN, NotFound("*781")),
    ("feature-argument-not-digits", "101", "*72#", OPEN, Invalid("*72#", "")),
    ("unknown-feature-code", "101", "*00", OPEN, NotFound("*00")),
    ("feature-from-unknown-caller", None, "*78", OPEN, Invalid("*78", "")),
    # outside line
    ("national-allowed", "101", "92125551234", OPEN, ToTrunk("carrier", "+12125551234")),
    ("international-denied-for-national", "101", "9011442071234567", OPEN,
     restricted("+442071234567", COR.NATIONAL, Category.INTERNATIONAL)),
    ("international-allowed", "109", "9011442071234567", OPEN,
     ToTrunk("carrier", "+442071234567")),
    ("plus-number-direct", "109", "+442071234567", OPEN, ToTrunk("carrier", "+442071234567")),
    ("local-allowed-for-local", "103", "95551234", OPEN, ToTrunk("carrier", "+12125551234")),
    ("national-denied-for-local", "103", "93105551234", OPEN,
     restricted("+13105551234", COR.LOCAL, Category.NATIONAL)),
    ("local-denied-for-internal", "102", "95551234", OPEN,
     restricted("+12125551234", COR.INTERNAL, Category.LOCAL)),
    ("premium-denied-for-national", "101", "919005551234", OPEN,
     restricted("+19005551234", COR.NATIONAL, Category.PREMIUM)),
    ("premium-allowed-for-international", "109", "919005551234", OPEN,
     ToTrunk("carrier", "+19005551234")),
    ("unknown-caller-never-reaches-trunk", None, "92125551234", OPEN,
     restricted("+12125551234", COR.INTERNAL, Category.LOCAL)),
    # emergency, always
    ("emergency-911-internal-class", "102", "911", OPEN, ToTrunk("carrier", "911", True)),
    ("emergency-9911", "102", "9911", OPEN, ToTrunk("carrier", "911", True)),
    ("emergency-112", "103", "112", OPEN, ToTrunk("carrier", "112", True)),
    ("emergency-unknown-caller", None, "911", CLOSED, ToTrunk("carrier", "911", True)),
    # speed dials
    ("speed-dial", "101", "#1", OPEN, ToTrunk("carrier", "+12125551234")),
    ("speed-dial-keeps-class", "101", "#2", OPEN,
     restricted("+442071234567", COR.NATIONAL, Category.INTERNATIONAL)),
    ("speed-dial-of-someone-else", "102", "#1", OPEN, Invalid("#1", "")),
    # junk
    ("letters", "101", "alice", OPEN, Invalid("alice", "")),
    ("empty", "101", "", OPEN, Invalid("", "")),
]


def matches(decision: Decision, expected: object) -> bool:
    """Equality, except that an Invalid's reason is not compared (prose, not contract)."""
    if isinstance(expected, Invalid):
        return isinstance(decision, Invalid) and decision.dialed == expected.dialed
    if isinstance(expected, Diverted) and isinstance(decision, Diverted):
        return (
            (decision.number, decision.reason) == (expected.number, expected.reason)
            and matches(decision.then, expected.then)
        )
    return decision == expected


@pytest.mark.parametrize(
    ("caller", "dialed", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_route(caller: str | None, dialed: str, now: datetime, expected: object) -> None:
    decision = route(SITE, caller, dialed, now)
    assert matches(decision, expected), decision


def test_forward_loop_is_broken() -> None:
    decision = route(SITE, "101", "107", OPEN)
    hops = 0
    while isinstance(decision, Diverted):
        hops += 1
        decision = decision.then
    assert isinstance(decision, Unroutable)
    assert hops == MAX_DIVERSIONS + 1


def test_hunt_state_is_used() -> None:
    states = {"2000": HuntState(unavailable=frozenset({"101"}), logged_in=frozenset({"109"}))}
    decision = route(SITE, "102", "2000", OPEN, states)
    assert isinstance(decision, ToHuntGroup)
    assert [s.targets for s in decision.plan.steps] == [("106",), ("109",)]


@pytest.mark.parametrize(
    ("trunks", "dialed", "expected"),
    [
        ((), "911", Unroutable),
        ((), "92125551234", Unroutable),
        ((Trunk("voip", emergency=False), Trunk("pstn")), "911", ToTrunk("pstn", "911", True)),
        ((Trunk("voip", emergency=False), Trunk("pstn")), "92125551234",
         ToTrunk("voip", "+12125551234")),
        ((Trunk("voip", emergency=False),), "9112", Unroutable),
    ],
    ids=["no-trunk-emergency", "no-trunk-outside", "emergency-trunk-chosen",
         "outside-first-trunk", "no-emergency-capable-trunk"],
)
def test_trunk_choice(trunks: tuple[Trunk, ...], dialed: str, expected: object) -> None:
    site = replace(SITE, trunks=trunks)
    decision = route(site, "101", dialed, OPEN)
    if isinstance(expected, type):
        assert isinstance(decision, expected)
    else:
        assert decision == expected


def test_feature_codes_configurable() -> None:
    site = replace(SITE, feature_codes=FeatureCodes({Feature.DND_ON: "*1"}))
    assert route(site, "101", "*1", OPEN) == FeatureCode(Feature.DND_ON)
    assert route(site, "101", "*78", OPEN) == NotFound("*78")
    assert route(site, "101", "*79", OPEN) == FeatureCode(Feature.DND_OFF)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (Target.voicemail("2000"), ToVoicemail("2000", "direct")),
        (Target.attendant("main"), ToAttendant("main")),
        (Target.hangup(), HangUp("configured")),
        (Target.number("102"), ToVoicemail("102", "dnd")),
        (Target.number("92125551234"), ToTrunk("carrier", "+12125551234")),
    ],
    ids=["voicemail", "attendant", "hangup", "extension", "outside"],
)
def test_route_target(target: Target, expected: Decision) -> None:
    assert route_target(SITE, "101", target, OPEN) == expected


BAD_SITES = [
    ("duplicate-number", lambda: SiteModel(users=(User("101"),),
                                           hunt_groups=(replace(SALES, pilot="101"),))),
    ("pilot-not-4-digits", lambda: SiteModel(hunt_groups=(replace(SALES, pilot="200"),))),
    ("extension-leading-zero", lambda: SiteModel(users=(User("0101"),))),
    ("night-unknown-schedule", lambda: SiteModel(night_services=(
        NightService("nope", frozenset(), Target.hangup()),))),
    ("feature-codes-clash", lambda: FeatureCodes({Feature.DND_ON: "*79"})),
    ("feature-code-without-star", lambda: FeatureCodes({Feature.DND_ON: "78"})),
]


@pytest.mark.parametrize("build", [b[1] for b in BAD_SITES], ids=[b[0] for b in BAD_SITES])
def test_bad_site_rejected(build: object) -> None:
    assert callable(build)
    with pytest.raises(ValueError):
        build()


DECISION_TYPES = get_args(Decision)
CALLERS = st.sampled_from([None, "101", "102", "104", "107", "109", "999"])


@settings(max_examples=300, deadline=None)
@given(
    caller=CALLERS,
    dialed=st.one_of(st.text(max_size=40), st.text(alphabet="0123456789*#+", max_size=40)),
    hour=st.integers(min_value=0, max_value=24 * 7 - 1),
)
def test_route_never_raises(caller: str | None, dialed: str, hour: int) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC).replace(hour=hour % 24, day=23 + hour // 24)
    assert isinstance(route(SITE, caller, dialed, now), DECISION_TYPES)


def test_a_number_translated_to_an_emergency_number_takes_an_emergency_trunk() -> None:
    # "9999" translates to 911: the first trunk cannot carry emergency calls, so the
    # second must, exactly as for "911" dialled directly.
    site = replace(
        SITE,
        trunks=(Trunk("voip", emergency=False), Trunk("pstn")),
        numbering=NumberingPlan(translations=(Translation(r"999", "911"), *NANP)),
    )
    assert route(site, "102", "9999", OPEN) == ToTrunk("pstn", "911", True)
    assert route(site, "102", "911", OPEN) == ToTrunk("pstn", "911", True)
    assert route(site, "101", "92125551234", OPEN) == ToTrunk("voip", "+12125551234")
    no_emergency = replace(site, trunks=(Trunk("voip", emergency=False),))
    assert isinstance(route(no_emergency, "102", "9999", OPEN), Unroutable)


def test_service_numbers_route_to_their_application() -> None:
    from dialplan.model import SiteModel, User
    from dialplan.route import ToService

    site = SiteModel(users=(User("101"),), services={"70000": "assigner"})
    assert route(site, "101", "70000", OPEN) == ToService("assigner")
    with pytest.raises(ValueError):
        SiteModel(users=(User("101"),), services={"101": "assigner"})
