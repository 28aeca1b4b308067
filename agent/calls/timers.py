"""One heap of call-level timers, sans-I/O: the owner asks get_timer() and calls
handle_timer(now), exactly as with the transaction layer."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count


class Timer:
    """A scheduled callback; cancel() makes it a no-op (lazy deletion from the heap)."""

    __slots__ = ("callback", "deadline", "live")

    def __init__(self, deadline: float, callback: Callable[[float], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.live = True

    def cancel(self) -> None:
        self.live = False


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = count()

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if t.live)

    def at(self, deadline: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(deadline, callback)
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
        return timer

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.live:
                timer.live = False
                timer.callback(now)
