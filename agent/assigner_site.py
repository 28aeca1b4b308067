"""What the extension assigner changes: the site file, applied like any site change (or,
on a box managed from the portal, the running site plus a change pushed to the portal).

The assigner application (agent.apps.assigner) asks for the PIN and the extension;
this module does the rest for the Agent: find the calling phone's MAC among the
devices that fetched provisioning files from the same address, add the phone to the
site file (validated first, written atomically, the old file restored if the agent
refuses it), apply it, audit it, and tell the phone to fetch its new file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agent.assignment import phone_model, same_mac, with_phone
from agent.atomic import write_atomic
from agent.site import SiteError, parse_document, parse_site, site_document

if TYPE_CHECKING:
    from agent.main import Agent

log = logging.getLogger(__name__)

RECENT_DEVICE = 3600.0  # a device that fetched files this recently may be the caller


class SiteAssigner:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def assigner_pin(self) -> str | None:
        auto = self.agent.site.provisioning.auto_registration
        return None if auto is None else auto.assigner_pin.get_secret_value()

    def extension_exists(self, extension: str) -> bool:
        return any(u.extension == extension for u in self.agent.site.users)

    def audit(self, action: str, details: dict[str, object]) -> None:
        self.agent._audit(action, dict(details), actor="assigner")

    async def assign_phone(self, source_ip: str, extension: str, user_agent: str,
                           contact: str, now: float) -> str | None:
        agent = self.agent
        if agent.store is None:
            return "no store"
        assigned = {p.mac for p in agent.site.phones}
        candidates = [d for d in agent.store.devices()
                      if d.ip == source_ip and d.mac not in assigned
                      and now - d.last_seen <= RECENT_DEVICE]
        if not candidates:
            return f"no unassigned phone fetched files from {source_ip} in the last hour"
        device = max(candidates, key=lambda d: d.last_seen)
        model = phone_model(user_agent, device.vendor, device.model_hint)
        if model is None:
            return f"cannot tell the model of {device.mac}"
        if agent.cloud is not None:
            problem = await self._assign_in_cloud_site(device.mac, model, extension)
            if problem is not None:
                return problem
        else:
            problem = await self._assign_in_site_file(device.mac, model, extension)
            if problem is not None:
                return problem
        self.audit("phone.assigned", {"mac": device.mac, "model": model,
                                      "extension": extension, "source": source_ip})
        log.info("phone assigned", extra={"mac": device.mac, "extension": extension})
        service = agent.service
        if service is not None and hasattr(service, "resync_contact"):
            # The phone is registered (if at all) as the auto-registration account, not
            # yet as its extension: tell it where it called from.
            service.resync_contact(contact, source_ip, device.vendor or "")
        return None

    async def _assign_in_site_file(self, mac: str, model: str, extension: str) -> str | None:
        agent = self.agent
        path = agent.site_path
        original = path.read_bytes()
        try:
            document = parse_document(original.decode("utf-8"))
            updated = with_phone(document, mac, model, extension)
            parse_site(updated)  # every error by path, before anything is written
        except (SiteError, UnicodeDecodeError) as exc:
            return f"the site would not be valid: {exc}"
        write_atomic(path, _serialise(updated, path), path.stat().st_mode & 0o777)
        if not await agent.reload(actor="assigner"):
            write_atomic(path, original, path.stat().st_mode & 0o777)
            return "the agent refused the changed site"
        return None

    async def _assign_in_cloud_site(self, mac: str, model: str, extension: str) -> str | None:
        """The portal owns the site: apply the phone here at once (the installer is at it)
        and push the new phones list to the portal as the admin's change. If the portal
        changed the phones meanwhile, its list wins (docs/portal-api.md, conflict rule)."""
        agent = self.agent
        try:
            updated = with_phone(site_document(agent.site, reveal_secrets=True), mac, model,
                                 extension)
            new_site = parse_site(updated)
        except SiteError as exc:
            return f"the site would not be valid: {exc}"
        if await agent.apply_site(new_site, actor="assigner", origin={"assigner": mac}):
            return "the agent refused the changed site"
        sync = agent.cloud.sync if agent.cloud is not None else None
        if sync is not None:
            # Only the new element goes (no other phone's secrets), keyed by the MAC as the
            # portal's own document spells it when it already lists the phone.
            portal_doc = sync.current.document if sync.current is not None else {}
            key = next((str(p["mac"]) for p in portal_doc.get("phones", [])
                        if isinstance(p, dict) and same_mac(str(p.get("mac", "")), mac)), mac)
            entry = {"mac": key, "model": model, "lines": [{"extension": extension}]}
            sync.queue_change(f"phones[{key}]", entry, "admin", "assigner")
        return None


def _serialise(document: dict[str, Any], path: Path) -> bytes:
    if path.suffix.lower() == ".json":
        return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return ("# Written by edgepbx (extension assigner); comments are not kept.\n"
            + text).encode()
