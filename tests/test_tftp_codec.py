"""TFTP packet codec: round trips, exact bytes, and malformed input only raising TftpParseError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning.tftp import (
    Ack,
    Data,
    ErrorPacket,
    OptionAck,
    Packet,
    ReadRequest,
    TftpParseError,
    TftpServer,
    WriteRequest,
    check_filename,
    encode_packet,
    netascii_encode,
    parse_packet,
)

ROUND_TRIPS: list[tuple[Packet, bytes]] = [
    (ReadRequest("SEP001122334455.cnf.xml", "octet"),
     b"\x00\x01SEP001122334455.cnf.xml\x00octet\x00"),
    (ReadRequest("a", "NetASCII", (("blksize", "1428"), ("tsize", "0"))),
     b"\x00\x01a\x00NetASCII\x00blksize\x001428\x00tsize\x000\x00"),
    (WriteRequest("up.bin", "octet"), b"\x00\x02up.bin\x00octet\x00"),
    (Data(1, b"hello"), b"\x00\x03\x00\x01hello"),
    (Data(65535, b""), b"\x00\x03\xff\xff"),
    (Ack(0), b"\x00\x04\x00\x00"),
    (Ack(258), b"\x00\x04\x01\x02"),
    (ErrorPacket(1, "file not found"), b"\x00\x05\x00\x01file not found\x00"),
    (ErrorPacket(0, ""), b"\x00\x05\x00\x00\x00"),
    (OptionAck((("blksize", "512"),)), b"\x00\x06blksize\x00512\x00"),
    (OptionAck(()), b"\x00\x06"),
]


@pytest.mark.parametrize(("packet", "wire"), ROUND_TRIPS)
def test_round_trip(packet: Packet, wire: bytes) -> None:
    assert encode_packet(packet) == wire
    assert parse_packet(wire) == packet


MALFORMED = [
    b"",
    b"\x00",
    b"\x00\x00",
    b"\x00\x07abc",
    b"\xff\xff",
    b"\x00\x01",  # RRQ with nothing
    b"\x00\x01file\x00",  # no mode
    b"\x00\x01file\x00octet",  # mode not terminated
    b"\x00\x01file\x00octet\x00blksize\x00",  # option without value
    b"\x00\x03\x00",  # DATA without full block number
    b"\x00\x04\x00",  # short ACK
    b"\x00\x04\x00\x01\x00",  # long ACK
    b"\x00\x05\x00",  # ERROR without code
    b"\x00\x06blksize\x00",  # OACK option without value
    b"\x00\x03\x00\x01" + b"x" * 65465,  # DATA over the maximum block size
    b"\x00\x01f\x00octet\x00" + b"o\x00v\x00" * 33,  # too many options
]


@pytest.mark.parametrize("wire", MALFORMED)
def test_malformed(wire: bytes) -> None:
    with pytest.raises(TftpParseError):
        parse_packet(wire)


def test_error_without_final_nul_is_accepted() -> None:
    assert parse_packet(b"\x00\x05\x00\x02denied") == ErrorPacket(2, "denied")


def test_encode_refuses_nul_in_strings() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_packet(ReadRequest("a\x00b"))


text = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=40)
options = st.lists(st.tuples(text, text), max_size=8).map(tuple)
packets = st.one_of(
    st.builds(ReadRequest, text, text, options),
    st.builds(WriteRequest, text, text, options),
    st.builds(Data, st.integers(0, 65535), st.binary(max_size=1500)),
    st.builds(Ack, st.integers(0, 65535)),
    st.builds(ErrorPacket, st.integers(0, 65535), text),
    st.builds(OptionAck, options),
)


@given(packets)
@settings(max_examples=300, deadline=None)
def test_round_trip_property(packet: Packet) -> None:
    assert parse_packet(encode_packet(packet)) == packet


@given(st.binary(max_size=600))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_only_raise_parse_error(data: bytes) -> None:
    try:
        parse_packet(data)
    except TftpParseError:
        pass


prefixed = st.tuples(st.sampled_from([b"\x00\x01", b"\x00\x02", b"\x00\x04", b"\x00\x05"]),
                     st.binary(max_size=200)).map(lambda t: t[0] + t[1])


@given(st.one_of(prefixed, st.binary(max_size=200)), st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_server_never_raises_on_garbage(first: bytes, second: bytes) -> None:
    server = TftpServer(lambda name, client: b"x" * 700)
    client = ("192.0.2.1", 1000)
    tid = server.receive_request(first, client, 0.0)
    ok = server.receive_request(b"\x00\x01f\x00octet\x00", ("192.0.2.2", 2000), 0.0)
    assert ok is not None
    server.receive_on_transfer(ok, second, ("192.0.2.2", 2000), 0.1)
    if tid is not None:
        server.receive_on_transfer(tid, second, client, 0.1)
    server.handle_timer(100.0)
    server.datagrams_to_send()
    server.events()


@pytest.mark.parametrize(("name", "code"), [
    ("SEP001122334455.cnf.xml", None),
    ("dir/file.cfg", None),
    ("", 2),
    ("../etc/passwd", 2),
    ("/etc/passwd", 2),
    ("a/../../b", 2),
    ("a/./b", 2),
    ("a//b", 2),
    ("a\\b", 2),
    ("a\x00b", 2),
    ("a\nb", 2),
    ("a b", None),
    ("caf\xe9", 2),
    ("x" * 256, 4),
    ("x" * 255, None),
])
def test_check_filename(name: str, code: int | None) -> None:
    why = check_filename(name)
    assert (None if why is None else why[0]) == code


def test_netascii() -> None:
    assert netascii_encode(b"a\nb\rc\r\n") == b"a\r\nb\r\x00c\r\x00\r\n"
