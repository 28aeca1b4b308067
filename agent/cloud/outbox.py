"""The upload outbox: CDRs, daily usage and voicemail backups, queued on disk for the portal.

What goes in (DESIGN.md privacy table, docs/portal-api.md):

* ``cdr``: one item per call record, queued by :meth:`agent.store.Store.append_call_records`
  (``outbox_cdrs=True``) in the same transaction that stores the call, and only while the
  site's CDR opt-in is on;
* ``usage``: one item per complete day of aggregates (:meth:`Outbox.enqueue_due_usage`),
  always (aggregates only, no numbers or names);
* ``voicemail_backup``: a backup already sealed to the customer admin's key
  (:func:`agent.cloud.portal_client.seal_voicemail_backup`), only while that opt-in is on.
  The sealed bytes are kept, so every retry sends exactly the same bytes.

Delivery is at least once with idempotency keys, so the portal sees each item once: a CDR
batch's key is derived from its rows (``cdr-<epoch>-<first id>-<last id>-<count>``; the
portal also de-duplicates CDRs by ``call_id``), a day's usage is ``usage-YYYY-MM-DD`` and a
backup is idempotent by its ``backup_id``. An item leaves the queue only after the portal
said yes, so a restart or ``kill -9`` at any point loses nothing (SQLite, one transaction
per step) and at worst sends a batch again.

Bounded: the queue's payload bytes never exceed ``max_bytes``; at the bound the OLDEST items
(any kind) are dropped first. Every drop (bound, disk full, or an item the portal refused
``max_rejections`` times) is logged (``event=outbox.drop``), counted per kind in the store
for ever, and shown by :meth:`Outbox.stats` (heartbeat, ``edgepbx status``). When an
opt-in is turned off, the queued items of that kind are purged (they must never leave the
box): logged, returned and counted in :meth:`Outbox.stats`, but not a "drop".

:class:`UploadPolicy` holds every decision (what an answer does to the queue, backoff,
splitting a refused batch), without I/O, so it is tested with tables; :class:`Uploader` is
the thin asyncio adapter around it and a portal client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from datetime import time as day_time
from typing import Any, Final, Protocol

from agent.backoff import Backoff
from agent.cdr import zone
from agent.cloud.portal_client import (
    OptInRequired,
    OptIns,
    PortalError,
    PortalRejected,
    PortalUnavailable,
    SealedBackup,
    UsageReport,
)
from agent.store import OUTBOX_DEFAULT_MAX_BYTES, OutboxRow, Store

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEVICE_REFUSALS",
    "KINDS",
    "KIND_CDR",
    "KIND_USAGE",
    "KIND_VOICEMAIL_BACKUP",
    "MAX_REJECTIONS",
    "Backoff",
    "Delivered",
    "Outbox",
    "Outcome",
    "Refused",
    "Step",
    "Unavailable",
    "UploadClient",
    "UploadPolicy",
    "Uploader",
    "Withdrawn",
]

log = logging.getLogger(__name__)

KIND_CDR: Final = "cdr"
KIND_USAGE: Final = "usage"
KIND_VOICEMAIL_BACKUP: Final = "voicemail_backup"
#: Delivery order within a pass: small and always allowed first.
KINDS: Final = (KIND_USAGE, KIND_CDR, KIND_VOICEMAIL_BACKUP)
DEFAULT_BATCH_SIZE: Final = 1000
#: A single item the portal refuses this many times is dropped (reported).
MAX_REJECTIONS: Final = 5
#: Refusals about the device or the endpoint, not the item (unknown or unauthorised device,
#: an older portal without the endpoint): retrying later can help, dropping cannot.
DEVICE_REFUSALS: Final = frozenset({401, 403, 404, 405})
#: Days of usage queued on the very first run (later runs catch up on every missed day).
FIRST_RUN_BACKFILL_DAYS: Final = 31
_USAGE_LAST_DAY: Final = "usage_last_day"


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _decode_backup(row: OutboxRow) -> SealedBackup:
    mailbox, sep, data = row.payload.partition(b"\0")
    if not sep or not row.item_key.startswith("vmb:"):
        raise ValueError("not a voicemail backup item")
    return SealedBackup(row.item_key[4:], mailbox.decode("utf-8"), data)


def _decode_usage(row: OutboxRow) -> UsageReport:
    data = json.loads(row.payload)
    return UsageReport(**data)


# ---------------------------------------------------------------------- the queue


class Outbox:
    """The queue over the store (thread-safe: the store serialises its callers)."""

    def __init__(self, store: Store, *, max_bytes: int = OUTBOX_DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.store = store
        self.max_bytes = max_bytes
        self.clock = clock
        self._purged: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._epoch: str | None = None

    # -- enqueue

    def enqueue_usage(self, report: UsageReport) -> bool:
        """Queue one day's aggregates (key ``usage-<day>``); False if that day is queued."""
        date.fromisoformat(report.day)  # ValueError for a bad day, before anything is queued
        done = self.store.outbox_enqueue(
            [(KIND_USAGE, f"usage-{report.day}", _json(report.as_json()))],
            now=self.clock(), max_bytes=self.max_bytes)
        return done.inserted > 0

    def enqueue_voicemail_backup(self, backup: SealedBackup) -> bool:
        """Queue a sealed backup (key ``vmb:<backup_id>``), keeping exactly these bytes;
        False (a no-op) if that ``backup_id`` is already queued."""
        if "\0" in backup.mailbox or not backup.backup_id or not backup.data:
            raise ValueError("a voicemail backup needs an id, a mailbox and sealed bytes")
        payload = backup.mailbox.encode("utf-8") + b"\0" + backup.data
        done = self.store.outbox_enqueue(
            [(KIND_VOICEMAIL_BACKUP, f"vmb:{backup.backup_id}", payload)],
            now=self.clock(), max_bytes=self.max_bytes)
        return done.inserted > 0

    def enqueue_due_usage(
        self, tz: str, registered_phones: int, today: date | float | None = None, *,
        first_run_days: int = FIRST_RUN_BACKFILL_DAYS,
    ) -> list[str]:
        """Queue the aggregates of every complete day not queued yet; returns those days.

        Days are in the site's time zone ``tz``; ``today`` (a date there, or epoch seconds,
        default now) is never queued, since it is not complete. The last day queued is kept
        in the store in the same transaction, so a day is queued once across restarts. The
        first run starts at the oldest call (at most ``first_run_days`` back, else
        yesterday); later runs catch up on every day since the last one, days without calls
        as zeros (``registered_phones`` is today's count: the device keeps no history).
        """
        tzi = zone(tz)
        if not isinstance(today, date):
            moment = self.clock() if today is None else float(today)
            today = datetime.fromtimestamp(moment, tzi).date()
        yesterday = today - timedelta(days=1)
        last = self.store.outbox_state(_USAGE_LAST_DAY)
        if last is not None:
            first = date.fromisoformat(last) + timedelta(days=1)
        else:
            oldest = self.store.call_records(limit=1, newest_first=False)
            first = yesterday
            if oldest:
                started = datetime.fromtimestamp(oldest[0].start, tzi).date()
                first = max(started, today - timedelta(days=first_run_days))
        if first > yesterday:
            return []
        stats = {s.day: s for s in self.store.daily_call_stats(
            tz, _day_start(first, tzi), _day_start(today, tzi))}
        items: list[tuple[str, str, bytes]] = []
        days: list[str] = []
        day = first
        while day <= yesterday:
            iso = day.isoformat()
            s = stats.get(iso)
            report = (UsageReport.from_stats(s, registered_phones) if s is not None else
                      UsageReport(iso, 0, 0, 0, None, None, registered_phones))
            items.append((KIND_USAGE, f"usage-{iso}", _json(report.as_json())))
            days.append(iso)
            day += timedelta(days=1)
        self.store.outbox_enqueue(items, now=self.clock(), max_bytes=self.max_bytes,
                                  state={_USAGE_LAST_DAY: yesterday.isoformat()})
        log.info("daily usage queued", extra={"event": "outbox.usage", "first_day": days[0],
                                              "last_day": days[-1], "days": len(days)})
        return days

    # -- removal

    def purge(self, kind: str) -> int:
        """Remove every queued item of ``kind`` (its opt-in was turned off: they must never
        leave the box). Logged and counted in :meth:`stats` ("purged"), not a drop."""
        if kind not in KINDS:
            raise ValueError(f"unknown outbox kind {kind!r} (expected one of {KINDS})")
        items, size = self.store.outbox_purge(kind)
        if items:
            with self._lock:
                count = self._purged.setdefault(kind, [0, 0])
                count[0] += items
                count[1] += size
            log.warning("outbox purged: the opt-in is off, these items never leave the box",
                        extra={"event": "outbox.purge", "kind": kind, "items": items,
                               "bytes": size})
        return items

    def enforce_bound(self) -> int:
        """Drop the oldest items down to ``max_bytes`` (after the bound was lowered);
        returns how many went (each drop reported)."""
        return sum(d.items for d in self.store.outbox_enforce_bound(self.max_bytes,
                                                                    now=self.clock()))

    # -- for the uploader

    def batch_id(self, rows: Sequence[OutboxRow]) -> str:
        """The idempotency key of a CDR batch: the same rows always give the same key."""
        if self._epoch is None:
            self._epoch = self.store.outbox_state("epoch") or "0"
        return f"cdr-{self._epoch}-{rows[0].id}-{rows[-1].id}-{len(rows)}"

    def due(self, kind: str, limit: int, now: float) -> list[OutboxRow]:
        return self.store.outbox_due(kind, now=now, limit=limit)

    def queued_kinds(self) -> dict[str, int]:
        return {k: v[0] for k, v in self.store.outbox_queued().items()}

    def apply(self, kind: str, step: Step, now: float) -> None:
        """Carry out a :class:`Step` on the queue."""
        if step.delete:
            self.store.outbox_delete(step.delete)
        if step.retry:
            self.store.outbox_retry_later(step.retry, next_attempt_at=step.retry_at,
                                          error=step.error, count_attempt=step.count_attempt)
        if step.drop:
            self.store.outbox_drop(step.drop, reason=step.error, now=now)
        if step.purge:
            self.purge(kind)

    # -- reporting

    def stats(self) -> dict[str, Any]:
        """Queued and dropped items per kind (for the heartbeat and ``edgepbx status``)."""
        queued = {k: {"items": n, "bytes": b, "oldest_at": t}
                  for k, (n, b, t) in self.store.outbox_queued().items()}
        dropped = self.store.outbox_dropped()
        with self._lock:
            purged = {k: {"items": v[0], "bytes": v[1]} for k, v in self._purged.items()}
        return {
            "queued": queued,
            "queued_items": sum(q["items"] for q in queued.values()),
            "queued_bytes": sum(q["bytes"] for q in queued.values()),
            "max_bytes": self.max_bytes,
            "dropped": dropped,
            "dropped_items": sum(int(d["items"]) for d in dropped.values()),
            "purged": purged,
        }


