"""The site configuration: schema, loading, validation and fingerprint.

One document per site, YAML or JSON. Every section is a pydantic model with ``extra="forbid"``
so that a typo is an error, not a silently ignored key. :func:`load_site` and :func:`parse_site`
report *every* problem as a line ``path: message``, e.g.
``users[3].extension: "0101" must not start with 0``.

Secrets (SIP passwords) are :class:`pydantic.SecretStr`: their ``repr``/``str`` and default dumps
show ``**********``. Only :func:`site_document` with ``reveal_secrets=True`` (used for the
fingerprint and the encrypted last good portal document) sees them.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import ipaddress
import json
import re
import types
import typing
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dialplan.hunt import DEFAULT_RING_TIME, MAX_MEMBERS
from dialplan.model import DEFAULT_FEATURE_CODES, DEFAULT_NO_ANSWER_TIMEOUT, Feature
from dialplan.numbers import MAX_DIALED_LENGTH
from dialplan.numbers import Translation as _DialplanTranslation
from dialplan.restriction import RestrictionRules
from provisioning.catalogue import CATALOGUE
from provisioning.catalogue import lookup as lookup_phone_model
from provisioning.model import normalise_mac

__all__ = [
    "EMERGENCY_NUMBERS",
    "FEATURE_KEYS",
    "MAX_DOCUMENT_BYTES",
    "WEEKDAYS",
    "Attendant",
    "AttendantMenu",
    "Destination",
    "Did",
    "FeatureCodes",
    "Forward",
    "HttpAuth",
    "HuntGroup",
    "HuntMember",
    "MenuOption",
    "NightService",
    "PageGroup",
    "PageMulticast",
    "PagingGroup",
    "Park",
    "Phone",
    "PhoneBlf",
    "PhoneLine",
    "PhoneSpeedDial",
    "ProvisioningSettings",
    "Restriction",
    "Schedule",
    "SchemaModel",
    "SipAccount",
    "SipSettings",
    "Site",
    "SiteError",
    "SiteSettings",
    "SmtpSettings",
    "Translation",
    "Trunk",
    "User",
    "VoicemailEmail",
    "VoicemailSettings",
    "WeekHours",
    "load_site",
    "parse_document",
    "parse_holiday",
    "parse_site",
    "parse_time_range",
    "site_document",
    "site_fingerprint",
    "site_json_schema",
]

#: Numbers that must keep reaching the emergency services; no extension may shadow them.
EMERGENCY_NUMBERS: Final = frozenset({"112", "911", "999"})
#: A site document larger than this is refused before parsing.
MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
#: The newest site schema this agent understands. A document with a higher
#: ``schema_version`` (written by a newer portal for a newer agent) is refused whole,
#: before any other check, so the box keeps its running configuration.
SITE_SCHEMA_VERSION: Final = 1
_ROOT: Final = "(document)"
_CHECKED: Final = "edgepbx_cross_checked"


class SiteError(Exception):
    """The site document is unusable. ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------------------------
# Field types


def _quote(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return json.dumps(shown, ensure_ascii=False)


def _int_to_str(value: Any) -> Any:
    """YAML turns ``extension: 101`` into an int; accept it as the string it was meant to be."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _no_control_chars(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise PydanticCustomError("control_chars", "must not contain control characters")
    return value


def _check_extension(value: str) -> str:
    if not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("extension", "{value} must contain only digits 0-9",
                                  {"value": _quote(value)})
    if value.startswith("0"):
        raise PydanticCustomError("extension", "{value} must not start with 0",
                                  {"value": _quote(value)})
    if not 3 <= len(value) <= 5:
        raise PydanticCustomError("extension", "{value} must have 3 to 5 digits",
                                  {"value": _quote(value)})
    if value in EMERGENCY_NUMBERS:
        raise PydanticCustomError(
            "extension", "{value} is an emergency number and cannot be an extension",
            {"value": _quote(value)},
        )
    return value


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~+-]{0,63}$")


def _check_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise PydanticCustomError(
            "user_id",
            "{value} must be 1-64 characters of letters, digits and . _ @ -, "
            "starting with a letter or digit",
            {"value": _quote(value)},
        )
    return value


def _check_username(value: str) -> str:
    if not _USERNAME_RE.match(value):
        raise PydanticCustomError(
            "sip_username",
            "{value} must be 1-64 characters of letters, digits and . _ ~ + -, "
            "starting with a letter or digit",
            {"value": _quote(value)},
        )
    return value


def _check_password(value: SecretStr) -> SecretStr:
    # Never include the value in a message.
    secret = value.get_secret_value()
    if not secret:
        raise PydanticCustomError("password", "must not be empty")
    if len(secret) > 128:
        raise PydanticCustomError("password", "must be at most 128 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        raise PydanticCustomError("password", "must not contain control characters")
    return value


def _check_realm(value: str) -> str:
    if not value:
        raise PydanticCustomError("realm", "must not be empty")
    if len(value) > 253:
        raise PydanticCustomError("realm", "must be at most 253 characters")
    if value != value.strip():
        raise PydanticCustomError("realm", "{value} must not start or end with a space",
                                  {"value": _quote(value)})
    if not all(0x20 <= ord(c) < 0x7F and c not in '"\\' for c in value):
        raise PydanticCustomError(
            "realm", "{value} must be printable ASCII without quotes or backslashes",
            {"value": _quote(value)},
        )
    return value


def _check_timezone(value: str) -> str:
    ok = bool(value) and not value.startswith("/") and ".." not in value.split("/")
    if ok:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            ok = False
    if not ok:
        close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise PydanticCustomError(
            "timezone", "{value} is not a known IANA time zone{hint}",
            {"value": _quote(value), "hint": hint},
        )
    return value


def _no_duplicates(values: list[Any]) -> list[Any]:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise PydanticCustomError("duplicate", "{value} is listed twice",
                                      {"value": _quote(str(value))})
    return values


def _check_digit(value: str) -> str:
    if not (len(value) == 1 and value.isascii() and value.isdigit()):
        raise PydanticCustomError("digit", "{value} must be a single digit 0-9",
                                  {"value": _quote(value)})
    return value


Extension = Annotated[
    str,
    BeforeValidator(_int_to_str),
    AfterValidator(_check_extension),
    Field(json_schema_extra={"pattern": r"^[1-9][0-9]{2,4}$"},
          description="3 to 5 digits, not starting with 0"),
]
UserId = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_id),
    Field(json_schema_extra={"pattern": _ID_RE.pattern}),
]
SipUsername = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_username),
    Field(json_schema_extra={"pattern": _USERNAME_RE.pattern}),
]
Password = Annotated[
    SecretStr, BeforeValidator(_int_to_str), AfterValidator(_check_password),
    Field(json_schema_extra={"minLength": 1, "maxLength": 128}),
]
DisplayName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_control_chars)]
Digit = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_digit),
    Field(json_schema_extra={"pattern": "^[0-9]$"}),
]
StrictInt = Annotated[int, Strict()]
DigestAlgorithm = Literal["SHA-256", "MD5"]
_DEFAULT_ALGORITHMS: tuple[DigestAlgorithm, ...] = ("SHA-256", "MD5")


# Routing field types.

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DIAL_RE = re.compile(r"^\+?[0-9*#]+$")
_PHONE_RE = re.compile(r"^\+?[0-9]{3,20}$")
_PREFIX_RE = re.compile(r"^\+?[0-9]{1,15}$")
_FEATURE_CODE_RE = re.compile(r"^\*[0-9*#]{1,7}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_TIME_RANGE_RE = re.compile(r"^([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_GROUP_REF_RE = re.compile(r"\\(\d+)|\\g<(\w+)>")
#: Keys of ``hours:`` in schedule order; index = ``datetime.weekday()``.
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: ``feature_codes:`` keys: the dialplan Feature values with '-' replaced by '_'.
FEATURE_KEYS: Final = {f.value.replace("-", "_"): f for f in Feature}
_RESTRICTION_DEFAULTS: Final = RestrictionRules()


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise PydanticCustomError(
            "name",
            "{value} must be 1-64 characters of letters, digits and . _ -, "
            "starting with a letter or digit",
            {"value": _quote(value)},
        )
    return value


def _check_pilot(value: str) -> str:
    if not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("pilot", "{value} must contain only digits 0-9",
                                  {"value": _quote(value)})
    if value.startswith("0"):
        raise PydanticCustomError("pilot", "{value} must not start with 0",
                                  {"value": _quote(value)})
    if len(value) != 4:
        raise PydanticCustomError("pilot", "{value} must have 4 digits",
                                  {"value": _quote(value)})
    return value


def _check_dial_string(value: str) -> str:
    if not value:
        raise PydanticCustomError("dial_string", "must not be empty")
    if len(value) > MAX_DIALED_LENGTH:
        raise PydanticCustomError("dial_string", "must be at most {n} characters",
                                  {"n": MAX_DIALED_LENGTH})
    if not (value.isascii() and _DIAL_RE.match(value)):
        raise PydanticCustomError(
            "dial_string", "{value} must be a dial string: digits, * and #, "
            "optionally starting with +", {"value": _quote(value)},
        )
    return value


def _check_phone_number(value: str) -> str:
    if not (value.isascii() and _PHONE_RE.match(value)):
        raise PydanticCustomError(
            "phone_number", "{value} must be a phone number: 3-20 digits, optionally "
            "starting with +", {"value": _quote(value)},
        )
    return value


def _check_prefix(value: str) -> str:
    if not (value.isascii() and _PREFIX_RE.match(value)):
        raise PydanticCustomError(
            "prefix", "{value} must be 1-15 digits, optionally starting with +",
            {"value": _quote(value)},
        )
    return value


def _check_emergency_number(value: str) -> str:
    if not (value.isascii() and value.isdigit() and 2 <= len(value) <= 6):
        raise PydanticCustomError("emergency_number", "{value} must be 2-6 digits",
                                  {"value": _quote(value)})
    return value


def _check_country_code(value: str) -> str:
    if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 3
            and not value.startswith("0")):
        raise PydanticCustomError(
            "country_code", "{value} must be a country calling code: 1-3 digits, e.g. 49",
            {"value": _quote(value)},
        )
    return value


def _check_feature_code(value: str) -> str:
    if not (value.isascii() and _FEATURE_CODE_RE.match(value)):
        raise PydanticCustomError(
            "feature_code", "{value} must be * and then 1-7 keys (0-9, * or #)",
            {"value": _quote(value)},
        )
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_host(value: str) -> str:
    if _is_ip(value) or (value.isascii() and _HOSTNAME_RE.match(value)):
        return value
    raise PydanticCustomError("host", "{value} must be a host name or an IP address",
                              {"value": _quote(value)})


def _check_source(value: str) -> str:
    """An IP address or a CIDR network, returned in its normal form."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if "/" in value:
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                pass
            else:
                raise PydanticCustomError(
                    "cidr", "{value} has host bits set (did you mean {net}?)",
                    {"value": _quote(value), "net": _quote(str(loose))},
                ) from None
    raise PydanticCustomError(
        "cidr", "{value} must be an IP address or a CIDR network such as 192.0.2.0/24",
        {"value": _quote(value)},
    )


_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@"
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def _check_email(value: str) -> str:
    """An ASCII address ``local@domain.tld`` (no display name, no quoting, no comments)."""
    local = value.split("@", 1)[0]
    if not (value.isascii() and _EMAIL_RE.match(value)) or local.startswith(".") \
            or local.endswith(".") or ".." in local:
        raise PydanticCustomError("email", "{value} is not an e-mail address",
                                  {"value": _quote(value)})
    return value


def _check_account(value: str) -> str:
    """A carrier account name: printable ASCII without spaces, quotes or backslashes."""
    if not 1 <= len(value) <= 128 or not all(
        0x20 < ord(c) < 0x7F and c not in '"\\' for c in value
    ):
        raise PydanticCustomError(
            "account", "{value} must be 1-128 printable ASCII characters without spaces, "
            "quotes or backslashes", {"value": _quote(value)},
        )
    return value


def parse_time_range(value: str) -> tuple[int, int]:
    """``"08:00-12:30"`` as minutes of the day ``(480, 750)``; ``24:00`` ends the day (1440).

    Raises ValueError with a message fit for a ``path: message`` line.
    """
    match = _TIME_RANGE_RE.match(value)
    if match is None:
        raise ValueError(f'{_quote(value)} must be a time range HH:MM-HH:MM, e.g. "08:00-12:30"')
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59 or eh > 24 or em > 59 or (eh == 24 and em != 0):
        raise ValueError(f"{_quote(value)} is not a valid time range")
    if sm not in (0, 30) or em not in (0, 30):
        raise ValueError(f"{_quote(value)} must be on half-hour boundaries (:00 or :30)")
    start, end = sh * 60 + sm, eh * 60 + em
    if end <= start:
        raise ValueError(f"{_quote(value)} must end after it starts (24:00 is midnight)")
    return start, end


def parse_holiday(value: str) -> tuple[date, date]:
    """``"2026-12-25"`` or ``"2026-12-24..2026-12-26"`` (inclusive) as (first, last).

    Raises ValueError with a message fit for a ``path: message`` line.
    """
    parts = value.split("..")
    if len(parts) > 2 or not all(_DATE_RE.match(p) for p in parts):
        raise ValueError(f'{_quote(value)} must be a date YYYY-MM-DD or a range '
                         f'YYYY-MM-DD..YYYY-MM-DD')
    try:
        days = [date.fromisoformat(p) for p in parts]
    except ValueError:
        raise ValueError(f"{_quote(value)} is not a valid date") from None
    if days[-1] < days[0]:
        raise ValueError(f"{_quote(value)} ends before it starts")
    return days[0], days[-1]


def _check_time_range(value: str) -> str:
    try:
        parse_time_range(value)
    except ValueError as exc:
        raise PydanticCustomError("time_range", "{problem}", {"problem": str(exc)}) from None
    return value


def _date_to_str(value: Any) -> Any:
    """YAML reads an unquoted ``2026-12-25`` as a date; keep it as the text it was."""
    if isinstance(value, date):
        return value.isoformat()
    return value


def _check_holiday(value: str) -> str:
    try:
        parse_holiday(value)
    except ValueError as exc:
        raise PydanticCustomError("holiday", "{problem}", {"problem": str(exc)}) from None
    return value


def _check_pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise PydanticCustomError(
            "pattern", "{value} is not a valid regular expression: {problem}",
            {"value": _quote(value), "problem": str(exc)},
        ) from None
    return value


def _speed_dial_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_int_to_str(k): v for k, v in value.items()}
    return value


