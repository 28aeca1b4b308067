"""Message waiting indication: RFC 3842 ``message-summary`` over RFC 6665 subscriptions.

Driven by call control (which hands it every SUBSCRIBE for the package and every
in-dialog request of a subscription) and by the voicemail side, which calls
:meth:`Mwi.set_counts` when a mailbox changes. Sans-I/O like the engine: it sends
through the engine's transaction layer and keeps its timers on the engine's heap.

Subscriptions (phones that SUBSCRIBE):

- The SUBSCRIBE is digest-authenticated like an INVITE (407), and the user may watch
  only their own mailbox: the Request-URI user (or the To user when the Request-URI
  has none) must be their extension or their username, else 403.
- 200 with our To tag, Contact and the granted Expires, then at once a NOTIFY with
  ``Subscription-State: active;expires=N`` and the summary (§4.2.1.1). Expires
  below ``min_expires`` gets 423 with Min-Expires; above ``max_expires`` it is cut
  down. Expires: 0 is a fetch (initial) or an unsubscribe (refresh): 200, then a
  NOTIFY with ``terminated;reason=timeout``, and no subscription is kept.
- A subscription not refreshed by its expiry gets a last NOTIFY (terminated,
  reason=timeout) and is dropped. A NOTIFY answered 481 or 408, or not answered at
  all (timer F, transport error), drops it too (§4.2.2).
- Subscriptions live in memory only: after a restart a phone's refresh gets 481 and
  the phone subscribes again (RFC 6665 §4.1.2.2), receiving the current state.

Unsolicited MWI (phones that never subscribe): every registered contact of the
mailbox's extension that has no active subscription (same flow or same Contact URI)
gets an out-of-dialog NOTIFY with ``Event: message-summary``. RFC 3842 does not
define this; we do what Asterisk's res_pjsip_mwi does (its unsolicited NOTIFY leaves
the subscription state unset, which pjsip writes as ``Subscription-State:
terminated``): no dialog, ``Subscription-State: terminated`` with no reason (a
reason such as ``timeout`` would invite the phone to subscribe, RFC 6665 §4.1.3).
It can be turned off per site or per extension (:class:`MwiConfig`).

Where other PBXs lose MWI, and what is done here:

- A restart: the counts are kept in the store (``user_state``, key ``"mwi"``), and
  :meth:`Mwi.start` re-sends every mailbox with new messages to its registered
  contacts.
- A phone that reboots, or comes back after its binding lapsed, has lost (or
  missed) the state: :meth:`Mwi.registered` re-sends the mailbox's state to that
  contact when its binding is new, has a new Call-ID (a reboot), or had expired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agent.calls.env import Contact
from agent.calls.ids import new_tag
from agent.calls.timers import Timer
from sipstack.dialog import Dialog, DialogId
from sipstack.errors import SipParseError
from sipstack.message import Request, Response, make_response
from sipstack.peer import Peer
from sipstack.transaction import ServerTxKey, TransactionError

if TYPE_CHECKING:
    from agent.calls.engine import CallControl

log = logging.getLogger(__name__)

EVENT = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"
STATE_KEY = "mwi"  # the store's user_state key
_GONE = frozenset({408, 481})


@dataclass(frozen=True, slots=True)
class Counts:
    """A mailbox's voice messages, as RFC 3842 §5.2 counts them."""

    new: int = 0
    old: int = 0
    urgent_new: int = 0
    urgent_old: int = 0

    @property
    def waiting(self) -> bool:
        return self.new > 0

    def as_json(self) -> dict[str, int]:
        return {"new": self.new, "old": self.old, "urgent_new": self.urgent_new,
                "urgent_old": self.urgent_old}

    @classmethod
    def from_json(cls, value: Any) -> Counts | None:
        if not isinstance(value, dict):
            return None
        try:
            numbers = [int(value.get(k, 0)) for k in ("new", "old", "urgent_new", "urgent_old")]
        except (TypeError, ValueError):
            return None
        if any(n < 0 for n in numbers):
            return None
        return cls(*numbers)


@dataclass(slots=True)
class MwiConfig:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600  # RFC 3842 §4 suggests an hour
    unsolicited: bool = True  # NOTIFY phones that do not subscribe
    unsolicited_off: frozenset[str] = frozenset()  # extensions excepted from it


