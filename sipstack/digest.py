"""SIP digest authentication: RFC 7616, RFC 8760 and RFC 3261 §22, both sides, sans-I/O.

Nothing here touches a socket or reads a clock: every time-dependent call takes ``now``
(seconds, any monotonic or wall clock, but always the same clock for one server).

Server side
-----------
:class:`DigestServer` issues challenges and checks credentials.

* **Stateless nonces.** A nonce is ``base64url(inst(4) || ts_ms(6) || ctr(6) || mac(20))``,
  48 characters, no padding. ``mac`` is HMAC-SHA256(secret, inst || ts_ms || ctr || realm)
  cut to 160 bits. ``inst`` is a random per-instance id and ``ctr`` is a per-instance
  counter that only goes up. So each nonce is unique, and the server can check it with
  no memory. (This extends "timestamp || HMAC(timestamp || realm)": the counter keeps two
  challenges in the same millisecond apart, and the instance id lets nonces from an
  earlier process be told apart. Nonce-count state dies with that process.)
* **Challenges never depend on the user.** :meth:`DigestServer.challenge` takes no
  username. Every challenge has the same parameters in the same order and the same
  lengths; only the nonce value changes.
* **Algorithms.** One challenge per offered algorithm, strongest first (RFC 8760 §2.4):
  SHA-512-256, then SHA-256, then MD5, with each ``-sess`` variant right after its base.
  SHA-512-256 is dropped quietly when this Python's hashlib lacks ``sha512_256``.
* **qop.** Only ``qop=auth``. ``auth-int`` is rejected as INVALID: SIP bodies are not
  hashed here, and no common UA needs it. Credentials with no ``qop`` (RFC 2069 style)
  are INVALID unless ``allow_no_qop=True``. Even then they have no nonce-count, so a
  replay inside the nonce lifetime cannot be caught. Keep it off unless a device needs it.
* **userhash** (RFC 7616 §3.4.4) is never offered, so ``userhash=true`` is INVALID.

Order of checks in :meth:`DigestServer.verify`, and what each outcome means:

1. realm, algorithm offered, qop, userhash, opaque, nonce shape and HMAC → INVALID.
   None of this depends on the username.
2. HA1 lookup. For an unknown user (or an HA1 stored in the wrong format) the server
   computes the response against a random dummy HA1 of the same length, does exactly the
   same hashing and comparison, and returns INVALID with the same reason as a wrong
   password (``bad-credentials``). Timing and result do not show whether the user exists.
   (The caller's ``ha1_lookup`` must itself take about the same time either way.)
3. The response is checked with :func:`hmac.compare_digest` → INVALID.
4. Freshness. This is checked only after the response is proven right, as RFC 7616 asks
   before ``stale=true``: a nonce past ``nonce_lifetime``, from the future (beyond a
   small tolerance), or from another instance → STALE. The caller re-challenges with
   ``stale=true``.
5. Nonce-count (qop=auth only):

   * the nonce is tracked and nc > the highest accepted nc → OK;
   * nc equals the highest accepted nc and ``retransmission_key`` equals the key of the
     request that used that nc → OK (reason ``retransmission``). SIP over UDP resends
     identical requests;
   * otherwise → REPLAY. The caller re-challenges (no stale flag) and may log it.
   * The nonce is not tracked: if its counter is <= the *forget watermark* → STALE,
     otherwise it has never been accepted, so any nc >= 1 is accepted and the nonce
     starts being tracked.

**Replay bound / eviction.** Tracked nonces sit in a FIFO by first use, capped at
``max_tracked_nonces``. The oldest entry is evicted first. Eviction raises the *forget
watermark* to the evicted nonce's counter. Counters only go up inside one instance, so a
nonce that was ever accepted and then forgotten always has a counter <= the watermark.
It can never be accepted again, whatever its nc (nc=1 included), and whatever the clock
does. The cost: a nonce issued before the watermark but never used yet gets one extra
STALE round trip. Expired nonces are rejected before the table is read, so a full table
only ever drops entries (and safety never depends on the clock). Each tracked nonce
costs one dict slot, one int key, one packed int value and one deque slot, about 130
bytes, so 100 000 nonces take about 13 MB.

``retransmission_key`` should say which request this is, e.g.
``f"{call_id} {cseq_number} {method}"``. Only its :func:`hash` is stored (a 64-bit,
per-process keyed SipHash of a ``str``), so a forged request would have to hit that
exact hash.

Not thread-safe: use one instance from one event loop.

Client side
-----------
:class:`DigestClient` answers challenges (trunk registration, tests): it picks the
strongest usable challenge, keeps nc per nonce, and supports ``qop=auth``, no-qop and
``userhash``.

Parsing (:func:`parse_credentials`, :func:`parse_challenge`) never raises. It returns
``None`` for anything that is not one well-formed Digest value: duplicate parameters,
control characters inside values (header injection), unterminated quotes, more than
8192 characters or 64 parameters. Give it one ``Authorization``/``Proxy-Authorization``
header value at a time (``Headers.get_all``, not the comma-splitting ``values``).
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import os
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote_to_bytes

from sipstack.grammar import quote

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestError",
    "DigestServer",
    "HA1Lookup",
    "Verdict",
    "VerifyResult",
    "compute_response",
    "ha1",
    "parse_challenge",
    "parse_credentials",
    "userhash",
]


class DigestError(ValueError):
    """A challenge cannot be answered (client side) or an argument is unusable."""


# --------------------------------------------------------------------------- algorithms


class _Hasher(Protocol):
    def hexdigest(self) -> str: ...


_Factory = Callable[[bytes], _Hasher]


@dataclass(frozen=True, slots=True)
class _Alg:
    name: str  # canonical spelling, e.g. "SHA-256-sess"
    base: str  # "SHA-256"
    sess: bool
    new: _Factory
    hexlen: int
    rank: int  # higher is stronger; -sess sorts just after its base


def _available(factory: _Factory) -> bool:
    try:
        factory(b"").hexdigest()
    except ValueError:  # unsupported by this OpenSSL build, or blocked (FIPS mode)
        return False
    return True


def _build_algs() -> dict[str, _Alg]:
    bases: list[tuple[str, _Factory, int, int]] = [
        ("MD5", hashlib.md5, 32, 10),
        ("SHA-256", hashlib.sha256, 64, 20),
        ("SHA-512-256", functools.partial(hashlib.new, "sha512_256"), 64, 30),
    ]
    out: dict[str, _Alg] = {}
    for name, factory, hexlen, rank in bases:
        if not _available(factory):
            continue
        out[name] = _Alg(name, name, False, factory, hexlen, rank + 1)
        out[name + "-sess"] = _Alg(name + "-sess", name, True, factory, hexlen, rank)
    return out


_ALGS: dict[str, _Alg] = _build_algs()
_ALL_NAMES = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess")
_CANON: dict[str, str] = {n.lower(): n for n in _ALL_NAMES}

#: Algorithms this Python can compute, strongest first.
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    a.name for a in sorted(_ALGS.values(), key=lambda a: -a.rank)
)


def _canonical_algorithm(name: str) -> str:
    return _CANON.get(name.lower(), name)


def _known_algorithm(name: str) -> str:
    """The canonical name of an algorithm RFC 7616 defines; DigestError otherwise."""
    canon = _canonical_algorithm(name)
    if canon not in _CANON.values():
        raise DigestError(f"unknown digest algorithm {name!r}")
    return canon


def _alg_or_raise(name: str) -> _Alg:
    canon = _known_algorithm(name)
    alg = _ALGS.get(canon)
    if alg is None:
        raise DigestError(f"digest algorithm {canon} is not available in this Python build")
    return alg


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username ":" realm ":" password), lower-case hex, for storing instead of passwords.

    A ``-sess`` algorithm gives the HA1 of its base algorithm; the session step happens
    per nonce, in :meth:`DigestServer.verify`.
    """
    alg = _alg_or_raise(algorithm)
    return alg.new(_enc(f"{username}:{realm}:{password}")).hexdigest()


