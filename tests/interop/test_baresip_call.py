"""Two baresip phones call each other through edgepbx-agent, and audio flows both ways.

Two headless baresip 1.0 (Debian baresip-core) instances register as two users. The
caller dials the callee's extension at the agent; the agent challenges the INVITE
(407), forks it to the callee's binding, relays 180/200, and passes the SDP through,
so RTP goes straight from phone to phone. The callee answers by itself
(``answermode=auto``).

Media is proved end to end by content, not by packet counts: each phone's audio source
is a WAV file with its own tone (caller 1 kHz, callee 440 Hz, module ``aufile``), and
the ``sndfile`` audio filter dumps what each phone decoded from the RTP it received
(``dump-...-dec.wav``) next to what it encoded (``dump-...-enc.wav``). The callee's
decoded audio must be the caller's 1 kHz tone and the caller's the callee's 440 Hz tone.
No sound card is involved: baresip 1.0's ``aufile`` is a source only, and no player
module is loaded, so the decoded audio ends in the filter chain.

Then the caller hangs up: both phones must see the call close, `edgepbx calls --json`
must be empty and `edgepbx cdr --format json` must hold one answered call 2000 -> 2001.

The phones are driven through baresip's ``ctrl_tcp`` module (netstring-framed JSON
commands and events on 127.0.0.1), with ``menu`` loaded for the ``dial`` and ``hangup``
commands and for auto-answer.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import (
    LOOPBACK,
    AgentProcess,
    SiteUser,
    bound_users,
    free_port,
    make_users,
    require_binary,
    short_tempdir,
)

MODULE_DIR = Path("/usr/lib/baresip/modules")
# Loaded in this order; menu provides `dial`, `hangup` and auto-answer in baresip 1.0.
MODULES = ("g711.so", "aufile.so", "sndfile.so")
APP_MODULES = ("account.so", "menu.so", "ctrl_tcp.so")

RATE = 8000  # PCMU's clock rate: aufile in baresip 1.0 refuses any other file rate
CALLER_HZ = 1000.0
CALLEE_HZ = 440.0
TONE_SECONDS = 30  # longer than any call here: aufile stops at the end of the file
TALK_SECONDS = 4.0
# Goertzel blocks of 50 ms: a whole number of periods of both tones (50 and 22).
BLOCK = 400
# Received audio must carry at least this much clean far-end tone.
MIN_TONE_SECONDS = 2.0


# --------------------------------------------------------------------------- audio


def write_tone(path: Path, freq: float, seconds: float, amplitude: int = 8000) -> Path:
    """8 kHz mono 16-bit WAV with one sine tone."""
    n = int(RATE * seconds)
    frames = struct.pack(
        f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(frames)
    return path


def read_wav(path: Path) -> tuple[int, list[int]]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, (path, w.getparams())
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return rate, list(struct.unpack(f"<{len(data) // 2}h", data))


def tone_fraction(block: list[int], freq: float, rate: int) -> float:
    """Share of the block's power at freq (Goertzel): ~1 for a pure tone at freq."""
    n = len(block)
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    power_at = s1 * s1 + s2 * s2 - coeff * s1 * s2  # |X(f)|^2
    total = sum(x * x for x in block)
    # For x = A sin(...), |X|^2 = (A n / 2)^2 and sum(x^2) = A^2 n / 2.
    return (2.0 * power_at / n) / total if total else 0.0


@dataclass
class ToneReport:
    seconds: float  # length of the recording
    loud_seconds: float  # blocks above the silence floor
    tone_seconds: float  # blocks that are the wanted tone and not the other
    other_seconds: float  # blocks that are the other tone

    def __str__(self) -> str:
        return (
            f"{self.seconds:.2f}s recorded, {self.loud_seconds:.2f}s not silent, "
            f"{self.tone_seconds:.2f}s of the wanted tone, "
            f"{self.other_seconds:.2f}s of the other tone"
        )


def analyse(path: Path, want: float, other: float) -> ToneReport:
    rate, samples = read_wav(path)
    assert rate == RATE, (path, rate)
    loud = wanted = unwanted = 0
    for start in range(0, len(samples) - BLOCK + 1, BLOCK):
        block = samples[start : start + BLOCK]
        rms = math.sqrt(sum(x * x for x in block) / BLOCK)
        if rms < 300:  # the tones are ~5600 RMS; PCMU silence is a few units
            continue
        loud += 1
        f_want = tone_fraction(block, want, rate)
        f_other = tone_fraction(block, other, rate)
        if f_want > 0.9 and f_other < 0.02:
            wanted += 1
        if f_other > 0.5:
            unwanted += 1
    sec = BLOCK / rate
    return ToneReport(len(samples) / rate, loud * sec, wanted * sec, unwanted * sec)


