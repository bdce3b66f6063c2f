"""A TCP proxy that injects faults, for tests that partition members without touching them.

A member's peers are pointed at the proxy's port instead of the member's; the proxy forwards
every connection to the member and, on command:
- ``set_drop(upstream, downstream)``: keeps connections open but discards the bytes in one or
  both directions (a partition: TCP stays up, nothing arrives, as with a pulled cable);
- ``set_delay(seconds)``: forwards every chunk that much later (order kept);
- ``cut()``: aborts every open connection (both ends see a reset);
- ``set_refuse(True)``: closes each new connection at once (the member looks down);
- ``set_blackhole(True)``: a partition that holds across reconnects: every open connection is
  aborted, and new ones are accepted but never reach the target, whatever they send is
  discarded (a dialer sees its connect succeed, then silence until its own timeout).
``heal()`` undoes drop, delay, refuse and blackhole; the connections the blackhole swallowed are
then reset, as a target that never saw them would answer their next segment.

Bytes are forwarded as they arrive, with flow control: when one side's socket is full the
other side's reading pauses, so a slow receiver slows the sender as it would without us.

Three ways to drive it: ``FaultProxy`` on a running loop; ``ThreadedFaultProxy`` with its own
loop in a thread, for synchronous tests driving processes; and
``python -m fastkv.transport.faultproxy LISTEN_PORT TARGET_PORT`` reading the commands
``drop``, ``drop up``, ``drop down``, ``delay <s>``, ``cut``, ``refuse``, ``blackhole``, ``heal``
from stdin.
Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast


class _Side(asyncio.Protocol):
    """One end of a proxied connection; ``other`` is the end bytes are forwarded to."""

    def __init__(self, proxy: FaultProxy, upstream: bool) -> None:
        self.proxy = proxy
        self.upstream = upstream  # data received here flows client -> target
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None
        self.pending: list[bytes] = []  # received before the other end was connected
        self.release_at = 0.0
        self.refused = False
        self.swallowed = False  # accepted during a blackhole: never connected, input discarded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.refused or (self.swallowed and not self.proxy.blackhole):  # healed meanwhile
            self.transport.abort()
            return
        self.proxy._sides.add(self)

    def data_received(self, data: bytes) -> None:
        p = self.proxy
        if self.swallowed or (p.drop_upstream if self.upstream else p.drop_downstream):
            return
        if self.other is None:
            self.pending.append(data)
            return
        self.forward(data)

    def forward(self, data: bytes) -> None:
        other = self.other
        assert other is not None
        loop = self.proxy.loop
        now = loop.time()
        if self.proxy.delay_s > 0 or self.release_at > now:
            # Never before the previous chunk: a shorter new delay must not reorder bytes.
            self.release_at = max(now + self.proxy.delay_s, self.release_at)
            loop.call_at(self.release_at, other.write, data)
        else:
            other.write(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        if self.other is not None and self.other.transport is not None:
            if self.other.transport.can_write_eof():
                self.other.transport.write_eof()
                return True
            self.other.transport.close()
        return None

    def pause_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.proxy._sides.discard(self)
        self.proxy._swallowed.discard(self)
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class FaultProxy:
    def __init__(self, target_port: int, listen_port: int = 0, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_port = listen_port
        self.drop_upstream = False
        self.drop_downstream = False
        self.delay_s = 0.0
        self.refuse = False
        self.blackhole = False
        self.accepted = 0  # connections accepted since start, refused ones included
        self._sides: set[_Side] = set()
        self._swallowed: set[_Side] = set()  # accepted during the blackhole, still open
        self._server: asyncio.Server | None = None
        self.loop: asyncio.AbstractEventLoop  # the loop start() ran on

    async def start(self) -> int:
        """Listens on 127.0.0.1:listen_port; returns the port."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(self._accept, "127.0.0.1", self.listen_port)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        return self.listen_port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def connections(self) -> int:
        """Open proxied connections (each counted once), blackholed ones excluded."""
        return sum(1 for s in self._sides if s.upstream and not s.swallowed)

    @property
    def blackholed(self) -> int:
        """Open connections accepted during the blackhole (never forwarded)."""
        return len(self._swallowed)

    def set_drop(self, upstream: bool = True, downstream: bool = True) -> None:
        self.drop_upstream = upstream
        self.drop_downstream = downstream

    def set_delay(self, seconds: float) -> None:
        self.delay_s = max(0.0, seconds)

    def set_refuse(self, refuse: bool = True) -> None:
        self.refuse = refuse

    def set_blackhole(self, on: bool = True) -> None:
        """On: abort every open connection, then swallow new ones.  Off: reset the swallowed."""
        if on and not self.blackhole:
            self.blackhole = True
            self.cut()
        elif not on and self.blackhole:
            self.blackhole = False
            for side in list(self._swallowed):
                side.abort()

    def cut(self) -> None:
        for side in list(self._sides):
            side.abort()

    def heal(self) -> None:
        self.set_drop(False, False)
        self.delay_s = 0.0
        self.refuse = False
        self.set_blackhole(False)

    def _accept(self) -> _Side:
        self.accepted += 1
        client = _Side(self, upstream=True)
        if self.refuse:
            client.refused = True
            return client
        if self.blackhole:
            client.swallowed = True
            self._swallowed.add(client)
            return client
        self.loop.create_task(self._connect(client))
        return client

    async def _connect(self, client: _Side) -> None:
        target = _Side(self, upstream=False)
        try:
            await self.loop.create_connection(lambda: target, self.target_host, self.target_port)
        except OSError:
            client.abort()
            return
        if client.transport is None:
            target.abort()
            return
        client.other, target.other = target, client
        for data in client.pending:
            client.forward(data)
        client.pending.clear()


