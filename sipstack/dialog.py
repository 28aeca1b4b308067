"""SIP dialogs (RFC 3261 §12), sans-I/O.

A :class:`Dialog` is the state both ends keep for one call leg: Call-ID, the two
tags, the local and remote URIs, the CSeq counters, the remote target (Contact)
and the route set. It builds the requests sent inside the dialog and checks the
requests received in it. It does no I/O and keeps no clock.

Where requests go: RFC 3261 sends in-dialog requests to the first Route or the
remote target. A phone behind NAT writes a private address in its Contact, so
the dialog also keeps ``peer``, the transport address the leg was learned from
(the source of the INVITE, or the registered flow), and the owner sends there.
That is what PBXs do for phones (Asterisk's ``force_rport``/``comedia``; RFC 5626
flows), and it is right for TCP too, where the phone's connection is the way in.

Only loose routing (``;lr``) is supported in route sets; strict routers belong to
RFC 2543 and no phone or carrier we provision uses them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sipstack.errors import SipParseError
from sipstack.headers import Headers, NameAddr, parse_name_addr
from sipstack.message import Request, Response
from sipstack.peer import Peer
from sipstack.transaction.build import new_branch


class DialogState(enum.Enum):
    EARLY = "early"  # a 1xx with a To tag
    CONFIRMED = "confirmed"  # a 2xx
    TERMINATED = "terminated"


DialogId = tuple[str, str, str]  # Call-ID, local tag, remote tag


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # name-addr text without the tag (From of our requests)
    remote_uri: str  # name-addr text without the tag (To of our requests)
    remote_target: str  # the remote Contact URI
    peer: Peer
    local_seq: int
    remote_seq: int | None = None
    route_set: list[str] = field(default_factory=list)
    state: DialogState = DialogState.EARLY

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation ---------------------------------------------------------------
    @classmethod
    def as_uas(cls, request: Request, response: Response, peer: Peer) -> Dialog:
        """The dialog a UAS creates by answering ``request`` with ``response`` (§12.1.1):
        ``response`` carries our To tag and our Contact."""
        to = response.to
        if to.tag is None:
            raise SipParseError(500, "a dialog-creating response needs a To tag")
        frm = request.from_
        if frm.tag is None:
            raise SipParseError(400, "a dialog needs a From tag")
        return cls(
            call_id=request.call_id,
            local_tag=to.tag,
            remote_tag=frm.tag,
            local_uri=_without_tag(to),
            remote_uri=_without_tag(frm),
            remote_target=_contact_uri(request),
            peer=peer,
            local_seq=0,
            remote_seq=request.cseq.number,
            route_set=list(request.headers.values("record-route")),
            state=DialogState.CONFIRMED if response.status < 300 else DialogState.EARLY,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response, peer: Peer) -> Dialog:
        """The dialog a UAC learns from a 1xx/2xx with a To tag to ``request`` (§12.1.2)."""
        to = response.to
        if to.tag is None:
            raise SipParseError(400, "a dialog-creating response needs a To tag")
        frm = request.from_
        assert frm.tag is not None, "our requests always carry a From tag"
        return cls(
            call_id=request.call_id,
            local_tag=frm.tag,
            remote_tag=to.tag,
            local_uri=_without_tag(frm),
            remote_uri=_without_tag(to),
            remote_target=_contact_uri(response),
            peer=peer,
            local_seq=request.cseq.number,
            route_set=list(reversed(response.headers.values("record-route"))),
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
        )

    # -- inside the dialog ------------------------------------------------------
    def confirm(self, response: Response) -> None:
        """A 2xx arrived for the dialog's INVITE: confirmed, with its target and routes."""
        self.state = DialogState.CONFIRMED
        self.remote_target = _contact_uri(response, self.remote_target)
        routes = response.headers.values("record-route")
        if routes:
            self.route_set = list(reversed(routes))

    def refresh_target(self, message: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE or their 2xx) may move the Contact."""
        self.remote_target = _contact_uri(message, self.remote_target)

    def check_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: a CSeq lower than the last one seen is out of order (answer 500).

        ACK and CANCEL reuse the INVITE's number and are not counted."""
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and number <= self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def new_request(
        self,
        method: str,
        *,
        sent_by: str,
        transport: str,
        contact: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Request:
        """A request inside the dialog (§12.2.1.1). ``cseq`` is for an ACK of a 2xx,
        which reuses its INVITE's number; otherwise the local counter goes up."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{transport.upper()} {sent_by};branch={new_branch()};rport")
        for route in self.route_set:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        headers.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra or ():
            headers.add(name, value)
        if content_type is not None and body:
            headers.add("Content-Type", content_type)
        return Request(method, self.remote_target, headers, body)


def dialog_id_of_request(request: Request) -> DialogId | None:
    """The id of the dialog a request received belongs to, from our side (§12.2.2):
    our tag is in To, theirs in From. None outside a dialog."""
    to_tag = request.to.tag
    from_tag = request.from_.tag
    if to_tag is None or from_tag is None:
        return None
    return (request.call_id, to_tag, from_tag)


def dialog_id_of_response(response: Response) -> DialogId | None:
    """The id of the dialog a response received belongs to: our tag is in From."""
    to_tag = response.to.tag
    from_tag = response.from_.tag
    if to_tag is None or from_tag is None:
        return None
    return (response.call_id, from_tag, to_tag)


def _without_tag(name_addr: NameAddr) -> str:
    params = {k: v for k, v in name_addr.params.items() if k != "tag"}
    return str(NameAddr(name_addr.uri, name_addr.display, params, name_addr.raw_uri))


def _contact_uri(message: Request | Response, default: str | None = None) -> str:
    values = message.headers.values("contact")
    if not values:
        if default is not None:
            return default
        raise SipParseError(400, "a dialog needs a Contact")
    contact = parse_name_addr(values[0])
    return contact.raw_uri or str(contact.uri)
