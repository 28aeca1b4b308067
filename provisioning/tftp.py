"""A sans-I/O TFTP server core: RFC 1350, option extension RFC 2347, blksize RFC 2348,
tsize and timeout RFC 2349. Read-only.

No sockets, no clock, no asyncio (the same model as ``sipstack.transaction``). The
owner, one small asyncio adapter, does::

    tid = server.receive_request(data, client, now)        # datagram on port 69
    server.receive_on_transfer(tid, data, source, now)     # datagram on that TID's socket
    for out in server.datagrams_to_send(): ...             # (tid, client, data)
    for event in server.events(): ...                      # TransferStarted, ...
    deadline = server.get_timer()                          # re-arm one loop.call_at
    server.handle_timer(now)                               # when it fires

Transfer IDs (RFC 1350 §4 TIDs): every accepted read request gets a ``TransferId``
(an int). The adapter opens one ephemeral UDP socket per transfer, sends the
datagrams tagged with that tid from it, and feeds what that socket receives to
``receive_on_transfer``. It closes the socket on TransferCompleted/TransferFailed
for that tid. Datagrams tagged ``tid=None`` are refusals of a request (an ERROR with
no transfer): send them from the listening socket (or a throwaway one). A transfer
is keyed by the client's (host, port); a datagram on a transfer's TID from any
other source gets ERROR 5 (to that source, tagged with the tid) and does not
disturb the transfer. A repeated identical RRQ from a client with a live transfer
is absorbed (the retransmission timer resends); a different request from the same
(host, port) supersedes the old transfer (TransferFailed for the old tid).

Decisions:

- WRQ: ERROR 2 (access violation); the server is read-only.
- File names are checked before ``file_source`` is called. Refused with ERROR 2:
  empty names, absolute paths (leading ``/``), ``..`` or ``.`` or empty path
  components, backslashes, NUL, control characters and non-ASCII bytes. Names
  longer than ``max_filename`` bytes: ERROR 4 (illegal operation: not a request we
  accept at all). Modes other than ``octet``/``netascii`` (case-insensitive; the
  obsolete ``mail`` included): ERROR 4. A malformed RRQ/WRQ on the listening port:
  ERROR 4; other garbage there is dropped silently (never answer an ERROR with an
  ERROR). ``file_source`` returning None: ERROR 1. More than ``max_transfers`` live
  transfers: ERROR 0 "server busy".
- ``file_source`` is called once per request; its exceptions propagate (the adapter
  should wrap it and return None on failure).
- Options (names case-insensitive, first occurrence wins, unknown ones ignored and
  never echoed). A value that is not a plain decimal number, or is outside the
  RFC's range, is invalid and the option is not acknowledged (the transfer proceeds
  with the default): blksize must be 8..65464 (so 0, 7 and 70000 are ignored), a
  valid blksize above ``max_blksize`` is clamped down to it and the clamped value
  acknowledged (RFC 2348 allows a smaller answer); timeout must be 1..255 s and is
  acknowledged unchanged; tsize (any decimal value, normally 0) is answered with the
  size of the file as transferred (after netascii conversion). If any option is
  acknowledged the server sends OACK and waits for ACK 0; otherwise DATA 1 at once.
- netascii: LF becomes CR LF and a bare CR becomes CR NUL (RFC 764) before transfer.
- The last block is shorter than blksize: an empty DATA block ends a file whose size
  is an exact multiple of blksize (including an empty file).
- Block numbers are 16 bits on the wire and wrap 65535 -> 0 (what tftp-hpa, atftp and
  most clients expect; RFC 1350 has no rule). Internally blocks count without bound.
- Retransmission: the last DATA/OACK is resent every ``timeout`` seconds (the
  negotiated one, else ``default_timeout``) up to ``max_retries`` times; the timer
  after the last retransmission fails the transfer (TransferFailed "timeout"). Any
  progress resets the retry count.
- Sorcerer's Apprentice Syndrome (RFC 1123 §4.2.3.1): a duplicate or stale ACK never
  triggers a send; only the timer retransmits.
- On a transfer: an ERROR from the client ends the transfer (no reply); malformed or
  unexpected packets (DATA, requests, ACKs of other blocks) are ignored and counted.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import NamedTuple, NewType

__all__ = [
    "MAX_BLKSIZE",
    "MIN_BLKSIZE",
    "Ack",
    "Client",
    "Data",
    "ErrorCode",
    "ErrorPacket",
    "FileSource",
    "Opcode",
    "OptionAck",
    "Outgoing",
    "Packet",
    "ReadRequest",
    "RequestRefused",
    "TftpEvent",
    "TftpParseError",
    "TftpServer",
    "TftpStats",
    "TransferCompleted",
    "TransferFailed",
    "TransferId",
    "TransferStarted",
    "WriteRequest",
    "check_filename",
    "encode_packet",
    "netascii_encode",
    "parse_packet",
]

MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464  # RFC 2348
MAX_PACKET = 4 + MAX_BLKSIZE
MAX_OPTIONS = 32  # options per request accepted by the parser


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8  # RFC 2347


class TftpParseError(ValueError):
    """A datagram that is not a well-formed TFTP packet (the only exception of the codec)."""

    def __init__(self, message: str, opcode: int | None = None) -> None:
        super().__init__(message)
        self.opcode = opcode  # the opcode if the first two bytes were readable


# -- packets --------------------------------------------------------------------------------

Options = tuple[tuple[str, str], ...]


def _cstr(text: str) -> bytes:
    raw = text.encode("latin-1")
    if b"\x00" in raw:
        raise ValueError("TFTP strings cannot contain NUL")
    return raw + b"\x00"


def _encode_options(options: Options) -> bytes:
    return b"".join(_cstr(name) + _cstr(value) for name, value in options)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    filename: str
    mode: str = "octet"
    options: Options = ()

    def encode(self) -> bytes:
        return (b"\x00\x01" + _cstr(self.filename) + _cstr(self.mode)
                + _encode_options(self.options))


@dataclass(frozen=True, slots=True)
class WriteRequest:
    filename: str
    mode: str = "octet"
    options: Options = ()

    def encode(self) -> bytes:
        return (b"\x00\x02" + _cstr(self.filename) + _cstr(self.mode)
                + _encode_options(self.options))


@dataclass(frozen=True, slots=True)
class Data:
    block: int  # 0..65535 (the wire value)
    data: bytes

    def encode(self) -> bytes:
        return b"\x00\x03" + self.block.to_bytes(2, "big") + self.data


@dataclass(frozen=True, slots=True)
class Ack:
    block: int

    def encode(self) -> bytes:
        return b"\x00\x04" + self.block.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class ErrorPacket:
    code: int
    message: str = ""

    def encode(self) -> bytes:
        return b"\x00\x05" + self.code.to_bytes(2, "big") + _cstr(self.message)


@dataclass(frozen=True, slots=True)
class OptionAck:
    options: Options

    def encode(self) -> bytes:
        return b"\x00\x06" + _encode_options(self.options)


Packet = ReadRequest | WriteRequest | Data | Ack | ErrorPacket | OptionAck


def encode_packet(packet: Packet) -> bytes:
    """Serialize a packet (ValueError for strings with NUL or non-latin-1 characters)."""
    return packet.encode()


def _split_strings(body: bytes, opcode: int) -> list[str]:
    if not body.endswith(b"\x00"):
        raise TftpParseError("string not NUL-terminated", opcode)
    return body[:-1].decode("latin-1").split("\x00")


def _pairs(fields: list[str], opcode: int) -> Options:
    if len(fields) % 2:
        raise TftpParseError("option without a value", opcode)
    if len(fields) > 2 * MAX_OPTIONS:
        raise TftpParseError("too many options", opcode)
    return tuple((fields[i], fields[i + 1]) for i in range(0, len(fields), 2))


def parse_packet(data: bytes) -> Packet:
    """Parse one datagram. Raises only TftpParseError."""
    if len(data) < 2:
        raise TftpParseError("datagram shorter than an opcode")
    if len(data) > MAX_PACKET:
        raise TftpParseError("datagram too long")
    opcode = int.from_bytes(data[:2], "big")
    body = bytes(data[2:])
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        fields = _split_strings(body, opcode) if body else []
        if len(fields) < 2:
            raise TftpParseError("request without filename and mode", opcode)
        options = _pairs(fields[2:], opcode)
        cls = ReadRequest if opcode == Opcode.RRQ else WriteRequest
        return cls(fields[0], fields[1], options)
    if opcode == Opcode.DATA:
        if len(body) < 2:
            raise TftpParseError("DATA without a block number", opcode)
        return Data(int.from_bytes(body[:2], "big"), body[2:])
    if opcode == Opcode.ACK:
        if len(body) != 2:
            raise TftpParseError("ACK must be 4 bytes", opcode)
        return Ack(int.from_bytes(body, "big"))
    if opcode == Opcode.ERROR:
        if len(body) < 2:
            raise TftpParseError("ERROR without a code", opcode)
        text = body[2:]
        # Lenient: some stacks omit the final NUL; stop at the first NUL if present.
        message = text.split(b"\x00", 1)[0].decode("latin-1")
        return ErrorPacket(int.from_bytes(body[:2], "big"), message)
    if opcode == Opcode.OACK:
        fields = _split_strings(body, opcode) if body else []
        return OptionAck(_pairs(fields, opcode))
    raise TftpParseError(f"unknown opcode {opcode}", opcode)


# -- events and output ----------------------------------------------------------------------

TransferId = NewType("TransferId", int)
Client = tuple[str, int]  # (host, port)
FileSource = Callable[[str, Client], "bytes | None"]


class Outgoing(NamedTuple):
    """A datagram to send to ``client`` from the socket of transfer ``tid``.

    ``tid`` None: a refusal with no transfer; send it from the listening socket.
    """

    tid: TransferId | None
    client: Client
    data: bytes


@dataclass(frozen=True, slots=True)
class TransferStarted:
    tid: TransferId
    client: Client
    filename: str
    size: int  # bytes on the wire (after netascii conversion)
    blksize: int
    options: Options  # what the OACK acknowledged (empty: no OACK)


@dataclass(frozen=True, slots=True)
class TransferCompleted:
    tid: TransferId
    client: Client
    bytes_sent: int
    duration: float
    filename: str = field(default="", compare=False)  # for the access log


@dataclass(frozen=True, slots=True)
class TransferFailed:
    tid: TransferId
    client: Client
    reason: str
    filename: str = field(default="", compare=False)  # for the access log


@dataclass(frozen=True, slots=True)
class RequestRefused:
    client: Client
    filename: str
    code: int
    message: str


TftpEvent = TransferStarted | TransferCompleted | TransferFailed | RequestRefused


@dataclass(slots=True)
class TftpStats:
    requests: int = 0
    refused: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    active: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0  # file payload bytes in DATA packets, retransmissions included
    retransmits: int = 0
    duplicate_acks: int = 0  # stale/duplicate ACKs ignored (SAS avoidance)
    duplicate_requests: int = 0
    wrong_source: int = 0  # datagrams on a TID from a foreign (host, port): ERROR 5
    malformed: int = 0
    ignored: int = 0  # well-formed packets with no meaning in the transfer's state
    unknown_tid: int = 0  # datagrams for a tid that no longer exists


# -- file names and netascii ---------------------------------------------------------------


def check_filename(name: str, max_len: int = 255) -> tuple[int, str] | None:
    """Why ``name`` is refused as (error code, message), or None when acceptable."""
    if len(name.encode("latin-1", "replace")) > max_len:
        return ErrorCode.ILLEGAL_OPERATION, "file name too long"
    if not name:
        return ErrorCode.ACCESS_VIOLATION, "empty file name"
    if any(not 0x20 <= ord(c) < 0x7F for c in name):
        return ErrorCode.ACCESS_VIOLATION, "invalid character in file name"
    if "\\" in name:
        return ErrorCode.ACCESS_VIOLATION, "backslash in file name"
    if name.startswith("/"):
        return ErrorCode.ACCESS_VIOLATION, "absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return ErrorCode.ACCESS_VIOLATION, "invalid path component"
    return None


def netascii_encode(content: bytes) -> bytes:
    """RFC 764 netascii: CR -> CR NUL, then LF -> CR LF."""
    return content.replace(b"\r", b"\r\x00").replace(b"\n", b"\r\n")


# -- the server -----------------------------------------------------------------------------


def _decimal(value: str) -> int | None:
    if not value or len(value) > 20 or not value.isascii() or not value.isdigit():
        return None
    return int(value)


class _Transfer:
    __slots__ = (
        "blksize",
        "block",
        "client",
        "content",
        "filename",
        "final_block",
        "last_packet",
        "request",
        "retries",
        "started",
        "tid",
        "timeout",
        "timer_seq",
    )

    def __init__(self, tid: TransferId, client: Client, *, filename: str, content: bytes,
                 blksize: int, timeout: float, request: bytes, now: float) -> None:
        self.tid = tid
        self.client = client
        self.filename = filename
        self.content = content
        self.blksize = blksize
        self.timeout = timeout
        self.request = request
        self.started = now
        self.block = 0  # the block awaiting its ACK (0: the OACK awaits ACK 0)
        self.final_block = len(content) // blksize + 1
        self.last_packet = b""
        self.retries = 0
        self.timer_seq = 0


class TftpServer:
    """Read-only TFTP server core for many concurrent transfers (see module docstring)."""

    __slots__ = (
        "_by_client",
        "_events",
        "_heap",
        "_next_tid",
        "_out",
        "_seq",
        "_source",
        "_stats",
        "_transfers",
        "default_blksize",
        "default_timeout",
        "max_blksize",
        "max_filename",
        "max_retries",
        "max_transfers",
    )

    def __init__(self, file_source: FileSource, *, default_blksize: int = 512,
                 max_blksize: int = 1428, default_timeout: float = 1.0, max_retries: int = 5,
                 max_transfers: int = 1000, max_filename: int = 255) -> None:
        if not MIN_BLKSIZE <= default_blksize <= max_blksize <= MAX_BLKSIZE:
            raise ValueError("need 8 <= default_blksize <= max_blksize <= 65464")
        if default_timeout <= 0 or max_retries < 0 or max_transfers < 1:
            raise ValueError("invalid timeout, retries or transfer limit")
        self._source = file_source
        self.default_blksize = default_blksize
        self.max_blksize = max_blksize
        self.default_timeout = default_timeout
        self.max_retries = max_retries
        self.max_transfers = max_transfers
        self.max_filename = max_filename
        self._transfers: dict[TransferId, _Transfer] = {}
        self._by_client: dict[Client, TransferId] = {}
        self._heap: list[tuple[float, int, TransferId]] = []
        self._seq = 0
        self._next_tid = 1
        self._events: deque[TftpEvent] = deque()
        self._out: list[Outgoing] = []
        self._stats = TftpStats()

    # -- output -----------------------------------------------------------------------------
    def events(self) -> list[TftpEvent]:
        """Drain the events, oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    def datagrams_to_send(self) -> list[Outgoing]:
        """Drain the datagrams to transmit, in order."""
        out = self._out
        self._out = []
        return out

    @property
    def stats(self) -> TftpStats:
        """A snapshot of the counters."""
        return replace(self._stats, active=len(self._transfers))

    def active_transfers(self) -> list[TransferId]:
        return list(self._transfers)

    def transfer_client(self, tid: TransferId) -> Client | None:
        t = self._transfers.get(tid)
        return None if t is None else t.client

    # -- timers -----------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest retransmission deadline over all transfers, or None."""
        heap = self._heap
        while heap:
            deadline, seq, tid = heap[0]
            t = self._transfers.get(tid)
            if t is not None and t.timer_seq == seq:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        """Retransmit (or give up on) every transfer whose deadline is at or before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _deadline, seq, tid = heapq.heappop(heap)
            t = self._transfers.get(tid)
            if t is None or t.timer_seq != seq:
                continue
            if t.retries >= self.max_retries:
                self._finish(t, TransferFailed(t.tid, t.client, "timeout", t.filename))
                continue
            t.retries += 1
            self._stats.retransmits += 1
            self._emit(t, t.last_packet)
            self._arm(t, now)

    # -- network input ----------------------------------------------------------------------
    def receive_request(self, data: bytes, client: Client, now: float) -> TransferId | None:
        """A datagram on the listening port (69). Returns the transfer it started (or the
        live transfer an identical retransmitted request belongs to), else None."""
        try:
            packet = parse_packet(data)
        except TftpParseError as exc:
            self._stats.malformed += 1
            if exc.opcode in (Opcode.RRQ, Opcode.WRQ):
                self._refuse(client, "", ErrorCode.ILLEGAL_OPERATION, "malformed request")
            return None
        if not isinstance(packet, ReadRequest | WriteRequest):
            self._stats.ignored += 1  # no transfer on port 69: stay silent
            return None
        self._stats.requests += 1
        existing = self._by_client.get(client)
        if existing is not None:
            old = self._transfers[existing]
            if old.request == bytes(data):
                self._stats.duplicate_requests += 1
                return existing
            superseded = "superseded by a new request"
            self._finish(old, TransferFailed(old.tid, old.client, superseded, old.filename))
        if isinstance(packet, WriteRequest):
            self._refuse(client, packet.filename, ErrorCode.ACCESS_VIOLATION, "read-only server")
            return None
        return self._start(packet, bytes(data), client, now)

    def receive_on_transfer(self, tid: TransferId, data: bytes, source: Client,
                            now: float) -> None:
        """A datagram received on the socket of transfer ``tid`` from ``source``."""
        t = self._transfers.get(tid)
        if t is None:
            self._stats.unknown_tid += 1
            return
        if source != t.client:
            self._stats.wrong_source += 1
            if data[:2] != b"\x00\x05":  # never answer an ERROR
                self._packet_out(tid, source, ErrorPacket(ErrorCode.UNKNOWN_TID,
                                                          "unknown transfer ID").encode())
            return
        try:
            packet = parse_packet(data)
        except TftpParseError:
            self._stats.malformed += 1
            return
        if isinstance(packet, ErrorPacket):
            reason = f"client error {packet.code}: {packet.message}"
            self._finish(t, TransferFailed(t.tid, t.client, reason, t.filename))
            return
        if not isinstance(packet, Ack):
            self._stats.ignored += 1
            return
        if packet.block != t.block & 0xFFFF:
            # A duplicate of an earlier ACK (or a stray one): never answer it with DATA.
            self._stats.duplicate_acks += 1
            return
        if t.block == t.final_block:
            done = TransferCompleted(t.tid, t.client, len(t.content), now - t.started, t.filename)
            self._finish(t, done)
            return
        t.retries = 0
        self._send_block(t, t.block + 1, now)

    def abort(self, tid: TransferId, reason: str = "aborted") -> None:
        """Drop a transfer (shutdown, socket failure): emits TransferFailed."""
        t = self._transfers.get(tid)
        if t is not None:
            self._finish(t, TransferFailed(t.tid, t.client, reason, t.filename))

    # -- internals --------------------------------------------------------------------------
    def _start(self, rrq: ReadRequest, raw: bytes, client: Client,
               now: float) -> TransferId | None:
        name = rrq.filename
        mode = rrq.mode.lower()
        if mode not in ("octet", "netascii"):
            self._refuse(client, name, ErrorCode.ILLEGAL_OPERATION, f"unsupported mode {mode[:32]}")
            return None
        why = check_filename(name, self.max_filename)
        if why is not None:
            self._refuse(client, name, why[0], why[1])
            return None
        if len(self._transfers) >= self.max_transfers:
            self._refuse(client, name, ErrorCode.NOT_DEFINED, "server busy")
            return None
        content = self._source(name, client)
        if content is None:
            self._refuse(client, name, ErrorCode.FILE_NOT_FOUND, "file not found")
            return None
        if mode == "netascii":
            content = netascii_encode(content)
        blksize, timeout, acked = self._negotiate(rrq.options, len(content))
        tid = TransferId(self._next_tid)
        self._next_tid += 1
        t = _Transfer(tid, client, filename=name, content=content, blksize=blksize,
                      timeout=timeout, request=raw, now=now)
        self._transfers[tid] = t
        self._by_client[client] = tid
        self._stats.started += 1
        self._events.append(TransferStarted(tid, client, name, len(content), blksize, acked))
        if acked:
            t.block = 0
            t.last_packet = OptionAck(acked).encode()
            self._emit(t, t.last_packet)
            self._arm(t, now)
        else:
            self._send_block(t, 1, now)
        return tid

    def _negotiate(self, options: Options, size: int) -> tuple[int, float, Options]:
        blksize = self.default_blksize
        timeout = self.default_timeout
        acked: list[tuple[str, str]] = []
        seen: set[str] = set()
        for raw_name, value in options:
            name = raw_name.lower()
            if name in seen:
                continue
            seen.add(name)
            number = _decimal(value)
            if number is None:
                continue
            if name == "blksize" and MIN_BLKSIZE <= number <= MAX_BLKSIZE:
                blksize = min(number, self.max_blksize)
                acked.append((raw_name, str(blksize)))
            elif name == "timeout" and 1 <= number <= 255:
                timeout = float(number)
                acked.append((raw_name, str(number)))
            elif name == "tsize":
                acked.append((raw_name, str(size)))
        return blksize, timeout, tuple(acked)

    def _send_block(self, t: _Transfer, block: int, now: float) -> None:
        start = (block - 1) * t.blksize
        payload = t.content[start:start + t.blksize]
        t.block = block
        t.last_packet = b"\x00\x03" + (block & 0xFFFF).to_bytes(2, "big") + payload
        self._emit(t, t.last_packet)
        self._arm(t, now)

    def _emit(self, t: _Transfer, packet: bytes) -> None:
        if packet[:2] == b"\x00\x03":
            self._stats.bytes_sent += len(packet) - 4
        self._packet_out(t.tid, t.client, packet)

    def _packet_out(self, tid: TransferId | None, client: Client, packet: bytes) -> None:
        self._stats.packets_sent += 1
        self._out.append(Outgoing(tid, client, packet))

    def _arm(self, t: _Transfer, now: float) -> None:
        self._seq += 1
        t.timer_seq = self._seq
        heap = self._heap
        if len(heap) > 2 * len(self._transfers) + 64:  # mostly stale: compact
            live = self._transfers
            heap[:] = [e for e in heap if (x := live.get(e[2])) is not None
                       and x.timer_seq == e[1]]
            heapq.heapify(heap)
        heapq.heappush(heap, (now + t.timeout, self._seq, t.tid))

    def _finish(self, t: _Transfer, event: TransferCompleted | TransferFailed) -> None:
        del self._transfers[t.tid]
        if self._by_client.get(t.client) == t.tid:
            del self._by_client[t.client]
        t.timer_seq = 0
        if isinstance(event, TransferCompleted):
            self._stats.completed += 1
        else:
            self._stats.failed += 1
        self._events.append(event)

    def _refuse(self, client: Client, filename: str, code: int, message: str) -> None:
        self._stats.refused += 1
        self._packet_out(None, client, ErrorPacket(code, message).encode())
        self._events.append(RequestRefused(client, filename, code, message))
