#!/usr/bin/env python3
"""Provisioning benchmark: a boot storm of phones fetching their files over TFTP, from
edgepbx-agent (--tftp-listen) and from Debian's tftpd-hpa, in the same run.

N simulated phones (default 200; Cisco 8841, Yealink T46 and Polycom VVX 450 in turn) all
start at once; each fetches its vendor's common file and then its own file, as a phone
does when it boots (Cisco: XmlDefault.cnf.xml, SEP<MAC>.cnf.xml; Yealink:
y000000000000.cfg, <mac>.cfg; Polycom: 000000000000.cfg, <mac>-edgepbx.cfg). The client
is the asyncio TFTP client of tests/test_tftp_service.py (RFC 1350, no options unless
--blksize), all phones on one event loop in this process.

The agent renders every file on demand from the site and records each device in its
store. tftpd-hpa (`in.tftpd -L -s DIR -a 127.0.0.1:PORT`, foreground, one process forked
per request) serves the same files, rendered beforehand into a temporary directory. A
fetch fails when it errors, times out or returns other bytes than the renderer's.

Figures: wall seconds from the first request to the last phone done (median of
--rounds), failures, and the ratio edgepbx/tftpd-hpa (lower is better; the issue's target
is at most 1.5). Never fails on a figure. Writes bench/results/provision-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"
sys.path.insert(0, str(REPO / "tests"))
from sipprobe import free_port  # noqa: E402
from test_tftp_service import fetch  # noqa: E402

from agent.listen import parse_listen  # noqa: E402
from agent.provisioning_map import provisioning_model  # noqa: E402
from agent.site import parse_site  # noqa: E402
from provisioning import file_for  # noqa: E402

PATIENCE = 10  # a phone's tries per file, 1 s apart (real phones wait longer still)
MODELS = ("cisco-8841", "yealink-t46", "polycom-vvx450")
COMMON = {"cisco-8841": "XmlDefault.cnf.xml", "yealink-t46": "y000000000000.cfg",
          "polycom-vvx450": "000000000000.cfg"}


def own_file(model: str, mac: str) -> str:
    if model.startswith("cisco"):
        return f"SEP{mac.upper()}.cnf.xml"
    if model.startswith("yealink"):
        return f"{mac}.cfg"
    return f"{mac}-edgepbx.cfg"


def site_document(count: int) -> dict[str, Any]:
    users, phones = [], []
    for i in range(count):
        ext = str(2000 + i)
        users.append({"id": f"u{ext}", "name": f"Phone user {ext}", "extension": ext,
                      "sip": {"username": ext, "password": f"bench-{uuid.uuid4().hex[:12]}"}})
        phones.append({"mac": f"0200{i:08x}", "model": MODELS[i % len(MODELS)],
                       "lines": [{"extension": ext}],
                       "blf": [{"extension": str(2000 + (i + 1) % count)}]})
    return {"site": {"name": "Provisioning benchmark", "timezone": "Europe/Berlin",
                     "realm": "bench.edgepbx.test"},
            "users": users, "provisioning": {"sip_server": HOST}, "phones": phones}


def plan(doc: dict[str, Any], sip_port: int) -> tuple[list[list[str]], dict[str, bytes]]:
    """Per phone the names it fetches in order, and every name's expected content."""
    site = parse_site(doc)
    model = provisioning_model(site, [parse_listen(f"udp:{HOST}:{sip_port}")],
                               default_host=HOST)
    fetches, files = [], {}
    for phone in doc["phones"]:
        names = [COMMON[phone["model"]], own_file(phone["model"], phone["mac"])]
        for name in names:
            found = file_for(model.site, model.phones, name)
            assert found is not None, name
            files[name] = found[0]
        fetches.append(names)
    return fetches, files


async def storm(port: int, fetches: list[list[str]], files: dict[str, bytes],
                options: dict[str, str]) -> tuple[float, int, list[str]]:
    async def phone(names: list[str]) -> str | None:
        for name in names:
            try:
                got, _ = await fetch((HOST, port), name, options=options, timeout=1.0,
                                     max_tries=PATIENCE)
            except Exception as exc:  # noqa: BLE001 - counted as a failure
                return f"{name}: {type(exc).__name__} {exc}"
            if got != files[name]:
                return f"{name}: {len(got)} bytes, expected {len(files[name])}"
        return None

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(phone(names) for names in fetches))
    wall = time.perf_counter() - started
    problems = [o for o in outcomes if o is not None]
    return wall, len(problems), problems[:5]


