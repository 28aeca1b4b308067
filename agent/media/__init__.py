"""Media for voice applications: the asyncio adapter around ``sipstack.media.session``."""

from .engine import MediaEngine, MediaLeg, PortRangeExhausted

__all__ = ["MediaEngine", "MediaLeg", "PortRangeExhausted"]
