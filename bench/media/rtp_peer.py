"""The callers' media for bench/media/run.py: one process, one UDP socket per call.

Started by run.py as ``python rtp_peer.py SPEECH_FILE [--user-stamps]``; talks JSON
lines over stdin/stdout.

* ``{"op": "open", "n": N}`` -> ``{"ports": [...]}``: N sockets on 127.0.0.1 (each call
  its own media port, as phones have). RTCP is asked for on the same port (a=rtcp).
* ``{"op": "start", "i": k, "host": h, "port": p, "mode": "vm" | "listen"}``: call k is
  answered, the agent's RTP goes to h:p. Every packet from the agent is timestamped on
  arrival: by the kernel (SO_TIMESTAMPNS), or with ``--user-stamps`` by time.monotonic
  right after recv, which adds this process's own scheduling delays. ``vm``: once the
  agent has played something and then been quiet for QUIET_AFTER_GREETING seconds
  (greeting and tone done, the agent records), send the speech (mu-law, 20 ms frames
  on our own 20 ms grid) and TAIL_FRAMES of silence, then print ``{"done": k}``; the
  caller then hangs up.
  ``listen``: only receive.
* ``{"op": "stop"}`` -> the figures as one JSON line, and exit.

The send-interval error is |arrival gap - 20 ms| between consecutive packets of one
stream that are also consecutive in the agent's send grid (sequence + 1 and timestamp +
160): the gap between two prompts is not an interval. Sequence gaps are packets the agent
sent that never arrived (or that it never sent: skipped ticks do not advance the sequence).
"""

from __future__ import annotations

import json
import math
import os
import selectors
import socket
import struct
import sys
import time
from array import array

LOOPBACK = "127.0.0.1"
FRAME = 160  # 20 ms of 8 kHz G.711
PTIME = 0.02
QUIET_AFTER_GREETING = 0.4  # s without agent RTP after at least MIN_GREETING packets
MIN_GREETING = 50
TAIL_FRAMES = 25  # 0.5 s of silence after the speech, so the recorder drains the speech
GIVE_UP = 40.0  # s after answer: a vm call whose greeting never ended is done anyway
SILENCE = b"\xff" * FRAME
# Linux: the kernel stamps each datagram as it is queued to the socket (CLOCK_REALTIME),
# so the receiver's own scheduling on the shared cores does not enter the figures.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ANC = socket.CMSG_SPACE(16)


