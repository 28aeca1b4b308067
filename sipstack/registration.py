"""REGISTER end to end: digest authentication, authorization, then the registrar.

The no-enumeration rule lives here: until a request carries a valid digest
response, a REGISTER for a user who does not exist gets exactly the answer a
REGISTER for a real user gets (status, reason, headers and challenge shape),
and the work done to reach it is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from sipstack.digest import DigestServer, Verdict, parse_credentials
from sipstack.message import Request, Response, make_response, stateless_tag
from sipstack.peer import Peer
from sipstack.registrar import Change, Registrar
from sipstack.uri import SipUri

log = logging.getLogger(__name__)


Inspect = Callable[[Request], "Response | None"]


class Directory(Protocol):
    """What the registration code needs to know about the site's users."""

    def aor_for_target(self, user: str) -> str | None:
        """The AOR a To/Request-URI user part (username or extension) names."""

    def aor_for_username(self, username: str) -> str | None:
        """The AOR whose digest username this is."""

    def ha1(self, username: str, algorithm: str) -> str | None:
        """The stored digest HA1 for a username, or None when there is no such user."""


class RegistrationHandler:
    def __init__(
        self,
        registrar: Registrar,
        digest: DigestServer,
        directory: Directory,
        *,
        inspect: Inspect | None = None,
    ) -> None:
        self.registrar = registrar
        self.digest = digest
        self.directory = directory
        # RFC 3261 §8.2: a UAS authenticates first, then inspects method and
        # headers. So an unauthenticated REGISTER is challenged without the
        # cost of a full inspection, and an authenticated one is inspected here
        # (the endpoint's Endpoint.inspect, which builds the refusal).
        self.inspect = inspect
        self.pending_changes: list[Change] = []
        self.failures = 0

    def take_changes(self) -> list[Change]:
        out, self.pending_changes = self.pending_changes, []
        return out

    def __call__(self, request: Request, peer: Peer, now: float) -> Response:
        tag = stateless_tag(request)
        creds = None
        for value in request.headers.get_all("authorization"):
            parsed = parse_credentials(value)
            if parsed is not None and parsed.realm == self.digest.realm:
                creds = parsed
                break
        if creds is None:
            return self._challenge(request, tag, now, stale=False)

        result = self.digest.verify(
            creds,
            method=request.method,
            ha1_lookup=self.directory.ha1,
            now=now,
            retransmission_key=f"{request.call_id}|{request.cseq.number}",
        )
        verdict = result.verdict
        if verdict is Verdict.OK and not _plausible_digest_uri(creds.uri):
            verdict = Verdict.INVALID
        if verdict is Verdict.STALE:
            return self._challenge(request, tag, now, stale=True)
        if verdict is not Verdict.OK:
            self.failures += 1
            log.info(
                "register auth failed",
                extra={"source": str(peer), "username": creds.username[:64], "why": result.reason},
            )
            return self._challenge(request, tag, now, stale=False)

        refusal = self.inspect(request) if self.inspect is not None else None
        if refusal is not None:
            return refusal
        aor = self.directory.aor_for_username(creds.username)
        to_uri = request.to.uri
        target = to_uri.user_unescaped if isinstance(to_uri, SipUri) else None
        if aor is None or target is None or self.directory.aor_for_target(target) != aor:
            # Authenticated, but not for this address-of-record (§10.3 step 4).
            return make_response(request, 403, "Not Allowed To Register This Address", to_tag=tag)
        outcome = self.registrar.process(request, aor, peer, now, to_tag=tag)
        self.pending_changes.extend(outcome.changes)
        for gone in outcome.evicted:
            log.info(
                "binding evicted at contact limit", extra={"aor": aor, "contact": gone.contact}
            )
        return outcome.response

    def _challenge(self, request: Request, tag: str, now: float, *, stale: bool) -> Response:
        response = make_response(request, 401, to_tag=tag)
        for value in self.digest.challenge(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response


def _plausible_digest_uri(digest_uri: str) -> bool:
    """The digest ``uri`` must be a SIP URI, not necessarily the Request-URI.

    RFC 3261 §22.4 wants the Request-URI there, but SIPp and several phones put
    the server's address instead, and Kamailio and Asterisk accept that. The
    response still binds the URI, the method and a fresh nonce-count, so a
    captured answer cannot be replayed.
    """
    return digest_uri[:5].lower().startswith(("sip:", "sips:"))
