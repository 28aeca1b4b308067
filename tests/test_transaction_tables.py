"""Every (state, input) pair of every machine: a table row, or the explicit policy.

Static checks look at the tables as data; the walk drives a real layer into each
state through the public API and feeds each input (timers are injected, since
time alone cannot fire a timer that is not armed).
"""

from __future__ import annotations

import itertools

import pytest
from txkit import PHONE_TCP, PHONE_UDP, TCP, UDP, ack_for, request, response, same

from sipstack.message import Request, make_response
from sipstack.peer import Peer
from sipstack.transaction import (
    ICT,
    IST,
    MACHINES,
    NICT,
    NIST,
    Action,
    Input,
    InputKind,
    Machine,
    RequestReceived,
    State,
    TransactionLayer,
    TransactionStateError,
    TxKey,
    UnknownTransactionError,
    make_cancel,
)
from sipstack.transaction.tables import INPUT_KIND, TIMER_SLOT

ZERO_ON_RELIABLE = {
    Action.START_D: Input.TIMER_D,
    Action.START_I: Input.TIMER_I,
    Action.START_J: Input.TIMER_J,
    Action.START_K: Input.TIMER_K,
}
START_TIMER = {
    Action.START_A: Input.TIMER_A,
    Action.START_B: Input.TIMER_B,
    Action.START_D: Input.TIMER_D,
    Action.START_E: Input.TIMER_E,
    Action.START_F: Input.TIMER_F,
    Action.START_G: Input.TIMER_G,
    Action.START_G_2XX: Input.TIMER_G,
    Action.START_H: Input.TIMER_H,
    Action.START_I: Input.TIMER_I,
    Action.START_J: Input.TIMER_J,
    Action.START_K: Input.TIMER_K,
    Action.START_L: Input.TIMER_L,
    Action.START_M: Input.TIMER_M,
    Action.START_TRYING: Input.TIMER_TRYING,
}


# --------------------------------------------------------------------------- static


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_table_is_well_formed(machine: Machine) -> None:
    assert machine.start[0] in machine.states
    for (state, inp), (nxt, actions) in machine.table.items():
        assert state in machine.states, (state, inp)
        assert inp in machine.inputs, (state, inp)
        assert nxt in machine.states, (state, inp)
        assert state is not State.TERMINATED
        assert all(isinstance(a, Action) for a in actions)
    # Every input of the machine is used somewhere, every state is reachable from the
    # start, and Terminated is reachable from every state.
    assert {inp for _s, inp in machine.table} == machine.inputs
    edges: dict[State, set[State]] = {s: set() for s in machine.states}
    for (state, _inp), (nxt, _a) in machine.table.items():
        edges[state].add(nxt)

    def reach(frm: State) -> set[State]:
        seen, todo = {frm}, [frm]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reach(machine.start[0]) == machine.states
    for state in machine.states:
        assert State.TERMINATED in reach(state), state


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_timer_rows_only_where_the_timer_can_be_armed(machine: Machine) -> None:
    """A timer input has a row in state S only if some row entering S (or staying in
    it) starts that timer; and starting a timer never drops another one silently."""
    armed_in: dict[State, set[Input]] = {s: set() for s in machine.states}
    rows = [machine.start, *machine.table.values()]
    for nxt, actions in rows:
        for a in actions:
            if a in START_TIMER:
                armed_in[nxt].add(START_TIMER[a])
    # Timers started in a state persist across rows that do not stop them (NICT E/F
    # into Proceeding, ICT B kept by TU_CANCEL); close over transitions.
    stops = {Action.STOP_A: Input.TIMER_A, Action.STOP_B: Input.TIMER_B,
             Action.STOP_E: Input.TIMER_E, Action.STOP_F: Input.TIMER_F,
             Action.STOP_G: Input.TIMER_G, Action.STOP_H: Input.TIMER_H,
             Action.STOP_TRYING: Input.TIMER_TRYING}
    changed = True
    while changed:
        changed = False
        for (state, inp), (nxt, actions) in machine.table.items():
            carried = armed_in[state] - {stops[a] for a in actions if a in stops}
            carried.discard(inp)  # the timer that fired is no longer armed
            if not carried <= armed_in[nxt]:
                armed_in[nxt] |= carried
                changed = True
    for (state, inp) in machine.table:
        if INPUT_KIND[inp] is InputKind.TIMER:
            assert inp in armed_in[state], (machine.name, state, inp)
    # Starting a timer replaces its slot: that must never silently drop another timer
    # that may still be armed on the way in (it has to be stopped explicitly).
    for (state, inp), (_nxt, actions) in machine.table.items():
        carried = armed_in[state] - {stops[a] for a in actions if a in stops} - {inp}
        started = [START_TIMER[a] for a in actions if a in START_TIMER]
        slots = [TIMER_SLOT[t] for t in started]
        assert len(slots) == len(set(slots)), actions
        for timer in started:
            clash = {t for t in carried if TIMER_SLOT[t] == TIMER_SLOT[timer] and t != timer}
            assert not clash, (machine.name, state, inp, timer, clash)


