"""Transports on 127.0.0.1 exchanging real traffic: pipelining and order, reconnects, snapshots
streamed beside messages, handshake refusals, partitions through the fault proxy."""

from __future__ import annotations

import asyncio
import random

import pytest

from fastkv.raft.messages import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_PROP,
    MSG_SNAP,
    Message,
    Snapshot,
    SnapshotMeta,
)
from fastkv.raft.types import Entry
from fastkv.transport import codec
from fastkv.transport.faultproxy import FaultProxy
from fastkv.transport.transport import Transport, parse_peer_url
from tests.support.procs import free_port

from .harness import CLUSTER, LOOPS, Node, cluster, run, stop_all, until


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def app(frm: int, to: int, index: int, n: int = 3) -> Message:
    ents = [Entry(2, index + 1 + i, 0, b"v%d" % (index + i)) for i in range(n)]
    return Message(MSG_APP, to=to, frm=frm, term=2, log_term=2, index=index, entries=ents, commit=index)


def test_parse_peer_url() -> None:
    assert parse_peer_url("http://127.0.0.1:2380") == ("127.0.0.1", 2380)
    assert parse_peer_url("http://localhost") == ("localhost", 2380)
    assert parse_peer_url("https://127.0.0.1:2381") == ("127.0.0.1", 2381)
    with pytest.raises(ValueError):
        parse_peer_url("unix://127.0.0.1:2380")
    with pytest.raises(ValueError):
        parse_peer_url("127.0.0.1:2380")


def test_two_members_pipeline_in_order(loop_kind: str) -> None:
    async def scenario() -> None:
        a, b = await cluster(2)
        try:
            sent = [app(1, 2, i * 3) for i in range(2000)]
            # Sent before the connection exists: queued while the first dial runs.
            for i in range(0, len(sent), 100):
                a.t.send(sent[i : i + 100])
                await asyncio.sleep(0)
            await until(lambda: len(b.got) == len(sent), what="all appends")
            assert b.got == sent
            replies = [Message(MSG_APP_RESP, to=1, frm=2, term=2, index=m.index + 3) for m in sent[:50]]
            b.t.send(replies)
            await until(lambda: len(a.got) == 50, what="replies")
            assert a.got == replies
            assert a.t.is_active(2) and b.t.is_active(1)
            assert a.t.active_since_ns(2) > 0
            rtt = a.t.round_trip_time(2)
            assert rtt is not None and 0 < rtt < 1.0
            assert a.t.stats(2)["sent"] == len(sent)
            assert a.unreachable == [] and b.unreachable == []
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_three_members_all_pairs(loop_kind: str) -> None:
    async def scenario() -> None:
        nodes = await cluster(3)
        try:
            for src in nodes:
                src.t.send(
                    [
                        Message(MSG_HEARTBEAT, to=dst.id, frm=src.id, term=k)
                        for dst in nodes
                        if dst is not src
                        for k in range(10)
                    ]
                )
            await until(lambda: all(len(n.got) == 20 for n in nodes), what="heartbeats")
            for dst in nodes:
                for src in nodes:
                    if src is not dst:
                        assert [m.term for m in dst.got if m.frm == src.id] == list(range(10))
        finally:
            await stop_all(nodes)

    run(loop_kind, scenario)


