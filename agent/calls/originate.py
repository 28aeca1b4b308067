"""Calls the PBX places itself: an INVITE out of any call, to one registered contact.

Paging sends one to every member phone, with an offer of the agent's own media and
the headers that make phones answer by themselves. The call control pieces are
reused: the leg is a :class:`~agent.calls.model.Leg` of a :class:`Call` of its own
(not recorded, not among ``CallControl.calls``, so it does not make the phone look
busy), its dialog is in the engine's dialog map, so a BYE, OPTIONS or a keepalive
failure from the phone is handled like on any call and ends it; ``on_end`` tells
the owner.

    leg = originate(cc, contact.uri, contact.peer, now, to_user="1002",
                    from_user="1001", body=offer, headers=auto_answer_headers(realm),
                    on_answer=..., on_end=...)
    ...
    hang_up(cc, leg, now)  # BYE if answered, CANCEL if still ringing
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.calls.ids import new_id, new_tag
from agent.calls.model import Call, CallState, Leg, LegState
from sipstack.dialog import Dialog
from sipstack.errors import SipParseError
from sipstack.headers import Headers
from sipstack.message import Request, Response
from sipstack.peer import Peer
from sipstack.transaction import TransactionError, new_branch

if TYPE_CHECKING:
    from agent.calls.engine import CallControl

log = logging.getLogger(__name__)

SDP = "application/sdp"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY"

AnswerCallback = Callable[[Leg, Response, float], None]
EndCallback = Callable[[Leg], None]


def auto_answer_headers(server: str) -> tuple[tuple[str, str], ...]:
    """Headers asking a phone to answer at once (paging, intercom), one per vendor habit:

    - ``Call-Info: <sip:server>;answer-after=0`` (RFC 5373's predecessor draft; Cisco,
      Grandstream, Snom, baresip and most others);
    - ``Alert-Info: <...>;info=alert-autoanswer;delay=0`` (Yealink, Snom; Polycom when
      its ``voIpProt.SIP.alertInfo`` class maps it to auto-answer).

    The phone's own setting still decides (intercom/auto-answer allowed, when idle).
    """
    return (
        ("Call-Info", f"<sip:{server}>;answer-after=0"),
        ("Alert-Info", "<http://127.0.0.1>;info=alert-autoanswer;delay=0"),
    )


def originate(
    cc: CallControl, uri: str, peer: Peer, now: float, *, to_user: str, from_user: str,
    from_name: str = "", body: bytes = b"", content_type: str = SDP,
    headers: tuple[tuple[str, str], ...] = (), extension: str | None = None,
    timeout: float | None = None, on_answer: AnswerCallback | None = None,
    on_end: EndCallback | None = None,
) -> Leg:
    """Send an INVITE to the contact ``uri`` reached at ``peer`` and return its leg.

    ``on_answer(leg, response, t)`` runs on its 2xx (already ACKed; the SDP answer is
    ``response.body``); ``on_end(leg)`` once when it ends for any reason: refused
    (``leg.status`` is the final status, 408 on timeout), hung up by the far end, by
    :func:`hang_up`, or by the keepalive. ``timeout``: CANCEL if not answered by then.
    """
    host, port = cc.env.local_address(peer)
    sent_by = _hostport(host, port)
    tparam = "" if peer.transport == "udp" else f";transport={peer.transport}"
    realm = cc.env.realm
    hdrs = Headers()
    hdrs.add("Via", f"SIP/2.0/{peer.transport.upper()} {sent_by};branch={new_branch()};rport")
    hdrs.add("Max-Forwards", "70")
    hdrs.add("From", f"{_display(from_name)}<sip:{from_user}@{realm}>;tag={new_tag()}")
    hdrs.add("To", f"<sip:{to_user}@{realm}>")
    hdrs.add("Call-ID", new_id())
    hdrs.add("CSeq", "1 INVITE")
    hdrs.add("Contact", f"<sip:edgepbx@{sent_by}{tparam}>")
    hdrs.add("Allow", ALLOW)
    hdrs.add("User-Agent", cc.config.server_header)
    for name, value in headers:
        hdrs.add(name, value)
    if body:
        hdrs.add("Content-Type", content_type)
    invite = Request("INVITE", uri, hdrs, body)
    call = Call(id=new_id(), direction="internal", caller=from_user, caller_name=from_name,
                dialed=to_user, start=now, recorded=False, state=CallState.RINGING)
    leg = Leg(call=call, label=to_user, peer=peer, incoming=False, invite=invite,
              extension=extension)
    call.a = leg
    if on_end is not None:
        call.on_end = lambda: on_end(leg)

    def response(message: Response | None, status: int, t: float) -> None:
        if status < 200:
            leg.provisional = True
            if status > 100 and leg.state is LegState.TRYING:
                leg.state = LegState.EARLY
            if leg.cancel_wanted:
                cc._send_cancel(leg, t)
            return
        if leg.client_key is not None:
            cc._handlers.pop(leg.client_key, None)
        leg.status = status
        if 200 <= status < 300 and message is not None:
            _answered(cc, leg, message, t, on_answer)
            return
        leg.state = LegState.DONE
        cc._end(call, t, "failed", str(status))

    try:
        leg.client_key = cc.send_request(invite, peer, now, response)
    except TransactionError as exc:
        log.info("could not send INVITE", extra={"uri": uri, "why": str(exc)})
        leg.state = LegState.DONE
        leg.status = 503
        cc._end(call, now, "failed", "503")
        return leg
    if timeout is not None:
        call.timers.append(cc.timers.at(now + timeout, lambda t: _no_answer(cc, leg, t)))
    return leg


def hang_up(cc: CallControl, leg: Leg, now: float, cause: str = "hang-up") -> None:
    """End an originated leg: BYE when answered, CANCEL while ringing (idempotent)."""
    cc._end(leg.call, now, "answered", cause)


def _answered(cc: CallControl, leg: Leg, response: Response, now: float,
              on_answer: AnswerCallback | None) -> None:
    call = leg.call
    assert leg.invite is not None
    try:
        leg.dialog = Dialog.as_uac(leg.invite, response, leg.peer)
    except SipParseError as exc:  # a 2xx without a To tag: nothing to ACK or BYE
        log.info("bad 2xx to our INVITE", extra={"why": str(exc)})
        leg.state = LegState.DONE
        cc._end(call, now, "failed", "bad-2xx")
        return
    leg.state = LegState.UP
    cc._dialogs[leg.dialog.id] = leg
    cc._ack_leg(leg, b"", now)  # our INVITE had the offer: the ACK carries nothing
    if call.state is CallState.ENDED or leg.cancel_wanted:
        cc._bye(leg, now)  # hung up while it was ringing
        return
    for timer in call.timers:
        timer.cancel()
    call.timers = []
    call.state = CallState.ANSWERED
    call.answer = now
    cc._arm_keepalive(leg, now)
    if on_answer is not None:
        on_answer(leg, response, now)


def _no_answer(cc: CallControl, leg: Leg, now: float) -> None:
    if leg.state in (LegState.TRYING, LegState.EARLY):
        leg.status = 408
        cc._end(leg.call, now, "no-answer", "no-answer")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _display(name: str) -> str:
    if not name:
        return ""
    cleaned = name.replace("\\", "").replace('"', "")
    return f'"{cleaned}" '
