"""The real agent process (`edgepbx-agent --http-listen --https-listen`) against Debian's curl.

Files fetched must be byte-equal to what the renderers make from the same site document,
computed here. A Yealink's own file needs its HTTP credentials: Digest over plain HTTP,
Basic over HTTPS; a Cisco file is served without credentials (Cisco phones cannot send
any); an unknown MAC gets the default or 404 and is listed by `edgepbx phones --unassigned`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import LOOPBACK, AgentProcess, SiteUser, free_port, make_users, require_binary

from agent.listen import parse_listen
from agent.provisioning_map import provisioning_model
from agent.site import parse_site
from interop.test_tftp_agent import expected  # the renderer's bytes for the agent's site
from provisioning import render_cisco_default

SEP = "SEP001A2B3C4D5E.cnf.xml"
YEALINK = "805ec0000001.cfg"
YEALINK_USER, YEALINK_PASSWORD = "t46-front", "Yl-http-secret-1"
SITE_USER, SITE_PASSWORD = "prov", "site-http-secret-2"


def phones_section(users: list[SiteUser]) -> dict[str, Any]:
    return {
        "provisioning": {"http_auth": {"username": SITE_USER, "password": SITE_PASSWORD}},
        "phones": [
            {"mac": "00:1a:2b:3c:4d:5e", "model": "CP-8841",
             "lines": [{"extension": users[0].extension}]},
            {"mac": "80-5E-C0-00-00-01", "model": "T46U",
             "lines": [{"extension": users[1].extension}],
             "http_username": YEALINK_USER, "http_password": YEALINK_PASSWORD},
        ],
    }


@pytest.fixture
def curl() -> str:
    return require_binary("curl", "curl")


@pytest.fixture
def users() -> list[SiteUser]:
    return make_users(2, first_extension=301)


@pytest.fixture
def http_agent(agent_factory: Callable[..., AgentProcess], users: list[SiteUser],
               curl: str) -> AgentProcess:
    ports: list[tuple[int, int]] = []

    def args() -> list[str]:
        ports.append((free_port(), free_port()))
        return ["--http-listen", f"{LOOPBACK}:{ports[-1][0]}",
                "--https-listen", f"{LOOPBACK}:{ports[-1][1]}"]

    agent = agent_factory(users, site_extra=phones_section(users), extra_args=args)
    agent.http_port, agent.https_port = ports[-1]  # type: ignore[attr-defined]
    return agent


def fetch(curl: str, url: str, out: Path, *options: str) -> int:
    """curl ``url`` into ``out``; the HTTP status."""
    res = subprocess.run(
        [curl, "-sS", "-o", str(out), "-w", "%{http_code}", "--max-time", "10", *options, url],
        capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def test_yealink_file_needs_credentials(curl: str, http_agent: AgentProcess,
                                        tmp_path: Path, users: list[SiteUser]) -> None:
    http = f"http://{LOOPBACK}:{http_agent.http_port}/{YEALINK}"  # type: ignore[attr-defined]
    https = f"https://{LOOPBACK}:{http_agent.https_port}/{YEALINK}"  # type: ignore[attr-defined]
    want = expected(http_agent, YEALINK)
    assert users[1].password.encode() in want
    out = tmp_path / "y.cfg"
    assert fetch(curl, http, out) == 401
    assert users[1].password.encode() not in out.read_bytes()
    # Digest over plain HTTP: the password never crosses.
    assert fetch(curl, http, out, "--digest", "-u", f"{YEALINK_USER}:{YEALINK_PASSWORD}") == 200
    assert out.read_bytes() == want
    # Basic over plain HTTP is refused, right password or not.
    assert fetch(curl, http, out, "--basic", "-u", f"{YEALINK_USER}:{YEALINK_PASSWORD}") == 401
    # Wrong password, and the site default (this phone has its own credentials).
    assert fetch(curl, http, out, "--digest", "-u", f"{YEALINK_USER}:nope") == 401
    assert fetch(curl, http, out, "--digest", "-u", f"{SITE_USER}:{SITE_PASSWORD}") == 401
    # Basic over HTTPS, with the agent's self-signed certificate.
    assert fetch(curl, https, out, "-k", "-u", f"{YEALINK_USER}:{YEALINK_PASSWORD}") == 200
    assert out.read_bytes() == want
    assert fetch(curl, https, out, "-k", "-u", f"{YEALINK_USER}:wrong") == 401
    # The fetch is recorded like TFTP's, and counted in status.
    devices = http_agent.cli("phones", "--unassigned", "--json")
    assert json.loads(devices.stdout) == []
    status = http_agent.status()["provisioning"]
    assert status["http_ok"] == 1 and status["https_ok"] == 1
    assert status["http_unauthorized"] >= 4 and status["https_fetches"] == 1


def test_cisco_file_without_credentials(curl: str, http_agent: AgentProcess,
                                        tmp_path: Path, users: list[SiteUser]) -> None:
    out = tmp_path / "sep.xml"
    url = f"http://{LOOPBACK}:{http_agent.http_port}/{SEP}"  # type: ignore[attr-defined]
    assert fetch(curl, url, out) == 200
    assert out.read_bytes() == expected(http_agent, SEP)
    assert users[0].password.encode() in out.read_bytes()
    headers = tmp_path / "headers"
    assert fetch(curl, url, out, "-I", "-D", str(headers)) == 200
    assert f"Content-Length: {len(expected(http_agent, SEP))}" in headers.read_text()


def test_unknown_mac_default_or_404_and_listed(curl: str, http_agent: AgentProcess,
                                               tmp_path: Path, users: list[SiteUser]) -> None:
    base = f"http://{LOOPBACK}:{http_agent.http_port}"  # type: ignore[attr-defined]
    out = tmp_path / "x"
    assert fetch(curl, f"{base}/SEP0050569ABCDE.cnf.xml", out,
                 "--digest", "-u", f"{YEALINK_USER}:{YEALINK_PASSWORD}") == 200
    site = provisioning_model(parse_site(json.loads(http_agent.site_file.read_text())),
                              [parse_listen(s) for s in http_agent.listens],
                              default_host=LOOPBACK).site
    assert out.read_bytes() == render_cisco_default(site)
    assert not any(u.password.encode() in out.read_bytes() for u in users)
    assert fetch(curl, f"{base}/805ec0aabbcc.cfg", out,
                 "-A", "Yealink SIP-T54W 96.86.0.70 80:5e:c0:aa:bb:cc") == 404
    assert fetch(curl, f"{base}/%2e%2e/etc/passwd", out, "--path-as-is") == 400
    assert fetch(curl, f"{base}/{YEALINK}", out, "-X", "POST") == 405
    res = http_agent.cli("phones", "--unassigned", "--json")
    assert res.returncode == 0, res.stderr
    listed = {d["mac"]: d for d in json.loads(res.stdout)}
    assert set(listed) == {"0050569abcde", "805ec0aabbcc"}
    assert listed["0050569abcde"]["vendor"] == "cisco" and listed["0050569abcde"]["ip"] == LOOPBACK
    assert listed["805ec0aabbcc"]["vendor"] == "yealink"
    assert listed["805ec0aabbcc"]["model_hint"] == "T54W"
