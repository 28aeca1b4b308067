"""Voicemail backups (agent.cloud.vm_backup) and ``edgepbx cloud restore-backup``.

The unit tests use a real VoicemailStore and a real Outbox over one temporary Store. The end
to end test uploads through the Uploader to the reference portal (tests/portal, in-process
threads, loopback mutual TLS; "the tunnel's inner address" is 127.0.0.1), downloads the blob
through the portal's admin API as the customer admin would, and decrypts it with the CLI.

The reference portal is imported as ``portal``: ``tests.portal`` is shadowed by sippy's
top-level ``tests`` package in this venv (tests/portal/README.md).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import http.client
import json
import math
import stat
import struct
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.cli import main as cli_main
from agent.cloud.identity import DeviceIdentity
from agent.cloud.outbox import KIND_VOICEMAIL_BACKUP, Backoff, Outbox, Uploader
from agent.cloud.portal_client import (
    OptIns,
    PortalClient,
    open_voicemail_backup,
    seal_voicemail_backup,
)
from agent.cloud.vm_backup import (
    MAGIC,
    VoicemailBackups,
    backup_id_for,
    pack_backup,
    unpack_backup,
)
from agent.prompts.wavfile import WAVE_FORMAT_MULAW, read_wav, write_wav
from agent.site import Site, parse_site
from agent.store import Store, VoicemailMessageRow
from agent.voicemail import VoicemailStore
from sipstack.media.g711 import ulaw_encode

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
from portal import Running, make_pki, start  # noqa: E402

INNER = "127.0.0.1"
SERIAL = "5f0c8a52-7d1e-4c1b-9a57-3f2d0e6b1c44"
ADMIN_KEY = X25519PrivateKey.generate()
ADMIN_PUBLIC = base64.b64encode(ADMIN_KEY.public_key().public_bytes_raw()).decode()

DOC: dict[str, Any] = {
    "site": {"name": "Acme", "timezone": "Europe/Berlin", "realm": "pbx.acme.test"},
    "users": [{"id": "ann", "name": "Ann", "extension": "201",
               "sip": {"username": "ann", "password": "ann-secret-201x"}}],
}


def site(backup: bool, key: str | None = ADMIN_PUBLIC) -> Site:
    doc = copy.deepcopy(DOC)
    doc["privacy"] = {"voicemail_backup": backup}
    if key is not None:
        doc["privacy"]["voicemail_backup_public_key"] = key
    return parse_site(doc)


def tone(seconds: float, freq: float = 440.0) -> bytes:
    n = int(seconds * 8000)
    pcm = b"".join(int(8000 * math.sin(2 * math.pi * freq * i / 8000)).to_bytes(
        2, "little", signed=True) for i in range(n))
    return ulaw_encode(pcm)


AUDIO = tone(0.5)


def row(**over: Any) -> VoicemailMessageRow:
    fields: dict[str, Any] = dict(
        id="00112233aabbccdd", mailbox="201", caller="0301234567", caller_name="Bob Müller",
        received_at=1_800_000_000.5, duration=0.5, folder="new", reason="busy", size=4000)
    fields.update(over)
    return VoicemailMessageRow(**fields)


# ---------------------------------------------------------------------- the plaintext format


def test_pack_unpack_round_trip() -> None:
    info = row()
    packed = pack_backup(info, AUDIO)
    assert packed.startswith(MAGIC)
    meta, wav = unpack_backup(packed)
    assert meta == asdict(info)
    assert meta["caller_name"] == "Bob Müller" and meta["received_at"] == 1_800_000_000.5
    parsed = read_wav(wav)
    assert (parsed.format_tag, parsed.channels, parsed.sample_rate) == (WAVE_FORMAT_MULAW, 1,
                                                                        8000)
    assert parsed.data == AUDIO
    assert wav == write_wav(AUDIO, sample_rate=8000)


def test_backup_id_names_serial_mailbox_and_message() -> None:
    assert backup_id_for(SERIAL, row()) == f"{SERIAL}.201.00112233aabbccdd"


@pytest.mark.parametrize(("blob", "message"), [
    (b"", "bad magic"),
    (b"RIFF....WAVEfmt ", "bad magic"),
    (b"EPVM\x02" + struct.pack(">I", 2) + b"{}", "bad magic"),  # another version
    (MAGIC + b"\x00\x00", "bad magic"),  # cut inside the length
    (MAGIC + struct.pack(">I", 100) + b'{"id": "x"}', "truncated"),
    (pack_backup(row(), AUDIO)[:40], "truncated"),
    (MAGIC + struct.pack(">I", 2) + b"[]", "not an object"),
])
def test_unpack_refuses_what_is_not_a_backup(blob: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unpack_backup(blob)


def test_unpack_refuses_broken_metadata() -> None:
    with pytest.raises(ValueError):
        unpack_backup(MAGIC + struct.pack(">I", 3) + b"{x}")
    with pytest.raises(ValueError):
        unpack_backup(MAGIC + struct.pack(">I", 2) + b"\xff\xfe")


# ---------------------------------------------------------------------- queueing


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Box:
    """A voicemail store and an outbox over one store, with a switchable site."""

    def __init__(self, state: Path) -> None:
        self.clock = Clock()
        self.store = Store.open(state)
        self.vm = VoicemailStore(state, self.store, clock=self.clock)
        self.outbox = Outbox(self.store, clock=self.clock)
        self.site: Any = site(True)
        self.pokes = 0
        self.backups = VoicemailBackups(self.vm, self.outbox, SERIAL, lambda: self.site,
                                        self.poked)

    def poked(self) -> None:
        self.pokes += 1

    def queued(self) -> list[tuple[str, bytes]]:
        rows = self.store.outbox_due(KIND_VOICEMAIL_BACKUP, now=float("inf"), limit=1000)
        return [(r.item_key, r.payload) for r in rows]


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path / "state")
    yield b
    b.backups.detach()
    b.store.close()


def opened(item_key: str, payload: bytes) -> tuple[str, str, dict[str, Any], bytes]:
    """(backup id, mailbox, metadata, µ-law audio) of a queued backup, opened with the
    admin's private key."""
    backup_id = item_key.removeprefix("vmb:")
    mailbox, _, sealed = payload.partition(b"\0")
    plaintext = open_voicemail_backup(ADMIN_KEY, backup_id, mailbox.decode(), sealed)
    meta, wav = unpack_backup(plaintext)
    return backup_id, mailbox.decode(), meta, read_wav(wav).data


