"""Paths into site documents: ``users[ann].forward.all``.

A path is dot-separated keys; ``[x]`` selects the element of a list whose identity key
equals ``x``. The identity key of a list is the first of ID_KEYS that every element (a
dict) carries with unique scalar values: ``id`` for users, ``name`` for hunt groups,
``extension`` for hunt members, ... A bare ``[3]`` on a list without identity keys is an
index. Used for device-pushed changes (setter), for diffing two versions (which paths did
the portal change?) and for the secret masking of partner views.
"""

from __future__ import annotations

import copy
import re
from typing import Any

ID_KEYS = ("id", "name", "mac", "extension", "pilot", "number", "slot")
MASK = "********"
_TOKEN = re.compile(r"([^.\[\]]+)|\[([^\[\]]+)\]|(\.)")


class PathError(ValueError):
    pass


Token = tuple[str, str]  # ("key", name) | ("id", value)


def parse(path: str) -> list[Token]:
    if not isinstance(path, str) or not path:
        raise PathError("path must be a non-empty string")
    tokens: list[Token] = []
    pos, expect_key = 0, True
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            raise PathError(f"bad path {path!r} at {pos}")
        key, ident, _dot = m.groups()
        if key is not None:
            if not expect_key:
                raise PathError(f"bad path {path!r}: missing '.' before {key!r}")
            tokens.append(("key", key))
            expect_key = False
        elif ident is not None:
            if expect_key:
                raise PathError(f"bad path {path!r}: '[' needs a key before it")
            tokens.append(("id", ident))
        else:
            if expect_key:
                raise PathError(f"bad path {path!r}: empty key")
            expect_key = True
        pos = m.end()
    if expect_key:
        raise PathError(f"bad path {path!r}: ends with '.'")
    return tokens


def fmt(tokens: list[Token]) -> str:
    out = ""
    for kind, value in tokens:
        out += f"[{value}]" if kind == "id" else (f".{value}" if out else value)
    return out


def _keyed_by(items: list[Any], key: str) -> bool:
    if not all(isinstance(i, dict) for i in items):
        return False
    values = [i.get(key) for i in items]
    return all(isinstance(v, str | int) and not isinstance(v, bool) for v in values) and \
        len({str(v) for v in values}) == len(values)


def id_key(items: list[Any], *more: list[Any]) -> str | None:
    """The identity key shared by ``items`` (and each of ``more``); "id" for empty lists."""
    lists = [x for x in (items, *more) if x]
    if not lists:
        return "id"
    for key in ID_KEYS:
        if all(_keyed_by(x, key) for x in lists):
            return key
    return None


def _find(items: list[Any], ident: str) -> int | None:
    key = id_key(items)
    if key is not None:
        for n, item in enumerate(items):
            if isinstance(item, dict) and str(item.get(key)) == ident:
                return n
        return None
    if ident.isdigit() and int(ident) < len(items):
        return int(ident)
    return None


