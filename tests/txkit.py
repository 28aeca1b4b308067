"""Helpers for the transaction-layer tests: messages from bytes, a virtual clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sipstack.message import Request, Response, make_response, parse_message
from sipstack.peer import Peer
from sipstack.transaction import TransactionLayer

UDP = Peer("udp", "192.0.2.10", 5060)
TCP = Peer("tcp", "192.0.2.10", 5060)
PHONE_UDP = Peer("udp", "192.0.2.20", 5062)
PHONE_TCP = Peer("tcp", "192.0.2.20", 40000)

_counter = itertools.count(1)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = None,
    sent_by: str = "192.0.2.20:5062",
    transport: str = "UDP",
    uri: str = "sip:1001@pbx.example",
    call_id: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    from_tag: str | None = "ft1",
    to_tag: str | None = None,
    routes: tuple[str, ...] = (),
    extra_vias: tuple[str, ...] = (),
    via_params: str = "",
    body: bytes = b"",
) -> Request:
    """A request as a phone would send it; ``branch=""`` means no branch param."""
    n = next(_counter)
    if branch is None:
        branch = f"z9hG4bK-t{n}"
    call_id = call_id or f"call-{n}@test"
    bpart = f";branch={branch}" if branch else ""
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/{transport} {sent_by}{bpart}{via_params}"]
    lines += [f"Via: {v}" for v in extra_vias]
    lines += [f"Route: {r}" for r in routes]
    lines += [
        "Max-Forwards: 70",
        f"From: \"Alice\" <sip:1000@pbx.example>{';tag=' + from_tag if from_tag else ''}",
        f"To: <sip:1001@pbx.example>{';tag=' + to_tag if to_tag else ''}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        f"Content-Length: {len(body)}",
    ]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def same(req: Request) -> Request:
    """A retransmission: the same bytes parsed again."""
    msg = parse_message(req.to_bytes())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, *, to_tag: str | None = "tt1") -> Response:
    """A response to ``req`` as its peer would send it (parsed from bytes)."""
    tag = None if status == 100 else to_tag
    msg = parse_message(make_response(req, status, to_tag=tag).to_bytes())
    assert isinstance(msg, Response)
    return msg


def ack_for(invite: Request, resp: Response, *, branch: str | None = None) -> Request:
    """The ACK a UAC sends: same branch for non-2xx, a new one when ``branch`` is given."""
    via = invite.headers.values("via")[0]
    if branch is not None:
        via = via.replace(invite.top_via.branch or "", branch)
    lines = [
        f"ACK {invite.uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('from')}",
        f"To: {resp.headers.get('to')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number} ACK",
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


@dataclass
class Sent:
    at: float
    line: str
    data: bytes
    peer: Peer


@dataclass
class Clock:
    """Drives a layer on virtual time, recording what it sends."""

    layer: TransactionLayer
    now: float = 0.0
    sent: list[Sent] = field(default_factory=list)

    def drain(self) -> list[Sent]:
        out = [Sent(self.now, first_line(d), d, p) for d, p in self.layer.datagrams_to_send()]
        self.sent.extend(out)
        return out

    def advance(self, until: float) -> None:
        """Fire every timer due up to ``until``, at its own deadline."""
        while True:
            self.drain()
            deadline = self.layer.get_timer()
            if deadline is None or deadline > until:
                break
            self.now = deadline
            self.layer.handle_timer(deadline)
        self.now = max(self.now, until)
        self.drain()

    def times(self, line_prefix: str) -> list[float]:
        return [s.at for s in self.sent if s.line.startswith(line_prefix)]
