"""Music on hold: the held party is re-INVITEd to the agent's media and hears it; resume
gives the held party back to the holder."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from callkit import FakeEnv, Harness, Phone, only, sdp

from agent.apps.hold_music import HoldMusicPlayer
from agent.calls.model import Call, Leg
from agent.media.engine import MediaEngine
from sipstack.media.rtp import parse_rtp
from sipstack.message import Request


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def start(self, call: Call, held: Leg, now: float) -> None:
        self.events.append(("start", held.label))

    def stop(self, call: Call, now: float) -> None:
        self.events.append(("stop", call.id))


def _answered(h: Harness) -> tuple[Phone, Phone, Request]:
    alice, bob = Phone(h, "1001", "127.0.0.1", 5061), Phone(h, "1002", "127.0.0.2", 5062)
    h.env.register("1002", bob.peer)
    invite = only(alice.invite("1002"), method="INVITE", peer=bob.peer)[0]
    assert isinstance(invite, Request)
    out = bob.respond(invite, 200, body=sdp("127.0.0.2", 40000))
    ok = only(out, status=200, peer=alice.peer)[0]
    alice.ack(ok.to.tag or "")
    return alice, bob, invite


def _hold(h: Harness, alice: Phone, bob: Phone, direction: str) -> Request:
    out = alice.in_dialog("INVITE", body=sdp("127.0.0.1", 4000, direction=direction))
    relayed = only(out, method="INVITE", peer=bob.peer)[0]
    assert isinstance(relayed, Request)
    answer = "recvonly" if direction == "sendonly" else "sendrecv"
    bob.respond(relayed, 200, body=sdp("127.0.0.2", 40000, direction=answer))
    return relayed


def test_hold_starts_and_resume_stops_music() -> None:
    h = Harness(FakeEnv([("1001", "Alice"), ("1002", "Bob")]))
    recorder = Recorder()
    h.calls.hold_music = recorder
    alice, bob, _ = _answered(h)
    _hold(h, alice, bob, "sendonly")
    assert recorder.events == [("start", "1002")]
    _hold(h, alice, bob, "sendrecv")
    assert recorder.events[-1][0] == "stop"
    alice.in_dialog("BYE")
    assert recorder.events[-1][0] == "stop"


class Prompts:
    def get(self, prompt_id: str, codec: str = "PCMU") -> bytes:
        return bytes([0x20, 0xA0] * 800)  # a loud square wave, 0.2 s

    def __contains__(self, prompt_id: object) -> bool:
        return False


def test_the_held_party_hears_the_agent() -> None:
    async def scenario() -> None:
        h = Harness(FakeEnv([("1001", "Alice"), ("1002", "Bob")]))
        engine = MediaEngine((16384, 32767), "127.0.0.1")  # wide: ports may be taken
        player = HoldMusicPlayer(h.calls, lambda: engine, Prompts,  # type: ignore[arg-type]
                                 lambda leg: "127.0.0.1", flush=lambda: None)
        h.calls.hold_music = player
        ear = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ear.bind(("127.0.0.1", 0))
        ear.setblocking(False)
        try:
            alice, bob, _ = _answered(h)
            _hold(h, alice, bob, "sendonly")
            reinvite: Any = None
            for _ in range(50):
                await asyncio.sleep(0.02)
                found = only(h.collect(), method="INVITE", peer=bob.peer)
                if found:
                    reinvite = found[0]
                    break
            assert reinvite is not None, "no re-INVITE to the held party"
            assert b"a=sendonly" in reinvite.body and b"127.0.0.1" in reinvite.body
            bob.respond(reinvite, 200, body=sdp("127.0.0.1", ear.getsockname()[1],
                                                  direction="recvonly"))
            packets = []
            for _ in range(100):
                await asyncio.sleep(0.02)
                try:
                    while True:
                        packets.append(ear.recv(2048))
                except BlockingIOError:
                    pass
                if len(packets) >= 5:
                    break
            assert len(packets) >= 5, "no music reached the held party"
            assert parse_rtp(packets[0]).payload_type == 0
            assert player.active == 1
            _hold(h, alice, bob, "sendrecv")  # resume
            assert player.active == 0
        finally:
            ear.close()
            await player.close()
            await engine.close()

    asyncio.run(scenario())
