#!/usr/bin/env python3
"""Call benchmark: edgepbx as a B2BUA against sippy's b2bua_simple, same SIPp, same machine.

For each server:
  * a SIPp UAS (bench/calls/uas.xml) answers every call; a SIPp UAC places calls of zero
    duration (INVITE ... 200, ACK, BYE, 200) at stepped offered rates, a bounded number of
    calls each; a step is clean when no call failed or was left unfinished;
  * figures: the highest achieved rate (successful calls per wall second) of a clean step,
    and the best successful-call throughput of any step, clean or not;
  * memory per call: the server's VmRSS idle, then with --hold calls up at once, divided.

edgepbx is driven as a phone would: every INVITE is challenged (407) and re-sent with digest
credentials (bench/calls/uac_auth.xml); the callees first REGISTER, from the port the UAS
then listens on. sippy (the anchor) needs neither, so it gets SIPp's built-in uac; its
callee is the same uas.xml. Prints both figures and the ratio edgepbx/sippy, and writes the
figures as JSON to bench/results/. It never fails on a figure. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
HERE = Path(__file__).resolve().parent
UAC_AUTH = HERE / "uac_auth.xml"
UAS = HERE / "uas.xml"
HOST = "127.0.0.1"


def _load_register_bench() -> Any:
    """bench/register/run.py as a module: its helpers (agent process, RSS, SIPp REGISTER)."""
    spec = importlib.util.spec_from_file_location("bench_register",
                                                  REPO / "bench" / "register" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


reg = _load_register_bench()
free_port: Callable[[], int] = reg.free_port  # tests/sipprobe.py

DEFAULT_RATES = [100, 200, 300, 500, 700, 1000]
QUICK_RATES = [50, 100]
CALLER_BASE, CALLEE_BASE = 2000, 3000  # extensions; 4 digits, so at most 1,000 of each
RECV_TIMEOUT_MS = 10_000  # a call waiting longer than this for an answer fails


# ------------------------------------------------------------------------------ site


@dataclass(frozen=True)
class Users:
    callers: list[tuple[str, str]]  # (extension = digest username, password)
    callees: list[tuple[str, str]]

    @classmethod
    def make(cls, count: int) -> Users:
        def block(base: int) -> list[tuple[str, str]]:
            return [(str(base + i), f"bench-{base + i}-{uuid.uuid4().hex[:8]}")
                    for i in range(count)]
        return cls(block(CALLER_BASE), block(CALLEE_BASE))


def site_document(users: Users) -> dict[str, Any]:
    """The site the agent runs: callers 2000.., callees 3000.., MD5 only (SIPp knows no other)."""
    return {
        "site": {"name": "Call benchmark", "timezone": "UTC", "realm": "bench.edgepbx.test"},
        "users": [
            {"id": f"u{u}", "name": f"{role} {u}", "extension": u,
             "sip": {"username": u, "password": p}}
            for role, block in (("Caller", users.callers), ("Callee", users.callees))
            for u, p in block
        ],
        "sip": {"digest_algorithms": ["MD5"], "max_expires": 3600, "default_expires": 3600},
    }


def write_caller_injection(path: Path, users: Users, *, one_callee: bool) -> Path:
    """field0 caller, field1 its credentials, field2 the extension it calls."""
    lines = ["SEQUENTIAL"]
    for (caller, password), (callee, _) in zip(users.callers, users.callees, strict=True):
        target = users.callees[0][0] if one_callee else callee
        lines.append(f"{caller};[authentication username={caller} password={password}];{target}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------ SIPp


@dataclass
class Step:
    offered: int
    calls: int
    successful: int = 0
    failed: int = 0
    unfinished: int = 0
    retransmissions: int = 0
    seconds: float = 0.0
    achieved: float = 0.0
    sipp_rc: int = 0
    note: str = ""

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.unfinished == 0 and self.successful > 0


@dataclass(frozen=True)
class Caller:
    """How SIPp places calls at one server: scenario arguments besides rate and count."""

    sipp: str
    port: int
    work: Path
    scenario_args: tuple[str, ...]


def last_row(stat: Path) -> dict[str, str] | None:
    if not stat.exists():
        return None
    with contextlib.suppress(OSError, csv.Error):
        rows = list(csv.DictReader(stat.open(newline=""), delimiter=";"))
        # A row being written while we read may be cut short: take the last whole one.
        for row in reversed(rows):
            if row.get("CurrentTime") and None not in row.values():
                return row
    return None


def uac_command(caller: Caller, rate: int, count: int, *, hold_ms: int, limit: float,
                stat: Path, errors: Path, concurrency: int | None = None) -> list[str]:
    cmd = [
        caller.sipp, *caller.scenario_args, f"{HOST}:{caller.port}", "-i", HOST,
        "-p", str(free_port()),
        "-r", str(rate), "-rp", "1000", "-m", str(count), "-d", str(hold_ms),
        "-recv_timeout", str(RECV_TIMEOUT_MS), "-nostdin",
        "-trace_stat", "-stf", str(stat), "-fd", "1",
        "-trace_err", "-error_file", str(errors), "-max_log_size", "1000000",
        "-timeout", f"{int(limit)}s",
    ]
    if concurrency:
        cmd += ["-l", str(concurrency)]
    return cmd


def summarize_errors(log: str) -> str:
    """Why calls were aborted, counted, e.g. "while pausing got 180 (CSeq 1 INVITE): 9"."""
    counts: dict[str, int] = {}
    for chunk in log.split("Aborting call on unexpected message")[1:]:
        where = chunk.split("': ", 1)[-1].split(", received '", 1)[0].split(" (index")[0]
        received = chunk.split("received '", 1)[-1]
        first = received.split("\n", 1)[0].strip()
        what = first.split(" ", 2)[1] if first.startswith("SIP/2.0 ") else first.split(" ")[0]
        cseq = received.split("CSeq:", 1)[-1].split("\n", 1)[0].strip() \
            if "CSeq:" in received else "?"
        key = f"{where}: got {what} ({cseq})"
        counts[key] = counts.get(key, 0) + 1
    for line in log.splitlines():
        if "timed out" in line or "Max retransmission" in line or "timeout" in line.lower():
            counts["timeout"] = counts.get("timeout", 0) + 1
    return "; ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])


def step_from_stats(step: Step, stat: Path, errors: Path) -> Step:
    last = last_row(stat)
    if last is None:
        step.note = step.note or f"no statistics (sipp exit {step.sipp_rc})"
        step.unfinished = step.calls
        return step
    step.successful = int(last["SuccessfulCall(C)"])
    step.failed = int(last["FailedCall(C)"])
    step.unfinished = max(0, step.calls - step.successful - step.failed)
    step.retransmissions = int(last.get("Retransmissions(C)", 0) or 0)
    step.seconds = reg.epoch(last["CurrentTime"]) - reg.epoch(last["StartTime"])
    step.achieved = step.successful / step.seconds if step.seconds > 0 else 0.0
    if not step.clean and errors.exists():
        step.note = summarize_errors(errors.read_text(errors="replace")) or step.note
    return step


def run_calls(caller: Caller, rate: int, count: int, *, seconds: float) -> Step:
    tag = f"calls-r{rate}-{time.monotonic_ns()}"
    stat, errors = caller.work / f"{tag}.csv", caller.work / f"{tag}-errors.log"
    limit = seconds + RECV_TIMEOUT_MS / 1000 + 15
    step = Step(offered=rate, calls=count)
    try:
        proc = subprocess.run(uac_command(caller, rate, count, hold_ms=0, limit=limit,
                                          stat=stat, errors=errors),
                              check=False, cwd=caller.work, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=limit + 20)
        step.sipp_rc = proc.returncode
    except subprocess.TimeoutExpired:
        step.sipp_rc, step.note = -1, "sipp did not stop"
    return step_from_stats(step, stat, errors)


@contextlib.contextmanager
def uas(sipp: str, work: Path, port: int, limit: float, ring_ms: int) -> Iterator[Path]:
    """The called phone(s): uas.xml on port, for at most limit seconds, ringing ring_ms
    between 180 and 200. Yields its stat CSV."""
    stat = work / f"uas-{port}.csv"
    log = (work / f"uas-{port}.log").open("ab")
    cmd = [sipp, "-sf", str(UAS), "-i", HOST, "-p", str(port), "-d", str(ring_ms), "-nostdin",
           "-trace_stat", "-stf", str(stat), "-fd", "1",
           "-trace_err", "-error_file", str(work / f"uas-{port}-errors.log"),
           "-max_log_size", "1000000", "-timeout", f"{int(limit)}s"]
    proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not udp_bound(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SIPp UAS on port {port} did not start "
                                   f"(exit {proc.poll()}; see {log.name})")
            time.sleep(0.02)
        yield stat
    finally:
        stop(proc)
        log.close()


def udp_bound(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port/udp (from /proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            if line.split()[1] == want:
                return True
    return False


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ measures


@dataclass
class Ladder:
    steps: list[Step] = field(default_factory=list)
    best_clean: Step | None = None
    best_any: Step | None = None

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if step.clean and (self.best_clean is None or step.achieved > self.best_clean.achieved):
            self.best_clean = step
        if self.best_any is None or step.achieved > self.best_any.achieved:
            self.best_any = step


def ladder(name: str, caller: Caller, *, rates: list[int], seconds: float, retries: int,
           alive: Callable[[], bool], budget: float) -> Ladder:
    """Every rate in turn, rate x seconds calls each. A failing step is tried again (the
    machine is shared) and the better try counts. Stops after two failing rates in a row,
    when the server dies, or when no new step may start after `budget` seconds."""
    out = Ladder()
    deadline = time.monotonic() + budget
    failing_in_a_row = 0
    for rate in rates:
        if not alive():
            print(f"  {name}: server died, stopping", flush=True)
            break
        if time.monotonic() > deadline:
            print(f"  {name}: time budget of {budget:.0f} s used up, stopping", flush=True)
            break
        tries: list[Step] = []
        for _ in range(1 + retries):
            step = run_calls(caller, rate, max(1, int(rate * seconds)), seconds=seconds)
            tries.append(step)
            out.add(step)
            print(f"  {name:<8} offered {rate:>5}/s  achieved {step.achieved:>7.0f}/s  "
                  f"ok {step.successful:>6}  failed {step.failed:>5}  "
                  f"unfinished {step.unfinished:>5}  retrans {step.retransmissions:>5}  "
                  f"{'clean' if step.clean else 'FAIL'} {step.note}", flush=True)
            time.sleep(1.0)  # let queues drain and calls end before the next step
            if step.clean or time.monotonic() > deadline or step.successful == 0:
                break
        failing_in_a_row = 0 if any(s.clean for s in tries) else failing_in_a_row + 1
        if failing_in_a_row >= 2 or all(s.successful == 0 for s in tries):
            break
    return out


def hold_calls(name: str, caller: Caller, pid: int, uas_stat: Path, *, calls: int, rate: int,
               hold_ms: int) -> dict[str, Any]:
    """VmRSS idle, then with `calls` calls up at once; KiB per call held."""
    time.sleep(1.0)
    idle = reg.vm_rss_kib(pid)
    tag = f"hold-{time.monotonic_ns()}"
    stat, errors = caller.work / f"{tag}.csv", caller.work / f"{tag}-errors.log"
    ramp = calls / rate
    if hold_ms / 1000 < ramp + 5:
        hold_ms = int((ramp + 5) * 1000)  # the first call must still be up when the last is
    limit = ramp + hold_ms / 1000 + RECV_TIMEOUT_MS / 1000 + 20
    cmd = uac_command(caller, rate, calls, hold_ms=hold_ms, limit=limit, stat=stat,
                      errors=errors, concurrency=calls)
    out: dict[str, Any] = {"calls": calls, "rate": rate, "hold_ms": hold_ms, "rss_idle_kib": idle}
    samples: list[tuple[int, int, int]] = []  # (rss, calls up at the UAC, calls up at the UAS)
    proc = subprocess.Popen(cmd, cwd=caller.work, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        all_placed_at = None
        # Sample from when every call is placed (plus 2 s to settle) until the first ends.
        plateau_end = start + hold_ms / 1000 - 1.0
        while proc.poll() is None and time.monotonic() < start + limit:
            time.sleep(0.5)
            row = last_row(stat)
            if row is None:
                continue
            if int(row["FailedCall(C)"]) > calls // 10:
                out["note"] = "more than 10 % of the calls failed; not at plateau"
                break
            if all_placed_at is None and int(row["OutgoingCall(C)"]) >= calls:
                all_placed_at = time.monotonic()
            now = time.monotonic()
            if all_placed_at and now > all_placed_at + 2.0:
                if now > plateau_end:
                    break
                uas_row = last_row(uas_stat)
                samples.append((reg.vm_rss_kib(pid), int(row["CurrentCall"]),
                                int(uas_row["CurrentCall"]) if uas_row else 0))
        if samples:
            # Calls up: as both ends count them (a call the UAC holds but the UAS never
            # got is not through the server). Medians over the plateau.
            rss = int(statistics.median(s[0] for s in samples))
            held = int(statistics.median(min(s[1], s[2]) for s in samples))
            out.update(rss_plateau_kib=rss, held=held, samples=len(samples))
            if held > 0:
                out["kib_per_call"] = round((rss - idle) / held, 2)
        try:
            proc.wait(timeout=max(1.0, start + limit + 10 - time.monotonic()))
        except subprocess.TimeoutExpired:
            out.setdefault("note", "sipp did not stop")
    finally:
        stop(proc)
    final = step_from_stats(Step(offered=rate, calls=calls), stat, errors)
    out.update(successful=final.successful, failed=final.failed)
    if final.note:
        out.setdefault("note", final.note)
    per = out.get("kib_per_call")
    print(f"  {name}: RSS idle {idle / 1024:.1f} MiB, at plateau "
          f"{fmt(out.get('rss_plateau_kib', 0) / 1024, '.1f')} MiB with {out.get('held', 0)} "
          f"calls up: {fmt(per, '.1f')} KiB per call  (calls ok {final.successful}, "
          f"failed {final.failed}) {out.get('note', '')}", flush=True)
    return out


# ------------------------------------------------------------------------------ servers


@contextlib.contextmanager
def sippy_b2bua(work: Path, port: int, next_hop: int) -> Iterator[subprocess.Popen[bytes]]:
    binary = shutil.which("b2bua_simple") or str(Path(sys.executable).parent / "b2bua_simple")
    if not os.access(binary, os.X_OK):
        raise RuntimeError("b2bua_simple not installed (pip install -e '.[bench]' gives sippy)")
    log = (work / "sippy.log").open("ab")
    # SIPLOG_LVL=WARN: sippy logs every message at INFO; the agent runs with warnings only too.
    env = {**os.environ, "SIPLOG_LVL": "WARN", "SIPLOG_BEND": "stderr"}
    proc = subprocess.Popen([binary, "-f", "-l", HOST, "-p", str(port), "-n",
                             f"{HOST}:{next_hop}"], cwd=work, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        reg.wait_answering(port, proc, 30)  # it answers OPTIONS with 501: good enough
        yield proc
    finally:
        stop(proc)
        log.close()


def uas_limit(args: argparse.Namespace) -> float:
    """Seconds the UAS may run: the ladder's budget with its retries, the hold, and margin."""
    return args.budget * 2 + args.hold / max(1, args.hold_rate) + args.hold_ms / 1000 + 300


