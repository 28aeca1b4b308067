"""agent.provisioning_service over loopback: files rendered on demand from the site, the
device inventory in the store, unknown MACs never given credentials, reload, and the
agent composing it (--tftp-listen) with `edgepbx phones --unassigned`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import short_tempdir
from test_site_phones import LISTENS, _user, base
from test_tftp_service import LOOPBACK, TftpClient, fetch, wait_idle

from agent import cli
from agent.listen import parse_listen
from agent.provisioning_map import provisioning_model
from agent.provisioning_service import ProvisioningService
from agent.site import parse_site
from agent.store import Store
from provisioning import file_for, render_cisco_default

PASSWORDS = (b"pw-101", b"pw-102", b"pw-103")


def model_of(doc: dict[str, Any]) -> Any:
    return provisioning_model(parse_site(doc), LISTENS, default_host="192.0.2.10")


async def _with_service(store: Store | None, body: Any, doc: dict[str, Any] | None = None
                        ) -> None:
    service = ProvisioningService(model_of(doc or base()), store=store, host=LOOPBACK, port=0,
                                  flush_interval=0.05)
    await service.start()
    try:
        await body(service)
    finally:
        await service.stop()


def test_known_phone_gets_its_file_with_and_without_options(tmp_path: Path) -> None:
    model = model_of(base())
    expected = file_for(model.site, model.phones, "SEPAABBCCDDEE01.cnf.xml")
    yealink = file_for(model.site, model.phones, "aabbccddee02.cfg")
    assert expected is not None and yealink is not None
    store = Store.open(tmp_path)

    async def body(service: ProvisioningService) -> None:
        addr = service.tftp.local
        got, _ = await fetch(addr, "SEPAABBCCDDEE01.cnf.xml")
        assert got == expected[0]
        got, client = await fetch(addr, "SEPaabbccddee01.cnf.xml",
                                  options={"blksize": "1024", "tsize": "0"})
        assert got == expected[0]
        assert client.oack == {"blksize": "1024", "tsize": str(len(expected[0]))}
        got, _ = await fetch(addr, "aabbccddee02.cfg")
        assert got == yealink[0]
        await wait_idle(service.tftp)
        devices = {d["mac"]: d for d in service.devices()}
        assert devices["aabbccddee01"]["assigned"] is True
        assert devices["aabbccddee01"]["model"] == "CP-7841"
        assert devices["aabbccddee01"]["vendor"] == "cisco"
        assert devices["aabbccddee01"]["ip"] == LOOPBACK
        assert devices["aabbccddee01"]["fetched_file"] == "SEPaabbccddee01.cnf.xml"
        assert devices["aabbccddee01"]["fetched_sha256"] == hashlib.sha256(
            expected[0]).hexdigest()
        assert devices["aabbccddee02"]["vendor"] == "yealink"
        assert devices["aabbccddee02"]["fetched_sha256"] == hashlib.sha256(
            yealink[0]).hexdigest()

    asyncio.run(_with_service(store, body))
    store.close()


def test_unknown_mac_gets_defaults_never_credentials(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    model = model_of(base())

    async def body(service: ProvisioningService) -> None:
        addr = service.tftp.local
        got, _ = await fetch(addr, "SEP001122334455.cnf.xml")
        assert got == render_cisco_default(model.site)  # XmlDefault: no lines
        for name in ("001122334466.cfg", "001122334477-edgepbx.cfg"):
            with pytest.raises(FileNotFoundError):
                await fetch(addr, name)
        # A Yealink asks for its common file first: the next <mac>.cfg is a Yealink T46.
        common, _ = await fetch(addr, "y000000000028.cfg")
        with pytest.raises(FileNotFoundError):
            await fetch(addr, "001122334488.cfg")
        for content in (got, common):
            assert not any(pw in content for pw in PASSWORDS)
        await wait_idle(service.tftp)
        devices = {d["mac"]: d for d in service.devices()}
        assert set(devices) == {"001122334455", "001122334466", "001122334477", "001122334488"}
        assert all(not d["assigned"] and d["fetched_at"] is None for d in devices.values())
        assert devices["001122334455"]["vendor"] == "cisco"
        assert devices["001122334477"]["vendor"] == "polycom"
        assert devices["001122334466"]["vendor"] is None
        assert devices["001122334488"]["vendor"] == "yealink"
        assert devices["001122334488"]["model_hint"] == "28"
        assert devices["001122334488"]["last_file"] == "001122334488.cfg"

    asyncio.run(_with_service(store, body))
    store.close()


def test_known_mac_other_vendors_name_gets_no_credentials() -> None:
    async def body(service: ProvisioningService) -> None:
        addr = service.tftp.local
        # aabbccddee02 is a Yealink: its MAC in a Cisco or Polycom name gets no phone file.
        got, _ = await fetch(addr, "SEPAABBCCDDEE02.cnf.xml")
        assert not any(pw in got for pw in PASSWORDS)
        with pytest.raises(FileNotFoundError):
            await fetch(addr, "aabbccddee02-edgepbx.cfg")

    asyncio.run(_with_service(None, body))


def test_reload_takes_effect_at_the_next_request(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    changed = base()
    changed["phones"][0]["lines"][0]["label"] = "Reception-2"
    changed["phones"].append({"mac": "001122334455", "model": "cisco-8841",
                              "lines": [{"extension": "102", "shared": True}]})
    changed["phones"][1]["lines"][0]["shared"] = True

    async def body(service: ProvisioningService) -> None:
        addr = service.tftp.local
        first, _ = await fetch(addr, "SEPAABBCCDDEE01.cnf.xml")
        assert b"Reception-2" not in first
        await fetch(addr, "SEP001122334455.cnf.xml")  # unassigned for now
        assert [d["assigned"] for d in service.devices()
                if d["mac"] == "001122334455"] == [False]
        service.apply(model_of(changed))
        second, _ = await fetch(addr, "SEPAABBCCDDEE01.cnf.xml")
        assert b"Reception-2" in second
        new, _ = await fetch(addr, "SEP001122334455.cnf.xml")
        assert b"pw-102" in new  # now assigned: its own file
        await wait_idle(service.tftp)
        rows = {d["mac"]: d for d in service.devices()}
        assert rows["001122334455"]["assigned"] is True
        assert rows["aabbccddee01"]["fetched_sha256"] == hashlib.sha256(second).hexdigest()

    asyncio.run(_with_service(store, body))
    store.close()


def test_traversal_and_long_names_refused_before_rendering() -> None:
    async def body(service: ProvisioningService) -> None:
        addr = service.tftp.local
        for name in ("../SEPAABBCCDDEE01.cnf.xml", "/etc/passwd", "a/../../b",
                     "S" * 300, "SEP" + "A" * 200 + ".cnf.xml"):
            with pytest.raises(FileNotFoundError) as info:
                await fetch(addr, name)
            code = info.value.args[0][0]
            assert code in (1, 2, 4), (name, info.value)
        stats = service.tftp.stats()
        assert stats["started"] == 0

    asyncio.run(_with_service(None, body))


def test_devices_in_the_store_and_cli_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    with short_tempdir() as state:
        store = Store.open(state)
        from agent.site import site_document

        store.record_site_version("f", site_document(parse_site(base()), reveal_secrets=True))

        async def body(service: ProvisioningService) -> None:
            await fetch(service.tftp.local, "SEP001122334455.cnf.xml")
            await fetch(service.tftp.local, "SEPAABBCCDDEE01.cnf.xml")
            await wait_idle(service.tftp)
            await asyncio.sleep(0.1)  # the batched flush

        asyncio.run(_with_service(store, body))
        store.close()
        # The agent is not running: read from the store, judged by the last site version.
        assert cli.main(["--state-dir", str(state), "phones", "--unassigned", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [d["mac"] for d in listed] == ["001122334455"]
        assert listed[0]["vendor"] == "cisco" and listed[0]["ip"] == LOOPBACK
        assert cli.main(["--state-dir", str(state), "phones", "--unassigned"]) == 0
        table = capsys.readouterr().out
        assert "00:11:22:33:44:55" in table and "cisco" in table and "aa:bb" not in table


def test_device_row_and_empty() -> None:
    row = cli.device_row({"mac": "001122334455", "vendor": "yealink", "model_hint": "28",
                          "ip": "192.0.2.7", "last_seen": 100.0, "last_file": "x.cfg"}, 160.0)
    assert row[0] == "00:11:22:33:44:55" and row[2] == "28" and row[3] == "192.0.2.7"
    assert row[4].endswith("ago")
    out = io.StringIO()
    with short_tempdir() as state:
        Store.open(state).close()
        assert cli._cmd_unassigned(state, as_json=False, out=out) == 0
    assert out.getvalue() == "no unassigned devices\n"


def test_agent_serves_tftp_and_lists_devices() -> None:
    """The Agent composes TFTP next to the SIP service (a fake one) and answers `devices`
    on the control socket."""
    from agent_fakes import FakeService

    from agent.control import ControlClient
    from agent.main import Agent

    with short_tempdir() as state:
        site_file = state / "site.json"
        site_file.write_text(json.dumps(base()))
        site = parse_site(base())

        async def main() -> None:
            agent = Agent(site_path=site_file, site=site, state_dir=state / "s",
                          listens=[parse_listen("udp:127.0.0.1:5060")],
                          service_factory=FakeService,
                          tftp_listen=parse_listen("udp:127.0.0.1:0"))
            task = asyncio.create_task(agent.run())
            for _ in range(200):
                if agent.provisioning is not None and agent._ready:
                    break
                await asyncio.sleep(0.01)
            addr = agent.provisioning.tftp.local
            got, _ = await fetch(addr, "SEP001122334455.cnf.xml")
            assert b"pw-" not in got
            devices = await asyncio.to_thread(ControlClient(state / "s").request, "devices")
            assert [d["mac"] for d in devices] == ["001122334455"]
            assert agent.status()["provisioning"]["tftp_completed"] == 1
            agent.request_stop("test")
            assert await task == 0

        asyncio.run(main())


def test_boot_storm_of_200_phones_with_5_percent_loss(tmp_path: Path) -> None:
    """200 phones (Cisco and Yealink, half with blksize/tsize) fetch their own files at
    once through the agent's provisioning service while 5% of their packets are lost in
    both directions: every file arrives byte-exact, and every fetch is recorded."""
    doc = base()
    doc["users"] = [_user(str(200 + i)) for i in range(200)]
    doc["phones"] = [
        {"mac": f"aa:bb:cc:00:{i // 256:02x}:{i % 256:02x}",
         "model": "CP-7841" if i % 2 else "yealink-t46",
         "lines": [{"extension": str(200 + i)}]}
        for i in range(200)
    ]
    model = model_of(doc)
    names = [f"SEPAABBCC00{i // 256:02X}{i % 256:02X}.cnf.xml" if i % 2
             else f"aabbcc00{i // 256:02x}{i % 256:02x}.cfg" for i in range(200)]
    expected = {}
    for name in names:
        found = file_for(model.site, model.phones, name)
        assert found is not None, name
        expected[name] = found[0]
    store = Store.open(tmp_path)

    async def body(service: ProvisioningService) -> None:
        loop = asyncio.get_running_loop()

        clients: list[TftpClient] = []

        async def one(i: int, name: str) -> bytes:
            options = {"blksize": "1428", "tsize": "0"} if i % 2 else None
            _t, client = await loop.create_datagram_endpoint(
                lambda: TftpClient(service.tftp.local, name, options=options, loss=0.05,
                                   rng=random.Random(i), timeout=0.3),
                local_addr=(LOOPBACK, 0))
            clients.append(client)
            return await asyncio.wait_for(client.done, 20.0)

        got = await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))
        assert dict(zip(names, got, strict=True)) == expected
        # Clients keep answering until the server has its final ACKs.
        stats = await wait_idle(service.tftp, timeout=20.0)
        for client in clients:
            client.close()
        assert sum(c.dropped for c in clients) > 0  # the loss really happened
        assert stats["completed"] >= 200 and stats["failed"] == 0, stats
        fetched = {d["mac"] for d in service.devices() if d["fetched_sha256"]}
        assert len(fetched) == 200

    asyncio.run(_with_service(store, body, doc))