def get(doc: Any, path: str | list[Token]) -> Any:
    tokens = parse(path) if isinstance(path, str) else path
    node = doc
    for kind, value in tokens:
        if kind == "key":
            if not isinstance(node, dict) or value not in node:
                raise PathError(f"{fmt(tokens)}: no {value!r}")
            node = node[value]
        else:
            if not isinstance(node, list) or (n := _find(node, value)) is None:
                raise PathError(f"{fmt(tokens)}: no element [{value}]")
            node = node[n]
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value`` in place. Missing dict keys on the way are created;
    a missing list element is an error unless it is the last step (then it is appended,
    and a null value there removes the element)."""
    tokens = parse(path)
    node: Any = doc
    for i, (kind, key) in enumerate(tokens):
        last = i == len(tokens) - 1
        if kind == "key":
            if not isinstance(node, dict):
                raise PathError(f"{path}: {fmt(tokens[:i]) or 'document'} is not an object")
            if last:
                node[key] = copy.deepcopy(value)
                return
            if node.get(key) is None:
                node[key] = [] if tokens[i + 1][0] == "id" else {}
            node = node[key]
        else:
            if not isinstance(node, list):
                raise PathError(f"{path}: {fmt(tokens[:i])} is not a list")
            n = _find(node, key)
            if last:
                if value is None:
                    if n is not None:
                        del node[n]
                    return
                if not isinstance(value, dict):
                    raise PathError(f"{path}: a list element must be an object")
                item = copy.deepcopy(value)
                # An empty list has no identity key yet: take the element's own.
                ik = (id_key(node) if node else None) or next(
                    (k for k in ID_KEYS if str(item.get(k)) == key), "id")
                item.setdefault(ik, key)
                if str(item[ik]) != key:
                    raise PathError(f"{path}: element {ik} {item[ik]!r} does not match [{key}]")
                if n is None:
                    node.append(item)
                else:
                    node[n] = item
                return
            if n is None:
                raise PathError(f"{path}: no element [{key}] in {fmt(tokens[:i])}")
            node = node[n]


def overlaps(a: str | list[Token], b: str | list[Token]) -> bool:
    """True when one path is the other or lies inside it."""
    ta = parse(a) if isinstance(a, str) else a
    tb = parse(b) if isinstance(b, str) else b
    n = min(len(ta), len(tb))
    return ta[:n] == tb[:n]


def diff(old: Any, new: Any, prefix: list[Token] | None = None) -> list[str]:
    """The paths (as above) at which ``new`` differs from ``old``, as coarse as needed."""
    prefix = prefix or []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = [*prefix, ("key", str(key))]
            if key not in old or key not in new:
                out.append(fmt(sub))
            else:
                out += diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and old != new and prefix:
        key = id_key(old, new)
        if key is not None:
            old_ids = [str(i[key]) for i in old]
            new_ids = [str(i[key]) for i in new]
            common = [i for i in old_ids if i in new_ids]
            if common != [i for i in new_ids if i in old_ids]:
                return [fmt(prefix)]  # reordered: the list as a whole changed
            by_old = {str(i[key]): i for i in old}
            by_new = {str(i[key]): i for i in new}
            out = []
            for ident in old_ids + [i for i in new_ids if i not in by_old]:
                sub = [*prefix, ("id", ident)]
                if ident not in by_old or ident not in by_new:
                    out.append(fmt(sub))
                else:
                    out += diff(by_old[ident], by_new[ident], sub)
            return out
    if old != new or type(old) is not type(new):
        return [fmt(prefix)] if prefix else [""]
    return []


def is_secret_key(key: str) -> bool:
    k = key.lower()
    return k in {"password", "passwd", "pin", "secret", "ha1", "pin_hash", "private_key"} or \
        k.endswith(("_password", "_pin", "_secret"))


def mask_secrets(doc: Any) -> Any:
    """A copy with every secret value (keys named password, pin, ...) replaced by MASK."""
    if isinstance(doc, dict):
        return {k: (MASK if is_secret_key(str(k)) and v is not None else mask_secrets(v))
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [mask_secrets(v) for v in doc]
    return doc


def restore_masked(new: Any, old: Any, prefix: list[Token] | None = None) -> Any:
    """Put back the old secret wherever an edited document still carries MASK, so a
    masked view can be edited and saved without knowing (or wiping) the secrets."""
    prefix = prefix or []
    if isinstance(new, dict):
        out = {}
        for k, v in new.items():
            sub = [*prefix, ("key", str(k))]
            old_v = old.get(k) if isinstance(old, dict) else None
            if v == MASK and is_secret_key(str(k)):
                if not (isinstance(old, dict) and k in old):
                    raise PathError(f"{fmt(sub)}: masked secret without a stored value")
                out[k] = old[k]
            else:
                out[k] = restore_masked(v, old_v, sub)
        return out
    if isinstance(new, list):
        key = id_key(new)
        old_by_id = {}
        if key is not None and isinstance(old, list) and id_key(old) == key:
            old_by_id = {str(i[key]): i for i in old}
        return [restore_masked(v, old_by_id.get(str(v.get(key))) if key and isinstance(v, dict)
                               else None, [*prefix, ("id", str(n))]) for n, v in enumerate(new)]
    return new
