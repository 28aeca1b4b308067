"""RFC 4733 telephone-events (DTMF over RTP) and SIP INFO ``application/dtmf-relay``.

:class:`DtmfReceiver` turns a stream of event packets into digits, each exactly once:
an event is identified by its RTP timestamp, so the three redundant end packets,
updates, reordered and late packets of an event already reported are ignored, a lost
start packet does not lose the digit, and the same digit pressed again (a new
timestamp) is a new digit. :class:`DtmfSender` produces the packet sequence of one digit.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from .rtp import ts_diff

__all__ = [
    "DTMF_EVENTS",
    "DtmfDigit",
    "DtmfParseError",
    "DtmfReceiver",
    "DtmfSender",
    "OutgoingEvent",
    "TelephoneEvent",
    "digit_to_event",
    "parse_dtmf_relay",
    "parse_telephone_event",
]

DTMF_EVENTS = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")


class DtmfParseError(ValueError):
    """A telephone-event payload that is not 4+ octets."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0..63, -dBm0
    duration: int  # timestamp units

    def to_bytes(self) -> bytes:
        if not (0 <= self.event < 256 and 0 <= self.volume < 64 and 0 <= self.duration < 65536):
            raise ValueError("telephone-event field out of range")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        return DTMF_EVENTS[self.event] if self.event < 16 else None


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Parse the first event of a payload (redundant RFC 2198 blocks are not handled)."""
    if len(payload) < 4:
        raise DtmfParseError("telephone-event payload shorter than 4 octets")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def digit_to_event(digit: str) -> int:
    """Event code of a DTMF character (0-9, *, #, A-D); raises ValueError."""
    i = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if i < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return i


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str
    timestamp: int  # RTP timestamp of the event, its identity
    duration: int  # timestamp units known when reported (0 from a start packet)


class DtmfReceiver:
    """De-duplicates RFC 4733 events into digits, reported on their first packet seen."""

    __slots__ = ("_last_rx", "_last_ts", "_recent", "_recent_set", "events_ignored",
                 "forget_after")

    def __init__(self, memory: int = 32, forget_after: float = 1.0) -> None:
        self._last_ts: int | None = None
        self._recent: deque[int] = deque(maxlen=memory)
        self._recent_set: set[int] = set()
        self._last_rx: float | None = None
        # After this long without any event packet, what was seen is forgotten: a sender
        # that starts over with old timestamps (a replayed capture, a phone after a
        # restart of its stream) is heard again. Redundant end packets and reordering
        # come within tens of milliseconds, far inside it.
        self.forget_after = forget_after
        self.events_ignored = 0

    def feed(self, timestamp: int, payload: bytes, now: float | None = None) -> DtmfDigit | None:
        """One telephone-event RTP packet; returns a digit when a new event starts.

        Malformed payloads and non-DTMF events (flash, tones) return None.
        """
        if len(payload) < 4:
            self.events_ignored += 1
            return None
        if now is not None:
            if self._last_rx is not None and now - self._last_rx > self.forget_after:
                self._recent.clear()
                self._recent_set.clear()
                self._last_ts = None
            self._last_rx = now
        event, _flags, duration = _EVENT.unpack_from(payload)
        if timestamp in self._recent_set:
            return None  # update, end or retransmitted end of a known event
        last = self._last_ts
        if last is not None and ts_diff(timestamp, last) < 0:
            return None  # a late packet from an older event we already passed
        self._remember(timestamp)
        self._last_ts = timestamp
        if event >= 16:
            self.events_ignored += 1
            return None
        return DtmfDigit(DTMF_EVENTS[event], timestamp, duration)

    def _remember(self, timestamp: int) -> None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._recent_set.discard(recent[0])
        recent.append(timestamp)
        self._recent_set.add(timestamp)


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """One packet of an outgoing event: send at ``offset`` timestamp units after start."""

    offset: int
    marker: bool
    timestamp: int
    payload: bytes


class DtmfSender:
    """Builds the RFC 4733 packet sequence for one digit.

    A start packet with the marker bit, an update every ``packet_samples`` (20 ms),
    then three end packets with the final duration, all with the event's timestamp.
    The adapter stamps sequence numbers and sends each packet at its offset.
    """

    __slots__ = ("packet_samples", "volume")

    def __init__(self, packet_samples: int = 160, volume: int = 10) -> None:
        if packet_samples <= 0 or not 0 <= volume < 64:
            raise ValueError("bad DTMF sender parameters")
        self.packet_samples = packet_samples
        self.volume = volume

    def packets(self, digit: str, timestamp: int, duration: int = 800) -> list[OutgoingEvent]:
        """Packets for ``digit`` lasting ``duration`` timestamp units (default 100 ms)."""
        event = digit_to_event(digit)
        duration = max(self.packet_samples, min(duration, 0xFFFF))
        ts = timestamp & 0xFFFFFFFF
        step = self.packet_samples
        out: list[OutgoingEvent] = []
        elapsed = step
        while elapsed < duration:
            out.append(
                OutgoingEvent(
                    elapsed - step,
                    not out,
                    ts,
                    _EVENT.pack(event, self.volume, elapsed),
                )
            )
            elapsed += step
        end = _EVENT.pack(event, 0x80 | self.volume, duration)
        last = duration - step if out else 0
        for i in range(3):
            out.append(OutgoingEvent(last + i * step, not out, ts, end))
        return out


_RELAY_SIGNALS = {c: c for c in DTMF_EVENTS}
_RELAY_SIGNALS.update({str(i): DTMF_EVENTS[i] for i in range(16)})


def parse_dtmf_relay(body: bytes) -> str | None:
    """The digit of a SIP INFO ``application/dtmf-relay`` body (``Signal=5``), or None."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "signal":
            return _RELAY_SIGNALS.get(value.strip().upper())
    return None
