"""Config sync with the portal: pull, check, apply, report; push end-user changes back.

The portal is the source of the site configuration (docs/portal-api.md, "Site sync"). The
loop (:class:`ConfigSync`):

* **pulls** at start (``wait=0``), then keeps a long-poll ``get_site(etag, wait=long_poll)``
  outstanding (a 304 just loops). When the portal answers 304 or the same version without
  holding the request (no long-poll support), it pulls every ``poll_interval`` seconds
  instead: the periodic fallback. :meth:`ConfigSync.poke` pulls now.
* **backs off** on :class:`PortalUnavailable` (tunnel down, network, 5xx, truncated or
  oversized answers) and on refusals: exponential with jitter, capped at ``backoff_cap``;
  any successful pull resets it.
* **decides** with the pure :func:`decide`: skip a version already applied or already
  failed (its ETag is remembered, so a bad version is not retried in a loop; a newer one
  is tried), refuse a version by a *partner* while partner access is off in the applied
  configuration or in the new document, reject a document that ``parse_site`` refuses
  (every error line), else apply.
* **applies** through the injected ``apply(site, update, author)`` callback, which switches
  SIP, dial plan and provisioning together or raises :class:`ApplyFailed` and changes
  nothing. A refusal or failure keeps the running configuration and is reported to the
  portal as ``state="failed"`` with every error; a success is persisted as the last good
  configuration (``STATE_DIR/cloud/site.json``, :func:`load_last_good`) and reported
  ``applied``. The agent starts offline on the last good configuration.
* **pushes** changes made on the device by a user or the customer admin
  (:meth:`ConfigSync.queue_change`, kept in ``STATE_DIR/cloud/changes.json`` across
  restarts) against the applied version. On a 409 the portal wins: the conflicting paths
  are dropped (logged and audited), the rest pushed again with ``base_version`` = the
  portal's current version. Secrets never leave the box: such a change is refused when
  queued. The portal's new version comes back through the normal pull.

Audit: the ``apply`` callback gets the author, so the agent audits ``site.applied`` itself;
this module audits ``site.partner_refused``, ``site.apply_failed``,
``site.change_conflict`` and ``site.change_dropped`` through ``audit(action, detail,
actor)`` with actor ``"<role>:<id>"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.atomic import write_atomic
from agent.backoff import Backoff
from agent.cloud.identity import CLOUD_DIRNAME
from agent.cloud.portal_client import (
    AUTHOR_ROLES,
    DEFAULT_AUTHOR,
    Author,
    Change,
    Conflict,
    PortalRejected,
    PortalUnavailable,
    SiteUpdate,
    _names_a_secret,
)
from agent.site import Site, SiteError, parse_site
from agent.voicemail.sealed import SealError, load_or_create_secret

__all__ = [
    "CHANGES_FILENAME",
    "DEFAULT_AUTHOR",
    "SITE_FILENAME",
    "ApplyFailed",
    "Author",
    "ConfigSync",
    "Decision",
    "LastGood",
    "PendingChange",
    "SiteClient",
    "backoff_delay",
    "decide",
    "drop_conflicts",
    "load_last_good",
    "partner_access_enabled",
    "partner_refusal",
]

log = logging.getLogger(__name__)

SITE_FILENAME: Final = "site.json"
CHANGES_FILENAME: Final = "changes.json"
LONG_POLL: Final = 25
POLL_INTERVAL: Final = 60.0
BACKOFF_BASE: Final = 1.0
BACKOFF_CAP: Final = 60.0
#: How many failed ETags are remembered (a newer version is always tried).
FAILED_MEMORY: Final = 32
#: Status reports kept while the portal is unreachable (the newest win).
MAX_PENDING_REPORTS: Final = 16


class ApplyFailed(Exception):
    """The running agent refused the configuration; nothing changed. One line per error."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = [str(e) for e in errors] or ["the agent refused the configuration"]
        super().__init__("\n".join(self.errors))


class SiteClient(Protocol):
    """The part of :class:`agent.cloud.portal_client.PortalClient` the sync uses."""

    async def get_site(self, *, etag: str | None = None,
                       wait: float = 0) -> SiteUpdate | None: ...

    async def post_site_status(self, *, version: int, state: str, errors: Sequence[str] = (),
                               applied_at: float) -> None: ...

    async def push_changes(self, *, base_version: int, author_role: str, author_id: str,
                           changes: Sequence[Change]) -> int: ...