def _check_speed_dial_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not (key.isascii() and key.isdigit() and 1 <= len(key) <= 2):
            raise PydanticCustomError("speed_dial", "key {key} must be 1 or 2 digits",
                                      {"key": _quote(key)})
    return value


Name = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_name),
    Field(json_schema_extra={"pattern": _NAME_RE.pattern}),
]
Pilot = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_pilot),
    Field(json_schema_extra={"pattern": r"^[1-9][0-9]{3}$"},
          description="4 digits, not starting with 0"),
]
DialString = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_dial_string),
    Field(json_schema_extra={"pattern": _DIAL_RE.pattern, "maxLength": MAX_DIALED_LENGTH},
          description="What a phone would dial: digits, * and #, optionally starting with +."),
]
PhoneNumber = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_phone_number),
    Field(json_schema_extra={"pattern": _PHONE_RE.pattern}),
]
Prefix = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_prefix),
    Field(json_schema_extra={"pattern": _PREFIX_RE.pattern}),
]
EmergencyNumber = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_emergency_number),
    Field(json_schema_extra={"pattern": "^[0-9]{2,6}$"}),
]
CountryCode = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_country_code),
    Field(json_schema_extra={"pattern": "^[1-9][0-9]{0,2}$"}),
]
FeatureCode = Annotated[
    str, AfterValidator(_check_feature_code),
    Field(json_schema_extra={"pattern": _FEATURE_CODE_RE.pattern}),
]
Host = Annotated[
    str, AfterValidator(_check_host),
    Field(max_length=253, description="A host name or an IP address."),
]
Source = Annotated[
    str, AfterValidator(_check_source),
    Field(description="An IP address or a CIDR network, e.g. 192.0.2.0/24."),
]
Account = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_account),
    Field(json_schema_extra={"minLength": 1, "maxLength": 128}),
]
Realm = Annotated[str, AfterValidator(_check_realm)]
EmailAddress = Annotated[
    str, AfterValidator(_check_email),
    Field(max_length=254, json_schema_extra={"pattern": r"^[^@\s]+@[^@\s]+$"},
          description="An e-mail address (ASCII): local-part@domain."),
]
TimeRange = Annotated[
    str, AfterValidator(_check_time_range),
    Field(json_schema_extra={"pattern": r"^[0-9]{1,2}:[03]0-[0-9]{1,2}:[03]0$"},
          description='Open from-to, on half hours, e.g. "08:00-12:30"; 24:00 is midnight.'),
]
HolidayText = Annotated[
    str, BeforeValidator(_date_to_str), AfterValidator(_check_holiday),
    Field(json_schema_extra={
        "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})?$"},
        description='A date "2026-12-25" or an inclusive range "2026-12-24..2026-12-26".'),
]
StrictBool = Annotated[bool, Strict()]
SpeedDials = Annotated[
    dict[str, DialString], BeforeValidator(_speed_dial_keys),
    AfterValidator(_check_speed_dial_keys),
    Field(json_schema_extra={"propertyNames": {"pattern": "^[0-9]{1,2}$"}}),
]
CorName = Literal["internal", "local", "national", "international"]
StrategyName = Literal["sequential", "circular", "longest-idle", "parallel"]
DestinationType = Literal["extension", "voicemail", "attendant", "hangup"]
#: What a key of an attendant menu does: a destination type, or a menu action.
MenuOptionType = Literal["extension", "voicemail", "attendant", "hangup", "menu", "operator",
                         "repeat", "back", "dial_by_extension"]
_PROMPT_ID_RE = re.compile(r"^[a-z0-9_]{1,64}$")
_MENU_KEYS: Final = frozenset("0123456789*#")


def _check_prompt_id(value: str) -> str:
    if not _PROMPT_ID_RE.match(value):
        raise PydanticCustomError(
            "prompt_id", "{value} is not a prompt id: 1-64 of a-z, 0-9 and _",
            {"value": _quote(value)},
        )
    return value


def _one_or_list(value: Any) -> Any:
    """``greeting: att_welcome`` is short for ``greeting: [att_welcome]``."""
    return [value] if isinstance(value, str) else value


def _menu_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_int_to_str(k): v for k, v in value.items()}
    return value


def _check_menu_keys(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if key not in _MENU_KEYS:
            raise PydanticCustomError("menu_key", "key {key} must be one of 0-9, * and #",
                                      {"key": _quote(key)})
    return value


# Phone inventory field types.

_KEY_DIAL_RE = re.compile(r"^[0-9*#+]{1,32}$")


def _check_x25519_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (the raw 32-byte X25519 public key)") from None
    if len(raw) != 32:
        raise ValueError(f"must be a raw 32-byte X25519 public key, got {len(raw)} bytes")
    return value


def _check_mac(value: str) -> str:
    try:
        return normalise_mac(value)
    except ValueError:
        raise PydanticCustomError(
            "mac", "{value} is not a MAC address: expected 12 hex digits as aa:bb:cc:dd:ee:ff, "
            "aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff", {"value": _quote(value)},
        ) from None


def _check_phone_model(value: str) -> str:
    if lookup_phone_model(value) is None:
        raise PydanticCustomError(
            "phone_model", "{value} is not a supported phone model (supported: {known})",
            {"value": _quote(value), "known": ", ".join(CATALOGUE)},
        )
    return value


def _check_key_dial(value: str) -> str:
    if not _KEY_DIAL_RE.match(value):
        raise PydanticCustomError("dial", "{value} must be 1-32 of the characters 0-9 * # +",
                                  {"value": _quote(value)})
    return value


def _check_multicast(value: str) -> str:
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        raise PydanticCustomError("multicast", "{value} is not an IPv4 address",
                                  {"value": _quote(value)}) from None
    if not ip.is_multicast:
        raise PydanticCustomError(
            "multicast", "{value} is not a multicast address (224.0.0.0/4)",
            {"value": _quote(value)},
        )
    return value


def _check_phone_host(value: str) -> str:
    """Phone files take a host name or an IPv4 address (not every phone takes IPv6)."""
    value = _check_host(value)
    if ":" in value:
        raise PydanticCustomError("host", "{value}: phone files need a host name or an IPv4 "
                                  "address", {"value": _quote(value)})
    return value


PromptId = Annotated[
    str, AfterValidator(_check_prompt_id),
    Field(json_schema_extra={"pattern": _PROMPT_ID_RE.pattern},
          description="A prompt of the catalogue (att_welcome, ...) or the id of an "
          "uploaded recording."),
]
Mac = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_mac),
    Field(description="The phone's MAC address: aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, "
          "aabb.ccdd.eeff or aabbccddeeff, any case; stored as 12 lowercase hex digits."),
]
PhoneModelName = Annotated[
    str, AfterValidator(_check_phone_model),
    Field(max_length=32, description="A model of the catalogue, by id (cisco-7841, "
          "yealink-t46, polycom-vvx450) or common name (CP-7841, T46U, VVX 450)."),
]
KeyLabel = Annotated[str, Field(max_length=32), AfterValidator(_no_control_chars)]
KeyDial = Annotated[
    str, BeforeValidator(_int_to_str), AfterValidator(_check_key_dial),
    Field(json_schema_extra={"pattern": _KEY_DIAL_RE.pattern}),
]
PhoneHost = Annotated[
    str, AfterValidator(_check_phone_host),
    Field(max_length=253, description="A host name or an IPv4 address."),
]


