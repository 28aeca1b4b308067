"""The site's phones: and provisioning: sections: validation by path, and the mapping onto
provisioning.model (agent/provisioning_map.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent.listen import parse_listen
from agent.provisioning_map import dial_template, provisioning_model
from agent.site import SiteError, parse_site, site_document
from provisioning import Blf, Line, PagingGroup, SpeedDial, check_phone, file_for

LISTENS = [parse_listen("udp:0.0.0.0:5060"), parse_listen("tcp:0.0.0.0:5070"),
           parse_listen("tls:0.0.0.0:5061")]


def _user(ext: str) -> dict[str, Any]:
    return {"id": f"u{ext}", "name": f"User {ext}", "extension": ext,
            "sip": {"username": f"sip{ext}", "password": f"pw-{ext}"}}


def base() -> dict[str, Any]:
    return {
        "site": {"name": "Dental", "timezone": "Europe/Berlin", "realm": "pbx.example"},
        "users": [_user("101"), _user("102"), _user("103")],
        "provisioning": {
            "sip_server": "pbx.example",
            "paging_groups": [{"label": "All", "address": "239.1.1.1", "port": 5000},
                              {"label": "Lab", "address": "239.1.1.2", "port": 5002}],
        },
        "phones": [
            {"mac": "AA:BB:CC:DD:EE:01", "model": "CP-7841",
             "lines": [{"extension": "101", "label": "Front"}, {"extension": 103, "shared": True}],
             "speed_dials": [{"label": "Lab", "number": "9555123"}],
             "blf": [{"extension": "102"}], "paging_groups": ["All"]},
            {"mac": "aa-bb-cc-dd-ee-02", "model": "yealink-t46",
             "lines": [{"extension": "102"}, {"extension": "103", "shared": True}]},
        ],
    }


def errors(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SiteError) as info:
        parse_site(doc)
    return info.value.errors


def test_valid_site_and_mac_forms() -> None:
    site = parse_site(base())
    assert [p.mac for p in site.phones] == ["aabbccddee01", "aabbccddee02"]
    assert site.phones[0].lines[1].extension == "103"  # YAML int accepted
    for form in ("AABBCCDDEE03", "aa:bb:cc:dd:ee:03", "AA-BB-CC-DD-EE-03", "aabb.ccdd.ee03"):
        doc = base()
        doc["phones"][1]["mac"] = form
        assert parse_site(doc).phones[1].mac == "aabbccddee03", form
    assert parse_site({**base(), "phones": []}).phones == []
    # A site without the sections still validates (defaults).
    minimal = {k: v for k, v in base().items() if k not in ("phones", "provisioning")}
    assert parse_site(minimal).provisioning.sip_server is None


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


CASES: list[tuple[str, Any, list[str]]] = [
    ("bad MAC", lambda d: _set(d, ("phones", 0, "mac"), "aa:bb:cc:dd:ee"),
     ['phones[0].mac: "aa:bb:cc:dd:ee" is not a MAC address']),
    ("MAC with a bad digit", lambda d: _set(d, ("phones", 1, "mac"), "gg-bb-cc-dd-ee-02"),
     ['phones[1].mac: "gg-bb-cc-dd-ee-02" is not a MAC address']),
    ("duplicate MAC in another form", lambda d: _set(d, ("phones", 1, "mac"), "AABBCCDDEE01"),
     ['phones[1].mac: "AABBCCDDEE01" is already the MAC of phones[0]']),
    ("unknown model", lambda d: _set(d, ("phones", 1, "model"), "CP-9999"),
     ['phones[1].model: "CP-9999" is not a supported phone model (supported: cisco-7811']),
    ("too many lines", lambda d: _set(d, ("phones", 1, "model"), "yealink-t31") and _set(
        d, ("phones", 1, "lines"), [{"extension": "102"}, {"extension": "103", "shared": True},
                                    {"extension": "101", "shared": True}]),
     ["phones[1].lines: 3 lines but a T31 has at most 2",
      'phones[1].lines[2].extension: "101" is already a line of phones[0]']),
    ("too many keys", lambda d: _set(d, ("phones", 0, "speed_dials"),
                                     [{"number": str(100 + i)} for i in range(3)]),
     ["phones[0]: 6 keys (lines, speed dials and BLF) but a CP-7841 has at most 4"]),
    ("missing extension", lambda d: _set(d, ("phones", 0, "lines", 0, "extension"), "150"),
     ['phones[0].lines[0].extension: "150" is not the extension of any user']),
    ("BLF on a missing extension", lambda d: _set(d, ("phones", 0, "blf", 0, "extension"), "199"),
     ['phones[0].blf[0].extension: "199" is not the extension of any user']),
    ("line on two phones, not shared", lambda d: _set(d, ("phones", 1, "lines", 0, "extension"),
                                                      "101"),
     ['phones[1].lines[0].extension: "101" is already a line of phones[0]; a line on several '
      "phones needs shared: true on every one"]),
    ("shared on one appearance only", lambda d: _set(d, ("phones", 0, "lines", 1, "shared"),
                                                     False),
     ['phones[1].lines[1].extension: "103" is already a line of phones[0]']),
    ("same line twice on a phone", lambda d: _set(d, ("phones", 1, "lines", 1, "extension"),
                                                  "102"),
     ['phones[1].lines[1].extension: "102" is already lines[0] of this phone']),
    ("unknown paging group", lambda d: _set(d, ("phones", 0, "paging_groups"), ["Nope"]),
     ['phones[0].paging_groups[0]: "Nope" is not a label of provisioning.paging_groups']),
    ("paging group not multicast", lambda d: _set(
        d, ("provisioning", "paging_groups", 0, "address"), "10.0.0.1"),
     ['provisioning.paging_groups[0].address: "10.0.0.1" is not a multicast address']),
    ("duplicate paging label", lambda d: _set(
        d, ("provisioning", "paging_groups", 1, "label"), "All"),
     ['provisioning.paging_groups[1].label: "All" is already a paging group label']),
    ("no lines", lambda d: _set(d, ("phones", 1, "lines"), []),
     ["phones[1].lines: must not be empty"]),
    ("IPv6 SIP server", lambda d: _set(d, ("provisioning", "sip_server"), "2001:db8::1"),
     ['provisioning.sip_server: "2001:db8::1": phone files need a host name or an IPv4']),
    ("label with a newline", lambda d: _set(d, ("phones", 0, "lines", 0, "label"), "a\nb"),
     ["phones[0].lines[0].label: must not contain control characters"]),
    ("speed dial not dialable", lambda d: _set(d, ("phones", 0, "speed_dials", 0, "number"),
                                               "555-123"),
     ['phones[0].speed_dials[0].number: "555-123" must be 1-32 of the characters']),
    ("unknown field", lambda d: _set(d, ("phones", 0, "line"), []),
     ['phones[0].line: unknown field (did you mean "lines"?)']),
]


@pytest.mark.parametrize(("name", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_validation_errors_by_path(name: str, change: Any, expected: list[str]) -> None:
    doc = base()
    change(doc)
    found = errors(doc)
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected, strict=True):
        assert line.startswith(prefix), (line, prefix)


def test_all_errors_at_once_and_nothing_applied() -> None:
    doc = base()
    doc["phones"].append({"mac": "zz", "model": "nokia", "lines": [{"extension": "101"}]})
    doc["phones"].append({"mac": "AA:BB:CC:DD:EE:02", "model": "CP-7841",
                          "lines": [{"extension": "555"}]})
    found = errors(doc)
    assert [line.split(":")[0] for line in found] == [
        "phones[2].mac", "phones[2].model", "phones[2].lines[0].extension",
        "phones[3].mac", "phones[3].lines[0].extension"]


def test_mac_is_canonical_in_the_document() -> None:
    doc = site_document(parse_site(base()))
    assert doc["phones"][1]["mac"] == "aabbccddee02"
    assert doc["provisioning"]["paging_groups"][0] == {
        "label": "All", "address": "239.1.1.1", "port": 5000}
    assert "pw-101" not in str(doc)  # secrets stay hidden


# ---------------------------------------------------------------------------- mapping


def test_mapping_onto_provisioning_model() -> None:
    site = parse_site(base())
    model = provisioning_model(site, LISTENS, default_host="192.0.2.10")
    prov = model.site
    assert prov.sip_host == "pbx.example"  # the explicit setting wins over the listener
    assert prov.sip_ports == {"udp": 5060, "tcp": 5070, "tls": 5061}
    assert prov.transport == "udp"
    assert prov.time_zone == "Europe/Berlin" and prov.name == "Dental"
    assert prov.voicemail_pilot == "*97" and prov.outside_line_digit == "9"
    assert prov.ntp == "pbx.example"
    assert prov.paging_groups == (PagingGroup("All", "239.1.1.1", 5000),
                                  PagingGroup("Lab", "239.1.1.2", 5002))
    assert sorted(model.phones) == ["aabbccddee01", "aabbccddee02"]
    cisco = model.phones["aabbccddee01"]
    assert cisco.model == "CP-7841"
    assert cisco.lines == (
        Line("101", "sip101", "pw-101", display_name="User 101", label="Front"),
        Line("103", "sip103", "pw-103", display_name="User 103", shared=True),
    )
    assert cisco.speed_dials == (SpeedDial("Lab", "9555123"),)
    assert cisco.blf == (Blf("", "102"),)
    assert cisco.paging_groups == ("All",)
    for phone in model.phones.values():
        assert check_phone(phone, prov) == []
    sep = file_for(prov, model.phones, "SEPAABBCCDDEE01.cnf.xml")
    assert sep is not None and b"pw-101" in sep[0] and b"pbx.example" in sep[0]


def test_mapping_defaults_from_listeners() -> None:
    doc = base()
    del doc["provisioning"]["sip_server"]
    doc["provisioning"]["ntp_server"] = "ntp.example"
    doc["feature_codes"] = {"voicemail_own": "*86"}
    site = parse_site(doc)
    model = provisioning_model(site, [parse_listen("tcp:0.0.0.0:5080")],
                               default_host="192.0.2.10")
    assert model.site.sip_host == "192.0.2.10"
    assert model.site.sip_ports == {"tcp": 5080} and model.site.transport == "tcp"
    assert model.site.ntp == "ntp.example"
    assert model.site.voicemail_pilot == "*86"
    with pytest.raises(ValueError, match=r"set provisioning\.sip_server"):
        provisioning_model(site, LISTENS, default_host="2001:db8::1")
    with pytest.raises(ValueError, match="no SIP listener"):
        provisioning_model(site, [], default_host="192.0.2.10")


def test_dial_template() -> None:
    doc = base()
    doc["users"].append(_user("2001"))
    doc["hunt_groups"] = [{"name": "sales", "pilot": "5000", "members": [{"extension": "101"}]}]
    site = parse_site(doc)
    # "1.." for 101-103; "2..." and "5..." alone on their first digit; emergency numbers
    # with and without the outside digit; the outside digit and anything.
    assert dial_template(site) == ("1..", "2...", "5...", "911", "9911", "112", "9112", "9*")
    doc["users"].append(_user("1001"))  # 1xx and 1xxx: no pattern for "1"
    assert dial_template(parse_site(doc))[:2] == ("2...", "5...")


def test_mapping_is_deterministic_and_complete() -> None:
    site = parse_site(copy.deepcopy(base()))
    a = provisioning_model(site, LISTENS, default_host="192.0.2.10")
    b = provisioning_model(site, LISTENS, default_host="192.0.2.10")
    assert a == b
