"""`make demo-cloud`: the box and the portal, each in its own network namespace, linked by
a real IKEv2 tunnel, for a person to try (root only).

It builds the end-to-end bed of tests/interop/cloud_bed.py, enrolls the box with a claim
token, and opens two doors to this host, each a veth pair it creates and removes:

* 10.77.0.2 (the box): register a softphone there, as the demo site's users;
* 10.78.0.2 (the portal): the partner/admin web page and API on port 8080.

It prints what to type, then runs until Ctrl-C and tears everything down.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import yaml  # noqa: E402
from netns import run  # noqa: E402

from interop.cloud_bed import ADMIN_PORT, SIP_PORT, cloud_bed, enroll  # noqa: E402

HOST_TO_BOX = ("10.77.0.1", "10.77.0.2", "epbxdemo-box")
HOST_TO_PORTAL = ("10.78.0.1", "10.78.0.2", "epbxdemo-portal")


def door(namespace: str, host_ip: str, ns_ip: str, name: str) -> None:
    run("ip", "link", "add", name, "type", "veth", "peer", "name", "door", "netns", namespace)
    run("ip", "addr", "add", f"{host_ip}/30", "dev", name)
    run("ip", "link", "set", name, "up")
    run("ip", "-n", namespace, "addr", "add", f"{ns_ip}/30", "dev", "door")
    run("ip", "-n", namespace, "link", "set", "door", "up")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> int:
    if os.geteuid() != 0:
        say("make demo-cloud needs root (it creates network namespaces): sudo make demo-cloud")
        return 2
    site = yaml.safe_load((ROOT / "agent" / "demo" / "site.yaml").read_text())
    site["site"]["name"] = "Demo Office (from the portal)"
    site["site"]["realm"] = HOST_TO_BOX[1]
    local = Path(tempfile.mkdtemp(prefix="epbx-demo-cloud-")) / "local-site.json"
    local.write_text(json.dumps({"site": {"name": "Local fallback", "timezone": "UTC",
                                          "realm": HOST_TO_BOX[1]}}))
    with cloud_bed(admin_host="0.0.0.0", sip_host=HOST_TO_BOX[1]) as bed:
        try:
            door(bed.vpn.dev_ns, *HOST_TO_BOX)
            door(bed.vpn.portal_ns, *HOST_TO_PORTAL)
            say("enrolling the box and bringing the tunnel up ...")
            enroll(bed, site, local, partner="demo-partner")
            bed.wait_applied(bed.site()["version"])
            portal = f"http://{HOST_TO_PORTAL[1]}:{ADMIN_PORT}"
            say(f"""
The box {bed.serial} is enrolled; its tunnel to the portal is up.

  Portal (partner/admin):  {portal}/?role=admin
  API, e.g. a partner edit:
    curl -H 'X-Portal-Role: partner' -H 'Content-Type: application/json' \\
      -d '{{"changes": [{{"path": "site.name", "value": "Renamed at the portal"}}]}}' \\
      {portal}/api/devices/{bed.serial}/site/changes
  The box's view:          sudo .venv/bin/edgepbx --state-dir {bed.state_dir} status

  Softphone: server {HOST_TO_BOX[1]}:{SIP_PORT} (UDP), e.g. user alice, password
  demo-alice-101, extension 101 (bob / demo-bob-102 is 102).

Ctrl-C stops the demo and removes the namespaces.""")
            try:
                signal.pause()
            except KeyboardInterrupt:
                say("stopping ...")
        finally:
            for name in (HOST_TO_BOX[2], HOST_TO_PORTAL[2]):
                run("ip", "link", "del", name, check=False)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Not a blocked signal mask: the agent and charon would inherit it and ignore SIGTERM.
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
