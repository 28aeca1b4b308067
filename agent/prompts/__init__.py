"""Voice prompts for the voice applications: the library, numbers, admin greetings.

The prompt set is generated at build time (``make prompts``) from
:mod:`agent.prompts.catalogue` into ``packaging/prompts/en/<id>.wav``: 8 kHz mono G.711
µ-law WAV. :class:`PromptLibrary` loads it and hands out audio in the form
``MediaSession.play_encoded`` takes: G.711 codes in the session's codec (``"PCMU"`` or
``"PCMA"``, ``MediaParams.codec``), or 16-bit PCM for ``MediaSession.play``::

    prompts = PromptLibrary(default_directory(), custom_directory=state / "prompts")
    for pid in ["vm_you_have", *say_number(3), "vm_new_messages"]:
        leg.session.play_encoded(prompts.get(pid, leg.session.params.codec))

µ-law is what is stored; A-law is made from it at load with G.711's µ-law→A-law table
(cached), so each prompt exists once on disk and encoding never happens per call.

Admin-uploaded recordings (any WAV sox can read) override a prompt of the same id, or
add new ids (a custom attendant greeting): :meth:`PromptLibrary.install_custom` converts
them with sox to 8 kHz mono µ-law and rejects what is not audio. Conversion runs sox in a
subprocess and blocks: call it from a thread (``asyncio.to_thread``) in the daemon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

from sipstack.media.g711 import ulaw_decode, ulaw_encode, ulaw_to_alaw

from .catalogue import all_ids, catalogue_hash
from .wavfile import WAVE_FORMAT_MULAW, WavError, is_riff_wave, read_wav, write_wav

__all__ = [
    "PromptError",
    "PromptLibrary",
    "PromptsMissing",
    "UploadRejected",
    "convert_upload",
    "default_directory",
    "pcm_rms",
    "say_digits",
    "say_number",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
MANIFEST = "manifest.json"
_ID_RE = re.compile(r"[a-z0-9_]{1,64}")
_REPO_PROMPTS = Path(__file__).resolve().parents[2] / "packaging" / "prompts" / "en"
_INSTALLED_PROMPTS = Path("/usr/share/edgepbx/prompts/en")


class PromptError(Exception):
    """A prompt file or an upload that cannot be used."""


class PromptsMissing(PromptError, FileNotFoundError):
    """The generated prompt set is not there (or incomplete): run ``make prompts``."""


class UploadRejected(PromptError, ValueError):
    """An uploaded recording that is not usable audio; the message says why."""


# --------------------------------------------------------------------------- numbers

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_DIGIT_IDS = {**{str(i): w for i, w in enumerate(_ONES)}, "*": "star", "#": "pound"}


def say_number(n: int) -> list[str]:
    """Prompt ids that say the integer ``n`` (0..9999) in (US) English.

    42 -> ["forty", "two"]; 105 -> ["one", "hundred", "five"];
    2019 -> ["two", "thousand", "nineteen"]; 0 -> ["zero"]. No "and".
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"say_number needs an int, not {type(n).__name__}")
    if not 0 <= n <= 9999:
        raise ValueError(f"say_number covers 0..9999, not {n}")
    if n == 0:
        return ["zero"]
    out: list[str] = []
    thousands, rest = divmod(n, 1000)
    if thousands:
        out += [_ONES[thousands], "thousand"]
    hundreds, rest = divmod(rest, 100)
    if hundreds:
        out += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        out.append(_TENS[tens])
        if ones:
            out.append(_ONES[ones])
    elif rest >= 10:
        out.append(_TEENS[rest - 10])
    elif rest:
        out.append(_ONES[rest])
    return out


def say_digits(digits: str) -> list[str]:
    """Prompt ids that read a digit string one key at a time: "101" -> one zero one.

    ``*`` and ``#`` are "star" and "pound"; anything else is a ValueError.
    """
    try:
        return [_DIGIT_IDS[c] for c in digits]
    except KeyError as exc:
        raise ValueError(f"say_digits: {exc.args[0]!r} in {digits!r} is not a key") from None


# --------------------------------------------------------------------------- audio helpers


