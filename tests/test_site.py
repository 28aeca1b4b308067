from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent.site import (
    Site,
    SiteError,
    load_site,
    parse_document,
    parse_site,
    site_document,
    site_fingerprint,
    site_json_schema,
)

DEMO = Path(__file__).resolve().parent.parent / "agent" / "demo" / "site.yaml"


def base() -> dict[str, Any]:
    return {
        "site": {"name": "Test", "timezone": "Europe/Berlin", "realm": "pbx.test"},
        "users": [
            {"id": "alice", "name": "Alice", "extension": "101",
             "sip": {"username": "alice", "password": "pw-alice"}},
            {"id": "bob", "name": "Bob", "extension": "102",
             "sip": {"username": "bob", "password": "pw-bob"}},
        ],
    }


def with_(path: str, value: Any) -> dict[str, Any]:
    """base() with the value at a dotted path (list indices as numbers) replaced."""
    doc = base()
    node: Any = doc
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        node = node[part]
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return doc


DELETE = object()


def errors_of(doc: Any) -> list[str]:
    with pytest.raises(SiteError) as err:
        parse_site(doc)
    return err.value.errors


def test_minimal_document_is_valid_with_defaults() -> None:
    site = parse_site(base())
    assert site.site.outside_line_digit == "9"
    assert site.sip.min_expires == 60
    assert site.sip.max_expires == 3600
    assert site.sip.default_expires == 3600
    assert site.sip.max_contacts_per_user == 5
    assert site.sip.nonce_lifetime == 300
    assert site.user_by_username("bob") is site.users[1]
    assert site.user_by_extension("101") is site.users[0]
    assert site.user_by_id("nobody") is None


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (with_("users.1.extension", "0101"), ['users[1].extension: "0101" must not start with 0']),
        (with_("users.0.extension", "12"), ['users[0].extension: "12" must have 3 to 5 digits']),
        (with_("users.0.extension", "123456"),
         ['users[0].extension: "123456" must have 3 to 5 digits']),
        (with_("users.0.extension", "1a3"),
         ['users[0].extension: "1a3" must contain only digits 0-9']),
        (with_("users.0.extension", "112"),
         ['users[0].extension: "112" is an emergency number and cannot be an extension']),
        (with_("users.0.extension", "901"),
         ['users[0].extension: "901" starts with the outside-line digit "9" '
          "(site.outside_line_digit)"]),
        (with_("users.1.extension", "101"),
         ['users[1].extension: "101" is already the extension of users[0]']),
        (with_("users.1.id", "Alice"), ['users[1].id: "Alice" is already the id of users[0]']),
        (with_("users.1.sip.username", "alice"),
         ['users[1].sip.username: "alice" is already the SIP username of users[0]']),
        (with_("users.0.id", "has space"),
         ['users[0].id: "has space" must be 1-64 characters of letters, digits and . _ @ -, '
          "starting with a letter or digit"]),
        (with_("users.0.sip.password", ""), ["users[0].sip.password: must not be empty"]),
        (with_("users.0.sip.password", DELETE),
         ["users[0].sip.password: required field is missing"]),
        (with_("users.0.sip.passwd", "x"),
         ['users[0].sip.passwd: unknown field (did you mean "password"?)']),
        (with_("users.0.name", ""), ["users[0].name: must not be empty"]),
        (with_("users.0.nmae", "A"), ['users[0].nmae: unknown field (did you mean "name"?)']),
        (with_("site.timezone", "Europe/Berln"),
         ['site.timezone: "Europe/Berln" is not a known IANA time zone '
          '(did you mean "Europe/Berlin"?)']),
        (with_("site.timezone", "../../etc/passwd"),
         ['site.timezone: "../../etc/passwd" is not a known IANA time zone']),
        (with_("site.realm", 'a"b'),
         ['site.realm: "a\\"b" must be printable ASCII without quotes or backslashes']),
        (with_("site.realm", DELETE), ["site.realm: required field is missing"]),
        (with_("site.outside_line_digit", "99"),
         ['site.outside_line_digit: "99" must be a single digit 0-9']),
        (with_("site.timzone", "UTC"), ['site.timzone: unknown field (did you mean "timezone"?)']),
        (with_("site", "x"), ["site: must be a mapping"]),
        (with_("users", {"a": 1}), ["users: must be a list"]),
        (with_("users.0", "alice"), ["users[0]: must be a mapping"]),
        (with_("sip", {"min_expires": 5}), ["sip.min_expires: must be at least 10"]),
        (with_("sip", {"max_contacts_per_user": 0}),
         ["sip.max_contacts_per_user: must be at least 1"]),
        (with_("sip", {"nonce_lifetime": "300"}), ["sip.nonce_lifetime: must be an integer"]),
        (with_("sip", {"min_expires": True}), ["sip.min_expires: must be an integer"]),
        (with_("sip", {"default_expires": 30}),
         ["sip.default_expires: 30 must be between min_expires (60) and max_expires (3600)"]),
        (with_("sip", {"min_expires": 7200}),
         ["sip.max_expires: 3600 must not be less than min_expires (7200)"]),
        (with_("sip", {"registrar": 1}), ["sip.registrar: unknown field"]),
        (with_("trunk", []), ['trunk: unknown field (did you mean "trunks"?)']),
        ([], ["(document): must be a mapping"]),
        ({}, ["site: required field is missing"]),
    ],
)
def test_validation_errors(doc: Any, expected: list[str]) -> None:
    assert errors_of(doc) == expected


