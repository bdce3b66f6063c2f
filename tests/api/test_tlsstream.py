"""api/tlsstream.py: the https client listener's transport, on uvloop and stock asyncio: bytes
arrive whole and in order whatever the socket's pace, closes are clean, refused and stalled
handshakes are logged and dropped."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fastkv.api.tlsstream import TLSListener, TLSStream
from fastkv.tls import ServerTLS, client_context
from tests.tls.harness import LOOPS, PKI, run


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI.create(tmp_path / "pki")


class Recorder(asyncio.Protocol):
    """Keeps what arrives; answers b"ping" with b"pong", b"big <n>" with n bytes, b"bye" by closing."""

    instances: list[Recorder] = []

    def __init__(self) -> None:
        self.transport: Any = None
        self.received = bytearray()
        self.total = 0
        self.reads = 0
        self.eof = False
        self.lost: list[Exception | None] = []
        self.paused_writing = 0
        self.resumed_writing = 0
        Recorder.instances.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        self.reads += 1
        self.received += data
        while b"\n" in self.received:
            line, _, rest = bytes(self.received).partition(b"\n")
            self.received = bytearray(rest)
            if line == b"ping":
                self.transport.write(b"pong\n")
            elif line.startswith(b"big "):
                size = int(line[4:])
                payload = os.urandom(size)
                # In pieces, so some wait behind a write OpenSSL has to retry.
                for i in range(0, size, 100_000):
                    self.transport.write(payload[i : i + 100_000])
                self.transport.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
            elif line == b"bye":
                self.transport.write(b"bye\n")
                self.transport.close()

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused_writing += 1

    def resume_writing(self) -> None:
        self.resumed_writing += 1


@contextlib.asynccontextmanager
async def _serving(pki: PKI, timeout_s: float = 60.0) -> AsyncIterator[TLSListener]:
    Recorder.instances = []
    st = ServerTLS(pki.server_info())
    listener = TLSListener.listen(asyncio.get_running_loop(), st, Recorder, "127.0.0.1", 0)
    listener.handshake_timeout_s = timeout_s
    try:
        yield listener
    finally:
        listener.close()
        await listener.wait_closed()


async def _connect(port: int, pki: PKI) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki.client_info())), 5
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_and_answers(loop: str, pki: PKI) -> None:
    async def scenario() -> None:
        async with _serving(pki) as listener:
            reader, writer = await _connect(listener.port(), pki)
            for _ in range(50):
                writer.write(b"ping\n")
            await writer.drain()
            for _ in range(50):
                assert await asyncio.wait_for(reader.readline(), 5) == b"pong\n"
            (proto,) = Recorder.instances
            stream = proto.transport
            assert isinstance(stream, TLSStream)
            assert stream.get_extra_info("peername")[0] == "127.0.0.1"
            assert isinstance(stream.get_extra_info("ssl_object"), ssl.SSLSocket)
            assert not stream.can_write_eof()
            # The client's close: EOF, then the stream closes and the protocol hears it once.
            writer.close()
            while not proto.lost:
                await asyncio.sleep(0.01)
            assert proto.eof and proto.lost == [None] and stream.is_closing()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_large_answers_to_a_slow_reader_arrive_whole(loop: str, pki: PKI) -> None:
    size = 8 * 1024 * 1024

    async def scenario() -> None:
        async with _serving(pki) as listener:
            reader, writer = await _connect(listener.port(), pki)
            writer.write(b"big %d\nping\n" % size)
            await writer.drain()
            (proto,) = Recorder.instances
            # Nothing is read for a while: the socket fills and OpenSSL's writes must be retried.
            while proto.transport.get_write_buffer_size() == 0:
                await asyncio.sleep(0.01)
            assert proto.paused_writing == 1
            got = await asyncio.wait_for(reader.readexactly(size), 20)
            digest = await asyncio.wait_for(reader.readline(), 5)
            assert digest == hashlib.sha256(got).hexdigest().encode() + b"\n"
            assert await asyncio.wait_for(reader.readline(), 5) == b"pong\n"
            assert proto.transport.get_write_buffer_size() == 0
            assert proto.resumed_writing == 1
            # The server's close after its last answer: the client reads everything, then EOF.
            writer.write(b"bye\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"bye\n"
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    run(loop, scenario, timeout=60)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_large_upload_arrives_whole(loop: str, pki: PKI) -> None:
    size = 3 * 1024 * 1024 + 7

    async def scenario() -> None:
        async with _serving(pki) as listener:
            reader, writer = await _connect(listener.port(), pki)
            writer.write(b"a" * size + b"\nping\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readline(), 10) == b"pong\n"
            (proto,) = Recorder.instances
            assert proto.total == size + 6
            # Whole records are read on until the socket runs dry, a bounded amount at a time.
            assert size // (256 * 1024) <= proto.reads < size // 16384
            writer.close()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_paused_reading_delivers_nothing_until_resumed(loop: str, pki: PKI) -> None:
    async def scenario() -> None:
        async with _serving(pki) as listener:
            reader, writer = await _connect(listener.port(), pki)
            writer.write(b"ping\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"pong\n"
            (proto,) = Recorder.instances
            proto.transport.pause_reading()
            assert not proto.transport.is_reading()
            writer.write(b"ping\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            assert proto.received == b""
            proto.transport.resume_reading()
            assert await asyncio.wait_for(reader.readline(), 5) == b"pong\n"
            writer.close()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_refused_and_stalled_handshakes_are_logged_and_dropped(
    loop: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastkv.api")

    def rejected() -> list[str]:
        return [
            str(getattr(r, "fields", {}).get("error"))
            for r in caplog.records
            if r.getMessage() == "rejected connection"
        ]

    async def scenario() -> None:
        async with _serving(pki, timeout_s=0.5) as listener:
            port = listener.port()
            # A client that does not trust the server's CA.
            untrusting = ssl.create_default_context(cafile=str(pki.other_ca.ca_file))
            with pytest.raises(ssl.SSLError):
                await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=untrusting), 5)
            # Plain HTTP on the https port: closed without an answer, as etcd does.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v2/keys HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # A client that connects and says nothing: dropped at the timeout.
            silent = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                while len(rejected()) < 3:
                    await asyncio.sleep(0.02)
                assert await asyncio.to_thread(silent.recv, 10) == b""
            finally:
                silent.close()
            assert not listener.handshakes
            # Still serving.
            reader, writer = await _connect(port, pki)
            writer.write(b"ping\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"pong\n"
            writer.close()

    run(loop, scenario)
    reasons = rejected()
    assert any(r == "TLS handshake timed out" for r in reasons), reasons
    assert len(reasons) == 3, reasons


@pytest.mark.parametrize("loop", LOOPS)
def test_close_drops_the_handshakes_under_way(loop: str, pki: PKI) -> None:
    async def scenario() -> None:
        async with _serving(pki) as listener:
            port = listener.port()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
                while not listener.handshakes:
                    await asyncio.sleep(0.01)
                listener.close()
                await listener.wait_closed()
                assert not listener.is_serving()
                assert await asyncio.to_thread(silent.recv, 10) == b""
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port), timeout=5)

    run(loop, scenario)