class StateStore(Protocol):
    """The part of agent.store.Store that MWI uses."""

    def user_state(self) -> dict[str, dict[str, Any]]: ...

    def set_user_state(self, extension: str, key: str, value: Any, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class BindingSeen:
    """A registered contact as the registrar reports it (see :meth:`Mwi.registered`)."""

    extension: str
    contact: str
    call_id: str
    expires_at: float


@dataclass(eq=False, slots=True)
class Subscription:
    mailbox: str
    dialog: Dialog
    peer: Peer
    event: str  # the Event header as the subscriber wrote it (with any id parameter)
    expires_at: float
    timer: Timer | None = None
    notifies: int = 0


@dataclass(slots=True)
class MwiStats:
    subscribes: int = 0
    refused: int = 0
    notifies: int = 0
    unsolicited: int = 0
    dropped: int = 0
    store_errors: int = 0


class Mwi:
    def __init__(
        self, calls: CallControl, store: StateStore | None = None,
        config: MwiConfig | None = None,
    ) -> None:
        self.calls = calls
        self.store = store
        self.config = config or MwiConfig()
        self.stats = MwiStats()
        self.subscriptions: dict[DialogId, Subscription] = {}
        self._counts: dict[str, Counts] = {}
        self._bindings: dict[tuple[str, str], tuple[str, float]] = {}
        self._load()
        calls.mwi = self

    # -- the voicemail side -----------------------------------------------------------
    def set_counts(
        self, extension: str, new: int, old: int, now: float, *,
        urgent_new: int = 0, urgent_old: int = 0,
    ) -> None:
        """The mailbox of ``extension`` changed: keep the counts (in the store, so a
        restart knows them) and tell every subscription of the mailbox, and every
        registered contact without one (unsolicited MWI)."""
        counts = Counts(max(0, new), max(0, old), max(0, urgent_new), max(0, urgent_old))
        if self._counts.get(extension) != counts:
            self._counts[extension] = counts
            self._save(extension, counts, now)
        self._announce(extension, now)

    def counts(self, extension: str) -> Counts:
        return self._counts.get(extension, Counts())

    # -- the agent's lifecycle ---------------------------------------------------------
    def start(self, now: float, bindings: Iterable[BindingSeen] = ()) -> int:
        """After a restart: remember the bindings loaded from the store (so their next
        refresh is not taken for a new phone), and send every mailbox with new
        messages to its registered contacts. Returns the NOTIFYs sent."""
        for b in bindings:
            self._bindings[(b.extension, b.contact)] = (b.call_id, b.expires_at)
        sent = 0
        for extension, counts in sorted(self._counts.items()):
            if counts.waiting:
                sent += self._announce(extension, now)
        return sent

    def registered(self, binding: BindingSeen, now: float) -> bool:
        """A REGISTER wrote ``binding``. A new contact, a new Call-ID (the phone
        rebooted) or a binding that had lapsed gets the mailbox's state again; a
        plain refresh does not. True when something was sent."""
        key = (binding.extension, binding.contact)
        previous = self._bindings.get(key)
        self._bindings[key] = (binding.call_id, binding.expires_at)
        fresh = previous is None or previous[0] != binding.call_id or previous[1] <= now
        if not fresh or binding.extension not in self._counts:
            return False
        contact = next((c for c in self.calls.env.contacts(binding.extension, now)
                        if c.uri == binding.contact), None)
        if contact is None:
            return False
        return self._send_to_contact(binding.extension, contact, now)

    def unregistered(self, extension: str, contact: str) -> None:
        self._bindings.pop((extension, contact), None)

    # -- requests from call control -----------------------------------------------------
    @staticmethod
    def handles(request: Request) -> bool:
        """Whether an out-of-dialog SUBSCRIBE is for this package (else call control
        answers 489)."""
        return _event_type(request) == EVENT

    def subscribe(self, key: ServerTxKey, request: Request, peer: Peer, now: float) -> None:
        """A SUBSCRIBE outside any dialog: a new subscription (or a fetch)."""
        cc = self.calls
        user = cc._authenticate(key, request, now)
        if user is None:
            return
        mailbox = _target_user(request)
        if user.auto_registration or not user.extension or not self._owns(user.extension,
                                                                          mailbox):
            self.stats.refused += 1
            log.info("mwi subscription refused", extra={"extension": user.extension,
                                                        "mailbox": (mailbox or "")[:64]})
            cc._reply(key, request, 403, now)
            return
        if not _acceptable(request):
            cc._reply(key, request, 406, now, extra=[("Accept", CONTENT_TYPE)])
            return
        expires = self._granted(key, request, now)
        if expires is None:
            return
        tag = new_tag()
        contact = cc._contact(peer)
        ours = make_response(request, 200, to_tag=tag)
        ours.headers.add("Contact", contact)
        try:
            dialog = Dialog.as_uas(request, ours, peer)
        except SipParseError as exc:
            cc._reply(key, request, exc.status, now, reason=exc.detail)
            return
        cc._reply(key, request, 200, now, to_tag=tag, contact=contact,
                  extra=[("Expires", str(expires))])
        sub = Subscription(mailbox=user.extension, dialog=dialog, peer=peer,
                           event=request.headers.get("event") or EVENT,
                           expires_at=now + expires)
        self.stats.subscribes += 1
        if expires == 0:
            self._notify(sub, now, terminated=True)  # a fetch (RFC 6665 §4.4.3)
            return
        self.subscriptions[dialog.id] = sub
        self._arm(sub)
        self._notify(sub, now)

    def in_dialog(
        self, key: ServerTxKey, request: Request, dialog_id: DialogId | None, peer: Peer,
        now: float,
    ) -> bool:
        """A request inside a dialog call control does not know: ours if it belongs to a
        subscription (then answered here, True)."""
        sub = self.subscriptions.get(dialog_id) if dialog_id is not None else None
        if sub is None:
            return False
        cc = self.calls
        if not sub.dialog.check_remote_cseq(request):
            cc._reply(key, request, 500, now, reason="CSeq Out Of Order")
            return True
        method = request.method
        if method == "OPTIONS":
            cc._reply(key, request, 200, now)
            return True
        if method != "SUBSCRIBE":
            cc._reply(key, request, 405, now, extra=[("Allow", "SUBSCRIBE, OPTIONS")])
            return True
        if _event_type(request) != EVENT:
            cc._reply(key, request, 489, now, extra=[("Allow-Events", EVENT)])
            return True
        expires = self._granted(key, request, now)
        if expires is None:
            return True
        sub.dialog.refresh_target(request)
        sub.peer = peer
        cc._reply(key, request, 200, now, contact=cc._contact(peer),
                  extra=[("Expires", str(expires))])
        if expires == 0:
            self._drop(sub)
            self._notify(sub, now, terminated=True)
            return True
        sub.expires_at = now + expires
        self._arm(sub)
        self._notify(sub, now)
        return True

    # -- inside -------------------------------------------------------------------------
    def _owns(self, extension: str, mailbox: str | None) -> bool:
        if not mailbox:
            return False
        if mailbox == extension:
            return True
        env = self.calls.env
        named = env.user_for_username(mailbox)
        return named is not None and named.extension == extension

    def _granted(self, key: ServerTxKey, request: Request, now: float) -> int | None:
        """The Expires to grant, or None after refusing (400, 423)."""
        cc, cfg = self.calls, self.config
        text = request.headers.get("expires")
        if text is None:
            return cfg.default_expires
        text = text.strip()
        if not text.isdigit() or len(text) > 10:
            cc._reply(key, request, 400, now, reason="Bad Expires")
            return None
        expires = int(text)
        if 0 < expires < cfg.min_expires:
            cc._reply(key, request, 423, now, extra=[("Min-Expires", str(cfg.min_expires))])
            return None
        return min(expires, cfg.max_expires)

    def _arm(self, sub: Subscription) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
        sub.timer = self.calls.timers.at(sub.expires_at, lambda t: self._expired(sub, t))

    def _expired(self, sub: Subscription, now: float) -> None:
        if self.subscriptions.get(sub.dialog.id) is not sub:
            return
        log.info("mwi subscription expired", extra={"mailbox": sub.mailbox})
        self._drop(sub)
        self._notify(sub, now, terminated=True)

    def _drop(self, sub: Subscription) -> None:
        if self.subscriptions.get(sub.dialog.id) is sub:
            del self.subscriptions[sub.dialog.id]
            self.stats.dropped += 1
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None

    def _body(self, extension: str) -> bytes:
        counts = self.counts(extension)
        return (
            f"Messages-Waiting: {'yes' if counts.waiting else 'no'}\r\n"
            f"Message-Account: sip:{extension}@{self.calls.env.realm}\r\n"
            f"Voice-Message: {counts.new}/{counts.old}"
            f" ({counts.urgent_new}/{counts.urgent_old})\r\n"
        ).encode()

    def _notify(self, sub: Subscription, now: float, *, terminated: bool = False) -> bool:
        cc = self.calls
        if terminated:
            state = "terminated;reason=timeout"
        else:
            state = f"active;expires={max(0, int(sub.expires_at - now))}"
        host, port = cc.env.local_address(sub.peer)
        out = sub.dialog.new_request(
            "NOTIFY", sent_by=_hostport(host, port), transport=sub.peer.transport,
            contact=cc._contact(sub.peer), body=self._body(sub.mailbox),
            content_type=CONTENT_TYPE,
            extra=[("Event", sub.event), ("Subscription-State", state),
                   ("User-Agent", cc.config.server_header)],
        )

        def answered(response: Response | None, status: int, t: float) -> None:
            if status < 200:
                return
            if status in _GONE or response is None:
                # The subscriber forgot the dialog, or is gone (RFC 6665 §4.2.2).
                if self.subscriptions.get(sub.dialog.id) is sub:
                    log.info("mwi subscription dropped", extra={"mailbox": sub.mailbox,
                                                                "status": status})
                self._drop(sub)

        try:
            cc.send_request(out, sub.peer, now, answered)
        except TransactionError as exc:
            log.info("mwi NOTIFY not sent", extra={"mailbox": sub.mailbox, "why": str(exc)})
            return False
        sub.notifies += 1
        self.stats.notifies += 1
        return True

    def _subscription_of(self, extension: str, contact: Contact) -> Subscription | None:
        for sub in self.subscriptions.values():
            if sub.mailbox == extension and (sub.peer == contact.peer
                                             or sub.dialog.remote_target == contact.uri):
                return sub
        return None

    def _unsolicited_allowed(self, extension: str) -> bool:
        return self.config.unsolicited and extension not in self.config.unsolicited_off

    def _announce(self, extension: str, now: float) -> int:
        """The mailbox's state to each subscription and to each registered contact
        without one. Returns the NOTIFYs sent."""
        sent = 0
        for sub in [s for s in self.subscriptions.values() if s.mailbox == extension]:
            sent += self._notify(sub, now)
        if self._unsolicited_allowed(extension):
            for contact in self.calls.env.contacts(extension, now):
                if self._subscription_of(extension, contact) is None:
                    sent += self._unsolicited(extension, contact, now)
        return sent

    def _send_to_contact(self, extension: str, contact: Contact, now: float) -> bool:
        sub = self._subscription_of(extension, contact)
        if sub is not None:
            return self._notify(sub, now)
        if self._unsolicited_allowed(extension):
            return self._unsolicited(extension, contact, now)
        return False

    def _unsolicited(self, extension: str, contact: Contact, now: float) -> bool:
        def answered(response: Response | None, status: int, t: float) -> None:
            if status >= 300:
                log.debug("unsolicited mwi refused", extra={"extension": extension,
                                                            "status": status})

        try:
            self.calls.notify_out_of_dialog(
                contact.uri, contact.peer, now, to=f"<sip:{extension}@{self.calls.env.realm}>",
                event=EVENT, handler=answered, body=self._body(extension),
                content_type=CONTENT_TYPE, subscription_state="terminated",
            )
        except TransactionError as exc:
            log.info("unsolicited mwi not sent", extra={"extension": extension,
                                                        "why": str(exc)})
            return False
        self.stats.unsolicited += 1
        return True

    # -- the store ----------------------------------------------------------------------
    def _load(self) -> None:
        if self.store is None:
            return
        try:
            state = self.store.user_state()
        except Exception:
            self.stats.store_errors += 1
            log.exception("could not load mwi state")
            return
        for extension, keys in state.items():
            counts = Counts.from_json(keys.get(STATE_KEY))
            if counts is not None:
                self._counts[extension] = counts

    def _save(self, extension: str, counts: Counts, now: float) -> None:
        if self.store is None:
            return
        try:
            self.store.set_user_state(extension, STATE_KEY, counts.as_json(), now)
        except Exception:
            # The phones are still told; only a restart before the next change loses it.
            self.stats.store_errors += 1
            log.exception("could not save mwi state", extra={"extension": extension})

    def status(self) -> dict[str, Any]:
        return {
            "subscriptions": len(self.subscriptions),
            "mailboxes_waiting": sum(1 for c in self._counts.values() if c.waiting),
            **{name: getattr(self.stats, name) for name in MwiStats.__dataclass_fields__},
        }


def _event_type(request: Request) -> str:
    value = request.headers.get("event") or ""
    return value.split(";", 1)[0].strip().lower()


def _target_user(request: Request) -> str | None:
    """The mailbox a SUBSCRIBE names: the Request-URI user, else the To user."""
    user = getattr(request.request_uri, "user", None)
    if not user:
        user = getattr(request.to.uri, "user", None)
    return user.split(";", 1)[0] if user else None


def _acceptable(request: Request) -> bool:
    accepts = [v.split(";", 1)[0].strip().lower() for v in request.headers.values("accept")]
    if not accepts:
        return True
    return any(a in (CONTENT_TYPE, "application/*", "*/*") for a in accepts)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
