"""Resync: when a site change changes what a phone would download, tell that phone.

After every applied site, each phone's files are rendered from the old and the new
site; a phone whose files differ is sent a SIP NOTIFY at its registered contact:

- Yealink and Polycom: ``Event: check-sync;reboot=false`` (they fetch their files
  again and apply what they can without rebooting);
- Cisco: ``Event: service-control`` with ``action=restart`` and the Call-ID of the
  phone's registration (``RegisterCallId``), which Cisco phones check. A restart is a
  quick SIP re-registration that reloads the configuration, not a power cycle.

A phone is done when it fetches one of its files after the NOTIFY (the provisioning
service reports every completed fetch). Until then the NOTIFY is retried with backoff;
a phone that was told ``MAX_ATTEMPTS`` times and never fetched is reported, in the log
and in ``edgepbx status``. A phone that is not registered is retried too: it will
fetch its files when it boots anyway, and it is reported if it never does.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.provisioning_map import ProvisioningModel
from provisioning import file_for
from provisioning.files import vendor_of
from provisioning.model import Phone

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
RETRY_DELAYS = (30.0, 60.0, 120.0)  # after the 1st, 2nd, 3rd NOTIFY without a fetch
GIVE_UP_AFTER = 300.0  # after the last NOTIFY: reported as not fetched


class NotifySender(Protocol):
    def send_resync(self, extension: str, event: str, body: Callable[[str], bytes] | None,
                    on_result: Callable[[int], None]) -> int:
        """NOTIFY every registered contact of ``extension``; ``body(register_call_id)``
        builds the body per contact. Returns how many were sent."""
        ...


def phone_files(phone: Phone) -> tuple[str, ...]:
    """The files a phone of this vendor reads (its own first)."""
    mac = phone.mac
    vendor = vendor_of(phone)
    if vendor == "cisco":
        return (f"SEP{mac.upper()}.cnf.xml", "dialplan.xml")
    if vendor == "yealink":
        return (f"{mac}.cfg", "y000000000000.cfg")
    if vendor == "polycom":
        return (f"{mac}-edgepbx.cfg", f"{mac}.cfg")
    return ()


def fingerprint(model: ProvisioningModel, phone: Phone) -> str:
    digest = hashlib.sha256()
    for name in phone_files(phone):
        found = file_for(model.site, model.phones, name)
        digest.update(name.encode() + b"\0" + (found[0] if found else b"") + b"\0")
    return digest.hexdigest()


def changed_phones(old: ProvisioningModel | None, new: ProvisioningModel) -> list[str]:
    """MACs of the phones whose files differ between ``old`` and ``new`` (a phone new to
    the site counts: it may be registered already, on the default profile)."""
    out = []
    for mac, phone in new.phones.items():
        before = old.phones.get(mac) if old is not None else None
        if before is None or fingerprint(old, before) != fingerprint(new, phone):  # type: ignore[arg-type]
            out.append(mac)
    return out


@dataclass(slots=True)
class Pending:
    mac: str
    extension: str
    vendor: str
    since: float
    attempts: int = 0
    next_at: float = 0.0
    last_result: str = "not sent yet"
    failed: bool = False
    results: list[int] = field(default_factory=list)


class Resync:
    def __init__(self, sender: NotifySender) -> None:
        self.sender = sender
        self.pending: dict[str, Pending] = {}
        self.done = 0

    def site_changed(self, old: ProvisioningModel | None, new: ProvisioningModel,
                     now: float) -> list[str]:
        """Start resyncing the phones whose files changed; returns their MACs."""
        changed = changed_phones(old, new)
        for mac in changed:
            phone = new.phones[mac]
            if not phone.lines:
                continue
            self.pending[mac] = Pending(mac, phone.lines[0].extension,
                                        vendor_of(phone) or "", since=now, next_at=now)
        for mac in list(self.pending):
            if mac not in new.phones:
                del self.pending[mac]
        if changed:
            log.info("phones to resync", extra={"count": len(changed)})
        return changed

    def fetched(self, mac: str, when: float) -> None:
        entry = self.pending.get(mac)
        if entry is not None and when >= entry.since:
            del self.pending[mac]
            self.done += 1
            log.info("phone fetched its new configuration", extra={"mac": mac})

    def get_timer(self) -> float | None:
        due = [p.next_at for p in self.pending.values() if not p.failed]
        return min(due, default=None)

    def handle_timer(self, now: float) -> None:
        for entry in list(self.pending.values()):
            if entry.failed or entry.next_at > now:
                continue
            if entry.attempts >= MAX_ATTEMPTS:
                entry.failed = True
                log.warning("phone did not fetch its new configuration",
                            extra={"mac": entry.mac, "extension": entry.extension,
                                   "attempts": entry.attempts, "last": entry.last_result})
                continue
            self._send(entry, now)

    def _send(self, entry: Pending, now: float) -> None:
        entry.attempts += 1
        delay = RETRY_DELAYS[min(entry.attempts - 1, len(RETRY_DELAYS) - 1)]
        entry.next_at = now + (delay if entry.attempts < MAX_ATTEMPTS else GIVE_UP_AFTER)

        def result(status: int) -> None:
            entry.results.append(status)
            entry.last_result = f"NOTIFY answered {status}"

        if entry.vendor == "cisco":
            sent = self.sender.send_resync(entry.extension, "service-control",
                                           cisco_restart_body, result)
        else:
            sent = self.sender.send_resync(entry.extension, "check-sync;reboot=false",
                                           None, result)
        if not sent:
            entry.last_result = "not registered"

    def status(self) -> dict[str, Any]:
        return {
            "pending": [{"mac": p.mac, "extension": p.extension, "attempts": p.attempts,
                         "last": p.last_result} for p in self.pending.values() if not p.failed],
            "not_fetched": [{"mac": p.mac, "extension": p.extension, "attempts": p.attempts,
                             "last": p.last_result} for p in self.pending.values() if p.failed],
            "done": self.done,
        }


def cisco_restart_body(register_call_id: str) -> bytes:
    lines = ["action=restart", f"RegisterCallId={{{register_call_id}}}",
             "ConfigVersionStamp={}", "DialplanVersionStamp={}", "SoftkeyVersionStamp={}",
             "FeatureControlVersionStamp={}", "CUCMResult={config_changed}",
             "FirmwareLoadId={}", "LoadServer={}", "LogServer={}", "PPID={}"]
    return ("\r\n".join(lines) + "\r\n").encode()

