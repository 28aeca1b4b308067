"""Requests the transaction layer (or its TU) derives from another request."""

from __future__ import annotations

import secrets

from sipstack.headers import Headers
from sipstack.message import Request, Response

MAGIC_COOKIE = "z9hG4bK"


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def _first_via(request: Request) -> str:
    # The top Via element exactly as written (not re-serialized).
    return request.headers.values("via")[0]


def _derived(
    original: Request, method: str, to_value: str, via: str | None = None
) -> Request:
    cseq = original.cseq
    headers = Headers()
    headers.add("Via", via if via is not None else _first_via(original))
    for route in original.headers.get_all("route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", original.headers.get("from") or "")
    headers.add("To", to_value)
    headers.add("Call-ID", original.call_id)
    headers.add("CSeq", f"{cseq.number} {method}")
    return Request(method, original.uri, headers, b"", original.version)


def make_ack(invite: Request, response: Response) -> Request:
    """The ACK of an INVITE client transaction for a 300-699 response (§17.1.1.3).

    Request-URI, Call-ID, From, CSeq number and Route from the INVITE; To from the
    response (so it carries the response's tag); one Via, equal to the INVITE's top
    Via (so the same branch). The ACK for a 2xx is the dialog's business (§13.2.2.4).
    """
    to_value = response.headers.get("to") or invite.headers.get("to") or ""
    return _derived(invite, "ACK", to_value)


def make_cancel(invite: Request) -> Request:
    """A CANCEL for a pending INVITE (RFC 3261 §9.1).

    Request-URI, Call-ID, To, From, CSeq number (method CANCEL), Route and the one
    top Via (same branch) of the INVITE; no body, no Require/Proxy-Require. Send it
    with ``TransactionLayer.send_request`` to the same peer as the INVITE, once a
    provisional response has arrived.
    """
    return _derived(invite, "CANCEL", invite.headers.get("to") or "")
