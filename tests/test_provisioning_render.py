"""Phone configuration renderers: golden files, well-formedness, escaping, file names.

Golden files live in tests/data/provisioning/. They are rewritten only when
EDGEPBX_REGEN_GOLDEN=1 is set; a missing golden file is a failure, never
silently created. Review the diff of a regenerated file before committing it.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provisioning import (
    Blf,
    Line,
    PagingGroup,
    Phone,
    ProvisioningSite,
    SpeedDial,
    file_for,
    mac_in_filename,
    render_cisco_default,
    render_cisco_dialplan,
    render_cisco_sep,
    render_polycom_common,
    render_polycom_mac,
    render_yealink_common,
    render_yealink_mac,
)

GOLDEN = Path(__file__).parent / "data" / "provisioning"

SITE = ProvisioningSite(
    name="Acme Dental",
    time_zone="Europe/Berlin",
    sip_host="pbx.acme.example",
    sip_ports={"udp": 5060, "tcp": 5060, "tls": 5061},
    transport="udp",
    voicemail_pilot="*97",
    outside_line_digit="9",
    dial_template=("1...", "9*", "112"),
    paging_groups=(
        PagingGroup("All", "239.1.1.1", 5000),
        PagingGroup("Front desk", "239.1.1.2", 5002),
    ),
)
CISCO = Phone(
    mac="00:1A:2B:3C:4D:5E",
    model="CP-7841",
    lines=(
        Line("101", "101", "s3cret-101", display_name="Reception", label="Front"),
        Line("199", "199", "s3cret-199", display_name="Shared desk", shared=True),
    ),
    speed_dials=(SpeedDial("Lab", "5551234"),),
    blf=(Blf("Dr Who", "102"),),
    paging_groups=("All", "Front desk"),
)
YEALINK = Phone(
    mac="80-5E-C0-11-22-33",
    model="T46U",
    lines=(Line("102", "102", "yl-pass-102", display_name="Dr Who"),),
    speed_dials=(SpeedDial("Pharmacy", "0301234567"),),
    blf=(Blf("Reception", "101"),),
    paging_groups=("All",),
)
POLYCOM = Phone(
    mac="0004.f2ab.cdef",
    model="VVX 450",
    lines=(
        Line("103", "103", "pc-pass-103", display_name="Hygienist"),
        Line("199", "199", "s3cret-199", display_name="Shared desk", shared=True),
    ),
    speed_dials=(SpeedDial("", "5551234"),),
    blf=(Blf("Reception", "101"),),
    paging_groups=("Front desk",),
)
PHONES = {p.mac: p for p in (CISCO, YEALINK, POLYCOM)}

RENDERED = {
    "SEP001A2B3C4D5E.cnf.xml": lambda: render_cisco_sep(SITE, CISCO),
    "XmlDefault.cnf.xml": lambda: render_cisco_default(SITE),
    "dialplan.xml": lambda: render_cisco_dialplan(SITE),
    "805ec0112233.cfg": lambda: render_yealink_mac(SITE, YEALINK),
    "y000000000000.cfg": lambda: render_yealink_common(SITE),
    "0004f2abcdef-edgepbx.cfg": lambda: render_polycom_mac(SITE, POLYCOM),
    "000000000000.cfg": lambda: render_polycom_common(SITE),
}
XML_FILES = [name for name in RENDERED if not name.startswith(("805e", "y0"))]


def _check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("EDGEPBX_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        # Regenerating proves nothing: never let it pass as a check.
        pytest.skip(f"regenerated {name}; review the diff before committing it")
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; run with EDGEPBX_REGEN_GOLDEN=1 to create it")
    assert data == path.read_bytes(), f"{name} differs from its golden file"


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_golden(name: str) -> None:
    _check_golden(name, RENDERED[name]())


def test_missing_golden_file_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEPBX_REGEN_GOLDEN", raising=False)
    monkeypatch.setitem(globals(), "GOLDEN", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        _check_golden("nope.cfg", b"x")
    assert not (tmp_path / "nope.cfg").exists()
    (tmp_path / "nope.cfg").write_bytes(b"y")
    with pytest.raises(AssertionError, match="differs"):
        _check_golden("nope.cfg", b"x")


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_deterministic(name: str) -> None:
    assert RENDERED[name]() == RENDERED[name]()


def test_golden_set_is_exactly_the_rendered_files() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(RENDERED)


@pytest.mark.parametrize("name", XML_FILES)
def test_xml_well_formed(name: str) -> None:
    data = RENDERED[name]()
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    ET.fromstring(data)


def _sep() -> ET.Element:
    return ET.fromstring(render_cisco_sep(SITE, CISCO))


def test_cisco_sep_content() -> None:
    root = _sep()
    assert root.findtext("deviceProtocol") == "SIP"
    assert root.findtext("devicePool/dateTimeSetting/timeZone") == (
        "W. Europe Standard/Daylight Time"
    )
    assert root.findtext("devicePool/callManagerGroup/members/member/callManager/"
                         "processNodeName") == "pbx.acme.example"
    assert root.findtext("transportLayerProtocol") == "2"
    assert root.findtext("sipProfile/dialTemplate") == "dialplan.xml"
    load = root.find("loadInformation")
    assert load is not None and not (load.text or "")
    lines = root.findall("sipProfile/sipLines/line")
    assert [ln.findtext("featureID") for ln in lines] == ["9", "9", "21", "22"]
    assert [ln.get("button") for ln in lines] == ["1", "2", "3", "4"]
    first, shared, speed, blf = lines
    assert first.findtext("featureLabel") == "Front"
    assert first.findtext("name") == "101"
    assert first.findtext("displayName") == "Reception"
    assert first.findtext("contact") == "101"
    assert first.findtext("authName") == "101"
    assert first.findtext("authPassword") == "s3cret-101"
    assert first.findtext("proxy") == "USECALLMANAGER"
    assert first.findtext("messagesNumber") == "*97"
    assert first.findtext("sharedLine") == "false"
    assert shared.findtext("sharedLine") == "true"
    assert speed.findtext("speedDialNumber") == "5551234"
    assert blf.findtext("speedDialNumber") == "102"
    groups = root.findall("vendorConfig/multicastPaging/group")
    assert [(g.findtext("address"), g.findtext("port")) for g in groups] == [
        ("239.1.1.1", "5000"), ("239.1.1.2", "5002")]


def test_cisco_transport_codes() -> None:
    for transport, code, port in (("tcp", "1", "5060"), ("tls", "4", "5061")):
        site = ProvisioningSite(name="x", time_zone="UTC", sip_host="10.0.0.1",
                                transport=transport)  # type: ignore[arg-type]
        root = ET.fromstring(render_cisco_sep(site, Phone(CISCO.mac, "7811", CISCO.lines[:1])))
        assert root.findtext("transportLayerProtocol") == code
        assert root.findtext("sipProfile/sipLines/line/port") == port
        assert root.findtext("devicePool/dateTimeSetting/timeZone") == "Greenwich Standard Time"


def test_cisco_unknown_zone_falls_back_to_offset() -> None:
    site = ProvisioningSite(name="x", time_zone="Asia/Kathmandu", sip_host="10.0.0.1")
    root = ET.fromstring(render_cisco_default(site))
    assert root.findtext("devicePool/dateTimeSetting/timeZone") == "GMT+05:45"


def test_xml_default_has_no_lines_or_credentials() -> None:
    data = render_cisco_default(SITE)
    root = ET.fromstring(data)
    assert root.find("sipProfile/sipLines") is not None
    assert list(root.find("sipProfile/sipLines") or []) == []
    for tag in ("authName", "authPassword", "line", "multicastPaging"):
        assert root.find(f".//{tag}") is None
    for phone in PHONES.values():
        for line in phone.lines:
            assert line.auth_password.encode() not in data


def test_dialplan_patterns() -> None:
    root = ET.fromstring(render_cisco_dialplan(SITE))
    templates = [(t.get("MATCH"), t.get("Timeout")) for t in root.findall("TEMPLATE")]
    assert templates == [
        ("1...", "0"), ("9*", "3"), ("112", "0"), ("\\*97", "0"), ("*", "5")]


def _yealink_keys(data: bytes) -> dict[str, str]:
    text = data.decode("utf-8")
    assert text.startswith("#!version:1.0.0.1\n")
    pairs = {}
    for raw in text.splitlines()[1:]:
        if raw.startswith("#"):
            continue
        key, sep, value = raw.partition(" = ")
        assert sep, raw
        assert key not in pairs, f"duplicate key {key}"
        pairs[key] = value
    return pairs


def test_yealink_mac_content() -> None:
    keys = _yealink_keys(render_yealink_mac(SITE, YEALINK))
    assert keys["account.1.enable"] == "1"
    assert keys["account.1.user_name"] == "102"
    assert keys["account.1.auth_name"] == "102"
    assert keys["account.1.password"] == "yl-pass-102"
    assert keys["account.1.display_name"] == "Dr Who"
    assert keys["account.1.sip_server.1.address"] == "pbx.acme.example"
    assert keys["account.1.sip_server.1.port"] == "5060"
    assert keys["account.1.sip_server.1.transport_type"] == "0"
    assert keys["voice_mail.number.1"] == "*97"
    assert (keys["linekey.1.type"], keys["linekey.1.line"]) == ("15", "1")
    assert (keys["linekey.2.type"], keys["linekey.2.value"]) == ("13", "0301234567")
    assert (keys["linekey.3.type"], keys["linekey.3.value"]) == ("16", "101")
    assert keys["multicast.listen_address.1.ip_address"] == "239.1.1.1:5000"
    assert "account.2.enable" not in keys


def test_yealink_common_has_time_and_no_accounts() -> None:
    keys = _yealink_keys(render_yealink_common(SITE))
    assert keys["local_time.time_zone"] == "+1"
    assert keys["local_time.time_zone_name"] == "Germany(Berlin)"
    assert keys["local_time.ntp_server1"] == "pbx.acme.example"
    assert keys["local_time.summer_time"] == "2"
    assert not any(k.startswith(("account.", "linekey.")) for k in keys)


def test_polycom_mac_content() -> None:
    root = ET.fromstring(render_polycom_mac(SITE, POLYCOM))
    reg = root.find("reg")
    assert reg is not None
    assert reg.get("reg.1.address") == "103"
    assert reg.get("reg.1.auth.userId") == "103"
    assert reg.get("reg.1.auth.password") == "pc-pass-103"
    assert reg.get("reg.1.server.1.address") == "pbx.acme.example"
    assert reg.get("reg.1.server.1.port") == "5060"
    assert reg.get("reg.1.server.1.transport") == "UDPOnly"
    assert reg.get("reg.2.type") == "shared"
    msg = root.find("msg")
    assert msg is not None and msg.get("msg.mwi.2.callBack") == "*97"
    att = root.find("attendant")
    assert att is not None
    assert (att.get("attendant.resourceList.1.address"),
            att.get("attendant.resourceList.1.type")) == ("101", "normal")
    assert (att.get("attendant.resourceList.2.label"),
            att.get("attendant.resourceList.2.type")) == ("5551234", "automata")
    paging = root.find("paging")
    ptt = root.find("ptt")
    assert paging is not None and ptt is not None
    # "Front desk" is the site's second group: Polycom group 2 everywhere.
    assert paging.get("paging.group.2.label") == "Front desk"
    assert paging.get("paging.group.1.label") is None
    assert (ptt.get("ptt.address"), ptt.get("ptt.port")) == ("239.1.1.2", "5002")


def test_polycom_common_points_at_phone_file() -> None:
    root = ET.fromstring(render_polycom_common(SITE))
    assert root.tag == "APPLICATION"
    assert root.get("CONFIG_FILES") == "[PHONE_MAC_ADDRESS]-edgepbx.cfg"
    assert b"pass" not in render_polycom_common(SITE)


HOSTILE = "<Zoë & \"Ann\" 'O'Brien'>"


def _hostile_phone(model: str, mac: str = "aabbccddeeff") -> Phone:
    return Phone(
        mac=mac, model=model,
        lines=(Line("150", "150&<", "p<a>s&s\"'", display_name=HOSTILE, label="Zoë <1>"),),
        speed_dials=(SpeedDial("Bäcker & Söhne", "123"),),
        blf=(Blf("<boss>", "151"),),
    )


def test_cisco_escaping_round_trips() -> None:
    data = render_cisco_sep(SITE, _hostile_phone("8851"))
    assert b"<Zo" not in data and "Zoë".encode() in data
    root = ET.fromstring(data)
    line = root.find("sipProfile/sipLines/line")
    assert line is not None
    assert line.findtext("displayName") == HOSTILE
    assert line.findtext("authPassword") == "p<a>s&s\"'"
    assert line.findtext("authName") == "150&<"
    labels = [ln.findtext("featureLabel") for ln in root.findall("sipProfile/sipLines/line")]
    assert labels == ["Zoë <1>", "Bäcker & Söhne", "<boss>"]


def test_polycom_escaping_round_trips() -> None:
    data = render_polycom_mac(SITE, _hostile_phone("VVX 450"))
    reg = ET.fromstring(data).find("reg")
    assert reg is not None
    assert reg.get("reg.1.displayName") == HOSTILE
    assert reg.get("reg.1.auth.password") == "p<a>s&s\"'"
    assert reg.get("reg.1.label") == "Zoë <1>"


def test_yealink_non_ascii_is_utf8_and_one_key_per_line() -> None:
    data = render_yealink_mac(SITE, _hostile_phone("T54W"))
    keys = _yealink_keys(data)
    assert keys["account.1.display_name"] == HOSTILE
    assert keys["linekey.2.label"] == "Bäcker & Söhne"


def test_site_name_with_markup_is_escaped() -> None:
    site = ProvisioningSite(name="A&B <Clinic> -- \"x\"", time_zone="UTC", sip_host="10.0.0.1")
    root = ET.fromstring(render_cisco_default(site))
    assert root.findtext("sipProfile/phoneLabel") == "A&B <Clinic> -- \"x\""
    ET.fromstring(render_polycom_common(site))


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\x00b", "tab\there"])
def test_control_characters_refused_at_construction(text: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        Line("150", "150", "pw", display_name=text)
    with pytest.raises(ValueError, match="control characters"):
        SpeedDial(text, "123")
    with pytest.raises(ValueError, match="control characters"):
        ProvisioningSite(name=text, time_zone="UTC", sip_host="10.0.0.1")


def test_yealink_writer_refuses_newline_even_if_model_bypassed() -> None:
    line = Line("150", "150", "pw")
    object.__setattr__(line, "display_name", "x\naccount.2.enable = 1")
    phone = Phone("aabbccddeeff", "T46", (line,))
    with pytest.raises(ValueError, match="newline"):
        render_yealink_mac(SITE, phone)


# ---- file_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected", "content_type"),
    [
        ("SEP001A2B3C4D5E.cnf.xml", "SEP001A2B3C4D5E.cnf.xml", "application/xml"),
        ("sep001a2b3c4d5e.CNF.XML", "SEP001A2B3C4D5E.cnf.xml", "application/xml"),
        ("/SEP001A2B3C4D5E.cnf.xml", "SEP001A2B3C4D5E.cnf.xml", "application/xml"),
        ("XmlDefault.cnf.xml", "XmlDefault.cnf.xml", "application/xml"),
        ("XMLDEFAULT.CNF.XML", "XmlDefault.cnf.xml", "application/xml"),
        ("dialplan.xml", "dialplan.xml", "application/xml"),
        ("805ec0112233.cfg", "805ec0112233.cfg", "text/plain; charset=utf-8"),
        ("805EC0112233.cfg", "805ec0112233.cfg", "text/plain; charset=utf-8"),
        ("y000000000000.cfg", "y000000000000.cfg", "text/plain; charset=utf-8"),
        ("y000000000028.cfg", "y000000000000.cfg", "text/plain; charset=utf-8"),
        ("000000000000.cfg", "000000000000.cfg", "application/xml"),
        ("0004f2abcdef.cfg", "000000000000.cfg", "application/xml"),
        ("0004F2ABCDEF-edgepbx.cfg", "0004f2abcdef-edgepbx.cfg", "application/xml"),
        # Unknown MACs, vendor mismatches, traversal and junk get nothing.
        ("SEP112233445566.cnf.xml", None, None),
        ("112233445566.cfg", None, None),
        ("112233445566-edgepbx.cfg", None, None),
        ("SEP805EC0112233.cnf.xml", None, None),
        ("001a2b3c4d5e.cfg", None, None),
        ("805ec0112233-edgepbx.cfg", None, None),
        ("SEP001A2B3C4D5E.cnf.xml.sgn", None, None),
        ("../SEP001A2B3C4D5E.cnf.xml", None, None),
        ("SEP001A2B3C4D5E.cnf.xml\n", None, None),
        ("//SEP001A2B3C4D5E.cnf.xml", None, None),
        ("a/SEP001A2B3C4D5E.cnf.xml", None, None),
        ("CTLSEP001A2B3C4D5E.tlv", None, None),
        ("", None, None),
        ("x" * 300, None, None),
    ],
)
def test_file_for(filename: str, expected: str | None, content_type: str | None) -> None:
    result = file_for(SITE, PHONES, filename)
    if expected is None:
        assert result is None
    else:
        assert result == (RENDERED[expected](), content_type)


@pytest.mark.parametrize(
    ("filename", "mac"),
    [
        ("SEP001A2B3C4D5E.cnf.xml", "001a2b3c4d5e"),
        ("112233445566.cfg", "112233445566"),
        ("112233445566-edgepbx.cfg", "112233445566"),
        ("000000000000.cfg", None),
        ("XmlDefault.cnf.xml", None),
        ("y000000000000.cfg", None),
        # Parsed exactly as file_for parses names: one leading "/" only, no trailing junk.
        ("/SEP001A2B3C4D5E.cnf.xml", "001a2b3c4d5e"),
        ("//SEP001A2B3C4D5E.cnf.xml", None),
        ("SEP001A2B3C4D5E.cnf.xml\n", None),
    ],
)
def test_mac_in_filename(filename: str, mac: str | None) -> None:
    assert mac_in_filename(filename) == mac
