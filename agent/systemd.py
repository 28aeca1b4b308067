"""systemd service notifications (``Type=notify``): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Uses systemd-python (``from systemd import daemon``) when it is importable. Outside systemd
(``NOTIFY_SOCKET`` unset) every call is a cheap no-op. If ``NOTIFY_SOCKET`` is set but the
module is missing, an error is logged once and the notification is sent by this module itself:
the protocol is one datagram of ``KEY=VALUE`` lines to that socket, and a ``Type=notify`` unit
that never hears READY=1 would be killed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Final

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

log = logging.getLogger(__name__)

_Sender = Callable[[str], bool]
_sender: _Sender | None = None
_warned_missing = False
_MISSING_MSG: Final = (
    "NOTIFY_SOCKET is set but systemd-python is not installed (apt install python3-systemd); "
    "sending notifications directly"
)


def _load_sender() -> _Sender | None:
    global _warned_missing
    try:
        from systemd import daemon
    except ImportError:
        if not _warned_missing:
            _warned_missing = True
            log.error(_MISSING_MSG)
        return None

    def send(state: str) -> bool:
        return bool(daemon.notify(state))

    return send


def _send_direct(state: str) -> bool:
    """sd_notify(3) by hand: one datagram to $NOTIFY_SOCKET (path or @abstract)."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    elif not addr.startswith("/"):
        return False  # vsock and other kinds: not supported without libsystemd
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd", extra={"error": str(exc)})
        return False
    return True


def notify(state: str) -> bool:
    """Send ``state`` (``KEY=VALUE`` lines) to systemd. Returns whether it was sent."""
    global _sender
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    if _sender is None:
        _sender = _load_sender() or _send_direct
    return _sender(state)


def ready(status_text: str | None = None) -> bool:
    """READY=1, optionally with STATUS=."""
    state = "READY=1"
    if status_text is not None:
        state += "\nSTATUS=" + _one_line(status_text)
    return notify(state)


def status(text: str) -> bool:
    """STATUS=text: the line shown by ``systemctl status``."""
    return notify("STATUS=" + _one_line(text))


def watchdog() -> bool:
    """WATCHDOG=1: keep-alive; send every :func:`watchdog_interval` seconds."""
    return notify("WATCHDOG=1")


def reloading() -> bool:
    """RELOADING=1 with MONOTONIC_USEC (needed by ``Type=notify-reload``); send READY=1 after."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    """STOPPING=1: shutdown has begun."""
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when the watchdog is off (or meant for
    another process, per ``WATCHDOG_PID``)."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _reset_for_tests() -> None:
    global _sender, _warned_missing
    _sender = None
    _warned_missing = False
