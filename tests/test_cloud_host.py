"""agent.cloud_host: what the cloud link sees of the agent, and the phone/portal settings
hand-over (a user's phone change goes to the portal; the portal's later change wins)."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from agent.cloud_host import AgentCloudHost, opt_ins_of, portal_changed_settings
from agent.site import parse_site

KEY = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="


def doc() -> dict[str, Any]:
    def user(uid: str, ext: str) -> dict[str, Any]:
        return {"id": uid, "name": uid.title(), "extension": ext,
                "sip": {"username": uid, "password": f"pw-{uid}"}}

    return {"site": {"name": "T", "timezone": "UTC", "realm": "pbx.test"},
            "users": [user("ann", "201"), user("ben", "202")]}


def with_changes(**users: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(doc())
    for entry in d["users"]:
        entry.update(users.get(entry["id"], {}))
    return d


@pytest.mark.parametrize(("new", "expected"), [
    (doc(), []),
    (with_changes(ann={"dnd": True}), [("201", "dnd")]),
    (with_changes(ann={"forward": {"all": "202"}}, ben={"forward": {"busy": "201"}}),
     [("201", "forward.all"), ("202", "forward.busy")]),
    (with_changes(ann={"name": "Annie", "speed_dials": {"1": "202"}}), []),
])
def test_portal_changed_settings(new: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert portal_changed_settings(parse_site(doc()), parse_site(new)) == expected


def test_a_new_user_s_settings_all_come_from_the_portal() -> None:
    new = doc()
    new["users"].append({"id": "cat", "name": "Cat", "extension": "203",
                         "sip": {"username": "cat", "password": "pw-cat"}})
    changed = portal_changed_settings(parse_site(doc()), parse_site(new))
    assert [c for c in changed if c[0] == "203"] == [
        ("203", "dnd"), ("203", "forward.all"), ("203", "forward.busy"),
        ("203", "forward.no_answer")]


def test_opt_ins_need_the_switch_and_for_backups_the_key() -> None:
    d = doc()
    off = opt_ins_of(parse_site(d))
    assert not off.cdr_upload and not off.voicemail_backup
    d["privacy"] = {"cdr_upload": True, "voicemail_backup": True,
                    "voicemail_backup_public_key": KEY}
    on = opt_ins_of(parse_site(d))
    assert on.cdr_upload and on.voicemail_backup


def test_a_phone_change_is_queued_for_the_portal_as_the_user() -> None:
    queued: list[tuple[Any, ...]] = []
    sync = SimpleNamespace(queue_change=lambda *a: queued.append(a))
    agent = SimpleNamespace(site=parse_site(doc()), cloud=SimpleNamespace(sync=sync),
                            service=None)
    host = AgentCloudHost(agent)  # type: ignore[arg-type]
    host.phone_change("201", "forward.all", "202")
    host.phone_change("999", "dnd", True)  # not a user of this site: nothing
    assert queued == [("users[ann].forward.all", "202", "user", "ann")]
