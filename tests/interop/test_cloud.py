"""The cloud link end to end (issue 6): enrollment, tunnel, config sync and uploads.

One bed for the module (tests/interop/cloud_bed.py): the tests are the steps of one story
and run in file order, each building on the state the one before left.
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_users, write_site
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from netns import run

from agent.prompts.wavfile import read_wav
from interop.cloud_bed import (
    ADMIN_PORT,
    SIP_PORT,
    CloudBed,
    cloud_bed,
    enroll,
    site_document,
    wait_until,
)
from interop.conftest import Sipp
from interop.test_assigner import prompts  # noqa: F401 - the fixture
from interop.test_sipp_calls import caller_injection

USERS = make_users(3, first_extension=301)
ALICE, BOB, CAROL = USERS
LOCAL_ONLY = make_users(1, first_extension=801)[0]
PHONE_MAC = "80:5e:c0:00:00:31"
PARTNER = "acme-partner"


@pytest.fixture(scope="module")
def bed() -> Iterator[CloudBed]:
    with cloud_bed() as b:
        yield b


@pytest.fixture(scope="module")
def local_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --site file: only used until the first pull (it has a user the portal lacks)."""
    path = tmp_path_factory.mktemp("cloud") / "local-site.json"
    write_site(path, site_document([LOCAL_ONLY], name="Local file"))
    return path


@pytest.fixture
def phones(bed: CloudBed, tmp_path: Path) -> Sipp:
    import shutil

    binary = shutil.which("sipp")
    assert binary, "sipp is missing: run `make deps` as root"
    return Sipp(binary, tmp_path)


def register(bed: CloudBed, sipp: Sipp, user: Any, port: int, *, expect_ok: bool = True) -> int:
    cmd, _, _ = sipp.command("register.xml", SIP_PORT, users=[user], local_port=port,
                             expires=600, timeout=10)
    return bed.sipp(cmd, cwd=sipp.workdir, timeout=10).returncode


def audit_actors(bed: CloudBed, action: str) -> list[tuple[str, dict[str, Any]]]:
    db = sqlite3.connect(f"file:{bed.state_dir / 'edgepbx.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT actor, detail FROM audit_log WHERE action = ? ORDER BY id",
                          (action,)).fetchall()
    finally:
        db.close()
    return [(actor, json.loads(detail)) for actor, detail in rows]


def device_call_ids(bed: CloudBed) -> list[str]:
    res = bed.edgepbx("cdr", "--format", "json")
    return [r["call_id"] for r in json.loads(res.stdout)]


def make_calls(bed: CloudBed, sipp: Sipp, count: int) -> None:
    """ALICE calls BOB count times; BOB is a SIPp UAS registered from port 5072."""
    port = 5072
    assert register(bed, sipp, BOB, port) == 0
    uas_cmd, _, _ = sipp.command("call_uas.xml", SIP_PORT, local_port=port, calls=count,
                                 timeout=60)
    uas = bed.sipp_background(uas_cmd, cwd=sipp.workdir)
    try:
        wait_until(lambda: bed.udp_bound_in_dev(port), "the callee to listen", 10)
        inf = caller_injection(sipp.workdir / "caller.csv", ALICE, BOB.extension, count=count)
        cmd, errors, _ = sipp.command("call_uac_auth.xml", SIP_PORT, calls=count, rate=5,
                                      timeout=60, extra=inf)
        res = bed.sipp(cmd, cwd=sipp.workdir, timeout=60)
        assert res.returncode == 0, (res.stdout[-3000:], errors.read_text()
                                     if errors.exists() else "")
    finally:
        uas.wait(timeout=30) if uas.poll() is None else None


# ---------------------------------------------------------------------------------- steps


