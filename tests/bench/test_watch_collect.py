"""The watch driver's compiled receiving loop against its Python twin, over socket pairs."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fastkv._native import benchwatch
from fastkv.bench import watch

IMPLS = [pytest.param(benchwatch.collect, id="native"), pytest.param(watch.collect, id="twin")]
HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'1c\r\n{"action":"set","node":{}}\n\r\n0\r\n\r\n'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


class Rig:
    """n watcher connections and a writer connection in one epoll set; the far ends to write to."""

    def __init__(self, n: int) -> None:
        self.ep = select.epoll()
        self.near: list[socket.socket] = []
        self.far: list[socket.socket] = []
        for _ in range(n + 1):
            a, b = socket.socketpair()
            a.setblocking(False)
            self.ep.register(a.fileno(), select.EPOLLIN)
            self.near.append(a)
            self.far.append(b)
        self.acks: list[bytes] = []

    def on_writer(self, data: bytes) -> float:
        self.acks.append(data)
        return time.perf_counter() if b"".join(self.acks).endswith(b"{}") else 0.0

    def run(self, impl: Any, timeout_s: float = 10.0) -> tuple[list[float], list[int], float, int, float]:
        fds = [s.fileno() for s in self.near[1:]]
        return impl(
            self.ep.fileno(), fds, [HEAD] * len(fds), self.near[0].fileno(), self.on_writer, timeout_s
        )

    def close(self) -> None:
        for s in self.near + self.far:
            s.close()
        self.ep.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig(6)
    yield r
    r.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("impl", IMPLS)
def test_every_event_in_pieces(impl: Any, rig: Rig) -> None:
    cuts = [1, 5, len(EVENT) - 3, len(EVENT) - 1, len(EVENT) - 5, len(EVENT)]

    def serve() -> None:
        rig.far[0].send(ANSWER[:10])
        for i, cut in enumerate(cuts):
            rig.far[i + 1].send(EVENT[:cut])
        rig.far[0].send(ANSWER[10:])
        for i, cut in enumerate(cuts):
            if cut < len(EVENT):
                rig.far[i + 1].send(EVENT[cut:])

    t0 = time.perf_counter()
    th = threading.Thread(target=serve)
    th.start()
    done_at, closed, busy, wakeups, t_ack = rig.run(impl)
    th.join()
    assert closed == [] and wakeups >= 1 and busy >= 0
    assert all(t > t0 for t in done_at) and t_ack > t0
    assert b"".join(rig.acks) == ANSWER


@pytest.mark.timeout(30)
@pytest.mark.parametrize("impl", IMPLS)
def test_a_trailing_zero_chunk_inside_the_data_is_not_the_end(impl: Any, rig: Rig) -> None:
    # A watcher is done only when its stream ends with the last chunk; until then the loop waits.
    for i in range(1, 7):
        rig.far[i].send(EVENT)
    rig.far[1].send(b"0\r\n\r\n")  # more after its event: ignored
    rig.far[0].send(ANSWER)
    done_at, closed, *_ = rig.run(impl)
    assert all(t > 0 for t in done_at) and closed == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("impl", IMPLS)
def test_closed_after_the_event_is_listed_and_unregistered(impl: Any, rig: Rig) -> None:
    for i in range(1, 7):
        rig.far[i].send(EVENT)
    rig.far[3].close()  # its event, then its end, both readable before the loop starts
    rig.far[0].send(ANSWER)
    done_at, closed, *_ = rig.run(impl)
    assert all(t > 0 for t in done_at)
    # The end is read only if the loop was still waiting for others when it got there.
    assert closed in ([], [2])
    if closed:
        with pytest.raises(FileNotFoundError):
            rig.ep.unregister(rig.near[3].fileno())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("impl", IMPLS)
def test_closed_without_an_event_is_an_error(impl: Any, rig: Rig) -> None:
    rig.far[0].send(ANSWER)
    for i in range(1, 6):
        rig.far[i].send(EVENT)
    rig.far[6].send(EVENT[:4])
    rig.far[6].close()
    with pytest.raises(ConnectionError, match="watcher 5 closed without an event"):
        rig.run(impl)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("impl", IMPLS)
def test_a_missing_event_times_out(impl: Any, rig: Rig) -> None:
    rig.far[0].send(ANSWER)
    for i in range(1, 6):
        rig.far[i].send(EVENT)
    with pytest.raises(TimeoutError, match="1 of 6 watchers got no event"):
        rig.run(impl, timeout_s=0.2)
