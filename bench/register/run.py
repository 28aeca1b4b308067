#!/usr/bin/env python3
"""REGISTER benchmark: edgepbx against Kamailio, same SIPp scenario, same run, same machine.

For each server:
  * 2,000 users; SIPp runs the digest REGISTER scenario (REGISTER, 401, REGISTER with
    credentials, 200) at increasing offered rates, a bounded number of registrations each;
  * a step is clean when no registration failed or was left unfinished; the figure is the
    highest achieved rate (successful registrations per second of wall time) of a clean step,
    refined by a short bisection between the last clean and the first failing rate;
  * for edgepbx also: resident memory with the 2,000 bindings, and the time from spawning the
    process to its first answered OPTIONS (cold: empty state; warm: 2,000 bindings on disk).

Prints a table with both figures and the ratio, and writes the figures as JSON to
bench/results/. It never fails on a figure: absolute numbers on a shared 2-core machine are
noise-prone, which is why the anchor runs beside edgepbx. SIPp itself shares the cores and is
likely the ceiling for Kamailio. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "interop" / "scenarios" / "register.xml"
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"

# The port and probe helpers the test suite uses (a plain module, no pytest).
sys.path.insert(0, str(REPO / "tests"))
from sipprobe import free_port, sip_options_probe  # noqa: E402

DEFAULT_RATES = [500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 16000]
KAMAILIO_PASSWORD = "secret"  # the anchor recipe: one static password for every user
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

# The anchor recipe from shared/notes/benchmark-anchors.md, with the port filled in.
KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children={children}
listen=udp:{host}:{port}
mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483","Too Many Hops"); exit; }}
  if (is_method("REGISTER")) {{
    if (!pv_www_authenticate("$td", "{password}", "0")) {{ www_challenge("$td", "0"); exit; }}
    if (!save("location")) sl_reply_error();
    exit;
  }}
  sl_send_reply("404","Not here");
}}
"""


# ------------------------------------------------------------------------------ plumbing


def options_answered(port: int, timeout: float = 0.05) -> bool:
    """One OPTIONS over UDP; any SIP answer means the server is processing requests."""
    return sip_options_probe(HOST, port, timeout=timeout) is not None


def wait_answering(port: int, proc: subprocess.Popen[bytes] | None, limit: float) -> float:
    """Seconds until the server answers OPTIONS, polling every few milliseconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        if options_answered(port):
            return time.monotonic() - start
        time.sleep(0.005)
    raise RuntimeError(f"server not answering after {limit}s")


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pss_kib(pid: int) -> int:
    """Proportional set size: fair for forked servers sharing memory (Kamailio)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def write_injection(path: Path, users: list[tuple[str, str]]) -> Path:
    lines = ["SEQUENTIAL"]
    lines += [f"{u};[authentication username={u} password={p}]" for u, p in users]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------ SIPp


@dataclass
class Step:
    offered: int
    registrations: int
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


def epoch(field_value: str) -> float:
    # SIPp writes "date<TAB>time<TAB>epoch.micro" in its time columns.
    return float(field_value.rsplit("\t", maxsplit=1)[-1])


@dataclass(frozen=True)
class Target:
    """One server under test, as SIPp drives it."""

    sipp: str
    port: int
    injection: Path
    work: Path
    # One SIPp source port for every step: each user then keeps one contact, so the server
    # ends with exactly one binding per user however many steps ran.
    local_port: int = field(default_factory=free_port)


