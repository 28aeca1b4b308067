"""Music on hold: while one party holds the other, the held party hears the agent.

Calls between phones send their media phone to phone, so there is nothing to play
music into until somebody holds. Then, once the hold has gone through (the held
party answered the relayed hold offer), the agent anchors the held party's media:
it re-INVITEs the held party with an offer of its own (``sendonly``) and plays the
site's ``music_on_hold`` recording (an admin upload), or else "Please hold" every few
seconds. When the holder resumes, call control relays the resume offer to the held
party as usual, which points its media back at the holder, and the anchor is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from agent.calls.engine import CallControl
from agent.calls.model import Call, Leg, LegState
from agent.media.engine import MediaEngine, MediaLeg
from sipstack.message import Request, Response
from sipstack.sdp import SdpError, parse_sdp, set_direction

log = logging.getLogger(__name__)

MUSIC_PROMPT = "music_on_hold"  # an admin upload; without one, "please hold" and a pause
FALLBACK_PROMPT = "please_hold"
FALLBACK_PAUSE = 4.0


class PromptSource(Protocol):
    def get(self, prompt_id: str, codec: str = "PCMU") -> bytes: ...

    def __contains__(self, prompt_id: object) -> bool: ...


class HoldMusicPlayer:
    """Implements call control's HoldMusic hook with the agent's media engine."""

    def __init__(self, calls: CallControl, media: Callable[[], MediaEngine],
                 prompts: Callable[[], PromptSource | None],
                 local_ip: Callable[[Leg], str], flush: Callable[[], None]) -> None:
        self.calls = calls
        self._media = media
        self._prompts = prompts
        self._local_ip = local_ip
        self._flush = flush
        self._active: dict[str, tuple[asyncio.Task[None], list[MediaLeg]]] = {}

    @property
    def active(self) -> int:
        return len(self._active)

    def start(self, call: Call, held: Leg, now: float) -> None:
        if call.id in self._active or held.state is not LegState.UP:
            return
        legs: list[MediaLeg] = []
        task = asyncio.get_running_loop().create_task(self._run(call, held, legs))
        self._active[call.id] = (task, legs)

    def stop(self, call: Call, now: float) -> None:
        entry = self._active.pop(call.id, None)
        if entry is None:
            return
        task, legs = entry
        task.cancel()
        for leg in legs:
            leg.close()

    async def _run(self, call: Call, held: Leg, legs: list[MediaLeg]) -> None:
        try:
            leg, offer = await self._media().offer(self._local_ip(held))
        except (OSError, RuntimeError) as exc:
            log.warning("no music on hold", extra={"call": call.id, "why": str(exc)})
            return
        legs.append(leg)
        answered: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

        def done(response: Response | None, status: int, t: float, _invite: Request) -> None:
            if not answered.done():
                ok = response is not None and 200 <= status < 300 and bool(response.body)
                answered.set_result(response.body if ok and response is not None else None)

        body = set_direction(offer, "sendonly").serialize()
        self.calls._reinvite(held, body, time.time(), done)
        self._flush()
        answer = await answered
        if answer is None:
            log.info("the held party refused music on hold", extra={"call": call.id})
            return
        try:
            session = MediaEngine.start_answered(leg, parse_sdp(answer))
        except (SdpError, ValueError) as exc:
            log.info("music on hold answer unusable", extra={"call": call.id, "why": str(exc)})
            return
        prompts = self._prompts()
        if prompts is None:
            return
        music = MUSIC_PROMPT in prompts
        while True:
            audio = prompts.get(MUSIC_PROMPT if music else FALLBACK_PROMPT,
                                session.params.codec)
            session.play_encoded(audio)
            await asyncio.sleep(len(audio) / 8000 + (0.0 if music else FALLBACK_PAUSE))

    async def close(self) -> None:
        for call_id in list(self._active):
            task, legs = self._active.pop(call_id)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for leg in legs:
                leg.close()
