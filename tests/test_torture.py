"""RFC 4475 and RFC 5118 torture messages against the parser and the UAS checks.

Each message is a file under tests/data/rfc4475/ or tests/data/rfc5118/; what
edgepbx must do with it (parse, reject with a status, or drop, and at which
layer) is in tests/data/torture_manifest.yaml next to the RFC's own words.
The table drives the test, so changing a decision means changing the manifest,
where the reason has to be written down.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sipstack.errors import SipParseError
from sipstack.headers import parse_name_addr
from sipstack.message import Request, Response, parse_message
from sipstack.uri import SipUri
from sipstack.validate import check_request, unsupported_requirements

# Cases that fail only because sipstack/message.py, uri.py or headers.py still
# needs a change. Key: (test function, file name); value: the change needed.
# Each is an xfail(strict=True): once the parser is fixed the test reports
# XPASS as a failure, and the entry must be deleted.
PENDING_PARSER_FIXES: dict[tuple[str, str], str] = {}

DATA = Path(__file__).parent / "data"
CORPORA = ("rfc4475", "rfc5118")
MANIFEST_PATH = DATA / "torture_manifest.yaml"

Message = Request | Response


def _load_manifest() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    files: dict[str, dict[str, Any]] = document["files"]
    return files


MANIFEST = _load_manifest()


def _cases(test: str) -> list[Any]:
    params = []
    for name, entry in MANIFEST.items():
        file_name = Path(name).name
        marks = []
        reason = PENDING_PARSER_FIXES.get((test, file_name))
        if reason is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(name, entry, id=file_name, marks=marks))
    return params


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _status(entry: dict[str, Any]) -> int | None:
    expect = entry["expect"]
    return int(expect["reject"]) if isinstance(expect, dict) else None


# -- the manifest itself --------------------------------------------------------------


def test_every_file_is_in_the_manifest() -> None:
    on_disk = {f"{corpus}/{p.name}" for corpus in CORPORA for p in (DATA / corpus).iterdir()}
    assert sorted(on_disk - MANIFEST.keys()) == [], "files without a manifest entry"
    assert sorted(MANIFEST.keys() - on_disk) == [], "manifest entries without a file"


def test_corpus_counts() -> None:
    # RFC 4475 §3 has 49 messages (13 valid, 19 invalid, 1 transaction, 15
    # application, 1 backward compatibility); RFC 5118 §4 has 12 in 10 sections.
    by_rfc = {4475: 0, 5118: 0}
    for entry in MANIFEST.values():
        by_rfc[entry["rfc"]] += 1
    assert by_rfc == {4475: 49, 5118: 12}
    sections = [e["section"] for e in MANIFEST.values() if e["rfc"] == 4475]
    assert len(set(sections)) == 49


@pytest.mark.parametrize(("name", "entry"), _cases("test_manifest_entry"))
def test_manifest_entry(name: str, entry: dict[str, Any]) -> None:
    assert entry["kind"] in ("valid", "invalid")
    assert entry["layer"] in ("parse", "uas", "core")
    assert entry["why"].strip()
    expect = entry["expect"]
    if expect == "parse":
        assert entry["layer"] == "parse", "a message that parses is decided by the parser"
    elif expect == "drop":
        # Only responses are dropped silently; a bad request gets an answer.
        assert _read(name).startswith(b"SIP/")
        assert entry["layer"] in ("parse", "core")
    else:
        assert isinstance(expect, dict) and set(expect) == {"reject"}
        assert 400 <= int(expect["reject"]) <= 599
        assert entry["layer"] in ("parse", "uas")
        assert not _read(name).startswith(b"SIP/"), "responses are never answered"


@pytest.mark.parametrize(("name", "entry"), _cases("test_bit_exact"))
def test_bit_exact(name: str, entry: dict[str, Any]) -> None:
    # Line endings, trailing spaces and control octets are the test; a checkout
    # or an editor that normalises them must not go unnoticed.
    assert hashlib.sha256(_read(name)).hexdigest() == entry["sha256"]


# -- what the parser and the UAS checks do ---------------------------------------------


def _canonical(message: Message) -> tuple[object, dict[str, list[str]], bytes]:
    """What must survive serialization: start line, fields by name in order, body.

    Content-Length is left out because serialization recomputes it (and adds it
    where an RFC 2543 sender left it out).
    """
    start: tuple[object, ...]
    if isinstance(message, Request):
        start = (message.method, message.uri)
    else:
        start = (message.status, message.reason)
    fields: dict[str, list[str]] = {}
    for name, value in message.headers:
        key = name.lower()
        if key != "content-length":
            fields.setdefault(key, []).append(value)
    return start, fields, message.body


def assert_round_trip(message: Message) -> None:
    wire = message.to_bytes()
    again = parse_message(wire)
    assert type(again) is type(message)
    assert _canonical(again) == _canonical(message)
    assert again.to_bytes() == wire, "serialize(parse(serialize(m))) is a fixed point"


@pytest.mark.parametrize(("name", "entry"), _cases("test_torture_message"))
def test_torture_message(name: str, entry: dict[str, Any]) -> None:
    data = _read(name)
    status = _status(entry)
    if entry["layer"] == "parse" and entry["expect"] != "parse":
        with pytest.raises(SipParseError) as caught:
            parse_message(data)
        if status is not None:
            assert caught.value.status == status, caught.value.detail
        return
    message = parse_message(data)
    assert_round_trip(message)
    if isinstance(message, Request):
        verdict = check_request(message)
        if entry["layer"] == "uas":
            assert verdict is not None and verdict[0] == status, verdict
        else:
            assert verdict is None, verdict
    else:
        assert entry["layer"] != "uas"


def test_baddn_terminated_is_refused_for_its_display_names() -> None:
    # The archive's baddn lacks the empty line after its header fields, so the
    # parser refuses it before the point of §3.1.2.15 is reached. With the
    # terminator it frames, and the unquoted "Bell, Alexander" must still fail.
    message = parse_message(_read("rfc4475/baddn.dat") + b"\r\n")
    assert isinstance(message, Request)
    assert check_request(message) == (400, "Bad Request")


# -- what the accepted messages mean ---------------------------------------------------


def _req(message: Message) -> Request:
    assert isinstance(message, Request)
    return message


def _contacts(message: Message) -> list[Any]:
    return [parse_name_addr(v) for v in message.headers.values("contact")]


def _sip(uri: object) -> SipUri:
    assert isinstance(uri, SipUri)
    return uri


def _wsinv(m: Message) -> None:
    r = _req(m)
    assert [(v.transport, v.host, v.branch) for v in r.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert r.to.tag == "1918181833n"
    assert r.from_.tag == "98asjd8"
    assert r.max_forwards == 68
    assert (r.cseq.number, r.cseq.method) == (9, "INVITE")
    assert r.headers.get("subject") == ""
    assert r.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = _contacts(r)
    assert contact.params["newparam"] == "newvalue"
    assert contact.params["q"] == "0.33"
    assert "secondparam" in contact.params
    assert len(r.body) == 150


def _intmeth(m: Message) -> None:
    r = _req(m)
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert r.method == method
    assert r.cseq.method == method
    value = r.headers.get("extensionHeader-!.%*+_`'~")
    assert value is not None
    assert value.encode("utf-8", "surrogateescape") == bytes.fromhex("EFBBBFE5A4A7E5819CE99BBB")
    assert r.to.display is not None and "\x00" in r.to.display
    assert r.from_.tag == "_token~1'+`*%!-."


def _esc01(m: Message) -> None:
    r = _req(m)
    uri = _sip(r.request_uri)
    assert (uri.user, uri.host) == ("sips%3Auser%40example.com", "example.net")
    assert _sip(r.to.uri).user_unescaped == "user"


def _escnull(m: Message) -> None:
    r = _req(m)
    assert [_sip(c.uri).user for c in _contacts(r)] == ["%00", "%00%00"]
    # The escapes stay escapes: a raw NUL relayed on would cut a C peer's string.
    assert b"\x00" not in r.to_bytes()


def _esc02(m: Message) -> None:
    r = _req(m)
    assert r.method == "RE%47IST%45R"
    assert r.headers.count("contact") == 2
    assert r.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def _lwsdisp(m: Message) -> None:
    assert _req(m).from_.display == "caller"


def _longreq(m: Message) -> None:
    r = _req(m)
    assert len(r.vias) == 34
    assert r.top_via.host == "sip33.example.com"
    assert (r.vias[-1].branch or "").endswith("branchvalue")
    assert _sip(r.to.uri).port == 6000


def _dblreq(m: Message) -> None:
    r = _req(m)
    assert r.method == "REGISTER"
    assert r.body == b""
    assert b"INVITE" not in r.to_bytes()


def _semiuri(m: Message) -> None:
    uri = _sip(_req(m).request_uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", {})


def _transports(m: Message) -> None:
    assert [v.transport for v in _req(m).vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _mpart01(m: Message) -> None:
    r = _req(m)
    assert len(r.body) == 553
    assert b"\x00" in r.body
    assert r.body.endswith(b"--7a9cbec02ceef655--\r\n")


def _unreason(m: Message) -> None:
    assert isinstance(m, Response)
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def _noreason(m: Message) -> None:
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (100, "")
    # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase: the SP stays.
    assert m.to_bytes().startswith(b"SIP/2.0 100 \r\n")


def _badbranch(m: Message) -> None:
    assert _req(m).top_via.branch == "z9hG4bK"


def _bext01(m: Message) -> None:
    assert unsupported_requirements(_req(m), frozenset()) == (
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    )
    assert unsupported_requirements(_req(m), frozenset({"nothingsupportsthis"})) == (
        "nothingSupportsThisEither",
    )


def _bcast(m: Message) -> None:
    assert m.vias[1].host == "255.255.255.255"


def _zeromf(m: Message) -> None:
    assert _req(m).max_forwards == 0


def _cparam01(m: Message) -> None:
    (contact,) = _contacts(m)
    assert "unknownparam" in contact.params
    assert _sip(contact.uri).params == {}


def _cparam02(m: Message) -> None:
    (contact,) = _contacts(m)
    assert "unknownparam" not in contact.params
    assert "unknownparam" in _sip(contact.uri).params


def _regescrt(m: Message) -> None:
    (contact,) = _contacts(m)
    assert _sip(contact.uri).headers == {"Route": "%3Csip:sip.example.com%3E"}


def _inv2543(m: Message) -> None:
    r = _req(m)
    assert r.headers.get("content-length") is None
    assert r.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert r.max_forwards is None
    assert r.top_via.branch is None
    assert r.from_.tag is None


def _ipv6_good(m: Message) -> None:
    r = _req(m)
    assert _sip(r.request_uri).host == "[2001:db8::10]"
    assert r.top_via.host == "[2001:db8::9:1]"
    assert _sip(_contacts(r)[0].uri).host == "[2001:db8::1]"


def _port_ambiguous(m: Message) -> None:
    uri = _sip(_req(m).request_uri)
    assert (uri.host, uri.port) == ("[2001:db8::10:5070]", None)


def _port_unambiguous(m: Message) -> None:
    uri = _sip(_req(m).request_uri)
    assert (uri.host, uri.port) == ("[2001:db8::10]", 5070)


def _received_with_delim(m: Message) -> None:
    assert _req(m).top_via.params["received"] == "[2001:db8::9:255]"


def _received_no_delim(m: Message) -> None:
    assert _req(m).top_via.params["received"] == "2001:db8::9:255"


def _sdp_sized(m: Message) -> None:
    length = m.headers.get("content-length")
    assert length is not None and int(length) == len(m.body)
    assert b"IN IP6 " in m.body


def _mult_ip_in_header(m: Message) -> None:
    assert [(v.transport, v.host, v.port) for v in _req(m).vias] == [
        ("UDP", "[2001:db8::9:1]", 6050),
        ("UDP", "192.0.2.1", None),
        ("TCP", "[2001:db8::9:255]", None),
    ]
    assert m.vias[2].params["received"] == "192.0.2.200"


def _ipv4_mapped(m: Message) -> None:
    r = _req(m)
    assert [(v.host, v.port) for v in r.vias] == [
        ("[::ffff:192.0.2.10]", 19823),
        ("[::ffff:192.0.2.2]", None),
    ]
    _sdp_sized(m)


def _host_ip(uri: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(_sip(uri).host_bare)


def _three_colons(m: Message) -> None:
    r = _req(m)
    assert _sip(r.request_uri).host == "[2001:db8:::192.0.2.1]"
    # Tolerating the RFC 3261 ABNF form means reading the same address out of it.
    assert _host_ip(r.request_uri) == ipaddress.ip_address("2001:db8::192.0.2.1")
    correct = parse_message(_read("rfc5118/ipv6-correct-abnf-2-colons.dat"))
    assert _sip(r.request_uri).equivalent(_req(correct).request_uri)


def _two_colons(m: Message) -> None:
    assert _host_ip(_req(m).request_uri) == ipaddress.ip_address("2001:db8::192.0.2.1")


CONTENT: dict[str, Callable[[Message], None]] = {
    "wsinv.dat": _wsinv,
    "intmeth.dat": _intmeth,
    "esc01.dat": _esc01,
    "escnull.dat": _escnull,
    "esc02.dat": _esc02,
    "lwsdisp.dat": _lwsdisp,
    "longreq.dat": _longreq,
    "dblreq.dat": _dblreq,
    "semiuri.dat": _semiuri,
    "transports.dat": _transports,
    "mpart01.dat": _mpart01,
    "unreason.dat": _unreason,
    "noreason.dat": _noreason,
    "badbranch.dat": _badbranch,
    "bext01.dat": _bext01,
    "bcast.dat": _bcast,
    "zeromf.dat": _zeromf,
    "cparam01.dat": _cparam01,
    "cparam02.dat": _cparam02,
    "regescrt.dat": _regescrt,
    "inv2543.dat": _inv2543,
    "ipv6-good.dat": _ipv6_good,
    "port-ambiguous.dat": _port_ambiguous,
    "port-unambiguous.dat": _port_unambiguous,
    "via-received-param-with-delim.dat": _received_with_delim,
    "via-received-param-no-delim.dat": _received_no_delim,
    "ipv6-in-sdp.dat": _sdp_sized,
    "mult-ip-in-header.dat": _mult_ip_in_header,
    "mult-ip-in-sdp.dat": _sdp_sized,
    "ipv4-mapped-ipv6.dat": _ipv4_mapped,
    "ipv6-bug-abnf-3-colons.dat": _three_colons,
    "ipv6-correct-abnf-2-colons.dat": _two_colons,
}


def test_content_checks_name_real_files() -> None:
    names = {Path(n).name for n in MANIFEST}
    assert sorted(CONTENT.keys() - names) == []


@pytest.mark.parametrize(
    ("name", "entry"),
    [p for p in _cases("test_content") if Path(p.values[0]).name in CONTENT],
)
def test_content(name: str, entry: dict[str, Any]) -> None:
    # Parsing without an error is not enough: each check below is a way a
    # parser can be wrong about these messages while still returning one.
    del entry
    CONTENT[Path(name).name](parse_message(_read(name)))
