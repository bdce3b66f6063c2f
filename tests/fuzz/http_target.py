"""Target ``http``: arbitrary bytes on a client connection, through the real ClientProtocol.

The input's first byte seeds how the rest is cut into reads; the rest is what the client sends.  The
ClientProtocol runs on a real asyncio loop over a fake transport and a FakeServer (tests/api/fake.py), and
every input is fed three times: whole, byte by byte (or in small reads when long) and in random reads.

Invariants:
- nothing escapes ClientProtocol's callbacks or the loop's callbacks;
- no request reaches the catch-all ``500 Internal Server Error`` (an exception inside a handler);
- every answer has a status etcd gives (see ``STATUSES``);
- no hang: after the client's EOF and with no work left on the loop, the connection is closed (or
  half-closed to linger) and, after connection_lost, no watcher is left registered; reading is left
  paused only behind a watch that holds the connection; the loop never stays busy for more than
  ``MAX_LOOP_TURNS`` turns;
- how the bytes are cut into reads changes nothing: the bytes written (Date aside), whether the server
  closed before the client's EOF and the requests proposed are the same for the three feeds (three
  differences found this way and not fixed yet are named in ``_known_difference``).
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from fastkv.api import debugvars
from fastkv.api.protocol import ClientProtocol
from fastkv.server import metrics
from fastkv.server.admin import MemberNotFound
from tests.api.fake import FakeServer

# Statuses fastkv may answer on the client port (etcd's set for these endpoints; 501 is Go's answer to a
# Transfer-Encoding it does not support).
STATUSES = frozenset({200, 201, 204, 301, 400, 403, 404, 405, 409, 412, 414, 415, 431, 500, 501, 503})
MAX_LOOP_TURNS = 10_000
# /debug/vars reports this process's memory, which changes between two runs of the same input: the
# harness serves one snapshot of it.
_MEMSTATS_SNAPSHOT = debugvars._memstats()
debugvars._memstats = lambda: _MEMSTATS_SNAPSHOT
BYTE_BY_BYTE_LIMIT = 600
_DATE = re.compile(rb"\r\nDate: [^\r\n]*\r\n")
_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")
_CATCH_ALL = b"\r\n\r\nInternal Server Error\n"


class FuzzFailure(AssertionError):
    pass


class FuzzServer(FakeServer):
    """FakeServer with the member calls a fuzzed request can reach answered like a real member."""

    def update_member(self, member_id: int, peer_urls: list[str]) -> asyncio.Future[Any]:
        for m in self.member_list:
            if m.id == member_id:
                m.peer_urls = peer_urls
                return self._future()
        raise MemberNotFound(member_id)

    def remove_member(self, member_id: int) -> asyncio.Future[Any]:
        for m in self.member_list:
            if m.id == member_id:
                self.member_list.remove(m)
                return self._future()
        raise MemberNotFound(member_id)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.eof_written = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise FuzzFailure("write after close")
        if self.eof_written:
            raise FuzzFailure("write after write_eof")
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        if self.paused:
            raise FuzzFailure("pause_reading twice")
        self.paused = True

    def resume_reading(self) -> None:
        if not self.paused:
            raise FuzzFailure("resume_reading while not paused")
        self.paused = False

    def is_reading(self) -> bool:
        return not self.paused

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def _settle(loop: asyncio.AbstractEventLoop) -> None:
    """Run the loop until no callback is ready (timers aside: only the linger close uses one)."""
    ready = loop._ready  # type: ignore[attr-defined]
    for _ in range(MAX_LOOP_TURNS):
        if not ready:
            return
        await asyncio.sleep(0)
    raise FuzzFailure(f"loop still busy after {MAX_LOOP_TURNS} turns")


def _fed_out(transport: FakeTransport) -> bool:
    return transport.closed or transport.eof_written


# (bytes written with Date blanked, "closed"/"open" before the client's EOF, requests proposed)
Outcome = tuple[bytes, str, list[tuple[Any, ...]]]


def _holding(out: bytes, server: FuzzServer) -> bool:
    """A watch legitimately holds the connection (and the requests pipelined behind it): a watcher is
    registered, or a stream served from history keeps its chunked answer open."""
    if server.store.watchers:
        return True
    head = out.rfind(b"HTTP/1.1 200 OK\r\n")
    return head >= 0 and b"Transfer-Encoding: chunked\r\n" in out[head:] and not out.endswith(b"0\r\n\r\n")


async def _drive(reads: list[bytes]) -> Outcome:
    loop = asyncio.get_running_loop()
    server = FuzzServer()
    proto = ClientProtocol(server)
    transport = FakeTransport()
    proto.connection_made(transport)
    held = False
    for data in reads:
        if transport.closed:
            break
        if transport.paused:
            # A real transport delivers nothing (data nor EOF) while reading is paused.
            await _settle(loop)
            if transport.paused and not transport.closed:
                if not _holding(bytes(transport.out), server):
                    raise FuzzFailure("reading paused with nothing in flight")
                held = True
                break
            if transport.closed:
                break
        proto.data_received(data)
        await _settle(loop)
    # A held watch and a connection left open both mean: the server did not close before the client's
    # EOF.  How many pipelined requests were read before reading paused depends on the reads.
    if held:
        state = "open"
    else:
        state = "closed" if _fed_out(transport) else "open"
        if not transport.closed:
            if transport.paused:
                if not _holding(bytes(transport.out), server):
                    raise FuzzFailure("reading paused with nothing in flight")
            else:
                if not proto.eof_received():
                    transport.close()
                await _settle(loop)
                if not _fed_out(transport):
                    raise FuzzFailure("connection still open after the client's EOF with nothing left to do")
    proto.connection_lost(None)
    await _settle(loop)
    if server.store.watchers:
        raise FuzzFailure("a watcher is left registered after connection_lost")
    proposals = [tuple(getattr(p, name) for name in type(p).__slots__) for p in server.proposals]
    return _DATE.sub(b"\r\nDate: -\r\n", bytes(transport.out)), state, proposals


_loop: asyncio.AbstractEventLoop | None = None
_loop_errors: list[dict[str, Any]] = []


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        _loop.set_exception_handler(lambda _loop, ctx: _loop_errors.append(ctx))
    return _loop


def _metrics_body(server: Any) -> bytes:
    # The real body holds process figures (CPU time, memory) that differ between the three feeds.
    return b"# fuzz: metrics\n"


def _run(reads: list[bytes]) -> Outcome:
    loop = _get_loop()
    _loop_errors.clear()
    render = metrics.render
    metrics.render = _metrics_body
    try:
        result = loop.run_until_complete(_drive(reads))
    finally:
        metrics.render = render
    if _loop_errors:
        ctx = _loop_errors[0]
        raise FuzzFailure(f"exception in a loop callback: {ctx.get('message')}") from ctx.get("exception")
    return result


def _check_answers(out: bytes) -> None:
    if _CATCH_ALL in out:
        raise FuzzFailure("a request reached the catch-all 500 (an exception inside a handler)")
    for m in _STATUS.finditer(out):
        status = int(m.group(1))
        if status not in STATUSES:
            raise FuzzFailure(f"status {status} is not one etcd gives")


def _splits(rng: random.Random, data: bytes, max_read: int) -> list[bytes]:
    reads = []
    i = 0
    while i < len(data):
        n = rng.randint(1, max_read)
        reads.append(data[i : i + n])
        i += n
    return reads


_BAD_OR_TOO_LONG = {b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 414 URI Too Long"}


def _known_difference(stream: bytes, a: Outcome, b: Outcome) -> bool:
    """A difference found by fuzzing, reported and not yet fixed in api/protocol.py (it leaves the store
    untouched and the connection closed): a first line both too long for cmux's 4096 bytes and
    unparsable gets 414 when its start and its 4096th byte arrive in one read, 400 when the unparsable
    start arrives alone."""
    if a[2] != b[2]:
        return False
    firsts = {a[0].split(b"\r\n", 1)[0], b[0].split(b"\r\n", 1)[0]}
    return bool(stream.find(b"\n", 0, 4096) < 0 and firsts == _BAD_OR_TOO_LONG)


def http(data: bytes) -> None:
    if not data:
        return
    seed, stream = data[0], data[1:]
    whole = _run([stream] if stream else [])
    _check_answers(whole[0])
    if len(stream) <= BYTE_BY_BYTE_LIMIT:
        small = [stream[i : i + 1] for i in range(len(stream))]
    else:
        small = _splits(random.Random(seed), stream, 8)
    rng = random.Random(seed * 7919 + len(stream))
    for reads in (small, _splits(rng, stream, max(2, len(stream) // 3 + 1))):
        other = _run(reads)
        if other != whole and not _known_difference(stream, whole, other):
            raise FuzzFailure(
                f"outcome depends on how the input is cut into reads ({len(reads)} reads):\n"
                f"whole: {whole!r}\nsplit: {other!r}"
            )
