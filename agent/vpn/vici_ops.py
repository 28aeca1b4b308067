"""Blocking VICI operations for the VPN manager: run them on one worker thread only.

The ``vici`` package is synchronous and a :class:`vici.Session` is not thread-safe, so the
manager owns one command session used from a single-thread executor, and a separate
event session in the listener thread. Nothing here knows about asyncio.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vici
from vici.exception import (
    CommandException,
    DeserializationException,
    EventUnknownException,
    SessionException,
)


class VpnError(Exception):
    """A VPN operation failed; the message is meant for `edgepbx status`."""


# Everything a VICI round trip or our file loading can raise. OSError covers a socket that
# is gone (charon stopped or restarted) and timeouts.
VICI_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, struct.error, SessionException, CommandException,
    DeserializationException, EventUnknownException, VpnError,
)
# Of those, the ones meaning "the session is broken, reconnect".
SESSION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, struct.error, SessionException, DeserializationException,
)

IKE_PROPOSAL = "aes256-sha384-ecp384"
ESP_PROPOSAL = "aes256gcm16-ecp384"  # PFS with ecp384 on rekeying


@dataclass(frozen=True)
class VpnConfig:
    """One IKEv2 tunnel from the device (initiator) to the portal (responder).

    ``key_path``, ``cert_path`` and ``ca_path`` are re-read at every attempt, so a renewed
    certificate is used from the next (re)connection on. ``ca_path`` may hold a chain.
    """

    vici_socket: Path
    key_path: Path
    cert_path: Path
    ca_path: Path
    remote_addr: str  # the portal's outer address or host name
    inner_address: str  # the device's inner address: local_ts = inner_address/32
    remote_ts: tuple[str, ...]  # the portal's service network(s)
    remote_id: str = "%any"  # the portal certificate's identity (e.g. its DNS name)
    local_addr: str | None = None  # outer source address; None: charon picks
    name: str = "edgepbx-portal"  # connection (IKE) name in charon
    child: str = "portal"  # CHILD_SA name
    ike_proposal: str = IKE_PROPOSAL
    esp_proposal: str = ESP_PROPOSAL
    dpd_delay: float = 10.0
    initiate_timeout: float = 20.0  # charon's own wait for the CHILD_SA, seconds
    connect_timeout: float = 5.0  # connecting to the VICI socket

    def __post_init__(self) -> None:
        ip = ipaddress.ip_address(self.inner_address)  # ValueError if not an address
        if ip.is_unspecified:
            raise ValueError("the inner address must not be the unspecified address")
        for net in self.remote_ts:
            ipaddress.ip_network(net, strict=False)
        if not self.remote_ts:
            raise ValueError("remote_ts: the portal's service network is required")

    @property
    def local_ts(self) -> str:
        ip = ipaddress.ip_address(self.inner_address)
        return f"{ip}/{ip.max_prefixlen}"


@dataclass(frozen=True)
class SaInfo:
    """Our IKE_SA and its CHILD_SA as list-sas reports them."""

    ike_id: str
    ike_state: str
    child_state: str | None
    local_host: str = ""
    remote_host: str = ""
    remote_id: str = ""
    ike_proposal: str = ""
    esp_proposal: str = ""
    encap: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    established_s: int = 0
    local_ts: tuple[str, ...] = ()
    remote_ts: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def installed(self) -> bool:
        return self.ike_state == "ESTABLISHED" and self.child_state == "INSTALLED"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ike_id": self.ike_id, "ike_state": self.ike_state, "child_state": self.child_state,
            "local_host": self.local_host, "remote_host": self.remote_host,
            "remote_id": self.remote_id, "ike_proposal": self.ike_proposal,
            "esp_proposal": self.esp_proposal, "udp_encap": self.encap,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "packets_in": self.packets_in, "packets_out": self.packets_out,
            "established_seconds": self.established_s,
            "local_ts": list(self.local_ts), "remote_ts": list(self.remote_ts),
        }


# ---------------------------------------------------------------------- sessions


def connect(path: Path, *, timeout: float, io_timeout: float | None) -> tuple[Any, socket.socket]:
    """A vici.Session on the AF_UNIX socket at path, and the socket (to shut it down)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.settimeout(io_timeout)
    except OSError:
        sock.close()
        raise
    return vici.Session(sock), sock


def close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# ---------------------------------------------------------------------- loading

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def split_pem_certs(data: bytes) -> list[bytes]:
    certs = [m.group(0) + b"\n" for m in _PEM_CERT.finditer(data)]
    if not certs:
        raise VpnError("no PEM certificate found")
    return certs


def cert_not_after(pem: bytes) -> dt.datetime:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


def conn_message(config: VpnConfig, cert_pem: bytes, ca_pems: list[bytes]) -> dict[str, Any]:
    """The load-conn message (swanctl.conf's connections.<name> as VICI wants it)."""
    conn: dict[str, Any] = {
        "version": "2",
        "remote_addrs": [config.remote_addr],
        "proposals": [config.ike_proposal],
        "dpd_delay": _seconds(config.dpd_delay),
        "keyingtries": "1",  # the manager retries, with backoff
        "local": {"auth": "pubkey", "certs": [cert_pem]},
        "remote": {"auth": "pubkey", "id": config.remote_id, "cacerts": ca_pems},
        "children": {config.child: {
            "mode": "tunnel",
            "local_ts": [config.local_ts],
            "remote_ts": list(config.remote_ts),
            "esp_proposals": [config.esp_proposal],
            "start_action": "none",  # the manager initiates
            "dpd_action": "clear",  # ... and re-initiates: charon must not race it
            "close_action": "none",
        }},
    }
    if config.local_addr:
        conn["local_addrs"] = [config.local_addr]
    return {config.name: conn}


