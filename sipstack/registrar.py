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
from sipstack.headers import NameAddr, parse_name_addr
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
        cfg = self.config
        header_expires = _header_expires(request)
        current = self._bindings.get(aor, {})
        call_id = request.call_id
        cseq = request.cseq.number

        if request.is_wildcard_contact:
            if len(request.headers.values("contact")) != 1 or header_expires != 0:
                return self._reply(request, aor, now, to_tag, 400, "Wildcard Contact needs Expires: 0")
            changes: list[Change] = []
            for key, b in list(current.items()):
                if b.call_id == call_id and cseq < b.cseq:
                    return self._reply(request, aor, now, to_tag, 500, "Out of order CSeq")
                if b.call_id == call_id and cseq == b.cseq:
                    continue  # retransmission of the request that wrote it
                del current[key]
                changes.append(Delete(aor, b.contact))
            return self._reply(request, aor, now, to_tag, 200, None, changes)

        wanted: list[tuple[str, NameAddr, int]] = []
        for contact in request.contacts:
            if not isinstance(contact.uri, SipUri):
                return self._reply(request, aor, now, to_tag, 400, "Contact must be a SIP URI")
            expires = _contact_expires(contact, header_expires, cfg.default_expires)
            if 0 < expires < cfg.min_expires:
                response = make_response(request, 423, to_tag=to_tag)
                response.headers.add("Min-Expires", str(cfg.min_expires))
                return RegisterOutcome(response, ())
            expires = min(expires, cfg.max_expires)
            instance, reg_id = _outbound_ids(contact)
            wanted.append((binding_key(contact.uri, instance, reg_id), contact, expires))

        changes = []
        updated = dict(current)
        user_agent = request.headers.get("user-agent") or ""
        for key, contact, expires in wanted:
            old = updated.get(key)
            if old is not None and old.call_id == call_id:
                if cseq < old.cseq:
                    return self._reply(request, aor, now, to_tag, 500, "Out of order CSeq")
                if cseq == old.cseq:
                    continue  # retransmission: already applied
            if expires == 0:
                if old is not None:
                    del updated[key]
                    changes.append(Delete(aor, old.contact))
                continue
            instance, reg_id = _outbound_ids(contact)
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
            changes.append(Upsert(binding))

        evicted: list[Binding] = []
        live = {k: b for k, b in updated.items() if b.expires_at > now}
        while len(live) > cfg.max_contacts:
            # A phone that rebooted behind a new NAT mapping must still get in:
            # the binding closest to expiry (the least recently refreshed) goes.
            key = min(live, key=lambda k: live[k].expires_at)
            gone = live.pop(key)
            evicted.append(gone)
            changes = [c for c in changes if not (isinstance(c, Upsert) and c.binding is gone)]
            if key in current:
                changes.append(Delete(aor, gone.contact))
        if live:
            self._bindings[aor] = live
        else:
            self._bindings.pop(aor, None)
        outcome = self._reply(request, aor, now, to_tag, 200, None, changes)
        return RegisterOutcome(outcome.response, outcome.changes, tuple(evicted))

    def _reply(
        self,
        request: Request,
        aor: str,
        now: float,
        to_tag: str | None,
        status: int,
        reason: str | None,
        changes: list[Change] | None = None,
    ) -> RegisterOutcome:
        response = make_response(request, status, reason, to_tag=to_tag)
        if status == 200:
            for b in self.lookup(aor, now):
                remaining = max(0, int(b.expires_at - now + 0.5))
                extra = "" if b.q is None else f";q={b.q:g}"
                if b.instance_id is not None:
                    extra += f';+sip.instance="{b.instance_id}"'
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


def _header_expires(request: Request) -> int | None:
    value = request.headers.get("expires")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise SipParseError(400, "malformed Expires")
    return min(int(value), 2**32 - 1)


def _contact_expires(contact: NameAddr, header: int | None, default: int) -> int:
    raw = contact.params.get("expires")
    if raw is not None:
        raw = raw.strip()
        if not raw.isdigit():
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
    raw_reg = contact.params.get("reg-id")
    reg_id = int(raw_reg) if raw_reg is not None and raw_reg.isdigit() else None
    return instance, reg_id
