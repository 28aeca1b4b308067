"""Class of restriction: which outside numbers a user may call.

The decision is made on the *translated* number, so one set of prefixes covers every way
a user can dial the same destination. Toll fraud is the threat: a compromised phone or a
forward to an international premium number costs real money, so the unknown case is
refused rather than allowed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ClassOfRestriction(enum.IntEnum):
    """Ordered: a class allows everything the classes below it allow."""

    INTERNAL = 0
    LOCAL = 1
    NATIONAL = 2
    INTERNATIONAL = 3


class Category(enum.Enum):
    """What a number costs to call, from the site's point of view."""

    EMERGENCY = "emergency"
    LOCAL = "local"
    NATIONAL = "national"
    INTERNATIONAL = "international"
    PREMIUM = "premium"


# The class a user needs for each category. Premium-rate numbers are the classic toll
# fraud target, so they need the top class even when they are national numbers.
REQUIRED: dict[Category, ClassOfRestriction] = {
    Category.EMERGENCY: ClassOfRestriction.INTERNAL,
    Category.LOCAL: ClassOfRestriction.LOCAL,
    Category.NATIONAL: ClassOfRestriction.NATIONAL,
    Category.INTERNATIONAL: ClassOfRestriction.INTERNATIONAL,
    Category.PREMIUM: ClassOfRestriction.INTERNATIONAL,
}


@dataclass(frozen=True, slots=True)
class RestrictionRules:
    """The site's prefixes. Defaults are for the North American numbering plan.

    E.164 numbers ("+...") are judged by country code: the home country is national (or
    local with a `local_prefixes` match), any other is international. Numbers that the
    translation rules left without a '+' are judged by the dialing prefixes.
    """

    home_country_code: str = "1"
    local_prefixes: tuple[str, ...] = ()  # E.164 prefixes that count as local, e.g. "+1212"
    international_prefixes: tuple[str, ...] = ("011", "00")
    national_prefixes: tuple[str, ...] = ("1",)
    premium_prefixes: tuple[str, ...] = ("+1900", "+1976", "1900", "1976")

    def __post_init__(self) -> None:
        if not self.home_country_code.isdigit():
            raise ValueError("home country code must be digits")


@dataclass(frozen=True, slots=True)
class RestrictionDecision:
    """Allowed or not, and why: the reason goes to the log and the call record."""

    allowed: bool
    category: Category
    required: ClassOfRestriction
    reason: str


def categorize(number: str, rules: RestrictionRules, emergency: tuple[str, ...]) -> Category:
    """The category of a translated number. Premium is checked before the country code
    so that a premium prefix inside the home country is still premium."""
    if number in emergency:
        return Category.EMERGENCY
    if any(number.startswith(p) for p in rules.premium_prefixes):
        return Category.PREMIUM
    if number.startswith("+"):
        if any(number.startswith(p) for p in rules.local_prefixes):
            return Category.LOCAL
        if number.startswith("+" + rules.home_country_code):
            return Category.NATIONAL
        return Category.INTERNATIONAL
    # Longest prefix first: "00" (international) must win over "0" (national) in Europe.
    prefixed = [(p, Category.INTERNATIONAL) for p in rules.international_prefixes]
    prefixed += [(p, Category.NATIONAL) for p in rules.national_prefixes]
    for prefix, category in sorted(prefixed, key=lambda pc: -len(pc[0])):
        if prefix and number.startswith(prefix):
            return category
    return Category.LOCAL


def decide(
    number: str,
    cor: ClassOfRestriction,
    rules: RestrictionRules,
    emergency: tuple[str, ...],
) -> RestrictionDecision:
    """May a user of class `cor` call `number`? Emergency numbers: always yes."""
    category = categorize(number, rules, emergency)
    required = REQUIRED[category]
    if category is Category.EMERGENCY:
        return RestrictionDecision(True, category, required, "emergency numbers are always allowed")
    if cor >= required:
        return RestrictionDecision(
            True, category, required, f"{category.value} allowed for class {cor.name.lower()}"
        )
    return RestrictionDecision(
        False,
        category,
        required,
        f"{category.value} needs class {required.name.lower()}, caller has {cor.name.lower()}",
    )