def userhash(username: str, realm: str, algorithm: str = "MD5") -> str:
    """RFC 7616 §3.4.4 userhash: H(username ":" realm)."""
    alg = _alg_or_raise(algorithm)
    return alg.new(_enc(f"{username}:{realm}")).hexdigest()


def compute_response(
    *,
    ha1: str,
    algorithm: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1; RFC 2069 form when ``qop`` is None).

    ``ha1`` is the base HA1 (see :func:`ha1`); the ``-sess`` step is applied here.
    """
    alg = _alg_or_raise(algorithm)
    if alg.sess and cnonce is None:
        raise DigestError("-sess algorithms need a cnonce")
    if qop is not None and (nc is None or cnonce is None):
        raise DigestError("qop needs nc and cnonce")
    return _response(alg, ha1.lower(), method, uri, nonce, qop, nc, cnonce)


def _response(  # noqa: PLR0917 - the RFC's formula, argument for argument
    alg: _Alg,
    key: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    """RFC 7616 §3.4.1 from a lower-case hex HA1; the one formula client and server share."""
    h = alg.new
    if alg.sess:
        key = h(_enc(f"{key}:{nonce}:{cnonce}")).hexdigest()
    ha2 = h(_enc(f"{method}:{uri}")).hexdigest()
    if qop is None:
        return h(_enc(f"{key}:{nonce}:{ha2}")).hexdigest()
    return h(_enc(f"{key}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")).hexdigest()


# --------------------------------------------------------------------------- parsing

_MAX_HEADER = 8192
_MAX_PARAMS = 64
_LWS = r"[ \t\r\n]*"
_NAME = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# quoted-string content: any char except DQUOTE, backslash and control characters (HTAB
# allowed); quoted-pair escapes any non-control char. Control characters are refused so
# that a value echoed back into a header can never carry CR/LF.
_QCHAR = r'[^"\\\x00-\x08\x0a-\x1f\x7f]'
_QPAIR = r"\\[^\x00-\x08\x0a-\x1f\x7f]"
# Unrolled-loop form (no per-character alternation): linear, and ~4x faster in sre.
_QBODY = rf"{_QCHAR}*(?:{_QPAIR}{_QCHAR}*)*"
_TOKVAL = r"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]+"  # visible ASCII minus DQUOTE , backslash
_PARAM_NC = rf'{_NAME}{_LWS}={_LWS}(?:"{_QBODY}"|{_TOKVAL})'
_PARAM_CAP = rf'({_NAME}){_LWS}={_LWS}(?:"({_QBODY})"|({_TOKVAL}))'
_LIST_RE = re.compile(rf"[ \t\r\n,]*{_PARAM_NC}(?:{_LWS},[ \t\r\n,]*{_PARAM_NC})*[ \t\r\n,]*")
_FIND_RE = re.compile(_PARAM_CAP)
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_EXT_VALUE_RE = re.compile(r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9!#$&+\-.^_`|~])*")
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _parse_params(value: str) -> dict[str, str] | None:
    """Split ``Digest a=b, c="d"`` into a dict of lower-cased names, or None."""
    if len(value) > _MAX_HEADER:
        return None
    s = value.lstrip(" \t\r\n")
    if len(s) < 8 or s[6] not in " \t\r\n" or s[:6].lower() != "digest":
        return None
    body = s[7:]
    if _LIST_RE.fullmatch(body) is None:
        return None
    found = _FIND_RE.findall(body)
    if len(found) > _MAX_PARAMS:
        return None
    unesc = _UNESCAPE_RE.sub
    params = {
        name.lower(): token or (unesc(r"\1", quoted) if "\\" in quoted else quoted)
        for name, quoted, token in found
    }
    if len(params) != len(found):
        return None  # duplicated parameter
    return params


def _decode_ext_value(value: str) -> str | None:
    """RFC 8187 ext-value (charset'lang'pct-encoded) → str, or None."""
    charset, sep1, rest = value.partition("'")
    _lang, sep2, encoded = rest.partition("'")
    if not (sep1 and sep2):
        return None
    charset = charset.lower()
    if charset not in ("utf-8", "iso-8859-1") or _EXT_VALUE_RE.fullmatch(encoded) is None:
        return None
    try:
        decoded = unquote_to_bytes(encoded).decode(charset)
    except UnicodeDecodeError:
        return None
    return None if _CTL_RE.search(decoded) else decoded


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """One parsed Digest ``Authorization``/``Proxy-Authorization`` value.

    ``username`` is already decoded when the client sent ``username*`` (RFC 8187).
    ``algorithm`` is canonical (``SHA-256``…) when known, ``MD5`` when absent, otherwise
    as sent. ``qop`` and ``nc`` are kept as sent (they are hashed verbatim); ``nc`` is
    always 8 hex digits when present.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None
    userhash: bool = False


