"""Voicemail against a real peer: SIPp reaches a mailbox, waits through the greeting and
the tone, and speaks sip-tester's g711a.pcap. The stored message, decrypted and decoded,
is that speech (envelope correlation), not silence, and of the right length."""

from __future__ import annotations

import math
import time
from array import array
from pathlib import Path

import pytest
from conftest import make_users
from mediakit import pcap_rtp_payloads

from agent.store import Store
from agent.voicemail import VoicemailStore
from interop.test_assigner import prompts  # noqa: F401 - the fixture
from sipstack.media.g711 import alaw_decode, ulaw_decode

PCAP = Path("/usr/share/sip-tester/g711a.pcap")


def _envelope(pcm: bytes, window: int = 400) -> list[float]:
    """RMS per 50 ms of 8 kHz 16-bit audio."""
    samples = array("h", pcm[: len(pcm) & ~1])
    return [math.sqrt(sum(x * x for x in samples[i:i + window]) / window)
            for i in range(0, len(samples) - window + 1, window)]


def _best_correlation(a: list[float], b: list[float], max_lag: int = 40) -> float:
    def corr(x: list[float], y: list[float]) -> float:
        n = min(len(x), len(y))
        if n < 20:
            return 0.0
        x, y = x[:n], y[:n]
        mx, my = sum(x) / n, sum(y) / n
        sx = math.sqrt(sum((v - mx) ** 2 for v in x))
        sy = math.sqrt(sum((v - my) ** 2 for v in y))
        if not sx or not sy:
            return 0.0
        return sum((p - mx) * (q - my) for p, q in zip(x, y, strict=True)) / (sx * sy)

    return max(max(corr(a[lag:], b), corr(a, b[lag:])) for lag in range(max_lag))


def test_sipp_leaves_a_message_that_is_stored_encrypted_and_is_the_speech(
        agent_factory, sipp, prompts, tmp_path: Path) -> None:  # noqa: F811
    if not PCAP.exists():
        pytest.fail("sip-tester's g711a.pcap is missing; `make deps` installs it")
    caller, owner = make_users(2, first_extension=201)
    agent = agent_factory([caller, owner], site_extra={"sip": {"digest_algorithms": ["MD5"]}})
    inf = tmp_path / "caller.csv"
    inf.write_text(f"SEQUENTIAL\n{caller.username};[authentication username={caller.username} "
                   f"password={caller.password}];{owner.extension}\n")
    result = sipp.run("vm_leave_uac.xml", agent.port, calls=1, timeout=40,
                      extra=["-inf", str(inf), "-mp", str(_free_media_port())])
    assert result.returncode == 0, result.explain()

    store = Store.open(agent.state_dir)
    try:
        vm = VoicemailStore(agent.state_dir, store, recover=False)
        deadline = time.monotonic() + 5  # the agent saves it just after the hang-up
        while not vm.list_messages(owner.extension) and time.monotonic() < deadline:
            time.sleep(0.1)
        [message] = vm.list_messages(owner.extension)
        stored = vm.read_audio(owner.extension, message.id)
    finally:
        store.close()
    assert message.caller == caller.extension and message.folder == "new"
    # On disk it is not the audio: encrypted at rest.
    files = [p for p in (agent.state_dir / "voicemail").rglob("*") if p.is_file()]
    assert files and all(stored[1000:1064] not in p.read_bytes() for p in files)

    received = ulaw_decode(stored)
    spoken = alaw_decode(pcap_rtp_payloads(PCAP))
    seconds = len(received) / 16000
    assert 5.0 <= seconds <= 9.5, seconds
    loudness = _envelope(received)
    assert max(loudness) > 1000, "the message is silence"
    similarity = _best_correlation(loudness, _envelope(spoken))
    assert similarity > 0.8, similarity

    # The call record carries what the agent measured of the audio it received.
    [record] = agent.cdr()
    assert record["disposition"] == "answered" and record["callee"] == "voicemail", record
    assert record["jitter_ms"] is not None and record["loss_percent"] is not None, record
    assert record["loss_percent"] < 5.0, record


def _free_media_port() -> int:
    from conftest import free_port

    return free_port()
