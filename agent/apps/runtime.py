"""Voice applications: calls the agent answers itself, with media, prompts and digits.

Call control routes a call to an application by name (``CallControl.applications``);
the runtime answers it with an RTP leg from the media engine and runs the
application as a coroutine over an :class:`AppCall`:

    async def app(call: AppCall) -> None:
        digits = await call.ask("assigner-pin", max_digits=12)
        await call.play("goodbye")

The coroutine is the application's whole dialogue; when it returns the runtime hangs
up. When the caller hangs up first, the coroutine is cancelled at its next await.
Digits come from RFC 4733 events, SIP INFO or in-band tones, as one stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import operator
from array import array
from collections.abc import Awaitable, Callable
from typing import Protocol

from agent.calls.model import Call
from agent.media.engine import MediaLeg
from sipstack.errors import SipParseError
from sipstack.media.g711 import ulaw_encode, ulaw_to_alaw
from sipstack.media.session import DtmfReceived, PlayoutDone

log = logging.getLogger(__name__)

RECORD_POLL = 0.25  # seconds between draining received audio while recording
SILENCE_RMS = 200.0  # 16-bit RMS below this counts as silence (about -44 dBFS)
FIRST_DIGIT_TIMEOUT = 8.0  # seconds to start entering digits after a prompt
INTER_DIGIT_TIMEOUT = 4.0
MAX_CALL_SECONDS = 600.0  # no application dialogue lasts longer
HANGUP_GRACE = 10.0  # seconds an application may go on after the caller hung up


class PromptSource(Protocol):
    def get(self, prompt_id: str, codec: str = "PCMU") -> bytes: ...


class AppHost(Protocol):
    """What the runtime needs of the SIP side (implemented by SipService)."""

    def app_hang_up(self, call: Call) -> None: ...


class AppCall:
    """One answered application call: play prompts, read digits, hang up."""

    def __init__(self, host: AppHost, call: Call, leg: MediaLeg,
                 prompts: PromptSource | None) -> None:
        self.host = host
        self.call = call
        self.leg = leg
        self.prompts = prompts
        self.source_ip = call.a.peer.host
        invite = call.a.invite
        self.user_agent = (invite.headers.get("user-agent") or "") if invite else ""
        self.contact = ""
        if invite is not None:
            with contextlib.suppress(SipParseError, IndexError):
                self.contact = invite.contacts[0].raw_uri
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._played = asyncio.Event()
        self.ended = asyncio.Event()

    # -- events from the media leg --------------------------------------------------
    def on_media_event(self, leg: MediaLeg, event: object) -> None:
        if isinstance(event, DtmfReceived):
            log.debug("digit", extra={"digit": event.digit, "source": event.source})
            self._digits.put_nowait(event.digit)
        elif isinstance(event, PlayoutDone):
            self._played.set()

    def info_dtmf(self, body: bytes) -> None:
        session = self.leg.session
        if session is not None:
            session.receive_dtmf_info(body)

    # -- what applications call -----------------------------------------------------
    async def play(self, *prompt_ids: str, interruptible: bool = True) -> str | None:
        """Play the prompts in order; with ``interruptible``, a key press stops them
        and is returned (the caller need not wait for a menu to finish)."""
        session = self.leg.session
        if session is None or self.prompts is None:
            return None
        for prompt_id in prompt_ids:
            key = await self._play_codes(self.prompts.get(prompt_id, session.params.codec),
                                         interruptible)
            if key is not None:
                return key
        return None

    async def play_audio(self, ulaw: bytes, *, interruptible: bool = True) -> str | None:
        """Play recorded audio (8 kHz mu-law, as voicemail stores it): see play()."""
        session = self.leg.session
        if session is None or not ulaw:
            return None
        codes = ulaw if session.params.codec == "PCMU" else ulaw_to_alaw(ulaw)
        return await self._play_codes(codes, interruptible)

    async def _play_codes(self, codes: bytes, interruptible: bool) -> str | None:
        session = self.leg.session
        assert session is not None
        if self.ended.is_set():
            return None  # the caller hung up: nobody to play to
        self._played.clear()
        session.play_encoded(codes)
        waiter = asyncio.ensure_future(self._played.wait())
        digit_task = asyncio.ensure_future(self._digits.get()) if interruptible else None
        pending = {waiter} | ({digit_task} if digit_task else set())
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in pending - done:
            task.cancel()
        if digit_task is not None and digit_task in done:
            session.clear()
            return digit_task.result()
        return None

    async def record(self, *, max_seconds: float, silence_seconds: float = 5.0,
                     stop_digits: str = "#") -> tuple[bytes, str | None]:
        """Record what the caller says: (8 kHz mu-law, the key that ended it or None).

        Ends on a key in ``stop_digits`` (the key is not recorded), ``silence_seconds``
        of silence (trimmed off), ``max_seconds``, or the caller hanging up (what was
        said so far is kept: a message left before hanging up is the usual case).
        """
        session = self.leg.session
        if session is None:
            return b"", None
        session.read_audio()  # what came in before the tone is not part of it
        chunks: list[bytes] = []
        total = 0
        quiet = 0
        key: str | None = None
        limit = int(max_seconds * 16000)
        silence_limit = int(silence_seconds * 16000)
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            while total < limit and not self.ended.is_set():
                digit = asyncio.ensure_future(self._digits.get())
                done, _ = await asyncio.wait({digit, ended}, timeout=RECORD_POLL,
                                             return_when=asyncio.FIRST_COMPLETED)
                if digit in done:
                    key = digit.result()
                else:
                    digit.cancel()
                    key = None
                chunk = session.read_audio()
                if chunk:
                    chunks.append(chunk)
                    total += len(chunk)
                    quiet = quiet + len(chunk) if _rms(chunk) < SILENCE_RMS else 0
                if key is not None and key in stop_digits:
                    break
                if quiet >= silence_limit:
                    break
        finally:
            ended.cancel()
        pcm = b"".join(chunks)[:limit]
        if quiet and len(pcm) > quiet:
            pcm = pcm[: len(pcm) - quiet]
        return ulaw_encode(pcm), key

    async def read_digits(self, *, max_digits: int, terminator: str = "#",
                          first_timeout: float = FIRST_DIGIT_TIMEOUT,
                          inter_digit: float = INTER_DIGIT_TIMEOUT,
                          first: str | None = None) -> str:
        """Digits until ``terminator``, ``max_digits`` or a timeout; "" when none came."""
        digits = "" if first is None else first
        if first == terminator or self.ended.is_set():
            return ""
        while len(digits) < max_digits:
            timeout = first_timeout if not digits else inter_digit
            try:
                digit = await asyncio.wait_for(self._digits.get(), timeout)
            except TimeoutError:
                break
            if digit == terminator:
                break
            digits += digit
        return digits

    async def ask(self, *prompt_ids: str, max_digits: int, terminator: str = "#") -> str:
        """Play the prompts (a key press cuts them short) and read the answer."""
        first = await self.play(*prompt_ids)
        return await self.read_digits(max_digits=max_digits, terminator=terminator,
                                      first=first)

    def hang_up(self) -> None:
        if not self.ended.is_set():
            self.host.app_hang_up(self.call)


def _rms(pcm: bytes) -> float:
    # Every 4th sample is plenty to tell speech from silence, and this runs for every
    # recording session several times a second: keep it out of the media timer's way.
    samples = array("h", pcm[: len(pcm) & ~1])[::4]
    if not samples:
        return 0.0
    return math.sqrt(sum(map(operator.mul, samples, samples)) / len(samples))


Application = Callable[[AppCall], Awaitable[None]]


async def run_application(app: Application, call: AppCall) -> None:
    """Run ``app`` until it returns, the caller hangs up or MAX_CALL_SECONDS pass."""
    task = asyncio.ensure_future(app(call))
    ended = asyncio.ensure_future(call.ended.wait())
    try:
        done, _ = await asyncio.wait({task, ended}, timeout=MAX_CALL_SECONDS,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task not in done and ended in done:
            # The caller hung up: the application may still have work that must not be
            # lost (a message left before hanging up is the usual case). Prompts and
            # digits return at once now; give it a moment to finish.
            done, _ = await asyncio.wait({task}, timeout=HANGUP_GRACE)
        if task in done and task.exception() is not None:
            log.error("voice application failed", exc_info=task.exception(),
                      extra={"call": call.call.id})
    finally:
        for pending in (task, ended):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        call.hang_up()
        call.leg.close()
