"""Paging: the signalling half, sans I/O (the media half is agent.apps.paging).

The pager's call is answered by the agent (a voice application); the agent then calls
every registered contact of every member that is not busy, with an offer of its own
(one-way: ``a=sendonly``) and the auto-answer headers, and forwards the pager's audio
to whoever answered. Members that hang up just leave; when the pager hangs up (or the
page ends otherwise), every member is hung up (BYE, or CANCEL while still ringing).

Only the pager's call is recorded (callee ``paging:<name>``); the member legs are calls
of their own that write no record (see agent.calls.originate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.calls.env import Contact
from agent.calls.model import Call, CallState, Leg, LegState
from agent.calls.originate import auto_answer_headers, hang_up, originate
from sipstack.message import Response

if TYPE_CHECKING:
    from agent.calls.engine import CallControl

log = logging.getLogger(__name__)

PAGE_ANSWER_TIMEOUT = 10.0  # a phone that rings instead of answering by itself: CANCEL


@dataclass(frozen=True, slots=True)
class PagingGroup:
    """What a page needs of the site's ``paging_groups[]`` entry."""

    name: str
    members: tuple[str, ...] = ()
    unicast: bool = True  # auto-answer calls to the members
    multicast: tuple[str, int] | None = None  # one RTP stream to this group address


@dataclass(eq=False, slots=True)
class PageMember:
    """One contact of one member being paged."""

    extension: str
    contact: Contact
    leg: Leg | None = None
    answer: bytes = b""  # the phone's SDP answer, once it answered
    data: object = None  # the owner's (the media leg)

    @property
    def up(self) -> bool:
        return self.leg is not None and self.leg.state is LegState.UP

    @property
    def gone(self) -> bool:
        """Hung up, refused, or being cancelled."""
        leg = self.leg
        return leg is not None and (leg.state is LegState.DONE
                                    or leg.call.state is CallState.ENDED)


@dataclass(eq=False)
class Page:
    """One page of ``group`` by the (answered) ``call`` of the pager."""

    cc: CallControl
    call: Call
    group: PagingGroup
    clock: Callable[[], float]
    on_answer: Callable[[PageMember, float], None] | None = None
    on_leave: Callable[[PageMember], None] | None = None
    members: list[PageMember] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # extension -> why
    ended: bool = False

    def attach(self) -> None:
        """End the page when the pager's call ends (chained to ``call.on_end``)."""
        previous = self.call.on_end

        def ended() -> None:
            if previous is not None:
                previous()
            self.end(self.clock())

        self.call.on_end = ended

    def targets(self, now: float) -> list[PageMember]:
        """The contacts to page: every registered contact of every member that is not
        busy and is not the pager (the others are in ``skipped``, with the reason)."""
        if not self.group.unicast:
            return []
        busy = self.cc.busy_extensions()
        out: list[PageMember] = []
        for extension in self.group.members:
            if extension == self.call.caller_extension:
                self.skipped[extension] = "pager"
                continue
            if extension in busy:
                self.skipped[extension] = "busy"
                continue
            contacts = self.cc.env.contacts(extension, now)
            if not contacts:
                self.skipped[extension] = "unregistered"
                continue
            for contact in contacts:
                peer = contact.peer
                if self.cc.env.local_address(peer) == (peer.host, peer.port):
                    continue  # our own address: it would page us
                out.append(PageMember(extension, contact))
        if self.skipped:
            log.info("paging skips members", extra={"group": self.group.name,
                                                    "skipped": dict(self.skipped)})
        return out

    def invite(self, member: PageMember, offer: bytes, now: float) -> None:
        """Call ``member`` with our SDP ``offer`` (sendonly) and the auto-answer headers."""
        if self.ended:
            return
        self.members.append(member)
        call = self.call

        def answered(leg: Leg, response: Response, t: float) -> None:
            member.answer = response.body
            if self.on_answer is not None:
                self.on_answer(member, t)

        def left(leg: Leg) -> None:
            member.leg = leg  # also when the INVITE failed before originate() returned
            log.debug("page member left", extra={"group": self.group.name,
                                                 "extension": member.extension,
                                                 "status": leg.status})
            if self.on_leave is not None:
                self.on_leave(member)

        member.leg = originate(
            self.cc, member.contact.uri, member.contact.peer, now,
            to_user=member.extension, from_user=call.caller, from_name=call.caller_name,
            body=offer, headers=auto_answer_headers(self.cc.env.realm),
            extension=member.extension, timeout=PAGE_ANSWER_TIMEOUT,
            on_answer=answered, on_end=left,
        )

    @property
    def active(self) -> bool:
        """Some member is still being paged or listening."""
        return any(not m.gone for m in self.members)

    def end(self, now: float) -> None:
        """Hang up every member (idempotent)."""
        if self.ended:
            return
        self.ended = True
        for member in self.members:
            if member.leg is not None:
                hang_up(self.cc, member.leg, now, "page-ended")
