"""The routing sections of the site document: validation by path, and the mapping onto
dialplan's SiteModel (checked end to end with dialplan.route.route)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest

from agent.routing import did_destination, routing_model, target_of
from agent.site import (
    FEATURE_KEYS,
    Destination,
    SiteError,
    load_site,
    parse_document,
    parse_site,
    site_document,
    site_fingerprint,
    site_json_schema,
)
from dialplan import route as rt
from dialplan.hunt import Strategy
from dialplan.model import DEFAULT_FEATURE_CODES, Feature
from dialplan.restriction import ClassOfRestriction
from dialplan.schedule import Holiday, Hours, is_open
from dialplan.target import Target

DEMO = Path(__file__).resolve().parent.parent / "agent" / "demo" / "site.yaml"


def user(uid: str, ext: str, **extra: Any) -> dict[str, Any]:
    return {"id": uid, "name": uid.title(), "extension": ext,
            "sip": {"username": uid, "password": f"pw-{uid}"}, **extra}


def full() -> dict[str, Any]:
    """A document using every routing section."""
    return {
        "site": {
            "name": "Test", "timezone": "America/New_York", "realm": "pbx.test",
            "emergency_numbers": ["911", "933"],
            "translations": [{"pattern": r"([2-9][0-9]{9})", "replacement": r"+1\1"},
                             {"pattern": r"011([0-9]+)", "replacement": r"+\1"}],
            "restriction": {"local_prefixes": ["+1212"]},
        },
        "users": [
            user("alice", "101", class_of_restriction="international",
                 speed_dials={"1": "92125550100", 2: "102"}, mobile="92125550199",
                 mobile_delay=5, caller_id="+12125550101", pickup_group="front"),
            user("bob", "102", forward={"busy": "103", "no_answer": "*97",
                                        "no_answer_timeout": 15}),
            user("carol", "103", class_of_restriction="internal", dnd=True),
            user("dave", "104", voicemail=False, forward={"all": "101"}),
        ],
        "hunt_groups": [
            {"name": "sales", "pilot": "6000", "strategy": "circular",
             "members": [{"extension": "101"}, {"extension": "102", "ring_time": 15},
                         {"extension": "103", "dynamic": True}],
             "final": {"type": "voicemail", "value": "101"}},
            {"name": "support", "pilot": 6001, "strategy": "parallel",
             "members": [{"extension": 104}]},
        ],
        "schedules": [
            {"name": "office",
             "hours": {"mon": ["08:00-12:00", "13:00-17:30"], "fri": ["08:00-24:00"]},
             "holidays": ["2026-12-25", "2026-12-30..2027-01-01"]},
        ],
        "night_service": [
            {"schedule": "office", "numbers": ["6000", "101"],
             "destination": {"type": "attendant", "value": "main"}},
        ],
        "feature_codes": {"dnd_on": "*60", "park": "*700"},
        "park": {"slots": 5, "timeout": 90},
        "trunks": [
            {"name": "carrier", "host": "192.0.2.10", "username": "acct", "password": "trunk-pw",
             "caller_id": "+12125550100",
             "dids": [{"number": "+12125550100", "destination": {"type": "extension",
                                                                 "value": "6000"}},
                      {"number": "12125550102", "destination": {"type": "extension",
                                                                "value": "102"}}]},
            {"name": "backup", "host": "sip.example.net", "register": False,
             "transport": "tls", "port": 5061, "emergency": False,
             "allow_from": ["198.51.100.0/24", "2001:DB8::1"]},
        ],
    }


def errors_of(doc: Any) -> list[str]:
    with pytest.raises(SiteError) as err:
        parse_site(doc)
    return err.value.errors


def changed(path: str, value: Any) -> dict[str, Any]:
    """full() with the value at a dotted path (list indices as numbers) set or deleted."""
    doc = full()
    node: Any = doc
    parts = [int(p) if p.lstrip("-").isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        node = node[part]
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return doc


DELETE = object()


# ---------------------------------------------------------------- good documents


def test_full_document_is_valid_and_round_trips() -> None:
    site = parse_site(full())
    again = parse_site(site_document(site, reveal_secrets=True))
    assert again == site
    assert site_fingerprint(again) == site_fingerprint(site)
    # JSON and YAML text both round-trip too
    text = json.dumps(site_document(site, reveal_secrets=True))
    assert parse_site(parse_document(text)) == site


def test_defaults() -> None:
    site = parse_site(full())
    assert site.users[1].class_of_restriction == "national"
    assert site.users[1].voicemail is True and site.users[1].dnd is False
    assert site.users[0].forward.no_answer_timeout == 20
    assert site.users[0].speed_dials == {"1": "92125550100", "2": "102"}
    assert site.hunt_groups[1].pilot == "6001"
    assert site.hunt_groups[1].final == Destination(type="hangup")
    assert site.hunt_groups[0].members[0].ring_time == 20
    carrier, backup = site.trunks
    assert (carrier.port, carrier.transport, carrier.register_, carrier.register_expires) == (
        5060, "udp", True, 600)
    assert carrier.allow_from == ["192.0.2.10"]  # default: the host, an IP literal
    assert backup.allow_from == ["198.51.100.0/24", "2001:db8::1"]  # normalised
    assert backup.accepts_from("198.51.100.77") and not backup.accepts_from("198.51.101.1")
    assert carrier.accepts_from("192.0.2.10") and not carrier.accepts_from("not-an-ip")
    minimal = parse_site({"site": {"name": "T", "timezone": "UTC", "realm": "pbx.test"}})
    assert minimal.site.emergency_numbers == ["911", "112"]
    assert minimal.park.slots == 10 and minimal.park.timeout == 120
    assert minimal.feature_codes.codes() == dict(DEFAULT_FEATURE_CODES)
    assert minimal.site.restriction.international_prefixes == ["011", "00"]
    hostname_only = parse_site(changed("trunks.1.allow_from", DELETE))
    assert hostname_only.trunks[1].allow_from == []


def test_yaml_unquoted_dates_and_ints() -> None:
    text = """