# --------------------------------------------------------------------------------------------
# The models


class SchemaModel(BaseModel):
    """Base of every site-document model: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Translation(SchemaModel):
    """``site.translations[]:`` - rewrite an outside number before routing it."""

    pattern: Annotated[str, AfterValidator(_check_pattern)] = Field(
        min_length=1, max_length=200,
        description="Python regular expression matched against the whole outside number "
        "(as dialled, without the outside-line digit).",
    )
    replacement: str = Field(
        max_length=64,
        description="What the number becomes; \\1 or \\g<name> insert a group of the pattern.",
    )

    @model_validator(mode="after")
    def _groups_exist(self) -> Translation:
        try:
            _DialplanTranslation(self.pattern, self.replacement)
        except (ValueError, re.error) as exc:
            raise PydanticCustomError("translation", "{problem}", {"problem": str(exc)}) from None
        literal = _GROUP_REF_RE.sub("", self.replacement)
        if not re.fullmatch(r"\+?[0-9*#]*", literal):
            raise PydanticCustomError(
                "translation", "replacement {value} must be digits, * and # (optionally "
                "starting with +) and group references", {"value": _quote(self.replacement)},
            )
        return self


class Restriction(SchemaModel):
    """``site.restriction:`` - prefixes that decide what a number costs (class of
    restriction). Defaults are for the North American numbering plan."""

    home_country_code: CountryCode = Field(
        default=_RESTRICTION_DEFAULTS.home_country_code,
        description="The site's country calling code: +<this> numbers are national.",
    )
    local_prefixes: Annotated[list[Prefix], AfterValidator(_no_duplicates)] = Field(
        default_factory=lambda: list(_RESTRICTION_DEFAULTS.local_prefixes), max_length=100,
        description='E.164 prefixes that count as local, e.g. "+4930".',
    )
    international_prefixes: Annotated[list[Prefix], AfterValidator(_no_duplicates)] = Field(
        default_factory=lambda: list(_RESTRICTION_DEFAULTS.international_prefixes),
        max_length=100, description="Dialling prefixes of international numbers.",
    )
    national_prefixes: Annotated[list[Prefix], AfterValidator(_no_duplicates)] = Field(
        default_factory=lambda: list(_RESTRICTION_DEFAULTS.national_prefixes), max_length=100,
        description="Dialling prefixes of national (long-distance) numbers.",
    )
    premium_prefixes: Annotated[list[Prefix], AfterValidator(_no_duplicates)] = Field(
        default_factory=lambda: list(_RESTRICTION_DEFAULTS.premium_prefixes), max_length=100,
        description="Premium-rate prefixes (E.164 or dialled); they need class international.",
    )


class Destination(SchemaModel):
    """Where a call goes: a hunt group's final destination, a DID, night service."""

    type: DestinationType = Field(
        description="extension (a user's extension or a hunt group's pilot), voicemail "
        "(a user's mailbox), attendant (an auto attendant by name) or hangup."
    )
    value: Annotated[str | None, BeforeValidator(_int_to_str)] = Field(
        default=None, max_length=64,
        description="The extension, pilot, mailbox or attendant name; absent for hangup.",
    )


class Forward(SchemaModel):
    """``users[].forward:`` - call forwarding; each target is a dial string."""

    all: DialString | None = Field(default=None, description="Forward every call.")
    busy: DialString | None = Field(default=None, description="Forward when busy.")
    no_answer: DialString | None = Field(
        default=None, description="Forward when not answered within no_answer_timeout."
    )
    no_answer_timeout: StrictInt = Field(
        default=DEFAULT_NO_ANSWER_TIMEOUT, ge=5, le=300,
        description="Seconds to ring before no-answer forwarding or voicemail.",
    )


class HuntMember(SchemaModel):
    """``hunt_groups[].members[]:``"""

    extension: Extension
    ring_time: StrictInt = Field(
        default=DEFAULT_RING_TIME, ge=1, le=600, description="Seconds this member rings."
    )
    dynamic: StrictBool = Field(
        default=False, description="Rings only while logged in with the hunt-login code."
    )


class HuntGroup(SchemaModel):
    """``hunt_groups[]:`` - a pilot number that rings a group of users."""

    name: Name = Field(description="Unique name of the group.")
    pilot: Pilot = Field(description="The number callers dial: 4 digits.")
    strategy: StrategyName = Field(
        default="sequential",
        description="sequential (list order), circular (round-robin), longest-idle or "
        "parallel (ring all).",
    )
    members: list[HuntMember] = Field(min_length=1, max_length=MAX_MEMBERS)
    final: Destination = Field(
        default_factory=lambda: Destination(type="hangup"),
        description="Where the call goes when no member answers.",
    )


class PageMulticast(SchemaModel):
    """``paging_groups[].multicast:`` - the multicast RTP stream of the page; it must be a
    ``provisioning.paging_groups`` entry, so that the phones listen there."""

    address: Annotated[str, AfterValidator(_check_multicast)] = Field(
        description="IPv4 multicast address, e.g. 239.1.1.1.")
    port: StrictInt = Field(ge=1, le=65535, description="UDP port of the RTP stream.")


PageMode = Literal["unicast", "multicast", "both"]
MAX_PAGE_MEMBERS = 500


class PageGroup(SchemaModel):
    """``paging_groups[]:`` - a number that pages a group of phones: one-way audio from
    the caller, answered by the phones themselves (unicast auto-answer calls) and/or sent
    to a multicast group the phones listen to."""

    name: Name = Field(description="Unique name of the paging group.")
    number: Extension = Field(description="The number callers dial to page the group.")
    members: Annotated[list[Extension], AfterValidator(_no_duplicates)] = Field(
        default_factory=list, max_length=MAX_PAGE_MEMBERS,
        description="Extensions paged with an auto-answer call (modes unicast and both); "
        "busy and unregistered ones are skipped.",
    )
    multicast: PageMulticast | None = Field(
        default=None, description="Multicast stream (modes multicast and both).")
    mode: PageMode = Field(
        default="unicast",
        description="unicast (auto-answer calls to the members), multicast (one RTP stream "
        "to multicast.address:port) or both.",
    )


class WeekHours(SchemaModel):
    """``schedules[].hours:`` - opening hours per weekday; a missing day is closed."""

    mon: list[TimeRange] = Field(default_factory=list, max_length=48)
    tue: list[TimeRange] = Field(default_factory=list, max_length=48)
    wed: list[TimeRange] = Field(default_factory=list, max_length=48)
    thu: list[TimeRange] = Field(default_factory=list, max_length=48)
    fri: list[TimeRange] = Field(default_factory=list, max_length=48)
    sat: list[TimeRange] = Field(default_factory=list, max_length=48)
    sun: list[TimeRange] = Field(default_factory=list, max_length=48)

    def ranges(self, weekday: int) -> list[str]:
        """The ranges of ``weekday`` (0 = Monday)."""
        value: list[str] = getattr(self, WEEKDAYS[weekday])
        return value


class Schedule(SchemaModel):
    """``schedules[]:`` - business hours in the site's time zone, and holidays."""

    name: Name = Field(description="Unique name, used by night_service.")
    hours: WeekHours = Field(default_factory=WeekHours)
    holidays: list[HolidayText] = Field(
        default_factory=list, max_length=1000, description="Closed all day on these dates."
    )


class NightService(SchemaModel):
    """``night_service[]:`` - while the schedule is closed, calls to these numbers go to
    the destination."""

    schedule: Name = Field(description="Name of a schedule.")
    numbers: Annotated[
        list[Annotated[str, BeforeValidator(_int_to_str)]], AfterValidator(_no_duplicates)
    ] = Field(min_length=1, max_length=1000,
              description="Extensions and hunt pilots diverted while closed.")
    destination: Destination


class FeatureCodes(SchemaModel):
    """``feature_codes:`` - overrides of the default feature codes."""

    dnd_on: FeatureCode | None = Field(default=None, description="Do not disturb on.")
    dnd_off: FeatureCode | None = Field(default=None, description="Do not disturb off.")
    forward_all_set: FeatureCode | None = Field(
        default=None, description="Forward all calls; the target follows the code.")
    forward_all_clear: FeatureCode | None = Field(default=None, description="Cancel forward all.")
    forward_busy_set: FeatureCode | None = Field(
        default=None, description="Forward when busy; the target follows the code.")
    forward_busy_clear: FeatureCode | None = Field(
        default=None, description="Cancel forward when busy.")
    forward_no_answer_set: FeatureCode | None = Field(
        default=None, description="Forward on no answer; the target follows the code.")
    forward_no_answer_clear: FeatureCode | None = Field(
        default=None, description="Cancel forward on no answer.")
    hunt_login: FeatureCode | None = Field(
        default=None, description="Log in to hunt groups (optionally a pilot follows).")
    hunt_logout: FeatureCode | None = Field(
        default=None, description="Log out of hunt groups (optionally a pilot follows).")
    voicemail_own: FeatureCode | None = Field(default=None, description="Own voicemail.")
    voicemail_any: FeatureCode | None = Field(
        default=None, description="Any mailbox (optionally the mailbox follows).")
    pickup_group: FeatureCode | None = Field(
        default=None, description="Pick up a call ringing in the own pickup group.")
    pickup_directed: FeatureCode | None = Field(
        default=None, description="Pick up a call ringing at the extension that follows.")
    park: FeatureCode | None = Field(
        default=None, description="Park the call (optionally the slot follows).")
    retrieve: FeatureCode | None = Field(
        default=None, description="Retrieve a parked call; the slot follows.")
    intercom: FeatureCode | None = Field(
        default=None, description="Intercom: a two-way call the extension that follows "
        "answers by itself.")

    def codes(self) -> dict[Feature, str]:
        """Every feature's code: the overrides, and the defaults for the rest."""
        out = dict(DEFAULT_FEATURE_CODES)
        for key, feature in FEATURE_KEYS.items():
            code = getattr(self, key)
            if code is not None:
                out[feature] = code
        return out

    def overrides(self) -> dict[Feature, str]:
        return {f: getattr(self, k) for k, f in FEATURE_KEYS.items()
                if getattr(self, k) is not None}


class Park(SchemaModel):
    """``park:`` - call park slots 1..slots, retrieved with the retrieve code + slot."""

    slots: StrictInt = Field(default=10, ge=1, le=99, description="Number of park slots.")
    timeout: StrictInt = Field(
        default=120, ge=10, le=3600,
        description="Seconds a call stays parked before it rings back the parker.",
    )


