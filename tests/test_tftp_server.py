"""The sans-I/O TFTP server core on a virtual clock: transfers, options, refusals,
retransmission, SAS avoidance, TIDs, and a 200-phone boot storm with loss."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest

from provisioning.tftp import (
    Ack,
    Client,
    Data,
    ErrorPacket,
    OptionAck,
    Outgoing,
    ReadRequest,
    RequestRefused,
    TftpServer,
    TransferCompleted,
    TransferFailed,
    TransferId,
    TransferStarted,
    WriteRequest,
    parse_packet,
)

PHONE: Client = ("192.0.2.10", 40000)
OTHER: Client = ("192.0.2.99", 40000)


def content_for(name: str, size: int) -> bytes:
    pattern = bytes((i * 7 + len(name)) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


class Files:
    """A file source that records its calls."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.calls: list[tuple[str, Client]] = []

    def __call__(self, name: str, client: Client) -> bytes | None:
        self.calls.append((name, client))
        return self.files.get(name)


def rrq(name: str = "f.cfg", *opts: tuple[str, str], mode: str = "octet") -> bytes:
    return ReadRequest(name, mode, tuple(opts)).encode()


def ack(block: int) -> bytes:
    return Ack(block).encode()


def sent(server: TftpServer) -> list[tuple[TransferId | None, Client, object]]:
    return [(o.tid, o.client, parse_packet(o.data)) for o in server.datagrams_to_send()]


def fetch(server: TftpServer, request: bytes, *, now: float = 0.0) -> tuple[bytes, list[object]]:
    """Run a loss-free transfer to completion; returns the content and the packets seen."""
    tid = server.receive_request(request, PHONE, now)
    assert tid is not None
    got = b""
    seen: list[object] = []
    for _ in range(100000):
        out = sent(server)
        assert len(out) == 1, out
        t, client, packet = out[0]
        assert (t, client) == (tid, PHONE)
        seen.append(packet)
        if isinstance(packet, OptionAck):
            server.receive_on_transfer(tid, ack(0), PHONE, now)
            continue
        assert isinstance(packet, Data)
        got += packet.data
        server.receive_on_transfer(tid, ack(packet.block), PHONE, now)
        if server.transfer_client(tid) is None:
            assert sent(server) == []
            return got, seen
    raise AssertionError("transfer did not end")


# -- full transfers --------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "opts", "blksize", "blocks", "oack"), [
    (0, (), 512, 1, None),
    (1, (), 512, 1, None),
    (511, (), 512, 1, None),
    (512, (), 512, 2, None),  # exact multiple: a final empty block
    (1024, (), 512, 3, None),
    (3000, (), 512, 6, None),
    (3000, (("blksize", "1024"),), 1024, 3, (("blksize", "1024"),)),
    (3000, (("BLKSIZE", "1428"), ("tsize", "0")), 1428, 3,
     (("BLKSIZE", "1428"), ("tsize", "3000"))),
    (2856, (("blksize", "1428"),), 1428, 3, (("blksize", "1428"),)),  # 2 full + empty
    (3000, (("blksize", "9000"),), 1428, 3, (("blksize", "1428"),)),  # clamped
    (3000, (("blksize", "65464"),), 1428, 3, (("blksize", "1428"),)),
    (3000, (("blksize", "8"),), 8, 376, (("blksize", "8"),)),
    (3000, (("blksize", "0"),), 512, 6, None),  # invalid: ignored, no OACK
    (3000, (("blksize", "7"),), 512, 6, None),
    (3000, (("blksize", "70000"),), 512, 6, None),
    (3000, (("blksize", "65465"),), 512, 6, None),
    (3000, (("blksize", "abc"),), 512, 6, None),
    (3000, (("blksize", "-512"),), 512, 6, None),
    (3000, (("blksize", ""),), 512, 6, None),
    (3000, (("blksize", "1e3"),), 512, 6, None),
    (3000, (("blksize", "99999999999999999999999"),), 512, 6, None),
    (3000, (("timeout", "3"),), 512, 6, (("timeout", "3"),)),
    (3000, (("timeout", "0"),), 512, 6, None),
    (3000, (("timeout", "256"),), 512, 6, None),
    (3000, (("tsize", "0"),), 512, 6, (("tsize", "3000"),)),
    (3000, (("tsize", "x"),), 512, 6, None),
    (3000, (("windowsize", "8"), ("multicast", ""), ("x", "y")), 512, 6, None),  # unknown
    (3000, (("windowsize", "8"), ("tsize", "0")), 512, 6, (("tsize", "3000"),)),
    (3000, (("blksize", "1024"), ("blksize", "64")), 1024, 3, (("blksize", "1024"),)),
])
def test_transfer(size: int, opts: tuple[tuple[str, str], ...], blksize: int, blocks: int,
                  oack: tuple[tuple[str, str], ...] | None) -> None:
    data = content_for("f.cfg", size)
    server = TftpServer(Files({"f.cfg": data}))
    got, seen = fetch(server, rrq("f.cfg", *opts))
    assert got == data
    if oack is None:
        assert not isinstance(seen[0], OptionAck)
    else:
        assert seen[0] == OptionAck(oack)
        seen = seen[1:]
    assert len(seen) == blocks
    assert all(isinstance(p, Data) for p in seen)
    assert [p.block for p in seen if isinstance(p, Data)] == list(range(1, blocks + 1))
    assert all(len(p.data) == blksize for p in seen[:-1] if isinstance(p, Data))
    last = seen[-1]
    assert isinstance(last, Data) and len(last.data) < blksize
    events = server.events()
    assert isinstance(events[0], TransferStarted) and events[0].blksize == blksize
    assert events[0].filename == "f.cfg" and events[0].client == PHONE
    assert isinstance(events[1], TransferCompleted) and events[1].bytes_sent == size
    st = server.stats
    assert (st.started, st.completed, st.failed, st.active) == (1, 1, 0, 0)
    assert server.get_timer() is None


