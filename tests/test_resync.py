"""Resync: which phones a site change concerns, and the NOTIFY retries until they fetch."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from agent.listen import parse_listen
from agent.provisioning_map import ProvisioningModel, provisioning_model
from agent.resync import MAX_ATTEMPTS, Resync, changed_phones
from agent.site import parse_site


def _doc() -> dict[str, Any]:
    def user(uid: str, ext: str) -> dict[str, Any]:
        return {"id": uid, "name": uid.title(), "extension": ext,
                "sip": {"username": uid, "password": f"pw-{uid}"}}

    return {
        "site": {"name": "T", "timezone": "UTC", "realm": "pbx.test"},
        "users": [user("ann", "201"), user("ben", "202")],
        "provisioning": {"sip_server": "192.0.2.1"},
        "phones": [
            {"mac": "00:1a:2b:3c:4d:5e", "model": "CP-8841",
             "lines": [{"extension": "201", "label": "Front"}]},
            {"mac": "80:5e:c0:00:00:01", "model": "T46U", "lines": [{"extension": "202"}]},
        ],
    }


def _model(doc: dict[str, Any]) -> ProvisioningModel:
    return provisioning_model(parse_site(doc), [parse_listen("udp:0.0.0.0:5060")],
                              default_host="192.0.2.1")


class Sender:
    def __init__(self, registered: bool = True) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.registered = registered
        self.answer = 200

    def send_resync(self, extension: str, event: str, body: Callable[[str], bytes] | None,
                    on_result: Callable[[int], None]) -> int:
        if not self.registered:
            return 0
        self.sent.append((extension, event, body("call-1@phone") if body else b""))
        on_result(self.answer)
        return 1


def test_only_phones_whose_files_change_are_resynced() -> None:
    old = _doc()
    new = copy.deepcopy(old)
    new["phones"][0]["lines"][0]["label"] = "Reception"
    assert changed_phones(_model(old), _model(new)) == ["001a2b3c4d5e"]
    site_wide = copy.deepcopy(old)
    site_wide["site"]["timezone"] = "Europe/Berlin"  # in every phone's files
    assert sorted(changed_phones(_model(old), _model(site_wide))) == ["001a2b3c4d5e",
                                                                      "805ec0000001"]
    assert changed_phones(_model(old), _model(copy.deepcopy(old))) == []


@pytest.mark.parametrize("index, event, body_has", [
    (1, "check-sync;reboot=false", b""),
    (0, "service-control", b"RegisterCallId={call-1@phone}"),
])
def test_vendor_events(index: int, event: str, body_has: bytes) -> None:
    old, new = _doc(), _doc()
    new["phones"][index]["lines"][0]["label"] = "Changed"
    sender = Sender()
    resync = Resync(sender)
    resync.site_changed(_model(old), _model(new), 100.0)
    resync.handle_timer(100.0)
    [(_, sent_event, body)] = sender.sent
    assert sent_event == event and body_has in body


def test_retries_until_the_phone_fetches_then_stops() -> None:
    old, new = _doc(), _doc()
    new["phones"][1]["lines"][0]["label"] = "Changed"
    sender = Sender()
    resync = Resync(sender)
    resync.site_changed(_model(old), _model(new), 100.0)
    resync.handle_timer(100.0)
    resync.handle_timer(129.0)
    assert len(sender.sent) == 1
    resync.handle_timer(130.0)
    assert len(sender.sent) == 2
    resync.fetched("805ec0000001", 131.0)
    assert resync.pending == {} and resync.done == 1
    resync.handle_timer(1000.0)
    assert len(sender.sent) == 2


def test_a_phone_that_never_fetches_is_reported() -> None:
    old, new = _doc(), _doc()
    new["phones"][1]["lines"][0]["label"] = "Changed"
    sender = Sender(registered=False)
    resync = Resync(sender)
    resync.site_changed(_model(old), _model(new), 0.0)
    now = 0.0
    while (deadline := resync.get_timer()) is not None:
        now = deadline
        resync.handle_timer(now)
    status = resync.status()
    assert status["pending"] == []
    [failed] = status["not_fetched"]
    assert failed["mac"] == "805ec0000001" and failed["attempts"] == MAX_ATTEMPTS
    assert failed["last"] == "not registered"


def test_an_old_fetch_does_not_count() -> None:
    old, new = _doc(), _doc()
    new["phones"][1]["lines"][0]["label"] = "Changed"
    resync = Resync(Sender())
    resync.site_changed(_model(old), _model(new), 100.0)
    resync.fetched("805ec0000001", 99.0)
    assert "805ec0000001" in resync.pending