def test_round_trip_time_follows_the_network(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1, probe_interval_s=0.02).start()
        b = await Node(2).start()
        proxy = FaultProxy(b.port)
        proxy.set_delay(0.05)  # each direction: 100 ms round trip
        a.t.add_peer(2, [f"http://127.0.0.1:{await proxy.start()}"])
        b.t.add_peer(1, [a.url])
        try:
            assert a.t.round_trip_time(2) is None
            await until(lambda: a.t.is_active(2), what="connect")
            rtt = a.t.round_trip_time(2)  # from the handshake
            # 2 x 50 ms, less the event loop's timer slack (timers may fire ~1 ms early).
            assert rtt is not None and rtt >= 0.09
            proxy.set_delay(0)
            # Pings sent after the change come back under the delayed round trip (with room for a
            # loaded CI machine's scheduling delays).
            await until(lambda: (a.t.round_trip_time(2) or 1) < 0.07, timeout=10, what="a fast ping answer")
        finally:
            await proxy.stop()
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_peer_restart_reconnects(loop_kind: str) -> None:
    async def scenario() -> None:
        a, b = await cluster(2)
        port = b.port
        try:
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=1)])
            await until(lambda: len(b.got) == 1)
            await b.t.stop()
            await until(lambda: a.unreachable == [2], what="unreachable report")
            # While the peer is down sends are dropped (Raft retransmits), reported once per outage.
            for _ in range(5):
                a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=2)])
                await asyncio.sleep(0.01)
            assert a.unreachable == [2]
            assert not a.t.is_active(2)

            b2 = await Node(2).start(port)
            b2.t.add_peer(1, [a.url])
            await until(lambda: a.t.is_active(2), timeout=5, what="reconnect")
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=3)])
            await until(lambda: len(b2.got) == 1)
            assert b2.got[0].term == 3
            await b2.t.stop()
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_proposals_dropped_unsent_are_handed_back(loop_kind: str) -> None:
    """A forwarded proposal the transport drops before writing it comes back to the sender (the
    leader never saw it); one written to the socket does not, even if the peer then goes away."""

    def prop(k: int) -> Message:
        return Message(MSG_PROP, to=2, frm=1, entries=[Entry(0, 0, 0, b"p%d" % k)])

    async def scenario() -> None:
        a = await Node(1, max_queued_messages=2).start()
        b = await Node(2).start()
        a.t.add_peer(2, [b.url])
        b.t.add_peer(1, [a.url])
        try:
            # Queue full: the third and fourth are dropped at once and handed back, heartbeats are not.
            a.t.send([prop(0), prop(1), prop(2), Message(MSG_HEARTBEAT, to=2, frm=1), prop(3)])
            assert [m.entries[0].data for m in a.handed_back] == [b"p2", b"p3"]
            await until(lambda: len(b.got) == 2, what="the queued two")
            assert [m.entries[0].data for m in b.got] == [b"p0", b"p1"]
            # Written ones are never handed back when the peer then goes away ...
            await b.t.stop()
            await until(lambda: not a.t.is_active(2), what="connection lost")
            assert len(a.handed_back) == 2
            # ... and while the peer is down, every proposal comes back.
            a.t.send([prop(4)])
            await until(lambda: len(a.handed_back) == 3, what="dropped while down")
            assert a.handed_back[-1].entries[0].data == b"p4"
            # Removing the peer hands back what was still queued for it.
            c = await Node(3).start()
            a.t.add_peer(3, [c.url])
            a.t.send([Message(MSG_PROP, to=3, frm=1, entries=[Entry(0, 0, 0, b"q")])])
            a.t.remove_peer(3)
            assert a.handed_back[-1].entries[0].data == b"q"
            await c.t.stop()
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_large_snapshot_streams_while_messages_flow(loop_kind: str) -> None:
    async def scenario() -> None:
        a, b = await cluster(2, snapshot_chunk_bytes=64 << 10)
        arrivals: list[str] = []
        got = b.t.on_message

        def record(m: Message) -> None:
            arrivals.append("snap" if m.type == MSG_SNAP else "hb")
            got(m)

        b.t.on_message = record
        try:
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])
            await until(lambda: len(b.got) == 1)
            data = random.Random(5).randbytes(48 << 20)
            snap = Message(
                MSG_SNAP, to=2, frm=1, term=3, snapshot=Snapshot(SnapshotMeta(5000, 3, [1, 2]), data)
            )
            a.t.send([snap])
            hb = 0
            while not a.snap_status:
                hb += 1
                a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=hb)])
                await asyncio.sleep(0.001)
            assert a.snap_status == [(2, True)]
            (got_snap,) = [m for m in b.got if m.type == MSG_SNAP]
            assert got_snap == snap
            # Heartbeats sent while the snapshot was on the wire arrived before it finished.
            assert arrivals.index("snap") > 1, arrivals[:5]
            await until(lambda: len(b.got) == hb + 2, what="every heartbeat")
            assert [m.term for m in b.got if m.type == MSG_HEARTBEAT][1:] == list(range(1, hb + 1))
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario, timeout=60)


