"""Phone files over HTTP and HTTPS, inside the agent's event loop.

The files and the device inventory are :class:`~agent.provisioning_service.ProvisioningService`'s
(:meth:`~agent.provisioning_service.ProvisioningService.lookup`, shared with TFTP); this module
adds the HTTP/1.1 server and the per-device credentials.

HTTP, strictly and no more than phones need:

- ``GET`` and ``HEAD`` only (any other method: 405 with ``Allow``); HTTP/1.0 and 1.1
  (another major version: 505); no request body (``Content-Length`` other than 0 or any
  ``Transfer-Encoding``: 400); HTTP/1.1 needs exactly one ``Host``.
- The request line and headers together are at most :data:`MAX_HEAD` bytes (431 beyond),
  lines end in CRLF, no obsolete line folding, at most :data:`MAX_HEADERS` headers.
- The target is origin-form (``/name``, a query is ignored); absolute-form URLs, ``*``,
  malformed percent-escapes, ``.``/``..`` segments and backslashes are 400, decoded or
  not (``/%2e%2e/x``). Names in a sub-directory are 404: the files live at the top.
- Keep-alive on HTTP/1.1 up to :data:`MAX_REQUESTS` requests per connection; the head of
  a request must arrive within :data:`HEAD_TIMEOUT` (the first) or :data:`IDLE_TIMEOUT`
  (the next) seconds, a response must be taken within :data:`WRITE_TIMEOUT`; at most
  :data:`MAX_CONNECTIONS` connections at a time (more are closed at once).

Credentials. A phone's own file (it carries its lines' SIP passwords) needs the phone's
``http_username``/``http_password``, else the site's ``provisioning.http_auth``; another
phone's credentials do not open it. Over HTTPS: Basic or Digest. Over plain HTTP: Digest
only (RFC 7616, SHA-256 and MD5, realm :data:`REALM`, :class:`sipstack.digest.DigestServer`),
so the password never crosses in clear; Basic there is refused (401, logged). Cisco phones
cannot authenticate: their files are served without credentials, as are the Yealink and
Polycom files of a site that sets none. Common and default files carry no credentials and
need none; an unknown MAC never gets a phone's file, so it is never challenged.

Every request is logged (``http request``: client, method, path, status, bytes, user,
reason) and counted (:meth:`HttpProvisioning.stats`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hmac
import logging
import os
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from agent.listen import hostport
from provisioning.catalogue import lookup as lookup_phone_model
from sipstack.digest import DigestServer, Verdict, ha1, parse_credentials

if TYPE_CHECKING:
    from agent.provisioning_service import ProvisioningService
    from agent.site import Site

__all__ = [
    "MAX_HEAD",
    "REALM",
    "HttpAuthConfig",
    "HttpError",
    "HttpProvisioning",
    "HttpRequest",
    "http_auth_config",
    "parse_request",
    "request_name",
    "user_agent_hint",
]

log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192
MAX_HEADERS: Final = 64
MAX_TARGET: Final = 1024
MAX_REQUESTS: Final = 100
MAX_CONNECTIONS: Final = 512
HEAD_TIMEOUT: Final = 10.0
IDLE_TIMEOUT: Final = 15.0
WRITE_TIMEOUT: Final = 30.0
TLS_HANDSHAKE_TIMEOUT: Final = 10.0
REALM: Final = "edgepbx provisioning"
#: Vendors whose phones can send HTTP credentials.
AUTH_VENDORS: Final = frozenset({"yealink", "polycom"})

_REASONS: Final = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 414: "URI Too Long",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_HEADER = re.compile(rf"({_TOKEN}):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")


# --------------------------------------------------------------------------------------------
# Credentials


@dataclass(frozen=True)
class HttpAuthConfig:
    """Who may fetch a phone's own file over HTTP: ``phones`` by MAC, else ``default``."""

    default: tuple[str, str] | None = None  #: (username, password)
    phones: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    vendors: Mapping[str, str | None] = field(default_factory=dict)  #: MAC -> vendor

    def for_phone(self, mac: str) -> tuple[str, str] | None:
        """The credentials ``mac``'s own file needs; None: served without any."""
        if self.vendors.get(mac) not in AUTH_VENDORS:
            return None
        return self.phones.get(mac, self.default)


def http_auth_config(site: Site) -> HttpAuthConfig:
    """The site's ``phones[].http_username/http_password`` and ``provisioning.http_auth``."""
    default = site.provisioning.http_auth
    phones: dict[str, tuple[str, str]] = {}
    vendors: dict[str, str | None] = {}
    for phone in site.phones:
        entry = lookup_phone_model(phone.model)
        vendors[phone.mac] = entry.vendor if entry is not None else None
        if phone.http_username is not None and phone.http_password is not None:
            phones[phone.mac] = (phone.http_username, phone.http_password.get_secret_value())
    return HttpAuthConfig(
        None if default is None else (default.username, default.password.get_secret_value()),
        phones, vendors)


