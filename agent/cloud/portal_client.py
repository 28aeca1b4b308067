"""The portal client: the device side of the portal API v1 (docs/portal-api.md).

Two clients, on purpose:

* :class:`PortalClient` is for everything after enrollment. It speaks mutual TLS with the
  device certificate, trusts **only** the portal CA chain from the enrollment (never the
  system CA store), and binds every connection to the tunnel's inner address: it refuses to
  start, and refuses each request, when that address is not configured or not on the host
  (:class:`TunnelNotReady`). So portal traffic cannot leave outside the IKEv2 tunnel.
* :class:`EnrollmentClient` is the one exception: ``POST /v1/enroll`` with a one-time claim
  token goes over the outside network, server-auth TLS only, verified against the bootstrap
  portal CA shipped with the device. The tunnel needs the certificate that enrollment
  produces, so enrollment cannot go through it.

Both ignore proxy environment variables, never follow redirects, never retry (the outbox and
the sync loop decide about retries) and read at most 8 MiB of a response body (streamed and
capped; a longer or truncated body is :class:`BadResponse`).

Errors: :class:`PortalUnavailable` (retry later: network, TLS, timeouts, 5xx, 408, 429, bad or
truncated responses, tunnel down), :class:`PortalRejected` (the portal said no: other 4xx;
do not retry unchanged), :class:`Conflict` (409 on ``/v1/site/changes``), and
:class:`OptInRequired` (raised before any I/O when CDRs or voicemail backups would be sent
while the site's opt-in is off).

Voicemail backups are sealed here (:func:`seal_voicemail_backup`, format
``x25519-aesgcm-v1``) to the customer admin's X25519 public key, so the portal only ever
stores ciphertext; :func:`open_voicemail_backup` is the admin-side inverse used by restore.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import json
import math
import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Self

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.cdr import CallRecord, DailyCallStats, record_as_dict
from agent.cloud.identity import DeviceIdentity, NotEnrolled

__all__ = [
    "AUTHOR_ROLES",
    "BACKUP_ENCRYPTION",
    "DEFAULT_AUTHOR",
    "MAX_RESPONSE_BYTES",
    "MAX_WAIT_SECONDS",
    "Author",
    "BadResponse",
    "CdrUploadResult",
    "Change",
    "Conflict",
    "EnrollmentClient",
    "Heartbeat",
    "IssuedCertificate",
    "OptInRequired",
    "OptIns",
    "PortalClient",
    "PortalError",
    "PortalRejected",
    "PortalUnavailable",
    "PortalUntrusted",
    "ResponseTooLarge",
    "SealedBackup",
    "SiteUpdate",
    "TunnelNotReady",
    "UsageReport",
    "check_inner_address",
    "enroll_identity",
    "open_voicemail_backup",
    "renew_identity",
    "seal_voicemail_backup",
]

MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
MAX_WAIT_SECONDS: Final = 60
BACKUP_ENCRYPTION: Final = "x25519-aesgcm-v1"
DEFAULT_TIMEOUT: Final = 30.0
_USER_AGENT: Final = "edgepbx-agent"
_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_DAY_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BACKUP_MAGIC: Final = b"EPVB\x01"
#: Endpoints whose answer body the device ignores accept any of these.
_OK_NO_BODY: Final = (200, 201, 204)
#: Device-to-portal changes never carry secrets (DESIGN.md privacy table): a change whose
#: last path segment names one of these is refused before sending. Schema-driven secret
#: fields (agent/site.py) should replace this list once the site model marks them.
_SECRET_WORDS: Final = ("password", "passwd", "secret", "pin", "ha1", "private_key")
_BACKUP_INFO: Final = b"edgepbx voicemail backup x25519-aesgcm-v1"


# ---------------------------------------------------------------------- errors


class PortalError(Exception):
    """Base class of the portal client's errors."""


