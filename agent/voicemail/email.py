"""Voicemail to e-mail: each new message, as a WAV attachment, through the customer's SMTP.

Opt-in twice: the site (``voicemail.email.enabled``, with ``voicemail.email.smtp``) AND the
user (``users[].voicemail_to_email``, with ``users[].email``). Both are checked when a
message arrives (nothing is queued otherwise) and again at every attempt (a withdrawn
opt-in, a removed user or a removed address drops the job, logged).

Durable queue: one row per message in the store's ``vm_email_queue`` (migration 6). A row
holds references only (mailbox, message id, attempts, next attempt, last error): the audio
is read and decrypted from the voicemail store at send time and lives in memory only for
the send; the recipient and the mail server come from the current site document. Nothing
unencrypted sits in the queue.

Delivery is at least once: a row is removed after the server accepted the message. A
crash in between sends it again after the restart, with the same ``Message-ID``
(``<message id>.<mailbox>.voicemail@<sender domain>``) so that mail clients can tell.

Retries: a failed attempt is retried after 1 min, doubling up to 1 h between attempts,
at most ``max_attempts`` (48: about two days) in all; then the job is given up, which is
logged as an error and audited (``voicemail.email_failed``). A permanent refusal (5xx to
the recipient or to the data, an audio file that fails authentication) is given up at
once. A message deleted meanwhile drops its job (logged). Every delivery is audited
(``voicemail.emailed``: mailbox and message id, never the address or the audio).

Finding new messages: :class:`VoicemailStore` tells its hooks ``(mailbox, new, saved)``
after a change, from the thread that made it (the store commits first). The sender lists
that mailbox and queues messages in the ``new`` folder that it has not seen before and
that arrived after it attached, so old messages, and messages moved back to ``new``, are
never mailed. The known gap: a crash between the message's commit and the hook loses that
message's e-mail (the message itself is safe). :meth:`VoicemailEmailSender.message_saved`
takes a saved message directly (for a caller that has the :class:`MessageInfo`).

TLS: STARTTLS is required when ``starttls`` is on (a server that does not offer it is an
error, never a silent plain-text send); the certificate and host name are verified
against the system's CAs unless ``verify_tls`` is off. AUTH when ``username`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiosmtplib

from agent.prompts.wavfile import write_wav
from agent.site import Site, SmtpSettings, User
from agent.store import VmEmailJob

from .arrivals import NewMessageWatch
from .store import (
    SAMPLE_RATE,
    CorruptAudio,
    MessageInfo,
    NoSuchMessage,
    StorageError,
    VoicemailStore,
)

__all__ = [
    "FIRST_RETRY",
    "MAX_ATTEMPTS",
    "MAX_RETRY",
    "VoicemailEmailSender",
    "build_email",
    "retry_delay",
]

log = logging.getLogger(__name__)

FIRST_RETRY: Final = 60.0  #: seconds after the first failure
MAX_RETRY: Final = 3600.0  #: the longest wait between attempts
MAX_ATTEMPTS: Final = 48  #: 1+2+4+8+16+32 min, then hourly: about 43 h in all
SMTP_TIMEOUT: Final = 60.0
#: At most this long asleep, whatever the queue says (a clock step, a lost wake-up).
MAX_SLEEP: Final = 300.0
BATCH: Final = 50
_ERROR_CHARS: Final = 500


def retry_delay(attempts: int, *, first: float = FIRST_RETRY, cap: float = MAX_RETRY) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based): 1 min, 2, 4 ...
    up to 1 h."""
    if attempts < 1:
        return 0.0
    return float(min(cap, first * 2 ** min(attempts - 1, 32)))


# --------------------------------------------------------------------------- the e-mail


def _clean(text: str, limit: int = 100) -> str:
    """Caller ids come from the network: no control characters (header injection), no
    line breaks, bounded length."""
    out = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    return " ".join(out.split())[:limit]


def _who(info: MessageInfo) -> str:
    name, number = _clean(info.caller_name), _clean(info.caller, 40)
    if name and number and name != number:
        return f"{name} ({number})"
    return name or number or "an unknown caller"


def _duration(seconds: float) -> str:
    total = max(1, round(seconds))
    return f"{total // 60}:{total % 60:02d}"


