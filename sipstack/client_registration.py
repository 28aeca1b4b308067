"""Outbound registration (RFC 3261 §10.2): the PBX registering to a carrier, sans-I/O.

One :class:`RegistrationClient` keeps one binding (our Contact at the carrier's
registrar) alive. It never touches a socket or a clock: every entry point takes
``now`` (the same clock throughout), requests to send are drained with
:meth:`RegistrationClient.take_requests`, and the owner re-arms one timer from
:meth:`RegistrationClient.get_timer`.

The owner sends each request as a non-INVITE client transaction and reports back:
every response of that transaction to :meth:`~RegistrationClient.on_response`, a
transaction timeout or transport error to :meth:`~RegistrationClient.on_failure`.

Rules, in one place:

* **Identity.** One Call-ID and one From tag for the client's life; the CSeq goes up
  by one per request; every request has a fresh ``z9hG4bK`` branch. At most one
  request is outstanding (§10.2: no new REGISTER before the previous one is final).
  Responses that are not for the outstanding request (Call-ID, CSeq number or method
  differ), and responses while nothing is outstanding, are ignored.
* **Attempts.** An *attempt* is one logical registration (first REGISTER, a refresh,
  a retry, an unregistration). Within an attempt a 401/407 is answered once with
  ``Authorization``/``Proxy-Authorization``; a second challenge of the same kind means
  the credentials were refused (FAILED), unless it says ``stale=true``: that is
  answered once more with the new nonce. The challenge answered last is reused
  pre-emptively (next nonce-count) in the next attempt, saving a round trip; a
  challenge to such a pre-emptive answer counts as the attempt's first.
* **Lifetime.** On 2xx the granted lifetime is the ``expires`` parameter of the
  Contact that matches ours (§19.1.4 comparison; failing that, the only Contact
  returned), else the ``Expires`` header, else what we asked for. It counts from the
  moment the request was sent. A refresh is sent when half of it has passed, but
  never sooner than :data:`MIN_REFRESH_INTERVAL` after the 2xx:
  ``refresh_at = max(sent_at + granted / 2, now + MIN_REFRESH_INTERVAL)``.
* **423.** The requested lifetime is raised to ``Min-Expires`` (for the client's life)
  and the REGISTER is resent at once. A 423 without a larger, well-formed
  ``Min-Expires`` is a failure.
* **Failures** (other 3xx-6xx, timeouts, transport errors, unusable challenges):
  state FAILED and a retry after ``retry_min * 2**(failures-1)`` seconds, capped at
  ``retry_max`` (a larger ``Retry-After`` from the registrar wins, up to one hour).
  ``failures`` counts consecutive failed attempts and resets on success. There is no
  jitter: the delays are deterministic.
* **Guard.** If no final response and no :meth:`on_failure` arrive within
  ``request_timeout`` (longer than Timer F) the attempt fails on its own, so a lost
  report can never wedge the client.
* **Stop.** :meth:`stop` sends ``Expires: 0`` for our Contact (not ``*``) when a
  binding may exist, and ends in STOPPED whatever the answer. If a request is
  outstanding, it waits for its final response first.

Nothing from the network can make this module raise: malformed headers, unusable
challenges and odd status codes all end in FAILED with a readable ``last_error``.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

from sipstack.digest import DigestClient, DigestError, parse_challenge
from sipstack.errors import SipParseError
from sipstack.grammar import is_number, is_token
from sipstack.headers import Headers, NameAddr, parse_name_addr, parse_via
from sipstack.message import REASON_PHRASES, Request, Response
from sipstack.transaction.build import new_branch
from sipstack.uri import SipUri, parse_uri

__all__ = [
    "MIN_REFRESH_INTERVAL",
    "RegistrationClient",
    "RegistrationConfig",
    "RegistrationState",
]

MIN_REFRESH_INTERVAL = 5.0
"""Seconds: the earliest a refresh follows the 2xx it refreshes."""

MAX_RETRY_AFTER = 3600.0
"""Seconds: a registrar's Retry-After is honoured up to this."""

MAX_EXPIRES = 2**32 - 1  # RFC 3261 delta-seconds
_MAX_423_PER_ATTEMPT = 3


