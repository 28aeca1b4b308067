"""The registrar's binding logic (RFC 3261 §10.3, RFC 5626 instance ids), pure.

Authentication and the mapping from a To URI to an address-of-record happen
before :meth:`Registrar.process`; persistence happens after it, from the
``changes`` it returns, so the caller can commit them in one transaction
before the 200 goes out.

Retransmissions: REGISTER is answered statelessly (RFC 3261 §8.2.7), as
Kamailio's registrar does, so a retransmitted request reaches this code
again. A request with the same Call-ID and CSeq as the one that last wrote
a binding is taken as that retransmission: nothing changes, and the answer
is regenerated from the current bindings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from email.utils import formatdate
from functools import lru_cache

from sipstack.errors import SipParseError
from sipstack.grammar import unquote
from sipstack.headers import NameAddr
from sipstack.message import Request, Response, make_response
from sipstack.peer import Peer
from sipstack.uri import SipUri, parse_uri


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str
    contact: str  # the contact URI as the phone wrote it, without <>
    expires_at: float
    call_id: str
    cseq: int
    source: Peer  # where the REGISTER came from: reach the phone here (NAT)
    q: float | None = None
    user_agent: str = ""
    instance_id: str | None = None
    reg_id: int | None = None
    key: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Upsert:
    binding: Binding


@dataclass(frozen=True, slots=True)
class Delete:
    aor: str
    contact: str


Change = Upsert | Delete


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    response: Response
    changes: tuple[Change, ...]
    evicted: tuple[Binding, ...] = ()


def binding_key(uri: SipUri | str, instance_id: str | None, reg_id: int | None) -> str:
    """Which bindings are "the same contact" (RFC 3261 §10.3 step 7, RFC 5626 §6)."""
    if instance_id is not None:
        return f"instance:{instance_id}:{reg_id if reg_id is not None else ''}"
    if isinstance(uri, str):
        return f"uri:{uri}"
    port = uri.port if uri.port is not None else ""
    return f"uri:{uri.scheme}:{uri.user_unescaped or ''}@{uri.host_bare}:{port};{uri.transport}"


class Registrar:
    def __init__(self, config: RegistrarConfig | None = None) -> None:
        self.config = config or RegistrarConfig()
        self._bindings: dict[str, dict[str, Binding]] = {}

    # -- queries --------------------------------------------------------------------
    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of an AOR, best q first (RFC 3261 §16.6 ordering input)."""
        found = [b for b in self._bindings.get(aor, {}).values() if b.expires_at > now]
        found.sort(key=lambda b: -(b.q if b.q is not None else 1.0))
        return found

    def all_bindings(self, now: float) -> list[Binding]:
        return [b for per in self._bindings.values() for b in per.values() if b.expires_at > now]

    def count(self) -> int:
        return sum(len(per) for per in self._bindings.values())

    def load(self, bindings: list[Binding], now: float) -> None:
        """Restore bindings saved before a restart, dropping expired ones."""
        for b in bindings:
            if b.expires_at > now:
                key = b.key or _key_of(b)
                self._bindings.setdefault(b.aor, {})[key] = replace(b, key=key)

    def expire(self, now: float) -> list[Change]:
        changes: list[Change] = []
        for aor in list(self._bindings):
            per = self._bindings[aor]
            for key in [k for k, b in per.items() if b.expires_at <= now]:
                changes.append(Delete(aor, per.pop(key).contact))
            if not per:
                del self._bindings[aor]
        return changes

    def drop_aor(self, aor: str) -> list[Change]:
        """Forget an AOR whose user left the site."""
        return [Delete(aor, b.contact) for b in self._bindings.pop(aor, {}).values()]

    def aors(self) -> list[str]:
        return list(self._bindings)

    # -- REGISTER -------------------------------------------------------------------
    def process(
        self, request: Request, aor: str, source: Peer, now: float, *, to_tag: str | None = None
    ) -> RegisterOutcome:
        """Apply one authenticated REGISTER for ``aor`` (RFC 3261 §10.3 steps 6-8).

        All or nothing: a request that fails (400, 423, 500) changes no binding.
        """
        cfg = self.config
        header_expires = _header_expires(request)
        stored = self._bindings.get(aor, {})
        # Bindings past their expiry no longer exist (§10.3: they are removed when they
        # expire); the sweeper may just not have got to them yet. Their rows go too.
        current = {k: b for k, b in stored.items() if b.expires_at > now}
        changes: list[Change] = [
            Delete(aor, b.contact) for k, b in stored.items() if k not in current
        ]
        call_id = request.call_id
        if not _is_storable(call_id):
            raise SipParseError(400, "malformed Call-ID")
        cseq = request.cseq.number

        if request.is_wildcard_contact:
            if len(request.headers.values("contact")) != 1 or header_expires != 0:
                return self._reply(
                    request, aor, now, to_tag=to_tag, status=400,
                    reason="Wildcard Contact needs Expires: 0",
                )
            # §10.3 step 6: every binding goes, unless one has this Call-ID and a CSeq
            # not below the request's; then the whole request fails and nothing goes.
            for b in current.values():
                if b.call_id == call_id and cseq <= b.cseq:
                    return self._reply(
                        request, aor, now, to_tag=to_tag, status=500, reason="Out of order CSeq"
                    )
            changes.extend(Delete(aor, b.contact) for b in current.values())
            self._bindings.pop(aor, None)
            return self._reply(request, aor, now, to_tag=to_tag, status=200, changes=changes)

        wanted: list[tuple[str, NameAddr, int, str | None, int | None]] = []
        for contact in request.contacts:
            if not isinstance(contact.uri, SipUri):
                return self._reply(
                    request, aor, now, to_tag=to_tag, status=400,
                    reason="Contact must be a SIP URI",
                )
            if not _is_storable(contact.raw_uri):
                raise SipParseError(400, "malformed Contact URI")
            expires = _contact_expires(contact, header_expires, cfg.default_expires)
            if 0 < expires < cfg.min_expires:
                response = make_response(request, 423, to_tag=to_tag)
                response.headers.add("Min-Expires", str(cfg.min_expires))
                return RegisterOutcome(response, ())
            expires = min(expires, cfg.max_expires)
            instance, reg_id = _outbound_ids(contact)
            key = binding_key(contact.uri, instance, reg_id)
            wanted.append((key, contact, expires, instance, reg_id))

        updated = dict(current)
        touched: set[str] = set()
        user_agent = _display_text(request.headers.get("user-agent") or "")
        for key, contact, expires, instance, reg_id in wanted:
            old = updated.get(key)
            if old is not None and old.call_id == call_id:
                if cseq < old.cseq:
                    return self._reply(
                        request, aor, now, to_tag=to_tag, status=500, reason="Out of order CSeq"
                    )
                if cseq == old.cseq:
                    continue  # retransmission: already applied
            if expires == 0:
                if old is not None:
                    del updated[key]
                    changes.append(Delete(aor, old.contact))
                continue
            q = _q_value(contact)
            binding = Binding(
                aor=aor,
                contact=contact.raw_uri,
                expires_at=now + expires,
                call_id=call_id,
                cseq=cseq,
                source=source,
                q=q,
                user_agent=user_agent,
                instance_id=instance,
                reg_id=reg_id,
                key=key,
            )
            if old is not None and old.contact != binding.contact:
                changes.append(Delete(aor, old.contact))
            updated[key] = binding
            touched.add(key)
            changes.append(Upsert(binding))

        evicted: list[Binding] = []
        while len(updated) > cfg.max_contacts:
            # A phone that rebooted behind a new NAT mapping must still get in, so a
            # binding this request did not refresh goes first, and of those the one
            # closest to expiry (the least recently refreshed, as expiries are alike).
            key = min(updated, key=lambda k: (k in touched, updated[k].expires_at))
            gone = updated.pop(key)
            evicted.append(gone)
            changes = [c for c in changes if not (isinstance(c, Upsert) and c.binding is gone)]
            if key in current:
                stale = Delete(aor, current[key].contact)
                if stale not in changes:
                    changes.append(stale)
        if updated:
            self._bindings[aor] = updated
        else:
            self._bindings.pop(aor, None)
        outcome = self._reply(request, aor, now, to_tag=to_tag, status=200, changes=changes)
        return RegisterOutcome(outcome.response, outcome.changes, tuple(evicted))

    def _reply(
        self,
        request: Request,
        aor: str,
        now: float,
        *,
        to_tag: str | None,
        status: int,
        reason: str | None = None,
        changes: list[Change] | None = None,
    ) -> RegisterOutcome:
        response = make_response(request, status, reason, to_tag=to_tag)
        if status == 200:
            for b in self.lookup(aor, now):
                remaining = max(0, int(b.expires_at - now + 0.5))
                extra = "" if b.q is None else f";q={b.q:g}"
                if b.instance_id is not None:
                    extra += f';+sip.instance="<{b.instance_id}>"'
                    if b.reg_id is not None:
                        extra += f";reg-id={b.reg_id}"
                response.headers.add("Contact", f"<{b.contact}>;expires={remaining}{extra}")
            response.headers.add("Date", _http_date(int(now)))
        return RegisterOutcome(response, tuple(changes or ()))


@lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    return formatdate(second, usegmt=True)


def _key_of(b: Binding) -> str:
    try:
        uri = parse_uri(b.contact)
    except SipParseError:
        return binding_key(b.contact, b.instance_id, b.reg_id)
    return binding_key(uri if isinstance(uri, SipUri) else b.contact, b.instance_id, b.reg_id)


def _is_storable(text: str) -> bool:
    """Printable ASCII: what the grammar of Call-ID and URIs allows, and safe to store.

    Header text is decoded with ``surrogateescape``; a lone surrogate cannot be encoded
    as UTF-8 and would fail the store's whole batch of binding changes.
    """
    return text.isascii() and text.isprintable()


def _display_text(text: str, limit: int = 256) -> str:
    """Informational header text (User-Agent) made valid UTF-8 and bounded."""
    raw = text.encode("utf-8", "surrogateescape")[: limit * 4]
    return raw.decode("utf-8", "replace")[:limit]


def _is_digits(text: str) -> bool:
    # str.isdigit() also takes "²" and other digits that int() refuses.
    return text.isascii() and text.isdigit()


def _header_expires(request: Request) -> int | None:
    value = request.headers.get("expires")
    if value is None:
        return None
    value = value.strip()
    if not _is_digits(value):
        raise SipParseError(400, "malformed Expires")
    return min(int(value), 2**32 - 1)