def test_input_kinds() -> None:
    assert INPUT_KIND[Input.TU_CANCEL] is InputKind.TU
    assert INPUT_KIND[Input.TIMER_TRYING] is InputKind.TIMER
    assert INPUT_KIND[Input.TRANSPORT_ERROR] is InputKind.NETWORK
    assert {inp for inp, k in INPUT_KIND.items() if k is InputKind.TIMER} == set(TIMER_SLOT)


# --------------------------------------------------------------------------- dynamic walk


class Harness:
    """One transaction of ``machine`` driven through the public API."""

    def __init__(self, machine: Machine, reliable: bool) -> None:
        self.machine = machine
        self.layer = TransactionLayer()
        self.now = 0.0
        self.peer: Peer = TCP if reliable else UDP
        self.phone: Peer = PHONE_TCP if reliable else PHONE_UDP
        transport = "TCP" if reliable else "UDP"
        method = "INVITE" if machine.invite else "BYE"
        self.req: Request = request(method, transport=transport)
        self.final_tag = "srv"
        if machine.client:
            self.key: TxKey = self.layer.send_request(self.req, self.peer, 0.0)
        else:
            self.layer.receive(self.req, self.phone, 0.0)
            (ev,) = [e for e in self.layer.events() if isinstance(e, RequestReceived)]
            self.key = ev.key
        store = self.layer._clients if machine.client else self.layer._servers
        self.tx = store[self.key]  # type: ignore[index]
        self.last_final = response(self.req, 486, to_tag=self.final_tag)

    @property
    def state(self) -> State:
        return self.tx.state  # type: ignore[no-any-return]

    def feed(self, inp: Input) -> None:
        self.now += 0.01
        layer, req, now = self.layer, self.req, self.now
        if inp is Input.RESP_1XX:
            layer.receive(response(req, 180), self.peer, now)
        elif inp is Input.RESP_2XX:
            layer.receive(response(req, 200), self.peer, now)
        elif inp is Input.RESP_3XX_6XX:
            layer.receive(response(req, 486), self.peer, now)
        elif inp is Input.TRANSPORT_ERROR:
            layer.transport_error(self.tx.peer, now, key=self.key)
        elif inp is Input.TU_CANCEL:
            layer.send_request(make_cancel(req), self.peer, now)
        elif inp is Input.REQUEST:
            layer.receive(same(req), self.phone, now)
        elif inp is Input.ACK:
            layer.receive(ack_for(req, self.last_final), self.phone, now)
        elif inp is Input.CANCEL:
            layer.receive(make_cancel(req), self.phone, now)
        elif inp in (Input.TU_1XX, Input.TU_2XX, Input.TU_3XX_6XX):
            status = {Input.TU_1XX: 180, Input.TU_2XX: 200, Input.TU_3XX_6XX: 486}[inp]
            resp = make_response(req, status, to_tag=self.final_tag)
            if status >= 200:
                self.last_final = resp
            assert isinstance(self.key, tuple)
            layer.send_response(self.key, resp, now)  # type: ignore[arg-type]
        else:
            assert INPUT_KIND[inp] is InputKind.TIMER
            layer._step(self.tx, inp, now)


# How to bring a fresh transaction of each machine into each state.
PATHS: dict[str, dict[State, tuple[Input, ...]]] = {
    "ICT": {
        State.CALLING: (),
        State.PROCEEDING: (Input.RESP_1XX,),
        State.ACCEPTED: (Input.RESP_2XX,),
        State.COMPLETED: (Input.RESP_3XX_6XX,),
        State.TERMINATED: (Input.TRANSPORT_ERROR,),
    },
    "NICT": {
        State.TRYING: (),
        State.PROCEEDING: (Input.RESP_1XX,),
        State.COMPLETED: (Input.RESP_2XX,),
        State.TERMINATED: (Input.TRANSPORT_ERROR,),
    },
    "IST": {
        State.PROCEEDING: (),
        State.ACCEPTED: (Input.TU_2XX,),
        State.COMPLETED: (Input.TU_3XX_6XX,),
        State.CONFIRMED: (Input.TU_3XX_6XX, Input.ACK),
        State.TERMINATED: (Input.TRANSPORT_ERROR,),
    },
    "NIST": {
        State.TRYING: (),
        State.PROCEEDING: (Input.TU_1XX,),
        State.COMPLETED: (Input.TU_2XX,),
        State.TERMINATED: (Input.TU_1XX, Input.TRANSPORT_ERROR),
    },
}


def _settle(machine: Machine, state: State, actions: tuple[Action, ...], reliable: bool) -> State:
    """The state after a row, following zero-length timers on reliable transports."""
    while reliable and state is not State.TERMINATED:
        zero = [ZERO_ON_RELIABLE[a] for a in actions if a in ZERO_ON_RELIABLE]
        if not zero:
            break
        state, actions = machine.table[(state, zero[0])]
    return state


