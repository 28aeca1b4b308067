"""The paging application: the media half of a page (signalling: agent.calls.paging).

The runtime has answered the pager with a media leg. This application calls the
members (each with a media leg of its own, offered ``a=sendonly``), and, for a
multicast group, opens one more leg that sends RTP (PCMU, TTL 1) to the group's
address. Then, every 20 ms, what the pager said (decoded PCM from its leg) is played
into every member leg that answered and into the multicast leg: one speaker
forwarded, nothing mixed. The page ends when the pager hangs up (every member gets
a BYE), or when nobody is left to hear it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.apps.runtime import AppCall
from agent.calls.engine import CallControl
from agent.calls.originate import hang_up
from agent.calls.paging import Page, PageMember, PagingGroup
from agent.media.engine import MediaEngine, MediaLeg, PortRangeExhausted
from sipstack.media.session import MediaParams, NegotiationError, make_offer
from sipstack.peer import Peer
from sipstack.sdp import SdpError, parse_sdp

log = logging.getLogger(__name__)

FORWARD_INTERVAL = 0.02  # seconds between moves of the pager's audio (one RTP frame)
MULTICAST_TTL = 1


@dataclass
class PagingHost:
    """What paging needs of the agent (SipService)."""

    calls: CallControl
    flush: Callable[[], None]
    media: Callable[[], MediaEngine | None]
    local_address: Callable[[Peer], tuple[str, int]]


async def paging_app(call: AppCall, *, group: PagingGroup, host: PagingHost) -> None:
    engine = host.media()
    pager = call.leg.session
    if engine is None or pager is None:
        return
    local_ip = host.local_address(call.call.a.peer)[0]
    page = Page(host.calls, call.call, group, clock=time.time)
    legs: dict[PageMember, MediaLeg] = {}

    def answered(member: PageMember, now: float) -> None:
        leg = legs.get(member)
        if leg is None or leg.closed:
            return
        try:
            MediaEngine.start_answered(leg, parse_sdp(member.answer), receive_audio=False)
        except (SdpError, NegotiationError) as exc:
            log.info("page member's answer unusable",
                     extra={"extension": member.extension, "why": str(exc)})
            if member.leg is not None:
                hang_up(host.calls, member.leg, now, "bad-sdp")

    def left(member: PageMember) -> None:
        leg = legs.pop(member, None)
        if leg is not None:
            leg.close()

    page.on_answer = answered
    page.on_leave = left
    page.attach()
    multicast: MediaLeg | None = None
    try:
        for member in page.targets(time.time()):
            try:
                leg = await engine.open_leg()
            except PortRangeExhausted as exc:
                log.error("paging: no RTP port for a member", extra={"why": str(exc)})
                break
            if page.ended or call.ended.is_set():
                leg.close()
                break
            legs[member] = leg
            offer = make_offer(local_ip, leg.port, direction="sendonly")
            page.invite(member, offer.serialize(), time.time())
        host.flush()
        if group.multicast is not None and not call.ended.is_set():
            multicast = await _multicast_leg(engine, group.multicast, local_ip)
        log.info("paging", extra={"group": group.name, "call": call.call.id,
                                  "members": len(page.members),
                                  "multicast": group.multicast is not None})
        while not call.ended.is_set():
            if multicast is None and not page.active:
                break  # nobody (left) to hear it
            await asyncio.sleep(FORWARD_INTERVAL)
            pcm = pager.read_audio()
            if not pcm:
                continue
            for leg in list(legs.values()):
                session = leg.session
                if session is not None and not leg.closed:
                    session.play(pcm)
            if multicast is not None and multicast.session is not None:
                multicast.session.play(pcm)
    finally:
        page.end(time.time())
        host.flush()
        for leg in legs.values():
            leg.close()
        if multicast is not None:
            multicast.close()


async def _multicast_leg(engine: MediaEngine, group: tuple[str, int],
                         interface: str) -> MediaLeg | None:
    """One RTP sender to the multicast ``group`` (PCMU, no RTCP, nothing received)."""
    try:
        leg = await engine.open_leg()
    except PortRangeExhausted as exc:
        log.error("paging: no RTP port for multicast", extra={"why": str(exc)})
        return None
    try:
        leg.send_multicast(interface, MULTICAST_TTL)
    except OSError as exc:
        log.error("paging: cannot send multicast", extra={"interface": interface,
                                                          "why": str(exc)})
        leg.close()
        return None
    params = MediaParams("PCMU", 0, None, group, None, "sendonly")
    leg.start(params, receive_audio=False)
    return leg
