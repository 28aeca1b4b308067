"""Provisioning model validation and the phone model catalogue."""

from __future__ import annotations

import pytest

from provisioning import (
    CATALOGUE,
    Blf,
    Line,
    PagingGroup,
    Phone,
    ProvisioningSite,
    SpeedDial,
    check_phone,
    lookup,
    normalise_mac,
)
from provisioning.timezones import cisco_zone, yealink_zone


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("aa:bb:cc:dd:ee:ff", "aabbccddeeff"),
        ("AA:BB:CC:DD:EE:FF", "aabbccddeeff"),
        ("AA-BB-CC-DD-EE-FF", "aabbccddeeff"),
        ("aabb.ccdd.eeff", "aabbccddeeff"),
        ("AABB.CCDD.EEFF", "aabbccddeeff"),
        ("aabbccddeeff", "aabbccddeeff"),
        ("  001A2b3C4d5E\n", "001a2b3c4d5e"),
    ],
)
def test_normalise_mac_accepts(text: str, mac: str) -> None:
    assert normalise_mac(text) == mac


@pytest.mark.parametrize(
    "text",
    [
        "",
        "aabbccddeef",          # 11 digits
        "aabbccddeeff0",        # 13 digits
        "aa:bb:cc:dd:ee",       # 5 groups
        "aa:bb:cc:dd:ee:fg",    # not hex
        "aa:bb-cc:dd:ee:ff",    # mixed separators
        "aab:bcc:dde:eff",      # wrong grouping
        "aa bb cc dd ee ff",
        "aabb.ccdd.eeff.",
        "SEPaabbccddeeff",
    ],
)
def test_normalise_mac_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="malformed MAC address"):
        normalise_mac(text)


def test_phone_normalises_its_mac_and_refuses_bad_ones() -> None:
    line = Line("100", "100", "pw")
    assert Phone("AA-BB-CC-DD-EE-FF", "7841", (line,)).mac == "aabbccddeeff"
    with pytest.raises(ValueError, match="malformed MAC"):
        Phone("aa:bb:cc", "7841", (line,))


def _phone(model: str, lines: int, speed: int = 0, blf: int = 0) -> Phone:
    return Phone(
        mac="aabbccddeeff",
        model=model,
        lines=tuple(Line(str(200 + n), str(200 + n), "pw") for n in range(lines)),
        speed_dials=tuple(SpeedDial("", str(300 + n)) for n in range(speed)),
        blf=tuple(Blf("", str(400 + n)) for n in range(blf)),
    )


@pytest.mark.parametrize(
    ("model", "max_lines"),
    [
        ("7811", 1), ("CP-7821", 2), ("cisco-7841", 4), ("7861", 16), ("8811", 5),
        ("8841", 5), ("8845", 5), ("8851", 5), ("8861", 5), ("8865", 5), ("8821", 6),
        ("T31P", 2), ("SIP-T33G", 4), ("T43U", 12), ("T46U", 16), ("T48U", 16),
        ("T53W", 12), ("T54W", 16), ("T57W", 16),
        ("VVX 150", 2), ("vvx250", 4), ("VVX-350", 6), ("Polycom VVX 450", 12),
    ],
)
def test_line_count_limits(model: str, max_lines: int) -> None:
    assert check_phone(_phone(model, max_lines)) == []
    errors = check_phone(_phone(model, max_lines + 1))
    assert errors and any(f"at most {max_lines}" in e for e in errors), errors


def test_catalogue_entries() -> None:
    assert len(CATALOGUE) == 23
    assert {e.vendor for e in CATALOGUE.values()} == {"cisco", "yealink", "polycom"}
    kem = {e.model for e in CATALOGUE.values() if e.vendor == "cisco" and e.max_modules}
    assert kem == {"CP-8851", "CP-8861", "CP-8865"}
    assert CATALOGUE["cisco-8821"].wireless
    assert all(not e.approximate for e in CATALOGUE.values() if e.vendor == "cisco")
    assert all(e.approximate for e in CATALOGUE.values() if e.vendor != "cisco")