def with_hold(args: argparse.Namespace, name: str, caller: Caller, pid: int,
              uas_stat: Path) -> dict[str, Any]:
    if args.hold <= 0:
        return {"skipped": "--hold 0"}
    return hold_calls(name, caller, pid, uas_stat, calls=args.hold, rate=args.hold_rate,
                      hold_ms=args.hold_ms)


def ladder_figures(lad: Ladder) -> dict[str, Any]:
    return {
        "steps": [asdict(s) for s in lad.steps],
        "max_clean_rate": round(lad.best_clean.achieved) if lad.best_clean else 0,
        "max_clean_offered": lad.best_clean.offered if lad.best_clean else 0,
        "best_throughput": round(lad.best_any.achieved) if lad.best_any else 0,
        "best_throughput_offered": lad.best_any.offered if lad.best_any else 0,
    }


def bench_edgepbx(args: argparse.Namespace, sipp: str, work: Path,
                  users: Users) -> dict[str, Any]:
    site = work / "site.json"
    site.write_text(json.dumps(site_document(users), indent=1))
    callers = write_caller_injection(work / "callers.csv", users, one_callee=args.one_callee)
    callees = reg.write_injection(work / "callees.csv", users.callees)
    state = work / "state"
    state.mkdir()
    port, uas_port = free_port(), free_port()
    out: dict[str, Any] = {"port": port}
    print(f"\nedgepbx-agent on udp:{HOST}:{port}; callee UAS on udp:{HOST}:{uas_port}", flush=True)
    try:
        with reg.edgepbx_agent(work, site, state, port, args.agent_log_level) as (proc, ready):
            print(f"  start to ready: {ready:.3f} s", flush=True)
            # The callees register from the port the UAS will listen on: Contact = the UAS.
            reg_step = reg.run_sipp(reg.Target(sipp, port, callees, work, local_port=uas_port),
                                    min(500, len(users.callees)), len(users.callees),
                                    duration_limit=30)
            out["callees_registered"] = reg_step.successful
            print(f"  {reg_step.successful} of {len(users.callees)} callees registered "
                  f"(Contact {HOST}:{uas_port}) {reg_step.note}", flush=True)
            auth_uri = ["-auth_uri", f"{users.callees[0][0]}@{HOST}:{port}"] \
                if args.one_callee else []
            caller = Caller(sipp, port, work, ("-sf", str(UAC_AUTH), "-inf", str(callers),
                                               "-key", "domain", HOST, *auth_uri))
            with uas(sipp, work, uas_port, limit=uas_limit(args),
                     ring_ms=args.ring_ms) as uas_stat:
                out.update(measure(args, "edgepbx", caller, proc, uas_stat))
            if proc.poll() is not None:
                out["error"] = f"agent died with exit {proc.returncode}"
    except (RuntimeError, subprocess.SubprocessError) as exc:
        out["error"] = str(exc)
        log = work / "edgepbx-agent.log"
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        print(f"  edgepbx failed: {exc}\n    " + "\n    ".join(tail), flush=True)
    return out


