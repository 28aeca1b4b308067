"""The upload outbox (agent.cloud.outbox) and its store tables (migration 8).

Unit tables run against a real store with a fake portal client and a fake clock. The
end-to-end tests talk to the reference portal (tests/portal, in-process threads) over
loopback mutual TLS with a certificate from its own enrollment; "the tunnel's inner
address" is 127.0.0.1. The kill -9 test runs this file as a script (``worker``): a device
process that stores CDRs and drains them, SIGKILLed at random moments and restarted.

The reference portal is imported as ``portal`` (tests/ is on sys.path, as pytest puts it
there for tests/portal/test_portal.py too): ``tests.portal`` is shadowed by sippy's
top-level ``tests`` package in this venv (tests/portal/README.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.cdr import CallRecord, record_as_dict
from agent.cloud.identity import DeviceIdentity
from agent.cloud.outbox import (
    KIND_CDR,
    KIND_USAGE,
    KIND_VOICEMAIL_BACKUP,
    Backoff,
    Delivered,
    Outbox,
    Refused,
    Step,
    Unavailable,
    Uploader,
    UploadPolicy,
    Withdrawn,
)
from agent.cloud.portal_client import (
    OptIns,
    PortalClient,
    PortalRejected,
    PortalUnavailable,
    SealedBackup,
    TunnelNotReady,
    UsageReport,
)
from agent.store import (
    MIGRATIONS,
    OUTBOX_SCHEMA_VERSION,
    OutboxDiskFull,
    OutboxRow,
    Store,
    cdr_outbox_payload,
)

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
from portal import Running, make_pki, start  # noqa: E402

INNER = "127.0.0.1"
ALL_ON = OptIns(cdr_upload=True, voicemail_backup=True)
BERLIN = ZoneInfo("Europe/Berlin")


# --------------------------------------------------------------------------- helpers


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def cdr(n: int | str, start: float = 1_799_990_000.0, **kw: Any) -> CallRecord:
    call_id = n if isinstance(n, str) else f"call-{n:06d}"
    fields: dict[str, Any] = dict(
        call_id=call_id, direction="internal", caller="201", caller_name="Ann",
        callee="202", dialed="202", start=start, answer=start + 3, end=start + 63,
        disposition="answered", hold_seconds=0.0, hunt_group=None, trunk=None,
        cause="caller-bye")
    fields.update(kw)
    return CallRecord(**fields)


def backup(backup_id: str = "bk1", size: int = 100, mailbox: str = "201") -> SealedBackup:
    return SealedBackup(backup_id, mailbox, bytes([7]) * size)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state")
    yield s
    s.close()


def keys(store: Store) -> list[str]:
    return [r.item_key for kind in (KIND_USAGE, KIND_CDR, KIND_VOICEMAIL_BACKUP)
            for r in store.outbox_due(kind, now=float("inf"), limit=10**9)]


def all_rows(store: Store) -> list[OutboxRow]:
    rows = [r for kind in (KIND_USAGE, KIND_CDR, KIND_VOICEMAIL_BACKUP)
            for r in store.outbox_due(kind, now=float("inf"), limit=10**9)]
    return sorted(rows, key=lambda r: r.id)


@dataclass
class FakeClient:
    """Records what would reach the portal; ``fail`` raises once per call, in order."""

    fail: list[Exception] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    cdr_batches: list[tuple[str, list[str]]] = field(default_factory=list)
    usage: list[tuple[str, UsageReport]] = field(default_factory=list)
    backups: list[SealedBackup] = field(default_factory=list)
    calls: int = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fail:
            raise self.fail.pop(0)

    async def upload_cdrs(self, batch_id: str, records: Any) -> None:
        self._maybe_fail()
        if any(r["call_id"] in self.refuse for r in records):
            raise PortalRejected(400, "bad record")
        self.cdr_batches.append((batch_id, [r["call_id"] for r in records]))

    async def post_usage(self, key: str, report: UsageReport) -> None:
        self._maybe_fail()
        self.usage.append((key, report))

    async def put_voicemail_backup(self, b: SealedBackup) -> None:
        self._maybe_fail()
        if b.backup_id in self.refuse:
            raise PortalRejected(409, "backup_id already stored with different content")
        self.backups.append(b)

    @property
    def sent_call_ids(self) -> list[str]:
        return [c for _, ids in self.cdr_batches for c in ids]


def uploader(outbox: Outbox, client: FakeClient, clock: Clock, opt: OptIns = ALL_ON,
             **kw: Any) -> Uploader:
    kw.setdefault("rng", lambda: 0.5)  # no jitter
    return Uploader(outbox, lambda: client, opt_ins=lambda: opt, clock=clock, **kw)


def drain(up: Uploader) -> int:
    return asyncio.run(up.drain_once())


def drop_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [{"kind": r.kind, "items": r.items, "bytes": r.bytes, "reason": r.reason}
            for r in caplog.records if getattr(r, "event", None) == "outbox.drop"]


# --------------------------------------------------------------------------- schema


def test_migration_8_creates_the_outbox(store: Store) -> None:
    assert OUTBOX_SCHEMA_VERSION == 8 <= len(MIGRATIONS) == store.schema_version()
    tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_schema")}
    assert {"outbox", "outbox_drops", "outbox_state", "outbox_kind", "outbox_totals"} <= tables
    epoch = store.outbox_state("epoch")
    assert epoch is not None and len(epoch) == 8
    assert Outbox(store).stats() == {
        "queued": {}, "queued_items": 0, "queued_bytes": 0, "max_bytes": 64 * 1024 * 1024,
        "dropped": {}, "dropped_items": 0, "purged": {}}


# --------------------------------------------------------------------------- enqueue


def test_enqueue_is_idempotent_per_key(store: Store) -> None:
    clock = Clock()
    box = Outbox(store, clock=clock)
    report = UsageReport("2027-01-14", 3, 2, 1, 4.0, 0.0, 12)
    assert box.enqueue_usage(report) is True
    assert box.enqueue_usage(report) is False
    first = backup("bk1", 10)
    assert box.enqueue_voicemail_backup(first) is True
    # Sealing again gives other bytes: the queued (first) bytes are what will be sent.
    assert box.enqueue_voicemail_backup(SealedBackup("bk1", "201", b"other")) is False
    rows = all_rows(store)
    assert [(r.kind, r.item_key) for r in rows] == [
        (KIND_USAGE, "usage-2027-01-14"), (KIND_VOICEMAIL_BACKUP, "vmb:bk1")]
    assert rows[1].payload == b"201\0" + first.data
    assert json.loads(rows[0].payload) == report.as_json()
    stats = box.stats()
    assert stats["queued"][KIND_VOICEMAIL_BACKUP] == {
        "items": 1, "bytes": len(rows[1].payload), "oldest_at": clock.t}
    assert stats["queued_items"] == 2
    with pytest.raises(ValueError):
        box.enqueue_usage(UsageReport("14.01.2027", 0, 0, 0, None, None, 0))


# --------------------------------------------------------------------------- the bound


@pytest.mark.parametrize(("max_bytes", "items", "left", "dropped"), [
    # (kind, key, size) in enqueue order; left: keys kept; dropped: {kind: (items, bytes)}
    (1000, [("cdr", "a", 300), ("cdr", "b", 300), ("cdr", "c", 300)], "abc", {}),
    (1000, [("cdr", "a", 300), ("cdr", "b", 300), ("cdr", "c", 300), ("cdr", "d", 300)],
     "bcd", {"cdr": (1, 300)}),
    (500, [("usage", "a", 100), ("cdr", "b", 200), ("voicemail_backup", "c", 400)],
     "c", {"usage": (1, 100), "cdr": (1, 200)}),
    (500, [("cdr", "a", 100), ("voicemail_backup", "b", 600)], "",
     {"cdr": (1, 100), "voicemail_backup": (1, 600)}),  # bigger than the bound: dropped too
    (0, [("usage", "a", 1)], "", {"usage": (1, 1)}),
])
def test_the_bound_drops_the_oldest_first_and_reports_every_drop(
    store: Store, caplog: pytest.LogCaptureFixture, max_bytes: int,
    items: list[tuple[str, str, int]], left: str, dropped: dict[str, tuple[int, int]],
) -> None:
    caplog.set_level(logging.WARNING)
    for kind, key, size in items:
        store.outbox_enqueue([(kind, key, b"x" * size)], now=100.0, max_bytes=max_bytes)
    assert "".join(keys_in_order(store)) == left
    box = Outbox(store, max_bytes=max_bytes)
    stats = box.stats()
    assert {k: (v["items"], v["bytes"]) for k, v in stats["dropped"].items()} == dropped
    assert all(v["last_reason"] == "bound" and v["last_at"] == 100.0
               for v in stats["dropped"].values())
    assert stats["queued_bytes"] <= max_bytes
    logged: dict[str, tuple[int, int]] = {}
    for rec in drop_logs(caplog):
        n, b = logged.get(rec["kind"], (0, 0))
        logged[rec["kind"]] = (n + rec["items"], b + rec["bytes"])
        assert rec["reason"] == "bound"
    assert logged == dropped


def keys_in_order(store: Store) -> list[str]:
    return [r.item_key for r in all_rows(store)]


def test_drop_counts_accumulate_and_survive_a_restart(tmp_path: Path) -> None:
    with Store.open(tmp_path) as s:
        for i in range(10):
            s.outbox_enqueue([("cdr", f"k{i}", b"y" * 100)], now=float(i), max_bytes=250)
        lowered = Outbox(s, max_bytes=100, clock=Clock(50.0))
        assert lowered.enforce_bound() == 1
    with Store.open(tmp_path) as s:
        stats = Outbox(s, max_bytes=100).stats()
        assert stats["dropped"]["cdr"] == {"items": 9, "bytes": 900, "first_at": 2.0,
                                           "last_at": 50.0, "last_reason": "bound"}
        assert stats["dropped_items"] == 9 and keys_in_order(s) == ["k9"]


# --------------------------------------------------------------------------- CDRs


def test_cdrs_are_queued_in_the_transaction_that_stores_them(store: Store) -> None:
    assert store.append_call_records([cdr(1)]) == 1  # existing callers: nothing queued
    assert keys(store) == []
    assert store.append_call_records([cdr(1), cdr(2), cdr(3), cdr(3)], outbox_cdrs=True) == 2
    assert keys(store) == ["cdr:call-000002", "cdr:call-000003"]  # new ones only
    row = all_rows(store)[0]
    assert json.loads(row.payload) == record_as_dict(cdr(2))
    assert row.payload == cdr_outbox_payload(cdr(2)) and row.size == len(row.payload)
    # Delivered, then the same call stored again: not queued again.
    store.outbox_delete([row.id])
    assert store.append_call_records([cdr(2)], outbox_cdrs=True) == 0
    assert keys(store) == ["cdr:call-000003"]
    # A quality figure that JSON cannot carry becomes null, never a failed write.
    store.append_call_records([cdr(9, jitter_ms=float("nan"))], outbox_cdrs=True)
    assert json.loads(all_rows(store)[-1].payload)["jitter_ms"] is None


def test_a_failing_outbox_write_stores_no_cdr(store: Store) -> None:
    store._db.execute("CREATE TEMP TRIGGER no_outbox BEFORE INSERT ON outbox "
                      "BEGIN SELECT RAISE(ABORT, 'outbox broken'); END")
    with pytest.raises(sqlite3.IntegrityError, match="outbox broken"):
        store.append_call_records([cdr(1), cdr(2)], outbox_cdrs=True)
    assert store.call_records() == [] and keys(store) == []


def test_the_cdr_path_enforces_the_bound_in_its_transaction(
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    size = len(cdr_outbox_payload(cdr(1)))
    store.append_call_records([cdr(i) for i in range(5)], outbox_cdrs=True,
                              outbox_max_bytes=3 * size + 10)
    assert keys(store) == [f"cdr:call-{i:06d}" for i in (2, 3, 4)]
    assert len(store.call_records()) == 5  # the records themselves are all stored
    assert drop_logs(caplog) == [{"kind": "cdr", "items": 2, "bytes": 2 * size,
                                  "reason": "bound"}]


# --------------------------------------------------------------------------- disk full


def test_disk_full_drops_the_oldest_with_a_report_and_loses_nothing_else(
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    pages = int(store.pragma("page_count"))
    store._db.execute(f"PRAGMA max_page_count = {pages + 160}")  # ~640 KiB more
    stored = 0
    for n in range(0, 20_000, 20):  # grows until the disk is "full", then goes on once
        batch = [cdr(i, caller_name="x" * 400) for i in range(n, n + 20)]
        assert store.append_call_records(batch, outbox_cdrs=True) == 20
        stored += 20
        if store.outbox_dropped():
            break
    else:
        pytest.fail("the store never filled up")
    dropped = store.outbox_dropped()["cdr"]
    assert dropped["last_reason"] == "disk-full"
    logs = drop_logs(caplog)
    assert logs and all(r["reason"] == "disk-full" for r in logs)
    assert sum(r["items"] for r in logs) == dropped["items"]
    assert any(getattr(r, "event", None) == "outbox.disk_full" for r in caplog.records)
    # Every call is stored; the outbox lost exactly the reported oldest items.
    assert len(store.call_records()) == stored
    queued = keys_in_order(store)
    assert len(queued) == stored - dropped["items"]
    assert queued == [f"cdr:call-{i:06d}" for i in range(dropped["items"], stored)]

    # Something that cannot fit even after dropping: a clear error, and nothing changes.
    before = keys_in_order(store)
    with pytest.raises(OutboxDiskFull, match=r"disk is full.*nothing was written"):
        Outbox(store).enqueue_voicemail_backup(backup("huge", 4 * 1024 * 1024))
    assert keys_in_order(store) == before
    assert store.outbox_dropped()["cdr"] == dropped
    assert store.integrity_check() == ["ok"]


def test_disk_full_with_an_empty_outbox_is_a_clear_error(store: Store) -> None:
    pages = int(store.pragma("page_count"))
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(OutboxDiskFull, match="outbox is empty"):
        Outbox(store).enqueue_voicemail_backup(backup("big", 64 * 1024))
    assert keys(store) == []
    store.outbox_enqueue([("usage", "usage-2027-01-01", b"{}")], now=1.0)  # still usable


# --------------------------------------------------------------------------- daily usage


def berlin(day: str, hh: int, mm: int = 0) -> float:
    return datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}").replace(tzinfo=BERLIN).timestamp()


def test_usage_days_are_queued_once_complete_days_only(store: Store) -> None:
    clock = Clock()
    box = Outbox(store, clock=clock)
    store.append_call_records([
        cdr(1, start=berlin("2027-01-10", 9)),
        cdr(2, start=berlin("2027-01-12", 23, 30), answer=None, disposition="abandoned"),
        cdr(3, start=berlin("2027-01-13", 0, 10)),  # UTC: still the 12th
        cdr(4, start=berlin("2027-01-14", 8)),  # today: not complete
    ])
    today = date(2027, 1, 14)
    days = box.enqueue_due_usage("Europe/Berlin", 7, today)
    assert days == ["2027-01-10", "2027-01-11", "2027-01-12", "2027-01-13"]
    reports = {r.item_key: json.loads(r.payload) for r in all_rows(store)}
    assert reports["usage-2027-01-11"] == {
        "day": "2027-01-11", "calls": 0, "answered": 0, "abandoned": 0,
        "avg_time_to_answer": None, "avg_hold": None, "registered_phones": 7}
    assert reports["usage-2027-01-12"]["abandoned"] == 1
    assert reports["usage-2027-01-13"]["calls"] == 1
    assert reports["usage-2027-01-10"]["avg_time_to_answer"] == 3.0
    assert box.enqueue_due_usage("Europe/Berlin", 7, today) == []  # idempotent
    # Delivered and gone from the queue: still not queued again (the last day is kept).
    store.outbox_delete([r.id for r in all_rows(store)])
    assert box.enqueue_due_usage("Europe/Berlin", 7, today) == []
    # Epoch seconds work too; a restart-proof catch-up after two days off.
    assert box.enqueue_due_usage("Europe/Berlin", 7, berlin("2027-01-17", 0, 5)) == [
        "2027-01-14", "2027-01-15", "2027-01-16"]
    assert store.outbox_state("usage_last_day") == "2027-01-16"


@pytest.mark.parametrize(("call_days_back", "expected_first"), [
    (None, "2027-03-09"),  # no calls ever: yesterday only
    (3, "2027-03-07"),
    (400, "2027-02-07"),  # at most 31 days back on the first run
])
def test_first_usage_run(store: Store, call_days_back: int | None, expected_first: str) -> None:
    today = date(2027, 3, 10)
    if call_days_back is not None:
        start = datetime(2027, 3, 10, 12, tzinfo=UTC).timestamp() - call_days_back * 86400
        store.append_call_records([cdr(1, start=start)])
    days = Outbox(store).enqueue_due_usage("UTC", 1, today)
    assert days[0] == expected_first and days[-1] == "2027-03-09"


# --------------------------------------------------------------------------- decisions


def row(i: int, attempts: int = 0) -> OutboxRow:
    return OutboxRow(i, KIND_CDR, f"cdr:{i}", b"{}", 2, 0.0, attempts, 0.0, None)


@pytest.mark.parametrize(("kind", "rows", "outcome", "expected"), [
    (KIND_CDR, [row(1), row(2)], Delivered(), Step(delete=(1, 2))),
    (KIND_CDR, [row(1)], Unavailable("down"), Step(pause_until=101.0, error="down")),
    (KIND_CDR, [row(1)], Withdrawn("off"), Step(purge=True, error="off")),
    (KIND_CDR, [row(1), row(2), row(3)], Refused(400, "bad"),
     Step(retry=(1, 2, 3), retry_at=100.0, count_attempt=False, error="400 bad")),
    (KIND_CDR, [row(1, attempts=0)], Refused(400, "bad"),
     Step(retry=(1,), retry_at=101.0, error="400 bad")),
    (KIND_CDR, [row(1, attempts=3)], Refused(413, "too big"),
     Step(retry=(1,), retry_at=108.0, error="413 too big")),
    (KIND_CDR, [row(1, attempts=4)], Refused(400, "bad"),
     Step(drop=(1,), error="rejected: 400 bad")),
    (KIND_CDR, [row(1, attempts=4)], Refused(0, "ValueError: bad id"),
     Step(drop=(1,), error="rejected: ValueError: bad id")),
    (KIND_VOICEMAIL_BACKUP, [row(5)], Refused(409, "other bytes"), Step(delete=(5,))),
    (KIND_CDR, [row(5), row(6)], Refused(409, "concurrent request with the same key"),
     Step(pause_until=101.0, error="409 concurrent request with the same key")),
    (KIND_USAGE, [row(5)], Refused(403, "unknown device"),
     Step(pause_until=101.0, error="403 unknown device")),
    (KIND_USAGE, [row(5)], Refused(422, "no"), Step(retry=(5,), retry_at=101.0, error="422 no")),
])
def test_policy_table(kind: str, rows: list[OutboxRow], outcome: Any, expected: Step) -> None:
    policy = UploadPolicy(rng=lambda: 0.5)
    assert policy.decide(kind, rows, outcome, 100.0) == expected


def test_backoff_grows_caps_and_resets_on_success() -> None:
    policy = UploadPolicy(backoff=Backoff(base=1, factor=2, cap=60, jitter=0.2), rng=lambda: 0.5)
    waits = [policy.decide(KIND_CDR, [row(1)], Unavailable("x"), 0.0).pause_until
             for _ in range(9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert not policy.may_send(59.0) and policy.may_send(60.0)
    assert policy.decide(KIND_CDR, [row(1)], Delivered(), 61.0) == Step(delete=(1,))
    assert policy.failures == 0 and policy.may_send(0.0)
    assert policy.decide(KIND_CDR, [row(1)], Unavailable("x"), 100.0).pause_until == 101.0
    jittery = Backoff(jitter=0.2)
    assert [jittery.delay(3, u) for u in (0.0, 0.5, 0.999999)] == pytest.approx([3.2, 4, 4.8],
                                                                                 abs=1e-4)


def test_a_refused_batch_is_split_and_grows_back() -> None:
    policy = UploadPolicy(batch_size=1000)
    rows = [row(i) for i in range(1000)]
    policy.decide(KIND_CDR, rows, Refused(400, "bad"), 0.0)
    assert policy.size_for(KIND_CDR) == 500
    policy.decide(KIND_CDR, rows[:500], Refused(400, "bad"), 0.0)
    assert policy.size_for(KIND_CDR) == 250
    for expected in (500, 1000, 1000):
        policy.decide(KIND_CDR, rows[:1], Delivered(), 0.0)
        assert policy.size_for(KIND_CDR) == expected
    assert policy.size_for(KIND_USAGE) == policy.size_for(KIND_VOICEMAIL_BACKUP) == 1


# --------------------------------------------------------------------------- the uploader


def test_uploader_sends_everything_in_batches_with_deterministic_keys(store: Store) -> None:
    clock = Clock()
    box = Outbox(store, clock=clock)
    store.append_call_records([cdr(i) for i in range(25)], outbox_cdrs=True)
    box.enqueue_usage(UsageReport("2027-01-14", 25, 25, 0, 3.0, 0.0, 4))
    box.enqueue_voicemail_backup(backup("bk1", 50))
    client = FakeClient()
    up = uploader(box, client, clock, batch_size=10)
    ids = [r.id for r in all_rows(store) if r.kind == KIND_CDR]
    assert drain(up) == 27
    epoch = store.outbox_state("epoch")
    assert [k for k, _ in client.cdr_batches] == [
        f"cdr-{epoch}-{ids[0]}-{ids[9]}-10", f"cdr-{epoch}-{ids[10]}-{ids[19]}-10",
        f"cdr-{epoch}-{ids[20]}-{ids[24]}-5"]
    assert client.sent_call_ids == [f"call-{i:06d}" for i in range(25)]
    assert client.usage == [("usage-2027-01-14",
                             UsageReport("2027-01-14", 25, 25, 0, 3.0, 0.0, 4))]
    assert client.backups == [backup("bk1", 50)]
    assert keys(store) == [] and up.delivered == {"cdr": 25, "usage": 1,
                                                  "voicemail_backup": 1}


def test_unavailable_keeps_everything_and_backs_off(store: Store) -> None:
    clock = Clock(1000.0)
    box = Outbox(store, clock=clock)
    store.append_call_records([cdr(i) for i in range(3)], outbox_cdrs=True)
    client = FakeClient(fail=[PortalUnavailable("503"), TunnelNotReady("down")])
    up = uploader(box, client, clock)
    assert drain(up) == 0 and up.policy.paused_until == 1001.0
    assert drain(up) == 0 and client.calls == 1  # paused: no request at all
    clock.t = 1001.0
    assert drain(up) == 0 and up.policy.paused_until == 1003.0  # second failure: 2 s
    clock.t = 1003.0
    assert drain(up) == 3 and up.policy.failures == 0 and up.policy.may_send(clock.t)
    assert client.sent_call_ids == [f"call-{i:06d}" for i in range(3)]
    assert up.status()["state"] == "ready" and up.status()["last_error"] is None


def test_no_client_means_backoff(store: Store) -> None:
    clock = Clock(0.0)
    box = Outbox(store, clock=clock)
    store.append_call_records([cdr(1)], outbox_cdrs=True)

    def factory() -> Any:
        raise TunnelNotReady("the tunnel to the portal is not up")

    up = Uploader(box, client=factory, opt_ins=lambda: ALL_ON, clock=clock, rng=lambda: 0.5)
    assert drain(up) == 0 and up.policy.paused_until == 1.0 and len(keys(store)) == 1
    assert "tunnel" in (up.last_error or "")


def test_opt_in_off_purges_that_kind_and_sends_none_of_it(
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    box = Outbox(store, clock=clock)
    store.append_call_records([cdr(i) for i in range(4)], outbox_cdrs=True)
    box.enqueue_voicemail_backup(backup("bk1"))
    box.enqueue_usage(UsageReport("2027-01-14", 4, 4, 0, 3.0, 0.0, 4))
    client = FakeClient()
    up = uploader(box, client, clock, opt=OptIns(cdr_upload=False, voicemail_backup=False))
    drain(up)
    assert client.cdr_batches == [] and client.backups == []
    assert [k for k, _ in client.usage] == ["usage-2027-01-14"]  # aggregates always go
    assert keys(store) == []
    stats = box.stats()
    assert stats["dropped"] == {}  # a purge is not a drop ...
    assert stats["purged"] == {"cdr": {"items": 4, "bytes": 4 * len(cdr_outbox_payload(cdr(0)))},
                               "voicemail_backup": {"items": 1, "bytes": 104}}
    purges = [(r.kind, r.items) for r in caplog.records
              if getattr(r, "event", None) == "outbox.purge"]
    assert purges == [("cdr", 4), ("voicemail_backup", 1)]  # ... but it is logged
    assert box.purge(KIND_CDR) == 0
    with pytest.raises(ValueError, match="unknown outbox kind"):
        box.purge("voicemail")


def test_opt_in_required_from_the_client_purges(store: Store) -> None:
    from agent.cloud.portal_client import OptInRequired

    clock = Clock()
    box = Outbox(store, clock=clock)
    store.append_call_records([cdr(1)], outbox_cdrs=True)
    client = FakeClient(fail=[OptInRequired("CDR upload is off")])
    drain(uploader(box, client, clock))
    assert keys(store) == [] and box.stats()["purged"]["cdr"]["items"] == 1


def test_a_refused_record_is_isolated_retried_and_dropped_with_a_report(
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock(0.0)
    box = Outbox(store, clock=clock)
    store.append_call_records([cdr(i) for i in range(40)], outbox_cdrs=True)
    client = FakeClient(refuse={"call-000013"})
    up = uploader(box, client, clock, batch_size=16)
    for _ in range(5):
        drain(up)
        bad = [r for r in all_rows(store)]
        clock.t = max([clock.t] + [r.next_attempt_at for r in bad]) + 0.001
    assert sorted(client.sent_call_ids) == [f"call-{i:06d}" for i in range(40) if i != 13]
    assert len(set(client.sent_call_ids)) == 39
    assert keys(store) == []
    assert box.stats()["dropped"]["cdr"] == {
        "items": 1, "bytes": len(cdr_outbox_payload(cdr(13))), "first_at": clock.t - 0.001,
        "last_at": clock.t - 0.001, "last_reason": "rejected: 400 bad record"}
    assert drop_logs(caplog) == [{"kind": "cdr", "items": 1,
                                  "bytes": len(cdr_outbox_payload(cdr(13))),
                                  "reason": "rejected: 400 bad record"}]


def test_a_backup_the_portal_already_holds_is_done(store: Store) -> None:
    clock = Clock()
    box = Outbox(store, clock=clock)
    box.enqueue_voicemail_backup(backup("bk9"))
    client = FakeClient(refuse={"bk9"})
    assert drain(uploader(box, client, clock)) == 1 and keys(store) == []
    assert box.stats()["dropped"] == {}


def test_run_poke_and_stop(store: Store) -> None:
    box = Outbox(store)
    client = FakeClient()

    async def main() -> None:
        up = Uploader(box, lambda: client, opt_ins=lambda: ALL_ON, idle_poll=30.0)
        task = asyncio.create_task(up.run())
        await asyncio.sleep(0.05)
        store.append_call_records([cdr(1), cdr(2)], outbox_cdrs=True)
        up.poke()
        for _ in range(100):
            if client.cdr_batches:
                break
            await asyncio.sleep(0.02)
        # A poke from another thread (the voicemail store's hooks run in threads).
        box.enqueue_voicemail_backup(backup("bk1"))
        await asyncio.to_thread(up.poke)
        for _ in range(100):
            if client.backups:
                break
            await asyncio.sleep(0.02)
        up.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert client.sent_call_ids == ["call-000001", "call-000002"]
    assert [b.backup_id for b in client.backups] == ["bk1"]


# --------------------------------------------------------------------------- the real portal


@dataclass
class LivePortal:
    running: Running
    url: str

    @property
    def portal(self) -> Any:
        return self.running.portal

    def enroll(self, state_dir: Path) -> DeviceIdentity:
        """Create the device at the portal and enroll it (the portal's own /v1/enroll logic)."""
        ident = DeviceIdentity.load_or_create(state_dir)
        token = self.portal.create_device(ident.serial, None, "admin", "test")["claim_token"]
        issued = self.portal.enroll({"claim_token": token, "csr_pem": ident.csr_pem()})
        ident.store_certificate(issued["certificate_pem"], issued["ca_chain_pem"])
        return ident

    def call_ids(self, serial: str) -> list[str]:
        return [r["call_id"] for r in self.portal.store.all(
            "SELECT call_id FROM cdrs WHERE serial = ? ORDER BY call_id", serial)]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePortal]:
    data = tmp_path_factory.mktemp("portal")
    running = start(data, make_pki(data / "pki", ips=[INNER], hostnames=["localhost"]))
    try:
        yield LivePortal(running, f"https://{INNER}:{running.ports['device']}")
    finally:
        running.stop()