class Did(SchemaModel):
    """``trunks[].dids[]:`` - an inbound number and where its calls go."""

    number: PhoneNumber = Field(
        description="The number as the carrier sends it; a leading + is ignored when "
        "matching, and numbers must be unique across trunks."
    )
    destination: Destination


def _default_allow_from(data: Any) -> Any:
    if isinstance(data, Mapping) and "allow_from" not in data:
        host = data.get("host")
        if isinstance(host, str) and _is_ip(host):
            return {**data, "allow_from": [host]}
    return data


class Trunk(SchemaModel):
    """``trunks[]:`` - a SIP trunk to a carrier. Outgoing calls use the first trunk (the
    first with emergency: true for emergency calls)."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    name: Name = Field(description="Unique name of the trunk.")
    host: Host = Field(description="The carrier's SIP server.")
    port: StrictInt = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "udp"
    username: Account | None = Field(default=None, description="Account / digest username.")
    password: Password | None = Field(
        default=None, description="Digest password. Write-only: never shown again."
    )
    auth_username: Account | None = Field(
        default=None, description="Digest username when it differs from username."
    )
    realm: Realm | None = Field(
        default=None, description="Expected digest realm; absent: whatever the carrier sends."
    )
    # "register" would shadow ABCMeta.register (pydantic warns); the document key is still
    # "register", in and out.
    register_: StrictBool = Field(
        default=True, alias="register",
        description="Register to the carrier (needs username and password).",
    )
    register_expires: StrictInt = Field(default=600, ge=60, le=86400,
                                        description="Registration time asked for, seconds.")
    from_domain: Host | None = Field(
        default=None, description="Domain of the From header; absent: host."
    )
    caller_id: PhoneNumber | None = Field(
        default=None, description="Outside number presented when the user has none."
    )
    emergency: StrictBool = Field(default=True, description="May carry emergency calls.")
    allow_from: Annotated[list[Source], AfterValidator(_no_duplicates)] = Field(
        default_factory=list, max_length=64,
        description="Sources whose unauthenticated INVITEs are accepted as inbound calls "
        "from this trunk. Default: host, if it is an IP address.",
    )
    dids: list[Did] = Field(default_factory=list, max_length=10000)

    _fill_allow_from = model_validator(mode="before")(_default_allow_from)

    def accepts_from(self, address: str) -> bool:
        """Is ``address`` (an IP literal) one of ``allow_from``?"""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(src) for src in self.allow_from)


class SiteSettings(SchemaModel):
    """``site:`` - who and where this box is."""

    name: DisplayName = Field(description="The site's display name.")
    timezone: Annotated[str, AfterValidator(_check_timezone)] = Field(
        description="IANA time zone, e.g. Europe/Berlin; business hours are evaluated in it."
    )
    realm: Annotated[str, AfterValidator(_check_realm)] = Field(
        description="SIP digest realm, usually the site's SIP domain, e.g. pbx.example.com."
    )
    outside_line_digit: Digit = Field(
        default="9", description="Digit dialled before an outside number; no extension may "
        "start with it."
    )
    emergency_numbers: Annotated[
        list[EmergencyNumber], AfterValidator(_no_duplicates)
    ] = Field(
        default_factory=lambda: ["911", "112"], min_length=1, max_length=10,
        description="Always allowed and sent to a trunk that carries emergency calls, with or "
        "without the outside-line digit; no extension or pilot may equal one.",
    )
    translations: list[Translation] = Field(
        default_factory=list, max_length=100,
        description="Rewrites of outside numbers; the first matching rule applies.",
    )
    restriction: Restriction = Field(default_factory=Restriction)


class SipAccount(SchemaModel):
    """``users[].sip:`` - the digest credentials a phone registers with."""

    username: SipUsername = Field(description="Digest username (unique on the site).")
    password: Password = Field(description="Digest password. Write-only: never shown again.")


class User(SchemaModel):
    """``users[]:`` - a person with an extension."""

    id: UserId = Field(description="Stable identifier, unique on the site.")
    name: DisplayName = Field(description="Display name, shown as caller name.")
    extension: Extension
    sip: SipAccount
    class_of_restriction: CorName = Field(
        default="national", description="Which outside numbers the user may call."
    )
    forward: Forward = Field(default_factory=Forward)
    dnd: StrictBool = Field(default=False, description="Do not disturb.")
    voicemail: StrictBool = Field(default=True, description="The user has a mailbox.")
    speed_dials: SpeedDials = Field(
        default_factory=dict, max_length=100,
        description='Key "1"-"99" -> dial string, e.g. {"1": "9555123"}.',
    )
    mobile: DialString | None = Field(
        default=None, description="Single number reach: also ring this number (dialled as "
        "the user would, so the class of restriction applies)."
    )
    mobile_delay: StrictInt = Field(
        default=0, ge=0, le=60, description="Seconds after the desk phone the mobile rings."
    )
    caller_id: PhoneNumber | None = Field(
        default=None, description="Outside number presented on trunk calls."
    )
    pickup_group: Name | None = Field(default=None, description="Call pickup group name.")
    email: EmailAddress | None = Field(
        default=None, description="The user's e-mail address (voicemail to e-mail).")
    voicemail_to_email: StrictBool = Field(
        default=False, description="Opt-in: e-mail each new voicemail message to the user "
        "(as a WAV attachment), through the site's mail server. Needs email, and "
        "voicemail.email.enabled on the site too.",
    )

    @model_validator(mode="after")
    def _email_for_voicemail(self) -> User:
        if self.voicemail_to_email and self.email is None:
            raise PydanticCustomError(
                "voicemail_to_email", "voicemail_to_email needs the user's email address")
        return self


class SmtpSettings(SchemaModel):
    """``voicemail.email.smtp:`` - the customer's own mail server, which sends the mail."""

    host: Host = Field(description="The mail server (submission service).")
    port: StrictInt = Field(default=587, ge=1, le=65535)
    starttls: StrictBool = Field(
        default=True, description="Upgrade the connection with STARTTLS (required: a "
        "server that does not offer it is an error, never a silent plain-text send).")
    verify_tls: StrictBool = Field(
        default=True, description="Verify the server's certificate and host name against "
        "the system's CAs. Turn off only for a server with a self-signed certificate.")
    username: Account | None = Field(
        default=None, description="Log in (SMTP AUTH) with this account; absent: no login.")
    password: Password | None = Field(
        default=None, description="The account's password. Write-only: never shown again.")
    from_address: EmailAddress = Field(description="The sender address of the e-mails.")

    @model_validator(mode="after")
    def _credentials(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError(
                "smtp_credentials", "username and password go together: give both or neither")
        return self


class VoicemailEmail(SchemaModel):
    """``voicemail.email:`` - voicemail to e-mail (opt-in, off by default)."""

    enabled: StrictBool = Field(
        default=False, description="Opt-in for the site: users who also opted in "
        "(users[].voicemail_to_email) get their new messages by e-mail.")
    smtp: SmtpSettings | None = Field(default=None, description="Required when enabled.")

    @model_validator(mode="after")
    def _smtp_when_enabled(self) -> VoicemailEmail:
        if self.enabled and self.smtp is None:
            raise PydanticCustomError("voicemail_email", "enabled needs smtp settings")
        return self


class VoicemailSettings(SchemaModel):
    """``voicemail:`` - site-wide voicemail settings."""

    email: VoicemailEmail = Field(default_factory=VoicemailEmail)


X25519Key = Annotated[str, AfterValidator(_check_x25519_key)]


class Privacy(SchemaModel):
    """``privacy:`` - what the customer lets leave the box, and who may change it.

    Set by the customer admin. The device enforces every switch itself, whatever the
    portal does (docs/portal-api.md, "Privacy").
    """

    partner_access: StrictBool = Field(
        default=True, description="The partner may see and change this site through the "
        "portal. Off: the device refuses any configuration version authored by a partner.")
    cdr_upload: StrictBool = Field(
        default=False, description="Upload per-call records to the portal (opt-in). Calls "
        "made while this is off are never uploaded, even if it is turned on later.")
    voicemail_backup: StrictBool = Field(
        default=False, description="Upload voicemail backups, encrypted on the device to "
        "voicemail_backup_public_key (opt-in).")
    voicemail_backup_public_key: X25519Key | None = Field(
        default=None, description="The customer admin's X25519 public key (base64 of the raw "
        "32 bytes). Neither the device nor the portal can decrypt a backup.")

    @model_validator(mode="after")
    def _key_when_backing_up(self) -> Privacy:
        if self.voicemail_backup and self.voicemail_backup_public_key is None:
            raise PydanticCustomError(
                "privacy_backup_key",
                "voicemail_backup needs voicemail_backup_public_key (backups are encrypted "
                "to the customer admin's key)")
        return self


class MediaSettings(SchemaModel):
    """``media:`` - RTP for the calls the agent answers itself (voicemail, attendant,
    paging); calls between phones send their media directly to each other."""

    rtp_port_min: StrictInt = Field(default=16384, ge=1024, le=65534,
                                    description="First RTP port (even; RTCP is port + 1).")
    rtp_port_max: StrictInt = Field(default=32767, ge=1025, le=65535,
                                    description="Last RTP/RTCP port.")

    @model_validator(mode="after")
    def _range(self) -> MediaSettings:
        if self.rtp_port_max - self.rtp_port_min < 3:
            raise PydanticCustomError(
                "range", "rtp_port_max must leave room for two port pairs above rtp_port_min")
        return self


class SipSettings(SchemaModel):
    """``sip:`` - registrar and authentication tuning. Every field has a default."""

    min_expires: StrictInt = Field(
        default=60, ge=10, le=86400,
        description="Shortest registration accepted, seconds; shorter requests get 423.",
    )
    max_expires: StrictInt = Field(
        default=3600, ge=60, le=604800,
        description="Longest registration granted, seconds; longer requests are shortened.",
    )
    default_expires: StrictInt = Field(
        default=3600, ge=10, le=604800,
        description="Registration time when the phone asks for none, seconds.",
    )
    max_contacts_per_user: StrictInt = Field(
        default=5, ge=1, le=100, description="Most simultaneous contacts (devices) per user."
    )
    nonce_lifetime: StrictInt = Field(
        default=300, ge=10, le=86400,
        description="Seconds a digest nonce is accepted; older ones get stale=true.",
    )
    digest_algorithms: Annotated[
        list[DigestAlgorithm], AfterValidator(_no_duplicates)
    ] = Field(
        default_factory=lambda: list(_DEFAULT_ALGORITHMS), min_length=1, max_length=2,
        description=(
            "Digest challenges offered, strongest first (RFC 8760). Some older phones "
            "read only the first challenge: list just MD5 for them."
        ),
    )


class PagingGroup(SchemaModel):
    """``provisioning.paging_groups[]:`` - a multicast group the phones listen to for paging."""

    label: KeyLabel = Field(min_length=1, description="Unique label, referred to by "
                            "phones[].paging_groups.")
    address: Annotated[str, AfterValidator(_check_multicast)] = Field(
        description="IPv4 multicast address, e.g. 239.1.1.1.")
    port: StrictInt = Field(ge=1, le=65535, description="UDP port of the RTP stream.")


class HttpAuth(SchemaModel):
    """``provisioning.http_auth:`` - the credentials phones use to fetch their files over
    HTTP(S), for phones without their own ``http_username``/``http_password``."""

    username: SipUsername = Field(description="HTTP username (letters, digits, . _ ~ + -).")
    password: Password = Field(description="HTTP password; write-only, like the SIP "
                               "passwords.")


class AutoRegistration(SchemaModel):
    """``provisioning.auto_registration:`` - a shared SIP account that phones not yet in
    ``phones:`` get in their default file, good for one thing only: calling the extension
    assigner, which binds the phone to an extension from its keypad."""

    username: SipUsername = Field(description="SIP username of the shared account.")
    password: Password = Field(description="Its SIP password; write-only.")
    assigner_number: Annotated[str, BeforeValidator(_int_to_str)] = Field(
        default="70000", pattern=r"^[1-9][0-9]{2,5}$",
        description="The number unassigned phones dial to reach the assigner.")
    assigner_pin: Annotated[SecretStr, BeforeValidator(_int_to_str)] = Field(
        description="The installer's PIN the assigner asks for: 4 to 16 digits; write-only.")

    @field_validator("assigner_pin")
    @classmethod
    def _pin_digits(cls, value: SecretStr) -> SecretStr:
        pin = value.get_secret_value()
        if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 16):
            raise PydanticCustomError("pin", "must be 4 to 16 digits")
        return value