def test_netascii_mode_converts_and_reports_tsize() -> None:
    server = TftpServer(Files({"f.txt": b"a\nb\n"}))
    got, seen = fetch(server, rrq("f.txt", ("tsize", "0"), mode="NETASCII"))
    assert got == b"a\r\nb\r\n"
    assert seen[0] == OptionAck((("tsize", "6"),))


def test_block_number_wraps_to_zero() -> None:
    data = content_for("big", 8 * 65536 + 3)
    server = TftpServer(Files({"big": data}))
    got, seen = fetch(server, rrq("big", ("blksize", "8")))
    assert got == data
    blocks = [p.block for p in seen if isinstance(p, Data)]
    assert len(blocks) == 65537  # 65536 full blocks and a 3-byte one
    assert blocks[65533:] == [65534, 65535, 0, 1]


def test_duration_on_virtual_clock() -> None:
    server = TftpServer(Files({"f": b"x" * 600}))
    tid = server.receive_request(rrq("f"), PHONE, 10.0)
    assert tid is not None
    server.receive_on_transfer(tid, ack(1), PHONE, 10.25)
    server.receive_on_transfer(tid, ack(2), PHONE, 10.5)
    done = server.events()[-1]
    assert done == TransferCompleted(tid, PHONE, 600, 0.5)


# -- refusals --------------------------------------------------------------------------------

TRAVERSAL = [
    (rrq("../etc/passwd"), 2),
    (rrq("/etc/passwd"), 2),
    (rrq("a/../../b"), 2),
    (rrq("a\\b"), 2),
    (rrq("..\\..\\windows"), 2),
    (rrq("f\x01.cfg"), 2),
    (rrq("\x7f"), 2),
    (rrq(""), 2),
    (b"\x00\x01abc\x00/../x\x00octet\x00", 4),  # NUL inside the name: "/../x" read as mode
    (b"\x00\x01a\x00b\x00c\x00", 4),  # NUL splits the name: option without value
    (rrq("x" * 256), 4),
    (rrq("x" * 5000), 4),
    (rrq("f.cfg", mode="mail"), 4),
    (rrq("f.cfg", mode="binary"), 4),
    (WriteRequest("f.cfg").encode(), 2),
    (WriteRequest("new.cfg", "octet", (("tsize", "100"),)).encode(), 2),
]


