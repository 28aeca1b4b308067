"""The VPN manager against two real charons in network namespaces (tests/netns.py).

The manager runs in the test process and drives the dev namespace's charon over its VICI
socket (a file the host can reach). Traffic is checked from inside the dev namespace with
curl bound to the device's inner address, to an HTTP server on the portal's inner address:
neither namespace has a default route, so it can only have gone through the tunnel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import pytest
from netns import VpnTestbed, vpn_testbed  # noqa: F401 - the fixture

from agent.vpn import BackoffPolicy, State, VpnConfig, VpnManager, address_is_local

# Fast enough for a test: dead peers are found by DPD in ~2 s + charon's (shortened)
# retransmits, and retries start at 0.25 s, capped at 2 s.
POLICY = BackoffPolicy(base=0.25, factor=2.0, cap=2.0, jitter=0.1, stable_after=30.0)


def config_for(bed: VpnTestbed) -> VpnConfig:
    return VpnConfig(
        vici_socket=bed.dev.vici_socket,
        key_path=bed.pki.device_key, cert_path=bed.pki.device_cert, ca_path=bed.pki.ca_cert,
        remote_addr=bed.outer_portal, local_addr=bed.outer_dev,
        remote_id=bed.portal_id, inner_address=bed.inner_dev, remote_ts=(bed.portal_net,),
        dpd_delay=2.0, initiate_timeout=8.0,
    )


async def curl_ok(bed: VpnTestbed, url: str) -> str:
    res = await asyncio.to_thread(bed.curl_from_dev, url)
    assert res.returncode == 0, f"curl through the tunnel failed: {res.stderr}"
    return res.stdout


def test_manager_keeps_the_tunnel_up(vpn_testbed: VpnTestbed, caplog: pytest.LogCaptureFixture):  # noqa: F811
    caplog.set_level(logging.INFO, logger="agent.vpn")
    bed = vpn_testbed
    url = bed.http_server()
    timings: dict[str, float] = {}

    async def scenario() -> None:
        # Before the tunnel: no route to the portal's inner address at all.
        res = await asyncio.to_thread(bed.curl_from_dev, url, timeout=2.0)
        assert res.returncode != 0, "reached the portal's inner address without a tunnel"

        manager = VpnManager(config_for(bed), policy=POLICY, poll_interval=1.0,
                             address_check=bed.dev_has_address)
        assert manager.status()["state"] == "down"
        assert manager.inner_address_ready() is None
        t0 = time.monotonic()
        await manager.start()
        try:
            await manager.wait_for(State.UP, timeout=15)
            timings["first up"] = time.monotonic() - t0
            assert manager.inner_address_ready() == bed.inner_dev
            assert await curl_ok(bed, url) == "hello through the tunnel\n"

            # The byte counters move, and status() says what is up.
            status = await manager.refresh()
            assert status["state"] == "up" and status["inner_address_ready"] is True
            sa = status["sa"]
            assert sa["child_state"] == "INSTALLED" and sa["udp_encap"] is True
            assert sa["esp_proposal"].startswith("AES_GCM_16_256")
            assert sa["ike_proposal"] == "AES_CBC_256/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_384"
            assert sa["local_ts"] == [f"{bed.inner_dev}/32"]
            assert sa["remote_ts"] == [bed.portal_net]
            assert sa["bytes_in"] > 0 and sa["bytes_out"] > 0
            assert status["certificate_not_after"] is not None
            assert status["since"] is not None and status["last_error"] is None

            # The inner address is only "ready" where it is a local address: on this host
            # (outside the dev namespace) it is not, so the default check would refuse.
            assert not address_is_local(bed.inner_dev)
            assert address_is_local("127.0.0.1")

            # charon dies and comes back: the manager reconnects and reloads by itself.
            t1 = time.monotonic()
            await asyncio.to_thread(bed.dev.kill)
            await manager.wait_for(State.BACKOFF, State.CONNECTING, timeout=5)
            assert manager.inner_address_ready() is None
            await asyncio.to_thread(bed.dev.start)
            await manager.wait_for(State.UP, timeout=20)
            timings["dev charon restart -> up"] = time.monotonic() - t1
            assert "VICI socket lost" in (manager.status()["last_error"] or "")
            assert await curl_ok(bed, url) == "hello through the tunnel\n"

            # The portal goes away: backoff (the dev side sees its DELETE), then back.
            t2 = time.monotonic()
            await asyncio.to_thread(bed.stop_portal)
            await manager.wait_for(State.BACKOFF, timeout=15)
            timings["portal stop -> backoff"] = time.monotonic() - t2
            assert manager.inner_address_ready() is None
            status = manager.status()
            assert status["sa"] is None and status["next_attempt"] is not None
            res = await asyncio.to_thread(bed.curl_from_dev, url, timeout=2.0)
            assert res.returncode != 0, "portal reachable with the tunnel down"
            await asyncio.sleep(3)  # a few failed attempts against a dead portal
            assert manager.state is not State.UP
            assert manager.status()["failures"] >= 2
            t3 = time.monotonic()
            await asyncio.to_thread(bed.start_portal)
            await manager.wait_for(State.UP, timeout=20)
            timings["portal back -> up"] = time.monotonic() - t3
            assert await curl_ok(bed, url) == "hello through the tunnel\n"

            # The network goes away silently (no DELETE): dead peer detection notices.
            t4 = time.monotonic()
            await asyncio.to_thread(bed.outer_link, False)
            await manager.wait_for(State.BACKOFF, timeout=20)
            timings["link down -> backoff"] = time.monotonic() - t4
            assert manager.inner_address_ready() is None
            t5 = time.monotonic()
            await asyncio.to_thread(bed.outer_link, True)
            await manager.wait_for(State.UP, timeout=20)
            timings["link up -> up"] = time.monotonic() - t5
            assert await curl_ok(bed, url) == "hello through the tunnel\n"
        finally:
            await manager.stop()
        assert manager.status()["state"] == "down"
        # stop() terminated the SA in charon.
        s = bed.dev.session()
        try:
            assert list(s.list_sas({"ike": manager.config.name})) == []
        finally:
            s.transport.close()

    t = time.monotonic()
    asyncio.run(scenario())
    timings["total"] = time.monotonic() - t
    print("vpn timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


def test_missing_credentials_back_off_with_a_clear_error(vpn_testbed: VpnTestbed):  # noqa: F811
    bed = vpn_testbed
    cfg = config_for(bed)
    broken = dataclasses.replace(cfg, key_path=Path(bed.directory) / "nope.pem")

    async def scenario() -> None:
        manager = VpnManager(broken, policy=POLICY, address_check=bed.dev_has_address)
        await manager.start()
        try:
            await manager.wait_for(State.BACKOFF, timeout=10)
            assert "cannot read the VPN credentials" in (manager.status()["last_error"] or "")
            assert manager.inner_address_ready() is None
        finally:
            await manager.stop()

    asyncio.run(scenario())