# --------------------------------------------------------------------------- baresip


class CtrlTcp:
    """Client of baresip's ctrl_tcp module: netstring-framed JSON, commands and events."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.settimeout(0.5)
        self.responses: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._token = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                head, colon, rest = buf.partition(b":")
                if not colon or not head.isdigit():
                    break
                size = int(head)
                if len(rest) < size + 1:
                    break
                msg = json.loads(rest[:size])
                assert rest[size : size + 1] == b",", buf
                buf = rest[size + 1 :]
                self.seen.append(msg)
                if msg.get("response"):
                    self.responses.put(msg)

    def command(self, command: str, params: str = "", timeout: float = 10.0) -> dict[str, Any]:
        self._token += 1
        token = f"t{self._token}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(b"%d:%s," % (len(body), body))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no ctrl_tcp response to {command!r}: {self.seen}")
            try:
                reply = self.responses.get(timeout=left)
            except queue.Empty:
                continue
            if reply.get("token") == token:
                return reply

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        """The first event of this type since the connection (waiting for it if need be)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in list(self.seen):
                if event.get("event") and event.get("type") == kind:
                    return event
            if time.monotonic() > deadline:
                kinds = [e.get("type") for e in self.seen if e.get("event")]
                raise AssertionError(f"no {kind} event within {timeout}s; events: {kinds}")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=5)


class BaresipProcess:
    """A headless baresip run from a config directory the subclass has written, driven
    over its ctrl_tcp module (``ctrl_port``): start, connect, log, stop."""

    ctrl_port: int

    def _launch(self, binary: str, confdir: Path) -> None:
        self.log_path = confdir / "baresip.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "-f", str(confdir), "-s"],  # -s: SIP trace in the log
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=confdir,
        )
        self.ctrl: CtrlTcp | None = None

    def connect(self, timeout: float = 10.0) -> CtrlTcp:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "baresip exited:\n" + self.log()
            try:
                self.ctrl = CtrlTcp(self.ctrl_port)
                return self.ctrl
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"baresip's ctrl_tcp never listened ({exc}):\n" + self.log()
                    ) from None
                time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.ctrl is not None:
            self.ctrl.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return int(self.proc.returncode)


class Phone(BaresipProcess):
    """One headless baresip with a tone as microphone and a dump of what it decoded."""

    def __init__(
        self, binary: str, confdir: Path, user: SiteUser, agent_port: int, tone_hz: float
    ) -> None:
        self.user = user
        self.confdir = confdir
        self.recdir = confdir / "rec"
        self.recdir.mkdir()
        self.ctrl_port = free_port()
        self.sip_port = free_port()
        tone = write_tone(confdir / "tone.wav", tone_hz, TONE_SECONDS)
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t{LOOPBACK}:{self.sip_port}",
            # Media addresses come from this address: else the SDP may carry eth0's.
            # (An interface name would do too, but libre 1.x skips loopback interfaces.)
            f"net_interface\t\t{LOOPBACK}",
            f"audio_source\t\taufile,{tone}",
            # No player module is loaded: nothing may touch a sound card.
            "audio_player\t\taufile,/dev/null",
            "audio_alert\t\taufile,/dev/null",
            "ausrc_srate\t\t8000",
            "ausrc_channels\t\t1",
            "rtp_stats\t\tyes",
            "statmode_default\toff",  # menu's once-a-tick status line floods the log
            f"snd_path\t\t{self.recdir}",
            f"ctrl_tcp_listen\t\t{LOOPBACK}:{self.ctrl_port}",
            f"module_path\t\t{MODULE_DIR}",
            *[f"module\t\t\t{m}" for m in MODULES],
            *[f"module_app\t\t{m}" for m in APP_MODULES],
            "",
        ]
        (confdir / "config").write_text("\n".join(lines), encoding="ascii")
        account = (
            f"<sip:{user.username}@{LOOPBACK}:{agent_port};transport=udp>"
            f";auth_pass={user.password};regint=600;answermode=auto;audio_codecs=PCMU\n"
        )
        (confdir / "accounts").write_text(account, encoding="ascii")
        (confdir / "contacts").write_text("", encoding="ascii")
        self._launch(binary, confdir)

    def recording(self, kind: str) -> Path:
        """The sndfile dump of this call: kind "dec" (received) or "enc" (sent)."""
        found = sorted(self.recdir.glob(f"dump-*-{kind}.wav"))
        assert len(found) == 1, (kind, found, self.log()[-3000:])
        return found[0]



