"""Listen specifications: ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``tls:0.0.0.0:5061``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class ListenError(ValueError):
    """A listen specification that cannot be used; the message says why."""


def hostport(host: str, port: int | str) -> str:
    """``host:port``, an IPv6 host in brackets (added only if not there already)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """Where to listen. ``host`` is bare (IPv6 without brackets), ready for ``bind()``."""

    transport: str
    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def hostport(self) -> str:
        """``host:port`` with IPv6 in brackets, as it appears in a URI or Via."""
        return hostport(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.transport}:{self.hostport}"


def parse_listen(text: str) -> ListenSpec:
    """Parse ``TRANSPORT:HOST[:PORT]``; IPv6 hosts go in brackets (``udp:[::1]:5060``).

    The port defaults to 5060 (udp, tcp) or 5061 (tls); port 0 asks the kernel for any free port.
    Raises :class:`ListenError` with a message naming the problem.
    """
    raw = text.strip()
    transport, sep, rest = raw.partition(":")
    if not sep:
        raise ListenError(
            f"{text!r}: expected TRANSPORT:HOST:PORT, e.g. udp:127.0.0.1:5060 or udp:[::1]:5060"
        )
    transport = transport.lower()
    if transport not in TRANSPORTS:
        raise ListenError(
            f"{text!r}: unknown transport {transport!r}; use one of {', '.join(TRANSPORTS)}"
        )
    port_text: str | None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ListenError(f"{text!r}: missing ']' after the IPv6 address")
        host = rest[1:end]
        tail = rest[end + 1 :]
        if tail == "":
            port_text = None
        elif tail.startswith(":"):
            port_text = tail[1:]
        else:
            raise ListenError(f"{text!r}: unexpected {tail!r} after the IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ListenError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        if rest.count(":") > 1:
            raise ListenError(f"{text!r}: put an IPv6 address in brackets, e.g. udp:[::1]:5060")
        host, sep, port_text_ = rest.partition(":")
        port_text = port_text_ if sep else None
        if not host:
            raise ListenError(f"{text!r}: missing host (use 0.0.0.0 or [::] for all addresses)")
        numeric = all(c.isdigit() or c == "." for c in host)
        if not _is_ipv4(host) and (numeric or not _HOSTNAME_RE.match(host)):
            raise ListenError(f"{text!r}: {host!r} is not an IP address or host name")
    if port_text is None:
        port = DEFAULT_PORTS[transport]
    else:
        if not port_text.isdigit() or not port_text.isascii():
            raise ListenError(f"{text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if port > 65535:
            raise ListenError(f"{text!r}: port {port} is out of range (0-65535)")
    return ListenSpec(transport=transport, host=host, port=port)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def reachable_address(host: str) -> str:
    """The address a phone should use for a listener bound to ``host``.

    A wildcard (``0.0.0.0``, ``::``) becomes the address of the interface the default
    route leaves from (a UDP ``connect`` sends nothing), else loopback.
    """
    import socket

    if host not in ("0.0.0.0", "::", ""):
        return host
    family = socket.AF_INET6 if host == "::" else socket.AF_INET
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # no packet is sent for UDP connect
            addr = str(s.getsockname()[0])
    except OSError:
        addr = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return addr
