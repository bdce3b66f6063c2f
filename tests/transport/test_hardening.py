"""The peer port without TLS trusts as little as it can: a peer speaks only for itself, messages a
member makes for itself (MsgHup, MsgBeat, ...) are refused from the network, and connections that
have not passed the handshake can make a member hold only a little memory, and only a few at once.
(With --peer-client-cert-auth nothing gets past the TLS handshake without the cluster's
certificate: tests/tlsmember.)"""

from __future__ import annotations

import asyncio
import struct

import pytest

from fastkv._native.crc32c import crc32c
from fastkv.raft.messages import MSG_HEARTBEAT, MSG_HUP, Message
from fastkv.transport import codec
from fastkv.transport.codec import STREAM_MESSAGE, Hello
from fastkv.transport.transport import MAX_PREHANDSHAKE_BYTES, MAX_PREHANDSHAKE_CONNECTIONS

from .harness import CLUSTER, LOOPS, Node, run, stop_all, until


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _member_with_peer() -> Node:
    node = await Node(1).start()
    node.t.update_peer(2, ["http://127.0.0.1:1"])  # a known peer that we impersonate below
    return node


async def _hello(node: Node, frm: int = 2) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(codec.encode_hello(Hello(CLUSTER, frm, node.id, STREAM_MESSAGE)))
    await writer.drain()
    return reader, writer


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        while await asyncio.wait_for(reader.read(65536), 5):
            pass
    except (ConnectionError, TimeoutError):
        return True
    return True


def test_local_only_messages_and_impersonation_are_refused(loop_kind: str) -> None:
    async def scenario() -> None:
        node = await _member_with_peer()
        try:
            # A legitimate heartbeat from peer 2 is delivered.
            reader, writer = await _hello(node)
            writer.write(codec.encode_message(Message(MSG_HEARTBEAT, to=1, frm=2, term=3)))
            await until(lambda: len(node.got) == 1, what="the heartbeat")
            # MsgHup (start an election) only a member makes for itself: refused, connection closed.
            writer.write(codec.encode_message(Message(MSG_HUP, to=1, frm=2, term=3)))
            assert await _closed(reader)
            writer.close()
            # A message claiming to come from another member than the handshake's.
            reader, writer = await _hello(node)
            writer.write(codec.encode_message(Message(MSG_HEARTBEAT, to=1, frm=3, term=3)))
            assert await _closed(reader)
            writer.close()
            assert [m.type for m in node.got] == [MSG_HEARTBEAT]
        finally:
            await stop_all([node])

    run(loop_kind, scenario)


def test_unverified_connections_are_bounded(loop_kind: str) -> None:
    async def scenario() -> None:
        node = await _member_with_peer()
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            # A frame header announcing a huge frame, then data: closed once past the bound,
            # long before the announced size could be buffered.
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            head16 = codec.HEADER.pack(
                codec.MAGIC, codec.PROTOCOL_VERSION, codec.FRAME_MESSAGE, 0, 60 << 20, 0, 0
            )[:16]
            writer.write(head16 + struct.pack("<I", crc32c(head16)))
            sent = 0
            try:
                while sent <= 4 * MAX_PREHANDSHAKE_BYTES:
                    writer.write(b"\0" * 16384)
                    await writer.drain()
                    sent += 16384
            except ConnectionError:
                pass
            assert await _closed(reader)
            assert all(lst.decoder.buffered <= MAX_PREHANDSHAKE_BYTES for lst in node.t._listeners)
            writer.close()
            # Silent connections: only so many may wait for their handshake at once.
            for _ in range(MAX_PREHANDSHAKE_CONNECTIONS + 8):
                conns.append(await asyncio.open_connection("127.0.0.1", node.port))
            await until(
                lambda: len(node.t._listeners) == MAX_PREHANDSHAKE_CONNECTIONS,
                what="the bound on unverified connections",
            )
            await asyncio.sleep(0.05)
            assert len(node.t._listeners) == MAX_PREHANDSHAKE_CONNECTIONS
        finally:
            for _, w in conns:
                w.close()
            await stop_all([node])

    run(loop_kind, scenario)
