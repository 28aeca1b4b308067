"""The voicemail store: encryption at rest, crash safety, limits, PINs, MWI counts."""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.prompts.wavfile import WAVE_FORMAT_MULAW, read_wav
from agent.store import Store
from agent.voicemail import (
    BadMailbox,
    CorruptAudio,
    MailboxFull,
    MessageTooLong,
    NoSuchMessage,
    StorageError,
    VoicemailStore,
    WeakPin,
)
from agent.voicemail import sealed as sealed_mod
from sipstack.media.g711 import ulaw_encode

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tone(seconds: float, freq: float = 440.0, seed: int = 0) -> bytes:
    """µ-law codes of a tone with a little pseudo-random noise (no long repeats)."""
    n = int(seconds * 8000)
    x = seed * 7919 + 1
    samples = []
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        noise = (x >> 16) % 401 - 200
        samples.append(int(8000 * math.sin(2 * math.pi * freq * i / 8000)) + noise)
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    return ulaw_encode(pcm)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(state: Path) -> Iterator[Store]:
    s = Store.open(state)
    yield s
    s.close()


@pytest.fixture
def vm(state: Path, db: Store, clock: Clock) -> VoicemailStore:
    return VoicemailStore(state, db, clock=clock)


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- round trips


def test_message_round_trip_folders_and_listing(vm: VoicemailStore, clock: Clock) -> None:
    a, b = tone(1.5, seed=1), tone(0.5, seed=2)
    m1 = vm.save_message("201", a, "+15551230000", "Alice Example", "busy")
    clock.t += 10
    m2 = vm.save_message("201", b, "202", "", "direct")
    assert (m1.mailbox, m1.caller, m1.caller_name, m1.reason, m1.folder) == (
        "201", "+15551230000", "Alice Example", "busy", "new")
    assert m1.duration == pytest.approx(1.5) and m1.size == len(a)
    assert m2.received_at == m1.received_at + 10
    assert [m.id for m in vm.list_messages("201")] == [m1.id, m2.id]  # oldest first
    assert vm.read_audio("201", m1.id) == a
    assert vm.read_audio("201", m2.id) == b
    assert vm.counts("201") == (2, 0)
    vm.mark_saved("201", m1.id)
    assert vm.counts("201") == (1, 1)
    assert [m.id for m in vm.list_messages("201", "saved")] == [m1.id]
    assert [m.id for m in vm.list_messages("201", "new")] == [m2.id]
    vm.mark_new("201", m1.id)
    assert vm.counts("201") == (2, 0)
    vm.delete("201", m1.id)
    assert [m.id for m in vm.list_messages("201")] == [m2.id]
    assert not (vm.root / "201" / f"{m1.id}.msg").exists()
    with pytest.raises(NoSuchMessage):
        vm.read_audio("201", m1.id)
    with pytest.raises(NoSuchMessage):
        vm.read_audio("202", m2.id)  # another mailbox's message is not reachable
    assert vm.counts("999") == (0, 0)


def test_bad_input_refused(vm: VoicemailStore) -> None:
    for bad in ("", "../etc", "a/b", ".hidden", "x" * 80):
        with pytest.raises(BadMailbox):
            vm.save_message(bad, tone(0.1))
    with pytest.raises(ValueError, match="reason"):
        vm.save_message("201", tone(0.1), reason="whatever")
    with pytest.raises(ValueError, match="empty"):
        vm.save_message("201", b"")
    with pytest.raises(ValueError, match="greeting kind"):
        vm.save_greeting("201", "holiday", tone(0.1))


def test_greetings_round_trip_and_replace(vm: VoicemailStore) -> None:
    assert vm.greeting("201", "unavailable") is None
    g1, g2, name = tone(1.0, seed=3), tone(1.2, seed=4), tone(0.6, seed=5)
    vm.save_greeting("201", "unavailable", g1)
    vm.save_greeting("201", "name", name)
    assert vm.greeting("201", "unavailable") == g1
    assert vm.greeting("201", "name") == name
    assert vm.greeting("201", "busy") is None
    vm.save_greeting("201", "unavailable", g2)  # replaces; the old file goes
    assert vm.greeting("201", "unavailable") == g2
    assert len(list((vm.root / "201").glob("unavailable-*.grt"))) == 1
    assert vm.delete_greeting("201", "unavailable") is True
    assert vm.delete_greeting("201", "unavailable") is False
    assert vm.greeting("201", "unavailable") is None
    assert list((vm.root / "201").glob("unavailable-*.grt")) == []
    assert [g.kind for g in vm.greetings("201")] == ["name"]


