"""What the phone-configuration renderers need to know, as frozen dataclasses.

This is the renderers' own view of the site, built by the agent from the site
document (with line passwords already decrypted). Construction validates the
values: text that would end up in a phone file may not contain control
characters (newlines would break Yealink's ``key = value`` lines), MACs are
normalised to 12 lowercase hex digits, ports and transports are checked.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Transport = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")

_MAC_FORMS = (
    re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"),
    re.compile(r"^[0-9a-f]{2}(-[0-9a-f]{2}){5}$"),
    re.compile(r"^[0-9a-f]{4}(\.[0-9a-f]{4}){2}$"),
    re.compile(r"^[0-9a-f]{12}$"),
)
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DIALABLE = re.compile(r"^[0-9*#+]{1,32}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def normalise_mac(text: str) -> str:
    """Return ``text`` as 12 lowercase hex digits.

    Accepted: ``aa:bb:cc:dd:ee:ff``, ``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` and
    ``aabbccddeeff`` (any case, surrounding blanks ignored). Anything else raises
    ValueError naming the value and the accepted forms.
    """
    if not isinstance(text, str):
        raise ValueError(f"MAC address must be text, not {type(text).__name__}")
    candidate = text.strip().lower()
    if not any(form.match(candidate) for form in _MAC_FORMS):
        raise ValueError(
            f"malformed MAC address {text!r}: expected 12 hex digits as "
            "aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff"
        )
    return re.sub(r"[^0-9a-f]", "", candidate)


def check_text(what: str, value: str, *, max_len: int = 64, allow_empty: bool = True) -> None:
    """Refuse text that cannot be put safely into every phone file format."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    if CONTROL_CHARS.search(value):
        raise ValueError(f"{what} {value!r} must not contain control characters or newlines")
    if len(value) > max_len:
        raise ValueError(f"{what} is longer than {max_len} characters")


def check_dialable(what: str, value: str) -> None:
    if not _DIALABLE.match(value):
        raise ValueError(f"{what} {value!r} must be 1-32 of the characters 0-9 * # +")


def _check_port(what: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} {port!r} must be an integer from 1 to 65535")


@dataclass(frozen=True)
class PagingGroup:
    """A multicast paging group the phones listen to."""

    label: str
    address: str
    port: int

    def __post_init__(self) -> None:
        check_text("paging group label", self.label, max_len=32, allow_empty=False)
        try:
            ip = ipaddress.IPv4Address(self.address)
        except ValueError:
            raise ValueError(
                f"paging group {self.label!r}: {self.address!r} is not an IPv4 address"
            ) from None
        if not ip.is_multicast:
            raise ValueError(
                f"paging group {self.label!r}: {self.address} is not a multicast address"
            )
        _check_port(f"paging group {self.label!r} port", self.port)


@dataclass(frozen=True)
class Line:
    """One SIP registration on a phone."""

    extension: str
    auth_username: str
    auth_password: str
    display_name: str = ""
    label: str = ""
    shared: bool = False

    def __post_init__(self) -> None:
        check_dialable("line extension", self.extension)
        check_text("line auth username", self.auth_username, allow_empty=False)
        check_text("line auth password", self.auth_password, max_len=128, allow_empty=False)
        check_text("line display name", self.display_name)
        check_text("line label", self.label, max_len=32)

    @property
    def shown_label(self) -> str:
        """The key label: the label, else the display name, else the extension."""
        return self.label or self.display_name or self.extension

    @property
    def shown_name(self) -> str:
        """The caller name shown: the display name, else the extension."""
        return self.display_name or self.extension


@dataclass(frozen=True)
class SpeedDial:
    label: str
    number: str

    def __post_init__(self) -> None:
        check_text("speed dial label", self.label, max_len=32)
        check_dialable("speed dial number", self.number)

    @property
    def shown_label(self) -> str:
        return self.label or self.number


@dataclass(frozen=True)
class Blf:
    """A busy-lamp-field key watching another extension (pressing it calls it)."""

    label: str
    extension: str

    def __post_init__(self) -> None:
        check_text("BLF label", self.label, max_len=32)
        check_dialable("BLF extension", self.extension)

    @property
    def shown_label(self) -> str:
        return self.label or self.extension


@dataclass(frozen=True)
class Phone:
    mac: str
    model: str
    lines: tuple[Line, ...]
    speed_dials: tuple[SpeedDial, ...] = ()
    blf: tuple[Blf, ...] = ()
    paging_groups: tuple[str, ...] = ()
    """Labels of the site's paging groups this phone listens to."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalise_mac(self.mac))
        check_text("phone model", self.model, max_len=32, allow_empty=False)
        for name in ("lines", "speed_dials", "blf", "paging_groups"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        for label in self.paging_groups:
            check_text("paging group label", label, max_len=32, allow_empty=False)


@dataclass(frozen=True)
class ProvisioningSite:
    name: str
    time_zone: str
    """IANA zone name, e.g. ``Europe/Berlin``."""
    sip_host: str
    """Host name or IP address of the agent, as the phones should reach it."""
    sip_ports: dict[Transport, int] = field(
        default_factory=lambda: {"udp": 5060, "tcp": 5060, "tls": 5061}
    )
    transport: Transport = "udp"
    voicemail_pilot: str = "*97"
    outside_line_digit: str = "9"
    dial_template: tuple[str, ...] = ()
    """Cisco dial-template MATCH patterns (``.`` one digit, ``*`` one or more,
    ``\\*`` a literal star)."""
    paging_groups: tuple[PagingGroup, ...] = ()
    ntp_server: str = ""
    """Defaults to ``sip_host`` when empty."""

    def __post_init__(self) -> None:
        check_text("site name", self.name, allow_empty=False)
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {self.time_zone!r}") from None
        for what, host in (("SIP server host", self.sip_host), ("NTP server", self.ntp)):
            if not _HOST.match(host):
                raise ValueError(f"{what} {host!r} is not a host name or IP address")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport {self.transport!r} must be one of {TRANSPORTS}")
        ports = dict(self.sip_ports)
        for transport, port in ports.items():
            if transport not in TRANSPORTS:
                raise ValueError(f"unknown transport {transport!r} in sip_ports")
            _check_port(f"{transport} port", port)
        if self.transport not in ports:
            raise ValueError(f"no port given for the preferred transport {self.transport!r}")
        object.__setattr__(self, "sip_ports", ports)
        check_dialable("voicemail pilot", self.voicemail_pilot)
        if self.outside_line_digit:
            check_dialable("outside-line digit", self.outside_line_digit)
        object.__setattr__(self, "dial_template", tuple(self.dial_template))
        for pattern in self.dial_template:
            if not re.match(r"^(\\\*|[0-9*#+.]){1,32}$", pattern):
                raise ValueError(
                    f"dial template pattern {pattern!r} may use only 0-9 * # + . and \\*"
                )
        object.__setattr__(self, "paging_groups", tuple(self.paging_groups))
        labels = [group.label for group in self.paging_groups]
        if len(set(labels)) != len(labels):
            raise ValueError("paging group labels must be unique")

    def __hash__(self) -> int:  # sip_ports is a dict; hash on the rest
        return hash((self.name, self.time_zone, self.sip_host, self.transport))

    @property
    def sip_port(self) -> int:
        """The port of the preferred transport."""
        return self.sip_ports[self.transport]

    @property
    def ntp(self) -> str:
        return self.ntp_server or self.sip_host

    def paging_group(self, label: str) -> PagingGroup:
        for group in self.paging_groups:
            if group.label == label:
                return group
        raise ValueError(f"unknown paging group {label!r}")

    def phone_paging(self, phone: Phone) -> tuple[PagingGroup, ...]:
        """The paging groups ``phone`` listens to, in the phone's order."""
        return tuple(self.paging_group(label) for label in phone.paging_groups)