def test_every_error_is_listed_in_document_order() -> None:
    doc = base()
    doc["site"]["timezone"] = "Mars/Base"
    doc["users"].append({"id": "carol", "name": "Carol", "extension": "0101",
                         "sip": {"username": "bob", "password": "x", "pin": 1}})
    doc["users"].append({"id": "dave", "name": "Dave", "extension": "102",
                         "sip": {"username": "dave"}})
    assert errors_of(doc) == [
        'site.timezone: "Mars/Base" is not a known IANA time zone',
        'users[2].extension: "0101" must not start with 0',
        'users[2].sip.username: "bob" is already the SIP username of users[1]',
        "users[2].sip.pin: unknown field",
        'users[3].extension: "102" is already the extension of users[1]',
        "users[3].sip.password: required field is missing",
    ]


def test_outside_digit_zero_allows_any_extension() -> None:
    doc = with_("site.outside_line_digit", "0")
    doc["users"][0]["extension"] = "901"
    assert parse_site(doc).users[0].extension == "901"


def test_direct_model_construction_still_checks_consistency() -> None:
    doc = with_("users.1.extension", "101")
    with pytest.raises(ValueError, match=r'users\[1\]\.extension: "101" is already'):
        Site.model_validate(doc)


YAML_DOC = """\
# comment
site:
  name: Test
  timezone: Europe/Berlin
  realm: pbx.test
users:
  - id: alice
    name: Alice
    extension: 101          # unquoted: YAML makes it a number, accepted as "101"
    sip: {username: 1001, password: pw-alice}
"""


def test_yaml_and_json_give_the_same_site(tmp_path: Path) -> None:
    y = tmp_path / "site.conf"
    y.write_text(YAML_DOC)
    j = tmp_path / "site.yaml"  # the extension does not matter: content decides
    doc = parse_document(YAML_DOC)
    j.write_text(json.dumps(doc, indent=1))
    a, b = load_site(y), load_site(j)
    assert a == b
    assert a.users[0].extension == "101"
    assert a.users[0].sip.username == "1001"
    assert site_fingerprint(a) == site_fingerprint(b)


def test_yaml_octal_looking_extension_keeps_its_leading_zero() -> None:
    doc = parse_document(YAML_DOC.replace("extension: 101 ", "extension: 0101"))
    assert doc["users"][0]["extension"] == "0101"
    with pytest.raises(SiteError) as err:
        parse_site(doc)
    assert err.value.errors == ['users[0].extension: "0101" must not start with 0']


@pytest.mark.parametrize(
    ("scalar", "value"),
    [("no", "no"), ("on", "on"), ("true", True), ("9:30", "9:30"), ("1_000", "1_000"),
     ("0x10", "0x10"), ("42", 42), ("-1", -1), ("1.5", 1.5), ("1e3", 1000.0), ("007", "007")],
)
def test_yaml_scalars_are_yaml_1_2_like(scalar: str, value: Any) -> None:
    assert parse_document(f"k: {scalar}\n") == {"k": value}


def test_yaml_flow_mapping_that_is_not_json() -> None:
    assert parse_document("{a: 1}") == {"a": 1}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "(document): is empty"),
        ("site: [1\n", "(document): invalid YAML at line 2"),
        ('{"site": [}', "(document): invalid JSON at line 1 column 11"),
        ("a: 1\na: 2\n", '(document): invalid YAML: duplicate key "a" at line 2 (first at line 1)'),
        ('{"a": 1, "a": 2}', '(document): invalid JSON: duplicate key "a"'),
    ],
)
def test_parse_document_errors(text: str, fragment: str) -> None:
    with pytest.raises(SiteError) as err:
        parse_document(text)
    assert len(err.value.errors) == 1
    assert err.value.errors[0].startswith(fragment), err.value.errors


def test_load_site_errors(tmp_path: Path) -> None:
    with pytest.raises(SiteError) as err:
        load_site(tmp_path / "missing.yaml")
    assert err.value.errors[0].startswith("(document): cannot read ")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"site: {name: \xe9}\n")
    with pytest.raises(SiteError) as err:
        load_site(bad)
    assert err.value.errors == ["(document): not UTF-8 (bad byte at offset 13)"]


def test_passwords_never_shown() -> None:
    site = parse_site(base())
    text = repr(site) + str(site) + json.dumps(site_document(site))
    assert "pw-alice" not in text
    assert "**********" in text
    assert site_document(site, reveal_secrets=True)["users"][0]["sip"]["password"] == "pw-alice"
    # an invalid document never echoes a password either
    doc = with_("users.0.sip.password", "x" * 200)
    doc["users"][0]["sip"]["password"] = "secret-" + "x" * 200
    assert not any("secret-" in line for line in errors_of(doc))