@dataclass(frozen=True)
class Loaded:
    cert_not_after: dt.datetime


def load_all(session: Any, config: VpnConfig) -> Loaded:
    """Load the device key, the CA chain, the device certificate and the connection."""
    try:
        key_pem = config.key_path.read_bytes()
        cert_pem = config.cert_path.read_bytes()
        ca_pems = split_pem_certs(config.ca_path.read_bytes())
    except OSError as exc:
        raise VpnError(f"cannot read the VPN credentials: {exc}") from exc
    not_after = cert_not_after(cert_pem)
    session.load_key({"type": "any", "data": key_pem})
    for ca in ca_pems:
        session.load_cert({"type": "X509", "flag": "CA", "data": ca})
    session.load_cert({"type": "X509", "flag": "NONE", "data": cert_pem})
    session.load_conn(conn_message(config, cert_pem, ca_pems))
    return Loaded(cert_not_after=not_after)


# ---------------------------------------------------------------------- SAs


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    try:
        return int(_text(value) or 0)
    except ValueError:
        return 0


def parse_sa(ike: Mapping[str, Any], child_name: str) -> SaInfo:
    """An SaInfo from one IKE_SA entry of list-sas (bytes values, as vici gives them)."""
    child: Mapping[str, Any] | None = None
    for entry in (ike.get("child-sas") or {}).values():
        # Prefer an installed one (during a rekey the old and the new may both be there).
        if _text(entry.get("name")) == child_name and (
                child is None or _text(entry.get("state")) == "INSTALLED"):
            child = entry
    ike_prop = "/".join(x for x in (
        _text(ike.get("encr-alg")) + ("_" + _text(ike.get("encr-keysize"))
                                      if ike.get("encr-keysize") else ""),
        _text(ike.get("integ-alg")), _text(ike.get("prf-alg")), _text(ike.get("dh-group")),
    ) if x)
    info: dict[str, Any] = {
        "ike_id": _text(ike.get("uniqueid")),
        "ike_state": _text(ike.get("state")),
        "child_state": _text(child.get("state")) if child is not None else None,
        "local_host": _text(ike.get("local-host")),
        "remote_host": _text(ike.get("remote-host")),
        "remote_id": _text(ike.get("remote-id")),
        "ike_proposal": ike_prop,
        "established_s": _int(ike.get("established")),
    }
    if child is not None:
        esp = _text(child.get("encr-alg"))
        if child.get("encr-keysize"):
            esp += "_" + _text(child.get("encr-keysize"))
        if child.get("dh-group"):
            esp += "/" + _text(child.get("dh-group"))
        info.update(
            esp_proposal=esp,
            encap=_text(child.get("encap")) == "yes",
            bytes_in=_int(child.get("bytes-in")), bytes_out=_int(child.get("bytes-out")),
            packets_in=_int(child.get("packets-in")),
            packets_out=_int(child.get("packets-out")),
            local_ts=tuple(_text(t) for t in child.get("local-ts") or ()),
            remote_ts=tuple(_text(t) for t in child.get("remote-ts") or ()),
        )
    return SaInfo(**info)


def find_sa(session: Any, config: VpnConfig) -> SaInfo | None:
    """Our best IKE_SA (one with an installed CHILD_SA first), or None."""
    best: SaInfo | None = None
    for entry in session.list_sas({"ike": config.name}):
        ike = entry.get(config.name)
        if ike is None:
            continue
        sa = parse_sa(ike, config.child)
        if best is None or (sa.installed and not best.installed):
            best = sa
    return best


def terminate(session: Any, config: VpnConfig, ike_id: str | None = None,
              *, wait_ms: int = -1) -> None:
    """Terminate our IKE_SA (or the one with ike_id), forcing; no match is fine."""
    msg: dict[str, Any] = {"force": "yes", "timeout": str(wait_ms), "loglevel": "-1"}
    if ike_id:
        msg["ike-id"] = ike_id
    else:
        msg["ike"] = config.name
    try:
        for _ in session.terminate(msg):
            pass
    except CommandException:
        pass  # "no matching SAs to terminate found"


def initiate(session: Any, config: VpnConfig) -> SaInfo:
    """Bring the CHILD_SA up (or adopt the installed one); its SaInfo, or VpnError."""
    current = find_sa(session, config)
    if current is not None and current.installed:
        return current  # e.g. the agent restarted while charon kept the tunnel
    if current is not None:  # half-open or dying: start clean
        terminate(session, config, current.ike_id)
    log: list[str] = []
    try:
        for entry in session.initiate({
            "child": config.child, "ike": config.name,
            "timeout": str(int(config.initiate_timeout * 1000)), "init-limits": "no",
            "loglevel": "1",
        }):
            msg = _text(entry.get("msg"))
            if msg:
                log.append(msg)
    except CommandException as exc:
        terminate(session, config)  # don't leave it retransmitting behind our back
        detail = "; ".join(log[-3:])
        raise VpnError(f"{exc}" + (f" ({detail})" if detail else "")) from exc
    sa = find_sa(session, config)
    if sa is None or not sa.installed:
        terminate(session, config)
        raise VpnError("initiate returned but no CHILD_SA is installed")
    return sa