site: {name: T, timezone: Europe/Berlin, realm: pbx.test}
users:
  - {id: a, name: A, extension: 101, sip: {username: a, password: p},
     speed_dials: {1: 101}}
schedules:
  - name: office
    hours: {mon: ["08:00-12:00"]}
    holidays: [2026-12-25, 2026-12-24..2026-12-26]
"""
    site = parse_site(parse_document(text))
    assert site.schedules[0].holidays == ["2026-12-25", "2026-12-24..2026-12-26"]
    assert site.users[0].speed_dials == {"1": "101"}


def test_trunk_password_is_write_only() -> None:
    site = parse_site(full())
    shown = json.dumps(site_document(site)) + repr(site)
    assert "trunk-pw" not in shown
    assert site_document(site)["trunks"][0]["register"] is True
    assert site_document(site, reveal_secrets=True)["trunks"][0]["password"] == "trunk-pw"
    schema = site_json_schema()
    password = schema["$defs"]["Trunk"]["properties"]["password"]
    assert any(alt.get("writeOnly") for alt in password["anyOf"])
    assert "register" in schema["$defs"]["Trunk"]["properties"]
    assert set(schema["$defs"]["FeatureCodes"]["properties"]) == set(FEATURE_KEYS)


def test_feature_keys_cover_every_feature() -> None:
    assert set(FEATURE_KEYS.values()) == set(Feature)


# ---------------------------------------------------------------- bad documents


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # site
        ("site.emergency_numbers", [], ["site.emergency_numbers: must not be empty"]),
        ("site.emergency_numbers", ["911", "911"],
         ['site.emergency_numbers: "911" is listed twice']),
        ("site.emergency_numbers.1", "9-3",
         ['site.emergency_numbers[1]: "9-3" must be 2-6 digits']),
        ("site.translations.0.pattern", "([0-9]",
         ['site.translations[0].pattern: "([0-9]" is not a valid regular expression: '
          "missing ), unterminated subpattern at position 0"]),
        ("site.translations.0.replacement", r"+1\2",
         ["site.translations[0]: replacement '+1\\\\2' refers to unknown group 2"]),
        ("site.translations.0.replacement", "abc",
         ['site.translations[0]: replacement "abc" must be digits, * and # (optionally '
          "starting with +) and group references"]),
        ("site.restriction.home_country_code", "+1",
         ['site.restriction.home_country_code: "+1" must be a country calling code: 1-3 '
          "digits, e.g. 49"]),
        ("site.restriction.premium_prefixes", ["1900", "x"],
         ['site.restriction.premium_prefixes[1]: "x" must be 1-15 digits, optionally '
          "starting with +"]),
        ("site.restriction.nat", [], ['site.restriction.nat: unknown field']),
        # users
        ("users.0.class_of_restriction", "world",
         ["users[0].class_of_restriction: must be 'internal', 'local', 'national' or "
          "'international'"]),
        ("users.1.forward.busy", "10x",
         ['users[1].forward.busy: "10x" must be a dial string: digits, * and #, '
          "optionally starting with +"]),
        ("users.1.forward.no_answer_timeout", 2,
         ["users[1].forward.no_answer_timeout: must be at least 5"]),
        ("users.3.forward.all", "104", ['users[3].forward.all: "104" would forward the user '
                                        "to themselves"]),
        ("users.1.forward.no_anwser", "103",
         ['users[1].forward.no_anwser: unknown field (did you mean "no_answer"?)']),
        ("users.0.dnd", "yes", ["users[0].dnd: must be true or false"]),
        ("users.0.speed_dials", {"123": "101"},
         ['users[0].speed_dials: key "123" must be 1 or 2 digits']),
        ("users.0.speed_dials", {"1": "1+1"},
         ['users[0].speed_dials["1"]: "1+1" must be a dial string: digits, * and #, '
          "optionally starting with +"]),
        ("users.0.mobile", "", ["users[0].mobile: must not be empty"]),
        ("users.0.mobile_delay", 61, ["users[0].mobile_delay: must be at most 60"]),
        ("users.0.caller_id", "12", ['users[0].caller_id: "12" must be a phone number: '
                                     "3-20 digits, optionally starting with +"]),
        ("users.0.pickup_group", "front desk",
         ['users[0].pickup_group: "front desk" must be 1-64 characters of letters, digits '
          "and . _ -, starting with a letter or digit"]),
        ("site.emergency_numbers", ["911", "101"],
         ['users[0].extension: "101" is an emergency number (site.emergency_numbers)']),
        # hunt groups
        ("hunt_groups.1.pilot", "6000",
         ['hunt_groups[1].pilot: "6000" is already the pilot of hunt_groups[0]']),
        ("hunt_groups.1.pilot", "600", ['hunt_groups[1].pilot: "600" must have 4 digits']),
        ("hunt_groups.1.pilot", "0600", ['hunt_groups[1].pilot: "0600" must not start with 0']),
        ("hunt_groups.1.pilot", "9600",
         ['hunt_groups[1].pilot: "9600" starts with the outside-line digit "9" '
          "(site.outside_line_digit)"]),
        ("hunt_groups.1.name", "Sales",
         ['hunt_groups[1].name: "Sales" is already the name of hunt_groups[0]']),
        ("hunt_groups.0.strategy", "random",
         ["hunt_groups[0].strategy: must be 'sequential', 'circular', 'longest-idle' or "
          "'parallel'"]),
        ("hunt_groups.0.members.1.extension", "105",
         ['hunt_groups[0].members[1].extension: "105" is not the extension of any user']),
        ("hunt_groups.0.members.1.extension", "6001",
         ['hunt_groups[0].members[1].extension: "6001" is not the extension of any user']),
        ("hunt_groups.0.members.2.extension", "101",
         ['hunt_groups[0].members[2].extension: "101" is already members[0]']),
        ("hunt_groups.0.members.0.ring_time", 0,
         ["hunt_groups[0].members[0].ring_time: must be at least 1"]),
        ("hunt_groups.0.members", [{"extension": "101"}] * 33,
         ["hunt_groups[0].members: must have at most 32 items"]),
        ("hunt_groups.0.members", [], ["hunt_groups[0].members: must not be empty"]),
        ("hunt_groups.0.final", {"type": "extension", "value": "199"},
         ['hunt_groups[0].final.value: "199" is not an extension or hunt group pilot of '
          "this site"]),
        ("hunt_groups.0.final", {"type": "extension", "value": "6000"},
         ['hunt_groups[0].final.value: "6000" is the group\'s own pilot']),
        ("hunt_groups.0.final", {"type": "voicemail", "value": "104"},
         ['hunt_groups[0].final.value: "104": users[3] has voicemail turned off']),
        ("hunt_groups.0.final", {"type": "voicemail", "value": "6001"},
         ['hunt_groups[0].final.value: "6001" is not the extension of any user']),
        ("hunt_groups.0.final", {"type": "voicemail"},
         ['hunt_groups[0].final.value: required for type "voicemail"']),
        ("hunt_groups.0.final", {"type": "hangup", "value": "101"},
         ['hunt_groups[0].final.value: must be empty for type "hangup"']),
        ("hunt_groups.0.final", {"type": "queue", "value": "101"},
         ["hunt_groups[0].final.type: must be 'extension', 'voicemail', 'attendant' or "
          "'hangup'"]),
        ("hunt_groups.0.final", {"type": "attendant", "value": "main menu"},
         ['hunt_groups[0].final.value: "main menu" is not an attendant name']),
        # schedules
        ("schedules.0.hours.mon.0", "08:15-12:00",
         ['schedules[0].hours.mon[0]: "08:15-12:00" must be on half-hour boundaries '
          "(:00 or :30)"]),
        ("schedules.0.hours.mon.0", "12:00-08:00",
         ['schedules[0].hours.mon[0]: "12:00-08:00" must end after it starts '
          "(24:00 is midnight)"]),
        ("schedules.0.hours.mon.0", "12:00-12:00",
         ['schedules[0].hours.mon[0]: "12:00-12:00" must end after it starts '
          "(24:00 is midnight)"]),
        ("schedules.0.hours.mon.0", "25:00-26:00",
         ['schedules[0].hours.mon[0]: "25:00-26:00" is not a valid time range']),
        ("schedules.0.hours.mon.0", "8-12",
         ['schedules[0].hours.mon[0]: "8-12" must be a time range HH:MM-HH:MM, '
          'e.g. "08:00-12:30"']),
        ("schedules.0.hours.monday", [],
         ['schedules[0].hours.monday: unknown field (did you mean "mon"?)']),
        ("schedules.0.holidays.0", "2026-02-30",
         ['schedules[0].holidays[0]: "2026-02-30" is not a valid date']),
        ("schedules.0.holidays.1", "2027-01-01..2026-12-30",
         ['schedules[0].holidays[1]: "2027-01-01..2026-12-30" ends before it starts']),
        ("schedules.0.holidays.0", "25.12.2026",
         ['schedules[0].holidays[0]: "25.12.2026" must be a date YYYY-MM-DD or a range '
          "YYYY-MM-DD..YYYY-MM-DD"]),
        ("schedules", [{"name": "office"}, {"name": "office"}],
         ['schedules[1].name: "office" is already the name of schedules[0]']),
        # night service
        ("night_service.0.schedule", "ofice",
         ['night_service[0].schedule: "ofice" is not the name of a schedule']),
        ("night_service.0.numbers.1", "199",
         ['night_service[0].numbers[1]: "199" is not an extension or hunt group pilot of '
          "this site"]),
        ("night_service.0.destination", {"type": "extension", "value": "101"},
         ['night_service[0].destination.value: "101" is itself diverted by this night '
          "service"]),
        # feature codes and park
        ("feature_codes.dnd_on", "78", ['feature_codes.dnd_on: "78" must be * and then 1-7 keys '
                                        "(0-9, * or #)"]),
        ("feature_codes.dnd_on", "*79",
         ['feature_codes.dnd_on: "*79" is already the code of dnd_off (default)']),
        ("feature_codes.dnd_off", "*60",
         ['feature_codes.dnd_off: "*60" is already the code of dnd_on']),
        ("feature_codes.dnd", "*1", ['feature_codes.dnd: unknown field (did you mean '
                                     '"dnd_on"?)']),
        ("park.slots", 100, ["park.slots: must be at most 99"]),
        ("park.slots", 0, ["park.slots: must be at least 1"]),
        # trunks
        ("trunks.1.name", "Carrier", ['trunks[1].name: "Carrier" is already the name of '
                                      "trunks[0]"]),
        ("trunks.0.host", "bad host", ['trunks[0].host: "bad host" must be a host name or an '
                                       "IP address"]),
        ("trunks.0.port", 0, ["trunks[0].port: must be at least 1"]),
        ("trunks.0.transport", "sctp", ["trunks[0].transport: must be 'udp', 'tcp' or 'tls'"]),
        ("trunks.0.password", DELETE,
         ["trunks[0].password: required when register is true (the default)"]),
        ("trunks.0.register", "no", ["trunks[0].register: must be true or false"]),
        ("trunks.0.register_expires", 30, ["trunks[0].register_expires: must be at least 60"]),
        ("trunks.1.allow_from.0", "198.51.100.1/24",
         ['trunks[1].allow_from[0]: "198.51.100.1/24" has host bits set (did you mean '
          '"198.51.100.0/24"?)']),
        ("trunks.1.allow_from.0", "198.51.100.0/33",
         ['trunks[1].allow_from[0]: "198.51.100.0/33" must be an IP address or a CIDR network '
          "such as 192.0.2.0/24"]),
        ("trunks.1.allow_from.0", "example.com",
         ['trunks[1].allow_from[0]: "example.com" must be an IP address or a CIDR network '
          "such as 192.0.2.0/24"]),
        ("trunks.0.dids.1.number", "+12125550100",
         ['trunks[0].dids[1].number: "+12125550100" is already listed at trunks[0].dids[0]']),
        ("trunks.1.dids", [{"number": "12125550100", "destination": {"type": "hangup"}}],
         ['trunks[1].dids[0].number: "12125550100" is already listed at trunks[0].dids[0]']),
        ("trunks.0.dids.0.destination", {"type": "extension", "value": "7000"},
         ['trunks[0].dids[0].destination.value: "7000" is not an extension or hunt group '
          "pilot of this site"]),
        ("trunks.0.dids.0.number", "DID-1",
         ['trunks[0].dids[0].number: "DID-1" must be a phone number: 3-20 digits, optionally '
          "starting with +"]),
    ],
)
def test_validation_errors(path: str, value: Any, expected: list[str]) -> None:
    doc = changed(path, value)
    assert errors_of(doc) == expected


def test_errors_are_all_collected_in_document_order() -> None:
    doc = full()
    doc["users"][0]["mobile_delay"] = 99
    doc["hunt_groups"][0]["pilot"] = "101"
    doc["hunt_groups"][0]["members"][1]["extension"] = "199"
    doc["schedules"][0]["hours"]["fri"] = ["17:00-08:00"]
    doc["night_service"][0]["schedule"] = "nights"
    doc["trunks"][1]["allow_from"] = ["10.0.0.0/8", "10.0.0.1/8"]
    assert errors_of(doc) == [
        "users[0].mobile_delay: must be at most 60",
        'hunt_groups[0].pilot: "101" is already the extension of users[0]',
        'hunt_groups[0].pilot: "101" must have 4 digits',
        'hunt_groups[0].members[1].extension: "199" is not the extension of any user',
        'schedules[0].hours.fri[0]: "17:00-08:00" must end after it starts (24:00 is midnight)',
        'night_service[0].schedule: "nights" is not the name of a schedule',
        'night_service[0].numbers[0]: "6000" is not an extension or hunt group pilot of '
        "this site",
        'trunks[0].dids[0].destination.value: "6000" is not an extension or hunt group pilot '
        "of this site",
        'trunks[1].allow_from[1]: "10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)',
    ]


def test_pilot_equal_to_extension_is_rejected() -> None:
    doc = full()
    doc["users"].append(user("erin", "6001"))
    assert errors_of(doc) == ['hunt_groups[1].pilot: "6001" is already the extension of '
                              "users[4]"]


# ---------------------------------------------------------------- mapping


def test_routing_model_mapping() -> None:
    site = parse_site(full())
    m = routing_model(site)
    alice, bob, carol, dave = m.users
    assert alice.cor is ClassOfRestriction.INTERNATIONAL
    assert alice.speed_dials == {"1": "92125550100", "2": "102"}
    assert (alice.mobile, alice.mobile_delay, alice.name) == ("92125550199", 5, "Alice")
    assert bob.cor is ClassOfRestriction.NATIONAL
    assert (bob.forward.busy, bob.forward.no_answer, bob.forward.no_answer_timeout) == (
        "103", "*97", 15)
    assert carol.dnd and carol.cor is ClassOfRestriction.INTERNAL
    assert not dave.voicemail and dave.forward.all == "101"
    sales, support = m.hunt_groups
    assert sales.strategy is Strategy.CIRCULAR and support.strategy is Strategy.PARALLEL
    assert [(x.extension, x.ring_time, x.dynamic) for x in sales.members] == [
        ("101", 20, False), ("102", 15, False), ("103", 20, True)]
    assert sales.final == Target.voicemail("101") and support.final == Target.hangup()
    (office,) = m.schedules
    assert office.tz == "America/New_York"
    assert office.hours == (
        Hours(0, time(8), time(12)), Hours(0, time(13), time(17, 30)),
        Hours(4, time(8), time(0)),
    )
    assert office.holidays == (
        Holiday(date(2026, 12, 25), None, "2026-12-25"),
        Holiday(date(2026, 12, 30), date(2027, 1, 1), "2026-12-30..2027-01-01"),
    )
    (night,) = m.night_services
    assert night.numbers == frozenset({"6000", "101"})
    assert night.destination == Target.attendant("main")
    assert [(t.name, t.emergency) for t in m.trunks] == [("carrier", True), ("backup", False)]
    assert m.numbering.emergency_numbers == ("911", "933")
    assert m.numbering.translations[0].replacement == r"+1\1"
    assert m.restriction.local_prefixes == ("+1212",)
    assert m.restriction.international_prefixes == ("011", "00")
    assert m.feature_codes.codes[Feature.DND_ON] == "*60"
    assert m.feature_codes.codes[Feature.PARK] == "*700"
    assert m.feature_codes.codes[Feature.DND_OFF] == "*79"


def test_did_destination() -> None:
    site = parse_site(full())
    assert did_destination(site, "+12125550100") == Target.number("6000")
    assert did_destination(site, "12125550100") == Target.number("6000")
    assert did_destination(site, "+12125550102") == Target.number("102")
    assert did_destination(site, "+12125550199") is None
    assert target_of(Destination(type="hangup")) == Target.hangup()


# A Monday in January, 10:00 in New York: open; 20:00: closed.
OPEN = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
CLOSED = datetime(2026, 1, 6, 1, 0, tzinfo=UTC)


def test_schedule_is_evaluated_in_the_site_zone() -> None:
    office = routing_model(parse_site(full())).schedules[0]
    assert is_open(office, OPEN)
    assert not is_open(office, CLOSED)
    assert not is_open(office, datetime(2026, 12, 31, 15, 0, tzinfo=UTC))  # holiday range


@pytest.mark.parametrize(
    ("caller", "dialed", "now", "expected"),
    [
        # internal call: bob's busy/no-answer forwards
        ("101", "102", OPEN, rt.ToUser("102", 15, Target.number("103"), Target.number("*97"))),
        # hunt pilot during business hours
        ("102", "6001", OPEN, "hunt"),
        # night service diverts the pilot to the attendant
        ("102", "6000", CLOSED,
         rt.Diverted("6000", rt.DiversionReason.NIGHT_SERVICE, rt.ToAttendant("main"))),
        # outside via the first trunk, translated to E.164
        ("102", "92125550123", OPEN, rt.ToTrunk("carrier", "+12125550123")),
        ("101", "901144201234567", OPEN, rt.ToTrunk("carrier", "+44201234567")),
        # restricted: carol is internal-only; bob is national-only
        ("103", "92125550123", OPEN, "restricted"),
        ("102", "901144201234567", OPEN, "restricted"),
        # emergency always goes out, even for an internal-only caller
        ("103", "933", OPEN, rt.ToTrunk("carrier", "933", emergency=True)),
        # a speed dial, and a feature code override
        ("101", "2", OPEN, rt.ToUser("102", 15, Target.number("103"), Target.number("*97"))),
        ("101", "*60", OPEN, rt.FeatureCode(Feature.DND_ON)),
        # dave forwards everything to alice
        ("102", "104", CLOSED, "forward"),
    ],
)
def test_route_on_the_mapped_model(
    caller: str, dialed: str, now: datetime, expected: Any
) -> None:
    decision = rt.route(routing_model(parse_site(full())), caller, dialed, now)
    if expected == "hunt":
        assert isinstance(decision, rt.ToHuntGroup)
        assert decision.plan.pilot == "6001"
        assert [s.targets for s in decision.plan.steps] == [("104",)]
    elif expected == "restricted":
        assert isinstance(decision, rt.Restricted)
    elif expected == "forward":
        assert isinstance(decision, rt.Diverted)
        assert decision.reason is rt.DiversionReason.FORWARD_ALL
        # alice is under night service at CLOSED, so the forward lands on the attendant
        assert decision.then == rt.Diverted("101", rt.DiversionReason.NIGHT_SERVICE,
                                            rt.ToAttendant("main"))
    else:
        assert decision == expected


def test_no_trunk_means_unroutable_outside() -> None:
    doc = full()
    del doc["trunks"]
    decision = rt.route(routing_model(parse_site(doc)), "101", "92125550123", OPEN)
    assert isinstance(decision, rt.Unroutable)


def test_demo_site_maps_and_routes() -> None:
    site = load_site(DEMO)
    assert site.trunks == []
    m = routing_model(site)
    group = m.hunt_group("6000")
    assert group is not None and len(group.members) >= 2
    assert len(m.schedules) == 1
    decision = rt.route(m, "101", "6000", OPEN)
    assert isinstance(decision, rt.ToHuntGroup | rt.Diverted)


def test_direct_construction_runs_the_cross_checks() -> None:
    doc = copy.deepcopy(full())
    doc["night_service"][0]["schedule"] = "nope"
    from agent.site import Site

    with pytest.raises(ValueError, match=r'night_service\[0\]\.schedule: "nope" is not'):
        Site.model_validate(doc)