async def wait_serving(port: int, name: str, proc: subprocess.Popen[bytes], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            await fetch((HOST, port), name, timeout=0.2, max_tries=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            await asyncio.sleep(0.05)
    raise RuntimeError(f"server not answering TFTP on port {port} after {limit}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def agent_script() -> str:
    candidate = Path(sys.executable).parent / "edgepbx-agent"
    if candidate.exists():
        return str(candidate)
    return shutil.which("edgepbx-agent") or "edgepbx-agent"


async def run_rounds(port: int, fetches: list[list[str]], files: dict[str, bytes],
                     rounds: int, options: dict[str, str]) -> dict[str, Any]:
    walls, failures, samples = [], 0, []
    for _ in range(rounds):
        wall, failed, problems = await storm(port, fetches, files, options)
        walls.append(wall)
        failures += failed
        samples += problems
        await asyncio.sleep(0.5)  # let the server settle (tftpd-hpa children exit)
    return {"wall_s": walls, "median_wall_s": statistics.median(walls), "failures": failures,
            "failure_samples": samples[:5]}


async def bench_agent(work: Path, doc: dict[str, Any], fetches: list[list[str]],
                      files: dict[str, bytes], args: argparse.Namespace, *, sip_port: int,
                      options: dict[str, str]) -> dict[str, Any]:
    site = work / "site.json"
    site.write_text(json.dumps(doc))
    tftp_port = free_port()
    log = (work / "agent.log").open("wb")
    proc = subprocess.Popen(
        [agent_script(), "--site", str(site), "--state-dir", str(work / "state"),
         "--listen", f"udp:{HOST}:{sip_port}", "--tftp-listen", f"{HOST}:{tftp_port}",
         "--log-level", "warning"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        await wait_serving(tftp_port, "XmlDefault.cnf.xml", proc, 20)
        result = await run_rounds(tftp_port, fetches, files, args.rounds, options)
        listed = subprocess.run(
            [str(Path(agent_script()).with_name("edgepbx")), "--state-dir",
             str(work / "state"), "status", "--json"],
            check=False, capture_output=True, text=True, timeout=15)
        if listed.returncode == 0:
            result["agent_provisioning_status"] = json.loads(listed.stdout).get("provisioning")
        return result
    finally:
        stop(proc)
        log.close()


async def bench_tftpd(work: Path, files: dict[str, bytes], fetches: list[list[str]],
                      args: argparse.Namespace, options: dict[str, str]) -> dict[str, Any]:
    binary = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
    if not os.access(binary, os.X_OK):
        return {"skipped": "in.tftpd not installed (Debian tftpd-hpa; `make deps-bench`)"}
    root = work / "tftproot"
    root.mkdir()
    for name, content in files.items():
        (root / name).write_bytes(content)
        (root / name).chmod(0o644)
    for path in (work, root):
        path.chmod(0o755)  # in.tftpd drops to "nobody" when started as root
    port = free_port()
    log = (work / "tftpd.log").open("wb")
    proc = subprocess.Popen([binary, "-L", "-s", str(root), "-a", f"{HOST}:{port}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_serving(port, next(iter(files)), proc, 10)
        result = await run_rounds(port, fetches, files, args.rounds, options)
        version = subprocess.run([binary, "-V"], check=False, capture_output=True, text=True)
        result["version"] = (version.stdout + version.stderr).strip().splitlines()[0:1]
        return result
    finally:
        stop(proc)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blksize", type=int, default=None,
                        help="ask for this block size (RFC 2348); default: none (512)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    options = {"blksize": str(args.blksize)} if args.blksize else {}
    work = Path(tempfile.mkdtemp(prefix="epbx-prov-", dir="/tmp"))
    sip_port = free_port()
    doc = site_document(args.phones)
    fetches, files = plan(doc, sip_port)
    try:
        (work / "agent").mkdir()
        (work / "tftpd").mkdir()
        agent = asyncio.run(bench_agent(work / "agent", doc, fetches, files, args,
                                        sip_port=sip_port, options=options))
        tftpd = asyncio.run(bench_tftpd(work / "tftpd", files, fetches, args, options))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ratio = (agent["median_wall_s"] / tftpd["median_wall_s"]
             if "median_wall_s" in tftpd and tftpd["median_wall_s"] > 0 else None)
    results = {
        "bench": "provision", "when": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "phones": args.phones, "files_per_phone": 2, "rounds": args.rounds,
        "options": options, "edgepbx": agent, "tftpd_hpa": tftpd,
        "ratio_edgepbx_over_tftpd": ratio,
    }
    print(f"\nTFTP boot storm: {args.phones} phones x 2 files, {args.rounds} rounds, "
          f"options {options or 'none'}")
    print(f"{'':12} {'median wall':>12} {'rounds (s)':>24} {'failures':>9}")
    for name, res in (("edgepbx", agent), ("tftpd-hpa", tftpd)):
        if "median_wall_s" not in res:
            print(f"{name:12} {res.get('skipped', 'no result')}")
            continue
        rounds = ", ".join(f"{w:.3f}" for w in res["wall_s"])
        print(f"{name:12} {res['median_wall_s']:>11.3f}s {rounds:>24} {res['failures']:>9}")
        for sample in res["failure_samples"]:
            print(f"{'':12} failure: {sample}")
    if ratio is not None:
        print(f"ratio edgepbx/tftpd-hpa (wall time, lower is better; target <= 1.5): "
              f"{ratio:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"provision-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
