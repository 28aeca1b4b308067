"""The sans-I/O RTP session: negotiation, symmetric RTP, receive path, DTMF, pacing.

Everything runs on a virtual clock: ``now`` is a float the test advances.
"""

from __future__ import annotations

import math
import random
import struct
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.media.dtmf import DtmfSender, parse_telephone_event
from sipstack.media.g711 import ulaw_decode, ulaw_encode
from sipstack.media.rtcp import Bye, ReceiverReport, SenderReport, SourceDescription, parse_rtcp
from sipstack.media.rtp import RtpPacket, parse_rtp, seq_diff, ts_diff
from sipstack.media.session import (
    DtmfReceived,
    MediaParams,
    MediaSession,
    NegotiationError,
    PlayoutDone,
    RemoteLatched,
    accept_answer,
    make_offer,
    negotiate,
)
from sipstack.sdp import direction, parse_sdp, rtpmap

T0 = 1000.0
PHONE = ("192.168.1.20", 40000)  # what the SDP says
NAT = ("203.0.113.7", 51234)  # where the phone's packets really come from
SPOOF = ("198.51.100.66", 6666)
PEER_SSRC = 0x5EED


def offer_sdp(formats: str, rtpmaps: str = "", extra: str = "", conn: str = PHONE[0],
              port: int = PHONE[1]) -> bytes:
    lines = ["v=0", "o=phone 1 1 IN IP4 192.168.1.20", "s=-", f"c=IN IP4 {conn}", "t=0 0",
             f"m=audio {port} RTP/AVP {formats}"]
    lines += [x for x in rtpmaps.split("\n") if x]
    lines += [x for x in extra.split("\n") if x]
    return ("\r\n".join(lines) + "\r\n").encode()


TE101 = "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16"


# ---------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("formats", "rtpmaps", "codec", "pt", "dtmf"),
    [
        ("0 8 101", TE101, "PCMU", 0, 101),
        ("8 0 101", TE101, "PCMA", 8, 101),
        ("18 8 0 101", TE101, "PCMA", 8, 101),  # G.729 first: skipped
        ("9 0 96", "a=rtpmap:96 telephone-event/8000", "PCMU", 0, 96),  # PT kept
        ("0 100", "a=rtpmap:100 TELEPHONE-EVENT/8000", "PCMU", 0, 100),
        ("0", "", "PCMU", 0, None),  # no telephone-event offered
        ("0 101 102", "a=rtpmap:101 telephone-event/48000\na=rtpmap:102 telephone-event/8000",
         "PCMU", 0, 102),  # the 8 kHz one
        ("97 8", "a=rtpmap:97 PCMU/8000", "PCMU", 97, None),  # dynamic PT for PCMU
    ],
)
def test_negotiation_table(formats: str, rtpmaps: str, codec: str, pt: int,
                           dtmf: int | None) -> None:
    offer = parse_sdp(offer_sdp(formats, rtpmaps))
    answer, params = negotiate(offer, "10.0.0.5", 20000, session_id=42)
    assert (params.codec, params.payload_type, params.dtmf_payload_type) == (codec, pt, dtmf)
    assert params.remote_rtp == PHONE and params.remote_rtcp == (PHONE[0], PHONE[1] + 1)
    assert params.ptime_ms == 20 and params.direction == "sendrecv"
    again = parse_sdp(answer.serialize())
    m = again.media[0]
    assert (m.port, again.connection and again.connection.address) == (20000, "10.0.0.5")
    want = {pt: (codec if pt in (0, 8) else "PCMU", 8000, None)}
    if dtmf is not None:
        want[dtmf] = ("telephone-event", 8000, None)
    assert {k: (e.upper() if k != dtmf else e, r, c) for k, (e, r, c) in rtpmap(m).items()} \
        == want
    assert m.get_attribute("ptime") == "20"