def parse_credentials(header_value: str) -> DigestCredentials | None:
    """Parse one credentials value; None if it is not Digest or is malformed. Never raises."""
    p = _parse_params(header_value)
    if p is None:
        return None
    username = p.get("username")
    ext = p.get("username*")
    if ext is not None:
        if username is not None:
            return None  # RFC 7616 §3.4: MUST NOT send both
        username = _decode_ext_value(ext)
    realm = p.get("realm")
    nonce = p.get("nonce")
    uri = p.get("uri")
    response = p.get("response")
    if username is None or realm is None or nonce is None or uri is None or not response:
        return None
    qop = p.get("qop")
    nc = p.get("nc")
    cnonce = p.get("cnonce")
    if nc is not None and _NC_RE.fullmatch(nc) is None:
        return None
    if qop is not None and (nc is None or cnonce is None):
        return None
    uh = p.get("userhash", "false").lower()
    if uh not in ("true", "false"):
        return None
    return DigestCredentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response,
        algorithm=_canonical_algorithm(p.get("algorithm", "MD5")),
        cnonce=cnonce,
        nc=nc,
        qop=qop,
        opaque=p.get("opaque"),
        userhash=uh == "true",
    )


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One parsed ``WWW-Authenticate``/``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()  # lower-cased options; () when the server sent no qop
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    domain: str | None = None


