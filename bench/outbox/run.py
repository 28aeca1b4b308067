#!/usr/bin/env python3
"""Upload outbox benchmark: 100,000 CDRs drained into the reference portal over mutual TLS.

1. A fresh store; the CDRs go in the way call control writes them
   (``Store.append_call_records(..., outbox_cdrs=True)``, 1,000 per transaction, so each
   call is queued in the transaction that stores it). Timed, printed, not the figure.
2. The reference portal (tests/portal/server.py) runs as its own process on 127.0.0.1 with
   ephemeral ports; the device is created there (admin API) and enrolled with its claim
   token over the enrollment port (``EnrollmentClient``), as a real box is.
3. The real :class:`agent.cloud.outbox.Uploader` drains the outbox with a real
   :class:`PortalClient` (mutual TLS, bound to the "tunnel's inner address" 127.0.0.1):
   batches of ``--batch-size`` records, each deleted after the portal's answer. The clock
   runs from the first request to the empty outbox, so the portal's ingest (JSON parse,
   one SQLite transaction per batch, synchronous=FULL) counts too.
4. Checks at the portal's database that every call id arrived exactly once.

Figure: records/s and the ratio to the issue's target of 5,000 records/s (higher is
better). Never fails on a figure. Writes bench/results/outbox-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.cdr import CallRecord
from agent.cloud.identity import DeviceIdentity
from agent.cloud.outbox import Outbox, Uploader
from agent.cloud.portal_client import EnrollmentClient, OptIns, PortalClient, enroll_identity
from agent.store import Store

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
PORTAL = REPO / "tests" / "portal" / "server.py"
HOST = "127.0.0.1"
TARGET = 5000.0  # records/s, the target
OPT_IN = OptIns(cdr_upload=True)


def records(start: int, count: int) -> list[CallRecord]:
    t0 = 1_800_000_000.0
    out = []
    for i in range(start, start + count):
        s = t0 + i * 7.0
        answered = i % 5 != 0
        out.append(CallRecord(
            call_id=f"bench-{i:08d}", direction=("internal", "outbound", "inbound")[i % 3],
            caller=str(2000 + i % 500), caller_name=f"User {i % 500}",
            callee=str(3000 + i % 400), dialed=str(3000 + i % 400), start=s,
            answer=s + 4.0 if answered else None, end=s + (64.0 if answered else 20.0),
            disposition="answered" if answered else "no-answer", hold_seconds=0.0,
            hunt_group=None, trunk=None, cause="caller-bye" if answered else "timeout"))
    return out


def start_portal(data: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, str(PORTAL), "--data", str(data), "--device-port", "0",
         "--enroll-port", "0", "--admin-port", "0"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the reference portal did not start (rc={proc.poll()})")
    return proc, json.loads(line)


def admin(ready: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    conn = http.client.HTTPConnection(HOST, ready["admin_port"], timeout=30)
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"X-Portal-Role": "admin", "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"null")
    conn.close()
    if resp.status >= 300:
        raise SystemExit(f"portal admin {method} {path}: {resp.status} {data}")
    return data


async def enroll(ident: DeviceIdentity, ready: dict[str, Any]) -> None:
    token = admin(ready, "POST", "/api/devices", {"serial": ident.serial})["claim_token"]
    ca = Path(ready["ca_cert"]).read_bytes()
    async with EnrollmentClient(f"https://{HOST}:{ready['enroll_port']}", ca_pem=ca) as client:
        await enroll_identity(ident, client, token)


def seed(store: Store, total: int, per_tx: int) -> float:
    t = time.perf_counter()
    for n in range(0, total, per_tx):
        store.append_call_records(records(n, min(per_tx, total - n)), outbox_cdrs=True)
    return time.perf_counter() - t


async def drain(outbox: Outbox, ident: DeviceIdentity, url: str, batch_size: int) -> float:
    def client() -> PortalClient:
        return PortalClient.from_identity(ident, url, inner_address=HOST,
                                          opt_ins=lambda: OPT_IN)

    up = Uploader(outbox, client, opt_ins=lambda: OPT_IN, batch_size=batch_size)
    t = time.perf_counter()
    while outbox.stats()["queued_items"]:
        if not up.policy.may_send(time.time()):  # the portal was unavailable: back off
            await asyncio.sleep(max(0.0, up.policy.paused_until - time.time()))
        await up.drain_once()
    return time.perf_counter() - t


def portal_counts(data: Path, serial: str) -> tuple[int, int]:
    db = sqlite3.connect(f"{(data / 'portal.db').resolve().as_uri()}?mode=ro", uri=True)
    try:
        n, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT call_id) FROM cdrs "
                                 "WHERE serial = ?", (serial,)).fetchone()
    finally:
        db.close()
    return int(n), int(distinct)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="records per POST /v1/cdr (the Uploader's default)")
    parser.add_argument("--seed-per-tx", type=int, default=1000,
                        help="records per append_call_records transaction when seeding")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="epbx-outbox-", dir="/tmp"))
    proc: subprocess.Popen[str] | None = None
    try:
        store = Store.open(work / "device")
        outbox = Outbox(store, max_bytes=1 << 30)  # the bound is not what is measured
        seed_s = seed(store, args.records, args.seed_per_tx)
        queued = outbox.stats()
        proc, ready = start_portal(work / "portal")
        ident = DeviceIdentity.load_or_create(work / "device")
        asyncio.run(enroll(ident, ready))
        url = f"https://{HOST}:{ready['device_port']}"
        drain_s = asyncio.run(drain(outbox, ident, url, args.batch_size))
        left = outbox.stats()
        store.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        at_portal, distinct = portal_counts(work / "portal", ident.serial)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rate = args.records / drain_s if drain_s > 0 else 0.0
    results = {
        "bench": "outbox", "when": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "records": args.records, "batch_size": args.batch_size,
        "queued_bytes": queued["queued_bytes"],
        "seed_s": round(seed_s, 3), "seed_records_per_s": round(args.records / seed_s, 1),
        "drain_s": round(drain_s, 3), "records_per_s": round(rate, 1),
        "target_records_per_s": TARGET, "ratio_to_target": round(rate / TARGET, 3),
        "portal_rows": at_portal, "portal_distinct_call_ids": distinct,
        "left_in_outbox": left["queued_items"], "dropped": left["dropped"],
        "exactly_once": at_portal == distinct == args.records and not left["queued_items"],
    }
    print(f"\nUpload outbox: {args.records:,} CDRs ({queued['queued_bytes'] / 1e6:.1f} MB "
          f"queued), batches of {args.batch_size}, reference portal over mutual TLS")
    print(f"  seeding (append_call_records, outbox_cdrs=True): {seed_s:.2f} s "
          f"({args.records / seed_s:,.0f} records/s)")
    print(f"  drain to the portal: {drain_s:.2f} s = {rate:,.0f} records/s")
    print(f"  ratio to the target of {TARGET:,.0f} records/s (higher is better): "
          f"{rate / TARGET:.2f}")
    print(f"  at the portal: {at_portal:,} rows, {distinct:,} distinct call ids; left in the "
          f"outbox: {left['queued_items']}; exactly once: {results['exactly_once']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"outbox-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