class PortalUnavailable(PortalError):
    """The portal could not be reached or gave no usable answer; try again later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TunnelNotReady(PortalUnavailable):
    """The tunnel's inner address is not configured or not on this host."""


class PortalUntrusted(PortalUnavailable):
    """The portal's certificate did not verify against the portal CA chain."""


class BadResponse(PortalUnavailable):
    """The response was truncated, malformed or not what the contract says."""


class ResponseTooLarge(BadResponse):
    """The response body was larger than the limit (8 MiB)."""


class PortalRejected(PortalError):
    """The portal refused the request (a 4xx); retrying it unchanged will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"portal refused the request: {status} {message}")
        self.status = status
        self.message = message


class Conflict(PortalRejected):
    """409 on ``/v1/site/changes``: ``conflicts`` were also changed at the portal."""

    def __init__(self, current_version: int, conflicts: list[str], message: str = "") -> None:
        super().__init__(409, message or f"conflicting paths: {', '.join(conflicts)}")
        self.current_version = current_version
        self.conflicts = conflicts


class OptInRequired(PortalError):
    """The data may leave the box only while the site's opt-in is on, and it is off."""


# ---------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class OptIns:
    """The site's upload opt-ins, as applied on the device. Both are off by default."""

    cdr_upload: bool = False
    voicemail_backup: bool = False


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    certificate_pem: str
    ca_chain_pem: str


#: Who may author a site version at the portal: a partner, the customer admin, or a user
#: (their own settings, pushed from the device).
AUTHOR_ROLES: Final = ("partner", "admin", "user")


@dataclass(frozen=True, slots=True)
class Author:
    """Who made a site version: ``role`` is one of :data:`AUTHOR_ROLES`."""

    role: str
    id: str

    @property
    def actor(self) -> str:
        """``"<role>:<id>"``, the audit log's actor."""
        return f"{self.role}:{self.id}"


#: A ``GET /v1/site`` answer without ``author`` (an older portal) is taken as the customer
#: admin's, made at the portal.
DEFAULT_AUTHOR: Final = Author("admin", "portal")


@dataclass(frozen=True, slots=True)
class SiteUpdate:
    version: int
    document: dict[str, Any]
    etag: str  #: as the portal sent it, quotes included; send it back as If-None-Match
    author: Author = DEFAULT_AUTHOR  #: who made this version (absent: admin "portal")


@dataclass(frozen=True, slots=True)
class Change:
    path: str  #: e.g. ``users[ann].forward.all``
    value: Any


@dataclass(frozen=True, slots=True)
class CdrUploadResult:
    stored: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    """One day's aggregates: the only usage data that leaves the box without an opt-in."""

    day: str  #: YYYY-MM-DD in the site's time zone
    calls: int
    answered: int
    abandoned: int
    avg_time_to_answer: float | None
    avg_hold: float | None
    registered_phones: int

    @classmethod
    def from_stats(cls, stats: DailyCallStats, registered_phones: int) -> UsageReport:
        return cls(
            day=stats.day, calls=stats.calls, answered=stats.answered,
            abandoned=stats.abandoned, avg_time_to_answer=stats.avg_time_to_answer,
            avg_hold=stats.avg_hold, registered_phones=registered_phones,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day, "calls": self.calls, "answered": self.answered,
            "abandoned": self.abandoned, "avg_time_to_answer": self.avg_time_to_answer,
            "avg_hold": self.avg_hold, "registered_phones": self.registered_phones,
        }


@dataclass(frozen=True, slots=True)
class Heartbeat:
    version: str  #: the agent's software version
    uptime: float
    registered_phones: int
    active_calls: int
    tunnel: str  #: the tunnel state, e.g. "up"
    site_version: int  #: the applied site version
    cert_expires: float  #: epoch seconds
    #: The upload outbox: queued and dropped items per kind (drops are never silent).
    outbox: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "version": self.version, "uptime": self.uptime,
            "registered_phones": self.registered_phones, "active_calls": self.active_calls,
            "tunnel": self.tunnel, "site_version": self.site_version,
            "cert_expires": self.cert_expires,
        }
        if self.outbox is not None:
            body["outbox"] = dict(self.outbox)
        return body