@pytest.mark.parametrize(
    ("sdp", "why"),
    [
        (offer_sdp("18 9", "a=rtpmap:18 G729/8000"), "no common codec"),
        (offer_sdp("96", "a=rtpmap:96 opus/48000/2"), "no common codec"),
        (offer_sdp("0", port=0), "no usable audio"),
        (b"v=0\r\no=x 1 1 IN IP4 1.1.1.1\r\ns=-\r\nt=0 0\r\n", "no usable audio"),
        (offer_sdp("0").replace(b"RTP/AVP", b"RTP/SAVP"), "no usable audio"),
    ],
)
def test_negotiation_errors(sdp: bytes, why: str) -> None:
    with pytest.raises(NegotiationError, match=why):
        negotiate(parse_sdp(sdp), "10.0.0.5", 20000)


def test_negotiation_direction_hold_rtcp_and_extra_streams() -> None:
    sdp = offer_sdp("0 101", TE101, "a=sendonly\na=rtcp:40011 IN IP4 192.168.1.21")
    sdp += b"m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    answer, params = negotiate(parse_sdp(sdp), "10.0.0.5", 20000)
    assert params.direction == "recvonly" and not params.sends
    assert params.remote_rtcp == ("192.168.1.21", 40011)
    assert [m.port for m in answer.media] == [20000, 0]
    assert direction(answer.media[0], answer) == "recvonly"
    _, held = negotiate(parse_sdp(offer_sdp("0", conn="0.0.0.0")), "10.0.0.5", 20000)
    assert held.remote_rtp is None and not held.sends


def test_offer_and_answer_round_trip() -> None:
    offer = make_offer("10.0.0.5", 20002, session_id=7)
    parsed = parse_sdp(offer.serialize())
    assert rtpmap(parsed.media[0]) == {
        0: ("PCMU", 8000, None), 8: ("PCMA", 8000, None), 101: ("telephone-event", 8000, None)}
    # the far end answers our offer with its own negotiate()
    answer, theirs = negotiate(parsed, "10.0.0.9", 30000)
    ours = accept_answer(parse_sdp(answer.serialize()))
    assert (ours.codec, ours.payload_type, ours.dtmf_payload_type) == ("PCMU", 0, 101)
    assert ours.remote_rtp == ("10.0.0.9", 30000) and theirs.remote_rtp == ("10.0.0.5", 20002)


# ---------------------------------------------------------------------------- helpers


def params(codec: str = "PCMU", pt: int = 0, dtmf: int | None = 101,
           remote: tuple[str, int] | None = PHONE) -> MediaParams:
    rtcp = None if remote is None else (remote[0], remote[1] + 1)
    return MediaParams(codec, pt, dtmf, remote, rtcp)


def session(**kw: object) -> MediaSession:
    p = kw.pop("p", None) or params()
    assert isinstance(p, MediaParams)
    return MediaSession(p, T0, rng=random.Random(1), **kw)  # type: ignore[arg-type]


def rtp(seq: int, ts: int, payload: bytes = b"\xff" * 160, pt: int = 0, marker: bool = False,
        ssrc: int = PEER_SSRC) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, marker=marker).to_bytes()


def events(s: MediaSession) -> list[object]:
    out = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def rtp_out(s: MediaSession) -> list[tuple[RtpPacket, tuple[str, int]]]:
    return [(parse_rtp(d), a) for d, a, is_rtcp in s.datagrams_to_send() if not is_rtcp]


# ---------------------------------------------------------------------------- receive


def test_symmetric_rtp_latches_and_ignores_a_spoofed_third_source() -> None:
    s = session()
    s.play(bytes(320 * 3))
    s.handle_timer(T0)
    assert [a for _, a in rtp_out(s)] == [PHONE]  # before any packet: the SDP address
    s.receive_rtp(rtp(1, 160), NAT, T0 + 0.01)
    assert events(s) == [RemoteLatched(NAT, PHONE)]
    s.handle_timer(T0 + 0.02)
    assert [a for _, a in rtp_out(s)] == [NAT]
    # a third source injecting packets is dropped while the latched one talks
    for i in range(2, 60):
        now = T0 + 0.01 + 0.02 * i
        s.receive_rtp(rtp(i, 160 * i), NAT, now)
        s.receive_rtp(rtp(1000 + i, 99 * i, ssrc=0xBAD), SPOOF, now)
    assert s.stats().wrong_source == 58 and s.stats().packets_received == 59
    s.handle_timer(T0 + 0.04)
    assert [a for _, a in rtp_out(s)] == [NAT] and events(s) == []
    # the latched source goes silent for > 2 s: a new source may take over (re-INVITE-less
    # NAT rebinding), and media follows it
    last = T0 + 0.01 + 0.02 * 59
    s.receive_rtp(rtp(5000, 1), SPOOF, last + 1.9)
    assert s.stats().wrong_source == 59
    s.receive_rtp(rtp(5001, 161, ssrc=0xBAD), SPOOF, last + 2.1)
    assert events(s) == [RemoteLatched(SPOOF, NAT)] and s.remote == SPOOF
    assert s.stats().relatched == 1


