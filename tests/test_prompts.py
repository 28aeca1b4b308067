"""Voice prompts: the generated set, the library, numbers, admin uploads (issue 4)."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from agent.prompts import (
    PromptLibrary,
    PromptsMissing,
    UploadRejected,
    convert_upload,
    pcm_rms,
    say_digits,
    say_number,
)
from agent.prompts.catalogue import CATALOGUE, TONES, all_ids, catalogue_hash, entry_hash
from agent.prompts.wavfile import WAVE_FORMAT_MULAW, WAVE_FORMAT_PCM, read_wav, write_wav
from sipstack.media.g711 import alaw_decode, ulaw_decode, ulaw_to_alaw

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "packaging" / "prompts" / "generate.py"
PROMPTS = REPO / "packaging" / "prompts" / "en"
HAVE_TOOLS = bool(shutil.which("espeak-ng") and shutil.which("sox"))
IS_ROOT = os.geteuid() == 0


def _need_tools(what: str) -> None:
    if HAVE_TOOLS:
        return
    if IS_ROOT:  # `make deps` installs them as root: missing means a broken CI image
        pytest.fail(f"espeak-ng/sox missing as root ({what}); `make deps` installs them")
    pytest.skip(f"espeak-ng and sox not installed and not root ({what}); sudo make deps")


@pytest.fixture(scope="session")
def prompt_dir() -> Path:
    """The repo's generated set, generated (cached, ~1 s) when missing or stale."""
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, check=False
    )
    if check.returncode != 0:
        _need_tools("generating the prompt set")
        subprocess.run([sys.executable, str(GENERATOR), "-q"], check=True, timeout=120)
    return PROMPTS


@pytest.fixture(scope="session")
def library(prompt_dir: Path) -> PromptLibrary:
    return PromptLibrary(prompt_dir)


# --------------------------------------------------------------------------- catalogue


REQUIRED = {
    # numbers and words
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    "hundred", "thousand",
    "star", "pound", "message", "messages", "new", "saved", "at", "extension",
    # voicemail
    "vm_enter_pin", "vm_pin_incorrect", "vm_mailbox_locked", "vm_you_have", "vm_new_messages",
    "vm_saved_messages", "vm_no_messages", "vm_main_menu", "vm_message_menu",
    "vm_message_saved", "vm_message_deleted", "vm_record_after_tone", "vm_mailbox_full",
    "vm_enter_new_pin", "vm_enter_it_again", "vm_pins_do_not_match", "vm_pin_changed",
    "vm_greetings_menu", "vm_greeting_saved", "vm_person_at_extension", "vm_is_not_available",
    "vm_is_on_another_call", "vm_leave_message_after_tone",
    # attendant
    "att_welcome", "att_closed", "att_operator",
    # common
    "please_hold", "invalid_option", "goodbye", "please_try_again", "transferring", "beep",
    # extension assigner
    "assign_enter_pin", "assign_enter_extension", "assign_press_1_to_confirm",
    "assign_phone_is_now_extension", "assign_no_such_extension",
}  # fmt: skip


def test_catalogue_covers_the_issue() -> None:
    assert set(all_ids()) >= REQUIRED, sorted(REQUIRED - set(all_ids()))
    assert "beep" in TONES and "beep" not in CATALOGUE
    assert len(all_ids()) == len(set(all_ids()))


def test_texts_avoid_spelled_out_pin() -> None:
    # espeak-ng reads "PIN" as P-I-N; the catalogue writes "pin".
    assert not [pid for pid, text in CATALOGUE.items() if "PIN" in text]


def test_number_words_are_their_own_ids() -> None:
    for n in range(10000):
        assert set(say_number(n)) <= set(CATALOGUE), n
    assert set(say_digits("0123456789*#")) <= set(CATALOGUE)


def test_hashes_follow_the_content() -> None:
    settings = {"voice": "en-us"}
    assert entry_hash("goodbye", settings) != entry_hash("goodbye", {"voice": "en-gb"})
    assert entry_hash("goodbye", settings) != entry_hash("please_hold", settings)
    assert catalogue_hash() == catalogue_hash()


# --------------------------------------------------------------------------- generated set


def test_every_prompt_is_a_valid_nonsilent_8k_mono_ulaw_wav(prompt_dir: Path) -> None:
    for pid in all_ids():
        info = read_wav((prompt_dir / f"{pid}.wav").read_bytes())
        assert (info.format_tag, info.channels, info.sample_rate, info.bits_per_sample) == (
            WAVE_FORMAT_MULAW, 1, 8000, 8,
        ), pid  # fmt: skip
        assert 0.2 <= info.duration <= 15.0, (pid, info.duration)
        rms = pcm_rms(ulaw_decode(info.data))
        assert rms > 0.02, (pid, rms)  # about -34 dBFS; speech here is ~-20 dBFS


