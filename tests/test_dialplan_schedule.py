"""dialplan.schedule: half-hour boundaries, holidays, the site's zone and DST (Berlin)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dialplan.schedule import Holiday, Hours, Schedule, is_open, next_change

BERLIN = ZoneInfo("Europe/Berlin")
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def weekdays(start: time, end: time) -> tuple[Hours, ...]:
    return tuple(Hours(d, start, end) for d in (MON, TUE, WED, THU, FRI))


OFFICE = Schedule(
    name="office",
    tz="Europe/Berlin",
    hours=(
        *weekdays(time(8, 30), time(12, 0)),
        *weekdays(time(13, 0), time(17, 30)),
        Hours(SAT, time(9, 0), time(12, 30)),
    ),
    holidays=(
        Holiday(date(2026, 12, 24), date(2026, 12, 26), "christmas"),
        Holiday(date(2027, 1, 1), name="new year"),
    ),
)


ALWAYS = Schedule("always", "Europe/Berlin", tuple(Hours(d, time(0), time(0)) for d in range(7)),
                  (Holiday(date(2026, 12, 24)),))
# 2026-03-29 and 2026-10-25 are the Berlin DST Sundays (02:00 CET -> 03:00 CEST at
# 01:00 UTC; 03:00 CEST -> 02:00 CET at 01:00 UTC).
DST_SPRING = Schedule("spring", "Europe/Berlin", (Hours(SUN, time(1, 30), time(3, 30)),))
DST_GAP = Schedule("gap", "Europe/Berlin", (Hours(SUN, time(2, 0), time(2, 30)),))
NEVER = Schedule("never", "Europe/Berlin")


def berlin(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=BERLIN)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


IS_OPEN = [
    # 2026-11-23 is a Monday.
    ("mon-before-opening", OFFICE, berlin(2026, 11, 23, 8, 29, 59), False),
    ("mon-at-opening-half-hour", OFFICE, berlin(2026, 11, 23, 8, 30), True),
    ("mon-last-second-before-lunch", OFFICE, berlin(2026, 11, 23, 11, 59, 59), True),
    ("mon-lunch-starts-at-end", OFFICE, berlin(2026, 11, 23, 12, 0), False),
    ("mon-after-lunch", OFFICE, berlin(2026, 11, 23, 13, 0), True),
    ("mon-17-29", OFFICE, berlin(2026, 11, 23, 17, 29), True),
    ("mon-closing-half-hour", OFFICE, berlin(2026, 11, 23, 17, 30), False),
    ("sat-12-15", OFFICE, berlin(2026, 11, 28, 12, 15), True),
    ("sat-12-30", OFFICE, berlin(2026, 11, 28, 12, 30), False),
    ("sun-noon", OFFICE, berlin(2026, 11, 29, 12, 0), False),
    ("utc-instant-converted-open", OFFICE, utc(2026, 11, 23, 7, 30), True),
    ("utc-instant-converted-closed", OFFICE, utc(2026, 11, 23, 7, 29), False),
    ("new-york-instant", OFFICE, datetime(2026, 11, 23, 3, 0, tzinfo=ZoneInfo("America/New_York")),
     True),
    ("holiday-range-first-day", OFFICE, berlin(2026, 12, 24, 10, 0), False),
    ("holiday-range-middle", OFFICE, berlin(2026, 12, 25, 10, 0), False),
    ("holiday-range-last-day-saturday", OFFICE, berlin(2026, 12, 26, 10, 0), False),
    ("day-before-holiday", OFFICE, berlin(2026, 12, 23, 10, 0), True),
    ("after-holiday-monday", OFFICE, berlin(2026, 12, 28, 10, 0), True),
    ("single-day-holiday", OFFICE, berlin(2027, 1, 1, 10, 0), False),
    ("holiday-by-local-date-not-utc", ALWAYS, utc(2026, 12, 23, 23, 30), False),
    ("holiday-ends-local-midnight", ALWAYS, utc(2026, 12, 24, 23, 0), True),
    ("midnight-end-covers-23-59", ALWAYS, berlin(2026, 11, 23, 23, 59, 59), True),
    # Spring forward: 01:59 CET is followed by 03:00 CEST.
    ("spring-01-29-cet-closed", DST_SPRING, utc(2026, 3, 29, 0, 29), False),
    ("spring-01-30-cet-open", DST_SPRING, utc(2026, 3, 29, 0, 30), True),
    ("spring-03-00-cest-open", DST_SPRING, utc(2026, 3, 29, 1, 0), True),
    ("spring-03-29-cest-open", DST_SPRING, utc(2026, 3, 29, 1, 29), True),
    ("spring-03-30-cest-closed", DST_SPRING, utc(2026, 3, 29, 1, 30), False),
    # Fall back: 02:00-02:30 happens twice, and is open both times.
    ("fall-02-00-cest-open", DST_GAP, utc(2026, 10, 25, 0, 0), True),
    ("fall-02-30-cest-closed", DST_GAP, utc(2026, 10, 25, 0, 30), False),
    ("fall-02-00-cet-open-again", DST_GAP, utc(2026, 10, 25, 1, 0), True),
    ("fall-02-30-cet-closed", DST_GAP, utc(2026, 10, 25, 1, 30), False),
]


@pytest.mark.parametrize(
    ("schedule", "at", "expected"), [c[1:] for c in IS_OPEN], ids=[c[0] for c in IS_OPEN]
)
def test_is_open(schedule: Schedule, at: datetime, expected: bool) -> None:
    assert is_open(schedule, at) is expected


def test_spring_forward_skipped_half_hours_never_open() -> None:
    """02:00-02:30 does not exist on the spring-forward day: never open that night."""
    start = utc(2026, 3, 28, 22, 0)
    instants = [start + timedelta(minutes=5 * i) for i in range(12 * 6)]
    assert not any(is_open(DST_GAP, t) for t in instants)
    # ...while a week later the same hours are open.
    assert is_open(DST_GAP, berlin(2026, 4, 5, 2, 0))


NEXT_CHANGE = [
    ("mon-morning-to-lunch", OFFICE, berlin(2026, 11, 23, 10, 0), berlin(2026, 11, 23, 12, 0)),
    ("exactly-at-boundary-goes-to-next", OFFICE, berlin(2026, 11, 23, 12, 0),
     berlin(2026, 11, 23, 13, 0)),
    ("mid-second-rounds-forward", OFFICE, berlin(2026, 11, 23, 8, 29, 59, 500),
     berlin(2026, 11, 23, 8, 30)),
    ("friday-evening-to-saturday", OFFICE, berlin(2026, 11, 27, 18, 0),
     berlin(2026, 11, 28, 9, 0)),
    ("saturday-to-monday", OFFICE, berlin(2026, 11, 28, 13, 0), berlin(2026, 11, 30, 8, 30)),
    ("over-christmas-range", OFFICE, berlin(2026, 12, 23, 17, 30), berlin(2026, 12, 28, 8, 30)),
    ("spring-opens-01-30-cet", DST_SPRING, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 0, 30)),
    ("spring-closes-03-30-cest", DST_SPRING, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)),
    ("fall-first-02-00", DST_GAP, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 0)),
    ("fall-first-02-30", DST_GAP, utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30)),
    ("fall-second-02-00", DST_GAP, utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0)),
    ("fall-second-02-30", DST_GAP, utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 30)),
]


@pytest.mark.parametrize(
    ("schedule", "at", "expected"), [c[1:] for c in NEXT_CHANGE], ids=[c[0] for c in NEXT_CHANGE]
)
def test_next_change(schedule: Schedule, at: datetime, expected: datetime) -> None:
    change = next_change(schedule, at)
    assert change == expected
    assert change is not None
    # It really is the first change: just before it, the state is still the old one.
    assert is_open(schedule, change - timedelta(microseconds=1)) == is_open(schedule, at)
    assert is_open(schedule, change) != is_open(schedule, at)


def test_next_change_none_when_never_open() -> None:
    assert next_change(NEVER, utc(2026, 1, 1)) is None


BAD_HOURS = [
    ("quarter-hour-start", lambda: Hours(MON, time(8, 15), time(12, 0))),
    ("seconds", lambda: Hours(MON, time(8, 0, 1), time(12, 0))),
    ("reversed", lambda: Hours(MON, time(12, 0), time(8, 0))),
    ("empty", lambda: Hours(MON, time(8, 0), time(8, 0))),
    ("weekday-7", lambda: Hours(7, time(8, 0), time(9, 0))),
    ("aware-time", lambda: Hours(MON, time(8, 0, tzinfo=UTC), time(9, 0))),
    ("holiday-reversed", lambda: Holiday(date(2026, 2, 2), date(2026, 2, 1))),
    ("unknown-zone", lambda: Schedule("x", "Mars/Olympus_Mons")),
]


@pytest.mark.parametrize("build", [c[1] for c in BAD_HOURS], ids=[c[0] for c in BAD_HOURS])
def test_bad_schedule_rejected(build: object) -> None:
    assert callable(build)
    with pytest.raises((ValueError, KeyError)):  # ZoneInfoNotFoundError is a KeyError
        build()


@pytest.mark.parametrize("func", [is_open, next_change], ids=["is_open", "next_change"])
def test_naive_datetime_refused(func: object) -> None:
    assert callable(func)
    with pytest.raises(ValueError, match="aware"):
        func(OFFICE, datetime(2026, 11, 23, 10, 0))
