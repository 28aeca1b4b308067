"""The cloud link end to end: agent, charon and the reference portal in two namespaces.

Built on tests/netns.py (two namespaces, a real charon in each), with the certificates made
by the reference portal's CA, so the certificate the agent enrolls for also passes IKE:

==========  ==============================  =============================================
portal ns   198.18.0.1 (outer)              responder charon; the portal's enrollment
                                            port (outside the tunnel, by design)
            198.51.100.1 (inner)            the portal's device API (mutual TLS), reached
                                            only through the tunnel
            127.0.0.1:ADMIN_PORT            the partner/admin API (the test talks to it
                                            with curl inside the namespace)
dev ns      198.18.0.2 (outer)              the box: initiator charon, edgepbx-agent
            198.51.100.200 (inner)          (SIP on 127.0.0.1, SIPp phones beside it)
==========  ==============================  =============================================

The agent runs as a real process (`edgepbx-agent --cloud FILE`); the test reads its
`edgepbx status --json` over the control socket, which is a file the host can reach.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from conftest import SiteUser
from netns import (
    INNER_DEV,
    INNER_PORTAL,
    OUTER_DEV,
    OUTER_PORTAL,
    PORTAL_ID,
    PORTAL_NET,
    Pki,
    VpnTestbed,
    run,
    testbed,
)

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PORTAL_SERVER = ROOT / "tests" / "portal" / "server.py"
DEVICE_PORT = 8443
ENROLL_PORT = 8444
ADMIN_PORT = 8080
SIP_PORT = 5060
TFTP_PORT = 6969


def portal_pki(directory: Path) -> Pki:
    """The reference portal's CA and server certificate, also used for IKE."""
    pki_dir = directory / "portal-data" / "pki"
    out = subprocess.run(
        [sys.executable, str(PORTAL_SERVER), "make-pki", str(pki_dir), "--ip", OUTER_PORTAL,
         "--ip", INNER_PORTAL, "--dns", PORTAL_ID],
        check=True, capture_output=True, text=True, timeout=60)
    paths = json.loads(out.stdout)
    server_cert, server_key = Path(paths["server_cert"]), Path(paths["server_key"])
    return Pki(ca_cert=Path(paths["ca_cert"]), portal_cert=server_cert, portal_key=server_key,
               device_cert=server_cert, device_key=server_key)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0,
               interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class CloudBed:
    vpn: VpnTestbed
    directory: Path
    portal_proc: subprocess.Popen[bytes] | None = None
    agent_proc: subprocess.Popen[bytes] | None = None
    serial: str = ""
    agent_starts: int = 0
    admin_host: str = "127.0.0.1"  # the demo opens it to the host
    portal_args: tuple[str, ...] = ()  # e.g. a short --cert-lifetime
    sync_options: dict[str, Any] = field(default_factory=dict)
    sip_host: str = "127.0.0.1"  # where the agent listens for SIP in the dev namespace
    logs: list[Path] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.directory / "agent-state"

    @property
    def portal_data(self) -> Path:
        return self.directory / "portal-data"

    # ---- the portal

    def start_portal(self) -> None:
        assert self.portal_proc is None or self.portal_proc.poll() is not None
        log = (self.directory / "portal.log").open("ab")
        self.portal_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.vpn.portal_ns, sys.executable, str(PORTAL_SERVER),
             "--data", str(self.portal_data), "--host", "0.0.0.0",
             "--server-ip", OUTER_PORTAL, "--server-ip", INNER_PORTAL,
             "--server-name", PORTAL_ID,
             "--device-port", str(DEVICE_PORT), "--enroll-port", str(ENROLL_PORT),
             "--admin-host", self.admin_host, "--admin-port", str(ADMIN_PORT),
             *self.portal_args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_until(lambda: self.admin("GET", "/api/health", role=None)[0] == 200,
                   "the portal to answer", timeout=30)

    def kill_portal(self) -> None:
        proc = self.portal_proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def admin(self, method: str, path: str, body: Any = None, *, role: str | None = "admin",
              user: str | None = None) -> tuple[int, Any]:
        """A partner/admin API call, from inside the portal namespace."""
        cmd = ["ip", "netns", "exec", self.vpn.portal_ns, "curl", "-sS", "--noproxy", "*",
               "-X", method, "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]
        if role is not None:
            cmd += ["-H", f"X-Portal-Role: {role}"]
        if user is not None:
            cmd += ["-H", f"X-Portal-User: {user}"]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        cmd.append(f"http://127.0.0.1:{ADMIN_PORT}{path}")
        res = run(*cmd, check=False, timeout=20)
        text, _, code = res.stdout.rpartition("\n")
        try:
            status = int(code)
        except ValueError:
            return 0, res.stderr
        try:
            return status, json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            return status, text

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = self.admin(method, path, body, **kw)
        assert 200 <= status < 300, f"{method} {path}: {status} {data}"
        return data

    def site(self) -> dict[str, Any]:
        return self.ok("GET", f"/api/devices/{self.serial}/site?secrets=1")

    def reports(self) -> list[dict[str, Any]]:
        data = self.ok("GET", f"/api/devices/{self.serial}/status")
        return list(data["reports"])

    # ---- the agent

    def cloud_file(self) -> Path:
        path = self.directory / "cloud.yaml"
        path.write_text(yaml.safe_dump({
            "portal_url": f"https://{INNER_PORTAL}:{DEVICE_PORT}",
            "enrollment": {"url": f"https://{OUTER_PORTAL}:{ENROLL_PORT}",
                           "ca": str(self.vpn.pki.ca_cert)},
            "vpn": {"vici_socket": str(self.vpn.dev.vici_socket),
                    "remote_addr": OUTER_PORTAL, "remote_id": PORTAL_ID,
                    "local_addr": OUTER_DEV, "inner_address": INNER_DEV,
                    "remote_ts": [PORTAL_NET], "dpd_delay": 2, "initiate_timeout": 8},
            "sync": {"long_poll": 20, "heartbeat_interval": 2, **self.sync_options},
        }))
        return path

    def edgepbx(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(VENV_BIN / "edgepbx"), "--state-dir", str(self.state_dir),
                              *args], check=False, capture_output=True, text=True, timeout=30)
        if check:
            assert res.returncode == 0, f"edgepbx {' '.join(args)}: {res.stderr}"
        return res

    def start_agent(self, local_site: Path) -> None:
        assert self.agent_proc is None or self.agent_proc.poll() is not None
        self.agent_starts += 1
        log_path = self.directory / f"agent-{self.agent_starts}.log"
        self.logs.append(log_path)
        env = {**os.environ, "EDGEPBX_LOG_LEVEL": "info"}
        self.agent_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.vpn.dev_ns, str(VENV_BIN / "edgepbx-agent"),
             "--site", str(local_site), "--state-dir", str(self.state_dir),
             "--listen", f"udp:{self.sip_host}:{SIP_PORT}",
             "--tftp-listen", f"127.0.0.1:{TFTP_PORT}",
             "--cloud", str(self.cloud_file()), "--log-target", "stderr"],
            stdin=subprocess.DEVNULL, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True, env=env)
        wait_until(lambda: self.status() is not None, "the agent's control socket", 30)

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        proc = self.agent_proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)

    def status(self) -> dict[str, Any] | None:
        res = self.edgepbx("status", "--json", check=False)
        if res.returncode != 0:
            if self.agent_proc is not None and self.agent_proc.poll() is not None:
                raise AssertionError(f"the agent exited:\n{self.agent_log()}")
            return None
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    def cloud(self) -> dict[str, Any]:
        status = self.status() or {}
        return dict(status.get("cloud") or {})

    def applied_version(self) -> int | None:
        sync = self.cloud().get("sync") or {}
        version = sync.get("applied_version")
        return version if isinstance(version, int) else None

    def wait_applied(self, version: int, timeout: float = 20.0) -> None:
        wait_until(lambda: (self.applied_version() or 0) >= version,
                   f"portal version {version} applied", timeout)

    def agent_log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-8000:] for p in self.logs
                         if p.exists())

    # ---- SIPp inside the dev namespace

    def sipp(self, cmd: list[str], *, cwd: Path,
             timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.vpn.dev_ns, *cmd], cwd=cwd,
                              check=False, capture_output=True, text=True,
                              timeout=timeout + 15)

    def sipp_background(self, cmd: list[str], *, cwd: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.vpn.dev_ns, *cmd], cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def udp_bound_in_dev(self, port: int) -> bool:
        res = run("ip", "netns", "exec", self.vpn.dev_ns, "ss", "-uln", check=False)
        return f"127.0.0.1:{port} " in res.stdout


