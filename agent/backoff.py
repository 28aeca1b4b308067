"""Exponential backoff with jitter, shared by everything that retries a peer: the VPN
manager, the upload outbox and config sync.

Pure: the caller passes the failure count and a uniform random number, so tests pin both.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base * factor**(n-1)`` seconds after the n-th failure in a row, capped, with
    +-``jitter`` (a fraction) so that many boxes do not retry in step."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.2

    def nominal(self, failures: int) -> float:
        """The delay before jitter; failures >= 1 (less counts as 1)."""
        return min(self.cap, self.base * self.factor ** min(max(0, failures - 1), 62))

    def delay(self, failures: int, u: float) -> float:
        """Seconds to wait after ``failures`` failures in a row; ``u`` in [0, 1)."""
        jittered = self.nominal(failures) * (1.0 + self.jitter * (2.0 * u - 1.0))
        return max(0.0, min(self.cap, jittered))
