"""Random event sequences: nothing but the documented typed errors ever escapes.

Network input and timers never raise at all; TU calls raise only
``TransactionError`` subclasses; and once the TU has answered everything and time
has run on, every transaction is gone and no timer is left.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from txkit import PHONE_TCP, PHONE_UDP, TCP, UDP, ack_for, request, response, same

from sipstack.message import Request, Response, make_response
from sipstack.transaction import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    RetransmissionAbsorbed,
    ServerTxKey,
    StrayResponse,
    TransactionError,
    TransactionLayer,
    TransactionLimitReached,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    make_cancel,
)

EVENT_TYPES = (
    RequestReceived, CancelReceived, AckReceived, ResponseReceived, StrayResponse,
    TransactionTimeout, TransportError, TransactionTerminated, RetransmissionAbsorbed,
    TransactionLimitReached,
)
STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 487, 503, 603])
IDX = st.integers(0, 40)

OPS = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(["INVITE", "OPTIONS", "BYE"]), st.booleans()),
    st.tuples(st.just("resp"), IDX, STATUSES),
    st.tuples(st.just("cancel_out"), IDX),
    st.tuples(st.just("incoming"), st.sampled_from(["INVITE", "MESSAGE", "legacy"]),
              st.booleans()),
    st.tuples(st.just("retrans"), IDX),
    st.tuples(st.just("ack"), IDX, st.booleans()),
    st.tuples(st.just("cancel_in"), IDX),
    st.tuples(st.just("answer"), IDX, STATUSES),
    st.tuples(st.just("tperr"), st.booleans(), st.booleans()),
    st.tuples(
        st.just("advance"),
        st.one_of(st.floats(0.0, 0.6), st.sampled_from([0.2, 0.5, 4.0, 5.0, 32.0]),
                  st.floats(0.0, 40.0)),
    ),
)


def ident(req: Request) -> tuple[str, int, str]:
    return (req.call_id, req.cseq.number, req.method)


class World:
    def __init__(self, max_transactions: int) -> None:
        from sipstack.transaction import LayerConfig

        self.layer = TransactionLayer(LayerConfig(max_transactions=max_transactions))
        self.now = 0.0
        self.sent: list[tuple[Request, Any]] = []
        self.incoming: list[tuple[Request, Any]] = []
        self.keys: dict[tuple[str, int, str], ServerTxKey] = {}
        self.finals: dict[tuple[str, int, str], Response] = {}
        self.errors = 0

    def drain(self) -> None:
        for ev in self.layer.events():
            assert isinstance(ev, EVENT_TYPES)
            if isinstance(ev, RequestReceived | CancelReceived):
                self.keys[ident(ev.request)] = ev.key
        for data, peer in self.layer.datagrams_to_send():
            assert isinstance(data, bytes) and data
            assert peer in (UDP, TCP, PHONE_UDP, PHONE_TCP)
        deadline = self.layer.get_timer()
        assert deadline is None or deadline > self.now
        assert self.layer.active_count() == len(self.layer._clients) + len(self.layer._servers)

    def tu(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except TransactionError:
            self.errors += 1

    def run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        L, now = self.layer, self.now
        if kind == "send":
            reliable = op[2]
            req = request(op[1], transport="TCP" if reliable else "UDP")
            peer = TCP if reliable else UDP
            self.sent.append((req, peer))
            self.tu(L.send_request, req, peer, now)
        elif kind == "resp" and self.sent:
            req, peer = self.sent[op[1] % len(self.sent)]
            L.receive(response(req, op[2]), peer, now)
        elif kind == "cancel_out" and self.sent:
            req, peer = self.sent[op[1] % len(self.sent)]
            if req.method == "INVITE":
                self.tu(L.send_request, make_cancel(req), peer, now)
        elif kind == "incoming":
            reliable = op[2]
            method = "INVITE" if op[1] == "legacy" else op[1]
            branch = "" if op[1] == "legacy" else None
            req = request(method, branch=branch, transport="TCP" if reliable else "UDP")
            peer = PHONE_TCP if reliable else PHONE_UDP
            self.incoming.append((req, peer))
            L.receive(req, peer, now)
        elif kind == "retrans" and self.incoming:
            req, peer = self.incoming[op[1] % len(self.incoming)]
            L.receive(same(req), peer, now)
        elif kind == "ack" and self.incoming:
            req, peer = self.incoming[op[1] % len(self.incoming)]
            if req.method == "INVITE":
                final = self.finals.get(ident(req)) or response(req, 487)
                branch = "z9hG4bK-ack-new" if op[2] else None
                L.receive(ack_for(req, final, branch=branch), peer, now)
        elif kind == "cancel_in" and self.incoming:
            req, peer = self.incoming[op[1] % len(self.incoming)]
            if req.method == "INVITE":
                cancel = make_cancel(req)
                self.incoming.append((cancel, peer))
                L.receive(cancel, peer, now)
        elif kind == "answer" and self.incoming:
            req, _peer = self.incoming[op[1] % len(self.incoming)]
            key = self.keys.get(ident(req))
            if key is not None:
                resp = make_response(req, op[2], to_tag="srv")
                if op[2] >= 200:
                    self.finals[ident(req)] = resp
                self.tu(L.send_response, key, resp, now)
        elif kind == "tperr":
            peer = (TCP if op[2] else UDP) if op[1] else (PHONE_TCP if op[2] else PHONE_UDP)
            L.transport_error(peer, now)
        elif kind == "advance":
            self.now += op[1]
            L.handle_timer(self.now)
        self.drain()

    def finish(self) -> None:
        for req, _peer in self.incoming:
            key = self.keys.get(ident(req))
            if key is not None and self.layer.state_of(key) is not None:
                self.tu(self.layer.send_response, key, make_response(req, 500, to_tag="z"),
                        self.now)
        self.drain()
        self.now += 1000.0
        self.layer.handle_timer(self.now)
        self.drain()
        # Client INVITEs that got only a provisional response wait for the TU (Timer C
        # is a proxy's business); every other transaction must be gone.
        leftover = [tx for tx in self.layer._clients.values() if tx.key.method == "INVITE"]
        assert self.layer.active_count() == len(leftover)
        assert all(tx.state.value == "Proceeding" for tx in leftover)
        if not leftover:
            assert self.layer.get_timer() is None


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(OPS, min_size=10, max_size=80), st.sampled_from([5, 200_000]))
def test_random_sequences_only_raise_typed_errors(ops: list[tuple[Any, ...]], cap: int) -> None:
    world = World(cap)
    for op in ops:
        world.run(op)
    world.finish()


def _event_union_is_complete() -> None:  # keep EVENT_TYPES in step with the Event union
    import typing

    assert set(typing.get_args(Event)) == set(EVENT_TYPES)


def test_event_union_matches() -> None:
    _event_union_is_complete()
