"""What a UAS checks in a parsed request before acting on it (RFC 3261 §8.2).

:func:`sipstack.message.parse_message` frames a message and checks only what
every element needs to answer at all; the rest of the header views are parsed
on demand. This module is the next gate: it reads those views (a malformed one
is a 400), then applies the §8.2 rules in the RFC's order (method, Request-URI
scheme, Require, body), so a request that passes can be handed to the
transaction user without it tripping over a malformed header later.

It is a pure function: no I/O, no clock, no configuration beyond its
arguments. It answers with the status and reason phrase to send, or ``None``
when the request is acceptable. The caller builds the response (for 420 it
adds an Unsupported header from :func:`unsupported_requirements`) and never
answers an ACK (RFC 3261 §17.2.3: ACK gets no response).
"""

from __future__ import annotations

from sipstack.errors import SipParseError
from sipstack.grammar import split_commas
from sipstack.headers import SINGLE_HEADERS
from sipstack.message import REASON_PHRASES, Request
from sipstack.uri import SipUri

Problem = tuple[int, str]

# RFC 3261 methods plus the extensions a PBX meets from desk phones.
DEFAULT_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY",
        "REFER", "INFO", "UPDATE", "PRACK", "MESSAGE", "PUBLISH",
    }
)
DEFAULT_SCHEMES = frozenset({"sip", "sips", "tel"})
DEFAULT_CONTENT_TYPES = frozenset(
    {
        "application/sdp",
        "application/dtmf-relay",
        "application/simple-message-summary",
        "application/pidf+xml",
        "message/sipfrag",
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
    }
)
DEFAULT_CONTENT_ENCODINGS = frozenset({"identity"})
# What edgepbx puts in the body of a response to INVITE: an SDP answer.
DEFAULT_RESPONSE_TYPES = frozenset({"application/sdp"})

# RFC 3261 §8.2.2.3: Require is not applied to these (a CANCEL must not carry it,
# and an ACK cannot be refused).
_NO_REQUIRE_CHECK = frozenset({"ACK", "CANCEL"})


def _problem(status: int) -> Problem:
    return status, REASON_PHRASES.get(status, "Bad Request")


def check_request(
    req: Request,
    *,
    supported: frozenset[str] = frozenset(),
    methods: frozenset[str] = DEFAULT_METHODS,
    schemes: frozenset[str] = DEFAULT_SCHEMES,
    content_types: frozenset[str] = DEFAULT_CONTENT_TYPES,
    content_encodings: frozenset[str] = DEFAULT_CONTENT_ENCODINGS,
    response_types: frozenset[str] = DEFAULT_RESPONSE_TYPES,
) -> Problem | None:
    """The ``(status, reason)`` a UAS must answer ``req`` with, or ``None`` if it may proceed.

    ``supported`` holds the option tags this UAS implements (compared without
    regard to case). The other sets default to what edgepbx handles.
    """
    # Every header view the parser left lazy, and every list split here, can
    # turn out malformed: that is a 400 (or the status its parser chose, such
    # as 414), found here rather than deep inside the transaction user.
    try:
        problem = _malformed(req)
        if problem is not None:
            return problem
        # §8.2.1: an unknown method is a 501 even when other fields disagree with
        # it (RFC 4475 §3.1.2.18 prefers 501 for an unknown method with a CSeq mismatch).
        if req.method not in methods:
            return _problem(501)
        problem = _semantics(req)
        if problem is not None:
            return problem
        # §8.2.2.1: a Request-URI scheme we do not serve.
        if req.request_uri.scheme not in schemes:
            return _problem(416)
        # §16.3 step 3 (edgepbx relays requests as a B2BUA): no hops left. OPTIONS
        # is answered by the element itself instead (§11, RFC 4475 §3.3.11).
        if req.max_forwards == 0 and req.method != "OPTIONS":
            return _problem(483)
        # §8.2.2.3
        if req.method not in _NO_REQUIRE_CHECK and unsupported_requirements(req, supported):
            return _problem(420)
        # §8.2.3
        if req.body and not _body_acceptable(req, content_types, content_encodings):
            return _problem(415)
        # §21.4.7: the answer to an INVITE is an SDP body the sender must accept.
        if req.method == "INVITE" and not _accepts_any(req, response_types):
            return _problem(406)
        return None
    except SipParseError as exc:
        return exc.status, exc.reason


def unsupported_requirements(req: Request, supported: frozenset[str]) -> tuple[str, ...]:
    """The option tags of Require that are not in ``supported``, as written, in order.

    These go in the Unsupported header of the 420 (RFC 3261 §8.2.2.3). Raises
    SipParseError if Require is malformed (check_request has answered 400 then).
    """
    known = {tag.lower() for tag in supported}
    return tuple(tag for tag in req.headers.values("require") if tag.lower() not in known)


def _malformed(req: Request) -> Problem | None:
    """Mandatory header fields present, single, and parseable (RFC 3261 §8.1.1)."""
    # parse_message already insists on Via, From, To, Call-ID and CSeq; reading
    # each view parses it, and a SipParseError is the answer.
    _ = req.vias, req.from_, req.to, req.cseq, req.max_forwards
    if not req.call_id.strip():
        return _problem(400)
    return None


def _semantics(req: Request) -> Problem | None:
    """The 400s that need the method and the parsed views (RFC 3261 §8.2, §10.3, §19.1.1)."""
    # One pass over the header list: this runs for every request on the hot path.
    seen: set[str] = set()
    for key, _name, _value in req.headers.items():
        if key in SINGLE_HEADERS:
            if key in seen:
                return _problem(400)
            seen.add(key)
    if req.cseq.method != req.method:
        return _problem(400)
    uri = req.request_uri
    # §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
    if isinstance(uri, SipUri) and uri.headers:
        return _problem(400)
    if not _contacts_valid(req):
        return _problem(400)
    # §10.2: the address-of-record in To of a REGISTER is a SIP or SIPS URI
    # (RFC 4475 §3.3.4: a registrar answers an isbn: To with 400).
    if req.method == "REGISTER" and not isinstance(req.to.uri, SipUri):
        return _problem(400)
    return None


def _contacts_valid(req: Request) -> bool:
    if req.is_wildcard_contact:
        # §10.2.2: the wildcard only in REGISTER, and then alone.
        return req.method == "REGISTER" and len(req.headers.values("contact")) == 1
    _ = req.contacts  # parsed once, cached for the registrar; raises SipParseError if bad
    return True


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip(" \t").lower()


def _body_acceptable(
    req: Request, content_types: frozenset[str], content_encodings: frozenset[str]
) -> bool:
    ctype = req.headers.get("content-type")
    # §7.4.1: a body must say what it is; a UAS cannot process an unlabelled one.
    if ctype is None or _media_type(ctype) not in content_types:
        return False
    encodings = {enc.strip(" \t").lower() for enc in req.headers.values("content-encoding")}
    return encodings <= content_encodings


def _accepts_any(req: Request, response_types: frozenset[str]) -> bool:
    lines = req.headers.get_all("accept")
    if not lines:
        return True  # §20.1: no Accept means application/sdp
    offered: list[str] = []
    for line in lines:
        offered.extend(split_commas(line))
    for item in offered:
        media = _media_type(item)
        for wanted in response_types:
            if media in (wanted, "*/*", wanted.split("/", 1)[0] + "/*"):
                return True
    # An empty Accept means no body at all is acceptable (§20.1).
    return False
