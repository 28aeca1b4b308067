"""The SIP side of the agent: sockets, the sans-I/O core, and the store, wired.

Receive path: a socket adapter hands bytes to :meth:`SipService._receive`,
which feeds the :class:`~sipstack.endpoint.Endpoint`. Output is collected and
flushed once per event-loop pass: first every binding change of the pass is
committed in one SQLite transaction (group commit), then the replies go out.
So a phone is told "200 OK" only once its binding would survive a crash of
the agent, and under load one commit serves a whole batch of REGISTERs.

Bindings are soft state: phones refresh them, and re-register when they boot.
So the store runs WAL with ``synchronous=NORMAL`` (no fsync per commit); a
power cut can lose the last moments of registrations, never consistency.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.apps.assigner import AssignerSite, extension_assigner
from agent.apps.attendant import CallControlHost, attendant_app
from agent.apps.hold_music import HoldMusicPlayer
from agent.apps.paging import PagingHost, paging_app
from agent.apps.runtime import AppCall, Application, run_application
from agent.apps.voicemail import leave_message, mailbox_menu
from agent.calls.engine import CallConfig, CallControl, EndedCall
from agent.calls.model import Call
from agent.calls.mwi import BindingSeen, Mwi
from agent.calls.paging import PagingGroup
from agent.calls.plan import ToApplication
from agent.calls.site_env import SiteCallEnv
from agent.calls.trunks import TrunkRegistrations
from agent.cdr import CallRecord
from agent.listen import ListenSpec, hostport
from agent.media.engine import MediaEngine, MediaLeg, PortRangeExhausted
from agent.prompts import PromptError, PromptLibrary
from agent.prompts import default_directory as default_prompt_directory
from agent.routing import PAGING_SERVICE, attendant_of, direct_dial_menus, paging_group_of
from agent.site import Site
from agent.store import BindingRow, DeleteBinding, Store, UpsertBinding
from agent.version import version
from agent.voicemail import VoicemailStore
from agent.voicemail.email import VoicemailEmailSender
from sipstack.digest import DigestServer, ha1
from sipstack.endpoint import (
    Endpoint,
    EndpointConfig,
    IncomingRequest,
    salvage_error_response,
)
from sipstack.errors import SipParseError
from sipstack.framing import FramingError
from sipstack.media.session import NegotiationError
from sipstack.message import REASON_PHRASES
from sipstack.peer import Peer
from sipstack.registrar import Binding, Change, Delete, Registrar, RegistrarConfig, Upsert
from sipstack.registration import RegistrationHandler
from sipstack.sdp import SdpError, parse_sdp
from sipstack.transaction import LayerConfig, TransactionError, TransactionLayer
from sipstack.transport import StreamLimits, StreamServer, UdpEndpoint, open_udp, server_ssl_context
from sipstack.uri import SipUri, parse_uri
from sipstack.validate import check_request

log = logging.getLogger(__name__)

SUPPORTED = ("path", "outbound", "replaces")
ALLOW = ("REGISTER", "OPTIONS", "INVITE", "ACK", "CANCEL", "BYE", "REFER", "UPDATE", "INFO",
         "NOTIFY", "SUBSCRIBE")
# Methods we know but do not serve get 405 with Allow; unknown ones 501 (RFC 3261 §8.2.1).
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "INFO",
     "UPDATE", "PRACK", "PUBLISH"}
)
# Requests call control handles; the rest are refused here without a transaction.
CALL_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "REFER", "UPDATE", "INFO", "NOTIFY", "OPTIONS",
     "SUBSCRIBE", "MESSAGE"}
)
SWEEP_INTERVAL = 30.0
AUTO_REGISTRATION_AOR = "@auto-registration"  # not a valid user id: no clash possible
# Overload: the event loop running late means more work arrives than the CPU can do.
# Past OVERLOAD_LAG new calls get 503 (existing ones go on); below RECOVER_LAG they are
# taken again. Measured with a timer every LOAD_TICK seconds.
LOAD_TICK = 0.05
OVERLOAD_LAG = 0.25
RECOVER_LAG = 0.05
MAX_UNWRITTEN_RECORDS = 100_000  # call records held in memory while the store fails


class SiteDirectory:
    """The site's users as the registration code sees them (see sipstack.registration)."""

    def __init__(self, site: Site, algorithms: tuple[str, ...]) -> None:
        realm = site.site.realm
        self._by_username: dict[str, str] = {}
        self._targets: dict[str, str] = {}
        self._ha1: dict[tuple[str, str], str] = {}
        for user in site.users:
            username = user.sip.username
            password = user.sip.password.get_secret_value()
            self._by_username[username] = user.id
            self._targets[username] = user.id
            self._targets[user.extension] = user.id
            for algorithm in algorithms:
                self._ha1[(username, algorithm)] = ha1(username, realm, password, algorithm)
        auto = site.provisioning.auto_registration
        if auto is not None:
            # Unassigned phones share this account: they may register, and call the
            # extension assigner (call control refuses anything else).
            username = auto.username
            self._by_username[username] = AUTO_REGISTRATION_AOR
            self._targets[username] = AUTO_REGISTRATION_AOR
            self._targets[auto.assigner_number] = AUTO_REGISTRATION_AOR  # the line's user part
            for algorithm in algorithms:
                self._ha1[(username, algorithm)] = ha1(
                    username, realm, auto.password.get_secret_value(), algorithm)

    def aor_for_target(self, user: str) -> str | None:
        return self._targets.get(user)

    def aor_for_username(self, username: str) -> str | None:
        return self._by_username.get(username)

    def ha1(self, username: str, algorithm: str) -> str | None:
        return self._ha1.get((username, algorithm))


