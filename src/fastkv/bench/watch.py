"""Watch fan-out driver: N long-polling watchers on one key, one write, time until the last one has it.

One round: every watcher connection sends ``GET /v2/keys/bench/watch?wait=true``; both fastkv and etcd
answer the headers of a wait request as soon as the watcher is registered, so the driver waits until
all N have their headers.  Then it takes t0, sends one PUT of the key on its own connection, and
reads until every watcher has the complete event (the chunked body's terminator).  Reported per
round: ``fanout_ms`` = last watcher's event - t0 (the figure), ``first_ms``, ``median_ms``, ``ack_ms``
(the PUT's answer) and ``driver_busy_ms``: the driver's own time between epoll wake-ups and its
next epoll wait while the event was being delivered.  Connections are kept alive across rounds.

The driver is a plain epoll loop over non-blocking sockets, not asyncio: there is no protocol object,
future or callback per watcher.  Phase 2 (the delivery, on the clock) runs in
``fastkv._native.benchwatch.collect``: one ``recv`` and a 5-byte tail comparison per ready socket and no
Python object per watcher, about 1 µs per watcher with the recv; ``collect`` below is its Python twin
(about 4 µs per watcher), which measures the same thing.  ``driver_busy_ms`` measures the driver's time
every round.  It runs in its own process, beside the server's.  With ``server_pid``, ``server_cpu_ms``
is the server's CPU time (all threads) over the same window.  ``watch-recursive-*`` rounds watch
``/bench/watchdir`` with ``recursive=true`` and write ``/bench/watchdir/sub/key``.
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from fastkv._native import benchwatch

KEY = "/v2/keys/bench/watch"
# Recursive rounds: the watchers wait on DIR, the write goes to a key below it.
DIR = "/v2/keys/bench/watchdir"
DIR_KEY = DIR + "/sub/key"
HEAD_END = b"\r\n\r\n"
CHUNKED_END = b"0\r\n\r\n"


class WatchDriver:
    def __init__(
        self,
        url: str,
        watchers: int,
        value_bytes: int = 100,
        timeout_s: float = 30.0,
        server_pid: int | None = None,
        recursive: bool = False,
        native: bool = True,
    ) -> None:
        u = urlsplit(url)
        self.addr = (u.hostname or "127.0.0.1", u.port or 80)
        self.n = watchers
        self.timeout_s = timeout_s
        host = f"{self.addr[0]}:{self.addr[1]}"
        watched, written = (
            (DIR + "?wait=true&recursive=true", DIR_KEY) if recursive else (KEY + "?wait=true", KEY)
        )
        self.watch_req = f"GET {watched} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        body = b"value=" + b"w" * value_bytes
        self.put_req = (
            f"PUT {written} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.socks: list[socket.socket | None] = [None] * watchers
        self.fd_index: dict[int, int] = {}
        self.ep = select.epoll()
        self.writer: socket.socket | None = None
        self.server_pid = server_pid
        # Phase 2's receiving loop: the compiled one, or its Python twin (``collect``, below).
        self.collect = benchwatch.collect if native else collect

    def _connect(self, i: int) -> None:
        s = socket.create_connection(self.addr, timeout=self.timeout_s)
        s.setblocking(False)
        self.socks[i] = s
        self.fd_index[s.fileno()] = i
        self.ep.register(s.fileno(), select.EPOLLIN)

    def _sock(self, i: int) -> socket.socket:
        s = self.socks[i]
        if s is None:
            raise ConnectionError(f"watcher {i} is not connected")
        return s

    def _drop(self, i: int, registered: bool = True) -> None:
        s = self.socks[i]
        if s is not None:
            self.fd_index.pop(s.fileno(), None)
            if registered:
                self.ep.unregister(s.fileno())
            s.close()
            self.socks[i] = None

    def open(self) -> float:
        """Connect every watcher (and the writer); seconds taken."""
        t0 = time.perf_counter()
        for i in range(self.n):
            self._connect(i)
        self.writer = socket.create_connection(self.addr, timeout=self.timeout_s)
        self.writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return time.perf_counter() - t0

    def close(self) -> None:
        for i in range(self.n):
            self._drop(i)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.ep.close()

    def __enter__(self) -> WatchDriver:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _answer_status(buf: bytes) -> int:
        """The status of a complete Content-Length framed answer in ``buf``, 0 while incomplete."""
        p = buf.find(HEAD_END)
        if p < 0:
            return 0
        length = 0
        for line in buf[:p].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(buf) - p - 4 < length:
            return 0
        return int(buf.split(b" ", 2)[1])

    def round(self) -> dict[str, float]:
        """One write delivered to all watchers; timings in ms."""
        n = self.n
        bufs = [b""] * n
        for i in range(n):
            if self.socks[i] is None:
                self._connect(i)
        for s in self.socks:
            assert s is not None
            s.send(self.watch_req)
        # Phase 1: every watcher registered (its headers arrived).
        waiting = n
        body_start = [0] * n
        deadline = time.monotonic() + self.timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{waiting} of {n} watchers not registered within {self.timeout_s} s")
            for fd, _ in self.ep.poll(1.0):
                i = self.fd_index[fd]
                data = self._sock(i).recv(65536)
                if not data:
                    raise ConnectionError(f"watcher {i} closed before registering")
                b = bufs[i] + data
                bufs[i] = b
                if not body_start[i]:
                    p = b.find(HEAD_END)
                    if p >= 0:
                        body_start[i] = p + 4
                        waiting -= 1
        # Phase 2: the write, then every watcher's event.
        assert self.writer is not None
        wfd = self.writer.fileno()
        received = [b""]  # what the write's connection received
        status = [0]  # the answer's status once it is complete

        def on_writer(data: bytes) -> float:
            received[0] += data
            status[0] = self._answer_status(received[0])
            return time.perf_counter() if status[0] else 0.0

        fds = [self._sock(i).fileno() for i in range(n)]
        self.writer.setblocking(False)
        self.ep.register(wfd, select.EPOLLIN)
        cpu0 = server_cpu_ns(self.server_pid) if self.server_pid else 0
        t0 = time.perf_counter()
        self.writer.send(self.put_req)
        try:
            done_at, closed, busy, wakeups, t_ack = self.collect(
                self.ep.fileno(), fds, bufs, wfd, on_writer, self.timeout_s
            )
        finally:
            cpu1 = server_cpu_ns(self.server_pid) if self.server_pid else 0
            self.ep.unregister(wfd)
            self.writer.setblocking(True)
        for i in closed:
            self._drop(i, registered=False)  # closed after its event; reconnected next round
        if status[0] not in (200, 201):
            raise RuntimeError(f"the watched write was answered {status[0]}")
        lat = sorted((t - t0) * 1000 for t in done_at)
        extra = {"server_cpu_ms": (cpu1 - cpu0) / 1e6} if self.server_pid else {}
        return {
            "fanout_ms": lat[-1],
            "first_ms": lat[0],
            "median_ms": statistics.median(lat),
            "ack_ms": (t_ack - t0) * 1000,
            "driver_busy_ms": busy * 1000,
            "epoll_wakeups": float(wakeups),
            **extra,
        }


def collect(
    epfd: int,
    watcher_fds: list[int],
    tails: list[bytes],
    writer_fd: int,
    on_writer: Callable[[bytes], float],
    timeout_s: float,
) -> tuple[list[float], list[int], float, int, float]:
    """Phase 2's receiving loop in Python, the twin of ``fastkv._native.benchwatch.collect`` (same
    arguments, same results; see there).  About 4 µs per watcher against about 1 µs compiled."""
    n = len(watcher_fds)
    index_of = {fd: i for i, fd in enumerate(watcher_fds)}
    ep = select.epoll.fromfd(os.dup(epfd))  # the same epoll set; this copy of the fd is closed below
    socks = [socket.socket(fileno=fd) for fd in watcher_fds]
    writer = socket.socket(fileno=writer_fd)
    try:
        tail = [t[-len(CHUNKED_END) :] for t in tails]
        state = [0] * n
        done_at = [0.0] * n
        closed: list[int] = []
        remaining, busy, wakeups, t_ack = n, 0.0, 0, 0.0
        deadline = time.perf_counter() + timeout_s
        while remaining or not t_ack:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{remaining} of {n} watchers got no event within {timeout_s} s")
            events = ep.poll(1.0)
            woke = time.perf_counter()
            wakeups += 1
            for fd, _ in events:
                if fd == writer_fd:
                    try:
                        data = writer.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        raise ConnectionError("the writer's connection closed")
                    t_ack = on_writer(data)
                    continue
                i = index_of[fd]
                try:
                    data = socks[i].recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    ep.unregister(fd)
                    closed.append(i)
                    if state[i] != 2:
                        raise ConnectionError(f"watcher {i} closed without an event")
                    continue
                if state[i] == 2:
                    continue
                state[i] = 1
                t = (tail[i] + data)[-len(CHUNKED_END) :]
                tail[i] = t
                if t == CHUNKED_END:
                    done_at[i] = time.perf_counter()
                    state[i] = 2
                    remaining -= 1
            busy += time.perf_counter() - woke
        return done_at, closed, busy, wakeups, t_ack
    finally:
        for s in [*socks, writer]:
            s.detach()  # the fds stay the caller's
        ep.close()


def server_cpu_ns(pid: int) -> int:
    """CPU time the process ``pid`` has had so far, all its threads, in ns (the scheduler's own
    count, /proc/<pid>/task/*/schedstat, not the 10 ms ticks of /proc/<pid>/stat)."""
    total = 0
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat", "rb") as f:
                total += int(f.read().split(None, 1)[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def run(
    url: str,
    watchers: int,
    rounds: int,
    value_bytes: int = 100,
    recursive: bool = False,
    server_pid: int | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """``rounds`` rounds with ``watchers`` watchers after one warm-up round: the medians over the
    rounds (plus ``fanout_max_ms``) and the per-round figures.  ``recursive``: the watchers wait on
    a directory recursively and the write is to a key two levels below it.  ``server_pid``: also
    report the server's CPU time during each delivery (``server_cpu_ms``)."""
    with WatchDriver(url, watchers, value_bytes, server_pid=server_pid, recursive=recursive) as d:
        d.round()  # warm-up: connections accepted, server paths exercised
        per_round = [d.round() for _ in range(rounds)]
    medians = {k: statistics.median(r[k] for r in per_round) for k in per_round[0] if k != "epoll_wakeups"}
    medians["fanout_max_ms"] = max(r["fanout_ms"] for r in per_round)
    return medians, per_round
