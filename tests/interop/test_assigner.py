"""The extension assigner end to end, with real peers: a phone nobody listed fetches its
file over TFTP (tftp-hpa) and gets only the auto-registration line; it dials 70000
(SIPp), keys in the PIN, the extension and 1 as RFC 4733 events (the pcap files Debian's
sip-tester ships); the agent binds its MAC to the extension in the site file, audits it,
tells the phone to resync, and the phone's next fetch is its real file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LOOPBACK, REPO, free_port, make_users, require_binary

from agent.store import Store
from interop.test_tftp_hpa import tftp_get

MAC = "80:5e:c0:00:00:99"
MAC_CFG = "805ec0000099.cfg"
AUTO_USER, AUTO_PASSWORD, PIN = "autoreg", "auto-secret-1", "2468"
PCAPS = Path("/usr/share/sip-tester")


@pytest.fixture(scope="module")
def prompts() -> None:
    """The voice prompts the assigner speaks (generated, cached, ~1 s)."""
    generator = REPO / "packaging" / "prompts" / "generate.py"
    check = subprocess.run([sys.executable, str(generator), "--check"], check=False,
                           capture_output=True)
    if check.returncode != 0:
        require_binary("espeak-ng", "espeak-ng")
        require_binary("sox", "sox")
        subprocess.run([sys.executable, str(generator), "-q"], check=True, timeout=120)


def _site(users: list[Any]) -> dict[str, Any]:
    return {
        "sip": {"digest_algorithms": ["MD5"]},
        "provisioning": {"auto_registration": {"username": AUTO_USER,
                                               "password": AUTO_PASSWORD,
                                               "assigner_pin": PIN}},
    }


def test_an_unassigned_phone_is_bound_to_an_extension_from_its_keypad(
        agent_factory, sipp, prompts, tmp_path: Path) -> None:
    tftp = require_binary("tftp", "tftp-hpa")
    if not (PCAPS / "dtmf_2833_pound.pcap").exists():
        pytest.fail("sip-tester's DTMF pcaps are missing; `make deps` installs them")
    users = make_users(3, first_extension=201)
    target = users[2]
    tftp_port = free_port()
    agent = agent_factory(users, site_extra=_site(users),
                          extra_args=["--tftp-listen", f"{LOOPBACK}:{tftp_port}"])

    # 1. The phone boots: the Yealink common file, then its own name -> the auto line only.
    tftp_get(tftp, tftp_port, "y000000000000.cfg", tmp_path / "common.cfg")
    before = tmp_path / "before.cfg"
    tftp_get(tftp, tftp_port, MAC_CFG, before)
    text = before.read_text()
    assert AUTO_USER in text and "Unassigned" in text, text[:2000]
    assert all(u.password not in text for u in users)  # no user's credentials
    assert [d["mac"] for d in json.loads(agent.cli("phones", "--unassigned", "--json").stdout)
            ] == [MAC.replace(":", "")]

    # 2. It calls the assigner: PIN 2468 #, extension 203 #, 1.
    inf = tmp_path / "auto.csv"
    inf.write_text(f"SEQUENTIAL\n{AUTO_USER};[authentication username={AUTO_USER} "
                   f"password={AUTO_PASSWORD}];70000\n")
    result = sipp.run("assigner_uac.xml", agent.port, calls=1, timeout=60,
                      extra=["-inf", str(inf), "-mp", str(free_port())])
    assert result.returncode == 0, result.explain()
    assert "Event: check-sync;reboot=false" in result.errors, result.explain()  # told to resync

    # 3. The site file now lists the phone on 203; the change is audited.
    doc = yaml.safe_load(agent.site_file.read_text())
    [phone] = doc["phones"]
    assert phone["mac"].replace(":", "") == MAC.replace(":", "")
    assert phone["lines"] == [{"extension": target.extension}]
    assert agent.cli("phones", "--unassigned", "--json").stdout.strip() in ("[]", "")
    store = Store.open_readonly(agent.state_dir)
    try:
        [entry] = store.audit_entries(action="phone.assigned")
        pins = store.audit_entries(action="assigner.pin_rejected")
    finally:
        store.close()
    assert entry.actor == "assigner" and entry.detail["extension"] == target.extension
    assert pins == []

    # 4. Its next fetch is its real file, with 203's credentials.
    after = tmp_path / "after.cfg"
    tftp_get(tftp, tftp_port, MAC_CFG, after)
    assert target.password in after.read_text()


def test_an_unassigned_phone_cannot_call_anyone_else(agent_factory, sipp, tmp_path) -> None:
    users = make_users(2, first_extension=201)
    agent = agent_factory(users, site_extra=_site(users))
    inf = tmp_path / "auto.csv"
    inf.write_text(f"SEQUENTIAL\n{AUTO_USER};[authentication username={AUTO_USER} "
                   f"password={AUTO_PASSWORD}];{users[0].extension}\n")
    result = sipp.run("call_uac_expect.xml", agent.port, calls=1, timeout=15,
                      extra=["-inf", str(inf), "-key", "expected", "403"])
    assert result.returncode == 0, result.explain()