class ProvisioningSettings(SchemaModel):
    """``provisioning:`` - what the phone configuration files point the phones at."""

    sip_server: PhoneHost | None = Field(
        default=None,
        description="Host name or IPv4 address the phones register to. Default: the host "
        "of the agent's first SIP listener (the machine's outgoing address when that is "
        "0.0.0.0).",
    )
    ntp_server: PhoneHost | None = Field(
        default=None, description="Time server the phones use. Default: sip_server."
    )
    paging_groups: list[PagingGroup] = Field(default_factory=list, max_length=25)
    auto_registration: AutoRegistration | None = Field(
        default=None,
        description="Off when absent: unknown phones get the vendor's default file with no "
        "line, and there is no extension assigner.",
    )
    http_auth: HttpAuth | None = Field(
        default=None,
        description="Default HTTP credentials for fetching a Yealink's or Polycom's own file "
        "over HTTP(S) (Digest over HTTP, Basic or Digest over HTTPS). Cisco phones do not "
        "support HTTP authentication.",
    )


class PhoneLine(SchemaModel):
    """``phones[].lines[]:`` - a user's extension registered on the phone."""

    extension: Extension = Field(description="A user's extension; the phone registers with "
                                 "that user's SIP credentials.")
    label: KeyLabel = Field(default="", description="Key label; default: the user's name.")
    shared: StrictBool = Field(
        default=False, description="The line may appear on several phones: every "
        "appearance must say shared: true.")


class PhoneSpeedDial(SchemaModel):
    """``phones[].speed_dials[]:`` - a key that dials a number."""

    label: KeyLabel = Field(default="", description="Key label; default: the number.")
    number: KeyDial = Field(description="What the key dials: 1-32 of 0-9 * # +.")


class PhoneBlf(SchemaModel):
    """``phones[].blf[]:`` - a busy-lamp-field key watching another user's extension."""

    label: KeyLabel = Field(default="", description="Key label; default: the extension.")
    extension: Extension = Field(description="A user's extension; pressing the key calls it.")


class Phone(SchemaModel):
    """``phones[]:`` - a desk phone the agent provisions, by MAC address."""

    mac: Mac
    model: PhoneModelName
    lines: list[PhoneLine] = Field(min_length=1, max_length=16)
    speed_dials: list[PhoneSpeedDial] = Field(default_factory=list, max_length=200)
    blf: list[PhoneBlf] = Field(default_factory=list, max_length=200)
    paging_groups: Annotated[list[KeyLabel], AfterValidator(_no_duplicates)] = Field(
        default_factory=list, max_length=25,
        description="Labels of provisioning.paging_groups the phone listens to.",
    )
    http_username: SipUsername | None = Field(
        default=None, description="HTTP username this phone fetches its own file with "
        "(Yealink and Polycom only); default: provisioning.http_auth.")
    http_password: Password | None = Field(
        default=None, description="HTTP password that goes with http_username (write-only).")


class MenuOption(SchemaModel):
    """``attendants[].menus[].options.<key>:`` - what a key does."""

    type: MenuOptionType = Field(
        description="A destination (extension, voicemail, attendant, hangup, as for "
        "destinations), or menu (value: a menu of the same attendant), operator, repeat, "
        "back (to the menu before) or dial_by_extension (asks for an extension)."
    )
    value: Annotated[str | None, BeforeValidator(_int_to_str)] = Field(
        default=None, max_length=64,
        description="The extension, pilot, mailbox, attendant or menu name; absent for the "
        "others.",
    )


class AttendantMenu(SchemaModel):
    """``attendants[].menus[]:`` - one menu: what it says and what each key does."""

    name: Name = Field(description="Unique within the attendant.")
    greeting: Annotated[list[PromptId], BeforeValidator(_one_or_list)] = Field(
        min_length=1, max_length=20,
        description="The prompt(s) played, in order: catalogue ids or uploaded recordings. "
        "A key press cuts them short.",
    )
    options: Annotated[
        dict[str, MenuOption], BeforeValidator(_menu_keys), AfterValidator(_check_menu_keys)
    ] = Field(default_factory=dict, max_length=12,
              json_schema_extra={"propertyNames": {"pattern": "^[0-9*#]$"}},
              description='Key ("0"-"9", "*", "#") -> what it does.')
    dial_by_extension: StrictBool = Field(
        default=False, description="Callers may dial an extension at any time during this "
        "menu; keys that are options keep their meaning.",
    )
    timeout_seconds: StrictInt = Field(
        default=5, ge=1, le=60,
        description="Seconds to wait for a key after the greeting (and between the digits "
        "of an extension).",
    )


class Attendant(SchemaModel):
    """``attendants[]:`` - an auto attendant: menus read to callers who pick with keys."""

    name: Name = Field(description="Unique name; destinations name it.")
    number: Extension | None = Field(
        default=None, description="An internal number that reaches it, like an extension."
    )
    open_menu: Name = Field(description="The menu played while open (or without schedule).")
    closed_menu: Name | None = Field(
        default=None, description="The menu played while the schedule is closed.")
    schedule: Name | None = Field(
        default=None, description="Name of a schedule that picks open_menu or closed_menu.")
    operator: Destination | None = Field(
        default=None, description="Where the operator option and too many failures go; "
        "absent: goodbye and hang up.",
    )
    max_failures: StrictInt = Field(
        default=3, ge=1, le=10,
        description="Invalid keys plus timeouts in a menu before the operator takes over.",
    )
    extensions: Annotated[list[Extension], AfterValidator(_no_duplicates)] | None = Field(
        default=None, max_length=10000,
        description="What dial-by-extension may reach; absent: every user's extension.",
    )
    menus: list[AttendantMenu] = Field(min_length=1, max_length=50)


