"""The extension assigner's site change: model detection and the new document."""

from __future__ import annotations

import pytest

from agent.assignment import model_from_user_agent, phone_model, with_phone


@pytest.mark.parametrize("user_agent, model", [
    ("Cisco-CP8841/14.2.1", "CP-8841"),
    ("Cisco-CP7821/12.8.1", "CP-7821"),
    ("Yealink SIP-T46U 108.86.0.20", "T46"),
    ("PolycomVVX-VVX_450-UA/6.4.0.8810", "VVX 450"),
    ("baresip v1.0.0 (x86_64/linux)", None),
    ("", None),
])
def test_model_from_user_agent(user_agent: str, model: str | None) -> None:
    found = model_from_user_agent(user_agent)
    assert found == model or (model is not None and found is not None
                              and found.replace(" ", "") == model.replace(" ", ""))


def test_phone_model_falls_back_to_the_vendor() -> None:
    assert phone_model("", "cisco", None) == "CP-8841"
    assert phone_model("", None, None) is None


def test_with_phone_adds_or_moves_the_phone() -> None:
    doc = {"phones": [{"mac": "00:1A:2B:3C:4D:5E", "model": "CP-8841",
                       "lines": [{"extension": "101"}]}]}
    out = with_phone(doc, "001a2b3c4d5e", "CP-8841", "102")
    assert out["phones"] == [{"mac": "001a2b3c4d5e", "model": "CP-8841",
                              "lines": [{"extension": "102"}]}]
    assert doc["phones"][0]["lines"][0]["extension"] == "101"  # the input is not changed
    out = with_phone({}, "805ec0000001", "T46U", "103")
    assert out["phones"][0]["mac"] == "805ec0000001"
