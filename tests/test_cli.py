from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeProvider, control_server

from agent.cli import main, phone_row, render_status
from agent.site import site_json_schema

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "agent" / "demo" / "site.yaml"

STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "pid": 4242,
    "started_at": 1.0,
    "uptime_s": 3725.4,
    "state_dir": "/var/lib/edgepbx",
    "site": {"name": "Demo Office", "realm": "edgepbx.local", "version": 3,
             "fingerprint": "0123456789abcdef" * 4},
    "listeners": [{"transport": "udp", "address": "127.0.0.1:5060"},
                  {"transport": "tcp", "host": "::1", "port": 5060}, "tls:0.0.0.0:5061"],
    "users": 4,
    "bindings": 2,
    "requests": {"REGISTER": 10},
}

def phones() -> list[dict[str, Any]]:
    return [
        {"user": "alice", "contact": "sip:alice@192.0.2.10:5062;ob",
         "source": "192.0.2.10:5062", "transport": "udp", "user_agent": "Yealink SIP-T46S",
         "expires_in": 3540},
        {"aor": "bob", "contact": "sip:bob@[2001:db8::5]:5060", "source_host": "2001:db8::5",
         "source_port": 5060, "source_transport": "TCP", "user_agent": None,
         "expires_at": time.time() + 59.5},
    ]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_status_table(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with control_server(state_dir, FakeProvider(STATUS, phones())):
        code, out, err = run(["--state-dir", str(state_dir), "status"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["agent", "edgepbx-agent", "0.1.0", "(pid", "4242)"]
    table = {line[:18].strip(): line[18:].strip() for line in lines}
    assert table["uptime"] == "1h 02m 05s"
    assert table["site"] == "Demo Office, version 3, fingerprint 0123456789ab"
    assert table["listeners"] == "udp:127.0.0.1:5060  tcp:[::1]:5060  tls:0.0.0.0:5061"
    assert table["users"] == "4"
    assert table["bindings"] == "2"
    assert table["requests.REGISTER"] == "10"


def test_status_json(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with control_server(state_dir, FakeProvider(STATUS, phones())):
        code, out, _ = run(["--state-dir", str(state_dir), "status", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == STATUS


def test_phones_table_and_json(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with control_server(state_dir, FakeProvider(STATUS, phones())):
        code, out, _ = run(["--state-dir", str(state_dir), "phones"], capsys)
        assert code == 0
        header, first, second = out.splitlines()
        assert header.split() == ["USER", "CONTACT", "SOURCE", "TRANSPORT", "USER", "AGENT",
                                  "EXPIRES", "IN"]
        assert first.split() == ["alice", "sip:alice@192.0.2.10:5062;ob", "192.0.2.10:5062",
                                 "udp", "Yealink", "SIP-T46S", "59m", "00s"]
        assert second.split()[:5] == ["bob", "sip:bob@[2001:db8::5]:5060", "[2001:db8::5]:5060",
                                      "tcp", "-"]
        assert second.split()[5] in ("59s", "58s")
        code, out, _ = run(["--state-dir", str(state_dir), "phones", "--json"], capsys)
        assert code == 0
        assert json.loads(out)[0]["user"] == "alice"


def test_no_phones(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with control_server(state_dir, FakeProvider(STATUS, [])):
        assert run(["--state-dir", str(state_dir), "phones"], capsys)[1] == "no phones registered\n"


@pytest.mark.parametrize("command", ["status", "phones"])
def test_no_agent(state_dir: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, err = run(["--state-dir", str(state_dir), command], capsys)
    assert code == 2
    assert out == ""
    assert err == f"edgepbx: no agent running on {state_dir} (control socket missing)\n"


def test_state_dir_from_environment(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEPBX_STATE_DIR", str(state_dir))
    with control_server(state_dir, FakeProvider(STATUS, [])):
        assert run(["status", "--json"], capsys)[0] == 0


def test_site_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["site", "validate", str(DEMO)], capsys)
    assert code == 0
    assert out.startswith(f'{DEMO}: OK (site "Demo Office", 4 users, fingerprint ')


def test_site_validate_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "site: {name: X, timezone: Nowhere/City, realm: pbx.test}\n"
        "users:\n"
        "  - {id: a, name: A, extension: '101', sip: {username: a, password: pw}}\n"
        "  - {id: b, name: B, extension: '0101', sip: {username: a, password: pw}}\n"
    )
    code, out, err = run(["site", "validate", str(bad)], capsys)
    assert code == 1
    assert out.splitlines() == [
        'site.timezone: "Nowhere/City" is not a known IANA time zone',
        'users[1].extension: "0101" must not start with 0',
        'users[1].sip.username: "a" is already the SIP username of users[0]',
    ]
    assert err == f"edgepbx: {bad}: 3 errors\n"


def test_site_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["site", "schema"], capsys)
    assert code == 0
    assert json.loads(out) == site_json_schema()


def test_softphone_settings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["softphone-settings", "--site", str(DEMO),
                        "--listen", "udp:127.0.0.1:5080", "--listen", "tcp:[::1]:5080"], capsys)
    assert code == 0
    assert "server     127.0.0.1  port 5080  transport UDP" in out
    assert "server     ::1  port 5080  transport TCP" in out
    assert any(line.split() == ["Alice", "Adler", "101", "alice", "demo-alice-101"]
               for line in out.splitlines())
    code, out2, _ = run(["demo-info", "--site", str(DEMO)], capsys)
    assert code == 0 and "port 5060" in out2
    code, _, err = run(["demo-info", "--site", str(DEMO), "--listen", "foo"], capsys)
    assert code == 2 and "expected TRANSPORT:HOST:PORT" in err


def test_render_helpers_tolerate_missing_keys() -> None:
    assert render_status({})[0] == ("agent", "edgepbx-agent ?")
    assert phone_row({}, 0.0) == ("?", "?", "?:?", "?", "-", "-")


def test_console_script_no_agent(state_dir: Path) -> None:
    script = Path(sys.executable).parent / "edgepbx"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]
    res = subprocess.run([*cmd, "--state-dir", str(state_dir), "status"],
                         capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
    assert res.returncode == 2
    expected = f"edgepbx: no agent running on {state_dir} (control socket missing)"
    assert res.stderr.strip() == expected


def test_vm_set_pin_and_unlock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from agent.cli import main
    from agent.store import Store
    from agent.voicemail import VoicemailStore

    Store.open(tmp_path).close()
    monkeypatch.setattr("sys.stdin", io.StringIO("2580\n"))
    assert main(["--state-dir", str(tmp_path), "vm", "set-pin", "101"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("1111\n"))  # weak: refused
    assert main(["--state-dir", str(tmp_path), "vm", "set-pin", "101"]) == 1
    assert "101" in capsys.readouterr().out
    with Store.open(tmp_path) as store:
        vm = VoicemailStore(tmp_path, store)
        assert vm.check_pin("101", "2580").ok
    assert main(["--state-dir", str(tmp_path), "vm", "unlock", "101"]) == 0


def test_vm_import_puts_a_restored_message_back(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from agent.prompts.wavfile import write_wav
    from agent.store import Store
    from agent.voicemail import VoicemailStore

    Store.open(tmp_path).close()
    audio = bytes(range(256)) * 32  # about one second of µ-law codes
    wav = tmp_path / "restored.wav"
    wav.write_bytes(write_wav(audio, sample_rate=8000))
    assert main(["--state-dir", str(tmp_path), "vm", "import", "101", str(wav),
                 "--caller", "+4930123", "--caller-name", "Ann"]) == 0
    assert "imported as message" in capsys.readouterr().out
    with Store.open(tmp_path) as store:
        vm = VoicemailStore(tmp_path, store)
        [row] = vm.list_messages("101")
        assert (row.folder, row.caller, row.caller_name) == ("new", "+4930123", "Ann")
        assert vm.read_audio("101", row.id) == audio


@pytest.mark.parametrize(("content", "expected"), [
    (b"not a wav", "not a RIFF/WAVE file"),
    (None, "needs 8 kHz mono"),
])
def test_vm_import_refuses_what_it_cannot_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None,
        expected: str) -> None:
    import wave

    from agent.store import Store

    Store.open(tmp_path).close()
    path = tmp_path / "in.wav"
    if content is None:  # a 16 kHz PCM file: needs converting first
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(b"\0\0" * 1600)
    else:
        path.write_bytes(content)
    assert main(["--state-dir", str(tmp_path), "vm", "import", "101", str(path)]) == 1
    assert expected in capsys.readouterr().err