class Site(SchemaModel):
    """The whole site document."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title="edgepbx site configuration",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    schema_ref: str | None = Field(
        default=None, alias="$schema", exclude=True,
        description="Optional URL or path of this JSON Schema, for editors. Ignored.",
    )
    schema_version: StrictInt = Field(
        default=SITE_SCHEMA_VERSION, ge=1, le=SITE_SCHEMA_VERSION,
        description="The site schema this document is written for. A newer one than the "
        "agent knows is refused whole.")
    site: SiteSettings
    users: list[User] = Field(default_factory=list, max_length=10000)
    sip: SipSettings = Field(default_factory=SipSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    hunt_groups: list[HuntGroup] = Field(default_factory=list, max_length=1000)
    schedules: list[Schedule] = Field(default_factory=list, max_length=100)
    night_service: list[NightService] = Field(default_factory=list, max_length=100)
    attendants: list[Attendant] = Field(default_factory=list, max_length=100)
    paging_groups: list[PageGroup] = Field(default_factory=list, max_length=100)
    feature_codes: FeatureCodes = Field(default_factory=FeatureCodes)
    park: Park = Field(default_factory=Park)
    trunks: list[Trunk] = Field(default_factory=list, max_length=20)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    phones: list[Phone] = Field(default_factory=list, max_length=10000)
    voicemail: VoicemailSettings = Field(default_factory=VoicemailSettings)
    privacy: Privacy = Field(default_factory=Privacy)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Site:
        if info.context and info.context.get(_CHECKED):
            return self
        problems = _cross_check(self.model_dump(mode="python"))
        if problems:
            raise PydanticCustomError(
                "site_consistency", "{problems}",
                {"problems": "; ".join(f"{_format_loc(loc)}: {msg}" for loc, msg in problems)},
            )
        return self

    def user_by_id(self, user_id: str) -> User | None:
        for user in self.users:
            if user.id == user_id:
                return user
        return None

    def user_by_username(self, username: str) -> User | None:
        for user in self.users:
            if user.sip.username == username:
                return user
        return None

    def user_by_extension(self, extension: str) -> User | None:
        for user in self.users:
            if user.extension == extension:
                return user
        return None

    def hunt_group_by_pilot(self, pilot: str) -> HuntGroup | None:
        for group in self.hunt_groups:
            if group.pilot == pilot:
                return group
        return None

    def phone_by_mac(self, mac: str) -> Phone | None:
        """The phone with ``mac`` (12 lowercase hex digits, as stored)."""
        for phone in self.phones:
            if phone.mac == mac:
                return phone
        return None

    def trunk_by_name(self, name: str) -> Trunk | None:
        for trunk in self.trunks:
            if trunk.name.casefold() == name.casefold():
                return trunk
        return None


# --------------------------------------------------------------------------------------------
# Cross-field checks. They run on the plain data (before or after pydantic) so that a
# document with both a bad field and a duplicate extension reports both.

Loc = tuple[str | int, ...]


def _scalar_key(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def _cross_check(data: Any) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    if not isinstance(data, Mapping):
        return problems
    site = data.get("site")
    outside = "9"
    if isinstance(site, Mapping):
        digit = _scalar_key(site.get("outside_line_digit", "9"))
        if digit is not None:
            outside = digit
    users = data.get("users")
    if isinstance(users, list):
        problems.extend(_check_users(users, outside))
    sip = data.get("sip", {})
    if isinstance(sip, Mapping):
        problems.extend(_check_sip(sip))
    problems.extend(_check_routing(data, outside))
    problems.extend(_check_phones(data))
    problems.extend(_check_auto_registration(data))
    problems.extend(_check_paging(data, outside))
    return problems


def _is_multicast(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.IPv4Address(value).is_multicast
    except ValueError:
        return False


def _check_paging(data: Mapping[str, Any], outside: str) -> list[tuple[Loc, str]]:
    """Paging groups: unique names and numbers no one else has, members who are users,
    a multicast stream the phones are provisioned to listen to when the mode needs one."""
    problems: list[tuple[Loc, str]] = []
    numbers = _Numbers(data)
    taken: dict[str, str] = {ext: f"the extension of users[{i}]"
                             for ext, i in numbers.extensions.items()}
    taken.update({p: f"the pilot of hunt_groups[{i}]" for p, i in numbers.pilots.items()})
    for i, att in _list(data, "attendants"):
        number = _scalar_key(att.get("number"))
        if number is not None:
            taken.setdefault(number, f"the number of attendants[{i}]")
    prov = data.get("provisioning")
    streams: set[tuple[Any, Any]] = set()
    if isinstance(prov, Mapping):
        auto = prov.get("auto_registration")
        if isinstance(auto, Mapping):
            assigner = _scalar_key(auto.get("assigner_number", "70000"))
            if assigner is not None:
                taken.setdefault(assigner, "the assigner number")
        streams = {(g.get("address"), g.get("port")) for _, g in _list(prov, "paging_groups")}
    names: dict[str, int] = {}
    for i, group in _list(data, "paging_groups"):
        loc: Loc = ("paging_groups", i)
        name = _scalar_key(group.get("name"))
        if name is not None:
            first = names.setdefault(name.casefold(), i)
            if first != i:
                problems.append(((*loc, "name"),
                                 f"{_quote(name)} is already the name of paging_groups[{first}]"))
        number = _scalar_key(group.get("number"))
        if number is not None:
            if number in taken:
                problems.append(((*loc, "number"), f"{_quote(number)} is already "
                                 f"{taken[number]}"))
            else:
                taken[number] = f"the number of paging_groups[{i}]"
            if outside and number.startswith(outside) and not number.startswith("0"):
                problems.append(((*loc, "number"),
                                 f"{_quote(number)} starts with the outside-line digit "
                                 f"{_quote(outside)} (site.outside_line_digit)"))
        members = group.get("members")
        members = members if isinstance(members, list) else []
        for j, member in enumerate(members):
            ext = _scalar_key(member)
            if ext is not None and ext not in numbers.extensions:
                problems.append(((*loc, "members", j),
                                 f"{_quote(ext)} is not the extension of any user"))
        mode = group.get("mode", "unicast")
        multicast = group.get("multicast")
        if mode in ("multicast", "both") and multicast is None:
            problems.append(((*loc, "multicast"), f'required for mode "{mode}"'))
        if mode in ("unicast", "both") and not members:
            problems.append(((*loc, "members"), f'at least one member for mode "{mode}"'))
        if isinstance(multicast, Mapping):
            stream = (multicast.get("address"), multicast.get("port"))
            if _is_multicast(stream[0]) and isinstance(stream[1], int) \
                    and stream not in streams:
                problems.append(((*loc, "multicast"),
                                 f"{stream[0]}:{stream[1]} is not a stream of "
                                 "provisioning.paging_groups (the phones would not listen)"))
    return problems


def _check_auto_registration(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """The shared account's name and the assigner's number must not be anyone else's."""
    provisioning = data.get("provisioning")
    auto = provisioning.get("auto_registration") if isinstance(provisioning, Mapping) else None
    if not isinstance(auto, Mapping):
        return []
    problems: list[tuple[Loc, str]] = []
    base: Loc = ("provisioning", "auto_registration")
    users = [u for u in data.get("users", []) if isinstance(u, Mapping)]
    usernames = {_scalar_key(u.get("sip", {}).get("username"))
                 for u in users if isinstance(u.get("sip"), Mapping)}
    if _scalar_key(auto.get("username")) in usernames:
        problems.append(((*base, "username"), "is already a user's SIP username"))
    number = _scalar_key(auto.get("assigner_number", "70000"))
    taken = {_scalar_key(u.get("extension")) for u in users}
    taken |= {_scalar_key(g.get("pilot")) for g in data.get("hunt_groups", [])
              if isinstance(g, Mapping)}
    if number is not None and number in taken:
        problems.append(((*base, "assigner_number"), f"{_quote(number)} is already in use"))
    return problems


def _check_users(users: list[Any], outside: str) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    seen: dict[str, dict[str, int]] = {"id": {}, "extension": {}, "username": {}}

    def dup(kind: str, key: str, index: int, loc: Loc, *, shown: str, what: str) -> None:
        first = seen[kind].setdefault(key, index)
        if first != index:
            problems.append((loc, f"{_quote(shown)} is already the {what} of users[{first}]"))

    for i, user in enumerate(users):
        if not isinstance(user, Mapping):
            continue
        uid = _scalar_key(user.get("id"))
        if uid is not None:
            dup("id", uid.casefold(), i, ("users", i, "id"), shown=uid, what="id")
        ext = _scalar_key(user.get("extension"))
        if ext is not None:
            dup("extension", ext, i, ("users", i, "extension"), shown=ext, what="extension")
            if outside and ext.startswith(outside) and not ext.startswith("0"):
                problems.append((("users", i, "extension"),
                                 f"{_quote(ext)} starts with the outside-line digit "
                                 f"{_quote(outside)} (site.outside_line_digit)"))
        sip = user.get("sip")
        if isinstance(sip, Mapping):
            name = _scalar_key(sip.get("username"))
            if name is not None:
                dup("username", name.casefold(), i, ("users", i, "sip", "username"),
                    shown=name, what="SIP username")
    return problems


