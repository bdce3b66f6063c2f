"""The fault-injecting proxy: forwards both ways, then drops, delays, cuts, refuses and blackholes
on command; and a transport dialing a peer through it by the FASTKV_PEER_DIAL override."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

from fastkv.raft.messages import MSG_HEARTBEAT, Message
from fastkv.transport.faultproxy import FaultProxy, ThreadedFaultProxy
from fastkv.transport.transport import PEER_DIAL_ENV, parse_peer_dial
from tests.support.procs import free_port

from .harness import LOOPS, Node, run, stop_all, until


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def echo_server() -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", free_port())


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout)


def test_forward_drop_heal_cut_refuse(loop_kind: str) -> None:
    async def scenario() -> None:
        server = await echo_server()
        proxy = FaultProxy(port_of(server))
        port = await proxy.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            big = os.urandom(1 << 20)
            writer.write(big)  # flows both ways, with flow control, intact
            assert await read_exactly(reader, len(big), 10) == big
            assert proxy.connections == 1

            proxy.set_drop()
            writer.write(b"lost")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.2)
            proxy.heal()
            writer.write(b"back")
            assert await read_exactly(reader, 4) == b"back"

            proxy.set_drop(upstream=False, downstream=True)  # replies lost only
            writer.write(b"one-way")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.2)
            proxy.heal()

            proxy.cut()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await until_zero(proxy)

            proxy.set_refuse()
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(r2.read(), 5) == b""
            w2.close()
            proxy.heal()
            r3, w3 = await asyncio.open_connection("127.0.0.1", port)
            w3.write(b"ok")
            assert await read_exactly(r3, 2) == b"ok"
            w3.close()
            assert proxy.accepted == 3
        finally:
            await proxy.stop()
            server.close()
            await server.wait_closed()

    run(loop_kind, scenario)


async def until_zero(proxy: FaultProxy) -> None:
    for _ in range(500):
        if proxy.connections == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("connections stayed open")


def test_delay_keeps_order(loop_kind: str) -> None:
    async def scenario() -> None:
        server = await echo_server()
        proxy = FaultProxy(port_of(server))
        port = await proxy.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            proxy.set_delay(0.1)
            loop = asyncio.get_running_loop()
            start = loop.time()
            writer.write(b"a")
            await asyncio.sleep(0.01)
            proxy.set_delay(0.0)  # a shorter delay must not overtake the first chunk
            writer.write(b"b")
            assert await read_exactly(reader, 2) == b"ab"
            assert loop.time() - start >= 0.09  # libuv timers have millisecond resolution
            writer.close()
        finally:
            await proxy.stop()
            server.close()
            await server.wait_closed()

    run(loop_kind, scenario)


def test_target_down_closes_client(loop_kind: str) -> None:
    async def scenario() -> None:
        proxy = FaultProxy(free_port())
        port = await proxy.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        finally:
            await proxy.stop()

    run(loop_kind, scenario)


def test_threaded_proxy_from_sync_code() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen()
    with ThreadedFaultProxy(listener.getsockname()[1]) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        listener.settimeout(5)
        server_side, _ = listener.accept()
        server_side.settimeout(5)
        client.sendall(b"ping")
        assert server_side.recv(4) == b"ping"
        proxy.set_drop()
        client.sendall(b"lost")
        server_side.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server_side.recv(4)
        proxy.heal()
        proxy.cut()
        client.settimeout(5)
        try:
            assert client.recv(1) == b""
        except ConnectionResetError:
            pass
        deadline = time.monotonic() + 5
        while proxy.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.connections == 0
        client.close()
        server_side.close()
    listener.close()


def test_command_line() -> None:
    target = socket.socket()
    target.bind(("127.0.0.1", free_port()))
    target.listen()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastkv.transport.faultproxy", str(port), str(target.getsockname()[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().startswith(f"listening 127.0.0.1:{port}")
        for command, answer in [
            ("drop", "ok"),
            ("delay 0.1", "ok"),
            ("blackhole", "ok"),
            ("heal", "ok"),
            ("bogus", "unknown command: bogus"),
        ]:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == answer
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        target.settimeout(5)
        server_side, _ = target.accept()
        client.sendall(b"hi")
        server_side.settimeout(5)
        assert server_side.recv(2) == b"hi"
        client.close()
        server_side.close()
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        target.close()


async def counting_echo_server() -> tuple[asyncio.Server, list[int]]:
    """An echo server that counts the connections it accepted (in the returned list's one slot)."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", free_port()), accepted


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the proxy closed or reset the connection (EOF or reset), within 5 s."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


def test_blackhole_resets_open_swallows_new_and_heal_resets_swallowed(loop_kind: str) -> None:
    async def scenario() -> None:
        server, accepted = await counting_echo_server()
        proxy = FaultProxy(port_of(server))
        port = await proxy.start()
        try:
            r1, w1 = await asyncio.open_connection("127.0.0.1", port)
            w1.write(b"up")
            assert await read_exactly(r1, 2) == b"up"
            assert accepted[0] == 1

            proxy.set_blackhole()
            assert await closed_by_peer(r1)  # open connections are aborted at once
            w1.close()
            await until_zero(proxy)
            # A new connection is accepted (connect succeeds) but never reaches the target.
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(b"into the void")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r2.read(1), 0.3)
            assert proxy.blackholed == 1 and proxy.connections == 0
            assert accepted[0] == 1

            proxy.heal()  # the swallowed connection is reset, new ones forward again
            assert await closed_by_peer(r2)
            w2.close()
            r3, w3 = await asyncio.open_connection("127.0.0.1", port)
            w3.write(b"back")
            assert await read_exactly(r3, 4) == b"back"
            assert accepted[0] == 2 and proxy.blackholed == 0
            w3.close()
        finally:
            await proxy.stop()
            server.close()
            await server.wait_closed()

    run(loop_kind, scenario)