def test_first_packet_from_the_sdp_address_latches_without_event() -> None:
    s = session()
    s.receive_rtp(rtp(1, 160), PHONE, T0)
    assert events(s) == [] and s.stats().latched
    s.receive_rtp(rtp(2, 320), SPOOF, T0 + 0.02)
    assert s.stats().wrong_source == 1 and s.remote == PHONE


def test_malformed_and_unexpected_payload_types_are_counted_and_do_not_latch() -> None:
    s = session()
    junk = [b"", b"\x80", bytes(11), bytes.fromhex("40000000000000000000000000"),
            bytes.fromhex("a00000000000000000000000") + b"\x05"]
    for j in junk:
        s.receive_rtp(j, SPOOF, T0)
    s.receive_rtp(rtp(1, 160, pt=8), SPOOF, T0)  # PCMA: not negotiated
    s.receive_rtp(rtp(1, 160, pt=13), SPOOF, T0)  # CN: not negotiated
    st = s.stats()
    assert (st.malformed, st.unexpected_payload_type, st.packets_received) == (5, 2, 0)
    assert not st.latched and s.remote == PHONE
    s.receive_rtcp(b"\x80\xc8\x00", NAT, T0)
    assert s.stats().rtcp_malformed == 1


def tone_pcm(freq: float, samples: int, start: int = 0, amp: float = 8000.0) -> bytes:
    return struct.pack(f"<{samples}h", *(
        int(amp * math.sin(2 * math.pi * freq * (start + i) / 8000)) for i in range(samples)))


def test_heavy_reordering_and_jitter_lose_no_frame_in_the_recording() -> None:
    rng = random.Random(3550)
    s = session()
    n = 500
    ts0, seq0 = 0xFFFFFFFF - 160 * 100, 65500  # both wrap during the call
    pcm = tone_pcm(440.0, 160 * n)
    codes = ulaw_encode(pcm)
    arrivals = []
    for i in range(n):
        sent = T0 + 0.02 * i
        arrivals.append((sent + rng.uniform(0.0, 0.15), i))  # up to 150 ms of jitter
    arrivals += [(t + 0.001, i) for t, i in rng.sample(arrivals, 50)]  # duplicates
    arrivals.sort()
    recorded = bytearray()
    now = T0
    for t, i in arrivals:
        while (timer := s.get_timer()) is not None and timer <= t:
            now = timer
            s.handle_timer(now)
            recorded += s.read_audio()
        s.receive_rtp(rtp(seq0 + i, ts0 + 160 * i, codes[160 * i : 160 * (i + 1)]), NAT, t)
    for k in range(1, 20):
        s.handle_timer(now + 0.02 * k)
    recorded += s.read_audio()
    assert bytes(recorded) == ulaw_decode(codes)  # every frame, in order, none lost
    st = s.stats()
    assert st.duplicates + st.late == 50 and st.late == 0
    assert st.summary is not None and st.summary.packets_lost == 0


def test_loss_becomes_silence_of_the_right_length() -> None:
    s = session()
    for i in [0, 1, 2, 5, 6]:
        s.receive_rtp(rtp(i, 160 * i, b"\x00" * 160), NAT, T0 + 0.02 * i)
    s.close(T0 + 1)
    audio = s.read_audio()
    assert len(audio) == 2 * 160 * 7
    assert audio[2 * 160 * 3 : 2 * 160 * 5] == bytes(2 * 320)