class ThreadedFaultProxy:
    """A FaultProxy on its own loop in a daemon thread, driven from synchronous code."""

    def __init__(self, target_port: int, listen_port: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self.proxy = FaultProxy(target_port, listen_port)
        self.port = self._call_async(self.proxy.start())

    def _call_async(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as e:  # handed to the calling thread
                done.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return done.result(10.0)

    def set_drop(self, upstream: bool = True, downstream: bool = True) -> None:
        self._call(self.proxy.set_drop, upstream, downstream)

    def set_delay(self, seconds: float) -> None:
        self._call(self.proxy.set_delay, seconds)

    def set_refuse(self, refuse: bool = True) -> None:
        self._call(self.proxy.set_refuse, refuse)

    def set_blackhole(self, on: bool = True) -> None:
        self._call(self.proxy.set_blackhole, on)

    def cut(self) -> None:
        self._call(self.proxy.cut)

    def heal(self) -> None:
        self._call(self.proxy.heal)

    @property
    def connections(self) -> int:
        return int(self._call(lambda: self.proxy.connections))

    @property
    def blackholed(self) -> int:
        return int(self._call(lambda: self.proxy.blackholed))

    @property
    def accepted(self) -> int:
        return int(self._call(lambda: self.proxy.accepted))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call_async(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        self._loop.close()

    def __enter__(self) -> ThreadedFaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _command(proxy: FaultProxy, line: str) -> str:
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0], words[1:]
    if cmd == "drop":
        direction = args[0] if args else "both"
        proxy.set_drop(direction in ("both", "up"), direction in ("both", "down"))
    elif cmd == "delay" and len(args) == 1:
        proxy.set_delay(float(args[0]))
    elif cmd == "cut":
        proxy.cut()
    elif cmd == "refuse":
        proxy.set_refuse(True)
    elif cmd == "blackhole":
        proxy.set_blackhole(True)
    elif cmd == "heal":
        proxy.heal()
    else:
        return f"unknown command: {line.strip()}"
    return "ok"


async def _main(listen_port: int, target_port: int) -> None:
    proxy = FaultProxy(target_port, listen_port)
    port = await proxy.start()
    print(f"listening 127.0.0.1:{port} -> 127.0.0.1:{target_port}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        print(_command(proxy, line), flush=True)
    await proxy.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m fastkv.transport.faultproxy LISTEN_PORT TARGET_PORT", file=sys.stderr)
        sys.exit(2)
    asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2])))