@dataclass(frozen=True, slots=True)
class SealedBackup:
    """A voicemail backup sealed by :func:`seal_voicemail_backup`: safe to upload."""

    backup_id: str
    mailbox: str
    data: bytes


# ---------------------------------------------------------------------- the tunnel address


def check_inner_address(address: str | None) -> str:
    """Return ``address`` normalised if it is an IP address present on this host.

    Raises :class:`TunnelNotReady` if it is missing, not an address, unspecified, or not
    bound to any interface (binding a socket to it fails), i.e. the tunnel is not up.
    """
    if not address:
        raise TunnelNotReady(
            "the tunnel's inner address is not configured: portal traffic goes only "
            "through the tunnel, so the portal client does not run without it"
        )
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise TunnelNotReady(f"tunnel inner address {address!r} is not an IP address") from exc
    if ip.is_unspecified:
        raise TunnelNotReady(f"tunnel inner address {ip} is the unspecified address")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((str(ip), 0))
        except OSError as exc:
            raise TunnelNotReady(
                f"tunnel inner address {ip} is not present on this host "
                f"({exc.strerror or exc}); is the tunnel up?"
            ) from exc
    return str(ip)


# ---------------------------------------------------------------------- HTTP core


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: httpx.Headers
    body: bytes


def _https_url(url: str) -> str:
    parsed = httpx.URL(url)
    if parsed.scheme != "https" or not parsed.host:
        raise ValueError(f"portal URL must be https://host[:port]: {url!r}")
    return url.rstrip("/")


