"""The CallEnv of the running agent: the site document, the registrar, the store.

Users change some of their settings from the phone with feature codes (DND,
forwards, hunt group login). Those changes live in the store's ``user_state`` and
override the site document until changed again; so the routing model is the
site's, with each user's overrides laid on top, rebuilt when either changes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.calls.env import Contact, TrunkInfo, UserInfo
from agent.routing import did_destination, routing_model
from agent.site import Site
from agent.store import Store
from dialplan.hunt import HuntState
from dialplan.model import Feature, SiteModel
from dialplan.numbers import Kind, classify
from dialplan.target import Target
from sipstack.digest import DigestClient, DigestServer
from sipstack.errors import SipParseError
from sipstack.peer import Peer
from sipstack.registrar import Registrar
from sipstack.uri import SipUri, parse_uri

log = logging.getLogger(__name__)

# Feature -> (state key, value to store; None clears)
_FORWARD_KEYS = {
    Feature.FORWARD_ALL_SET: "all", Feature.FORWARD_ALL_CLEAR: "all",
    Feature.FORWARD_BUSY_SET: "busy", Feature.FORWARD_BUSY_CLEAR: "busy",
    Feature.FORWARD_NO_ANSWER_SET: "no_answer", Feature.FORWARD_NO_ANSWER_CLEAR: "no_answer",
}
_SETS = frozenset({Feature.FORWARD_ALL_SET, Feature.FORWARD_BUSY_SET,
                   Feature.FORWARD_NO_ANSWER_SET})


class SiteCallEnv:
    def __init__(
        self,
        site: Site,
        *,
        registrar: Registrar,
        digest: DigestServer,
        store: Store,
        local_address: Callable[[Peer], tuple[str, int]],
        ha1: Callable[[str, str], str | None],
        resolve: Callable[[str, int], str | None] | None = None,
        has_flow: Callable[[Peer], bool] | None = None,
    ) -> None:
        self.registrar = registrar
        self.digest = digest
        self.store = store
        self._local_address = local_address
        self._ha1 = ha1
        self._resolve = resolve or _resolve
        self.has_flow = has_flow or (lambda peer: True)
        self._last_offered: dict[str, str] = {}
        self._last_end: dict[str, float] = {}
        self._state: dict[str, dict[str, Any]] = {}
        #: Told of each setting a user changes from the phone: (extension, path, value),
        #: path "dnd" or "forward.all|busy|no_answer" (the cloud link pushes it).
        self.on_user_change: Callable[[str, str, Any], None] | None = None
        try:
            self._state = store.user_state()
        except Exception:
            log.exception("could not load user feature state")
        self.apply_site(site)

    # -- configuration --------------------------------------------------------------
    def apply_site(self, site: Site) -> None:
        self.site = site
        self.realm = site.site.realm
        self._zone = ZoneInfo(site.site.timezone)
        self._users_by_username = {u.sip.username: u for u in site.users}
        self._users_by_extension = {u.extension: u for u in site.users}
        self._trunks: dict[str, TrunkInfo] = {}
        for trunk in site.trunks:
            address = self._resolve(trunk.host, trunk.port)
            if address is None:
                log.warning("trunk host does not resolve", extra={"trunk": trunk.name,
                                                                   "host": trunk.host})
                continue
            digest = None
            if trunk.username and trunk.password:
                digest = DigestClient(trunk.auth_username or trunk.username,
                                      trunk.password.get_secret_value(), realm=trunk.realm)
            self._trunks[trunk.name] = TrunkInfo(
                name=trunk.name, peer=Peer(trunk.transport, address, trunk.port),
                domain=trunk.host, caller_id=trunk.caller_id,
                from_domain=trunk.from_domain or trunk.host, digest=digest,
            )
        self._rebuild()

    def _rebuild(self) -> None:
        base = routing_model(self.site)
        users = []
        for user in base.users:
            state = self._state.get(user.extension, {})
            if not state:
                users.append(user)
                continue
            forward = user.forward
            for key in ("all", "busy", "no_answer"):
                if key in state.get("forward", {}):
                    forward = dataclasses.replace(forward, **{key: state["forward"][key]})
            users.append(dataclasses.replace(user, dnd=state.get("dnd", user.dnd),
                                             forward=forward))
        self._model = dataclasses.replace(base, users=tuple(users))

    # -- CallEnv ----------------------------------------------------------------------
    def model(self) -> SiteModel:
        return self._model

    def local_time(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, self._zone)

    def ha1(self, username: str, algorithm: str) -> str | None:
        return self._ha1(username, algorithm)

    def _info(self, user: Any) -> UserInfo:
        return UserInfo(user.extension, user.name, user.caller_id, user.pickup_group)

    def user_for_username(self, username: str) -> UserInfo | None:
        auto = self.site.provisioning.auto_registration
        if auto is not None and username == auto.username:
            return UserInfo("", "Unassigned phone", auto_registration=True)
        user = self._users_by_username.get(username)
        return None if user is None else self._info(user)

    def user_for_extension(self, extension: str) -> UserInfo | None:
        user = self._users_by_extension.get(extension)
        return None if user is None else self._info(user)

    def contacts(self, extension: str, now: float) -> list[Contact]:
        user = self._users_by_extension.get(extension)
        if user is None:
            return []
        return [Contact(b.contact, self._reach(b.contact, b.source))
                for b in self.registrar.lookup(user.id, now)]

    def _reach(self, contact: str, source: Peer) -> Peer:
        """Where to send to a registered contact: the flow it registered from (NAT, RFC
        5626), unless that was a TCP/TLS connection that has closed since; then the
        address in its Contact, where a phone listens (RFC 3261 §18.1.1)."""
        if source.transport == "udp" or self.has_flow(source):
            return source
        try:
            uri = parse_uri(contact)
        except SipParseError:
            return source
        if not isinstance(uri, SipUri):
            return source
        host = uri.host_bare
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return source  # a name: DNS is not done on the call path
        return Peer(source.transport, host, uri.port or (5061 if source.transport == "tls"
                                                          else 5060))

    def trunk(self, name: str) -> TrunkInfo | None:
        return self._trunks.get(name)

    def trunk_for_source(self, host: str) -> TrunkInfo | None:
        for trunk in self.site.trunks:
            if trunk.accepts_from(host):
                return self._trunks.get(trunk.name)
        return None

    def did_target(self, trunk: str, number: str) -> Target | None:
        return did_destination(self.site, number)

    def hunt_state(self, pilot: str, busy: frozenset[str], now: float) -> HuntState:
        group = self._model.hunt_group(pilot)
        unavailable = set(busy)
        logged_in = set()
        if group is not None:
            for member in group.members:
                ext = member.extension
                user = self._model.user(ext)
                if user is None or user.dnd or not self.contacts(ext, now):
                    unavailable.add(ext)
                if pilot in self._state.get(ext, {}).get("hunt_login", []):
                    logged_in.add(ext)
        return HuntState(unavailable=frozenset(unavailable), logged_in=frozenset(logged_in),
                         last_offered=self._last_offered.get(pilot),
                         last_call_end=dict(self._last_end))

    def hunt_offered(self, pilot: str, extension: str) -> None:
        self._last_offered[pilot] = extension

    def call_ended(self, extension: str, now: float) -> None:
        self._last_end[extension] = now

    def local_address(self, peer: Peer) -> tuple[str, int]:
        return self._local_address(peer)

    # -- feature codes ----------------------------------------------------------------
    def apply_feature(self, extension: str, feature: Feature, argument: str | None) -> str:
        """Apply a feature code dialled by ``extension``; the outcome, for the phone's
        display and the log. Raises ValueError when it cannot apply."""
        state = self._state.setdefault(extension, {})
        now = time.time()
        if feature in (Feature.DND_ON, Feature.DND_OFF):
            state["dnd"] = feature is Feature.DND_ON
            self._save(extension, "dnd", state["dnd"], now)
            self._changed_by_user(extension, "dnd", state["dnd"])
            return "Do Not Disturb On" if state["dnd"] else "Do Not Disturb Off"
        if feature in _FORWARD_KEYS:
            key = _FORWARD_KEYS[feature]
            value = argument if feature in _SETS else None
            if value is not None and classify(value, self._model.numbering).kind is Kind.INVALID:
                raise ValueError(f"cannot forward to {value}")
            if value == extension:
                raise ValueError("cannot forward to yourself")
            forward = dict(state.get("forward", {}))
            forward[key] = value
            state["forward"] = forward
            self._save(extension, "forward", forward, now)
            self._changed_by_user(extension, f"forward.{key}", value)
            label = {"all": "Forward All", "busy": "Forward Busy", "no_answer": "Forward No Answer"}
            return f"{label[key]} {'To ' + value if value else 'Off'}"
        if feature in (Feature.HUNT_LOGIN, Feature.HUNT_LOGOUT):
            return self._hunt_login(extension, feature is Feature.HUNT_LOGIN, argument, now)
        raise ValueError(f"{feature.value} is not available from this phone")

    def _hunt_login(self, extension: str, login: bool, pilot: str | None, now: float) -> str:
        groups = [
            g.pilot for g in self._model.hunt_groups
            if any(m.extension == extension and m.dynamic for m in g.members)
            and (pilot is None or g.pilot == pilot)
        ]
        if not groups:
            raise ValueError("not a dynamic member of that hunt group")
        state = self._state.setdefault(extension, {})
        current = set(state.get("hunt_login", []))
        current = current | set(groups) if login else current - set(groups)
        state["hunt_login"] = sorted(current)
        self._save(extension, "hunt_login", state["hunt_login"] or None, now)
        return f"{'Logged In To' if login else 'Logged Out Of'} {', '.join(groups)}"

    def _save(self, extension: str, key: str, value: Any, now: float) -> None:
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None} or None
        try:
            self.store.set_user_state(extension, key, value, now)
        except Exception:
            log.exception("could not save user feature state", extra={"extension": extension})
        self._rebuild()

    def _changed_by_user(self, extension: str, path: str, value: Any) -> None:
        if self.on_user_change is not None:
            try:
                self.on_user_change(extension, path, value)
            except Exception:
                log.exception("could not pass on a user's change", extra={"path": path})

    def drop_overrides(self, settings: Iterable[tuple[str, str]]) -> None:
        """Forget what users set from their phones for these (extension, path) pairs, so the
        site's value applies again: the portal changed them since (its word is the last)."""
        now = time.time()
        for extension, path in settings:
            state = self._state.get(extension)
            if not state:
                continue
            if path == "dnd" and "dnd" in state:
                del state["dnd"]
                self._save(extension, "dnd", None, now)
            elif path.startswith("forward.") and path[8:] in state.get("forward", {}):
                forward = dict(state["forward"])
                del forward[path[8:]]
                state["forward"] = forward
                self._save(extension, "forward", forward or None, now)
        self._rebuild()

    def feature_state(self) -> dict[str, dict[str, Any]]:
        return {ext: dict(v) for ext, v in self._state.items() if v}


def _resolve(host: str, port: int) -> str | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    return str(infos[0][4][0]) if infos else None