@pytest.mark.parametrize(("request_bytes", "code"), TRAVERSAL)
def test_refused_without_calling_file_source(request_bytes: bytes, code: int) -> None:
    files = Files({"f.cfg": b"secret"})
    server = TftpServer(files)
    assert server.receive_request(request_bytes, PHONE, 0.0) is None
    assert files.calls == []
    out = sent(server)
    assert len(out) == 1
    tid, client, packet = out[0]
    assert (tid, client) == (None, PHONE)
    assert isinstance(packet, ErrorPacket) and packet.code == code
    events = server.events()
    assert len(events) == 1
    assert isinstance(events[0], RequestRefused) and events[0].code == code
    assert server.get_timer() is None
    assert server.stats.refused == 1


def test_not_found_calls_source_once_and_answers_error_1() -> None:
    files = Files({})
    server = TftpServer(files)
    assert server.receive_request(rrq("SEP001122334455.cnf.xml"), PHONE, 0.0) is None
    assert files.calls == [("SEP001122334455.cnf.xml", PHONE)]
    assert sent(server) == [(None, PHONE, ErrorPacket(1, "file not found"))]
    assert server.events() == [RequestRefused(PHONE, "SEP001122334455.cnf.xml", 1,
                                              "file not found")]


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\x00\x04\x00\x01", b"\x00\x05\x00\x01x\x00",
                                     b"\x00\x03\x00\x01data", b"\x00\x09zz"])
def test_non_requests_on_port_69_are_dropped_silently(garbage: bytes) -> None:
    server = TftpServer(Files({"f": b"x"}))
    assert server.receive_request(garbage, PHONE, 0.0) is None
    assert server.datagrams_to_send() == []
    assert server.events() == []


def test_transfer_limit_answers_busy() -> None:
    server = TftpServer(Files({"f": b"x" * 2000}), max_transfers=2)
    assert server.receive_request(rrq("f"), ("192.0.2.1", 1), 0.0) is not None
    assert server.receive_request(rrq("f"), ("192.0.2.2", 1), 0.0) is not None
    server.datagrams_to_send()
    assert server.receive_request(rrq("f"), ("192.0.2.3", 1), 0.0) is None
    assert sent(server) == [(None, ("192.0.2.3", 1), ErrorPacket(0, "server busy"))]


def test_max_filename_setting() -> None:
    server = TftpServer(Files({"abcd": b"x"}), max_filename=3)
    assert server.receive_request(rrq("abcd"), PHONE, 0.0) is None
    assert sent(server)[0][2] == ErrorPacket(4, "file name too long")


# -- retransmission --------------------------------------------------------------------------


@pytest.mark.parametrize(("opts", "interval", "first"), [
    ((), 1.0, Data(1, b"x" * 512)),
    ((("timeout", "3"),), 3.0, OptionAck((("timeout", "3"),))),
    ((("blksize", "1024"),), 1.0, OptionAck((("blksize", "1024"),))),
])
def test_silent_client_gets_exact_retransmit_schedule_then_fails(
        opts: tuple[tuple[str, str], ...], interval: float, first: object) -> None:
    server = TftpServer(Files({"f": b"x" * 2000}), max_retries=5)
    t0 = 100.0
    tid = server.receive_request(rrq("f", *opts), PHONE, t0)
    assert tid is not None
    assert sent(server) == [(tid, PHONE, first)]
    for i in range(1, 6):
        deadline = server.get_timer()
        assert deadline is not None and deadline == pytest.approx(t0 + i * interval)
        server.handle_timer(deadline - 0.001)  # not yet
        assert server.datagrams_to_send() == []
        server.handle_timer(deadline)
        assert sent(server) == [(tid, PHONE, first)]
    deadline = server.get_timer()
    assert deadline is not None and deadline == pytest.approx(t0 + 6 * interval)
    server.handle_timer(deadline)
    assert server.datagrams_to_send() == []
    assert server.events()[-1] == TransferFailed(tid, PHONE, "timeout")
    assert server.get_timer() is None
    st = server.stats
    assert (st.retransmits, st.failed, st.active) == (5, 1, 0)


