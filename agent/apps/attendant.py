"""The auto attendant: :mod:`dialplan.attendant`'s menu machine, run over an AppCall.

The machine decides; this module only carries its actions out and feeds events back:

- ``Play``: the prompts, through :meth:`AppCall.play`. A Play that ends the action list
  is interruptible, and reports a key (barge-in) or that it finished; one followed by
  more actions ("please hold", then the transfer) is played to its end.
- ``CollectDigits``: wait for one key at a time, with the menu's timeout; silence is a
  ``Timeout``. Extension digits are fed one by one, as the machine expects.
- ``Transfer``: see :class:`AttendantHost`. A number (an extension, a hunt pilot) is a
  blind transfer of the answered caller (``agent.calls.features.transfer_answered``);
  voicemail or another attendant run on the same media, since the caller is answered
  already; a target that refuses gets "not in service" (or "busy") and goodbye.
- ``Hangup``: return; the runtime hangs up.

Direct dialing (a menu's ``dial_by_extension: true``, which dialplan's Menu does not
carry): during such a menu, a key that is not an option and can start an extension
collects the rest of the number; an allowed extension is transferred to, anything else
counts as that invalid key in the machine, so failures are counted in one place.

When the caller hangs up the runtime cancels the coroutine at its next await; nothing
here needs cleaning up then (the machine's state is a value).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container
from datetime import datetime
from typing import Protocol

from agent.apps.runtime import AppCall, Application
from agent.calls.engine import CallControl
from agent.calls.features import transfer_answered
from agent.calls.plan import Plan, Refuse, ToApplication
from dialplan import attendant as att
from dialplan.target import Target

log = logging.getLogger(__name__)

#: The machine's system prompt ids, as the prompt catalogue names them.
SYSTEM_PROMPTS: dict[str, str] = {
    att.INVALID_OPTION: "invalid_option",
    att.NO_INPUT: "please_try_again",
    att.ENTER_EXTENSION: "att_dial_by_extension",
    att.PLEASE_HOLD: "please_hold",
    att.GOODBYE: "goodbye",
}
BUSY_STATUSES = frozenset({486, 600})


class AttendantHost(Protocol):
    """What the attendant needs of call control (see :class:`CallControlHost`)."""

    def now(self) -> datetime:
        """The current time, aware (the schedule converts it to the site's zone)."""
        ...

    def transfer(self, call: AppCall, target: Target) -> Plan | None:
        """Transfer the caller to ``target``: None when it is under way (the application
        is done), else what the target turned out to be (see transfer_answered)."""
        ...

    def application(self, plan: ToApplication) -> Application | None:
        """The voice application for ``plan`` (voicemail, an attendant), or None."""
        ...


class CallControlHost:
    """The agent's AttendantHost: call control, flushed after a transfer."""

    def __init__(self, calls: CallControl, flush: Callable[[], None],
                 applications: Callable[[ToApplication], Application | None]) -> None:
        self.calls = calls
        self.flush = flush
        self.applications = applications

    def now(self) -> datetime:
        return self.calls.env.local_time(time.time())

    def transfer(self, call: AppCall, target: Target) -> Plan | None:
        outcome = transfer_answered(self.calls, call.call, target, time.time())
        self.flush()
        return outcome

    def application(self, plan: ToApplication) -> Application | None:
        return self.applications(plan)


# ---------------------------------------------------------------------------- the app


async def attendant_app(call: AppCall, *, attendant: att.Attendant, host: AttendantHost,
                        direct_dial: frozenset[str] = frozenset()) -> None:
    """Run ``attendant`` for ``call`` until it transfers or hangs up."""
    log.info("attendant answering", extra={"attendant": attendant.name,
                                           "call": call.call.id})
    result = att.step(attendant, att.State(), att.Start(host.now()))
    while True:
        state = result.state
        event: att.Event | None = None
        actions = result.actions
        for index, action in enumerate(actions):
            if isinstance(action, att.Play):
                prompts = _available(call, action.prompts)
                if index == len(actions) - 1:
                    key = await call.play(*prompts)
                    event = att.Digit(key) if key and key in att.DIGITS else att.PromptFinished()
                else:
                    await call.play(*prompts, interruptible=False)
            elif isinstance(action, att.Transfer):
                await _transfer(call, attendant, host, action.target)
                return
            elif isinstance(action, att.Hangup):
                return
            # CollectDigits: the wait below, with the menu's timeout.
        if state.phase is att.Phase.DONE:
            return
        if event is None:
            event = await _key(call, attendant.menu(state.menu).timeout)
        if (isinstance(event, att.Digit) and state.menu in direct_dial
                and state.phase in (att.Phase.PLAYING, att.Phase.COLLECTING)
                and event.digit not in attendant.menu(state.menu).options
                and event.digit in "123456789"):
            number = await _extension(call, attendant, state.menu, event.digit)
            if number is not None:
                await _transfer(call, attendant, host, Target.number(number))
                return
            # Not an extension it may reach: the machine counts the key as invalid.
        result = att.step(attendant, state, event)


async def _key(call: AppCall, timeout: float) -> att.Event:
    """The next key within ``timeout`` seconds, or Timeout. Keys the machine does not
    know (RFC 4733 A-D) are ignored."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        key = await call.read_digits(max_digits=1, terminator="", first_timeout=left)
        if not key:
            break
        if key in att.DIGITS:
            return att.Digit(key)
    return att.Timeout()


async def _extension(call: AppCall, attendant: att.Attendant, menu: str,
                     first: str) -> str | None:
    """Digits after ``first`` until '#', a timeout, the longest extension, or a number
    that is an allowed extension and the start of no longer one. None: not allowed."""
    allowed = attendant.extensions
    timeout = attendant.menu(menu).timeout
    digits = first
    while len(digits) < attendant.extension_digits:
        if digits in allowed and not any(e.startswith(digits) and e != digits for e in allowed):
            break
        event = await _key(call, timeout)
        if not isinstance(event, att.Digit) or event.digit == "#":
            break
        if event.digit == "*":
            return None
        digits += event.digit
    return digits if digits in allowed else None


async def _transfer(call: AppCall, attendant: att.Attendant, host: AttendantHost,
                    target: Target) -> None:
    log.info("attendant transfer", extra={"attendant": attendant.name, "call": call.call.id,
                                          "kind": target.kind.value, "to": target.value})
    outcome = host.transfer(call, target)
    if outcome is None:
        return  # ringing the target; the caller is no longer ours
    if isinstance(outcome, ToApplication):
        app = host.application(outcome)
        if app is None:
            log.warning("attendant destination unavailable",
                        extra={"attendant": attendant.name, "application": outcome.kind,
                               "value": outcome.value})
            await call.play(*_available(call, (att.GOODBYE,)), interruptible=False)
            return
        await app(call)
        return
    status = outcome.status if isinstance(outcome, Refuse) else 403
    log.info("attendant destination refused", extra={"attendant": attendant.name,
                                                     "to": target.value, "status": status})
    prompt = "number_busy" if status in BUSY_STATUSES else "not_in_service"
    await call.play(*_available(call, (prompt, att.GOODBYE)), interruptible=False)


def _available(call: AppCall, prompt_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The machine's ids in the catalogue's names, without those the library lacks (a
    greeting whose recording was never uploaded): a missing prompt is skipped, not a
    failed call."""
    library: object = call.prompts  # a PromptLibrary can say what it has
    out = []
    for pid in prompt_ids:
        name = SYSTEM_PROMPTS.get(pid, pid)
        if isinstance(library, Container) and name not in library:
            log.warning("attendant prompt missing", extra={"prompt": name})
            continue
        out.append(name)
    return tuple(out)