_UA_PATTERNS: Final = (
    # "Yealink SIP-T46U 66.86.0.15 80:5e:c0:00:00:01"
    ("yealink", re.compile(r"Yealink[ _-]+(?:SIP[ _-]?)?([A-Za-z]{1,3}[0-9]{2,3}[A-Za-z]{0,2})\b")),
    # "FileTransport PolycomVVX-VVX_450-UA/6.4.3.5018 Type/Application"
    ("polycom", re.compile(r"Polycom[A-Za-z]*-([A-Za-z]{2,4})_?([0-9]{2,4})\b")),
    # "Cisco-CP8841/12.8.1" or "Cisco-CP-8841-3PCC/11.3.1"
    ("cisco", re.compile(r"Cisco[ /-]+CP-?([0-9]{4})\b")),
)


def user_agent_hint(user_agent: str | None) -> tuple[str | None, str | None]:
    """(vendor, model) from a phone's User-Agent, e.g. ("yealink", "T46U"); Nones if unknown."""
    if not user_agent:
        return None, None
    for vendor, pattern in _UA_PATTERNS:
        match = pattern.search(user_agent[:256])
        if match is not None:
            if vendor == "polycom":
                return vendor, f"{match.group(1).upper()} {match.group(2)}"
            if vendor == "cisco":
                return vendor, f"CP-{match.group(1)}"
            return vendor, match.group(1).upper()
    return None, None


