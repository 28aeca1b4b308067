"""agent.tftp_service over real loopback sockets, with a small asyncio TFTP client.

The client exists because Debian's tftp-hpa 5.2 client sends no options at all (its
RRQ is bare ``name\\0octet\\0``), so the OACK path (blksize/tsize/timeout) is driven
from here; tests/interop/test_tftp_hpa.py covers the real client.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from collections.abc import Callable

import pytest

from agent.tftp_service import TftpService
from provisioning.tftp import Client

LOOPBACK = "127.0.0.1"


class TftpClient(asyncio.DatagramProtocol):
    """A read-only TFTP client with optional simulated loss in both directions.

    Retransmits its last packet (RRQ, ACK) on timeout; re-ACKs duplicate DATA. Stays
    answering after the last block until closed, so a lost final ACK is repaired by the
    server's retransmission rather than ending the transfer in a server timeout.
    """

    def __init__(self, server: Client, filename: str, *, options: dict[str, str] | None = None,
                 loss: float = 0.0, rng: random.Random | None = None,
                 timeout: float = 0.25, max_tries: int = 40) -> None:
        self.server = server
        self.filename = filename
        self.options = options or {}
        self.loss = loss
        self.rng = rng or random.Random(0)
        self.timeout = timeout
        self.max_tries = max_tries
        self.transport: asyncio.DatagramTransport | None = None
        self.tid: Client | None = None
        self.blksize = 512
        self.expected = 1
        self.chunks: list[bytes] = []
        self.oack: dict[str, str] | None = None
        self.error: tuple[int, str] | None = None
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.last: tuple[bytes, Client] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tries = 0
        self.dropped = 0

    # -- plumbing with loss ---------------------------------------------------------------
    def _send(self, data: bytes, to: Client, *, remember: bool = True) -> None:
        if remember:
            self.last = (data, to)
            self.tries = 0
            self._arm()
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        assert self.transport is not None
        self.transport.sendto(data, to)

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.done.done():
            self.timer = asyncio.get_running_loop().call_later(self.timeout, self._on_timeout)

    def _on_timeout(self) -> None:
        self.timer = None
        if self.done.done() or self.last is None:
            return
        self.tries += 1
        if self.tries > self.max_tries:
            self.done.set_exception(TimeoutError(f"{self.filename}: no answer"))
            return
        data, to = self.last
        if self.rng.random() >= self.loss:
            assert self.transport is not None
            self.transport.sendto(data, to)
        else:
            self.dropped += 1
        self._arm()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        rrq = b"\x00\x01" + self.filename.encode() + b"\x00octet\x00"
        for name, value in self.options.items():
            rrq += name.encode() + b"\x00" + value.encode() + b"\x00"
        self._send(rrq, self.server)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        source = (str(addr[0]), int(addr[1]))
        if self.tid is None:
            self.tid = source
        elif source != self.tid:
            return
        opcode = struct.unpack("!H", data[:2])[0]
        if opcode == 5:
            code = struct.unpack("!H", data[2:4])[0]
            self.error = (code, data[4:].rstrip(b"\x00").decode())
            if not self.done.done():
                self.done.set_exception(FileNotFoundError(self.error))
            return
        if opcode == 6:
            if self.expected == 1 and not self.chunks:
                fields = data[2:].split(b"\x00")[:-1]
                self.oack = {fields[i].decode().lower(): fields[i + 1].decode()
                             for i in range(0, len(fields), 2)}
                self.blksize = int(self.oack.get("blksize", "512"))
                self._send(b"\x00\x04\x00\x00", source)
            return
        if opcode != 3:
            return
        block = struct.unpack("!H", data[2:4])[0]
        if block == self.expected & 0xFFFF and not self.done.done():
            payload = data[4:]
            self.chunks.append(payload)
            self.expected += 1
            self._send(b"\x00\x04" + data[2:4], source)
            if len(payload) < self.blksize:
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                self.done.set_result(b"".join(self.chunks))
        else:
            # A duplicate (our ACK was lost): ACK it again, never advance.
            self._send(b"\x00\x04" + data[2:4], source, remember=False)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()


async def fetch(server: Client, filename: str, **kwargs: object) -> tuple[bytes, TftpClient]:
    loop = asyncio.get_running_loop()
    _t, client = await loop.create_datagram_endpoint(
        lambda: TftpClient(server, filename, **kwargs),  # type: ignore[arg-type]
        local_addr=(server[0], 0))
    try:
        return await asyncio.wait_for(client.done, 8.0), client
    finally:
        client.close()


def files_source(files: dict[str, bytes], calls: list[str] | None = None,
                 ) -> Callable[[str, Client], bytes | None]:
    def source(name: str, _client: Client) -> bytes | None:
        if calls is not None:
            calls.append(name)
        return files.get(name)
    return source


async def wait_idle(service: TftpService, timeout: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        stats = service.stats()
        if stats["active"] == 0 and stats["sockets"] == 0:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"transfers still live: {stats}")
        await asyncio.sleep(0.02)


def test_concurrent_fetch_with_loss() -> None:
    """20 clients at once, 5% of the clients' sends and receives dropped: all byte-exact."""
    rng = random.Random(20240501)
    files = {f"file{i:02d}.bin": rng.randbytes(size)
             for i, size in enumerate([0, 1, 511, 512, 513, 1024, 4096, 9999, 30_000, 65_536,
                                       1427, 1428, 1429, 2856, 77_777, 12_345, 100, 5000,
                                       20_000, 50_000])}

    async def main() -> None:
        service = TftpService(files_source(files), host=LOOPBACK, port=0,
                              default_timeout=0.2, max_retries=20)
        await service.start()
        try:
            loop = asyncio.get_running_loop()
            clients: list[TftpClient] = []

            async def one(i: int, name: str) -> bytes:
                options = {"blksize": "1428", "tsize": "0"} if i % 2 else None
                _t, client = await loop.create_datagram_endpoint(
                    lambda: TftpClient(service.local, name, options=options, loss=0.05,
                                       rng=random.Random(i), timeout=0.3),
                    local_addr=(LOOPBACK, 0))
                clients.append(client)
                return await asyncio.wait_for(client.done, 8.0)

            names = sorted(files)
            results = await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))
            for name, got in zip(names, results, strict=True):
                assert got == files[name], name
            for client in clients:
                if client.options:
                    assert client.oack is not None
                    assert client.oack["tsize"] == str(len(files[client.filename]))
            # Clients keep answering until the server has its final ACKs.
            stats = await wait_idle(service)
            for client in clients:
                client.close()
            assert stats["completed"] == 20 and stats["failed"] == 0, stats
            assert sum(c.dropped for c in clients) > 0  # the loss really happened
        finally:
            await service.stop()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 10