def enroll(bed: CloudBed, document: dict[str, Any], local_site: Path, *,
           partner: str = "acme-partner", timeout: float = 40.0) -> dict[str, Any]:
    """Register the box at the portal (as a partner would), claim it, start the agent and
    wait for the tunnel; returns the agent's cloud status."""
    bed.serial = bed.edgepbx("cloud", "serial").stdout.strip()
    bed.ok("POST", "/api/devices", {"serial": bed.serial, "document": document},
           role="partner", user=partner)
    token = bed.ok("POST", f"/api/devices/{bed.serial}/claim-token", role="partner",
                   user=partner)["claim_token"]
    bed.edgepbx("cloud", "claim", "--", token)
    bed.start_agent(local_site)
    cloud: dict[str, Any] = wait_until(
        lambda: (c := bed.cloud()).get("vpn", {}).get("state") == "up" and c,
        "enrollment and the tunnel", timeout)
    return cloud


def site_document(users: list[SiteUser], *, name: str, privacy: dict[str, Any] | None = None,
                  phones: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "site": {"name": name, "timezone": "UTC", "realm": "127.0.0.1"},
        "sip": {"digest_algorithms": ["MD5"]},
        "users": [u.as_site_entry() for u in users],
    }
    if privacy is not None:
        doc["privacy"] = privacy
    if phones is not None:
        doc["phones"] = phones
    return doc


@contextlib.contextmanager
def cloud_bed(**options: Any) -> Iterator[CloudBed]:
    with testbed(portal_pki) as vpn:
        bed = CloudBed(vpn=vpn, directory=vpn.directory, **options)
        try:
            bed.start_portal()
            yield bed
        finally:
            with contextlib.suppress(Exception):
                bed.stop_agent()
            if bed.agent_proc is not None and bed.agent_proc.poll() is None:
                os.killpg(bed.agent_proc.pid, signal.SIGKILL)
            bed.kill_portal()