# States that last zero time on a reliable transport (Timers D, I, J, K are 0):
# there is no moment at which to feed them an input over TCP.
ZERO_TIME_ON_RELIABLE = {
    ("ICT", State.COMPLETED), ("NICT", State.COMPLETED), ("NIST", State.COMPLETED),
    ("IST", State.CONFIRMED),
}


def _cases() -> list[tuple[Machine, State, Input, bool]]:
    out = []
    for machine in MACHINES:
        for state, inp, reliable in itertools.product(
            sorted(machine.states, key=lambda s: s.value),
            sorted(machine.inputs, key=lambda i: i.value),
            (False, True),
        ):
            if reliable and (machine.name, state) in ZERO_TIME_ON_RELIABLE:
                continue
            out.append((machine, state, inp, reliable))
    return out


@pytest.mark.parametrize(("machine_name", "state"), sorted(ZERO_TIME_ON_RELIABLE, key=str))
def test_zero_time_states_really_pass_at_once_on_a_reliable_transport(
    machine_name: str, state: State
) -> None:
    machine = next(m for m in MACHINES if m.name == machine_name)
    h = Harness(machine, True)
    for step in PATHS[machine.name][state]:
        h.feed(step)
    assert h.state is State.TERMINATED


def _id(case: object) -> str:
    if isinstance(case, Machine):
        return case.name
    if isinstance(case, State | Input):
        return case.name
    return "tcp" if case else "udp"


@pytest.mark.parametrize(("machine", "state", "inp", "reliable"), _cases(), ids=_id)
def test_walk_every_pair(machine: Machine, state: State, inp: Input, reliable: bool) -> None:
    h = Harness(machine, reliable)
    for step in PATHS[machine.name][state]:
        h.feed(step)
    assert h.state is state
    assert h.layer.state_of(h.key) is (None if state is State.TERMINATED else state)

    row = machine.lookup(state, inp)
    ignored_before = h.layer.stats.ignored
    h.layer.datagrams_to_send()
    h.layer.events()
    kind = INPUT_KIND[inp]

    if row is not None:
        h.feed(inp)
        expected = _settle(machine, row[0], row[1], reliable)
        assert h.state is expected
        assert h.layer.state_of(h.key) is (None if expected is State.TERMINATED else expected)
        assert h.layer.stats.ignored == ignored_before
        return

    if inp is Input.TU_CANCEL and state is State.TERMINATED:
        # The INVITE transaction is gone, so there is nothing to tell; the CANCEL is
        # still a transaction of its own (the UAS answers 200 or 481).
        h.feed(inp)
        assert [d[0].split(b" ", 1)[0] for d in h.layer.datagrams_to_send()] == [b"CANCEL"]
        return

    if kind is InputKind.TU:
        error = UnknownTransactionError if state is State.TERMINATED else TransactionStateError
        with pytest.raises(error):
            h.feed(inp)
        assert h.state is state
        assert h.layer.datagrams_to_send() == []
        return

    # Network input or (injected) timer the RFC gives no meaning to here: ignored.
    h.feed(inp)
    assert h.state is state
    if state is not State.TERMINATED:
        assert h.layer.stats.ignored == ignored_before + 1
        assert h.layer.state_of(h.key) is state
    sent = h.layer.datagrams_to_send()
    if inp is not Input.CANCEL and state is not State.TERMINATED:
        assert sent == []


def test_walk_covers_every_pair() -> None:
    every = {(m.name, s, i) for m in MACHINES for s in m.states for i in m.inputs}
    assert len(every) == 5 * 9 + 4 * 7 + 5 * 12 + 4 * 6 == 157
    udp = {(m.name, s, i) for m, s, i, reliable in _cases() if not reliable}
    tcp = {(m.name, s, i) for m, s, i, reliable in _cases() if reliable}
    assert udp == every
    # Over TCP only the states that last zero time there are left out.
    assert every - tcp == {
        (name, state, inp)
        for m in MACHINES
        for name, state in ZERO_TIME_ON_RELIABLE
        if m.name == name
        for inp in m.inputs
    }


def test_tu_error_in_terminated_is_a_state_error() -> None:
    """Sending a response in Terminated raises the typed error (the key is gone)."""
    h = Harness(NIST, reliable=False)
    h.feed(Input.TU_1XX)
    h.feed(Input.TRANSPORT_ERROR)
    assert h.layer.state_of(h.key) is None
    with pytest.raises(TransactionStateError):
        h.feed(Input.TU_2XX)


@pytest.mark.parametrize("machine", [ICT, NICT, IST, NIST], ids=lambda m: m.name)
def test_start_rows(machine: Machine) -> None:
    h = Harness(machine, reliable=False)
    assert h.state is machine.start[0]
