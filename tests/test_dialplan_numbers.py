"""dialplan.numbers: classification of dial strings and translation rules, as tables."""

from __future__ import annotations

import pytest

from dialplan.numbers import Kind, NumberingPlan, Translation, classify, translate

US = NumberingPlan()
# A German site: outside digit 0, emergency 112 only, 4-digit extensions max.
DE = NumberingPlan(outside_digit="0", emergency_numbers=("112", "110"), extension_max_length=4)

CLASSIFY = [
    # (id, plan, dialed, kind, number)
    ("ext-3", US, "101", Kind.EXTENSION, "101"),
    ("ext-5", US, "12345", Kind.EXTENSION, "12345"),
    ("ext-too-short", US, "12", Kind.INVALID, "12"),
    ("ext-too-long", US, "123456", Kind.INVALID, "123456"),
    ("ext-leading-zero", US, "0123", Kind.INVALID, "0123"),
    ("feature", US, "*72", Kind.FEATURE_CODE, "*72"),
    ("feature-with-arg", US, "*721001", Kind.FEATURE_CODE, "*721001"),
    ("feature-double-star", US, "**1001", Kind.FEATURE_CODE, "**1001"),
    ("lone-star", US, "*", Kind.INVALID, "*"),
    ("outside", US, "95551234", Kind.OUTSIDE, "5551234"),
    ("outside-plus", US, "9+4930123456", Kind.OUTSIDE, "+4930123456"),
    ("plus-direct", US, "+4930123456", Kind.OUTSIDE, "+4930123456"),
    ("plus-with-star", US, "+49*1", Kind.INVALID, "+49*1"),
    ("plus-alone", US, "+", Kind.INVALID, "+"),
    ("plus-in-the-middle", US, "12+3", Kind.INVALID, "12+3"),
    ("outside-plus-alone", US, "9+", Kind.INVALID, "9+"),
    ("outside-with-hash", US, "9555#", Kind.INVALID, "9555#"),
    ("outside-digit-alone", US, "9", Kind.INVALID, "9"),
    ("emergency-911", US, "911", Kind.EMERGENCY, "911"),
    ("emergency-112", US, "112", Kind.EMERGENCY, "112"),
    ("emergency-9911", US, "9911", Kind.EMERGENCY, "911"),
    ("emergency-9112", US, "9112", Kind.EMERGENCY, "112"),
    ("de-emergency-110", DE, "110", Kind.EMERGENCY, "110"),
    ("de-emergency-0112", DE, "0112", Kind.EMERGENCY, "112"),
    ("de-911-is-an-extension", DE, "911", Kind.EXTENSION, "911"),
    ("de-outside", DE, "0030123456", Kind.OUTSIDE, "030123456"),
    ("de-5-digits-too-long", DE, "12345", Kind.INVALID, "12345"),
    ("empty", US, "", Kind.INVALID, ""),
    ("letters", US, "alice", Kind.INVALID, "alice"),
    ("unicode-digits", US, "١٢٣", Kind.INVALID, "١٢٣"),
    ("too-long", US, "9" + "1" * 40, Kind.INVALID, "9" + "1" * 40),
]


@pytest.mark.parametrize(
    ("plan", "dialed", "kind", "number"),
    [c[1:] for c in CLASSIFY],
    ids=[c[0] for c in CLASSIFY],
)
def test_classify(plan: NumberingPlan, dialed: str, kind: Kind, number: str) -> None:
    result = classify(dialed, plan)
    assert (result.kind, result.number) == (kind, number)


NANP_RULES = (
    Translation(r"([2-9]\d{9})", r"+1\1"),  # 10-digit national
    Translation(r"1([2-9]\d{9})", r"+1\1"),  # 1 + 10 digits
    Translation(r"011(\d+)", r"+\1"),  # international access
    Translation(r"([2-9]\d{6})", r"+1212\1"),  # 7-digit local: home area code
)
DE_RULES = (
    Translation(r"00(\d+)", r"+\1"),
    Translation(r"0([1-9]\d+)", r"+49\1"),
    Translation(r"(?P<local>[1-9]\d{3,8})", r"+4930\g<local>"),
)

TRANSLATE = [
    ("nanp-10-digit", NANP_RULES, "2125551234", "+12125551234"),
    ("nanp-1-plus-10", NANP_RULES, "12125551234", "+12125551234"),
    ("nanp-011", NANP_RULES, "011442071234567", "+442071234567"),
    ("nanp-7-digit-local", NANP_RULES, "5551234", "+12125551234"),
    ("nanp-no-match-unchanged", NANP_RULES, "411", "411"),
    ("nanp-e164-unchanged", NANP_RULES, "+33123456789", "+33123456789"),
    ("de-international-before-national", DE_RULES, "0033123456789", "+33123456789"),
    ("de-national", DE_RULES, "030123456", "+4930123456"),
    ("de-local-named-group", DE_RULES, "123456", "+4930123456"),
    ("first-match-wins", (Translation(r"(\d+)", r"A\1"), Translation(r"(\d+)", r"B\1")), "5", "A5"),
    ("full-match-not-search", (Translation(r"55", "X"),), "5551", "5551"),
    ("no-rules", (), "2125551234", "2125551234"),
]


@pytest.mark.parametrize(
    ("rules", "number", "expected"), [c[1:] for c in TRANSLATE], ids=[c[0] for c in TRANSLATE]
)
def test_translate(rules: tuple[Translation, ...], number: str, expected: str) -> None:
    assert translate(number, rules) == expected


@pytest.mark.parametrize(
    ("pattern", "replacement"),
    [("(", "x"), (r"(\d)", r"\2"), (r"(\d)", r"\g<name>")],
    ids=["bad-regex", "unknown-group-number", "unknown-group-name"],
)
def test_bad_translation_rejected_when_built(pattern: str, replacement: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - re.error or ValueError
        Translation(pattern, replacement)


@pytest.mark.parametrize(
    "kwargs",
    [{"outside_digit": "99"}, {"outside_digit": "*"}, {"emergency_numbers": ("9-1-1",)},
     {"extension_min_length": 6}],
    ids=["two-digit-outside", "star-outside", "dashed-emergency", "min-above-max"],
)
def test_bad_plan_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        NumberingPlan(**kwargs)  # type: ignore[arg-type]
