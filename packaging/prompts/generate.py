#!/usr/bin/env python3
"""Generate the voice prompt set from agent/prompts/catalogue.py (``make prompts``).

    python packaging/prompts/generate.py [--out DIR] [--force] [--check] [--best-effort]

Speech: espeak-ng (voice and speed from ``catalogue.SYNTHESIS``) writes a 22.05 kHz WAV
to a pipe; sox resamples it to 8 kHz mono 16-bit, trims leading and trailing silence,
normalises the peak and pads a short lead-in and tail (so chained prompts such as
"You have" + "three" + "new messages" sound like one sentence). Our own G.711 encoder
(sipstack.media.g711) then makes µ-law, written as ``<id>.wav`` (WAVE_FORMAT_MULAW,
8 kHz mono). Tones (the beep) are made in Python.

Caching: ``manifest.json`` in the output directory records each prompt's content hash
(its text + the synthesis settings, ``catalogue.entry_hash``) and the whole set's hash.
Only prompts whose hash changed, or whose file is missing, are redone; when nothing
changed the run only reads the manifest. Files of ids no longer in the catalogue are
removed. ``--force`` redoes everything; ``--check`` exits 1 when the set is not up to
date, changing nothing.

``--best-effort``: when espeak-ng or sox is missing, warn and exit 0 instead of failing
(``make run``/``make test`` use it; ``make prompts`` does not).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.prompts.catalogue import (  # noqa: E402
    CATALOGUE,
    SYNTHESIS,
    TONES,
    Tone,
    all_ids,
    catalogue_hash,
    entry_hash,
)

DEFAULT_OUT = REPO / "packaging" / "prompts" / "en"
MANIFEST = "manifest.json"
SAMPLE_RATE = 8000
Manifest = dict[str, Any]


def _say(message: str, *, err: bool = False) -> None:
    (sys.stderr if err else sys.stdout).write(message + "\n")


class ToolMissing(RuntimeError):
    pass


def _tools() -> tuple[str, str]:
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    missing = [n for n, p in (("espeak-ng", espeak), ("sox", sox)) if p is None]
    if missing:
        raise ToolMissing(
            f"{' and '.join(missing)} not installed: they generate the voice prompts "
            "(sudo make deps, or apt install espeak-ng sox)"
        )
    assert espeak and sox
    return espeak, sox


def _tool_versions(espeak: str, sox: str) -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "?"
        found = re.search(r"\d+(?:\.\d+)+", out.stdout or out.stderr)
        return found.group(0) if found else "?"

    return {"espeak-ng": first_line([espeak, "--version"]), "sox": first_line([sox, "--version"])}


def speak(text: str, espeak: str, sox: str) -> bytes:
    """Text -> 8 kHz mono 16-bit LE PCM (trimmed, normalised, padded)."""
    s = SYNTHESIS
    wav = subprocess.run(
        [espeak, "-v", str(s["voice"]), "-s", str(s["speed_wpm"]), "-p", str(s["pitch"]),
         "-g", str(s["word_gap_10ms"]), "--stdout"],
        input=text.encode(), capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    rate = str(SAMPLE_RATE)
    pcm = subprocess.run(
        [sox, "-V1", "-t", "wav", "-",
         "-t", "raw", "-r", rate, "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-",
         "rate", "-h", rate,
         # trim silence at both ends (a 10 ms run above -60 dBFS starts the sound)
         "silence", "1", "0.01", "0.1%", "reverse", "silence", "1", "0.01", "0.1%", "reverse",
         "gain", "-n", str(s["peak_dbfs"]),
         "pad", str(s["lead_in_s"]), str(s["tail_s"])],
        input=wav, capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    if not pcm:
        raise RuntimeError(f"espeak-ng/sox produced no audio for {text!r}")
    return pcm


def tone(t: Tone, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A sine tone with 5 ms raised-cosine ramps (no clicks), 16-bit LE PCM."""
    n = round(sample_rate * t.duration_ms / 1000)
    ramp = max(1, round(sample_rate * 0.005))
    amp = 32767 * 10 ** (t.level_dbfs / 20)
    w = 2 * math.pi * t.frequency_hz / sample_rate
    out = []
    for i in range(n):
        g = 1.0
        if i < ramp:
            g = 0.5 - 0.5 * math.cos(math.pi * i / ramp)
        elif i >= n - ramp:
            g = 0.5 - 0.5 * math.cos(math.pi * (n - 1 - i) / ramp)
        out.append(round(amp * g * math.sin(w * i)))
    return struct.pack(f"<{n}h", *out)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _load_manifest(out: Path) -> Manifest:
    try:
        m = json.loads((out / MANIFEST).read_text())
        return m if isinstance(m, dict) else {}
    except (OSError, ValueError):
        return {}


