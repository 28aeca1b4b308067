"""Structured logging.

Code logs with fields in ``extra``::

    log.info("registered", extra={"user": "alice", "contact": "sip:alice@10.0.0.5:5060"})

On stderr this becomes one logfmt line::

    ts=2024-05-01T10:00:00.123Z level=info logger=agent.sipservice msg=registered \
        user=alice contact=sip:alice@10.0.0.5:5060

(one line; wrapped here).

Under systemd (``JOURNAL_STREAM`` names our stderr and ``systemd.journal`` is importable) records
go to the journal natively, with the fields as upper-case journal fields (``USER=alice``).

Never log secrets. Field names must not clash with :class:`logging.LogRecord` attributes
(``name``, ``msg``, ``args``, ``module``, ``filename``, ``process``...); use e.g. ``user_name``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import IO, Any, Final

__all__ = ["JournalHandler", "LogfmtFormatter", "record_fields", "setup_logging"]

_RESERVED: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}

_LEVELS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
_BARE_RE: Final = re.compile(r'^[^\s"=\\\x00-\x1f\x7f]+$')
_FIELD_RE: Final = re.compile(r"[^A-Z0-9_]")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record (everything not a standard LogRecord attribute)."""
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _logfmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text and _BARE_RE.match(text):
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        .replace("\r", "\\r").replace("\t", "\\t")
    )
    escaped = "".join(c if ord(c) >= 0x20 and ord(c) != 0x7F else f"\\x{ord(c):02x}"
                      for c in escaped)
    return f'"{escaped}"'


def _logfmt_key(key: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    return cleaned or "_"


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..." key=value ...``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        parts = [
            f"ts={ts.strftime('%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z",
            f"level={_LEVELS.get(record.levelno, record.levelname.lower())}",
            f"logger={_logfmt_value(record.name)}",
            f"msg={_logfmt_value(record.getMessage())}",
        ]
        for key, value in record_fields(record).items():
            parts.append(f"{_logfmt_key(key)}={_logfmt_value(value)}")
        if record.exc_info:
            parts.append(f"exc={_logfmt_value(self.formatException(record.exc_info))}")
        elif record.exc_text:
            parts.append(f"exc={_logfmt_value(record.exc_text)}")
        if record.stack_info:
            parts.append(f"stack={_logfmt_value(record.stack_info)}")
        return " ".join(parts)


_PRIORITY: Final = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                    (logging.INFO, 6))


def _journal_field(key: str) -> str:
    name = _FIELD_RE.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:64]


class JournalHandler(logging.Handler):
    """Send records to the systemd journal with their ``extra`` fields as journal fields.

    ``send`` is ``systemd.journal.send`` (injected so the handler can be tested without it).
    """

    def __init__(self, send: Any, *, identifier: str, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._send = send
        self._identifier = identifier

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            priority = 7
            for threshold, prio in _PRIORITY:
                if record.levelno >= threshold:
                    priority = prio
                    break
            fields: dict[str, Any] = {
                "PRIORITY": str(priority),
                "LOGGER": record.name,
                "SYSLOG_IDENTIFIER": self._identifier,
                "CODE_FILE": record.pathname,
                "CODE_LINE": str(record.lineno),
                "CODE_FUNC": record.funcName,
            }
            for key, value in record_fields(record).items():
                fields.setdefault(_journal_field(key), "" if value is None else str(value))
            if record.exc_info:
                fields["EXCEPTION_TEXT"] = logging.Formatter().formatException(record.exc_info)
                message += "\n" + fields["EXCEPTION_TEXT"]
            self._send(message, **fields)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def _stderr_is_journal(env: Mapping[str, str], stream: IO[str]) -> bool:
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}" == dev and f"{st.st_ino}" == ino


def setup_logging(
    level: str | int = "info",
    *,
    target: str = "auto",
    identifier: str = "edgepbx-agent",
    stream: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Configure the root logger; returns the target used: ``"journal"`` or ``"stderr"``.

    ``target``: ``auto`` (journal when stderr is connected to the journal and systemd-python is
    importable, else stderr), ``journal`` or ``stderr``.
    """
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler: logging.Handler | None = None
    used = "stderr"
    if target in ("auto", "journal") and (target == "journal" or _stderr_is_journal(env, stream)):
        try:
            from systemd import journal
        except ImportError:
            journal = None
        if journal is not None:
            handler = JournalHandler(journal.send, identifier=identifier)
            used = "journal"
    if handler is None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    if target == "journal" and used != "journal":
        logging.getLogger(__name__).warning(
            "journal logging requested but systemd-python is not installed; using stderr"
        )
    return used