def test_parse_peer_dial() -> None:
    assert parse_peer_dial("") == {}
    assert parse_peer_dial("a1=http://127.0.0.1:1, ff=http://127.0.0.1:2") == {
        0xA1: "http://127.0.0.1:1",
        0xFF: "http://127.0.0.1:2",
    }
    with pytest.raises(ValueError, match=PEER_DIAL_ENV):
        parse_peer_dial("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        parse_peer_dial("zz=http://127.0.0.1:1")
    assert parse_peer_dial("a1=https://127.0.0.1:1") == {0xA1: "https://127.0.0.1:1"}


def test_dial_override_partitions_one_direction(loop_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Member 1 dials member 2 through a proxy named by FASTKV_PEER_DIAL; 2 dials 1 directly.
    Blackholing the proxy cuts 1 -> 2 only, and healing it restores the traffic."""

    def beat(frm: int, to: int, commit: int) -> Message:
        return Message(MSG_HEARTBEAT, to=to, frm=frm, term=3, commit=commit)

    async def scenario() -> None:
        b = await Node(2).start()
        proxy = FaultProxy(b.port)
        proxy_port = await proxy.start()
        monkeypatch.setenv(PEER_DIAL_ENV, f"2=http://127.0.0.1:{proxy_port}")
        a = await Node(1, probe_interval_s=0.1, probe_timeout_s=0.5, dial_timeout_s=0.3).start()
        monkeypatch.delenv(PEER_DIAL_ENV)
        a.t.add_peer(2, [b.url])  # the advertised URL, bypassed by the override
        b.t.add_peer(1, [a.url])
        try:
            a.t.send([beat(1, 2, 1)])
            await until(lambda: len(b.got) == 1, what="1 -> 2 through the proxy")
            assert proxy.accepted == 1

            proxy.set_blackhole()
            await until(lambda: 2 in a.unreachable, what="2 reported unreachable")
            for i in range(2, 6):
                a.t.send([beat(1, 2, i)])
                b.t.send([beat(2, 1, i)])
                await asyncio.sleep(0.05)
            await until(lambda: len(a.got) == 4, what="2 -> 1 still flowing")
            assert len(b.got) == 1

            proxy.heal()
            await until(lambda: a.t.is_active(2), timeout=10, what="1 redialed 2")
            a.t.send([beat(1, 2, 9)])
            await until(lambda: b.got[-1].commit == 9, what="1 -> 2 healed")
            assert proxy.accepted >= 2
        finally:
            await stop_all([a, b])
            await proxy.stop()

    run(loop_kind, scenario)