def dtmf_stream(digits: str, ts0: int = 0, seq0: int = 0, gap: int = 1600
                ) -> list[tuple[int, int, bytes]]:
    out = []
    seq = seq0
    for i, d in enumerate(digits):
        for p in DtmfSender().packets(d, ts0 + gap * i, duration=800):
            out.append((seq, p.timestamp, p.payload))
            seq += 1
    return out


def test_dtmf_flood_each_press_reported_once_with_its_duration() -> None:
    rng = random.Random(4733)
    digits = "".join(rng.choice("0123456789*#ABCD") for _ in range(400))
    stream = dtmf_stream(digits, ts0=0xFFFFFFFF - 50_000)
    mangled = []
    for k in range(0, len(stream), 7):  # 7 packets per digit
        group = [p for p in stream[k : k + 7] if rng.random() > 0.3] or [stream[k + 6]]
        group += [rng.choice(group) for _ in range(3)]  # duplicated packets
        rng.shuffle(group)
        mangled += group
    s = session()
    now = T0
    got: list[DtmfReceived] = []
    for seq, ts, payload in mangled:
        now += 0.01
        s.receive_rtp(rtp(seq, ts, payload, pt=101), NAT, now)
        got += [e for e in events(s) if isinstance(e, DtmfReceived)]
    s.handle_timer(now + 1.0)
    got += [e for e in events(s) if isinstance(e, DtmfReceived)]
    assert "".join(e.digit for e in got) == digits
    assert all(e.source == "rfc4733" and 20 <= e.duration <= 100 for e in got)


def test_dtmf_duration_from_end_packets_and_timeout_without_end() -> None:
    s = session()
    stream = dtmf_stream("57")
    for seq, ts, payload in stream[:7]:
        s.receive_rtp(rtp(seq, ts, payload, pt=101), PHONE, T0)
    assert events(s) == [DtmfReceived("5", 100)]
    for seq, ts, payload in stream[7:10]:  # start of "7", then its packets stop
        s.receive_rtp(rtp(seq, ts, payload, pt=101), PHONE, T0 + 0.1)
    s.handle_timer(T0 + 0.5)
    assert events(s) == []
    s.handle_timer(T0 + 0.62)
    assert events(s) == [DtmfReceived("7", 60)]


def test_inband_dtmf_and_sip_info() -> None:
    from sipstack.media.goertzel import COLS, ROWS

    s = session(inband_dtmf=True)
    n = 160 * 10
    two = [a + b for a, b in zip(
        struct.unpack(f"<{n}h", tone_pcm(ROWS[1], n, amp=5000)),
        struct.unpack(f"<{n}h", tone_pcm(COLS[1], n, amp=5000)), strict=True)]
    pcm = struct.pack(f"<{n}h", *two) + bytes(2 * 160 * 10)
    codes = ulaw_encode(pcm)
    for i in range(20):
        s.receive_rtp(rtp(i, 160 * i, codes[160 * i : 160 * (i + 1)]), NAT, T0 + 0.02 * i)
        s.handle_timer(T0 + 0.02 * i + 0.3)
    assert [e for e in events(s) if isinstance(e, DtmfReceived)] == [
        DtmfReceived("5", 0, "inband")]
    s.receive_dtmf_info(b"Signal=#\r\nDuration=160\r\n")
    assert events(s) == [DtmfReceived("#", 0, "info")]


# ---------------------------------------------------------------------------- send


def test_pacing_500_ticks_500_packets_on_the_grid_with_wraps() -> None:
    s = session(initial_seq=65300, initial_timestamp=0xFFFFFFFF - 160 * 250, ssrc=0xABCD)
    s.play(tone_pcm(1000.0, 160 * 500))
    sent: list[RtpPacket] = []
    for k in range(500):
        deadline = s.get_timer()
        assert deadline is not None
        assert abs(deadline - (T0 + 0.02 * k)) < 1e-9  # on the grid, no drift
        s.handle_timer(deadline)
        sent += [p for p, _ in rtp_out(s)]
    assert len(sent) == 500
    assert [p.seq for p in sent] == [(65300 + k) & 0xFFFF for k in range(500)]
    assert all(seq_diff(b.seq, a.seq) == 1 for a, b in pairwise(sent))
    assert all(ts_diff(b.timestamp, a.timestamp) == 160
               for a, b in pairwise(sent))
    assert sent[0].marker and not any(p.marker for p in sent[1:])
    assert {p.ssrc for p in sent} == {0xABCD} and {len(p.payload) for p in sent} == {160}
    assert events(s) == []
    s.handle_timer(s.get_timer() or 0)
    assert events(s) == [PlayoutDone()] and rtp_out(s) == []


