"""Transfers, call park and call pickup: the features that move a call's legs around.

They all come down to joining two parties whose SDP sessions were made with someone
else, which a B2BUA that keeps media phone to phone does with offers and answers
(RFC 3725 third-party call control):

- Blind transfer and park ring-back: the kept party X is in a session; the new party
  C is sent an INVITE without SDP, C's 200 carries an offer, X is re-INVITEd with it,
  and X's answer goes to C in the ACK.
- Attended transfer (REFER with Replaces, RFC 3891): both X and C are in sessions
  (with the transferor); C is re-INVITEd without SDP, its offer goes to X, and X's
  answer back to C.
- Park retrieve: the retriever R's INVITE has an offer; the parked X is re-INVITEd
  with it, and X's answer answers R.
- Pickup: both the ringing caller and the picker have made offers and have no session
  yet: each is answered with the other's SDP cut down to what it offered
  (``sipstack.sdp.answer_from``).

Every transfer ends the original call's record (cause "transferred") and starts a new
call for the joined parties, so the records say who talked to whom and for how long.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote

from agent.calls.ids import new_id
from agent.calls.model import Call, CallState, Leg, LegState
from agent.calls.originate import auto_answer_headers
from agent.calls.plan import Dest, Plan, Refuse, RingPlan, Step, plan_for
from dialplan.model import Feature
from dialplan.route import FeatureCode, route, route_target
from dialplan.target import Target, TargetKind
from sipstack.errors import SipParseError
from sipstack.headers import parse_name_addr
from sipstack.message import REASON_PHRASES, Request, Response
from sipstack.sdp import SdpError, answer_from, parse_sdp
from sipstack.transaction import ServerTxKey, TransactionError
from sipstack.uri import SipUri

if TYPE_CHECKING:
    from agent.calls.engine import CallControl

log = logging.getLogger(__name__)

SDP = "application/sdp"
RING_BACK_TIMEOUT = 30.0
INTERCOM_TIMEOUT = 20.0  # an intercom call the phone did not answer by itself: give up
TRANSFEROR_GRACE = 32.0  # the transferor should hang up after our final NOTIFY; else we do


class Features:
    def __init__(self, cc: CallControl) -> None:
        self.cc = cc
        self.parked: dict[int, Call] = {}
        self.park_slots = 10
        self.park_timeout = 120.0

    # -- REFER ----------------------------------------------------------------------
    def refer(self, leg: Leg, key: ServerTxKey, request: Request, now: float) -> None:
        cc = self.cc
        call = leg.call
        other = call.other(leg)
        value = request.headers.get("refer-to")
        if value is None:
            cc._reply(key, request, 400, now, reason="Missing Refer-To")
            return
        if other is None or other.state is not LegState.UP or leg.state is not LegState.UP:
            cc._reply(key, request, 481, now)
            return
        if leg.extension is None:  # only the office's own users may transfer (toll fraud)
            cc._reply(key, request, 403, now)
            return
        try:
            target = parse_name_addr(value).uri
        except SipParseError:
            cc._reply(key, request, 400, now, reason="Bad Refer-To")
            return
        if not isinstance(target, SipUri) or not target.user:
            cc._reply(key, request, 400, now, reason="Bad Refer-To")
            return
        replaces = next((v for k, v in target.headers.items() if k.lower() == "replaces"), None)
        if replaces is not None:
            self._attended(leg, other, key, request, replaces=unquote(replaces), now=now)
            return
        dialed = target.user.split(";", 1)[0]
        decision = route(cc.env.model(), leg.extension, dialed, cc.env.local_time(now),
                         cc._hunt_states(now))
        plan = plan_for(decision)
        if isinstance(plan, FeatureCode) and plan.feature is Feature.PARK:
            cc._reply(key, request, 202, now)
            self._park(leg, other, plan.argument, now)
            return
        if isinstance(plan, Refuse | FeatureCode):
            # Accepted, then failed: the transferor keeps its call and shows the failure.
            cc._reply(key, request, 202, now)
            self._notify(leg, plan.status if isinstance(plan, Refuse) else 403, now, final=True)
            return
        cc._reply(key, request, 202, now)
        self._notify(leg, 100, now, final=False)
        new = self._split(call, keep=other, leaving=leg, dialed=dialed, now=now)
        self._notify(leg, 200, now, final=True)
        self._hang_up_later(leg, now)
        cc._follow(new, plan, now)

    def _split(self, call: Call, *, keep: Leg, leaving: Leg, dialed: str, now: float) -> Call:
        """End ``call``'s record and start a new call for ``keep``, which is about to be
        joined to someone new; ``leaving`` (the transferor) is left to hang up."""
        cc = self.cc
        cc._end(call, now, "answered", "transferred", keep=(keep, leaving))
        user = cc.env.user_for_extension(keep.extension) if keep.extension else None
        new = Call(id=new_id(), direction="internal" if keep.extension else "inbound",
                   caller=keep.label, caller_name=user.name if user else "", dialed=dialed,
                   start=now, caller_extension=keep.extension, trunk=keep.trunk)
        new.a = keep
        new.offer = b""  # ring the new party with no SDP: its answer carries the offer
        keep.call = new
        keep.server_key = None
        cc.calls[new.id] = new
        cc.calls_total += 1
        cc._arm_keepalive(keep, now)
        return new

    def _hang_up_later(self, leg: Leg, now: float) -> None:
        def bye(t: float) -> None:
            if leg.state is LegState.UP:
                self.cc._bye(leg, t)
        self.cc.timers.at(now + TRANSFEROR_GRACE, bye)

    def _notify(self, leg: Leg, status: int, now: float, *, final: bool) -> None:
        """RFC 3515 progress of a REFER: a NOTIFY with a message/sipfrag status line."""
        cc = self.cc
        if leg.dialog is None or leg.state is not LegState.UP:
            return
        state = "terminated;reason=noresource" if final else "active;expires=60"
        body = f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Unknown')}\r\n".encode()
        host, port = cc.env.local_address(leg.peer)
        notify = leg.dialog.new_request(
            "NOTIFY", sent_by=_hostport(host, port), transport=leg.peer.transport,
            contact=cc._contact(leg.peer), body=body,
            content_type="message/sipfrag;version=2.0",
            extra=[("Event", "refer"), ("Subscription-State", state)],
        )
        try:
            cc.layer.send_request(notify, leg.peer, now)
        except TransactionError as exc:
            log.debug("NOTIFY not sent", extra={"why": str(exc)})

    # -- attended transfer -----------------------------------------------------------
    def _attended(self, leg: Leg, keep: Leg, key: ServerTxKey, request: Request, *,
                  replaces: str, now: float) -> None:
        cc = self.cc
        parts = [p.strip() for p in replaces.split(";")]
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        call_id = parts[0]
        # The transferor names its own dialog: to-tag is ours, from-tag is its.
        consult = cc._dialogs.get((call_id, params.get("to-tag", ""), params.get("from-tag", "")))
        if consult is None or consult.call is leg.call or consult.extension != leg.extension:
            cc._reply(key, request, 481, now, reason="Replaced Dialog Not Found")
            return
        target = consult.call.other(consult)
        if target is None or target.state is not LegState.UP:
            cc._reply(key, request, 481, now, reason="Replaced Dialog Not Found")
            return
        cc._reply(key, request, 202, now)
        self._notify(leg, 100, now, final=False)
        consult_call = consult.call
        new = self._split(leg.call, keep=keep, leaving=leg, dialed=target.label, now=now)
        cc._end(consult_call, now, "answered", "transferred", keep=(target, consult))
        target.call = new
        new.ringing = [target]
        new.state = CallState.ANSWERED
        new.answer = now
        new.peer = target
        new.callee = target.label
        cc._arm_keepalive(target, now)

        def got_offer(response: Response | None, status: int, t: float, invite: Request) -> None:
            if response is None or not 200 <= status < 300 or not response.body:
                self._notify(leg, 500, t, final=True)
                cc._end(new, t, "answered", "transfer-failed")
                return
            offer = response.body

            def got_answer(r2: Response | None, s2: int, t2: float, _inv: Request) -> None:
                if r2 is None or not 200 <= s2 < 300:
                    cc._ack_with(target, invite, b"", t2)
                    self._notify(leg, 500, t2, final=True)
                    cc._end(new, t2, "answered", "transfer-failed")
                    return
                cc._ack_with(target, invite, r2.body, t2)
                self._notify(leg, 200, t2, final=True)
                self._hang_up_later(leg, t2)
                self._hang_up_later(consult, t2)

            cc._reinvite(keep, offer, t, got_answer)

        cc._reinvite(target, b"", now, got_offer)

    # -- joining after a ring (transfer, park ring-back) ----------------------------------
    def join_answered(self, call: Call, leg: Leg, response: Response, now: float) -> None:
        """``leg`` answered a call whose A side is already in a session: give X its offer."""
        cc = self.cc
        keep = call.a
        offer = response.body
        if not offer:
            cc._ack_leg(leg, b"", now)
            cc._end(call, now, "failed", "no-offer")
            return

        def got_answer(r: Response | None, status: int, t: float, _inv: Request) -> None:
            if r is None or not 200 <= status < 300:
                cc._ack_leg(leg, b"", t)
                cc._end(call, t, "failed", f"rejoin-{status}")
                return
            cc._ack_leg(leg, r.body, t)

        cc._reinvite(keep, offer, now, got_answer)

    # -- park ------------------------------------------------------------------------
    def _park(self, leaving: Leg, keep: Leg, slot_text: str | None, now: float) -> None:
        cc = self.cc
        slot = int(slot_text) if slot_text else self._free_slot()
        if slot is None or not 1 <= slot <= self.park_slots or slot in self.parked:
            self._notify(leaving, 486 if slot in self.parked else 403, now, final=True)
            return
        self._notify(leaving, 100, now, final=False)
        new = self._split(leaving.call, keep=keep, leaving=leaving, dialed=f"park {slot}",
                          now=now)
        new.state = CallState.ANSWERED
        new.answer = now
        new.parked_slot = slot
        self.parked[slot] = new
        parker = leaving.extension
        self._notify(leaving, 200, now, final=True)
        self._hang_up_later(leaving, now)
        log.info("call parked", extra={"slot": slot, "by": parker, "party": keep.label})

        def ring_back(t: float) -> None:
            if self.parked.get(slot) is not new or new.state is CallState.ENDED:
                return
            del self.parked[slot]
            new.parked_slot = None
            new.state = CallState.ROUTING
            new.answer = None
            plan = RingPlan((Step((Dest(extension=parker),), RING_BACK_TIMEOUT),))
            cc._follow(new, plan, t)

        new.timers.append(cc.timers.at(now + self.park_timeout, ring_back))

    def _free_slot(self) -> int | None:
        return next((s for s in range(1, self.park_slots + 1) if s not in self.parked), None)

    def retrieve(self, call: Call, slot_text: str | None, now: float) -> None:
        cc = self.cc
        slot = int(slot_text or "0")
        parked = self.parked.get(slot)
        retriever = call.a
        if parked is None or parked.state is CallState.ENDED:
            cc._refuse(call, Refuse(404, f"park slot {slot} is empty"), now)
            return
        invite = retriever.invite
        if invite is None or not invite.body:
            cc._refuse(call, Refuse(488, "retrieving needs an offer in the INVITE"), now)
            return
        del self.parked[slot]
        parked.parked_slot = None
        for timer in parked.timers:
            timer.cancel()
        parked.timers = []
        keep = parked.a

        def got_answer(r: Response | None, status: int, t: float, _inv: Request) -> None:
            if r is None or not 200 <= status < 300:
                cc._refuse(call, Refuse(480, "the parked party did not answer"), t)
                cc._end(parked, t, "answered", f"retrieve-{status}")
                return
            self._answer_and_join(call, parked, r.body, t)

        cc._reinvite(keep, invite.body, now, got_answer)

    def _answer_and_join(self, call: Call, into: Call, answer: bytes, now: float) -> None:
        """Answer ``call``'s pending INVITE with ``answer`` and move its caller into
        ``into`` as the peer of ``into``'s A leg. ``call`` leaves no record."""
        cc = self.cc
        leg = call.a
        cc._answer_incoming(leg, answer, SDP, now)
        call.recorded = False
        call.state = CallState.ENDED
        cc.calls.pop(call.id, None)
        leg.call = into
        into.peer = leg
        into.ringing = [leg]
        into.callee = leg.label
        into.state = CallState.ANSWERED
        if into.answer is None:
            into.answer = now

    # -- intercom --------------------------------------------------------------------
    def intercom(self, call: Call, extension: str, now: float) -> None:
        """*96 + extension: a two-way call like any other (SDP passed through), whose
        INVITE asks the phone to answer by itself; no forwarding, no voicemail."""
        cc = self.cc
        user = cc.env.model().user(extension)
        if user is None:
            cc._refuse(call, Refuse(404, f"{extension} is not an extension"), now)
            return
        if extension == call.caller_extension:
            cc._refuse(call, Refuse(403, "intercom to one's own extension"), now)
            return
        if user.dnd:
            cc._refuse(call, Refuse(486, f"{extension}: dnd", "busy"), now)
            return
        dest = Dest(extension=extension, headers=auto_answer_headers(cc.env.realm))
        cc._follow(call, RingPlan((Step((dest,), INTERCOM_TIMEOUT),), owner=extension), now)

    # -- pickup ----------------------------------------------------------------------
    def pickup(self, call: Call, code: FeatureCode, now: float) -> None:
        cc = self.cc
        picker = call.caller_extension
        user = cc.env.user_for_extension(picker or "")
        target: Call | None = None
        for ringing in cc.calls.values():
            if ringing is call or ringing.state is not CallState.RINGING:
                continue
            for leg in ringing.ringing:
                ext = leg.extension
                if ext is None or ext == picker or leg.state is LegState.DONE:
                    continue
                if code.feature is Feature.PICKUP_DIRECTED:
                    hit = ext == code.argument
                else:
                    other = cc.env.user_for_extension(ext)
                    hit = (user is not None and user.pickup_group is not None and other is not None
                           and other.pickup_group == user.pickup_group)
                if hit:
                    target = ringing
                    break
            if target is not None:
                break
        if target is None:
            cc._refuse(call, Refuse(404, "no call to pick up"), now)
            return
        caller_invite, picker_invite = target.a.invite, call.a.invite
        try:
            caller_sdp = parse_sdp(caller_invite.body)  # type: ignore[union-attr]
            picker_sdp = parse_sdp(picker_invite.body)  # type: ignore[union-attr]
        except (SdpError, AttributeError):
            cc._refuse(call, Refuse(488, "pickup needs offers from both phones"), now)
            return
        for leg in target.ringing:
            cc._cancel_leg(leg, now)
        for timer in target.timers:
            timer.cancel()
        target.timers = []
        to_caller = answer_from(caller_sdp, picker_sdp).serialize()
        to_picker = answer_from(picker_sdp, caller_sdp).serialize()
        cc._answer_incoming(target.a, to_caller, SDP, now)
        target.state = CallState.ANSWERED
        target.answer = now
        self._answer_and_join(call, target, to_picker, now)
        log.info("call picked up", extra={"by": picker, "call": target.id})


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- transfers out of a voice application ---------------------------------------------


