"""SIPp calls through edgepbx-agent, the B2BUA: phone to phone, busy, hunt groups, trunks.

Every test starts its own agent on 127.0.0.1 (free ports, fresh state). Callees are SIPp
UAS instances that first REGISTER from the port they then answer on, so the agent's
registrar points at them; callers are SIPp UACs that answer the 407 with digest
credentials (MD5 only: SIPp knows no other). A "carrier" is a SIPp instance on 127.0.0.2
that acts as the trunk's registrar and as the far end of trunk calls.

Results are checked on both sides: by SIPp (exit code, the statuses its scenario accepts,
the order and timestamps of what each UAS received, regexp checks on headers) and by the
agent (`edgepbx calls --json`, `edgepbx cdr --format json`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import LOOPBACK, SiteUser, free_port, make_users

MD5_ONLY = {"digest_algorithms": ["MD5"]}
CARRIER_IP = "127.0.0.2"  # the trunk's address: only INVITEs from here skip digest auth


# ------------------------------------------------------------------------------ helpers


def site_users(users: Sequence[SiteUser], **settings: Any) -> list[dict[str, Any]]:
    """Site entries; no mailbox (voicemail apps do not exist yet): busy is busy."""
    return [{**u.as_site_entry(), "voicemail": False, **settings} for u in users]


def site_extra(users: Sequence[SiteUser], **sections: Any) -> dict[str, Any]:
    return {"sip": MD5_ONLY, "users": site_users(users), **sections}


def caller_injection(path: Path, caller: SiteUser, dialed: str, *, password: str | None = None,
                     count: int = 1) -> list[str]:
    """-inf for call_uac_*.xml: field0 caller, field1 credentials, field2 the number."""
    assert ";" not in (password or caller.password)
    line = (f"{caller.username};[authentication username={caller.username} "
            f"password={password or caller.password}];{dialed}")
    path.write_text("SEQUENTIAL\n" + "\n".join([line] * count) + "\n", encoding="ascii")
    return ["-inf", str(path)]


_STAMP = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d(?:\.\d+)?)", re.M)


def messages_received(messages: str) -> list[tuple[float, str]]:
    """(epoch seconds, message text) of each message SIPp received, from its -trace_msg log."""
    out = []
    blocks = _STAMP.split(messages)  # [prefix, date, time, body, date, time, body, ...]
    for i in range(1, len(blocks) - 2, 3):
        date, clock, body = blocks[i], blocks[i + 1], blocks[i + 2]
        head, _, rest = body.lstrip("\r\n").partition("\n")
        if "received" in head:
            when = datetime.fromisoformat(f"{date} {clock}").timestamp()
            out.append((when, rest.lstrip("\r\n")))
    return out


def received(messages: str, start_line: str) -> list[float]:
    """When SIPp received the messages whose first line starts with start_line
    ("INVITE ", "SIP/2.0 486", ...)."""
    return [when for when, text in messages_received(messages) if text.startswith(start_line)]


def requests(messages: str, method: str) -> list[str]:
    """The text of each request `method` SIPp received."""
    return [text for _, text in messages_received(messages) if text.startswith(method + " ")]


def header(message: str, name: str) -> str | None:
    for line in message.splitlines()[1:]:
        if not line.strip():
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def udp_bound(host: str, port: int) -> bool:
    """Whether something listens on host:port/udp (IPv4, from /proc/net/udp)."""
    a, b, c, d = (int(x) for x in host.split("."))
    want = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"  # little-endian address, as the kernel
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == want for line in lines)


def wait_for(predicate: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Phones:
    """The test's SIPp peers around one agent."""

    def __init__(self, sipp: Any, agent: Any) -> None:
        self.sipp = sipp
        self.agent = agent

    def register(self, user: SiteUser, port: int) -> None:
        """user registers from port (Contact 127.0.0.1:port): calls to it go there."""
        self.sipp.expect_success("register.xml", self.agent.port, users=[user],
                                 local_port=port, expires=600, timeout=10)

    def callee(self, user: SiteUser, scenario: str = "call_uas.xml", *, calls: int = 1,
               timeout: float = 20, extra: Sequence[str] = ()) -> Any:
        """A registered SIPp UAS for user, running in the background."""
        port = free_port()
        self.register(user, port)
        uas = self.sipp.start(scenario, self.agent.port, local_port=port, calls=calls,
                              timeout=timeout, extra=list(extra))
        # Listening before anyone calls: an INVITE to a closed port is a transport error.
        wait_for(lambda: udp_bound(LOOPBACK, port), f"the UAS of {user.extension} to listen")
        return uas

    def call(self, caller: SiteUser, dialed: str, scenario: str = "call_uac_auth.xml", *,
             calls: int = 1, password: str | None = None, expected: int | None = None,
             timeout: float = 20, extra: Sequence[str] = ()) -> Any:
        """caller dials `dialed` `calls` times, one after another; SIPp's result."""
        inf = caller_injection(self.sipp.workdir / f"caller-{self.sipp.runs + 1}.csv", caller,
                               dialed, password=password, count=calls)
        keys = ["-key", "expected", str(expected)] if expected is not None else []
        return self.sipp.run(scenario, self.agent.port, calls=calls, rate=10, timeout=timeout,
                             extra=[*inf, *keys, *extra])