def run_sipp(target: Target, rate: int, count: int, *, duration_limit: float) -> Step:
    tag = f"r{rate}-{time.monotonic_ns()}"
    stat = target.work / f"{tag}.csv"
    errors = target.work / f"{tag}-errors.log"
    cmd = [
        target.sipp, "-sf", str(SCENARIO), f"{HOST}:{target.port}", "-i", HOST,
        "-p", str(target.local_port), "-inf", str(target.injection),
        "-key", "domain", HOST, "-key", "expires", "3600", "-auth_uri", HOST,
        "-r", str(rate), "-rp", "1000", "-m", str(count),
        # Abort a registration on an unexpected answer (counted failed), but send no BYE.
        "-default_behaviors", "abortunexp", "-nostdin",
        "-trace_stat", "-stf", str(stat), "-fd", "1",
        "-trace_err", "-error_file", str(errors), "-max_log_size", "1000000",
        "-timeout", f"{int(duration_limit)}s",
    ]
    step = Step(offered=rate, registrations=count)
    try:
        proc = subprocess.run(cmd, check=False, cwd=target.work, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=duration_limit + 20)
        step.sipp_rc = proc.returncode
    except subprocess.TimeoutExpired:
        step.sipp_rc = -1
        step.note = "sipp did not stop"
    rows = list(csv.DictReader(stat.open(newline=""), delimiter=";")) if stat.exists() else []
    if not rows:
        step.note = step.note or f"no statistics (sipp exit {step.sipp_rc})"
        step.unfinished = count
        return step
    last = rows[-1]
    step.successful = int(last["SuccessfulCall(C)"])
    step.failed = int(last["FailedCall(C)"])
    # Calls never created or still open when SIPp stopped count against the step too.
    step.unfinished = max(0, count - step.successful - step.failed)
    step.retransmissions = int(last.get("Retransmissions(C)", 0) or 0)
    step.seconds = epoch(last["CurrentTime"]) - epoch(last["StartTime"])
    step.achieved = step.successful / step.seconds if step.seconds > 0 else 0.0
    if not step.clean and errors.exists():
        step.note = summarize_errors(errors.read_text(errors="replace"))
    return step


def summarize_errors(log: str) -> str:
    """Why calls were aborted, counted: e.g. "got 401 for CSeq 1 while expecting 200: 812".

    SIPp logs every aborted call with the whole unexpected message; "Dead call" lines are
    late answers to retransmissions after success and are not failures.
    """
    counts: dict[str, int] = {}
    for chunk in log.split("Aborting call on unexpected message")[1:]:
        expecting = chunk.split("while expecting '", 1)[-1].split("'", 1)[0]
        received = chunk.split("received '", 1)[-1]
        status = received.split(" ", 2)[1] if received.startswith("SIP/2.0 ") else "request"
        cseq = received.split("CSeq:", 1)[-1].split("\n", 1)[0].strip() if "CSeq:" in received \
            else "?"
        key = f"got {status} for CSeq {cseq} while expecting {expecting}"
        counts[key] = counts.get(key, 0) + 1
    for line in log.splitlines():
        if "timed out" in line or "Max retransmission" in line:
            counts["timeout/retransmissions exhausted"] = (
                counts.get("timeout/retransmissions exhausted", 0) + 1)
    return "; ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])


@dataclass
class RateSearch:
    steps: list[Step] = field(default_factory=list)
    best: Step | None = None

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if step.clean and (self.best is None or step.achieved > self.best.achieved):
            self.best = step


