"""Outbound stream connections: a message to a TCP peer with no connection opens one."""

from __future__ import annotations

import asyncio

from conftest import free_port

from sipstack.peer import Peer
from sipstack.transport import StreamServer

MESSAGE = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKo\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")


def _server(received: list[tuple[bytes, Peer]]) -> StreamServer:
    return StreamServer(lambda data, peer: received.append((data, peer)),
                        lambda error, peer: None, transport_name="tcp")


def test_send_without_a_connection_connects_and_delivers_in_order() -> None:
    async def scenario() -> None:
        got: list[tuple[bytes, Peer]] = []
        far, near = _server(got), _server([])
        await far.start("127.0.0.1", free_port())
        await near.start("127.0.0.1", free_port())
        try:
            target = Peer("tcp", *far.local)
            assert near.send(MESSAGE, target)
            assert near.send(MESSAGE.replace(b"CSeq: 1", b"CSeq: 2"), target)  # queued
            for _ in range(100):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.02)
            assert [d.split(b"CSeq: ")[1][:1] for d, _ in got] == [b"1", b"2"]
            assert target in near.connections  # reused for what follows
        finally:
            await far.close()
            await near.close()

    asyncio.run(scenario())


def test_a_peer_that_cannot_be_reached_is_reported() -> None:
    async def scenario() -> None:
        near = _server([])
        await near.start("127.0.0.1", free_port())
        unreachable: list[Peer] = []
        near.on_unreachable = unreachable.append
        try:
            target = Peer("tcp", "127.0.0.1", free_port())  # nobody listens
            assert near.send(MESSAGE, target)
            for _ in range(100):
                if unreachable:
                    break
                await asyncio.sleep(0.02)
            assert unreachable == [target]
            assert near.connect_failures == 1
        finally:
            await near.close()

    asyncio.run(scenario())