def build_email(info: MessageInfo, audio_ulaw: bytes, *, site: Site, user: User,
                smtp: SmtpSettings) -> EmailMessage:
    """The e-mail for one message: text body and the audio as an 8 kHz µ-law WAV."""
    assert user.email is not None
    zone = ZoneInfo(site.site.timezone)
    received = datetime.fromtimestamp(info.received_at, zone)
    who, length = _who(info), _duration(info.duration)
    msg = EmailMessage()
    msg["Subject"] = f"New voicemail from {who} ({length})"
    msg["From"] = Address(display_name=f"{_clean(site.site.name)} voicemail",
                          addr_spec=smtp.from_address)
    msg["To"] = Address(display_name=_clean(user.name), addr_spec=user.email)
    msg["Date"] = format_datetime(received)
    domain = smtp.from_address.rsplit("@", 1)[1]
    msg["Message-ID"] = f"<{info.id}.{info.mailbox}.voicemail@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to us
    msg.set_content(
        f"You have a new voicemail message in mailbox {info.mailbox}.\n"
        "\n"
        f"From:     {who}\n"
        f"Received: {received:%A %d %B %Y, %H:%M:%S} ({site.site.timezone})\n"
        f"Length:   {length}\n"
        "\n"
        "The message is attached as a WAV file. It also stays in your mailbox.\n"
    )
    msg.add_attachment(
        write_wav(audio_ulaw, sample_rate=SAMPLE_RATE), maintype="audio", subtype="wav",
        filename=f"voicemail-{received:%Y%m%d-%H%M%S}.wav",
    )
    return msg


# --------------------------------------------------------------------------- the sender


@dataclass(frozen=True, slots=True)
class _Target:
    user: User
    smtp: SmtpSettings


def _target(site: Site, mailbox: str) -> _Target | str:
    """Who gets ``mailbox``'s messages by e-mail, or why nobody does."""
    settings = site.voicemail.email
    if not settings.enabled or settings.smtp is None:
        return "voicemail to e-mail is off for the site"
    user = site.user_by_extension(mailbox)
    if user is None:
        return "no user has that extension"
    if not user.voicemail_to_email:
        return "the user has not opted in"
    if user.email is None:
        return "the user has no e-mail address"
    return _Target(user, settings.smtp)


class _Permanent(Exception):
    """A failure that retrying will not fix."""


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(r.code >= 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return exc.code >= 500
    return False


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:_ERROR_CHARS]


