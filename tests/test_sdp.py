"""SDP parse/serialize (RFC 8866) and the offer/answer helpers (RFC 3264).

The samples are written after what the named phones and softphones send;
addresses are private or documentation ranges.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipstack.sdp import (
    MAX_LINE_BYTES,
    MAX_LINES,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    bump_version,
    direction,
    fmtp,
    is_hold,
    is_private_address,
    media_endpoint,
    parse_sdp,
    rtpmap,
    set_direction,
    with_connection_address,
)

FAST = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def sdp(text: str) -> bytes:
    """A sample written one line per source line, sent with CRLF."""
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines()).encode()


CISCO_8841 = sdp("""
    v=0
    o=Cisco-SIPUA 18415 0 IN IP4 192.168.10.21
    s=SIP Call
    b=AS:4064
    t=0 0
    m=audio 24580 RTP/AVP 114 9 124 0 8 116 18 101
    c=IN IP4 192.168.10.21
    b=TIAS:64000
    a=rtpmap:114 opus/48000/2
    a=fmtp:114 maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=64000
    a=rtpmap:9 G722/8000
    a=rtpmap:124 iLBC/8000
    a=fmtp:124 mode=20
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:116 iLBC/8000
    a=fmtp:116 mode=30
    a=rtpmap:18 G729/8000
    a=fmtp:18 annexb=yes
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=sendrecv
""")

YEALINK_T46 = sdp("""
    v=0
    o=- 20019 20019 IN IP4 192.168.1.105
    s=SDP data
    c=IN IP4 192.168.1.105
    t=0 0
    m=audio 11784 RTP/AVP 0 8 9 18 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:9 G722/8000
    a=rtpmap:18 G729/8000
    a=fmtp:18 annexb=no
    a=ptime:20
    a=sendrecv
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
""")

# The Yealink putting the call on hold: same o= session, version + 1, a=sendonly.
YEALINK_HOLD = YEALINK_T46.replace(b"20019 20019", b"20019 20020").replace(
    b"a=sendrecv", b"a=sendonly"
)

BARESIP = sdp("""
    v=0
    o=- 1429482385 2790326394 IN IP4 10.0.0.5
    s=-
    c=IN IP4 10.0.0.5
    t=0 0
    a=tool:baresip 1.0.0
    m=audio 10060 RTP/AVP 96 0 8 101
    b=AS:128
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 stereo=1;sprop-stereo=1
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=rtcp:10061 IN IP4 10.0.0.5
    a=sendrecv
    a=label:1
    a=ssrc:2421525049 cname:5a2e1c3b-7f2b-4d1e
    a=ptime:20
""")

# Polycom VVX: direction at session level, no c= inside the m= section.
POLYCOM = sdp("""
    v=0
    o=- 1698745001 1698745001 IN IP4 172.16.4.33
    s=Polycom IP Phone
    c=IN IP4 172.16.4.33
    t=0 0
    a=sendrecv
    m=audio 2226 RTP/AVP 9 0 8 18 127
    a=rtpmap:9 G722/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:18 G729/8000
    a=fmtp:18 annexb=no
    a=rtpmap:127 telephone-event/8000
""")

# RFC 2543 hold: c=0.0.0.0 and no direction attribute.
OLD_HOLD = sdp("""
    v=0
    o=UserA 2890844526 2890844527 IN IP4 192.0.2.10
    s=Session SDP
    c=IN IP4 0.0.0.0
    t=0 0
    m=audio 49172 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
""")

IPV6 = sdp("""
    v=0
    o=- 3724394400 3724394405 IN IP6 2001:db8::20
    s=-
    c=IN IP6 2001:db8::20
    t=0 0
    m=audio 49170 RTP/AVP 0 8 101
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-16
    a=ptime:20
""")

# An answer that accepts audio, rejects video (port 0) and takes a second audio stream.
MULTI = sdp("""
    v=0
    o=edgepbx 7781 7782 IN IP4 203.0.113.5
    s=-
    c=IN IP4 203.0.113.5
    t=0 0
    m=audio 40000 RTP/AVP 0 101
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-16
    m=video 0 RTP/AVP 97
    a=rtpmap:97 H264/90000
    m=audio 40002 RTP/AVP 8
    c=IN IP4 203.0.113.6
    a=recvonly