def test_end_to_end_exactly_once_over_mutual_tls(live: LivePortal, tmp_path: Path) -> None:
    ident = live.enroll(tmp_path)
    serial = ident.serial
    store = Store.open(tmp_path)
    box = Outbox(store)
    records = [cdr(i) for i in range(2500)]
    for n in range(0, 2500, 100):
        store.append_call_records(records[n:n + 100], outbox_cdrs=True)
    report = UsageReport("2027-01-14", 2500, 2500, 0, 3.0, 0.0, 9)
    box.enqueue_usage(report)
    box.enqueue_voicemail_backup(backup("bk-e2e", 3000))

    def client() -> PortalClient:
        return PortalClient.from_identity(ident, live.url, inner_address=INNER,
                                          opt_ins=lambda: ALL_ON)

    up = Uploader(box, client, opt_ins=lambda: ALL_ON, batch_size=1000,
                  backoff=Backoff(base=0.01, cap=0.05))

    async def main() -> None:
        # The portal commits a batch but the answer is lost (cut short), then it is down
        # once: the device must resend the same batch, which the portal replays.
        live.portal.set_faults({"truncate": True, "paths": ["/v1/cdr"], "count": 1})
        await up.drain_once()
        assert up.policy.failures == 1 and len(live.call_ids(serial)) == 1000
        # Usage went first; no CDR left the queue without an answer.
        assert [k for k in keys(store) if k.startswith("cdr:")] == [
            f"cdr:{r.call_id}" for r in records]
        live.portal.set_faults({"status": 503, "paths": ["/v1/cdr"], "count": 1})
        for _ in range(50):
            if not keys(store):
                break
            await asyncio.sleep(0.02)
            await up.drain_once()

    try:
        asyncio.run(main())
    finally:
        live.portal.clear_faults()
    assert keys(store) == []
    assert live.call_ids(serial) == sorted(r.call_id for r in records)  # each exactly once
    stored = live.portal.store.all(
        "SELECT record FROM cdrs WHERE serial = ? AND call_id = 'call-000042'", serial)
    assert json.loads(stored[0]["record"]) == record_as_dict(records[42])
    usage = live.portal.store.all("SELECT day, body FROM usage WHERE serial = ?", serial)
    assert [(u["day"], json.loads(u["body"])) for u in usage] == [("2027-01-14",
                                                                   report.as_json())]
    backups = live.portal.store.all(
        "SELECT backup_id, mailbox, content FROM voicemail_backups WHERE serial = ?", serial)
    assert [(b["backup_id"], b["mailbox"], bytes(b["content"])) for b in backups] == [
        ("bk-e2e", "201", backup("bk-e2e", 3000).data)]
    replays = live.portal.store.all(
        "SELECT COUNT(*) AS n FROM idempotency WHERE serial = ? AND endpoint = 'cdr'", serial)
    assert replays[0]["n"] == 3  # three keys: the resent first batch kept its key
    store.close()


