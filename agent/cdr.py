"""Call detail records: one :class:`CallRecord` per finished call, and daily aggregates.

Call control builds a record when a call ends and hands batches of them to
:meth:`agent.store.Store.append_call_records`, which commits them durably (a power cut loses
no finished call) and idempotently (``call_id`` is the key: a retried batch never
duplicates). The aggregates (:func:`daily_stats`) group calls by the day of their start in the
site's time zone; that is done here, in Python with :mod:`zoneinfo`, so the SQL stays simple.

Privacy (DESIGN.md): CDRs stay in the store; they leave the box only if the site opted in to
CDR upload. Readers are the customer admin (and the partner, for usage aggregates).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CALL_RECORD_FIELDS",
    "DIRECTIONS",
    "DISPOSITIONS",
    "CallRecord",
    "DailyCallStats",
    "daily_stats",
    "record_as_dict",
    "zone",
]

#: "internal": extension to extension; "outbound": to a trunk; "inbound": from a trunk.
DIRECTIONS: Final = frozenset({"internal", "outbound", "inbound"})

#: "answered": a 2xx was received; "busy": every target was busy (486/600); "no-answer": the
#: targets rang out (timeout, 408/480); "failed": routing or a target failed (4xx-6xx,
#: restriction, no route); "abandoned": the caller hung up (CANCEL) before an answer.
DISPOSITIONS: Final = frozenset({"answered", "busy", "no-answer", "failed", "abandoned"})


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call. Times are epoch seconds (UTC); durations are seconds.

    Invariants (checked on construction, ``ValueError`` otherwise): known ``direction`` and
    ``disposition``; a non-empty ``call_id``; finite times with ``start <= end``; ``answer``
    is set exactly when the disposition is "answered", and then ``start <= answer <= end``;
    ``hold_seconds >= 0``.
    """

    call_id: str  #: our call's id (uuid hex), unique
    direction: str  #: one of DIRECTIONS
    caller: str  #: extension or outside number
    caller_name: str
    callee: str  #: who answered, or the last target tried ("" if none)
    dialed: str  #: what the caller dialed
    start: float  #: INVITE received
    answer: float | None  #: the 2xx; None if never answered
    end: float
    disposition: str  #: one of DISPOSITIONS
    hold_seconds: float  #: total time on hold
    hunt_group: str | None  #: the pilot, if the call went to a hunt group
    trunk: str | None
    cause: str  #: short reason: "caller-bye", "callee-bye", "486", "cancel", "timeout", ...
    #: What the agent measured of the audio it received on the call (RFC 3550), for calls
    #: whose media it handled (voicemail, attendant, paging, music on hold); None for
    #: calls whose media flowed phone to phone.
    jitter_ms: float | None = None
    loss_percent: float | None = None
    rtt_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.call_id:
            raise ValueError("call_id must not be empty")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"unknown direction {self.direction!r} (expected one of {sorted(DIRECTIONS)})"
            )
        if self.disposition not in DISPOSITIONS:
            raise ValueError(
                f"unknown disposition {self.disposition!r} "
                f"(expected one of {sorted(DISPOSITIONS)})"
            )
        for name in ("start", "end", "hold_seconds"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        if self.answer is not None:
            if not math.isfinite(self.answer):
                raise ValueError("answer must be a finite number or None")
            if not self.start <= self.answer <= self.end:
                raise ValueError(
                    f"answer ({self.answer}) is not between start ({self.start}) "
                    f"and end ({self.end})"
                )
        if (self.answer is not None) != (self.disposition == "answered"):
            raise ValueError(
                f"disposition {self.disposition!r} with answer={self.answer!r}: a call has an "
                "answer time exactly when it was answered"
            )
        if self.hold_seconds < 0:
            raise ValueError(f"hold_seconds ({self.hold_seconds}) must not be negative")

    @property
    def time_to_answer(self) -> float | None:
        """Seconds from the INVITE to the 2xx; None if never answered."""
        return None if self.answer is None else self.answer - self.start

    @property
    def talk_seconds(self) -> float:
        """Seconds from the answer to the end (hold included); 0 if never answered."""
        return 0.0 if self.answer is None else self.end - self.answer

    @property
    def duration(self) -> float:
        """Seconds from the INVITE to the end."""
        return self.end - self.start


#: The record's field names, in order (also the ``cdr`` table's columns).
CALL_RECORD_FIELDS: Final = tuple(f.name for f in fields(CallRecord))


def record_as_dict(record: CallRecord) -> dict[str, Any]:
    """The record's fields plus ``time_to_answer`` (for JSON and CSV output)."""
    out = {name: getattr(record, name) for name in CALL_RECORD_FIELDS}
    out["time_to_answer"] = record.time_to_answer
    return out


@dataclass(frozen=True, slots=True)
class DailyCallStats:
    """The calls that started on one day (in the site's time zone)."""

    day: str  #: YYYY-MM-DD in the site's time zone
    calls: int
    answered: int
    abandoned: int
    busy: int
    no_answer: int
    failed: int
    avg_time_to_answer: float | None  #: over answered calls; None if none was answered
    avg_hold: float | None  #: over answered calls; None if none was answered
    total_talk_seconds: float  #: answer to end, summed over answered calls


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` ("UTC" included); ``ValueError`` if unknown."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a known IANA time zone") from exc


def daily_stats(records: Iterable[CallRecord], tz: str | tzinfo) -> list[DailyCallStats]:
    """Aggregate ``records`` per day of their start in ``tz``; oldest day first, days with no
    calls omitted."""
    tzi = zone(tz) if isinstance(tz, str) else tz
    days: dict[str, list[CallRecord]] = {}
    for record in records:
        day = datetime.fromtimestamp(record.start, tzi).date().isoformat()
        days.setdefault(day, []).append(record)
    out: list[DailyCallStats] = []
    for day in sorted(days):
        calls = days[day]
        answered = [r for r in calls if r.answer is not None]
        count = {d: 0 for d in DISPOSITIONS}
        for r in calls:
            count[r.disposition] += 1
        n = len(answered)
        out.append(DailyCallStats(
            day=day,
            calls=len(calls),
            answered=n,
            abandoned=count["abandoned"],
            busy=count["busy"],
            no_answer=count["no-answer"],
            failed=count["failed"],
            avg_time_to_answer=(
                sum(r.answer - r.start for r in answered if r.answer is not None) / n
                if n else None
            ),
            avg_hold=sum(r.hold_seconds for r in answered) / n if n else None,
            total_talk_seconds=sum(r.talk_seconds for r in answered),
        ))
    return out