class VoicemailEmailSender:
    """The queue and its asyncio task. ``site`` returns the current site document.

    Thread-safe entry points (any thread): :meth:`message_saved` (called for each message
    that arrives after :meth:`attach`, see agent.voicemail.arrivals). Loop side: :meth:`start`,
    :meth:`stop`, :meth:`run_once` (one pass over the due jobs; also for tests),
    :meth:`status`.
    """

    def __init__(
        self,
        voicemail: VoicemailStore,
        site: Callable[[], Site],
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = MAX_ATTEMPTS,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
        timeout: float = SMTP_TIMEOUT,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_attempts < 1 or first_retry <= 0 or max_retry < first_retry:
            raise ValueError("max_attempts and the retry delays must be positive")
        self.voicemail = voicemail
        self.store = voicemail.store
        self._site = site
        self.clock = clock
        self.max_attempts = max_attempts
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.timeout = timeout
        #: Used when verify_tls is on; None: the system's CAs (loaded at the first send).
        self.tls_context = tls_context
        self._arrivals = NewMessageWatch(voicemail, self.message_saved, folder="new")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.enqueued = 0
        self.delivered = 0
        self.failed_attempts = 0
        self.gave_up = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_delivery_at: float | None = None

    # ---- finding new messages (any thread) --------------------------------------

    def attach(self) -> Callable[[], None]:
        """Subscribe to the voicemail store: messages arriving from now on are queued
        (when both opt-ins are on). Returns the unsubscribe function."""
        return self._arrivals.attach()

    def detach(self) -> None:
        self._arrivals.detach()

    def message_saved(self, info: MessageInfo) -> bool:
        """Queue the e-mail of a just-saved message if both opt-ins are on and the user
        has an address. True if a job was queued. Safe from any thread."""
        target = _target(self._site(), info.mailbox)
        if isinstance(target, str):
            log.debug("voicemail not e-mailed",
                      extra={"mailbox": info.mailbox, "message_id": info.id, "why": target})
            return False
        job = self.store.vm_email_enqueue(info.mailbox, info.id, self.clock())
        if job is None:
            return False
        self.enqueued += 1
        log.info("voicemail e-mail queued",
                 extra={"mailbox": info.mailbox, "message_id": info.id, "job": job})
        self.wake()
        return True

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    # ---- the task ---------------------------------------------------------------

    def start(self) -> None:
        """Start the sending task on the running loop (attaches too)."""
        self.attach()
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="voicemail-email")

    async def stop(self) -> None:
        self.detach()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop = self._wake = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self.run_once()
                due = self.store.vm_email_next_due()
            except Exception:  # the queue is durable: log, and try again later
                log.exception("voicemail e-mail queue pass failed")
                due = self.clock() + self.first_retry
            sleep = MAX_SLEEP if due is None else min(MAX_SLEEP, max(0.0, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    async def run_once(self, now: float | None = None) -> int:
        """Attempt every job due at ``now``; returns how many were attempted."""
        now = self.clock() if now is None else now
        attempted = 0
        done: set[int] = set()
        while True:
            jobs = [j for j in self.store.vm_email_jobs(due_before=now, limit=BATCH)
                    if j.id not in done]
            if not jobs:
                return attempted
            for job in jobs:
                done.add(job.id)
                attempted += 1
                await self._attempt(job)

    async def _attempt(self, job: VmEmailJob) -> None:
        where = {"mailbox": job.mailbox, "message_id": job.message_id, "job": job.id}
        target = _target(self._site(), job.mailbox)
        if isinstance(target, str):
            self._drop(job, target)
            return
        try:
            msg = await asyncio.to_thread(self._build, job, target)
        except NoSuchMessage:
            self._drop(job, "the message was deleted")
            return
        except CorruptAudio as exc:
            self._give_up(job, job.attempts + 1, _describe(exc))
            return
        except StorageError as exc:
            self._failed(job, _describe(exc))
            return
        try:
            await self._send(msg, target)
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            if _is_permanent(exc):
                self._give_up(job, job.attempts + 1, _describe(exc))
            else:
                self._failed(job, _describe(exc))
            return
        now = self.clock()
        self.store.vm_email_finish(
            job.id, now=now,
            audit={"action": "voicemail.emailed", "mailbox": job.mailbox,
                   "message_id": job.message_id, "attempts": job.attempts + 1},
        )
        self.delivered += 1
        self.last_delivery_at = now
        log.info("voicemail e-mailed", extra={**where, "attempts": job.attempts + 1})

    def _build(self, job: VmEmailJob, target: _Target) -> EmailMessage:
        info = self.voicemail.message(job.mailbox, job.message_id)
        audio = self.voicemail.read_audio(job.mailbox, job.message_id)
        return build_email(info, audio, site=self._site(), user=target.user, smtp=target.smtp)

    def _tls_context(self, smtp: SmtpSettings) -> ssl.SSLContext:
        if not smtp.verify_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.tls_context is None:  # the system's CAs, loaded once
            self.tls_context = ssl.create_default_context()
        return self.tls_context

    async def _send(self, msg: EmailMessage, target: _Target) -> None:
        smtp = target.smtp
        assert target.user.email is not None
        await aiosmtplib.send(
            msg,
            sender=smtp.from_address,
            recipients=[target.user.email],
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=None if smtp.password is None else smtp.password.get_secret_value(),
            start_tls=smtp.starttls,
            use_tls=False,
            validate_certs=smtp.verify_tls,
            tls_context=self._tls_context(smtp) if smtp.starttls else None,
            timeout=self.timeout,
        )

    # ---- outcomes ---------------------------------------------------------------

    def _drop(self, job: VmEmailJob, why: str) -> None:
        if self.store.vm_email_finish(job.id):
            self.dropped += 1
            log.info("voicemail e-mail dropped", extra={
                "mailbox": job.mailbox, "message_id": job.message_id, "job": job.id, "why": why})

    def _failed(self, job: VmEmailJob, error: str) -> None:
        attempts = job.attempts + 1
        self.failed_attempts += 1
        self.last_error = error
        if attempts >= self.max_attempts:
            self._give_up(job, attempts, error)
            return
        delay = retry_delay(attempts, first=self.first_retry, cap=self.max_retry)
        self.store.vm_email_failed(job.id, attempts=attempts,
                                   next_attempt_at=self.clock() + delay, error=error)
        log.warning("voicemail e-mail not sent; will retry", extra={
            "mailbox": job.mailbox, "message_id": job.message_id, "job": job.id,
            "attempts": attempts, "retry_in": delay, "why": error})

    def _give_up(self, job: VmEmailJob, attempts: int, error: str) -> None:
        self.last_error = error
        if self.store.vm_email_finish(
            job.id, now=self.clock(),
            audit={"action": "voicemail.email_failed", "mailbox": job.mailbox,
                   "message_id": job.message_id, "attempts": attempts, "error": error},
        ):
            self.gave_up += 1
            log.error("voicemail e-mail given up", extra={
                "mailbox": job.mailbox, "message_id": job.message_id, "job": job.id,
                "attempts": attempts, "why": error})

    # ---- introspection ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        jobs = self.store.vm_email_jobs()
        return {
            "running": self._task is not None and not self._task.done(),
            "queued": len(jobs),
            "retrying": sum(1 for j in jobs if j.attempts > 0),
            "next_attempt_at": min((j.next_attempt_at for j in jobs), default=None),
            "enqueued": self.enqueued,
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
            "gave_up": self.gave_up,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "last_delivery_at": self.last_delivery_at,
        }
