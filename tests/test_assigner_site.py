"""agent.assigner_site on a box managed from the portal: the phone is applied at once and
only its own entry is pushed to the portal, as the admin's change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.assigner_site import SiteAssigner
from agent.site import Site, parse_site
from agent.store import DeviceSeen, Store

MAC = "805ec0000042"


def doc(phones: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"site": {"name": "T", "timezone": "UTC", "realm": "pbx.test"},
            "users": [{"id": "ann", "name": "Ann", "extension": "201",
                       "sip": {"username": "ann", "password": "pw-ann"}},
                      {"id": "ben", "name": "Ben", "extension": "202",
                       "sip": {"username": "ben", "password": "pw-ben"}}],
            "phones": phones or []}


class FakeAgent:
    def __init__(self, store: Store, portal_doc: dict[str, Any], refuse: bool = False) -> None:
        self.store = store
        self.site = parse_site(portal_doc)
        self.service = None
        self.queued: list[tuple[Any, ...]] = []
        sync = SimpleNamespace(current=SimpleNamespace(document=portal_doc),
                               queue_change=lambda *a: self.queued.append(a))
        self.cloud = SimpleNamespace(sync=sync)
        self.refuse = refuse
        self.applied: list[Site] = []
        self.site_path = Path("/nonexistent/site.yaml")  # never touched in cloud mode

    async def apply_site(self, site: Site, *, actor: str, origin: dict[str, Any]) -> list[str]:
        if self.refuse:
            return ["sip: no"]
        self.applied.append(site)
        self.site = site
        return []

    def _audit(self, action: str, detail: dict[str, Any], actor: str) -> None:
        pass


def seen(store: Store) -> None:
    store.apply_device_events([DeviceSeen(MAC, "yealink", "46", "192.0.2.9", time.time(),
                                          f"{MAC}.cfg")])


def test_a_cloud_box_applies_the_phone_and_pushes_only_its_entry(tmp_path: Path) -> None:
    other = {"mac": "80:5E:C0:00:00:01", "model": "T46U", "http_username": "u",
             "http_password": "secret-pw", "lines": [{"extension": "202"}]}
    with Store.open(tmp_path) as store:
        seen(store)
        agent = FakeAgent(store, doc([other]))
        problem = asyncio.run(SiteAssigner(agent).assign_phone(  # type: ignore[arg-type]
            "192.0.2.9", "201", "Yealink SIP-T46U 66.85.0.5", "sip:x@192.0.2.9", time.time()))
    assert problem is None
    [site] = agent.applied
    assert site.phone_by_mac(MAC) is not None and site.phone_by_mac("805ec0000001") is not None
    [(path, value, role, author)] = agent.queued
    assert path == f"phones[{MAC}]" and (role, author) == ("admin", "assigner")
    assert value == {"mac": MAC, "model": site.phone_by_mac(MAC).model,  # type: ignore[union-attr]
                     "lines": [{"extension": "201"}]}
    assert "secret-pw" not in repr(agent.queued)


def test_a_phone_the_portal_lists_is_keyed_as_the_portal_writes_its_mac(tmp_path: Path) -> None:
    listed = {"mac": "80:5E:C0:00:00:42", "model": "T46U", "lines": [{"extension": "201"}]}
    with Store.open(tmp_path) as store:
        seen(store)
        agent = FakeAgent(store, doc([]))
        agent.cloud.sync.current.document = doc([listed])  # the portal's own spelling
        asyncio.run(SiteAssigner(agent).assign_phone(  # type: ignore[arg-type]
            "192.0.2.9", "201", "Yealink SIP-T46U", "sip:x@192.0.2.9", time.time()))
    [(path, value, _, _)] = agent.queued
    assert path == "phones[80:5E:C0:00:00:42]" and value["mac"] == "80:5E:C0:00:00:42"


def test_a_refused_site_pushes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        seen(store)
        agent = FakeAgent(store, doc(), refuse=True)
        problem = asyncio.run(SiteAssigner(agent).assign_phone(  # type: ignore[arg-type]
            "192.0.2.9", "201", "Yealink SIP-T46U", "sip:x@192.0.2.9", time.time()))
    assert problem == "the agent refused the changed site" and agent.queued == []