def _tls_context(ca_pem: bytes) -> ssl.SSLContext:
    """Verify the server against ``ca_pem`` only: no system CAs, hostname checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the portal CA chain does not load: {exc}") from exc
    return ctx


def _caused_by(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _map_transport_error(exc: Exception) -> PortalUnavailable:
    verify = _caused_by(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        return PortalUntrusted(f"the portal's certificate is not trusted: {verify}")
    tls = _caused_by(exc, ssl.SSLError)
    if tls is not None:  # e.g. the portal refused our certificate (a TLS alert)
        return PortalUnavailable(f"TLS with the portal failed: {tls}")
    os_err = _caused_by(exc, OSError)
    if isinstance(os_err, OSError) and os_err.errno == errno.EADDRNOTAVAIL:
        return TunnelNotReady(f"the tunnel's inner address is gone: {os_err}")
    if isinstance(exc, httpx.TimeoutException):
        return PortalUnavailable(f"portal timed out: {type(exc).__name__}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return BadResponse(f"response truncated or malformed: {exc}")
    return PortalUnavailable(f"portal unreachable: {type(exc).__name__}: {exc}")


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return body[:200].decode("utf-8", "replace")


def _json_object(resp: _Response) -> dict[str, Any]:
    try:
        data = json.loads(resp.body)
    except ValueError as exc:
        raise BadResponse(f"{resp.status} response is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadResponse(f"{resp.status} response is not a JSON object")
    return data


def _field(data: Mapping[str, Any], name: str, kind: type[Any]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadResponse(f"response field {name!r} is missing or not {kind.__name__}")
    return value


def _check_id(kind: str, value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"{kind} {value!r} must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def _dump(body: Any) -> bytes:
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")


class _HTTP:
    """One httpx client plus the size-capped request/response handling shared by both."""

    def __init__(
        self, base_url: str, transport: httpx.AsyncHTTPTransport, timeout: float,
        max_response_bytes: int,
    ) -> None:
        self._max = max_response_bytes
        self._client = httpx.AsyncClient(
            base_url=base_url, transport=transport, trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(timeout), headers={"User-Agent": _USER_AGENT},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self, method: str, path: str, *, json_body: Any = None, content: bytes | None = None,
        headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None, ok: tuple[int, ...] = (200,),
    ) -> _Response:
        hdrs = dict(headers or {})
        if json_body is not None:
            content = _dump(json_body)
            hdrs["Content-Type"] = "application/json"
        hdrs.setdefault("Accept", "application/json")
        try:
            async with self._client.stream(
                method, path, content=content, headers=hdrs, params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            ) as resp:
                body = await self._read_capped(resp)
                status, resp_headers = resp.status_code, resp.headers
        except httpx.DecodingError as exc:
            raise BadResponse(f"response body does not decode: {exc}") from exc
        except (httpx.TransportError, OSError) as exc:  # ssl.SSLError is an OSError
            raise _map_transport_error(exc) from exc
        result = _Response(status, resp_headers, body)
        if status in ok:
            return result
        message = _error_message(body)
        if status in (408, 429) or status >= 500:
            raise PortalUnavailable(f"portal answered {status}: {message}", status)
        if 400 <= status < 500:
            raise PortalRejected(status, message)
        raise BadResponse(f"unexpected status {status} for {method} {path}: {message}", status)

    async def _read_capped(self, resp: httpx.Response) -> bytes:
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self._max:
            raise ResponseTooLarge(
                f"response of {int(length)} bytes is over the {self._max}-byte limit"
            )
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.aiter_bytes():  # decoded: the cap also bounds gzip bombs
            total += len(chunk)
            if total > self._max:
                raise ResponseTooLarge(f"response is over the {self._max}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)


# ---------------------------------------------------------------------- enrollment


class EnrollmentClient:
    """``POST /v1/enroll`` over the outside network: server-auth TLS, no client certificate.

    ``ca_pem`` is the bootstrap portal CA shipped with the device (or set by the installer);
    the enrollment endpoint's certificate must chain to it. The system CA store is not used.
    """

    def __init__(
        self, enroll_url: str, *, ca_pem: bytes | str, timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        ca = ca_pem.encode("ascii") if isinstance(ca_pem, str) else ca_pem
        transport = httpx.AsyncHTTPTransport(verify=_tls_context(ca), trust_env=False, retries=0)
        self._http = _HTTP(_https_url(enroll_url), transport, timeout, max_response_bytes)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def enroll(self, claim_token: str, csr_pem: str) -> IssuedCertificate:
        """401: bad or used token; 400: bad CSR (both :class:`PortalRejected`)."""
        if not claim_token:
            raise ValueError("claim token is empty")
        resp = await self._http.request(
            "POST", "/v1/enroll", json_body={"claim_token": claim_token, "csr_pem": csr_pem}
        )
        return _issued(resp)


def _issued(resp: _Response) -> IssuedCertificate:
    data = _json_object(resp)
    return IssuedCertificate(
        certificate_pem=_field(data, "certificate_pem", str),
        ca_chain_pem=_field(data, "ca_chain_pem", str),
    )


# ---------------------------------------------------------------------- the device client


class PortalClient:
    """The device's client for the portal API v1, through the tunnel only.

    Build it with :meth:`from_identity` after enrollment (and again after a renewal, to pick
    up the new certificate). ``inner_address`` is the tunnel's inner (virtual) IP; every
    connection is bound to it. ``opt_ins`` returns the site's current opt-ins; it is asked
    before every CDR or voicemail-backup upload.
    """

    def __init__(
        self, base_url: str, *, cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str], ca_pem: bytes | str, inner_address: str | None,
        opt_ins: Callable[[], OptIns] = OptIns, timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.inner_address = check_inner_address(inner_address)
        ca = ca_pem.encode("ascii") if isinstance(ca_pem, str) else ca_pem
        ctx = _tls_context(ca)
        try:
            ctx.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"the device certificate or key does not load: {exc}") from exc
        transport = httpx.AsyncHTTPTransport(
            verify=ctx, trust_env=False, retries=0, local_address=self.inner_address
        )
        self._opt_ins = opt_ins
        self._timeout = timeout
        self._http = _HTTP(_https_url(base_url), transport, timeout, max_response_bytes)

    @classmethod
    def from_identity(
        cls, identity: DeviceIdentity, base_url: str, *, inner_address: str | None,
        opt_ins: Callable[[], OptIns] = OptIns, timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> PortalClient:
        if not identity.enrolled:
            raise NotEnrolled("the portal client needs a device certificate; enroll first")
        return cls(
            base_url, cert_path=identity.cert_path, key_path=identity.key_path,
            ca_pem=identity.chain_path.read_bytes(), inner_address=inner_address,
            opt_ins=opt_ins, timeout=timeout, max_response_bytes=max_response_bytes,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> _Response:
        check_inner_address(self.inner_address)  # the tunnel may have gone down since
        return await self._http.request(method, path, **kw)

    # -- certificate

    async def renew(self, csr_pem: str) -> IssuedCertificate:
        resp = await self._request("POST", "/v1/renew", json_body={"csr_pem": csr_pem})
        return _issued(resp)

    # -- site sync

    async def get_site(self, *, etag: str | None = None, wait: float = 0) -> SiteUpdate | None:
        """The site document, or None (304) if it still matches ``etag`` after ``wait`` s.

        ``wait`` is clamped to 0-60 whole seconds; the read timeout is ``wait`` plus the
        client's timeout, so a held long-poll is not cut short. The answer's ``author``
        (``{"role": "partner"|"admin"|"user", "id"}``) becomes :attr:`SiteUpdate.author`;
        without it the author is :data:`DEFAULT_AUTHOR` (admin "portal"), a malformed one is
        :class:`BadResponse`.
        """
        seconds = max(0, min(MAX_WAIT_SECONDS, math.floor(wait)))
        headers = {"If-None-Match": _quote_etag(etag)} if etag else {}
        resp = await self._request(
            "GET", "/v1/site", params={"wait": str(seconds)}, headers=headers,
            timeout=httpx.Timeout(self._timeout, read=seconds + self._timeout), ok=(200, 304),
        )
        if resp.status == 304:
            return None
        data = _json_object(resp)
        new_etag = resp.headers.get("ETag")
        if not new_etag:
            raise BadResponse("200 from GET /v1/site without an ETag")
        return SiteUpdate(
            version=_field(data, "version", int), document=_field(data, "document", dict),
            etag=new_etag, author=_author(data),
        )

    async def post_site_status(
        self, *, version: int, state: str, errors: Sequence[str] = (), applied_at: float
    ) -> None:
        if state not in ("applied", "failed"):
            raise ValueError(f"state must be 'applied' or 'failed', not {state!r}")
        await self._request("POST", "/v1/site/status", ok=_OK_NO_BODY, json_body={
            "version": version, "state": state, "errors": list(errors),
            "applied_at": applied_at,
        })

    async def push_changes(
        self, *, base_version: int, author_role: str, author_id: str,
        changes: Sequence[Change],
    ) -> int:
        """Push end-user/admin changes made on the device; the new portal version.

        :class:`Conflict` (409): some paths were also changed at the portal since
        ``base_version``; nothing of this request was applied, the portal's values win.
        """
        if author_role not in ("user", "admin"):
            raise ValueError(f"author role must be 'user' or 'admin', not {author_role!r}")
        for change in changes:
            if _names_a_secret(change.path):
                raise ValueError(f"{change.path!r} is a secret; secrets never leave the box")
        resp = await self._request("POST", "/v1/site/changes", ok=(200, 409), json_body={
            "base_version": base_version,
            "author": {"role": author_role, "id": author_id},
            "changes": [{"path": c.path, "value": c.value} for c in changes],
        })
        data = _json_object(resp)
        if resp.status == 409:
            conflicts = _field(data, "conflicts", list)
            if not all(isinstance(p, str) for p in conflicts):
                raise BadResponse("409 conflicts must be a list of paths")
            raise Conflict(_field(data, "current_version", int), conflicts,
                           str(data.get("error", "")))
        return int(_field(data, "version", int))

    # -- uploads

    async def upload_cdrs(
        self, batch_id: str, records: Sequence[CallRecord | Mapping[str, Any]]
    ) -> CdrUploadResult:
        """Only while the site's CDR opt-in is on (:class:`OptInRequired` otherwise)."""
        if not self._opt_ins().cdr_upload:
            raise OptInRequired("CDR upload is off for this site; no call record is sent")
        body = {"records": [
            record_as_dict(r) if isinstance(r, CallRecord) else dict(r) for r in records
        ]}
        resp = await self._request(
            "POST", "/v1/cdr", json_body=body,
            headers={"Idempotency-Key": _check_id("batch id", batch_id)},
        )
        data = _json_object(resp)
        return CdrUploadResult(_field(data, "stored", int), _field(data, "duplicates", int))

    async def post_usage(self, idempotency_key: str, report: UsageReport) -> None:
        """Daily aggregates: always allowed (no per-call data)."""
        if not _DAY_RE.match(report.day):
            raise ValueError(f"day {report.day!r} is not YYYY-MM-DD")
        await self._request(
            "POST", "/v1/usage", ok=_OK_NO_BODY, json_body=report.as_json(),
            headers={"Idempotency-Key": _check_id("idempotency key", idempotency_key)},
        )

    async def put_voicemail_backup(self, backup: SealedBackup) -> None:
        """Only while the backup opt-in is on; idempotent by ``backup.backup_id``."""
        if not self._opt_ins().voicemail_backup:
            raise OptInRequired("voicemail backup is off for this site; nothing is sent")
        backup_id = _check_id("backup id", backup.backup_id)
        await self._request(
            "PUT", f"/v1/voicemail-backups/{backup_id}", ok=_OK_NO_BODY, content=backup.data,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Edgepbx-Mailbox": _check_id("mailbox", backup.mailbox),
                "X-Edgepbx-Encryption": BACKUP_ENCRYPTION,
            },
        )

    async def heartbeat(self, beat: Heartbeat) -> None:
        await self._request("POST", "/v1/heartbeat", ok=_OK_NO_BODY, json_body=beat.as_json())


