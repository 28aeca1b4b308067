"""``edgepbx-agent``: the daemon.

    edgepbx-agent --site FILE --state-dir DIR --listen udp:127.0.0.1:5060
                  [--listen tcp:HOST:PORT] [--listen tls:HOST:PORT] [--loop auto|uvloop|asyncio]
                  [--tftp-listen HOST:PORT] [--http-listen HOST:PORT] [--https-listen HOST:PORT]

Runs in the foreground and logs to stderr (or natively to the journal under systemd).
Signals: SIGTERM/SIGINT stop cleanly (exit 0); SIGHUP reloads the site file (an invalid file
is logged error by error and the running configuration stays).
Exit codes: 0 clean stop, 1 runtime failure (store, bind, ...), 2 bad arguments or invalid site.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, cast

from agent import systemd
from agent.control import ControlError, ControlServer
from agent.listen import ListenError, ListenSpec, parse_listen, reachable_address
from agent.logs import setup_logging
from agent.paths import default_state_dir
from agent.provisioning_map import ProvisioningModel, provisioning_model
from agent.site import Site, SiteError, load_site, site_document, site_fingerprint
from agent.store import Store, StoreError
from agent.version import version

__all__ = ["Agent", "SipServiceLike", "build_parser", "main"]

log = logging.getLogger("agent.main")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_LISTENS = ("udp:0.0.0.0:5060", "tcp:0.0.0.0:5060")
STOP_TIMEOUT = 10.0
GC_GEN0_THRESHOLD = 20_000  # see tune_gc()
RESYNC_TICK = 1.0  # seconds between resync retries checks
LOCK_FILENAME = "agent.lock"


class SipServiceLike(Protocol):
    """What the agent needs of ``agent.sipservice.SipService``."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def apply_site(self, site: Site) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def phones(self) -> list[dict[str, Any]]: ...
    def active_calls(self) -> list[dict[str, Any]]: ...


ServiceFactory = Callable[..., SipServiceLike]


def _default_service_factory(**kwargs: Any) -> SipServiceLike:
    from agent.sipservice import SipService

    service: SipServiceLike = SipService(**kwargs)
    return service


# --------------------------------------------------------------------------------------------
# Arguments


def _listen_arg(text: str) -> ListenSpec:
    try:
        return parse_listen(text)
    except ListenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tftp_listen_arg(text: str) -> ListenSpec:
    try:
        return parse_listen(f"udp:{text}")
    except ListenError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("udp:", "", 1)) from None


def _http_listen_arg(text: str) -> ListenSpec:
    try:
        return parse_listen(f"tcp:{text}")
    except ListenError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("tcp:", "", 1)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgepbx-agent",
        description="The edgepbx phone system daemon (runs in the foreground).",
    )
    parser.add_argument("--version", action="version", version=f"edgepbx-agent {version()}")
    parser.add_argument("--site", type=Path, required=True, metavar="FILE",
                        help="the site configuration (YAML or JSON)")
    parser.add_argument(
        "--state-dir", type=Path, default=None, metavar="DIR",
        help="state directory (default: $EDGEPBX_STATE_DIR, $STATE_DIRECTORY or /var/lib/edgepbx)",
    )
    parser.add_argument(
        "--listen", type=_listen_arg, action="append", default=[], metavar="SPEC",
        help="TRANSPORT:HOST:PORT to serve SIP on, e.g. udp:127.0.0.1:5060, tcp:[::1]:5060, "
        "tls:0.0.0.0:5061; repeatable (default: udp and tcp on 0.0.0.0:5060)",
    )
    parser.add_argument(
        "--tftp-listen", type=_tftp_listen_arg, default=None, metavar="HOST:PORT",
        help="serve phone configuration files over TFTP on HOST:PORT, e.g. 0.0.0.0:69 "
        "(port 69 needs CAP_NET_BIND_SERVICE, which the systemd unit grants); default: off",
    )
    parser.add_argument(
        "--http-listen", type=_http_listen_arg, default=None, metavar="HOST:PORT",
        help="serve the same files over HTTP on HOST:PORT (Digest authentication for "
        "phones with HTTP credentials); default: off",
    )
    parser.add_argument(
        "--https-listen", type=_http_listen_arg, default=None, metavar="HOST:PORT",
        help="serve the same files over HTTPS on HOST:PORT, with the agent's TLS "
        "certificate; default: off",
    )
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop (auto: uvloop when installed)")
    parser.add_argument("--log-level", default=os.environ.get("EDGEPBX_LOG_LEVEL", "info"),
                        choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-target", default="auto", choices=("auto", "stderr", "journal"),
                        help="auto: the journal when stderr is connected to it, else stderr")
    parser.add_argument(
        "--cloud", type=Path, default=None, metavar="FILE",
        help="the cloud link's settings (portal, enrollment, VPN; see docs/operations.md). "
        "The site then comes from the portal; FILE's --site is used only until the first "
        "pull, and the last good portal version is used from then on, even offline")
    parser.add_argument("--tls-hostname", default=None, metavar="NAME",
                        help="name for a generated TLS certificate (default: the host name)")
    return parser


