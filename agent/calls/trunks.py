"""Trunk registrations: one RFC 3261 §10.2 client per trunk that registers to its carrier.

The clients are sans-I/O (``sipstack.client_registration``); this module sends their
REGISTERs as client transactions through call control's transaction layer and hands
the responses back, so trunk registration shares the sockets, the timers and the
flush of everything else SIP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.calls.engine import CallControl
from agent.site import Site, Trunk
from sipstack.client_registration import (
    RegistrationClient,
    RegistrationConfig,
    RegistrationState,
)
from sipstack.message import Request, Response
from sipstack.peer import Peer
from sipstack.transaction import TransactionError

log = logging.getLogger(__name__)


class TrunkRegistrations:
    def __init__(self, calls: CallControl, local_address: Callable[[Peer], tuple[str, int]],
                 user_agent: str) -> None:
        self.calls = calls
        self.local_address = local_address
        self.user_agent = user_agent
        self._clients: dict[str, tuple[RegistrationClient, Peer, tuple[object, ...]]] = {}
        self._states: dict[str, RegistrationState] = {}

    def apply(self, site: Site, now: float) -> None:
        """Start, restart or stop clients so that they match the site's trunks."""
        wanted: dict[str, Trunk] = {t.name: t for t in site.trunks if t.register_}
        for name in list(self._clients):
            client, _, fingerprint = self._clients[name]
            trunk = wanted.get(name)
            if trunk is None or _fingerprint(trunk) != fingerprint:
                client.stop(now)
                del self._clients[name]
        for name, trunk in wanted.items():
            if name in self._clients:
                continue
            info = self.calls.env.trunk(name)
            if info is None or trunk.username is None or trunk.password is None:
                continue  # does not resolve (logged by the env) or nothing to register
            host, port = self.local_address(info.peer)
            sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            tparam = "" if trunk.transport == "udp" else f";transport={trunk.transport}"
            domain = trunk.from_domain or trunk.host
            config = RegistrationConfig(
                registrar_uri=f"sip:{trunk.host}:{trunk.port}",
                aor=f"sip:{trunk.username}@{domain}",
                contact=f"sip:{trunk.username}@{sent_by}{tparam}",
                username=trunk.auth_username or trunk.username,
                password=trunk.password.get_secret_value(),
                expires=trunk.register_expires,
                local_sent_by=sent_by,
                transport=trunk.transport.upper(),
                user_agent=self.user_agent,
            )
            client = RegistrationClient(config)
            client.start(now)
            self._clients[name] = (client, info.peer, _fingerprint(trunk))
        self.pump(now)

    def stop(self, now: float) -> None:
        for client, _, _ in self._clients.values():
            client.stop(now)
        self.pump(now)

    def get_timer(self) -> float | None:
        deadlines = [d for c, _, _ in self._clients.values() if (d := c.get_timer()) is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for client, _, _ in self._clients.values():
            deadline = client.get_timer()
            if deadline is not None and deadline <= now:
                client.handle_timer(now)
        self.pump(now)

    def pump(self, now: float) -> None:
        """Send what the clients want sent, and log state changes."""
        for name, (client, peer, _) in self._clients.items():
            for request in client.take_requests():
                self._send(client, request, peer, now)
            state = client.state
            if self._states.get(name) is not state:
                self._states[name] = state
                log.info("trunk registration", extra={"trunk": name, "state": state.value,
                                                      "why": client.last_error or ""})

    def _send(self, client: RegistrationClient, request: Request, peer: Peer, now: float) -> None:
        def on_response(response: Response | None, status: int, t: float) -> None:
            if response is None:
                client.on_failure(t, f"transaction failed ({status})", request=request)
            else:
                client.on_response(response, t)
            self.pump(t)

        try:
            self.calls.send_request(request, peer, now, on_response)
        except TransactionError as exc:
            client.on_failure(now, str(exc), request=request)

    def status(self, now: float) -> dict[str, dict[str, object]]:
        return {name: client.status(now) for name, (client, _, _) in self._clients.items()}


def _fingerprint(trunk: Trunk) -> tuple[object, ...]:
    password = trunk.password.get_secret_value() if trunk.password else None
    return (trunk.host, trunk.port, trunk.transport, trunk.username, password,
            trunk.auth_username, trunk.register_expires, trunk.from_domain)