def pcm_rms(pcm: bytes) -> float:
    """RMS of 16-bit LE PCM relative to full scale (0.0 .. 1.0)."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":  # pragma: no cover
        samples.byteswap()
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768.0


def default_directory() -> Path:
    """Where the generated prompt set is: ``$EDGEPBX_PROMPTS``, else the source tree's
    ``packaging/prompts/en`` (``make prompts``), else the Debian package's
    ``/usr/share/edgepbx/prompts/en``."""
    env = os.environ.get("EDGEPBX_PROMPTS")
    if env:
        return Path(env)
    if _REPO_PROMPTS.is_dir():
        return _REPO_PROMPTS
    return _INSTALLED_PROMPTS


def _read_ulaw(path: Path) -> bytes:
    try:
        info = read_wav(path.read_bytes())
    except WavError as exc:
        raise PromptError(f"{path}: {exc}") from None
    if (info.format_tag, info.channels, info.sample_rate) != (WAVE_FORMAT_MULAW, 1, SAMPLE_RATE):
        raise PromptError(
            f"{path}: expected 8 kHz mono µ-law WAV, found format {info.format_tag}, "
            f"{info.channels} channel(s), {info.sample_rate} Hz"
        )
    return info.data


# --------------------------------------------------------------------------- uploads

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
SILENCE_RMS = 0.001  # about -60 dBFS


def convert_upload(
    data: bytes,
    *,
    min_seconds: float = 0.2,
    max_seconds: float = 300.0,
    timeout: float = 60.0,
) -> bytes:
    """An uploaded WAV recording (any encoding, rate and channels sox reads) -> 8 kHz mono
    µ-law codes. Raises :class:`UploadRejected` with the reason for anything unusable:
    not a WAV file, a WAV sox cannot decode, too short, too long, silent.
    """
    if not data:
        raise UploadRejected("the upload is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejected(f"the upload is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
    if not is_riff_wave(data):
        raise UploadRejected("not a WAV file (no RIFF/WAVE header); upload a .wav recording")
    sox = shutil.which("sox")
    if sox is None:
        raise PromptError("sox is not installed; it converts uploaded recordings (apt install sox)")
    with tempfile.TemporaryDirectory(prefix="edgepbx-upload-") as tmp:
        src = Path(tmp) / "upload.wav"
        src.write_bytes(data)
        cmd = [
            sox, "-V1", "-G", "-t", "wav", str(src),
            "-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
            "-e", "signed-integer", "-L", "-",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise UploadRejected(f"converting the recording took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        why = detail[-1].removeprefix("sox FAIL ").strip() if detail else f"exit {proc.returncode}"
        raise UploadRejected(f"not audio sox can read: {why}")
    pcm = proc.stdout
    seconds = len(pcm) / 2 / SAMPLE_RATE
    if seconds < min_seconds:
        raise UploadRejected(f"the recording is {seconds:.2f} s long; at least {min_seconds} s")
    if seconds > max_seconds:
        raise UploadRejected(f"the recording is {seconds:.0f} s long; at most {max_seconds:.0f} s")
    if pcm_rms(pcm) < SILENCE_RMS:
        raise UploadRejected("the recording is silent")
    return ulaw_encode(pcm)


# --------------------------------------------------------------------------- the library


class PromptLibrary:
    """The generated prompt set plus admin overrides, as G.711 ready to send.

    ``directory`` holds ``<id>.wav`` for every catalogue id (``make prompts``); a missing
    directory or file raises :class:`PromptsMissing` here, at start-up, not mid-call.
    ``custom_directory`` (optional, created on first upload) holds admin recordings that
    take precedence over the generated prompt of the same id.
    """

    def __init__(self, directory: str | Path, custom_directory: str | Path | None = None) -> None:
        self.directory = Path(directory)
        self.custom_directory = Path(custom_directory) if custom_directory else None
        self._ulaw: dict[str, bytes] = {}
        self._alaw: dict[str, bytes] = {}
        self._custom: dict[str, tuple[tuple[int, int], bytes]] = {}
        if not self.directory.is_dir():
            raise PromptsMissing(
                f"voice prompts not found: {self.directory} does not exist; "
                "run `make prompts` (needs espeak-ng and sox: `sudo make deps`)"
            )
        missing = [pid for pid in all_ids() if not (self.directory / f"{pid}.wav").is_file()]
        if missing:
            shown = ", ".join(missing[:5])
            if len(missing) > 5:
                shown += f" and {len(missing) - 5} more"
            raise PromptsMissing(
                f"voice prompts incomplete in {self.directory}: {len(missing)} missing ({shown}); "
                "run `make prompts`"
            )
        for pid in all_ids():
            self._ulaw[pid] = _read_ulaw(self.directory / f"{pid}.wav")
        self._warn_if_stale()

    def _warn_if_stale(self) -> None:
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return
        if manifest.get("catalogue_hash") != catalogue_hash():
            log.warning(
                "voice prompts in %s were made from another version of the catalogue; "
                "run `make prompts`",
                self.directory,
            )

    # ---- lookup -------------------------------------------------------------------

    @staticmethod
    def catalogue_ids() -> list[str]:
        return all_ids()

    def __contains__(self, prompt_id: object) -> bool:
        return isinstance(prompt_id, str) and (
            prompt_id in self._ulaw or self._custom_path(prompt_id) is not None
        )

    def get(self, prompt_id: str, codec: str = "PCMU") -> bytes:
        """G.711 codes of a prompt in ``codec`` ("PCMU" or "PCMA"), for ``play_encoded``.

        An admin recording of that id wins over the generated one. Unknown id: KeyError.
        """
        ulaw = self._custom_ulaw(prompt_id)
        custom = ulaw is not None
        if ulaw is None:
            try:
                ulaw = self._ulaw[prompt_id]
            except KeyError:
                raise KeyError(f"no voice prompt {prompt_id!r}") from None
        codec = codec.upper()
        if codec == "PCMU":
            return ulaw
        if codec == "PCMA":
            if custom:
                return ulaw_to_alaw(ulaw)
            alaw = self._alaw.get(prompt_id)
            if alaw is None:
                alaw = self._alaw[prompt_id] = ulaw_to_alaw(ulaw)
            return alaw
        raise ValueError(f"unsupported codec {codec!r}; prompts are G.711 (PCMU, PCMA)")

    def pcm(self, prompt_id: str) -> bytes:
        """16-bit LE 8 kHz PCM of a prompt, for ``MediaSession.play`` or mixing."""
        return ulaw_decode(self.get(prompt_id, "PCMU"))

    def sequence(self, prompt_ids: list[str], codec: str = "PCMU") -> bytes:
        """Several prompts back to back: ``sequence(["vm_you_have", *say_number(3)])``."""
        return b"".join(self.get(pid, codec) for pid in prompt_ids)

    def duration(self, prompt_id: str) -> float:
        return len(self.get(prompt_id)) / SAMPLE_RATE

    # ---- admin recordings ---------------------------------------------------------

    def _custom_path(self, prompt_id: str) -> Path | None:
        if self.custom_directory is None or not _ID_RE.fullmatch(prompt_id):
            return None
        path = self.custom_directory / f"{prompt_id}.wav"
        return path if path.is_file() else None

    def _custom_ulaw(self, prompt_id: str) -> bytes | None:
        path = self._custom_path(prompt_id)
        if path is None:
            self._custom.pop(prompt_id, None)
            return None
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        cached = self._custom.get(prompt_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        ulaw = _read_ulaw(path)
        self._custom[prompt_id] = (key, ulaw)
        return ulaw

    def custom_ids(self) -> list[str]:
        if self.custom_directory is None or not self.custom_directory.is_dir():
            return []
        return sorted(
            p.stem for p in self.custom_directory.glob("*.wav") if _ID_RE.fullmatch(p.stem)
        )

    def install_custom(self, prompt_id: str, data: bytes, **limits: float) -> float:
        """Convert an uploaded WAV and store it as the recording for ``prompt_id``.

        Returns its duration in seconds. Raises :class:`UploadRejected` (nothing is
        changed) for a bad id or unusable audio. Blocks on sox: run it in a thread.
        """
        if self.custom_directory is None:
            raise PromptError("this prompt library has no directory for custom recordings")
        if not _ID_RE.fullmatch(prompt_id):
            raise UploadRejected(f"bad prompt id {prompt_id!r}: use a-z, 0-9 and _ (at most 64)")
        ulaw = convert_upload(data, **limits)
        self.custom_directory.mkdir(parents=True, exist_ok=True)
        final = self.custom_directory / f"{prompt_id}.wav"
        fd, tmp = tempfile.mkstemp(
            dir=self.custom_directory, prefix=f".{prompt_id}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(write_wav(ulaw))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._custom.pop(prompt_id, None)
        return len(ulaw) / SAMPLE_RATE

    def remove_custom(self, prompt_id: str) -> bool:
        """Drop an admin recording (back to the generated prompt). True if there was one."""
        path = self._custom_path(prompt_id)
        self._custom.pop(prompt_id, None)
        if path is None:
            return False
        path.unlink()
        return True
