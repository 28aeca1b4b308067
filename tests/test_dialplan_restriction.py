"""dialplan.restriction: the class-of-restriction matrix, emergency always allowed."""

from __future__ import annotations

import pytest

from dialplan.restriction import (
    Category,
    ClassOfRestriction,
    RestrictionRules,
    categorize,
    decide,
)

INTERNAL, LOCAL, NATIONAL, INTL = (
    ClassOfRestriction.INTERNAL,
    ClassOfRestriction.LOCAL,
    ClassOfRestriction.NATIONAL,
    ClassOfRestriction.INTERNATIONAL,
)
US = RestrictionRules(home_country_code="1", local_prefixes=("+1212",))
DE = RestrictionRules(
    home_country_code="49",
    local_prefixes=("+4930",),
    international_prefixes=("00",),
    national_prefixes=("0",),
    premium_prefixes=("+49900", "+49137", "0900"),
)


EMERGENCY = ("911", "112")

CATEGORIES = [
    ("us-local-e164", US, "+12125551234", Category.LOCAL),
    ("us-national-e164", US, "+13105551234", Category.NATIONAL),
    ("us-international-e164", US, "+442071234567", Category.INTERNATIONAL),
    ("us-premium-e164", US, "+19005551234", Category.PREMIUM),
    ("us-premium-untranslated", US, "19005551234", Category.PREMIUM),
    ("us-011-untranslated", US, "011442071234567", Category.INTERNATIONAL),
    ("us-1-untranslated", US, "13105551234", Category.NATIONAL),
    ("us-7-digit-untranslated", US, "5551234", Category.LOCAL),
    ("us-emergency", US, "911", Category.EMERGENCY),
    # "+1..." must not make "+12..." of another country code national: "+1" vs "+12"
    # cannot clash in E.164, but "+49" vs "+491" can look alike: check the home country.
    ("de-local", DE, "+4930123456", Category.LOCAL),
    ("de-national", DE, "+4989123456", Category.NATIONAL),
    ("de-mobile-national", DE, "+491701234567", Category.NATIONAL),
    ("de-premium-0900", DE, "+499001234567", Category.PREMIUM),
    ("de-premium-untranslated", DE, "09001234567", Category.PREMIUM),
    ("de-00-beats-0", DE, "0033123456789", Category.INTERNATIONAL),
    ("de-0-national", DE, "089123456", Category.NATIONAL),
    ("de-other-country", DE, "+4312345678", Category.INTERNATIONAL),
]


@pytest.mark.parametrize(
    ("rules", "number", "category"), [c[1:] for c in CATEGORIES], ids=[c[0] for c in CATEGORIES]
)
def test_categorize(rules: RestrictionRules, number: str, category: Category) -> None:
    assert categorize(number, rules, EMERGENCY) is category


NUMBERS = {
    Category.EMERGENCY: "911",
    Category.LOCAL: "+12125551234",
    Category.NATIONAL: "+13105551234",
    Category.INTERNATIONAL: "+442071234567",
    Category.PREMIUM: "+19005551234",
}
# The whole matrix: rows are categories, columns the classes, Y = allowed.
MATRIX = {
    #                         INTERNAL LOCAL NATIONAL INTL
    Category.EMERGENCY:      ("Y",     "Y",  "Y",     "Y"),
    Category.LOCAL:          ("N",     "Y",  "Y",     "Y"),
    Category.NATIONAL:       ("N",     "N",  "Y",     "Y"),
    Category.INTERNATIONAL:  ("N",     "N",  "N",     "Y"),
    Category.PREMIUM:        ("N",     "N",  "N",     "Y"),
}
CASES = [
    (category, cor, cell == "Y")
    for category, row in MATRIX.items()
    for cor, cell in zip((INTERNAL, LOCAL, NATIONAL, INTL), row, strict=True)
]


@pytest.mark.parametrize(
    ("category", "cor", "allowed"),
    CASES,
    ids=[f"{c.value}-{cor.name.lower()}-{'allow' if a else 'deny'}" for c, cor, a in CASES],
)
def test_matrix(category: Category, cor: ClassOfRestriction, allowed: bool) -> None:
    verdict = decide(NUMBERS[category], cor, US, EMERGENCY)
    assert verdict.allowed is allowed
    assert verdict.category is category
    assert verdict.reason  # the log and the CDR need it
    if not allowed:
        assert verdict.required > cor
        assert cor.name.lower() in verdict.reason


@pytest.mark.parametrize("number", ["911", "112", "999"], ids=["911", "112", "site-999"])
def test_emergency_always_allowed_even_if_it_looks_premium(number: str) -> None:
    rules = RestrictionRules(premium_prefixes=("9", "1"))
    verdict = decide(number, INTERNAL, rules, ("911", "112", "999"))
    assert verdict.allowed
    assert verdict.category is Category.EMERGENCY