def test_snapshot_to_down_peer_reports_failure(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1).start()
        a.t.add_peer(2, [f"http://127.0.0.1:{free_port()}"])
        try:
            snap = Message(MSG_SNAP, to=2, frm=1, snapshot=Snapshot(SnapshotMeta(9, 1, [1, 2]), b"x" * 1000))
            a.t.send([snap])
            await until(lambda: a.snap_status == [(2, False)], what="snapshot failure")
            assert 2 in a.unreachable
        finally:
            await a.t.stop()

    run(loop_kind, scenario)


def test_snapshot_refused_by_receiver_limit(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1).start()
        b = await Node(2, max_snapshot_bytes=1000).start()
        a.t.add_peer(2, [b.url])
        b.t.add_peer(1, [a.url])
        try:
            snap = Message(MSG_SNAP, to=2, frm=1, snapshot=Snapshot(SnapshotMeta(9, 1, [1, 2]), b"x" * 5000))
            a.t.send([snap])
            await until(lambda: a.snap_status == [(2, False)], what="snapshot failure")
            assert b.got == []
            # The message stream is unaffected.
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])
            await until(lambda: len(b.got) == 1)
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_cluster_id_mismatch_refused(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1, cluster_id=CLUSTER).start()
        b = await Node(2, cluster_id=CLUSTER + 1).start()
        a.t.add_peer(2, [b.url])
        b.t.add_peer(1, [a.url])
        try:
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])
            await until(lambda: a.rejected and b.rejected, what="both refused")
            assert a.rejected[0] == (2, 412, "cluster ID mismatch")
            assert b.rejected[0] == (1, 412, "cluster ID mismatch")
            await asyncio.sleep(0.1)
            assert a.got == [] and b.got == []
            assert not a.t.is_active(2)
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_removed_member_refused(loop_kind: str) -> None:
    async def scenario() -> None:
        a, b = await cluster(2)
        b.removed.add(1)
        try:
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])
            await until(lambda: bool(a.rejected), what="refusal")
            assert a.rejected[0] == (2, 410, "removed member")
            assert b.got == []
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_unknown_sender_retried_until_known(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1).start()
        b = await Node(2).start()
        a.t.add_peer(2, [b.url])
        try:
            await until(lambda: bool(a.rejected), what="404")
            assert a.rejected[0] == (2, 404, "error sender not found")
            b.t.add_peer(1, [a.url])  # b applies the conf change adding a
            await until(lambda: a.t.is_active(2), what="accepted after add_peer")
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])
            await until(lambda: len(b.got) == 1)
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_wrong_destination_refused(loop_kind: str) -> None:
    async def scenario() -> None:
        a, b = await cluster(2)
        a.t.add_peer(3, [b.url])  # b's URL, but 3's id
        try:
            await until(lambda: bool(a.rejected), what="412")
            assert a.rejected[0] == (3, 412, "to field mismatch")
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_update_and_remove_peer(loop_kind: str) -> None:
    async def scenario() -> None:
        a, b = await cluster(2)
        c = await Node(2).start()  # member 2 moved to a new address
        c.t.add_peer(1, [a.url])
        try:
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=1)])
            await until(lambda: len(b.got) == 1)
            a.t.update_peer(2, [c.url])
            await until(lambda: a.t.is_active(2) and a.t.active_since_ns(2) > 0 and len(c.got) == 0, what="x")
            await until(lambda: a.t.is_active(2), what="reconnect")

            async def delivered_to_c() -> None:
                for k in range(400):
                    a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=100 + k)])
                    await asyncio.sleep(0.005)
                    if c.got:
                        return
                raise AssertionError("never delivered to the new URL")

            await delivered_to_c()
            a.t.remove_peer(2)
            assert a.t.peers() == []
            before = len(c.got)
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])
            await asyncio.sleep(0.1)
            assert len(c.got) == before
            assert not a.t.is_active(2)
        finally:
            await stop_all([a, b, c])

    run(loop_kind, scenario)