def test_progress_resets_retries() -> None:
    server = TftpServer(Files({"f": b"x" * 2000}), max_retries=2)
    tid = server.receive_request(rrq("f"), PHONE, 0.0)
    assert tid is not None
    server.handle_timer(1.0)
    server.handle_timer(2.0)  # two retransmissions of DATA 1
    server.receive_on_transfer(tid, ack(1), PHONE, 2.5)
    server.handle_timer(3.5)
    server.handle_timer(4.5)  # two retransmissions of DATA 2: still alive
    assert server.transfer_client(tid) == PHONE
    server.handle_timer(5.5)
    assert server.transfer_client(tid) is None


def test_lost_final_ack_retransmits_final_block() -> None:
    server = TftpServer(Files({"f": b"x" * 100}))
    tid = server.receive_request(rrq("f"), PHONE, 0.0)
    assert tid is not None
    server.handle_timer(1.0)
    assert sent(server) == [(tid, PHONE, Data(1, b"x" * 100))] * 2
    server.receive_on_transfer(tid, ack(1), PHONE, 1.1)
    assert isinstance(server.events()[-1], TransferCompleted)


def test_duplicate_ack_causes_no_duplicate_data() -> None:
    server = TftpServer(Files({"f": b"x" * 2000}))
    tid = server.receive_request(rrq("f"), PHONE, 0.0)
    assert tid is not None
    server.handle_timer(1.0)  # DATA 1 sent twice (a delayed first copy, say)
    assert len(sent(server)) == 2
    server.receive_on_transfer(tid, ack(1), PHONE, 1.1)
    assert sent(server) == [(tid, PHONE, Data(2, b"x" * 512))]
    server.receive_on_transfer(tid, ack(1), PHONE, 1.2)  # the ACK of the second copy
    assert server.datagrams_to_send() == []
    server.receive_on_transfer(tid, ack(2), PHONE, 1.3)
    assert [p for _, _, p in sent(server)] == [Data(3, b"x" * 512)]
    assert server.stats.duplicate_acks == 1


def test_oack_path_waits_for_ack_zero_and_ignores_others() -> None:
    server = TftpServer(Files({"f": b"x" * 100}))
    tid = server.receive_request(rrq("f", ("tsize", "0")), PHONE, 0.0)
    assert tid is not None
    assert sent(server) == [(tid, PHONE, OptionAck((("tsize", "100"),)))]
    server.receive_on_transfer(tid, ack(1), PHONE, 0.1)
    server.receive_on_transfer(tid, Data(1, b"z").encode(), PHONE, 0.1)
    server.receive_on_transfer(tid, b"\x00", PHONE, 0.1)
    assert server.datagrams_to_send() == []
    server.receive_on_transfer(tid, ack(0), PHONE, 0.2)
    assert sent(server) == [(tid, PHONE, Data(1, b"x" * 100))]


def test_client_error_ends_transfer_without_reply() -> None:
    server = TftpServer(Files({"f": b"x" * 2000}))
    tid = server.receive_request(rrq("f", ("tsize", "0")), PHONE, 0.0)
    assert tid is not None
    server.datagrams_to_send()
    server.receive_on_transfer(tid, ErrorPacket(8, "tsize too big").encode(), PHONE, 0.1)
    assert server.datagrams_to_send() == []
    assert server.events()[-1] == TransferFailed(tid, PHONE, "client error 8: tsize too big")
    assert server.get_timer() is None


# -- TIDs ------------------------------------------------------------------------------------


def test_wrong_source_gets_error_5_and_transfer_continues() -> None:
    server = TftpServer(Files({"f": b"x" * 1000}))
    tid = server.receive_request(rrq("f"), PHONE, 0.0)
    assert tid is not None
    server.datagrams_to_send()
    for source in (OTHER, (PHONE[0], PHONE[1] + 1)):
        server.receive_on_transfer(tid, ack(1), source, 0.1)
        assert sent(server) == [(tid, source, ErrorPacket(5, "unknown transfer ID"))]
    server.receive_on_transfer(tid, ErrorPacket(0, "x").encode(), OTHER, 0.1)
    assert server.datagrams_to_send() == []  # never answer an ERROR
    server.receive_on_transfer(tid, ack(1), PHONE, 0.2)
    assert sent(server) == [(tid, PHONE, Data(2, b"x" * 488))]
    assert server.stats.wrong_source == 3
    server.receive_on_transfer(tid, ack(2), PHONE, 0.3)
    assert isinstance(server.events()[-1], TransferCompleted)


