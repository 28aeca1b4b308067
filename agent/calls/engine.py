"""CallControl: the B2BUA. Transaction events in; requests, responses and call records out.

It owns a sans-I/O :class:`~sipstack.transaction.TransactionLayer` and a heap of call
timers, and never touches a socket or the clock: the agent feeds it parsed messages
with ``now`` and sends what the layer queues. So every call flow, including hunt
steps and no-answer timeouts, is tested on a virtual clock.

The shape of a call (see ``model``): one A leg (we are its UAS) and the B legs it
rings. The first B leg to answer is joined to the A leg; from then on each side's
in-dialog requests are relayed to the other (re-INVITE, UPDATE, INFO), and BYE from
either side ends both. Choices worth knowing:

- Every INVITE from a phone is digest-authenticated (407), and the caller is the
  authenticated user, never what the From header claims. Only a trunk's own
  addresses may send INVITEs unauthenticated, and those are routed as outside
  callers (lowest class of restriction: they never reach a trunk again).
- BYE is answered at once and sent on to the other side: a dead far end must not
  keep the near end's phone waiting.
- A B leg whose INVITE carried an offer is ACKed as soon as its 2xx arrives; one
  without (delayed offer) waits for the A leg's ACK, which carries the answer.
- Answered calls are probed with in-dialog OPTIONS; a leg that stops answering
  (timeout, 408 or 481) ends the call, so a phone that vanishes mid-call does not
  leave a call (and its record) open forever.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Protocol

from agent.calls.env import CallEnv, TrunkInfo, UserInfo
from agent.calls.features import Features
from agent.calls.ids import new_id, new_tag
from agent.calls.model import Call, CallState, Leg, LegState
from agent.calls.plan import Dest, Plan, Refuse, RingPlan, ToApplication, plan_for
from agent.calls.timers import Timers
from dialplan.hunt import HuntState
from dialplan.model import Feature
from dialplan.route import FeatureCode, ToService, route, route_target
from dialplan.target import Target
from sipstack.dialog import Dialog, DialogId, dialog_id_of_request
from sipstack.digest import DigestError, Verdict, parse_credentials
from sipstack.errors import SipParseError
from sipstack.headers import Headers
from sipstack.message import REASON_PHRASES, Request, Response, make_response
from sipstack.peer import Peer
from sipstack.sdp import (
    SdpError,
    is_hold,
    is_private_address,
    parse_sdp,
    with_connection_address,
)
from sipstack.transaction import (
    AckReceived,
    CancelReceived,
    ClientTxKey,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTxKey,
    StrayResponse,
    TransactionError,
    TransactionLayer,
    TransactionLimitReached,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    make_cancel,
    new_branch,
)

if TYPE_CHECKING:
    from agent.calls.mwi import Mwi

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, UPDATE, INFO, NOTIFY"
MAX_REROUTES = 5
RETRY_AFTER = 5  # seconds, in the 503 to new calls while overloaded
SDP = "application/sdp"
# Statuses that mean the far end is gone, not merely unwilling (keepalive probes).
_GONE = frozenset({408, 481})
_BUSY = frozenset({486, 600})
_RELAYED = frozenset({"INVITE", "UPDATE", "INFO", "MESSAGE"})

ResponseHandler = Callable[[Response | None, int, float], None]
Application = Callable[[Call, ToApplication, float], bool]


class HoldMusic(Protocol):
    def start(self, call: Call, held: Leg, now: float) -> None: ...

    def stop(self, call: Call, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class EndedCall:
    """What the call record is made of; the agent turns it into a CDR row."""

    id: str
    direction: str
    caller: str
    caller_name: str
    callee: str
    dialed: str
    start: float
    answer: float | None
    end: float
    disposition: str
    hold_seconds: float
    hunt_group: str | None
    trunk: str | None
    cause: str
    jitter_ms: float | None = None
    loss_percent: float | None = None
    rtt_ms: float | None = None


@dataclass(slots=True)
class CallConfig:
    keepalive_interval: float = 60.0  # in-dialog OPTIONS on answered legs; 0: off
    server_header: str = "edgepbx"


class CallControl:
    def __init__(
        self, layer: TransactionLayer, env: CallEnv, config: CallConfig | None = None
    ) -> None:
        self.layer = layer
        self.env = env
        self.config = config or CallConfig()
        self.timers = Timers()
        self.calls: dict[str, Call] = {}
        self.applications: dict[str, Application] = {}
        self._dialogs: dict[DialogId, Leg] = {}
        self._a_legs: dict[ServerTxKey, Leg] = {}
        self._handlers: dict[ClientTxKey, ResponseHandler] = {}
        self._records: list[EndedCall] = []
        self.auth_failures = 0
        self.calls_total = 0
        self.calls_refused_overload = 0
        # Music on hold (agent.apps.hold_music): told when a party is put on hold (after
        # the hold went through) and when it is taken off hold or the call ends.
        self.hold_music: HoldMusic | None = None
        self.overloaded = False  # set by the owner, which can see the event loop fall behind
        self.features = Features(self)
        self.mwi: Mwi | None = None  # message-summary subscriptions (agent.calls.mwi)

    # -- the owner's API --------------------------------------------------------
    def receive(self, message: Request | Response, peer: Peer, now: float) -> None:
        self.layer.receive(message, peer, now)
        self._drain(now)

    def get_timer(self) -> float | None:
        a, b = self.layer.get_timer(), self.timers.get_timer()
        if a is None:
            return b
        return a if b is None else min(a, b)

    def handle_timer(self, now: float) -> None:
        self.layer.handle_timer(now)
        self._drain(now)
        self.timers.handle_timer(now)
        self._drain(now)

    # -- voice applications (agent.apps) ------------------------------------------------
    def answer_app(self, call: Call, sdp: bytes, application: str, now: float) -> bool:
        """A voice application answers ``call`` with its media ``sdp``; False if the
        caller has gone meanwhile."""
        if call.state is CallState.ENDED or call.a.server_key is None:
            return False
        call.state = CallState.ANSWERED
        call.answer = now
        call.callee = application
        self._answer_incoming(call.a, sdp, SDP, now)
        return True

    def refuse_app(self, call: Call, status: int, reason: str, now: float) -> None:
        if call.state is not CallState.ENDED:
            self._refuse(call, Refuse(status, reason), now)

    def hang_up_app(self, call: Call, now: float) -> None:
        """The application is done: BYE the caller, write the record."""
        self._end(call, now, "answered", "application")

    def send_request(
        self, request: Request, peer: Peer, now: float, handler: ResponseHandler
    ) -> ClientTxKey:
        """Send a request of our own (trunk REGISTER, ...) and have ``handler`` called with
        each response, or with None and 408/503 when the transaction fails."""
        key = self.layer.send_request(request, peer, now)
        self._handlers[key] = handler
        return key

    def notify_out_of_dialog(
        self, uri: str, peer: Peer, now: float, *, to: str, event: str,
        handler: ResponseHandler, body: bytes = b"", content_type: str | None = None,
        subscription_state: str = "terminated;reason=timeout",
    ) -> ClientTxKey:
        """An unsolicited NOTIFY (no subscription: check-sync resync, service-control,
        unsolicited MWI) to a registered contact ``uri`` reached at ``peer``."""
        host, port = self.env.local_address(peer)
        sent_by = _hostport(host, port)
        headers = Headers()
        via = f"SIP/2.0/{peer.transport.upper()} {sent_by};branch={new_branch()};rport"
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:edgepbx@{self.env.realm}>;tag={new_tag()}")
        headers.add("To", to)
        headers.add("Call-ID", new_id())
        headers.add("CSeq", "1 NOTIFY")
        headers.add("Contact", self._contact(peer))
        headers.add("Event", event)
        headers.add("Subscription-State", subscription_state)
        headers.add("User-Agent", self.config.server_header)
        if body:
            headers.add("Content-Type", content_type or "text/plain")
        return self.send_request(Request("NOTIFY", uri, headers, body), peer, now, handler)

    def take_records(self) -> list[EndedCall]:
        out, self._records = self._records, []
        return out

    def active(self, now: float) -> list[dict[str, object]]:
        return [call.summary(now) for call in self.calls.values()]

    def busy_extensions(self) -> frozenset[str]:
        busy: set[str] = set()
        for call in self.calls.values():
            if call.caller_extension:
                busy.add(call.caller_extension)
            if call.peer is not None and call.peer.extension:
                busy.add(call.peer.extension)
            busy.update(leg.extension for leg in call.ringing if leg.extension)
        return frozenset(busy)

    # -- event dispatch ---------------------------------------------------------
    def _drain(self, now: float) -> None:
        layer = self.layer
        while (event := layer.next_event()) is not None:
            try:
                self._dispatch(event, now)
            except (SipParseError, TransactionError, SdpError, ValueError) as exc:
                # Bad input from a peer, or a race the layer refused: the call goes
                # on (or ends by its own timers); one bad message stops nothing else.
                log.info("call event not handled", extra={"event": type(event).__name__,
                                                          "why": str(exc)})

    def _dispatch(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._request(event.key, event.request, event.peer, now)
        elif isinstance(event, ResponseReceived):
            handler = self._handlers.get(event.key)
            if handler is None:
                # A 2xx retransmission in the INVITE's Accepted state (RFC 6026): the
                # far end did not get our ACK.
                self._stray(event.response, now)
                return
            status = event.response.status
            if status >= 200 and event.key.method != "INVITE":
                del self._handlers[event.key]
            handler(event.response, status, now)
        elif isinstance(event, AckReceived):
            self._ack(event.request, now)
        elif isinstance(event, CancelReceived):
            self._cancel(event, now)
        elif isinstance(event, StrayResponse):
            self._stray(event.response, now)
        elif isinstance(event, TransactionTimeout | TransportError):
            self._failed_transaction(event, now)
        elif isinstance(event, TransactionTerminated):
            key = event.key
            if isinstance(key, ClientTxKey):
                self._handlers.pop(key, None)
            else:
                self._a_legs.pop(key, None)
        elif isinstance(event, TransactionLimitReached):
            self._stateless_reply(event.request, event.peer, 503)

    def _failed_transaction(self, event: TransactionTimeout | TransportError, now: float) -> None:
        key = event.key
        if isinstance(key, ClientTxKey):
            handler = self._handlers.pop(key, None)
            if handler is not None:
                handler(None, 408 if isinstance(event, TransactionTimeout) else 503, now)
            return
        leg = self._a_legs.get(key)
        if leg is not None and isinstance(event, TransactionTimeout) and event.timer == "L":
            # Our 2xx was never ACKed: the caller's phone is gone (§13.3.1.4).
            self._end(leg.call, now, "failed" if leg.call.answer is None else "answered",
                      "no-ack")

    # -- requests ---------------------------------------------------------------
    def _request(self, key: ServerTxKey, request: Request, peer: Peer, now: float) -> None:
        method = request.method
        if request.to.tag is not None:
            self._in_dialog(key, request, peer, now)
        elif method == "INVITE":
            self._new_call(key, request, peer, now)
        elif method == "SUBSCRIBE":
            if self.mwi is not None and self.mwi.handles(request):
                self.mwi.subscribe(key, request, peer, now)
            else:
                allow_events = [("Allow-Events", "message-summary")] if self.mwi else None
                self._reply(key, request, 489, now, extra=allow_events)
        elif method in ("BYE", "CANCEL", "UPDATE", "INFO", "REFER", "NOTIFY"):
            self._reply(key, request, 481, now)
        else:
            self._reply(key, request, 405, now, extra=[("Allow", ALLOW)])

    def _reply(
        self,
        key: ServerTxKey,
        request: Request,
        status: int,
        now: float,
        *,
        to_tag: str | None = None,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        contact: str | None = None,
    ) -> None:
        if to_tag is None and request.to.tag is None and status > 100:
            to_tag = new_tag()
        response = make_response(request, status, reason, to_tag=to_tag)
        headers = response.headers
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra or ():
            headers.add(name, value)
        headers.add("Server", self.config.server_header)
        if body:
            headers.add("Content-Type", content_type or SDP)
            response.body = body
        try:
            self.layer.send_response(key, response, now)
        except TransactionError as exc:
            log.debug("response not sent", extra={"status": status, "why": str(exc)})

    def _stateless_reply(self, request: Request, peer: Peer, status: int) -> None:
        if request.method == "ACK":
            return
        response = make_response(request, status, to_tag=new_tag())
        self.layer.send_stateless(response, peer)

    # -- a new call -------------------------------------------------------------
    def _new_call(self, key: ServerTxKey, request: Request, peer: Peer, now: float) -> None:
        if self.overloaded:
            # Turn new calls away cheaply, before digest and routing, so the calls
            # already up keep their answers flowing (RFC 3261 §21.5.4).
            self.calls_refused_overload += 1
            self._reply(key, request, 503, now, extra=[("Retry-After", str(RETRY_AFTER))])
            return
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self._reply(key, request, 483, now)
            return
        trunk = self.env.trunk_for_source(peer.host)
        user: UserInfo | None = None
        if trunk is None:
            user = self._authenticate(key, request, now)
            if user is None:
                return
        call_id = new_id()
        dialed = _dialed(request)
        if user is not None:
            call = Call(id=call_id, direction="internal", caller=user.extension,
                        caller_name=user.name, dialed=dialed, start=now,
                        caller_extension=user.extension)
        else:
            assert trunk is not None
            frm = request.from_
            number = getattr(frm.uri, "user", None) or "anonymous"
            call = Call(id=call_id, direction="inbound", caller=number,
                        caller_name=frm.display_name or "", dialed=dialed, start=now,
                        trunk=trunk.name)
        a = Leg(call=call, label=call.caller, peer=peer, incoming=True, server_key=key,
                invite=request, to_tag=new_tag(), extension=call.caller_extension)
        call.a = a
        self.calls[call_id] = call
        self._a_legs[key] = a
        self.calls_total += 1
        if trunk is not None:
            # Carriers put the DID in the Request-URI, or (sending to our registered
            # Contact) only in the To header.
            target = self.env.did_target(trunk.name, dialed)
            to_user = getattr(request.to.uri, "user", None)
            if target is None and to_user:
                target = self.env.did_target(trunk.name, to_user)
                if target is not None:
                    call.dialed = dialed = to_user
            if target is None:
                self._refuse(call, Refuse(404, f"no DID {dialed} on trunk {trunk.name}"), now)
                return
            decision = route_target(self.env.model(), None, target, self.env.local_time(now),
                                    self._hunt_states(now))
        else:
            decision = route(self.env.model(), call.caller_extension, dialed,
                             self.env.local_time(now), self._hunt_states(now))
            if user is not None and user.auto_registration and decision != ToService("assigner"):
                # An unassigned phone may call the extension assigner, and nothing else.
                self._refuse(call, Refuse(403, "unassigned phones may only call the assigner"),
                             now)
                return
        self._follow(call, plan_for(decision), now)

    def _authenticate(self, key: ServerTxKey, request: Request, now: float) -> UserInfo | None:
        """The caller, or None after answering 407 (the same answer for a wrong password
        as for an unknown user: nothing to learn about who exists)."""
        digest = self.env.digest
        creds = None
        for value in request.headers.get_all("proxy-authorization"):
            parsed = parse_credentials(value)
            if parsed is not None and parsed.realm == digest.realm:
                creds = parsed
                break
        stale = False
        if creds is not None:
            result = digest.verify(
                creds, method=request.method, now=now, ha1_lookup=self.env.ha1,
                retransmission_key=f"{request.call_id}|{request.cseq.number}",
            )
            if result.verdict is Verdict.OK:
                user = self.env.user_for_username(creds.username)
                if user is not None:
                    return user
            stale = result.verdict is Verdict.STALE
            if not stale:
                self.auth_failures += 1
                log.info("invite auth failed", extra={"username": creds.username[:64],
                                                      "why": result.reason})
        self._reply(key, request, 407, now,
                    extra=[("Proxy-Authenticate", v) for v in digest.challenge(now, stale=stale)])
        return None

    def _hunt_states(self, now: float) -> Mapping[str, HuntState]:
        return _HuntStates(self, now)

    # -- following a plan ---------------------------------------------------------
    def _follow(self, call: Call, plan: Plan, now: float) -> None:
        if isinstance(plan, Refuse):
            self._refuse(call, plan, now)
        elif isinstance(plan, RingPlan):
            call.plan = plan
            call.step = 0
            if plan.hunt_group and call.hunt_group is None:
                call.hunt_group = plan.hunt_group
            if plan.diversion:
                call.diversion = plan.diversion
            self._start_step(call, now)
        elif isinstance(plan, ToApplication):
            app = self.applications.get(plan.kind)
            if app is None or not app(call, plan, now):
                self._refuse(call, Refuse(480, f"{plan.kind} is not available", "no-answer"),
                             now)
        elif isinstance(plan, FeatureCode):
            self._feature(call, plan, now)

    def _reroute(self, call: Call, target: Target, owner: str | None, now: float) -> None:
        call.reroutes += 1
        if call.reroutes > MAX_REROUTES:
            self._refuse(call, Refuse(482, "too many reroutes"), now)
            return
        decision = route_target(self.env.model(), owner, target, self.env.local_time(now),
                                self._hunt_states(now))
        self._follow(call, plan_for(decision, call.diversion), now)

    def _start_step(self, call: Call, now: float) -> None:
        plan = call.plan
        assert plan is not None
        if call.step >= len(plan.steps):
            self._exhausted(call, now)
            return
        step = plan.steps[call.step]
        call.ringing = []
        call.statuses = []
        call.delayed = 0
        for dest in step.dests:
            if dest.delay > 0:
                call.delayed += 1
                token = call.step
                call.timers.append(self.timers.at(
                    now + dest.delay, partial(self._delayed_dest, call, dest, token)))
            else:
                self._ring(call, dest, now)
        if step.timeout is not None:
            token = call.step
            call.timers.append(self.timers.at(
                now + step.timeout, partial(self._step_timeout, call, token)))
        if call.state is CallState.ROUTING and call.ringing:
            call.state = CallState.RINGING
        self._check_step(call, now)

    def _delayed_dest(self, call: Call, dest: Dest, step: int, now: float) -> None:
        if call.state in (CallState.ANSWERED, CallState.ENDED) or call.step != step:
            return
        call.delayed -= 1
        self._ring(call, dest, now)
        self._check_step(call, now)

    def _step_timeout(self, call: Call, step: int, now: float) -> None:
        if call.state in (CallState.ANSWERED, CallState.ENDED) or call.step != step:
            return
        call.delayed = 0
        for leg in call.ringing:
            if leg.state is not LegState.DONE:
                call.statuses.append(480)
                self._cancel_leg(leg, now)
        self._check_step(call, now)

    def _check_step(self, call: Call, now: float) -> None:
        """Move on when every leg of the step has failed and nothing is still to ring."""
        if call.state in (CallState.ANSWERED, CallState.ENDED):
            return
        if call.delayed or any(
            leg.state is not LegState.DONE and not leg.cancel_wanted for leg in call.ringing
        ):
            return
        plan = call.plan
        assert plan is not None
        statuses = call.statuses
        for timer in call.timers:
            timer.cancel()
        call.timers = []
        if statuses and all(s in _BUSY for s in statuses) and plan.on_busy is not None:
            call.divert_reason = "busy"
            self._reroute(call, plan.on_busy, plan.owner, now)
            return
        call.step += 1
        if call.step < len(plan.steps):
            self._start_step(call, now)
            return
        self._exhausted(call, now)

    def _exhausted(self, call: Call, now: float) -> None:
        plan = call.plan
        assert plan is not None
        statuses = call.statuses
        if plan.on_no_answer is not None and not (statuses and all(s in _BUSY for s in statuses)
                                                  and plan.hunt_group is None):
            call.divert_reason = "no-answer"
            self._reroute(call, plan.on_no_answer, plan.owner, now)
            return
        self._refuse(call, _final_refusal(statuses, bool(plan.steps and plan.steps[0].dests
                                                         and plan.steps[0].dests[0].trunk)), now)

    # -- B legs -------------------------------------------------------------------
    def _ring(self, call: Call, dest: Dest, now: float) -> None:
        if dest.extension is not None:
            contacts = self.env.contacts(dest.extension, now)
            if not contacts:
                call.statuses.append(480)  # not registered
                return
            if call.hunt_group is not None:
                self.env.hunt_offered(call.hunt_group, dest.extension)
            for contact in contacts:
                if self.env.local_address(contact.peer) == (contact.peer.host, contact.peer.port):
                    # A contact that is our own address would loop the call back to us.
                    call.statuses.append(482)
                    continue
                self._send_invite(call, dest, contact.uri, contact.peer, trunk=None, now=now)
            return
        trunk = self.env.trunk(dest.trunk or "")
        if trunk is None or dest.number is None:
            call.statuses.append(503)
            return
        call.trunk = trunk.name
        if call.direction == "internal":
            call.direction = "outbound"
        port = f":{trunk.peer.port}" if trunk.peer.port != 5060 else ""
        uri = f"sip:{dest.number}@{trunk.domain}{port}"
        self._send_invite(call, dest, uri, trunk.peer, trunk=trunk, now=now)

    def _send_invite(
        self, call: Call, dest: Dest, uri: str, peer: Peer, *, trunk: TrunkInfo | None,
        now: float,
    ) -> None:
        a_invite = call.a.invite
        assert a_invite is not None
        host, port = self.env.local_address(peer)
        sent_by = _hostport(host, port)
        transport = peer.transport.upper()
        tparam = "" if peer.transport == "udp" else f";transport={peer.transport}"
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{transport} {sent_by};branch={new_branch()};rport")
        max_forwards = a_invite.max_forwards
        headers.add("Max-Forwards", str(69 if max_forwards is None else max_forwards - 1))
        if trunk is not None:
            user = self.env.user_for_extension(call.caller_extension or "")
            number = (user.caller_id if user else None) or trunk.caller_id or call.caller
            headers.add("From", f'{_display(call.caller_name)}<sip:{number}@{trunk.from_domain}>'
                                f";tag={new_tag()}")
            headers.add("To", f"<{uri}>")
            headers.add("P-Asserted-Identity", f"<sip:{number}@{trunk.from_domain}>")
        else:
            realm = self.env.realm
            headers.add("From", f"{_display(call.caller_name)}<sip:{call.caller}@{realm}>"
                                f";tag={new_tag()}")
            headers.add("To", f"<sip:{dest.extension}@{realm}>")
        headers.add("Call-ID", new_id())
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", f"<sip:edgepbx@{sent_by}{tparam}>")
        headers.add("Allow", ALLOW)
        headers.add("Supported", "replaces")
        if call.diversion:
            diversion = f"<sip:{call.diversion}@{self.env.realm}>;reason=unconditional"
            headers.add("Diversion", diversion)
        headers.add("User-Agent", self.config.server_header)
        for name, value in dest.headers:
            headers.add(name, value)
        content_type = a_invite.headers.get("content-type")
        if call.offer is not None:
            body, content_type = call.offer, SDP
        else:
            body = nat_fixed(a_invite.body, content_type, call.a.peer)
        if body:
            headers.add("Content-Type", content_type or SDP)
        invite = Request("INVITE", uri, headers, body)
        leg = Leg(call=call, label=dest.label, peer=peer, incoming=False, invite=invite,
                  trunk=trunk.name if trunk else None, extension=dest.extension)
        call.ringing.append(leg)
        self._send_leg_invite(leg, invite, now)

    def _send_leg_invite(self, leg: Leg, invite: Request, now: float) -> None:
        try:
            key = self.layer.send_request(invite, leg.peer, now)
        except TransactionError as exc:
            log.warning("could not send INVITE", extra={"why": str(exc)})
            leg.state = LegState.DONE
            leg.call.statuses.append(503)
            return
        leg.client_key = key
        leg.invite = invite
        self._handlers[key] = lambda r, s, t: self._leg_response(leg, r, s, t)

    def _leg_response(self, leg: Leg, response: Response | None, status: int, now: float) -> None:
        call = leg.call
        if status < 200:
            assert response is not None
            if status == 100:
                leg.provisional = True
            else:
                leg.provisional = True
                if leg.state is LegState.TRYING:
                    leg.state = LegState.EARLY
                if not leg.cancel_wanted and leg in call.ringing:
                    self._relay_provisional(call, response, leg.peer, now)
            if leg.cancel_wanted:
                self._send_cancel(leg, now)
            return
        if leg.client_key is not None:
            self._handlers.pop(leg.client_key, None)
        if status < 300:
            assert response is not None
            self._leg_answered(leg, response, now)
            return
        if status in (401, 407) and response is not None and self._retry_auth(leg, response, now):
            return
        leg.state = LegState.DONE
        leg.status = status
        # A leg we cancelled was counted out when it was cancelled (_check_step skips it):
        # its 487 must not run the step again (a second voicemail after a no-answer timeout).
        if (leg in call.ringing and not leg.cancel_wanted
                and call.state not in (CallState.ANSWERED, CallState.ENDED)):
            call.statuses.append(status)
            self._check_step(call, now)

    def _retry_auth(self, leg: Leg, response: Response, now: float) -> bool:
        """A trunk challenged our INVITE: answer once with its credentials."""
        trunk = self.env.trunk(leg.trunk or "")
        if trunk is None or trunk.digest is None or leg.auth_tries >= 1 or leg.cancel_wanted:
            return False
        header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        challenge = trunk.digest.choose(response.headers.get_all(header))
        old = leg.invite
        if challenge is None or old is None:
            return False
        try:
            value = trunk.digest.authorize(challenge, "INVITE", old.uri)
        except DigestError:
            return False
        leg.auth_tries += 1
        headers = old.headers.copy()
        via = headers.values("via")[0]
        fresh = via.split(";branch=")[0] + f";branch={new_branch()};rport"
        headers.replace_first_value("via", fresh)
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        headers.add("Authorization" if response.status == 401 else "Proxy-Authorization", value)
        self._send_leg_invite(leg, Request("INVITE", old.uri, headers, old.body), now)
        return True

    def _relay_provisional(
        self, call: Call, response: Response, peer: Peer, now: float
    ) -> None:
        a = call.a
        if a.server_key is None or a.invite is None or call.state is not CallState.RINGING:
            return
        status = response.status
        content_type = response.headers.get("content-type")
        body = nat_fixed(response.body, content_type, peer) if status == 183 else b""
        self._reply(a.server_key, a.invite, status, now, to_tag=a.to_tag,
                    contact=self._contact(a.peer), body=body, content_type=content_type)

    def _leg_answered(self, leg: Leg, response: Response, now: float) -> None:
        call = leg.call
        leg.status = response.status
        dialog = Dialog.as_uac(leg.invite, response, leg.peer)  # type: ignore[arg-type]
        leg.dialog = dialog
        leg.state = LegState.UP
        if call.state in (CallState.ANSWERED, CallState.ENDED) or leg not in call.ringing:
            # A second fork answered, or the caller already gave up: ACK and hang up.
            self._ack_leg(leg, b"", now)
            self._bye(leg, now)
            return
        a = call.a
        if a.state is LegState.UP:
            # The A side is already in a session (transfer, park ring-back): third-party
            # call control joins them (see features).
            self._settle_answer(call, leg, now)
            self.features.join_answered(call, leg, response, now)
            return
        assert a.invite is not None and a.server_key is not None
        if leg.invite is not None and leg.invite.body:
            self._ack_leg(leg, b"", now)
        else:
            a.relay_ack = leg
        self._settle_answer(call, leg, now)
        content_type = response.headers.get("content-type")
        self._answer_incoming(a, nat_fixed(response.body, content_type, leg.peer),
                              content_type, now)
        self._arm_keepalive(leg, now)

    def _answer_incoming(
        self, leg: Leg, body: bytes, content_type: str | None, now: float
    ) -> None:
        """Answer the INVITE ``leg`` received with 200 and ``body``: the leg's dialog is
        confirmed (our To tag, our Contact) and in-dialog requests find it from now on."""
        invite, key = leg.invite, leg.server_key
        assert invite is not None and key is not None
        contact = self._contact(leg.peer)
        ours = make_response(invite, 200, to_tag=leg.to_tag)
        ours.headers.add("Contact", contact)
        leg.dialog = Dialog.as_uas(invite, ours, leg.peer)
        leg.state = LegState.UP
        self._dialogs[leg.dialog.id] = leg
        self._reply(key, invite, 200, now, to_tag=leg.to_tag, contact=contact, body=body,
                    content_type=content_type,
                    extra=[("Allow", ALLOW), ("Supported", "replaces")])
        self._arm_keepalive(leg, now)

    def _settle_answer(self, call: Call, leg: Leg, now: float) -> None:
        """``leg`` won: stop the ring timers, cancel the other legs, make it the peer."""
        for timer in call.timers:
            timer.cancel()
        call.timers = []
        call.state = CallState.ANSWERED
        call.answer = now
        call.peer = leg
        call.callee = leg.label
        if leg.trunk:
            call.trunk = leg.trunk
        for other in call.ringing:
            if other is not leg:
                self._cancel_leg(other, now)
        call.ringing = [leg]
        if leg.dialog is not None:
            self._dialogs[leg.dialog.id] = leg
        if call.a.state is LegState.UP:
            self._arm_keepalive(leg, now)

    def _reinvite(
        self, leg: Leg, body: bytes, now: float,
        done: Callable[[Response | None, int, float, Request], None],
    ) -> None:
        """Send ``leg`` a re-INVITE with ``body`` (an offer; b"": ask it for one) and call
        ``done`` with the final response. With an offer, its 2xx is ACKed here; without,
        ``done`` must ACK with the answer (``_ack_with``)."""
        dialog = leg.dialog
        if dialog is None or leg.state is not LegState.UP:
            done(None, 481, now, Request("INVITE", "sip:invalid"))
            return
        host, port = self.env.local_address(leg.peer)
        out = dialog.new_request("INVITE", sent_by=_hostport(host, port),
                                 transport=leg.peer.transport, contact=self._contact(leg.peer),
                                 body=body, content_type=SDP if body else None)
        leg.call.pending += 1

        def handler(response: Response | None, status: int, t: float) -> None:
            if status < 200:
                return
            leg.call.pending = max(0, leg.call.pending - 1)
            self._handlers.pop(ckey, None)
            if response is not None and 200 <= status < 300:
                dialog.refresh_target(response)
                if body:
                    self._ack_with(leg, out, b"", t)
            done(response, status, t, out)

        try:
            ckey = self.layer.send_request(out, leg.peer, now)
        except TransactionError:
            leg.call.pending = max(0, leg.call.pending - 1)
            done(None, 503, now, out)
            return
        self._handlers[ckey] = handler

    def _ack_with(self, leg: Leg, invite: Request, body: bytes, now: float,
                  content_type: str | None = None) -> None:
        """ACK ``leg``'s 2xx to ``invite`` (its first INVITE or a re-INVITE), with
        ``body`` when the ACK carries the answer (delayed offer)."""
        dialog = leg.dialog
        if dialog is None:
            return
        host, port = self.env.local_address(leg.peer)
        ack = dialog.new_request("ACK", sent_by=_hostport(host, port),
                                 transport=leg.peer.transport, cseq=invite.cseq.number,
                                 body=body, content_type=content_type or (SDP if body else None))
        leg.ack = ack
        self.layer.send_stateless(ack, leg.peer)

    def _ack_leg(self, leg: Leg, body: bytes, now: float, content_type: str | None = None) -> None:
        """ACK the 2xx to ``leg``'s first INVITE."""
        if leg.invite is not None:
            self._ack_with(leg, leg.invite, body, now, content_type)

    def _cancel_leg(self, leg: Leg, now: float) -> None:
        if leg.state is LegState.DONE:
            return
        if leg.state is LegState.UP:
            self._bye(leg, now)
            return
        leg.cancel_wanted = True
        if leg.provisional:
            self._send_cancel(leg, now)

    def _send_cancel(self, leg: Leg, now: float) -> None:
        invite = leg.invite
        if invite is None or leg.state in (LegState.DONE, LegState.UP):
            return
        try:
            self.layer.send_request(make_cancel(invite), leg.peer, now)
        except TransactionError as exc:
            log.debug("CANCEL not sent", extra={"why": str(exc)})
        leg.provisional = False  # one CANCEL is enough; the INVITE's final response ends it

    def _bye(self, leg: Leg, now: float) -> None:
        dialog = leg.dialog
        if dialog is None or leg.state is LegState.DONE:
            leg.state = LegState.DONE
            return
        leg.state = LegState.DONE
        self._dialogs.pop(dialog.id, None)
        if leg.keepalive is not None:
            leg.keepalive.cancel()
        host, port = self.env.local_address(leg.peer)
        bye = dialog.new_request("BYE", sent_by=_hostport(host, port),
                                 transport=leg.peer.transport)
        try:
            self.layer.send_request(bye, leg.peer, now)
        except TransactionError as exc:
            log.debug("BYE not sent", extra={"why": str(exc)})

    # -- the caller's side ----------------------------------------------------------
    def _cancel(self, event: CancelReceived, now: float) -> None:
        leg = self._a_legs.get(event.invite_key) if event.invite_key is not None else None
        if leg is None:
            self._reply(event.key, event.request, 481, now)
            return
        self._reply(event.key, event.request, 200, now)
        call = leg.call
        if not event.pending or call.state in (CallState.ANSWERED, CallState.ENDED):
            return  # the CANCEL lost the race with our 2xx: the caller will BYE
        assert leg.invite is not None and leg.server_key is not None
        self._reply(leg.server_key, leg.invite, 487, now, to_tag=leg.to_tag)
        self._end(call, now, "abandoned", "cancel")

    def _ack(self, request: Request, now: float) -> None:
        dialog_id = dialog_id_of_request(request)
        leg = self._dialogs.get(dialog_id) if dialog_id is not None else None
        if leg is None:
            return
        target = leg.relay_ack
        invite = leg.relay_ack_invite or (target.invite if target is not None else None)
        leg.relay_ack = leg.relay_ack_invite = None
        if target is not None and invite is not None:
            # The caller's ACK carries the answer to the far end's offer: pass it on.
            self._ack_with(target, invite, request.body, now, request.headers.get("content-type"))

    def _stray(self, response: Response, now: float) -> None:
        """A 2xx retransmission after the INVITE transaction ended: ACK it again."""
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            return
        to_tag = response.to.tag
        from_tag = response.from_.tag
        if to_tag is None or from_tag is None:
            return
        leg = self._dialogs.get((response.call_id, from_tag, to_tag))
        ack = leg.ack if leg is not None else None
        if leg is not None and ack is not None and ack.cseq.number == response.cseq.number:
            self.layer.send_stateless(ack, leg.peer)

    # -- inside a dialog ------------------------------------------------------------
    def _in_dialog(self, key: ServerTxKey, request: Request, peer: Peer, now: float) -> None:
        dialog_id = dialog_id_of_request(request)
        leg = self._dialogs.get(dialog_id) if dialog_id is not None else None
        if leg is None or leg.dialog is None:
            if self.mwi is not None and self.mwi.in_dialog(key, request, dialog_id, peer, now):
                return
            self._reply(key, request, 481, now)
            return
        dialog = leg.dialog
        if not dialog.check_remote_cseq(request):
            self._reply(key, request, 500, now, reason="CSeq Out Of Order")
            return
        method = request.method
        call = leg.call
        if method == "BYE":
            self._reply(key, request, 200, now)
            self._dialogs.pop(dialog.id, None)
            leg.state = LegState.DONE
            self._end(call, now, "answered", "caller-bye" if leg is call.a else "callee-bye")
        elif method == "OPTIONS":
            self._reply(key, request, 200, now, extra=[("Allow", ALLOW)])
        elif method == "REFER":
            self._refer(leg, key, request, now)
        elif method in _RELAYED:
            self._relay(leg, key, request, now)
        elif method == "NOTIFY":
            self._reply(key, request, 200, now)
        else:
            self._reply(key, request, 405, now, extra=[("Allow", ALLOW)])

    def _relay(self, origin: Leg, key: ServerTxKey, request: Request, now: float) -> None:
        call = origin.call
        target = call.other(origin)
        method = request.method
        if method == "INFO" and target is None and call.on_info is not None:
            call.on_info(request.body)  # DTMF for a voice application
            self._reply(key, request, 200, now)
            return
        if target is None or target.dialog is None or target.state is not LegState.UP:
            status = 200 if method == "INFO" else 491 if method in ("INVITE", "UPDATE") else 481
            self._reply(key, request, status, now)
            return
        if method in ("INVITE", "UPDATE"):
            if call.pending:
                self._reply(key, request, 491, now)  # glare: one offer at a time (RFC 3261 §14.1)
                return
            call.pending += 1
            origin.dialog.refresh_target(request)  # type: ignore[union-attr]
        host, port = self.env.local_address(target.peer)
        out = target.dialog.new_request(
            method, sent_by=_hostport(host, port), transport=target.peer.transport,
            contact=self._contact(target.peer) if method in ("INVITE", "UPDATE") else None,
            body=nat_fixed(request.body, request.headers.get("content-type"), origin.peer),
            content_type=request.headers.get("content-type"),
        )
        offered_hold = _hold_in(request)
        if offered_hold is False and self.hold_music is not None:
            self.hold_music.stop(call, now)  # resuming: the held party goes back to origin
        try:
            ckey = self.layer.send_request(out, target.peer, now)
        except TransactionError:
            if method in ("INVITE", "UPDATE"):
                call.pending -= 1
            self._reply(key, request, 500, now)
            return

        def relay_back(response: Response | None, status: int, t: float) -> None:
            if status == 100:
                return
            final = status >= 200
            if final and method in ("INVITE", "UPDATE"):
                call.pending = max(0, call.pending - 1)
                self._handlers.pop(ckey, None)
            if response is None:
                self._reply(key, request, status, t)
                return
            if final and status < 300:
                if method in ("INVITE", "UPDATE"):
                    target.dialog.refresh_target(response)  # type: ignore[union-attr]
                    if offered_hold is not None:
                        self._set_hold(origin, offered_hold, t)
                if method == "INVITE":
                    if out.body:
                        self._ack_with(target, out, b"", t)
                    else:
                        origin.relay_ack = target
                        origin.relay_ack_invite = out
            contact = self._contact(origin.peer) if method in ("INVITE", "UPDATE") else None
            rtype = response.headers.get("content-type")
            self._reply(key, request, status, t, reason=response.reason,
                        body=nat_fixed(response.body, rtype, target.peer), content_type=rtype,
                        contact=contact if status < 300 else None)
            if (final and status < 300 and method == "INVITE" and offered_hold
                    and self.hold_music is not None):
                self.hold_music.start(call, target, t)

        self._handlers[ckey] = relay_back


    def _set_hold(self, leg: Leg, hold: bool, now: float) -> None:
        call = leg.call
        leg.on_hold = hold
        any_hold = call.a.on_hold or (call.peer is not None and call.peer.on_hold)
        if any_hold and call.hold_since is None:
            call.hold_since = now
        elif not any_hold and call.hold_since is not None:
            call.hold_seconds += now - call.hold_since
            call.hold_since = None

    def _refer(self, leg: Leg, key: ServerTxKey, request: Request, now: float) -> None:
        self.features.refer(leg, key, request, now)

    # -- keepalive ------------------------------------------------------------------
    def _arm_keepalive(self, leg: Leg, now: float) -> None:
        interval = self.config.keepalive_interval
        if interval <= 0:
            return
        leg.keepalive = self.timers.at(now + interval, lambda t: self._probe(leg, t))

    def _probe(self, leg: Leg, now: float) -> None:
        if leg.state is not LegState.UP or leg.dialog is None:
            return
        host, port = self.env.local_address(leg.peer)
        options = leg.dialog.new_request("OPTIONS", sent_by=_hostport(host, port),
                                         transport=leg.peer.transport)
        try:
            ckey = self.layer.send_request(options, leg.peer, now)
        except TransactionError:
            return

        def answered(response: Response | None, status: int, t: float) -> None:
            if status < 200:
                return
            if status in _GONE or (status == 503 and response is None):
                if leg.state is LegState.UP:
                    leg.state = LegState.DONE
                    self._dialogs.pop(leg.dialog.id, None)  # type: ignore[union-attr]
                    self._end(leg.call, t, "answered", "keepalive-timeout")
                return
            self._arm_keepalive(leg, t)

        self._handlers[ckey] = answered

    # -- features -------------------------------------------------------------------
    def _feature(self, call: Call, code: FeatureCode, now: float) -> None:
        extension = call.caller_extension
        if extension is None:
            self._refuse(call, Refuse(403, "feature codes need a known caller"), now)
            return
        feature = code.feature
        if feature in (Feature.PICKUP_GROUP, Feature.PICKUP_DIRECTED):
            self.features.pickup(call, code, now)
            return
        if feature is Feature.RETRIEVE:
            self.features.retrieve(call, code.argument, now)
            return
        if feature is Feature.INTERCOM:
            self.features.intercom(call, code.argument or "", now)
            return
        if feature in (Feature.VOICEMAIL_OWN, Feature.VOICEMAIL_ANY):
            mailbox = extension if feature is Feature.VOICEMAIL_OWN else code.argument or ""
            call.recorded = False
            self._follow(call, ToApplication("voicemail-menu", mailbox, "menu"), now)
            return
        if feature is Feature.PARK:
            self._refuse(call, Refuse(403, "park a call by transferring it to the park code"),
                         now)
            return
        try:
            outcome = self.env.apply_feature(extension, code.feature, code.argument)
        except ValueError as exc:
            self._refuse(call, Refuse(403, str(exc)), now)
            return
        call.recorded = False
        log.info("feature applied", extra={"extension": extension,
                                           "feature": code.feature.value, "outcome": outcome})
        # Without a media application to play a confirmation, the phone gets a final
        # response whose reason phrase says what happened.
        self._refuse(call, Refuse(480, outcome, "answered"), now, reason=outcome)

    # -- ending -----------------------------------------------------------------------
    def _refuse(
        self, call: Call, refusal: Refuse, now: float, *, reason: str | None = None
    ) -> None:
        a = call.a
        answerable = a.server_key is not None and a.invite is not None
        if answerable and call.state is not CallState.ANSWERED:
            assert a.server_key is not None and a.invite is not None
            warning = f'399 edgepbx "{_warning(refusal.reason)}"'
            extra = [("Warning", warning)] if reason is None else None
            self._reply(a.server_key, a.invite, refusal.status, now, to_tag=a.to_tag,
                        reason=reason, extra=extra)
        log.info("call refused", extra={"call": call.id, "status": refusal.status,
                                        "why": refusal.reason})
        self._end(call, now, refusal.disposition, str(refusal.status))

    def _end(
        self, call: Call, now: float, disposition: str, cause: str,
        *, keep: tuple[Leg, ...] = (),
    ) -> None:
        """End ``call``: hang up or cancel its legs (but those in ``keep``, which a
        transfer moves on), and write its record."""
        if call.state is CallState.ENDED:
            return
        was_answered = call.answer is not None
        call.state = CallState.ENDED
        call.end = now
        for timer in call.timers:
            timer.cancel()
        call.timers = []
        if call.hold_since is not None:
            call.hold_seconds += now - call.hold_since
            call.hold_since = None
        for leg in call.legs():
            if leg in keep:
                continue
            if leg.keepalive is not None:
                leg.keepalive.cancel()
            if leg.state is LegState.UP:
                self._bye(leg, now)
            elif leg.state is not LegState.DONE and not leg.incoming:
                self._cancel_leg(leg, now)
            if leg.dialog is not None:
                self._dialogs.pop(leg.dialog.id, None)
        self.calls.pop(call.id, None)
        if self.hold_music is not None:
            self.hold_music.stop(call, now)
        if call.on_end is not None:
            call.on_end()
        if call.parked_slot is not None and self.features.parked.get(call.parked_slot) is call:
            del self.features.parked[call.parked_slot]
        if was_answered:
            disposition = "answered"
        elif disposition == "answered":
            disposition = "failed"
        if call.direction != "inbound" and call.caller_extension:
            self.env.call_ended(call.caller_extension, now)
        if call.peer is not None and call.peer.extension:
            self.env.call_ended(call.peer.extension, now)
        if not call.recorded:
            return
        quality = call.media_quality() if call.media_quality is not None else None
        self._records.append(EndedCall(
            id=call.id, direction=call.direction, caller=call.caller,
            caller_name=call.caller_name, callee=call.callee or _last_tried(call),
            dialed=call.dialed, start=call.start, answer=call.answer, end=now,
            disposition=disposition, hold_seconds=round(call.hold_seconds, 3),
            hunt_group=call.hunt_group, trunk=call.trunk, cause=cause,
            jitter_ms=quality[0] if quality else None,
            loss_percent=quality[1] if quality else None,
            rtt_ms=quality[2] if quality else None,
        ))

    def _contact(self, peer: Peer) -> str:
        host, port = self.env.local_address(peer)
        tparam = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:edgepbx@{_hostport(host, port)}{tparam}>"


