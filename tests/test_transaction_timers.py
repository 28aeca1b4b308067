"""Retransmission and timeout schedules on a virtual clock (RFC 3261 §17, Table 4)."""

from __future__ import annotations

import pytest
from txkit import PHONE_TCP, PHONE_UDP, TCP, UDP, Clock, request, response, same

from sipstack.message import make_response
from sipstack.transaction import (
    LayerConfig,
    RequestReceived,
    ResponseReceived,
    State,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
)


def layer(**kw: object) -> TransactionLayer:
    return TransactionLayer(LayerConfig(**kw))  # type: ignore[arg-type]


def test_timer_a_doubles_without_cap_until_b() -> None:
    clock = Clock(layer())
    key = clock.layer.send_request(request("INVITE"), UDP, 0.0)
    clock.advance(100.0)
    # Sent at 0, then after 0.5, 1, 2, 4, 8, 16 (the 32 s interval would end after B).
    assert clock.times("INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = clock.layer.events()
    assert TransactionTimeout(key, "B") in events
    assert events[-1] == TransactionTerminated(key)
    timeout_at = [e for e in events if isinstance(e, TransactionTimeout)]
    assert len(timeout_at) == 1
    assert clock.layer.active_count() == 0
    assert clock.layer.get_timer() is None


def test_timer_b_fires_at_64_t1() -> None:
    clock = Clock(layer())
    clock.layer.send_request(request("INVITE"), UDP, 0.0)
    clock.advance(31.999)
    assert not any(isinstance(e, TransactionTimeout) for e in clock.layer.events())
    clock.advance(32.0)
    assert any(isinstance(e, TransactionTimeout) for e in clock.layer.events())


def test_timer_e_doubles_capped_at_t2_until_f() -> None:
    clock = Clock(layer())
    key = clock.layer.send_request(request("OPTIONS"), UDP, 0.0)
    clock.advance(100.0)
    # Intervals 0.5, 1, 2, 4, 4, 4, ... ; F at 32 s.
    expected = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert clock.times("OPTIONS") == expected
    assert TransactionTimeout(key, "F") in clock.layer.events()
    assert clock.layer.active_count() == 0


def test_timer_e_in_proceeding_is_t2() -> None:
    clock = Clock(layer())
    req = request("BYE")
    clock.layer.send_request(req, UDP, 0.0)
    clock.advance(0.6)  # retransmitted at 0.5, next E due at 1.5
    clock.layer.receive(response(req, 100), UDP, 0.6)
    clock.advance(20.0)
    # The pending E (1.5) still fires; after that every T2.
    assert clock.times("BYE") == [0.0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5]


def test_custom_timer_config() -> None:
    cfg = TimerConfig(t1=0.1, t2=0.4, t4=1.0)
    clock = Clock(TransactionLayer(LayerConfig(timers=cfg)))
    clock.layer.send_request(request("OPTIONS"), UDP, 0.0)
    clock.advance(10.0)
    times = clock.times("OPTIONS")
    assert times[:6] == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.1, 1.5])
    assert times[-1] < 6.4
    assert any(isinstance(e, TransactionTimeout) for e in clock.layer.events())
    with pytest.raises(ValueError):
        TimerConfig(t1=0)
    with pytest.raises(ValueError):
        TimerConfig(t1=5.0, t2=4.0)


def test_no_retransmission_on_reliable_transport() -> None:
    clock = Clock(layer())
    clock.layer.send_request(request("INVITE", transport="TCP"), TCP, 0.0)
    clock.layer.send_request(request("OPTIONS", transport="TCP"), TCP, 0.0)
    clock.advance(100.0)
    assert clock.times("INVITE") == [0.0]
    assert clock.times("OPTIONS") == [0.0]
    timeouts = [e for e in clock.layer.events() if isinstance(e, TransactionTimeout)]
    assert sorted(e.timer for e in timeouts) == ["B", "F"]
    assert clock.layer.active_count() == 0


@pytest.mark.parametrize(("peer", "transport", "d"), [(UDP, "UDP", 32.0), (TCP, "TCP", 0.0)])
def test_timer_d(peer: object, transport: str, d: float) -> None:
    clock = Clock(layer())
    invite = request("INVITE", transport=transport)
    key = clock.layer.send_request(invite, peer, 0.0)  # type: ignore[arg-type]
    clock.layer.receive(response(invite, 486), peer, 0.2)  # type: ignore[arg-type]
    assert clock.layer.state_of(key) is (State.COMPLETED if d else None)
    clock.advance(0.2 + d - 0.001)
    if d:
        assert clock.layer.state_of(key) is State.COMPLETED
    clock.advance(0.2 + d)
    assert clock.layer.state_of(key) is None


@pytest.mark.parametrize(("peer", "transport", "k"), [(UDP, "UDP", 5.0), (TCP, "TCP", 0.0)])
def test_timer_k(peer: object, transport: str, k: float) -> None:
    clock = Clock(layer())
    req = request("REGISTER", transport=transport)
    key = clock.layer.send_request(req, peer, 0.0)  # type: ignore[arg-type]
    clock.layer.receive(response(req, 200), peer, 0.1)  # type: ignore[arg-type]
    assert clock.layer.state_of(key) is (State.COMPLETED if k else None)
    clock.advance(0.1 + k - 0.001)
    assert clock.layer.state_of(key) is (State.COMPLETED if k else None)
    clock.advance(0.1 + k)
    assert clock.layer.state_of(key) is None
    assert clock.times("REGISTER") == [0.0]  # no retransmission after the final response