def parse_challenge(header_value: str) -> DigestChallenge | None:
    """Parse one challenge value; None if it is not Digest or is malformed. Never raises."""
    p = _parse_params(header_value)
    if p is None:
        return None
    realm = p.get("realm")
    nonce = p.get("nonce")
    if realm is None or nonce is None:
        return None
    qop_raw = p.get("qop")
    qop = (
        ()
        if qop_raw is None
        else tuple(q for q in (part.strip(" \t\r\n").lower() for part in qop_raw.split(",")) if q)
    )
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=_canonical_algorithm(p.get("algorithm", "MD5")),
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
        userhash=p.get("userhash", "").lower() == "true",
        domain=p.get("domain"),
    )


def _quote(value: str) -> str:
    if _CTL_RE.search(value):
        raise DigestError("control character in a digest parameter")
    return quote(value)


# --------------------------------------------------------------------------- server


class Verdict(enum.Enum):
    OK = "ok"
    STALE = "stale"  # credentials right, nonce no longer usable: re-challenge with stale=true
    REPLAY = "replay"  # nonce-count not increasing: re-challenge (no stale flag)
    INVALID = "invalid"  # anything else: re-challenge / reject


@dataclass(frozen=True, slots=True)
class VerifyResult:
    verdict: Verdict
    reason: str  # short constant for logs/metrics; never put it on the wire

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


HA1Lookup = Callable[[str, str], bytes | str | None]
"""``(username, base_algorithm) -> HA1``. ``base_algorithm`` is ``MD5``, ``SHA-256`` or
``SHA-512-256`` (no ``-sess``). Return lower/upper-case hex (``str`` or ASCII ``bytes``) or
the raw digest ``bytes``; ``None`` for an unknown user."""

_OK = VerifyResult(Verdict.OK, "ok")
_OK_RETRANSMISSION = VerifyResult(Verdict.OK, "retransmission")
_OK_NO_QOP = VerifyResult(Verdict.OK, "ok-no-qop")
_STALE_EXPIRED = VerifyResult(Verdict.STALE, "nonce-expired")
_STALE_INSTANCE = VerifyResult(Verdict.STALE, "nonce-from-other-instance")
_STALE_FORGOTTEN = VerifyResult(Verdict.STALE, "nonce-forgotten")
_REPLAY = VerifyResult(Verdict.REPLAY, "nonce-count-replay")
_INV_REALM = VerifyResult(Verdict.INVALID, "realm-mismatch")
_INV_ALG = VerifyResult(Verdict.INVALID, "algorithm-not-offered")
_INV_QOP = VerifyResult(Verdict.INVALID, "qop-not-supported")
_INV_USERHASH = VerifyResult(Verdict.INVALID, "userhash-not-supported")
_INV_OPAQUE = VerifyResult(Verdict.INVALID, "opaque-mismatch")
_INV_NONCE = VerifyResult(Verdict.INVALID, "nonce-invalid")
_INV_NC = VerifyResult(Verdict.INVALID, "nonce-count-invalid")
_INV_CREDS = VerifyResult(Verdict.INVALID, "bad-credentials")