def test_keys_count_expansion_modules() -> None:
    # A 7841 has 4 keys: 2 lines + 2 speed dials fit, a third does not.
    assert check_phone(_phone("7841", 2, speed=2)) == []
    assert any("5 keys" in e for e in check_phone(_phone("7841", 2, speed=2, blf=1)))
    # An 8851 takes two 28-key modules: 5 + 56 = 61 keys.
    assert check_phone(_phone("8851", 1, speed=30, blf=30)) == []
    assert check_phone(_phone("8851", 1, speed=30, blf=31)) != []
    assert check_phone(_phone("8841", 1, speed=4, blf=1)) != []


def test_unknown_model() -> None:
    for model in ("7940", "T99", "VVX 9000", "cisco"):
        assert lookup(model) is None
        assert check_phone(_phone(model, 1)) == [f"phone aabbccddeeff: unknown model {model!r}"]


def test_no_lines_and_duplicate_lines() -> None:
    assert check_phone(Phone("aabbccddeeff", "7841", ())) == ["phone aabbccddeeff: has no lines"]
    line = Line("100", "100", "pw")
    errors = check_phone(Phone("aabbccddeeff", "7841", (line, line)))
    assert errors == ["phone aabbccddeeff: extension 100 appears on more than one line"]


def _site(*groups: PagingGroup) -> ProvisioningSite:
    return ProvisioningSite(name="s", time_zone="UTC", sip_host="10.0.0.1", paging_groups=groups)


def test_paging_group_references() -> None:
    site = _site(PagingGroup("A", "239.0.0.1", 5000), PagingGroup("B", "239.0.0.2", 5000))
    line = (Line("100", "100", "pw"),)
    assert check_phone(Phone("aabbccddeeff", "T46", line, paging_groups=("A", "B")), site) == []
    errors = check_phone(Phone("aabbccddeeff", "T46", line, paging_groups=("C",)), site)
    assert errors == ["phone aabbccddeeff: unknown paging group 'C'"]
    polycom = Phone("aabbccddeeff", "VVX 450", line, paging_groups=("A", "B"))
    assert any("one multicast address" in e for e in check_phone(polycom, site))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_zone": "Mars/Olympus"}, "unknown IANA time zone"),
        ({"sip_host": "bad host"}, "not a host name"),
        ({"transport": "sctp"}, "transport"),
        ({"sip_ports": {"udp": 0}}, "from 1 to 65535"),
        ({"sip_ports": {"tcp": 5060}}, "preferred transport"),
        ({"voicemail_pilot": "vm"}, "voicemail pilot"),
        ({"dial_template": ("9x",)}, "dial template pattern"),
        ({"paging_groups": (PagingGroup("A", "239.0.0.1", 1), PagingGroup("A", "239.0.0.2", 1))},
         "unique"),
    ],
)
def test_site_validation(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "s", "time_zone": "UTC", "sip_host": "10.0.0.1"}
    with pytest.raises(ValueError, match=message):
        ProvisioningSite(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "port", "message"),
    [("10.0.0.1", 5000, "not a multicast"), ("239.0.0.300", 5000, "not an IPv4"),
     ("239.0.0.1", 70000, "65535")],
)
def test_paging_group_validation(address: str, port: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PagingGroup("x", address, port)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"extension": "10a"}, "line extension"),
        ({"auth_username": ""}, "must not be empty"),
        ({"auth_password": ""}, "must not be empty"),
        ({"label": "x" * 33}, "longer than 32"),
    ],
)
def test_line_validation(kwargs: dict[str, str], message: str) -> None:
    base = {"extension": "100", "auth_username": "100", "auth_password": "pw"}
    with pytest.raises(ValueError, match=message):
        Line(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("zone", "cisco", "yealink"),
    [
        ("America/New_York", "Eastern Standard/Daylight Time",
         ("-5", "United States-Eastern Time")),
        ("Europe/London", "GMT Standard/Daylight Time", ("+0", "United Kingdom(London)")),
        ("Asia/Kolkata", "India Standard Time", ("+5:30", "India(Calcutta)")),
        ("Australia/Sydney", "AUS Eastern Standard/Daylight Time", ("+10", "Australia(Sydney)")),
        ("America/St_Johns", "GMT-03:30", ("-3:30", None)),
        ("Asia/Kathmandu", "GMT+05:45", ("+5:45", None)),
    ],
)
def test_time_zone_names(zone: str, cisco: str, yealink: tuple[str, str | None]) -> None:
    assert cisco_zone(zone) == cisco
    assert yealink_zone(zone) == yealink
