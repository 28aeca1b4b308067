"""The registrar's binding logic (RFC 3261 §10.3, RFC 5626), table-driven where it fits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import pytest

from sipstack.errors import SipParseError
from sipstack.headers import parse_name_addr
from sipstack.message import Request, Response, parse_message
from sipstack.peer import Peer
from sipstack.registrar import (
    Binding,
    Delete,
    Registrar,
    RegistrarConfig,
    Upsert,
)

AOR = "u1000"
T0 = 1_700_000_000.0
PEER = Peer("udp", "198.51.100.7", 40123)
CFG = RegistrarConfig(min_expires=60, max_expires=3600, default_expires=1800, max_contacts=3)


def register(
    contacts: list[str] | None = None,
    *,
    expires: int | str | None = None,
    call_id: str = "call-1",
    cseq: int = 1,
    user_agent: str | None = "TestPhone/1.0",
) -> Request:
    lines = [
        "REGISTER sip:pbx.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK" + f"{call_id}-{cseq}",
        "Max-Forwards: 70",
        "From: <sip:1000@pbx.example.com>;tag=ft",
        "To: <sip:1000@pbx.example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts or []]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def reply_contacts(response: Response) -> dict[str, dict[str, str | None]]:
    """Contact URI -> header params, as the 200 lists them."""
    out = {}
    for value in response.headers.values("contact"):
        na = parse_name_addr(value)
        out[na.raw_uri] = na.params
    return out


def contacts_of(reg: Registrar, now: float, aor: str = AOR) -> list[str]:
    return [b.contact for b in reg.lookup(aor, now)]


# --------------------------------------------------------------------------- expiry


@dataclass
class ExpiryCase:
    name: str
    contact: str
    header: int | str | None
    status: int
    granted: int | None = None  # expires listed in the 200 (None: not bound)


EXPIRY_CASES = [
    ExpiryCase("default when neither", "<sip:1000@192.0.2.10>", None, 200, 1800),
    ExpiryCase("from header", "<sip:1000@192.0.2.10>", 600, 200, 600),
    ExpiryCase("param beats header", "<sip:1000@192.0.2.10>;expires=120", 600, 200, 120),
    ExpiryCase("param beats header 0", "<sip:1000@192.0.2.10>;expires=300", 0, 200, 300),
    ExpiryCase("capped at max", "<sip:1000@192.0.2.10>", 100000, 200, 3600),
    ExpiryCase("param capped at max", "<sip:1000@192.0.2.10>;expires=7200", None, 200, 3600),
    ExpiryCase("exactly min", "<sip:1000@192.0.2.10>", 60, 200, 60),
    ExpiryCase("below min header", "<sip:1000@192.0.2.10>", 59, 423),
    ExpiryCase("below min param", "<sip:1000@192.0.2.10>;expires=1", 3600, 423),
    ExpiryCase("zero on unknown is fine", "<sip:1000@192.0.2.10>", 0, 200, None),
    ExpiryCase("huge header", "<sip:1000@192.0.2.10>", "99999999999999999999", 200, 3600),
    ExpiryCase("addr-spec contact", "sip:1000@192.0.2.10;expires=90", None, 200, 90),
]


@pytest.mark.parametrize("case", EXPIRY_CASES, ids=lambda c: c.name)
def test_expiry_rules(case: ExpiryCase) -> None:
    reg = Registrar(CFG)
    out = reg.process(register([case.contact], expires=case.header), AOR, PEER, T0, to_tag="tt")
    assert out.response.status == case.status
    if case.status == 423:
        assert out.response.headers.get("min-expires") == "60"
        assert out.changes == ()
        assert reg.lookup(AOR, T0) == []
        return
    listed = reply_contacts(out.response)
    if case.granted is None:
        assert listed == {}
        assert reg.lookup(AOR, T0) == []
    else:
        assert listed == {"sip:1000@192.0.2.10": {"expires": str(case.granted)}}
        [b] = reg.lookup(AOR, T0)
        assert b.expires_at == T0 + case.granted


@pytest.mark.parametrize(
    ("contact", "header"),
    [
        ("<sip:1000@192.0.2.10>", "abc"),
        ("<sip:1000@192.0.2.10>", "-5"),
        ("<sip:1000@192.0.2.10>;expires=soon", None),
        ("<sip:1000@192.0.2.10>;q=2", None),
        ("<sip:1000@192.0.2.10>;q=abc", None),
        # str.isdigit() accepts "²" but int() does not: must still be a typed 400.
        ("<sip:1000@192.0.2.10>", "6\u00b2"),
        ("<sip:1000@192.0.2.10>;expires=6\u00b2", None),
    ],
)
def test_malformed_expires_or_q_is_a_typed_400(contact: str, header: str | None) -> None:
    reg = Registrar(CFG)
    with pytest.raises(SipParseError) as info:
        reg.process(register([contact], expires=header), AOR, PEER, T0)
    assert info.value.status == 400
    assert reg.lookup(AOR, T0) == []


def test_non_sip_contact_is_400() -> None:
    reg = Registrar(CFG)
    out = reg.process(register(["<tel:+15551234>"]), AOR, PEER, T0)
    assert out.response.status == 400
    assert reg.lookup(AOR, T0) == []


@pytest.mark.parametrize(
    "contact",
    [
        '<sip:1000@192.0.2.10>;+sip.instance="<urn:uuid:a>";reg-id=\u00b2',
        '<sip:1000@192.0.2.10>;+sip.instance="<urn:uuid:a>";reg-id=99999999999999999999999',
        '<sip:1000@192.0.2.10>;+sip.instance="<urn:uuid:a>";reg-id=0',
        '<sip:1000@192.0.2.10>;+sip.instance="<urn:uuid:a>";reg-id=x',
    ],
)
def test_bad_reg_id_is_a_typed_400(contact: str) -> None:
    reg = Registrar(CFG)
    with pytest.raises(SipParseError) as info:
        reg.process(register([contact]), AOR, PEER, T0)
    assert info.value.status == 400
    assert reg.lookup(AOR, T0) == []


def raw_register(replace: dict[bytes, bytes]) -> Request:
    data = register(["<sip:1000@192.0.2.10>"]).to_bytes()
    for old, new in replace.items():
        data = data.replace(old, new)
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


@pytest.mark.parametrize(
    "replace",
    [
        {b"<sip:1000@192.0.2.10>": b"<sip:1000@192.0.2.10;x=\xff>"},
        {b"<sip:1000@192.0.2.10>": b'<sip:1000@192.0.2.10>;+sip.instance="<urn:\xe9>"'},
        {b"Call-ID: call-1": b"Call-ID: call-\xe9"},
    ],
)
def test_non_ascii_in_stored_fields_is_400(replace: dict[bytes, bytes]) -> None:
    # Text decoded with surrogateescape cannot be encoded as UTF-8: storing it would
    # make SQLite refuse the whole batch of binding changes.
    reg = Registrar(CFG)
    with pytest.raises(SipParseError) as info:
        reg.process(raw_register(replace), AOR, PEER, T0)
    assert info.value.status == 400
    assert reg.lookup(AOR, T0) == []


def test_stored_text_is_always_valid_utf8() -> None:
    reg = Registrar(CFG)
    req = raw_register({b"User-Agent: TestPhone/1.0": b"User-Agent: T\xe9l\xe9phone " + b"x" * 500})
    out = reg.process(req, AOR, PEER, T0)
    assert out.response.status == 200
    [change] = out.changes
    assert isinstance(change, Upsert)
    b = change.binding
    for text in (b.aor, b.contact, b.call_id, b.user_agent, b.source.host):
        text.encode("utf-8")  # must not raise
    assert b.user_agent.startswith("T\ufffdl\ufffdphone")
    assert len(b.user_agent) <= 256


# --------------------------------------------------------------------------- many contacts


def test_several_contacts_per_user_in_one_and_in_several_requests() -> None:
    reg = Registrar(CFG)
    out = reg.process(
        register(["<sip:1000@192.0.2.10:5060>", "<sip:1000@192.0.2.11:5062;transport=tcp>"],
                 expires=600),
        AOR, PEER, T0,
    )
    assert out.response.status == 200
    assert set(reply_contacts(out.response)) == {
        "sip:1000@192.0.2.10:5060", "sip:1000@192.0.2.11:5062;transport=tcp",
    }
    assert sum(isinstance(c, Upsert) for c in out.changes) == 2
    # A second phone of the same user, another Call-ID.
    out = reg.process(register(["<sip:1000@192.0.2.12>"], call_id="other"), AOR, PEER, T0 + 5)
    assert out.response.status == 200
    assert len(reply_contacts(out.response)) == 3
    assert len(reg.lookup(AOR, T0 + 5)) == 3
    # Another user is independent.
    out = reg.process(register(["<sip:2000@192.0.2.20>"]), "u2000", PEER, T0)
    assert set(reply_contacts(out.response)) == {"sip:2000@192.0.2.20"}
    assert reg.count() == 4


def test_the_200_lists_remaining_expires_and_has_a_date() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>"], expires=600), AOR, PEER, T0)
    out = reg.process(
        register(["<sip:1000@192.0.2.11>;q=0.7"], expires=900, call_id="c2"), AOR, PEER, T0 + 100
    )
    listed = reply_contacts(out.response)
    assert listed == {
        "sip:1000@192.0.2.10": {"expires": "500"},
        "sip:1000@192.0.2.11": {"expires": "900", "q": "0.7"},
    }
    date = out.response.headers.get("date")
    assert date is not None and date.endswith("GMT")
    assert parsedate_to_datetime(date).timestamp() == T0 + 100
    assert out.response.headers.count("date") == 1


def test_query_without_contact_lists_bindings_and_changes_nothing() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>"], expires=600), AOR, PEER, T0)
    out = reg.process(register([], call_id="q", cseq=9), AOR, PEER, T0 + 10)
    assert out.response.status == 200
    assert reply_contacts(out.response) == {"sip:1000@192.0.2.10": {"expires": "590"}}
    assert out.changes == ()
    assert out.response.headers.get("date") is not None


def test_response_copies_request_and_carries_to_tag() -> None:
    reg = Registrar(CFG)
    req = register(["<sip:1000@192.0.2.10>"])
    out = reg.process(req, AOR, PEER, T0, to_tag="abc")
    resp = out.response
    assert resp.headers.get("call-id") == req.call_id
    assert resp.headers.get("cseq") == "1 REGISTER"
    assert resp.headers.get_all("via") == req.headers.get_all("via")
    assert resp.to.tag == "abc"
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, Response) and parsed.status == 200


# --------------------------------------------------------------------------- unregister


def test_unregister_one_contact_with_expires_zero() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>", "<sip:1000@192.0.2.11>"]), AOR, PEER, T0)
    out = reg.process(
        register(["<sip:1000@192.0.2.10>;expires=0"], cseq=2), AOR, PEER, T0 + 1
    )
    assert out.response.status == 200
    assert out.changes == (Delete(AOR, "sip:1000@192.0.2.10"),)
    assert contacts_of(reg, T0 + 1) == ["sip:1000@192.0.2.11"]
    assert set(reply_contacts(out.response)) == {"sip:1000@192.0.2.11"}


def test_wildcard_with_expires_zero_removes_every_binding() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>"], call_id="a"), AOR, PEER, T0)
    reg.process(register(["<sip:1000@192.0.2.11>"], call_id="b", cseq=50), AOR, PEER, T0)
    out = reg.process(register(["*"], expires=0, call_id="a", cseq=2), AOR, PEER, T0 + 1)
    assert out.response.status == 200
    assert set(out.changes) == {
        Delete(AOR, "sip:1000@192.0.2.10"), Delete(AOR, "sip:1000@192.0.2.11"),
    }
    assert reply_contacts(out.response) == {}
    assert reg.lookup(AOR, T0 + 1) == []
    assert AOR not in reg.aors()
    assert reg.count() == 0
    # Retransmission of the same wildcard request: still 200, nothing more to do.
    again = reg.process(register(["*"], expires=0, call_id="a", cseq=2), AOR, PEER, T0 + 2)
    assert again.response.status == 200
    assert again.changes == ()


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        (["*"], None),
        (["*"], 60),
        (["*", "<sip:1000@192.0.2.10>"], 0),
        (["<sip:1000@192.0.2.10>", "*"], 0),
    ],
)
def test_wildcard_misuse_is_400_and_changes_nothing(
    contacts: list[str], expires: int | None
) -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.9>"], call_id="x"), AOR, PEER, T0)
    out = reg.process(register(contacts, expires=expires, cseq=5), AOR, PEER, T0 + 1)
    assert out.response.status == 400
    assert out.changes == ()
    assert contacts_of(reg, T0 + 1) == ["sip:1000@192.0.2.9"]


def test_wildcard_out_of_order_is_500_and_removes_nothing() -> None:
    reg = Registrar(CFG)
    # Two bindings: one from another Call-ID (would be removed), one whose stored
    # CSeq is higher than the wildcard's (aborts the whole request).
    reg.process(register(["<sip:1000@192.0.2.10>"], call_id="other", cseq=1), AOR, PEER, T0)
    reg.process(register(["<sip:1000@192.0.2.11>"], call_id="same", cseq=10), AOR, PEER, T0)
    out = reg.process(register(["*"], expires=0, call_id="same", cseq=5), AOR, PEER, T0 + 1)
    assert out.response.status == 500
    assert out.changes == ()
    assert sorted(contacts_of(reg, T0 + 1)) == ["sip:1000@192.0.2.10", "sip:1000@192.0.2.11"]


def test_wildcard_with_same_cseq_as_a_binding_is_refused() -> None:
    # RFC 3261 §10.3 step 6: same Call-ID, CSeq not higher -> the update is aborted.
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>"], call_id="same", cseq=7), AOR, PEER, T0)
    out = reg.process(register(["*"], expires=0, call_id="same", cseq=7), AOR, PEER, T0 + 1)
    assert out.response.status == 500
    assert out.changes == ()
    assert contacts_of(reg, T0 + 1) == ["sip:1000@192.0.2.10"]


# --------------------------------------------------------------------------- ordering


@dataclass
class OrderCase:
    name: str
    first: tuple[str, int]  # call-id, cseq of the request that wrote the binding
    second: tuple[str, int]
    status: int
    updated: bool  # did the second request change the binding?


ORDER_CASES = [
    OrderCase("higher cseq same call-id", ("c", 5), ("c", 6), 200, True),
    OrderCase("lower cseq same call-id", ("c", 5), ("c", 4), 500, False),
    OrderCase("same cseq same call-id is a retransmission", ("c", 5), ("c", 5), 200, False),
    OrderCase("new call-id lower cseq", ("c", 5), ("d", 1), 200, True),
    OrderCase("new call-id same cseq", ("c", 5), ("d", 5), 200, True),
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=lambda c: c.name)
def test_call_id_and_cseq_ordering(case: OrderCase) -> None:
    reg = Registrar(CFG)
    c1, s1 = case.first
    reg.process(register(["<sip:1000@192.0.2.10>"], expires=600, call_id=c1, cseq=s1), AOR,
                PEER, T0)
    c2, s2 = case.second
    out = reg.process(
        register(["<sip:1000@192.0.2.10>"], expires=1200, call_id=c2, cseq=s2), AOR, PEER,
        T0 + 10,
    )
    assert out.response.status == case.status
    [b] = reg.lookup(AOR, T0 + 10)
    if case.updated:
        assert (b.call_id, b.cseq, b.expires_at) == (c2, s2, T0 + 10 + 1200)
        assert [type(c) for c in out.changes] == [Upsert]
    else:
        assert (b.call_id, b.cseq, b.expires_at) == (c1, s1, T0 + 600)
        assert out.changes == ()


def test_out_of_order_request_changes_nothing_at_all() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>"], call_id="c", cseq=5), AOR, PEER, T0)
    # A late request that would add a new contact and touch the old one: abort as a whole.
    out = reg.process(
        register(["<sip:1000@192.0.2.11>", "<sip:1000@192.0.2.10>"], call_id="c", cseq=4),
        AOR, PEER, T0 + 1,
    )
    assert out.response.status == 500
    assert out.changes == ()
    assert contacts_of(reg, T0 + 1) == ["sip:1000@192.0.2.10"]


def test_retransmission_is_idempotent() -> None:
    reg = Registrar(CFG)
    req = register(["<sip:1000@192.0.2.10>", "<sip:1000@192.0.2.11>;expires=120"], expires=600)
    first = reg.process(req, AOR, PEER, T0, to_tag="t")
    again = reg.process(
        register(["<sip:1000@192.0.2.10>", "<sip:1000@192.0.2.11>;expires=120"], expires=600),
        AOR, PEER, T0 + 2, to_tag="t",
    )
    assert first.response.status == again.response.status == 200
    assert again.changes == ()
    assert reply_contacts(again.response) == {
        "sip:1000@192.0.2.10": {"expires": "598"},
        "sip:1000@192.0.2.11": {"expires": "118"},
    }
    assert [b.expires_at for b in reg.lookup(AOR, T0 + 2)] == [T0 + 600, T0 + 120]


def test_retransmitted_unregister_is_idempotent() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>"], cseq=1), AOR, PEER, T0)
    first = reg.process(register(["<sip:1000@192.0.2.10>"], expires=0, cseq=2), AOR, PEER, T0)
    again = reg.process(register(["<sip:1000@192.0.2.10>"], expires=0, cseq=2), AOR, PEER, T0)
    assert first.response.status == again.response.status == 200
    assert len(first.changes) == 1 and again.changes == ()
    assert reg.lookup(AOR, T0) == []


def test_contact_uri_matching_ignores_case_of_host_and_escapes() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:%31000@PHONE.example.com:5060>"]), AOR, PEER, T0)
    out = reg.process(register(["<sip:1000@phone.example.com:5060>"], cseq=2), AOR, PEER, T0)
    assert out.response.status == 200
    assert len(reg.lookup(AOR, T0)) == 1
    assert contacts_of(reg, T0) == ["sip:1000@phone.example.com:5060"]
    # The old spelling is deleted from storage, the new one written.
    assert Delete(AOR, "sip:%31000@PHONE.example.com:5060") in out.changes


def test_different_port_or_transport_is_a_different_contact() -> None:
    reg = Registrar(RegistrarConfig(max_contacts=10))
    for i, c in enumerate([
        "<sip:1000@192.0.2.10>",
        "<sip:1000@192.0.2.10:5060>",
        "<sip:1000@192.0.2.10;transport=tcp>",
        "<sips:1000@192.0.2.10>",
    ]):
        reg.process(register([c], call_id=f"c{i}"), AOR, PEER, T0)
    assert len(reg.lookup(AOR, T0)) == 4


# --------------------------------------------------------------------------- limits


def test_contact_limit_evicts_the_least_recently_refreshed() -> None:
    cfg = RegistrarConfig(min_expires=60, max_expires=3600, default_expires=600, max_contacts=3)
    reg = Registrar(cfg)
    reg.process(register(["<sip:1000@192.0.2.1>"], call_id="a"), AOR, PEER, T0)
    reg.process(register(["<sip:1000@192.0.2.2>"], call_id="b"), AOR, PEER, T0 + 10)
    reg.process(register(["<sip:1000@192.0.2.3>"], call_id="c"), AOR, PEER, T0 + 20)
    # .1 refreshes, so .2 is now the stalest.
    reg.process(register(["<sip:1000@192.0.2.1>"], call_id="a", cseq=2), AOR, PEER, T0 + 30)
    out = reg.process(register(["<sip:1000@192.0.2.4>"], call_id="d"), AOR, PEER, T0 + 40)
    assert out.response.status == 200
    assert [b.contact for b in out.evicted] == ["sip:1000@192.0.2.2"]
    assert Delete(AOR, "sip:1000@192.0.2.2") in out.changes
    assert sorted(contacts_of(reg, T0 + 40)) == [
        "sip:1000@192.0.2.1", "sip:1000@192.0.2.3", "sip:1000@192.0.2.4",
    ]
    assert set(reply_contacts(out.response)) == {
        "sip:1000@192.0.2.1", "sip:1000@192.0.2.3", "sip:1000@192.0.2.4",
    }


def test_contact_limit_never_evicts_what_this_request_just_registered() -> None:
    # The phone asking now must get in even with a short expiry: the binding it asked
    # for is the most recently refreshed one, whatever its expires.
    cfg = RegistrarConfig(min_expires=60, max_expires=3600, default_expires=3600, max_contacts=2)
    reg = Registrar(cfg)
    reg.process(register(["<sip:1000@192.0.2.1>"], call_id="a"), AOR, PEER, T0)
    reg.process(register(["<sip:1000@192.0.2.2>"], call_id="b"), AOR, PEER, T0 + 1)
    out = reg.process(register(["<sip:1000@192.0.2.3>"], expires=60, call_id="c"), AOR, PEER,
                      T0 + 2)
    assert out.response.status == 200
    assert "sip:1000@192.0.2.3" in reply_contacts(out.response)
    assert "sip:1000@192.0.2.3" in contacts_of(reg, T0 + 2)
    assert [b.contact for b in out.evicted] == ["sip:1000@192.0.2.1"]
    assert Delete(AOR, "sip:1000@192.0.2.1") in out.changes


def test_contact_limit_with_too_many_contacts_in_one_request() -> None:
    reg = Registrar(RegistrarConfig(max_contacts=2))
    out = reg.process(
        register([f"<sip:1000@192.0.2.{i}>;expires={100 * i}" for i in range(1, 5)]), AOR, PEER,
        T0,
    )
    assert out.response.status == 200
    kept = contacts_of(reg, T0)
    assert len(kept) == 2
    assert set(reply_contacts(out.response)) == set(kept)
    upserted = {c.binding.contact for c in out.changes if isinstance(c, Upsert)}
    assert upserted == set(kept)  # evicted ones are never written
    assert len(out.evicted) == 2


def test_limit_counts_only_live_bindings() -> None:
    reg = Registrar(RegistrarConfig(max_contacts=2, min_expires=60))
    reg.process(register(["<sip:1000@192.0.2.1>"], expires=60, call_id="a"), AOR, PEER, T0)
    reg.process(register(["<sip:1000@192.0.2.2>"], expires=600, call_id="b"), AOR, PEER, T0)
    # .1 has expired (not yet swept); a new one fits without evicting .2.
    out = reg.process(register(["<sip:1000@192.0.2.3>"], call_id="c"), AOR, PEER, T0 + 61)
    assert out.evicted == ()
    assert sorted(contacts_of(reg, T0 + 61)) == ["sip:1000@192.0.2.2", "sip:1000@192.0.2.3"]


def test_an_expired_binding_does_not_block_a_new_registration() -> None:
    # Same Call-ID, a CSeq lower than the *expired* binding's (e.g. a phone that lost its
    # counter): the binding no longer exists, so there is nothing to be out of order with.
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.10>"], expires=60, call_id="c", cseq=9), AOR, PEER,
                T0)
    out = reg.process(register(["<sip:1000@192.0.2.10>"], call_id="c", cseq=1), AOR, PEER, T0 + 61)
    assert out.response.status == 200
    assert contacts_of(reg, T0 + 61) == ["sip:1000@192.0.2.10"]


# --------------------------------------------------------------------------- lookup


def test_lookup_orders_by_q_and_hides_expired() -> None:
    reg = Registrar(RegistrarConfig(max_contacts=10))
    reg.process(
        register([
            "<sip:1000@192.0.2.1>;q=0.1",
            "<sip:1000@192.0.2.2>;q=0.9",
            "<sip:1000@192.0.2.3>",
            "<sip:1000@192.0.2.4>;q=0.5;expires=60",
        ]),
        AOR, PEER, T0,
    )
    assert contacts_of(reg, T0) == [
        "sip:1000@192.0.2.3", "sip:1000@192.0.2.2", "sip:1000@192.0.2.4", "sip:1000@192.0.2.1",
    ]
    assert [b.q for b in reg.lookup(AOR, T0)] == [None, 0.9, 0.5, 0.1]
    assert contacts_of(reg, T0 + 60) == [
        "sip:1000@192.0.2.3", "sip:1000@192.0.2.2", "sip:1000@192.0.2.1",
    ]
    assert reg.lookup("nobody", T0) == []


def test_source_peer_and_user_agent_are_kept() -> None:
    reg = Registrar(CFG)
    src = Peer("tcp", "203.0.113.5", 51234)
    reg.process(register(["<sip:1000@10.0.0.5:5060;transport=tcp>"], user_agent="Yealink T46"),
                AOR, src, T0)
    [b] = reg.lookup(AOR, T0)
    assert b.source == src
    assert b.user_agent == "Yealink T46"
    assert b.contact == "sip:1000@10.0.0.5:5060;transport=tcp"
    # A refresh from a new NAT mapping moves the source.
    src2 = Peer("tcp", "203.0.113.5", 51999)
    reg.process(register(["<sip:1000@10.0.0.5:5060;transport=tcp>"], cseq=2), AOR, src2, T0 + 5)
    [b] = reg.lookup(AOR, T0 + 5)
    assert b.source == src2


# --------------------------------------------------------------------------- RFC 5626


INSTANCE = "urn:uuid:00000000-0000-1000-8000-000A95A0E128"


def test_instance_and_reg_id_replace_the_flow_binding() -> None:
    reg = Registrar(CFG)
    first = f'<sip:1000@192.0.2.10:5060>;+sip.instance="<{INSTANCE}>";reg-id=1'
    reg.process(register([first], call_id="boot1"), AOR, PEER, T0)
    # After a reboot: new Call-ID, new contact address, same instance and reg-id.
    second = f'<sip:1000@192.0.2.99:6000>;+sip.instance="<{INSTANCE}>";reg-id=1'
    out = reg.process(register([second], call_id="boot2"), AOR, PEER, T0 + 5)
    assert out.response.status == 200
    assert contacts_of(reg, T0 + 5) == ["sip:1000@192.0.2.99:6000"]
    assert Delete(AOR, "sip:1000@192.0.2.10:5060") in out.changes
    [b] = reg.lookup(AOR, T0 + 5)
    assert (b.instance_id, b.reg_id) == (INSTANCE, 1)
    # A second flow (reg-id=2) of the same instance is a separate binding.
    third = f'<sip:1000@192.0.2.99:6001>;+sip.instance="<{INSTANCE}>";reg-id=2'
    reg.process(register([third], call_id="boot2", cseq=2), AOR, PEER, T0 + 6)
    assert len(reg.lookup(AOR, T0 + 6)) == 2


def test_instance_without_reg_id_replaces_by_instance() -> None:
    reg = Registrar(CFG)
    reg.process(register([f'<sip:1000@192.0.2.10>;+sip.instance="<{INSTANCE}>"'], call_id="a"),
                AOR, PEER, T0)
    reg.process(register([f'<sip:1000@192.0.2.11>;+sip.instance="<{INSTANCE}>"'], call_id="b"),
                AOR, PEER, T0 + 1)
    assert contacts_of(reg, T0 + 1) == ["sip:1000@192.0.2.11"]


def test_the_200_echoes_instance_and_reg_id_as_rfc5626_writes_them() -> None:
    reg = Registrar(CFG)
    c = f'<sip:1000@192.0.2.10>;+sip.instance="<{INSTANCE}>";reg-id=1;expires=600'
    out = reg.process(register([c]), AOR, PEER, T0)
    [value] = out.response.headers.values("contact")
    params = parse_name_addr(value).params
    assert params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert params["reg-id"] == "1"
    assert params["expires"] == "600"


# --------------------------------------------------------------------------- expire / load


def test_expire_removes_due_bindings_and_reports_deletes() -> None:
    reg = Registrar(RegistrarConfig(max_contacts=10))
    reg.process(register(["<sip:1000@192.0.2.1>;expires=60", "<sip:1000@192.0.2.2>;expires=600"]),
                AOR, PEER, T0)
    reg.process(register(["<sip:2000@192.0.2.3>;expires=60"]), "u2000", PEER, T0)
    assert reg.expire(T0 + 59) == []
    changes = reg.expire(T0 + 60)
    assert set(changes) == {
        Delete(AOR, "sip:1000@192.0.2.1"), Delete("u2000", "sip:2000@192.0.2.3"),
    }
    assert reg.aors() == [AOR]
    assert reg.count() == 1
    assert reg.expire(T0 + 60) == []


def test_load_after_restart_drops_expired_and_keeps_matching() -> None:
    reg = Registrar(CFG)
    instance_binding = Binding(
        aor=AOR, contact="sip:1000@192.0.2.2", expires_at=T0 + 100, call_id="c2", cseq=3,
        source=Peer("tcp", "198.51.100.1", 5000), instance_id=INSTANCE, reg_id=1,
    )
    saved = [
        Binding(aor=AOR, contact="sip:1000@192.0.2.1", expires_at=T0 + 100, call_id="c1", cseq=7,
                source=PEER, q=0.5, user_agent="ua"),
        instance_binding,
        Binding(aor=AOR, contact="sip:1000@192.0.2.3", expires_at=T0, call_id="c3", cseq=1,
                source=PEER),
        Binding(aor="u2", contact="not a uri", expires_at=T0 + 100, call_id="c4", cseq=1,
                source=PEER),
    ]
    reg.load(saved, T0)
    assert sorted(contacts_of(reg, T0)) == ["sip:1000@192.0.2.1", "sip:1000@192.0.2.2"]
    assert contacts_of(reg, T0, "u2") == ["not a uri"]
    # Loaded bindings keep their ordering state: a late request is refused...
    out = reg.process(register(["<sip:1000@192.0.2.1>"], call_id="c1", cseq=6), AOR, PEER, T0 + 1)
    assert out.response.status == 500
    # ...and a refresh updates the loaded binding in place (same key), not a duplicate.
    out = reg.process(register(["<sip:1000@192.0.2.1>"], call_id="c1", cseq=8), AOR, PEER, T0 + 1)
    assert out.response.status == 200
    assert len(reg.lookup(AOR, T0 + 1)) == 2
    # The instance binding is replaced by instance+reg-id after the restart too.
    c = f'<sip:1000@192.0.2.77>;+sip.instance="<{INSTANCE}>";reg-id=1'
    reg.process(register([c], call_id="new"), AOR, PEER, T0 + 2)
    assert sorted(contacts_of(reg, T0 + 2)) == ["sip:1000@192.0.2.1", "sip:1000@192.0.2.77"]


def test_drop_aor() -> None:
    reg = Registrar(CFG)
    reg.process(register(["<sip:1000@192.0.2.1>"]), AOR, PEER, T0)
    assert reg.drop_aor(AOR) == [Delete(AOR, "sip:1000@192.0.2.1")]
    assert reg.drop_aor(AOR) == []
    assert reg.lookup(AOR, T0) == []


@dataclass
class Step:
    contacts: list[str]
    call_id: str
    cseq: int
    expires: int | None = None
    status: int = 200
    bound: list[str] = field(default_factory=list)


SCENARIO = [
    Step(["<sip:1000@192.0.2.1>"], "a", 1, bound=["sip:1000@192.0.2.1"]),
    Step(["<sip:1000@192.0.2.2>;q=0.9"], "b", 1,
         bound=["sip:1000@192.0.2.1", "sip:1000@192.0.2.2"]),
    Step(["<sip:1000@192.0.2.1>"], "a", 1, bound=["sip:1000@192.0.2.1", "sip:1000@192.0.2.2"]),
    Step(["<sip:1000@192.0.2.1>"], "a", 0, status=500,
         bound=["sip:1000@192.0.2.1", "sip:1000@192.0.2.2"]),
    Step(["<sip:1000@192.0.2.1>;expires=0"], "a", 2, bound=["sip:1000@192.0.2.2"]),
    Step(["<sip:1000@192.0.2.1>;expires=30"], "a", 3, status=423, bound=["sip:1000@192.0.2.2"]),
    Step(["*"], "z", 1, expires=0, bound=[]),
    Step([], "z", 2, bound=[]),
]


def test_registration_scenario_table() -> None:
    reg = Registrar(CFG)
    now = T0
    for i, step in enumerate(SCENARIO):
        now += 1
        out = reg.process(register(step.contacts, expires=step.expires, call_id=step.call_id,
                                   cseq=step.cseq), AOR, PEER, now)
        assert out.response.status == step.status, i
        assert contacts_of(reg, now) == step.bound, i
        if step.status == 200:
            assert list(reply_contacts(out.response)) == step.bound, i
        assert re.fullmatch(r"\d+ REGISTER", out.response.headers.get("cseq") or "")