# --------------------------------------------------------------------------- at rest


def test_files_are_encrypted_and_private(vm: VoicemailStore) -> None:
    audio = tone(1.0, seed=6)
    greeting = tone(1.0, seed=7)
    msg = vm.save_message("201", audio)
    vm.save_greeting("201", "busy", greeting)
    assert stat.S_IMODE(vm.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((vm.root / "201").stat().st_mode) == 0o700
    stored = files(vm.root)
    in_box = [p.name for p in stored if p.parent.name == "201"]
    assert f"{msg.id}.msg" in in_box and len(in_box) == 2
    assert {p.suffix for p in stored if p.parent.name == "201"} == {".msg", ".grt"}
    for p in stored:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    blob = (vm.root / "201" / f"{msg.id}.msg").read_bytes()
    gblob = next((vm.root / "201").glob("busy-*.grt")).read_bytes()
    assert blob[:5] == b"EPVM\x01"
    assert len(blob) == 5 + 12 + len(audio) + 16
    for plain, sealed in ((audio, blob), (greeting, gblob)):
        for i in range(0, len(plain) - 16):
            assert plain[i : i + 16] not in sealed, f"plaintext run at {i}"
    # A fresh nonce per file: the same audio twice gives unrelated files.
    again = vm.save_message("201", audio)
    blob2 = (vm.root / "201" / f"{again.id}.msg").read_bytes()
    assert blob2[5:17] != blob[5:17]
    assert blob2[17:49] != blob[17:49]


def test_key_and_pepper_created_once_0600(state: Path, db: Store) -> None:
    vm = VoicemailStore(state, db)
    key, pepper = vm.root / "key", vm.root / "pepper"
    for p in (key, pepper):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert p.stat().st_size == 32
    assert key.read_bytes() != pepper.read_bytes()
    before = [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in (key, pepper)]
    msg = vm.save_message("201", tone(0.3))
    vm2 = VoicemailStore(state, db)
    after = [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in (key, pepper)]
    assert after == before  # never rewritten
    assert vm2.read_audio("201", msg.id) == vm.read_audio("201", msg.id)
    assert not [p for p in vm.root.iterdir() if p.name.startswith(".tmp-")]
    # A damaged key is refused, never replaced (that would orphan every message).
    key.write_bytes(b"short")
    with pytest.raises(StorageError, match="damaged"):
        VoicemailStore(state, db)
    assert key.read_bytes() == b"short"


def test_tampered_file_fails_to_decrypt(vm: VoicemailStore) -> None:
    msg = vm.save_message("201", tone(0.5, seed=8))
    path = vm.root / "201" / f"{msg.id}.msg"
    good = path.read_bytes()
    for pos in (0, 4, 10, 40, len(good) - 1):  # header, nonce, body, tag
        bad = bytearray(good)
        bad[pos] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(CorruptAudio):
            vm.read_audio("201", msg.id)
    path.write_bytes(good[:-5])
    with pytest.raises(CorruptAudio, match=r"cannot be decrypted|truncated"):
        vm.read_audio("201", msg.id)
    path.write_bytes(good)
    assert vm.read_audio("201", msg.id)  # intact again


def test_file_moved_to_another_mailbox_or_id_fails(vm: VoicemailStore) -> None:
    a = vm.save_message("201", tone(0.5, seed=9))
    b = vm.save_message("202", tone(0.5, seed=10))
    c = vm.save_message("201", tone(0.5, seed=11))
    src = vm.root / "201" / f"{a.id}.msg"
    shutil.copyfile(src, vm.root / "202" / f"{b.id}.msg")  # into another mailbox
    with pytest.raises(CorruptAudio, match="another"):
        vm.read_audio("202", b.id)
    shutil.copyfile(src, vm.root / "201" / f"{c.id}.msg")  # another id, same mailbox
    with pytest.raises(CorruptAudio):
        vm.read_audio("201", c.id)
    assert vm.read_audio("201", a.id)  # the original is fine
    # Greetings are bound to their kind too.
    vm.save_greeting("201", "busy", tone(0.4, seed=12))
    vm.save_greeting("201", "name", tone(0.4, seed=13))
    busy = next((vm.root / "201").glob("busy-*.grt"))
    name = next((vm.root / "201").glob("name-*.grt"))
    shutil.copyfile(busy, name)
    with pytest.raises(CorruptAudio):
        vm.greeting("201", "name")


# --------------------------------------------------------------------------- limits


def test_full_mailbox(state: Path, db: Store) -> None:
    vm = VoicemailStore(state, db, max_messages=3)
    for i in range(3):
        vm.save_message("201", tone(0.2, seed=i))
    before = files(vm.root)
    with pytest.raises(MailboxFull, match="full"):
        vm.save_message("201", tone(0.2))
    assert files(vm.root) == before
    assert vm.counts("201") == (3, 0)
    vm.save_message("202", tone(0.2))  # per mailbox
    vm.mark_saved("201", vm.list_messages("201")[0].id)
    with pytest.raises(MailboxFull):  # saved messages count as well
        vm.save_message("201", tone(0.2))
    vm.delete("201", vm.list_messages("201")[0].id)
    vm.save_message("201", tone(0.2))


def test_too_long_refused(state: Path, db: Store) -> None:
    vm = VoicemailStore(state, db, max_seconds=2)
    vm.save_message("201", tone(2.5))  # within the one-second grace for the last frames
    before = files(vm.root)
    with pytest.raises(MessageTooLong, match="at most 2 s"):
        vm.save_message("201", tone(4))
    with pytest.raises(MessageTooLong):
        vm.save_greeting("201", "unavailable", tone(4))
    assert files(vm.root) == before
    assert vm.counts("201") == (1, 0)


def test_enospc_while_writing(
    vm: VoicemailStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = tone(0.5, seed=14)
    m1 = vm.save_message("201", earlier)
    vm.save_greeting("201", "unavailable", tone(0.5, seed=15))
    before = {p: p.read_bytes() for p in files(vm.root)}
    seen: list[int] = []
    hook_calls: list[object] = []
    vm.on_change(lambda *a: hook_calls.append(a))

    def full_disk(fd: int, data: bytes) -> None:
        os.write(fd, bytes(data[: len(data) // 2]))  # a partial write, then the disk fills
        seen.append(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sealed_mod, "_write_all", full_disk)
    with pytest.raises(StorageError, match="disk is full") as info:
        vm.save_message("201", tone(1.0, seed=16))
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(StorageError, match="disk is full"):
        vm.save_greeting("201", "unavailable", tone(1.0, seed=17))
    assert seen  # the failure really happened mid-write
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in files(vm.root)} == before  # no temp file, no change
    assert vm.counts("201") == (1, 0)
    assert hook_calls == []
    assert vm.read_audio("201", m1.id) == earlier
    assert vm.greeting("201", "unavailable") == tone(0.5, seed=15)


def test_fsync_failure_leaves_nothing(vm: VoicemailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    m1 = vm.save_message("201", tone(0.3))
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(sealed_mod.os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="Input/output error"):
        vm.save_message("201", tone(0.3))
    monkeypatch.undo()
    assert [p.name for p in (vm.root / "201").iterdir()] == [f"{m1.id}.msg"]


def test_database_failure_after_file_removes_the_file(
    vm: VoicemailStore, db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    def broken(*a: object, **k: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(db, "vm_add_message", broken)
    with pytest.raises(StorageError, match="disk is full"):
        vm.save_message("201", tone(0.3))
    assert list((vm.root / "201").iterdir()) == []


@pytest.fixture
def tiny_tmpfs() -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = Path(tempfile.mkdtemp(prefix="epbx-vmfs-"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs",
                           str(mnt)], capture_output=True, check=False)
    if proc.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def test_real_full_disk(tiny_tmpfs: Path, tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as db:
        vm = VoicemailStore(tiny_tmpfs, db)
        small = tone(0.5, seed=18)
        m1 = vm.save_message("201", small)
        with pytest.raises(StorageError, match="disk is full") as info:
            vm.save_message("201", tone(12, seed=19))  # 96 kB > 64 kB
        assert info.value.errno == errno.ENOSPC
        assert [p.name for p in (vm.root / "201").iterdir()] == [f"{m1.id}.msg"]
        assert vm.read_audio("201", m1.id) == small
        assert vm.counts("201") == (1, 0)
        vm.save_message("201", tone(0.5, seed=20))  # space is back: works again
        assert vm.counts("201") == (2, 0)


# --------------------------------------------------------------------------- recovery


def test_crash_between_file_and_row_is_cleaned_at_start(state: Path) -> None:
    # A real crash: the child process dies right after the file is durable, before the row.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from agent.store import Store
        from agent.voicemail import VoicemailStore
        db = Store.open({str(state)!r})
        vm = VoicemailStore({str(state)!r}, db)
        vm.save_message("201", bytes(range(256)) * 8)
        db.vm_add_message = lambda *a, **k: os._exit(17)
        vm.save_message("201", bytes(range(256)) * 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == 17, proc.stderr.decode()
    mdir = state / "voicemail" / "201"
    assert len(list(mdir.glob("*.msg"))) == 2  # one committed, one orphan
    (mdir / ".tmp-leftover").write_bytes(b"half a message")  # a crash mid-write
    with Store.open(state) as db:
        vm = VoicemailStore(state, db)
        assert len(vm.recovery.removed_files) == 2
        assert vm.recovery.missing == []
        msgs = vm.list_messages("201")
        assert len(msgs) == 1
        assert [p.name for p in mdir.iterdir()] == [f"{msgs[0].id}.msg"]
        assert vm.read_audio("201", msgs[0].id) == bytes(range(256)) * 8


def test_row_without_file_is_reported_and_removed(
    state: Path, db: Store, caplog: pytest.LogCaptureFixture
) -> None:
    vm = VoicemailStore(state, db)
    keep = vm.save_message("201", tone(0.2, seed=21))
    lost = vm.save_message("201", tone(0.2, seed=22))
    vm.save_greeting("201", "busy", tone(0.2))
    (vm.root / "201" / f"{lost.id}.msg").unlink()
    next((vm.root / "201").glob("busy-*.grt")).unlink()
    (vm.root / "201" / "notes.txt").write_text("someone's file")
    with caplog.at_level(logging.WARNING):
        vm2 = VoicemailStore(state, db)
    assert vm2.recovery.missing == [
        f"message {lost.id} of mailbox 201", "busy greeting of mailbox 201"]
    assert vm2.recovery.unknown == [str(vm.root / "201" / "notes.txt")]
    assert "missing" in caplog.text
    assert [m.id for m in vm2.list_messages("201")] == [keep.id]
    assert vm2.greeting("201", "busy") is None
    assert (vm.root / "201" / "notes.txt").exists()


# --------------------------------------------------------------------------- PINs


def test_pin_is_hashed_with_scrypt_and_pepper(state: Path, db: Store) -> None:
    vm = VoicemailStore(state, db)
    pin = "918273"
    vm.set_pin("201", pin)
    row = db.vm_pin("201")
    assert row is not None
    assert (row.scheme, row.n, row.r, row.p) == ("scrypt-hmac-sha256", 2**14, 8, 1)
    assert len(row.salt) == 16 and len(row.digest) == 32
    pepper = (vm.root / "pepper").read_bytes()
    expect = hashlib.scrypt(hmac.new(pepper, pin.encode(), hashlib.sha256).digest(),
                            salt=row.salt, n=2**14, r=8, p=1, dklen=32)
    assert row.digest == expect
    assert vm.check_pin("201", pin).ok
    assert not vm.check_pin("201", "918274").ok
    # The PIN appears nowhere in the database files.
    db.close()
    for p in state.glob("edgepbx.db*"):
        assert pin.encode() not in p.read_bytes(), p
    # Same PIN, same salt, different pepper: does not verify.
    (vm.root / "pepper").write_bytes(os.urandom(32))
    with Store.open(state) as db2:
        other = VoicemailStore(state, db2)
        assert not other.check_pin("201", pin).ok
    # Two mailboxes with one PIN have unrelated verifiers (salted).
    with Store.open(state) as db3:
        v3 = VoicemailStore(state, db3)
        v3.set_pin("202", pin)
        v3.set_pin("203", pin)
        r2, r3 = db3.vm_pin("202"), db3.vm_pin("203")
        assert r2 is not None and r3 is not None
        assert r2.salt != r3.salt and r2.digest != r3.digest


def test_no_pin_set(vm: VoicemailStore) -> None:
    result = vm.check_pin("201", "2580")
    assert (result.ok, result.locked, result.reason) == (False, False, "no PIN set")
    assert not vm.has_pin("201")


@pytest.mark.parametrize(
    ("pin", "why"),
    [
        ("1111", "repeated"), ("000000", "repeated"),
        ("1234", "consecutive"), ("4321", "consecutive"), ("7890", "consecutive"),
        ("0987", "consecutive"), ("123456789", "consecutive"),
        ("2001", "extension"), ("1002", "extension"),
        ("123", "4 to 12"), ("1357913579135", "4 to 12"),
        ("12a4", "digits"), ("", "digits"), ("٢٥٨٠", "digits"),
    ],
)
def test_weak_pins_refused(vm: VoicemailStore, pin: str, why: str) -> None:
    with pytest.raises(WeakPin, match=why):
        vm.set_pin("2001", pin)
    assert not vm.has_pin("2001")


def test_good_pins_accepted(vm: VoicemailStore, db: Store) -> None:
    for pin in ("2580", "1357", "90210", "314159265358"):
        vm.set_pin("2001", pin)
        assert vm.check_pin("2001", pin).ok
    entries = db.audit_entries(action="voicemail.pin_set")
    assert len(entries) == 4
    assert all("2580" not in str(e.detail) for e in entries)


def test_lockout_after_five_persists_and_unlocks(
    state: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with Store.open(state) as db:
        vm = VoicemailStore(state, db, clock=clock)
        vm.set_pin("201", "2580")
        with caplog.at_level(logging.DEBUG):
            results = [vm.check_pin("201", f"{i:04d}", clock.t) for i in range(100)]
        assert "2580" not in caplog.text
        assert [r.remaining for r in results[:4]] == [4, 3, 2, 1]
        assert not any(r.locked for r in results[:4])
        assert all(r.locked and not r.ok and r.remaining == 0 for r in results[4:])
        assert results[4].locked_until == clock.t + 15 * 60
        # Locked: even the right PIN is refused.
        assert vm.check_pin("201", "2580", clock.t).locked
        locks = db.audit_entries(action="voicemail.locked")
        assert len(locks) == 1  # one lockout, one entry
        assert locks[0].detail["mailbox"] == "201"
        assert "2580" not in str(locks[0].detail)
    with Store.open(state) as db:  # a restart does not lift it
        vm = VoicemailStore(state, db, clock=clock)
        assert vm.is_locked("201")
        assert vm.check_pin("201", "2580", clock.t).locked
        assert vm.unlock("201", actor="admin@site", role="admin")
        assert not vm.is_locked("201")
        assert vm.check_pin("201", "2580", clock.t).ok
        assert len(db.audit_entries(action="voicemail.unlocked")) == 1
        assert vm.unlock("201") is False  # nothing to clear


def test_lock_expires_and_success_resets_count(state: Path, db: Store, clock: Clock) -> None:
    vm = VoicemailStore(state, db, clock=clock, pin_attempts=3, lockout_seconds=60)
    vm.set_pin("201", "2580")
    vm.check_pin("201", "0000", clock.t)
    vm.check_pin("201", "0000", clock.t)
    assert vm.check_pin("201", "2580", clock.t).ok  # resets the count
    assert vm.check_pin("201", "0000", clock.t).remaining == 2
    vm.check_pin("201", "0000", clock.t)
    assert vm.check_pin("201", "0000", clock.t).locked
    assert vm.check_pin("201", "2580", clock.t + 59).locked
    after = vm.check_pin("201", "0000", clock.t + 60)  # lock over: a fresh count
    assert (after.locked, after.remaining) == (False, 2)
    assert vm.check_pin("201", "2580", clock.t + 61).ok


def test_lock_until_admin_unlocks(state: Path, db: Store, clock: Clock) -> None:
    vm = VoicemailStore(state, db, clock=clock, pin_attempts=2, lockout_seconds=None)
    vm.set_pin("201", "2580")
    vm.check_pin("201", "0000", clock.t)
    r = vm.check_pin("201", "0000", clock.t)
    assert r.locked and r.locked_until is None
    assert vm.check_pin("201", "2580", clock.t + 10 * 365 * 86400).locked
    vm.set_pin("201", "3690")  # an admin setting a new PIN also lifts the lock
    assert vm.check_pin("201", "3690", clock.t).ok


# --------------------------------------------------------------------------- MWI, retention


def test_counts_and_change_hook(vm: VoicemailStore) -> None:
    calls: list[tuple[str, int, int]] = []
    unsubscribe = vm.on_change(lambda mb, new, saved: calls.append((mb, new, saved)))

    def bad_hook(*a: object) -> None:
        raise RuntimeError("MWI is down")

    vm.on_change(bad_hook)  # a failing subscriber does not break voicemail
    m1 = vm.save_message("201", tone(0.2))
    m2 = vm.save_message("201", tone(0.2))
    vm.mark_saved("201", m1.id)
    vm.mark_saved("201", m1.id)  # no change: no call
    vm.save_greeting("201", "busy", tone(0.2))  # greetings do not change counts
    vm.delete("201", m2.id)
    assert calls == [("201", 1, 0), ("201", 2, 0), ("201", 1, 1), ("201", 0, 1)]
    unsubscribe()
    vm.save_message("201", tone(0.2))
    assert len(calls) == 4
    assert vm.counts("201") == (1, 1)


def test_purge_older_than(vm: VoicemailStore, clock: Clock) -> None:
    calls: list[tuple[str, int, int]] = []
    old1 = vm.save_message("201", tone(0.2))
    old2 = vm.save_message("202", tone(0.2))
    vm.mark_saved("202", old2.id)
    clock.t += 40 * 86400
    fresh = vm.save_message("201", tone(0.2))
    vm.on_change(lambda *a: calls.append(a))
    assert vm.purge_older_than(30 * 86400) == 2
    assert [m.id for m in vm.list_messages("201")] == [fresh.id]
    assert vm.list_messages("202") == []
    assert not (vm.root / "201" / f"{old1.id}.msg").exists()
    assert sorted(calls) == [("201", 1, 0), ("202", 0, 0)]
    assert vm.purge_older_than(30 * 86400) == 0


def test_export_and_delete_mailbox(vm: VoicemailStore) -> None:
    audio = tone(0.4, seed=23)
    msg = vm.save_message("201", audio, "202", "Bob", "busy")
    vm.save_greeting("201", "name", tone(0.3, seed=24))
    vm.set_pin("201", "2580")
    out = dict(vm.export("201"))
    wav_name = next(n for n in out if n.startswith("messages/new/"))
    info = read_wav(out[wav_name])
    assert (info.format_tag, info.sample_rate, info.data) == (WAVE_FORMAT_MULAW, 8000, audio)
    assert read_wav(out["greetings/name.wav"]).data == tone(0.3, seed=24)
    meta = out["mailbox.json"].decode()
    assert msg.id in meta and "Bob" in meta and "2580" not in meta
    assert vm.delete_mailbox("201") == 1
    assert vm.list_messages("201") == [] and vm.greeting("201", "name") is None
    assert not vm.has_pin("201")
    assert not (vm.root / "201").exists()