ApplyCallback = Callable[[Site, SiteUpdate, Author], Awaitable[None]]
AuditCallback = Callable[[str, dict[str, Any], str], None]


# ---------------------------------------------------------------------- the last good config


@dataclass(frozen=True, slots=True)
class LastGood:
    """The configuration applied last, as persisted in ``STATE_DIR/cloud/site.json``."""

    version: int
    etag: str
    document: dict[str, Any]
    author: Author
    applied_at: float
    site: Site = field(compare=False, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "etag": self.etag, "document": self.document,
                "author": {"role": self.author.role, "id": self.author.id},
                "applied_at": self.applied_at}


def _site_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / CLOUD_DIRNAME / SITE_FILENAME


# The last good document holds the SIP line passwords the phones need: AES-256-GCM at rest,
# with a key of its own beside it (0600), like the voicemail files.
_SITE_MAGIC: Final = b"EPSC\x01"
_SITE_AAD: Final = b"edgepbx cloud last good site v1"
SITE_KEY_FILENAME: Final = "site.key"


def _site_aead(state_dir: str | Path) -> AESGCM:
    return AESGCM(load_or_create_secret(Path(state_dir) / CLOUD_DIRNAME / SITE_KEY_FILENAME))


def _seal_site(state_dir: str | Path, plaintext: bytes) -> bytes:
    nonce = os.urandom(12)
    return _SITE_MAGIC + nonce + _site_aead(state_dir).encrypt(nonce, plaintext, _SITE_AAD)


def _open_site(state_dir: str | Path, raw: bytes) -> bytes:
    """The JSON of a sealed file; a plain JSON file (written before sealing) as it is."""
    if not raw.startswith(_SITE_MAGIC):
        return raw
    body = raw[len(_SITE_MAGIC):]
    try:
        return _site_aead(state_dir).decrypt(body[:12], body[12:], _SITE_AAD)
    except (InvalidTag, ValueError):
        raise ValueError("it cannot be decrypted (altered, truncated or another key)") from None


