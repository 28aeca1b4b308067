"""The sans-I/O transaction layer: RFC 3261 §17 (with RFC 6026) over the tables.

No sockets, no clock, no asyncio. The owner (one small asyncio adapter per
transport) does four things::

    layer.receive(parse_message(data), peer, now)        # bytes in
    for event in layer.events(): ...                     # to the TU
    for data, peer in layer.datagrams_to_send(): ...     # bytes out
    deadline = layer.get_timer()                         # re-arm one loop.call_at
    layer.handle_timer(now)                              # when it fires

Transaction-user API:

- ``send_request(request, peer, now) -> ClientTxKey``: start an INVITE or non-INVITE
  client transaction. The request needs a top Via with a z9hG4bK branch
  (``new_branch()``) and a CSeq whose method is the request's. It is serialized
  once; retransmissions reuse the bytes. A CANCEL (``make_cancel``) for a known
  INVITE also tells that INVITE transaction (it then times out 64*T1 later if no
  final response arrives, §9.1); sending it before a provisional response raises
  ``TransactionStateError``.
- ``send_response(key, response, now)``: a response of a server transaction.
- ``send_stateless(message, peer)``: bytes out with no transaction: the ACK for a
  2xx, a 503 under overload, a 2xx retransmission outside any transaction.
- ``transport_error(peer, now, key=None) -> int``: the transport failed to reach a
  peer (ICMP unreachable, TCP connect failure): every transaction towards that
  peer (or only ``key``) gets the RFC's "Transport Err." input.

Events (``sipstack.transaction.events``): RequestReceived, CancelReceived,
AckReceived, ResponseReceived, StrayResponse, TransactionTimeout, TransportError,
TransactionTerminated, RetransmissionAbsorbed, TransactionLimitReached.

Matching: client §17.1.3 (branch + CSeq method); server §17.2.3 (branch with
magic cookie + sent-by + method, ACK matching its INVITE, CANCEL its own
transaction), RFC 2543 fallback for requests without the cookie (Request-URI,
To tag, From tag, Call-ID, CSeq, top Via; for ACK the To tag of the response
sent). An ACK for a 2xx sent by an INVITE server transaction (a new branch) is
also matched by Call-ID, CSeq number and the From/To tags of that 2xx, so that
the layer can stop retransmitting the 2xx; it still reaches the TU.

Timers live in one heap (``heapq``) with lazy deletion: each transaction has two
timer slots holding the sequence number of the armed entry; an entry whose
number is no longer in its slot is stale and skipped (the heap is compacted when
more than half of it is stale). Zero-length timers (D, I, J, K on reliable
transports) fire at once, inside the call that armed them.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import cast

from sipstack.errors import SipParseError
from sipstack.headers import Via
from sipstack.message import Request, Response, make_response
from sipstack.peer import Peer
from sipstack.transaction.build import MAGIC_COOKIE, make_ack
from sipstack.transaction.config import LayerConfig
from sipstack.transaction.errors import (
    TransactionLimitError,
    TransactionStateError,
    TransactionUsageError,
    UnknownTransactionError,
)
from sipstack.transaction.events import (
    AckReceived,
    CancelReceived,
    ClientTxKey,
    Event,
    RequestReceived,
    ResponseReceived,
    RetransmissionAbsorbed,
    ServerTxKey,
    StrayResponse,
    TransactionLimitReached,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    TxKey,
)
from sipstack.transaction.tables import (
    ICT,
    INPUT_KIND,
    IST,
    NICT,
    NIST,
    TIMER_SLOT,
    Action,
    Input,
    InputKind,
    Machine,
    Row,
    State,
)

_log = logging.getLogger("sipstack.transaction")

_Msg = Request | Response
_AckKey = tuple[str, int, str | None, str | None]  # Call-ID, CSeq number, From tag, To tag
_LegacyAckKey = tuple[str, str, str, int, str]  # R-URI, From tag, Call-ID, CSeq number, Via
_TIMEOUT_TIMER = {"ICT": "B", "NICT": "F", "IST": "H", "NIST": "J"}
_COMPACT_AT = 4096  # stale heap entries before compaction is considered


class _Tx:
    """One transaction: the state, two timer slots and the bytes it may resend."""

    __slots__ = (
        "ack",
        "ack_tag",
        "acked",
        "idx2xx",
        "interval",
        "key",
        "machine",
        "out",
        "peer",
        "request",
        "resp_tag",
        "slots",
        "state",
    )

    def __init__(self, key: TxKey, machine: Machine, peer: Peer) -> None:
        self.key = key
        self.machine = machine
        self.state = State.TERMINATED  # set from machine.start by _apply
        self.peer = peer
        self.out: bytes | None = None  # client: the request; server: the last response
        self.request: Request | None = None  # ICT: for the ACK; IST: for the 100 Trying
        self.ack: bytes | None = None
        self.ack_tag: str | None = None
        self.resp_tag: str | None = None  # RFC 2543 IST: To tag of the final response
        self.idx2xx: _AckKey | None = None
        self.acked = False
        self.interval = 0.0
        # Per timer slot, the sequence number of its live heap entry (0: none armed).
        self.slots = [0, 0]


@dataclass(frozen=True, slots=True)
class LayerStats:
    active: int
    created: int
    terminated: int
    absorbed: int
    ignored: int  # network inputs the tables give no meaning to in that state
    dropped: int  # network messages unusable for matching (malformed Via, ...)
    limit_hits: int
    heap_size: int


# What an input carries to the actions: the message, the peer it came from or goes to,
# and the bytes of a TU response (serialized before the transition, so it cannot fail).
_Ctx = tuple["_Msg | None", "Peer | None", "bytes | None"]
_NO_CTX: _Ctx = (None, None, None)
_Handler = Callable[["TransactionLayer", _Tx, float, _Ctx], None]


class TransactionLayer:
    """All client and server transactions of one SIP element (see module docstring)."""

    __slots__ = (
        "_absorbed",
        "_ack2xx",
        "_cancel_ctx",
        "_cfg",
        "_clients",
        "_created",
        "_dropped",
        "_events",
        "_fixed",
        "_heap",
        "_ignored",
        "_legacy_acks",
        "_limit_hits",
        "_limited",
        "_out",
        "_seq",
        "_servers",
        "_stale",
        "_terminated",
        "_zero",
    )

    def __init__(self, config: LayerConfig | None = None) -> None:
        self._cfg = config if config is not None else LayerConfig()
        t = self._cfg.timers
        lifetime = {Input.TIMER_B: t.timeout, Input.TIMER_F: t.timeout, Input.TIMER_H: t.timeout,
                    Input.TIMER_L: t.timeout, Input.TIMER_M: t.timeout,
                    Input.TIMER_TRYING: t.trying}
        unreliable = {**lifetime, Input.TIMER_D: t.timer_d, Input.TIMER_I: t.t4,
                      Input.TIMER_J: t.timeout, Input.TIMER_K: t.t4}
        reliable = {**lifetime, Input.TIMER_D: 0.0, Input.TIMER_I: 0.0,
                    Input.TIMER_J: 0.0, Input.TIMER_K: 0.0}
        self._fixed: tuple[dict[Input, float], dict[Input, float]] = (unreliable, reliable)
        self._clients: dict[ClientTxKey, _Tx] = {}
        self._servers: dict[ServerTxKey, _Tx] = {}
        self._legacy_acks: dict[_LegacyAckKey, _Tx] = {}
        self._ack2xx: dict[_AckKey, _Tx] = {}
        self._heap: list[tuple[float, int, _Tx, Input]] = []
        self._seq = 0
        self._stale = 0
        self._zero: tuple[_Tx, Input] | None = None
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Peer]] = []
        self._cancel_ctx: tuple[ServerTxKey | None, bool] = (None, False)
        self._created = 0
        self._terminated = 0
        self._absorbed = 0
        self._ignored = 0
        self._dropped = 0
        self._limit_hits = 0
        self._limited = False

    # -- output -------------------------------------------------------------------------
    def events(self) -> list[Event]:
        """Drain the events for the TU, oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Drain the messages to transmit, in order."""
        out = self._out
        self._out = []
        return out

    # -- introspection ------------------------------------------------------------------
    def active_count(self) -> int:
        return len(self._clients) + len(self._servers)

    def state_of(self, key: TxKey) -> State | None:
        tx = self._lookup(key)
        return None if tx is None else tx.state

    @property
    def config(self) -> LayerConfig:
        return self._cfg

    @property
    def stats(self) -> LayerStats:
        return LayerStats(
            active=self.active_count(),
            created=self._created,
            terminated=self._terminated,
            absorbed=self._absorbed,
            ignored=self._ignored,
            dropped=self._dropped,
            limit_hits=self._limit_hits,
            heap_size=len(self._heap),
        )

    # -- timers -------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest deadline of an armed timer, or None."""
        heap = self._heap
        while heap:
            _deadline, seq, tx, timer = heap[0]
            if tx.slots[TIMER_SLOT[timer]] == seq:
                return heap[0][0]
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is at or before ``now``, in deadline order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _deadline, seq, tx, timer = heapq.heappop(heap)
            slot = TIMER_SLOT[timer]
            if tx.slots[slot] != seq:
                self._stale -= 1
                continue
            tx.slots[slot] = 0
            self._step(tx, timer, now)

    # -- network input ------------------------------------------------------------------
    def receive(self, message: Request | Response, peer: Peer, now: float) -> None:
        """A parsed message from ``peer``. Never raises for bad network input."""
        try:
            if isinstance(message, Response):
                self._receive_response(message, peer, now)
            else:
                self._receive_request(message, peer, now)
        except SipParseError as exc:
            self._dropped += 1
            _log.debug("dropped %r from %s: %s", message, peer, exc)

    def transport_error(self, peer: Peer, now: float, key: TxKey | None = None) -> int:
        """Report a fatal transport error towards ``peer``; returns how many
        transactions took the "Transport Err." transition."""
        if key is not None:
            found = self._lookup(key)
            targets = [] if found is None else [found]
        else:
            targets = [
                tx for tx in chain(self._clients.values(), self._servers.values())
                if tx.peer == peer
            ]
        hit = 0
        for tx in targets:
            if tx.state is not State.TERMINATED and self._step(
                tx, Input.TRANSPORT_ERROR, now
            ):
                hit += 1
        return hit

    # -- TU input -----------------------------------------------------------------------
    def send_request(self, request: Request, peer: Peer, now: float) -> ClientTxKey:
        """Start a client transaction for ``request`` towards ``peer``."""
        method = request.method
        if method == "ACK":
            raise TransactionUsageError("ACK is not a transaction: use send_stateless")
        try:
            branch = request.top_via.branch
            cseq = request.cseq
            _ = request.call_id
        except SipParseError as exc:
            raise TransactionUsageError(f"unusable request: {exc}") from exc
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise TransactionUsageError("top Via needs a branch starting with z9hG4bK")
        if cseq.method != method:
            raise TransactionUsageError("CSeq method differs from the request method")
        key = ClientTxKey(branch, method)
        if key in self._clients:
            raise TransactionUsageError(f"a client transaction {key} already exists")
        if self.active_count() >= self._cfg.max_transactions:
            self._limit_hits += 1
            raise TransactionLimitError(f"{self._cfg.max_transactions} transactions live")
        if method == "CANCEL":
            invite = self._clients.get(ClientTxKey(branch, "INVITE"))
            if invite is not None:
                self._step(invite, Input.TU_CANCEL, now)
        machine = ICT if method == "INVITE" else NICT
        tx = _Tx(key, machine, peer)
        tx.out = request.to_bytes()
        if machine is ICT:
            tx.request = request
        self._clients[key] = tx
        self._created += 1
        self._apply(tx, machine.start, now, (None, peer, None))
        return key

    def send_response(self, key: ServerTxKey, response: Response, now: float) -> None:
        """Send ``response`` within server transaction ``key``.

        Raises UnknownTransactionError (no such live transaction, e.g. Terminated),
        TransactionStateError (not allowed in this state: RFC 3261 §17.2) or
        TransactionUsageError (status outside 100-699, unusable headers).
        """
        tx = self._servers.get(key)
        if tx is None:
            raise UnknownTransactionError(f"no server transaction {key}")
        status = response.status
        if not 100 <= status <= 699:
            raise TransactionUsageError(f"status {status} outside 100-699")
        inp = Input.TU_1XX if status < 200 else Input.TU_2XX if status < 300 else Input.TU_3XX_6XX
        if tx.machine.lookup(tx.state, inp) is None:
            raise TransactionStateError(
                f"{tx.machine.name} {key}: {inp.value} not allowed in {tx.state.value}"
            )
        if tx.machine is IST and status >= 200:
            try:  # parsed now, so that the actions below cannot fail half-way
                _ = (response.to.tag, response.from_.tag, response.call_id, response.cseq)
            except SipParseError as exc:
                raise TransactionUsageError(f"unusable response: {exc}") from exc
        self._step(tx, inp, now, (response, tx.peer, response.to_bytes()))

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """Queue a message outside any transaction (ACK for 2xx, stateless replies)."""
        self._out.append((message.to_bytes(), peer))

    # -- receive paths ------------------------------------------------------------------
    def _receive_response(self, response: Response, peer: Peer, now: float) -> None:
        branch = response.top_via.branch
        tx = self._clients.get(ClientTxKey(branch, response.cseq.method)) if branch else None
        if tx is None:
            self._events.append(StrayResponse(response, peer))
            return
        status = response.status
        if status < 200:
            inp = Input.RESP_1XX
        elif status < 300:
            inp = Input.RESP_2XX
        else:
            inp = Input.RESP_3XX_6XX
            if tx.machine is ICT:
                _ = response.to.tag  # parsed before the transition builds the ACK
        self._step(tx, inp, now, (response, peer, None))

    def _receive_request(self, request: Request, peer: Peer, now: float) -> None:
        method = request.method
        via = request.top_via
        if method == "ACK":
            self._receive_ack(request, via, peer, now)
            return
        key = _server_key(request, via, method)
        tx = self._servers.get(key)
        if tx is not None:
            self._step(tx, Input.REQUEST, now, (request, peer, None))
            return
        if self.active_count() >= self._cfg.max_transactions:
            self._limit_hits += 1
            if not self._limited:
                self._limited = True
                _log.warning(
                    "transaction limit %d reached: new requests get no transaction",
                    self._cfg.max_transactions,
                )
            self._events.append(
                TransactionLimitReached(request, peer, self._cfg.max_transactions)
            )
            return
        invite_key: ServerTxKey | None = None
        pending = False
        if method == "CANCEL":
            ikey = key._replace(method="INVITE")
            invite = self._servers.get(ikey)
            if invite is not None:
                invite_key = ikey
                pending = self._step(invite, Input.CANCEL, now, (request, peer, None))
        machine = IST if method == "INVITE" else NIST
        tx = _Tx(key, machine, self._response_peer(via, peer))
        self._servers[key] = tx
        if machine is IST:
            tx.request = request
            if key.legacy is not None:
                self._legacy_acks[_legacy_ack_key(key)] = tx
        self._created += 1
        self._cancel_ctx = (invite_key, pending)
        self._apply(tx, machine.start, now, (request, peer, None))

    def _receive_ack(self, ack: Request, via: Via, peer: Peer, now: float) -> None:
        branch = via.branch
        tx: _Tx | None
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            host, port = via.sent_by
            tx = self._servers.get(ServerTxKey(branch, host, port, "INVITE"))
        else:
            legacy = (ack.uri, ack.from_.tag or "", ack.call_id, ack.cseq.number, str(via))
            tx = self._legacy_acks.get(legacy)
            if tx is not None and tx.resp_tag != ack.to.tag:
                tx = None
        if tx is None and self._ack2xx:
            tx = self._ack2xx.get((ack.call_id, ack.cseq.number, ack.from_.tag, ack.to.tag))
        if tx is None:
            self._events.append(AckReceived(ack, peer, None))
            return
        self._step(tx, Input.ACK, now, (ack, peer, None))

    def _response_peer(self, via: Via, peer: Peer) -> Peer:
        """Where responses go: RFC 3261 §18.2.2 with RFC 3581 (see LayerConfig)."""
        if peer.reliable or self._cfg.force_rport or "rport" in via.params:
            return peer
        port = via.port if via.port is not None else 5060
        return peer if port == peer.port else Peer(peer.transport, peer.host, port)

    def _lookup(self, key: TxKey) -> _Tx | None:
        if isinstance(key, ClientTxKey):
            return self._clients.get(key)
        return self._servers.get(key)

    # -- the machine --------------------------------------------------------------------
    def _step(
        self,
        tx: _Tx,
        inp: Input,
        now: float,
        ctx: _Ctx = _NO_CTX,
    ) -> bool:
        """Feed one input; True if the table defines it (False: ignored network input)."""
        row = tx.machine.table.get((tx.state, inp))
        if row is None:
            if INPUT_KIND[inp] is InputKind.TU:
                raise TransactionStateError(
                    f"{tx.machine.name} {tx.key}: {inp.value} not allowed in {tx.state.value}"
                )
            self._ignored += 1
            _log.debug("%s %s: %s ignored in %s", tx.machine.name, tx.key, inp.value,
                       tx.state.value)
            return False
        self._apply(tx, row, now, ctx)
        return True

    def _apply(self, tx: _Tx, row: Row, now: float, ctx: _Ctx) -> None:
        state, actions = row
        previous = tx.state
        tx.state = state
        for action in actions:
            _HANDLERS[action](self, tx, now, ctx)
        if state is not previous:
            if state is State.TERMINATED:
                self._remove(tx)
                return
            # Forget what the new state can never send again (memory at 1,000 calls/s).
            if tx.machine is ICT:
                if state is not State.CALLING:
                    tx.out = None  # only Calling retransmits the INVITE
                if state is State.ACCEPTED:
                    tx.request = None  # no ACK to build any more
            elif state is State.CONFIRMED or (
                state is State.COMPLETED and tx.machine is NICT
            ):
                tx.out = None
        zero = self._zero
        if zero is not None:
            self._zero = None
            self._step(zero[0], zero[1], now)

    def _remove(self, tx: _Tx) -> None:
        self._cancel_slot(tx, 0)
        self._cancel_slot(tx, 1)
        key = tx.key
        if isinstance(key, ClientTxKey):
            if self._clients.get(key) is tx:
                del self._clients[key]
        else:
            if self._servers.get(key) is tx:
                del self._servers[key]
            if key.legacy is not None and tx.machine is IST:
                lk = _legacy_ack_key(key)
                if self._legacy_acks.get(lk) is tx:
                    del self._legacy_acks[lk]
            if tx.idx2xx is not None and self._ack2xx.get(tx.idx2xx) is tx:
                del self._ack2xx[tx.idx2xx]
        tx.out = tx.ack = None
        tx.request = None
        self._zero = None if self._zero is not None and self._zero[0] is tx else self._zero
        self._terminated += 1
        if self._limited and self.active_count() < self._cfg.max_transactions * 0.9:
            self._limited = False
            _log.info("transaction count back under the limit")
        self._events.append(TransactionTerminated(key))

    # -- timer slots --------------------------------------------------------------------
    def _arm(self, tx: _Tx, timer: Input, now: float, interval: float | None = None) -> None:
        """Arm ``timer`` (replacing its slot); ``interval`` for retransmission timers,
        which are never armed on reliable transports."""
        if interval is None:
            duration = self._fixed[tx.peer.reliable][timer]
        elif tx.peer.reliable:
            return
        else:
            duration = interval
        slot = TIMER_SLOT[timer]
        self._cancel_slot(tx, slot)
        if duration <= 0:
            self._zero = (tx, timer)
            return
        self._seq += 1
        seq = self._seq
        tx.slots[slot] = seq
        heapq.heappush(self._heap, (now + duration, seq, tx, timer))

    def _cancel_slot(self, tx: _Tx, slot: int) -> None:
        if not tx.slots[slot]:
            return
        tx.slots[slot] = 0
        self._stale += 1
        if self._stale > _COMPACT_AT and self._stale * 2 > len(self._heap):
            self._compact()

    def _compact(self) -> None:
        self._heap = [
            e for e in self._heap
            if e[2].slots[TIMER_SLOT[e[3]]] == e[1]
        ]
        heapq.heapify(self._heap)
        self._stale = 0

    # -- actions (one function per Action; see _HANDLERS) -------------------------------
    def _a_send(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        if tx.out is not None:
            self._out.append((tx.out, tx.peer))

    def _a_send_response(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        response = cast(Response, ctx[0])
        data = cast(bytes, ctx[2])
        tx.out = data
        self._out.append((data, tx.peer))
        if tx.machine is not IST or response.status < 200:
            return
        tx.request = None
        if response.status < 300:
            idx = (response.call_id, response.cseq.number, response.from_.tag,
                   response.to.tag)
            if tx.idx2xx is not None and tx.idx2xx != idx and \
                    self._ack2xx.get(tx.idx2xx) is tx:
                del self._ack2xx[tx.idx2xx]
            tx.idx2xx = idx
            self._ack2xx[idx] = tx
        if cast(ServerTxKey, tx.key).legacy is not None:
            tx.resp_tag = response.to.tag

    def _a_send_ack(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        response = cast(Response, ctx[0])
        tag = response.to.tag
        if tx.ack is None or tx.ack_tag != tag:
            if tx.request is None:  # pragma: no cover - the ICT keeps it until Accepted
                return
            tx.ack = make_ack(tx.request, response).to_bytes()
            tx.ack_tag = tag
        self._out.append((tx.ack, tx.peer))

    def _a_send_100(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        if tx.request is None:  # pragma: no cover - kept for all of Proceeding
            return
        tx.out = make_response(tx.request, 100).to_bytes()
        self._out.append((tx.out, tx.peer))

    def _a_pass_request(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        request = cast(Request, ctx[0])
        peer = cast(Peer, ctx[1])
        key = cast(ServerTxKey, tx.key)
        if key.method == "CANCEL":
            invite_key, pending = self._cancel_ctx
            self._cancel_ctx = (None, False)
            self._events.append(
                CancelReceived(key, request, peer, invite_key, pending)
            )
        else:
            self._events.append(RequestReceived(key, request, peer))

    def _a_pass_response(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        self._events.append(
            ResponseReceived(cast(ClientTxKey, tx.key), cast(Response, ctx[0]), cast(Peer, ctx[1]))
        )

    def _a_pass_ack(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        self._events.append(
            AckReceived(cast(Request, ctx[0]), cast(Peer, ctx[1]), cast(ServerTxKey, tx.key))
        )

    def _a_timeout(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        self._events.append(TransactionTimeout(tx.key, _TIMEOUT_TIMER[tx.machine.name]))

    def _a_unacked(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        if self._cfg.retransmit_2xx and not tx.acked:
            self._events.append(TransactionTimeout(tx.key, "L"))

    def _a_transport_error(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        self._events.append(TransportError(tx.key, tx.peer))

    def _a_absorb(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        self._absorbed += 1
        if self._cfg.absorbed_events:
            self._events.append(RetransmissionAbsorbed(tx.key))

    def _a_nothing(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        return

    def _a_acked(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        tx.acked = True
        tx.out = None  # Accepted absorbs INVITE retransmissions: the 2xx is not needed

    def _a_reset_e_t2(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        tx.interval = self._cfg.timers.t2
        self._arm(tx, Input.TIMER_E, now, tx.interval)

    def _a_start_g_2xx(self, tx: _Tx, now: float, ctx: _Ctx) -> None:
        if self._cfg.retransmit_2xx:
            _START_G(self, tx, now, ctx)


def _retransmit_start(timer: Input) -> _Handler:
    """Timers A, E and G start at T1 (§17.1.1.2, §17.1.2.2, §17.2.1)."""

    def start(layer: TransactionLayer, tx: _Tx, now: float, ctx: _Ctx) -> None:
        tx.interval = layer._cfg.timers.t1
        layer._arm(tx, timer, now, tx.interval)

    return start


def _retransmit_backoff(timer: Input, *, capped: bool) -> _Handler:
    """The interval doubles; E and G stop growing at T2, A does not (§17.1.1.2)."""

    def backoff(layer: TransactionLayer, tx: _Tx, now: float, ctx: _Ctx) -> None:
        tx.interval *= 2
        if capped:
            tx.interval = min(tx.interval, layer._cfg.timers.t2)
        layer._arm(tx, timer, now, tx.interval)

    return backoff


_START_G = _retransmit_start(Input.TIMER_G)


def _starter(timer: Input) -> _Handler:
    def start(layer: TransactionLayer, tx: _Tx, now: float, ctx: _Ctx) -> None:
        layer._arm(tx, timer, now)

    return start


def _stopper(slot: int) -> _Handler:
    def stop(layer: TransactionLayer, tx: _Tx, now: float, ctx: _Ctx) -> None:
        layer._cancel_slot(tx, slot)

    return stop


_L = TransactionLayer
_HANDLERS: dict[Action, _Handler] = {
    Action.SEND_REQUEST: _L._a_send,
    Action.RETRANSMIT: _L._a_send,
    Action.SEND_RESPONSE: _L._a_send_response,
    Action.SEND_ACK: _L._a_send_ack,
    Action.SEND_100: _L._a_send_100,
    Action.PASS_REQUEST: _L._a_pass_request,
    Action.PASS_RESPONSE: _L._a_pass_response,
    Action.PASS_ACK: _L._a_pass_ack,
    Action.REPORT_TIMEOUT: _L._a_timeout,
    Action.REPORT_TRANSPORT_ERROR: _L._a_transport_error,
    Action.REPORT_UNACKED: _L._a_unacked,
    Action.ABSORB: _L._a_absorb,
    Action.NOTE_CANCEL: _L._a_nothing,
    Action.NOTE_ACKED: _L._a_acked,
    Action.START_A: _retransmit_start(Input.TIMER_A),
    Action.BACKOFF_A: _retransmit_backoff(Input.TIMER_A, capped=False),
    Action.START_E: _retransmit_start(Input.TIMER_E),
    Action.BACKOFF_E: _retransmit_backoff(Input.TIMER_E, capped=True),
    Action.RESET_E_T2: _L._a_reset_e_t2,
    Action.START_G: _START_G,
    Action.START_G_2XX: _L._a_start_g_2xx,
    Action.BACKOFF_G: _retransmit_backoff(Input.TIMER_G, capped=True),
    Action.START_B: _starter(Input.TIMER_B),
    Action.START_D: _starter(Input.TIMER_D),
    Action.START_F: _starter(Input.TIMER_F),
    Action.START_H: _starter(Input.TIMER_H),
    Action.START_I: _starter(Input.TIMER_I),
    Action.START_J: _starter(Input.TIMER_J),
    Action.START_K: _starter(Input.TIMER_K),
    Action.START_L: _starter(Input.TIMER_L),
    Action.START_M: _starter(Input.TIMER_M),
    Action.START_TRYING: _starter(Input.TIMER_TRYING),
    Action.STOP_A: _stopper(0),
    Action.STOP_E: _stopper(0),
    Action.STOP_G: _stopper(0),
    Action.STOP_TRYING: _stopper(0),
    Action.STOP_B: _stopper(1),
    Action.STOP_F: _stopper(1),
    Action.STOP_H: _stopper(1),
}
assert set(_HANDLERS) == set(Action), "every Action needs a handler"


def _server_key(request: Request, via: Via, method: str) -> ServerTxKey:
    """RFC 3261 §17.2.3 key, or the RFC 2543 one for a branch without the cookie."""
    branch = via.branch
    host, port = via.sent_by
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return ServerTxKey(branch, host, port, method)
    legacy = (
        request.uri,
        request.to.tag or "",
        request.from_.tag or "",
        request.call_id,
        request.cseq.number,
        str(via),
    )
    return ServerTxKey(branch or "", host, port, method, legacy)


def _legacy_ack_key(key: ServerTxKey) -> _LegacyAckKey:
    legacy = cast(tuple[str, str, str, str, int, str], key.legacy)
    return (legacy[0], legacy[2], legacy[3], legacy[4], legacy[5])
