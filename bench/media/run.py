#!/usr/bin/env python3
"""Media benchmark: N concurrent real voice-application calls in the agent.

    .venv/bin/python bench/media/run.py [--sessions 50,100,200,300] [--rate 100]
                                        [--attendant-hold 14] [--keep]
    .venv/bin/python bench/media/run.py --synthetic [options of bench/media/synthetic.py]

For each N, a fresh ``edgepbx-agent`` (its own state directory) runs a site with N
callers, N/2 mailboxes of users that are not registered, and an auto attendant (number
5000) whose menu plays ``att_welcome`` + ``att_operator`` with a 1 s key timeout. A
Python SIP UAC (bench/media/sipuac.py: INVITE, 407, digest, INVITE, 200, ACK ... BYE,
over UDP) places N calls at ``--rate`` calls/s, so that all overlap:

* even calls dial a mailbox (one each): the agent answers with the voicemail greeting
  and the tone, then records. The caller speaks sip-tester's g711a.pcap (7 s of speech,
  transcoded to mu-law, sent as 20 ms PCMU frames) once the agent has gone quiet after
  the tone, adds 0.5 s of silence and hangs up;
* odd calls dial the attendant and listen to its menu (greeting, "please try again",
  greeting...) for ``--attendant-hold`` seconds, then hang up.

Each call has its own media port in one receiver process (bench/media/rtp_peer.py) that
timestamps every RTP packet the agent sends. Figures, per N:

* the send-interval error of the agent's outgoing RTP (the prompts it plays):
  |arrival gap - 20 ms| between consecutive packets of one stream, p50/p99/max. Arrivals
  are stamped by the kernel (SO_TIMESTAMPNS) as the agent's datagrams reach the
  receiver's sockets, so the receiver's own scheduling does not count (``--user-stamps``:
  stamped in the receiver after recv, as bench/media/synthetic.py does);
* messages stored / expected, read back with VoicemailStore after the calls;
* frames lost in the recordings: the stored message is compared frame by frame with the
  speech sent (mu-law round-trips exactly through the agent's decode and encode; a
  frame the jitter buffer lost is stored as silence). Frames missing at the start, or
  at the end beyond the recorder's trimming of trailing silence, count as lost too;
* the agent's CPU per session: utime + stime from /proc/PID/stat while all N calls are
  up (last answer to first hang-up), divided by N and by the seconds (ms per second).

The summary names the largest N with p99 < 5 ms, no lost frame, every message stored and
every call answered. Nothing fails on an absolute figure. Prompts must exist (``make
prompts``; generated here when missing and espeak-ng and sox are installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

import sipuac  # noqa: E402 - bench/media/sipuac.py
from mediakit import pcap_rtp_payloads  # noqa: E402 - tests/mediakit.py

from sipstack.media.g711 import alaw_decode, ulaw_decode, ulaw_encode  # noqa: E402

HOST = "127.0.0.1"
PCAP = Path("/usr/share/sip-tester/g711a.pcap")
ATTENDANT = "5000"
CALLER_BASE, MAILBOX_BASE = 2000, 3000
FRAME = 160
SILENCE_RMS = 200.0  # agent.apps.runtime: quieter chunks are trimmed off a message's end
DEFAULT_SESSIONS = [50, 100, 200, 300]


# ------------------------------------------------------------------------------ inputs


def normalise(ulaw: bytes) -> bytes:
    """mu-law has two zeros (0x7F, 0xFF); decoding and encoding again gives 0xFF."""
    return ulaw.replace(b"\x7f", b"\xff")


def speech_ulaw() -> bytes:
    return normalise(ulaw_encode(alaw_decode(pcap_rtp_payloads(PCAP))))


def ensure_prompts() -> None:
    generator = REPO / "packaging" / "prompts" / "generate.py"
    check = subprocess.run([sys.executable, str(generator), "--check"], check=False,
                           capture_output=True)
    if check.returncode != 0:
        print("prompts missing: generating them (packaging/prompts/generate.py)", flush=True)
        subprocess.run([sys.executable, str(generator), "-q"], check=True, timeout=300)


def site_document(n: int, rtp: tuple[int, int]) -> tuple[dict[str, Any], list[sipuac.Dial]]:
    """The site, and what each call dials: even calls a mailbox, odd ones the attendant."""
    callers = [(str(CALLER_BASE + i), f"bench-{uuid.uuid4().hex[:12]}") for i in range(n)]
    mailboxes = [str(MAILBOX_BASE + j) for j in range((n + 1) // 2)]
    users = [{"id": f"u{ext}", "name": f"Caller {ext}", "extension": ext,
              "sip": {"username": ext, "password": pw}} for ext, pw in callers]
    users += [{"id": f"u{ext}", "name": f"Mailbox {ext}", "extension": ext,
               "sip": {"username": ext, "password": f"mb-{uuid.uuid4().hex[:12]}"}}
              for ext in mailboxes]
    doc = {
        "site": {"name": "Media benchmark", "timezone": "UTC", "realm": "bench.edgepbx.test"},
        "users": users,
        "sip": {"digest_algorithms": ["MD5"]},
        "media": {"rtp_port_min": rtp[0], "rtp_port_max": rtp[1]},
        "attendants": [{
            "name": "main", "number": ATTENDANT, "open_menu": "main", "max_failures": 10,
            "menus": [{"name": "main", "greeting": ["att_welcome", "att_operator"],
                       "timeout_seconds": 1,
                       "options": {"1": {"type": "extension", "value": mailboxes[0]}}}],
        }],
    }
    dials = [sipuac.Dial(username=ext, password=pw,
                         number=mailboxes[i // 2] if i % 2 == 0 else ATTENDANT,
                         mode="vm" if i % 2 == 0 else "listen")
             for i, (ext, pw) in enumerate(callers)]
    return doc, dials


# ------------------------------------------------------------------------------ agent


def agent_command(site: Path, state: Path, port: int) -> list[str]:
    candidate = Path(sys.executable).parent / "edgepbx-agent"
    base = [str(candidate)] if candidate.exists() else (
        [shutil.which("edgepbx-agent")] if shutil.which("edgepbx-agent") else
        [sys.executable, "-c", "import sys; from agent.main import main; sys.exit(main())"])
    return [*base, "--site", str(site), "--state-dir", str(state),
            "--listen", f"udp:{HOST}:{port}", "--log-level", "warning"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ messages


def rms(ulaw: bytes) -> float:
    samples = array("h", ulaw_decode(ulaw))
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


@dataclass
class Recording:
    mailbox: str
    frames: int = 0
    lost: int = 0  # frames that differ from what was sent, or are missing
    missing_start: int = 0
    missing_end: int = 0
    aligned: bool = True


def compare(mailbox: str, stored: bytes, sent: bytes) -> Recording:
    """Stored message vs the speech sent, frame by frame (see the module docstring)."""
    m = normalise(stored)
    rec = Recording(mailbox, frames=len(m) // FRAME)
    padded = sent + b"\xff" * (FRAME * 50)
    offset = -1
    for k in range(min(rec.frames - 2, 100)):
        probe = m[k * FRAME:(k + 3) * FRAME]
        if rms(probe) < SILENCE_RMS:
            continue
        pos = padded.find(probe)
        if pos >= 0 and (pos - k * FRAME) % FRAME == 0:
            offset = pos - k * FRAME
            break
    sent_frames = [sent[i:i + FRAME] for i in range(0, len(sent) - FRAME + 1, FRAME)]
    if offset < 0:
        rec.aligned = False
        rec.lost = sum(1 for f in sent_frames if rms(f) >= SILENCE_RMS)
        return rec
    first = offset // FRAME  # frames of the speech the recording does not start with
    rec.missing_start = sum(1 for f in sent_frames[:max(0, first)] if rms(f) >= SILENCE_RMS)
    for j in range(rec.frames):
        s = first + j
        if 0 <= s < len(sent_frames) and m[j * FRAME:(j + 1) * FRAME] != sent_frames[s]:
            rec.lost += 1
    end = first + rec.frames
    rec.missing_end = sum(1 for f in sent_frames[max(0, end):] if rms(f) >= SILENCE_RMS)
    rec.lost += rec.missing_start + rec.missing_end
    return rec


def read_messages(state: Path, mailboxes: list[str], wait: float) -> dict[str, list[bytes]]:
    """Every mailbox's messages, polling until each has one or ``wait`` seconds pass."""
    from agent.store import Store
    from agent.voicemail import VoicemailStore

    deadline = time.monotonic() + wait
    while True:
        store = Store.open(state)
        try:
            vm = VoicemailStore(state, store, recover=False)
            found = {mb: [vm.read_audio(mb, m.id) for m in vm.list_messages(mb)]
                     for mb in mailboxes}
        finally:
            store.close()
        if all(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


# ------------------------------------------------------------------------------ one step


@dataclass
class StepResult:
    sessions: int
    answered: int = 0
    failed: int = 0
    hung_up_by_agent: int = 0
    vm_gave_up: int = 0
    concurrent_seconds: float = 0.0
    packets: int = 0
    intervals: int = 0
    seq_gaps: int = 0
    interval_err_p50_ms: float = 0.0
    interval_err_p99_ms: float = 0.0
    interval_err_p999_ms: float = 0.0
    interval_err_max_ms: float = 0.0
    intervals_over_5ms: int = 0
    messages_expected: int = 0
    messages_stored: int = 0
    recorded_frames: int = 0
    frames_lost: int = 0
    unaligned_messages: int = 0
    cpu_ms_per_session_s: float = 0.0
    cpu_total_pct: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def good(self) -> bool:
        return (self.interval_err_p99_ms < 5.0 and self.frames_lost == 0
                and self.failed == 0 and self.answered == self.sessions
                and self.messages_stored == self.messages_expected)


async def run_step(n: int, args: argparse.Namespace, work: Path, speech: bytes,
                   speech_file: Path) -> StepResult:
    result = StepResult(sessions=n)
    step_dir = work / f"n{n}"
    state = step_dir / "state"
    step_dir.mkdir(parents=True)
    rtp = (args.rtp_base, args.rtp_base + 4 * n + 64)
    doc, dials = site_document(n, rtp)
    site = step_dir / "site.json"
    site.write_text(json.dumps(doc))
    port = free_port()
    log = (step_dir / "agent.log").open("ab")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    agent = subprocess.Popen(agent_command(site, state, port), stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    peer = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "rtp_peer.py"), str(speech_file),
        *(["--user-stamps"] if args.user_stamps else []),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert peer.stdin is not None and peer.stdout is not None
    t_start = time.monotonic()
    try:
        await sipuac.wait_ready(HOST, port, agent, 30)
        peer.stdin.write(json.dumps({"op": "open", "n": n}).encode() + b"\n")
        media_ports = json.loads(await peer.stdout.readline())["ports"]
        ua = await sipuac.UserAgent.start(HOST, port)
        cpu_marks: dict[str, tuple[float, float]] = {}

        def mark(name: str) -> None:
            if name not in cpu_marks:
                cpu_marks[name] = (time.monotonic(), cpu_seconds(agent.pid))

        def media_start(i: int, host: str, rport: int, mode: str) -> None:
            assert peer.stdin is not None
            peer.stdin.write(json.dumps({"op": "start", "i": i, "host": host, "port": rport,
                                         "mode": mode}).encode() + b"\n")

        done_events = [asyncio.Event() for _ in range(n)]

        async def peer_reader() -> None:
            assert peer.stdout is not None
            while line := await peer.stdout.readline():
                msg = json.loads(line)
                if "done" in msg:
                    if msg.get("gave_up"):
                        result.vm_gave_up += 1
                    done_events[msg["done"]].set()
                else:
                    figures.set_result(msg)
                    return

        figures: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(peer_reader())
        answered_count = 0
        all_up = asyncio.Event()

        async def one(i: int) -> None:
            nonlocal answered_count
            await asyncio.sleep(i / args.rate)
            dial = dials[i]
            call = await ua.call(dial, media_ports[i])
            if call is None:
                result.failed += 1
                answered_count += 1
                if answered_count == n:
                    all_up.set()
                return
            result.answered += 1
            media_start(i, call.remote_media[0], call.remote_media[1], dial.mode)
            answered_count += 1
            if answered_count == n:
                mark("all_up")
                all_up.set()
            hold = (done_events[i].wait() if dial.mode == "vm"
                    else asyncio.sleep(args.attendant_hold))
            waiter = asyncio.ensure_future(hold)
            ended = asyncio.ensure_future(call.ended.wait())
            await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=90)
            for t in (waiter, ended):
                t.cancel()
            if call.ended.is_set():
                result.hung_up_by_agent += 1
                mark("first_bye")
                return
            mark("first_bye")
            if not await ua.bye(call):
                result.notes.append(f"BYE of call {i} unanswered")

        await asyncio.gather(*(one(i) for i in range(n)))
        peer.stdin.write(b'{"op": "stop"}\n')
        fig = await asyncio.wait_for(figures, 60)
        await reader
        ua.close()
        if "all_up" in cpu_marks and "first_bye" in cpu_marks:
            (t0, c0), (t1, c1) = cpu_marks["all_up"], cpu_marks["first_bye"]
            if t1 - t0 > 0.5:
                result.concurrent_seconds = t1 - t0
                result.cpu_ms_per_session_s = (c1 - c0) / (t1 - t0) / n * 1e3
                result.cpu_total_pct = (c1 - c0) / (t1 - t0) * 100
        if not result.concurrent_seconds:
            result.notes.append("the calls never were all up at once: no CPU figure")
        result.packets = fig["packets"]
        result.intervals = fig["intervals"]
        result.seq_gaps = fig["seq_gaps"]
        result.interval_err_p50_ms = fig["p50_ms"]
        result.interval_err_p99_ms = fig["p99_ms"]
        result.interval_err_p999_ms = fig["p999_ms"]
        result.interval_err_max_ms = fig["max_ms"]
        result.intervals_over_5ms = fig["over_5ms"]

        mailboxes = [d.number for d in dials if d.mode == "vm"]
        result.messages_expected = len(mailboxes)
        found = await asyncio.to_thread(read_messages, state, mailboxes, 20.0)
        for mb in mailboxes:
            msgs = found.get(mb, [])
            result.messages_stored += min(1, len(msgs))
            if len(msgs) > 1:
                result.notes.append(f"mailbox {mb} holds {len(msgs)} messages")
            if msgs:
                rec = compare(mb, msgs[0], speech)
                result.recorded_frames += rec.frames
                result.frames_lost += rec.lost
                result.unaligned_messages += 0 if rec.aligned else 1
            else:
                result.frames_lost += sum(
                    1 for k in range(0, len(speech) - FRAME + 1, FRAME)
                    if rms(speech[k:k + FRAME]) >= SILENCE_RMS)
    finally:
        if peer.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                peer.kill()
            await peer.wait()
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        log.close()
    result.seconds = time.monotonic() - t_start
    return result


