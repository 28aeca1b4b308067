"""The cloud link (agent.cloud.link) and what it sees of the agent (agent.cloud_host).

No real VPN: a FakeVpn stands in for agent.vpn.VpnManager and reports 127.0.0.1 as the
tunnel's inner address. Enrollment, renewal, the heartbeat, sync and uploads go to the
reference portal (tests/portal, in-process threads; enrollment over server-auth TLS, the
rest over loopback mutual TLS). Certificates with chosen validity (expired, from the future)
come from the throwaway CA of test_cloud_identity.

The reference portal is imported as ``portal``: ``tests.portal`` is shadowed by sippy's
top-level ``tests`` package in this venv (tests/portal/README.md).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from test_cloud_identity import CA, enrolled_identity, make_ca, sign_csr

from agent.cdr import CallRecord
from agent.cli import main as cli_main
from agent.cloud import link as link_mod
from agent.cloud.config import CloudConfig
from agent.cloud.identity import DeviceIdentity
from agent.cloud.link import CloudLink
from agent.cloud.portal_client import OptIns, PortalClient, SiteUpdate, TunnelNotReady
from agent.cloud.sync import ApplyFailed, Author
from agent.cloud_host import AgentCloudHost, opt_ins_of
from agent.site import Site, parse_site
from agent.store import Store
from agent.voicemail import VoicemailStore
from agent.vpn import State

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
from portal import Running, make_pki, start  # noqa: E402

INNER = "127.0.0.1"
DAY = 86400.0
ADMIN_KEY = X25519PrivateKey.generate()
DOC: dict[str, Any] = {
    "site": {"name": "Acme", "timezone": "Europe/Berlin", "realm": "pbx.acme.test"},
    "users": [{"id": "ann", "name": "Ann", "extension": "201",
               "sip": {"username": "ann", "password": "ann-secret-201x"}}],
    "privacy": {"voicemail_backup": True, "voicemail_backup_public_key":
                base64.b64encode(ADMIN_KEY.public_key().public_bytes_raw()).decode()},
}


# ---------------------------------------------------------------------- fakes


class FakeVpn:
    """What the link uses of agent.vpn.VpnManager."""

    def __init__(self, address: str | None = INNER) -> None:
        self.address = address
        self.starts = 0
        self.stops = 0

    @property
    def state(self) -> State:
        return State.UP if self.address else State.DOWN

    def inner_address_ready(self) -> str | None:
        return self.address

    def status(self) -> dict[str, Any]:
        return {"state": self.state.value, "inner_address": self.address}

    async def start(self) -> None:
        self.starts += 1

    async def stop(self) -> None:
        self.stops += 1


class FakeHost:
    """The LinkHost: the running agent as the link sees it."""

    def __init__(self, store: Store, doc: dict[str, Any] | None = None) -> None:
        self.store = store
        self.site: Site = parse_site(copy.deepcopy(doc or DOC))
        self.voicemail: VoicemailStore | None = None
        self.audits: list[tuple[str, dict[str, Any], str]] = []
        self.applied: list[tuple[Site, SiteUpdate, Author]] = []

    def opt_ins(self) -> OptIns:
        return opt_ins_of(self.site)

    def current_site(self) -> Site:
        return self.site

    def voicemail_store(self) -> VoicemailStore | None:
        return self.voicemail

    def site_timezone(self) -> str:
        return self.site.site.timezone

    def heartbeat_facts(self) -> dict[str, int]:
        return {"registered_phones": 3, "active_calls": 1}

    def audit(self, action: str, detail: dict[str, Any], actor: str) -> None:
        self.audits.append((action, detail, actor))

    async def apply_cloud_site(self, site: Site, update: SiteUpdate, author: Author) -> None:
        self.applied.append((site, update, author))
        self.site = site


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("portal")
    running = start(data, make_pki(data / "pki", ips=[INNER], hostnames=["localhost"]))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[Store]:
    s = Store.open(state)
    yield s
    s.close()


@pytest.fixture
def host(store: Store) -> FakeHost:
    return FakeHost(store)


@pytest.fixture(autouse=True)
def quick_claim_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_mod, "CLAIM_POLL", 0.05)


def config(live: Running | None, **over: Any) -> CloudConfig:
    ports = live.ports if live is not None else {"device": 1, "enroll": 1}
    doc: dict[str, Any] = {
        "portal_url": f"https://{INNER}:{ports['device']}",
        "enrollment": {"url": f"https://{INNER}:{ports['enroll']}",
                       "ca": str(live.portal.pki.ca_cert) if live else "/nonexistent/ca.pem"},
        "vpn": {"remote_addr": "192.0.2.1", "inner_address": INNER,
                "remote_ts": ["127.0.0.0/8"]},
        "sync": {"long_poll": 1, "heartbeat_interval": 30},
    }
    for key, value in over.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    return CloudConfig.model_validate(doc)


def make_link(live: Running | None, state: Path, host: FakeHost, **over: Any) -> CloudLink:
    return CloudLink(config(live, **over), state, host)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def claim(state: Path, token: str) -> None:
    assert cli_main(["--state-dir", str(state), "cloud", "claim", "--", token]) == 0


def portal_enroll(live: Running, state: Path) -> DeviceIdentity:
    """Create the device at the portal and enroll it (the portal's own /v1/enroll logic)."""
    ident = DeviceIdentity.load_or_create(state)
    token = live.portal.create_device(ident.serial, DOC, "admin", "carol")["claim_token"]
    issued = live.portal.enroll({"claim_token": token, "csr_pem": ident.csr_pem()})
    ident.store_certificate(issued["certificate_pem"], issued["ca_chain_pem"])
    return ident


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=0)