def test_a_message_saved_with_the_opt_in_on_is_queued_sealed(box: Box) -> None:
    box.backups.attach()
    info = box.vm.save_message("201", AUDIO, caller="0301234567", caller_name="Bob",
                               reason="no-answer")
    [(key, payload)] = box.queued()
    assert key == f"vmb:{SERIAL}.201.{info.id}"
    assert AUDIO not in payload  # sealed: neither the portal nor the box can read it
    backup_id, mailbox, meta, audio = opened(key, payload)
    assert (backup_id, mailbox) == (f"{SERIAL}.201.{info.id}", "201")
    assert meta == asdict(info)
    assert audio == AUDIO
    assert (box.backups.queued, box.backups.failures, box.pokes) == (1, 0, 1)
    # Moving it to "saved" changes the mailbox again: it is not backed up twice.
    box.vm.mark_saved("201", info.id)
    assert len(box.queued()) == 1 and box.backups.queued == 1


def test_the_sealed_bytes_are_bound_to_id_and_mailbox(box: Box) -> None:
    box.backups.attach()
    info = box.vm.save_message("201", AUDIO)
    [(key, payload)] = box.queued()
    sealed = payload.partition(b"\0")[2]
    with pytest.raises(ValueError, match="authenticate"):
        open_voicemail_backup(ADMIN_KEY, f"{SERIAL}.201.{info.id}", "202", sealed)
    with pytest.raises(ValueError, match="authenticate"):
        open_voicemail_backup(ADMIN_KEY, f"{SERIAL}.201.ffffffffffffffff", "201", sealed)
    with pytest.raises(ValueError):
        open_voicemail_backup(X25519PrivateKey.generate(), key[4:], "201", sealed)


@pytest.mark.parametrize("privacy", [
    "off",  # the opt-in is off (with or without a key)
    "off-no-key",
    "no-key",  # on, but no key: only possible for a site object built without validation
])
def test_nothing_is_queued_without_the_opt_in_and_a_key(box: Box, privacy: str) -> None:
    if privacy == "off":
        box.site = site(False)
    elif privacy == "off-no-key":
        box.site = site(False, key=None)
    else:
        box.site = SimpleNamespace(privacy=SimpleNamespace(
            voicemail_backup=True, voicemail_backup_public_key=None))
    box.backups.attach()
    box.vm.save_message("201", AUDIO)
    assert box.queued() == [] and box.pokes == 0
    assert (box.backups.queued, box.backups.failures) == (0, 0)


def test_the_opt_in_is_read_for_each_message(box: Box) -> None:
    box.backups.attach()
    box.site = site(False)
    box.vm.save_message("201", AUDIO)
    box.site = site(True)
    second = box.vm.save_message("201", tone(0.2))
    assert [k for k, _ in box.queued()] == [f"vmb:{SERIAL}.201.{second.id}"]


