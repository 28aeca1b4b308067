"""The transport-independent front door of the SIP core, sans-I/O.

Bytes come in with the peer they came from and ``now``; datagrams to send and
events for the transaction user come out. Here bad input becomes a reply or a
counted drop, never an exception, and RFC 3581 ``received``/``rport`` are
stamped on the top Via so replies and later requests reach phones behind NAT.

REGISTER and OPTIONS are answered statelessly (RFC 3261 §8.2.7): both are
idempotent, and keeping 32 s of transaction state for each of thousands of
registrations per second would cost memory for nothing. Other requests go to
the transaction user as :class:`IncomingRequest` events.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sipstack.errors import SipParseError
from sipstack.headers import COMPACT, Headers
from sipstack.message import Request, Response, make_response, parse_message, stateless_tag
from sipstack.peer import Peer
from sipstack.validate import DEFAULT_METHODS, unsupported_requirements

log = logging.getLogger(__name__)

RegisterHandler = Callable[[Request, Peer, float], Response]
RequestCheck = Callable[[Request], "tuple[int, str] | None"]


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class IncomingResponse:
    response: Response
    peer: Peer


Event = IncomingRequest | IncomingResponse


@dataclass(slots=True)
class EndpointStats:
    received: int = 0
    parse_errors: int = 0
    dropped: int = 0
    keepalives: int = 0
    retransmissions: int = 0  # answered again from RecentReplies
    internal_errors: int = 0  # a bug, not bad input: logged with a traceback
    # Keyed by method; methods outside DEFAULT_METHODS share OTHER_METHODS so that a
    # stream of made-up method names cannot grow this without bound.
    by_method: dict[str, int] = field(default_factory=dict)


OTHER_METHODS = "other"


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    server_header: str = "edgepbx"
    allow: tuple[str, ...] = ("REGISTER", "OPTIONS")
    supported: tuple[str, ...] = ("path", "outbound")
    accept: tuple[str, ...] = ("application/sdp",)
    max_size: int = 65535
    max_headers: int = 128


class Endpoint:
    def __init__(
        self,
        config: EndpointConfig,
        *,
        on_register: RegisterHandler | None = None,
        check_request: RequestCheck | None = None,
    ) -> None:
        self.config = config
        self.on_register = on_register
        self.check_request = check_request
        self.stats = EndpointStats()
        self._outbox: list[tuple[bytes, Peer]] = []
        self._recent = RecentReplies()
        self._last_internal_log = float("-inf")
        self._events: list[Event] = []
        self._allow = ", ".join(config.allow)
        self._supported = ", ".join(config.supported)

    # -- output -------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def respond(self, request: Request, response: Response, peer: Peer) -> None:
        """Send a response where RFC 3261 §18.2.2 / RFC 3581 say it goes."""
        if response.headers.get("server") is None:
            response.headers.add("Server", self.config.server_header)
        self._outbox.append((response.to_bytes(), response_destination(request, peer)))

    # -- input --------------------------------------------------------------------
    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """One datagram, or one frame cut by the stream framer. Never raises."""
        self.stats.received += 1
        if data[:1] in _BLANK_START and not data.strip(b"\r\n \t"):
            self.stats.keepalives += 1  # a CRLF keep-alive on UDP: nothing to answer
            return
        try:
            message = parse_message(
                data, max_size=self.config.max_size, max_headers=self.config.max_headers
            )
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._reply_to_garbage(data, exc, peer)
            return
        except Exception:  # noqa: BLE001 - a parser bug must not take the listener down
            self._internal_error("parsing", peer, now)
            self._reply_to_garbage(data, SipParseError(400, "malformed message"), peer)
            return
        if isinstance(message, Response):
            self._events.append(IncomingResponse(message, peer))
            return
        try:
            self._handle_request(message, peer, now)
        except SipParseError as exc:
            # A header the handler needed turned out malformed.
            self.stats.parse_errors += 1
            self._safe_error_reply(message, exc.status, exc.reason, exc.detail, peer, now=now)
        except Exception:  # noqa: BLE001 - one bad request must not stop the others
            self._internal_error(message.method[:32], peer, now)
            self._safe_error_reply(message, 500, "Server Internal Error", "", peer, now=now)

    def _safe_error_reply(
        self, request: Request, status: int, reason: str, detail: str, peer: Peer, *, now: float
    ) -> None:
        try:
            self._error_reply(request, status, reason, detail, peer)
        except Exception:  # noqa: BLE001 - could not even answer: drop it
            self._internal_error("error reply", peer, now)
            self.stats.dropped += 1

    def _internal_error(self, where: str, peer: Peer, now: float) -> None:
        self.stats.internal_errors += 1
        # A packet that trips a bug can be sent a thousand times a second: one
        # traceback a second is enough to find it, and the count says how many.
        if now - self._last_internal_log < 1.0:
            return
        self._last_internal_log = now
        log.exception(
            "internal error handling a message",
            extra={"peer": str(peer), "at": where, "total": self.stats.internal_errors},
        )

    def _handle_request(self, request: Request, peer: Peer, now: float) -> None:
        method = request.method
        counts = self.stats.by_method
        counted = method if method in DEFAULT_METHODS else OTHER_METHODS
        counts[counted] = counts.get(counted, 0) + 1
        key = _replay_key(request, peer) if method in _STATELESS else None
        if key is not None:
            cached = self._recent.get(key, now)
            if cached is not None:
                # A retransmission: §17.2.2 says it gets the same answer, byte for byte.
                self.stats.retransmissions += 1
                self._outbox.append(cached)
                return
        stamp_via(request, peer)
        # A REGISTER handler authenticates first and inspects after (RFC 3261 §8.2).
        registering = method == "REGISTER" and self.on_register is not None
        if self.check_request is not None and method != "ACK" and not registering:
            problem = self.check_request(request)
            if problem is not None:
                self._error_reply(request, problem[0], problem[1], "", peer)
                return
        if registering:
            assert self.on_register is not None
            self.respond(request, self.on_register(request, peer, now), peer)
        elif method == "OPTIONS" and _is_for_us(request):
            self.respond(request, self.options_response(request), peer)
        else:
            self._events.append(IncomingRequest(request, peer))
            return
        if key is not None:
            self._recent.put(key, now, self._outbox[-1])

    def options_response(self, request: Request) -> Response:
        # §8.2.6.2: every response but a 100 carries a To tag.
        response = make_response(request, 200, to_tag=stateless_tag(request))
        response.headers.add("Allow", self._allow)
        response.headers.add("Accept", ", ".join(self.config.accept))
        response.headers.add("Supported", self._supported)
        return response

    def _error_reply(
        self, request: Request, status: int, reason: str, detail: str, peer: Peer
    ) -> None:
        response = self.error_response(request, status, reason, detail)
        if response is None:
            self.stats.dropped += 1
        else:
            self.respond(request, response, peer)

    def error_response(
        self, request: Request, status: int, reason: str, detail: str = ""
    ) -> Response | None:
        """The refusal of a request (None for an ACK, which is never answered).

        It may be the very header we need that is bad, so this copes with that.
        """
        if request.method == "ACK":
            return None
        try:
            response = make_response(request, status, reason, to_tag=stateless_tag(request))
        except (SipParseError, ValueError):
            # The To header itself is malformed: copy it as it is, without a tag.
            response = make_response(request, status, reason)
        if detail:
            response.headers.add("Warning", f'399 edgepbx "{_warning_text(detail)}"')
        if status == 405:
            response.headers.add("Allow", self._allow)
        elif status == 415:
            response.headers.add("Accept", ", ".join(self.config.accept))
        elif status == 420:
            try:
                unsupported = unsupported_requirements(request, frozenset(self.config.supported))
            except SipParseError:
                unsupported = ()
            if unsupported:
                response.headers.add("Unsupported", ", ".join(unsupported))
        return response

    def inspect(self, request: Request) -> Response | None:
        """RFC 3261 §8.2 method and header inspection: the refusal, or None to go on."""
        if self.check_request is None:
            return None
        problem = self.check_request(request)
        if problem is None:
            return None
        return self.error_response(request, problem[0], problem[1])

    def _reply_to_garbage(self, data: bytes, error: SipParseError, peer: Peer) -> None:
        """Answer an unparseable request if its routing headers survive; else drop it."""
        response = salvage_error_response(data, error)
        if response is None:
            self.stats.dropped += 1
            log.debug(
                "dropped unparseable datagram", extra={"peer": str(peer), "why": error.detail}
            )
            return
        response.headers.add("Server", self.config.server_header)
        self._outbox.append((response.to_bytes(), peer))


_BLANK_START = frozenset({b"", b"\r", b"\n", b" ", b"\t"})


_STATELESS = frozenset({"REGISTER", "OPTIONS"})
ReplayKey = tuple[str, str, int | None, str, int]


def _replay_key(request: Request, peer: Peer) -> ReplayKey | None:
    """RFC 3261 §17.2.3 request identity, for UDP requests with an RFC 3261 branch."""
    if peer.reliable:
        return None  # a reliable transport does not retransmit
    via = request.top_via
    branch = via.branch
    if branch is None or not branch.startswith("z9hG4bK"):
        return None
    return branch, via.host, via.port, request.method, request.cseq.number


class RecentReplies:
    """Stateless answers of the last few seconds, so a retransmission gets the same bytes.

    This is what a non-INVITE server transaction in the Completed state
    would give, at the cost of one dict entry instead of a transaction for
    Timer J (32 s): SIP clients retransmit at 0.5, 1 and 2 s, and by 4 s a
    client that still has no answer has a problem this cache will not fix.
    Bounded: the oldest entries go first.
    """

    def __init__(self, ttl: float = 4.0, max_entries: int = 8192) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[ReplayKey, tuple[float, tuple[bytes, Peer]]] = {}
        # (expiry, key) in insertion order, which is expiry order: one ttl for all.
        self._order: deque[tuple[float, ReplayKey]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: ReplayKey, now: float) -> tuple[bytes, Peer] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(self, key: ReplayKey, now: float, reply: tuple[bytes, Peer]) -> None:
        entries, order = self._entries, self._order
        while order and (order[0][0] <= now or len(entries) >= self.max_entries):
            expires, old = order.popleft()
            entry = entries.get(old)
            if entry is not None and entry[0] == expires:
                del entries[old]
        expires = now + self.ttl
        entries[key] = (expires, reply)
        order.append((expires, key))


def _is_for_us(request: Request) -> bool:
    # OPTIONS inside a dialog (with a To tag) belongs to the transaction user.
    return request.to.tag is None


def _warning_text(detail: str) -> str:
    return "".join(c for c in detail if c.isprintable() and c not in '"\\')[:120]


def stamp_via(request: Request, peer: Peer) -> None:
    """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via."""
    via = request.top_via
    if "rport" in via.params:
        # RFC 3581 §4: with rport, received is added even when it equals sent-by.
        via.params["rport"] = str(peer.port)
        via.params["received"] = peer.host
    elif not _same_ip(via.host, peer.host):
        via.params["received"] = peer.host
    else:
        return
    request.headers.replace_first_value("via", str(via))


def _same_ip(host: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def response_destination(request: Request, peer: Peer) -> Peer:
    """Where a response goes: the connection on streams, else received/rport (§18.2.2)."""
    if peer.reliable:
        return peer
    try:
        via = request.top_via
    except (SipParseError, ValueError):
        return peer  # no usable Via: the source address is all we know
    if via.params.get("rport"):
        return peer
    port = via.port if via.port is not None else 5060
    return peer if port == peer.port else Peer(peer.transport, peer.host, port)


_ROUTING = frozenset({"via", "from", "to", "call-id", "cseq"})
_ROUTING_NAMES = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
_SALVAGE_SCAN = 8192  # of a header block that never ended
_FOLD_RE = re.compile(r"\r\n[ \t]+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def salvage_error_response(data: bytes, error: SipParseError) -> Response | None:
    """Build an error response from a request the strict parser refused.

    Only possible when it is a request and its Via, From, To, Call-ID and CSeq
    lines can be copied as they are. Responses and junk are dropped, and so is a
    request whose routing lines hold control characters: copied into our answer,
    a stray CR or LF would let the sender write header lines of its choosing.
    ``data`` may be a header block cut short (a stream that hit its cap): then the
    last, possibly partial, line is not used.
    """
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head = data[:end]
    else:
        head = data[:_SALVAGE_SCAN]
        head = head[: head.rfind(b"\r\n")] if b"\r\n" in head else b""
    text = head.decode("utf-8", "surrogateescape")
    text = _FOLD_RE.sub(" ", text)
    lines = text.split("\r\n")
    if not lines or lines[0].startswith("SIP/") or " SIP/" not in lines[0].upper():
        return None
    if lines[0].split(" ", 1)[0] == "ACK":
        return None
    items: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        key = COMPACT.get(key, key)
        if colon and key in _ROUTING:
            if key != "via" and key in seen:
                return None
            value = value.strip(" \t")
            if not value or _CONTROL_RE.search(value):
                return None
            seen.add(key)
            items.append((key, _ROUTING_NAMES[key], value))
    if seen != _ROUTING:
        return None
    response = Response(error.status, error.reason, Headers(items))
    response.headers.add("Warning", f'399 edgepbx "{_warning_text(error.detail)}"')
    return response