def bench_sippy(args: argparse.Namespace, sipp: str, work: Path) -> dict[str, Any]:
    port, uas_port = free_port(), free_port()
    out: dict[str, Any] = {"port": port}
    print(f"\nsippy b2bua_simple (anchor) on udp:{HOST}:{port}; UAS on udp:{HOST}:{uas_port}",
          flush=True)
    try:
        with uas(sipp, work, uas_port, limit=uas_limit(args), ring_ms=args.ring_ms) as uas_stat, \
                sippy_b2bua(work, port, uas_port) as proc:
            caller = Caller(sipp, port, work, ("-sn", "uac", "-s", str(CALLEE_BASE)))
            out.update(measure(args, "sippy", caller, proc, uas_stat))
    except (RuntimeError, subprocess.SubprocessError) as exc:
        out["error"] = str(exc)
        print(f"  sippy failed: {exc}", flush=True)
    return out


def measure(args: argparse.Namespace, name: str, caller: Caller,
            proc: subprocess.Popen[bytes], uas_stat: Path) -> dict[str, Any]:
    """Warm-up, memory per held call, then the rate ladder."""
    out: dict[str, Any] = {}

    def alive() -> bool:
        return proc.poll() is None

    warm = run_calls(caller, 10, 20, seconds=2)
    out["warmup"] = asdict(warm)
    print(f"  {name}: warm-up {warm.successful} of {warm.calls} calls ok {warm.note}", flush=True)
    if warm.successful == 0:
        uas_row = last_row(uas_stat)
        seen = int(uas_row["IncomingCall(C)"]) if uas_row else 0
        out["error"] = (f"no call completed through {name} (the callee saw {seen} INVITEs): "
                        f"{warm.note or 'no answer'}")
        print(f"  {name}: NO CALL COMPLETED, reporting 0 calls/s. {out['error']}", flush=True)
        out.update(ladder_figures(Ladder(steps=[warm])))
        out["max_clean_rate"] = out["best_throughput"] = 0
        return out
    time.sleep(1.0)
    if args.profile:
        out["profile"] = profile_step(args, name, caller, proc.pid)
        return out
    out["hold"] = with_hold(args, name, caller, proc.pid, uas_stat)
    if not alive():
        return out
    lad = ladder(name, caller, rates=args.rates, seconds=args.seconds, retries=args.retries,
                 alive=alive, budget=args.budget)
    out.update(ladder_figures(lad))
    if alive():
        out["rss_after_kib"] = reg.vm_rss_kib(proc.pid)
    return out