def _day_start(day: date, tzi: tzinfo) -> float:
    return datetime.combine(day, day_time(0), tzinfo=tzi).timestamp()


# ---------------------------------------------------------------------- decisions (no I/O)


@dataclass(frozen=True, slots=True)
class Delivered:
    """The portal took the items (or already had them)."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Try again later: network, tunnel down, 408/429/5xx, a bad answer."""

    error: str


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """The opt-in for this kind is off (checked by the uploader or the client)."""

    error: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The portal (another 4xx) or the client (a bad id) refused the items as they are."""

    status: int  #: 0: refused by the client before sending
    message: str


Outcome = Delivered | Unavailable | Withdrawn | Refused


@dataclass(frozen=True, slots=True)
class Step:
    """What one answer does to the queue and to the uploader."""

    delete: tuple[int, ...] = ()  #: delivered: remove
    retry: tuple[int, ...] = ()  #: keep, record ``error``, not before ``retry_at``
    retry_at: float = 0.0
    count_attempt: bool = True  #: retry: counts towards ``max_rejections``
    drop: tuple[int, ...] = ()  #: give up: remove as a reported drop, reason ``error``
    error: str = ""
    purge: bool = False  #: remove every queued item of this kind (opt-in off)
    pause_until: float | None = None  #: the portal is unavailable: nothing before this


@dataclass
class UploadPolicy:
    """The uploader's decisions, with no I/O: answers in, :class:`Step` out.

    * Delivered: delete; the backoff resets; a split batch size grows back (doubling).
    * Unavailable: keep everything; pause all uploads for ``backoff.delay(failures)``.
    * Withdrawn (opt-in off): purge that kind.
    * Refused with 401/403/404/405 (the device or the endpoint, not the item), or 409 for a
      CDR batch (the portal is still working on that idempotency key): as Unavailable.
    * Refused, several items (a CDR batch): keep them and halve that kind's batch size, so
      the refused item is isolated without blaming the others.
    * Refused, one item: count the attempt; retry it after the backoff for its attempt
      count; the ``max_rejections``-th refusal drops it (reported, "rejected: ...").
      A 409 for a voicemail backup means the portal holds that ``backup_id`` already (a
      backup sealed earlier of the same message): done, not refused.
    """

    backoff: Backoff = field(default_factory=Backoff)
    max_rejections: int = MAX_REJECTIONS
    batch_size: int = DEFAULT_BATCH_SIZE
    rng: Callable[[], float] = random.random
    failures: int = 0  #: unavailable answers in a row
    paused_until: float = 0.0
    _sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_rejections < 1:
            raise ValueError("batch_size and max_rejections must be at least 1")

    def size_for(self, kind: str) -> int:
        """How many items of ``kind`` go in one request."""
        if kind != KIND_CDR:
            return 1
        return self._sizes.get(kind, self.batch_size)

    def may_send(self, now: float) -> bool:
        return now >= self.paused_until

    def unavailable(self, now: float) -> float:
        """Count a failure; returns when to try again."""
        self.failures += 1
        self.paused_until = now + self.backoff.delay(self.failures, self.rng())
        return self.paused_until

    def decide(self, kind: str, rows: Sequence[OutboxRow], outcome: Outcome,
               now: float) -> Step:
        ids = tuple(r.id for r in rows)
        if isinstance(outcome, Refused):
            if outcome.status == 409 and kind == KIND_VOICEMAIL_BACKUP:
                outcome = Delivered()
            elif outcome.status in DEVICE_REFUSALS or (outcome.status == 409
                                                       and kind == KIND_CDR):
                outcome = Unavailable(f"{outcome.status} {outcome.message}")
        if isinstance(outcome, Delivered):
            self.failures = 0
            self.paused_until = 0.0
            if kind in self._sizes:
                grown = self._sizes[kind] * 2
                if grown >= self.batch_size:
                    del self._sizes[kind]
                else:
                    self._sizes[kind] = grown
            return Step(delete=ids)
        if isinstance(outcome, Unavailable):
            return Step(pause_until=self.unavailable(now), error=outcome.error)
        if isinstance(outcome, Withdrawn):
            return Step(purge=True, error=outcome.error)
        error = f"{outcome.status} {outcome.message}" if outcome.status else outcome.message
        if len(rows) > 1:
            self._sizes[kind] = max(1, len(rows) // 2)
            return Step(retry=ids, retry_at=now, count_attempt=False, error=error)
        attempts = rows[0].attempts + 1
        if attempts >= self.max_rejections:
            return Step(drop=ids, error=f"rejected: {error}")
        return Step(retry=ids, retry_at=now + self.backoff.delay(attempts, self.rng()),
                    error=error)


# ---------------------------------------------------------------------- the asyncio adapter


class UploadClient(Protocol):
    """What the uploader needs of :class:`agent.cloud.portal_client.PortalClient`."""

    async def upload_cdrs(self, batch_id: str, records: Sequence[Mapping[str, Any]]) -> Any: ...
    async def post_usage(self, idempotency_key: str, report: UsageReport) -> None: ...
    async def put_voicemail_backup(self, backup: SealedBackup) -> None: ...


class Uploader:
    """Drains the outbox into the portal; one task (:meth:`run`) per agent.

    The client comes from either

    * ``client_factory()``: a new client per pass; if it is an async context manager (a
      :class:`PortalClient` is) it is entered for the pass and closed after it; or
    * ``client()``: a shared client owned by the caller (never closed here), e.g. the cloud
      link's tunnel-bound client. Either may raise ``TunnelNotReady``: that backs off.

    ``opt_ins()`` is asked before every CDR or backup request; while an opt-in is off, that
    kind is purged and nothing of it is sent. :meth:`poke` (thread-safe) starts a pass now:
    call it after queueing or when the tunnel comes up. ``clock`` gives epoch seconds (it
    is stored with retried items, so it must be the wall clock in production).
    """

    def __init__(
        self, outbox: Outbox,
        client_factory: Callable[[], Any] | None = None, *,
        client: Callable[[], UploadClient] | None = None,
        opt_ins: Callable[[], OptIns],
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_rejections: int = MAX_REJECTIONS,
        rng: Callable[[], float] = random.random,
        idle_poll: float = 30.0,
    ) -> None:
        if (client_factory is None) == (client is None):
            raise ValueError("give exactly one of client_factory and client")
        self.outbox = outbox
        self._factory = client_factory
        self._shared = client
        self._opt_ins = opt_ins
        self._clock = clock
        self.policy = UploadPolicy(backoff=backoff or Backoff(), max_rejections=max_rejections,
                                   batch_size=batch_size, rng=rng)
        self.idle_poll = idle_poll
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.delivered: dict[str, int] = {}
        self.last_success_at: float | None = None
        self.last_error: str | None = None

    # -- control

    def poke(self) -> None:
        """Try now (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Make :meth:`run` return after the request in flight (if any), or at once if it
        has not started yet."""
        self._stopping = True
        self.poke()

    def _stopped(self) -> bool:
        return self._stopping

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while not self._stopped():
            self._wake.clear()
            progress = 0
            try:
                progress = await self.drain_once()
            except Exception as exc:  # a bug or the store: never a dead loop, back off
                log.exception("upload pass failed", extra={"event": "outbox.error"})
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.policy.unavailable(self._clock())
            if self._stopped():
                break
            delay = await asyncio.to_thread(self._idle_delay, progress)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    def _idle_delay(self, progress: int) -> float:
        now = self._clock()
        if not self.policy.may_send(now):
            return min(self.idle_poll, self.policy.paused_until - now)
        due = self.outbox.store.outbox_next_due()
        if due is None:
            return self.idle_poll
        if due <= now:
            return 0.0 if progress else 1.0  # made no progress on due items: do not spin
        return min(self.idle_poll, due - now)

    # -- one pass

    async def drain_once(self) -> int:
        """Send everything due, kind by kind, until the queue is empty or the portal is
        unavailable. Returns how many items left the queue (delivered, dropped, purged)."""
        progress = await asyncio.to_thread(self._purge_withdrawn)
        if not self.policy.may_send(self._clock()):
            return progress
        kinds = await asyncio.to_thread(self.outbox.queued_kinds)
        if not any(kinds.values()):
            return progress
        try:
            async with self._client() as client:
                for kind in KINDS:
                    if not kinds.get(kind):
                        continue
                    while not self._stopped():
                        now = self._clock()
                        rows = await asyncio.to_thread(
                            self.outbox.due, kind, self.policy.size_for(kind), now)
                        if not rows:
                            break
                        outcome = await self._send(client, kind, rows)
                        step = self.policy.decide(kind, rows, outcome, self._clock())
                        await asyncio.to_thread(self.outbox.apply, kind, step, self._clock())
                        self._report(kind, rows, outcome, step)
                        progress += len(step.delete) + len(step.drop)
                        if step.pause_until is not None:
                            return progress
                        if step.purge:
                            break
        except PortalUnavailable as exc:  # no client (the tunnel is down, ...)
            step = Step(pause_until=self.policy.unavailable(self._clock()), error=str(exc))
            self._report("*", (), Unavailable(str(exc)), step)
        return progress

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[UploadClient]:
        if self._shared is not None:
            yield self._shared()
            return
        assert self._factory is not None
        made = self._factory()
        if hasattr(made, "__aenter__"):
            async with made as entered:
                yield entered
        else:
            yield made

    def _purge_withdrawn(self) -> int:
        opt = self._opt_ins()
        queued = self.outbox.queued_kinds()
        purged = 0
        for kind, on in ((KIND_CDR, opt.cdr_upload),
                         (KIND_VOICEMAIL_BACKUP, opt.voicemail_backup)):
            if not on and queued.get(kind):
                purged += self.outbox.purge(kind)
        return purged

    def _allowed(self, kind: str) -> bool:
        opt = self._opt_ins()
        if kind == KIND_CDR:
            return opt.cdr_upload
        if kind == KIND_VOICEMAIL_BACKUP:
            return opt.voicemail_backup
        return True

    async def _send(self, client: UploadClient, kind: str, rows: Sequence[OutboxRow]) -> Outcome:
        if not self._allowed(kind):
            return Withdrawn(f"the {kind} opt-in is off")
        try:
            if kind == KIND_CDR:
                records = [json.loads(r.payload) for r in rows]
                await client.upload_cdrs(self.outbox.batch_id(rows), records)
            elif kind == KIND_USAGE:
                await client.post_usage(rows[0].item_key, _decode_usage(rows[0]))
            elif kind == KIND_VOICEMAIL_BACKUP:
                await client.put_voicemail_backup(_decode_backup(rows[0]))
            else:
                return Refused(0, f"unknown outbox kind {kind!r}")
        except OptInRequired as exc:
            return Withdrawn(str(exc))
        except PortalUnavailable as exc:
            return Unavailable(str(exc) or type(exc).__name__)
        except PortalRejected as exc:
            return Refused(exc.status, exc.message)
        except PortalError as exc:
            return Unavailable(str(exc) or type(exc).__name__)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:  # an unsendable item
            return Refused(0, f"{type(exc).__name__}: {exc}")
        return Delivered()

    def _report(self, kind: str, rows: Sequence[OutboxRow], outcome: Outcome,
                step: Step) -> None:
        where = {"kind": kind, "items": len(rows)}
        if rows:
            where.update(first_id=rows[0].id, last_id=rows[-1].id)
        if isinstance(outcome, Delivered) or (step.delete and not step.drop):
            self.delivered[kind] = self.delivered.get(kind, 0) + len(step.delete)
            self.last_success_at = self._clock()
            self.last_error = None
            log.debug("uploaded", extra={"event": "outbox.sent", **where})
            return
        self.last_error = step.error
        if step.pause_until is not None:
            log.warning("portal unavailable; uploads back off", extra={
                "event": "outbox.backoff", **where, "failures": self.policy.failures,
                "retry_in": round(step.pause_until - self._clock(), 3), "error": step.error})
        elif isinstance(outcome, Refused):
            log.warning("the portal refused outbox items", extra={
                "event": "outbox.refused", **where, "status": outcome.status,
                "error": step.error, "split": not step.count_attempt,
                "given_up": bool(step.drop)})

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "state": "backing off" if not self.policy.may_send(now) else "ready",
            "failures": self.policy.failures,
            "retry_at": self.policy.paused_until or None,
            "delivered": dict(self.delivered),
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
        }
