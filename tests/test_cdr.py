"""Call detail records: the record, the store's cdr table, ``edgepbx cdr`` and ``edgepbx calls``."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from agent_fakes import FakeProvider, control_server

from agent.cdr import (
    CALL_RECORD_FIELDS,
    DIRECTIONS,
    DISPOSITIONS,
    CallRecord,
    DailyCallStats,
    daily_stats,
    record_as_dict,
)
from agent.cli import call_row, main, parse_when
from agent.control import ControlClient
from agent.main import Agent
from agent.store import CDR_SCHEMA_VERSION, MIGRATIONS, Store, StoreError

REPO = Path(__file__).resolve().parent.parent
NY = ZoneInfo("America/New_York")


def local(text: str, tz: ZoneInfo = NY) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def rec(call_id: str = "c1", *, start: float = 1_700_000_000.0, ring: float | None = 4.0,
        talk: float = 60.0, disposition: str | None = None, **kw: Any) -> CallRecord:
    """An answered call after ``ring`` seconds, or (ring=None) an unanswered one."""
    answer = None if ring is None else start + ring
    end = (answer + talk) if answer is not None else start + 20.0
    values: dict[str, Any] = {
        "call_id": call_id, "direction": "internal", "caller": "101",
        "caller_name": "Alice Adler", "callee": "102", "dialed": "102", "start": start,
        "answer": answer, "end": end,
        "disposition": disposition or ("answered" if answer is not None else "no-answer"),
        "hold_seconds": 0.0, "hunt_group": None, "trunk": None,
        "cause": "caller-bye" if answer is not None else "timeout",
    }
    values.update(kw)
    return CallRecord(**values)


# ------------------------------------------------------------------------------ the record


def test_record_properties() -> None:
    r = rec(ring=4.5, talk=30.0)
    assert r.time_to_answer == 4.5
    assert r.talk_seconds == 30.0
    assert r.duration == 34.5
    missed = rec(ring=None, disposition="abandoned", cause="cancel")
    assert missed.time_to_answer is None
    assert missed.talk_seconds == 0.0
    assert {"internal", "outbound", "inbound"} == DIRECTIONS
    assert {"answered", "busy", "no-answer", "failed", "abandoned"} == DISPOSITIONS
    assert CALL_RECORD_FIELDS[0] == "call_id" and len(CALL_RECORD_FIELDS) == 17
    d = record_as_dict(r)
    assert list(d) == [*CALL_RECORD_FIELDS, "time_to_answer"]
    assert d["time_to_answer"] == 4.5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"direction": "sideways"}, "unknown direction 'sideways'"),
        ({"disposition": "lost"}, "unknown disposition 'lost'"),
        ({"end": 1_699_999_999.0, "answer": None, "disposition": "failed"},
         "is before start"),
        ({"call_id": ""}, "call_id must not be empty"),
        ({"answer": 1_699_999_990.0}, "is not between start"),
        ({"answer": None}, "exactly when it was answered"),
        ({"disposition": "busy"}, "exactly when it was answered"),
        ({"hold_seconds": -1.0}, "must not be negative"),
        ({"start": float("nan")}, "start must be a finite number"),
        ({"answer": float("inf")}, "answer must be a finite number"),
    ],
)
def test_record_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(rec(), **changes)


def test_record_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec().caller = "999"  # type: ignore[misc]


# ------------------------------------------------------------------------------ the store


def test_migration_adds_cdr_table(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        assert store.schema_version() == len(MIGRATIONS) >= CDR_SCHEMA_VERSION
        assert store.call_records() == []
        assert store.pragma("synchronous") == 1
        assert store.integrity_check() == ["ok"]


def test_migrating_a_version_1_store_keeps_its_data(state_dir: Path) -> None:
    with Store.open(state_dir, migrations=MIGRATIONS[:1]) as store:
        store.append_audit(actor="t", role="admin", action="before")
        assert store.schema_version() == 1
    with Store.open(state_dir) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert [e.action for e in store.audit_entries()] == ["before"]
        assert store.append_call_records([rec()]) == 1


def test_append_and_read_back(state_dir: Path) -> None:
    records = [
        rec("a", start=1000.0),
        rec("b", start=2000.0, ring=None, disposition="busy", cause="486", callee="",
            hunt_group="600", trunk="sipgate", direction="inbound", caller="+4930123",
            caller_name=""),
        rec("c", start=3000.0, hold_seconds=12.5, direction="outbound", trunk="t1"),
    ]
    with Store.open(state_dir) as store:
        assert store.append_call_records(records) == 3
        assert store.call_records() == records[::-1]
        assert store.call_records(newest_first=False) == records
        assert store.call_records(since=2000.0) == [records[2], records[1]]
        assert store.call_records(until=2000.0) == [records[0]]
        assert store.call_records(since=1000.0, until=3000.0, newest_first=False) == records[:2]
        assert store.call_records(limit=1) == [records[2]]
        assert store.call_records(limit=1, newest_first=False) == [records[0]]
        assert store.call_records(limit=0) == []
        with pytest.raises(ValueError):
            store.call_records(limit=-1)
        assert store.append_call_records([]) == 0
        with pytest.raises(TypeError):
            store.append_call_records([object()])  # type: ignore[list-item]


def test_reappend_is_idempotent(state_dir: Path) -> None:
    batch = [rec("a", start=1000.0), rec("b", start=1100.0)]
    with Store.open(state_dir) as store:
        assert store.append_call_records(batch) == 2
        # A retried batch, with one new call and one changed copy of an old one.
        retry = [*batch, rec("c", start=1200.0), dataclasses.replace(batch[0], caller="999")]
        assert store.append_call_records(retry) == 1
        got = store.call_records(newest_first=False)
        assert [r.call_id for r in got] == ["a", "b", "c"]
        assert got[0].caller == "101"  # the first version of a call id wins


def test_cdr_commit_is_synchronous_full_then_normal(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        store.append_call_records([rec()])
        store._db.set_trace_callback(None)
        assert store.pragma("synchronous") == 1  # back to NORMAL for everything else
        sequence = [s for s in statements
                    if s.startswith(("PRAGMA synchronous", "BEGIN", "COMMIT", "INSERT"))]
        assert sequence[0] == "PRAGMA synchronous=FULL"
        assert sequence[1] == "BEGIN IMMEDIATE"
        assert sequence[2].startswith("INSERT OR IGNORE INTO cdr")
        assert sequence[-2:] == ["COMMIT", "PRAGMA synchronous=NORMAL"]


def test_failed_batch_writes_nothing_and_restores_normal(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        store._CDR_INSERT_SQL = "INSERT INTO no_such_table VALUES (?)"  # type: ignore[misc]
        with pytest.raises(sqlite3.Error):
            store.append_call_records([rec()])
        assert store.pragma("synchronous") == 1
        del store._CDR_INSERT_SQL  # type: ignore[misc]
        assert store.call_records() == []
        assert store.append_call_records([rec()]) == 1


def test_records_survive_reopen(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        store.append_call_records([rec("a"), rec("b", start=1_700_000_100.0)])
    with Store.open(state_dir) as store:
        assert [r.call_id for r in store.call_records()] == ["b", "a"]


def test_records_survive_kill(state_dir: Path) -> None:
    """The writer dies right after the commit (no close, no checkpoint): nothing is lost."""
    code = (
        "import os, sys\n"
        "from agent.store import Store\n"
        "from agent.cdr import CallRecord\n"
        "s = Store.open(sys.argv[1])\n"
        "s.append_call_records([CallRecord('k1', 'internal', '101', '', '102', '102', 10.0,"
        " 12.0, 40.0, 'answered', 0.0, None, None, 'callee-bye')])\n"
        "os._exit(0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(state_dir)], cwd=REPO,
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    with Store.open(state_dir) as store:
        assert [r.call_id for r in store.call_records()] == ["k1"]
        assert store.integrity_check() == ["ok"]


def test_open_readonly(state_dir: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        Store.open_readonly(state_dir)
    assert not (state_dir / "edgepbx.db").exists()  # nothing created
    with Store.open(state_dir) as store:
        store.append_call_records([rec()])
    with Store.open_readonly(state_dir) as ro:
        assert ro.schema_version() == len(MIGRATIONS)
        assert [r.call_id for r in ro.call_records()] == ["c1"]
        with pytest.raises(sqlite3.Error):
            ro.append_call_records([rec("c2")])
    # ... also while the agent has the store open
    with Store.open(state_dir) as writer, Store.open_readonly(state_dir) as ro:
        writer.append_call_records([rec("c3", start=1_700_000_500.0)])
        assert [r.call_id for r in ro.call_records()] == ["c3", "c1"]


# ------------------------------------------------------------------------------ aggregates


def test_daily_stats_across_a_time_zone_boundary(state_dir: Path) -> None:
    late = local("2024-01-15T23:30:00")  # 04:30 UTC on the 16th
    records = [
        rec("late", start=late, ring=6.0, talk=100.0, hold_seconds=10.0),
        rec("early", start=local("2024-01-15T09:00:00"), ring=2.0, talk=50.0),
        rec("gone", start=local("2024-01-15T10:00:00"), ring=None, disposition="abandoned",
            cause="cancel"),
        rec("next", start=local("2024-01-16T08:00:00"), ring=None, disposition="busy",
            cause="486"),
        rec("x", start=local("2024-01-16T09:00:00"), ring=None, disposition="failed",
            cause="404"),
    ]
    with Store.open(state_dir) as store:
        store.append_call_records(records)
        ny = store.daily_call_stats("America/New_York")
        utc = store.daily_call_stats("UTC")
        only_16th = store.daily_call_stats(
            "America/New_York", since=local("2024-01-16T00:00:00"))
        with pytest.raises(ValueError, match="not a known IANA time zone"):
            store.daily_call_stats("Mars/Olympus")
    assert ny == [
        DailyCallStats("2024-01-15", calls=3, answered=2, abandoned=1, busy=0, no_answer=0,
                       failed=0, avg_time_to_answer=4.0, avg_hold=5.0,
                       total_talk_seconds=150.0),
        DailyCallStats("2024-01-16", calls=2, answered=0, abandoned=0, busy=1, no_answer=0,
                       failed=1, avg_time_to_answer=None, avg_hold=None,
                       total_talk_seconds=0.0),
    ]
    # In UTC the 23:30 call belongs to the 16th.
    assert [(d.day, d.calls, d.answered) for d in utc] == [("2024-01-15", 2, 1),
                                                           ("2024-01-16", 3, 1)]
    assert utc[1].avg_time_to_answer == 6.0 and utc[1].avg_hold == 10.0
    assert [d.day for d in only_16th] == ["2024-01-16"]


def test_daily_stats_omits_empty_days_and_counts_no_answer() -> None:
    records = [rec("a", start=local("2024-03-01T12:00:00")),
               rec("b", start=local("2024-03-05T12:00:00"), ring=None)]
    days = daily_stats(records, "America/New_York")
    assert [d.day for d in days] == ["2024-03-01", "2024-03-05"]
    assert days[1].no_answer == 1
    assert daily_stats([], "UTC") == []


# ------------------------------------------------------------------------------ edgepbx cdr


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cdr_state(state_dir: Path) -> Path:
    with Store.open(state_dir) as store:
        store.record_site_version("fp1", {"site": {"name": "X", "timezone": "America/New_York",
                                                   "realm": "pbx.test"}})
        store.append_call_records([
            rec("a1", start=local("2024-01-15T09:00:00"), ring=2.5, talk=61.0),
            rec("a2", start=local("2024-01-15T23:30:00"), ring=None, disposition="abandoned",
                cause="cancel", caller="+15551234", caller_name="", direction="inbound",
                trunk="carrier", hunt_group="600", callee=""),
            rec("a3", start=local("2024-01-16T10:00:00"), ring=3.0, talk=10.0,
                hold_seconds=4.0, caller_name='Bob "B", Jr.'),
        ])
    return state_dir


def test_cli_cdr_csv(cdr_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--state-dir", str(cdr_state), "cdr", "--format", "csv"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [*CALL_RECORD_FIELDS, "time_to_answer"]
    assert [r["call_id"] for r in rows] == ["a3", "a2", "a1"]
    assert rows[0]["caller_name"] == 'Bob "B", Jr.'  # quoted properly
    assert rows[1]["answer"] == "" and rows[1]["time_to_answer"] == ""
    assert rows[1]["hunt_group"] == "600" and rows[1]["trunk"] == "carrier"
    assert float(rows[2]["time_to_answer"]) == 2.5
    assert float(rows[2]["start"]) == local("2024-01-15T09:00:00")


def test_cli_cdr_json_and_filters(cdr_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert [d["call_id"] for d in data] == ["a3", "a2", "a1"]
    assert data[2]["time_to_answer"] == 2.5 and data[1]["time_to_answer"] is None
    assert data[1]["answer"] is None and data[1]["disposition"] == "abandoned"
    # A bare date is a whole day in the site's time zone (from the store): --until includes it.
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--format", "json",
                        "--since", "2024-01-15", "--until", "2024-01-15"], capsys)
    assert [d["call_id"] for d in json.loads(out)] == ["a2", "a1"]
    # ... and in UTC the 23:30 New York call is on the 16th.
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--format", "json",
                        "--timezone", "UTC", "--since", "2024-01-16"], capsys)
    assert [d["call_id"] for d in json.loads(out)] == ["a3", "a2"]
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--format", "json",
                        "--since", "2024-01-15T12:00", "--until", "2024-01-16T10:00:00-05:00",
                        "--limit", "5"], capsys)
    assert [d["call_id"] for d in json.loads(out)] == ["a2"]
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--format", "json",
                        "--limit", "1"], capsys)
    assert [d["call_id"] for d in json.loads(out)] == ["a3"]


def test_cli_cdr_table(cdr_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr"], capsys)
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["START", "DIRECTION", "CALLER"]
    assert len(lines) == 3
    assert lines[2].split() == ["2024-01-15", "09:00:00", "internal", "Alice", "Adler", "<101>",
                                "102", "102", "answered", "2.5s", "1m", "01s", "0.0s",
                                "caller-bye"]
    assert lines[1].split() == ["2024-01-15", "23:30:00", "inbound", "+15551234", "-", "102",
                                "abandoned", "-", "-", "-", "cancel"]
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--timezone", "UTC",
                        "--limit", "1"], capsys)
    assert out.splitlines()[1].startswith("2024-01-16 15:00:00")


def test_cli_cdr_daily(cdr_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--daily", "--format", "json"],
                       capsys)
    assert code == 0
    assert json.loads(out) == [
        {"day": "2024-01-15", "calls": 2, "answered": 1, "abandoned": 1, "busy": 0,
         "no_answer": 0, "failed": 0, "avg_time_to_answer": 2.5, "avg_hold": 0.0,
         "total_talk_seconds": 61.0},
        {"day": "2024-01-16", "calls": 1, "answered": 1, "abandoned": 0, "busy": 0,
         "no_answer": 0, "failed": 0, "avg_time_to_answer": 3.0, "avg_hold": 4.0,
         "total_talk_seconds": 10.0},
    ]
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--daily", "--format", "csv",
                        "--timezone", "UTC"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["day"], r["calls"]) for r in rows] == [("2024-01-15", "1"), ("2024-01-16", "2")]
    code, out, _ = run(["--state-dir", str(cdr_state), "cdr", "--daily"], capsys)
    header, first, second = out.splitlines()
    assert header.split()[:3] == ["DAY", "CALLS", "ANSWERED"]
    assert first.split()[:7] == ["2024-01-15", "2", "1", "1", "0", "0", "0"]
    assert first.split()[7:] == ["2.5s", "0.0s", "1m", "01s"]
    assert second.split() == ["2024-01-16", "1", "1", "0", "0", "0", "0", "3.0s", "4.0s", "10s"]


def test_cli_cdr_errors(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--state-dir", str(state_dir), "cdr"], capsys)
    assert code == 1 and out == ""
    assert "no store at" in err
    assert not (state_dir / "edgepbx.db").exists()
    Store.open(state_dir).close()
    code, out, _ = run(["--state-dir", str(state_dir), "cdr"], capsys)
    assert (code, out) == (0, "no call records\n")
    code, out, _ = run(["--state-dir", str(state_dir), "cdr", "--format", "json"], capsys)
    assert (code, json.loads(out)) == (0, [])
    code, _, err = run(["--state-dir", str(state_dir), "cdr", "--since", "last tuesday"], capsys)
    assert code == 2 and "neither a date" in err
    code, _, err = run(["--state-dir", str(state_dir), "cdr", "--timezone", "Nowhere/X"], capsys)
    assert code == 2 and "not a known IANA time zone" in err
    with pytest.raises(SystemExit):
        main(["--state-dir", str(state_dir), "cdr", "--limit", "-3"])


def test_cli_cdr_on_a_store_without_the_cdr_table(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Store.open(state_dir, migrations=MIGRATIONS[:1]).close()
    code, out, _ = run(["--state-dir", str(state_dir), "cdr", "--daily"], capsys)
    assert (code, out) == (0, "no call records\n")
    with Store.open_readonly(state_dir) as ro:
        assert ro.schema_version() == 1  # the CLI did not migrate it


def test_parse_when() -> None:
    assert parse_when("2024-01-15", NY) == local("2024-01-15T00:00:00")
    assert parse_when("2024-01-15", NY, end_of_day=True) == local("2024-01-16T00:00:00")
    assert parse_when("2024-01-15T10:30", NY) == local("2024-01-15T10:30:00")
    assert parse_when("2024-01-15T10:30:00Z", NY) == local("2024-01-15T05:30:00")
    with pytest.raises(ValueError):
        parse_when("yesterday", NY)


# ------------------------------------------------------------------------------ edgepbx calls

def active_calls() -> list[dict[str, Any]]:
    now = time.time()
    return [
        {"id": "0123456789abcdef0123456789abcdef", "state": "talking", "caller": "101",
         "caller_name": "Alice", "callee": "102", "dialed": "102",
         "started_at": now - 75, "answered_at": now - 65},
        {"id": "fedcba9876543210", "state": "ringing", "caller": "+15551234", "callee": None,
         "dialed": "600", "age_s": 5, "answered_at": None},
    ]


def test_control_calls_command(state_dir: Path) -> None:
    provider = FakeProvider(calls=[{"id": "x", "state": "ringing"}])
    with control_server(state_dir, provider):
        client = ControlClient(state_dir)
        assert client.request("calls") == [{"id": "x", "state": "ringing"}]
        provider.active_calls = []
        assert client.request("calls") == []


def test_cli_calls(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    active = active_calls()
    provider = FakeProvider(calls=active)
    with control_server(state_dir, provider):
        code, out, err = run(["--state-dir", str(state_dir), "calls"], capsys)
        assert code == 0, err
        header, first, second = out.splitlines()
        assert header.split() == ["ID", "STATE", "CALLER", "CALLEE", "DIALED", "STARTED",
                                  "ANSWERED"]
        cells = first.split()
        assert cells[:6] == ["456789abcdef", "talking", "Alice", "<101>", "102", "102"]
        assert cells[6] == "1m" and cells[7] in ("14s", "15s", "16s")
        assert cells[8] == "1m" and cells[9] in ("04s", "05s", "06s")
        assert second.split() == ["ba9876543210", "ringing", "+15551234", "-", "600", "5s", "-"]
        code, out, _ = run(["--state-dir", str(state_dir), "calls", "--json"], capsys)
        assert code == 0
        assert [c["id"] for c in json.loads(out)] == [active[0]["id"], active[1]["id"]]
        provider.active_calls = []
        assert run(["--state-dir", str(state_dir), "calls"], capsys)[1] == "no active calls\n"


def test_cli_calls_without_agent(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--state-dir", str(state_dir), "calls"], capsys)
    assert (code, out) == (2, "")
    assert err == f"edgepbx: no agent running on {state_dir} (control socket missing)\n"


def test_call_row_tolerates_missing_keys() -> None:
    assert call_row({}, 0.0) == ("?", "?", "?", "-", "-", "-", "-")


def test_agent_calls_delegates_to_the_service() -> None:
    assert Agent.calls(SimpleNamespace(service=None)) == []  # type: ignore[arg-type]
    service = SimpleNamespace(active_calls=lambda: ({"id": "a"},))
    assert Agent.calls(SimpleNamespace(service=service)) == [{"id": "a"}]  # type: ignore[arg-type]


def test_db_stays_private(cdr_state: Path) -> None:
    assert os.stat(cdr_state / "edgepbx.db").st_mode & 0o077 == 0


def test_media_quality_is_kept_and_older_stores_read_without_it(state_dir: Path) -> None:
    from agent.store import MIGRATIONS

    record = CallRecord(call_id="q1", direction="internal", caller="101", caller_name="A",
                        callee="voicemail", dialed="102", start=10.0, answer=11.0, end=20.0,
                        disposition="answered", hold_seconds=0.0, hunt_group=None,
                        trunk=None, cause="caller-bye", jitter_ms=3.5, loss_percent=0.5,
                        rtt_ms=None)
    with Store.open(state_dir) as store:
        store.append_call_records([record])
        assert store.call_records() == [record]
    older = state_dir / "older"
    older.mkdir()
    with Store.open(older, migrations=MIGRATIONS[:6]) as store:  # before media quality
        store.append_call_records([])
        store._db.execute(  # a row as an agent of schema 6 wrote it
            'INSERT INTO cdr (call_id, direction, caller, caller_name, callee, dialed, start,'
            ' answer, "end", disposition, hold_seconds, hunt_group, trunk, cause) VALUES'
            " ('o1','internal','101','A','102','102',1.0,2.0,3.0,'answered',0.0,NULL,NULL,'x')")
    reader = Store.open_readonly(older)
    try:
        [row] = reader.call_records()
    finally:
        reader.close()
    assert row.call_id == "o1" and row.jitter_ms is None
