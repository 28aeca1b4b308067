"""What the cloud link sees of the running agent (agent.cloud.link.LinkHost).

The link never touches the SIP service or provisioning itself: a site document from the
portal goes through :meth:`agent.main.Agent.apply_site`, exactly like a reloaded file, so
SIP, dial plan and provisioning switch together or not at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent.cloud.portal_client import OptIns, SiteUpdate
from agent.cloud.sync import ApplyFailed, Author
from agent.site import Site
from agent.store import Store
from agent.voicemail import VoicemailStore

if TYPE_CHECKING:
    from agent.main import Agent

__all__ = ["AgentCloudHost", "opt_ins_of"]

log = logging.getLogger(__name__)


#: What a user may change from the phone, as paths under ``users[<id>]``.
PHONE_SETTINGS = ("dnd", "forward.all", "forward.busy", "forward.no_answer")


def _setting(user: Any, path: str) -> Any:
    value = user
    for part in path.split("."):
        value = getattr(value, part)
    return value


def portal_changed_settings(old: Site, new: Site) -> list[tuple[str, str]]:
    """(extension, path) of each phone-settable value the new site changes: there the
    portal's value replaces what the user set from the phone."""
    changed = []
    for user in new.users:
        before = old.user_by_id(user.id)
        for path in PHONE_SETTINGS:
            if before is None or _setting(before, path) != _setting(user, path):
                changed.append((user.extension, path))
    return changed


def opt_ins_of(site: Site) -> OptIns:
    privacy = site.privacy
    return OptIns(
        cdr_upload=privacy.cdr_upload,
        voicemail_backup=privacy.voicemail_backup
        and privacy.voicemail_backup_public_key is not None,
    )


class AgentCloudHost:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    @property
    def store(self) -> Store:  # type: ignore[override]
        assert self.agent.store is not None
        return self.agent.store

    def opt_ins(self) -> OptIns:
        return opt_ins_of(self.agent.site)

    def current_site(self) -> Site:
        return self.agent.site

    def voicemail_store(self) -> VoicemailStore | None:
        return getattr(self.agent.service, "voicemail", None)

    def site_timezone(self) -> str:
        return self.agent.site.site.timezone

    def heartbeat_facts(self) -> dict[str, int]:
        status = self.agent.service.status() if self.agent.service is not None else {}
        return {"registered_phones": int(status.get("bindings", 0)),
                "active_calls": int(status.get("active_calls", 0))}

    def audit(self, action: str, detail: dict[str, Any], actor: str) -> None:
        self.agent.audit(action, detail, actor=actor)

    def attach_phone_changes(self) -> None:
        """Push what users change from their phones (forwarding, DND) to the portal."""
        env = getattr(self.agent.service, "call_env", None)
        if env is not None:
            env.on_user_change = self.phone_change

    def phone_change(self, extension: str, path: str, value: Any) -> None:
        link = self.agent.cloud
        user = self.agent.site.user_by_extension(extension)
        if link is None or link.sync is None or user is None:
            return
        link.sync.queue_change(f"users[{user.id}].{path}", value, "user", user.id)

    async def apply_cloud_site(self, site: Site, update: SiteUpdate, author: Author) -> None:
        before = self.agent.site
        errors = await self.agent.apply_site(
            site, actor=f"{author.role}:{author.id}",
            origin={"portal_version": update.version, "author_role": author.role,
                    "author_id": author.id})
        if errors:
            raise ApplyFailed(errors)
        env = getattr(self.agent.service, "call_env", None)
        if env is not None:
            env.drop_overrides(portal_changed_settings(before, site))
        self.agent.site_opt_ins_changed()