_INST_LEN = 4
_TS_LEN = 6
_CTR_LEN = 6
_PREFIX_LEN = _INST_LEN + _TS_LEN + _CTR_LEN  # 16
_MAC_LEN = 20
_NONCE_RAW_LEN = _PREFIX_LEN + _MAC_LEN  # 36 bytes → 48 base64url chars, no padding
_NONCE_LEN = 48
_TS_MAX = (1 << (8 * _TS_LEN)) - 1
_FUTURE_TOLERANCE_MS = 5000
_NC_MASK = 0xFFFFFFFF
_M64 = (1 << 64) - 1


class DigestServer:
    """Issues challenges and checks credentials for one realm. See the module docstring."""

    __slots__ = (
        "_allow_no_qop",
        "_challenge_parts",
        "_ctr",
        "_dummy",
        "_inst",
        "_lifetime_ms",
        "_max_tracked",
        "_offered",
        "_opaque",
        "_order",
        "_realm_b",
        "_secret",
        "_tracked",
        "_watermark",
        "realm",
    )

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = 100_000,
        allow_no_qop: bool = False,
        instance_id: bytes | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("digest secret must be at least 16 bytes")
        if not nonce_lifetime > 0:
            raise ValueError("nonce_lifetime must be positive")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be >= 1")
        if _CTL_RE.search(realm):
            raise ValueError("realm contains a control character")
        if instance_id is not None and len(instance_id) != _INST_LEN:
            raise ValueError(f"instance_id must be {_INST_LEN} bytes")
        offered: list[_Alg] = []
        for name in algorithms:
            canon = _known_algorithm(name)
            alg = _ALGS.get(canon)
            if alg is not None and alg not in offered:  # unavailable → left out quietly
                offered.append(alg)
        if not offered:
            raise ValueError("no usable digest algorithm configured")
        offered.sort(key=lambda a: -a.rank)  # RFC 8760 §2.4: most preferred first

        self.realm = realm
        self._realm_b = _enc(realm)
        self._secret = bytes(secret)
        self._lifetime_ms = int(nonce_lifetime * 1000)
        self._max_tracked = max_tracked_nonces
        self._allow_no_qop = allow_no_qop
        self._inst = instance_id if instance_id is not None else os.urandom(_INST_LEN)
        self._ctr = 0
        self._offered: dict[str, _Alg] = {a.name: a for a in offered}
        # Dummy HA1 per base algorithm, same length as a real one: unknown users cost
        # exactly as much hashing as known ones.
        self._dummy: dict[str, str] = {a.base: secrets.token_hex(a.hexlen // 2) for a in offered}
        mac = hmac.digest(self._secret, b"edgepbx-digest-opaque\x00" + self._realm_b, "sha256")
        self._opaque = base64.urlsafe_b64encode(mac[:12]).decode("ascii")
        rq = _quote(realm)
        self._challenge_parts: tuple[tuple[str, str], ...] = tuple(
            (
                f'Digest realm={rq}, qop="auth", algorithm={a.name}, nonce="',
                f'", opaque="{self._opaque}"',
            )
            for a in offered
        )
        self._tracked: dict[int, int] = {}  # nonce counter → (key_hash << 32) | highest nc
        self._order: deque[int] = deque()  # nonce counters in first-use order
        self._watermark = 0  # highest counter ever forgotten

    # -- introspection -------------------------------------------------------------
    @property
    def algorithms(self) -> tuple[str, ...]:
        """Offered algorithms, in challenge order."""
        return tuple(self._offered)

    @property
    def opaque(self) -> str:
        return self._opaque

    @property
    def tracked_nonces(self) -> int:
        return len(self._tracked)

    # -- challenges ----------------------------------------------------------------
    def new_nonce(self, now: float) -> str:
        self._ctr += 1
        ts = min(max(int(now * 1000.0), 0), _TS_MAX)
        prefix = self._inst + ts.to_bytes(_TS_LEN, "big") + self._ctr.to_bytes(_CTR_LEN, "big")
        mac = hmac.digest(self._secret, prefix + self._realm_b, "sha256")[:_MAC_LEN]
        return base64.urlsafe_b64encode(prefix + mac).decode("ascii")

    def challenge(self, now: float, *, stale: bool = False) -> list[str]:
        """Header values for WWW-Authenticate (401) / Proxy-Authenticate (407).

        One per offered algorithm, strongest first, all sharing one fresh nonce. Add
        them as separate header lines, in this order.
        """
        nonce = self.new_nonce(now)
        tail = ", stale=true" if stale else ""
        return [f"{head}{nonce}{suffix}{tail}" for head, suffix in self._challenge_parts]

    # -- verification --------------------------------------------------------------
    def verify(
        self,
        creds: DigestCredentials,
        *,
        method: str,
        now: float,
        ha1_lookup: HA1Lookup,
        retransmission_key: str | None = None,
    ) -> VerifyResult:
        """Check ``creds`` for a request with ``method``; see the module docstring.

        ``now`` must be finite and on the same clock as :meth:`challenge`. The caller
        should also check that ``creds.uri`` names the Request-URI if it wants that
        binding (SIP URI comparison is the message layer's job).
        """
        # 1. Checks that do not depend on the user.
        if creds.realm != self.realm:
            return _INV_REALM
        alg = self._offered.get(creds.algorithm)
        if alg is None:
            return _INV_ALG
        qop = creds.qop
        cnonce = creds.cnonce
        if qop is None:
            if not self._allow_no_qop or alg.sess:
                return _INV_QOP
        elif qop != "auth" and qop.lower() != "auth":
            return _INV_QOP
        if creds.userhash:
            return _INV_USERHASH
        if creds.opaque is not None and creds.opaque != self._opaque:
            return _INV_OPAQUE
        nc = 0
        if qop is not None:
            try:
                nc = int(creds.nc or "0", 16)  # parse_credentials guarantees 8 hex digits
            except ValueError:
                return _INV_NC
            if not 0 < nc <= _NC_MASK:
                return _INV_NC
        nonce = creds.nonce
        if len(nonce) != _NONCE_LEN:
            return _INV_NONCE
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except ValueError:  # binascii.Error, or non-ASCII text
            return _INV_NONCE
        if len(raw) != _NONCE_RAW_LEN:
            return _INV_NONCE
        prefix = raw[:_PREFIX_LEN]
        mac = hmac.digest(self._secret, prefix + self._realm_b, "sha256")[:_MAC_LEN]
        if not hmac.compare_digest(mac, raw[_PREFIX_LEN:]):
            return _INV_NONCE

        # 2.-3. Response check; identical work for unknown users (the dummy HA1 goes
        # through the same normalisation as a stored one).
        dummy = self._dummy[alg.base]
        stored = ha1_lookup(creds.username, alg.base)
        known = stored is not None
        key = _normalise_ha1(dummy if stored is None else stored, alg.hexlen)
        if key is None:  # stored HA1 in a wrong format: treat as unknown
            key, known = dummy, False
        expected = _response(alg, key, method, creds.uri, nonce, qop, creds.nc, cnonce)
        given = creds.response.lower()
        if not given.isascii():
            given = ""
        if not (hmac.compare_digest(expected, given) and known):
            return _INV_CREDS

        # 4. Freshness (only now that the credentials are proven right).
        if prefix[:_INST_LEN] != self._inst:
            return _STALE_INSTANCE
        age = int(now * 1000.0) - int.from_bytes(prefix[_INST_LEN : _INST_LEN + _TS_LEN], "big")
        if age > self._lifetime_ms or age < -_FUTURE_TOLERANCE_MS:
            return _STALE_EXPIRED
        if qop is None:
            return _OK_NO_QOP

        # 5. Nonce-count replay defence.
        ctr = int.from_bytes(prefix[_INST_LEN + _TS_LEN :], "big")
        kh = 0 if retransmission_key is None else (hash(retransmission_key) & _M64) + 1
        tracked = self._tracked
        entry = tracked.get(ctr)
        if entry is None:
            if ctr <= self._watermark:
                return _STALE_FORGOTTEN
            if len(tracked) >= self._max_tracked:
                self._evict_oldest()
            tracked[ctr] = (kh << 32) | nc
            self._order.append(ctr)
            return _OK
        last = entry & _NC_MASK
        if nc > last:
            tracked[ctr] = (kh << 32) | nc
            return _OK
        if nc == last and kh and (entry >> 32) == kh:
            return _OK_RETRANSMISSION
        return _REPLAY

    def _evict_oldest(self) -> None:
        old = self._order.popleft()
        del self._tracked[old]
        self._watermark = max(self._watermark, old)


def _normalise_ha1(value: bytes | str | None, hexlen: int) -> str | None:
    """Stored HA1 → lower-case hex of the right length, or None (treated as unknown)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        if len(value) == hexlen // 2:
            return value.hex()
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if len(value) != hexlen:
        return None
    value = value.lower()
    if value.strip("0123456789abcdef"):
        return None
    return value


# --------------------------------------------------------------------------- client


class DigestClient:
    """Answers Digest challenges for one account (outbound trunk registration, tests)."""

    __slots__ = ("_ha1_cache", "_max_nonces", "_nc", "_password", "_prefs", "_realm", "username")

    def __init__(
        self,
        username: str,
        password: str,
        *,
        realm: str | None = None,
        algorithms: Iterable[str] | None = None,
        max_nonces: int = 16,
    ) -> None:
        """``realm``: when set, challenges for any other realm are refused.
        ``algorithms``: acceptable algorithms, most preferred first (default: all
        supported, strongest first)."""
        if _CTL_RE.search(username):
            raise ValueError("username contains a control character")
        if algorithms is None:
            prefs = list(SUPPORTED_ALGORITHMS)
        else:
            prefs = []
            for name in algorithms:
                canon = _known_algorithm(name)
                if canon in _ALGS and canon not in prefs:
                    prefs.append(canon)
        if not prefs:
            raise ValueError("no usable digest algorithm")
        self.username = username
        self._password = password
        self._realm = realm
        self._prefs: dict[str, int] = {name: i for i, name in enumerate(prefs)}
        self._nc: dict[str, int] = {}
        self._max_nonces = max(1, max_nonces)
        self._ha1_cache: dict[tuple[str, str], str] = {}

    def _usable(self, ch: DigestChallenge) -> bool:
        if ch.algorithm not in self._prefs:
            return False
        if self._realm is not None and ch.realm != self._realm:
            return False
        if ch.qop:
            return "auth" in ch.qop
        return not _ALGS[ch.algorithm].sess  # -sess needs a cnonce, i.e. qop

    def choose(self, challenges: Iterable[str]) -> str | None:
        """The challenge value to answer: our most preferred usable algorithm, ties going
        to the server's order. None when no challenge can be answered."""
        best: str | None = None
        best_pref = len(self._prefs)
        for value in challenges:
            ch = parse_challenge(value)
            if ch is None or not self._usable(ch):
                continue
            pref = self._prefs[ch.algorithm]
            if pref < best_pref:
                best, best_pref = value, pref
        return best

    def _next_nc(self, nonce: str) -> int:
        n = self._nc.pop(nonce, 0) + 1  # pop + reinsert keeps most recent last
        while len(self._nc) >= self._max_nonces:
            del self._nc[next(iter(self._nc))]
        self._nc[nonce] = n
        return n

    def authorize(
        self,
        challenge: str | DigestChallenge,
        method: str,
        uri: str,
        *,
        cnonce: str | None = None,
    ) -> str:
        """Authorization / Proxy-Authorization value answering ``challenge``.

        Raises :class:`DigestError` when the challenge is malformed or unusable.
        """
        ch = parse_challenge(challenge) if isinstance(challenge, str) else challenge
        if ch is None:
            raise DigestError("malformed digest challenge")
        if not self._usable(ch):
            raise DigestError(
                f"cannot answer challenge (algorithm={ch.algorithm}, qop={ch.qop!r},"
                f" realm={ch.realm!r})"
            )
        alg = _ALGS[ch.algorithm]
        ck = (ch.realm, alg.base)
        key = self._ha1_cache.get(ck)
        if key is None:
            key = ha1(self.username, ch.realm, self._password, alg.base)
            self._ha1_cache[ck] = key
        username = userhash(self.username, ch.realm, alg.base) if ch.userhash else self.username
        parts = [
            f"username={_quote(username)}",
            f"realm={_quote(ch.realm)}",
            f"nonce={_quote(ch.nonce)}",
            f"uri={_quote(uri)}",
        ]
        qop = cn = nc = None
        if ch.qop:
            qop = "auth"
            cn = cnonce if cnonce is not None else secrets.token_hex(12)
            nc = f"{self._next_nc(ch.nonce):08x}"
        resp = compute_response(
            ha1=key, algorithm=alg.name, method=method, uri=uri, nonce=ch.nonce,
            qop=qop, nc=nc, cnonce=cn,
        )
        parts += [f'response="{resp}"', f"algorithm={alg.name}"]
        if cn is not None:
            parts.append(f"cnonce={_quote(cn)}")
        if ch.opaque is not None:
            parts.append(f"opaque={_quote(ch.opaque)}")
        if qop is not None:
            parts += [f"qop={qop}", f"nc={nc}"]
        if ch.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)
