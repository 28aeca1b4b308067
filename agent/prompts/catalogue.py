"""The voice prompt catalogue: prompt id -> the English text spoken (or a tone).

This file is the source of the prompt set. ``packaging/prompts/generate.py`` turns every
entry into ``packaging/prompts/en/<id>.wav`` (8 kHz mono G.711 µ-law) with espeak-ng and
sox, and regenerates only the prompts whose entry (or the voice settings) changed: the
content hash of an entry is recorded in ``manifest.json`` beside the files.

Ids are lower-case ``[a-z0-9_]``. The number words ("zero" .. "ninety", "hundred",
"thousand") are ids used as they are by :func:`agent.prompts.say_number`, so they must
keep their names. Texts are written for espeak-ng: "pin", not "PIN" (which it spells
out letter by letter). Phrases meant to be chained (``vm_you_have`` + a number +
``vm_new_messages``) are recorded as separate prompts; the applications chain them.

Adding a prompt: add a line here, run ``make prompts``. No other file changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

__all__ = [
    "CATALOGUE",
    "LANGUAGE",
    "SYNTHESIS",
    "TONES",
    "Tone",
    "all_ids",
    "catalogue_hash",
    "entry_hash",
]

LANGUAGE = "en"

#: How speech is made (packaging/prompts/generate.py). Part of every prompt's content
#: hash: changing a setting regenerates the whole set. ``pipeline`` is bumped when the
#: generator's processing changes in a way that changes the audio.
SYNTHESIS: dict[str, object] = {
    "engine": "espeak-ng",
    "voice": "en-us",
    "speed_wpm": 150,
    "pitch": 50,
    "word_gap_10ms": 0,
    "peak_dbfs": -3.0,
    "lead_in_s": 0.05,
    "tail_s": 0.15,
    "pipeline": 1,
}


@dataclass(frozen=True)
class Tone:
    """A pure tone made in Python, no speech synthesis (the beep "after the tone")."""

    frequency_hz: float
    duration_ms: int
    level_dbfs: float = -10.0


# Digits and numbers: ids are the English words (say_number / say_digits use them).
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    "hundred", "thousand",
)  # fmt: skip
_NUMBERS: dict[str, str] = {w: w for w in _NUMBER_WORDS}

_WORDS: dict[str, str] = {
    "star": "star",
    "pound": "pound",
    "message": "message",
    "messages": "messages",
    "new": "new",
    "saved": "saved",
    "at": "at",
    "extension": "extension",
}

_VOICEMAIL: dict[str, str] = {
    # Logging in.
    "vm_enter_pin": "Please enter your pin, then press pound.",
    "vm_pin_incorrect": "That pin is not correct.",
    "vm_mailbox_locked": "This mailbox is locked. Contact your administrator.",
    "vm_enter_mailbox": "Please enter your mailbox number, then press pound.",
    # Message counts: "You have" <n> "new messages" / "saved messages" / "no messages".
    "vm_you_have": "You have",
    "vm_new_message": "new message",
    "vm_new_messages": "new messages",
    "vm_saved_message": "saved message",
    "vm_saved_messages": "saved messages",
    "vm_no_messages": "no messages.",
    "vm_no_more_messages": "There are no more messages.",
    "vm_and": "and",
    # Menus.
    "vm_main_menu": (
        "Press 1 to listen to your messages, 2 to change your greetings, "
        "3 to change your pin, star to exit."
    ),
    "vm_message_menu": (
        "Press 1 to replay, 2 to save, 3 to delete, 4 for the next message, "
        "5 for the previous message."
    ),
    "vm_first_message": "First message.",
    "vm_next_message": "Next message.",
    "vm_last_message": "Last message.",
    "vm_message_from": "Message from",
    "vm_received_at": "Received at",
    "vm_message_saved": "Message saved.",
    "vm_message_deleted": "Message deleted.",
    # Leaving a message.
    "vm_record_after_tone": (
        "Record your message after the tone. Press pound when you are finished."
    ),
    "vm_mailbox_full": "The mailbox is full.",
    "vm_message_too_short": "Your message was too short, and was not saved.",
    "vm_message_sent": "Your message has been sent.",
    "vm_person_at_extension": "The person at extension",
    "vm_is_not_available": "is not available.",
    "vm_is_on_another_call": "is on another call.",
    "vm_leave_message_after_tone": "Please leave a message after the tone.",
    # Changing the PIN.
    "vm_enter_new_pin": "Enter your new pin, then press pound.",
    "vm_enter_it_again": "Enter it again.",
    "vm_pins_do_not_match": "The pins do not match.",
    "vm_pin_changed": "Your pin has been changed.",
    "vm_pin_too_short": "That pin is too short. Use at least four digits.",
    # Greetings.
    "vm_greetings_menu": (
        "Press 1 to record your unavailable greeting, 2 for your busy greeting, "
        "3 to record your name."
    ),
    "vm_record_greeting_after_tone": (
        "Record your greeting after the tone. Press pound when you are finished."
    ),
    "vm_record_name_after_tone": "Say your name after the tone. Press pound when you are finished.",
    "vm_greeting_review_menu": "Press 1 to keep it, 2 to listen to it, 3 to record it again.",
    "vm_greeting_saved": "Your greeting has been saved.",
    "vm_name_saved": "Your name has been saved.",
}

_ATTENDANT: dict[str, str] = {
    "att_welcome": (
        "Thank you for calling. If you know the extension of the person you are calling, "
        "you may dial it at any time."
    ),
    "att_closed": "Our office is now closed.",
    "att_operator": "For the operator, press 0.",
    "att_dial_by_extension": "Please dial the extension you want.",
    "att_no_such_extension": "That extension does not exist.",
}

_COMMON: dict[str, str] = {
    "please_hold": "Please hold.",
    "invalid_option": "Invalid option.",
    "goodbye": "Goodbye.",
    "please_try_again": "Please try again.",
    "transferring": "Transferring your call.",
    "no_answer": "There is no answer.",
    "number_busy": "The number you have called is busy.",
    "not_in_service": "The number you have called is not in service.",
    "call_not_allowed": "Your call cannot be completed as dialed.",
    "system_error": "Sorry, the system cannot take your call right now. Please try again later.",
}

_ASSIGNER: dict[str, str] = {
    "assign_enter_pin": "Please enter the assigner pin.",
    "assign_enter_extension": "Enter the extension for this phone.",
    "assign_press_1_to_confirm": "Press 1 to confirm.",
    "assign_phone_is_now_extension": "This phone is now extension",
    "assign_no_such_extension": "That extension does not exist.",
    "assign_extension_in_use": "That extension already has a phone.",
}

#: Every spoken prompt: id -> text. Order is the order of the groups above.
CATALOGUE: dict[str, str] = {
    **_NUMBERS,
    **_WORDS,
    **_VOICEMAIL,
    **_ATTENDANT,
    **_COMMON,
    **_ASSIGNER,
}

#: Prompts that are tones, not speech.
TONES: dict[str, Tone] = {
    "beep": Tone(frequency_hz=1000.0, duration_ms=200, level_dbfs=-15.0),
}


def all_ids() -> list[str]:
    """Every prompt id, speech and tones."""
    return [*CATALOGUE, *TONES]


def entry_hash(prompt_id: str, settings: dict[str, object] | None = None) -> str:
    """Content hash of one prompt: its text (or tone) plus the synthesis settings.

    The generator redoes a prompt exactly when this changes.
    """
    if settings is None:
        settings = SYNTHESIS
    if prompt_id in TONES:
        t = TONES[prompt_id]
        entry: object = ["tone", t.frequency_hz, t.duration_ms, t.level_dbfs]
    else:
        entry = ["speech", CATALOGUE[prompt_id]]
    blob = json.dumps([prompt_id, entry, settings], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def catalogue_hash(settings: dict[str, object] | None = None) -> str:
    """Content hash of the whole set (for stamps and for the loader's staleness check)."""
    h = hashlib.sha256()
    for pid in sorted(all_ids()):
        h.update(f"{pid}={entry_hash(pid, settings)}\n".encode())
    return h.hexdigest()


def _check() -> None:
    import re

    overlap = set(CATALOGUE) & set(TONES)
    if overlap:  # pragma: no cover - caught at import in development
        raise AssertionError(f"ids both speech and tone: {sorted(overlap)}")
    for pid in all_ids():
        if not re.fullmatch(r"[a-z0-9_]+", pid):  # pragma: no cover
            raise AssertionError(f"bad prompt id {pid!r}")


_check()
