"""Phone provisioning in the agent: TFTP and HTTP(S) serving files rendered from the
current site, and the inventory of devices that ask for them.

:meth:`ProvisioningService.lookup` is the one transport-independent entry point: file name
and client address in, content and what it is out, the device recorded. TFTP
(:mod:`agent.tftp_service`) and HTTP(S) (:mod:`agent.provisioning_http`, which adds the
per-device credentials) both call it, and both report a completed fetch of a phone's own
file with :meth:`ProvisioningService.fetched`.

Files are rendered on demand by :func:`provisioning.file_for` from the
:class:`~agent.provisioning_map.ProvisioningModel` of the site in force;
:meth:`ProvisioningService.apply` swaps the model (a site reload), and the next request
is rendered from the new one. A rendered file is kept until the next ``apply`` (a boot
storm renders each file once); only files that exist are kept, so random names cannot
grow the cache.

Devices, by the MAC in the requested name (``SEP<MAC>.cnf.xml``, ``<mac>.cfg``,
``<mac>-edgepbx.cfg``):

- a MAC in the site's ``phones:`` gets its own file; the completed transfer is recorded
  with the file's SHA-256 (``fetched_*``), so resync can tell whether the phone fetched
  its new file;
- any other MAC is *unassigned*: it never gets a phone's file (so never a credential).
  A Cisco phone's ``SEP<MAC>.cnf.xml`` is answered with ``XmlDefault.cnf.xml`` (no
  lines); other per-phone names are "file not found", after which Yealink and Polycom
  phones use their common files (``y0000000000XX.cfg``, ``000000000000.cfg``), which are
  served to everyone and carry no credentials.

Every request naming a MAC records the device (vendor, model hint, IP address, time, file
name) in the store's ``devices`` table; whether it is assigned is decided against the
current site when listed. The vendor comes from the file name, or for ``<mac>.cfg``
(Yealink and Polycom share the form) from the common file the same IP address asked for
before; the model hint is the Yealink common file's model code (``y0000000000XX.cfg``).
Store writes are batched: at most one transaction per ``flush_interval``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.assignment import DEFAULT_MODEL
from agent.control import device_entry
from agent.listen import hostport
from agent.provisioning_http import HttpAuthConfig, HttpProvisioning
from agent.provisioning_map import ProvisioningModel
from agent.store import DeviceEvent, DeviceFetched, DeviceSeen, Store
from agent.tftp_service import TftpService
from provisioning import file_for, mac_in_filename, render_cisco_default
from provisioning.files import XML, vendor_of
from provisioning.model import Phone
from provisioning.polycom import COMMON_FILENAME as POLYCOM_COMMON
from provisioning.polycom import PHONE_FILE_SUFFIX as POLYCOM_SUFFIX
from provisioning.tftp import (
    Client,
    TftpEvent,
    TransferCompleted,
    TransferFailed,
    TransferId,
    TransferStarted,
)

__all__ = ["Lookup", "ProvisioningService"]

log = logging.getLogger(__name__)

_YEALINK_COMMON = re.compile(r"y0000000000([0-9a-f]{2})\.cfg")
MAX_HINTS = 4096  # IP addresses remembered from common-file requests


def _name(filename: str) -> str:
    return (filename[1:] if filename.startswith("/") else filename).lower()


@dataclass(frozen=True, slots=True)
class Lookup:
    """What :meth:`ProvisioningService.lookup` found for one request."""

    content: bytes | None  #: None: no such file ("not found")
    content_type: str
    mac: str | None  #: the MAC the file name carries, known or not
    vendor: str | None  #: the vendor the request was judged to come from
    #: Set when ``content`` is the file rendered for the known phone ``mac`` (it may carry
    #: SIP credentials): HTTP asks for the phone's credentials, and the completed transfer
    #: is reported with :meth:`ProvisioningService.fetched`.
    own: bool = False
    sha256: str | None = None


class ProvisioningService:
    """TFTP on ``(host, port)`` when ``host`` is given, HTTP on ``http`` and HTTPS on
    ``https`` (``(host, port)`` each, HTTPS with ``ssl_context``), all serving ``model``;
    devices recorded in ``store``; HTTP credentials from ``auth``."""

    def __init__(self, model: ProvisioningModel, *, store: Store | None, host: str | None,
                 port: int = 0, flush_interval: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 http: tuple[str, int] | None = None, https: tuple[str, int] | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 auth: HttpAuthConfig | None = None, **tftp_options: Any) -> None:
        self._model = model
        self._store = store
        self._clock = clock
        self._flush_interval = flush_interval
        self._cache: dict[str, tuple[bytes, str, str]] = {}  # name -> (content, type, sha)
        self._hints: dict[str, tuple[str, str | None]] = {}  # ip -> (vendor, model hint)
        self._pending: list[DeviceEvent] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        # A phone's own file, rendered for a request, until its transfer ends:
        self._awaiting: dict[tuple[Client, str], tuple[str, str]] = {}  # -> (mac, sha256)
        self._transfers: dict[TransferId, tuple[str, str, str]] = {}  # -> (mac, file, sha)
        # Told of every completed fetch of a phone's own file (resync waits for it).
        self.on_fetched: Callable[[str, float], None] | None = None
        self.auth = auth if auth is not None else HttpAuthConfig()
        self.tftp: TftpService | None = None
        if host is not None:
            self.tftp = TftpService(self.file_source, host=host, port=port,
                                    observer=self._on_event, **tftp_options)
        self.http: list[HttpProvisioning] = []
        if http is not None:
            self.http.append(HttpProvisioning(self, host=http[0], port=http[1]))
        if https is not None:
            if ssl_context is None:
                raise ValueError("HTTPS provisioning needs an SSL context")
            self.http.append(HttpProvisioning(self, host=https[0], port=https[1],
                                              ssl_context=ssl_context))

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        started: list[Any] = []
        try:
            for server in ([self.tftp] if self.tftp is not None else []) + self.http:
                await server.start()
                started.append(server)
        except BaseException:
            for server in reversed(started):
                await server.stop()
            raise

    async def stop(self) -> None:
        for server in self.http:
            await server.stop()
        if self.tftp is not None:
            await self.tftp.stop()
        self.flush()

    @property
    def model(self) -> ProvisioningModel:
        return self._model

    def apply(self, model: ProvisioningModel, auth: HttpAuthConfig | None = None) -> None:
        """Serve ``model`` (and, when given, ask for ``auth``) from the next request on."""
        self._model = model
        if auth is not None:
            self.auth = auth
        self._cache.clear()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phones": len(self._model.phones)}
        if self.tftp is not None:
            out["tftp"] = hostport(*self.tftp.local)
            out.update({f"tftp_{k}": v for k, v in self.tftp.stats().items()})
        for server in self.http:
            out[server.scheme] = hostport(*server.local)
            out.update({f"{server.scheme}_{k}": v for k, v in server.stats().items()})
        return out

    # -- serving ------------------------------------------------------------------------
    def _render(self, name: str) -> tuple[bytes, str, str] | None:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        found = file_for(self._model.site, self._model.phones, name)
        if found is None:
            return None
        entry = (found[0], found[1], hashlib.sha256(found[0]).hexdigest())
        self._cache[name] = entry
        return entry

    def lookup(self, filename: str, ip: str, *, vendor_hint: str | None = None,
               model_hint: str | None = None) -> Lookup:
        """The file ``filename`` as the client at ``ip`` gets it, the device recorded.

        ``vendor_hint``/``model_hint`` come from the transport (HTTP: the User-Agent) and
        win over what earlier requests from ``ip`` suggested. Unknown MACs, and known
        MACs asking for another vendor's name, never get a phone's own file.
        """
        name = _name(filename)
        common = _YEALINK_COMMON.fullmatch(name)
        if common is not None:
            self._hint(ip, "yealink", None if common.group(1) == "00" else common.group(1))
        elif name == POLYCOM_COMMON:
            self._hint(ip, "polycom", None)
        mac = mac_in_filename(name)
        if mac is None:
            found = self._render(name)
            if found is None:
                return Lookup(None, XML, None, vendor_hint)
            return Lookup(found[0], found[1], None, vendor_hint, sha256=found[2])
        phone = self._model.phones.get(mac)
        if name.startswith("sep"):
            vendor: str | None = "cisco"
        elif name.endswith(POLYCOM_SUFFIX):
            vendor = "polycom"
        elif phone is not None:
            vendor = vendor_of(phone)
        elif vendor_hint is not None:
            vendor = vendor_hint
        else:
            vendor = self._hints.get(ip, (None, None))[0]
        if model_hint is None or vendor_hint != vendor:
            hint = self._hints.get(ip)
            model_hint = hint[1] if hint is not None and hint[0] == vendor else None
        self._record(DeviceSeen(mac, vendor, model_hint, ip, self._clock(), filename))
        if phone is not None:
            found = self._render(name)
            if found is not None:
                return Lookup(found[0], found[1], mac, vendor, own=True, sha256=found[2])
        # Unassigned (or asking for another vendor's file): never a phone's own file.
        auto = self._auto_profile(mac, name, vendor) if phone is None else None
        if auto is not None:
            return Lookup(auto[0], auto[1], mac, vendor)
        if vendor == "cisco":
            return Lookup(render_cisco_default(self._model.site), XML, mac, vendor)
        return Lookup(None, XML, mac, vendor)

    def _auto_profile(self, mac: str, name: str, vendor: str | None) -> tuple[bytes, str] | None:
        """With auto-registration on, an unassigned phone's file has one line: the shared
        account, which can only call the extension assigner."""
        line = self._model.auto_line
        model_name = DEFAULT_MODEL.get(vendor or "")
        if line is None or model_name is None:
            return None
        phone = Phone(mac=mac, model=model_name, lines=(line,))
        return file_for(self._model.site, {mac: phone}, name)

    def fetched(self, mac: str, filename: str, sha256: str) -> None:
        """A phone's own file went out completely: record it and tell resync."""
        when = self._clock()
        self._record(DeviceFetched(mac, filename, sha256, when))
        if self.on_fetched is not None:
            self.on_fetched(mac, when)

    def file_source(self, filename: str, client: Client) -> bytes | None:
        """TFTP's file source: :meth:`lookup`, remembering a phone's own file until its
        transfer ends."""
        found = self.lookup(filename, client[0])
        if found.own and found.mac is not None and found.sha256 is not None:
            self._awaiting[(client, filename)] = (found.mac, found.sha256)
        return found.content

    def _hint(self, ip: str, vendor: str, model_hint: str | None) -> None:
        if ip not in self._hints and len(self._hints) >= MAX_HINTS:
            self._hints.pop(next(iter(self._hints)))
        old = self._hints.get(ip)
        if model_hint is None and old is not None and old[0] == vendor:
            model_hint = old[1]
        self._hints[ip] = (vendor, model_hint)

    def _on_event(self, event: TftpEvent) -> None:
        if isinstance(event, TransferStarted):
            awaited = self._awaiting.pop((event.client, event.filename), None)
            if awaited is not None:
                self._transfers[event.tid] = (awaited[0], event.filename, awaited[1])
        elif isinstance(event, TransferCompleted):
            done = self._transfers.pop(event.tid, None)
            if done is not None:
                self.fetched(*done)
        elif isinstance(event, TransferFailed):
            self._transfers.pop(event.tid, None)

    # -- the inventory ------------------------------------------------------------------
    def _record(self, event: DeviceEvent) -> None:
        if self._store is None:
            return
        self._pending.append(event)
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not in a loop (unit tests): write at once
                self.flush()
                return
            self._flush_handle = loop.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        """Write the pending sightings and fetches in one transaction."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, []
        if not pending or self._store is None:
            return
        try:
            self._store.apply_device_events(pending)
        except Exception:
            log.exception("cannot record provisioning devices", extra={"events": len(pending)})

    def devices(self) -> list[dict[str, Any]]:
        """Every device seen, most recently seen first, judged against the current site."""
        self.flush()
        if self._store is None:
            return []
        phones = self._model.phones
        return [device_entry(row, phones[row.mac].model if row.mac in phones else None)
                for row in self._store.devices()]
