"""Typed errors of the protocol core.

A parse error carries the status a UAS should answer with, so the transport
adapter can turn bad input into a reply (or a logged drop) without guessing.
"""

from __future__ import annotations

REASONS: dict[int, str] = {
    400: "Bad Request",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    505: "Version Not Supported",
    513: "Message Too Large",
}


class SipParseError(Exception):
    """Input that is not an acceptable SIP message, with the status to answer."""

    def __init__(self, status: int, detail: str, reason: str | None = None) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.reason = reason or REASONS.get(status, "Bad Request")
        self.detail = detail