def load_last_good(state_dir: str | Path) -> LastGood | None:
    """The last good configuration, validated again with ``parse_site``, or None.

    None when there is none yet; also when the file is unreadable, corrupt or no longer
    valid: that is logged as an error (the box then starts without a portal configuration
    and takes the portal's current one at the next pull), never raised.
    """
    path = _site_path(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the last good site configuration %s: %s", path, exc)
        return None
    try:
        data = json.loads(_open_site(state_dir, raw))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version, etag = data.get("version"), data.get("etag")
        document, author, applied_at = data.get("document"), data.get("author"), \
            data.get("applied_at")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("version is not an integer")
        if not isinstance(etag, str) or not etag:
            raise ValueError("etag is not a string")
        if not isinstance(document, dict):
            raise ValueError("document is not an object")
        if not isinstance(author, dict) or author.get("role") not in AUTHOR_ROLES or \
                not isinstance(author.get("id"), str) or not author["id"]:
            raise ValueError("author is not {role, id}")
        if not isinstance(applied_at, int | float) or isinstance(applied_at, bool):
            raise ValueError("applied_at is not a number")
    except SealError as exc:
        log.error("cannot read the key of the last good site configuration: %s", exc)
        return None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
        log.error("the last good site configuration %s is corrupt (%s); ignoring it", path,
                  exc)
        return None
    try:
        site = parse_site(document)
    except SiteError as exc:
        log.error("the last good site configuration %s (version %s) no longer validates; "
                  "ignoring it:\n%s", path, version, "\n".join(exc.errors))
        return None
    return LastGood(version, etag, document, Author(author["role"], author["id"]),
                    float(applied_at), site)


# ---------------------------------------------------------------------- pure decisions


def partner_access_enabled(document: Mapping[str, Any]) -> bool:
    """``privacy.partner_access`` of a raw site document (default true).

    Read from the raw document so it works whatever the document's other problems are.
    Fails closed: anything but ``true`` or absent (a malformed value) counts as off.
    """
    privacy = document.get("privacy", {})
    if not isinstance(privacy, Mapping):
        return False
    return privacy.get("partner_access", True) is True


def partner_refusal(update: SiteUpdate, current: LastGood | None) -> str | None:
    """The refusal line for a partner's version while partner access is off, else None."""
    if update.author.role != "partner":
        return None
    off_now = current is not None and not partner_access_enabled(current.document)
    if not off_now and partner_access_enabled(update.document):
        return None
    return (f"partner access is disabled by the customer admin: version {update.version} "
            f"by partner {update.author.id} refused")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a pulled version. ``action``:

    * ``skip``: nothing (already applied, or this ETag already failed);
    * ``refuse``: a partner's version while partner access is off; report ``errors``;
    * ``reject``: the document does not validate; report ``errors``;
    * ``apply``: hand ``site`` to the agent.
    """

    action: Literal["skip", "refuse", "reject", "apply"]
    site: Site | None = None
    errors: tuple[str, ...] = ()
    reason: str = ""


def decide(update: SiteUpdate, current: LastGood | None, failed_etags: Collection[str], *,
           parse: Callable[[Any], Site] = parse_site) -> Decision:
    """Pure: what to do with ``update`` given the applied configuration ``current``."""
    if current is not None and update.etag == current.etag:
        return Decision("skip", reason="already applied")
    if update.etag in failed_etags:
        return Decision("skip", reason="already failed")
    refusal = partner_refusal(update, current)
    if refusal is not None:
        return Decision("refuse", errors=(refusal,), reason="partner access is off")
    try:
        site = parse(update.document)
    except SiteError as exc:
        return Decision("reject", errors=tuple(exc.errors) or ("the document is invalid",),
                        reason="invalid document")
    return Decision("apply", site=site)


def backoff_delay(attempt: int, rng: random.Random, *, base: float = BACKOFF_BASE,
                  cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with jitter for the ``attempt``-th failure in a row (1, 2, ...):
    uniform in [d/2, d] with d = min(cap, base * 2**(attempt-1))."""
    d = Backoff(base=base, cap=cap).nominal(attempt)
    return d / 2 + rng.random() * d / 2


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A change made on the device, waiting to be pushed. ``seq`` orders and identifies it."""

    seq: int
    path: str
    value: Any
    author: Author
    queued_at: float

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "path": self.path, "value": self.value,
                "author": {"role": self.author.role, "id": self.author.id},
                "queued_at": self.queued_at}


def _norm_path(path: str) -> str:
    return path.replace(" ", "").replace('"', "").replace("'", "")


def drop_conflicts(batch: Sequence[PendingChange], conflicts: Iterable[str]
                   ) -> tuple[list[PendingChange], list[PendingChange]]:
    """Pure: split ``batch`` into (kept, dropped) by the paths a 409 named.

    If the 409 names paths none of which match (the portal spelled them differently), the
    whole batch is dropped: the portal wins, and a push that can never succeed is not
    retried forever.
    """
    named = {_norm_path(p) for p in conflicts}
    dropped = [c for c in batch if _norm_path(c.path) in named]
    if named and not dropped:
        return [], list(batch)
    return [c for c in batch if c not in dropped], dropped


def _batches(pending: Sequence[PendingChange]) -> list[tuple[Author, list[PendingChange]]]:
    """Pending changes grouped by author (one push per author), in queue order."""
    groups: dict[Author, list[PendingChange]] = {}
    for change in pending:
        groups.setdefault(change.author, []).append(change)
    return list(groups.items())


# ---------------------------------------------------------------------- the loop


class ConfigSync:
    """Keeps the box's site configuration in sync with the portal (module docstring).

    ``client`` is the portal client, or a callable returning it (raising
    :class:`TunnelNotReady` while the tunnel is down). ``clock`` gives epoch seconds for
    timestamps, ``sleep`` waits (both injectable for tests), ``rng`` jitters the backoff.
    """

    def __init__(
        self, *, client: SiteClient | Callable[[], SiteClient], state_dir: str | Path,
        apply: ApplyCallback, audit: AuditCallback | None = None,
        long_poll: float = LONG_POLL, poll_interval: float = POLL_INTERVAL,
        backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._dir = Path(state_dir) / CLOUD_DIRNAME
        self._apply = apply
        self._audit_cb = audit
        self._long_poll = max(0, min(60, math.floor(long_poll)))
        self._poll_interval = poll_interval
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._poke = asyncio.Event()
        self._changed = asyncio.Event()
        self._poked = False
        self._failed: dict[str, None] = {}  # insertion-ordered set of failed ETags
        self._reports: list[dict[str, Any]] = []
        self._attempt = 0
        self._state = "offline"
        self._last_pull_at: float | None = None
        self._last_error: str | None = None
        self._file_error: str | None = None  # a state file could not be written
        self._next_retry_at: float | None = None
        self._failure: dict[str, Any] | None = None
        self.current: LastGood | None = load_last_good(state_dir)
        self._seen_etag: str | None = self.current.etag if self.current else None
        self._pulled_once = False
        self._next_seq = 1
        self._pending: list[PendingChange] = self._load_changes()

    # -- public

    def poke(self) -> None:
        """Pull now (and push pending changes): wakes a long-poll or a backoff wait."""
        self._poked = True
        self._poke.set()

    def status(self) -> dict[str, Any]:
        cur = self.current
        return {
            "state": self._state,
            "applied_version": cur.version if cur else None,
            "applied_etag": cur.etag if cur else None,
            "applied_at": cur.applied_at if cur else None,
            "applied_author": cur.author.actor if cur else None,
            "last_pull_at": self._last_pull_at,
            "last_error": self._last_error or self._file_error,
            "next_retry_at": self._next_retry_at if self._state == "backoff" else None,
            "last_failed": dict(self._failure) if self._failure else None,
            "pending_changes": len(self._pending),
            "pending_reports": len(self._reports),
        }

    @property
    def pending_changes(self) -> list[PendingChange]:
        return list(self._pending)

    def queue_change(self, path: str, value: Any, author_role: str, author_id: str) -> bool:
        """Queue a change made on the device, persisted at once (survives a restart).

        Call it from the event loop's thread. ``author_role`` is ``user`` or ``admin``
        (ValueError otherwise; also for a value that is not JSON). A change to a secret
        (password, PIN, HA1, key) never leaves the box: it is dropped with an error log
        and False is returned. A newer change to the same path replaces the queued one.
        """
        if author_role not in ("user", "admin"):
            raise ValueError(f"author role must be 'user' or 'admin', not {author_role!r}")
        if not author_id or not isinstance(author_id, str):
            raise ValueError("author id must be a non-empty string")
        if not path or not isinstance(path, str):
            raise ValueError("path must be a non-empty string")
        json.dumps(value, allow_nan=False)  # TypeError/ValueError: not a JSON value
        author = Author(author_role, author_id)
        if _names_a_secret(path):
            log.error("not pushing %s to the portal: it is a secret, and secrets never leave "
                      "the box", path)
            self._audit("site.change_dropped", {"path": path, "reason": "secret"}, author)
            return False
        change = PendingChange(self._next_seq, path, value, author, self._clock())
        self._next_seq += 1
        self._pending = [c for c in self._pending if c.path != path] + [change]
        self._save_changes()
        self._changed.set()
        return True

    async def run(self) -> None:
        """The loop: cancel the task to stop it."""
        try:
            while True:
                delay = await self.step()
                if delay > 0:
                    await self._pause(delay, backoff=self._state == "backoff")
        finally:
            self._state = "offline"

    async def step(self) -> float:
        """One cycle: send pending reports, push changes, pull once, handle the answer.

        Returns the seconds to wait before the next cycle (0: go on at once).
        """
        self._changed.clear()
        self._poke.clear()
        poked, self._poked = self._poked, False
        try:
            client = self._client_now()
            await self._flush_reports(client)
            if self._pending:
                await self._push(client)
            # Pull without waiting at start, when poked, and to recover from a backoff.
            quick = poked or not self._pulled_once or self._attempt > 0 or self._long_poll == 0
            wait = 0 if quick else self._long_poll
            if quick:
                self._state = "pulling"
            loop = asyncio.get_running_loop()
            started = loop.time()
            interrupted, update = await self._pull(client, wait)
            if interrupted:
                return 0.0
            self._pull_ok()
            work = update is not None and await self._handle(update)
            await self._flush_reports(client)
        except PortalUnavailable as exc:
            return self._back_off(f"portal unavailable: {exc}")
        except PortalRejected as exc:
            return self._back_off(f"portal refused the request: {exc}")
        except Exception as exc:  # e.g. the client factory: never let the loop die
            log.exception("config sync cycle failed")
            return self._back_off(f"config sync failed: {type(exc).__name__}: {exc}")
        self._settle()
        if work:
            return 0.0
        if self._long_poll == 0 or (wait > 0 and loop.time() - started < wait / 2):
            return self._poll_interval  # no long-poll at the portal: poll periodically
        return 0.0

    # -- one cycle's parts

    def _client_now(self) -> SiteClient:
        client = self._client
        if callable(client) and not hasattr(client, "get_site"):
            return client()  # may raise TunnelNotReady
        return client  # type: ignore[return-value]

    async def _pull(self, client: SiteClient, wait: int) -> tuple[bool, SiteUpdate | None]:
        """(interrupted, update). A long-poll gives way to :meth:`poke` and new changes."""
        request = client.get_site(etag=self._seen_etag, wait=wait)
        if wait == 0:
            return False, await request
        pull = asyncio.ensure_future(request)
        waiters = [asyncio.ensure_future(self._poke.wait()),
                   asyncio.ensure_future(self._changed.wait())]
        try:
            await asyncio.wait([pull, *waiters], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            pull.cancel()  # this task is cancelled: do not leave the long-poll behind
            raise
        finally:
            for w in waiters:
                w.cancel()
        if pull.done():
            return False, pull.result()
        pull.cancel()
        try:
            await pull
        except asyncio.CancelledError:
            # Our own cancel of the long-poll, unless this task is being cancelled too.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception as exc:  # noqa: BLE001 - the abandoned long-poll's own failure
            log.debug("abandoned long-poll ended with %r", exc)
        return True, None

    def _pull_ok(self) -> None:
        self._pulled_once = True
        self._attempt = 0
        self._next_retry_at = None
        self._last_pull_at = self._clock()

    async def _handle(self, update: SiteUpdate) -> bool:
        """Decide and act on a pulled version; True if it was something new."""
        decision = decide(update, self.current, self._failed)
        self._seen_etag = update.etag
        if decision.action == "skip":
            log.debug("site version %s: %s", update.version, decision.reason)
            return False
        if decision.action == "refuse":
            log.warning("%s", decision.errors[0])
            self._audit("site.partner_refused", {
                "version": update.version, "etag": update.etag,
                "error": decision.errors[0]}, update.author)
            self._failed_version(update, decision.errors, audit=False)
            return True
        if decision.action == "reject":
            log.error("site version %s by %s is invalid; keeping the running configuration:"
                      "\n%s", update.version, update.author.actor, "\n".join(decision.errors))
            self._failed_version(update, decision.errors)
            return True
        assert decision.site is not None
        self._state = "applying"
        try:
            await self._apply(decision.site, update, update.author)
        except ApplyFailed as exc:
            log.error("the agent refused site version %s; keeping the running "
                      "configuration:\n%s", update.version, "\n".join(exc.errors))
            self._failed_version(update, exc.errors)
            return True
        except Exception as exc:
            log.exception("applying site version %s failed", update.version)
            self._failed_version(update, [f"the agent could not apply version "
                                          f"{update.version}: {type(exc).__name__}: {exc}"])
            return True
        applied_at = self._clock()
        self.current = LastGood(update.version, update.etag, update.document, update.author,
                                applied_at, decision.site)
        self._persist(self.current)
        self._report(update.version, "applied", [], applied_at)
        log.info("applied site version %s by %s", update.version, update.author.actor)
        return True

    def _failed_version(self, update: SiteUpdate, errors: Sequence[str], *,
                        audit: bool = True) -> None:
        now = self._clock()
        self._failed[update.etag] = None
        while len(self._failed) > FAILED_MEMORY:
            del self._failed[next(iter(self._failed))]
        self._failure = {"version": update.version, "etag": update.etag,
                         "author": update.author.actor, "errors": list(errors), "at": now}
        if audit:
            self._audit("site.apply_failed", {"version": update.version, "etag": update.etag,
                                              "errors": list(errors)}, update.author)
        self._report(update.version, "failed", errors, now)

    def _report(self, version: int, state: str, errors: Sequence[str], at: float) -> None:
        self._reports.append({"version": version, "state": state, "errors": list(errors),
                              "applied_at": at})
        del self._reports[:-MAX_PENDING_REPORTS]

    async def _flush_reports(self, client: SiteClient) -> None:
        while self._reports:
            report = self._reports[0]
            try:
                await client.post_site_status(**report)
            except PortalRejected as exc:
                log.error("the portal refused the status report for version %s: %s",
                          report["version"], exc)
            self._reports.pop(0)

    async def _push(self, client: SiteClient) -> None:
        if self.current is None:
            return  # nothing applied yet: no base version to push against
        self._state = "pushing"
        for author, group in _batches(self._pending):
            batch, base = group, self.current.version
            for _ in range(len(batch) + 2):  # each 409 drops something or moves the base
                if not batch:
                    break
                try:
                    version = await client.push_changes(
                        base_version=base, author_role=author.role, author_id=author.id,
                        changes=[Change(c.path, c.value) for c in batch])
                except Conflict as exc:
                    batch, dropped = drop_conflicts(batch, exc.conflicts)
                    for c in dropped:
                        log.warning("change to %s by %s conflicts with the portal; the portal "
                                    "wins", c.path, author.actor)
                        self._audit("site.change_conflict", {
                            "path": c.path, "base_version": base,
                            "current_version": exc.current_version,
                            "resolution": "portal wins"}, author)
                    self._forget(dropped)
                    base = exc.current_version
                    continue
                except PortalRejected as exc:
                    log.error("the portal refused changes by %s (%s); dropping them: %s",
                              author.actor, exc, ", ".join(c.path for c in batch))
                    for c in batch:
                        self._audit("site.change_dropped", {"path": c.path,
                                                            "reason": str(exc)}, author)
                    self._forget(batch)
                    break
                except ValueError as exc:  # the client refused to send (a secret)
                    log.error("not pushing changes by %s: %s", author.actor, exc)
                    for c in batch:
                        self._audit("site.change_dropped", {"path": c.path,
                                                            "reason": str(exc)}, author)
                    self._forget(batch)
                    break
                log.info("pushed %d change(s) by %s; portal version %s", len(batch),
                         author.actor, version)
                self._forget(batch)
                break

    def _forget(self, done: Sequence[PendingChange]) -> None:
        """Remove pushed or dropped changes (by seq: a path re-queued meanwhile stays)."""
        if not done:
            return
        seqs = {c.seq for c in done}
        self._pending = [c for c in self._pending if c.seq not in seqs]
        self._save_changes()

    def _back_off(self, message: str) -> float:
        self._attempt += 1
        delay = backoff_delay(self._attempt, self._rng, base=self._backoff_base,
                              cap=self._backoff_cap)
        (log.warning if self._attempt == 1 else log.info)(
            "%s; retrying in %.1f s", message, delay)
        self._state = "backoff"
        self._last_error = message
        self._next_retry_at = self._clock() + delay
        return delay

    def _settle(self) -> None:
        if self._seen_etag is not None and self._seen_etag in self._failed:
            self._state = "failed"
        else:
            self._state = "synced"
            self._last_error = None

    async def _pause(self, delay: float, *, backoff: bool) -> None:
        """Wait ``delay`` s; :meth:`poke` ends it early, a new change too unless backing off."""
        events = [self._poke] if backoff else [self._poke, self._changed]
        if any(e.is_set() for e in events):
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait([sleeper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, *waiters):
                t.cancel()

    # -- files and audit

    def _persist(self, good: LastGood) -> None:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            sealed = _seal_site(self._dir.parent, json.dumps(
                good.as_json(), ensure_ascii=False).encode())
            write_atomic(self._dir / SITE_FILENAME, sealed, mode=0o600)
            self._file_error = None
        except (OSError, SealError) as exc:
            self._file_error = f"cannot save the applied configuration: {exc}"
            log.error("cannot save the applied site configuration (version %s): %s; it is "
                      "running but will not survive a restart", good.version, exc)

    def _load_changes(self) -> list[PendingChange]:
        path = self._dir / CHANGES_FILENAME
        try:
            data = json.loads(path.read_bytes())
            changes = [
                PendingChange(int(c["seq"]), str(c["path"]), c["value"],
                              Author(str(c["author"]["role"]), str(c["author"]["id"])),
                              float(c["queued_at"]))
                for c in data["changes"]
            ]
            if any(c.author.role not in ("user", "admin") for c in changes):
                raise ValueError("an author role is not user or admin")
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("the queue of changes to push %s is unreadable (%s); starting with an "
                      "empty queue (the file is kept as %s.corrupt)", path, exc, path.name)
            try:
                path.replace(path.with_name(path.name + ".corrupt"))
            except OSError:
                pass
            return []
        self._next_seq = max((c.seq for c in changes), default=0) + 1
        return changes

    def _save_changes(self) -> None:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            body = {"changes": [c.as_json() for c in self._pending]}
            write_atomic(self._dir / CHANGES_FILENAME,
                         json.dumps(body, ensure_ascii=False).encode(), mode=0o600)
            self._file_error = None
        except OSError as exc:
            self._file_error = f"cannot save the queue of changes: {exc}"
            log.error("cannot save the queue of changes to push: %s", exc)

    def _audit(self, action: str, detail: dict[str, Any], author: Author) -> None:
        if self._audit_cb is None:
            return
        try:
            self._audit_cb(action, detail, author.actor)
        except Exception:
            log.exception("cannot audit %s", action)