def test_only_messages_saved_while_attached_are_backed_up(box: Box) -> None:
    before = box.vm.save_message("201", AUDIO)
    box.clock.t += 10
    box.backups.attach()
    box.clock.t += 10
    during = box.vm.save_message("201", tone(0.3))
    box.backups.detach()
    box.vm.save_message("201", tone(0.4))
    assert [k for k, _ in box.queued()] == [f"vmb:{SERIAL}.201.{during.id}"]
    assert before.id != during.id


def test_a_sealing_failure_is_counted_and_never_breaks_the_save(
    box: Box, caplog: pytest.LogCaptureFixture,
) -> None:
    box.site = SimpleNamespace(privacy=SimpleNamespace(
        voicemail_backup=True, voicemail_backup_public_key="not-a-key"))
    box.backups.attach()
    info = box.vm.save_message("201", AUDIO)
    assert box.vm.read_audio("201", info.id) == AUDIO  # the message itself is safe
    assert box.queued() == [] and box.pokes == 0
    assert (box.backups.queued, box.backups.failures) == (0, 1)
    assert any(r.getMessage() == "voicemail backup not queued" for r in caplog.records)


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("portal")
    running = start(data, make_pki(data / "pki", ips=[INNER], hostnames=["localhost"]))
    try:
        yield running
    finally:
        running.stop()


def enroll(running: Running, state_dir: Path) -> DeviceIdentity:
    """Create the device at the portal and enroll it (the portal's own /v1/enroll logic)."""
    ident = DeviceIdentity.load_or_create(state_dir)
    portal = running.portal
    token = portal.create_device(ident.serial, None, "admin", "test")["claim_token"]
    issued = portal.enroll({"claim_token": token, "csr_pem": ident.csr_pem()})
    ident.store_certificate(issued["certificate_pem"], issued["ca_chain_pem"])
    return ident