def stale_ids(out: Path, manifest: Manifest) -> list[str]:
    """Prompts whose file is missing or whose recorded hash is not the current one."""
    recorded = manifest.get("prompts", {})
    return [
        pid for pid in all_ids()
        if not (out / f"{pid}.wav").is_file()
        or recorded.get(pid, {}).get("hash") != entry_hash(pid)
    ]  # fmt: skip


def generate(out: Path, *, force: bool = False, jobs: int | None = None,
             quiet: bool = False) -> Manifest:  # fmt: skip
    """Bring ``out`` up to date; returns the manifest written."""
    # Imported here: the up-to-date path does not need the encoder tables.
    from agent.prompts.wavfile import write_wav
    from sipstack.media.g711 import ulaw_encode

    out.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(out)
    todo = all_ids() if force else stale_ids(out, manifest)
    prompts: dict[str, dict[str, Any]] = {
        pid: entry for pid, entry in manifest.get("prompts", {}).items() if pid in set(all_ids())
    }
    espeak = sox = ""
    if any(pid in CATALOGUE for pid in todo):
        espeak, sox = _tools()

    def make(pid: str) -> tuple[str, dict[str, Any]]:
        pcm = tone(TONES[pid]) if pid in TONES else speak(CATALOGUE[pid], espeak, sox)
        ulaw = ulaw_encode(pcm)
        data = write_wav(ulaw)
        _write_atomic(out / f"{pid}.wav", data)
        return pid, {
            "hash": entry_hash(pid),
            "seconds": round(len(ulaw) / 8000, 3),
            "bytes": len(data),
        }

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs or min(16, 2 * (os.cpu_count() or 2))) as pool:
        for pid, entry in pool.map(make, todo):
            prompts[pid] = entry
    # Files of prompts that left the catalogue (only those we made: listed in the manifest).
    for pid in set(manifest.get("prompts", {})) - set(all_ids()):
        (out / f"{pid}.wav").unlink(missing_ok=True)
    new_manifest: Manifest = {
        "catalogue_hash": catalogue_hash(),
        "synthesis": SYNTHESIS,
        "tools": _tool_versions(espeak, sox) if espeak else manifest.get("tools", {}),
        "prompts": {pid: prompts[pid] for pid in sorted(prompts)},
    }
    _write_atomic(out / MANIFEST, (json.dumps(new_manifest, indent=1) + "\n").encode())
    if not quiet:
        total = sum(e["bytes"] for e in prompts.values())
        secs = sum(e["seconds"] for e in prompts.values())
        _say(
            f"prompts: made {len(todo)} of {len(all_ids())} in {time.monotonic() - t0:.1f} s; "
            f"set: {total / 1024:.0f} KiB, {secs:.0f} s of audio, in {out}"
        )
    return new_manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--force", action="store_true", help="regenerate every prompt")
    ap.add_argument("--check", action="store_true", help="exit 1 if not up to date; change nothing")
    ap.add_argument("--best-effort", action="store_true",
                    help="without espeak-ng/sox: warn and exit 0")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    manifest = _load_manifest(args.out)
    stale = all_ids() if args.force else stale_ids(args.out, manifest)
    if args.check:
        if stale:
            _say(f"prompts: {len(stale)} out of date in {args.out}: run `make prompts`", err=True)
            return 1
        return 0
    if not stale and manifest.get("catalogue_hash") == catalogue_hash():
        if not args.quiet:
            _say(f"prompts: up to date ({len(all_ids())} in {args.out})")
        return 0
    try:
        generate(args.out, force=args.force, jobs=args.jobs, quiet=args.quiet)
    except ToolMissing as exc:
        if args.best_effort:
            _say(f"prompts: warning: not generated: {exc}", err=True)
            return 0
        _say(f"prompts: error: {exc}", err=True)
        return 1
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        _say(f"prompts: error: {exc.cmd[0]} failed ({exc.returncode}): {err}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