class _Numbers:
    """The site's numbers, from the plain data, for cross-reference checks."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.extensions: dict[str, int] = {}
        self.voicemail: dict[str, bool] = {}
        self.pilots: dict[str, int] = {}
        users = data.get("users")
        for i, user in enumerate(users if isinstance(users, list) else []):
            if isinstance(user, Mapping):
                ext = _scalar_key(user.get("extension"))
                if ext is not None and ext not in self.extensions:
                    self.extensions[ext] = i
                    self.voicemail[ext] = user.get("voicemail", True) is not False
        groups = data.get("hunt_groups")
        for i, group in enumerate(groups if isinstance(groups, list) else []):
            if isinstance(group, Mapping):
                pilot = _scalar_key(group.get("pilot"))
                if pilot is not None and pilot not in self.pilots:
                    self.pilots[pilot] = i
        # Attendant names a destination may use; None: the document defines no attendant,
        # and only the shape of a name is checked (documents from before attendants:).
        self.attendants: set[str] | None = None
        attendants = data.get("attendants")
        if isinstance(attendants, list) and attendants:
            self.attendants = {
                name for a in attendants if isinstance(a, Mapping)
                if (name := _scalar_key(a.get("name"))) is not None
            }

    def is_local(self, number: str) -> bool:
        return number in self.extensions or number in self.pilots


def _list(data: Mapping[str, Any], key: str) -> list[tuple[int, Mapping[str, Any]]]:
    value = data.get(key)
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, Mapping)]


def _check_destination(dest: Any, loc: Loc, numbers: _Numbers) -> list[tuple[Loc, str]]:
    if not isinstance(dest, Mapping):
        return []
    kind = dest.get("type")
    raw = dest.get("value")
    value = _scalar_key(raw)
    at = (*loc, "value")
    if kind == "hangup":
        if raw is not None and raw != "":
            return [(at, 'must be empty for type "hangup"')]
        return []
    if kind not in ("extension", "voicemail", "attendant"):
        return []  # pydantic reports the type
    if raw is None:
        return [(at, f'required for type "{kind}"')]
    if value is None:
        return []  # not a string: pydantic reports it
    if kind == "extension" and not numbers.is_local(value):
        return [(at, f"{_quote(value)} is not an extension or hunt group pilot of this site")]
    if kind == "voicemail":
        if value not in numbers.extensions:
            return [(at, f"{_quote(value)} is not the extension of any user")]
        if not numbers.voicemail[value]:
            return [(at, f"{_quote(value)}: users[{numbers.extensions[value]}] has voicemail "
                         "turned off")]
    if kind == "attendant" and not _NAME_RE.match(value):
        return [(at, f"{_quote(value)} is not an attendant name")]
    if kind == "attendant" and numbers.attendants is not None \
            and value not in numbers.attendants:
        return [(at, f"{_quote(value)} is not the name of an attendant")]
    return []


def _emergency_numbers(site: Any) -> list[str]:
    default = ["911", "112"]
    if not isinstance(site, Mapping):
        return default
    value = site.get("emergency_numbers", default)
    if not isinstance(value, list):
        return default
    return [key for key in map(_scalar_key, value) if key is not None]


def _check_routing(data: Mapping[str, Any], outside: str) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    numbers = _Numbers(data)
    emergency = _emergency_numbers(data.get("site"))

    for i, user in _list(data, "users"):
        ext = _scalar_key(user.get("extension"))
        if ext is not None and ext in emergency and ext not in EMERGENCY_NUMBERS:
            problems.append((("users", i, "extension"),
                             f"{_quote(ext)} is an emergency number (site.emergency_numbers)"))
        forward = user.get("forward")
        if isinstance(forward, Mapping) and ext is not None and \
                _scalar_key(forward.get("all")) == ext:
            problems.append((("users", i, "forward", "all"),
                             f"{_quote(ext)} would forward the user to themselves"))

    names: dict[str, int] = {}
    pilots: dict[str, int] = {}
    for i, group in _list(data, "hunt_groups"):
        loc: Loc = ("hunt_groups", i)
        name = _scalar_key(group.get("name"))
        if name is not None:
            first = names.setdefault(name.casefold(), i)
            if first != i:
                problems.append(((*loc, "name"),
                                 f"{_quote(name)} is already the name of hunt_groups[{first}]"))
        pilot = _scalar_key(group.get("pilot"))
        if pilot is not None:
            first = pilots.setdefault(pilot, i)
            if first != i:
                problems.append(((*loc, "pilot"),
                                 f"{_quote(pilot)} is already the pilot of hunt_groups[{first}]"))
            elif pilot in numbers.extensions:
                problems.append(((*loc, "pilot"), f"{_quote(pilot)} is already the extension "
                                 f"of users[{numbers.extensions[pilot]}]"))
            if outside and pilot.startswith(outside) and not pilot.startswith("0"):
                problems.append(((*loc, "pilot"),
                                 f"{_quote(pilot)} starts with the outside-line digit "
                                 f"{_quote(outside)} (site.outside_line_digit)"))
            if pilot in emergency:
                problems.append(((*loc, "pilot"),
                                 f"{_quote(pilot)} is an emergency number "
                                 "(site.emergency_numbers)"))
        members = group.get("members")
        if not isinstance(members, list) or len(members) > MAX_MEMBERS:
            members = []  # too many: pydantic says so, and one error is enough
        seen: dict[str, int] = {}
        for j, member in enumerate(members):
            if not isinstance(member, Mapping):
                continue
            ext = _scalar_key(member.get("extension"))
            if ext is None:
                continue
            mloc = (*loc, "members", j, "extension")
            first = seen.setdefault(ext, j)
            if first != j:
                problems.append((mloc, f"{_quote(ext)} is already members[{first}]"))
            elif ext not in numbers.extensions:
                problems.append((mloc, f"{_quote(ext)} is not the extension of any user"))
        final = group.get("final")
        problems.extend(_check_destination(final, (*loc, "final"), numbers))
        if isinstance(final, Mapping) and final.get("type") == "extension" and pilot is not None \
                and _scalar_key(final.get("value")) == pilot:
            problems.append(((*loc, "final", "value"),
                             f"{_quote(pilot)} is the group's own pilot"))

    schedules: dict[str, int] = {}
    for i, schedule in _list(data, "schedules"):
        name = _scalar_key(schedule.get("name"))
        if name is not None:
            first = schedules.setdefault(name, i)
            if first != i:
                problems.append((("schedules", i, "name"),
                                 f"{_quote(name)} is already the name of schedules[{first}]"))

    for i, night in _list(data, "night_service"):
        loc = ("night_service", i)
        name = _scalar_key(night.get("schedule"))
        if name is not None and name not in schedules:
            problems.append(((*loc, "schedule"), f"{_quote(name)} is not the name of a schedule"))
        listed = night.get("numbers")
        local: set[str] = set()
        for j, number in enumerate(listed if isinstance(listed, list) else []):
            key = _scalar_key(number)
            if key is None:
                continue
            local.add(key)
            if not numbers.is_local(key):
                problems.append(((*loc, "numbers", j), f"{_quote(key)} is not an extension or "
                                 "hunt group pilot of this site"))
        dest = night.get("destination")
        problems.extend(_check_destination(dest, (*loc, "destination"), numbers))
        if isinstance(dest, Mapping) and dest.get("type") == "extension":
            target = _scalar_key(dest.get("value"))
            if target is not None and target in local:
                problems.append(((*loc, "destination", "value"),
                                 f"{_quote(target)} is itself diverted by this night service"))

    problems.extend(_check_attendants(data, outside, numbers, emergency, set(schedules)))

    codes = data.get("feature_codes")
    if isinstance(codes, Mapping):
        used = {code: f"{feature.value.replace('-', '_')} (default)"
                for feature, code in DEFAULT_FEATURE_CODES.items()
                if codes.get(feature.value.replace("-", "_")) is None}
        for key, code in codes.items():
            if key not in FEATURE_KEYS or not isinstance(code, str):
                continue
            other = used.setdefault(code, key)
            if other != key:
                problems.append((("feature_codes", key),
                                 f"{_quote(code)} is already the code of {other}"))

    trunk_names: dict[str, int] = {}
    dids: dict[str, Loc] = {}
    for i, trunk in _list(data, "trunks"):
        loc = ("trunks", i)
        name = _scalar_key(trunk.get("name"))
        if name is not None:
            first = trunk_names.setdefault(name.casefold(), i)
            if first != i:
                problems.append(((*loc, "name"),
                                 f"{_quote(name)} is already the name of trunks[{first}]"))
        if trunk.get("register", True) is True:
            for field in ("username", "password"):
                if trunk.get(field) is None:
                    problems.append(((*loc, field),
                                     "required when register is true (the default)"))
        for j, did in _list(trunk, "dids"):
            number = _scalar_key(did.get("number"))
            if number is not None:
                dloc: Loc = (*loc, "dids", j, "number")
                first_loc = dids.setdefault(number.removeprefix("+"), dloc)
                if first_loc != dloc:
                    problems.append((dloc, f"{_quote(number)} is already listed at "
                                     f"{_format_loc(first_loc[:-1])}"))
            problems.extend(_check_destination(did.get("destination"),
                                               (*loc, "dids", j, "destination"), numbers))
    return problems


def _check_attendants(data: Mapping[str, Any], outside: str, numbers: _Numbers,
                      emergency: list[str], schedules: set[str]) -> list[tuple[Loc, str]]:
    """Names and numbers unique, menus and schedules that exist, options that make sense."""
    problems: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    taken: dict[str, str] = {ext: f"the extension of users[{i}]"
                             for ext, i in numbers.extensions.items()}
    taken.update({p: f"the pilot of hunt_groups[{i}]" for p, i in numbers.pilots.items()})
    prov = data.get("provisioning")
    auto = prov.get("auto_registration") if isinstance(prov, Mapping) else None
    if isinstance(auto, Mapping):
        assigner = _scalar_key(auto.get("assigner_number", "70000"))
        if assigner is not None:
            taken.setdefault(assigner, "the assigner number")
    for i, att in _list(data, "attendants"):
        loc: Loc = ("attendants", i)
        name = _scalar_key(att.get("name"))
        if name is not None:
            first = names.setdefault(name.casefold(), i)
            if first != i:
                problems.append(((*loc, "name"),
                                 f"{_quote(name)} is already the name of attendants[{first}]"))
        number = _scalar_key(att.get("number"))
        if number is not None:
            if number in taken:
                problems.append(((*loc, "number"), f"{_quote(number)} is already "
                                 f"{taken[number]}"))
            else:
                taken[number] = f"the number of attendants[{i}]"
            if outside and number.startswith(outside) and not number.startswith("0"):
                problems.append(((*loc, "number"),
                                 f"{_quote(number)} starts with the outside-line digit "
                                 f"{_quote(outside)} (site.outside_line_digit)"))
            if number in emergency:
                problems.append(((*loc, "number"), f"{_quote(number)} is an emergency number "
                                 "(site.emergency_numbers)"))
        schedule = _scalar_key(att.get("schedule"))
        if schedule is not None and schedule not in schedules:
            problems.append(((*loc, "schedule"),
                             f"{_quote(schedule)} is not the name of a schedule"))
        menus: dict[str, int] = {}
        for j, menu in _list(att, "menus"):
            menu_name = _scalar_key(menu.get("name"))
            if menu_name is not None:
                first = menus.setdefault(menu_name, j)
                if first != j:
                    problems.append(((*loc, "menus", j, "name"), f"{_quote(menu_name)} is "
                                     f"already the name of menus[{first}]"))
        for field in ("open_menu", "closed_menu"):
            menu_name = _scalar_key(att.get(field))
            if menu_name is not None and menu_name not in menus:
                problems.append(((*loc, field), f"{_quote(menu_name)} is not the name of one "
                                 "of the attendant's menus"))
        if att.get("closed_menu") is not None and schedule is None:
            problems.append(((*loc, "closed_menu"), "needs a schedule that says when the "
                             "attendant is closed"))
        problems.extend(_check_destination(att.get("operator"), (*loc, "operator"), numbers))
        listed = att.get("extensions")
        for j, ext in enumerate(listed if isinstance(listed, list) else []):
            key = _scalar_key(ext)
            if key is not None and not numbers.is_local(key):
                problems.append(((*loc, "extensions", j), f"{_quote(key)} is not an extension "
                                 "or hunt group pilot of this site"))
        for j, menu in _list(att, "menus"):
            options = menu.get("options")
            if not isinstance(options, Mapping):
                continue
            for key, option in options.items():
                if not isinstance(option, Mapping):
                    continue
                oloc: Loc = (*loc, "menus", j, "options", str(key))
                kind = option.get("type")
                raw = option.get("value")
                if kind == "menu":
                    value = _scalar_key(raw)
                    if raw is None:
                        problems.append(((*oloc, "value"), 'required for type "menu"'))
                    elif value is not None and value not in menus:
                        problems.append(((*oloc, "value"), f"{_quote(value)} is not the name "
                                         "of one of the attendant's menus"))
                elif kind in ("operator", "repeat", "back", "dial_by_extension"):
                    if raw is not None and raw != "":
                        problems.append(((*oloc, "value"), f'must be empty for type "{kind}"'))
                else:
                    problems.extend(_check_destination(option, oloc, numbers))
    return problems


def _check_phones(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """MACs unique, lines and BLF keys on users' extensions, a line on several phones only
    when shared everywhere, key counts within the model, paging groups defined."""
    problems: list[tuple[Loc, str]] = []
    numbers = _Numbers(data)
    groups: dict[str, tuple[Any, Any]] = {}
    prov = data.get("provisioning")
    if isinstance(prov, Mapping):
        for i, group in _list(prov, "paging_groups"):
            label = group.get("label")
            if not isinstance(label, str):
                continue
            if label in groups:
                problems.append((("provisioning", "paging_groups", i, "label"),
                                 f"{_quote(label)} is already a paging group label"))
            else:
                groups[label] = (group.get("address"), group.get("port"))
    macs: dict[str, int] = {}
    appearances: dict[str, list[tuple[int, int, bool]]] = {}
    for i, phone in _list(data, "phones"):
        loc: Loc = ("phones", i)
        raw_mac = _scalar_key(phone.get("mac"))
        if raw_mac is not None:
            try:
                mac = normalise_mac(raw_mac)
            except ValueError:
                pass  # pydantic reports it
            else:
                first = macs.setdefault(mac, i)
                if first != i:
                    problems.append(((*loc, "mac"),
                                     f"{_quote(raw_mac)} is already the MAC of phones[{first}]"))
        model_text = phone.get("model")
        entry = lookup_phone_model(model_text) if isinstance(model_text, str) else None
        has_user = phone.get("http_username") is not None
        if has_user != (phone.get("http_password") is not None):
            problems.append(((*loc, "http_password" if has_user else "http_username"),
                             "http_username and http_password go together"))
        elif has_user and entry is not None and entry.vendor == "cisco":
            problems.append(((*loc, "http_username"),
                             f"a {entry.model} does not support HTTP authentication "
                             "(its file is served without it)"))
        lines = phone.get("lines")
        lines = lines if isinstance(lines, list) else []
        on_phone: dict[str, int] = {}
        for k, line in enumerate(lines):
            if not isinstance(line, Mapping):
                continue
            ext = _scalar_key(line.get("extension"))
            if ext is None:
                continue
            at: Loc = (*loc, "lines", k, "extension")
            if ext not in numbers.extensions:
                problems.append((at, f"{_quote(ext)} is not the extension of any user"))
                continue
            first_k = on_phone.setdefault(ext, k)
            if first_k != k:
                problems.append((at, f"{_quote(ext)} is already lines[{first_k}] of this phone"))
                continue
            appearances.setdefault(ext, []).append((i, k, line.get("shared") is True))
        for k, key in _list(phone, "blf"):
            ext = _scalar_key(key.get("extension"))
            if ext is not None and ext not in numbers.extensions:
                problems.append(((*loc, "blf", k, "extension"),
                                 f"{_quote(ext)} is not the extension of any user"))
        labels = phone.get("paging_groups")
        used: list[tuple[Any, Any]] = []
        for k, label in enumerate(labels if isinstance(labels, list) else []):
            if not isinstance(label, str):
                continue
            if label not in groups:
                problems.append(((*loc, "paging_groups", k),
                                 f"{_quote(label)} is not a label of provisioning.paging_groups"))
            else:
                used.append(groups[label])
        if entry is None:
            continue  # pydantic reports the unknown model
        if len(lines) > entry.max_lines:
            problems.append(((*loc, "lines"), f"{len(lines)} lines but a {entry.model} has "
                             f"at most {entry.max_lines}"))
        speed = phone.get("speed_dials")
        blf = phone.get("blf")
        keys = len(lines) + sum(len(v) for v in (speed, blf) if isinstance(v, list))
        if keys > entry.max_keys and len(lines) <= entry.max_lines:
            modules = (f" (with {entry.max_modules} expansion modules)"
                       if entry.max_modules else "")
            problems.append((loc, f"{keys} keys (lines, speed dials and BLF) but a "
                             f"{entry.model} has at most {entry.max_keys}{modules}"))
        if entry.vendor == "polycom" and len(set(used)) > 1:
            problems.append(((*loc, "paging_groups"),
                             "a Polycom phone listens on one multicast address and port; "
                             "these paging groups use several"))
    for ext, where in appearances.items():
        if len({i for i, _, _ in where}) < 2 or all(shared for _, _, shared in where):
            continue
        first_i = where[0][0]
        for i, k, _ in where[1:]:
            problems.append((("phones", i, "lines", k, "extension"),
                             f"{_quote(ext)} is already a line of phones[{first_i}]; a line on "
                             "several phones needs shared: true on every one"))
    return problems


def _check_sip(sip: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    fields = SipSettings.model_fields
    values: dict[str, int] = {}
    for name in ("min_expires", "default_expires", "max_expires"):
        value = sip.get(name, fields[name].default)
        if not isinstance(value, int) or isinstance(value, bool):
            return []
        values[name] = value
    lo, default, hi = values["min_expires"], values["default_expires"], values["max_expires"]
    problems: list[tuple[Loc, str]] = []
    if lo > hi:
        problems.append((("sip", "max_expires"),
                         f"{hi} must not be less than min_expires ({lo})"))
    elif not lo <= default <= hi:
        problems.append((("sip", "default_expires"),
                         f"{default} must be between min_expires ({lo}) and max_expires ({hi})"))
    return problems


# --------------------------------------------------------------------------------------------
# Error formatting

_IDENT_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")

def _items(n: Any) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


_MESSAGES: dict[str, str | Callable[[dict[str, Any]], str]] = {
    "missing": "required field is missing",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "greater_than_equal": lambda c: f"must be at least {c.get('ge')}",
    "greater_than": lambda c: f"must be greater than {c.get('gt')}",
    "less_than_equal": lambda c: f"must be at most {c.get('le')}",
    "less_than": lambda c: f"must be less than {c.get('lt')}",
    "string_too_short": lambda c: (
        "must not be empty" if c.get("min_length") == 1
        else f"must be at least {c.get('min_length')} characters"
    ),
    "string_too_long": lambda c: f"must be at most {c.get('max_length')} characters",
    "too_long": lambda c: f"must have at most {_items(c.get('max_length'))}",
    "too_short": lambda c: (
        "must not be empty" if c.get("min_length") == 1
        else f"must have at least {_items(c.get('min_length'))}"
    ),
    "literal_error": lambda c: f"must be {c.get('expected')}",
    "enum": lambda c: f"must be {c.get('expected')}",
}


def _format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT_RE.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or _ROOT


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_annotated(args[0])
    return tp


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class found at ``loc`` inside :class:`Site`, for 'did you mean' hints."""
    tp: Any = Site
    for part in loc:
        tp = _strip_annotated(tp)
        if isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (list, tuple) and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _strip_annotated(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _format_error(err: Mapping[str, Any]) -> str:
    loc: Loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = dict(err.get("ctx") or {})
    if kind == "site_consistency":
        return str(ctx.get("problems", err.get("msg", "")))
    if kind == "extra_forbidden":
        message = "unknown field"
        model = _model_at(loc[:-1])
        if model is not None and loc and isinstance(loc[-1], str):
            names = [f.alias or n for n, f in model.model_fields.items()]
            close = difflib.get_close_matches(loc[-1], names, n=1)
            if close:
                message += f' (did you mean "{close[0]}"?)'
        return f"{_format_loc(loc)}: {message}"
    template = _MESSAGES.get(kind)
    if template is None:
        message = str(err.get("msg", kind))
    elif callable(template):
        message = template(ctx)
    else:
        message = template
    return f"{_format_loc(loc)}: {message}"


def _doc_order(data: Any, loc: Loc) -> tuple[tuple[int, int], ...]:
    """Sort key placing an error where its path appears in the document."""
    key: list[tuple[int, int]] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            key.append((0, part))
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        elif isinstance(node, Mapping):
            keys = list(node.keys())
            key.append((0, keys.index(part)) if part in keys else (1, 0))
            node = node.get(part)
        else:
            key.append((1, 0))
            node = None
    return tuple(key)


# --------------------------------------------------------------------------------------------
# Reading documents


class _DuplicateKeyError(Exception):
    pass


def _make_yaml_loader() -> type[yaml.SafeLoader]:
    """A SafeLoader with YAML 1.2-style scalars and an error on duplicate keys.

    YAML 1.1 would read ``extension: 0101`` as the octal number 65, ``9:30`` as 570 and ``no``
    as false. Here ints are plain decimals without leading zeros, floats need a dot or an
    exponent, booleans are only true/false; anything else stays a string.
    """

    class Loader(yaml.SafeLoader):
        pass

    dropped = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*))$"),
        list("-+0123456789"),
    )
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+)"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."),
    )

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKeyError(
                    f"duplicate key {_quote(str(key))} at line {key_node.start_mark.line + 1} "
                    f"(first at line {first})"
                )
        return dict(loader.construct_pairs(node, deep=True))

    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    return Loader


