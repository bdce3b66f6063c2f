"""asyncio client: the same methods as `fastkv.client.Client`, each returning an awaitable.

HTTP/1.1 is spoken directly over ``asyncio`` streams: the request is one write, the answer is read as a
status line, headers, then a body framed by Content-Length, chunked encoding, or connection close.  One
idle keep-alive connection is kept per endpoint; concurrent requests open extra connections, which are
closed after use.  ``timeout`` bounds each request except watches.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastkv.client import core
from fastkv.client.model import Member, NoEndpointsError, Response

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _ProtocolError(ConnectionError):
    pass


def encode_request(ep: core.Endpoint, req: core.Request) -> bytes:
    lines = [
        f"{req.method} {ep.base_path}{req.target} HTTP/1.1",
        f"Host: {ep.netloc}",
        "Accept-Encoding: identity",
    ]
    if req.content_type:
        lines.append(f"Content-Type: {req.content_type}")
    if req.body is not None or req.method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(req.body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (req.body or b"")


async def read_response(reader: asyncio.StreamReader, method: str) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, lower-cased headers, body, keep_alive) of one HTTP/1.1 answer."""
    status_line = await reader.readline()
    if not status_line:
        raise _ProtocolError("server closed the connection")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise _ProtocolError(f"malformed status line {status_line!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close"
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", keep_alive
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, headers, b"".join(chunks), keep_alive
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"])), keep_alive
    return status, headers, await reader.read(), False


class AsyncClient(core.Api):
    def __init__(
        self,
        endpoints: list[str] | None = None,
        timeout: float | None = 2.0,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self._failover = core.Failover(endpoints or ["http://127.0.0.1:2379"])
        self.timeout = timeout
        self.on_request = on_request
        self._idle: dict[str, _Conn] = {}

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._failover.endpoints]

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for _, writer in idle.values():
            writer.close()
        for _, writer in idle.values():
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def sync(self) -> list[str]:
        members: list[Member] = await self.members()
        urls = core.synced_endpoints(members)
        if not urls:
            raise NoEndpointsError()
        if urls != self.endpoints:
            await self.close()
            self._failover.set_endpoints(urls)
        return urls

    async def watch(self, key: str, index: int = 0, recursive: bool = False) -> Response:
        while True:
            resp = await self.watch_once(key, index, recursive)
            if resp is not None:
                return resp

    async def watcher(self, key: str, index: int = 0, recursive: bool = False) -> AsyncIterator[Response]:
        while True:
            resp = await self.watch(key, index, recursive)
            if resp.node is not None:
                index = resp.node.modified_index + 1
            yield resp

    async def _open(self, ep: core.Endpoint) -> _Conn:
        ctx = ssl.create_default_context() if ep.scheme == "https" else None
        return await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port, ssl=ctx), self.timeout)

    async def _roundtrip(self, ep: core.Endpoint, req: core.Request) -> tuple[int, dict[str, str], bytes]:
        payload = encode_request(ep, req)
        for attempt in range(2):
            conn = self._idle.pop(ep.url, None)
            reused = conn is not None
            if conn is None:
                conn = await self._open(ep)
            reader, writer = conn
            try:
                writer.write(payload)
                exchange = read_response(reader, req.method)
                if req.streaming:
                    status, headers, body, keep_alive = await exchange
                else:
                    status, headers, body, keep_alive = await asyncio.wait_for(exchange, self.timeout)
            except (_ProtocolError, ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
                writer.close()
                if reused and attempt == 0:
                    continue  # a keep-alive connection the server had closed: retry once on a new one
                raise
            except BaseException:
                writer.close()
                raise
            if keep_alive and ep.url not in self._idle:
                self._idle[ep.url] = conn
            else:
                writer.close()
            return status, headers, body
        raise AssertionError("unreachable")

    async def _execute_async(self, call: core.Call[Any]) -> Any:
        attempts = core.failover_attempts(self._failover, call, self.on_request)
        ep = next(attempts)
        while True:
            outcome: core.Outcome
            try:
                outcome = await self._roundtrip(ep, call.request)
            except (OSError, asyncio.IncompleteReadError) as exc:
                outcome = exc
            try:
                ep = attempts.send(outcome)
            except StopIteration as done:
                return done.value

    def _execute(self, call: core.Call[Any]) -> Any:
        return self._execute_async(call)
