"""The extension assigner: bind an unassigned phone to an extension from its keypad.

A phone nobody has put in the site yet (it fetched the vendor's default file, or
registered with the site's auto-registration account) dials the assigner number
(70000 by default). The installer enters the assigner PIN, then the extension, then 1
to confirm. The phone's MAC, found from the address the call came from among the
devices that asked the provisioning server for files, is added to the site's
``phones:`` with that extension on its first line; the change is audited, applied like
any site change, and the phone is told to fetch its new file.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Protocol

from agent.apps.runtime import AppCall
from agent.prompts import say_digits

log = logging.getLogger(__name__)

MAX_PIN_TRIES = 3
MAX_EXTENSION_TRIES = 3


class AssignerSite(Protocol):
    """What the assigner needs of the agent (the Agent implements it)."""

    def assigner_pin(self) -> str | None: ...

    def extension_exists(self, extension: str) -> bool: ...

    async def assign_phone(self, source_ip: str, extension: str, user_agent: str,
                           contact: str, now: float) -> str | None:
        """Bind the phone calling from ``source_ip`` to ``extension``; None when done,
        else why not (for the log; the caller hears a generic failure)."""
        ...

    def audit(self, action: str, details: dict[str, object]) -> None: ...


async def extension_assigner(call: AppCall, site: AssignerSite) -> None:
    expected = site.assigner_pin()
    if not expected:
        await call.play("system_error")
        return
    for attempt in range(1, MAX_PIN_TRIES + 1):
        pin = await call.ask("assign_enter_pin", max_digits=16)
        if pin and hmac.compare_digest(pin.encode(), expected.encode()):
            break
        site.audit("assigner.pin_rejected", {"source": call.source_ip, "attempt": attempt})
        log.warning("assigner PIN rejected", extra={"source": call.source_ip})
        if attempt == MAX_PIN_TRIES:
            await call.play("goodbye", interruptible=False)
            return
        await call.play("invalid_option")
    for _ in range(MAX_EXTENSION_TRIES):
        extension = await call.ask("assign_enter_extension", max_digits=5)
        if not extension or not site.extension_exists(extension):
            await call.play("assign_no_such_extension")
            continue
        confirm = await call.ask("assign_press_1_to_confirm", max_digits=1)
        if confirm != "1":
            continue
        problem = await site.assign_phone(call.source_ip, extension, call.user_agent,
                                          call.contact, time.time())
        if problem is not None:
            log.warning("assigner could not bind the phone",
                        extra={"source": call.source_ip, "extension": extension,
                               "why": problem})
            await call.play("system_error", interruptible=False)
            return
        await call.play("assign_phone_is_now_extension", *say_digits(extension),
                        interruptible=False)
        await call.play("goodbye", interruptible=False)
        return
    await call.play("goodbye", interruptible=False)
