"""The site configuration: schema, loading, validation and fingerprint.

One document per site, YAML or JSON. Every section is a pydantic model with ``extra="forbid"``
so that a typo is an error, not a silently ignored key. :func:`load_site` and :func:`parse_site`
report *every* problem as a line ``path: message``, e.g.
``users[3].extension: "0101" must not start with 0``.

Secrets (SIP passwords) are :class:`pydantic.SecretStr`: their ``repr``/``str`` and default dumps
show ``**********``. Only :func:`site_document` with ``reveal_secrets=True`` (used for the
fingerprint and the store) sees them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
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
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "EMERGENCY_NUMBERS",
    "MAX_DOCUMENT_BYTES",
    "SchemaModel",
    "SipAccount",
    "SipSettings",
    "Site",
    "SiteError",
    "SiteSettings",
    "User",
    "load_site",
    "parse_document",
    "parse_site",
    "site_document",
    "site_fingerprint",
    "site_json_schema",
]

#: Numbers that must keep reaching the emergency services; no extension may shadow them.
EMERGENCY_NUMBERS: Final = frozenset({"112", "911", "999"})
#: A site document larger than this is refused before parsing.
MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
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


# --------------------------------------------------------------------------------------------
# The models


class SchemaModel(BaseModel):
    """Base of every site-document model: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    site: SiteSettings
    users: list[User] = Field(default_factory=list, max_length=10000)
    sip: SipSettings = Field(default_factory=SipSettings)

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


def parse_site(data: Any) -> Site:
    """Validate an already parsed document. Raises :class:`SiteError` listing every error,
    in document order."""
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