""")

# Every field the model does not interpret, in grammar order, must survive.
EVERYTHING = sdp("""
    v=0
    o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
    s=SDP Seminar
    i=A Seminar on the session description protocol
    u=http://www.example.com/seminars/sdp.pdf
    e=j.doe@example.com (Jane Doe)
    p=+1 617 555-6011
    c=IN IP4 224.2.17.12/127
    b=CT:1000
    t=2873397496 2873404696
    r=7d 1h 0 25h
    t=0 0
    z=2882844526 -1h 2898848070 0
    k=prompt
    x=an unknown line type
    a=recvonly
    a=charset:UTF-8
    m=audio 49170/2 RTP/AVP 0
    i=the audio stream
    c=IN IP4 224.2.17.12/127/2
    c=IN IP4 224.2.18.12/127
    b=AS:64
    k=prompt
    y=1234
    a=ptime:20
    m=application 5000 udp wb
    a=orient:portrait
    a=
""").replace(b"a=\r\n", b"")

SAMPLES = {
    "cisco-8841": CISCO_8841,
    "yealink-t46": YEALINK_T46,
    "yealink-hold": YEALINK_HOLD,
    "baresip": BARESIP,
    "polycom": POLYCOM,
    "old-hold": OLD_HOLD,
    "ipv6": IPV6,
    "multi": MULTI,
    "everything": EVERYTHING,
}


# --- parsing the samples --------------------------------------------------------------


def test_cisco_8841() -> None:
    s = parse_sdp(CISCO_8841)
    assert s.version == 0
    assert s.origin == Origin("Cisco-SIPUA", "18415", 0, "IN", "IP4", "192.168.10.21")
    assert s.session_name == "SIP Call"
    assert s.connection is None
    assert s.bandwidths == [Bandwidth("AS", 4064)]
    assert s.times == [Timing(0, 0)]
    (m,) = s.media
    assert (m.media, m.port, m.port_count, m.proto) == ("audio", 24580, None, "RTP/AVP")
    assert m.formats == ["114", "9", "124", "0", "8", "116", "18", "101"]
    assert m.connection == Connection("IN", "IP4", "192.168.10.21")
    assert m.bandwidths == [Bandwidth("TIAS", 64000)]
    assert m.get_attribute("fmtp") == (
        "114 maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=64000"
    )
    assert m.has_attribute("sendrecv")
    assert rtpmap(m) == {
        114: ("opus", 48000, "2"),
        9: ("G722", 8000, None),
        124: ("iLBC", 8000, None),
        0: ("PCMU", 8000, None),
        8: ("PCMA", 8000, None),
        116: ("iLBC", 8000, None),
        18: ("G729", 8000, None),
        101: ("telephone-event", 8000, None),
    }
    assert list(rtpmap(m)) == [int(f) for f in m.formats]  # preference order
    assert fmtp(m)[101] == "0-15"
    assert fmtp(m)[124] == "mode=20"
    assert media_endpoint(s) == ("192.168.10.21", 24580)
    assert direction(m, s) == "sendrecv"
    assert not is_hold(s)


def test_yealink_and_its_hold() -> None:
    call, hold = parse_sdp(YEALINK_T46), parse_sdp(YEALINK_HOLD)
    assert call.origin.sess_id == hold.origin.sess_id
    assert hold.origin.sess_version == call.origin.sess_version + 1
    assert direction(call.media[0], call) == "sendrecv"
    assert direction(hold.media[0], hold) == "sendonly"
    assert not is_hold(call)
    assert is_hold(hold)
    # Hold with a=sendonly still has an address: music on hold goes there.
    assert media_endpoint(hold) == ("192.168.1.105", 11784)
    assert media_endpoint(call) == ("192.168.1.105", 11784)
    assert call.media[0].get_attribute("ptime") == "20"


def test_baresip() -> None:
    s = parse_sdp(BARESIP)
    assert s.attributes == [("tool", "baresip 1.0.0")]
    m = s.media[0]
    assert rtpmap(m) == {
        96: ("opus", 48000, "2"),
        0: ("PCMU", 8000, None),  # static, no a=rtpmap
        8: ("PCMA", 8000, None),
        101: ("telephone-event", 8000, None),
    }
    assert m.attribute_values("ssrc") == ["2421525049 cname:5a2e1c3b-7f2b-4d1e"]
    assert media_endpoint(s) == ("10.0.0.5", 10060)


def test_polycom_session_level_direction() -> None:
    s = parse_sdp(POLYCOM)
    assert s.attributes == [("sendrecv", None)]
    assert s.media[0].connection is None
    assert media_endpoint(s) == ("172.16.4.33", 2226)
    assert direction(s.media[0], s) == "sendrecv"
    assert rtpmap(s.media[0])[127] == ("telephone-event", 8000, None)


def test_old_style_hold() -> None:
    s = parse_sdp(OLD_HOLD)
    assert direction(s.media[0], s) == "sendonly"
    assert is_hold(s)
    assert media_endpoint(s) is None  # nowhere to send RTP


def test_ipv6() -> None:
    s = parse_sdp(IPV6)
    assert s.origin.addrtype == "IP6"
    assert s.connection == Connection("IN", "IP6", "2001:db8::20")
    assert media_endpoint(s) == ("2001:db8::20", 49170)
    assert rtpmap(s.media[0])[8] == ("PCMA", 8000, None)


def test_multiple_streams_with_rejected_video() -> None:
    s = parse_sdp(MULTI)
    assert [m.media for m in s.media] == ["audio", "video", "audio"]
    audio, video, audio2 = s.media
    assert video.port == 0
    assert direction(video, s) == "inactive"
    assert direction(audio, s) == "sendrecv"
    assert direction(audio2, s) == "recvonly"
    assert media_endpoint(s, 0) == ("203.0.113.5", 40000)
    assert media_endpoint(s, 1) is None
    assert media_endpoint(s, 2) == ("203.0.113.6", 40002)
    assert media_endpoint(s, 3) is None
    assert media_endpoint(s, -1) is None
    assert not is_hold(s)  # one active audio stream is sendrecv
    assert rtpmap(video) == {97: ("H264", 90000, None)}


def test_unknown_lines_are_kept() -> None:
    s = parse_sdp(EVERYTHING)
    assert s.other == [
        ("i", "A Seminar on the session description protocol"),
        ("u", "http://www.example.com/seminars/sdp.pdf"),
        ("e", "j.doe@example.com (Jane Doe)"),
        ("p", "+1 617 555-6011"),
        ("z", "2882844526 -1h 2898848070 0"),
        ("k", "prompt"),
        ("x", "an unknown line type"),
    ]
    assert s.times == [Timing(2873397496, 2873404696, ["7d 1h 0 25h"]), Timing(0, 0)]
    assert s.connection is not None and s.connection.host == "224.2.17.12"
    audio, app = s.media
    assert audio.port_count == 2
    assert audio.connection == Connection("IN", "IP4", "224.2.17.12/127/2")
    assert audio.other == [
        ("i", "the audio stream"),
        ("c", "IN IP4 224.2.18.12/127"),
        ("k", "prompt"),
        ("y", "1234"),
    ]
    assert (app.proto, app.formats) == ("udp", ["wb"])
    assert rtpmap(app) == {}  # not an RTP profile


def test_lf_line_ends_blank_lines_and_no_final_newline() -> None:
    lf = YEALINK_T46.replace(b"\r\n", b"\n")
    assert parse_sdp(lf) == parse_sdp(YEALINK_T46)
    assert parse_sdp(lf.rstrip(b"\n")) == parse_sdp(YEALINK_T46)
    assert parse_sdp(YEALINK_T46 + b"\r\n\r\n") == parse_sdp(YEALINK_T46)


def test_lenient_origin_username_with_spaces() -> None:
    s = parse_sdp(b"v=0\r\no=Some UA 1 2 IN IP4 10.1.1.1\r\ns=-\r\nt=0 0\r\n")
    assert s.origin.username == "Some UA"
    assert s.origin.sess_version == 2
    assert parse_sdp(s.serialize()) == s


def test_attribute_forms() -> None:
    s = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns= \r\nt=0 0\r\n"
                  b"a=flag\r\na=empty:\r\na=kv:a:b\r\na=sendonly \r\n")
    assert s.session_name == " "  # "s= " is the recommended empty name; kept as is
    assert s.attributes == [("flag", None), ("empty", ""), ("kv", "a:b"), ("sendonly", None)]
    assert b"s= \r\n" in s.serialize()
    assert b"a=empty:\r\n" in s.serialize()


# --- serialization ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    data = SAMPLES[name]
    parsed = parse_sdp(data)
    out = parsed.serialize()
    assert out.endswith(b"\r\n") and b"\n" not in out.replace(b"\r\n", b"")
    assert parse_sdp(out) == parsed
    # The samples are in RFC 8866 order, so even the bytes come back.
    assert out == data


def test_serialize_from_scratch() -> None:
    offer = SessionDescription(
        origin=Origin("edgepbx", "42", 1, "IN", "IP4", "198.51.100.7"),
        connection=Connection("IN", "IP4", "198.51.100.7"),
        times=[Timing()],
        media=[
            MediaDescription(
                "audio", 30000, "RTP/AVP", ["0", "8", "101"],
                attributes=[("rtpmap", "101 telephone-event/8000"), ("fmtp", "101 0-16"),
                            ("sendrecv", None)],
            )
        ],
    )
    assert offer.serialize() == (
        b"v=0\r\no=edgepbx 42 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n"
        b"t=0 0\r\nm=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\na=sendrecv\r\n"
    )
    assert parse_sdp(offer.serialize()) == offer


def test_out_of_order_lines_are_reordered_into_grammar_order() -> None:
    data = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\na=x\r\nc=IN IP4 10.0.0.1\r\n"
            b"i=late info\r\nm=audio 1 RTP/AVP 0\r\na=y\r\nb=AS:1\r\nc=IN IP4 10.0.0.2\r\n")
    s = parse_sdp(data)
    assert s.serialize() == (
        b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\ni=late info\r\nc=IN IP4 10.0.0.1\r\n"
        b"t=0 0\r\na=x\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\nb=AS:1\r\na=y\r\n"
    )
    assert parse_sdp(s.serialize()) == s


def test_uninterpreted_lines_are_kept_in_grammar_slots() -> None:
    # Found by hypothesis: k= (after t=) written before e= (before c=).
    s = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nk=prompt\r\nx=1\r\n"
                  b"e=j.doe@example.com\r\nz=0 -1h\r\nm=audio 1 RTP/AVP 0\r\nq=2\r\ni=A\r\n")
    assert s.other == [("e", "j.doe@example.com"), ("k", "prompt"), ("z", "0 -1h"), ("x", "1")]
    assert s.media[0].other == [("i", "A"), ("q", "2")]
    assert parse_sdp(s.serialize()) == s
    # Built by hand in any order, it is still written in grammar order.
    s.other.reverse()
    assert parse_sdp(s.serialize()).other == [
        ("e", "j.doe@example.com"), ("z", "0 -1h"), ("k", "prompt"), ("x", "1"),
    ]


# --- errors -----------------------------------------------------------------------------

GOOD_HEAD = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "missing v="),
        (b"\r\n\r\n", "missing v="),
        (b"o=- 1 1 IN IP4 10.0.0.1\r\nv=0\r\ns=-\r\n", "missing v="),
        (b"v=0\r\ns=-\r\nt=0 0\r\n", "missing o="),
        (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nt=0 0\r\n", "missing s="),
        (b"v=zero\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n", "v= version is not a number"),
        (GOOD_HEAD + b"v=0\r\n", "more than one v="),
        (GOOD_HEAD + b"o=- 1 1 IN IP4 10.0.0.1\r\n", "more than one o="),
        (GOOD_HEAD + b"s=again\r\n", "more than one s="),
        (b"v=0\r\no=- 1 IN IP4 10.0.0.1\r\ns=-\r\n", "o= needs 6 fields"),
        (b"v=0\r\no=- 1 x IN IP4 10.0.0.1\r\ns=-\r\n", "o= sess-version is not a number"),
        (b"v=0\r\no=- x 1 IN IP4 10.0.0.1\r\ns=-\r\n", "o= sess-id is not a number"),
        (GOOD_HEAD + b"c=IN IP4\r\n", "c= needs"),
        (GOOD_HEAD + b"c=IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.2\r\n", "more than one session"),
        (GOOD_HEAD + b"b=AS\r\n", "b= needs"),
        (GOOD_HEAD + b"b=AS:lots\r\n", "b= bandwidth is not a number"),
        (GOOD_HEAD + b"t=0\r\n", "t= needs"),
        (GOOD_HEAD + b"t=now 0\r\n", "t= start is not a number"),
        (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nr=7d 1h 0\r\n", "r= without a t="),
        (GOOD_HEAD + b"m=audio\r\n", "bad m= line"),
        (GOOD_HEAD + b"m=audio 49170\r\n", "bad m= line"),
        (GOOD_HEAD + b"m=audio x RTP/AVP 0\r\n", "m= port is not a number"),
        (GOOD_HEAD + b"m=audio -1 RTP/AVP 0\r\n", "m= port is not a number"),
        (GOOD_HEAD + b"m=audio 65536 RTP/AVP 0\r\n", "port out of range"),
        (GOOD_HEAD + b"m=audio 5000/x RTP/AVP 0\r\n", "number of ports is not"),
        (GOOD_HEAD + b"m=audio 5000/0 RTP/AVP 0\r\n", "number of ports is 0"),
        (GOOD_HEAD + "m=audio ١٢ RTP/AVP 0\r\n".encode(), "m= port is not a number"),
        (GOOD_HEAD + b"m=audio 1 RTP/AVP 0\r\nc=IN\r\n", "c= needs"),
        (GOOD_HEAD + b"m=audio 1 RTP/AVP 0\r\nt=0 0\r\n", "t= inside a media section"),
        (GOOD_HEAD + b"m=audio 1 RTP/AVP 0\r\ns=x\r\n", "s= inside a media section"),
        (GOOD_HEAD + b"a=:value\r\n", "a= without an attribute name"),
        (GOOD_HEAD + b"a\r\n", "not <type>=<value>"),
        (GOOD_HEAD + b"=x\r\n", "not <type>=<value>"),
        (GOOD_HEAD + b"1=x\r\n", "not <type>=<value>"),
        (GOOD_HEAD + b" a=x\r\n", "not <type>=<value>"),
        (GOOD_HEAD + b"a=x\ry\r\n", "CR or NUL"),
        (GOOD_HEAD + b"a=x\x00\r\n", "CR or NUL"),
        (GOOD_HEAD + b"s=\xff\xfe\r\n", "not UTF-8"),
        (GOOD_HEAD + b"a=" + b"x" * MAX_LINE_BYTES + b"\r\n", "too long"),
        (GOOD_HEAD + b"a=x\r\n" * MAX_LINES, "too many lines"),
    ],
)
def test_errors(data: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        parse_sdp(data)


def test_error_names_the_line() -> None:
    with pytest.raises(SdpError, match=r"^line 5: bad m= line"):
        parse_sdp(GOOD_HEAD + b"m=audio\r\n")


def test_limits_are_inclusive() -> None:
    longest = GOOD_HEAD + b"a=" + b"x" * (MAX_LINE_BYTES - 2) + b"\r\n"
    assert parse_sdp(longest).attributes == [("x" * (MAX_LINE_BYTES - 2), None)]
    most = GOOD_HEAD + b"a=x\r\n" * (MAX_LINES - 4)
    assert len(parse_sdp(most).attributes) == MAX_LINES - 4


def test_sdp_error_is_a_value_error() -> None:
    assert issubclass(SdpError, ValueError)


def test_m_line_without_formats_is_accepted() -> None:
    s = parse_sdp(GOOD_HEAD + b"m=video 0 RTP/AVP\r\n")
    assert s.media[0].formats == []
    assert s.serialize().endswith(b"m=video 0 RTP/AVP\r\n")


# --- direction and hold -----------------------------------------------------------------


def stream(session_attr: str | None, media_attr: str | None, *, port: int = 5004,
           session_c: str = "10.0.0.1", media_c: str | None = None) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", f"c=IN IP4 {session_c}", "t=0 0"]
    if session_attr:
        lines.append(f"a={session_attr}")
    lines.append(f"m=audio {port} RTP/AVP 0")
    if media_c:
        lines.append(f"c=IN IP4 {media_c}")
    if media_attr:
        lines.append(f"a={media_attr}")
    return parse_sdp("\r\n".join(lines).encode() + b"\r\n")


@pytest.mark.parametrize(
    ("session_attr", "media_attr", "kwargs", "expected"),
    [
        (None, None, {}, "sendrecv"),
        (None, "sendonly", {}, "sendonly"),
        (None, "recvonly", {}, "recvonly"),
        (None, "inactive", {}, "inactive"),
        ("sendonly", None, {}, "sendonly"),
        ("inactive", None, {}, "inactive"),
        ("sendonly", "sendrecv", {}, "sendrecv"),  # media level wins
        ("inactive", "recvonly", {}, "recvonly"),
        ("recvonly", "sendonly", {}, "sendonly"),
        (None, None, {"port": 0}, "inactive"),
        (None, "sendrecv", {"port": 0}, "inactive"),
        # RFC 2543 hold: 0.0.0.0 takes away the receive half.
        (None, None, {"session_c": "0.0.0.0"}, "sendonly"),
        (None, "sendrecv", {"session_c": "0.0.0.0"}, "sendonly"),
        (None, "sendonly", {"session_c": "0.0.0.0"}, "sendonly"),
        (None, "recvonly", {"session_c": "0.0.0.0"}, "inactive"),
        (None, "inactive", {"session_c": "0.0.0.0"}, "inactive"),
        (None, None, {"media_c": "0.0.0.0"}, "sendonly"),
        # A media c= overrides the session's, both ways.
        (None, None, {"session_c": "0.0.0.0", "media_c": "10.0.0.9"}, "sendrecv"),
        (None, "sendonly", {"session_c": "10.0.0.9", "media_c": "0.0.0.0"}, "sendonly"),
        # Not a direction attribute: a=sendrecv:x is some other attribute.
        (None, "sendonly:x", {}, "sendrecv"),
        (None, "ptime:20", {}, "sendrecv"),
    ],
)
def test_direction(session_attr: str | None, media_attr: str | None,
                   kwargs: dict[str, object], expected: str) -> None:
    s = stream(session_attr, media_attr, **kwargs)  # type: ignore[arg-type]
    assert direction(s.media[0], s) == expected


def test_direction_without_session() -> None:
    m = MediaDescription("audio", 5000, "RTP/AVP", ["0"], attributes=[("sendonly", None)])
    assert direction(m) == "sendonly"
    assert direction(MediaDescription("audio", 5000, "RTP/AVP", ["0"])) == "sendrecv"


def test_direction_ipv6_unspecified_counts_as_hold() -> None:
    s = parse_sdp(IPV6.replace(b"c=IN IP6 2001:db8::20", b"c=IN IP6 ::"))
    assert direction(s.media[0], s) == "sendonly"
    assert is_hold(s)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cisco-8841", False), ("yealink-t46", False), ("yealink-hold", True), ("baresip", False),
     ("polycom", False), ("old-hold", True), ("ipv6", False), ("multi", False)],
)
def test_is_hold_samples(name: str, expected: bool) -> None:
    assert is_hold(parse_sdp(SAMPLES[name])) is expected


def test_is_hold_cases() -> None:
    assert is_hold(stream(None, "inactive"))
    assert is_hold(stream("sendonly", None))
    assert not is_hold(stream(None, "recvonly"))  # the answer to a hold is not a hold
    assert not is_hold(stream(None, None, port=0))  # no active audio at all
    # Every active audio stream counts; a rejected one does not.
    multi = set_direction(parse_sdp(MULTI), "sendonly", 0)
    multi = set_direction(multi, "inactive", 2)
    assert is_hold(multi)
    video_only = parse_sdp(GOOD_HEAD + b"m=video 5000 RTP/AVP 97\r\na=sendonly\r\n")
    assert not is_hold(video_only)


# --- rtpmap -----------------------------------------------------------------------------


def test_rtpmap_edge_cases() -> None:
    m = MediaDescription(
        "audio", 5000, "RTP/SAVPF", ["96", "97", "0", "98", "99", "13", "35", "x", "200"],
        attributes=[
            ("rtpmap", "96 opus/48000/2"),
            ("rtpmap", "96 PCMU/8000"),  # duplicate: the first wins
            ("rtpmap", "97 speex/fast"),  # bad clock rate: skipped
            ("rtpmap", "0 pcmu/8000"),  # explicit beats the static table
            ("rtpmap", "98"),  # malformed: skipped
            ("rtpmap", "200 foo/8000"),  # not a payload type
            ("rtpmap", "55 notlisted/8000"),  # not in m=: not offered
            ("rtpmap", "  99   L16/16000/1"),
        ],
    )
    assert rtpmap(m) == {
        96: ("opus", 48000, "2"),
        0: ("pcmu", 8000, None),
        99: ("L16", 16000, "1"),
        13: ("CN", 8000, None),
    }


def test_fmtp() -> None:
    m = MediaDescription("audio", 1, "RTP/AVP", ["101"],
                         attributes=[("fmtp", "101 0-16"), ("fmtp", "101 0-11"), ("fmtp", "x y")])
    assert fmtp(m) == {101: "0-16"}


# --- rewriting --------------------------------------------------------------------------


def test_nat_rewrite_of_a_yealink_behind_nat() -> None:
    phone = parse_sdp(YEALINK_T46)
    before = copy.deepcopy(phone)
    public = with_connection_address(phone, "198.51.100.23")
    assert phone == before  # the argument is not changed
    assert public.connection == Connection("IN", "IP4", "198.51.100.23")
    assert media_endpoint(public) == ("198.51.100.23", 11784)
    assert public.origin == phone.origin  # o= is an identifier, left alone
    assert public.media[0].attributes == phone.media[0].attributes
    assert b"c=IN IP4 198.51.100.23\r\n" in public.serialize()
    assert b"192.168.1.105" in public.serialize()  # only in o=


def test_nat_rewrite_media_level_and_rtcp() -> None:
    s = with_connection_address(parse_sdp(BARESIP), "203.0.113.80")
    assert s.connection == Connection("IN", "IP4", "203.0.113.80")
    assert s.media[0].get_attribute("rtcp") == "10061 IN IP4 203.0.113.80"
    c = with_connection_address(parse_sdp(CISCO_8841), "203.0.113.81")
    assert c.connection is None
    assert c.media[0].connection == Connection("IN", "IP4", "203.0.113.81")


def test_nat_rewrite_keeps_hold_address() -> None:
    s = with_connection_address(parse_sdp(OLD_HOLD), "198.51.100.23")
    assert s.connection == Connection("IN", "IP4", "0.0.0.0")
    assert is_hold(s)


def test_nat_rewrite_changes_address_type() -> None:
    s = with_connection_address(parse_sdp(YEALINK_T46), "[2001:db8::77]")
    assert s.connection == Connection("IN", "IP6", "2001:db8::77")
    s = with_connection_address(parse_sdp(IPV6), "198.51.100.1")
    assert s.connection == Connection("IN", "IP4", "198.51.100.1")


def test_nat_rewrite_only_private() -> None:
    s = parse_sdp(MULTI.replace(b"c=IN IP4 203.0.113.6", b"c=IN IP4 100.64.3.4"))
    out = with_connection_address(s, "198.51.100.9", only_private=True)
    assert out.connection == Connection("IN", "IP4", "203.0.113.5")  # public: kept
    assert out.media[2].connection == Connection("IN", "IP4", "198.51.100.9")  # CGNAT: rewritten


def test_nat_rewrite_wants_an_ip_address() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        with_connection_address(parse_sdp(YEALINK_T46), "pbx.example.com")


def test_set_direction_and_bump_version_for_a_hold_reoffer() -> None:
    call = parse_sdp(YEALINK_T46)
    hold = bump_version(set_direction(call, "sendonly"))
    assert call == parse_sdp(YEALINK_T46)  # unchanged
    assert parse_sdp(hold.serialize()) == parse_sdp(YEALINK_HOLD)
    assert hold.serialize() == YEALINK_HOLD  # replaced in place, not appended
    resume = bump_version(set_direction(hold, "sendrecv"))
    assert resume.origin.sess_version == call.origin.sess_version + 2
    assert not is_hold(resume)


def test_set_direction_details() -> None:
    polycom = parse_sdp(POLYCOM)
    all_streams = set_direction(polycom, "inactive")
    assert all_streams.attributes == []  # the session-level one is removed
    assert all_streams.media[0].attributes[-1] == ("inactive", None)
    multi = set_direction(parse_sdp(MULTI), "sendonly", 2)
    assert [direction(m, multi) for m in multi.media] == ["sendrecv", "inactive", "sendonly"]
    assert multi.media[2].attribute_values("recvonly") == []
    one = set_direction(polycom, "sendonly", 0)
    assert one.attributes == [("sendrecv", None)]  # the media level wins anyway
    assert direction(one.media[0], one) == "sendonly"
    with pytest.raises(ValueError, match="not a direction"):
        set_direction(polycom, "hold")
    with pytest.raises(ValueError, match="no media stream"):
        set_direction(polycom, "sendonly", 1)


def test_bump_version() -> None:
    s = parse_sdp(CISCO_8841)
    assert bump_version(s).origin.sess_version == 1
    assert s.origin.sess_version == 0


# --- addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("172.16.0.1", True),
        ("172.31.255.254", True),
        ("172.32.0.1", False),
        ("172.15.255.255", False),
        ("192.168.1.105", True),
        ("192.169.0.1", False),
        ("100.64.0.1", True),
        ("100.127.255.254", True),
        ("100.128.0.1", False),
        ("169.254.10.20", True),
        ("fe80::1", True),
        ("fe80::1%eth0", True),
        ("[fe80::1]", True),
        ("fd12:3456:789a::1", True),
        ("fc00::1", True),
        ("::ffff:192.168.1.1", True),
        ("::ffff:8.8.8.8", False),
        ("2001:db8::1", False),
        ("8.8.8.8", False),
        ("203.0.113.5", False),
        ("0.0.0.0", False),
        ("127.0.0.1", False),
        ("pbx.example.com", False),
        ("", False),
        ("10.0.0.1/127", False),
    ],
)
def test_is_private_address(host: str, expected: bool) -> None:
    assert is_private_address(host) is expected


# --- properties -------------------------------------------------------------------------


def check(data: bytes) -> None:
    """Either SdpError, or a description that round-trips and whose helpers do not raise."""
    try:
        parsed = parse_sdp(data)
    except SdpError:
        return
    out = parsed.serialize()
    assert parse_sdp(out) == parsed
    assert parse_sdp(out).serialize() == out
    is_hold(parsed)
    for index, media in enumerate(parsed.media):
        direction(media, parsed)
        rtpmap(media)
        fmtp(media)
        media_endpoint(parsed, index)
    with_connection_address(parsed, "192.0.2.1", only_private=True)
    set_direction(parsed, "inactive")
    bump_version(parsed)


@FAST
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_raise_sdp_error(data: bytes) -> None:
    check(data)


@FAST
@given(st.binary(max_size=500))
def test_arbitrary_bytes_after_a_valid_head(data: bytes) -> None:
    check(GOOD_HEAD + data)


SAMPLE_LINES = sorted({line for data in SAMPLES.values() for line in data.split(b"\r\n") if line})
LINE_TYPES = [b"v=", b"o=", b"s=", b"c=", b"t=", b"r=", b"b=", b"m=", b"a=", b"i=", b"k=", b"z="]
FIELD_TEXT = st.text(alphabet=" \t:/0123456789abcIPN.-=\x85\xa0\u2028\u00e9", max_size=30)


@st.composite
def sdp_like(draw: st.DrawFn) -> bytes:
    lines = [b"v=0", b"o=- 1 1 IN IP4 10.0.0.1", b"s=-"][: draw(st.integers(0, 3))]
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(SAMPLE_LINES)))
        else:
            kind = draw(st.sampled_from(LINE_TYPES))
            lines.append(kind + draw(FIELD_TEXT).encode())
    end = draw(st.sampled_from([b"\r\n", b"\n"]))
    return end.join(lines) + end


@FAST
@given(sdp_like())
def test_sdp_like_input_parses_or_raises_sdp_error(data: bytes) -> None:
    check(data)


@FAST
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_samples(name: str, data: st.DataObject) -> None:
    raw = bytearray(SAMPLES[name])
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    check(bytes(raw))