# ------------------------------------------------------------------------------ main


def show(r: StepResult) -> None:
    print(
        f"N={r.sessions:>4}  answered {r.answered}/{r.sessions}  "
        f"interval error p50 {r.interval_err_p50_ms:5.2f} ms  p99 {r.interval_err_p99_ms:6.2f} ms"
        f"  max {r.interval_err_max_ms:7.2f} ms  ({r.intervals} intervals, "
        f"{r.intervals_over_5ms} >= 5 ms, {r.seq_gaps} seq gaps)  "
        f"messages {r.messages_stored}/{r.messages_expected}  frames lost {r.frames_lost}"
        f"/{r.recorded_frames}  CPU {r.cpu_ms_per_session_s:5.2f} ms/s per session "
        f"({r.cpu_total_pct:5.1f} % over {r.concurrent_seconds:4.1f} s all up)  "
        f"[{r.seconds:.0f} s]" + (f"  notes: {'; '.join(r.notes[:3])}" if r.notes else ""),
        flush=True)


async def main_async(args: argparse.Namespace) -> int:
    speech = speech_ulaw()
    results: list[StepResult] = []
    work = Path(tempfile.mkdtemp(prefix="edgepbx-media-bench-"))
    speech_file = work / "speech.ulaw"
    speech_file.write_bytes(speech)
    try:
        for n in args.sessions:
            results.append(await run_step(n, args, work, speech, speech_file))
            show(results[-1])
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    good = [r.sessions for r in results if r.good]
    print(f"largest N with p99 interval error < 5 ms, no lost frame, every message stored: "
          f"{max(good) if good else 'none'}", flush=True)
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"media-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "mode": "applications", "cpus": os.cpu_count(), "rate": args.rate,
        "attendant_hold": args.attendant_hold, "speech_seconds": len(speech) / 8000,
        "largest_good_n": max(good) if good else None,
        "results": [asdict(r) for r in results]}, indent=1))
    print(f"written {path}")
    return 0


def main() -> int:
    if "--synthetic" in sys.argv[1:]:
        import synthetic  # bench/media/synthetic.py

        synthetic.main([a for a in sys.argv[1:] if a != "--synthetic"])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--synthetic", action="store_true",
                    help="the engine alone, no SIP (see bench/media/synthetic.py)")
    ap.add_argument("--sessions", default=",".join(map(str, DEFAULT_SESSIONS)),
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--rate", type=float, default=100.0, help="calls placed per second")
    ap.add_argument("--attendant-hold", type=float, default=14.0,
                    help="seconds an attendant caller listens before hanging up")
    ap.add_argument("--rtp-base", type=int, default=30000, help="the agent's first RTP port")
    ap.add_argument("--user-stamps", action="store_true",
                    help="time arrivals in the receiver process, not by the kernel")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if not PCAP.exists():
        print(f"{PCAP} is missing (Debian's sip-tester; `make deps` installs it)")
        return 2
    ensure_prompts()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * max(args.sessions) + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    print(f"edgepbx media bench: real calls, half voicemail (speaking {PCAP.name}), half "
          f"auto attendant; {os.cpu_count()} CPUs, {args.rate:g} calls/s; agent, callers "
          "and RTP receiver share the cores", flush=True)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
