"""The auto attendant: the site section, its mapping, the application over a scripted
AppCall, and the blind transfer of an answered application call (virtual clock)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from callkit import FakeEnv as CallEnv
from callkit import Harness, Phone, only, sdp

from agent.apps.attendant import attendant_app
from agent.apps.runtime import AppCall
from agent.calls.features import transfer_answered
from agent.calls.model import CallState
from agent.calls.plan import Plan, Refuse, ToApplication
from agent.routing import attendant_of, direct_dial_menus, routing_model
from agent.site import SiteError, parse_site, site_document
from dialplan import route as rt
from dialplan.attendant import Attendant, Menu
from dialplan.target import Target
from sipstack.message import Request, Response

# Monday 5 January 2026: 10:00 in Berlin is open, 20:00 closed.
OPEN = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CLOSED = datetime(2026, 1, 5, 19, 0, tzinfo=UTC)


def user(uid: str, ext: str) -> dict[str, Any]:
    return {"id": uid, "name": uid.title(), "extension": ext,
            "sip": {"username": uid, "password": f"pw-{uid}"}}


def document() -> dict[str, Any]:
    return {
        "site": {"name": "Test", "timezone": "Europe/Berlin", "realm": "pbx.test"},
        "users": [user("alice", "301"), user("bob", "302"), user("carol", "303")],
        "hunt_groups": [{"name": "sales", "pilot": "6000",
                         "members": [{"extension": "301"}, {"extension": "302"}]}],
        "schedules": [{"name": "office", "hours": {"mon": ["08:00-17:00"]}}],
        "attendants": [{
            "name": "main", "number": "5000", "schedule": "office",
            "open_menu": "day", "closed_menu": "night",
            "operator": {"type": "extension", "value": "303"},
            "max_failures": 2,
            "extensions": ["301", "302"],
            "menus": [
                {"name": "day", "greeting": ["att_welcome", "att_operator"],
                 "dial_by_extension": True, "timeout_seconds": 3,
                 "options": {"1": {"type": "extension", "value": "6000"},
                             "2": {"type": "dial_by_extension"},
                             "4": {"type": "voicemail", "value": "301"},
                             "5": {"type": "hangup"},
                             "9": {"type": "menu", "value": "more"},
                             "0": {"type": "operator"},
                             "#": {"type": "repeat"}}},
                {"name": "more", "greeting": "custom_more",
                 "options": {"1": {"type": "extension", "value": "302"},
                             "*": {"type": "back"}}},
                {"name": "night", "greeting": "att_closed",
                 "options": {"1": {"type": "voicemail", "value": "301"}}},
            ],
        }],
        "trunks": [{"name": "carrier", "host": "192.0.2.10", "register": False,
                    "dids": [{"number": "+49301234",
                              "destination": {"type": "attendant", "value": "main"}}]}],
    }


def errors_of(doc: Any) -> list[str]:
    with pytest.raises(SiteError) as err:
        parse_site(doc)
    return err.value.errors


# ---------------------------------------------------------------- the site section


def test_the_section_maps_onto_the_dialplan_attendant() -> None:
    site = parse_site(document())
    model = routing_model(site)
    main = attendant_of(model, "main")
    assert main is not None and model.attendant_at("5000") is main
    assert (main.open_menu, main.closed_menu, main.max_failures) == ("day", "night", 2)
    assert main.schedule is not None and main.schedule.tz == "Europe/Berlin"
    assert main.operator == Target.number("303")
    assert main.extensions == frozenset({"301", "302"}) and main.extension_digits == 3
    day = main.menu("day")
    assert day.prompts == ("att_welcome", "att_operator") and day.timeout == 3.0
    assert day.options["1"].target == Target.number("6000")
    assert day.options["4"].target == Target.voicemail("301")
    assert day.options["9"].menu == "more"
    assert main.menu("more").prompts == ("custom_more",)
    assert direct_dial_menus(site, "main") == frozenset({"day"})
    # Dialled internally, and reached from a DID.
    assert rt.route(model, "301", "5000", OPEN) == rt.ToAttendant("main")
    # Round trip.
    assert parse_site(site_document(site, reveal_secrets=True)) == site


def test_extensions_default_to_every_user() -> None:
    doc = document()
    del doc["attendants"][0]["extensions"]
    main = attendant_of(routing_model(parse_site(doc)), "main")
    assert main is not None and main.extensions == frozenset({"301", "302", "303"})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["attendants"][0].update(number="301"),
         'attendants[0].number: "301" is already the extension of users[0]'),
        (lambda d: d["attendants"][0].update(number="6000"),
         'attendants[0].number: "6000" is already the pilot of hunt_groups[0]'),
        (lambda d: d["attendants"].append({**copy.deepcopy(d["attendants"][0])}),
         'attendants[1].name: "main" is already the name of attendants[0]'),
        (lambda d: d["attendants"][0].update(open_menu="nope"),
         "attendants[0].open_menu: \"nope\" is not the name of one of the attendant's menus"),
        (lambda d: d["attendants"][0].update(schedule="nope"),
         'attendants[0].schedule: "nope" is not the name of a schedule'),
        (lambda d: d["attendants"][0].pop("schedule"),
         "attendants[0].closed_menu: needs a schedule that says when the attendant is closed"),
        (lambda d: d["attendants"][0]["menus"][0]["options"]["9"].update(value="gone"),
         'attendants[0].menus[0].options["9"].value: "gone" is not the name of one of the '
         "attendant's menus"),
        (lambda d: d["attendants"][0]["menus"][0]["options"]["1"].update(value="7777"),
         'attendants[0].menus[0].options["1"].value: "7777" is not an extension or hunt '
         "group pilot of this site"),
        (lambda d: d["attendants"][0]["menus"][0]["options"]["0"].update(value="1"),
         'attendants[0].menus[0].options["0"].value: must be empty for type "operator"'),
        (lambda d: d["attendants"][0]["extensions"].append("999"),
         'attendants[0].extensions[2]: "999" is not an extension or hunt group pilot of '
         "this site"),
        (lambda d: d["trunks"][0]["dids"][0]["destination"].update(value="other"),
         'trunks[0].dids[0].destination.value: "other" is not the name of an attendant'),
        (lambda d: d["attendants"][0]["menus"][0].update(greeting="Hello There"),
         'attendants[0].menus[0].greeting[0]: "Hello There" is not a prompt id: 1-64 of '
         "a-z, 0-9 and _"),
    ],
)
def test_mistakes_are_reported_by_path(change: Any, expected: str) -> None:
    doc = document()
    change(doc)
    assert expected in errors_of(doc)


@pytest.mark.parametrize("attendants", [None, []])
def test_documents_without_attendants_check_only_the_name_shape(attendants: Any) -> None:
    doc = document()
    if attendants is None:
        del doc["attendants"]
    else:
        doc["attendants"] = attendants
    parse_site(doc)  # the DID names "main", which this document does not define


# ---------------------------------------------------------------- the application

SILENCE = None  # no key before the timeout


class FakeCall:
    """An AppCall that follows a script: the keys the caller presses, in order.

    An entry is ("barge", key): pressed while the next interruptible prompt plays;
    ("key", key): pressed while digits are read; SILENCE: a read times out. When the
    script is used up the caller stays silent forever (a test may cancel, as the
    runtime does when the caller hangs up).
    """

    def __init__(self, *script: tuple[str, str] | None, prompts: set[str] | None = None
                 ) -> None:
        self.script = list(script)
        self.played: list[tuple[str, ...]] = []
        self.reads = 0
        self.prompts = prompts
        self.call = SimpleNamespace(id="call-1")
        self.blocked = asyncio.Event()

    async def _exhausted(self) -> None:
        self.blocked.set()
        await asyncio.Event().wait()

    async def play(self, *prompt_ids: str, interruptible: bool = True) -> str | None:
        await asyncio.sleep(0)
        self.played.append(prompt_ids)
        if interruptible and self.script and self.script[0] is not None \
                and self.script[0][0] == "barge":
            return self.script.pop(0)[1]  # type: ignore[index]
        return None

    async def read_digits(self, *, max_digits: int, terminator: str = "#",
                          first_timeout: float = 8.0, inter_digit: float = 4.0,
                          first: str | None = None) -> str:
        assert max_digits == 1 and terminator == "" and first_timeout > 0
        self.reads += 1
        await asyncio.sleep(0)
        if not self.script:
            await self._exhausted()
        entry = self.script.pop(0)
        if entry is None:
            return ""
        assert entry[0] == "key", f"a barge-in was scripted where digits are read: {entry}"
        return entry[1]

    def flat(self) -> list[str]:
        return [p for prompts in self.played for p in prompts]


class FakeHost:
    def __init__(self, now: datetime = OPEN, outcomes: dict[Target, Plan] | None = None,
                 apps: dict[str, Any] | None = None) -> None:
        self._now = now
        self.outcomes = outcomes or {}
        self.apps = apps or {}
        self.transfers: list[Target] = []
        self.asked: list[ToApplication] = []

    def now(self) -> datetime:
        return self._now

    def transfer(self, call: AppCall, target: Target) -> Plan | None:
        self.transfers.append(target)
        return self.outcomes.get(target)

    def application(self, plan: ToApplication) -> Any:
        self.asked.append(plan)
        return self.apps.get(plan.kind)


def main_attendant(**changes: Any) -> Attendant:
    doc = document()
    doc["attendants"][0].update(changes)
    found = attendant_of(routing_model(parse_site(doc)), "main")
    assert found is not None
    return found


def run(call: FakeCall, host: FakeHost, attendant: Attendant | None = None,
        direct: frozenset[str] = frozenset({"day"})) -> None:
    asyncio.run(asyncio.wait_for(
        attendant_app(cast(AppCall, call), attendant=attendant or main_attendant(),
                      host=host, direct_dial=direct), 5))


def k(key: str) -> tuple[str, str]:
    return ("key", key)


def b(key: str) -> tuple[str, str]:
    return ("barge", key)


def test_open_and_closed_menus_follow_the_schedule() -> None:
    call, host = FakeCall(b("1")), FakeHost(OPEN)
    run(call, host)
    assert call.played[0] == ("att_welcome", "att_operator")
    assert host.transfers == [Target.number("6000")]

    call, host = FakeCall(b("1")), FakeHost(CLOSED)
    run(call, host)
    assert call.played[0] == ("att_closed",)
    assert host.transfers == [Target.voicemail("301")]


def test_a_key_after_the_greeting_transfers_to_its_destination() -> None:
    call, host = FakeCall(k("1")), FakeHost()
    run(call, host)
    assert call.played == [("att_welcome", "att_operator")]
    assert host.transfers == [Target.number("6000")]


def test_dial_by_extension_option() -> None:
    call, host = FakeCall(b("2"), k("3"), k("0"), k("2")), FakeHost()
    run(call, host)
    assert call.played[-1] == ("att_dial_by_extension",)
    assert host.transfers == [Target.number("302")]  # 3 digits: no need to wait or press #


def test_dial_by_extension_barging_into_its_prompt_and_a_wrong_number() -> None:
    # 2, then 3 cuts "dial the extension" short; 303 is not allowed: invalid, menu again.
    call, host = FakeCall(b("2"), b("3"), k("0"), k("3"), b("2"), k("3"), k("0"),
                          k("1")), FakeHost()
    run(call, host)
    assert ("invalid_option", "att_welcome", "att_operator") in call.played
    assert host.transfers == [Target.number("301")]


def test_direct_dialing_during_a_menu() -> None:
    call, host = FakeCall(b("3"), k("0"), k("1")), FakeHost()
    run(call, host)
    assert host.transfers == [Target.number("301")]
    # Not on a menu without dial_by_extension: 3 is just an invalid key there.
    call, host = FakeCall(b("3"), b("0")), FakeHost()
    run(call, host, direct=frozenset())
    assert call.played[1] == ("invalid_option", "att_welcome", "att_operator")
    assert host.transfers == [Target.number("303")]  # 0: the operator


def test_direct_dialing_a_number_that_is_not_allowed_counts_as_invalid() -> None:
    call, host = FakeCall(b("3"), k("0"), k("3"), b("3"), k("9"), SILENCE), FakeHost()
    run(call, host)
    assert call.flat().count("invalid_option") == 1
    # The second failure is the last (max_failures 2): please hold, the operator.
    assert call.played[-1] == ("please_hold",)
    assert host.transfers == [Target.number("303")]


def test_invalid_keys_then_the_operator() -> None:
    call, host = FakeCall(b("7"), b("8")), FakeHost()
    run(call, host, direct=frozenset())
    assert call.played == [("att_welcome", "att_operator"),
                           ("invalid_option", "att_welcome", "att_operator"),
                           ("please_hold",)]
    assert host.transfers == [Target.number("303")]


def test_invalid_keys_without_operator_say_goodbye() -> None:
    attendant = dataclasses.replace(main_attendant(), operator=None)
    call, host = FakeCall(k("7"), k("8")), FakeHost()
    run(call, host, attendant, direct=frozenset())
    assert call.played[-1] == ("goodbye",)
    assert host.transfers == []


def test_timeouts_ask_again_then_go_to_the_operator() -> None:
    call, host = FakeCall(SILENCE, SILENCE), FakeHost()
    run(call, host)
    assert call.played == [("att_welcome", "att_operator"),
                           ("please_try_again", "att_welcome", "att_operator"),
                           ("please_hold",)]
    assert host.transfers == [Target.number("303")]


def test_a_real_timeout_is_a_timeout() -> None:
    """The wait uses the menu's timeout: a short one on a real clock."""
    attendant = main_attendant()
    menus = tuple(dataclasses.replace(m, timeout=0.05) for m in attendant.menus)
    attendant = dataclasses.replace(attendant, menus=menus, operator=None)

    class Silent(FakeCall):
        async def read_digits(self, *, max_digits: int, terminator: str = "#",
                              first_timeout: float = 8.0, inter_digit: float = 4.0,
                              first: str | None = None) -> str:
            await asyncio.sleep(first_timeout)
            return ""

    call, host = Silent(), FakeHost()
    run(call, host, attendant)
    assert call.played[-1] == ("goodbye",)