@dataclass(frozen=True, kw_only=True)
class RegistrationConfig:
    """What to register where. Raises ValueError when inconsistent (config, not network)."""

    registrar_uri: str  # Request-URI, e.g. "sip:carrier.example:5060"
    aor: str  # To and From, e.g. "sip:user@carrier.example"
    contact: str  # our Contact URI, e.g. "sip:user@192.0.2.10:5060;transport=tcp"
    username: str | None = None  # digest username; None: no authentication
    password: str | None = None
    expires: int = 600  # lifetime asked for
    local_sent_by: str  # Via sent-by, e.g. "192.0.2.10:5060"
    transport: str = "UDP"  # Via transport
    user_agent: str = "edgepbx"
    retry_min: float = 5.0  # first retry delay after a failure
    retry_max: float = 300.0  # cap of the doubling retry delay
    request_timeout: float = 40.0  # guard when neither response nor failure is reported

    def __post_init__(self) -> None:
        for name in ("registrar_uri", "aor"):
            value = getattr(self, name)
            try:
                uri = parse_uri(value)
            except SipParseError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if not isinstance(uri, SipUri):
                raise ValueError(f"{name} must be a sip: or sips: URI, not {value!r}")
        try:
            contact = parse_name_addr(_contact_value(self.contact))
        except SipParseError as exc:
            raise ValueError(f"contact: {exc}") from None
        if not isinstance(contact.uri, SipUri):
            raise ValueError(f"contact must be a sip: or sips: URI, not {self.contact!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if not 0 < self.expires <= MAX_EXPIRES:
            raise ValueError("expires must be positive")
        if not is_token(self.transport):
            raise ValueError(f"bad transport {self.transport!r}")
        if not self.local_sent_by or any(c in self.local_sent_by for c in " \r\n,"):
            raise ValueError(f"bad local_sent_by {self.local_sent_by!r}")
        if any(c in self.user_agent for c in "\r\n"):
            raise ValueError("user_agent contains a line break")
        if not 0 < self.retry_min <= self.retry_max:
            raise ValueError("need 0 < retry_min <= retry_max")
        if not self.request_timeout > 0:
            raise ValueError("request_timeout must be positive")


class RegistrationState(enum.Enum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # an attempt is under way and no binding is known
    REGISTERED = "registered"  # bound (a refresh may be under way)
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    UNREGISTERING = "unregistering"  # stop() in progress
    STOPPED = "stopped"


@dataclass(slots=True)
class _Pending:
    """The outstanding request."""

    cseq: int
    expires: int  # what it asked for (0: unregistration)
    sent_at: float
    deadline: float


class RegistrationClient:
    """Keeps one outbound registration alive. See the module docstring."""

    def __init__(self, config: RegistrationConfig, *, call_id: str | None = None) -> None:
        self.config = config
        self.call_id = call_id if call_id is not None else secrets.token_hex(16)
        if not self.call_id or any(c in self.call_id for c in " \t\r\n"):
            raise ValueError(f"bad call_id {self.call_id!r}")
        self._from_tag = secrets.token_hex(8)
        self._contact_value = _contact_value(config.contact)
        self._contact = parse_name_addr(self._contact_value)
        self._digest: DigestClient | None = None
        if config.username is not None and config.password is not None:
            self._digest = DigestClient(config.username, config.password)

        self._state = RegistrationState.IDLE
        self._expires = config.expires  # raised by 423
        self._cseq = 0
        self._outbox: list[Request] = []
        self._pending: _Pending | None = None
        self._next_attempt_at: float | None = None
        self._expires_at: float | None = None  # public: while REGISTERED
        self._bound_until: float | None = None  # a binding may exist until then
        self._stopping = False
        self._unregister_sent = False
        self._granted: int | None = None
        self._public: str | None = None  # received/rport of the last 2xx's Via

        # Credentials: auth header name -> challenge value answered last.
        self._auth: dict[str, str] = {}
        # Per attempt.
        self._answered: set[str] = set()
        self._stale_used = False
        self._too_brief = 0

        self.last_status: int | None = None
        self.last_error: str | None = None
        self.failures = 0

    # -- read-only views ---------------------------------------------------------
    @property
    def state(self) -> RegistrationState:
        return self._state

    @property
    def expires_at(self) -> float | None:
        """When the binding lapses unless refreshed (REGISTERED only), on the ``now`` clock."""
        return self._expires_at

    @property
    def next_attempt_at(self) -> float | None:
        """When the next refresh or retry is due (None while a request is outstanding)."""
        return self._next_attempt_at

    @property
    def requested_expires(self) -> int:
        """The lifetime the next REGISTER asks for (config, or raised by a 423)."""
        return self._expires

    @property
    def outstanding(self) -> bool:
        return self._pending is not None

    def status(self, now: float | None = None) -> dict[str, object]:
        """A JSON-friendly summary for ``edgepbx status``; ``now`` adds relative times."""
        out: dict[str, object] = {
            "state": self._state.value,
            "registrar": self.config.registrar_uri,
            "aor": self.config.aor,
            "contact": self.config.contact,
            "requested_expires": self._expires,
            "granted_expires": self._granted,
            "expires_at": self._expires_at,
            "next_attempt_at": self._next_attempt_at,
            "outstanding": self._pending is not None,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "failures": self.failures,
            "public_address": self._public,
            "call_id": self.call_id,
            "cseq": self._cseq,
        }
        if now is not None:
            out["expires_in"] = None if self._expires_at is None else self._expires_at - now
            out["next_attempt_in"] = (
                None if self._next_attempt_at is None else self._next_attempt_at - now
            )
        return out

    # -- commands ----------------------------------------------------------------
    def start(self, now: float) -> None:
        """Register now. Does nothing unless IDLE or STOPPED."""
        if self._state not in (RegistrationState.IDLE, RegistrationState.STOPPED):
            return
        self._stopping = False
        self._state = RegistrationState.REGISTERING
        self._begin_attempt(now)

    def stop(self, now: float) -> None:
        """Unregister (``Expires: 0``) if a binding may exist, then STOPPED."""
        if self._state in (RegistrationState.IDLE, RegistrationState.STOPPED):
            self._finish_stop()
            return
        if self._stopping:
            return
        self._stopping = True
        self._unregister_sent = False
        self._state = RegistrationState.UNREGISTERING
        self._expires_at = None
        self._next_attempt_at = None
        if self._pending is None:
            self._unregister_or_finish(now)
        # else: wait for its final response (§10.2), then unregister if needed.

    def take_requests(self) -> list[Request]:
        """REGISTERs to send, each as a new client transaction, in order."""
        out, self._outbox = self._outbox, []
        return out

    # -- input -------------------------------------------------------------------
    def on_response(self, response: Response, now: float) -> None:
        """A response of the transaction carrying our outstanding request."""
        pending = self._pending
        if pending is None or not self._is_ours(response, pending):
            return
        status = response.status
        if not isinstance(status, int) or not 100 <= status <= 699:
            return
        if status < 200:
            return
        self._pending = None
        self.last_status = status
        try:
            if 200 <= status < 300:
                self._on_success(response, pending, now)
            elif status in (401, 407):
                self._on_challenge(response, pending, now)
            elif status == 423:
                self._on_too_brief(response, now)
            else:
                reason = response.reason or REASON_PHRASES.get(status, "")
                self._fail(now, f"registrar answered {status} {reason}".rstrip(), response)
        except SipParseError as exc:  # a header we had to read was malformed
            self._fail(now, f"malformed {status} response: {exc}")

    def on_failure(self, now: float, reason: str, *, request: Request | None = None) -> None:
        """The outstanding request's transaction timed out or could not be sent.

        Pass ``request`` to have a report about an older request ignored.
        """
        pending = self._pending
        if pending is None:
            return
        if request is not None:
            try:
                if request.call_id != self.call_id or request.cseq.number != pending.cseq:
                    return
            except SipParseError:
                return
        self._pending = None
        self.last_status = None
        self._fail(now, f"no response: {reason}")

    # -- time --------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work to do, or None."""
        times = [
            t
            for t in (
                None if self._pending is None else self._pending.deadline,
                self._next_attempt_at,
                self._expires_at if self._state is RegistrationState.REGISTERED else None,
            )
            if t is not None
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        pending = self._pending
        if pending is not None and now >= pending.deadline:
            self._pending = None
            self.last_status = None
            self._fail(now, f"no final response within {self.config.request_timeout:g}s")
        if (
            self._state is RegistrationState.REGISTERED
            and self._expires_at is not None
            and now >= self._expires_at
        ):
            # Refresh still outstanding as the binding lapses.
            self._state = RegistrationState.REGISTERING
            self._expires_at = None
        due = self._next_attempt_at
        if self._pending is None and due is not None and now >= due:
            self._next_attempt_at = None
            if self._state is RegistrationState.FAILED:
                self._state = RegistrationState.REGISTERING
            self._begin_attempt(now)

    # -- internals ---------------------------------------------------------------
    def _is_ours(self, response: Response, pending: _Pending) -> bool:
        try:
            cseq = response.cseq
            return (
                response.call_id == self.call_id
                and cseq.number == pending.cseq
                and cseq.method == "REGISTER"
            )
        except SipParseError:
            return False

    def _may_be_bound(self, now: float) -> bool:
        return self._bound_until is not None and now < self._bound_until

    def _begin_attempt(self, now: float) -> None:
        self._answered = set()
        self._stale_used = False
        self._too_brief = 0
        self._send(now)

    def _send(self, now: float) -> None:
        cfg = self.config
        expires = 0 if self._stopping else self._expires
        auth: list[tuple[str, str]] = []
        if self._digest is not None:
            for header, challenge in list(self._auth.items()):
                try:
                    value = self._digest.authorize(challenge, "REGISTER", cfg.registrar_uri)
                except DigestError as exc:
                    del self._auth[header]
                    if header in self._answered:  # answering it now: say why we cannot
                        self._fail(now, f"cannot answer the digest challenge: {exc}")
                        return
                    continue  # a pre-emptive answer: just leave it out
                auth.append((header, value))
        if expires == 0:
            self._unregister_sent = True
        self._cseq += 1
        h = Headers()
        h.add(
            "Via",
            f"SIP/2.0/{cfg.transport.upper()} {cfg.local_sent_by};branch={new_branch()};rport",
        )
        h.add("Max-Forwards", "70")
        h.add("From", f"<{cfg.aor}>;tag={self._from_tag}")
        h.add("To", f"<{cfg.aor}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self._cseq} REGISTER")
        h.add("Contact", self._contact_value)
        h.add("Expires", str(expires))
        for header, value in auth:
            h.add(header, value)
        h.add("User-Agent", cfg.user_agent)
        self._outbox.append(Request("REGISTER", cfg.registrar_uri, h))
        self._pending = _Pending(self._cseq, expires, now, now + cfg.request_timeout)
        self._next_attempt_at = None

    def _on_success(self, response: Response, pending: _Pending, now: float) -> None:
        self.last_error = None
        self.failures = 0
        if pending.expires == 0:
            self._bound_until = None
            self._finish_stop()
            return
        self._public = _public_address(response)
        granted = self._granted_expires(response, pending.expires)
        if granted <= 0:
            # The registrar kept no binding for a refresh: count it as a failure.
            self._bound_until = None
            self._fail(now, "registrar granted no lifetime (expires=0)")
            return
        self._granted = granted
        self._bound_until = pending.sent_at + granted
        if self._stopping:
            self._unregister_or_finish(now)  # a binding exists now: remove it
            return
        self._state = RegistrationState.REGISTERED
        self._expires_at = self._bound_until
        self._next_attempt_at = max(pending.sent_at + granted / 2, now + MIN_REFRESH_INTERVAL)

    def _granted_expires(self, response: Response, asked: int) -> int:
        contacts: list[NameAddr] = []
        for value in response.headers.values("contact"):
            try:
                contacts.append(parse_name_addr(value))
            except SipParseError:
                continue
        mine = [c for c in contacts if self._contact.uri.equivalent(c.uri)]
        if not mine and len(contacts) == 1:
            mine = contacts  # registrars behind NAT fixing may rewrite our Contact
        for contact in mine:
            seconds = _delta_seconds(contact.params.get("expires"))
            if seconds is not None:
                return seconds
        in_header = _delta_seconds(response.headers.get("expires"))
        return in_header if in_header is not None else asked

    def _on_challenge(self, response: Response, pending: _Pending, now: float) -> None:
        status = response.status
        if self._stopping and pending.expires != 0:
            # stop() came while this REGISTER was out: it bound nothing. Keep the
            # challenge for the unregistration, if one is needed.
            self._answered.clear()
            self._remember_challenge(response)
            self._unregister_or_finish(now)
            return
        if self._digest is None:
            self._fail(now, f"{status}: registrar wants authentication, no credentials configured")
            return
        if status == 401:
            ask, answer = "www-authenticate", "Authorization"
        else:
            ask, answer = "proxy-authenticate", "Proxy-Authorization"
        chosen = self._digest.choose(response.headers.get_all(ask))
        challenge = None if chosen is None else parse_challenge(chosen)
        if chosen is None or challenge is None:
            self._fail(now, f"{status} without a usable digest challenge")
            return
        if answer in self._answered:
            if not challenge.stale or self._stale_used:
                self._auth.pop(answer, None)
                self._fail(now, f"{status}: credentials rejected (realm {challenge.realm!r})")
                return
            self._stale_used = True
        self._answered.add(answer)
        self._auth[answer] = chosen
        self._send(now)

    def _remember_challenge(self, response: Response) -> None:
        if self._digest is None:
            return
        ask, answer = (
            ("www-authenticate", "Authorization")
            if response.status == 401
            else ("proxy-authenticate", "Proxy-Authorization")
        )
        chosen = self._digest.choose(response.headers.get_all(ask))
        if chosen is not None:
            self._auth[answer] = chosen

    def _on_too_brief(self, response: Response, now: float) -> None:
        if self._stopping:
            self._unregister_or_finish(now)
            return
        minimum = _delta_seconds(response.headers.get("min-expires"))
        if minimum is None or minimum <= self._expires:
            self._fail(now, f"423 without a usable Min-Expires (asked {self._expires})")
            return
        self._too_brief += 1
        if self._too_brief > _MAX_423_PER_ATTEMPT:
            self._fail(now, "423 Interval Too Brief repeated")
            return
        self._expires = minimum
        self._send(now)

    def _fail(self, now: float, error: str, response: Response | None = None) -> None:
        self.last_error = error
        self._auth.clear()
        if self._stopping:
            self._unregister_or_finish(now)
            return
        self.failures += 1
        self._state = RegistrationState.FAILED
        self._expires_at = None
        delay = min(
            self.config.retry_min * 2.0 ** min(self.failures - 1, 40), self.config.retry_max
        )
        if response is not None:
            retry_after = _retry_after(response)
            if retry_after is not None:
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
        self._next_attempt_at = now + delay

    def _unregister_or_finish(self, now: float) -> None:
        """While stopping: send the one unregistration if a binding may exist, else stop."""
        if not self._unregister_sent and self._may_be_bound(now):
            self._begin_attempt(now)
        else:
            self._finish_stop()

    def _finish_stop(self) -> None:
        self._state = RegistrationState.STOPPED
        self._stopping = False
        self._pending = None
        self._next_attempt_at = None
        self._expires_at = None


def _contact_value(contact: str) -> str:
    text = contact.strip()
    return text if "<" in text else f"<{text}>"


def _delta_seconds(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not is_number(value) or len(value) > 10:
        return None
    number = int(value)
    return number if number <= MAX_EXPIRES else None


def _retry_after(response: Response) -> int | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    # Retry-After: delta-seconds [comment] *(;params)
    head = value.split(";", 1)[0].split("(", 1)[0]
    return _delta_seconds(head)


def _public_address(response: Response) -> str | None:
    """Our address as the registrar saw it (Via received/rport), if it said."""
    vias = response.headers.values("via")
    if not vias:
        return None
    try:
        via = parse_via(vias[0])
    except SipParseError:
        return None
    received = via.params.get("received")
    rport = via.params.get("rport")
    if not received and not rport:
        return None
    host = received or via.host
    port = rport if rport else (str(via.port) if via.port is not None else None)
    return host if port is None else f"{host}:{port}"