def _contact_expires(contact: NameAddr, header: int | None, default: int) -> int:
    raw = contact.params.get("expires")
    if raw is not None:
        raw = raw.strip()
        if not _is_digits(raw):
            raise SipParseError(400, "malformed expires parameter")
        return min(int(raw), 2**32 - 1)
    return header if header is not None else default


def _q_value(contact: NameAddr) -> float | None:
    raw = contact.params.get("q")
    if raw is None:
        return None
    try:
        q = float(raw)
    except ValueError:
        raise SipParseError(400, "malformed q parameter") from None
    if not 0.0 <= q <= 1.0:
        raise SipParseError(400, "q out of range")
    return q


def _outbound_ids(contact: NameAddr) -> tuple[str | None, int | None]:
    raw_instance = contact.params.get("+sip.instance")
    instance = unquote(raw_instance).strip("<>") if raw_instance else None
    if instance is not None and not _is_storable(instance):
        raise SipParseError(400, "malformed +sip.instance")
    raw_reg = contact.params.get("reg-id")
    if raw_reg is None:
        return instance, None
    # RFC 5626 §4.2: reg-id is 1 to 2**31-1.
    if not _is_digits(raw_reg) or len(raw_reg) > 10 or not 0 < int(raw_reg) < 2**31:
        raise SipParseError(400, "malformed reg-id")
    return instance, int(raw_reg)