WORKER_TOTAL = 4000  # stored 20 at a time every 10 ms: about 2 s of work per worker


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    live: LivePortal, tmp_path: Path,
) -> None:
    ident = live.enroll(tmp_path)
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", str(tmp_path), live.url,
           str(WORKER_TOTAL)]
    rng = random.Random(20270114)
    at_kill: list[int] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "the worker did not start"
        time.sleep(rng.uniform(0.05, 0.35))
        assert proc.poll() is None, "the worker finished before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        at_kill.append(len(live.call_ids(ident.serial)))
    # The kills hit while records were being stored and uploaded.
    assert 0 < at_kill[-1] < WORKER_TOTAL and at_kill == sorted(at_kill)
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env,
                           check=False)
    assert final.returncode == 0, final.stderr[-3000:]
    assert final.stdout.split() == ["ready", "done"]
    assert live.call_ids(ident.serial) == [f"call-{i:06d}" for i in range(WORKER_TOTAL)]
    with Store.open(tmp_path) as s:
        assert s.outbox_queued() == {} and s.outbox_dropped() == {}
        assert len(s.call_records()) == WORKER_TOTAL
        assert s.integrity_check() == ["ok"]


def _worker(state_dir: str, url: str, total: int) -> int:
    """The device side of the kill -9 test: store CDRs (opt-in on) and drain them."""
    store = Store.open(state_dir)
    ident = DeviceIdentity.load_or_create(state_dir)
    box = Outbox(store)

    def client() -> PortalClient:
        return PortalClient.from_identity(ident, url, inner_address=INNER,
                                          opt_ins=lambda: ALL_ON)

    up = Uploader(box, client, opt_ins=lambda: ALL_ON, batch_size=250,
                  backoff=Backoff(base=0.05, cap=0.2))
    print("ready", flush=True)

    async def main() -> None:
        task = asyncio.create_task(up.run())
        done = len(store.call_records())  # batches are stored whole: resume after them
        for n in range(done - done % 20, total, 20):
            store.append_call_records([cdr(i) for i in range(n, min(total, n + 20))],
                                      outbox_cdrs=True)
            up.poke()
            await asyncio.sleep(0.01)
        while store.outbox_queued():
            up.poke()
            await asyncio.sleep(0.02)
        up.stop()
        await task

    asyncio.run(main())
    store.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    sys.exit(_worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