def search_rates(
    name: str, target: Target, *, rates: list[int], seconds: float, refine: int, alive: Any,
    budget: float,
) -> RateSearch:
    """Ladder, then bisection; no new step starts once `budget` seconds have passed."""
    search = RateSearch()
    deadline = time.monotonic() + budget

    def in_budget() -> bool:
        if time.monotonic() < deadline:
            return True
        print(f"  {name}: time budget of {budget:.0f} s used up, stopping", flush=True)
        return False

    def attempt(rate: int) -> Step:
        count = max(1, int(rate * seconds))
        step = run_sipp(target, rate, count, duration_limit=seconds + 25)
        search.add(step)
        verdict = "clean" if step.clean else "FAIL"
        print(f"  {name:<9} offered {rate:>6}/s  achieved {step.achieved:>8.0f}/s  "
              f"ok {step.successful:>6}  failed {step.failed:>5}  unfinished {step.unfinished:>5}"
              f"  retrans {step.retransmissions:>5}  {verdict} {step.note}", flush=True)
        time.sleep(1.0)  # let queues drain before the next step
        return step

    def one(rate: int) -> Step:
        step = attempt(rate)
        if (step.clean and step.achieved >= 0.85 * rate) or time.monotonic() > deadline:
            return step
        # The machine is shared (other processes, SIPp itself): one bad step may be noise,
        # so a failing or saturated rate gets a second try and the better one counts.
        time.sleep(1.0)
        again = attempt(rate)
        return max((step, again), key=lambda s: (s.clean, s.achieved))

    last_clean, first_bad = 0, 0
    for rate in rates:
        if not alive():
            print(f"  {name}: server died, stopping", flush=True)
            break
        if not in_budget():
            break
        step = one(rate)
        if not step.clean:
            first_bad = rate
            break
        last_clean = rate
        if step.achieved < 0.85 * rate:
            # Saturated without failing: going higher only grows queues, not throughput.
            print(f"  {name}: saturated at {step.achieved:.0f}/s, stopping the ladder",
                  flush=True)
            break
    if first_bad and last_clean:
        low, high = last_clean, first_bad
        for _ in range(refine):
            mid = (low + high) // 2
            if high - low < max(100, low // 20) or not alive() or not in_budget():
                break
            if one(mid).clean:
                low = mid
            else:
                high = mid
    return search


# ------------------------------------------------------------------------------ servers


def agent_script(name: str) -> list[str]:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which(name)
    if found:
        return [found]
    module = {"edgepbx-agent": "agent.main", "edgepbx": "agent.cli"}[name]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


@contextlib.contextmanager
def edgepbx_agent(work: Path, site: Path, state: Path, port: int,
                  log_level: str) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    log = (work / "edgepbx-agent.log").open("ab")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    cmd = [*agent_script("edgepbx-agent"), "--site", str(site), "--state-dir", str(state),
           "--listen", f"udp:{HOST}:{port}", "--log-level", log_level]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    try:
        ready = wait_answering(port, proc, 30)
        yield proc, ready
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@contextlib.contextmanager
def kamailio(binary: str, work: Path, port: int, children: int) -> Iterator[int]:
    run_dir = work / "kamailio"
    run_dir.mkdir(exist_ok=True)
    cfg = run_dir / "kam.cfg"
    cfg.write_text(KAMAILIO_CFG.format(children=children, host=HOST, port=port,
                                       modules=KAMAILIO_MODULES, password=KAMAILIO_PASSWORD))
    pidfile = run_dir / "kam.pid"
    with (run_dir / "kamailio.log").open("ab") as log:
        # -Y: runtime dir of our own, so no /run/kamailio is needed (and none is shared).
        subprocess.run([binary, "-f", str(cfg), "-P", str(pidfile), "-w", str(run_dir),
                        "-Y", str(run_dir)], stdout=log, stderr=subprocess.STDOUT, check=True,
                       timeout=30)
    pid = 0
    try:
        deadline = time.monotonic() + 10
        while not pid and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
            time.sleep(0.02)
        if not pid:
            raise RuntimeError("kamailio wrote no PID file")
        wait_answering(port, None, 15)
        yield pid
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)


# ------------------------------------------------------------------------------ main


