"""SiteCallEnv: the running agent's view of the site for call control, with the users'
feature-code changes kept in the store across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.calls.site_env import SiteCallEnv
from agent.site import parse_site
from agent.store import Store
from dialplan.model import Feature
from sipstack.digest import DigestServer
from sipstack.peer import Peer
from sipstack.registrar import Registrar, RegistrarConfig


def _doc() -> dict[str, Any]:
    def user(uid: str, ext: str) -> dict[str, Any]:
        return {"id": uid, "name": uid.title(), "extension": ext,
                "sip": {"username": uid, "password": f"pw-{uid}"}}

    return {
        "site": {"name": "Test", "timezone": "Europe/Berlin", "realm": "pbx.test"},
        "users": [user("ann", "201"), user("ben", "202"), user("cat", "203")],
        "hunt_groups": [{"name": "desk", "pilot": "6000", "strategy": "sequential",
                         "members": [{"extension": "202", "dynamic": True},
                                     {"extension": "203"}],
                         "final": {"type": "hangup"}}],
        "trunks": [{"name": "carrier", "host": "198.51.100.7", "username": "acct",
                    "password": "pw", "dids": [{"number": "+4930123",
                                                "destination": {"type": "extension",
                                                                "value": "201"}}]}],
    }


def _env(tmp_path: Path, store: Store) -> SiteCallEnv:
    return SiteCallEnv(
        parse_site(_doc()), registrar=Registrar(RegistrarConfig()),
        digest=DigestServer("pbx.test", b"s" * 32), store=store,
        local_address=lambda peer: ("192.0.2.1", 5060), ha1=lambda u, a: None,
        resolve=lambda host, port: host,
    )


def test_feature_changes_override_the_site_and_survive_a_restart(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        env = _env(tmp_path, store)
        assert env.apply_feature("201", Feature.DND_ON, None) == "Do Not Disturb On"
        env.apply_feature("201", Feature.FORWARD_BUSY_SET, "203")
        assert env.model().user("201").dnd  # type: ignore[union-attr]
    with Store.open(tmp_path) as store:
        env = _env(tmp_path, store)
        user = env.model().user("201")
        assert user is not None and user.dnd and user.forward.busy == "203"
        env.apply_feature("201", Feature.FORWARD_BUSY_CLEAR, None)
        env.apply_feature("201", Feature.DND_OFF, None)
        user = env.model().user("201")
        assert user is not None and not user.dnd and user.forward.busy is None


def test_dynamic_hunt_login_and_logout(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        env = _env(tmp_path, store)
        assert "202" not in env.hunt_state("6000", frozenset(), 0.0).logged_in
        env.apply_feature("202", Feature.HUNT_LOGIN, None)
        assert "202" in env.hunt_state("6000", frozenset(), 0.0).logged_in
        env.apply_feature("202", Feature.HUNT_LOGOUT, "6000")
        assert "202" not in env.hunt_state("6000", frozenset(), 0.0).logged_in


@pytest.mark.parametrize("ext, feature, argument", [
    ("203", Feature.HUNT_LOGIN, None),  # a static member: nothing to log in to
    ("202", Feature.HUNT_LOGIN, "6001"),  # no such group
    ("201", Feature.FORWARD_ALL_SET, "201"),  # to yourself
    ("201", Feature.FORWARD_ALL_SET, "12ab"),  # not dialable
    ("201", Feature.PICKUP_GROUP, None),  # not applied here
])
def test_features_that_cannot_apply_say_why(
    tmp_path: Path, ext: str, feature: Feature, argument: str | None
) -> None:
    with Store.open(tmp_path) as store:
        env = _env(tmp_path, store)
        with pytest.raises(ValueError):
            env.apply_feature(ext, feature, argument)


def test_trunk_sources_and_dids(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        env = _env(tmp_path, store)
        trunk = env.trunk_for_source("198.51.100.7")
        assert trunk is not None and trunk.peer == Peer("udp", "198.51.100.7", 5060)
        assert env.trunk_for_source("198.51.100.8") is None
        assert env.did_target("carrier", "+4930123") is not None
        assert env.did_target("carrier", "+4930999") is None


def test_a_closed_tcp_flow_falls_back_to_the_contact_address(tmp_path: Path) -> None:
    from sipstack.registrar import Binding

    flows: set[Peer] = set()
    with Store.open(tmp_path) as store:
        registrar = Registrar(RegistrarConfig())
        env = SiteCallEnv(
            parse_site(_doc()), registrar=registrar,
            digest=DigestServer("pbx.test", b"s" * 32), store=store,
            local_address=lambda peer: ("192.0.2.1", 5060), ha1=lambda u, a: None,
            resolve=lambda host, port: host, has_flow=lambda peer: peer in flows,
        )
        source = Peer("tcp", "10.0.0.5", 49152)
        registrar.load([Binding("ann", "sip:ann@10.0.0.5:5070;transport=tcp", 2e9, "c", 1,
                                source)], 0.0)
        flows.add(source)
        assert env.contacts("201", 0.0)[0].peer == source
        flows.clear()
        assert env.contacts("201", 0.0)[0].peer == Peer("tcp", "10.0.0.5", 5070)


def test_a_phone_change_is_told_and_a_portal_change_of_it_wins(tmp_path: Path) -> None:
    told: list[tuple[str, str, Any]] = []
    with Store.open(tmp_path) as store:
        env = _env(tmp_path, store)
        env.on_user_change = lambda *change: told.append(change)
        env.apply_feature("201", Feature.DND_ON, None)
        env.apply_feature("201", Feature.FORWARD_ALL_SET, "203")
        env.apply_feature("202", Feature.FORWARD_BUSY_SET, "203")
        assert told == [("201", "dnd", True), ("201", "forward.all", "203"),
                        ("202", "forward.busy", "203")]
        # The portal has since changed 201's forward-all and 202's DND (which the phone
        # never touched): only 201's forward-all override goes.
        env.drop_overrides([("201", "forward.all"), ("202", "dnd")])
        ann, ben = env.model().user("201"), env.model().user("202")
        assert ann is not None and ann.dnd and ann.forward.all is None
        assert ben is not None and ben.forward.busy == "203"
    with Store.open(tmp_path) as store:  # and it stays gone after a restart
        ann = _env(tmp_path, store).model().user("201")
        assert ann is not None and ann.dnd and ann.forward.all is None


def test_a_failing_listener_does_not_undo_the_change(tmp_path: Path) -> None:
    def broken(*change: Any) -> None:
        raise RuntimeError("portal link down")

    with Store.open(tmp_path) as store:
        env = _env(tmp_path, store)
        env.on_user_change = broken
        assert env.apply_feature("201", Feature.DND_ON, None) == "Do Not Disturb On"
        assert env.model().user("201").dnd  # type: ignore[union-attr]