def _server_ssl_context(cert: Path, key: Path) -> Any:
    """The HTTPS provisioning server's context: the agent's certificate, TLS 1.2 or newer."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


# --------------------------------------------------------------------------------------------
# The agent


class Agent:
    """Owns the store, the SIP service and the control socket for one run."""

    def __init__(
        self,
        *,
        site_path: Path,
        site: Site,
        state_dir: Path,
        listens: Sequence[ListenSpec],
        service_factory: ServiceFactory = _default_service_factory,
        tls_hostname: str | None = None,
        tftp_listen: ListenSpec | None = None,
        http_listen: ListenSpec | None = None,
        https_listen: ListenSpec | None = None,
        cloud_config: Any = None,  # agent.cloud.config.CloudConfig
    ) -> None:
        self.site_path = site_path
        self.cloud_config = cloud_config
        self.cloud: Any = None  # agent.cloud.link.CloudLink, when cloud_config is set
        self.site = site
        self.fingerprint = site_fingerprint(site)
        self.site_version: int | None = None
        self.state_dir = state_dir
        self.listens = list(listens)
        self._factory = service_factory
        self._tls_hostname = tls_hostname
        self.tftp_listen = tftp_listen
        self.http_listen = http_listen
        self.https_listen = https_listen
        self.store: Store | None = None
        self.service: SipServiceLike | None = None
        self.provisioning: Any = None  # agent.provisioning_service.ProvisioningService
        self.resync: Any = None  # agent.resync.Resync, with provisioning and SIP
        self._resync_timer: asyncio.TimerHandle | None = None
        self._control: ControlServer | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started_monotonic = time.monotonic()
        self._started_at = time.time()
        self._lock_file: IO[str] | None = None
        self._ready = False
        self._reload_pending = False

    # ---- control provider

    def status(self) -> dict[str, Any]:
        svc_status: dict[str, Any] = {}
        if self.service is not None:
            svc_status = dict(self.service.status())
        # Listeners come from the service, which knows the ports it really bound.
        out: dict[str, Any] = {"users": len(self.site.users)}
        out.update(svc_status)
        if self.provisioning is not None:
            out["provisioning"] = self.provisioning.status()
        if self.resync is not None:
            out["resync"] = self.resync.status()
        if self.cloud is not None:
            out["cloud"] = self.cloud.status()
        out.update({
            "version": version(),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "uptime_s": round(time.monotonic() - self._started_monotonic, 3),
            "state_dir": str(self.state_dir),
            "site": {
                "name": self.site.site.name,
                "realm": self.site.site.realm,
                "fingerprint": self.fingerprint,
                "version": self.site_version,
                "file": str(self.site_path),
            },
        })
        return out

    def phones(self) -> list[dict[str, Any]]:
        if self.service is None:
            return []
        return list(self.service.phones())

    def calls(self) -> list[dict[str, Any]]:
        if self.service is None:
            return []
        return list(self.service.active_calls())

    def devices(self) -> list[dict[str, Any]]:
        """Devices seen by the provisioning server (``edgepbx phones --unassigned``)."""
        if self.provisioning is None:
            return []
        result: list[dict[str, Any]] = self.provisioning.devices()
        return result

    def _start_resync(self) -> None:
        """Phones whose files a site change alters are told to fetch them (agent.resync)."""
        if self.provisioning is None or not hasattr(self.service, "send_resync"):
            return
        from agent.resync import NotifySender, Resync

        self.resync = Resync(cast(NotifySender, self.service))
        self.provisioning.on_fetched = self.resync.fetched

    def _resync_tick(self) -> None:
        if self._resync_timer is not None:
            self._resync_timer.cancel()
            self._resync_timer = None
        if self.resync is None:
            return
        self.resync.handle_timer(time.time())
        self._resync_timer = asyncio.get_running_loop().call_later(RESYNC_TICK,
                                                                   self._resync_tick)

    def _provisioning_model(self, site: Site) -> ProvisioningModel:
        sip = [s for s in self.listens if s.transport in ("udp", "tcp", "tls")]
        default_host = reachable_address(sip[0].host) if sip else "127.0.0.1"
        return provisioning_model(site, self.listens, default_host=default_host)

    # ---- lifecycle

    def request_stop(self, reason: str) -> None:
        if self._stop.is_set():
            log.info("already stopping", extra={"reason": reason})
            return
        log.info("stopping", extra={"reason": reason})
        self._stop.set()

    def _status_line(self) -> str:
        return (f"site {self.site.site.name!r} v{self.site_version} "
                f"({len(self.site.users)} users); listening on "
                + ", ".join(str(s) for s in self.listens))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _audit(self, action: str, detail: dict[str, Any], actor: str = "agent") -> None:
        self.audit(action, detail, actor=actor)

    def audit(self, action: str, detail: dict[str, Any], *, actor: str = "agent") -> None:
        """Append to the audit log. ``actor`` is ``role:id`` for people (``partner:acme``,
        ``admin:ann``, ``user:101``) and a plain name for the box itself."""
        if self.store is None:
            return
        role = actor.split(":", 1)[0] if ":" in actor else "system"
        try:
            self.store.append_audit(actor=actor, role=role, action=action, detail=detail)
        except Exception:
            log.exception("cannot write the audit log", extra={"action": action})

    def _acquire_lock(self) -> None:
        path = self.state_dir / LOCK_FILENAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fh = os.fdopen(fd, "r+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ControlError(f"another edgepbx-agent is running on {self.state_dir}") from None
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_file = fh

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # Signals first: a SIGTERM during startup finishes startup, then stops cleanly.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            try:
                self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._acquire_lock()
            except (OSError, ControlError) as exc:
                log.error("cannot use the state directory",
                          extra={"state_dir": str(self.state_dir), "error": str(exc)})
                return EXIT_FAILURE
            systemd.status("starting")
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self._lock_file is not None:
                self._lock_file.close()

    async def _run(self) -> int:
        try:
            self.store = Store.open(self.state_dir)
            self.site_version = self.store.record_site_version(
                self.fingerprint, site_document(self.site)
            )
        except StoreError as exc:
            log.error("cannot open the store", extra={"error": str(exc)})
            return EXIT_FAILURE
        self._audit("agent.start", {"version": version(), "pid": os.getpid(),
                                    "site_version": self.site_version,
                                    "fingerprint": self.fingerprint})
        code = EXIT_OK
        try:
            code = await self._serve()
        finally:
            self._audit("agent.stop", {"exit_code": code})
            self.store.close()
            self.store = None
        return code

    async def _serve(self) -> int:
        assert self.store is not None
        tls_cert: tuple[Path, Path] | None = None
        tls_specs = [s for s in self.listens if s.transport == "tls"]
        if self.https_listen is not None:
            tls_specs.append(self.https_listen)
        if tls_specs:
            # Imported here: `cryptography` costs about 8 MiB of memory that an
            # agent without a TLS listener never needs.
            from agent.tlscert import ensure_self_signed

            hostname = self._tls_hostname or socket.gethostname() or "edgepbx"
            try:
                tls_cert = await asyncio.to_thread(
                    ensure_self_signed, self.state_dir, hostname,
                    extra_ips=[s.host for s in tls_specs],
                )
            except (OSError, ValueError) as exc:
                log.error("cannot prepare the TLS certificate", extra={"error": str(exc)})
                return EXIT_FAILURE
        try:
            self.service = self._factory(
                site=self.site, store=self.store, listens=list(self.listens),
                state_dir=self.state_dir, tls_cert=tls_cert,
            )
            if hasattr(self.service, "assigner_site"):
                from agent.assigner_site import SiteAssigner

                self.service.assigner_site = SiteAssigner(self)
            await self.service.start()
        except (OSError, ImportError, ValueError, RuntimeError) as exc:
            log.error("cannot start the SIP service", extra={"error": str(exc)},
                      exc_info=not isinstance(exc, OSError))
            await self._stop_service()
            return EXIT_FAILURE
        if self.tftp_listen is not None or self.http_listen is not None \
                or self.https_listen is not None:
            from agent.provisioning_http import http_auth_config
            from agent.provisioning_service import ProvisioningService

            tftp, http, https = self.tftp_listen, self.http_listen, self.https_listen
            try:
                ssl_context = None
                if https is not None:
                    assert tls_cert is not None
                    ssl_context = _server_ssl_context(*tls_cert)
                self.provisioning = ProvisioningService(
                    self._provisioning_model(self.site), store=self.store,
                    host=tftp.host if tftp is not None else None,
                    port=tftp.port if tftp is not None else 0,
                    http=(http.host, http.port) if http is not None else None,
                    https=(https.host, https.port) if https is not None else None,
                    ssl_context=ssl_context, auth=http_auth_config(self.site),
                )
                await self.provisioning.start()
                self._start_resync()
            except (OSError, ValueError) as exc:
                log.error("cannot start provisioning", extra={
                    "listen": " ".join(s.hostport for s in (tftp, http, https) if s is not None),
                    "error": str(exc)})
                self.provisioning = None
                await self._stop_service()
                return EXIT_FAILURE
        self._control = ControlServer(self.state_dir, self)
        try:
            await self._control.start()
        except (OSError, ControlError) as exc:
            log.error("cannot open the control socket", extra={"error": str(exc)})
            self._control = None
            await self._stop_service()
            return EXIT_FAILURE

        if self.cloud_config is not None:
            await self._start_cloud()
        interval = systemd.watchdog_interval()
        if interval is not None:
            self._spawn(self._watchdog(interval))
        log.info("ready", extra={
            "version": version(), "pid": os.getpid(), "site": self.site.site.name,
            "site_version": self.site_version, "fingerprint": self.fingerprint,
            "listen": " ".join(str(s) for s in self.listens), "state_dir": str(self.state_dir),
        })
        systemd.ready(self._status_line())
        self._ready = True
        tune_gc()
        if self._reload_pending:
            self._on_sighup()
        try:
            await self._stop.wait()
        finally:
            self._ready = False
            systemd.stopping()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.cloud is not None:
                try:
                    await asyncio.wait_for(self.cloud.stop(), STOP_TIMEOUT)
                except Exception:
                    log.exception("error while stopping the cloud link")
                self.cloud = None
            if self._control is not None:
                await self._control.stop()
            await self._stop_service()
        log.info("stopped")
        return EXIT_OK

    async def _start_cloud(self) -> None:
        from agent.cloud.link import CloudLink
        from agent.cloud_host import AgentCloudHost

        host = AgentCloudHost(self)
        self.cloud = CloudLink(self.cloud_config, self.state_dir, host)
        host.attach_phone_changes()
        self.site_opt_ins_changed()
        await self.cloud.start()

    def site_opt_ins_changed(self) -> None:
        """The privacy switches may have changed: what is queued for upload follows them."""
        link = self.cloud
        if link is None:
            return
        from agent.cloud_host import opt_ins_of

        opt_ins = opt_ins_of(self.site)
        if self.service is not None and hasattr(self.service, "cdr_upload"):
            self.service.cdr_upload = opt_ins.cdr_upload
            self.service.outbox_max_bytes = link.outbox.max_bytes
        for kind, on in (("cdr", opt_ins.cdr_upload),
                         ("voicemail_backup", opt_ins.voicemail_backup)):
            if not on:
                link.outbox.purge(kind)

    async def _stop_service(self) -> None:
        if self._resync_timer is not None:
            self._resync_timer.cancel()
            self._resync_timer = None
        if self.provisioning is not None:
            try:
                await asyncio.wait_for(self.provisioning.stop(), STOP_TIMEOUT)
            except Exception:
                log.exception("error while stopping provisioning")
            self.provisioning = None
        if self.service is None:
            return
        try:
            await asyncio.wait_for(self.service.stop(), STOP_TIMEOUT)
        except TimeoutError:
            log.error("the SIP service did not stop in time", extra={"timeout_s": STOP_TIMEOUT})
        except Exception:
            log.exception("error while stopping the SIP service")

    async def _watchdog(self, interval: float) -> None:
        while True:
            systemd.watchdog()
            await asyncio.sleep(interval)

    # ---- reload

    def _on_sighup(self) -> None:
        if self.cloud is not None:
            # The portal owns the site: a reload means "pull it now", never the local file.
            log.info("SIGHUP: pulling the site from the portal now")
            self.cloud.poke()
            return
        if not self._ready:
            if not self._stop.is_set():
                log.info("SIGHUP during startup; reloading once ready")
                self._reload_pending = True
            return
        self._reload_pending = False
        self._spawn(self.reload(actor="signal:SIGHUP"))

    async def reload(self, *, actor: str = "agent") -> bool:
        """Load the site file again and apply it; on any error keep the running site."""
        async with self._reload_lock:
            systemd.reloading()
            try:
                return await self._reload(actor)
            finally:
                systemd.ready(self._status_line())

    async def _reload(self, actor: str) -> bool:
        log.info("reloading the site file", extra={"file": str(self.site_path)})
        try:
            new_site = await asyncio.to_thread(load_site, self.site_path)
        except SiteError as exc:
            for line in exc.errors:
                log.error("invalid site file; keeping the running configuration",
                          extra={"file": str(self.site_path), "error": line})
            self._audit("site.reload_rejected",
                        {"file": str(self.site_path), "errors": exc.errors}, actor=actor)
            return False
        return not await self.apply_site(new_site, actor=actor,
                                         origin={"file": str(self.site_path)})

    async def apply_site(self, new_site: Site, *, actor: str,
                         origin: dict[str, Any]) -> list[str]:
        """Switch SIP, dial plan and provisioning to ``new_site`` together, or not at all.

        Returns the reasons it was refused (empty: applied, or unchanged). ``origin`` says
        where the document came from, for the audit log (a file, or a portal version).
        """
        fingerprint = site_fingerprint(new_site)
        if fingerprint == self.fingerprint:
            log.info("site file unchanged" if "file" in origin else "site unchanged",
                     extra={"fingerprint": fingerprint, "site_version": self.site_version})
            return []
        new_model: ProvisioningModel | None = None
        if self.provisioning is not None:
            try:
                new_model = self._provisioning_model(new_site)
            except ValueError as exc:
                log.error("cannot provision phones from the new site; keeping the running "
                          "configuration", extra={"error": str(exc)})
                self._audit("site.reload_failed",
                            {**origin, "fingerprint": fingerprint, "error": str(exc)},
                            actor=actor)
                return [f"provisioning: {exc}"]
        if self.service is not None:
            try:
                self.service.apply_site(new_site)
            except Exception as exc:
                log.exception("the SIP service refused the new site; keeping the running "
                              "configuration", extra={"error": str(exc)})
                self._audit("site.reload_failed",
                            {**origin, "fingerprint": fingerprint, "error": str(exc)},
                            actor=actor)
                return [f"sip: {exc}"]
        if self.provisioning is not None and new_model is not None:
            from agent.provisioning_http import http_auth_config

            old_model = self.provisioning.model
            self.provisioning.apply(new_model, http_auth_config(new_site))
            if self.resync is not None:
                self.resync.site_changed(old_model, new_model, time.time())
                self._resync_tick()
        self.site = new_site
        self.fingerprint = fingerprint
        if self.store is not None:
            try:
                self.site_version = self.store.record_site_version(
                    fingerprint, site_document(new_site)
                )
            except StoreError as exc:
                log.error("cannot record the site version", extra={"error": str(exc)})
        self._audit("site.applied", {**origin, "fingerprint": fingerprint,
                                     "site_version": self.site_version,
                                     "users": len(new_site.users)}, actor=actor)
        log.info("site reloaded" if "file" in origin else "site applied",
                 extra={"site": new_site.site.name,
                        "site_version": self.site_version, "fingerprint": fingerprint,
                        "users": len(new_site.users), "actor": actor})
        return []


# --------------------------------------------------------------------------------------------
# Entry point


def _run_loop(coro_factory: Callable[[], Any], loop_choice: str) -> int:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    name = "asyncio"
    if loop_choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop_choice == "uvloop":
                log.error("--loop uvloop: uvloop is not installed")
                return EXIT_USAGE
        else:
            loop_factory = uvloop.new_event_loop
            name = "uvloop"
    log.debug("event loop", extra={"loop": name})
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result: int = runner.run(coro_factory())
    return result


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running SIP server.

    Everything loaded at start (the site, the registrar, modules) lives as long as
    the process: freeze it out of the collector's scans. Calls make short-lived
    cycles (legs and calls refer to each other) by the thousand per second; with
    the default gen-0 threshold of 700 allocations the collector ran several
    hundred times per second and took 16% of the call path (measured in
    bench/calls). A larger threshold collects the same garbage in fewer passes.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 50)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


def main(
    argv: Sequence[str] | None = None, *, service_factory: ServiceFactory | None = None
) -> int:
    args = build_parser().parse_args(argv)
    # Until the event loop takes over the signals, SIGTERM means a plain clean exit.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    setup_logging(args.log_level, target=args.log_target)
    state_dir: Path = args.state_dir or default_state_dir()
    listens: list[ListenSpec] = args.listen or [parse_listen(t) for t in DEFAULT_LISTENS]
    seen: set[ListenSpec] = set()
    for spec in listens:
        if spec in seen:
            log.error("duplicate --listen", extra={"listen": str(spec)})
            return EXIT_USAGE
        seen.add(spec)

    cloud_config = None
    last_good = None
    if args.cloud is not None:
        from agent.cloud.config import CloudConfigError, load_cloud_config

        try:
            cloud_config = load_cloud_config(args.cloud)
        except CloudConfigError as exc:
            for line in exc.errors:  # field errors are "path: message"; file ones name it
                prefix = "" if line.startswith(f"{args.cloud}: ") else f"{args.cloud}: "
                sys.stderr.write(f"{prefix}{line}\n")
            log.error("not starting: the cloud settings are invalid",
                      extra={"file": str(args.cloud)})
            return EXIT_USAGE
        from agent.cloud.sync import load_last_good

        last_good = load_last_good(state_dir)
    site: Site | None = None
    if last_good is not None:
        log.info("starting on the last good site from the portal",
                 extra={"portal_version": last_good.version})
        site = last_good.site
    try:
        if site is None:
            site = load_site(args.site)
    except SiteError as exc:
        # One plain `path: message` line per error (as `edgepbx site validate` prints them),
        # then a structured summary.
        for line in exc.errors:
            sys.stderr.write(f"{line}\n")
        log.error("not starting: the site file is invalid",
                  extra={"file": str(args.site), "errors": len(exc.errors)})
        return EXIT_USAGE

    agent = Agent(
        site_path=args.site, site=site, state_dir=state_dir, listens=listens,
        service_factory=service_factory or _default_service_factory,
        tls_hostname=args.tls_hostname, tftp_listen=args.tftp_listen,
        http_listen=args.http_listen, https_listen=args.https_listen,
        cloud_config=cloud_config,
    )
    try:
        return _run_loop(agent.run, args.loop)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
