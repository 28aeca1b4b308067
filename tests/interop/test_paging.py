"""A baresip pager pages a baresip member through edgepbx-agent, unicast and multicast.

The site has a paging group (number 7000, mode "both") with one member and a multicast
stream on 239.255.0.1 (a provisioning.paging_groups entry). The pager (baresip, a
1 kHz tone as microphone, module aufile) dials 7000; the agent answers it with its own
media leg and calls the member, whose baresip answers by itself (answermode=auto): the
INVITE carries the auto-answer headers and a sendonly offer. The agent forwards the
pager's audio to the member and, as RTP, to the multicast group, out of 127.0.0.1 with
TTL 1. This test joins the group on 127.0.0.1 and captures that RTP.

The evidence is the content: the RTP that reached the member's port (captured on lo
with an AF_PACKET socket: the test runs as root) and the multicast RTP, decoded here,
must both be the pager's 1 kHz tone, and the member's baresip must count the packets
it received. (baresip 1.0's sndfile filter writes nothing for a recvonly stream, so
its decode dump cannot be the evidence here, unlike in test_baresip_call.) When the
pager hangs up the member's call must close (the agent's BYE), and the one record is
2000 -> paging:all.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import LOOPBACK, AgentProcess, bound_users, free_port, make_users

from interop.test_baresip_call import (  # noqa: F401 - phone_factory is a fixture
    BLOCK,
    MIN_TONE_SECONDS,
    RATE,
    Phone,
    media_address,
    phone_factory,
    sdp_bodies,
    tone_fraction,
    wait_for,
)
from sipstack.media.g711 import ulaw_decode

ETH_P_IP = 0x0800
GROUP = "239.255.0.1"
PAGER_HZ = 1000.0
MEMBER_HZ = 440.0
PAGE_SECONDS = 4.0


class _SocketReader:
    """Reads ``self.sock`` on a thread, handing each datagram to :meth:`_got`."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self._size = size
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(self._size)
            except TimeoutError:
                continue
            except OSError:
                return
            self._got(data, addr)

    def _got(self, data: bytes, addr: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.sock.close()


class MulticastCapture(_SocketReader):
    """RTP packets arriving at GROUP:port, joined on the loopback interface."""

    def __init__(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((GROUP, port))
        membership = struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton(LOOPBACK))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        self.packets: list[tuple[bytes, tuple[str, int]]] = []
        super().__init__(sock, 2048)

    def _got(self, data: bytes, addr: Any) -> None:
        self.packets.append((data, addr))


class LoopbackSniffer(_SocketReader):
    """UDP datagrams to 127.0.0.1, captured on lo (AF_PACKET: root). The member's
    baresip owns its RTP port; this is how the test sees what the agent sent there."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        sock.bind(("lo", ETH_P_IP))
        self.datagrams: list[tuple[int, bytes]] = []  # (destination port, payload)
        super().__init__(sock, 65535)

    def _got(self, packet: bytes, addr: Any) -> None:
        if addr[2] == socket.PACKET_OUTGOING:
            return  # lo shows each packet twice: going out and coming in
        ihl = (packet[0] & 0x0F) * 4
        if len(packet) < ihl + 8 or packet[9] != socket.IPPROTO_UDP:
            return
        dport = struct.unpack("!H", packet[ihl + 2 : ihl + 4])[0]
        self.datagrams.append((dport, packet[ihl + 8 :]))

    def payloads(self, port: int) -> list[bytes]:
        return [data for dport, data in self.datagrams if dport == port]


def rtp_samples(packets: list[bytes]) -> list[int]:
    """The PCMU payloads of RTP packets decoded to 16-bit samples, in arrival order."""
    pcm = bytearray()
    for data in packets:
        if len(data) > 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
            pcm += ulaw_decode(data[12:])
    return list(struct.unpack(f"<{len(pcm) // 2}h", bytes(pcm)))


def tone_seconds(samples: list[int], freq: float) -> float:
    """Seconds of 50 ms blocks that are the tone at ``freq`` (Goertzel)."""
    blocks = sum(1 for start in range(0, len(samples) - BLOCK + 1, BLOCK)
                 if tone_fraction(samples[start : start + BLOCK], freq, RATE) > 0.9)
    return blocks * BLOCK / RATE


@pytest.fixture
def capture() -> Iterator[Callable[[int], MulticastCapture]]:
    opened: list[MulticastCapture] = []

    def open_(port: int) -> MulticastCapture:
        cap = MulticastCapture(port)
        opened.append(cap)
        return cap

    yield open_
    for cap in opened:
        cap.close()


@pytest.fixture
def sniffer() -> Iterator[LoopbackSniffer]:
    sniff = LoopbackSniffer()
    yield sniff
    sniff.close()


def test_baresip_pages_a_baresip_member_and_the_multicast_group(
    agent_factory: Callable[..., AgentProcess],
    phone_factory: Callable[..., Phone],  # noqa: F811 - the fixture imported above
    capture: Callable[[int], MulticastCapture], sniffer: LoopbackSniffer,
) -> None:
    pager_user, member_user = make_users(2, first_extension=2000)
    mport = free_port()
    stream = {"address": GROUP, "port": mport}
    agent: AgentProcess = agent_factory(
        [pager_user, member_user],
        transports=("udp",),
        site_extra={
            "sip": {"digest_algorithms": ["MD5"]},
            "provisioning": {"paging_groups": [{"label": "All", **stream}]},
            "paging_groups": [{"name": "all", "number": "7000", "mode": "both",
                               "members": [member_user.extension], "multicast": stream}],
        },
    )
    listener = capture(mport)
    pager = phone_factory(pager_user, agent.port, PAGER_HZ)
    member = phone_factory(member_user, agent.port, MEMBER_HZ)

    def logs() -> str:
        return (
            f"--- pager baresip ---\n{pager.log()[-6000:]}\n"
            f"--- member baresip ---\n{member.log()[-6000:]}\n"
            f"--- agent ---\n{agent.log_tail(80)}"
        )

    def registered() -> bool:
        for phone in (pager, member):
            assert phone.proc.poll() is None, "baresip exited:\n" + logs()
        return bound_users(agent.phones()) == {"2000", "2001"}

    wait_for(registered, 20, "both phones to register", logs)
    assert pager.ctrl is not None and member.ctrl is not None
    reply = pager.ctrl.command("dial", f"sip:7000@{LOOPBACK}:{agent.port}")
    assert reply.get("ok"), (reply, logs())
    try:
        pager.ctrl.wait_event("CALL_ESTABLISHED", 15)
        member.ctrl.wait_event("CALL_ESTABLISHED", 15)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None

    # The member's INVITE came from the agent, asked for auto-answer, offered sendonly.
    trace = member.log()
    invite = trace[trace.find("INVITE sip:"):]
    invite = invite[: invite.find("\n\n", invite.find("v=0"))]
    assert "answer-after=0" in invite and "info=alert-autoanswer" in invite, logs()
    assert "a=sendonly" in invite, invite
    [active] = agent.calls()
    assert str(active.get("caller")) == "2000" and active.get("callee") == "paging:all", active

    time.sleep(PAGE_SECONDS)
    assert pager.proc.poll() is None and member.proc.poll() is None, logs()

    # The pager hangs up: the agent hangs up the member.
    reply = pager.ctrl.command("hangup")
    assert reply.get("ok"), (reply, logs())
    try:
        member.ctrl.wait_event("CALL_CLOSED", 10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    wait_for(lambda: agent.calls() == [], 10, "the agent to end the page", logs)
    [record] = agent.cdr()
    assert (str(record["caller"]), record["callee"]) == ("2000", "paging:all"), record
    assert str(record["dialed"]) == "7000" and record["disposition"] == "answered", record

    assert member.stop() == 0, member.log()[-4000:]  # its RTP statistics are logged now
    # What reached the member's RTP port (captured on lo) is the pager's tone, and
    # baresip took it in (its RTP statistics).
    media = media_address(sdp_bodies(member, sent=True, start="SIP/2.0 200")[-1])
    port = int(media.rpartition(":")[2])
    seconds = tone_seconds(rtp_samples(sniffer.payloads(port)), PAGER_HZ)
    print(f"\nmember's RTP port {port}: {seconds:.2f}s of the pager's tone")
    assert seconds >= MIN_TONE_SECONDS, f"member got {seconds:.2f}s of the tone\n{logs()}"
    stats = re.search(r"^packets:\s+(\d+)\s+(\d+)$", member.log(), re.M)
    assert stats and int(stats.group(2)) >= 100, (stats, logs())

    # The multicast stream: PCMU RTP from the agent, carrying the pager's tone.
    time.sleep(0.3)
    assert listener.packets, f"no RTP on {GROUP}:{mport}\n{logs()}"
    assert {addr[0] for _, addr in listener.packets} == {LOOPBACK}
    assert {data[1] & 0x7F for data, _ in listener.packets} == {0}  # PCMU
    seconds = tone_seconds(rtp_samples([data for data, _ in listener.packets]), PAGER_HZ)
    print(f"multicast: {len(listener.packets)} packets, {seconds:.2f}s of the tone")
    assert seconds >= MIN_TONE_SECONDS, (len(listener.packets), seconds)
