"""The voicemail dialogues over the real (encrypted) store, with a scripted caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest

from agent.apps.voicemail import leave_message, mailbox_menu
from agent.store import Store
from agent.voicemail import VoicemailStore

SECOND = 8000  # bytes of mu-law


class ScriptedCall:
    """What the dialogues use of AppCall: prompts are recorded, keys come from a script,
    recordings return canned audio."""

    def __init__(self, keys: Iterable[str] = (), recordings: Iterable[bytes] = ()) -> None:
        self.keys = list(keys)
        self.recordings = list(recordings)
        self.prompts: list[str] = []
        self.played_audio: list[bytes] = []
        self.ended = asyncio.Event()

    async def play(self, *prompt_ids: str, interruptible: bool = True) -> str | None:
        self.prompts.extend(prompt_ids)
        return None

    async def play_audio(self, ulaw: bytes, *, interruptible: bool = True) -> str | None:
        self.played_audio.append(ulaw)
        return None

    async def ask(self, *prompt_ids: str, max_digits: int, terminator: str = "#") -> str:
        self.prompts.extend(prompt_ids)
        if not self.keys:
            self.ended.set()
            return ""
        return self.keys.pop(0)

    async def record(self, *, max_seconds: float, silence_seconds: float = 5.0,
                     stop_digits: str = "#") -> tuple[bytes, str | None]:
        return (self.recordings.pop(0) if self.recordings else b""), "#"


@pytest.fixture
def vm(tmp_path: Path) -> VoicemailStore:
    return VoicemailStore(tmp_path, Store.open(tmp_path))


def _leave(vm: VoicemailStore, call: ScriptedCall, reason: str = "no-answer") -> None:
    asyncio.run(leave_message(call, vm, mailbox="101", reason=reason,  # type: ignore[arg-type]
                              caller="102", caller_name="Bob", max_seconds=180,
                              clock=lambda: 1000.0))


def test_a_message_is_left_after_the_default_greeting(vm: VoicemailStore) -> None:
    call = ScriptedCall(recordings=[b"\x55" * (3 * SECOND)])
    _leave(vm, call)
    assert call.prompts[:2] == ["vm_person_at_extension", "one"]
    assert "vm_is_not_available" in call.prompts and "beep" in call.prompts
    assert call.prompts[-2:] == ["vm_message_sent", "goodbye"]
    [message] = vm.list_messages("101")
    assert (message.caller, message.folder) == ("102", "new")
    assert vm.read_audio("101", message.id) == b"\x55" * (3 * SECOND)
    assert vm.counts("101") == (1, 0)


def test_busy_greeting_of_the_owner_is_played(vm: VoicemailStore) -> None:
    vm.save_greeting("101", "busy", b"\x11" * SECOND)
    call = ScriptedCall(recordings=[b"\x55" * (2 * SECOND)])
    _leave(vm, call, reason="busy")
    assert call.played_audio == [b"\x11" * SECOND]
    assert "vm_person_at_extension" not in call.prompts


def test_a_too_short_message_is_not_kept(vm: VoicemailStore) -> None:
    call = ScriptedCall(recordings=[b"\x55" * 100])
    _leave(vm, call)
    assert "vm_message_too_short" in call.prompts
    assert vm.list_messages("101") == []


def test_a_full_mailbox_is_told_to_the_caller(tmp_path: Path) -> None:
    vm = VoicemailStore(tmp_path, Store.open(tmp_path), max_messages=1)
    _leave(vm, ScriptedCall(recordings=[b"\x55" * (2 * SECOND)]))
    call = ScriptedCall(recordings=[b"\x55" * (2 * SECOND)])
    _leave(vm, call)
    assert call.prompts[0] == "vm_mailbox_full"
    assert len(vm.list_messages("101")) == 1


def test_the_menu_needs_the_pin_then_plays_saves_and_deletes(vm: VoicemailStore) -> None:
    vm.set_pin("101", "2580", actor="admin", role="admin")
    for n in range(2):
        _leave(vm, ScriptedCall(recordings=[bytes([n + 1]) * (2 * SECOND)]))
    # PIN, main menu 1 (listen): first message 2 (save), second 3 (delete), then * exit.
    call = ScriptedCall(keys=["2580", "1", "2", "3", "*"])
    asyncio.run(mailbox_menu(call, vm, mailbox="101", clock=lambda: 1000.0))  # type: ignore[arg-type]
    assert "vm_new_messages" in call.prompts and "two" in call.prompts
    assert call.played_audio == [b"\x01" * (2 * SECOND), b"\x02" * (2 * SECOND)]
    assert "vm_message_saved" in call.prompts and "vm_message_deleted" in call.prompts
    [kept] = vm.list_messages("101")
    assert kept.folder == "saved"
    assert vm.counts("101") == (0, 1)


def test_wrong_pins_end_the_call_and_lock_the_mailbox_in_the_end(vm: VoicemailStore) -> None:
    vm.set_pin("101", "2580", actor="admin", role="admin")
    for _ in range(2):
        call = ScriptedCall(keys=["0000", "1111", "9999"])
        asyncio.run(mailbox_menu(call, vm, mailbox="101", clock=lambda: 1000.0))  # type: ignore[arg-type]
    assert vm.is_locked("101")
    call = ScriptedCall(keys=["2580"])
    asyncio.run(mailbox_menu(call, vm, mailbox="101", clock=lambda: 1000.0))  # type: ignore[arg-type]
    assert "vm_mailbox_locked" in call.prompts


def test_pin_change_from_the_phone(vm: VoicemailStore) -> None:
    vm.set_pin("101", "2580", actor="admin", role="admin")
    call = ScriptedCall(keys=["2580", "3", "8642", "8642", "*"])
    asyncio.run(mailbox_menu(call, vm, mailbox="101", clock=lambda: 1000.0))  # type: ignore[arg-type]
    assert "vm_pin_changed" in call.prompts
    assert vm.check_pin("101", "8642").ok


def test_a_greeting_recorded_from_the_phone(vm: VoicemailStore) -> None:
    vm.set_pin("101", "2580", actor="admin", role="admin")
    call = ScriptedCall(keys=["2580", "2", "1", "1", "*"], recordings=[b"\x33" * (2 * SECOND)])
    asyncio.run(mailbox_menu(call, vm, mailbox="101", clock=lambda: 1000.0))  # type: ignore[arg-type]
    assert vm.greeting("101", "unavailable") == b"\x33" * (2 * SECOND)
