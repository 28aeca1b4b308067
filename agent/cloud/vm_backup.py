"""Voicemail backups: each new message, sealed to the customer admin's key, into the outbox.

Only while the site's backup opt-in is on and the admin has set a public key
(``privacy.voicemail_backup`` and ``privacy.voicemail_backup_public_key``). The message is
sealed once, here, with ``x25519-aesgcm-v1`` (agent.cloud.portal_client); the outbox keeps
the sealed bytes and retries with exactly those, so the portal's idempotency by
``backup_id`` holds. Neither the device (after sealing) nor the portal can read it.

Plaintext layout (what the admin gets back from ``open_voicemail_backup``)::

    b"EPVM" 0x01 | 4-byte big-endian length N | N bytes of JSON metadata | WAV file

The metadata has the message's mailbox, id, caller, caller_name, received_at (epoch s),
duration (s), reason, folder and size; the WAV is 8 kHz µ-law, as the phone played it.
``edgepbx cloud restore-backup`` reads it back.

Known gap: a message saved while the agent is not running the link (or in the instant before
a crash) is not backed up later; the backup covers messages that arrive while it runs.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from agent.cloud.outbox import Outbox
from agent.cloud.portal_client import seal_voicemail_backup
from agent.prompts.wavfile import write_wav
from agent.site import Site
from agent.store import VoicemailMessageRow
from agent.voicemail import VoicemailStore
from agent.voicemail.arrivals import NewMessageWatch

__all__ = ["VoicemailBackups", "backup_id_for", "pack_backup", "unpack_backup"]

log = logging.getLogger(__name__)

MAGIC = b"EPVM\x01"
SAMPLE_RATE = 8000


def backup_id_for(serial: str, info: VoicemailMessageRow) -> str:
    return f"{serial}.{info.mailbox}.{info.id}"


def pack_backup(info: VoicemailMessageRow, audio_ulaw: bytes) -> bytes:
    meta = json.dumps(asdict(info), separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(meta)) + meta + write_wav(audio_ulaw,
                                                                   sample_rate=SAMPLE_RATE)


def unpack_backup(plaintext: bytes) -> tuple[dict[str, Any], bytes]:
    """(metadata, WAV bytes). ValueError if it is not a voicemail backup."""
    if not plaintext.startswith(MAGIC) or len(plaintext) < len(MAGIC) + 4:
        raise ValueError("not an edgepbx voicemail backup (bad magic)")
    (size,) = struct.unpack_from(">I", plaintext, len(MAGIC))
    start = len(MAGIC) + 4
    if start + size > len(plaintext):
        raise ValueError("truncated voicemail backup")
    meta = json.loads(plaintext[start:start + size])
    if not isinstance(meta, dict):
        raise ValueError("voicemail backup metadata is not an object")
    return meta, plaintext[start + size:]


class VoicemailBackups:
    """Subscribes to the voicemail store; queues a sealed backup of each new message."""

    def __init__(self, voicemail: VoicemailStore, outbox: Outbox, serial: str,
                 site: Callable[[], Site], on_queued: Callable[[], None]) -> None:
        self.voicemail = voicemail
        self.outbox = outbox
        self.serial = serial
        self._site = site
        self._on_queued = on_queued
        self._arrivals = NewMessageWatch(voicemail, self.back_up)
        self.queued = 0
        self.failures = 0

    def attach(self) -> None:
        self._arrivals.attach()

    def detach(self) -> None:
        self._arrivals.detach()

    def back_up(self, info: VoicemailMessageRow) -> bool:
        privacy = self._site().privacy
        key = privacy.voicemail_backup_public_key
        if not privacy.voicemail_backup or key is None:
            return False
        try:
            audio = self.voicemail.read_audio(info.mailbox, info.id)
            sealed = seal_voicemail_backup(key, backup_id_for(self.serial, info), info.mailbox,
                                           pack_backup(info, audio))
            self.outbox.enqueue_voicemail_backup(sealed)
        except Exception as exc:  # noqa: BLE001 - a hook: never break the voicemail save
            self.failures += 1
            log.error("voicemail backup not queued", extra={
                "mailbox": info.mailbox, "message_id": info.id, "error": str(exc)})
            return False
        self.queued += 1
        log.info("voicemail backup queued", extra={"mailbox": info.mailbox,
                                                   "message_id": info.id,
                                                   "bytes": len(sealed.data)})
        self._on_queued()
        return True