def wait_idle(agent: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (calls := agent.calls()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert calls == [], calls


# ------------------------------------------------------------------------------ phone to phone


def test_calls_between_registered_phones(agent_factory, sipp):
    a, b = make_users(2)
    agent = agent_factory([a, b], site_extra=site_extra([a, b]))
    phones = Phones(sipp, agent)
    uas = phones.callee(b, calls=5)
    uac = phones.call(a, b.extension, calls=5)
    assert uac.returncode == 0, uac.explain()
    callee = uas.wait(timeout=10)
    assert callee.returncode == 0, callee.explain()
    assert len(received(callee.messages, "INVITE ")) == 5, callee.explain()

    wait_idle(agent)
    records = agent.cdr()
    assert len(records) == 5, records
    for r in records:
        assert r["disposition"] == "answered", r
        assert (r["direction"], r["caller"], r["callee"]) == ("internal", a.extension,
                                                               b.extension), r
        assert r["dialed"] == b.extension, r


def test_wrong_password_is_challenged_again_and_nothing_rings(agent_factory, sipp):
    a, b = make_users(2)
    agent = agent_factory([a, b], site_extra=site_extra([a, b]))
    phones = Phones(sipp, agent)
    uas = phones.callee(b)
    uac = phones.call(a, b.extension, "call_uac_expect.xml", password=a.password + "-wrong",
                      expected=407, timeout=10)
    assert uac.returncode == 0, uac.explain()
    assert len(received(uac.messages, "SIP/2.0 407")) == 2, uac.explain()
    callee = uas.stop()
    assert received(callee.messages, "INVITE ") == [], callee.explain()
    assert agent.status()["invite_auth_failures"] >= 1
    assert agent.calls() == []
    assert agent.cdr() == []


def test_busy_callee_gives_486(agent_factory, sipp):
    a, b = make_users(2)
    agent = agent_factory([a, b], site_extra=site_extra([a, b]))
    phones = Phones(sipp, agent)
    uas = phones.callee(b, "call_uas_busy.xml")
    uac = phones.call(a, b.extension, "call_uac_expect.xml", expected=486)
    assert uac.returncode == 0, uac.explain()
    callee = uas.wait(timeout=10)
    assert callee.returncode == 0, callee.explain()
    wait_idle(agent)
    [record] = agent.cdr()
    assert (record["disposition"], record["caller"], record["callee"]) == (
        "busy", a.extension, b.extension), record


def test_unanswered_callee_gives_480_after_no_answer_timeout(agent_factory, sipp):
    a, b = make_users(2)
    users = site_users([a, b], forward={"no_answer_timeout": 5})
    agent = agent_factory([a, b], site_extra={"sip": MD5_ONLY, "users": users})
    phones = Phones(sipp, agent)
    uas = phones.callee(b, "call_uas_noanswer.xml")
    uac = phones.call(a, b.extension, "call_uac_expect.xml", expected=480)
    assert uac.returncode == 0, uac.explain()
    callee = uas.wait(timeout=10)
    assert callee.returncode == 0, callee.explain()
    [invite] = received(callee.messages, "INVITE ")
    [cancel] = received(callee.messages, "CANCEL ")
    assert 4.5 <= cancel - invite <= 6.5, (invite, cancel)
    assert received(uac.messages, "SIP/2.0 180"), "the callee's 180 was not relayed"
    wait_idle(agent)
    [record] = agent.cdr()
    assert record["disposition"] == "no-answer", record


# ------------------------------------------------------------------------------ hunt groups


def hunt_site(users: Sequence[SiteUser], members: Sequence[SiteUser], *, ring_time: int = 2,
              final: dict[str, str] | None = None, strategy: str = "sequential") -> dict[str, Any]:
    group = {"name": "sales", "pilot": "5000", "strategy": strategy,
             "members": [{"extension": m.extension, "ring_time": ring_time} for m in members],
             "final": final or {"type": "hangup"}}
    return site_extra(users, hunt_groups=[group])


def test_sequential_hunt_group_order_busy_noanswer_answer(agent_factory, sipp):
    caller, busy, ringing, answering = users = make_users(4)
    agent = agent_factory(users, site_extra=hunt_site(users, [busy, ringing, answering]))
    phones = Phones(sipp, agent)
    uas_busy = phones.callee(busy, "call_uas_busy.xml")
    uas_ringing = phones.callee(ringing, "call_uas_noanswer.xml")
    uas_answering = phones.callee(answering)
    uac = phones.call(caller, "5000")
    assert uac.returncode == 0, uac.explain()
    results = [u.wait(timeout=10) for u in (uas_busy, uas_ringing, uas_answering)]
    for r in results:
        assert r.returncode == 0, r.explain()
    [t_busy], [t_ringing], [t_answering] = (received(r.messages, "INVITE ") for r in results)
    [t_cancel] = received(results[1].messages, "CANCEL ")
    # The busy member is skipped at once; the ringing one rings its ring_time (2 s).
    assert t_busy <= t_ringing < t_answering, (t_busy, t_ringing, t_answering)
    assert t_ringing - t_busy < 1.0, (t_busy, t_ringing)
    assert 1.5 <= t_answering - t_ringing <= 3.5, (t_ringing, t_answering)
    assert t_cancel <= t_answering + 0.5, (t_cancel, t_answering)
    wait_idle(agent)
    [record] = agent.cdr()
    assert (record["disposition"], record["callee"], record["hunt_group"]) == (
        "answered", answering.extension, "5000"), record


def test_sequential_hunt_group_nobody_answers_final_destination(agent_factory, sipp):
    caller, m1, m2, final = users = make_users(4)
    site = hunt_site(users, [m1, m2], final={"type": "extension", "value": final.extension})
    agent = agent_factory(users, site_extra=site)
    phones = Phones(sipp, agent)
    uas_m1 = phones.callee(m1, "call_uas_noanswer.xml")
    uas_m2 = phones.callee(m2, "call_uas_noanswer.xml")
    uas_final = phones.callee(final)
    uac = phones.call(caller, "5000")
    assert uac.returncode == 0, uac.explain()
    results = [u.wait(timeout=10) for u in (uas_m1, uas_m2, uas_final)]
    for r in results:
        assert r.returncode == 0, r.explain()
    [t1], [t2], [tf] = (received(r.messages, "INVITE ") for r in results)
    assert 1.5 <= t2 - t1 <= 3.5, (t1, t2)
    assert 1.5 <= tf - t2 <= 3.5, (t2, tf)
    wait_idle(agent)
    [record] = agent.cdr()
    assert (record["disposition"], record["callee"]) == ("answered", final.extension), record



def test_parallel_hunt_group_rings_all_and_cancels_the_rest(agent_factory, sipp):
    caller, ringing, answering = users = make_users(3)
    site = hunt_site(users, [ringing, answering], ring_time=5, strategy="parallel")
    agent = agent_factory(users, site_extra=site)
    phones = Phones(sipp, agent)
    uas_ringing = phones.callee(ringing, "call_uas_noanswer.xml")
    # Rings 1 s before it answers, so that the other phone is surely ringing then.
    uas_answering = phones.callee(answering, extra=["-d", "1000"])
    uac = phones.call(caller, "5000")
    assert uac.returncode == 0, uac.explain()
    r_ringing, r_answering = uas_ringing.wait(timeout=10), uas_answering.wait(timeout=10)
    assert r_ringing.returncode == 0, r_ringing.explain()
    assert r_answering.returncode == 0, r_answering.explain()
    [t1], [t2] = received(r_ringing.messages, "INVITE "), received(r_answering.messages, "INVITE ")
    assert abs(t1 - t2) < 0.5, (t1, t2)
    [t_cancel] = received(r_ringing.messages, "CANCEL ")
    assert 0.8 <= t_cancel - t2 <= 2.5, (t2, t_cancel)
    wait_idle(agent)
    [record] = agent.cdr()
    assert (record["disposition"], record["callee"], record["hunt_group"]) == (
        "answered", answering.extension, "5000"), record

# ------------------------------------------------------------------------------ trunks

TRUNK_ACCOUNT = "acct-4045550100"
TRUNK_CALLER_ID = "4045550100"
NATIONAL = "12125550100"  # 1 + area code + number: national with the default restriction
DID = "+14045550123"


def trunk_site(users: Sequence[SiteUser], carrier_port: int, *, did_to: SiteUser,
               register: bool = True) -> dict[str, Any]:
    trunk = {
        "name": "carrier", "host": CARRIER_IP, "port": carrier_port,
        "username": TRUNK_ACCOUNT, "password": "carrier-Secret-1", "register": register,
        "register_expires": 600, "caller_id": TRUNK_CALLER_ID,
        "dids": [{"number": DID, "destination": {"type": "extension",
                                                 "value": did_to.extension}}],
    }
    return site_extra(users, trunks=[trunk])


def start_carrier(sipp: Any, port: int, *, calls: int, timeout: float) -> Any:
    """The carrier's registrar (and far end of outbound calls) on CARRIER_IP:port, started
    before the agent so that it answers the agent's first REGISTER."""
    carrier = sipp.start("trunk_carrier.xml", free_port(), local_ip=CARRIER_IP,
                         local_port=port, calls=calls, timeout=timeout, expires=300)
    wait_for(lambda: udp_bound(CARRIER_IP, port), "the carrier SIPp to listen")
    return carrier


def wait_registered(agent: Any) -> dict[str, Any]:
    def registered() -> bool:
        return agent.status()["trunks"].get("carrier", {}).get("state") == "registered"

    wait_for(registered, "the trunk registration")
    return agent.status()["trunks"]["carrier"]


def check_trunk_registration(carrier_messages: str) -> None:
    first, second = requests(carrier_messages, "REGISTER")[:2]
    assert header(first, "Authorization") is None, first
    auth = header(second, "Authorization") or ""
    assert auth.startswith("Digest ") and f'username="{TRUNK_ACCOUNT}"' in auth, second
    assert 'realm="carrier.test"' in auth and "algorithm=MD5" in auth, second
    assert header(second, "From") and TRUNK_ACCOUNT in header(second, "From"), second


def test_trunk_registers_and_carries_outbound_call(agent_factory, sipp):
    a, b = users = make_users(2)
    cport = free_port()
    carrier = start_carrier(sipp, cport, calls=2, timeout=20)
    agent = agent_factory(users, site_extra=trunk_site(users, cport, did_to=b))
    status = wait_registered(agent)
    assert status.get("granted_expires") == 300, status

    uac = Phones(sipp, agent).call(a, "9" + NATIONAL)
    assert uac.returncode == 0, uac.explain()
    far = carrier.wait(timeout=10)
    assert far.returncode == 0, far.explain()
    check_trunk_registration(far.messages)

    first, second = requests(far.messages, "INVITE")
    for invite in (first, second):
        assert invite.startswith(f"INVITE sip:{NATIONAL}@{CARRIER_IP}:{cport} "), invite
        assert f"<sip:{TRUNK_CALLER_ID}@" in (header(invite, "From") or ""), invite
    assert header(first, "Proxy-Authorization") is None, first
    answer = header(second, "Proxy-Authorization") or ""
    assert f'username="{TRUNK_ACCOUNT}"' in answer and 'nonce="inv' in answer, second
    assert received(far.messages, "BYE "), "the phone's BYE did not reach the carrier"

    wait_idle(agent)
    [record] = agent.cdr()
    assert (record["direction"], record["disposition"], record["trunk"], record["dialed"]) == (
        "outbound", "answered", "carrier", "9" + NATIONAL), record


def test_trunk_inbound_did_and_refusals(agent_factory, sipp):
    users = make_users(2)
    b = users[1]
    cport = free_port()
    # The registrar stays up to catch any INVITE the agent might send to the trunk.
    registrar = start_carrier(sipp, cport, calls=3, timeout=30)
    agent = agent_factory(users, site_extra=trunk_site(users, cport, did_to=b))
    wait_registered(agent)
    uas = Phones(sipp, agent).callee(b)

    def inbound(did: str, expected: int) -> Any:
        return sipp.run("trunk_uac_inbound.xml", agent.port, local_ip=CARRIER_IP, calls=1,
                        timeout=10, extra=["-key", "did", did, "-key", "caller", "3125550177",
                                           "-key", "expected", str(expected)])

    # A DID (written with "+" in the site, dialled without): the user answers; no 407.
    answered = inbound(DID.lstrip("+"), 200)
    assert answered.returncode == 0, answered.explain()
    assert received(answered.messages, "SIP/2.0 407") == []
    callee = uas.wait(timeout=10)
    assert callee.returncode == 0, callee.explain()
    [invite] = requests(callee.messages, "INVITE")
    assert "3125550177" in (header(invite, "From") or ""), invite

    # Not a DID: 404. An outside number from the trunk (toll fraud): 404 as well, and it
    # must never go back out of the trunk.
    for dialed in ("4045550999", "9" + NATIONAL, NATIONAL, "+" + NATIONAL):
        refused = inbound(dialed, 404)
        assert refused.returncode == 0, f"{dialed}:\n{refused.explain()}"
    # An extension from the trunk is not a DID either.
    refused = inbound(b.extension, 404)
    assert refused.returncode == 0, refused.explain()

    wait_idle(agent)
    far = registrar.stop()
    check_trunk_registration(far.messages)
    assert requests(far.messages, "INVITE") == [], far.messages[-3000:]
    records = agent.cdr()
    assert [r["disposition"] for r in records].count("answered") == 1, records
    inbound_answered = next(r for r in records if r["disposition"] == "answered")
    assert (inbound_answered["direction"], inbound_answered["callee"],
            inbound_answered["trunk"]) == ("inbound", b.extension, "carrier"), inbound_answered


def tcp_listening(host: str, port: int) -> bool:
    """Whether something listens on host:port/tcp (IPv4, from /proc/net/tcp)."""
    a, b, c, d = (int(x) for x in host.split("."))
    want = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(line.split()[1] == want and line.split()[3] == "0A" for line in lines)


def test_calls_over_tcp_reach_a_phone_whose_registration_connection_closed(agent_factory, sipp):
    """The callee registered over a TCP connection that closed (SIPp's REGISTER run ended);
    the agent opens a new connection to the Contact address to deliver the INVITE."""
    a, b = make_users(2)
    agent = agent_factory([a, b], site_extra=site_extra([a, b]))
    port = free_port()
    sipp.expect_success("register.xml", agent.port, users=[b], local_port=port, expires=600,
                        timeout=10, transport="tcp")
    uas = sipp.start("call_uas.xml", agent.port, local_port=port, calls=2, timeout=20,
                     transport="tcp")
    wait_for(lambda: tcp_listening(LOOPBACK, port), "the TCP UAS to listen")
    inf = caller_injection(sipp.workdir / "tcp-caller.csv", a, b.extension, count=2)
    uac = sipp.run("call_uac_auth.xml", agent.port, calls=2, rate=10, timeout=20,
                   transport="tcp", extra=inf)
    assert uac.returncode == 0, uac.explain()
    callee = uas.wait(timeout=10)
    assert callee.returncode == 0, callee.explain()
    wait_idle(agent)
    assert [r["disposition"] for r in agent.cdr()] == ["answered", "answered"]