def test_submenu_back_and_repeat() -> None:
    call, host = FakeCall(b("9"), k("*"), b("#"), k("9"), k("1")), FakeHost()
    run(call, host)
    assert call.played == [("att_welcome", "att_operator"), ("custom_more",),
                           ("att_welcome", "att_operator"), ("att_welcome", "att_operator"),
                           ("custom_more",)]
    assert host.transfers == [Target.number("302")]


def test_missing_custom_greeting_is_skipped() -> None:
    known = {"att_welcome", "att_operator", "invalid_option", "goodbye"}
    call, host = FakeCall(b("9"), k("1"), prompts=known), FakeHost()
    run(call, host)
    assert call.played[1] == ()  # custom_more was never uploaded
    assert host.transfers == [Target.number("302")]


def test_hangup_option_says_goodbye() -> None:
    call, host = FakeCall(k("5")), FakeHost()
    run(call, host)
    assert call.played[-1] == ("goodbye",) and host.transfers == []


def test_voicemail_runs_on_the_same_call() -> None:
    ran: list[Any] = []

    async def voicemail(call: Any) -> None:
        ran.append(call)

    plan = ToApplication("voicemail", "301", "direct")
    host = FakeHost(outcomes={Target.voicemail("301"): plan}, apps={"voicemail": voicemail})
    call = FakeCall(k("4"))
    run(call, host)
    assert host.asked == [plan] and ran == [call]