def test_partition_detected_and_healed(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1, probe_interval_s=0.02, probe_timeout_s=0.3).start()
        b = await Node(2, probe_interval_s=0.02, probe_timeout_s=0.3).start()
        proxy = FaultProxy(b.port)
        proxy_port = await proxy.start()
        a.t.add_peer(2, [f"http://127.0.0.1:{proxy_port}"])
        b.t.add_peer(1, [a.url])
        try:
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=1)])
            await until(lambda: len(b.got) == 1)
            proxy.set_drop()
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=2)])
            # No pong for probe_timeout_s: the silent connection is closed and reported.
            await until(lambda: a.unreachable == [2], timeout=5, what="partition detected")
            assert [m.term for m in b.got] == [1]
            proxy.heal()
            await until(lambda: a.t.is_active(2), timeout=5, what="reconnect after heal")
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=3)])
            await until(lambda: b.got[-1].term == 3, what="delivery after heal")
        finally:
            await proxy.stop()
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_queue_bound_drops_and_reports(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1, max_queued_messages=10).start()
        b = await Node(2).start()
        a.t.add_peer(2, [b.url])
        b.t.add_peer(1, [a.url])
        try:
            # All 25 are queued in one loop turn, before the first dial can finish.
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=k) for k in range(25)])
            assert a.t.stats(2) == {"sent": 0, "dropped": 15, "queued": 10}
            assert a.unreachable == [2]
            await until(lambda: len(b.got) == 10)
            assert [m.term for m in b.got] == list(range(10))
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_pause_receiving_holds_messages_back(loop_kind: str) -> None:
    async def scenario() -> None:
        a, b = await cluster(2)
        try:
            a.t.send([Message(MSG_HEARTBEAT, to=2, frm=1, term=0)])
            await until(lambda: len(b.got) == 1)
            b.t.pause_receiving()
            a.t.send([app(1, 2, k) for k in range(100)])
            await asyncio.sleep(0.1)
            assert len(b.got) == 1
            b.t.resume_receiving()
            await until(lambda: len(b.got) == 101)
            assert a.unreachable == []
        finally:
            await stop_all([a, b])

    run(loop_kind, scenario)


def test_unknown_destination_and_self_are_ignored(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1).start()
        try:
            a.t.add_peer(1, [a.url])  # self: never a peer
            assert a.t.peers() == []
            a.t.send([Message(MSG_HEARTBEAT, to=9, frm=1)])
            await asyncio.sleep(0.02)
            assert a.unreachable == []
        finally:
            await a.t.stop()

    run(loop_kind, scenario)


def test_stop_leaves_no_tasks(loop_kind: str) -> None:
    async def scenario() -> None:
        nodes = await cluster(3)
        nodes[0].t.add_peer(9, [f"http://127.0.0.1:{free_port()}"])  # a peer in backoff
        nodes[0].t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])
        await until(lambda: len(nodes[1].got) == 1)
        mine = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith("Transport.")]
        assert len(mine) == 7  # one dialer per peer
        await stop_all(nodes)
        await asyncio.sleep(0.05)
        left = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith("Transport.")]
        assert left == []
        nodes[0].t.send([Message(MSG_HEARTBEAT, to=2, frm=1)])  # after stop: dropped, no error

    run(loop_kind, scenario)


def test_garbage_connection_is_closed(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            writer.write(b"GET /raft HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
            writer.close()
        finally:
            await a.t.stop()

    run(loop_kind, scenario)


def test_nothing_answered_before_the_handshake(loop_kind: str) -> None:
    async def scenario() -> None:
        a = await Node(1).start()
        a.t.add_peer(2, [f"http://127.0.0.1:{free_port()}"])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            writer.write(
                codec.encode_ping(codec.Ping(1)) + codec.encode_message(Message(MSG_HEARTBEAT, to=1, frm=2))
            )
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert a.got == []
            writer.close()
            # With a handshake the same bytes are answered (hello reply, then the pong).
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            writer.write(
                codec.encode_hello(codec.Hello(CLUSTER, 2, 1, codec.STREAM_MESSAGE))
                + codec.encode_ping(codec.Ping(1))
            )
            dec = codec.Decoder()
            frames: list[codec.Frame] = []
            while len(frames) < 2:
                frames += dec.feed(await asyncio.wait_for(reader.read(4096), 5))
            assert frames == [codec.HelloReply(200, "", 1), codec.Pong(1)]
            writer.close()
        finally:
            await a.t.stop()

    run(loop_kind, scenario)


def test_transport_constructor_defaults() -> None:
    async def scenario() -> None:
        t = Transport(1, CLUSTER, lambda m: None, asyncio.get_running_loop())
        port = await t.start("127.0.0.1", 0)
        assert port > 0
        await t.stop()

    run("asyncio", scenario)