def transfer_answered(cc: CallControl, call: Call, dialed: str | Target, now: float) -> Plan | None:
    """Blind-transfer the caller of an answered voice-application call (the attendant)
    to ``dialed``: a dial string, or a Target (a menu option, the operator).

    ``dialed`` is routed as the caller would reach it (an outside caller has the lowest
    class of restriction, so an attendant is no way out to a trunk). When that gives
    legs to ring, the call's record ends ("transferred"; the application's media role
    ends with it: ``call.on_end`` fires) and the caller, kept, becomes the A leg of a new
    call that rings the target as a blind transfer does: an INVITE without SDP, whose
    answer's offer re-INVITEs the caller (see ``join_answered``). Then None is returned.

    Anything else is returned as it is and the call is left alone, for the application
    to handle: a Refuse (say why), a ToApplication (run it on the same media, since its
    caller is already answered), a FeatureCode (not reachable from a menu).
    """
    keep = call.a
    if (call.state is not CallState.ANSWERED or keep.state is not LegState.UP
            or call.peer is not None):
        return Refuse(481, "the call is no longer an answered application call")
    model = cc.env.model()
    local = cc.env.local_time(now)
    states = cc._hunt_states(now)
    caller = call.caller_extension
    if isinstance(dialed, Target):
        decision = route_target(model, caller, dialed, local, states)
        label = dialed.value or dialed.kind.value
        if dialed.kind is not TargetKind.NUMBER:
            label = f"{dialed.kind.value}:{dialed.value}"
    else:
        decision = route(model, caller, dialed, local, states)
        label = dialed
    plan = plan_for(decision)
    if not isinstance(plan, RingPlan):
        return plan
    trunk = call.trunk
    call.on_info = None
    new = cc.features._split(call, keep=keep, leaving=keep, dialed=label, now=now)
    if new.trunk is None and new.direction == "inbound":
        new.trunk = trunk  # the trunk the caller came in on, for the record
    log.info("application call transferred", extra={"call": call.id, "new": new.id,
                                                    "to": label})
    cc._follow(new, plan, now)
    return None