def test_generated_files_read_by_sox(prompt_dir: Path) -> None:
    if not shutil.which("sox"):
        _need_tools("sox reading the files")
    out = subprocess.run(
        ["soxi", str(prompt_dir / "vm_main_menu.wav")], capture_output=True, text=True, check=True
    ).stdout
    assert "8000" in out and "u-law" in out and "Channels       : 1" in out


def test_beep_is_1khz_200ms(library: PromptLibrary) -> None:
    pcm = library.pcm("beep")
    assert len(pcm) == 2 * 1600
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)

    # Goertzel power at 1 kHz vs 1.5 kHz
    def power(f: float) -> float:
        k = 2 * math.cos(2 * math.pi * f / 8000)
        s1 = s2 = 0.0
        for x in samples:
            s1, s2 = x + k * s1 - s2, s1
        return s1 * s1 + s2 * s2 - k * s1 * s2

    assert power(1000) > 1000 * power(1500)
    assert abs(samples[0]) < 200 and abs(samples[-1]) < 200  # ramped, no click


def test_manifest_and_cache(prompt_dir: Path, tmp_path: Path) -> None:
    manifest = json.loads((prompt_dir / "manifest.json").read_text())
    assert manifest["catalogue_hash"] == catalogue_hash()
    assert set(manifest["prompts"]) == set(all_ids())
    # Up to date: --check passes and a run changes nothing.
    assert subprocess.run([sys.executable, str(GENERATOR), "--check"], check=False).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in prompt_dir.iterdir()}
    out = subprocess.run(
        [sys.executable, str(GENERATOR)], capture_output=True, text=True, check=True
    ).stdout
    assert "up to date" in out
    assert {p.name: p.stat().st_mtime_ns for p in prompt_dir.iterdir()} == before


def test_generator_redoes_only_what_changed(tmp_path: Path) -> None:
    _need_tools("generating into a scratch directory")
    out = tmp_path / "en"
    run = [sys.executable, str(GENERATOR), "--out", str(out)]
    first = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert f"made {len(all_ids())} of {len(all_ids())}" in first
    # One file gone, one hash tampered with, one file of an id no longer in the catalogue.
    (out / "goodbye.wav").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["prompts"]["please_hold"]["hash"] = "old"
    manifest["prompts"]["retired_prompt"] = {"hash": "x", "seconds": 1, "bytes": 1}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "retired_prompt.wav").write_bytes(b"x")
    assert subprocess.run([*run, "--check"], capture_output=True, check=False).returncode == 1
    second = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert f"made 2 of {len(all_ids())}" in second
    assert not (out / "retired_prompt.wav").exists()
    assert subprocess.run([*run, "--check"], check=False).returncode == 0


