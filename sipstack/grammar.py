"""Small RFC 3261 §25 grammar helpers shared by the header and URI parsers.

Everything here works on ``str`` that was decoded from the wire with
``surrogateescape``, so serializing it again gives back the original bytes.
"""

from __future__ import annotations

import re

from sipstack.errors import SipParseError

# RFC 3261 token: alphanum and -.!%*_+`'~
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_LWS_RE = re.compile(r"[ \t]+")


_TOKENS_SEEN: set[str] = set()


def is_token(text: str) -> bool:
    # The same few names (tag, branch, rport, expires, ...) recur in every
    # message; remember the good ones, within a bound.
    if text in _TOKENS_SEEN:
        return True
    if TOKEN_RE.fullmatch(text) is None:
        return False
    if len(_TOKENS_SEEN) < 1024 and len(text) < 32:
        _TOKENS_SEEN.add(text)
    return True


def is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def split_commas(value: str) -> list[str]:
    """Split a list-valued header on commas outside quotes and <>; drop empty items."""
    if "," not in value:
        item = value.strip()
        return [item] if item else []
    parts: list[str] = []
    in_quote = in_angle = False
    start = i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            item = value[start:i].strip()
            if item:
                parts.append(item)
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(400, "unterminated quoted string")
    item = value[start:].strip()
    if item:
        parts.append(item)
    return parts


def read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[pos] == '"'``; return (raw with quotes, end)."""
    i = pos + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return text[pos : i + 1], i + 1
        i += 1
    raise SipParseError(400, "unterminated quoted string")


def unquote(raw: str) -> str:
    """The content of a quoted-string with quoted-pairs resolved; tokens pass through."""
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        inner = raw[1:-1]
        if "\\" not in inner:
            return inner
        out: list[str] = []
        i = 0
        while i < len(inner):
            c = inner[i]
            if c == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)
    return raw


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (leading ';' optional). Names are lower-cased.

    Values keep their quotes so that serializing them again is exact; use
    :func:`unquote` to read a quoted value.
    """
    if '"' not in text:
        return _parse_plain_params(text) if text else {}
    params: dict[str, str | None] = {}
    i = 0
    n = len(text)
    while i < n:
        # skip separators and LWS
        while i < n and text[i] in " \t;":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "=; \t":
            i += 1
        name = text[start:i]
        while i < n and text[i] in " \t":
            i += 1
        value: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                value, i = read_quoted(text, i)
            else:
                vstart = i
                while i < n and text[i] not in "; \t":
                    i += 1
                value = text[vstart:i]
            while i < n and text[i] in " \t":
                i += 1
        if i < n and text[i] != ";":
            raise SipParseError(400, f"malformed parameter near {text[start:i + 8]!r}")
        if not name or not is_token(name):
            raise SipParseError(400, f"malformed parameter name {name!r}")
        params[name.lower()] = value
    return params


def _parse_plain_params(text: str) -> dict[str, str | None]:
    """parse_params without quoted values: split, the common case."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        name = name.strip(" \t")
        if not name:
            if eq or value.strip(" \t"):
                raise SipParseError(400, "parameter without a name")
            continue
        if not is_token(name):
            raise SipParseError(400, f"malformed parameter name {name[:40]!r}")
        if eq:
            value = value.strip(" \t")
            if not value or " " in value or "\t" in value:
                if not value:
                    params[name.lower()] = ""
                    continue
                raise SipParseError(400, f"malformed value of parameter {name[:40]!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def collapse_lws(text: str) -> str:
    return _LWS_RE.sub(" ", text).strip()