def test_1_enrolls_and_brings_the_tunnel_up(bed: CloudBed, local_site: Path) -> None:
    doc = site_document(USERS, name="Portal Office", phones=[{
        "mac": PHONE_MAC, "model": "T46U",
        "lines": [{"extension": ALICE.extension, "label": "Desk"}]}])
    cloud = enroll(bed, doc, local_site, partner=PARTNER)
    ident = cloud["identity"]
    assert ident["enrolled"] and ident["serial"] == bed.serial and not ident["expired"]
    assert ident["cert_expires"] > time.time() + 80 * 86400
    assert cloud["vpn"]["sa"]["child_state"] == "INSTALLED"
    assert not (bed.state_dir / "cloud" / "claim-token").exists(), "a used token was kept"
    # Key mode, and the certificate's CN is the serial.
    assert (bed.state_dir / "cloud" / "device-key.pem").stat().st_mode & 0o077 == 0
    text = bed.edgepbx("status").stdout
    assert "certificate expires" in text and "tunnel" in text and "up" in text
    beat = wait_until(lambda: bed.ok("GET", f"/api/devices/{bed.serial}/heartbeat")
                      ["heartbeat"], "a heartbeat through the tunnel", 20)
    assert beat["body"]["tunnel"] == "up"


def test_2_pulls_the_config_and_phones_register_by_it(bed: CloudBed, phones: Sipp) -> None:
    version = bed.site()["version"]
    bed.wait_applied(version)
    status = bed.status() or {}
    assert status["site"]["name"] == "Portal Office"
    assert register(bed, phones, ALICE, 5071) == 0
    # The local file's user is gone: the portal's config is the one in force.
    assert register(bed, phones, LOCAL_ONLY, 5079) != 0
    [report] = [r for r in bed.reports() if r["version"] == version]
    assert report["state"] == "applied" and report["errors"] == []
    wait_until(lambda: bed.ok("GET", f"/api/devices/{bed.serial}/heartbeat")["heartbeat"]
               ["body"]["site_version"] == version, "the heartbeat to carry the version", 10)
    # Applied versions are audited with their author.
    actors = [actor for actor, _ in audit_actors(bed, "site.applied")]
    assert f"partner:{PARTNER}" in actors


def test_3_opt_ins_off_nothing_of_that_kind_leaves(bed: CloudBed, phones: Sipp) -> None:
    make_calls(bed, phones, 2)
    assert len(device_call_ids(bed)) >= 2
    time.sleep(3)  # a heartbeat and an upload round have passed
    assert bed.ok("GET", f"/api/devices/{bed.serial}/cdrs")["count"] == 0
    assert bed.ok("GET", f"/api/devices/{bed.serial}/voicemail-backups")["count"] == 0
    outbox = bed.cloud()["outbox"]
    assert not outbox["queued"].get("cdr", {}).get("items"), outbox
    # Daily aggregates go whatever the opt-ins: counts and averages, no numbers or names.
    usage = wait_until(lambda: bed.ok("GET", f"/api/devices/{bed.serial}/usage")["usage"],
                       "yesterday's usage aggregate", 20, interval=0.5)
    for report in usage:
        assert set(report["body"]) == {"day", "calls", "answered", "abandoned",
                                       "avg_time_to_answer", "avg_hold", "registered_phones"}