def test_generator_without_tools(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no espeak-ng, no sox
    run = [sys.executable, str(GENERATOR), "--out", str(tmp_path / "en")]
    strict = subprocess.run(run, capture_output=True, text=True, env=env, check=False)
    assert strict.returncode == 1 and "espeak-ng and sox not installed" in strict.stderr
    lenient = subprocess.run(
        [*run, "--best-effort"], capture_output=True, text=True, env=env, check=False
    )
    assert lenient.returncode == 0 and "warning" in lenient.stderr


# --------------------------------------------------------------------------- library


def test_library_gives_codes_for_both_codecs(library: PromptLibrary) -> None:
    ulaw = library.get("goodbye")
    assert library.get("goodbye", "PCMU") is ulaw
    alaw = library.get("goodbye", "PCMA")
    assert alaw == ulaw_to_alaw(ulaw) and library.get("goodbye", "pcma") is alaw
    # The A-law version decodes to (nearly) the same audio.
    a, u = alaw_decode(alaw), ulaw_decode(ulaw)
    assert abs(pcm_rms(a) - pcm_rms(u)) < 0.01
    assert library.pcm("goodbye") == u
    assert library.duration("goodbye") == len(ulaw) / 8000
    assert library.sequence(["vm_you_have", *say_number(3)]) == (
        library.get("vm_you_have") + library.get("three")
    )
    with pytest.raises(KeyError, match="no voice prompt 'nope'"):
        library.get("nope")
    with pytest.raises(ValueError, match="unsupported codec"):
        library.get("goodbye", "G722")


def test_library_plays_through_a_media_session(library: PromptLibrary) -> None:
    from sipstack.media.session import MediaParams, MediaSession

    params = MediaParams(
        codec="PCMA", payload_type=8, dtmf_payload_type=101,
        remote_rtp=("127.0.0.1", 40000), remote_rtcp=("127.0.0.1", 40001),
        direction="sendrecv", ptime_ms=20,
    )  # fmt: skip
    session = MediaSession(params, 0.0, rng=None)
    session.play_encoded(library.get("beep", session.params.codec))
    assert abs(session.queued_seconds - 0.2) < 0.021


def test_missing_set_names_make_prompts(tmp_path: Path, prompt_dir: Path) -> None:
    with pytest.raises(PromptsMissing, match="make prompts"):
        PromptLibrary(tmp_path / "nowhere")
    partial = tmp_path / "en"
    shutil.copytree(prompt_dir, partial)
    (partial / "goodbye.wav").unlink()
    with pytest.raises(PromptsMissing, match=r"1 missing \(goodbye\).*make prompts"):
        PromptLibrary(partial)
    assert isinstance(PromptsMissing("x"), FileNotFoundError)


def test_stale_set_logs_a_warning(tmp_path: Path, prompt_dir: Path, caplog) -> None:
    copy = tmp_path / "en"
    shutil.copytree(prompt_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["catalogue_hash"] = "older"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        PromptLibrary(copy)
    assert "make prompts" in caplog.text


# --------------------------------------------------------------------------- numbers

NUMBERS = [
    (0, "zero"),
    (7, "seven"),
    (10, "ten"),
    (13, "thirteen"),
    (19, "nineteen"),
    (20, "twenty"),
    (21, "twenty one"),
    (42, "forty two"),
    (99, "ninety nine"),
    (100, "one hundred"),
    (101, "one hundred one"),
    (105, "one hundred five"),
    (110, "one hundred ten"),
    (115, "one hundred fifteen"),
    (250, "two hundred fifty"),
    (999, "nine hundred ninety nine"),
    (1000, "one thousand"),
    (1001, "one thousand one"),
    (1010, "one thousand ten"),
    (1100, "one thousand one hundred"),
    (2019, "two thousand nineteen"),
    (6000, "six thousand"),
    (9999, "nine thousand nine hundred ninety nine"),
]


@pytest.mark.parametrize(("n", "words"), NUMBERS)
def test_say_number(n: int, words: str) -> None:
    assert say_number(n) == words.split()


@pytest.mark.parametrize("bad", [-1, 10000, 123456])
def test_say_number_range(bad: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.9999"):
        say_number(bad)


@pytest.mark.parametrize("bad", [1.0, "12", True, None])
def test_say_number_type(bad: object) -> None:
    with pytest.raises(TypeError):
        say_number(bad)  # type: ignore[arg-type]


def test_say_digits() -> None:
    assert say_digits("101") == ["one", "zero", "one"]
    assert say_digits("") == []
    assert say_digits("*9#") == ["star", "nine", "pound"]
    assert say_digits("0123456789") == [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="'a'"):
        say_digits("10a")


# --------------------------------------------------------------------------- uploads


def _sox_make(tmp_path: Path, name: str, *args: str) -> bytes:
    """A test recording made by sox: a tone in some format, e.g. 44.1 kHz stereo float."""
    path = tmp_path / name
    subprocess.run(["sox", "-n", *args, str(path), "synth", "1.5", "sine", "440", "gain", "-6"],
                   check=True, capture_output=True)  # fmt: skip
    return path.read_bytes()


@pytest.mark.parametrize(
    "fmt",
    [
        ("-r", "44100", "-c", "2", "-b", "16", "-e", "signed-integer"),
        ("-r", "48000", "-c", "1", "-b", "32", "-e", "floating-point"),
        ("-r", "8000", "-c", "1", "-e", "u-law"),
        ("-r", "8000", "-c", "1", "-e", "a-law"),
        ("-r", "16000", "-c", "1", "-e", "ima-adpcm"),
        ("-r", "22050", "-c", "1", "-b", "8", "-e", "unsigned-integer"),
        ("-r", "8000", "-c", "1", "-e", "gsm-full-rate"),
    ],
    ids=["44k1-stereo-s16", "48k-float", "ulaw", "alaw", "ima-adpcm", "u8", "gsm"],
)
def test_upload_converted_to_8k_mono_ulaw(tmp_path: Path, fmt: tuple[str, ...]) -> None:
    _need_tools("converting uploads")
    data = _sox_make(tmp_path, "in.wav", *fmt)
    ulaw = convert_upload(data)
    assert abs(len(ulaw) / 8000 - 1.5) < 0.05
    assert pcm_rms(ulaw_decode(ulaw)) > 0.1


def test_custom_greeting_overrides_and_removes(
    tmp_path: Path, library: PromptLibrary, prompt_dir: Path
) -> None:
    _need_tools("converting uploads")
    lib = PromptLibrary(prompt_dir, custom_directory=tmp_path / "custom")
    generated = lib.get("att_welcome")
    assert lib.custom_ids() == []
    upload = _sox_make(tmp_path, "g.wav", "-r", "44100", "-c", "2")
    seconds = lib.install_custom("att_welcome", upload)
    assert abs(seconds - 1.5) < 0.05
    stored = read_wav((tmp_path / "custom" / "att_welcome.wav").read_bytes())
    assert (stored.format_tag, stored.channels, stored.sample_rate) == (WAVE_FORMAT_MULAW, 1, 8000)
    assert lib.get("att_welcome") == stored.data != generated
    assert lib.get("att_welcome", "PCMA") == ulaw_to_alaw(stored.data)
    # A new id (a holiday greeting) that the catalogue does not have.
    lib.install_custom("att_holiday", _sox_make(tmp_path, "h.wav", "-r", "8000"))
    assert "att_holiday" in lib and lib.custom_ids() == ["att_holiday", "att_welcome"]
    assert "att_holiday" not in library  # the library without a custom directory
    assert lib.remove_custom("att_welcome") is True
    assert lib.get("att_welcome") == generated
    assert lib.remove_custom("att_welcome") is False


JUNK = [
    (b"", "empty"),
    (b"hello, this is not audio at all", "not a WAV file"),
    (b"%PDF-1.7\n" + bytes(2000), "not a WAV file"),
    (b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk" + bytes(64), "not audio sox can read"),
]


@pytest.mark.parametrize(("data", "why"), JUNK, ids=["empty", "text", "pdf", "bad-riff"])
def test_upload_junk_rejected(data: bytes, why: str) -> None:
    if data.startswith(b"RIFF"):
        _need_tools("sox rejecting a broken WAV")
    with pytest.raises(UploadRejected, match=why):
        convert_upload(data)


def test_upload_truncated_and_silent_and_short(tmp_path: Path) -> None:
    _need_tools("converting uploads")
    good = _sox_make(tmp_path, "t.wav", "-r", "8000", "-b", "16")
    # A header that promises PCM data with no samples: sox reads zero samples.
    with pytest.raises(UploadRejected, match=r"too short|at least|not audio"):
        convert_upload(good[:44])
    silent = write_wav(bytes(16000), format_tag=WAVE_FORMAT_PCM)
    with pytest.raises(UploadRejected, match="silent"):
        convert_upload(silent)
    short = write_wav(struct.pack("<400h", *([8000, -8000] * 200)), format_tag=WAVE_FORMAT_PCM)
    with pytest.raises(UploadRejected, match=r"at least 0\.2 s"):
        convert_upload(short)
    with pytest.raises(UploadRejected, match="at most 1 s"):
        convert_upload(good, max_seconds=1)


def test_install_custom_rejects_bad_id_and_keeps_old(tmp_path: Path, prompt_dir: Path) -> None:
    lib = PromptLibrary(prompt_dir, custom_directory=tmp_path / "custom")
    for bad in ["../etc/passwd", "Welcome", "a b", ""]:
        with pytest.raises(UploadRejected, match="bad prompt id"):
            lib.install_custom(bad, b"RIFF")
    with pytest.raises(UploadRejected, match="not a WAV file"):
        lib.install_custom("att_welcome", b"junk")
    assert lib.custom_ids() == []
    assert lib.get("att_welcome") == PromptLibrary(prompt_dir).get("att_welcome")


def test_wavfile_round_trip() -> None:
    blob = write_wav(b"\x01\x02\x03", format_tag=WAVE_FORMAT_MULAW)
    info = read_wav(blob)
    assert (info.data, info.frames, info.format_tag) == (b"\x01\x02\x03", 3, WAVE_FORMAT_MULAW)
    assert len(blob) % 2 == 0  # odd data chunk padded
    pcm = write_wav(b"\x00\x10" * 8, format_tag=WAVE_FORMAT_PCM)
    assert read_wav(pcm).frames == 8