@dataclass(frozen=True, slots=True)
class Listener:
    spec: ListenSpec
    bound: tuple[str, int]


def _row_to_binding(row: BindingRow) -> Binding:
    return Binding(
        aor=row.aor,
        contact=row.contact,
        expires_at=row.expires_at,
        call_id=row.call_id,
        cseq=row.cseq,
        source=Peer(row.source_transport, row.source_host, row.source_port),
        q=row.q,
        user_agent=row.user_agent or "",
        instance_id=row.instance_id,
        reg_id=row.reg_id,
    )


def _binding_to_row(b: Binding, now: float) -> BindingRow:
    return BindingRow(
        aor=b.aor,
        contact=b.contact,
        expires_at=b.expires_at,
        call_id=b.call_id,
        cseq=b.cseq,
        q=b.q,
        source_transport=b.source.transport,
        source_host=b.source.host,
        source_port=b.source.port,
        user_agent=b.user_agent or None,
        instance_id=b.instance_id,
        reg_id=b.reg_id,
        updated_at=now,
    )


class SipService:
    def __init__(
        self,
        *,
        site: Site,
        store: Store,
        listens: list[ListenSpec],
        state_dir: Path,
        tls_cert: tuple[Path, Path] | None = None,
        stream_limits: StreamLimits | None = None,
    ) -> None:
        self.site = site
        self.store = store
        self.listens = listens
        self.state_dir = state_dir
        self.tls_cert = tls_cert
        self.stream_limits = stream_limits
        self.registrar = Registrar(self._registrar_config(site))
        digest = self._digest_for(site)
        self.registration = RegistrationHandler(
            self.registrar, digest, SiteDirectory(site, digest.algorithms)
        )
        self.endpoint = Endpoint(
            EndpointConfig(server_header=f"edgepbx/{version()}", allow=ALLOW, supported=SUPPORTED),
            on_register=self.registration,
            check_request=functools.partial(check_request, supported=frozenset(SUPPORTED)),
        )
        self.registration.inspect = self.endpoint.inspect
        self.call_env = SiteCallEnv(
            site, registrar=self.registrar, digest=self.registration.digest, store=store,
            local_address=self.local_address, ha1=self._ha1, has_flow=self._has_flow,
        )
        self.calls = CallControl(
            TransactionLayer(LayerConfig()), self.call_env,
            CallConfig(server_header=f"edgepbx/{version()}"),
        )
        self._apply_park(site)
        # User id -> extension, for MWI on the registration path (kept with the site).
        self._extension_of_user = {u.id: u.extension for u in site.users}
        self.mwi = Mwi(self.calls, store)
        self.voicemail = VoicemailStore(state_dir, store)
        self.voicemail.on_change(self._mailbox_changed)
        # Voicemail to e-mail (opt-in per site and per user): a durable queue in the store.
        self.vm_email = VoicemailEmailSender(self.voicemail, lambda: self.site)
        self.vm_email.attach()
        self.hold_music = HoldMusicPlayer(
            self.calls, self._media_engine, self._prompt_library,
            lambda leg: self.local_address(leg.peer)[0], self._flush)
        self.calls.hold_music = self.hold_music
        self.calls.applications["voicemail"] = self._launch_app
        self.calls.applications["voicemail-menu"] = self._launch_app
        self.trunks = TrunkRegistrations(self.calls, self.local_address,
                                         f"edgepbx/{version()}")
        self._call_timer: asyncio.TimerHandle | None = None
        self._call_deadline: float | None = None
        # Voice applications (agent.apps): the Agent sets assigner_site; the media engine
        # and the prompts are opened on the first application call.
        self.assigner_site: AssignerSite | None = None
        self._media: MediaEngine | None = None
        self._prompts: PromptLibrary | None = None
        self._app_tasks: set[asyncio.Task[None]] = set()
        self.calls.applications["assigner"] = self._launch_app
        self.calls.applications["attendant"] = self._launch_app
        self.calls.applications["paging"] = self._launch_app
        self._local_cache: dict[tuple[str, str], tuple[str, int]] = {}
        self._unwritten: list[CallRecord] = []
        # Set by the agent from the site's privacy switches when the cloud link runs: finished
        # calls are then queued for upload in the same transaction that stores them.
        self.cdr_upload = False
        self.outbox_max_bytes: int | None = None
        self._load_timer: asyncio.TimerHandle | None = None
        self._load_due = 0.0
        self.overload_episodes = 0
        self.listeners: list[Listener] = []
        self._udp: dict[int, UdpEndpoint] = {}  # by address family
        self._streams: dict[str, StreamServer] = {}
        self._flush_pending = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store_errors = 0

    # -- configuration ------------------------------------------------------------
    @staticmethod
    def _registrar_config(site: Site) -> RegistrarConfig:
        sip = site.sip
        return RegistrarConfig(
            min_expires=sip.min_expires,
            max_expires=sip.max_expires,
            default_expires=sip.default_expires,
            max_contacts=sip.max_contacts_per_user,
        )

    @staticmethod
    def _digest_for(site: Site) -> DigestServer:
        # A fresh secret per start: outstanding nonces die with the process and
        # phones simply get a new challenge (stale=false costs them one round trip).
        return DigestServer(
            site.site.realm,
            secrets.token_bytes(32),
            nonce_lifetime=float(site.sip.nonce_lifetime),
            algorithms=tuple(site.sip.digest_algorithms),
        )

    def apply_site(self, site: Site) -> None:
        """Switch to a new, already validated site document."""
        old = self.site
        registration = self.registration
        if (site.site.realm, site.sip.nonce_lifetime, site.sip.digest_algorithms) != (
            old.site.realm, old.sip.nonce_lifetime, old.sip.digest_algorithms
        ):
            registration.digest = self._digest_for(site)
        registration.directory = SiteDirectory(site, registration.digest.algorithms)
        self.registrar.config = self._registrar_config(site)
        self.call_env.digest = registration.digest
        self.call_env.apply_site(site)
        self._apply_park(site)
        self._extension_of_user = {u.id: u.extension for u in site.users}
        self.site = site
        if self._loop is not None:
            self._name_tls_trunks()
            self.trunks.apply(site, time.time())
            self._flush()
        self._persist(self._drop_removed_users())

    def _drop_removed_users(self) -> list[Change]:
        """Forget the bindings of users the site no longer has."""
        kept = {u.id for u in self.site.users}
        if self.site.provisioning.auto_registration is not None:
            kept.add(AUTO_REGISTRATION_AOR)
        return [
            change
            for aor in self.registrar.aors()
            if aor not in kept
            for change in self.registrar.drop_aor(aor)
        ]

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = time.time()
        self.registrar.load([_row_to_binding(r) for r in self.store.load_bindings(now)], now)
        self._persist(self._drop_removed_users())
        for spec in self.listens:
            bound = await self._open(spec)
            self.listeners.append(Listener(spec, bound))
            log.info("listening", extra={"transport": spec.transport, "address": hostport(*bound)})
        self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
        self._name_tls_trunks()
        self.trunks.apply(self.site, time.time())
        # MWI after a restart: the phones keep their lamps, but what changed while we
        # were down (and what they lost rebooting meanwhile) is sent again.
        self.mwi.start(time.time(), self._bindings_seen(time.time()))
        self._resync_mwi_from_voicemail()
        self.vm_email.start()
        self._flush()
        self._load_due = self._loop.time() + LOAD_TICK
        self._load_timer = self._loop.call_at(self._load_due, self._watch_load)

    async def _open(self, spec: ListenSpec) -> tuple[str, int]:
        if spec.transport == "udp":
            udp = await open_udp(spec.host, spec.port, self._receive)
            _enlarge_buffers(udp)
            family = socket.AF_INET6 if spec.is_ipv6 else socket.AF_INET
            self._udp.setdefault(family, udp)
            return udp.local
        ssl_context = None
        if spec.transport == "tls":
            if self.tls_cert is None:
                raise RuntimeError("a tls listener needs a certificate")
            ssl_context = server_ssl_context(str(self.tls_cert[0]), str(self.tls_cert[1]))
        server = StreamServer(
            self._receive, self._framing_error, transport_name=spec.transport,
            limits=self.stream_limits,
            ssl_context=ssl_context,
        )
        await server.start(spec.host, spec.port)
        server.on_unreachable = self._unreachable
        if spec.transport == "tls":
            # Outbound TLS (a trunk) verifies the carrier against the system's CAs.
            server.client_ssl_context = ssl.create_default_context()
        self._streams.setdefault(spec.transport, server)
        return server.local

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._app_tasks):
            task.cancel()
        await self.vm_email.stop()
        await self.hold_music.close()
        if self._media is not None:
            await self._media.close()
        if self._call_timer is not None:
            self._call_timer.cancel()
        if self._load_timer is not None:
            self._load_timer.cancel()
        self.trunks.stop(time.time())
        self._flush()
        for udp in self._udp.values():
            udp.close()
        for server in self._streams.values():
            await server.close()

    # -- receive path -------------------------------------------------------------
    def _receive(self, data: bytes, peer: Peer) -> None:
        self.endpoint.receive(data, peer, time.time())
        if not self._flush_pending:
            self._flush_pending = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _framing_error(self, error: FramingError, peer: Peer) -> None:
        log.info("closing stream after framing error",
                 extra={"peer": str(peer), "status": error.error.status, "why": error.error.detail})
        response = salvage_error_response(error.head, error.error) if error.head else None
        if response is not None:
            # Answer (e.g. 513) before the connection goes; close() flushes writes first.
            self._send(response.to_bytes(), peer)

    def _flush(self) -> None:
        self._flush_pending = False
        now = time.time()
        calls = self.calls
        for event in self.endpoint.events():
            if isinstance(event, IncomingRequest):
                if event.request.method in CALL_METHODS:
                    calls.receive(event.request, event.peer, now)
                else:
                    self._answer_unsupported(event)
            else:
                calls.receive(event.response, event.peer, now)
        # Commit before replying: a 200 must not promise a binding a crash would lose,
        # and the 200 to a BYE goes out only once the call's record is on disk.
        self._persist(self.registration.take_changes())
        self._persist_records(calls.take_records())
        for data, peer in self.endpoint.datagrams_to_send():
            self._send(data, peer)
        for data, peer in calls.layer.datagrams_to_send():
            self._send(data, peer)
        self._arm_call_timer()

    def _arm_call_timer(self) -> None:
        deadlines = [d for d in (self.calls.get_timer(), self.trunks.get_timer()) if d is not None]
        deadline = min(deadlines, default=None)
        if deadline == self._call_deadline:
            return
        if self._call_timer is not None:
            self._call_timer.cancel()
            self._call_timer = None
        self._call_deadline = deadline
        if deadline is not None and self._loop is not None:
            delay = max(0.0, deadline - time.time())
            self._call_timer = self._loop.call_at(self._loop.time() + delay, self._on_call_timer)

    def _on_call_timer(self) -> None:
        self._call_timer = None
        self._call_deadline = None
        now = time.time()
        self.calls.handle_timer(now)
        self.trunks.handle_timer(now)
        self._flush()

    def _watch_load(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = now - self._load_due
        calls = self.calls
        if not calls.overloaded and lag > OVERLOAD_LAG:
            calls.overloaded = True
            self.overload_episodes += 1
            log.warning("overloaded: new calls get 503", extra={"lag_ms": round(lag * 1000)})
        elif calls.overloaded and lag < RECOVER_LAG:
            calls.overloaded = False
            log.warning("load back to normal: taking new calls",
                        extra={"refused": calls.calls_refused_overload})
        self._load_due = now + LOAD_TICK
        self._load_timer = self._loop.call_at(self._load_due, self._watch_load)

    def send_resync(
        self, extension: str, event: str, body: Callable[[str], bytes] | None,
        on_result: Callable[[int], None],
    ) -> int:
        """An unsolicited NOTIFY (check-sync, service-control) to every registered contact
        of ``extension``; see agent.resync. Returns how many were sent."""
        user = next((u for u in self.site.users if u.extension == extension), None)
        if user is None:
            return 0
        now = time.time()
        sent = 0
        for contact in self.call_env.contacts(extension, now):
            binding_call_id = next((b.call_id for b in self.registrar.lookup(user.id, now)
                                    if b.contact == contact.uri), "")
            payload = body(binding_call_id) if body is not None else b""

            def answered(response: object, status: int, t: float) -> None:
                if status >= 200:
                    on_result(status)

            try:
                self.calls.notify_out_of_dialog(
                    contact.uri, contact.peer, now, to=f"<sip:{extension}@{self.site.site.realm}>",
                    event=event, handler=answered, body=payload,
                    content_type="text/plain" if payload else None)
            except TransactionError as exc:
                log.info("resync NOTIFY not sent", extra={"extension": extension,
                                                          "why": str(exc)})
                continue
            sent += 1
        self._flush()
        return sent

    def resync_contact(self, contact: str, source_ip: str, vendor: str) -> None:
        """Tell the phone at ``contact`` (it called from ``source_ip``) to fetch its files:
        the extension assigner's phone, registered as the auto-registration account."""
        now = time.time()
        call_peer = next((b.source for aor in self.registrar.aors()
                          for b in self.registrar.lookup(aor, now)
                          if b.source.host == source_ip), None)
        register_call_id = next((b.call_id for aor in self.registrar.aors()
                                 for b in self.registrar.lookup(aor, now)
                                 if b.source.host == source_ip), "")
        peer = call_peer or self._contact_peer(contact)
        if peer is None or not contact:
            return
        cisco = vendor == "cisco"
        body = _cisco_restart_body(register_call_id) if cisco else b""
        try:
            self.calls.notify_out_of_dialog(
                contact, peer, now, to=f"<{contact}>",
                event="service-control" if cisco else "check-sync;reboot=false",
                handler=lambda response, status, t: None, body=body,
                content_type="text/plain" if body else None)
        except TransactionError as exc:
            log.info("resync NOTIFY not sent", extra={"contact": contact, "why": str(exc)})
        self._flush()

    @staticmethod
    def _contact_peer(contact: str) -> Peer | None:
        try:
            uri = parse_uri(contact)
        except SipParseError:
            return None
        if not isinstance(uri, SipUri):
            return None
        transport = str(uri.params.get("transport") or "udp").lower()
        return Peer(transport, uri.host_bare, uri.port or 5060)

    def _has_flow(self, peer: Peer) -> bool:
        server = self._streams.get(peer.transport)
        return server is not None and peer in server.connections

    # -- voice applications ---------------------------------------------------------
    def _app_for(self, name: str, plan: ToApplication | None = None) -> Application | None:
        if name == "assigner" and self.assigner_site is not None:
            return functools.partial(extension_assigner, site=self.assigner_site)
        if name in ("voicemail", "voicemail-menu") and plan is not None:
            return self._voicemail_app(name, plan)
        if name == "attendant" and plan is not None:
            attendant = attendant_of(self.call_env.model(), plan.value)
            if attendant is None:
                return None
            host = CallControlHost(self.calls, self._flush,
                                   lambda nested: self._app_for(nested.kind, nested))
            return functools.partial(attendant_app, attendant=attendant, host=host,
                                     direct_dial=direct_dial_menus(self.site, plan.value))
        if name == "paging" and plan is not None:
            entry = paging_group_of(self.site, plan.value)
            if entry is None:
                return None
            multicast = entry.multicast
            group = PagingGroup(
                entry.name, tuple(entry.members), unicast=entry.mode != "multicast",
                multicast=(multicast.address, multicast.port)
                if multicast is not None and entry.mode != "unicast" else None,
            )
            paging_host = PagingHost(self.calls, self._flush, lambda: self._media,
                                     self.local_address)
            return functools.partial(paging_app, group=group, host=paging_host)
        return None

    def _voicemail_app(self, name: str, plan: ToApplication) -> Application | None:
        store = self.voicemail
        if name == "voicemail-menu":
            mailbox = plan.value or None
            if mailbox is not None and not self._has_mailbox(mailbox):
                return None
            return functools.partial(mailbox_menu, store=store, mailbox=mailbox,
                                     clock=time.time)
        if not self._has_mailbox(plan.value):
            return None

        async def leave(app_call: AppCall) -> None:
            call = app_call.call
            reason = call.divert_reason or ("busy" if plan.reason == "busy" else "no-answer")
            await leave_message(app_call, store, mailbox=plan.value, reason=reason,
                                caller=call.caller, caller_name=call.caller_name,
                                max_seconds=float(store.max_seconds), clock=time.time)

        return leave

    def _has_mailbox(self, extension: str) -> bool:
        user = self.call_env.model().user(extension)
        return user is not None and user.voicemail

    def _mailbox_changed(self, mailbox: str, new: int, saved: int) -> None:
        """The voicemail store's hook (it may run in a worker thread): MWI on the loop."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self.set_mwi, mailbox, new, saved)

    def _resync_mwi_from_voicemail(self) -> None:
        """MWI's saved counts can lag the mailboxes (a crash between the two writes):
        the mailboxes are the truth."""
        now = time.time()
        for user in self.site.users:
            new, saved = self.voicemail.counts(user.extension)
            known = self.mwi.counts(user.extension)
            if (known.new, known.old) != (new, saved):
                self.mwi.set_counts(user.extension, new, saved, now)

    def _launch_app(self, call: Call, plan: ToApplication, now: float) -> bool:
        app = self._app_for(plan.kind, plan)
        if app is None or self._loop is None:
            return False
        # The record's callee: the application, and for a page which group.
        name = f"{PAGING_SERVICE}{plan.value}" if plan.kind == "paging" else plan.kind
        task = self._loop.create_task(self._run_app(app, call, name))
        self._app_tasks.add(task)
        task.add_done_callback(self._app_tasks.discard)
        return True

    async def _run_app(self, app: Application, call: Call, name: str) -> None:
        invite = call.a.invite
        try:
            if self._prompts is None:
                self._prompts = PromptLibrary(default_prompt_directory())
            offer = parse_sdp(invite.body if invite is not None else b"")
            holder: list[AppCall] = []
            leg, answer = await self._media_engine().answer(
                offer, self.local_address(call.a.peer)[0],
                lambda media_leg, event: holder[0].on_media_event(media_leg, event)
                if holder else None)
        except (SdpError, NegotiationError) as exc:
            self.calls.refuse_app(call, 488, str(exc), time.time())
            self._flush()
            return
        except (PromptError, PortRangeExhausted, OSError) as exc:
            log.error("voice application unavailable", extra={"app": name, "why": str(exc)})
            self.calls.refuse_app(call, 503, str(exc), time.time())
            self._flush()
            return
        log.info("voice application answering", extra={"app": name, "call": call.id,
                                                       "rtp_port": leg.port})
        app_call = AppCall(self, call, leg, self._prompts)
        holder.append(app_call)
        call.on_end = app_call.ended.set
        call.on_info = app_call.info_dtmf
        call.media_quality = functools.partial(_media_quality, leg)
        if not self.calls.answer_app(call, answer.serialize(), name, time.time()):
            leg.close()
            return
        self._flush()
        await run_application(app, app_call)
        self._flush()

    def _media_engine(self) -> MediaEngine:
        if self._media is None:
            self._media = MediaEngine(
                (self.site.media.rtp_port_min, self.site.media.rtp_port_max))
        return self._media

    def _prompt_library(self) -> PromptLibrary | None:
        if self._prompts is None:
            try:
                self._prompts = PromptLibrary(default_prompt_directory())
            except PromptError as exc:
                log.error("voice prompts unavailable", extra={"why": str(exc)})
                return None
        return self._prompts

    def app_hang_up(self, call: Call) -> None:
        self.calls.hang_up_app(call, time.time())
        self._flush()

    def _unreachable(self, peer: Peer) -> None:
        """A connection to ``peer`` could not be opened: its transactions fail now
        (RFC 3261 §8.1.3.1: as a 503) instead of timing out 32 s later."""
        self.calls.layer.transport_error(peer, time.time())
        self.calls.handle_timer(time.time())
        self._flush()

    def _name_tls_trunks(self) -> None:
        server = self._streams.get("tls")
        if server is None:
            return
        for trunk in self.site.trunks:
            info = self.call_env.trunk(trunk.name)
            if info is not None and trunk.transport == "tls":
                server.server_names[info.peer] = trunk.host

    def _apply_park(self, site: Site) -> None:
        features = self.calls.features
        features.park_slots = site.park.slots
        features.park_timeout = float(site.park.timeout)

    def _persist_records(self, ended: list[EndedCall]) -> None:
        """Write finished calls; on failure (disk full, a locked file) keep them and try
        again at the next flush, so a passing store problem loses no record."""
        backlog = self._unwritten
        backlog.extend(_call_record(e) for e in ended)
        if not backlog:
            return
        try:
            self.store.append_call_records(backlog, outbox_cdrs=self.cdr_upload,
                                           outbox_max_bytes=self.outbox_max_bytes)
        except Exception:
            self.store_errors += 1
            if len(backlog) > MAX_UNWRITTEN_RECORDS:
                dropped = len(backlog) - MAX_UNWRITTEN_RECORDS
                del backlog[:dropped]
                log.error("call records dropped: the store has failed too long",
                          extra={"dropped": dropped})
            log.exception("could not write call records; kept for the next try",
                          extra={"count": len(backlog)})
            return
        backlog.clear()

    def _ha1(self, username: str, algorithm: str) -> str | None:
        return self.registration.directory.ha1(username, algorithm)

    def local_address(self, peer: Peer) -> tuple[str, int]:
        """Our address as ``peer`` sees it: for Via, Contact and SDP-free headers.

        A listener on a wildcard address has no single address: the kernel's route
        to the peer picks it (a connected UDP socket, no packet sent), cached per host.
        """
        key = (peer.transport, peer.host)
        cached = self._local_cache.get(key)
        if cached is not None:
            return cached
        want = "udp" if peer.transport == "udp" else peer.transport
        v6 = ":" in peer.host
        port = 5060
        host = "127.0.0.1"
        for listener in self.listeners:
            if listener.spec.transport == want and (":" in listener.bound[0]) == v6:
                host, port = listener.bound
                break
        if host in ("0.0.0.0", "::"):
            family = socket.AF_INET6 if v6 else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect((peer.host, peer.port or 5060))
                    host = probe.getsockname()[0]
            except OSError:
                host = "127.0.0.1" if not v6 else "::1"
        if len(self._local_cache) > 4096:
            self._local_cache.clear()
        self._local_cache[key] = (host, port)
        return host, port

    def _answer_unsupported(self, event: IncomingRequest) -> None:
        request = event.request
        if request.method == "CANCEL" or request.to.tag is not None:
            # No transaction to cancel, no dialog the request could belong to (§12.2.2).
            status = 481
        elif request.method in KNOWN_METHODS:
            status = 405
        else:
            status = 501
        response = self.endpoint.error_response(request, status, REASON_PHRASES[status])
        if response is not None:  # None: an ACK, never answered
            self.endpoint.respond(request, response, event.peer)

    def _send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
            udp = self._udp.get(family)
            if udp is not None:
                udp.send(data, peer)
                return
        else:
            server = self._streams.get(peer.transport)
            if server is not None and server.send(data, peer):
                return
        log.info("no way to reach peer", extra={"peer": str(peer)})

    def set_mwi(self, extension: str, new: int, old: int, *, urgent_new: int = 0,
                urgent_old: int = 0) -> None:
        """The voicemail side: the mailbox of ``extension`` now holds ``new`` unheard and
        ``old`` heard messages. Persisted, and sent to the extension's phones."""
        self.mwi.set_counts(extension, new, old, time.time(), urgent_new=urgent_new,
                            urgent_old=urgent_old)
        self._flush()

    def _bindings_seen(self, now: float) -> list[BindingSeen]:
        extensions = self._extension_of_user
        return [BindingSeen(extensions[b.aor], b.contact, b.call_id, b.expires_at)
                for b in self.registrar.all_bindings(now) if b.aor in extensions]

    def _mwi_bindings(self, changes: list[Change], now: float) -> None:
        """Binding changes for MWI: a phone that registers anew (or after its binding
        lapsed) is sent its mailbox's state again."""
        extensions = self._extension_of_user
        for change in changes:
            if isinstance(change, Upsert):
                b = change.binding
                if b.aor in extensions:
                    self.mwi.registered(
                        BindingSeen(extensions[b.aor], b.contact, b.call_id, b.expires_at), now)
            elif isinstance(change, Delete) and change.aor in extensions:
                self.mwi.unregistered(extensions[change.aor], change.contact)

    def _persist(self, changes: list[Change]) -> None:
        if not changes:
            return
        now = time.time()
        try:
            self._mwi_bindings(changes, now)
        except Exception:  # MWI must never cost a binding its commit
            log.exception("mwi update after binding changes failed")
        rows = [
            UpsertBinding(_binding_to_row(c.binding, now)) if isinstance(c, Upsert)
            else DeleteBinding(c.aor, c.contact)
            for c in changes
        ]
        try:
            self.store.apply_binding_changes(rows)
        except Exception:
            self.store_errors += 1
            log.exception("could not persist binding changes", extra={"count": len(rows)})

    def _sweep(self) -> None:
        self._persist(self.registrar.expire(time.time()))
        assert self._loop is not None
        self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    # -- introspection ------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        stats = self.endpoint.stats
        bindings = self.registrar.all_bindings(time.time())
        return {
            "listeners": [
                {"transport": lis.spec.transport, "address": hostport(*lis.bound)}
                for lis in self.listeners
            ],
            "users": len(self.site.users),
            "bindings": len(bindings),
            "registered_users": len({b.aor for b in bindings}),
            "messages_received": stats.received,
            "parse_errors": stats.parse_errors,
            "dropped": stats.dropped,
            "auth_failures": self.registration.failures,
            "store_errors": self.store_errors,
            "connections_refused": sum(server.refused for server in self._streams.values()),
            "requests": dict(stats.by_method),
            "active_calls": len(self.calls.calls),
            "unwritten_call_records": len(self._unwritten),
            "calls_total": self.calls.calls_total,
            "invite_auth_failures": self.calls.auth_failures,
            "overloaded": self.calls.overloaded,
            "calls_refused_overload": self.calls.calls_refused_overload,
            "transactions": self.calls.layer.active_count(),
            "trunks": self.trunks.status(time.time()),
            "mwi": self.mwi.status(),
            "voicemail_email": self.vm_email.status(),
        }

    def active_calls(self) -> list[dict[str, Any]]:
        return self.calls.active(time.time())

    def phones(self) -> list[dict[str, Any]]:
        now = time.time()
        users = {u.id: u for u in self.site.users}
        out = []
        for b in sorted(self.registrar.all_bindings(now), key=lambda b: (b.aor, b.contact)):
            user = users.get(b.aor)
            out.append({
                "user": b.aor,
                "extension": user.extension if user else None,
                "name": user.name if user else None,
                "contact": b.contact,
                "source": hostport(b.source.host, b.source.port),
                "transport": b.source.transport,
                "user_agent": b.user_agent,
                "expires_in": max(0, int(b.expires_at - now)),
            })
        return out


def _cisco_restart_body(register_call_id: str) -> bytes:
    from agent.resync import cisco_restart_body

    return cisco_restart_body(register_call_id)


def _call_record(e: EndedCall) -> CallRecord:
    return CallRecord(
        call_id=e.id, direction=e.direction, caller=e.caller, caller_name=e.caller_name,
        callee=e.callee, dialed=e.dialed, start=e.start, answer=e.answer, end=e.end,
        disposition=e.disposition, hold_seconds=e.hold_seconds, hunt_group=e.hunt_group,
        trunk=e.trunk, cause=e.cause, jitter_ms=e.jitter_ms, loss_percent=e.loss_percent,
        rtt_ms=e.rtt_ms,
    )


def _media_quality(leg: MediaLeg) -> tuple[float, float, float | None] | None:
    session = leg.session
    summary = session.stats().summary if session is not None else None
    if summary is None:
        return None
    return (round(summary.jitter_ms, 2), round(summary.loss_percent, 2),
            None if summary.rtt_ms is None else round(summary.rtt_ms, 1))


def _enlarge_buffers(udp: UdpEndpoint) -> None:
    # Bursts (a whole office re-registering after a power cut) must queue in the
    # kernel, not be dropped before we ever see them.
    if udp.transport is None:
        return
    sock = udp.transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
        except OSError:
            log.debug("could not enlarge socket buffer")

