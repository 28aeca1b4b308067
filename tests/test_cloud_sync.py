"""Config sync (agent.cloud.sync): a fake portal client for the decisions, the backoff, the
files and the change queue; the reference portal (tests/portal) over loopback mutual TLS for
the long-poll and the partner-access refusal end to end."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import logging
import random
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.identity import DeviceIdentity
from agent.cloud.portal_client import (
    BadResponse,
    Conflict,
    PortalClient,
    PortalRejected,
    PortalUnavailable,
    ResponseTooLarge,
    SiteUpdate,
    TunnelNotReady,
)
from agent.cloud.sync import (
    DEFAULT_AUTHOR,
    ApplyFailed,
    Author,
    ConfigSync,
    LastGood,
    PendingChange,
    backoff_delay,
    decide,
    drop_conflicts,
    load_last_good,
    partner_access_enabled,
)
from agent.site import Site, SiteError, parse_site

DOC: dict[str, Any] = {
    "site": {"name": "Acme", "timezone": "Europe/Berlin", "realm": "pbx.acme.test"},
    "users": [
        {"id": "ann", "name": "Ann", "extension": "201",
         "sip": {"username": "ann", "password": "ann-secret-201x"}},
        {"id": "bob", "name": "Bob", "extension": "202",
         "sip": {"username": "bob", "password": "bob-secret-202x"}},
    ],
}
INVALID: dict[str, Any] = {"site": {"name": 42, "timezone": "Not/AZone"}, "users": "x",
                           "bogus": True}
PARTNER = Author("partner", "pat")
ADMIN = Author("admin", "carol")
USER = Author("user", "ann")


def doc(name: str = "Acme", partner_access: bool | None = None) -> dict[str, Any]:
    d = copy.deepcopy(DOC)
    d["site"]["name"] = name
    if partner_access is not None:
        d["privacy"] = {"partner_access": partner_access}
    return d


def update(version: int, document: dict[str, Any], author: Author = DEFAULT_AUTHOR
           ) -> SiteUpdate:
    return SiteUpdate(version, document, f'"{version}-{abs(hash(json.dumps(document))):x}"',
                      author)


# ---------------------------------------------------------------------- a fake portal client


class FakePortal:
    """Answers like the portal: 200 with ``site`` unless If-None-Match matches it (then 304).
    ``fail`` is a list of exceptions raised by the next calls of get_site."""

    def __init__(self, site: SiteUpdate | None = None) -> None:
        self.site = site
        self.fail: list[Exception] = []
        self.ignore_etag = False
        self.pulls: list[tuple[str | None, float]] = []
        self.reports: list[dict[str, Any]] = []
        self.pushes: list[dict[str, Any]] = []
        self.push_answers: list[int | Exception] = []
        self.report_fail: list[Exception] = []

    async def get_site(self, *, etag: str | None = None, wait: float = 0) -> SiteUpdate | None:
        self.pulls.append((etag, wait))
        if self.fail:
            raise self.fail.pop(0)
        if self.site is None or (etag == self.site.etag and not self.ignore_etag):
            return None
        return self.site

    async def post_site_status(self, *, version: int, state: str, errors: Any = (),
                               applied_at: float) -> None:
        if self.report_fail:
            raise self.report_fail.pop(0)
        self.reports.append({"version": version, "state": state, "errors": list(errors),
                             "applied_at": applied_at})

    async def push_changes(self, *, base_version: int, author_role: str, author_id: str,
                           changes: Any) -> int:
        self.pushes.append({"base_version": base_version, "author": (author_role, author_id),
                            "changes": [(c.path, c.value) for c in changes]})
        answer = self.push_answers.pop(0) if self.push_answers else 100 + len(self.pushes)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Agent:
    """The apply callback and the audit log of a fake running agent."""

    def __init__(self) -> None:
        self.applied: list[tuple[Site, SiteUpdate, Author]] = []
        self.refuse: list[str] | None = None
        self.audits: list[tuple[str, dict[str, Any], str]] = []

    async def apply(self, site: Site, upd: SiteUpdate, author: Author) -> None:
        if self.refuse is not None:
            raise ApplyFailed(self.refuse)
        self.applied.append((site, upd, author))

    def audit(self, action: str, detail: dict[str, Any], actor: str) -> None:
        self.audits.append((action, detail, actor))


def make_sync(tmp_path: Path, portal: Any, agent: Agent, **kw: Any) -> ConfigSync:
    kw.setdefault("clock", lambda: 1_700_000_000.0)
    kw.setdefault("rng", random.Random(7))
    return ConfigSync(client=portal, state_dir=tmp_path, apply=agent.apply, audit=agent.audit,
                      **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def steps(sync: ConfigSync, n: int = 1) -> list[float]:
    async def go() -> list[float]:
        return [await sync.step() for _ in range(n)]
    return run(go())


# ---------------------------------------------------------------------- apply and report


def test_apply_success_persists_and_reports(tmp_path):
    v1 = update(1, doc(), ADMIN)
    portal, agent = FakePortal(v1), Agent()
    sync = make_sync(tmp_path, portal, agent)
    assert sync.status()["state"] == "offline"
    steps(sync)
    assert portal.pulls == [(None, 0)]  # the start pull does not wait
    [(site, upd, author)] = agent.applied
    assert site.site.name == "Acme" and upd is v1 and author == ADMIN
    assert portal.reports == [{"version": 1, "state": "applied", "errors": [],
                               "applied_at": 1_700_000_000.0}]
    path = tmp_path / "cloud" / "site.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_last_good(tmp_path).as_json() == {
        "version": 1, "etag": v1.etag, "document": v1.document,
        "author": {"role": "admin", "id": "carol"}, "applied_at": 1_700_000_000.0}
    st = sync.status()
    assert (st["state"], st["applied_version"], st["applied_etag"], st["applied_author"]) == (
        "synced", 1, v1.etag, "admin:carol")
    assert st["last_pull_at"] == 1_700_000_000.0 and st["last_failed"] is None
    # Then the long-poll: the applied ETag, held 25 s; a 304 just loops.
    steps(sync)
    assert portal.pulls[-1] == (v1.etag, 25)
    assert len(agent.applied) == 1 and len(portal.reports) == 1


def test_an_invalid_document_is_reported_with_every_error_and_changes_nothing(tmp_path):
    portal, agent = FakePortal(update(1, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent)
    steps(sync)
    saved = (tmp_path / "cloud" / "site.json").read_bytes()
    portal.site = bad = update(2, INVALID, PARTNER)
    steps(sync)
    with pytest.raises(SiteError) as err:
        parse_site(INVALID)
    assert len(err.value.errors) >= 4
    assert portal.reports[-1]["version"] == 2 and portal.reports[-1]["state"] == "failed"
    assert portal.reports[-1]["errors"] == err.value.errors  # every line
    assert len(agent.applied) == 1  # the running configuration is kept
    assert sync.current is not None and sync.current.version == 1
    assert (tmp_path / "cloud" / "site.json").read_bytes() == saved
    st = sync.status()
    assert st["state"] == "failed" and st["applied_version"] == 1
    assert st["last_failed"]["version"] == 2 and st["last_failed"]["etag"] == bad.etag
    assert st["last_failed"]["errors"] == err.value.errors
    assert st["last_failed"]["author"] == "partner:pat"
    assert ("site.apply_failed", {"version": 2, "etag": bad.etag,
                                  "errors": err.value.errors}, "partner:pat") in agent.audits


def test_a_newer_schema_version_is_reported_failed(tmp_path):
    portal, agent = FakePortal(update(1, {**doc(), "schema_version": 999})), Agent()
    sync = make_sync(tmp_path, portal, agent)
    steps(sync)
    assert agent.applied == []
    [report] = portal.reports
    assert report["state"] == "failed"
    assert report["errors"] and report["errors"][0].startswith("schema_version: 999 is newer")
    assert not (tmp_path / "cloud" / "site.json").exists()


def test_a_failed_etag_is_not_retried_in_a_loop_but_a_newer_version_is(tmp_path):
    portal, agent = FakePortal(update(1, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent, poll_interval=42.0)
    steps(sync)
    portal.site = update(2, doc("Refused"))
    agent.refuse = ["sip: port 5060 is in use", "provisioning: cannot write phone files"]
    portal.ignore_etag = True  # a portal that re-sends the same version every time
    delays = steps(sync, 5)
    assert [r["state"] for r in portal.reports] == ["applied", "failed"]
    assert portal.reports[-1]["errors"] == agent.refuse
    assert len(agent.applied) == 1
    assert delays[1:] == [42.0] * 4  # no spinning: the periodic fallback pace
    assert [p[0] for p in portal.pulls[2:]] == [portal.site.etag] * 4
    assert sync.status()["state"] == "failed"
    agent.refuse = None
    portal.site = v3 = update(3, doc("Fixed"))
    steps(sync)
    assert agent.applied[-1][1] is v3 and portal.reports[-1]["state"] == "applied"
    st = sync.status()
    assert st["state"] == "synced" and st["applied_version"] == 3
    assert st["last_failed"]["version"] == 2  # history stays visible


def test_an_apply_callback_crash_is_a_failure_not_a_dead_loop(tmp_path):
    portal = FakePortal(update(1, doc()))

    async def boom(site: Site, upd: SiteUpdate, author: Author) -> None:
        raise RuntimeError("kaboom")

    sync = ConfigSync(client=portal, state_dir=tmp_path, apply=boom, clock=lambda: 5.0)
    steps(sync, 2)
    assert portal.reports == [{"version": 1, "state": "failed", "applied_at": 5.0,
                               "errors": ["the agent could not apply version 1: "
                                          "RuntimeError: kaboom"]}]
    assert sync.current is None and sync.status()["state"] == "failed"


# ---------------------------------------------------------------------- partner access


REFUSED = ("partner access is disabled by the customer admin: version {v} by partner pat "
           "refused")


@pytest.mark.parametrize(("current_access", "new_access"), [
    (False, True),   # off in the running configuration: a partner cannot turn it back on
    (False, None),
    (True, False),   # off in the new document itself
    (None, False),
])
def test_a_partner_version_is_refused_while_partner_access_is_off(tmp_path, current_access,
                                                                  new_access):
    portal, agent = FakePortal(update(1, doc(partner_access=current_access), ADMIN)), Agent()
    sync = make_sync(tmp_path, portal, agent)
    steps(sync)
    portal.site = v2 = update(2, doc("By partner", partner_access=new_access), PARTNER)
    steps(sync)
    assert [u.version for _, u, _ in agent.applied] == [1]
    assert portal.reports[-1] == {"version": 2, "state": "failed", "applied_at": 1.7e9,
                                  "errors": [REFUSED.format(v=2)]}
    assert ("site.partner_refused", {"version": 2, "etag": v2.etag,
                                     "error": REFUSED.format(v=2)}, "partner:pat") in agent.audits
    assert sync.status()["last_failed"]["errors"] == [REFUSED.format(v=2)]
    assert load_last_good(tmp_path).version == 1


def test_a_partner_version_is_accepted_while_partner_access_is_on(tmp_path):
    portal, agent = FakePortal(update(1, doc(partner_access=True), ADMIN)), Agent()
    sync = make_sync(tmp_path, portal, agent)
    steps(sync)
    portal.site = update(2, doc("By partner"), PARTNER)
    steps(sync)
    assert [(u.version, a) for _, u, a in agent.applied] == [(1, ADMIN), (2, PARTNER)]
    assert load_last_good(tmp_path).author == Author("partner", "pat")


@pytest.mark.parametrize("author", [ADMIN, USER, DEFAULT_AUTHOR])
def test_admin_and_user_versions_are_accepted_while_partner_access_is_off(tmp_path, author):
    portal, agent = FakePortal(update(1, doc(partner_access=False), ADMIN)), Agent()
    sync = make_sync(tmp_path, portal, agent)
    steps(sync)
    portal.site = update(2, doc("Edited", partner_access=False), author)
    steps(sync)
    assert [(u.version, a) for _, u, a in agent.applied] == [(1, ADMIN), (2, author)]
    assert portal.reports[-1]["state"] == "applied"


def test_decide_is_pure_and_reads_partner_access_from_the_raw_document():
    cur = LastGood(1, '"1-a"', doc(partner_access=False), ADMIN, 0.0, parse_site(doc()))
    assert decide(update(1, doc()), None, ()).action == "apply"
    assert decide(SiteUpdate(1, {}, '"1-a"'), cur, ()).action == "skip"
    assert decide(update(2, doc()), None, {update(2, doc()).etag}).action == "skip"
    refused = decide(update(2, doc(), PARTNER), cur, ())
    assert refused.action == "refuse" and refused.errors == (REFUSED.format(v=2),)
    # A partner version is refused before validation: even an invalid one says why.
    assert decide(update(3, {**INVALID, "privacy": {"partner_access": False}}, PARTNER),
                  None, ()).action == "refuse"
    assert decide(update(3, INVALID, ADMIN), cur, ()).action == "reject"
    assert partner_access_enabled({}) and partner_access_enabled({"privacy": {}})
    assert not partner_access_enabled({"privacy": {"partner_access": "yes"}})  # fails closed
    assert not partner_access_enabled({"privacy": None})


# ---------------------------------------------------------------------- backoff


@pytest.mark.parametrize("error", [
    PortalUnavailable("connection refused"), TunnelNotReady("the tunnel is down"),
    BadResponse("response truncated"), ResponseTooLarge("over the 8 MiB limit"),
    PortalUnavailable("503", status=503),
])
def test_backoff_on_unavailable_portal_and_reset_on_success(tmp_path, error):
    portal, agent = FakePortal(update(1, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent, backoff_base=1.0, backoff_cap=60.0)
    portal.fail = [error] * 9
    delays = steps(sync, 9)
    for n, d in enumerate(delays, 1):
        top = min(60.0, 2.0 ** (n - 1))
        assert top / 2 <= d <= top, (n, d)
    assert delays[-1] >= 30.0  # capped: 30-60 s
    st = sync.status()
    assert st["state"] == "backoff" and str(error) in st["last_error"]
    assert st["next_retry_at"] is not None and agent.applied == []
    assert steps(sync) == [0.0]  # the portal is back: applied, backoff reset
    assert sync.status()["state"] == "synced" and sync.status()["last_error"] is None
    assert len(agent.applied) == 1
    portal.fail = [error]
    assert steps(sync)[0] <= 1.0  # the first failure after a success starts over
    assert portal.pulls[-1][1] == 25


def test_a_refusing_portal_and_a_down_tunnel_back_off_too(tmp_path):
    portal, agent = FakePortal(update(1, doc())), Agent()
    tunnel = {"up": False}

    def client() -> FakePortal:
        if not tunnel["up"]:
            raise TunnelNotReady("the tunnel to the portal is not up")
        return portal

    sync = make_sync(tmp_path, client, agent)
    assert steps(sync)[0] > 0 and "tunnel" in sync.status()["last_error"]
    assert portal.pulls == []
    tunnel["up"] = True
    portal.fail = [PortalRejected(403, "unknown device")]
    assert steps(sync)[0] > 0 and sync.status()["state"] == "backoff"
    steps(sync)
    assert len(agent.applied) == 1


def test_backoff_delay_bounds():
    rng = random.Random(1)
    for attempt in range(1, 80):
        d = backoff_delay(attempt, rng, base=0.5, cap=60.0)
        top = min(60.0, 0.5 * 2 ** (attempt - 1))
        assert top / 2 <= d <= top


def test_reports_are_kept_until_the_portal_takes_them(tmp_path):
    portal, agent = FakePortal(update(1, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent)
    portal.report_fail = [PortalUnavailable("down"), PortalUnavailable("down")]
    steps(sync)  # applied; its report failed
    assert len(agent.applied) == 1 and portal.reports == []
    assert sync.status()["state"] == "backoff" and sync.status()["pending_reports"] == 1
    steps(sync, 2)
    assert [r["state"] for r in portal.reports] == ["applied"] and len(agent.applied) == 1


# ---------------------------------------------------------------------- restarts


def test_the_last_good_config_survives_a_restart(tmp_path):
    portal, agent = FakePortal(update(4, doc("Persisted"), USER)), Agent()
    steps(make_sync(tmp_path, portal, agent))
    good = load_last_good(tmp_path)
    assert good is not None and good.version == 4 and good.author == USER
    assert good.site.site.name == "Persisted" and good.document == doc("Persisted")
    again = make_sync(tmp_path, portal, agent)
    st = again.status()
    assert (st["state"], st["applied_version"], st["applied_author"]) == ("offline", 4,
                                                                          "user:ann")
    steps(again)
    assert portal.pulls[-1] == (portal.site.etag, 0)  # If-None-Match: the applied ETag
    assert len(agent.applied) == 1 and again.status()["state"] == "synced"


@pytest.mark.parametrize("content", [
    b"{not json", b"[]", b'{"version": 1}', b"\xff\xfe",
    json.dumps({"version": 1, "etag": '"1-a"', "document": INVALID,
                "author": {"role": "admin", "id": "x"}, "applied_at": 1.0}).encode(),
])
def test_a_corrupt_last_good_file_is_reported_and_ignored(tmp_path, caplog, content):
    (tmp_path / "cloud").mkdir()
    (tmp_path / "cloud" / "site.json").write_bytes(content)
    caplog.set_level(logging.ERROR, logger="agent.cloud.sync")
    assert load_last_good(tmp_path) is None
    assert any("site.json" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    portal, agent = FakePortal(update(1, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent)  # no crash; starts without it
    assert sync.current is None
    steps(sync)
    assert len(agent.applied) == 1 and load_last_good(tmp_path) is not None


def test_no_last_good_file_is_not_an_error(tmp_path, caplog):
    assert load_last_good(tmp_path) is None
    assert not caplog.records


# ---------------------------------------------------------------------- pushing changes


def test_the_change_queue_survives_a_restart_and_is_pushed_against_the_applied_version(
        tmp_path):
    portal, agent = FakePortal(update(3, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent)
    assert sync.queue_change("users[ann].forward.all", "+4930111", "user", "ann")
    assert sync.queue_change("users[ann].dnd", True, "user", "ann")
    assert sync.queue_change("users[ann].forward.all", "+4930222", "user", "ann")  # replaces
    assert sync.queue_change("users[bob].speed_dials.1", "9555123", "admin", "carol")
    path = tmp_path / "cloud" / "changes.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sync.status()["pending_changes"] == 3
    again = make_sync(tmp_path, portal, agent)  # restart before anything was pushed
    assert [(c.path, c.value, c.author) for c in again.pending_changes] == [
        ("users[ann].dnd", True, USER), ("users[ann].forward.all", "+4930222", USER),
        ("users[bob].speed_dials.1", "9555123", ADMIN)]
    steps(again)  # nothing applied yet: no base version, nothing pushed; the pull applies v3
    assert portal.pushes == [] and again.current is not None
    steps(again)
    assert portal.pushes == [
        {"base_version": 3, "author": ("user", "ann"), "changes": [
            ("users[ann].dnd", True), ("users[ann].forward.all", "+4930222")]},
        {"base_version": 3, "author": ("admin", "carol"), "changes": [
            ("users[bob].speed_dials.1", "9555123")]}]
    assert again.status()["pending_changes"] == 0
    assert json.loads(path.read_text()) == {"changes": []}
    assert make_sync(tmp_path, portal, agent).pending_changes == []


def test_a_conflict_drops_only_the_conflicting_paths_and_pushes_the_rest(tmp_path):
    portal, agent = FakePortal(update(3, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent)
    steps(sync)
    sync.queue_change("users[ann].forward.all", "+4930111", "user", "ann")
    sync.queue_change("users[ann].mobile", "9017012345", "user", "ann")
    portal.push_answers = [Conflict(7, ["users[ann].forward.all"]), 8]
    steps(sync)
    assert portal.pushes == [
        {"base_version": 3, "author": ("user", "ann"), "changes": [
            ("users[ann].forward.all", "+4930111"), ("users[ann].mobile", "9017012345")]},
        {"base_version": 7, "author": ("user", "ann"), "changes": [
            ("users[ann].mobile", "9017012345")]}]
    assert sync.status()["pending_changes"] == 0
    assert ("site.change_conflict", {"path": "users[ann].forward.all", "base_version": 3,
                                     "current_version": 7, "resolution": "portal wins"},
            "user:ann") in agent.audits


def test_secrets_are_never_queued_and_push_failures_keep_or_drop_changes(tmp_path, caplog):
    portal, agent = FakePortal(update(3, doc())), Agent()
    sync = make_sync(tmp_path, portal, agent)
    steps(sync)
    caplog.set_level(logging.ERROR, logger="agent.cloud.sync")
    assert not sync.queue_change("users[ann].sip.password", "hunter22", "user", "ann")
    assert not sync.queue_change("users[ann].voicemail_pin", "1234", "user", "ann")
    assert sync.status()["pending_changes"] == 0
    assert sum("secret" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(ValueError):
        sync.queue_change("users[ann].dnd", True, "partner", "pat")
    sync.queue_change("users[ann].dnd", True, "user", "ann")
    portal.push_answers = [PortalUnavailable("down")]
    assert steps(sync)[0] > 0 and sync.status()["pending_changes"] == 1  # kept, backoff
    portal.push_answers = [PortalRejected(400, "bad path")]
    steps(sync)
    assert sync.status()["pending_changes"] == 0  # refused unchanged: dropped, audited
    assert agent.audits[-1][0] == "site.change_dropped"


def test_drop_conflicts_is_pure():
    a = [PendingChange(1, "users[ann].forward.all", None, USER, 0.0),
         PendingChange(2, "users[ann].dnd", None, USER, 0.0)]
    kept, dropped = drop_conflicts(a, ['users["ann"].forward.all'])
    assert [c.seq for c in kept] == [2] and [c.seq for c in dropped] == [1]
    kept, dropped = drop_conflicts(a, ["something.else"])  # unmatched: the portal wins
    assert kept == [] and len(dropped) == 2
    assert drop_conflicts(a, []) == (a, [])


# ---------------------------------------------------------------------- the loop, in time


class HeldPortal(FakePortal):
    """A long-poll (wait > 0) with the current ETag is held until ``changed`` is set."""

    def __init__(self, site: SiteUpdate) -> None:
        super().__init__(site)
        self.changed = asyncio.Event()

    async def get_site(self, *, etag: str | None = None, wait: float = 0) -> SiteUpdate | None:
        if wait and self.site is not None and etag == self.site.etag:
            self.pulls.append((etag, wait))
            try:
                await asyncio.wait_for(self.changed.wait(), wait)
            except TimeoutError:
                return None
            self.changed.clear()
            return self.site
        return await super().get_site(etag=etag, wait=wait)


async def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


def test_long_poll_poke_and_a_queued_change_wake_the_loop(tmp_path):
    async def main() -> None:
        portal, agent = HeldPortal(update(1, doc())), Agent()
        sync = make_sync(tmp_path, portal, agent)
        task = asyncio.create_task(sync.run())
        await until(lambda: len(portal.pulls) == 2)  # applied v1, long-poll held
        assert portal.pulls[1] == (portal.site.etag, 25)
        portal.site = update(2, doc("Notified"))
        portal.changed.set()  # the portal answers the held request
        await until(lambda: len(agent.applied) == 2)
        await until(lambda: len(portal.pulls) == 3)
        sync.poke()  # pull now: the long-poll gives way to a wait=0 pull
        await until(lambda: (portal.site.etag, 0) in portal.pulls[3:])
        sync.queue_change("users[ann].dnd", True, "user", "ann")
        await until(lambda: len(portal.pushes) == 1)
        assert portal.pushes[0]["base_version"] == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sync.status()["state"] == "offline"

    run(main())


# ---------------------------------------------------------------------- the reference portal


def _portal_modules() -> Any:
    # tests/ is on sys.path (no __init__ there); `tests.portal` would be sippy's `tests`.
    from portal import pki, server
    return pki, server


def _admin(port: int, method: str, path: str, body: Any, role: str, user: str
           ) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=json.dumps(body).encode(),
                 headers={"X-Portal-Role": role, "X-Portal-User": user})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def test_sync_against_the_reference_portal_over_mutual_tls(tmp_path):
    pki, server = _portal_modules()
    running = server.start(tmp_path / "portal", pki.make_pki(tmp_path / "pki"))
    try:
        ident = DeviceIdentity.load_or_create(tmp_path / "state")
        token = running.portal.create_device(ident.serial, doc(), "partner", "pat")["claim_token"]
        issued = running.portal.enroll({"claim_token": token, "csr_pem": ident.csr_pem()})
        ident.store_certificate(issued["certificate_pem"], issued["ca_chain_pem"])
        run(_against_portal(running, ident, tmp_path / "state"))
    finally:
        running.stop()


async def _against_portal(running: Any, ident: DeviceIdentity, state: Path) -> None:
    ports = running.ports
    agent = Agent()
    applied_at: dict[int, float] = {}

    async def apply(site: Site, upd: SiteUpdate, author: Author) -> None:
        applied_at[upd.version] = time.monotonic()
        await agent.apply(site, upd, author)

    async def admin(method: str, path: str, body: Any, role: str, user: str = "") -> Any:
        status, out = await asyncio.to_thread(_admin, ports["admin"], method,
                                              f"/api/devices/{ident.serial}{path}", body, role,
                                              user or role)
        assert status == 200, out
        return out

    async with PortalClient.from_identity(ident, f"https://127.0.0.1:{ports['device']}",
                                          inner_address="127.0.0.1") as client:
        sync = ConfigSync(client=client, state_dir=state, apply=apply, audit=agent.audit,
                          long_poll=10)
        task = asyncio.create_task(sync.run())
        try:
            await until(lambda: 1 in applied_at, 10)  # the initial pull
            assert agent.applied[0][2] == Author("partner", "pat")
            await until(lambda: sync.status()["state"] == "synced", 5)
            await asyncio.sleep(0.2)  # the long-poll is outstanding now

            # A partner edit arrives through the long-poll within a second.
            edited = doc("Edited by the partner")
            out = await admin("PUT", "/site", {"document": edited}, "partner", "pat")
            t0 = time.monotonic()
            await until(lambda: out["version"] in applied_at, 5)
            assert applied_at[out["version"]] - t0 < 1.0
            _, upd, author = agent.applied[-1]
            assert author == Author("partner", "pat") and upd.document == edited

            # The customer admin turns partner access off: an admin version, applied.
            out = await admin("PUT", "/partner-access", {"enabled": False}, "admin", "carol")
            await until(lambda: out["site_version"] in applied_at, 5)
            assert agent.applied[-1][2] == Author("admin", "carol")

            # A portal that fails to enforce it stores a partner edit: the device refuses.
            forced = {**doc("Sneaky partner edit"), "privacy": {"partner_access": False}}
            out = await admin("PUT", "/site?force=1", {"document": forced}, "partner", "pat")
            refused = REFUSED.format(v=out["version"])
            await until(lambda: (sync.status()["last_failed"] or {}).get("version")
                        == out["version"], 5)
            await until(lambda: sync.status()["pending_reports"] == 0, 5)
            reports = (await admin("GET", "/status", {}, "admin"))["reports"]
            assert reports[-1]["version"] == out["version"]
            assert reports[-1]["state"] == "failed" and reports[-1]["errors"] == [refused]
            assert [r["state"] for r in reports] == ["applied"] * 3 + ["failed"]
            assert out["version"] not in applied_at
            assert sync.status()["state"] == "failed"
            assert sync.status()["applied_version"] == max(applied_at)
            assert any(a[0] == "site.partner_refused" and a[2] == "partner:pat"
                       for a in agent.audits)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def test_the_last_good_file_is_sealed_and_a_tampered_one_is_ignored(tmp_path, caplog):
    portal, agent = FakePortal(update(1, doc())), Agent()
    steps(make_sync(tmp_path, portal, agent))
    path = tmp_path / "cloud" / "site.json"
    raw = path.read_bytes()
    password = doc()["users"][0]["sip"]["password"]
    assert password.encode() not in raw and b'"version"' not in raw  # encrypted at rest
    assert (tmp_path / "cloud" / "site.key").stat().st_mode & 0o077 == 0
    assert load_last_good(tmp_path).version == 1
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    caplog.set_level(logging.ERROR, logger="agent.cloud.sync")
    assert load_last_good(tmp_path) is None
    assert any("cannot be decrypted" in r.getMessage() for r in caplog.records)