ProcessT = TypeVar("ProcessT", bound=BaresipProcess)


@contextlib.contextmanager
def baresip_processes(prefix: str, modules: Iterable[str] = (*MODULES, *APP_MODULES),
                      module_dir: Path = MODULE_DIR) -> Iterator[
    Callable[[Callable[[str, Path], ProcessT], Callable[[ProcessT], None]], ProcessT]
]:
    """``launch(make, ready)``: a baresip made by ``make(binary, confdir)``, connected and
    made ``ready``, tried again on fresh ports when a free port was taken meanwhile;
    every one is stopped at the end."""
    binary = require_binary("baresip", "baresip-core")
    missing = [m for m in modules if not (module_dir / m).exists()]
    assert not missing, f"baresip-core without {missing}: the package is broken"
    running: list[BaresipProcess] = []
    with contextlib.ExitStack() as stack:

        def launch(make: Callable[[str, Path], ProcessT],
                   ready: Callable[[ProcessT], None]) -> ProcessT:
            for attempt in range(3):
                process = make(binary, stack.enter_context(short_tempdir(prefix)))
                running.append(process)
                try:
                    process.connect()
                    ready(process)
                except AssertionError:
                    # A free port (SIP or ctrl_tcp) can be taken before baresip binds it.
                    if attempt == 2 or "already in use" not in process.log().lower():
                        raise
                    process.stop()
                    continue
                return process
            raise AssertionError("unreachable")

        try:
            yield launch
        finally:
            for process in running:
                process.stop()


@pytest.fixture
def phone_factory() -> Iterator[Callable[[SiteUser, int, float], Phone]]:
    with baresip_processes("bcall-") as launch:

        def start(user: SiteUser, agent_port: int, tone_hz: float) -> Phone:
            """A running phone whose ctrl_tcp answers (phone.ctrl)."""
            return launch(lambda binary, confdir: Phone(binary, confdir, user, agent_port,
                                                        tone_hz), lambda phone: None)

        yield start


# --------------------------------------------------------------------------- helpers


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log()[-8000:]}")


TRACE = re.compile(r"^(?:UDP|TCP) (\S+) -> (\S+)\r?\n(.*?)(?=\x1b\[;m|^#\r?$|\Z)", re.M | re.S)


def sdp_bodies(phone: Phone, *, sent: bool, start: str) -> list[str]:
    """The SDP bodies in the phone's SIP trace (-s) of the messages it sent (or received)
    whose first line starts with `start`."""
    own = f"{LOOPBACK}:{phone.sip_port}"
    bodies = []
    for src, _dst, message in TRACE.findall(phone.log()):
        if (src == own) != sent or not message.startswith(start):
            continue
        _head, _, body = message.partition("\n\n")
        if body.startswith("v=0"):
            bodies.append(body.strip())
    return bodies


def media_address(sdp: str) -> str:
    """host:port of the audio stream of an SDP body."""
    c = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    m = re.search(r"^m=audio (\d+) ", sdp, re.M)
    assert c and m, sdp
    return f"{c.group(1)}:{m.group(1)}"


# --------------------------------------------------------------------------- the test