def test_unknown_tid_is_ignored() -> None:
    server = TftpServer(Files({"f": b"x"}))
    server.receive_on_transfer(TransferId(42), ack(1), PHONE, 0.0)
    assert server.datagrams_to_send() == []
    assert server.stats.unknown_tid == 1


def test_retransmitted_request_is_absorbed() -> None:
    files = Files({"f": b"x" * 1000})
    server = TftpServer(files)
    tid = server.receive_request(rrq("f"), PHONE, 0.0)
    server.datagrams_to_send()
    assert server.receive_request(rrq("f"), PHONE, 0.5) == tid
    assert server.datagrams_to_send() == []
    assert len(files.calls) == 1
    assert server.stats.duplicate_requests == 1


def test_new_request_from_same_port_supersedes() -> None:
    server = TftpServer(Files({"f": b"x" * 1000, "g": b"y"}))
    old = server.receive_request(rrq("f"), PHONE, 0.0)
    new = server.receive_request(rrq("g"), PHONE, 0.1)
    assert old is not None and new is not None and new != old
    events = server.events()
    assert TransferFailed(old, PHONE, "superseded by a new request") in events
    assert server.active_transfers() == [new]


def test_transfers_are_independent_per_client_and_tid() -> None:
    server = TftpServer(Files({"f": b"x" * 1000}))
    a = server.receive_request(rrq("f"), ("192.0.2.1", 5000), 0.0)
    b = server.receive_request(rrq("f"), ("192.0.2.1", 5001), 0.0)
    assert a is not None and b is not None and a != b
    out = server.datagrams_to_send()
    assert [(o.tid, o.client) for o in out] == [(a, ("192.0.2.1", 5000)),
                                                (b, ("192.0.2.1", 5001))]
    server.receive_on_transfer(a, ack(1), ("192.0.2.1", 5000), 0.1)
    assert [(o.tid, parse_packet(o.data)) for o in server.datagrams_to_send()] == [
        (a, Data(2, b"x" * 488))]


def test_abort() -> None:
    server = TftpServer(Files({"f": b"x" * 1000}))
    tid = server.receive_request(rrq("f"), PHONE, 0.0)
    assert tid is not None
    server.abort(tid, "shutdown")
    assert server.events()[-1] == TransferFailed(tid, PHONE, "shutdown")
    assert server.get_timer() is None


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="blksize"):
        TftpServer(Files({}), default_blksize=2000, max_blksize=1428)


# -- the boot storm --------------------------------------------------------------------------


@dataclass
class SimClient:
    addr: Client
    name: str
    request: bytes
    timeout: float
    tid: TransferId | None = None
    got: bytearray = field(default_factory=bytearray)
    expected: int = 1  # next DATA block (internal count)
    blksize: int = 512
    last: bytes = b""
    done: bool = False
    failed: bool = False
    timer_seq: int = 0
    retries: int = 0


class ToServer(NamedTuple):
    tid: TransferId | None
    addr: Client
    data: bytes


class ClientTimer(NamedTuple):
    client: SimClient
    token: int


