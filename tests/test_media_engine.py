"""The asyncio media engine on 127.0.0.1: two legs exchange a tone; ports are managed."""

from __future__ import annotations

import asyncio
import math
import socket
import struct

import pytest

from agent.media import MediaEngine, MediaLeg, PortRangeExhausted
from sipstack.media.session import DtmfReceived, MediaEvent, PlayoutDone, RemoteLatched
from sipstack.sdp import parse_sdp

LOOPBACK = "127.0.0.1"


def free_range(pairs: int) -> tuple[int, int]:
    """A range of ``pairs`` even/odd port pairs that are free right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOOPBACK, 0))
            base = s.getsockname()[1] & ~1
        if base + 2 * pairs >= 65536 or base < 20000:
            continue
        socks = []
        try:
            for p in range(base, base + 2 * pairs):
                t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(t)
                t.bind((LOOPBACK, p))
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
        return base, base + 2 * pairs - 1
    pytest.skip("no free port range found")


def tone(freq: float, seconds: float, amp: float = 8000.0) -> bytes:
    n = int(8000 * seconds)
    return struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / 8000))
                                   for i in range(n)))


def power(pcm: bytes, freq: float) -> float:
    """Goertzel: normalised power of ``freq`` in ``pcm`` (A**2/2 for amplitude A)."""
    x = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    c = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + c * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - c * s1 * s2) * 2 / len(x) / len(x)


def test_two_engines_exchange_a_1khz_tone() -> None:
    async def main() -> None:
        lo, hi = free_range(4)
        a_engine = MediaEngine((lo, lo + 3), LOOPBACK)
        b_engine = MediaEngine((lo + 4, hi), LOOPBACK)
        got: dict[str, list[MediaEvent]] = {"a": [], "b": []}

        def on(name: str):  # type: ignore[no-untyped-def]
            return lambda leg, ev: got[name].append(ev)

        a_leg, offer = await a_engine.offer(LOOPBACK, on("a"))
        b_leg, answer = await b_engine.answer(parse_sdp(offer.serialize()), LOOPBACK, on("b"))
        MediaEngine.start_answered(a_leg, parse_sdp(answer.serialize()))
        assert a_leg.session is not None and b_leg.session is not None
        assert a_leg.port % 2 == 0 and b_leg.port % 2 == 0
        a_leg.session.play(tone(1000.0, 1.0))
        b_leg.session.play(tone(1000.0, 1.0))
        b_leg.session.send_dtmf("7")
        await asyncio.sleep(1.6)
        heard = {}
        for name, leg in (("a", a_leg), ("b", b_leg)):
            assert leg.session is not None
            pcm = leg.session.read_audio()
            heard[name] = pcm
            stats = leg.session.stats()
            assert stats.packets_sent >= 50 and stats.malformed == 0
        for name, pcm in heard.items():
            assert len(pcm) >= 2 * 8000 * 0.8, name
            core = pcm[2 * 800 : 2 * 6400]  # skip the edges
            p1k = power(core, 1000.0)
            assert p1k > 1e6, (name, p1k)  # amplitude ~8000: A**2/2 = 3.2e7
            assert p1k > 100 * power(core, 1400.0), name
        assert DtmfReceived("7", 100) in got["a"]
        assert PlayoutDone() in got["a"] and PlayoutDone() in got["b"]
        assert not any(isinstance(e, RemoteLatched) for e in got["a"] + got["b"])
        # the timer is one per engine: about 50 wake-ups a second, not one per leg and packet
        assert a_engine.timer_runs < 120
        await a_engine.close()
        await b_engine.close()
        assert a_leg.closed and a_engine.in_use == 0

    asyncio.run(main())


def test_port_range_exhaustion_is_a_clear_error_and_ports_are_released() -> None:
    async def main() -> None:
        lo, hi = free_range(2)
        engine = MediaEngine((lo, hi), LOOPBACK)
        legs = [await engine.open_leg(), await engine.open_leg()]
        assert sorted(leg.port for leg in legs) == [lo, lo + 2]
        with pytest.raises(PortRangeExhausted, match=rf"{lo}-{hi}.*2 in use"):
            await engine.open_leg()
        legs[0].close()
        await asyncio.sleep(0)
        again = await engine.open_leg()
        assert again.port == legs[0].port  # the freed pair is reused
        # really released: after close() another program can bind the ports
        await engine.close()
        await asyncio.sleep(0.01)
        for p in range(lo, hi + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((LOOPBACK, p))

    asyncio.run(main())


def test_ports_held_by_another_program_are_skipped() -> None:
    async def main() -> None:
        lo, hi = free_range(2)
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blocker.bind((LOOPBACK, lo + 1))  # the RTCP port of the first pair
        try:
            engine = MediaEngine((lo, hi), LOOPBACK)
            leg = await engine.open_leg()
            assert leg.port == lo + 2
            with pytest.raises(PortRangeExhausted, match="1 held by other programs"):
                await engine.open_leg()
            await engine.close()
        finally:
            blocker.close()

    asyncio.run(main())


def test_odd_range_start_and_bad_ranges() -> None:
    engine = MediaEngine((10001, 10006))
    assert engine.free == 2  # 10002/3 and 10004/5
    with pytest.raises(ValueError):
        MediaEngine((10001, 10001))
    with pytest.raises(ValueError):
        MediaEngine((0, 10))


def test_negotiation_failure_releases_the_leg() -> None:
    async def main() -> None:
        lo, hi = free_range(1)
        engine = MediaEngine((lo, hi), LOOPBACK)
        offer = parse_sdp(b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                          b"t=0 0\r\nm=audio 4000 RTP/AVP 18\r\n")
        with pytest.raises(ValueError, match="no common codec"):
            await engine.answer(offer, LOOPBACK)
        assert engine.in_use == 0 and engine.free == 1
        await engine.close()

    asyncio.run(main())


def test_callback_errors_do_not_stop_the_media() -> None:
    async def main() -> None:
        lo, _ = free_range(2)
        engine = MediaEngine((lo, lo + 3), LOOPBACK)
        calls: list[MediaLeg] = []

        def bad(leg: MediaLeg, ev: MediaEvent) -> None:
            calls.append(leg)
            raise RuntimeError("app bug")

        a, offer = await engine.offer(LOOPBACK, bad)
        b, answer = await engine.answer(parse_sdp(offer.serialize()), LOOPBACK)
        MediaEngine.start_answered(a, answer)
        assert a.session is not None
        a.session.play(bytes(320 * 3))  # PlayoutDone -> callback raises
        await asyncio.sleep(0.2)
        assert calls and b.session is not None and b.session.stats().packets_received >= 3
        await engine.close()

    asyncio.run(main())


def test_a_leg_closed_from_its_callback_during_a_tick() -> None:
    async def main() -> None:
        lo, _ = free_range(3)
        engine = MediaEngine((lo, lo + 5), LOOPBACK)
        done: list[int] = []

        def close_on_done(leg: MediaLeg, ev: MediaEvent) -> None:
            if isinstance(ev, PlayoutDone):
                done.append(leg.port)
                leg.close()  # inside the engine's timer run

        legs = []
        for _ in range(3):
            leg, offer = await engine.offer(LOOPBACK, close_on_done)
            MediaEngine.start_answered(leg, offer)  # talks to itself
            assert leg.session is not None
            leg.session.play(bytes(320 * 2))
            legs.append(leg)
        await asyncio.sleep(0.2)
        assert sorted(done) == sorted(leg.port for leg in legs)
        assert engine.in_use == 0 and engine.free == 3
        await asyncio.sleep(0.05)
        assert engine._active == []
        await engine.close()

    asyncio.run(main())
