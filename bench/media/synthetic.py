"""Synthetic media engine benchmark: N RTP sessions sending 20 ms G.711 frames.

    .venv/bin/python bench/media/run.py --synthetic [--sessions 50,100,200,400] [--seconds 5]
                                        [--no-echo] [--no-uvloop] [--ports 40000-41999]

(bench/media/run.py without --synthetic drives real voicemail and attendant calls in the
agent; this module is what --synthetic runs.)

Each session is a real MediaEngine leg on 127.0.0.1 playing a pre-encoded 1 kHz tone to
a UDP sink in another process. The sink timestamps every packet and, unless --no-echo,
sends it straight back, so each session also receives 50 packets/s through its jitter
buffer and decoder (the recording path of voicemail). Figures, per N:

* sink-side send-interval error: |arrival gap - 20 ms| between consecutive packets of
  one stream, p50/p99/max (includes the sink's own scheduling on the shared cores);
* engine timer lateness: how late the engine's single timer fired, p99/max;
* CPU of the engine process per session (ms of CPU per second of media) and in total.

The sessions stand in for voice applications: the engine alone, no SIP, no apps, in
this process. Nothing fails on an absolute figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.media import MediaEngine
from sipstack.media.g711 import ulaw_encode
from sipstack.sdp import parse_sdp

LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------------------- the sink


def sink_main(port: int, echo: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((LOOPBACK, port))
    print("ready", flush=True)
    arrival = array("d")
    ssrcs = array("I")
    seqs = array("H")
    marking = False
    recv, send, clock = sock.recvfrom, sock.sendto, time.monotonic
    while True:
        data, addr = recv(2048)
        now = clock()
        if len(data) < 12:
            if data == b"MARK":
                marking = True
            elif data == b"STOP":
                break
            continue
        if 200 <= data[1] <= 204:  # RTCP
            continue
        if echo:
            send(data, addr)
        if marking:
            arrival.append(now)
            ssrcs.append(int.from_bytes(data[8:12], "big"))
            seqs.append(int.from_bytes(data[2:4], "big"))
    last: dict[int, tuple[int, float]] = {}
    errors = array("d")
    for t, ssrc, seq in zip(arrival, ssrcs, seqs, strict=True):
        prev = last.get(ssrc)
        if prev is not None and (seq - prev[0]) & 0xFFFF == 1:
            errors.append(abs(t - prev[1] - 0.02))
        last[ssrc] = (seq, t)
    errs = sorted(errors)
    print(json.dumps({
        "packets": len(arrival), "streams": len(last),
        "p50_ms": pct(errs, 50) * 1e3, "p99_ms": pct(errs, 99) * 1e3,
        "max_ms": (errs[-1] if errs else 0.0) * 1e3,
    }), flush=True)


def pct(sorted_values: list[float] | array[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


# ---------------------------------------------------------------------------- the engine


class TimedEngine(MediaEngine):
    """Records how late the engine's single timer fires."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.lateness: list[float] = []
        self.record = False

    def _on_timer(self) -> None:
        if self.record:
            self.lateness.append(self.loop.time() - self._timer_at)
        super()._on_timer()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def run_one(n: int, seconds: float, echo: bool, ports: tuple[int, int]) -> dict[str, float]:
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, __file__, "--sink", str(sink_port)] + ([] if echo else ["--no-echo"]),
        stdout=subprocess.PIPE, text=True,
    )
    assert sink.stdout is not None
    if sink.stdout.readline().strip() != "ready":
        raise RuntimeError("sink did not start")
    ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    engine = TimedEngine(ports, LOOPBACK)
    offer = parse_sdp((
        f"v=0\r\no=sink 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
        f"m=audio {sink_port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"a=rtcp:{sink_port}\r\n"
    ).encode())
    total = seconds + 2.0
    samples = int(8000 * total)
    tone = ulaw_encode(b"".join(
        int(8000 * math.sin(2 * math.pi * 1000 * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(8000)) * math.ceil(total))[:samples]
    legs = []
    try:
        for _ in range(n):
            leg, _answer = await engine.answer(offer, LOOPBACK)
            assert leg.session is not None
            leg.session.play_encoded(tone)
            legs.append(leg)
        await asyncio.sleep(1.0)  # warm-up
        ctl.sendto(b"MARK", (LOOPBACK, sink_port))
        engine.record = True
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        engine.record = False
        ctl.sendto(b"STOP", (LOOPBACK, sink_port))
        out, _ = sink.communicate(timeout=30)
        sink_figures = json.loads(out.strip().splitlines()[-1])
        sent = sum(leg.session.stats().packets_sent for leg in legs if leg.session)
        received = sum(leg.session.stats().packets_received for leg in legs if leg.session)
        skipped = sum(leg.session.stats().ticks_skipped for leg in legs if leg.session)
    finally:
        await engine.close()
        ctl.close()
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    late = sorted(engine.lateness)
    return {
        "sessions": n,
        "sink_packets": sink_figures["packets"],
        "expected_packets": round(n * wall / 0.02),
        "interval_err_p50_ms": sink_figures["p50_ms"],
        "interval_err_p99_ms": sink_figures["p99_ms"],
        "interval_err_max_ms": sink_figures["max_ms"],
        "timer_late_p99_ms": pct(late, 99) * 1e3,
        "timer_late_max_ms": (late[-1] if late else 0.0) * 1e3,
        "cpu_ms_per_session_s": cpu / wall / n * 1e3,
        "cpu_total_pct": cpu / wall * 100,
        "ticks_skipped": skipped,
        "packets_sent": sent,
        "packets_received": received,
    }


async def main_async(args: argparse.Namespace) -> None:
    lo, hi = (int(x) for x in args.ports.split("-"))
    results = []
    for n in args.sessions:
        if 2 * n > hi - lo + 1:
            print(f"N={n}: port range {lo}-{hi} too small, skipped")
            continue
        results.append(await run_one(n, args.seconds, not args.no_echo, (lo, hi)))
        r = results[-1]
        print(
            f"N={n:>4}  packets {r['sink_packets']:>7}/{r['expected_packets']:<7} "
            f"interval error p50 {r['interval_err_p50_ms']:6.2f} ms  "
            f"p99 {r['interval_err_p99_ms']:6.2f} ms  max {r['interval_err_max_ms']:7.2f} ms  "
            f"timer late p99 {r['timer_late_p99_ms']:6.2f} ms  "
            f"CPU {r['cpu_ms_per_session_s']:5.2f} ms/s per session "
            f"({r['cpu_total_pct']:5.1f} % total)  skipped ticks {r['ticks_skipped']}",
            flush=True,
        )
    out_dir = Path(__file__).resolve().parents[1] / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"media-synthetic-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"echo": not args.no_echo, "loop": args.loop_name,
                                "results": results}, indent=1))
    print(f"written {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench/media/run.py --synthetic",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", default="50,100,200,400",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--ports", default="40000-41999")
    ap.add_argument("--no-echo", action="store_true", help="sink does not send back")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sink:
        sink_main(args.sink, not args.no_echo)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * max(args.sessions) + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    args.loop_name = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
            args.loop_name = "uvloop"
        except ImportError:
            pass
    print(f"edgepbx media bench: {args.loop_name}, echo={'off' if args.no_echo else 'on'}, "
          f"{os.cpu_count()} CPUs, {args.seconds:g} s per step, synthetic: each session "
          "plays a pre-encoded tone and records what comes back.", flush=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
