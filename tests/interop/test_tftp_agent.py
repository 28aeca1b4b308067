"""The real agent process (`edgepbx-agent --tftp-listen`) against Debian's tftp-hpa client.

The agent runs with a phones: section; files fetched must be byte-equal to what the
renderers make from the same site document, computed here. tftp-hpa 5.2 sends no TFTP
options, so the blksize/tsize path is driven by the Python client of
tests/test_tftp_service.py against the same agent.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    LOOPBACK,
    AgentProcess,
    SiteUser,
    free_port,
    make_users,
    require_binary,
    write_site,
)
from test_tftp_service import fetch

from agent.listen import parse_listen
from agent.provisioning_map import provisioning_model
from agent.site import parse_site
from interop.test_tftp_hpa import tftp_get
from provisioning import file_for, render_cisco_default

CISCO_MAC = "00:1a:2b:3c:4d:5e"
SEP = "SEP001A2B3C4D5E.cnf.xml"
UNKNOWN_SEP = "SEP0050569ABCDE.cnf.xml"


def phones_section(users: list[SiteUser]) -> dict[str, Any]:
    return {
        "provisioning": {"paging_groups": [
            {"label": "All", "address": "239.0.1.1", "port": 6000}]},
        "phones": [
            {"mac": CISCO_MAC, "model": "CP-8841",
             "lines": [{"extension": users[0].extension, "label": "Front"},
                       {"extension": users[1].extension, "shared": True}],
             "speed_dials": [{"label": "Lab", "number": "9555123"}],
             "blf": [{"extension": users[2].extension}], "paging_groups": ["All"]},
            {"mac": "80-5E-C0-00-00-01", "model": "T46U",
             "lines": [{"extension": users[1].extension, "shared": True}]},
        ],
    }


def expected(agent: AgentProcess, name: str) -> bytes:
    """The renderer's output for ``name`` from the agent's own site file."""
    site = parse_site(json.loads(agent.site_file.read_text()))
    model = provisioning_model(site, [parse_listen(s) for s in agent.listens],
                               default_host=LOOPBACK)
    found = file_for(model.site, model.phones, name)
    assert found is not None, name
    return found[0]


@pytest.fixture
def tftp_binary() -> str:
    return require_binary("tftp", "tftp-hpa")


@pytest.fixture
def users() -> list[SiteUser]:
    return make_users(3, first_extension=201)


@pytest.fixture
def tftp_agent(agent_factory: Callable[..., AgentProcess], users: list[SiteUser],
               tftp_binary: str) -> AgentProcess:
    ports: list[int] = []

    def args() -> list[str]:
        ports.append(free_port())
        return ["--tftp-listen", f"{LOOPBACK}:{ports[-1]}"]

    agent = agent_factory(users, site_extra=phones_section(users), extra_args=args)
    agent.tftp_port = ports[-1]  # type: ignore[attr-defined]
    return agent


def _unassigned(agent: AgentProcess) -> list[dict[str, Any]]:
    res = agent.cli("phones", "--unassigned", "--json")
    assert res.returncode == 0, res.stderr
    data: list[dict[str, Any]] = json.loads(res.stdout)
    return data


@pytest.mark.parametrize("mode", ["binary", "netascii"])
def test_cisco_file_for_known_mac(tftp_binary: str, tftp_agent: AgentProcess, tmp_path: Path,
                                  users: list[SiteUser], mode: str) -> None:
    out = tmp_path / "sep.xml"
    output = tftp_get(tftp_binary, tftp_agent.tftp_port, SEP, out, mode=mode)  # type: ignore[attr-defined]
    want = expected(tftp_agent, SEP)
    assert out.read_bytes() == want, output
    assert users[0].password.encode() in want and b"127.0.0.1" in want
    # The yealink file too, by its lowercase MAC.
    out2 = tmp_path / "y.cfg"
    tftp_get(tftp_binary, tftp_agent.tftp_port, "805ec0000001.cfg", out2)  # type: ignore[attr-defined]
    assert out2.read_bytes() == expected(tftp_agent, "805ec0000001.cfg")


def test_cisco_file_with_blksize_and_tsize(tftp_agent: AgentProcess) -> None:
    want = expected(tftp_agent, SEP)
    addr = (LOOPBACK, tftp_agent.tftp_port)  # type: ignore[attr-defined]

    async def main() -> None:
        got, client = await fetch(addr, SEP, options={"blksize": "1428", "tsize": "0"})
        assert got == want
        assert client.oack == {"blksize": "1428", "tsize": str(len(want))}
        got, client = await fetch(addr, SEP.lower(), options={"blksize": "8"})
        assert got == want and client.oack == {"blksize": "8"}

    asyncio.run(main())
    # Known phones are not "unassigned"; their fetches are recorded.
    assert _unassigned(tftp_agent) == []


def test_unknown_mac_gets_default_and_is_listed(tftp_binary: str, tftp_agent: AgentProcess,
                                                tmp_path: Path, users: list[SiteUser]) -> None:
    out = tmp_path / "unknown.xml"
    output = tftp_get(tftp_binary, tftp_agent.tftp_port, UNKNOWN_SEP, out)  # type: ignore[attr-defined]
    got = out.read_bytes()
    site = provisioning_model(parse_site(json.loads(tftp_agent.site_file.read_text())),
                              [parse_listen(s) for s in tftp_agent.listens],
                              default_host=LOOPBACK).site
    assert got == render_cisco_default(site), output
    assert not any(u.password.encode() in got for u in users)
    # A Polycom-style name for an unknown MAC: not found, and listed too.
    output = tftp_get(tftp_binary, tftp_agent.tftp_port, "0004f2aabbcc-edgepbx.cfg",  # type: ignore[attr-defined]
                      tmp_path / "p.cfg")
    assert "Error code 1" in output, output
    listed = _unassigned(tftp_agent)
    assert [d["mac"] for d in listed] == ["0004f2aabbcc", "0050569abcde"]
    cisco = listed[1]
    assert cisco["vendor"] == "cisco" and cisco["ip"] == LOOPBACK
    assert cisco["last_file"] == UNKNOWN_SEP and cisco["assigned"] is False
    table = tftp_agent.cli("phones", "--unassigned")
    assert "00:50:56:9a:bc:de" in table.stdout and "cisco" in table.stdout, table
    # With the agent stopped, the CLI reads the store.
    tftp_agent.stop_expect_clean()
    assert [d["mac"] for d in _unassigned(tftp_agent)] == ["0004f2aabbcc", "0050569abcde"]


def test_traversal_and_long_names_refused(tftp_binary: str, tftp_agent: AgentProcess,
                                          tmp_path: Path) -> None:
    port = tftp_agent.tftp_port  # type: ignore[attr-defined]
    for name, code in (("../etc/passwd", 2), ("a/../../SEP001A2B3C4D5E.cnf.xml", 2),
                       ("/etc/passwd", 2), ("x" * 400, 4)):
        out = tmp_path / "out"
        output = tftp_get(tftp_binary, port, name, out)
        assert f"Error code {code}" in output, (name, output)
        assert not out.exists() or out.read_bytes() == b""
    assert _unassigned(tftp_agent) == []


def test_reload_changes_the_next_fetch(tftp_binary: str, tftp_agent: AgentProcess,
                                       tmp_path: Path, users: list[SiteUser]) -> None:
    port = tftp_agent.tftp_port  # type: ignore[attr-defined]
    doc = json.loads(tftp_agent.site_file.read_text())
    doc["phones"][0]["lines"][0]["label"] = "Reception-B"
    write_site(tftp_agent.site_file, doc)
    assert tftp_agent.proc is not None
    tftp_agent.proc.send_signal(signal.SIGHUP)
    out = tmp_path / "sep.xml"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tftp_get(tftp_binary, port, SEP, out)
        if b"Reception-B" in out.read_bytes():
            break
        time.sleep(0.1)
    assert out.read_bytes() == expected(tftp_agent, SEP)
    assert b"Reception-B" in out.read_bytes()


@pytest.mark.parametrize("options", [[], ["blksize 1428", "tsize 0"], ["blksize 512"]])
def test_atftp_fetches_the_cisco_file_with_and_without_options(
        tftp_agent: AgentProcess, tmp_path: Path, options: list[str]) -> None:
    """Debian's atftp (a second, independent client) negotiates blksize and tsize."""
    atftp = require_binary("atftp", "atftp")
    out = tmp_path / "sep.xml"
    cmd = [atftp, "--verbose", "--trace"]
    for option in options:
        cmd += ["--option", option]
    cmd += ["--get", "--remote-file", SEP, "--local-file", str(out), LOOPBACK,
            str(tftp_agent.tftp_port)]  # type: ignore[attr-defined]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_bytes() == expected(tftp_agent, SEP)
    if options:
        assert "OACK" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