class _HuntStates(Mapping[str, HuntState]):
    """Hunt group states, computed only for the group a call actually reaches: working
    out who is busy walks every call, which most calls (to a user) never need."""

    def __init__(self, cc: CallControl, now: float) -> None:
        self._cc = cc
        self._now = now
        self._busy: frozenset[str] | None = None

    def __getitem__(self, pilot: str) -> HuntState:
        if self._cc.env.model().hunt_group(pilot) is None:
            raise KeyError(pilot)
        if self._busy is None:
            self._busy = self._cc.busy_extensions()
        return self._cc.env.hunt_state(pilot, self._busy, self._now)

    def __iter__(self) -> Iterator[str]:
        return iter([g.pilot for g in self._cc.env.model().hunt_groups])

    def __len__(self) -> int:
        return len(self._cc.env.model().hunt_groups)


def _final_refusal(statuses: list[int], trunk: bool) -> Refuse:
    if not statuses:
        return Refuse(480, "nobody to ring", "no-answer")
    if any(600 <= s < 700 for s in statuses):
        status = next(s for s in statuses if s >= 600)
        return Refuse(status, "declined everywhere", "busy" if status == 600 else "failed")
    if any(s in _BUSY for s in statuses):
        return Refuse(486, "busy", "busy")
    if all(s == 408 for s in statuses):
        return Refuse(408, "no response", "no-answer")
    if all(s == 482 for s in statuses):
        return Refuse(482, "the contact is this PBX", "failed")
    if trunk:
        status = next((s for s in statuses if s not in (480, 487)), statuses[0])
        return Refuse(status, REASON_PHRASES.get(status, "trunk refused"),
                      "no-answer" if status in (480, 408) else "failed")
    return Refuse(480, "no answer", "no-answer")


