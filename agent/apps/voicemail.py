"""Voicemail: leaving a message, and the mailbox menu.

Two applications over the same store (agent.voicemail):

- ``leave_message``: a call that reached nobody (busy, no answer, forward, or dialled
  straight into a mailbox) hears the owner's greeting (theirs for busy or unavailable,
  else "The person at extension 1 0 1 is not available"), a tone, and is recorded until
  it presses #, falls silent, hangs up or reaches the length limit.
- ``mailbox_menu``: the owner (``*97``) or anyone with the PIN (``*98``) listens to,
  saves and deletes messages, records greetings and changes the PIN. Wrong PINs lock
  the mailbox (the store counts them, persists the count and audits the lockout).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from agent.apps.runtime import AppCall
from agent.prompts import say_digits, say_number
from agent.voicemail import VoicemailStore

log = logging.getLogger(__name__)

MIN_MESSAGE_SECONDS = 1.0
BYTES_PER_SECOND = 8000  # 8 kHz mu-law
PIN_TRIES = 3  # per call; the store's lockout counts across calls
GREETING_KEYS = {"1": "unavailable", "2": "busy", "3": "name"}


async def leave_message(call: AppCall, store: VoicemailStore, *, mailbox: str, reason: str,
                        caller: str, caller_name: str, max_seconds: float,
                        clock: Callable[[], float]) -> None:
    if sum(store.counts(mailbox)) >= store.max_messages:
        await call.play("vm_mailbox_full", "goodbye", interruptible=False)
        return
    kind = "busy" if reason == "busy" else "unavailable"
    greeting = store.greeting(mailbox, kind)
    if greeting is not None:
        key = await call.play_audio(greeting)
    else:
        name = store.greeting(mailbox, "name")
        if name is not None:
            key = await call.play_audio(name)
        else:
            key = await call.play("vm_person_at_extension", *say_digits(mailbox))
        if key is None:
            key = await call.play("vm_is_on_another_call" if kind == "busy"
                                  else "vm_is_not_available")
    if key is None:
        await call.play("vm_leave_message_after_tone")
    await call.play("beep", interruptible=False)
    audio, _ = await call.record(max_seconds=max_seconds)
    if len(audio) < MIN_MESSAGE_SECONDS * BYTES_PER_SECOND:
        if not call.ended.is_set():
            await call.play("vm_message_too_short", "goodbye", interruptible=False)
        return
    try:
        # Off the event loop: the store fsyncs, and the loop paces everyone's RTP.
        await asyncio.to_thread(store.save_message, mailbox, audio, caller, caller_name,
                                reason)
    except Exception as exc:  # noqa: BLE001 - a full disk or mailbox: tell the caller, log
        log.error("voicemail message not saved", extra={"mailbox": mailbox, "why": str(exc)})
        if not call.ended.is_set():
            await call.play("system_error", interruptible=False)
        return
    if not call.ended.is_set():
        await call.play("vm_message_sent", "goodbye", interruptible=False)


async def mailbox_menu(call: AppCall, store: VoicemailStore, *, mailbox: str | None,
                       clock: Callable[[], float], greeting_seconds: float = 60.0) -> None:
    if mailbox is None:
        mailbox = await call.ask("vm_enter_mailbox", max_digits=5)
        if not mailbox:
            await call.play("goodbye", interruptible=False)
            return
    if not await _login(call, store, mailbox, clock):
        return
    pressed = await _announce_counts(call, store, mailbox)
    while not call.ended.is_set():
        # A key pressed during the announcement is the menu choice.
        choice = pressed or await call.ask("vm_main_menu", max_digits=1)
        pressed = None
        if choice == "1":
            await _listen(call, store, mailbox)
        elif choice == "2":
            await _greetings(call, store, mailbox, greeting_seconds)
        elif choice == "3":
            await _change_pin(call, store, mailbox)
        elif choice in ("*", ""):
            await call.play("goodbye", interruptible=False)
            return
        else:
            await call.play("invalid_option")


async def _login(call: AppCall, store: VoicemailStore, mailbox: str,
                 clock: Callable[[], float]) -> bool:
    for _ in range(PIN_TRIES):
        pin = await call.ask("vm_enter_pin", max_digits=12)
        if call.ended.is_set():
            return False  # a hang-up is not a wrong PIN
        result = await asyncio.to_thread(store.check_pin, mailbox, pin)  # scrypt: ~50 ms
        if getattr(result, "locked", False):
            await call.play("vm_mailbox_locked", "goodbye", interruptible=False)
            return False
        if getattr(result, "ok", False):
            return True
        await call.play("vm_pin_incorrect")
    await call.play("goodbye", interruptible=False)
    return False


async def _announce_counts(call: AppCall, store: VoicemailStore, mailbox: str) -> str | None:
    new, saved = store.counts(mailbox)
    if not new and not saved:
        return await call.play("vm_you_have", "vm_no_messages")
    words = ["vm_you_have"]
    if new:
        words += [*say_number(new), "vm_new_message" if new == 1 else "vm_new_messages"]
    if new and saved:
        words.append("vm_and")
    if saved:
        words += [*say_number(saved), "vm_saved_message" if saved == 1 else "vm_saved_messages"]
    return await call.play(*words)


async def _listen(call: AppCall, store: VoicemailStore, mailbox: str) -> None:
    messages = store.list_messages(mailbox, "new") + store.list_messages(mailbox, "saved")
    index = 0
    while 0 <= index < len(messages) and not call.ended.is_set():
        message = messages[index]
        key = await call.play("vm_first_message" if index == 0 else "vm_next_message")
        if key is None:
            key = await call.play_audio(store.read_audio(mailbox, message.id))
        if key is None:
            key = await call.ask("vm_message_menu", max_digits=1)
        if getattr(message, "folder", "") == "new" and key != "3":
            store.mark_saved(mailbox, message.id)  # heard: no longer new
        if key == "1":
            continue  # replay
        if key == "2":
            await call.play("vm_message_saved")
            index += 1
        elif key == "3":
            store.delete(mailbox, message.id)
            messages.pop(index)
            await call.play("vm_message_deleted")
        elif key == "5":
            index = max(0, index - 1)
        elif key == "*":
            return
        else:
            index += 1
    await call.play("vm_no_more_messages")


async def _greetings(call: AppCall, store: VoicemailStore, mailbox: str,
                     seconds: float) -> None:
    choice = await call.ask("vm_greetings_menu", max_digits=1)
    kind = GREETING_KEYS.get(choice)
    if kind is None:
        return
    while not call.ended.is_set():
        await call.play("vm_record_name_after_tone" if kind == "name"
                        else "vm_record_greeting_after_tone")
        await call.play("beep", interruptible=False)
        audio, _ = await call.record(max_seconds=seconds, silence_seconds=3.0)
        review = await call.ask("vm_greeting_review_menu", max_digits=1)
        if review == "2":
            await call.play_audio(audio)
            review = await call.ask("vm_greeting_review_menu", max_digits=1)
        if review == "3":
            continue
        if len(audio) >= MIN_MESSAGE_SECONDS * BYTES_PER_SECOND:
            await asyncio.to_thread(store.save_greeting, mailbox, kind, audio)
            await call.play("vm_name_saved" if kind == "name" else "vm_greeting_saved")
        return


async def _change_pin(call: AppCall, store: VoicemailStore, mailbox: str) -> None:
    first = await call.ask("vm_enter_new_pin", max_digits=12)
    if len(first) < 4:
        await call.play("vm_pin_too_short")
        return
    second = await call.ask("vm_enter_it_again", max_digits=12)
    if first != second:
        await call.play("vm_pins_do_not_match")
        return
    try:
        await asyncio.to_thread(functools.partial(
            store.set_pin, mailbox, first, actor=f"user {mailbox}", role="user"))
    except ValueError:
        await call.play("invalid_option")  # a weak PIN: the store says why in the log
        return
    await call.play("vm_pin_changed")