def test_voicemail_unavailable_says_goodbye() -> None:
    plan = ToApplication("voicemail", "301", "direct")
    host = FakeHost(outcomes={Target.voicemail("301"): plan})
    call = FakeCall(k("4"))
    run(call, host)
    assert call.played[-1] == ("goodbye",)


@pytest.mark.parametrize(("status", "prompt"), [(486, "number_busy"), (404, "not_in_service")])
def test_a_refused_destination_is_announced(status: int, prompt: str) -> None:
    host = FakeHost(outcomes={Target.number("6000"): Refuse(status, "no")})
    call = FakeCall(k("1"))
    run(call, host)
    assert call.played[-1] == (prompt, "goodbye")


FULL_SCRIPT: list[tuple[str, str] | None] = [SILENCE, b("9"), k("*"), b("2"), k("3"), k("0"),
                                              k("2")]


@pytest.mark.parametrize("steps", range(len(FULL_SCRIPT)))
def test_the_caller_hanging_up_at_any_step_cancels_cleanly(steps: int) -> None:
    async def scenario() -> tuple[FakeCall, FakeHost]:
        call, host = FakeCall(*FULL_SCRIPT[:steps]), FakeHost()
        task = asyncio.ensure_future(attendant_app(
            cast(AppCall, call), attendant=main_attendant(), host=host,
            direct_dial=frozenset({"day"})))
        await asyncio.wait_for(call.blocked.wait(), 5)
        task.cancel()  # what run_application does when the caller hangs up
        with pytest.raises(asyncio.CancelledError):
            await task
        return call, host

    call, host = asyncio.run(scenario())
    assert host.transfers == []
    assert call.script == []