def test_fingerprint_is_canonical() -> None:
    a = parse_site(base())
    reordered = {"users": base()["users"], "site": dict(reversed(base()["site"].items()))}
    explicit_defaults = base()
    explicit_defaults["sip"] = {"min_expires": 60}
    assert site_fingerprint(a) == site_fingerprint(parse_site(reordered))
    assert site_fingerprint(a) == site_fingerprint(parse_site(explicit_defaults))
    changed_pw = copy.deepcopy(base())
    changed_pw["users"][0]["sip"]["password"] = "other"
    assert site_fingerprint(a) != site_fingerprint(parse_site(changed_pw))
    assert len(site_fingerprint(a)) == 64


def test_schema_field_allows_dollar_schema_key() -> None:
    doc = base()
    doc["$schema"] = "./site.schema.json"
    site = parse_site(doc)
    assert site_fingerprint(site) == site_fingerprint(parse_site(base()))


def test_json_schema() -> None:
    schema = site_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["required"]) == {"site"}
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert defs["SipAccount"]["properties"]["password"]["writeOnly"] is True
    assert defs["User"]["properties"]["extension"]["pattern"] == "^[1-9][0-9]{2,4}$"
    assert "$schema" in schema["properties"]


def test_demo_site_is_valid() -> None:
    site = load_site(DEMO)
    assert len(site.users) >= 3
    assert {u.extension for u in site.users} >= {"101", "102", "103"}


@pytest.mark.parametrize(
    ("algorithms", "expected"),
    [
        (["MD5", "MD5"], 'sip.digest_algorithms: "MD5" is listed twice'),
        (["SHA-512"], "sip.digest_algorithms[0]: must be 'SHA-256' or 'MD5'"),
        ([], "sip.digest_algorithms: must not be empty"),
    ],
)
def test_digest_algorithms(algorithms: list[str], expected: str) -> None:
    assert errors_of(with_("sip", {"digest_algorithms": algorithms})) == [expected]
    assert parse_site(with_("sip", {"digest_algorithms": ["MD5"]})).sip.digest_algorithms == [
        "MD5"]


def test_media_port_range() -> None:
    from agent.site import SiteError, parse_site

    base = {"site": {"name": "T", "timezone": "UTC", "realm": "pbx.test"}}
    assert (parse_site(base).media.rtp_port_min, parse_site(base).media.rtp_port_max) == (
        16384, 32767)
    site = parse_site({**base, "media": {"rtp_port_min": 20000, "rtp_port_max": 20099}})
    assert site.media.rtp_port_max == 20099
    for bad in ({"rtp_port_min": 20000, "rtp_port_max": 20001}, {"rtp_port_min": 80}):
        try:
            parse_site({**base, "media": bad})
        except SiteError as exc:
            assert all(e.startswith("media") for e in exc.errors), exc.errors
        else:
            raise AssertionError(f"accepted {bad}")


# ---- privacy and the schema version

KEY = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="  # 32 bytes, base64


def test_privacy_defaults_let_nothing_but_aggregates_leave() -> None:
    privacy = parse_site(base()).privacy
    assert privacy.partner_access is True
    assert privacy.cdr_upload is False and privacy.voicemail_backup is False
    assert privacy.voicemail_backup_public_key is None


def test_privacy_opt_ins_parse() -> None:
    doc = with_("privacy", {"partner_access": False, "cdr_upload": True,
                            "voicemail_backup": True, "voicemail_backup_public_key": KEY})
    privacy = parse_site(doc).privacy
    assert (privacy.partner_access, privacy.cdr_upload, privacy.voicemail_backup) == \
        (False, True, True)
    assert privacy.voicemail_backup_public_key == KEY


@pytest.mark.parametrize(("privacy", "expected"), [
    ({"voicemail_backup": True}, "privacy: voicemail_backup needs voicemail_backup_public_key"),
    ({"voicemail_backup_public_key": "not base64!"}, "privacy.voicemail_backup_public_key: "),
    ({"voicemail_backup_public_key": "AAAA"}, "raw 32-byte X25519 public key, got 3 bytes"),
    ({"cdr_upload": "yes"}, "privacy.cdr_upload: "),
    ({"telemetry": True}, "privacy.telemetry: "),
])
def test_privacy_errors_name_the_field(privacy: dict[str, Any], expected: str) -> None:
    errors = errors_of(with_("privacy", privacy))
    assert any(expected in e for e in errors), errors


def test_a_newer_schema_version_is_refused_alone() -> None:
    doc = with_("schema_version", 2)
    doc["future_section"] = {"x": 1}
    assert errors_of(doc) == [
        "schema_version: 2 is newer than this edgepbx understands (1); update the agent "
        "before applying this configuration"]


@pytest.mark.parametrize("value", [0, "1", True])
def test_a_bad_schema_version_is_an_error(value: Any) -> None:
    assert any(e.startswith("schema_version: ") for e in errors_of(with_("schema_version", value)))


def test_the_current_schema_version_is_accepted() -> None:
    assert parse_site(with_("schema_version", 1)).schema_version == 1