def _author(data: Mapping[str, Any]) -> Author:
    """The version's author; absent means :data:`DEFAULT_AUTHOR`. A malformed one is a
    :class:`BadResponse`, never a guess: the device refuses partner versions by role."""
    if "author" not in data:
        return DEFAULT_AUTHOR
    author = data["author"]
    if not isinstance(author, dict):
        raise BadResponse("response field 'author' is not an object")
    role, ident = author.get("role"), author.get("id")
    if role not in AUTHOR_ROLES:
        raise BadResponse(f"author role must be one of {', '.join(AUTHOR_ROLES)}, not {role!r}")
    if not isinstance(ident, str) or not ident or len(ident) > 256:
        raise BadResponse("author id must be a string of 1-256 characters")
    return Author(role, ident)


def _names_a_secret(path: str) -> bool:
    last = re.split(r"[.\[\]]", path.rstrip("]"))[-1].lower()
    words = re.split(r"[_-]", last)
    return last in _SECRET_WORDS or any(w in words for w in _SECRET_WORDS)


def _quote_etag(etag: str) -> str:
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


# ---------------------------------------------------------------------- identity glue


async def enroll_identity(
    identity: DeviceIdentity, client: EnrollmentClient, claim_token: str
) -> None:
    """Enroll: CSR for the device key, ``POST /v1/enroll``, check and store the result."""
    issued = await client.enroll(claim_token, identity.csr_pem())
    identity.store_certificate(issued.certificate_pem, issued.ca_chain_pem)


