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
        self.applied_version = 0

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

    def applied_site_version(self) -> int:
        link = self.agent.cloud
        if link is not None and link.sync is not None:
            version = link.sync.status().get("applied_version")
            if isinstance(version, int):
                return version
        return 0

    def audit(self, action: str, detail: dict[str, Any], actor: str) -> None:
        self.agent.audit(action, detail, actor=actor)

    async def apply_cloud_site(self, site: Site, update: SiteUpdate, author: Author) -> None:
        errors = await self.agent.apply_site(
            site, actor=f"{author.role}:{author.id}",
            origin={"portal_version": update.version, "author_role": author.role,
                    "author_id": author.id})
        if errors:
            raise ApplyFailed(errors)
        self.agent.site_opt_ins_changed()