def admin_get(running: Running, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", running.ports["admin"], timeout=10)
    try:
        conn.request("GET", path, headers={"X-Portal-Role": "admin"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def restore(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = cli_main(["cloud", "restore-backup", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_end_to_end_backup_upload_download_and_restore(
    live: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    ident = enroll(live, state)
    box = Box(state)
    try:
        backups = VoicemailBackups(box.vm, box.outbox, ident.serial, lambda: box.site,
                                   box.poked)
        backups.attach()
        info = box.vm.save_message("201", AUDIO, caller="0301234567", caller_name="Bob",
                                   reason="busy")
        backup_id = f"{ident.serial}.201.{info.id}"
        assert [k for k, _ in box.queued()] == [f"vmb:{backup_id}"]
        on = OptIns(voicemail_backup=True)

        def client() -> PortalClient:
            return PortalClient.from_identity(ident, f"https://{INNER}:{live.ports['device']}",
                                              inner_address=INNER, opt_ins=lambda: on)

        up = Uploader(box.outbox, client, opt_ins=lambda: on, backoff=Backoff(base=0.01))
        assert asyncio.run(up.drain_once()) == 1
        assert box.queued() == [] and up.delivered == {"voicemail_backup": 1}
        backups.detach()
    finally:
        box.store.close()

    # The customer admin lists and downloads it from the portal ...
    status, _, body = admin_get(live, f"/api/devices/{ident.serial}/voicemail-backups")
    assert status == 200
    [listed] = json.loads(body)["backups"]
    assert (listed["backup_id"], listed["mailbox"], listed["encryption"]) == (
        backup_id, "201", "x25519-aesgcm-v1")
    status, headers, blob = admin_get(
        live, f"/api/devices/{ident.serial}/voicemail-backups/{backup_id}")
    assert status == 200 and headers["x-edgepbx-mailbox"] == "201"
    assert AUDIO not in blob
    blob_path = tmp_path / "backup.bin"
    blob_path.write_bytes(blob)

    # ... and decrypts it on their own machine, with a PEM or a base64 raw key.
    pem = tmp_path / "admin.pem"
    pem.write_bytes(ADMIN_KEY.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    out_wav = tmp_path / "restored.wav"
    code, out, err = restore(capsys, blob_path, "--key", pem, "--backup-id", backup_id,
                             "--mailbox", "201", "-o", out_wav)
    assert code == 0, err
    printed = json.loads(out)
    assert printed == {"audio": str(out_wav), **asdict(info)}
    assert printed["caller"] == "0301234567" and printed["reason"] == "busy"
    wav = read_wav(out_wav.read_bytes())
    assert (wav.format_tag, wav.sample_rate, wav.data) == (WAVE_FORMAT_MULAW, 8000, AUDIO)
    assert stat.S_IMODE(out_wav.stat().st_mode) == 0o600

    raw = tmp_path / "admin.key"
    raw.write_text(base64.b64encode(ADMIN_KEY.private_bytes_raw()).decode() + "\n")
    code, out, err = restore(capsys, blob_path, "--key", raw, "--backup-id", backup_id,
                             "--mailbox", "201")
    assert code == 0, err
    default_wav = tmp_path / "backup.wav"  # BLOB with .wav
    assert json.loads(out)["audio"] == str(default_wav)
    assert read_wav(default_wav.read_bytes()).data == AUDIO

    # A wrong key, mailbox or id: exit 1, a clear message, no audio written.
    other = tmp_path / "other.key"
    other.write_text(base64.b64encode(X25519PrivateKey.generate().private_bytes_raw()).decode())
    nothing = tmp_path / "nothing.wav"
    for key, bid, mailbox in ((other, backup_id, "201"), (pem, backup_id, "202"),
                              (pem, backup_id[:-1] + "0", "201")):
        code, out, err = restore(capsys, blob_path, "--key", key, "--backup-id", bid,
                                 "--mailbox", mailbox, "-o", nothing)
        assert (code, out) == (1, "")
        assert err == ("edgepbx: cannot decrypt the backup: voicemail backup does not "
                       "authenticate (wrong key, id or mailbox)\n")
        assert not nothing.exists()


def test_restore_backup_refuses_unusable_inputs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    blob = tmp_path / "b.bin"
    blob.write_bytes(b"EPVB\x01" + bytes(range(7, 87)))  # the right header, no backup
    good_key = tmp_path / "k"
    good_key.write_text(base64.b64encode(ADMIN_KEY.private_bytes_raw()).decode())
    not_a_key = tmp_path / "nk"
    not_a_key.write_text("definitely not base64 !!")
    short = tmp_path / "short"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    args = ("--backup-id", "id1", "--mailbox", "201")

    code, _, err = restore(capsys, tmp_path / "missing.bin", "--key", good_key, *args)
    assert code == 1 and "missing.bin" in err and err.startswith("edgepbx: ")
    code, _, err = restore(capsys, blob, "--key", tmp_path / "missing.key", *args)
    assert code == 1 and "missing.key" in err
    for key in (not_a_key, short):
        code, _, err = restore(capsys, blob, "--key", key, *args)
        assert code == 1 and err.startswith("edgepbx: cannot decrypt the backup: "), err
    code, _, err = restore(capsys, blob, "--key", good_key, *args)  # not a real backup
    assert code == 1 and "does not authenticate" in err
    blob.write_bytes(b"EPVB\x01" + bytes(80))  # a low-order (all zero) ephemeral key
    code, _, err = restore(capsys, blob, "--key", good_key, *args)
    assert code == 1 and err.startswith("edgepbx: cannot decrypt the backup: "), err
    garbage = tmp_path / "g.bin"
    garbage.write_bytes(b"hello")
    code, _, err = restore(capsys, garbage, "--key", good_key, *args)
    assert code == 1 and "not an x25519-aesgcm-v1 voicemail backup" in err
    assert not list(tmp_path.glob("*.wav"))


def test_restore_backup_errors_after_decryption_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    info = row()
    backup_id = backup_id_for(SERIAL, info)
    blob = tmp_path / "b.bin"
    blob.write_bytes(seal_voicemail_backup(ADMIN_PUBLIC, backup_id, "201",
                                           pack_backup(info, AUDIO)).data)
    args = ("--backup-id", backup_id, "--mailbox", "201")
    # A passphrase-protected PEM key: a message, not a traceback.
    locked = tmp_path / "locked.pem"
    locked.write_bytes(ADMIN_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    code, out, err = restore(capsys, blob, "--key", locked, *args)
    assert (code, out) == (1, "")
    assert err.startswith("edgepbx: cannot decrypt the backup: ") and "encrypted" in err
    # Where the audio cannot be written: a message, not a traceback.
    raw = tmp_path / "admin.key"
    raw.write_text(base64.b64encode(ADMIN_KEY.private_bytes_raw()).decode())
    target = tmp_path / "no-such-dir" / "out.wav"
    code, out, err = restore(capsys, blob, "--key", raw, *args, "-o", target)
    assert (code, out) == (1, "")
    assert err == f"edgepbx: cannot write {target}: No such file or directory\n"
    # The same backup restores fine.
    code, out, err = restore(capsys, blob, "--key", raw, *args, "-o", tmp_path / "ok.wav")
    assert code == 0, err
    assert read_wav((tmp_path / "ok.wav").read_bytes()).data == AUDIO