_YamlLoader = _make_yaml_loader()


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"duplicate key {_quote(key)}")
        out[key] = value
    return out


def parse_document(text: str) -> Any:
    """Parse YAML or JSON, chosen by content. Raises :class:`SiteError`."""
    body = text.lstrip("\ufeff \t\r\n")
    if not body:
        raise SiteError([f'{_ROOT}: is empty; expected a mapping with "site" and "users"'])
    json_error: str | None = None
    if body[0] in "{[":
        try:
            return json.loads(body, object_pairs_hook=_json_pairs)
        except _DuplicateKeyError as exc:
            raise SiteError([f"{_ROOT}: invalid JSON: {exc}"]) from None
        except json.JSONDecodeError as exc:
            json_error = f"{_ROOT}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    try:
        return yaml.load(body, Loader=_YamlLoader)  # a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise SiteError([f"{_ROOT}: invalid YAML: {exc}"]) from None
    except yaml.YAMLError as exc:
        if json_error is not None:
            raise SiteError([json_error]) from None
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SiteError([f"{_ROOT}: invalid YAML{where}: {problem}"]) from None


def _check_schema_version(data: Any) -> None:
    """A newer schema is refused alone: its other "errors" would only be noise."""
    if not isinstance(data, Mapping):
        return
    found = data.get("schema_version")
    if isinstance(found, int) and not isinstance(found, bool) and found > SITE_SCHEMA_VERSION:
        raise SiteError([
            f"schema_version: {found} is newer than this edgepbx understands "
            f"({SITE_SCHEMA_VERSION}); update the agent before applying this configuration"
        ])


def parse_site(data: Any) -> Site:
    """Validate an already parsed document. Raises :class:`SiteError` listing every error,
    in document order."""
    _check_schema_version(data)
    found: list[tuple[Loc, str]] = [
        (loc, f"{_format_loc(loc)}: {msg}") for loc, msg in _cross_check(data)
    ]
    site: Site | None = None
    try:
        site = Site.model_validate(data, context={_CHECKED: True})
    except ValidationError as exc:
        # include_input=False: never risk echoing a password.
        for err in exc.errors(include_url=False, include_input=False):
            found.append((tuple(err["loc"]), _format_error(err)))
    if found:
        lines: list[str] = []
        for _, line in sorted(found, key=lambda item: _doc_order(data, item[0])):
            if line not in lines:
                lines.append(line)
        raise SiteError(lines)
    assert site is not None
    return site


def load_site(path: str | Path) -> Site:
    """Read, parse and validate a site file (YAML or JSON, decided by content)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise SiteError([f"{_ROOT}: cannot read {p}: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise SiteError([f"{_ROOT}: larger than {MAX_DOCUMENT_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SiteError([f"{_ROOT}: not UTF-8 (bad byte at offset {exc.start})"]) from None
    return parse_site(parse_document(text))


# --------------------------------------------------------------------------------------------
# Canonical form, fingerprint, schema


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value


def site_document(site: Site, *, reveal_secrets: bool = False) -> dict[str, Any]:
    """The site as plain JSON-able data, defaults filled in.

    Secrets are ``"**********"`` unless ``reveal_secrets`` (store and fingerprint only).
    """
    if reveal_secrets:
        data: dict[str, Any] = _reveal(site.model_dump(mode="python"))
        normalised: dict[str, Any] = json.loads(json.dumps(data))  # plain JSON types
        return normalised
    return site.model_dump(mode="json")


def canonical_json(site: Site) -> bytes:
    """Sorted keys, no whitespace, UTF-8, secrets included: the input of the fingerprint."""
    doc = site_document(site, reveal_secrets=True)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def site_fingerprint(site: Site) -> str:
    """Hex SHA-256 of :func:`canonical_json`. Equal documents (defaults filled in, key
    order and formatting ignored) have equal fingerprints; any change, secrets included,
    changes it."""
    return hashlib.sha256(canonical_json(site)).hexdigest()


def site_json_schema() -> dict[str, Any]:
    """The published JSON Schema of the site document."""
    return Site.model_json_schema(by_alias=True)