def _server_key(clock: Clock, req: object, peer: object) -> object:
    clock.layer.receive(req, peer, clock.now)  # type: ignore[arg-type]
    (ev,) = [e for e in clock.layer.events() if isinstance(e, RequestReceived)]
    return ev.key


def test_timer_g_capped_at_t2_and_h_timeout() -> None:
    clock = Clock(layer())
    invite = request("INVITE")
    key = _server_key(clock, invite, PHONE_UDP)
    clock.layer.send_response(key, make_response(invite, 486, to_tag="x"), 0.0)  # type: ignore[arg-type]
    clock.advance(100.0)
    # 486 at 0, then G: 0.5, 1, 2, 4, 4, 4 ... until H at 32.
    expected = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert clock.times("SIP/2.0 486") == expected
    assert TransactionTimeout(key, "H") in clock.layer.events()  # type: ignore[arg-type]
    assert clock.layer.active_count() == 0


@pytest.mark.parametrize(
    ("peer", "transport", "i"), [(PHONE_UDP, "UDP", 5.0), (PHONE_TCP, "TCP", 0.0)]
)
def test_ack_stops_g_and_timer_i(peer: object, transport: str, i: float) -> None:
    from txkit import ack_for

    clock = Clock(layer())
    invite = request("INVITE", transport=transport)
    key = _server_key(clock, invite, peer)
    resp = make_response(invite, 404, to_tag="x")
    clock.layer.send_response(key, resp, 0.0)  # type: ignore[arg-type]
    clock.advance(0.7)
    clock.layer.receive(ack_for(invite, resp), peer, 0.7)  # type: ignore[arg-type]
    assert clock.layer.state_of(key) is (State.CONFIRMED if i else None)  # type: ignore[arg-type]
    clock.advance(0.7 + i - 0.001)
    assert clock.layer.state_of(key) is (State.CONFIRMED if i else None)  # type: ignore[arg-type]
    clock.advance(100.0)
    assert clock.layer.state_of(key) is None  # type: ignore[arg-type]
    assert clock.times("SIP/2.0 404") == ([0.0, 0.5] if i else [0.0])
    assert not any(isinstance(e, TransactionTimeout) for e in clock.layer.events())


@pytest.mark.parametrize(
    ("peer", "transport", "j"), [(PHONE_UDP, "UDP", 32.0), (PHONE_TCP, "TCP", 0.0)]
)
def test_timer_j(peer: object, transport: str, j: float) -> None:
    clock = Clock(layer())
    req = request("BYE", transport=transport)
    key = _server_key(clock, req, peer)
    clock.layer.send_response(key, make_response(req, 200), 1.0)  # type: ignore[arg-type]
    clock.now = 1.0
    clock.advance(1.0 + j - 0.001)
    assert clock.layer.state_of(key) is (State.COMPLETED if j else None)  # type: ignore[arg-type]
    clock.advance(1.0 + j)
    assert clock.layer.state_of(key) is None  # type: ignore[arg-type]
    assert clock.times("SIP/2.0 200") == [1.0]  # server never retransmits on its own


def test_100_trying_after_200ms_if_tu_silent() -> None:
    clock = Clock(layer())
    invite = request("INVITE")
    _server_key(clock, invite, PHONE_UDP)
    clock.advance(0.199)
    assert clock.sent == []
    clock.advance(0.2)
    assert [s.line for s in clock.sent] == ["SIP/2.0 100 Trying"]
    assert clock.sent[0].at == pytest.approx(0.2)
    assert b"tag=" not in clock.sent[0].data.split(b"\r\nTo:", 1)[1].split(b"\r\n", 1)[0]
    # An INVITE retransmission now gets the 100 again.
    clock.layer.receive(same(invite), PHONE_UDP, 0.5)
    assert [s.line for s in clock.drain()] == ["SIP/2.0 100 Trying"]


def test_no_100_trying_if_tu_answers_within_200ms() -> None:
    clock = Clock(layer())
    invite = request("INVITE")
    key = _server_key(clock, invite, PHONE_UDP)
    clock.layer.send_response(key, make_response(invite, 180, to_tag="a"), 0.05)  # type: ignore[arg-type]
    clock.advance(10.0)
    assert [s.line for s in clock.sent] == ["SIP/2.0 180 Ringing"]


def test_100_trying_on_reliable_transport_too() -> None:
    clock = Clock(layer())
    _server_key(clock, request("INVITE", transport="TCP"), PHONE_TCP)
    clock.advance(0.3)
    assert [(s.line, s.peer) for s in clock.sent] == [("SIP/2.0 100 Trying", PHONE_TCP)]


def test_trying_zero_sends_100_at_once() -> None:
    clock = Clock(TransactionLayer(LayerConfig(timers=TimerConfig(trying=0.0))))
    _server_key(clock, request("INVITE"), PHONE_UDP)
    assert [s.line for s in clock.drain()] == ["SIP/2.0 100 Trying"]


def test_timer_m_keeps_ict_for_2xx_retransmissions() -> None:
    clock = Clock(layer())
    invite = request("INVITE")
    key = clock.layer.send_request(invite, UDP, 0.0)
    ok = response(invite, 200)
    clock.layer.receive(ok, UDP, 1.0)
    clock.layer.receive(response(invite, 200), UDP, 1.5)
    clock.now = 1.5
    clock.advance(1.0 + 31.999)
    assert clock.layer.state_of(key) is State.ACCEPTED
    clock.advance(33.0)
    assert clock.layer.state_of(key) is None
    got = [e for e in clock.layer.events() if isinstance(e, ResponseReceived)]
    assert [e.response.status for e in got] == [200, 200]
    assert clock.times("ACK") == []  # the ACK for a 2xx belongs to the TU