def reissue(ca: CA, ident: DeviceIdentity, *, not_after: float,
            not_before: float | None = None, rotate: bool = False) -> None:
    """Store a new certificate (for a new key if ``rotate``) with the given validity."""
    csr = ident.renewal_csr_pem() if rotate else ident.csr_pem()
    nb = utc(not_before if not_before is not None else time.time() - 3600)
    ident.store_certificate(sign_csr(ca, csr, not_before=nb, not_after=utc(not_after)), ca.pem)


# ---------------------------------------------------------------------- client(): tunnel only


def test_client_needs_enrollment_and_the_tunnel(state: Path, host: FakeHost, ca: CA) -> None:
    link = make_link(None, state, host)
    with pytest.raises(TunnelNotReady, match="not enrolled"):
        link.client()
    link.identity = DeviceIdentity.load_or_create(state)
    with pytest.raises(TunnelNotReady, match="not enrolled"):
        link.client()
    link.identity = enrolled_identity(state, ca)
    with pytest.raises(TunnelNotReady, match="not started"):
        link.client()
    link.vpn = FakeVpn(None)  # type: ignore[assignment]
    with pytest.raises(TunnelNotReady, match="not up"):
        link.client()
    # The VPN says up, but the address is not on this host: the client refuses too.
    link.vpn = FakeVpn("198.51.100.7")  # type: ignore[assignment]
    with pytest.raises(TunnelNotReady, match="not present on this host"):
        link.client()


def test_client_is_bound_reused_and_rebuilt(state: Path, host: FakeHost, ca: CA) -> None:
    link = make_link(None, state, host)
    link.identity = ident = enrolled_identity(state, ca)
    link.vpn = vpn = FakeVpn()  # type: ignore[assignment]
    first = link.client()
    assert isinstance(first, PortalClient) and first.inner_address == INNER
    assert link.client() is first  # reused while nothing changed
    vpn.address = "127.0.0.2"  # the tunnel came back with another address
    second = link.client()
    assert second is not first and second.inner_address == "127.0.0.2"
    assert link.client() is second
    reissue(ca, ident, not_after=time.time() + 200 * DAY, rotate=True)  # renewed
    third = link.client()
    assert third is not second and link.client() is third
    # Another certificate with the same expiry (e.g. renewed within the second it was
    # issued): still a new certificate and key, so still a new client.
    reissue(ca, ident, not_after=ident.expires_at(), rotate=True)
    fourth = link.client()
    assert fourth is not third
    old = [first, second, third]
    assert link._old_clients == old  # kept: a request may still be using one

    closed: list[PortalClient] = []
    for c in [*old, fourth]:
        real = c.aclose

        async def aclose(c: PortalClient = c, real: Any = real) -> None:
            closed.append(c)
            await real()

        c.aclose = aclose  # type: ignore[method-assign]
    run(link.stop())
    assert sorted(map(id, closed)) == sorted(map(id, [*old, fourth]))  # all closed on stop
    assert vpn.stops == 1


# ---------------------------------------------------------------------- enrollment