def profile_step(args: argparse.Namespace, name: str, caller: Caller, pid: int) -> str | None:
    """One step at ``--profile`` calls/s under py-spy; prints the top functions by own time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):
        print("  py-spy not installed (pip install -e .[bench]); no profile")
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    outfile = RESULTS / f"calls-profile-{name}-{dt.datetime.now():%Y%m%d-%H%M%S}.txt"
    raw = outfile.with_suffix(".raw")
    spy = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "250",
                            "--format", "raw", "--output", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    step = run_calls(caller, args.profile, int(args.profile * args.seconds), seconds=args.seconds)
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
    own: dict[str, int] = {}
    total = 0
    if raw.exists():
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            total += int(count)
            leaf = stack.split(";")[-1]
            own[leaf] = own.get(leaf, 0) + int(count)
        raw.unlink()
    top = sorted(own.items(), key=lambda kv: -kv[1])[:30]
    text = "\n".join(f"{n:6d} {100 * n / max(1, total):5.1f}%  {f}" for f, n in top)
    outfile.write_text(text + "\n")
    print(f"  profiled step at {args.profile}/s: achieved {step.achieved:.0f}/s, "
          f"{total} samples; own time:\n{text}", flush=True)
    return str(outfile.relative_to(REPO))


# ------------------------------------------------------------------------------ main


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict[str, Any]) -> None:
    e, s = results.get("edgepbx", {}), results.get("sippy", {})

    def ratio(key: str) -> float | None:
        a, b = e.get(key), s.get(key)
        return a / b if a is not None and b else None

    results["ratio"] = {k: (round(r, 3) if (r := ratio(k)) is not None else None)
                        for k in ("max_clean_rate", "best_throughput")}
    eh, sh = e.get("hold", {}), s.get("hold", {})
    print()
    print(f"{'calls (INVITE-200-ACK-BYE), UDP, 2 cores shared with SIPp':<52} {'edgepbx':>10} "
          f"{'sippy':>10} {'ratio':>7}")
    print("-" * 82)
    rows = [
        ("highest zero-failure rate (calls/s)", "max_clean_rate", True),
        ("  at offered rate (/s)", "max_clean_offered", False),
        ("best throughput, failures allowed (calls/s)", "best_throughput", True),
        ("  at offered rate (/s)", "best_throughput_offered", False),
    ]
    for label, key, with_ratio in rows:
        r = results["ratio"].get(key) if with_ratio else None
        print(f"{label:<52} {fmt(e.get(key)):>10} {fmt(s.get(key)):>10} "
              f"{fmt(r, '.2f') if with_ratio else '':>7}")
    print(f"{'memory per call held (KiB; VmRSS delta / calls up)':<52} "
          f"{fmt(eh.get('kib_per_call'), '.1f'):>10} {fmt(sh.get('kib_per_call'), '.1f'):>10}")
    print(f"{'  calls up at plateau':<52} {fmt(eh.get('held')):>10} {fmt(sh.get('held')):>10}")
    print(f"{'  RSS idle (MiB)':<52} "
          f"{fmt(eh['rss_idle_kib'] / 1024 if 'rss_idle_kib' in eh else None, '.1f'):>10} "
          f"{fmt(sh['rss_idle_kib'] / 1024 if 'rss_idle_kib' in sh else None, '.1f'):>10}")
    print("-" * 82)
    for name, r in (("edgepbx", e), ("sippy", s)):
        if r.get("error"):
            print(f"{name}: {r['error']}")
    print("edgepbx calls carry digest auth (two INVITEs per call); sippy's do not. Reported "
          f"only, never enforced. Run took {results.get('elapsed_seconds')} s.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="development run: rates 50,100, 2 s per step, 200 calls held")
    ap.add_argument("--users", type=int, default=1000,
                    help="callers (2000..) and as many callees (3000..); at most 1000")
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help=f"comma-separated offered calls/s (default {DEFAULT_RATES})")
    ap.add_argument("--seconds", type=float, default=None,
                    help="calls per step = rate x seconds (default 5)")
    ap.add_argument("--retries", type=int, default=1, help="second tries of a failing step")
    ap.add_argument("--budget", type=float, default=180.0,
                    help="seconds of ladder per server after which no new step starts")
    ap.add_argument("--hold", type=int, default=None,
                    help="calls held up at once for the memory figure (default 2000; 0 skips)")
    ap.add_argument("--hold-rate", type=int, default=200, help="calls/s while building up")
    ap.add_argument("--hold-ms", type=int, default=None,
                    help="duration of each held call, ms (default 30000)")
    ap.add_argument("--one-callee", action="store_true",
                    help="every call to extension 3000, with -auth_uri so that the digest uri "
                    "equals the Request-URI (SIPp otherwise puts sip:<agent ip:port> there)")
    ap.add_argument("--ring-ms", type=int, default=20,
                    help="the callee rings this long between 180 and 200 (sippy relays a 180 "
                    "after the 200 when they come back to back, which SIPp counts as failed)")
    ap.add_argument("--agent-log-level", default="warning")
    ap.add_argument("--skip-edgepbx", action="store_true")
    ap.add_argument("--skip-sippy", action="store_true")
    ap.add_argument("--write-site", type=Path, metavar="PATH",
                    help="write the benchmark's site document (JSON, valid YAML) and exit")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--profile", type=int, metavar="RATE", default=0,
                    help="instead of the ladder: one step at RATE under py-spy (edgepbx only)")
    args = ap.parse_args()
    args.users = max(1, min(args.users, 1000))
    args.rates = args.rates or (QUICK_RATES if args.quick else DEFAULT_RATES)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.hold = args.hold if args.hold is not None else (200 if args.quick else 2000)
    args.hold_ms = args.hold_ms or (8000 if args.quick else 30000)
    if args.quick:
        args.retries = 0
    users = Users.make(args.users)

    if args.write_site:
        args.write_site.write_text(json.dumps(site_document(users), indent=2) + "\n")
        print(f"site with {args.users} callers and callees written to {args.write_site}")
        return 0
    sipp = shutil.which("sipp")
    if not sipp:
        print("bench/calls: sipp not found (Debian sip-tester; `make deps` as root)")
        return 2

    # SIGTERM unwinds like Ctrl-C, so every server and SIPp started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-calls-", dir="/tmp"))
    results: dict[str, Any] = {
        "benchmark": "calls",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "machine": platform.machine()},
        "users": args.users, "rates": args.rates, "seconds_per_step": args.seconds,
        "hold": {"calls": args.hold, "rate": args.hold_rate, "ms": args.hold_ms},
        "one_callee": args.one_callee, "quick": args.quick,
        "sipp": subprocess.run([sipp, "-v"], check=False, capture_output=True, text=True,
                               timeout=10).stdout.strip(),
    }
    print(f"Call benchmark: rates {args.rates}, {args.seconds:g} s per step, {args.hold} calls "
          f"held for memory, 127.0.0.1 only; work dir {work}", flush=True)
    try:
        if not args.skip_edgepbx:
            results["edgepbx"] = bench_edgepbx(args, sipp, work, users)
        if not args.skip_sippy:
            results["sippy"] = bench_sippy(args, sipp, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    report(results)
    reg.RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    out = reg.RESULTS / f"calls-{dt.datetime.now():%Y%m%d-%H%M%S}{suffix}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