# --------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str  #: as sent (what a Digest ``uri`` must equal)
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]  #: names lower-cased, in order

    def header(self, name: str) -> str | None:
        """The value of the one header ``name`` (lower-case); None if absent."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_count(self, name: str) -> int:
        return sum(1 for key, _ in self.headers if key == name)

    @property
    def keep_alive(self) -> bool:
        if self.version < (1, 1):
            return False
        tokens = {t.strip().lower() for key, v in self.headers if key == "connection"
                  for t in v.split(",")}
        return "close" not in tokens


class HttpError(Exception):
    """A request answered with ``status`` and the connection closed (``reason`` is logged)."""

    def __init__(self, status: int, reason: str, *, method: str = "-", target: str = "-",
                 keep_alive: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.method = method
        self.target = target
        self.keep_alive = keep_alive


def parse_request(head: bytes) -> HttpRequest:
    """Parse a request head (request line and headers, ending in an empty line).

    Raises :class:`HttpError` (400, 405, 414, 431, 505) for anything else. Pure.
    """
    if len(head) > MAX_HEAD:
        raise HttpError(431, "head-too-large")
    if not head.endswith(b"\r\n\r\n"):
        raise HttpError(400, "unterminated-head")
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise HttpError(400, "bare-cr-or-lf")
    try:
        request_line = lines[0].decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request-line-not-ascii") from None
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        if len(request_line) > MAX_TARGET and request_line.count(" ") == 2:
            raise HttpError(414, "target-too-long")
        raise HttpError(400, "bad-request-line")
    method, target = match.group(1), match.group(2)
    version = (int(match.group(3)), int(match.group(4)))
    if version[0] != 1:
        raise HttpError(505, "http-version", method=method, target=target)
    if len(target) > MAX_TARGET:
        raise HttpError(414, "target-too-long", method=method)
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too-many-headers", method=method, target=target)
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        header = _HEADER.fullmatch(raw.decode("latin-1"))
        if header is None:  # also whitespace before the colon, and obs-fold
            raise HttpError(400, "bad-header", method=method, target=target)
        headers.append((header.group(1).lower(), header.group(2)))
    request = HttpRequest(method, target, version, tuple(headers))
    if version >= (1, 1) and request.header_count("host") != 1:
        raise HttpError(400, "host-header", method=method, target=target)
    length = request.header("content-length")
    if request.header_count("content-length") > 1 or (length is not None and length != "0"):
        raise HttpError(400, "request-body", method=method, target=target)
    if request.header("transfer-encoding") is not None:
        raise HttpError(400, "request-body", method=method, target=target)
    if method not in ("GET", "HEAD"):
        raise HttpError(405, "method", method=method, target=target,
                        keep_alive=request.keep_alive)
    return request


def request_name(target: str) -> str | None:
    """The file name an origin-form target asks for; None for a name in a sub-directory.

    Raises :class:`HttpError` 400 for absolute-form and other non-origin targets,
    fragments, bad percent-escapes, non-UTF-8, control characters, backslashes and
    ``.``/``..`` segments (before or after decoding).
    """
    if not target.startswith("/"):
        raise HttpError(400, "not-origin-form", target=target)
    path = target.split("?", 1)[0]
    if "#" in path or _PCT.search(path):
        raise HttpError(400, "bad-path", target=target)
    try:
        decoded = _unquote(path)
    except UnicodeDecodeError:
        raise HttpError(400, "bad-path", target=target) from None
    if "\\" in decoded or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise HttpError(400, "bad-path", target=target)
    segments = decoded[1:].split("/")
    if any(segment in (".", "..") for segment in segments):
        raise HttpError(400, "path-traversal", target=target)
    if len(segments) != 1 or not segments[0]:
        return None
    return segments[0]


def _unquote(path: str) -> str:
    out = bytearray()
    i = 0
    raw = path.encode("ascii")
    while i < len(raw):
        if raw[i] == 0x25:  # "%"
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8")


# --------------------------------------------------------------------------------------------
# The server


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    user: str | None = None
    reason: str | None = None
    fetched: tuple[str, str, str] | None = None  #: (mac, file, sha256) once sent in full


_COUNTERS: Final = ("connections", "connections_refused", "requests", "ok", "not_found",
                    "unauthorized", "refused", "errors", "bytes_sent", "fetches")


class HttpProvisioning:
    """One HTTP (or, with ``ssl_context``, HTTPS) listener serving ``service``'s files."""

    def __init__(self, service: ProvisioningService, *, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 head_timeout: float = HEAD_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT) -> None:
        self._service = service
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self._max_connections = max_connections
        self._head_timeout = head_timeout
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._digest = DigestServer(REALM, os.urandom(32), algorithms=("SHA-256", "MD5"))
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self.local: tuple[str, int] = ("", 0)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.scheme} provisioning already started")
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=MAX_HEAD, ssl=self._ssl,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self._ssl is not None else None)
        sockname = self._server.sockets[0].getsockname()
        self.local = (str(sockname[0]), int(sockname[1]))
        log.info(f"{self.scheme} provisioning listening",
                 extra={"address": hostport(*self.local)})

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        log.info(f"{self.scheme} provisioning stopped", extra={"address": hostport(*self.local)})

    def stats(self) -> dict[str, int]:
        return {**self._stats, "open_connections": len(self._handlers)}

    # -- connections --------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._handlers) >= self._max_connections or task is None:
            self._stats["connections_refused"] += 1
            writer.transport.abort()
            return
        self._handlers.add(task)
        self._stats["connections"] += 1
        peer = writer.get_extra_info("peername") or ("", 0)
        client = (str(peer[0]), int(peer[1]))
        try:
            await self._serve(reader, writer, client)
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("http provisioning connection failed",
                          extra={"client": hostport(*client)})
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     client: tuple[str, int]) -> None:
        for count in range(MAX_REQUESTS):
            timeout = self._head_timeout if count == 0 else self._idle_timeout
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    await self._send(writer, client, "-", "-", _Response(400, reason="eof"),
                                     keep_alive=False)
                return
            except asyncio.LimitOverrunError:
                await self._send(writer, client, "-", "-",
                                 _Response(431, reason="head-too-large"), keep_alive=False)
                return
            except TimeoutError:
                if count == 0:  # a keep-alive connection left idle just closes
                    await self._send(writer, client, "-", "-",
                                     _Response(408, reason="head-timeout"), keep_alive=False)
                return
            try:
                request = parse_request(head)
            except HttpError as exc:
                response = _Response(exc.status, reason=exc.reason)
                if exc.status == 405:
                    response.headers.append(("Allow", "GET, HEAD"))
                await self._send(writer, client, exc.method, exc.target, response,
                                 keep_alive=exc.keep_alive and count + 1 < MAX_REQUESTS)
                if not exc.keep_alive:
                    return
                continue
            keep_alive = request.keep_alive and count + 1 < MAX_REQUESTS
            try:
                response = self._respond(request, client)
            except HttpError as exc:
                response = _Response(exc.status, reason=exc.reason)
                keep_alive = False
            except Exception:
                log.exception("http provisioning failed", extra={
                    "client": hostport(*client), "path": request.target[:200]})
                response = _Response(500, reason="internal-error")
                keep_alive = False
            await self._send(writer, client, request.method, request.target, response,
                             keep_alive=keep_alive, head_only=request.method == "HEAD")
            if not keep_alive:
                return

    # -- one request --------------------------------------------------------------------
    def _respond(self, request: HttpRequest, client: tuple[str, int]) -> _Response:
        name = request_name(request.target)
        if name is None:
            return _Response(404, b"Not Found\n", reason="not-found")
        vendor, model = user_agent_hint(request.header("user-agent"))
        found = self._service.lookup(name, client[0], vendor_hint=vendor, model_hint=model)
        if found.content is None:
            return _Response(404, b"Not Found\n", reason="not-found")
        user: str | None = None
        if found.own and found.mac is not None:
            needed = self._service.auth.for_phone(found.mac)
            if needed is not None:
                user, refusal = self._authenticate(request, needed)
                if refusal is not None:
                    return refusal
        response = _Response(200, found.content, found.content_type, user=user)
        if found.own and found.mac is not None and found.sha256 is not None \
                and request.method == "GET":
            response.fetched = (found.mac, name, found.sha256)
        return response

    def _challenge(self, reason: str, *, stale: bool = False) -> _Response:
        headers = []
        if self.scheme == "https":
            headers.append(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'))
        headers += [("WWW-Authenticate", value)
                    for value in self._digest.challenge(time.time(), stale=stale)]
        return _Response(401, b"Unauthorized\n", headers=headers, reason=reason)

    def _authenticate(self, request: HttpRequest, needed: tuple[str, str]
                      ) -> tuple[str | None, _Response | None]:
        """(the user, None) when ``request`` carries ``needed``; else (None, a 401)."""
        if request.header_count("authorization") != 1:
            return None, self._challenge("no-credentials" if request.header_count(
                "authorization") == 0 else "several-authorization-headers")
        value = request.header("authorization") or ""
        scheme, _, rest = value.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            if self.scheme != "https":
                return None, self._challenge("basic-over-plain-http")
            try:
                decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None, self._challenge("bad-basic-credentials")
            username, sep, password = decoded.partition(":")
            ok_user = hmac.compare_digest(username.encode(), needed[0].encode())
            ok_pass = hmac.compare_digest(password.encode(), needed[1].encode())
            if not (sep and ok_user and ok_pass):
                return None, self._challenge("bad-credentials")
            return username, None
        if scheme == "digest":
            creds = parse_credentials(value)
            if creds is None:
                return None, self._challenge("bad-digest-credentials")
            if creds.uri != request.target:
                return None, self._challenge("digest-uri-mismatch")

            def lookup(username: str, algorithm: str) -> str | None:
                if not hmac.compare_digest(username.encode(), needed[0].encode()):
                    return None
                return ha1(username, REALM, needed[1], algorithm)

            result = self._digest.verify(creds, method=request.method, now=time.time(),
                                         ha1_lookup=lookup)
            if result.ok:
                return creds.username, None
            return None, self._challenge(result.reason,
                                         stale=result.verdict is Verdict.STALE)
        return None, self._challenge("unsupported-auth-scheme")

    # -- output -------------------------------------------------------------------------
    async def _send(self, writer: asyncio.StreamWriter, client: tuple[str, int], method: str,
                    target: str, response: _Response, *, keep_alive: bool,
                    head_only: bool = False) -> None:
        status = response.status
        body = response.body if response.body or status == 200 else (
            f"{status} {_REASONS.get(status, '')}\n".encode())
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                 f"Date: {email.utils.formatdate(usegmt=True)}",
                 "Server: edgepbx",
                 f"Content-Type: {response.content_type}",
                 f"Content-Length: {len(body)}",
                 "Cache-Control: no-store"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines.append("Connection: " + ("keep-alive" if keep_alive else "close"))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sent = 0 if head_only else len(body)
        writer.write(data if head_only else data + body)
        self._count(status, sent + len(data))
        complete = False
        try:
            await asyncio.wait_for(writer.drain(), self._write_timeout)
            complete = True
        finally:
            log.info("http request", extra={
                "scheme": self.scheme, "client": hostport(*client), "method": method,
                "path": target[:200], "status": status, "bytes": sent,
                "user": response.user, "reason": response.reason,
                **({} if complete else {"incomplete": True})})
        if complete and response.fetched is not None:
            self._stats["fetches"] += 1
            self._service.fetched(*response.fetched)

    def _count(self, status: int, nbytes: int) -> None:
        stats = self._stats
        stats["requests"] += 1
        stats["bytes_sent"] += nbytes
        if status == 200:
            stats["ok"] += 1
        elif status == 404:
            stats["not_found"] += 1
        elif status == 401:
            stats["unauthorized"] += 1
        elif status >= 500:
            stats["errors"] += 1
        else:
            stats["refused"] += 1