class Stream:
    __slots__ = ("arrivals", "done", "first", "frame", "index", "last", "mode", "remote",
                 "sending", "seq", "seqs", "sock", "ssrc", "started", "tss", "tx_seq")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.remote: tuple[str, int] | None = None
        self.mode = "listen"
        self.arrivals = array("d")
        self.seqs = array("H")
        self.tss = array("I")
        self.last = 0.0
        self.first = 0.0
        self.started = 0.0
        self.sending = False
        self.done = False
        self.frame = 0
        self.tx_seq = int.from_bytes(os.urandom(2), "big")
        self.ssrc = int.from_bytes(os.urandom(4), "big")


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
    return float(values[k])


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        speech = f.read()
    kernel_stamps = "--user-stamps" not in sys.argv[2:]
    unpack_ts = struct.Struct("qq").unpack
    frames = [speech[i:i + FRAME].ljust(FRAME, b"\xff") for i in range(0, len(speech), FRAME)]
    frames += [SILENCE] * TAIL_FRAMES
    sel = selectors.DefaultSelector()
    stdin = sys.stdin.fileno()
    sel.register(stdin, selectors.EVENT_READ, None)
    streams: list[Stream] = []
    pending = b""
    clock = time.monotonic
    grid0 = clock()
    next_tick = grid0 + PTIME

    def out(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        timeout = max(0.0, next_tick - clock())
        for key, _ in sel.select(timeout):
            if key.data is None:
                chunk = os.read(stdin, 65536)
                if not chunk:  # the harness went away
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    cmd = json.loads(line)
                    op = cmd["op"]
                    if op == "open":
                        for _ in range(cmd["n"]):
                            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                            if kernel_stamps:
                                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                            s.bind((LOOPBACK, 0))
                            s.setblocking(False)
                            st = Stream(s, len(streams))
                            streams.append(st)
                            sel.register(s, selectors.EVENT_READ, st)
                        out({"ports": [st.sock.getsockname()[1] for st in streams]})
                    elif op == "start":
                        st = streams[cmd["i"]]
                        st.remote = (cmd["host"], int(cmd["port"]))
                        st.mode = cmd["mode"]
                        st.started = clock()
                    elif op == "stop":
                        out(figures(streams))
                        return
                continue
            st = key.data
            sock = st.sock
            while True:
                try:
                    data, anc, _, _ = sock.recvmsg(2048, ANC)
                except BlockingIOError:
                    break
                now = clock()
                stamp = now
                if anc and anc[0][1] == SO_TIMESTAMPNS and len(anc[0][2]) >= 16:
                    sec, nsec = unpack_ts(anc[0][2][:16])
                    stamp = sec + nsec * 1e-9
                if len(data) < 12 or 200 <= data[1] <= 204:  # RTCP
                    continue
                if not st.arrivals:
                    st.first = now
                st.arrivals.append(stamp)
                st.seqs.append(int.from_bytes(data[2:4], "big"))
                st.tss.append(int.from_bytes(data[4:8], "big"))
                st.last = now
        now = clock()
        if now < next_tick:
            continue
        # The 20 ms tick: start, send, finish the vm callers' speech.
        next_tick += PTIME
        if next_tick < now:  # we fell behind: re-anchor rather than burst
            next_tick = now + PTIME
        for st in streams:
            if st.done or st.mode != "vm" or st.remote is None:
                continue
            if not st.sending:
                quiet = st.arrivals and len(st.arrivals) >= MIN_GREETING \
                    and now - st.last >= QUIET_AFTER_GREETING
                if quiet:
                    st.sending = True
                elif now - st.started > GIVE_UP:
                    st.done = True
                    out({"done": st.index, "gave_up": True})
                continue
            header = bytes((0x80, 0x80 if st.frame == 0 else 0x00)) \
                + st.tx_seq.to_bytes(2, "big") \
                + ((st.frame * FRAME) & 0xFFFFFFFF).to_bytes(4, "big") \
                + st.ssrc.to_bytes(4, "big")
            try:
                st.sock.sendto(header + frames[st.frame], st.remote)
            except OSError:
                pass
            st.tx_seq = (st.tx_seq + 1) & 0xFFFF
            st.frame += 1
            if st.frame == len(frames):
                st.done = True
                out({"done": st.index})


def figures(streams: list[Stream]) -> dict[str, object]:
    errors: list[float] = []
    packets = gaps = 0
    per_stream_max: list[float] = []
    for st in streams:
        packets += len(st.arrivals)
        worst = 0.0
        for j in range(1, len(st.arrivals)):
            dseq = (st.seqs[j] - st.seqs[j - 1]) & 0xFFFF
            if dseq > 1 and dseq < 1000:
                gaps += dseq - 1
            if dseq == 1 and (st.tss[j] - st.tss[j - 1]) & 0xFFFFFFFF == FRAME:
                err = abs(st.arrivals[j] - st.arrivals[j - 1] - PTIME)
                errors.append(err)
                worst = max(worst, err)
        per_stream_max.append(worst)
    errors.sort()
    return {
        "streams": len(streams),
        "streams_heard": sum(1 for st in streams if st.arrivals),
        "packets": packets,
        "intervals": len(errors),
        "seq_gaps": gaps,
        "p50_ms": pct(errors, 50) * 1e3,
        "p99_ms": pct(errors, 99) * 1e3,
        "p999_ms": pct(errors, 99.9) * 1e3,
        "max_ms": (errors[-1] if errors else 0.0) * 1e3,
        "over_5ms": sum(1 for e in errors if e >= 0.005),
        "vm_frames_sent": sum(st.frame for st in streams if st.mode == "vm"),
    }


if __name__ == "__main__":
    main()
