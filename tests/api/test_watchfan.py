"""The compiled watch fan-out against its pure-Python twin, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from fastkv._native import watchfan as native
from tests.twins import watchfan as twin

IMPLS = [pytest.param(native, id="native"), pytest.param(twin, id="twin")]
DATA = b"7c\r\n" + b'{"action":"set"}' * 7 + b"\r\n0\r\n\r\n"


class FakeTransport:
    """What send_all uses of an asyncio transport: the buffer size, closing, write."""

    def __init__(self, buffered: int = 0, closing: bool = False, broken: bool = False) -> None:
        self.buffered = buffered
        self.closing = closing
        self.broken = broken
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("handler is closed")
        self.written.append(data)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def _pair(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    pairs.append((a, b))
    return a, b


def _read(s: socket.socket) -> bytes:
    try:
        return s.recv(1 << 20)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("impl", IMPLS)
def test_direct_writes_reach_every_socket_once(impl: Any, pairs: list) -> None:
    socks = [_pair(pairs) for _ in range(5)]
    transports = [FakeTransport() for _ in socks]
    sinks = [impl.Sink(a.fileno(), t, i) for i, ((a, _), t) in enumerate(zip(socks, transports, strict=True))]
    assert impl.send_all(DATA, sinks) == 5
    assert [_read(b) for _, b in socks] == [DATA] * 5
    assert all(not s.live for s in sinks) and all(t.written == [] for t in transports)
    assert impl.send_all(DATA, sinks) == 0  # delivered at most once
    assert [_read(b) for _, b in socks] == [b""] * 5


@pytest.mark.parametrize("impl", IMPLS)
def test_buffered_transport_keeps_its_order(impl: Any, pairs: list) -> None:
    a, b = _pair(pairs)
    t = FakeTransport(buffered=10)
    sink = impl.Sink(a.fileno(), t, None)
    assert impl.send_all(DATA, [sink]) == 1
    assert _read(b) == b"" and t.written == [DATA] and not sink.live


@pytest.mark.parametrize("impl", IMPLS)
def test_closed_and_closing_sinks_are_skipped(impl: Any, pairs: list) -> None:
    a, b = _pair(pairs)
    c, d = _pair(pairs)
    closed = impl.Sink(a.fileno(), FakeTransport(), None)
    closed.close()
    closing_transport = FakeTransport(closing=True)
    closing = impl.Sink(c.fileno(), closing_transport, None)
    assert impl.send_all(DATA, [closed, closing]) == 0
    assert _read(b) == b"" and _read(d) == b""
    assert closing.live and closing_transport.written == []


@pytest.mark.parametrize("impl", IMPLS)
def test_what_a_full_socket_does_not_take_goes_to_the_transport(impl: Any, pairs: list) -> None:
    a, b = _pair(pairs)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    while True:  # fill the socket until it takes nothing more
        try:
            a.send(b"x" * 65536)
        except BlockingIOError:
            break
    t = FakeTransport()
    big = DATA * 2000
    assert impl.send_all(big, [impl.Sink(a.fileno(), t, None)]) == 1
    assert t.written and t.written[0] == big[len(big) - len(t.written[0]) :]


@pytest.mark.parametrize("impl", IMPLS)
def test_broken_connection_and_broken_transport(impl: Any, pairs: list) -> None:
    a, b = _pair(pairs)
    b.close()  # the peer is gone: the write fails with EPIPE, the transport gets the data to fail on
    c, d = _pair(pairs)
    gone = FakeTransport()
    raising = FakeTransport(buffered=1, broken=True)
    e, f = _pair(pairs)
    sinks = [impl.Sink(a.fileno(), gone, None), impl.Sink(c.fileno(), raising, None)]
    sinks.append(impl.Sink(e.fileno(), FakeTransport(), None))
    assert impl.send_all(DATA, sinks) == 3
    assert gone.written == [DATA]
    assert _read(d) == b"" and _read(f) == DATA


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_shares_cover_every_sink(threads: int, pairs: list) -> None:
    n = native.MIN_PER_THREAD * 3 + 7
    socks = [_pair(pairs) for _ in range(n)]
    buffered = {5, n // 2, n - 1}
    transports = [FakeTransport(buffered=1 if i in buffered else 0) for i in range(n)]
    sinks = [native.Sink(a.fileno(), transports[i], i) for i, (a, _) in enumerate(socks)]
    sinks[7].close()
    assert native.send_all(DATA, sinks, threads) == n - 1
    for i, (_, b) in enumerate(socks):
        direct = _read(b)
        if i == 7:
            assert direct == b"" and transports[i].written == []
        elif i in buffered:
            assert direct == b"" and transports[i].written == [DATA]
        else:
            assert direct == DATA and transports[i].written == []


def test_helpers_serve_fan_out_after_fan_out(pairs: list) -> None:
    n = native.MIN_PER_THREAD * 3
    socks = [_pair(pairs) for _ in range(n)]
    for round_ in range(30):
        threads = 1 + round_ % 3
        sinks = [native.Sink(a.fileno(), FakeTransport(), None) for a, _ in socks]
        assert native.send_all(DATA, sinks, threads) == n
        assert all(_read(b) == DATA for _, b in socks), round_
