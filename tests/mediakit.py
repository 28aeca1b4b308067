"""Media helpers shared by the tests and the media benchmarks (bench/media).

``pcap_rtp_payloads``: the RTP payloads of a SIPp sample pcap, in order.
``dtmf_packets`` / ``dtmf_received``: an RFC 4733 stream for several digits, and what our
receiver makes of one.
"""

from __future__ import annotations

import struct
from pathlib import Path

from sipstack.media.dtmf import DtmfReceiver, DtmfSender

__all__ = ["dtmf_packets", "dtmf_received", "pcap_rtp_payloads"]


def pcap_rtp_payloads(path: Path) -> bytes:
    """The RTP payloads of a pcap (Ethernet/IPv4/UDP), in order."""
    data = path.read_bytes()
    offset, out = 24, []
    while offset + 16 <= len(data):
        _, _, length, _ = struct.unpack_from("<IIII", data, offset)
        packet = data[offset + 16: offset + 16 + length]
        offset += 16 + length
        if len(packet) > 54:
            out.append(packet[42 + 12:])
    return b"".join(out)


def dtmf_packets(digits: str, ts0: int = 5000) -> list[tuple[int, bytes]]:
    """(timestamp, payload) for several digits, 100 ms each, 200 ms apart."""
    out = []
    for i, d in enumerate(digits):
        ts = (ts0 + 1600 * i) & 0xFFFFFFFF
        out.extend((p.timestamp, p.payload) for p in DtmfSender().packets(d, ts))
    return out


def dtmf_received(stream: list[tuple[int, bytes]]) -> str:
    rx = DtmfReceiver()
    return "".join(d.digit for ts, pl in stream if (d := rx.feed(ts, pl)) is not None)
