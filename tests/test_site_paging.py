"""paging_groups: and the intercom feature code: validation by path, and the mapping onto
the routing model (paging numbers are services routed to "paging:<name>")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agent.calls.plan import ToApplication, plan_for
from agent.routing import paging_group_of, routing_model
from agent.site import SiteError, parse_site
from dialplan import route as rt
from dialplan.model import Feature

NOW = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)


def user(uid: str, ext: str) -> dict[str, Any]:
    return {"id": uid, "name": uid.title(), "extension": ext,
            "sip": {"username": uid, "password": f"pw-{uid}"}}


def doc(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "site": {"name": "Test", "timezone": "UTC", "realm": "pbx.test"},
        "users": [user("alice", "101"), user("bob", "102"), user("carol", "103")],
        "hunt_groups": [{"name": "sales", "pilot": "6000",
                         "members": [{"extension": "101"}]}],
        "provisioning": {"paging_groups": [
            {"label": "All", "address": "239.255.0.1", "port": 5004}]},
        "paging_groups": [
            {"name": "office", "number": 7000, "members": [102, "103"]},
            {"name": "yard", "number": "7001", "mode": "both", "members": ["101"],
             "multicast": {"address": "239.255.0.1", "port": 5004}},
            {"name": "speakers", "number": "7002", "mode": "multicast",
             "multicast": {"address": "239.255.0.1", "port": 5004}},
        ],
    }
    base.update(extra)
    return base


def errors_of(document: Any) -> list[str]:
    with pytest.raises(SiteError) as err:
        parse_site(document)
    return err.value.errors


def with_group(index: int, **changes: Any) -> dict[str, Any]:
    document = doc()
    group = document["paging_groups"][index]
    for key, value in changes.items():
        if value is None:
            group.pop(key, None)
        else:
            group[key] = value
    return document


def test_paging_groups_parse_and_map_to_services() -> None:
    site = parse_site(doc())
    office = paging_group_of(site, "office")
    assert office is not None and office.members == ["102", "103"] and office.mode == "unicast"
    yard = paging_group_of(site, "yard")
    assert yard is not None and yard.multicast is not None
    assert (yard.multicast.address, yard.multicast.port) == ("239.255.0.1", 5004)
    model = routing_model(site)
    assert model.services == {"7000": "paging:office", "7001": "paging:yard",
                              "7002": "paging:speakers"}
    decision = rt.route(model, "101", "7001", NOW)
    assert decision == rt.ToService("paging:yard")
    assert plan_for(decision) == ToApplication("paging", "yard")


def test_intercom_code_defaults_to_star96_and_can_be_changed() -> None:
    model = routing_model(parse_site(doc()))
    assert rt.route(model, "101", "*96102", NOW) == rt.FeatureCode(Feature.INTERCOM, "102")
    assert isinstance(rt.route(model, "101", "*96", NOW), rt.Invalid)
    model = routing_model(parse_site(doc(feature_codes={"intercom": "*55"})))
    assert rt.route(model, "101", "*55103", NOW) == rt.FeatureCode(Feature.INTERCOM, "103")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (with_group(1, name="Office"),
         ['paging_groups[1].name: "Office" is already the name of paging_groups[0]']),
        (with_group(0, number="102"),
         ['paging_groups[0].number: "102" is already the extension of users[1]']),
        (with_group(0, number="6000"),
         ['paging_groups[0].number: "6000" is already the pilot of hunt_groups[0]']),
        (with_group(1, number="7000"),
         ['paging_groups[1].number: "7000" is already the number of paging_groups[0]']),
        (with_group(0, number="911"),
         ['paging_groups[0].number: "911" starts with the outside-line digit "9" '
          "(site.outside_line_digit)",
          'paging_groups[0].number: "911" is an emergency number and cannot be an extension']),
        (with_group(0, members=["102", "104"]),
         ['paging_groups[0].members[1]: "104" is not the extension of any user']),
        (with_group(0, members=[]),
         ['paging_groups[0].members: at least one member for mode "unicast"']),
        (with_group(1, multicast=None),
         ['paging_groups[1].multicast: required for mode "both"']),
        (with_group(2, multicast={"address": "239.255.0.2", "port": 5004}),
         ["paging_groups[2].multicast: 239.255.0.2:5004 is not a stream of "
          "provisioning.paging_groups (the phones would not listen)"]),
        (with_group(2, multicast={"address": "10.0.0.1", "port": 5004}),
         ['paging_groups[2].multicast.address: "10.0.0.1" is not a multicast address '
          "(224.0.0.0/4)"]),
        (with_group(0, mode="broadcast"),
         ["paging_groups[0].mode: must be 'unicast', 'multicast' or 'both'"]),
        (doc(feature_codes={"intercom": "*97"}),
         ['feature_codes.intercom: "*97" is already the code of voicemail_own (default)']),
    ],
)
def test_validation_errors(document: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(document) == expected
