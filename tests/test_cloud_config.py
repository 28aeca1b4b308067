"""The cloud link's own settings (agent.cloud.config) and ``edgepbx-agent --cloud FILE``.

The loader is tested in-process; the agent runs as a process (agent_fakes.FakeService in
place of the SIP service, as in test_main.py), since main() installs signal handlers and
configures the root logger.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cloud.config import CloudConfig, CloudConfigError, load_cloud_config
from agent.control import AgentNotRunning, ControlClient, ControlError

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
LAUNCH = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from agent_fakes import FakeService; from agent.main import main; "
    "sys.exit(main(sys.argv[1:], service_factory=FakeService))"
)

VALID: dict[str, Any] = {
    "portal_url": "https://portal.example.net/",
    "enrollment": {"url": "https://enroll.example.net", "ca": "/etc/edgepbx/portal-ca.pem"},
    "vpn": {"remote_addr": "vpn.example.net", "inner_address": "10.99.0.7",
            "remote_ts": ["10.98.0.0/24"]},
}


def write(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc,
                    encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(CloudConfigError) as info:
        load_cloud_config(path)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def changed(edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    edit(doc)
    return doc


# ---------------------------------------------------------------------- valid files


def test_a_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_cloud_config(write(tmp_path / "cloud.yaml", VALID))
    assert isinstance(cfg, CloudConfig)
    assert cfg.portal_url == "https://portal.example.net"  # trailing slash dropped
    assert cfg.enrollment.url == "https://enroll.example.net"
    assert cfg.enrollment.ca == Path("/etc/edgepbx/portal-ca.pem")
    assert cfg.enrollment.claim_token_file is None
    assert (cfg.vpn.remote_id, cfg.vpn.local_addr, cfg.vpn.vici_socket) == (
        "%any", None, Path("/var/run/charon.vici"))
    assert (cfg.sync.long_poll, cfg.sync.heartbeat_interval) == (25, 60.0)
    assert (cfg.outbox.max_bytes, cfg.outbox.batch_size) == (64 * 1024 * 1024, 1000)
    vpn = cfg.vpn_config(key_path=Path("/s/k.pem"), cert_path=Path("/s/c.pem"),
                         ca_path=Path("/s/ca.pem"))
    assert (vpn.inner_address, vpn.remote_ts, vpn.remote_addr) == (
        "10.99.0.7", ("10.98.0.0/24",), "vpn.example.net")
    assert (vpn.key_path, vpn.cert_path, vpn.ca_path) == (
        Path("/s/k.pem"), Path("/s/c.pem"), Path("/s/ca.pem"))


def test_json_and_every_option_are_accepted(tmp_path: Path) -> None:
    doc = changed(lambda d: d.update(
        sync={"long_poll": 0, "heartbeat_interval": 5},
        outbox={"max_bytes": 65536, "batch_size": 10}))
    doc["enrollment"]["claim_token_file"] = "/run/edgepbx/token"
    doc["vpn"].update(local_addr="fd00::7", remote_id="portal.example.net",
                      remote_ts=["10.98.0.0/24", "fd00:98::/64"], dpd_delay=30)
    path = tmp_path / "cloud.json"
    path.write_text(json.dumps(doc))
    cfg = load_cloud_config(str(path))
    assert cfg.enrollment.claim_token_file == Path("/run/edgepbx/token")
    assert cfg.vpn.remote_ts == ["10.98.0.0/24", "fd00:98::/64"]
    assert (cfg.sync.long_poll, cfg.outbox.batch_size, cfg.vpn.dpd_delay) == (0, 10, 30.0)


# ---------------------------------------------------------------------- bad files


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d.pop("portal_url"), ["portal_url: Field required"]),
    (lambda d: d.update(portal_url="http://portal.example.net"),
     ["portal_url: Value error, must be an https:// URL"]),
    (lambda d: d["enrollment"].update(url="portal.example.net/v1/enroll"),
     ["enrollment.url: Value error, must be an https:// URL"]),
    (lambda d: d["enrollment"].pop("ca"), ["enrollment.ca: Field required"]),
    (lambda d: d["vpn"].update(inner_address="10.99.0.300"),
     ["vpn.inner_address: Value error, '10.99.0.300' does not appear to be an IPv4 or IPv6 "
      "address"]),
    (lambda d: d["vpn"].update(remote_ts=[]),
     ["vpn.remote_ts: List should have at least 1 item after validation, not 0"]),
    (lambda d: d["vpn"].update(remote_ts=["10.98.0.0/24", "portal-net"]),
     ["vpn.remote_ts.1: Value error, 'portal-net' does not appear to be an IPv4 or IPv6 "
      "network"]),
    (lambda d: d.update(sync={"long_poll": 61}),
     ["sync.long_poll: Input should be less than or equal to 60"]),
    (lambda d: d.update(outbox={"max_bytes": 1000}),
     ["outbox.max_bytes: Input should be greater than or equal to 65536"]),
])
def test_each_bad_value_is_one_path_message_line(tmp_path: Path, edit: Any,
                                                 expected: list[str]) -> None:
    assert errors_of(write(tmp_path / "cloud.yaml", changed(edit))) == expected


def test_unknown_keys_are_refused_where_they_are(tmp_path: Path) -> None:
    doc = changed(lambda d: d.update(portal="https://typo.example"))
    doc["vpn"]["inner_adress"] = "10.99.0.8"
    errors = errors_of(write(tmp_path / "cloud.yaml", doc))
    assert sorted(errors) == ["portal: Extra inputs are not permitted",
                              "vpn.inner_adress: Extra inputs are not permitted"]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    doc = {"portal_url": "http://x", "enrollment": {"url": "https://e", "ca": "/ca.pem"},
           "vpn": {"remote_addr": "v", "inner_address": "nope", "remote_ts": []}}
    errors = errors_of(write(tmp_path / "cloud.yaml", doc))
    assert [e.split(":")[0] for e in errors] == ["portal_url", "vpn.inner_address",
                                                "vpn.remote_ts"]


@pytest.mark.parametrize(("text", "message"), [
    ("- portal_url\n- vpn\n", "expected a mapping"),
    ("", "expected a mapping"),  # an empty file is None, not a mapping
    ("just a string\n", "expected a mapping"),
])
def test_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "cloud.yaml", text)
    assert errors_of(path) == [f"{path}: {message}"]


def test_not_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "cloud.yaml", "portal_url: [unclosed\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}: invalid YAML at line 2 column 1: "), error


def test_binary_garbage_is_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_bytes(b"\xff\xfe\x00portal")
    [error] = errors_of(path)
    assert error.startswith(f"{path}: invalid YAML: ") and "utf-8" in error


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert errors_of(missing) == [f"{missing}: cannot read: No such file or directory"]
    assert errors_of(tmp_path) == [f"{tmp_path}: cannot read: Is a directory"]
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path / "locked.yaml", VALID)
        locked.chmod(0)
        assert errors_of(locked) == [f"{locked}: cannot read: Permission denied"]


# ---------------------------------------------------------------------- edgepbx-agent --cloud


def site_yaml(name: str) -> str:
    return (f"site: {{name: {name}, timezone: Europe/Berlin, realm: pbx.test}}\n"
            "users:\n  - {id: u0, name: User 0, extension: '101', "
            "sip: {username: user0, password: pw-0-secret}}\n")


def agent_cmd(state_dir: Path, site: Path, cloud: Path) -> list[str]:
    return [sys.executable, "-c", LAUNCH, str(TESTS), "--site", str(site), "--state-dir",
            str(state_dir), "--listen", "udp:127.0.0.1:0", "--cloud", str(cloud),
            "--log-target", "stderr"]


def agent_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}


def test_agent_with_a_bad_cloud_file_exits_2_listing_every_error(state_dir: Path) -> None:
    site = state_dir / "site.yaml"
    site.write_text(site_yaml("Office"))
    bad = write(state_dir / "cloud.yaml", changed(lambda d: (
        d.update(portal_url="http://portal.example.net"),
        d["vpn"].update(inner_address="10.99.0.300", remote_ts=[]))))
    res = subprocess.run(agent_cmd(state_dir / "s", site, bad), capture_output=True,
                         text=True, timeout=30, env=agent_env(), cwd=REPO, check=False)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert f"{bad}: portal_url: Value error, must be an https:// URL" in lines
    assert (f"{bad}: vpn.inner_address: Value error, '10.99.0.300' does not appear to be an "
            "IPv4 or IPv6 address") in lines
    assert (f"{bad}: vpn.remote_ts: List should have at least 1 item after validation, "
            "not 0") in lines
    assert any("not starting: the cloud settings are invalid" in line for line in lines)
    assert not (state_dir / "s" / "control.sock").exists()
    assert not (state_dir / "s" / "cloud").exists()  # no identity made for a bad file


def test_agent_with_a_missing_cloud_file_exits_2(state_dir: Path) -> None:
    site = state_dir / "site.yaml"
    site.write_text(site_yaml("Office"))
    missing = state_dir / "nope.yaml"
    res = subprocess.run(agent_cmd(state_dir / "s", site, missing), capture_output=True,
                         text=True, timeout=30, env=agent_env(), cwd=REPO, check=False)
    assert res.returncode == 2, res.stderr
    # One line, naming the file once and the reason.
    [line] = [x for x in res.stderr.splitlines() if "cannot read" in x]
    assert line == f"{missing}: cannot read: No such file or directory"


def test_agent_starts_on_the_last_good_portal_site_instead_of_site(state_dir: Path) -> None:
    sdir = state_dir / "s"
    (sdir / "cloud").mkdir(parents=True)
    portal_doc = yaml.safe_load(site_yaml("FromPortal"))
    (sdir / "cloud" / "site.json").write_text(json.dumps({
        "version": 7, "etag": '"7-0123456789abcdef"', "document": portal_doc,
        "author": {"role": "admin", "id": "carol"}, "applied_at": 1_700_000_000.0}))
    site = state_dir / "site.yaml"
    site.write_text("site: {name: 42}\n")  # invalid: proves --site is not read
    cloud = write(state_dir / "cloud.yaml", changed(lambda d: d["enrollment"].update(
        url="https://127.0.0.1:1", ca=str(state_dir / "no-ca.pem"))))
    log = (state_dir / "agent.log").open("wb")
    proc = subprocess.Popen(agent_cmd(sdir, site, cloud), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=agent_env(), cwd=REPO)
    try:
        status = _wait_status(sdir, proc, state_dir / "agent.log",
                              lambda s: s.get("cloud", {}).get("state")
                              == "waiting for a claim token")
        assert status["site"]["name"] == "FromPortal"
        assert status["cloud"]["identity"]["enrolled"] is False
        assert status["cloud"]["vpn"] == {"state": "not started"}
        assert status["cloud"]["portal"] == "https://portal.example.net"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (state_dir / "agent.log").read_text(errors="replace")
    assert "starting on the last good site from the portal" in text


def _wait_status(sdir: Path, proc: subprocess.Popen[bytes], log: Path,
                 ok: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited {proc.returncode}:\n{log.read_text()}")
        try:
            last = ControlClient(sdir, timeout=2).request("status")
            if ok(last):
                return dict(last)
        except (AgentNotRunning, ControlError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"status never matched; last {last!r}:\n{log.read_text()}")
