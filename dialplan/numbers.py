"""Classifying what a phone dialed, and translating outside numbers.

Classification looks only at the shape of the string and the site's numbering plan;
whether an extension actually exists is route's business. Keeping the two apart lets the
plan be validated (and tested) without a user list.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

# SIP user parts can hold anything; a dial string is digits, '*', '#' and a leading '+'.
_DIALABLE = re.compile(r"[0-9*#+]+")  # where a "+" may stand is checked below
# Longer than any E.164 number plus prefixes: refuse rather than carry junk to a trunk.
MAX_DIALED_LENGTH = 32


class Kind(enum.Enum):
    EXTENSION = "extension"
    FEATURE_CODE = "feature-code"
    OUTSIDE = "outside"
    EMERGENCY = "emergency"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Translation:
    """One rule: if `pattern` matches the whole number, it becomes `replacement`.

    The replacement may use regex group references (\\1, \\g<name>). Full matching, not
    search, so that a rule never rewrites part of a number by accident.
    """

    pattern: str
    replacement: str

    def __post_init__(self) -> None:
        # Fail when the model is built, not on the first call that matches the rule.
        compiled = re.compile(self.pattern)
        for ref in re.findall(r"\\(\d+)|\\g<(\w+)>", self.replacement):
            number, name = ref
            key = number or name
            known = (key.isdigit() and int(key) <= compiled.groups) or key in compiled.groupindex
            if not known:
                raise ValueError(f"replacement {self.replacement!r} refers to unknown group {key}")


@dataclass(frozen=True, slots=True)
class NumberingPlan:
    """The site's numbering: outside-line digit, emergency numbers, extension lengths."""

    outside_digit: str = "9"
    emergency_numbers: tuple[str, ...] = ("911", "112")
    extension_min_length: int = 3
    extension_max_length: int = 5
    translations: tuple[Translation, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9]", self.outside_digit):
            raise ValueError(f"outside digit must be one digit, not {self.outside_digit!r}")
        if not 1 <= self.extension_min_length <= self.extension_max_length:
            raise ValueError("extension lengths must satisfy 1 <= min <= max")
        for number in self.emergency_numbers:
            if not number.isdigit():
                raise ValueError(f"emergency number {number!r} must be digits")


@dataclass(frozen=True, slots=True)
class Classified:
    """The kind of a dial string and the significant part: for OUTSIDE the number without
    the outside digit, for EMERGENCY the bare emergency number, otherwise the string."""

    kind: Kind
    number: str
    reason: str = ""


def is_extension_shape(dialed: str, plan: NumberingPlan) -> bool:
    """3-5 digits (by default) with no leading 0: 0 is the operator/trunk prefix world-wide."""
    return (
        dialed.isdigit()
        and dialed.isascii()
        and plan.extension_min_length <= len(dialed) <= plan.extension_max_length
        and not dialed.startswith("0")
    )


def classify(dialed: str, plan: NumberingPlan) -> Classified:
    """Classify a dial string. Order matters and is deliberate:

    1. emergency first, with or without the outside digit, so that "911" is never taken
       for an extension and "9911" never needs a class of restriction;
    2. feature codes (start with '*');
    3. outside line (the outside digit, or a '+' number from a phone's directory);
    4. extensions. An extension starting with the outside digit can therefore only be
       reached if route finds it in the site first; site validation should forbid them.
    """
    if not dialed:
        return Classified(Kind.INVALID, dialed, "empty")
    if len(dialed) > MAX_DIALED_LENGTH:
        return Classified(Kind.INVALID, dialed, "too long")
    if not (dialed.isascii() and _DIALABLE.fullmatch(dialed)):
        return Classified(Kind.INVALID, dialed, "not a dial string")
    if dialed in plan.emergency_numbers:
        return Classified(Kind.EMERGENCY, dialed)
    digit = plan.outside_digit
    if dialed.startswith(digit) and dialed[len(digit):] in plan.emergency_numbers:
        return Classified(Kind.EMERGENCY, dialed[len(digit):])
    if dialed.startswith("*"):
        if len(dialed) < 2:
            return Classified(Kind.INVALID, dialed, "a lone '*'")
        return Classified(Kind.FEATURE_CODE, dialed)
    if dialed.startswith("+"):
        if not re.fullmatch(r"\+[0-9]+", dialed):
            return Classified(Kind.INVALID, dialed, "a '+' number must be digits after the '+'")
        return Classified(Kind.OUTSIDE, dialed)
    if dialed.startswith(digit) and len(dialed) > len(digit):
        rest = dialed[len(digit):]
        if re.fullmatch(r"\+?[0-9]+", rest):
            return Classified(Kind.OUTSIDE, rest)
        return Classified(Kind.INVALID, dialed, "outside number with '*' or '#'")
    if is_extension_shape(dialed, plan):
        return Classified(Kind.EXTENSION, dialed)
    return Classified(Kind.INVALID, dialed, "neither an extension nor an outside number")


def translate(number: str, rules: tuple[Translation, ...]) -> str:
    """Apply the first rule whose pattern matches the whole number; unchanged if none does.

    First match wins (not "apply all") so that a site reads its rules like a table, top
    to bottom, and a number can never be rewritten twice.
    """
    for rule in rules:
        match = re.fullmatch(rule.pattern, number)
        if match is not None:
            return match.expand(rule.replacement)
    return number
