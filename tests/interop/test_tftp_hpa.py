"""agent.tftp_service against Debian's tftp-hpa client (a real peer over loopback).

The service runs in a background thread with its own event loop; the tests run the
`tftp` binary as a subprocess. tftp-hpa 5.2's client sends no TFTP options (its RRQ is
bare ``name\\0mode\\0``), so it exercises the plain RFC 1350 path: octet and netascii
modes, multi-block files, a file that is an exact multiple of 512 bytes, and block
numbers wrapping 65535 -> 0. The OACK path (blksize/tsize/timeout) is driven by the
Python client in tests/test_tftp_service.py.

Note: tftp-hpa exits 0 even when the server answers ERROR, so outcomes are judged from
its output and the downloaded file.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from conftest import LOOPBACK, require_binary

from agent.tftp_service import TftpService
from provisioning import Line, Phone, ProvisioningSite, file_for, render_cisco_sep
from provisioning.tftp import Client

SITE = ProvisioningSite(
    name="Interop Dental",
    time_zone="Europe/Berlin",
    sip_host="pbx.interop.example",
    sip_ports={"udp": 5060, "tcp": 5060, "tls": 5061},
    transport="udp",
    voicemail_pilot="*97",
    outside_line_digit="9",
    dial_template=("1...", "9*", "112"),
)
PHONE = Phone(
    mac="AA:BB:CC:DD:EE:FF",
    model="CP-7841",
    lines=(Line("101", "101", "s3cret-101", display_name="Reception", label="Front"),),
)
PHONES = {PHONE.mac: PHONE}
SEP = "SEPAABBCCDDEEFF.cnf.xml"
# 65_600 blocks of 512 bytes: block numbers wrap past 65535 during the transfer.
WRAP_SIZE = 512 * 65_600 + 77


@functools.cache
def wrap_content() -> bytes:
    # Every 512-byte block carries its own (unwrapped) number: a block written at the wrong
    # offset after the wrap cannot go unnoticed.
    blocks = b"".join(i.to_bytes(4, "big") * 128 for i in range(WRAP_SIZE // 512))
    return blocks + b"T" * (WRAP_SIZE % 512)


class ServiceThread:
    """A TftpService on 127.0.0.1:<ephemeral> in a thread running its own event loop."""

    def __init__(self, source: Callable[[str, Client], bytes | None]) -> None:
        self.loop = asyncio.new_event_loop()
        self.service = TftpService(source, host=LOOPBACK, port=0)
        self.thread = threading.Thread(target=self.loop.run_forever, name="tftp", daemon=True)

    def call(self, fn: Callable[[], Any]) -> Any:
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    def start(self) -> ServiceThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.service.local[1]

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self.call(self.service.stats)
        return result

    def wait_idle(self, timeout: float = 10.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["active"] == 0 and stats["sockets"] == 0:
                return stats
            assert time.monotonic() < deadline, f"transfers still live: {stats}"
            time.sleep(0.02)


@pytest.fixture
def tftp_binary() -> str:
    return require_binary("tftp", "tftp-hpa")


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def server(calls: list[str]) -> Iterator[ServiceThread]:
    wrap = wrap_content()

    def source(name: str, _client: Client) -> bytes | None:
        calls.append(name)
        if name == "wrap.bin":
            return wrap
        if name == "exact.bin":
            return b"E" * 1536
        found = file_for(SITE, PHONES, name)
        return None if found is None else found[0]

    thread = ServiceThread(source).start()
    try:
        yield thread
    finally:
        thread.stop()


def tftp_get(binary: str, port: int, remote: str, local: Path, *, mode: str = "binary",
             timeout: float = 60.0) -> str:
    proc = subprocess.run(
        [binary, "-v", "-m", mode, LOOPBACK, str(port), "-c", "get", remote, str(local)],
        check=False, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return proc.stdout + proc.stderr


def test_client_version(tftp_binary: str) -> None:
    proc = subprocess.run([tftp_binary, "-V"], check=False, capture_output=True, text=True,
                          timeout=10)
    print(f"tftp client: {(proc.stdout + proc.stderr).strip()}")
    assert "tftp-hpa" in proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", ["binary", "netascii"])
def test_cisco_sep_file_byte_exact(tftp_binary: str, server: ServiceThread, tmp_path: Path,
                                   calls: list[str], mode: str,
                                   caplog: pytest.LogCaptureFixture) -> None:
    expected = render_cisco_sep(SITE, PHONE)
    assert len(expected) > 512 and b"\r" not in expected  # multi-block; netascii round-trips
    out = tmp_path / "sep.xml"
    with caplog.at_level(logging.INFO, logger="agent.tftp_service"):
        output = tftp_get(tftp_binary, server.port, SEP, out, mode=mode)
        stats = server.wait_idle()
    assert "Error" not in output, output
    assert out.read_bytes() == expected, output
    assert calls == [SEP]
    assert stats["completed"] == 1 and stats["failed"] == 0, stats
    done = [r for r in caplog.records if r.getMessage() == "tftp transfer completed"]
    assert len(done) == 1 and done[0].__dict__["file_name"] == SEP


def test_exact_multiple_of_blksize(tftp_binary: str, server: ServiceThread,
                                   tmp_path: Path) -> None:
    out = tmp_path / "exact.bin"
    output = tftp_get(tftp_binary, server.port, "exact.bin", out)
    assert out.read_bytes() == b"E" * 1536, output  # ends with an empty DATA block 4
    assert server.wait_idle()["completed"] == 1


def test_block_number_wraps(tftp_binary: str, server: ServiceThread, tmp_path: Path) -> None:
    out = tmp_path / "wrap.bin"
    output = tftp_get(tftp_binary, server.port, "wrap.bin", out, timeout=120)
    assert out.exists(), output
    assert out.stat().st_size == WRAP_SIZE, output
    assert out.read_bytes() == wrap_content()
    stats = server.wait_idle()
    assert stats["completed"] == 1 and stats["failed"] == 0, stats


def test_path_traversal_refused_before_file_source(tftp_binary: str, server: ServiceThread,
                                                   tmp_path: Path, calls: list[str]) -> None:
    out = tmp_path / "passwd"
    output = tftp_get(tftp_binary, server.port, "../etc/passwd", out)
    assert "Error code 2" in output, output
    assert calls == []
    assert not out.exists() or out.read_bytes() == b""
    stats = server.stats()
    assert stats["refused"] == 1 and stats["started"] == 0, stats


def test_unknown_file_not_found(tftp_binary: str, server: ServiceThread, tmp_path: Path,
                                calls: list[str]) -> None:
    out = tmp_path / "missing"
    output = tftp_get(tftp_binary, server.port, "SEP001122334455.cnf.xml", out)
    assert "Error code 1" in output and "file not found" in output.lower(), output
    assert calls == ["SEP001122334455.cnf.xml"]
    assert not out.exists() or out.read_bytes() == b""