def test_late_timer_catches_up_a_little_then_skips() -> None:
    s = session(initial_seq=0, initial_timestamp=0)
    s.play(bytes(320 * 100))
    s.handle_timer(T0 + 0.0101)  # one tick
    s.handle_timer(T0 + 0.0401)  # ticks 1 and 2, a little late
    s.handle_timer(T0 + 0.5001)  # 23 due: 3 sent, 20 skipped
    pkts = [p for p, _ in rtp_out(s)]
    assert [p.timestamp for p in pkts] == [0, 160, 320, 160 * 23, 160 * 24, 160 * 25]
    assert [p.seq for p in pkts] == list(range(6))
    assert [p.marker for p in pkts] == [True, False, False, True, False, False]
    assert s.stats().ticks_skipped == 20
    assert s.get_timer() == pytest.approx(T0 + 0.52)


def test_silence_gaps_keep_the_timestamp_running_and_mark_talkspurts() -> None:
    s = session(initial_seq=10, initial_timestamp=1000)
    s.play(bytes(320 * 2))
    for k in range(6):
        s.handle_timer(T0 + 0.02 * k)
        if k == 3:
            s.play(bytes(320))
    pkts = [p for p, _ in rtp_out(s)]
    assert [(p.seq, p.timestamp, p.marker) for p in pkts] == [
        (10, 1000, True), (11, 1160, False), (12, 1000 + 160 * 4, True)]


def test_comfort_silence_and_odd_lengths_padded() -> None:
    s = session(comfort_silence=True, p=params("PCMA", 8))
    s.play(bytes(100))  # 50 samples: padded to a frame
    for k in range(3):
        s.handle_timer(T0 + 0.02 * k)
    pkts = [p for p, _ in rtp_out(s)]
    assert len(pkts) == 3 and {p.payload_type for p in pkts} == {8}
    assert all(len(p.payload) == 160 for p in pkts)
    assert [p.marker for p in pkts] == [True, False, False]


def test_send_dtmf_rfc4733_three_end_packets_then_audio() -> None:
    s = session(initial_seq=0, initial_timestamp=0)
    s.send_dtmf("1#")
    s.play(bytes(320))
    for k in range(25):
        s.handle_timer(T0 + 0.02 * k)
    pkts = [p for p, _ in rtp_out(s)]
    ev = [(p.timestamp, p.marker, parse_telephone_event(p.payload)) for p in pkts
          if p.payload_type == 101]
    assert len(ev) == 14
    for digit, group in (("1", ev[:7]), ("#", ev[7:])):
        assert {e.digit for _, _, e in group} == {digit}
        assert len({ts for ts, _, _ in group}) == 1
        assert [m for _, m, _ in group] == [True] + [False] * 6
        assert [e.end for _, _, e in group] == [False] * 4 + [True] * 3
    assert ev[7][0] - ev[0][0] == 160 * (7 + 3)  # 3 ticks of gap
    audio = [p for p in pkts if p.payload_type == 0]
    assert len(audio) == 1 and audio[0].marker
    assert [p.seq for p in pkts] == list(range(15))
    with pytest.raises(ValueError):
        s.send_dtmf("x")


def test_send_dtmf_without_telephone_event_uses_tones() -> None:
    s = session(p=params(dtmf=None))
    s.send_dtmf("5")
    assert s.queued_seconds == pytest.approx(0.16)