def test_the_full_script_transfers() -> None:
    call, host = FakeCall(*FULL_SCRIPT), FakeHost()
    run(call, host)
    assert host.transfers == [Target.number("302")]


# ---------------------------------------------------------------- transfer_answered


@pytest.fixture
def h() -> Harness:
    env = CallEnv([("1001", "Alice"), ("1002", "Bob")])
    menu = Menu("m", ("att_welcome",), {})
    env._model = dataclasses.replace(
        env._model, attendants=(Attendant("main", (menu,), "m", number="5000"),))
    for ext in ("1001", "1002"):
        env.set_user(ext, voicemail=False)
    harness = Harness(env)

    def answer(call: Any, plan: ToApplication, now: float) -> bool:
        assert plan == ToApplication("attendant", "main")
        harness.calls.answer_app(call, sdp("192.0.2.1", 7000), "attendant", now)
        return True

    harness.calls.applications["attendant"] = answer
    return harness


def _answered(h: Harness) -> tuple[Phone, Phone, Any]:
    alice, bob = Phone(h, "1001", "10.0.0.1"), Phone(h, "1002", "10.0.0.2")
    h.env.register("1002", bob.peer)
    out = alice.invite("5000")
    ok = only(out, status=200, peer=alice.peer)[0]
    assert isinstance(ok, Response) and b"7000" in ok.body
    alice.ack(ok.to.tag or "")
    [call] = h.calls.calls.values()
    ended: list[bool] = []
    call.on_end = lambda: ended.append(True)
    return alice, bob, (call, ended)


