"""The state of one call: the caller's leg, the legs it rings, and what the record needs.

A call has one *A leg* (we are its UAS: the INVITE came to us) and, over its life,
any number of *B legs* (we are their UAC). While ringing, several B legs may be up
at once (forking, hunt steps, single number reach); the first to answer is the
*peer* of the A leg, and the others are cancelled. Transfers and park swap the
peer for another leg later. Every leg is a SIP dialog of its own: the B2BUA joins
them and relays what one side says to the other.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.calls.plan import RingPlan
from agent.calls.timers import Timer
from sipstack.dialog import Dialog
from sipstack.message import Request
from sipstack.peer import Peer
from sipstack.transaction import ClientTxKey, ServerTxKey


class CallState(enum.Enum):
    ROUTING = "routing"  # deciding, or between hunt steps
    RINGING = "ringing"  # at least one B leg is trying
    ANSWERED = "answered"
    ENDED = "ended"


class LegState(enum.Enum):
    TRYING = "trying"  # INVITE sent (B) or received (A), no final response yet
    EARLY = "early"  # a provisional response with a To tag
    UP = "up"  # 2xx: a confirmed dialog
    DONE = "done"  # failed, cancelled or hung up


@dataclass(eq=False, slots=True)
class Leg:
    """One SIP dialog of a call. ``label`` is who is at the other end: an extension
    or an outside number."""

    call: Call
    label: str
    peer: Peer
    incoming: bool  # True: the A leg (we are UAS)
    state: LegState = LegState.TRYING
    dialog: Dialog | None = None
    # A leg: the INVITE server transaction and the To tag we answer with.
    server_key: ServerTxKey | None = None
    invite: Request | None = None  # the INVITE received (A) or sent (B)
    to_tag: str = ""
    # B leg: the INVITE client transaction.
    client_key: ClientTxKey | None = None
    provisional: bool = False  # a 1xx arrived, so CANCEL may be sent
    cancel_wanted: bool = False  # cancel as soon as a 1xx allows it
    status: int | None = None  # the final status it got
    trunk: str | None = None  # the trunk a B leg goes out of
    auth_tries: int = 0  # challenges answered on this INVITE (trunk digest)
    extension: str | None = None  # the local user at the other end, if any
    ack: Request | None = None  # the ACK we sent for its 2xx (resent on 2xx retransmission)
    on_hold: bool = False
    keepalive: Timer | None = None
    # The leg whose 2xx waits for this leg's ACK (delayed offer: the ACK has the answer),
    # and the INVITE of that leg being ACKed (a re-INVITE, or None for the first one).
    relay_ack: Leg | None = None
    relay_ack_invite: Request | None = None


@dataclass(eq=False, slots=True)
class Call:
    id: str
    a: Leg = field(init=False)
    direction: str  # internal | inbound | outbound
    caller: str  # extension or outside number
    caller_name: str
    dialed: str
    start: float
    caller_extension: str | None = None  # the authenticated user, for outside callers None
    state: CallState = CallState.ROUTING
    peer: Leg | None = None  # the B leg joined to the A leg
    ringing: list[Leg] = field(default_factory=list)  # B legs of the current step
    statuses: list[int] = field(default_factory=list)  # finals of the current step
    answer: float | None = None
    end: float | None = None
    hold_since: float | None = None
    hold_seconds: float = 0.0
    hunt_group: str | None = None
    trunk: str | None = None
    callee: str = ""
    disposition: str | None = None
    cause: str = ""
    timers: list[Timer] = field(default_factory=list)  # cancelled when the call ends
    reroutes: int = 0
    pending: int = 0  # relayed in-dialog INVITE/UPDATE transactions (for 491 on glare)
    parked_slot: int | None = None
    diversion: str | None = None  # the number that diverted the call (Diversion header)
    divert_reason: str = ""  # why it was rerouted: "busy" or "no-answer" (voicemail greets by it)
    plan: RingPlan | None = None
    offer: bytes | None = None  # SDP for new B legs; None: the A leg's INVITE body
    recorded: bool = True  # feature-code calls are not calls: no record
    # A voice application answering the call (agent.apps): told when the call ends, and
    # given SIP INFO DTMF bodies.
    on_end: Callable[[], None] | None = None
    on_info: Callable[[bytes], None] | None = None
    # Where the agent handles the call's media: (jitter ms, loss %, RTT ms) of what it
    # received, asked for when the call ends, for the record.
    media_quality: Callable[[], tuple[float, float, float | None] | None] | None = None
    step: int = 0  # index into plan.steps
    delayed: int = 0  # destinations of this step still waiting for their delay

    def legs(self) -> list[Leg]:
        out = [self.a, *self.ringing]
        if self.peer is not None and self.peer not in out:
            out.append(self.peer)
        return out

    def other(self, leg: Leg) -> Leg | None:
        """The leg joined to ``leg``."""
        if leg is self.a:
            return self.peer
        if leg is self.peer:
            return self.a
        return None

    def summary(self, now: float) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state.value,
            "direction": self.direction,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "callee": self.callee or (self.peer.label if self.peer else ""),
            "dialed": self.dialed,
            "started_at": self.start,
            "answered_at": self.answer,
            "age_s": round(now - self.start, 1),
            "answered_s": None if self.answer is None else round(now - self.answer, 1),
            "on_hold": self.hold_since is not None,
            "hunt_group": self.hunt_group,
            "trunk": self.trunk,
            "parked": self.parked_slot,
            "ringing": [leg.label for leg in self.ringing
                        if leg.state in (LegState.TRYING, LegState.EARLY)
                        and not leg.cancel_wanted],
        }