def test_two_baresips_call_through_agent_audio_both_ways(
    agent_factory: Callable[..., AgentProcess], phone_factory: Callable[..., Phone]
) -> None:
    caller_user, callee_user = make_users(2, first_extension=2000)
    agent: AgentProcess = agent_factory(
        [caller_user, callee_user],
        transports=("udp",),
        site_extra={"sip": {"digest_algorithms": ["MD5"]}},
    )
    caller = phone_factory(caller_user, agent.port, CALLER_HZ)
    callee = phone_factory(callee_user, agent.port, CALLEE_HZ)

    def logs() -> str:
        return (
            f"--- caller baresip ---\n{caller.log()[-6000:]}\n"
            f"--- callee baresip ---\n{callee.log()[-6000:]}\n"
            f"--- agent ---\n{agent.log_tail(80)}"
        )

    def registered() -> bool:
        for phone in (caller, callee):
            assert phone.proc.poll() is None, "baresip exited:\n" + logs()
        return bound_users(agent.phones()) == {"2000", "2001"}

    wait_for(registered, 20, "both phones to register", logs)
    assert caller.ctrl is not None and callee.ctrl is not None
    caller_ctrl, callee_ctrl = caller.ctrl, callee.ctrl

    # Dial the callee's extension at the agent; the callee answers by itself.
    reply = caller_ctrl.command("dial", f"sip:{callee_user.extension}@{LOOPBACK}:{agent.port}")
    assert reply.get("ok"), (reply, logs())
    try:
        callee_ctrl.wait_event("CALL_ESTABLISHED", 15)
        caller_ctrl.wait_event("CALL_ESTABLISHED", 10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None

    [active] = agent.calls()
    assert str(active.get("caller")) == "2000", active
    assert str(active.get("callee")) == "2001", active
    assert active.get("answered_at") is not None or active.get("answered_s") is not None, active

    # The SDP went through unchanged (byte for byte, as the phones traced it): each phone
    # got the other's own media address, on 127.0.0.1.
    offers_sent = sdp_bodies(caller, sent=True, start="INVITE ")
    offers_got = sdp_bodies(callee, sent=False, start="INVITE ")
    answers_sent = sdp_bodies(callee, sent=True, start="SIP/2.0 200")
    answers_got = sdp_bodies(caller, sent=False, start="SIP/2.0 200")
    assert offers_sent and offers_got and answers_sent and answers_got, logs()
    assert offers_got[-1] == offers_sent[-1], (offers_sent, offers_got)
    assert answers_got[-1] == answers_sent[-1], (answers_sent, answers_got)
    caller_media, callee_media = media_address(offers_sent[-1]), media_address(answers_sent[-1])
    assert caller_media.startswith(f"{LOOPBACK}:") and callee_media.startswith(f"{LOOPBACK}:")
    assert caller_media != callee_media

    time.sleep(TALK_SECONDS)
    assert caller.proc.poll() is None and callee.proc.poll() is None, logs()
    # RTP goes phone to phone: each phone's RTP comes from the other's media address,
    # not from the agent (baresip logs the source of the first RTP packet).
    assert f"receiving from {callee_media}" in caller.log(), (callee_media, logs())
    assert f"receiving from {caller_media}" in callee.log(), (caller_media, logs())

    # The caller hangs up; both phones see the end and the agent forgets the call.
    reply = caller_ctrl.command("hangup")
    assert reply.get("ok"), (reply, logs())
    try:
        caller_ctrl.wait_event("CALL_CLOSED", 10)
        callee_ctrl.wait_event("CALL_CLOSED", 10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    wait_for(lambda: agent.calls() == [], 10, "the agent to end the call", logs)

    records = agent.cdr()
    assert len(records) == 1, records
    [record] = records
    assert record["disposition"] == "answered", record
    assert str(record["caller"]) == "2000" and str(record["callee"]) == "2001", record
    assert str(record["dialed"]) == "2001", record
    assert record["answer"] is not None and record["end"] - record["answer"] >= TALK_SECONDS - 1

    # Stop the phones so the sndfile dumps are closed (WAV header written).
    assert caller.stop() == 0, caller.log()[-4000:]
    assert callee.stop() == 0, callee.log()[-4000:]

    # Sanity of the method: what each phone encoded is its own tone.
    for phone, own, other in ((caller, CALLER_HZ, CALLEE_HZ), (callee, CALLEE_HZ, CALLER_HZ)):
        sent = analyse(phone.recording("enc"), own, other)
        assert sent.tone_seconds >= MIN_TONE_SECONDS, f"{phone.user.extension} sent: {sent}"

    # The evidence: each phone decoded the other's tone from the RTP it received.
    heard_by_callee = analyse(callee.recording("dec"), CALLER_HZ, CALLEE_HZ)
    heard_by_caller = analyse(caller.recording("dec"), CALLEE_HZ, CALLER_HZ)
    print(f"\ncallee received: {heard_by_callee}\ncaller received: {heard_by_caller}")
    assert heard_by_callee.tone_seconds >= MIN_TONE_SECONDS, f"callee got {heard_by_callee}"
    assert heard_by_callee.other_seconds == 0, f"callee got {heard_by_callee}"
    assert heard_by_caller.tone_seconds >= MIN_TONE_SECONDS, f"caller got {heard_by_caller}"
    assert heard_by_caller.other_seconds == 0, f"caller got {heard_by_caller}"