def _last_tried(call: Call) -> str:
    return call.ringing[-1].label if call.ringing else ""


def _dialed(request: Request) -> str:
    uri = request.request_uri
    user = getattr(uri, "user", None)
    if user is None:
        user = getattr(request.to.uri, "user", None)
    return (user or "").split(";", 1)[0]


# A c= line naming an RFC 1918, CGNAT, link-local or ULA address: the cheap test that
# lets the SDP of phones on the LAN (or with public addresses) pass unparsed.
_PRIVATE_C_LINE = re.compile(
    rb"^c=IN IP4 (?:10\.|192\.168\.|172\.(?:1[6-9]|2\d|3[01])\.|169\.254\."
    rb"|100\.(?:6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)|^c=IN IP6 (?:f[cd]|fe[89ab])",
    re.MULTILINE | re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def _on_lan(host: str) -> bool:
    """Private or loopback: packets from there did not cross a NAT to reach us."""
    try:
        return is_private_address(host) or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def nat_fixed(body: bytes, content_type: str | None, peer: Peer) -> bytes:
    """The SDP of a phone behind NAT, with its private address replaced by the public
    one its packets come from, so that the far end sends media where it can arrive.

    Only when the SDP names a private address and the packet came from a public one:
    phones on the office LAN (private both) are left alone. Cheap first check on the
    bytes, because this runs for every INVITE and answer.
    """
    if not body or _on_lan(peer.host) or not _PRIVATE_C_LINE.search(body):
        return body
    if "sdp" not in (content_type or SDP).lower():
        return body
    try:
        sdp = parse_sdp(body)
    except SdpError:
        return body
    hosts = [sdp.connection] + [m.connection for m in sdp.media]
    if not any(c is not None and is_private_address(c.host) for c in hosts):
        return body
    return with_connection_address(sdp, peer.host, only_private=True).serialize()


def _hold_in(request: Request) -> bool | None:
    if not request.body or "sdp" not in (request.headers.get("content-type") or "").lower():
        return None
    try:
        return is_hold(parse_sdp(request.body))
    except SdpError:
        return None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _display(name: str) -> str:
    if not name:
        return ""
    cleaned = name.replace("\\", "").replace('"', "")
    return f'"{cleaned}" '


def _warning(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:120]
