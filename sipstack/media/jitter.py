"""A jitter buffer for recording (voicemail, greetings): order over latency.

``push`` packets as they arrive; ``pop`` returns what is ready, in sequence order:
:class:`Frame` items, and a :class:`Loss` marker before a frame wherever packets are
missing, with the missing duration in timestamp units so the recorder can insert
silence of the right length. In-sequence packets are released at once; a packet
after a gap (and the first packet of the stream) waits up to ``depth`` seconds for the
missing (or earlier) ones. Duplicates and packets
whose place was already released (too late) are dropped and counted.
"""

from __future__ import annotations

import enum
import heapq

from .rtp import SeqExtender, ts_diff

__all__ = ["Frame", "JitterBuffer", "Loss", "PushResult"]


class PushResult(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


class Frame:
    """One packet's payload, released in order. ``samples`` is its duration (ts units)."""

    __slots__ = ("arrival", "ext_seq", "payload", "samples", "seq", "timestamp")

    def __init__(
        self, ext_seq: int, timestamp: int, payload: bytes, samples: int, arrival: float
    ) -> None:
        self.ext_seq = ext_seq
        self.seq = ext_seq & 0xFFFF
        self.timestamp = timestamp
        self.payload = payload
        self.samples = samples
        self.arrival = arrival

    def __repr__(self) -> str:
        return f"Frame(seq={self.seq}, ts={self.timestamp}, samples={self.samples})"


class Loss:
    """``packets`` missing packets (from ``first_seq``), ``samples`` ts units of audio."""

    __slots__ = ("first_seq", "packets", "samples")

    def __init__(self, first_seq: int, packets: int, samples: int) -> None:
        self.first_seq = first_seq
        self.packets = packets
        self.samples = samples

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Loss):
            return NotImplemented
        return (self.first_seq, self.packets, self.samples) == (
            other.first_seq,
            other.packets,
            other.samples,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Loss(first_seq={self.first_seq}, packets={self.packets}, samples={self.samples})"


class JitterBuffer:
    """Reorders one RTP stream for recording.

    ``depth`` (seconds) is how long a packet after a gap waits for the gap to fill;
    ``max_packets`` bounds memory (the oldest are released early when exceeded);
    ``max_loss_samples`` caps one loss marker (a long silence or a stream restart
    must not make the recorder write hours of silence).
    """

    __slots__ = (
        "_heap",
        "_items",
        "_last",
        "_seq",
        "depth",
        "duplicates",
        "late",
        "lost",
        "max_loss_samples",
        "max_packets",
        "received",
    )

    def __init__(
        self,
        depth: float = 0.2,
        max_packets: int = 100,
        max_loss_samples: int = 8000 * 10,
    ) -> None:
        self.depth = depth
        self.max_packets = max_packets
        self.max_loss_samples = max_loss_samples
        self._heap: list[int] = []
        self._items: dict[int, Frame] = {}
        self._seq = SeqExtender()  # unwraps sequence numbers (RFC 3550 A.1)
        self._last: Frame | None = None  # last released frame
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.lost = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(
        self, seq: int, timestamp: int, payload: bytes, now: float, samples: int | None = None
    ) -> PushResult:
        """Add a packet; ``samples`` defaults to ``len(payload)`` (G.711: one per octet)."""
        ext = self._seq.extend(seq)
        last = self._last
        if last is not None and ext <= last.ext_seq:
            self.late += 1
            return PushResult.LATE
        items = self._items
        if ext in items:
            self.duplicates += 1
            return PushResult.DUPLICATE
        items[ext] = Frame(
            ext, timestamp & 0xFFFFFFFF, payload,
            len(payload) if samples is None else samples, now,
        )
        heapq.heappush(self._heap, ext)
        self.received += 1
        return PushResult.ACCEPTED

    def pop(self, now: float) -> list[Frame | Loss]:
        """Everything ready at ``now``, in order."""
        return self._release(now, flush=False)

    def flush(self) -> list[Frame | Loss]:
        """Everything held, in order (end of the recording)."""
        return self._release(0.0, flush=True)

    def _release(self, now: float, flush: bool) -> list[Frame | Loss]:
        out: list[Frame | Loss] = []
        heap = self._heap
        items = self._items
        depth = self.depth
        while heap:
            ext = heap[0]
            frame = items[ext]
            last = self._last
            # The very first packet waits too: an earlier one may still be on its way.
            gap = -1 if last is None else ext - last.ext_seq - 1
            if (
                gap
                and not flush
                and now - frame.arrival < depth
                and len(items) <= self.max_packets
            ):
                break
            heapq.heappop(heap)
            del items[ext]
            if gap > 0 and last is not None:
                missing = ts_diff(frame.timestamp, last.timestamp) - last.samples
                missing = max(0, min(missing, self.max_loss_samples))
                out.append(Loss((last.ext_seq + 1) & 0xFFFF, gap, missing))
                self.lost += gap
            out.append(frame)
            self._last = frame
        return out