def test_hold_sends_nothing_but_time_goes_on() -> None:
    s = session(p=params(remote=None), initial_timestamp=0, initial_seq=7)
    s.play(bytes(320 * 5))
    for k in range(5):
        s.handle_timer(T0 + 0.02 * k)
    assert rtp_out(s) == []
    s.set_params(params())
    s.play(bytes(320))
    s.handle_timer(T0 + 0.1)
    (p, addr), = rtp_out(s)
    assert addr == PHONE and p.timestamp == 160 * 5 and p.seq == 7 and p.marker


def test_rtcp_sender_report_rtt_and_bye() -> None:
    s = session(clock_offset=1.7e9)
    s.play(bytes(320 * 400))
    s.receive_rtp(rtp(1, 160), NAT, T0)
    rtcp: list[tuple[bytes, tuple[str, int]]] = []
    now = T0
    for k in range(400):
        now = T0 + 0.02 * k
        s.handle_timer(now)
        rtcp += [(d, a) for d, a, is_rtcp in s.datagrams_to_send() if is_rtcp]
    assert 1 <= len(rtcp) <= 4  # about every 5 s over 8 s
    parts = parse_rtcp(rtcp[0][0])
    assert rtcp[0][1] == (NAT[0], NAT[1] + 1)
    assert isinstance(parts[0], SenderReport) and isinstance(parts[1], SourceDescription)
    sr = parts[0]
    assert sr.ssrc == s.ssrc and sr.packet_count > 0 and sr.reports[0].ssrc == PEER_SSRC
    # the peer answers with an RR about our stream, 50 ms later: RTT = 50 ms
    from sipstack.media.rtcp import ReportBlock, ntp_middle32, serialize_rtcp

    block = ReportBlock(s.ssrc, 0, 0, 0, 0, lsr=ntp_middle32(sr.ntp_timestamp), dlsr=0)
    sr_time = sr.ntp_timestamp / 4294967296.0 - 2_208_988_800 - 1.7e9  # on our clock
    s.receive_rtcp(serialize_rtcp([ReceiverReport(PEER_SSRC, (block,))]), (NAT[0], 9),
                   sr_time + 0.05)
    summary = s.stats().summary
    assert summary is not None and summary.rtt_ms == pytest.approx(50, abs=0.1)
    s.close(now + 0.01)
    (bye, _), = [(d, a) for d, a, r in s.datagrams_to_send() if r]
    assert any(isinstance(p, Bye) and p.ssrcs == (s.ssrc,) for p in parse_rtcp(bye))
    assert s.get_timer() is None and s.closed


def test_rtcp_from_another_host_is_ignored() -> None:
    s = session()
    s.receive_rtp(rtp(1, 160), NAT, T0)
    from sipstack.media.rtcp import serialize_rtcp

    s.receive_rtcp(serialize_rtcp([ReceiverReport(7)]), SPOOF, T0)
    assert s.stats().rtcp_received == 0 and s.stats().wrong_source == 1


def test_stream_restart_with_new_ssrc_keeps_the_recording() -> None:
    s = session()
    for i in range(5):
        s.receive_rtp(rtp(100 + i, 160 * i, b"\x00" * 160), NAT, T0 + 0.02 * i)
    for i in range(5):
        s.receive_rtp(rtp(9000 + i, 777 + 160 * i, b"\x00" * 160, ssrc=0x99), NAT,
                      T0 + 0.1 + 0.02 * i)
    s.close(T0 + 1)
    assert len(s.read_audio()) == 2 * 160 * 10


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=64), st.integers(0, 2)),
                max_size=40))
def test_arbitrary_datagrams_never_raise(datagrams: list[tuple[bool, bytes, int]]) -> None:
    s = session(inband_dtmf=True)
    sources = [PHONE, NAT, SPOOF]
    now = T0
    for raw_only, data, src in datagrams:
        now += 0.013
        # raw bytes, or a valid telephone-event header carrying them as payload
        s.receive_rtp(data if raw_only else rtp(len(data), 160 * len(data), data, pt=101),
                      sources[src], now)
        s.receive_rtcp(data, sources[src], now)
        s.handle_timer(now)
    s.close(now)
    s.datagrams_to_send()
    events(s)