def bound_count(state: Path) -> int | None:
    res = subprocess.run([*agent_script("edgepbx"), "--state-dir", str(state), "phones",
                          "--json"], check=False, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        return None
    with contextlib.suppress(ValueError):
        data = json.loads(res.stdout)
        if isinstance(data, dict):
            data = data.get("phones", [])
        return len(data)
    return None


def site_document(users: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "site": {"name": "Benchmark", "timezone": "UTC", "realm": "bench.edgepbx.test"},
        "users": [
            {"id": f"u{u}", "name": f"Bench {u}", "extension": u,
             "sip": {"username": u, "password": p}}
            for u, p in users
        ],
        # Debian's SIPp 3.6 answers only the first challenge and only knows MD5.
        "sip": {"digest_algorithms": ["MD5"], "max_expires": 3600},
    }


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")],
                    default=DEFAULT_RATES, help="comma-separated offered rates per second")
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="registrations per step = rate x seconds")
    ap.add_argument("--refine", type=int, default=2, help="bisection steps after a failure")
    ap.add_argument("--budget", type=float, default=240.0,
                    help="seconds per server after which no new step starts")
    ap.add_argument("--kamailio-children", type=int, default=2)
    ap.add_argument("--agent-log-level", default="warning",
                    help="the agent's --log-level (per-request info logging is not measured)")
    ap.add_argument("--skip-edgepbx", action="store_true")
    ap.add_argument("--skip-kamailio", action="store_true")
    ap.add_argument("--profile", type=int, metavar="RATE", default=0,
                    help="after the search, record py-spy on the agent during one step at RATE")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    sipp = shutil.which("sipp")
    if not sipp:
        print("bench/register: sipp not found (Debian sip-tester; `make deps` as root)")
        return 2
    kam_bin = shutil.which("kamailio") or ("/usr/sbin/kamailio"
                                           if os.access("/usr/sbin/kamailio", os.X_OK) else None)

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-reg-", dir="/tmp"))
    users = [(str(1000 + i), f"bench-{1000 + i}-{uuid.uuid4().hex[:8]}")
             for i in range(args.users)]
    results: dict[str, Any] = {
        "benchmark": "register",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "machine": platform.machine()},
        "users": args.users,
        "seconds_per_step": args.seconds,
        "sipp": subprocess.run([sipp, "-v"], check=False, capture_output=True,
                               text=True).stdout.strip(),
    }
    print(f"REGISTER benchmark: {args.users} users, {args.seconds:g} s per step, "
          f"rates {args.rates}, 127.0.0.1 only; work dir {work}", flush=True)

    try:
        if not args.skip_edgepbx:
            results["edgepbx"] = bench_edgepbx(args, sipp, work, users)
        if not args.skip_kamailio:
            if kam_bin:
                results["kamailio"] = bench_kamailio(args, sipp, kam_bin, work, users)
            else:
                print("kamailio not installed (`make bench` as root installs it): no anchor")
                results["kamailio"] = {"error": "kamailio not installed"}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"register-{stamp}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out.relative_to(REPO)}")
    return 0


def bench_edgepbx(args: argparse.Namespace, sipp: str, work: Path,
                  users: list[tuple[str, str]]) -> dict[str, Any]:
    site = work / "site.json"
    site.write_text(json.dumps(site_document(users)))
    injection = write_injection(work / "users-edgepbx.csv", users)
    state = work / "state"
    state.mkdir()
    port = free_port()
    out: dict[str, Any] = {}
    print(f"\nedgepbx-agent on udp:{HOST}:{port}", flush=True)
    try:
        with edgepbx_agent(work, site, state, port, args.agent_log_level) as (proc, ready):
            out["ready_seconds_cold"] = round(ready, 3)
            print(f"  start to ready (empty state): {ready:.3f} s", flush=True)
            target = Target(sipp, port, injection, work)
            search = search_rates("edgepbx", target, rates=args.rates, seconds=args.seconds,
                                  refine=args.refine, alive=lambda: proc.poll() is None,
                                  budget=args.budget)
            out["steps"] = [asdict(s) for s in search.steps]
            out["max_clean_rate"] = round(search.best.achieved) if search.best else 0
            out["max_clean_offered"] = search.best.offered if search.best else 0
            if proc.poll() is None:
                out["rss_kib"] = vm_rss_kib(proc.pid)
                out["bindings"] = bound_count(state)
                print(f"  RSS with bindings: {out['rss_kib'] / 1024:.1f} MiB "
                      f"({out['bindings']} bindings listed)", flush=True)
                if args.profile:
                    out["profile"] = profile_step(args, target, proc.pid)
            else:
                out["error"] = f"agent died with exit {proc.returncode}"
        warm = []
        for _ in range(3):
            with edgepbx_agent(work, site, state, port, args.agent_log_level) as (_p, ready):
                warm.append(ready)
        out["ready_seconds_warm"] = round(statistics.median(warm), 3)
        print(f"  start to ready (with bindings, median of 3): {out['ready_seconds_warm']:.3f} s",
              flush=True)
    except RuntimeError as exc:
        out["error"] = str(exc)
        log = work / "edgepbx-agent.log"
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        print(f"  edgepbx failed: {exc}\n    " + "\n    ".join(tail), flush=True)
    return out


