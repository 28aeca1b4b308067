from __future__ import annotations

import io
import logging
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from agent.logs import JournalHandler, LogfmtFormatter, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def record(msg: str, extra: dict[str, Any] | None = None, level: int = logging.INFO) -> str:
    logger = logging.getLogger("agent.test")
    rec = logger.makeRecord("agent.test", level, __file__, 1, msg, (), None, extra=extra)
    return LogfmtFormatter().format(rec)


def test_logfmt_line() -> None:
    line = record("registered", {"user": "alice", "contact": "sip:alice@10.0.0.5:5060",
                                 "expires": 3600, "ok": True, "none": None})
    assert line.startswith("ts=")
    assert " level=info logger=agent.test msg=registered user=alice " in line
    assert "contact=sip:alice@10.0.0.5:5060 expires=3600 ok=true none=null" in line


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("line1\nline2", '"line1\\nline2"'),
        ("", '""'),
        ("bell\x07", '"bell\\x07"'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_logfmt_quoting(value: str, shown: str) -> None:
    assert f" v={shown}" in record("m", {"v": value})


def test_exception_is_one_line() -> None:
    logger = logging.getLogger("agent.test")
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logger.makeRecord("agent.test", logging.ERROR, __file__, 1, "failed", (),
                                sys.exc_info())
    line = LogfmtFormatter().format(rec)
    assert "\n" not in line
    assert "level=error" in line and "exc=" in line and "ValueError: boom" in line


def test_setup_logging_stderr() -> None:
    stream = io.StringIO()
    assert setup_logging("debug", stream=stream, env={}) == "stderr"
    logging.getLogger("agent.x").debug("hello", extra={"k": "v"})
    assert "level=debug logger=agent.x msg=hello k=v" in stream.getvalue()


def test_setup_logging_journal_when_stderr_is_the_journal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    sent: list[tuple[str, dict[str, str]]] = []
    journal = types.ModuleType("systemd.journal")
    journal.send = lambda msg, **fields: sent.append((msg, fields))  # type: ignore[attr-defined]
    pkg = types.ModuleType("systemd")
    pkg.journal = journal  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", pkg)
    monkeypatch.setitem(sys.modules, "systemd.journal", journal)
    with open(tmp_path / "f", "w") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert setup_logging("info", stream=stream, env=env) == "journal"
        logging.getLogger("agent.y").warning("registered %s", "x", extra={"user": "alice",
                                                                          "source-port": 5060})
        # another file on the same stream variable: not the journal
        assert setup_logging("info", stream=io.StringIO(), env=env) == "stderr"
    msg, fields = sent[0]
    assert msg == "registered x"
    assert fields["PRIORITY"] == "4"
    assert fields["LOGGER"] == "agent.y"
    assert fields["SYSLOG_IDENTIFIER"] == "edgepbx-agent"
    assert fields["USER"] == "alice"
    assert fields["SOURCE_PORT"] == "5060"


def test_journal_handler_never_raises() -> None:
    def send(msg: str, **fields: str) -> None:
        raise OSError("journal gone")

    handler = JournalHandler(send, identifier="t")
    logger = logging.getLogger("agent.z")
    rec = logger.makeRecord("agent.z", logging.INFO, __file__, 1, "m", (), None)
    old = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        handler.emit(rec)
    finally:
        logging.raiseExceptions = old


def test_journal_requested_without_systemd_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)
    stream = io.StringIO()
    assert setup_logging("info", target="journal", stream=stream, env={}) == "stderr"
    assert "systemd-python is not installed" in stream.getvalue()
