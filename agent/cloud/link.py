"""The cloud link: enrollment, the tunnel, and everything that goes through it.

One :class:`CloudLink` per agent run, when the box has cloud settings (agent.cloud.config).
It owns

* the device identity (key, serial, certificate) and enrollment with a claim token, the only
  call outside the tunnel;
* the VPN manager (agent.vpn), started once a certificate exists;
* one :class:`PortalClient` at a time, bound to the tunnel's inner address and rebuilt when
  the address or the certificate changes (:meth:`client`); asking for it while the tunnel
  is down raises ``TunnelNotReady``, so nothing is ever sent outside the tunnel;
* config sync (agent.cloud.sync), the upload outbox (agent.cloud.outbox), the heartbeat,
  the daily usage report and certificate renewal at two thirds of the lifetime.

The agent (agent.main) stays in charge of what a site document does to the running box: the
link hands it validated documents through :class:`LinkHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes

from agent.cloud.config import CloudConfig
from agent.cloud.identity import DeviceIdentity, IdentityError
from agent.cloud.outbox import Outbox, Uploader
from agent.cloud.portal_client import (
    EnrollmentClient,
    Heartbeat,
    OptIns,
    PortalClient,
    PortalError,
    PortalRejected,
    PortalUnavailable,
    SiteUpdate,
    TunnelNotReady,
    enroll_identity,
    renew_identity,
)
from agent.cloud.sync import Author, ConfigSync
from agent.cloud.vm_backup import VoicemailBackups
from agent.site import Site
from agent.store import Store
from agent.version import version
from agent.voicemail import VoicemailStore
from agent.vpn import BackoffPolicy, VpnManager

__all__ = ["CLAIM_TOKEN_FILENAME", "CloudLink", "LinkHost"]

log = logging.getLogger(__name__)

CLAIM_TOKEN_FILENAME = "claim-token"
#: How often the link looks for a claim token, and retries a refused one that changed.
CLAIM_POLL = 2.0
#: How long a replaced portal client stays open for the requests still using it.
RETIRED_CLIENT_GRACE = 120.0
#: A clock this far before the certificate's start is "far in the past": say so plainly.
CLOCK_SKEW_TOLERANCE = 300.0


class LinkHost(Protocol):
    """What the link needs from the running agent."""

    store: Store

    def opt_ins(self) -> OptIns: ...
    def current_site(self) -> Site: ...
    def voicemail_store(self) -> VoicemailStore | None: ...
    def site_timezone(self) -> str: ...
    def heartbeat_facts(self) -> dict[str, int]: ...  # registered_phones, active_calls
    def audit(self, action: str, detail: dict[str, Any], actor: str) -> None: ...
    async def apply_cloud_site(self, site: Site, update: SiteUpdate,
                               author: Author) -> None: ...


class CloudLink:
    def __init__(self, config: CloudConfig, state_dir: Path, host: LinkHost, *,
                 vpn_policy: BackoffPolicy | None = None,
                 address_check: Callable[[str], bool] | None = None) -> None:
        self.config = config
        self.state_dir = state_dir
        self.host = host
        self.identity: DeviceIdentity | None = None
        self.vpn: VpnManager | None = None
        self.sync: ConfigSync | None = None
        self.outbox = Outbox(host.store, max_bytes=config.outbox.max_bytes)
        self.uploader: Uploader | None = None
        self.backups: VoicemailBackups | None = None
        self._vpn_policy = vpn_policy
        self._address_check = address_check
        self._client: PortalClient | None = None
        self._client_key: tuple[str, bytes] | None = None
        self._old_clients: list[PortalClient] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._claim_poke = asyncio.Event()
        self.state = "starting"
        self.last_error: str | None = None
        self._refused_token: str | None = None
        self.last_heartbeat_at: float | None = None
        self.renewed_at: float | None = None

    # ---- lifecycle

    @property
    def claim_token_path(self) -> Path:
        configured = self.config.enrollment.claim_token_file
        return configured or self.state_dir / "cloud" / CLAIM_TOKEN_FILENAME

    async def start(self) -> None:
        try:
            self.identity = await asyncio.to_thread(DeviceIdentity.load_or_create,
                                                    self.state_dir)
        except (IdentityError, OSError) as exc:
            self._fail("identity", f"the device identity is unusable: {exc}")
            return
        log.info("cloud link starting", extra={"serial": self.identity.serial,
                                               "enrolled": self.identity.enrolled})
        self.sync = ConfigSync(
            client=self.client, state_dir=self.state_dir, apply=self.host.apply_cloud_site,
            audit=self.host.audit, long_poll=self.config.sync.long_poll,
        )
        self.uploader = Uploader(self.outbox, client=self.client, opt_ins=self.host.opt_ins,
                                 batch_size=self.config.outbox.batch_size)
        voicemail = self.host.voicemail_store()
        if voicemail is not None:
            self.backups = VoicemailBackups(voicemail, self.outbox, self.identity.serial,
                                            self.host.current_site, self._backup_queued)
            self.backups.attach()
        self._spawn(self._enroll_then_run(), "cloud-enroll")

    async def stop(self) -> None:
        if self.backups is not None:
            self.backups.detach()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.vpn is not None:
            await self.vpn.stop()
        for client in [self._client, *self._old_clients]:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = None

    def poke(self) -> None:
        """Pull the site now and retry uploads now (the tunnel came up, a token arrived)."""
        self._claim_poke.set()
        if self.sync is not None:
            self.sync.poke()
        if self.uploader is not None:
            self.uploader.poke()

    def _backup_queued(self) -> None:
        """A voicemail backup was queued. Called in the voicemail store's thread (the
        voicemail app saves with asyncio.to_thread), so it must not touch the loop's
        objects: only the uploader's poke is thread-safe, and nothing else needs waking."""
        if self.uploader is not None:
            self.uploader.poke()

    # ---- the portal client, through the tunnel only

    def client(self) -> PortalClient:
        """The client bound to the tunnel's inner address; TunnelNotReady while it is down."""
        identity = self.identity
        if identity is None or not identity.enrolled:
            raise TunnelNotReady("the box is not enrolled yet")
        if self.vpn is None:
            raise TunnelNotReady("the tunnel to the portal is not started")
        address = self.vpn.inner_address_ready()
        if address is None:
            raise TunnelNotReady("the tunnel to the portal is not up")
        cert = identity.certificate
        assert cert is not None
        # The certificate itself, not its expiry: two certificates (a renewal within the
        # second of the last issue) may end at the same time but hold different keys.
        key = (address, cert.fingerprint(hashes.SHA256()))
        if self._client is None or self._client_key != key:
            if self._client is not None:
                self._retire(self._client)
            self._client = PortalClient.from_identity(
                identity, self.config.portal_url, inner_address=address,
                opt_ins=self.host.opt_ins)
            self._client_key = key
        return self._client

    def _retire(self, client: PortalClient) -> None:
        """Close a replaced client once no request can still be using it (a held
        long-poll lasts at most 60 s plus the timeout); until then, or without a running
        loop, stop() closes it."""
        self._old_clients.append(client)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def close() -> None:
            if client in self._old_clients:
                self._old_clients.remove(client)
                self._spawn(client.aclose(), "cloud-client-close")

        loop.call_later(RETIRED_CLIENT_GRACE, close)

    # ---- enrollment, then the tunnel and the loops

    async def _enroll_then_run(self) -> None:
        identity = self.identity
        assert identity is not None
        while not identity.enrolled or identity.expired(time.time()):
            await self._try_enroll(identity)
        await self._start_vpn(identity)
        assert self.sync is not None and self.uploader is not None
        self.state = "running"
        self._spawn(self.sync.run(), "cloud-sync")
        self._spawn(self.uploader.run(), "cloud-upload")
        self._spawn(self._heartbeat_loop(), "cloud-heartbeat")
        self._spawn(self._housekeeping_loop(), "cloud-housekeeping")

    async def _try_enroll(self, identity: DeviceIdentity) -> None:
        token = await asyncio.to_thread(self._read_claim_token)
        if identity.expired(time.time()) and token is None:
            self.state = "certificate expired"
            self.last_error = ("the device certificate has expired; renewal is no longer "
                               "possible: put a new claim token with `edgepbx cloud claim`")
        elif token is None:
            self.state = "waiting for a claim token"
        elif token == self._refused_token:
            self.state = "claim token refused"
        else:
            self.state = "enrolling"
            try:
                ca = await asyncio.to_thread(self.config.enrollment.ca.read_bytes)
                async with EnrollmentClient(self.config.enrollment.url, ca_pem=ca) as client:
                    await enroll_identity(identity, client, token)
            except PortalRejected as exc:
                self._refused_token = token
                self._fail("claim token refused", f"the portal refused the claim token: {exc}")
            except (PortalUnavailable, OSError, ValueError, IdentityError) as exc:
                self._fail("enrollment failed", f"enrollment failed: {exc}")
            else:
                self.last_error = None
                log.info("enrolled", extra={"serial": identity.serial,
                                            "cert_expires": identity.expires_at()})
                self.host.audit("cloud.enrolled", {"serial": identity.serial,
                                                   "cert_expires": identity.expires_at()},
                                "agent")
                with contextlib.suppress(OSError):
                    self.claim_token_path.unlink()  # used up: never send it again
                return
        self._claim_poke.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLAIM_POLL):
                await self._claim_poke.wait()

    def _read_claim_token(self) -> str | None:
        try:
            text = self.claim_token_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text or None

    async def _start_vpn(self, identity: DeviceIdentity) -> None:
        vpn_config = self.config.vpn_config(key_path=identity.key_path,
                                            cert_path=identity.cert_path,
                                            ca_path=identity.chain_path)
        kwargs: dict[str, Any] = {"on_change": self._tunnel_changed}
        if self._vpn_policy is not None:
            kwargs["policy"] = self._vpn_policy
        if self._address_check is not None:
            kwargs["address_check"] = self._address_check
        self.vpn = VpnManager(vpn_config, **kwargs)
        await self.vpn.start()

    def _tunnel_changed(self, state: str) -> None:
        log.info("tunnel state", extra={"state": state})
        if state == "up":
            self.poke()

    # ---- heartbeat, renewal, daily usage

    async def _heartbeat_loop(self) -> None:
        interval = self.config.sync.heartbeat_interval
        while True:
            try:
                await self._heartbeat()
            except PortalError:
                pass  # the tunnel or the portal is down: the next beat tries again
            except Exception:  # a bug must not end the heartbeat for good
                log.exception("heartbeat failed")
            await asyncio.sleep(interval * (0.9 + 0.2 * random.random()))

    async def _heartbeat(self) -> None:
        assert self.identity is not None
        facts = self.host.heartbeat_facts()
        vpn_state = self.vpn.state.value if self.vpn is not None else "down"
        beat = Heartbeat(
            version=version(), uptime=round(time.monotonic() - _STARTED, 1),
            registered_phones=facts.get("registered_phones", 0),
            active_calls=facts.get("active_calls", 0), tunnel=vpn_state,
            site_version=self._applied_version(),
            cert_expires=self.identity.expires_at(), outbox=self.outbox.stats(),
        )
        await self.client().heartbeat(beat)
        self.last_heartbeat_at = time.time()

    def _applied_version(self) -> int:
        current = self.sync.current if self.sync is not None else None
        return current.version if current is not None else 0

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                await self._housekeeping(time.time())
            except Exception:  # renewal must keep being tried
                log.exception("cloud housekeeping failed")
            await asyncio.sleep(self.config.sync.housekeeping_interval)

    async def _housekeeping(self, now: float) -> None:
        identity = self.identity
        assert identity is not None
        if identity.expired(now):
            await self._reenroll(identity)
        elif identity.renew_due(now):
            await self._renew(identity)
        try:
            facts = self.host.heartbeat_facts()
            queued = await asyncio.to_thread(
                self.outbox.enqueue_due_usage, self.host.site_timezone(),
                facts.get("registered_phones", 0), now)
        except Exception:
            log.exception("could not queue the daily usage report")
        else:
            if queued:
                self.poke()

    async def _reenroll(self, identity: DeviceIdentity) -> None:
        """The certificate ran out while running (renewal kept failing): only a new claim
        token helps. Wait for one, enroll, and reconnect the tunnel with the new
        certificate; sync and uploads pick up the new client by themselves."""
        log.error("the device certificate has expired; waiting for a new claim token")
        self.host.audit("cloud.certificate_expired", {"expired_at": identity.expires_at()},
                        "agent")
        while identity.expired(time.time()):
            await self._try_enroll(identity)
        self.state = "running"
        if self.vpn is not None:
            await self.vpn.stop()
            await self.vpn.start()

    async def _renew(self, identity: DeviceIdentity) -> None:
        try:
            await renew_identity(identity, self.client())
        except (PortalError, IdentityError, OSError) as exc:
            self.last_error = f"certificate renewal failed (retried): {exc}"
            log.warning("certificate renewal failed", extra={"error": str(exc)})
            return
        self.renewed_at = time.time()
        log.info("certificate renewed", extra={"cert_expires": identity.expires_at()})
        self.host.audit("cloud.certificate_renewed", {"cert_expires": identity.expires_at()},
                        "agent")
        if self.vpn is not None:
            # charon holds the old certificate: reconnect so the next IKE_SA uses the new one.
            await self.vpn.stop()
            await self.vpn.start()

    # ---- status

    def status(self) -> dict[str, Any]:
        now = time.time()
        identity = self.identity
        out: dict[str, Any] = {"state": self.state, "last_error": self.last_error,
                               "portal": self.config.portal_url}
        if identity is not None:
            out["identity"] = identity.status(now)
            if identity.enrolled and now + CLOCK_SKEW_TOLERANCE < identity.not_before():
                out["clock_warning"] = (
                    "the system clock is before the device certificate's start: the portal's "
                    "TLS and IKE checks will fail until the time is set (check NTP)")
        out["vpn"] = self.vpn.status() if self.vpn is not None else {"state": "not started"}
        out["sync"] = self.sync.status() if self.sync is not None else None
        out["outbox"] = self.outbox.stats()
        out["last_heartbeat_at"] = self.last_heartbeat_at
        return out

    # ---- helpers

    def _fail(self, state: str, message: str) -> None:
        self.state = state
        self.last_error = message
        log.error(message)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cloud link task failed", exc_info=task.exception(),
                      extra={"task": task.get_name()})


_STARTED = time.monotonic()
