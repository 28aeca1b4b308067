"""The four RFC 3261 §17 transaction state machines, as data.

Each machine is a table ``(State, Input) -> (next State, actions)`` plus a start
entry (the state a new transaction enters and the actions it runs on creation).
The layer (``sipstack.transaction.layer``) only looks rows up and executes the
actions; it holds no per-machine control flow of its own.

A pair that is not in a table is never silently guessed at. What happens
instead depends on the kind of input (``INPUT_KIND``):

* ``InputKind.TU``: the transaction user asked for something the RFC forbids in
  that state (a second final response, anything in Terminated, a CANCEL before
  a provisional response): ``TransactionStateError`` is raised and nothing
  changes.
* ``InputKind.NETWORK``: a message or transport report the RFC gives no meaning
  to in that state (a late 1xx in Completed, an ACK in Proceeding): it is
  ignored, counted in ``stats.ignored`` and logged at debug level.
* ``InputKind.TIMER``: cannot happen (timers are cancelled by the actions that
  leave a state, and cancelled timers never fire); were it to, it is ignored
  like a network input.

Differences from the RFC 3261 figures, all deliberate:

* RFC 6026 is implemented: INVITE client and server transactions have the
  ``Accepted`` state (Timers M and L) instead of terminating on a 2xx.
* The INVITE server transaction may retransmit the 2xx itself in Accepted
  (Timer G schedule, unreliable transports only) until the ACK is seen; this is
  the UAS core duty of RFC 3261 §13.3.1.4, done here so that the whole stack has
  one timer heap. Switch it off with ``LayerConfig.retransmit_2xx = False``.
* ``TU_CANCEL`` (the TU sends a CANCEL for this INVITE) re-arms Timer B in
  Proceeding, so a cancelled INVITE that never gets a final response is
  destroyed after 64*T1 (RFC 3261 §9.1). Before any provisional response it is
  TU misuse (§9.1: the CANCEL MUST NOT be sent yet).
* The 100 (Trying) of the INVITE server transaction is a timer (``TIMER_TRYING``,
  200 ms): it is sent only if the TU has not responded by then (§17.2.1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class InputKind(enum.Enum):
    NETWORK = "network"
    TU = "tu"
    TIMER = "timer"


class Input(enum.Enum):
    # From the network (client side): a response, by class.
    RESP_1XX = "1xx received"
    RESP_2XX = "2xx received"
    RESP_3XX_6XX = "300-699 received"
    # From the network (server side).
    REQUEST = "request retransmission"
    ACK = "ACK"
    CANCEL = "CANCEL for this INVITE"
    TRANSPORT_ERROR = "transport error"
    # From the transaction user.
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_3XX_6XX = "300-699 from TU"
    TU_CANCEL = "CANCEL sent by TU"
    # Timers, named as in RFC 3261 §17 / RFC 6026 (TRYING: the 200 ms 100-Trying timer).
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"
    TIMER_TRYING = "Trying"


INPUT_KIND: dict[Input, InputKind] = {
    inp: (
        InputKind.TIMER
        if inp.name.startswith("TIMER_")
        else InputKind.TU
        if inp.name.startswith("TU_")
        else InputKind.NETWORK
    )
    for inp in Input
}

# Which of a transaction's two timer slots a timer uses. Slot 0 holds the
# retransmission-style timer (A, E, G, Trying), slot 1 the lifetime timer. No
# state ever needs two timers of the same slot.
TIMER_SLOT: dict[Input, int] = {
    Input.TIMER_A: 0,
    Input.TIMER_E: 0,
    Input.TIMER_G: 0,
    Input.TIMER_TRYING: 0,
    Input.TIMER_B: 1,
    Input.TIMER_D: 1,
    Input.TIMER_F: 1,
    Input.TIMER_H: 1,
    Input.TIMER_I: 1,
    Input.TIMER_J: 1,
    Input.TIMER_K: 1,
    Input.TIMER_L: 1,
    Input.TIMER_M: 1,
}


class Action(enum.Enum):
    # Output to the network.
    SEND_REQUEST = "send request"  # client: the request, serialized once
    RETRANSMIT = "retransmit"  # the last message sent (request, or last response) again
    SEND_RESPONSE = "send response"  # server: the TU's response
    SEND_ACK = "send ACK"  # ICT: ACK for a 300-699 (§17.1.1.3)
    SEND_100 = "send 100 Trying"  # IST
    # Output to the TU.
    PASS_REQUEST = "request to TU"
    PASS_RESPONSE = "response to TU"
    PASS_ACK = "ACK to TU"
    REPORT_TIMEOUT = "timeout to TU"
    REPORT_TRANSPORT_ERROR = "transport error to TU"
    REPORT_UNACKED = "2xx never ACKed: timeout to TU"  # only when the layer retransmits 2xx
    ABSORB = "retransmission absorbed"  # metrics event
    NOTE_CANCEL = "CANCEL matched"  # the CancelReceived event reports it as pending
    NOTE_ACKED = "2xx ACKed"
    # Timers. START re-arms the slot; BACKOFF doubles the interval (A uncapped,
    # E and G capped at T2); RESET_E_T2 sets it to T2 (NICT Proceeding).
    START_A = "start A"
    BACKOFF_A = "A doubled"
    START_B = "start B"
    START_D = "start D"
    START_E = "start E"
    BACKOFF_E = "E doubled, cap T2"
    RESET_E_T2 = "E = T2"
    START_F = "start F"
    START_G = "start G"
    START_G_2XX = "start G for 2xx"
    BACKOFF_G = "G doubled, cap T2"
    START_H = "start H"
    START_I = "start I"
    START_J = "start J"
    START_K = "start K"
    START_L = "start L"
    START_M = "start M"
    START_TRYING = "start Trying"
    STOP_A = "stop A"
    STOP_B = "stop B"
    STOP_E = "stop E"
    STOP_F = "stop F"
    STOP_G = "stop G"
    STOP_H = "stop H"
    STOP_TRYING = "stop Trying"


Row = tuple[State, tuple[Action, ...]]
Table = dict[tuple[State, Input], Row]

S = State
I = Input  # noqa: E741
A = Action


@dataclass(frozen=True, slots=True)
class Machine:
    name: str  # "ICT", "NICT", "IST", "NIST"
    states: frozenset[State]
    inputs: frozenset[Input]
    start: Row
    table: Table
    invite: bool
    client: bool

    def lookup(self, state: State, inp: Input) -> Row | None:
        return self.table.get((state, inp))


def _rows(states: tuple[State, ...], inp: Input, row: Row) -> Table:
    return {(s, inp): row for s in states}


# --- INVITE client transaction: RFC 3261 §17.1.1 Figure 5 + RFC 6026 §8.4 -----------------
_ICT_FINAL = (A.STOP_A, A.STOP_B, A.SEND_ACK, A.PASS_RESPONSE, A.START_D)
ICT_TABLE: Table = {
    (S.CALLING, I.TIMER_A): (S.CALLING, (A.RETRANSMIT, A.BACKOFF_A)),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.CALLING, I.RESP_1XX): (S.PROCEEDING, (A.STOP_A, A.STOP_B, A.PASS_RESPONSE)),
    (S.CALLING, I.RESP_2XX): (S.ACCEPTED, (A.STOP_A, A.STOP_B, A.PASS_RESPONSE, A.START_M)),
    (S.CALLING, I.RESP_3XX_6XX): (S.COMPLETED, _ICT_FINAL),
    (S.PROCEEDING, I.RESP_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, I.RESP_2XX): (S.ACCEPTED, (A.STOP_B, A.PASS_RESPONSE, A.START_M)),
    (S.PROCEEDING, I.RESP_3XX_6XX): (S.COMPLETED, _ICT_FINAL),
    (S.PROCEEDING, I.TU_CANCEL): (S.PROCEEDING, (A.START_B,)),
    (S.PROCEEDING, I.TIMER_B): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.ACCEPTED, I.RESP_2XX): (S.ACCEPTED, (A.PASS_RESPONSE,)),
    (S.ACCEPTED, I.TU_CANCEL): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, ()),
    (S.COMPLETED, I.RESP_3XX_6XX): (S.COMPLETED, (A.SEND_ACK, A.ABSORB)),
    (S.COMPLETED, I.TU_CANCEL): (S.COMPLETED, ()),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, ()),
}

# --- non-INVITE client transaction: RFC 3261 §17.1.2 Figure 6 ------------------------------
_NICT_FINAL = (A.STOP_E, A.STOP_F, A.PASS_RESPONSE, A.START_K)
NICT_TABLE: Table = {
    (S.TRYING, I.TIMER_E): (S.TRYING, (A.RETRANSMIT, A.BACKOFF_E)),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.TRYING, I.RESP_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.TRYING, I.RESP_2XX): (S.COMPLETED, _NICT_FINAL),
    (S.TRYING, I.RESP_3XX_6XX): (S.COMPLETED, _NICT_FINAL),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (A.RETRANSMIT, A.RESET_E_T2)),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, I.RESP_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, I.RESP_2XX): (S.COMPLETED, _NICT_FINAL),
    (S.PROCEEDING, I.RESP_3XX_6XX): (S.COMPLETED, _NICT_FINAL),
    # Completed buffers response retransmissions (§17.1.2.2).
    **_rows((S.COMPLETED,), I.RESP_1XX, (S.COMPLETED, (A.ABSORB,))),
    **_rows((S.COMPLETED,), I.RESP_2XX, (S.COMPLETED, (A.ABSORB,))),
    **_rows((S.COMPLETED,), I.RESP_3XX_6XX, (S.COMPLETED, (A.ABSORB,))),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, ()),
}

# --- INVITE server transaction: RFC 3261 §17.2.1 Figure 7 + RFC 6026 §7.1, §8.5-8.7 --------
IST_TABLE: Table = {
    (S.PROCEEDING, I.TIMER_TRYING): (S.PROCEEDING, (A.SEND_100,)),
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.RETRANSMIT, A.ABSORB)),
    (S.PROCEEDING, I.CANCEL): (S.PROCEEDING, (A.NOTE_CANCEL,)),
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (A.STOP_TRYING, A.SEND_RESPONSE)),
    (S.PROCEEDING, I.TU_2XX): (
        S.ACCEPTED,
        (A.STOP_TRYING, A.SEND_RESPONSE, A.START_G_2XX, A.START_L),
    ),
    (S.PROCEEDING, I.TU_3XX_6XX): (
        S.COMPLETED,
        (A.STOP_TRYING, A.SEND_RESPONSE, A.START_G, A.START_H),
    ),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.RETRANSMIT, A.ABSORB)),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (A.RETRANSMIT, A.BACKOFF_G)),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.COMPLETED, I.ACK): (S.CONFIRMED, (A.STOP_G, A.STOP_H, A.START_I)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.CONFIRMED, I.ACK): (S.CONFIRMED, (A.ABSORB,)),
    (S.CONFIRMED, I.REQUEST): (S.CONFIRMED, (A.ABSORB,)),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, ()),
    (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, (A.ABSORB,)),
    (S.ACCEPTED, I.ACK): (S.ACCEPTED, (A.STOP_G, A.NOTE_ACKED, A.PASS_ACK)),
    (S.ACCEPTED, I.TU_2XX): (S.ACCEPTED, (A.SEND_RESPONSE,)),
    (S.ACCEPTED, I.TIMER_G): (S.ACCEPTED, (A.RETRANSMIT, A.BACKOFF_G)),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, (A.REPORT_UNACKED,)),
}

# --- non-INVITE server transaction: RFC 3261 §17.2.2 Figure 8 ------------------------------
NIST_TABLE: Table = {
    (S.TRYING, I.REQUEST): (S.TRYING, (A.ABSORB,)),
    (S.TRYING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.TRYING, I.TU_2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.TRYING, I.TU_3XX_6XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.RETRANSMIT, A.ABSORB)),
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, I.TU_3XX_6XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.RETRANSMIT, A.ABSORB)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, ()),
}

_RESP = (I.RESP_1XX, I.RESP_2XX, I.RESP_3XX_6XX, I.TRANSPORT_ERROR)
_TU_RESP = (I.TU_1XX, I.TU_2XX, I.TU_3XX_6XX)

ICT = Machine(
    name="ICT",
    states=frozenset({S.CALLING, S.PROCEEDING, S.ACCEPTED, S.COMPLETED, S.TERMINATED}),
    inputs=frozenset(
        {*_RESP, I.TU_CANCEL, I.TIMER_A, I.TIMER_B, I.TIMER_D, I.TIMER_M}
    ),
    start=(S.CALLING, (A.SEND_REQUEST, A.START_A, A.START_B)),
    table=ICT_TABLE,
    invite=True,
    client=True,
)
NICT = Machine(
    name="NICT",
    states=frozenset({S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
    inputs=frozenset({*_RESP, I.TIMER_E, I.TIMER_F, I.TIMER_K}),
    start=(S.TRYING, (A.SEND_REQUEST, A.START_E, A.START_F)),
    table=NICT_TABLE,
    invite=False,
    client=True,
)
IST = Machine(
    name="IST",
    states=frozenset({S.PROCEEDING, S.ACCEPTED, S.COMPLETED, S.CONFIRMED, S.TERMINATED}),
    inputs=frozenset(
        {
            I.REQUEST, I.ACK, I.CANCEL, I.TRANSPORT_ERROR, *_TU_RESP,
            I.TIMER_TRYING, I.TIMER_G, I.TIMER_H, I.TIMER_I, I.TIMER_L,
        }
    ),
    start=(S.PROCEEDING, (A.PASS_REQUEST, A.START_TRYING)),
    table=IST_TABLE,
    invite=True,
    client=False,
)
NIST = Machine(
    name="NIST",
    states=frozenset({S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
    inputs=frozenset({I.REQUEST, I.TRANSPORT_ERROR, *_TU_RESP, I.TIMER_J}),
    start=(S.TRYING, (A.PASS_REQUEST,)),
    table=NIST_TABLE,
    invite=False,
    client=False,
)

MACHINES: tuple[Machine, ...] = (ICT, NICT, IST, NIST)
