from __future__ import annotations

import pytest

from agent.listen import ListenError, ListenSpec, parse_listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
        ("tcp:0.0.0.0:5070", ListenSpec("tcp", "0.0.0.0", 5070)),
        ("TLS:10.0.0.1:5061", ListenSpec("tls", "10.0.0.1", 5061)),
        ("udp:[::1]:5060", ListenSpec("udp", "::1", 5060)),
        ("tcp:[::]:0", ListenSpec("tcp", "::", 0)),
        ("udp:pbx.example.com:5060", ListenSpec("udp", "pbx.example.com", 5060)),
        ("udp:127.0.0.1", ListenSpec("udp", "127.0.0.1", 5060)),
        ("tls:[::1]", ListenSpec("tls", "::1", 5061)),
    ],
)
def test_parse_listen(text: str, expected: ListenSpec) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("127.0.0.1:5060", "unknown transport"),
        ("sctp:127.0.0.1:5060", "unknown transport"),
        ("udp", "expected TRANSPORT:HOST:PORT"),
        ("udp::5060", "missing host"),
        ("udp:127.0.0.1:http", "not a number"),
        ("udp:127.0.0.1:70000", "out of range"),
        ("udp:::1:5060", "brackets"),
        ("udp:[::1:5060", "missing ']'"),
        ("udp:[nothex]:5060", "not an IPv6 address"),
        ("udp:[::1]5060", "unexpected"),
        ("udp:999.1.1.1:5060", "not an IP address or host name"),
        ("udp:bad_host:5060", "not an IP address or host name"),
    ],
)
def test_parse_listen_errors(text: str, fragment: str) -> None:
    with pytest.raises(ListenError) as err:
        parse_listen(text)
    assert fragment in str(err.value)


def test_str_and_hostport() -> None:
    assert str(parse_listen("udp:[::1]:5060")) == "udp:[::1]:5060"
    assert parse_listen("tcp:127.0.0.1:5060").hostport == "127.0.0.1:5060"
    assert parse_listen("udp:[::1]:5060").is_ipv6