@pytest.mark.parametrize("seed", [20261123, 1, 2, 3])
def test_boot_storm_200_phones_with_5_percent_loss(seed: int) -> None:
    rng = random.Random(seed)
    loss = 0.05
    latency = 0.002
    sizes = {f"SEP{i:012X}.cnf.xml": 2000 + rng.randrange(9000) for i in range(200)}
    sizes["SEP000000000007.cnf.xml"] = 1024  # an exact multiple too
    files = {name: content_for(name, size) for name, size in sizes.items()}
    server = TftpServer(Files(files), max_retries=5)
    clients: list[SimClient] = []
    for i, name in enumerate(sizes):
        opts: tuple[tuple[str, str], ...] = ()
        if i % 3 == 1:
            opts = (("blksize", "1428"), ("tsize", "0"))
        elif i % 3 == 2:
            opts = (("tsize", "0"), ("timeout", "2"))
        clients.append(SimClient((f"10.0.{i // 250}.{i % 250 + 1}", 1024 + i), name,
                                 rrq(name, *opts), timeout=1.5 + rng.random()))
    by_addr = {c.addr: c for c in clients}
    # The wire: (deliver at, seq, kind, payload); kinds: "srv" to the server, "cli" to a client,
    # "ctimer" a client's retransmission timer.
    queue: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(at: float, kind: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (at, seq, kind, payload))

    def client_send(c: SimClient, data: bytes, now: float) -> None:
        c.last = data
        c.timer_seq += 1
        push(now + c.timeout, "ctimer", ClientTimer(c, c.timer_seq))
        if rng.random() >= loss:
            push(now + latency, "srv", ToServer(c.tid, c.addr, data))

    def flush(now: float) -> None:
        out: Outgoing
        for out in server.datagrams_to_send():
            if rng.random() >= loss:
                push(now + latency, "cli", out)

    def client_receive(c: SimClient, out: Outgoing, now: float) -> None:
        if c.done:
            if c.tid == out.tid:  # dallying: re-ACK a retransmitted final block
                packet = parse_packet(out.data)
                if isinstance(packet, Data):
                    push(now + latency, "srv", ToServer(c.tid, c.addr, ack(packet.block)))
            return
        if c.tid is None:
            c.tid = out.tid  # latch the server's TID
        assert out.tid == c.tid
        packet = parse_packet(out.data)
        if isinstance(packet, OptionAck):
            if c.expected == 1:
                c.blksize = int(dict(packet.options).get("blksize", "512"))
                client_send(c, ack(0), now)
            return
        assert isinstance(packet, Data), packet
        if packet.block == c.expected & 0xFFFF:
            c.got += packet.data
            c.expected += 1
            if len(packet.data) < c.blksize:
                c.done = True
                c.timer_seq += 1  # cancel the client's timer
                if rng.random() >= loss:
                    push(now + latency, "srv", ToServer(c.tid, c.addr, ack(packet.block)))
                return
            client_send(c, ack(packet.block), now)
        elif packet.block == (c.expected - 1) & 0xFFFF:
            client_send(c, ack(packet.block), now)  # re-ACK a duplicate (the SAS trigger)

    start = 0.0
    for c in clients:
        client_send(c, c.request, start + rng.random() * 0.05)
    now = start
    for _ in range(2_000_000):
        server_deadline = server.get_timer()
        if not queue and server_deadline is None:
            break
        if queue and (server_deadline is None or queue[0][0] <= server_deadline):
            now, _, kind, payload = heapq.heappop(queue)
            if kind == "srv":
                assert isinstance(payload, ToServer)
                if payload.tid is None:
                    server.receive_request(payload.data, payload.addr, now)
                else:
                    server.receive_on_transfer(payload.tid, payload.data, payload.addr, now)
            elif kind == "cli":
                assert isinstance(payload, Outgoing)
                client_receive(by_addr[payload.client], payload, now)
            else:
                assert isinstance(payload, ClientTimer)
                c, token = payload.client, payload.token
                if token == c.timer_seq and not c.done:
                    c.retries += 1
                    assert c.retries < 50, "client gave up"
                    client_send(c, c.last, now)
        else:
            assert server_deadline is not None
            now = server_deadline
            server.handle_timer(now)
        flush(now)
    events = server.events()
    completed = [e for e in events if isinstance(e, TransferCompleted)]
    failed = [e for e in events if isinstance(e, TransferFailed)]
    assert failed == []
    assert len(completed) == 200
    for c in clients:
        assert c.done and bytes(c.got) == files[c.name], c.name
    st = server.stats
    assert st.completed == 200 and st.active == 0 and st.retransmits > 0
    # SAS avoidance: every send is a first send or a timer retransmission, never a reply
    # to a duplicate ACK (and duplicate ACKs did happen).
    first_sends = sum(len(files[c.name]) // c.blksize + 1 + (c.request.count(b"\x00") > 3)
                      for c in clients)
    assert st.duplicate_acks > 0
    assert st.packets_sent == first_sends + st.retransmits
    assert now < 60.0