def profile_step(args: argparse.Namespace, target: Target, pid: int) -> str | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):
        print("  py-spy not installed (pip install -e .[bench]); no profile")
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    outfile = RESULTS / f"register-profile-{dt.datetime.now():%Y%m%d-%H%M%S}.speedscope.json"
    spy = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "250",
                            "--format", "speedscope", "--output", str(outfile), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    step = run_sipp(target, args.profile, int(args.profile * args.seconds),
                    duration_limit=args.seconds + 25)
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
    print(f"  profiled step at {args.profile}/s: achieved {step.achieved:.0f}/s; "
          f"profile {outfile.relative_to(REPO)} (open in speedscope.app)", flush=True)
    return str(outfile.relative_to(REPO))


def bench_kamailio(args: argparse.Namespace, sipp: str, binary: str, work: Path,
                   users: list[tuple[str, str]]) -> dict[str, Any]:
    injection = write_injection(work / "users-kamailio.csv",
                                [(u, KAMAILIO_PASSWORD) for u, _ in users])
    port = free_port()
    out: dict[str, Any] = {"children": args.kamailio_children}
    print(f"\nkamailio (anchor, children={args.kamailio_children}) on udp:{HOST}:{port}",
          flush=True)
    try:
        t0 = time.monotonic()
        with kamailio(binary, work, port, args.kamailio_children) as pid:
            out["ready_seconds_cold"] = round(time.monotonic() - t0, 3)

            def alive() -> bool:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return False
                return True

            target = Target(sipp, port, injection, work)
            search = search_rates("kamailio", target, rates=args.rates, seconds=args.seconds,
                                  refine=args.refine, alive=alive, budget=args.budget)
            out["steps"] = [asdict(s) for s in search.steps]
            out["max_clean_rate"] = round(search.best.achieved) if search.best else 0
            out["max_clean_offered"] = search.best.offered if search.best else 0
            tree = process_tree(pid)
            out["processes"] = len(tree)
            out["pss_kib_total"] = sum(pss_kib(p) for p in tree)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        out["error"] = str(exc)
        print(f"  kamailio failed: {exc}", flush=True)
    return out


def report(results: dict[str, Any]) -> None:
    e, k = results.get("edgepbx", {}), results.get("kamailio", {})
    er, kr = e.get("max_clean_rate"), k.get("max_clean_rate")
    ratio = (er / kr) if er is not None and kr else None
    rss = e.get("rss_kib")
    print()
    print(f"{'REGISTER, digest, UDP, 2 cores shared with SIPp':<50} {'edgepbx':>12} "
          f"{'kamailio':>12} {'ratio':>8}")
    print("-" * 86)
    print(f"{'highest clean rate (registrations/s)':<50} {fmt(er):>12} {fmt(kr):>12} "
          f"{fmt(ratio, '.2f'):>8}")
    print(f"{'  at offered rate (/s)':<50} {fmt(e.get('max_clean_offered')):>12} "
          f"{fmt(k.get('max_clean_offered')):>12}")
    kpss = k.get("pss_kib_total")
    print(f"{'memory (MiB; edgepbx RSS, kamailio PSS all procs)':<50} "
          f"{fmt(rss / 1024 if rss else None, '.1f'):>12} "
          f"{fmt(kpss / 1024 if kpss else None, '.1f'):>12}")
    print(f"{'start to ready, empty state (s)':<50} {fmt(e.get('ready_seconds_cold'), '.3f'):>12}"
          f" {fmt(k.get('ready_seconds_cold'), '.3f'):>12}")
    warm_label = f"start to ready, {results.get('users', 0):,} bindings stored (s)"
    print(f"{warm_label:<50} {fmt(e.get('ready_seconds_warm'), '.3f'):>12}")
    print(f"{'bindings listed by edgepbx phones':<50} {fmt(e.get('bindings')):>12}")
    print("-" * 86)
    print("targets (issue 2): ratio >= 0.50, RSS < 80 MiB; reported only, never enforced. "
          f"Run took {results.get('elapsed_seconds')} s.")
    results["ratio"] = round(ratio, 3) if ratio is not None else None


if __name__ == "__main__":
    sys.exit(main())
