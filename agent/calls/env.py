"""What call control needs to know about the site, as a small interface.

The engine never reads the pydantic site or the registrar directly: the agent
hands it a :class:`CallEnv`, and tests hand it a fake. That keeps the engine
testable on a virtual clock with plain objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dialplan.hunt import HuntState
from dialplan.model import Feature, SiteModel
from dialplan.target import Target
from sipstack.digest import DigestClient, DigestServer
from sipstack.peer import Peer


@dataclass(frozen=True, slots=True)
class UserInfo:
    extension: str
    name: str
    caller_id: str | None = None  # outside number presented on trunk calls
    pickup_group: str | None = None
    auto_registration: bool = False  # the shared account of unassigned phones


@dataclass(frozen=True, slots=True)
class Contact:
    """One registered contact of a user: the URI to put in the Request-URI and the
    transport address to send to (the flow the phone registered from)."""

    uri: str
    peer: Peer


@dataclass(slots=True)
class TrunkInfo:
    name: str
    peer: Peer  # where its requests go (resolved address)
    domain: str  # host part of the URIs we send it
    caller_id: str | None
    from_domain: str
    digest: DigestClient | None


class CallEnv(Protocol):
    realm: str
    digest: DigestServer

    def model(self) -> SiteModel: ...

    def local_time(self, now: float) -> datetime: ...

    def ha1(self, username: str, algorithm: str) -> str | None: ...

    def user_for_username(self, username: str) -> UserInfo | None: ...

    def user_for_extension(self, extension: str) -> UserInfo | None: ...

    def contacts(self, extension: str, now: float) -> list[Contact]: ...

    def trunk(self, name: str) -> TrunkInfo | None: ...

    def trunk_for_source(self, host: str) -> TrunkInfo | None: ...

    def did_target(self, trunk: str, number: str) -> Target | None: ...

    def hunt_state(self, pilot: str, busy: frozenset[str], now: float) -> HuntState: ...

    def hunt_offered(self, pilot: str, extension: str) -> None: ...

    def call_ended(self, extension: str, now: float) -> None: ...

    def apply_feature(self, extension: str, feature: Feature, argument: str | None) -> str: ...

    def local_address(self, peer: Peer) -> tuple[str, int]: ...
