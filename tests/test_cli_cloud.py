"""``edgepbx cloud serial|claim`` and the cloud lines of ``edgepbx status``
(agent.cli_cloud). ``edgepbx cloud restore-backup`` is tested end to end in
test_cloud_backup.py."""

from __future__ import annotations

import datetime as dt
import io
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeProvider, control_server

from agent.cli import main, render_status
from agent.cli_cloud import cloud_status_rows
from agent.cloud.identity import DeviceIdentity
from agent.cloud.link import CLAIM_TOKEN_FILENAME


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def cloud(state_dir: Path, *args: str) -> list[str]:
    return ["--state-dir", str(state_dir), "cloud", *args]


# ---------------------------------------------------------------------- serial


def test_serial_is_made_once_then_repeated(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    code, out, err = run(cloud(tmp_path, "serial"), capsys)
    assert code == 0, err
    serial = out.strip()
    assert out == serial + "\n" and str(uuid.UUID(serial)) == serial
    key = (tmp_path / "cloud" / "device-key.pem").read_bytes()
    code, again, _ = run(cloud(tmp_path, "serial"), capsys)
    assert code == 0 and again == out
    assert (tmp_path / "cloud" / "device-key.pem").read_bytes() == key  # not regenerated
    assert DeviceIdentity.load_or_create(tmp_path).serial == serial  # what the agent uses


def test_serial_of_a_corrupt_identity_fails_clearly(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    DeviceIdentity.load_or_create(tmp_path)
    (tmp_path / "cloud" / "serial").write_text("not a serial!\n")
    code, out, err = run(cloud(tmp_path, "serial"), capsys)
    assert code == 1 and out == ""
    assert err.startswith("edgepbx: device identity file ")
    assert "is unusable" in err and "Nothing was changed" in err
    assert (tmp_path / "cloud" / "serial").read_text() == "not a serial!\n"


# ---------------------------------------------------------------------- claim


def token_file(state_dir: Path) -> Path:
    return state_dir / "cloud" / CLAIM_TOKEN_FILENAME


def test_claim_writes_the_token_privately(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"  # does not exist yet
    code, out, err = run(cloud(state, "claim", "  tok-ABC_123.xyz  "), capsys)
    assert code == 0, err
    assert "claim token stored" in out
    path = token_file(state)
    assert path.read_text() == "tok-ABC_123.xyz\n"  # stripped, one line
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # A new token replaces the old one (the agent retries a refused token once it changes).
    assert run(cloud(state, "claim", "tok-2"), capsys)[0] == 0
    assert path.read_text() == "tok-2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A token that starts with "-" goes after "--" (else it reads as an option).
    assert run(cloud(state, "claim", "--", "-tok3"), capsys)[0] == 0
    assert path.read_text() == "-tok3\n"
    assert [p.name for p in path.parent.iterdir()] == [CLAIM_TOKEN_FILENAME]  # no temp files


def test_claim_dash_reads_the_first_line_of_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("tok-from-stdin\nsecond line\n"))
    code, _, err = run(cloud(tmp_path, "claim", "-"), capsys)
    assert code == 0, err
    assert token_file(tmp_path).read_text() == "tok-from-stdin\n"


@pytest.mark.parametrize("token", ["", "   ", "tok\x07en", "tok\tx", "x" * 513])
def test_a_bad_token_is_refused_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str,
) -> None:
    code, out, err = run(cloud(tmp_path, "claim", token), capsys)
    assert code == 1 and out == ""
    assert err == "edgepbx: the claim token is empty or not a printable line\n"
    assert not token_file(tmp_path).exists()


def test_an_empty_stdin_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    token_file(tmp_path).parent.mkdir(parents=True)
    token_file(tmp_path).write_text("old\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(cloud(tmp_path, "claim", "-"), capsys)
    assert code == 1 and "empty" in err
    assert token_file(tmp_path).read_text() == "old\n"  # the old token is kept


def test_cloud_needs_a_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(cloud(tmp_path))
    assert info.value.code == 2
    assert "SUBCOMMAND" in capsys.readouterr().err


# ---------------------------------------------------------------------- status rows

EXPIRES = dt.datetime(2027, 1, 14, 8, 30, tzinfo=dt.UTC).timestamp()


def status(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "state": "running", "last_error": None, "portal": "https://portal.example.net",
        "identity": {"serial": "0b5e2c1e-serial", "enrolled": True, "cert_expires": EXPIRES,
                     "renew_at": EXPIRES - 30 * 86400, "renew_due": False, "expired": False},
        "vpn": {"state": "up", "since": "2027-01-10T08:00:00+00:00", "last_error": None,
                "next_attempt_in": None},
        "sync": {"state": "synced", "applied_version": 4, "last_error": None,
                 "last_failed": None},
        "outbox": {"queued": {}, "dropped": {}},
        "last_heartbeat_at": None,
    }
    base.update(over)
    return base


def rows(cloud_status: dict[str, Any]) -> dict[str, str]:
    out = cloud_status_rows(cloud_status)
    labels = [label for label, _ in out]
    assert len(labels) == len(set(labels)), out
    return dict(out)


def test_rows_of_an_enrolled_box_with_the_tunnel_up() -> None:
    assert cloud_status_rows(status()) == [
        ("cloud", "running"),
        ("serial", "0b5e2c1e-serial"),
        ("certificate expires", "2027-01-14 08:30 UTC"),
        ("tunnel", "up since 2027-01-10T08:00:00+00:00"),
        ("config sync", "synced, portal version 4"),
        ("upload queue", "empty"),
    ]


def test_rows_of_a_box_waiting_for_its_claim_token() -> None:
    r = rows(status(state="waiting for a claim token",
                    identity={"serial": "s1", "enrolled": False, "cert_expires": None,
                              "renew_due": False, "expired": False},
                    vpn={"state": "not started"}, sync=None))
    assert r == {"cloud": "waiting for a claim token", "serial": "s1",
                 "certificate": "not enrolled", "tunnel": "not started",
                 "upload queue": "empty"}


def test_expired_and_renewal_due_certificates() -> None:
    ident = dict(status()["identity"], expired=True, renew_due=True)
    r = rows(status(state="certificate expired", identity=ident,
                    last_error="the device certificate has expired; put a new claim token "
                               "with `edgepbx cloud claim`"))
    assert r["certificate expires"] == "2027-01-14 08:30 UTC (EXPIRED: needs a new claim token)"
    assert r["cloud error"].endswith("`edgepbx cloud claim`")
    due = rows(status(identity=dict(status()["identity"], renew_due=True)))
    assert due["certificate expires"] == "2027-01-14 08:30 UTC (renewal due)"
    assert "cloud error" not in due


def test_tunnel_error_with_retry() -> None:
    r = rows(status(vpn={"state": "backoff", "since": None,
                         "last_error": "IKE_SA_INIT: no response", "next_attempt_in": 7.5}))
    assert r["tunnel"] == "backoff; last error: IKE_SA_INIT: no response; retry in 7.5 s"


def test_sync_failure_and_a_refused_version() -> None:
    r = rows(status(sync={
        "state": "backoff", "applied_version": 4, "last_error": "portal unreachable",
        "last_failed": {"version": 5, "errors": ["users[0].extension: bad", "site.name: x",
                                                 "media: y", "fourth is cut"]}}))
    assert r["config sync"] == "backoff, portal version 4; last error: portal unreachable"
    assert r["config refused"] == "version 5: users[0].extension: bad; site.name: x; media: y"
    never = rows(status(sync={"state": "offline", "applied_version": None}))
    assert never["config sync"] == "offline, portal version -"  # not "None"
    assert "config refused" not in never


def test_outbox_queue_and_drops_are_shown() -> None:
    r = rows(status(outbox={
        "queued": {"usage": {"items": 2, "bytes": 300}, "cdr": {"items": 40, "bytes": 9000}},
        "dropped": {"voicemail_backup": {"items": 1, "bytes": 900000, "last_reason": "bound"},
                    "cdr": {"items": 12}}}))
    assert r["upload queue"] == "cdr 40, usage 2"
    assert r["upload dropped"] == "cdr 12, voicemail_backup 1"
    assert "upload dropped" not in rows(status())


def test_clock_warning_is_its_own_line() -> None:
    r = rows(status(clock_warning="the system clock is before the device certificate's "
                                  "start (check NTP)"))
    assert r["cloud clock"].endswith("(check NTP)")


def test_rows_tolerate_a_minimal_status() -> None:
    assert cloud_status_rows({}) == [("cloud", "?"), ("tunnel", "?"), ("upload queue", "empty")]


def test_edgepbx_status_shows_the_cloud_lines(state_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    agent_status = {"version": "0.1.0", "pid": 7, "site": {"name": "Acme", "version": 2},
                    "cloud": status(last_error="certificate renewal failed (retried): x")}
    labels = [label for label, _ in render_status(agent_status)]
    assert labels[labels.index("site") + 1:labels.index("site") + 4] == [
        "cloud", "cloud error", "serial"]
    with control_server(state_dir, FakeProvider(agent_status)):
        code, out, err = run(["--state-dir", str(state_dir), "status"], capsys)
    assert code == 0, err
    table = {line[:19].strip(): line[19:].strip() for line in out.splitlines()}
    assert table["cloud"] == "running"
    assert table["cloud error"] == "certificate renewal failed (retried): x"
    assert table["certificate expires"] == "2027-01-14 08:30 UTC"
    assert table["tunnel"].startswith("up since ")