def test_oack_negotiation_blksize_tsize_timeout() -> None:
    content = bytes(range(256)) * 20  # 5120 bytes

    async def main() -> None:
        service = TftpService(files_source({"a.bin": content}), host=LOOPBACK, port=0,
                              max_blksize=1024)
        await service.start()
        try:
            got, client = await fetch(service.local, "a.bin",
                                      options={"blksize": "1428", "tsize": "0", "timeout": "3",
                                               "x-unknown": "1"})
            assert got == content
            # blksize clamped to max_blksize, tsize answered, timeout echoed, unknown dropped.
            assert client.oack == {"blksize": "1024", "tsize": "5120", "timeout": "3"}
            assert client.tid is not None and client.tid[1] != service.local[1]  # own TID
            stats = await wait_idle(service)
            assert stats["completed"] == 1
        finally:
            await service.stop()

    asyncio.run(main())


def test_file_source_exception_is_not_found_and_logged(caplog: pytest.LogCaptureFixture,
                                                        ) -> None:
    def broken(_name: str, _client: Client) -> bytes | None:
        raise RuntimeError("database on fire")

    async def main() -> None:
        service = TftpService(broken, host=LOOPBACK, port=0)
        await service.start()
        try:
            with pytest.raises(FileNotFoundError) as info:
                await fetch(service.local, "x.cfg")
            assert info.value.args[0] == (1, "file not found")
            assert service.stats()["source_errors"] == 1
            assert service.stats()["sockets"] == 0
        finally:
            await service.stop()

    with caplog.at_level(logging.INFO, logger="agent.tftp_service"):
        asyncio.run(main())
    failed = [r for r in caplog.records if r.getMessage() == "tftp file source failed"]
    assert failed and failed[0].exc_info is not None
    refused = [r for r in caplog.records if r.getMessage() == "tftp request refused"]
    assert refused and refused[0].__dict__["file_name"] == "x.cfg"


def test_access_log_and_sockets_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        service = TftpService(files_source({"a": b"hello"}), host=LOOPBACK, port=0)
        await service.start()
        try:
            got, client = await fetch(service.local, "a")
            assert got == b"hello"
            await wait_idle(service)
            # The transfer's socket is closed: a datagram to its TID now goes nowhere.
            assert client.tid is not None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((LOOPBACK, 0))
                probe.sendto(b"\x00\x04\x00\x01", client.tid)
        finally:
            await service.stop()

    with caplog.at_level(logging.INFO, logger="agent.tftp_service"):
        asyncio.run(main())
    done = [r for r in caplog.records if r.getMessage() == "tftp transfer completed"]
    assert len(done) == 1
    fields = done[0].__dict__
    assert fields["file_name"] == "a" and fields["bytes"] == 5
    assert fields["client"].startswith("127.0.0.1:")


def test_stop_aborts_live_transfers(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        service = TftpService(files_source({"big": b"x" * 10_000}), host=LOOPBACK, port=0,
                              default_timeout=5.0)
        await service.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.sendto(b"\x00\x01big\x00octet\x00", service.local)
            for _ in range(100):
                if service.stats()["started"]:
                    break
                await asyncio.sleep(0.01)
            assert service.stats()["active"] == 1
            await service.stop()
        assert service.stats()["active"] == 0 and service.stats()["sockets"] == 0
        assert service.stats()["failed"] == 1

    with caplog.at_level(logging.INFO, logger="agent.tftp_service"):
        asyncio.run(main())
    failed = [r for r in caplog.records if r.getMessage() == "tftp transfer failed"]
    assert failed and failed[0].__dict__["reason"] == "server stopping"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6() -> None:
    seen: list[Client] = []

    def source(name: str, client: Client) -> bytes | None:
        seen.append(client)
        return b"v6" * 600

    async def main() -> None:
        service = TftpService(source, host="::1", port=0)
        await service.start()
        try:
            got, _client = await fetch(service.local, "a")
            assert got == b"v6" * 600
            await wait_idle(service)
        finally:
            await service.stop()

    asyncio.run(main())
    assert len(seen) == 1 and seen[0][0] == "::1" and len(seen[0]) == 2
