"""The batched watch fan-out on a real member over loopback TCP: what each client reads."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.procs import ServerProcess, start_server

pytestmark = pytest.mark.timeout(120)
CHUNK_END = b"0\r\n\r\n"


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server("fastkv", data_dir=str(tmp_path_factory.mktemp("fanout")))
    yield srv
    srv.stop()


def _connect(member: ServerProcess) -> socket.socket:
    host, port = member.url.rsplit("//", 1)[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_until(s: socket.socket, done, timeout: float = 20.0) -> bytes:
    """Read until ``done(buffer)`` holds; fails at the deadline."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not done(buf):
        assert time.monotonic() < deadline, f"timed out with {buf!r}"
        s.settimeout(max(0.01, deadline - time.monotonic()))
        data = s.recv(65536)
        assert data, f"closed with {buf!r}"
        buf += data
    return buf


def _put(member: ServerProcess, key: str, value: str) -> None:
    body = f"value={value}".encode()
    with _connect(member) as w:
        w.sendall(
            f"PUT /v2/keys/{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answer = _read_until(w, lambda b: b"\r\n\r\n" in b and b.endswith(b"}\n"))
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201"))


def _wait_watch(s: socket.socket, key: str, extra: bytes = b"") -> None:
    s.sendall(f"GET /v2/keys/{key}?wait=true HTTP/1.1\r\nHost: x\r\n\r\n".encode() + extra)


def _event(raw: bytes) -> tuple[dict, bytes]:
    """The event of a one-shot chunked watch answer at the start of ``raw``, and what follows it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
    size, _, rest = body.partition(b"\r\n")
    n = int(size, 16)
    assert rest[n : n + 2 + len(CHUNK_END)] == b"\r\n" + CHUNK_END
    return json.loads(rest[:n]), rest[n + 2 + len(CHUNK_END) :]


def test_many_watchers_each_get_the_event_once_and_keep_their_connection(member: ServerProcess) -> None:
    socks = [_connect(member) for _ in range(600)]  # enough for the threaded pass
    try:
        for round_ in range(2):
            for s in socks:
                _wait_watch(s, "fan/k")
            for s in socks:  # registered: the head is sent at registration
                _read_until(s, lambda b: b"\r\n\r\n" in b)
            _put(member, "fan/k", f"v{round_}")
            bodies = set()
            for s in socks:
                raw = _read_until(s, lambda b: b.endswith(CHUNK_END))
                bodies.add(raw)
                assert raw.count(CHUNK_END) == 1
            assert len(bodies) == 1  # the same bytes to everyone
            # The head was read already: what is left is the event's chunk and the last chunk.
            (chunk,) = bodies
            size, _, rest = chunk.partition(b"\r\n")
            event = json.loads(rest[: int(size, 16)])
            assert event["action"] == "set" and event["node"]["value"] == f"v{round_}"
    finally:
        for s in socks:
            s.close()


def _answer_complete(b: bytes) -> bool:
    """A Content-Length framed answer is complete at the start of ``b``."""
    head, sep, body = b.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length")
    )
    return len(body) >= length


def test_a_pipelined_request_is_answered_after_the_event(member: ServerProcess) -> None:
    _put(member, "pipe/other", "o")
    with _connect(member) as s:
        _wait_watch(s, "pipe/k", b"GET /v2/keys/pipe/other HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_until(s, lambda b: b"\r\n\r\n" in b)
        _put(member, "pipe/k", "1")
        raw = head + _read_until(
            s, lambda b: CHUNK_END in b and _answer_complete((head + b).split(CHUNK_END, 1)[1])
        )
    event, rest = _event(raw)
    assert event["node"]["key"] == "/pipe/k" and event["node"]["value"] == "1"
    assert rest.startswith(b"HTTP/1.1 200") and b'"key":"/pipe/other","value":"o"' in rest


def test_a_watcher_gone_before_the_write_does_not_stop_the_others(member: ServerProcess) -> None:
    socks = [_connect(member) for _ in range(300)]
    try:
        for s in socks:
            _wait_watch(s, "gone/k")
        for s in socks:
            _read_until(s, lambda b: b"\r\n\r\n" in b)
        for s in socks[::3]:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # a reset: the server may still hold the watcher when the write comes
        _put(member, "gone/k", "x")
        for i, s in enumerate(socks):
            if i % 3:
                assert _read_until(s, lambda b: b.endswith(CHUNK_END)).count(CHUNK_END) == 1
    finally:
        for s in socks:
            s.close()
