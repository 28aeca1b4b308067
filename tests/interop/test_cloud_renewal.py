"""Certificate renewal through the tunnel, end to end (tests/interop/cloud_bed.py).

The portal issues 45-second certificates (backdated by as much, for clock skew), so renewal
is due about 15 s after enrollment: the agent renews over mutual TLS through the tunnel with
a new key, reconnects the tunnel with the new certificate, and config sync goes on with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_users, write_site

from interop.cloud_bed import CloudBed, cloud_bed, enroll, site_document, wait_until
from interop.test_cloud import audit_actors

USERS = make_users(2, first_extension=501)
LIFETIME = 45


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[CloudBed]:
    with cloud_bed(portal_args=("--cert-lifetime", f"{LIFETIME}s"),
                   sync_options={"housekeeping_interval": 1}) as b:
        yield b


def test_the_certificate_renews_through_the_tunnel_and_sync_goes_on(
        bed: CloudBed, tmp_path: Path) -> None:
    local = tmp_path / "local.json"
    write_site(local, site_document(USERS[:1], name="Local"))
    cloud = enroll(bed, site_document(USERS, name="Renewal Office"), local)
    first = cloud["identity"]["cert_expires"]
    assert first - time.time() <= LIFETIME + 5
    key_before = (bed.state_dir / "cloud" / "device-key.pem").read_bytes()

    def renewed() -> bool:
        ident = bed.cloud().get("identity") or {}
        return bool(ident.get("cert_expires") and ident["cert_expires"] > first + 10)

    wait_until(renewed, "the renewed certificate", LIFETIME)
    assert (bed.state_dir / "cloud" / "device-key.pem").read_bytes() != key_before
    assert [a for a, _ in audit_actors(bed, "cloud.certificate_renewed")] == ["agent"]
    # The tunnel comes back with the new certificate and the portal still takes the box.
    wait_until(lambda: bed.cloud()["vpn"]["state"] == "up", "the tunnel after renewal", 30)
    before = bed.site()["version"]
    bed.ok("POST", f"/api/devices/{bed.serial}/site/changes",
           {"changes": [{"path": "site.name", "value": "Renewed"}]}, user="customer-admin")
    bed.wait_applied(before + 1, timeout=20)
    assert (bed.status() or {})["site"]["name"] == "Renewed"
