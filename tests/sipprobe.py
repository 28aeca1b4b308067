"""Plain helpers to find a free port and probe a SIP server, shared by the test
suite (tests/conftest.py) and the benchmarks (bench/): no pytest in here."""

from __future__ import annotations

import socket
import uuid

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK, *, attempts: int = 64) -> int:
    """A port number free for both UDP and TCP on host right now.

    The agent listens udp and tcp on the same port, so both must be free. There is a
    window between this check and the agent's bind; callers that race (parallel runs)
    retry through AgentProcess.start().
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no port free for both UDP and TCP")


def sip_options_probe(
    host: str, port: int, *, timeout: float = 0.25, transport: str = "udp"
) -> str | None:
    """Send one OPTIONS and return the status line of the answer, or None.

    Any SIP answer proves the transport is up and the core is processing requests.
    """
    branch = "z9hG4bK-probe-" + uuid.uuid4().hex[:12]
    call_id = uuid.uuid4().hex
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(timeout)
        try:
            if transport != "udp":
                sock.connect((host, port))
            else:
                sock.bind((LOOPBACK, 0))
            lport = sock.getsockname()[1]
            msg = (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/{transport.upper()} {LOOPBACK}:{lport};branch={branch};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:probe@{LOOPBACK}>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <sip:{host}:{port}>\r\n"
                f"Call-ID: {call_id}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            if transport == "udp":
                sock.sendto(msg, (host, port))
                data, _ = sock.recvfrom(65535)
            else:
                sock.sendall(msg)
                data = sock.recv(65535)
        except OSError:
            return None
    first = data.split(b"\r\n", 1)[0].decode("latin-1")
    return first if first.startswith("SIP/2.0 ") else None