def test_waiting_for_a_claim_token(live: Running, state: Path, host: FakeHost) -> None:
    link = make_link(live, state, host)
    link.identity = ident = DeviceIdentity.load_or_create(state)
    run(link._try_enroll(ident))
    st = link.status()
    assert (st["state"], st["last_error"]) == ("waiting for a claim token", None)
    assert st["identity"]["serial"] == ident.serial and not st["identity"]["enrolled"]
    assert st["vpn"] == {"state": "not started"} and st["sync"] is None
    assert "clock_warning" not in st
    assert not ident.enrolled and host.audits == []


def test_a_refused_token_is_not_retried_and_a_new_one_is(
    live: Running, state: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[str] = []
    real = link_mod.enroll_identity

    async def counting(identity: DeviceIdentity, client: Any, token: str) -> None:
        attempts.append(token)
        await real(identity, client, token)

    monkeypatch.setattr(link_mod, "enroll_identity", counting)
    link = make_link(live, state, host)
    link.identity = ident = DeviceIdentity.load_or_create(state)
    token = live.portal.create_device(ident.serial, DOC, "admin", "carol")["claim_token"]

    async def main() -> None:
        claim(state, "not-a-token-the-portal-made")
        await link._try_enroll(ident)
        st = link.status()
        assert st["state"] == "claim token refused"
        assert st["last_error"] == ("the portal refused the claim token: portal refused the "
                                    "request: 401 unknown claim token")
        assert attempts == ["not-a-token-the-portal-made"]
        await link._try_enroll(ident)  # the same token again: not sent again
        assert link.state == "claim token refused" and len(attempts) == 1
        claim(state, token)
        await link._try_enroll(ident)

    run(main())
    assert attempts[-1] == token
    assert ident.enrolled and link.last_error is None
    assert not link.claim_token_path.exists()  # used up: deleted
    assert host.audits == [("cloud.enrolled", {"serial": ident.serial,
                                               "cert_expires": ident.expires_at()}, "agent")]
    assert DeviceIdentity.load_or_create(state).certificate == ident.certificate
    assert live.portal.store.device(ident.serial)["enrolled_at"] is not None
    # The portal's answer is a used token now: a second device could not use it.
    claim(state, token)
    link = make_link(live, state, host)
    link.identity = other = DeviceIdentity.load_or_create(state.parent / "other")
    run(link._try_enroll(other))
    assert link.state == "claim token refused" and "already used" in str(link.last_error)


def test_an_unreachable_portal_is_retried_with_the_same_token(
    state: Path, host: FakeHost, live: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[str] = []

    async def counting(identity: DeviceIdentity, client: Any, token: str) -> None:
        attempts.append(token)
        await real(identity, client, token)

    real = link_mod.enroll_identity
    monkeypatch.setattr(link_mod, "enroll_identity", counting)
    link = make_link(live, state, host, enrollment={"url": f"https://{INNER}:1"})
    link.identity = ident = DeviceIdentity.load_or_create(state)
    claim(state, "tok-1")

    async def main() -> None:
        await link._try_enroll(ident)
        assert link.state == "enrollment failed"
        assert str(link.last_error).startswith("enrollment failed: portal unreachable")
        await link._try_enroll(ident)

    run(main())
    assert attempts == ["tok-1", "tok-1"]  # not refused: tried again
    assert link.claim_token_path.exists() and not ident.enrolled


def test_a_missing_bootstrap_ca_is_an_enrollment_failure(
    state: Path, host: FakeHost, live: Running,
) -> None:
    link = make_link(live, state, host, enrollment={"ca": str(state / "missing-ca.pem")})
    link.identity = ident = DeviceIdentity.load_or_create(state)
    claim(state, "tok-1")
    run(link._try_enroll(ident))
    assert link.state == "enrollment failed" and "missing-ca.pem" in str(link.last_error)


def test_an_expired_certificate_asks_for_a_new_claim_token(
    live: Running, state: Path, host: FakeHost, ca: CA,
) -> None:
    ident = enrolled_identity(state, ca, not_before=utc(time.time() - 100 * DAY),
                              not_after=utc(time.time() - DAY))
    link = make_link(live, state, host)
    link.identity = ident
    token = live.portal.create_device(ident.serial, DOC, "admin", "carol")["claim_token"]

    async def main() -> None:
        await link._try_enroll(ident)
        st = link.status()
        assert st["state"] == "certificate expired"
        assert st["last_error"] == (
            "the device certificate has expired; renewal is no longer possible: put a new "
            "claim token with `edgepbx cloud claim`")
        assert st["identity"]["expired"] and st["identity"]["enrolled"]
        assert "clock_warning" not in st
        # A new claim token enrolls the box again.
        claim(state, token)
        await link._try_enroll(ident)

    run(main())
    assert not ident.expired(time.time()) and link.last_error is None
    assert [a for a, _, _ in host.audits] == ["cloud.enrolled"]


def test_a_certificate_that_expires_while_running_is_re_enrolled_by_housekeeping(
    live: Running, state: Path, host: FakeHost, ca: CA,
) -> None:
    ident = enrolled_identity(state, ca, not_before=utc(time.time() - 100 * DAY),
                              not_after=utc(time.time() - DAY))
    link = make_link(live, state, host)
    link.identity = ident
    link.vpn = vpn = FakeVpn()  # type: ignore[assignment]
    token = live.portal.create_device(ident.serial, DOC, "admin", "carol")["claim_token"]

    async def main() -> None:
        task = asyncio.ensure_future(link._housekeeping(time.time()))
        await asyncio.sleep(0.3)
        assert not task.done() and link.state == "certificate expired"
        claim(state, token)
        link.poke()
        await asyncio.wait_for(task, 15)

    run(main())
    assert not ident.expired(time.time()) and link.state == "running"
    assert (vpn.stops, vpn.starts) == (1, 1)  # the tunnel reconnects with the new certificate
    assert [a for a, _, _ in host.audits] == ["cloud.certificate_expired", "cloud.enrolled"]


def test_a_clock_far_behind_the_certificate_is_reported(
    state: Path, host: FakeHost, ca: CA,
) -> None:
    link = make_link(None, state, host)
    link.identity = ident = enrolled_identity(
        state, ca, not_before=utc(time.time() + 2 * DAY), not_after=utc(time.time() + 90 * DAY))
    warning = link.status()["clock_warning"]
    assert "system clock is before the device certificate's start" in warning
    assert "NTP" in warning
    # A start a minute ahead is ordinary skew: no warning.
    reissue(ca, ident, not_before=time.time() + 60, not_after=time.time() + 90 * DAY)
    assert "clock_warning" not in link.status()


def test_an_unusable_identity_stops_the_link_with_a_clear_error(
    state: Path, host: FakeHost,
) -> None:
    DeviceIdentity.load_or_create(state)
    (state / "cloud" / "device-key.pem").write_text("garbage")
    link = make_link(None, state, host)
    run(link.start())
    st = link.status()
    assert st["state"] == "identity"
    assert st["last_error"].startswith("the device identity is unusable: device identity file ")
    assert link.identity is None and link._tasks == set()
    run(link.stop())


# ---------------------------------------------------------------------- housekeeping


def call(n: int, start: float) -> CallRecord:
    return CallRecord(
        call_id=f"c{n}", direction="internal", caller="201", caller_name="Ann",
        callee="202", dialed="202", start=start, answer=start + 2, end=start + 60,
        disposition="answered", hold_seconds=0.0, hunt_group=None, trunk=None,
        cause="caller-bye")


def usage_days(store: Store) -> list[str]:
    rows = store.outbox_due("usage", now=float("inf"), limit=100)
    return [r.item_key for r in rows]


def test_housekeeping_renews_when_due_and_queues_usage_days(
    live: Running, state: Path, store: Store, host: FakeHost,
) -> None:
    ident = portal_enroll(live, state)
    link = make_link(live, state, host)
    link.identity = ident
    link.vpn = vpn = FakeVpn()  # type: ignore[assignment]
    pokes: list[int] = []
    link.poke = lambda: pokes.append(1)  # type: ignore[method-assign]
    old_cert, old_key = ident.certificate, ident.key_path.read_bytes()
    old_client = link.client()
    # 70 days on: past two thirds of the 90-day lifetime, not expired.
    now = time.time() + 70 * DAY
    assert ident.renew_due(now) and not ident.expired(now)
    store.append_call_records([call(1, now - 3 * DAY), call(2, now - 2 * DAY)])

    run(link._housekeeping(now))
    assert ident.certificate != old_cert
    assert ident.key_path.read_bytes() != old_key and not ident.next_key_path.exists()
    assert DeviceIdentity.load_or_create(state).certificate == ident.certificate
    assert live.portal.store.device(ident.serial)["cert_serial"] == format(
        ident.certificate.serial_number, "x")
    assert host.audits == [("cloud.certificate_renewed",
                            {"cert_expires": ident.expires_at()}, "agent")]
    assert link.renewed_at is not None and link.last_error is None
    assert (vpn.stops, vpn.starts) == (1, 1)  # reconnected so IKE uses the new certificate
    assert link.client() is not old_client  # the new certificate's client
    tz = ZoneInfo(host.site.site.timezone)  # days are the site's
    first = dt.datetime.fromtimestamp(now - 3 * DAY, tz).date()
    yesterday = dt.datetime.fromtimestamp(now, tz).date() - dt.timedelta(days=1)
    expected = [f"usage-{first + dt.timedelta(days=i)}"
                for i in range((yesterday - first).days + 1)]
    assert len(expected) in (3, 4)  # 4 only across a DST change just after midnight
    assert usage_days(store) == expected and pokes == [1]
    report = json.loads(store.outbox_due("usage", now=float("inf"), limit=1)[0].payload)
    assert report["registered_phones"] == 3

    # A day later, on the real clock: not due any more, no new complete day.
    run(link._housekeeping(time.time() + DAY))
    assert len(host.audits) == 1 and usage_days(store) == expected and pokes == [1]


def test_a_failed_renewal_is_reported_and_usage_still_queued(
    live: Running, state: Path, store: Store, host: FakeHost,
) -> None:
    ident = portal_enroll(live, state)
    link = make_link(live, state, host)
    link.identity = ident
    cert = ident.certificate
    now = time.time() + 70 * DAY
    run(link._housekeeping(now))  # no tunnel: link.vpn is None
    assert link.last_error == ("certificate renewal failed (retried): the tunnel to the "
                               "portal is not started")
    assert ident.certificate == cert and host.audits == [] and link.renewed_at is None
    assert len(usage_days(store)) == 1  # yesterday (no calls yet): zeros


def test_heartbeat_reaches_the_portal(live: Running, state: Path, host: FakeHost) -> None:
    ident = portal_enroll(live, state)
    link = make_link(live, state, host)
    link.identity = ident
    link.vpn = FakeVpn()  # type: ignore[assignment]

    async def beat() -> None:
        await link._heartbeat()
        await link.stop()

    run(beat())
    row = live.portal.store.one("SELECT body FROM heartbeats WHERE serial = ?", ident.serial)
    body = json.loads(row["body"])
    assert (body["registered_phones"], body["active_calls"], body["tunnel"]) == (3, 1, "up")
    assert body["cert_expires"] == ident.expires_at()
    assert body["outbox"]["queued_items"] == 0
    assert body["site_version"] == 0  # nothing from the portal applied yet
    assert link.last_heartbeat_at is not None


# ---------------------------------------------------------------------- the whole link


async def until(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.timeout(30)  # a task stuck on a future set from another thread never ends
def test_start_enroll_run_and_stop(
    live: Running, state: Path, store: Store, host: FakeHost,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start without a certificate; a voicemail arrives while waiting (saved in a worker
    thread, as agent.apps.voicemail does); the claim token arrives; the link enrolls, brings
    the (fake) tunnel up, pulls the site, sends a heartbeat and uploads the backup."""
    caplog.set_level(logging.WARNING)
    host.voicemail = vm = VoicemailStore(state, store)
    link = make_link(live, state, host)
    vpns: list[FakeVpn] = []

    async def fake_start_vpn(identity: DeviceIdentity) -> None:
        link.vpn = FakeVpn()  # type: ignore[assignment]
        vpns.append(link.vpn)  # type: ignore[arg-type]

    link._start_vpn = fake_start_vpn  # type: ignore[method-assign]
    serial = DeviceIdentity.load_or_create(state).serial
    token = live.portal.create_device(serial, DOC, "partner", "pat")["claim_token"]
    audio = bytes(range(256)) * 16

    def portal_has(table: str) -> bool:
        return live.portal.store.one(f"SELECT 1 FROM {table} WHERE serial = ?",
                                     serial) is not None

    async def main() -> None:
        await link.start()
        await until(lambda: link.state == "waiting for a claim token", "the claim wait")
        info = await asyncio.to_thread(vm.save_message, "201", audio, "0301234567")
        assert link.outbox.stats()["queued"]["voicemail_backup"]["items"] == 1
        claim(state, token)
        await until(lambda: link.state == "running", "enrollment")
        await until(lambda: portal_has("heartbeats"), "the heartbeat")
        await until(lambda: host.applied, "the site pull")
        await until(lambda: portal_has("voicemail_backups"), "the backup upload")
        st = link.status()
        assert st["state"] == "running" and st["last_error"] is None
        assert st["identity"]["enrolled"] and st["vpn"]["state"] == "up"
        assert st["sync"]["applied_version"] == 1
        await link.stop()
        row = live.portal.store.one("SELECT backup_id FROM voicemail_backups WHERE serial = ?",
                                    serial)
        assert row["backup_id"] == f"{serial}.201.{info.id}"

    asyncio.run(main(), debug=True)  # debug: asyncio objects touched from other threads fail
    [(site, update, author)] = host.applied
    assert site.site.name == "Acme" and update.version == 1
    assert author == Author("partner", "pat")
    assert [a for a, _, _ in host.audits][:1] == ["cloud.enrolled"]
    assert vpns and vpns[0].stops == 1
    assert not link.claim_token_path.exists()
    problems = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.ERROR or "hook failed" in r.getMessage()]
    assert problems == []


# ---------------------------------------------------------------------- agent.cloud_host


def test_opt_ins_of_the_site() -> None:
    bare = {"site": {"name": "A", "timezone": "UTC", "realm": "a.test"}}
    assert opt_ins_of(parse_site(bare)) == OptIns(False, False)
    assert opt_ins_of(parse_site(DOC)) == OptIns(cdr_upload=False, voicemail_backup=True)
    doc = copy.deepcopy(DOC)
    doc["privacy"] = {"cdr_upload": True, "voicemail_backup": False,
                      "voicemail_backup_public_key": DOC["privacy"]["voicemail_backup_public_key"]}
    assert opt_ins_of(parse_site(doc)) == OptIns(cdr_upload=True, voicemail_backup=False)


class FakeAgent:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.site = parse_site(DOC)
        self.service: Any = SimpleNamespace(status=lambda: {"bindings": 4, "active_calls": 2},
                                            voicemail="the voicemail store")
        self.cloud: Any = None
        self.audits: list[tuple[str, dict[str, Any], str]] = []
        self.applies: list[tuple[Site, str, dict[str, Any]]] = []
        self.refuse: list[str] = []
        self.opt_ins_changed = 0

    def audit(self, action: str, detail: dict[str, Any], *, actor: str = "agent") -> None:
        self.audits.append((action, detail, actor))

    async def apply_site(self, site: Site, *, actor: str, origin: dict[str, Any]) -> list[str]:
        self.applies.append((site, actor, origin))
        return list(self.refuse)

    def site_opt_ins_changed(self) -> None:
        self.opt_ins_changed += 1


def test_agent_cloud_host(store: Store) -> None:
    agent = FakeAgent(store)
    h = AgentCloudHost(agent)  # type: ignore[arg-type]
    assert h.store is store and h.current_site() is agent.site
    assert h.opt_ins() == OptIns(False, True) and h.site_timezone() == "Europe/Berlin"
    assert h.voicemail_store() == "the voicemail store"
    assert h.heartbeat_facts() == {"registered_phones": 4, "active_calls": 2}
    agent.service = None
    assert h.heartbeat_facts() == {"registered_phones": 0, "active_calls": 0}
    assert h.voicemail_store() is None
    h.audit("cloud.enrolled", {"serial": "s"}, "agent")
    assert agent.audits == [("cloud.enrolled", {"serial": "s"}, "agent")]

    update = SiteUpdate(6, DOC, '"6-x"', Author("partner", "pat"))
    new = parse_site(DOC)
    run(h.apply_cloud_site(new, update, update.author))
    assert agent.applies == [(new, "partner:pat", {"portal_version": 6, "author_role":
                                                   "partner", "author_id": "pat"})]
    assert agent.opt_ins_changed == 1
    agent.refuse = ["sip: the SIP service refused it"]
    with pytest.raises(ApplyFailed) as info:
        run(h.apply_cloud_site(new, update, update.author))
    assert info.value.errors == ["sip: the SIP service refused it"]
    assert agent.opt_ins_changed == 1  # not for a refused site


def test_a_replaced_client_is_closed_after_its_grace(
    state: Path, host: FakeHost, ca: CA, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_mod, "RETIRED_CLIENT_GRACE", 0.05)
    link = make_link(None, state, host)
    link.identity = enrolled_identity(state, ca)
    link.vpn = vpn = FakeVpn()  # type: ignore[assignment]
    closed: list[PortalClient] = []

    async def main() -> None:
        first = link.client()

        async def aclose() -> None:
            closed.append(first)

        first.aclose = aclose  # type: ignore[method-assign]
        vpn.address = "127.0.0.2"
        second = link.client()
        assert link._old_clients == [first] and closed == []  # still in its grace
        await asyncio.sleep(0.2)
        assert closed == [first] and link._old_clients == []
        assert link.client() is second
        await link.stop()

    run(main())