def test_4_a_partner_edit_is_applied_within_seconds_and_the_phone_resyncs(
        bed: CloudBed, phones: Sipp) -> None:
    port = 5073
    assert register(bed, phones, ALICE, port) == 0
    cmd, _, _ = phones.command("resync_phone.xml", SIP_PORT, local_port=port, calls=1,
                               timeout=20)
    phone = bed.sipp_background(cmd, cwd=phones.workdir)
    wait_until(lambda: bed.udp_bound_in_dev(port), "the phone to listen", 10)

    before = bed.site()["version"]
    t0 = time.monotonic()
    bed.ok("POST", f"/api/devices/{bed.serial}/site/changes",
           {"changes": [{"path": f"phones[{PHONE_MAC}].lines[{ALICE.extension}].label",
                         "value": "Reception"},
                        {"path": "site.name", "value": "Portal Office 2"}]},
           role="partner", user=PARTNER)
    bed.wait_applied(before + 1, timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"the edit took {elapsed:.1f} s to apply"
    assert (bed.status() or {})["site"]["name"] == "Portal Office 2"
    assert phone.wait(timeout=20) == 0, "the phone got no check-sync NOTIFY"


def test_5_partner_edits_are_refused_on_the_device_with_access_off(bed: CloudBed) -> None:
    bed.ok("PUT", f"/api/devices/{bed.serial}/partner-access", {"enabled": False},
           user="customer-admin")
    admin_version = bed.site()["version"]
    bed.wait_applied(admin_version)
    # The portal itself refuses the partner now...
    status, _ = bed.admin("POST", f"/api/devices/{bed.serial}/site/changes",
                          {"changes": [{"path": "site.name", "value": "Sneaky"}]},
                          role="partner", user=PARTNER)
    assert status == 403
    # ...and a portal that failed to (force=1 simulates it) is refused by the device.
    bed.ok("POST", f"/api/devices/{bed.serial}/site/changes?force=1",
           {"changes": [{"path": "site.name", "value": "Sneaky"}]},
           role="partner", user=PARTNER)
    forced = bed.site()["version"]
    report = wait_until(lambda: [r for r in bed.reports() if r["version"] == forced],
                        "the refusal report", 15)[0]
    assert report["state"] == "failed"
    assert any("partner access is disabled" in e for e in report["errors"]), report
    assert bed.applied_version() == admin_version
    assert (bed.status() or {})["site"]["name"] == "Portal Office 2"


def test_6_an_invalid_config_is_rejected_and_the_old_one_keeps_serving(
        bed: CloudBed, phones: Sipp) -> None:
    applied = bed.applied_version()
    bed.ok("PUT", "/api/devices/" + bed.serial + "/site",
           {"document": {**bed.site()["document"], "users": [
               {**ALICE.as_site_entry(), "extension": "0301"}]}}, user="customer-admin")
    bad = bed.site()["version"]
    report = wait_until(lambda: [r for r in bed.reports() if r["version"] == bad],
                        "the failure report", 15)[0]
    assert report["state"] == "failed"
    assert any("users[0].extension" in e for e in report["errors"]), report
    assert bed.applied_version() == applied
    assert register(bed, phones, BOB, 5074) == 0  # still serving the old config
    sync = bed.cloud()["sync"]
    assert sync["last_failed"]["version"] == bad
    # The admin repairs it; the repaired version applies.
    bed.ok("PUT", f"/api/devices/{bed.serial}/site",
           {"document": {**bed.site()["document"], "users": [
               u.as_site_entry() for u in USERS]}}, user="customer-admin")
    bed.wait_applied(bed.site()["version"])


def test_7_portal_killed_during_calls_every_record_arrives_once(
        bed: CloudBed, phones: Sipp) -> None:
    doc = bed.site()["document"]
    doc.setdefault("privacy", {})["cdr_upload"] = True
    bed.ok("PUT", f"/api/devices/{bed.serial}/site", {"document": doc}, user="customer-admin")
    bed.wait_applied(bed.site()["version"])
    before = set(device_call_ids(bed))

    bed.kill_portal()
    make_calls(bed, phones, 6)
    time.sleep(2)  # the uploader tries, fails and backs off
    bed.start_portal()
    new_ids = set(device_call_ids(bed)) - before
    assert len(new_ids) == 6

    def arrived() -> Any:
        data = bed.ok("GET", f"/api/devices/{bed.serial}/cdrs")
        return data if data["count"] >= len(new_ids) else None

    data = wait_until(arrived, "the call records at the portal", 60, interval=0.5)
    assert sorted(data["call_ids"]) == sorted(new_ids)
    assert len(data["call_ids"]) == len(set(data["call_ids"]))
    assert not bed.cloud()["outbox"]["queued"].get("cdr", {}).get("items")


def test_8_a_voicemail_backup_reaches_the_portal_sealed_to_the_admin(
        bed: CloudBed, phones: Sipp, prompts: Any, tmp_path: Path) -> None:  # noqa: F811
    key = X25519PrivateKey.generate()
    (tmp_path / "admin.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    doc = bed.site()["document"]
    doc["privacy"].update(voicemail_backup=True, voicemail_backup_public_key=base64.b64encode(
        key.public_key().public_bytes_raw()).decode())
    bed.ok("PUT", f"/api/devices/{bed.serial}/site", {"document": doc}, user="customer-admin")
    bed.wait_applied(bed.site()["version"])

    inf = caller_injection(phones.workdir / "vm.csv", ALICE, BOB.extension)
    cmd, _, _ = phones.command("vm_leave_uac.xml", SIP_PORT, calls=1, timeout=40,
                               extra=[*inf, "-mp", "6100"])
    res = bed.sipp(cmd, cwd=phones.workdir, timeout=40)
    assert res.returncode == 0, res.stdout[-3000:]
    path = f"/api/devices/{bed.serial}/voicemail-backups"
    backups = wait_until(lambda: bed.ok("GET", path)["backups"], "the backup at the portal",
                         30, interval=0.5)
    [backup] = backups
    assert backup["mailbox"] == BOB.extension
    assert backup["encryption"] == "x25519-aesgcm-v1"
    # Partners never see backups.
    assert bed.admin("GET", path, role="partner")[0] == 403
    blob = tmp_path / "backup.bin"
    run("ip", "netns", "exec", bed.vpn.portal_ns, "curl", "-sS", "--noproxy", "*",
              "-H", "X-Portal-Role: admin", "-o", str(blob),
              f"http://127.0.0.1:{ADMIN_PORT}{path}/{backup['backup_id']}")
    assert blob.stat().st_size == backup["size"]
    out = bed.edgepbx("cloud", "restore-backup", "--key", str(tmp_path / "admin.key"),
                      "--backup-id", backup["backup_id"], "--mailbox", BOB.extension,
                      str(blob), "-o", str(tmp_path / "msg.wav")).stdout
    meta = json.loads(out)
    assert meta["caller"] == ALICE.extension and meta["mailbox"] == BOB.extension
    info = read_wav((tmp_path / "msg.wav").read_bytes())
    assert info.sample_rate == 8000 and info.duration > 3
    # Bound to its mailbox: the same blob under another mailbox does not decrypt.
    res2 = bed.edgepbx("cloud", "restore-backup", "--key", str(tmp_path / "admin.key"),
                       "--backup-id", backup["backup_id"], "--mailbox", ALICE.extension,
                       str(blob), check=False)
    assert res2.returncode == 1 and "cannot decrypt" in res2.stderr


def test_8b_a_setting_changed_on_the_phone_reaches_the_portal(bed: CloudBed,
                                                             phones: Sipp) -> None:
    before = bed.site()["version"]
    inf = caller_injection(phones.workdir / "fwd.csv", BOB, f"*72{CAROL.extension}")
    cmd, _, _ = phones.command("call_uac_expect.xml", SIP_PORT, calls=1, timeout=20,
                               extra=[*inf, "-key", "expected", "480"])
    res = bed.sipp(cmd, cwd=phones.workdir, timeout=20)
    assert res.returncode == 0, res.stdout[-3000:]

    def pushed() -> Any:
        site = bed.site()
        return site if site["version"] > before else None

    site = wait_until(pushed, "the phone's change at the portal", 20, interval=0.3)
    assert site["author"] == {"role": "user", "id": BOB.id}
    [bob] = [u for u in site["document"]["users"] if u["id"] == BOB.id]
    assert bob["forward"]["all"] == CAROL.extension
    bed.wait_applied(site["version"])  # the box takes its own change back, as the portal's
    assert not (bed.cloud()["sync"] or {}).get("pending_changes")


def test_9_charon_killed_the_tunnel_comes_back_and_sync_resumes(bed: CloudBed) -> None:
    bed.vpn.dev.stop(sig=signal.SIGKILL)
    wait_until(lambda: bed.cloud()["vpn"]["state"] != "up", "the tunnel to be seen down", 20)
    bed.vpn.dev.start()  # what systemd does for strongswan.service
    wait_until(lambda: bed.cloud()["vpn"]["state"] == "up", "the tunnel back up", 60)
    before = bed.site()["version"]
    bed.ok("POST", f"/api/devices/{bed.serial}/site/changes",
           {"changes": [{"path": "site.name", "value": "After charon"}]},
           user="customer-admin")
    bed.wait_applied(before + 1, timeout=30)


def test_10_a_restart_offline_starts_on_the_last_good_config(
        bed: CloudBed, phones: Sipp, local_site: Path) -> None:
    version = bed.applied_version()
    bed.stop_agent()
    bed.kill_portal()
    bed.start_agent(local_site)
    status = wait_until(bed.status, "the agent", 20)
    assert status["site"]["name"] == "After charon"
    assert register(bed, phones, CAROL, 5075) == 0
    assert bed.cloud()["sync"]["applied_version"] == version
    bed.start_portal()