async def renew_identity(identity: DeviceIdentity, client: PortalClient) -> None:
    """Renew with a new key: ``POST /v1/renew`` over mTLS, then store (key rotated).

    Rebuild the :class:`PortalClient` afterwards to use the new certificate.
    """
    issued = await client.renew(identity.renewal_csr_pem())
    identity.store_certificate(issued.certificate_pem, issued.ca_chain_pem)


# ---------------------------------------------------------------------- voicemail backups


def _x25519_public(key: bytes | str | X25519PublicKey) -> X25519PublicKey:
    if isinstance(key, X25519PublicKey):
        return key
    raw = base64.b64decode(key, validate=True) if isinstance(key, str) else key
    if len(raw) != 32:
        raise ValueError("an X25519 public key is 32 bytes (base64 in the site document)")
    return X25519PublicKey.from_public_bytes(raw)


def _backup_key(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=_BACKUP_INFO
    ).derive(shared)


def _backup_aad(header: bytes, backup_id: str, mailbox: str) -> bytes:
    return header + b"\0" + backup_id.encode() + b"\0" + mailbox.encode()


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal_voicemail_backup(
    recipient_public_key: bytes | str | X25519PublicKey, backup_id: str, mailbox: str,
    plaintext: bytes,
) -> SealedBackup:
    """Encrypt a backup to the customer admin's X25519 key (``x25519-aesgcm-v1``).

    Layout: ``b"EPVB\\x01" | ephemeral public key (32) | nonce (12) | AES-256-GCM ciphertext
    and tag``. Key: HKDF-SHA256 of the X25519 shared secret, salt = ephemeral public key ||
    recipient public key, info ``edgepbx voicemail backup x25519-aesgcm-v1``. The associated
    data binds the header, ``backup_id`` and ``mailbox``, so the portal cannot swap blobs.
    Each call uses a fresh ephemeral key: seal once, keep the result in the outbox and retry
    the upload with the same bytes (the portal may refuse a ``backup_id`` with new bytes).
    """
    _check_id("backup id", backup_id)
    _check_id("mailbox", mailbox)
    recipient = _x25519_public(recipient_public_key)
    eph = X25519PrivateKey.generate()
    eph_pub = _raw_public(eph.public_key())
    key = _backup_key(eph.exchange(recipient), eph_pub, _raw_public(recipient))
    nonce = os.urandom(12)
    header = _BACKUP_MAGIC + eph_pub + nonce
    sealed = AESGCM(key).encrypt(nonce, plaintext, _backup_aad(header, backup_id, mailbox))
    return SealedBackup(backup_id, mailbox, header + sealed)


def open_voicemail_backup(
    private_key: X25519PrivateKey, backup_id: str, mailbox: str, data: bytes
) -> bytes:
    """The inverse of :func:`seal_voicemail_backup` (admin side, for restore).

    ``ValueError`` if the blob is not ``x25519-aesgcm-v1`` or does not authenticate.
    """
    head_len = len(_BACKUP_MAGIC) + 32 + 12
    if len(data) < head_len + 16 or not data.startswith(_BACKUP_MAGIC):
        raise ValueError("not an x25519-aesgcm-v1 voicemail backup")
    header = data[:head_len]
    eph_pub = header[len(_BACKUP_MAGIC):len(_BACKUP_MAGIC) + 32]
    nonce = header[-12:]
    key = _backup_key(
        private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub,
        _raw_public(private_key.public_key()),
    )
    try:
        return AESGCM(key).decrypt(nonce, data[head_len:], _backup_aad(header, backup_id, mailbox))
    except InvalidTag as exc:
        raise ValueError(
            "voicemail backup does not authenticate (wrong key, id or mailbox)"
        ) from exc
