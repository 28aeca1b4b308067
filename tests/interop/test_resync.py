"""Resync against a real peer: a SIPp phone registered for a line receives the
check-sync NOTIFY when a site change alters its configuration file."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from conftest import LOOPBACK, free_port, make_users, write_site

from interop.test_sipp_calls import udp_bound, wait_for

YEALINK_MAC = "80:5e:c0:00:00:01"


def test_a_site_change_tells_the_registered_phone_to_resync(agent_factory, sipp):
    user, other = make_users(2, first_extension=201)
    site: dict[str, Any] = {
        "sip": {"digest_algorithms": ["MD5"]},
        "phones": [{"mac": YEALINK_MAC, "model": "T46U",
                    "lines": [{"extension": user.extension, "label": "Desk"}]}],
    }
    agent = agent_factory([user, other], site_extra=site,
                          extra_args=lambda: ["--tftp-listen", f"{LOOPBACK}:{free_port()}"])
    port = free_port()
    sipp.expect_success("register.xml", agent.port, users=[user], local_port=port,
                        expires=600, timeout=10)
    phone = sipp.start("resync_phone.xml", agent.port, local_port=port, calls=1, timeout=20)
    wait_for(lambda: udp_bound(LOOPBACK, port), "the phone to listen")

    doc = json.loads(agent.site_file.read_text())
    doc["phones"][0]["lines"][0]["label"] = "Reception"
    write_site(agent.site_file, doc)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)

    result = phone.wait(timeout=15)
    assert result.returncode == 0, result.explain()
    [notify] = [m for m in result.messages.split("received")[1:] if "NOTIFY sip:" in m]
    assert "Event: check-sync;reboot=false" in notify, notify

    # The phone answered but never fetched its file: still pending, answered 200.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        resync = agent.status().get("resync") or {}
        pending = resync.get("pending") or []
        if pending and pending[0]["last"] == "NOTIFY answered 200":
            break
        time.sleep(0.1)
    assert pending and pending[0]["mac"] == YEALINK_MAC.replace(":", ""), resync
