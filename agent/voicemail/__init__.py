"""Voicemail storage: mailboxes, messages, greetings, PINs and MWI counts.

The voicemail *application* (the call dialogue) sits on top of :class:`VoicemailStore`;
see :mod:`agent.voicemail.store` for the on-disk layout and the crash-safety rules,
:mod:`agent.voicemail.sealed` for the AES-256-GCM file format and
:mod:`agent.voicemail.pin` for the PIN policy and verifier. Audio is 8 kHz µ-law codes.
"""

from __future__ import annotations

from .store import (
    FOLDERS,
    GREETING_KINDS,
    REASONS,
    BadMailbox,
    ChangeHook,
    CorruptAudio,
    GreetingInfo,
    MailboxFull,
    MessageInfo,
    MessageTooLong,
    NoSuchMessage,
    PinResult,
    RecoveryReport,
    StorageError,
    VoicemailError,
    VoicemailStore,
    WeakPin,
)

__all__ = [
    "FOLDERS",
    "GREETING_KINDS",
    "REASONS",
    "BadMailbox",
    "ChangeHook",
    "CorruptAudio",
    "GreetingInfo",
    "MailboxFull",
    "MessageInfo",
    "MessageTooLong",
    "NoSuchMessage",
    "PinResult",
    "RecoveryReport",
    "StorageError",
    "VoicemailError",
    "VoicemailStore",
    "WeakPin",
]
