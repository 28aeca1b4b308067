from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store import (
    MIGRATIONS,
    BindingRow,
    DeleteAllBindings,
    DeleteBinding,
    Store,
    StoreError,
    UpsertBinding,
)

REPO = Path(__file__).resolve().parent.parent


def row(aor: str, contact: str, *, expires_at: float = 2e9, cseq: int = 1) -> BindingRow:
    return BindingRow(
        aor=aor, contact=contact, expires_at=expires_at, call_id=f"cid-{aor}", cseq=cseq,
        q=0.5, source_transport="udp", source_host="192.0.2.1", source_port=5062,
        user_agent="Test/1.0", instance_id="<urn:uuid:1>", reg_id=1, updated_at=1000.0,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state")
    yield s
    s.close()


def test_open_creates_private_wal_database(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    s = Store.open(state)
    try:
        assert s.path == state / "edgepbx.db"
        assert s.pragma("journal_mode") == "wal"
        assert s.pragma("synchronous") == 1  # NORMAL: crash-safe, consistent on power loss
        assert s.pragma("foreign_keys") == 1
        assert s.schema_version() == len(MIGRATIONS)
        s.apply_binding_changes([UpsertBinding(row("a", "sip:a@x"))])
        for name in ("edgepbx.db", "edgepbx.db-wal", "edgepbx.db-shm"):
            mode = stat.S_IMODE(os.stat(state / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        assert s.integrity_check() == ["ok"]
    finally:
        s.close()


def test_existing_file_is_made_private(tmp_path: Path) -> None:
    tmp_path.joinpath("edgepbx.db").touch(mode=0o644)
    os.chmod(tmp_path / "edgepbx.db", 0o644)
    Store.open(tmp_path).close()
    assert stat.S_IMODE(os.stat(tmp_path / "edgepbx.db").st_mode) == 0o600


def test_migrations_are_recorded_and_run_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def m2(db: sqlite3.Connection) -> None:
        calls.append(2)
        db.execute("CREATE TABLE extra (x INTEGER)")

    Store.open(tmp_path).close()
    with Store.open(tmp_path, migrations=[*MIGRATIONS, m2]) as s:
        assert s.schema_version() == len(MIGRATIONS) + 1
    with Store.open(tmp_path, migrations=[*MIGRATIONS, m2]) as s:
        assert s.schema_version() == len(MIGRATIONS) + 1
    assert calls == [2]


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    def bad(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half (x INTEGER)")
        raise sqlite3.OperationalError("boom")

    with pytest.raises(StoreError, match="boom"):
        Store.open(tmp_path, migrations=[*MIGRATIONS, bad])
    with Store.open(tmp_path) as s:
        assert s.schema_version() == len(MIGRATIONS)
        tables = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master")}
        assert "half" not in tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    def m2(db: sqlite3.Connection) -> None:
        pass

    Store.open(tmp_path, migrations=[*MIGRATIONS, m2]).close()
    with pytest.raises(StoreError, match="newer than this edgepbx"):
        Store.open(tmp_path)


def test_group_commit_applies_in_order(store: Store) -> None:
    n = store.apply_binding_changes([
        UpsertBinding(row("alice", "sip:a1")),
        UpsertBinding(row("alice", "sip:a2")),
        UpsertBinding(row("bob", "sip:b1")),
        DeleteAllBindings("alice"),
        UpsertBinding(row("alice", "sip:a3")),
        UpsertBinding(row("bob", "sip:b1", cseq=7)),  # replace
        DeleteBinding("bob", "sip:none"),
        UpsertBinding(row("carol", "sip:c1")),
        DeleteBinding("carol", "sip:c1"),
    ])
    assert n == 9
    rows = store.load_bindings(now=1000.0)
    assert [(r.aor, r.contact, r.cseq) for r in rows] == [
        ("alice", "sip:a3", 1), ("bob", "sip:b1", 7),
    ]
    assert rows[0] == row("alice", "sip:a3")  # every column round-trips
    assert store.apply_binding_changes([]) == 0


def test_batch_is_all_or_nothing(store: Store) -> None:
    store.apply_binding_changes([UpsertBinding(row("alice", "sip:a1"))])
    bad = BindingRow(*[None] * 13)  # type: ignore[arg-type]  # NOT NULL violation
    with pytest.raises(sqlite3.IntegrityError):
        store.apply_binding_changes([
            DeleteAllBindings("alice"), UpsertBinding(row("bob", "sip:b1")), UpsertBinding(bad),
        ])
    assert [(r.aor, r.contact) for r in store.load_bindings(0)] == [("alice", "sip:a1")]
    with pytest.raises(TypeError):
        store.apply_binding_changes(["nonsense"])  # type: ignore[list-item]


def test_load_bindings_drops_expired(store: Store) -> None:
    store.apply_binding_changes([
        UpsertBinding(row("a", "sip:old", expires_at=100.0)),
        UpsertBinding(row("a", "sip:edge", expires_at=200.0)),
        UpsertBinding(row("a", "sip:new", expires_at=300.0)),
    ])
    assert store.count_bindings() == 3
    assert store.count_bindings(now=150.0) == 2
    assert [r.contact for r in store.load_bindings(now=200.0)] == ["sip:new"]
    assert store.count_bindings() == 1  # expired rows were deleted
    assert store.purge_expired_bindings(now=400.0) == 1


def test_bindings_survive_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path) as s:
        s.apply_binding_changes([UpsertBinding(row("a", "sip:a"))])
    with Store.open(tmp_path) as s:
        assert s.load_bindings(now=0) == [row("a", "sip:a")]


def test_audit_log_is_append_only(store: Store) -> None:
    first = store.append_audit(actor="agent", role="system", action="agent.start",
                               detail={"pid": 1}, ts=10.0)
    store.append_audit(actor="admin", role="admin", action="site.applied", detail={"v": 2})
    entries = store.audit_entries()
    assert [e.action for e in entries] == ["agent.start", "site.applied"]
    assert entries[0].id == first and entries[0].ts == 10.0 and entries[0].detail == {"pid": 1}
    assert [e.actor for e in store.audit_entries(action="site.applied")] == ["admin"]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("UPDATE audit_log SET actor = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("DELETE FROM audit_log")
    assert len(store.audit_entries()) == 2


def test_site_versions_are_monotonic_and_idempotent(store: Store) -> None:
    assert store.latest_site_version() is None
    assert store.record_site_version("f1", {"site": {"name": "a"}}) == 1
    assert store.record_site_version("f1", {"site": {"name": "a"}}) == 1
    assert store.record_site_version("f2", {"site": {"name": "b"}}) == 2
    assert store.record_site_version("f1", {"site": {"name": "a"}}) == 3
    latest = store.latest_site_version()
    assert latest is not None
    assert (latest.version, latest.fingerprint) == (3, "f1")
    assert latest.document == {"site": {"name": "a"}}


WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from agent.store import Store, BindingRow, UpsertBinding, DeleteAllBindings
    store = Store.open(sys.argv[1])
    start = max((int(r.aor[1:]) for r in store.load_bindings(0)), default=-1) + 1
    i = start
    while True:
        changes = [DeleteAllBindings(f"t{i - 10}")]
        changes += [UpsertBinding(BindingRow(f"t{i}", f"sip:c{j}@h", 2e9, "cid", j, None,
                    "udp", "192.0.2.1", 5060, "x" * 200, None, None, time.time()))
                    for j in range(50)]
        store.apply_binding_changes(changes)
        store.append_audit(actor="w", role="test", action="tx", detail={"i": i})
        if i == start:
            print("ready", flush=True)
        i += 1
    """
)


def test_sigkill_mid_write_leaves_whole_transactions(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Store.open(state).close()
    for delay in (0.05, 0.2, 0.11):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(state), str(REPO)],
            stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

        with Store.open(state) as s:
            assert s.integrity_check() == ["ok"]
            rows = s.load_bindings(now=0)
            counts: dict[int, int] = {}
            for r in rows:
                counts[int(r.aor[1:])] = counts.get(int(r.aor[1:]), 0) + 1
            assert counts, "the writer committed nothing"
            assert set(counts.values()) == {50}, "a transaction was partly applied"
            last = max(counts)
            assert sorted(counts) == list(range(max(0, last - 9), last + 1))


def test_migration_9_masks_the_secrets_earlier_versions_stored(tmp_path: Path) -> None:
    document = {"site": {"name": "T"}, "users": [{"id": "ann", "sip": {
        "username": "ann", "password": "pw-ann"}}], "trunks": [{"password": "pw-trunk"}],
        "phones": [{"mac": "805ec0000001", "http_password": "pw-http"}],
        "provisioning": {"auto_registration": {"assigner_pin": "1234"}}}
    with Store.open(tmp_path, migrations=MIGRATIONS[:8]) as s:
        s.record_site_version("f1", document)
    with Store.open(tmp_path) as s:
        latest = s.latest_site_version()
    assert latest is not None
    text = json.dumps(latest.document)
    assert all(secret not in text for secret in ("pw-ann", "pw-trunk", "pw-http", "1234"))
    assert latest.document["users"][0]["sip"] == {"username": "ann", "password": "**********"}
    assert latest.document["phones"][0]["mac"] == "805ec0000001"
