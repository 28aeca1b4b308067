"""Business hours and holidays, evaluated in the site's time zone.

Hours are wall-clock times in the site's zone, because that is how an office states
them ("we open at 8:00"), and zoneinfo turns an instant into that wall clock, DST
included: on a spring-forward day the skipped hour simply never happens, and on a
fall-back day the repeated hour is open (or closed) both times.

Times are on half-hour boundaries. That keeps the admin UI a grid and lets next_change
find transitions by stepping over a fixed grid instead of solving for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MINUTES_PER_DAY = 24 * 60
# Every UTC offset in the tz database is a multiple of 15 minutes, so local half hours
# (and DST switches) fall on a 15-minute UTC grid.
_GRID = timedelta(minutes=15)
_HORIZON = timedelta(days=400)


def _minutes(value: time, *, end: bool) -> int:
    if value.second or value.microsecond or value.minute not in (0, 30):
        raise ValueError(f"{value.isoformat()} is not on a half-hour boundary")
    minutes = value.hour * 60 + value.minute
    # An end of 00:00 means midnight at the end of the day.
    return MINUTES_PER_DAY if end and minutes == 0 else minutes


@dataclass(frozen=True, slots=True)
class Hours:
    """Open on `weekday` (0 = Monday, as datetime.weekday) from `start` to `end`.

    `end` of 00:00 means until midnight. An interval never crosses midnight: a night
    shift is two intervals, which keeps each weekday self-contained.
    """

    weekday: int
    start: time
    end: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday {self.weekday} is not 0..6")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("hours are wall-clock times: no tzinfo")
        if _minutes(self.start, end=False) >= _minutes(self.end, end=True):
            raise ValueError(f"hours {self.start}-{self.end} are empty or reversed")

    def contains(self, weekday: int, minute_of_day: int) -> bool:
        return (
            weekday == self.weekday
            and _minutes(self.start, end=False) <= minute_of_day < _minutes(self.end, end=True)
        )


@dataclass(frozen=True, slots=True)
class Holiday:
    """Closed all day from `first` to `last` inclusive (`last` None: one day)."""

    first: date
    last: date | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.last is not None and self.last < self.first:
            raise ValueError(f"holiday {self.name!r} ends before it starts")

    def covers(self, day: date) -> bool:
        return self.first <= day <= (self.last or self.first)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A named weekly schedule in an IANA time zone, with holidays."""

    name: str
    tz: str
    hours: tuple[Hours, ...] = ()
    holidays: tuple[Holiday, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        ZoneInfo(self.tz)  # an unknown zone is a configuration error, found at build time

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)  # zoneinfo caches instances by key


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("`at` must be an aware datetime: naive times have no zone to convert")


def is_open(schedule: Schedule, at: datetime) -> bool:
    """Is the site open at the instant `at`? Holidays win over hours."""
    _require_aware(at)
    local = at.astimezone(schedule.zone)
    if any(h.covers(local.date()) for h in schedule.holidays):
        return False
    minute = local.hour * 60 + local.minute
    return any(h.contains(local.weekday(), minute) for h in schedule.hours)


def next_change(schedule: Schedule, at: datetime) -> datetime | None:
    """The first instant after `at` when is_open changes, in UTC, or None if it does not
    change within about a year (always open, always closed).

    The state can only change on the 15-minute UTC grid (see _GRID), so stepping over the
    grid is exact, and simple enough to trust across DST switches.
    """
    _require_aware(at)
    state = is_open(schedule, at)
    utc = at.astimezone(UTC)
    step = utc.replace(second=0, microsecond=0, minute=utc.minute - utc.minute % 15) + _GRID
    end = utc + _HORIZON
    while step <= end:
        if is_open(schedule, step) != state:
            return step
        step += _GRID
    return None