def test_transfer_answered_rings_the_target_and_rejoins_the_caller(h: Harness) -> None:
    alice, bob, (call, ended) = _answered(h)
    assert transfer_answered(h.calls, call, Target.number("1002"), h.now) is None
    assert ended == [True] and call.state is CallState.ENDED
    out = h.collect()
    [invite] = only(out, method="INVITE", peer=bob.peer)
    assert isinstance(invite, Request) and invite.body == b""  # delayed offer
    out = bob.respond(invite, 200, tag="bob", body=sdp("10.0.0.2", 6000))
    [reinvite] = only(out, method="INVITE", peer=alice.peer)
    assert isinstance(reinvite, Request) and b"10.0.0.2" in reinvite.body
    out = alice.respond(reinvite, 200, tag=alice.tag, body=sdp("10.0.0.1", 4000))
    [ack] = only(out, method="ACK", peer=bob.peer)
    assert b"10.0.0.1" in ack.body
    first, = h.calls.take_records()
    assert (first.callee, first.cause) == ("attendant", "transferred")
    [new] = h.calls.calls.values()
    assert new.peer is not None and new.peer.label == "1002" and new.caller == "1001"
    out = alice.in_dialog("BYE")
    assert only(out, method="BYE", peer=bob.peer)
    second, = h.calls.take_records()
    assert (second.caller, second.callee, second.disposition) == ("1001", "1002", "answered")


def test_transfer_answered_returns_what_it_cannot_ring(h: Harness) -> None:
    _alice, _bob, (call, ended) = _answered(h)
    outcome = transfer_answered(h.calls, call, "4444", h.now)
    assert isinstance(outcome, Refuse) and outcome.status == 404
    assert transfer_answered(h.calls, call, Target.voicemail("1001"), h.now) == ToApplication(
        "voicemail", "1001", "direct")
    assert ended == [] and call.state is CallState.ANSWERED
    assert only(h.collect(), method="INVITE") == []
