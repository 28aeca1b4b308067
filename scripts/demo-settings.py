#!/usr/bin/env python3
"""Print the softphone settings for `make run`: server, transport, and each user's login.

Usage: demo-settings.py SITE_FILE HOST PORT
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import yaml


def local_addresses(host: str) -> list[str]:
    """Addresses a phone on the LAN (or this machine) can use to reach the agent."""
    if host not in ("0.0.0.0", "::"):
        return [host]
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
        found = [a for a in out.stdout.split() if ipaddress.ip_address(a).version == 4]
    except (OSError, ValueError, subprocess.SubprocessError):
        found = []
    return [*found, "127.0.0.1"]


def main() -> int:
    site_file, host, port = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    doc = yaml.safe_load(site_file.read_text(encoding="utf-8"))
    servers = local_addresses(host)
    realm = doc["site"]["realm"]
    print()
    print(f"edgepbx demo site: {doc['site']['name']} ({site_file})")
    print()
    print("Softphone settings (any SIP softphone: baresip, Linphone, Zoiper, MicroSIP):")
    print(f"  server / registrar / domain:  {servers[0]}:{port}"
          + (f"   (also {', '.join(s + ':' + port for s in servers[1:])})"
             if len(servers) > 1 else ""))
    print("  transport:                    UDP or TCP")
    print(f"  realm (if asked):             {realm}")
    print()
    print(f"  {'extension':<10} {'user':<14} {'password':<22} name")
    for user in doc.get("users", []):
        sip = user["sip"]
        print(f"  {user['extension']:<10} {sip['username']:<14} {sip['password']:<22} "
              f"{user['name']}")
    print()
    first = doc["users"][0]["sip"] if doc.get("users") else None
    if first:
        print("  baresip account line:")
        print(f"    <sip:{first['username']}@{servers[0]}:{port};transport=udp>"
              f";auth_pass={first['password']}")
        print()
    print("Registered phones: .venv/bin/edgepbx --state-dir var phones   (Ctrl-C stops the agent)")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
