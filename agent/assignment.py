"""Binding an unassigned phone to an extension (the extension assigner's site change).

Pure helpers: which model a phone is, from what it told us (its SIP User-Agent, the
provisioning file names it asked for), and the new site document with the phone
added. The Agent writes and applies the document like any other site change.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from provisioning.catalogue import lookup

# Tokens of User-Agent strings that name the model:
#   Cisco-CP8841/14.2.1, Yealink SIP-T46U 108.86.0.20, PolycomVVX-VVX_450-UA/6.4.0
_UA_TOKEN = re.compile(r"[A-Za-z]+[-_ ]?[A-Za-z]*\d{2,4}[A-Za-z]?")

# A phone that told us nothing about its model gets its vendor's common desk model;
# line keys are then checked against that model (every one has at least one line).
DEFAULT_MODEL = {"cisco": "CP-8841", "yealink": "T46", "polycom": "VVX 450"}


def model_from_user_agent(user_agent: str) -> str | None:
    """The catalogue model a SIP User-Agent names, or None."""
    for token in _UA_TOKEN.findall(user_agent or ""):
        for candidate in (token, token.replace("_", " ")):
            entry = lookup(candidate)
            if entry is not None:
                return entry.model
    return None


def phone_model(user_agent: str, vendor: str | None, model_hint: str | None) -> str | None:
    """The best model name for a phone: its User-Agent, then the provisioning hint, then
    its vendor's common model."""
    found = model_from_user_agent(user_agent)
    if found is not None:
        return found
    if model_hint:
        entry = lookup(f"T{model_hint}") or lookup(model_hint)
        if entry is not None:
            return entry.model
    return DEFAULT_MODEL.get(vendor or "")


def with_phone(document: dict[str, Any], mac: str, model: str,
               extension: str) -> dict[str, Any]:
    """``document`` with the phone added, its first line on ``extension``. A phone
    already listed with that MAC is replaced (re-assigning a phone moves it)."""
    out = copy.deepcopy(document)
    phones = [p for p in out.get("phones", [])
              if _mac(str(p.get("mac", ""))) != _mac(mac)]
    phones.append({"mac": mac, "model": model, "lines": [{"extension": extension}]})
    out["phones"] = phones
    return out


def _mac(text: str) -> str:
    return re.sub(r"[^0-9a-f]", "", text.lower())


def same_mac(a: str, b: str) -> bool:
    """The same MAC however it is written (case, ``:``/``-``/``.`` separators)."""
    return _mac(a) == _mac(b)
