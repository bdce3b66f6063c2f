"""asyncio client: the same methods as `fastkv.client.Client`, each a coroutine.

HTTP/1.1 is spoken directly over ``asyncio`` streams: the request is one write, the answer is read as a
status line, headers, then a body framed by Content-Length, chunked encoding, or connection close.  One
idle keep-alive connection is kept per endpoint; concurrent requests open extra connections, which are
closed after use.  ``timeout`` bounds each request except watches.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from fastkv.client import core
from fastkv.client.model import (
    Health,
    LeaderStats,
    Member,
    NoEndpointsError,
    Response,
    SelfStats,
    StoreStats,
    Version,
)

T = TypeVar("T")

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _ProtocolError(ConnectionError):
    pass


def encode_request(ep: core.Endpoint, req: core.Request, authorization: str | None = None) -> bytes:
    lines = [
        f"{req.method} {ep.base_path}{req.target} HTTP/1.1",
        f"Host: {ep.netloc}",
        "Accept-Encoding: identity",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
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


class AsyncClient:
    """The asyncio twin of `fastkv.client.Client`: same constructor options, same methods (coroutines),
    same results and errors.  Safe to use from many tasks of one event loop at once."""

    def __init__(
        self,
        endpoints: list[str] | None = None,
        timeout: float | None = 2.0,
        on_request: Callable[[str], None] | None = None,
        *,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        ssl_context: ssl.SSLContext | None = None,
        username: str = "",
        password: str = "",
    ) -> None:
        self._failover = core.Failover(endpoints or ["http://127.0.0.1:2379"])
        self.timeout = timeout
        self.on_request = on_request
        if ssl_context is None and (ca_file or cert_file or key_file):
            ssl_context = core.ssl_context(ca_file, cert_file, key_file)
        self._ssl = ssl_context
        self._auth = core.basic_auth(username, password) if username else None
        self._options = (timeout, on_request, ssl_context, username, password)
        self._idle: dict[str, _Conn] = {}

    def with_endpoints(self, endpoints: list[str]) -> AsyncClient:
        """A new client for other endpoints (e.g. one member's URL) with this client's options (timeout,
        TLS, credentials)."""
        timeout, on_request, ssl_context, username, password = self._options
        return AsyncClient(
            endpoints,
            timeout,
            on_request,
            ssl_context=ssl_context,
            username=username,
            password=password,
        )

    @property
    def endpoints(self) -> list[str]:
        """The client URLs in use, in failover order from the first given."""
        return [e.url for e in self._failover.endpoints]

    async def close(self) -> None:
        """Close the idle connections (the client stays usable; it reconnects on demand)."""
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

    async def execute(self, call: core.Call[T]) -> T:
        """Run one prepared `core.Call` with endpoint failover and return its parsed result."""
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
                return done.value  # type: ignore[no-any-return]

    # --- keys: see Client for the meaning of every argument ------------------------------------------

    async def get(
        self, key: str, recursive: bool = False, sorted: bool = False, quorum: bool = False
    ) -> Response:
        """Read a key or list a directory (`Client.get`)."""
        return await self.execute(core.get_call(key, recursive, sorted, quorum))

    async def set(
        self,
        key: str,
        value: str = "",
        ttl: int | str | None = None,
        prev_value: str | None = None,
        prev_index: int = 0,
        prev_exist: bool | None = None,
        dir: bool = False,
        refresh: bool = False,
    ) -> Response:
        """PUT a key or directory, with optional TTL and conditions (`Client.set`)."""
        return await self.execute(
            core.set_call(key, value, ttl, prev_value, prev_index, prev_exist, dir, refresh)
        )

    async def create(self, key: str, value: str = "", ttl: int | None = None) -> Response:
        """Create a key that must not exist yet (`NodeExists` otherwise)."""
        return await self.execute(core.set_call(key, value, ttl, prev_exist=False))

    async def update(self, key: str, value: str = "", ttl: int | str | None = None) -> Response:
        """Change a key that must exist (`KeyNotFound` otherwise)."""
        return await self.execute(core.set_call(key, value, ttl, prev_exist=True))

    async def refresh(
        self, key: str, ttl: int, prev_value: str | None = None, prev_index: int = 0
    ) -> Response:
        """Reset an existing key's TTL without waking watchers (`Client.refresh`)."""
        return await self.execute(
            core.set_call(key, "", ttl, prev_value, prev_index, prev_exist=True, refresh=True)
        )

    async def compare_and_swap(
        self, key: str, value: str, prev_value: str | None = None, prev_index: int = 0, ttl: int | None = None
    ) -> Response:
        """Set ``key`` only if ``prev_value``/``prev_index`` hold (`Client.compare_and_swap`)."""
        if not prev_value and not prev_index:
            raise ValueError("compare_and_swap needs prev_value or prev_index")
        return await self.execute(core.set_call(key, value, ttl, prev_value, prev_index))

    async def compare_and_delete(
        self, key: str, prev_value: str | None = None, prev_index: int = 0
    ) -> Response:
        """Delete ``key`` only if ``prev_value``/``prev_index`` hold (`Client.compare_and_delete`)."""
        if not prev_value and not prev_index:
            raise ValueError("compare_and_delete needs prev_value or prev_index")
        return await self.execute(core.delete_call(key, prev_value=prev_value, prev_index=prev_index))

    async def mkdir(self, key: str, ttl: int | None = None) -> Response:
        """Create a directory that must not exist yet (`NodeExists` otherwise)."""
        return await self.execute(core.set_call(key, ttl=ttl, prev_exist=False, dir=True))

    async def create_in_order(self, dir_key: str, value: str = "", ttl: int | None = None) -> Response:
        """POST an in-order key under ``dir_key`` (`Client.create_in_order`)."""
        return await self.execute(core.create_in_order_call(dir_key, value, ttl))

    async def delete(
        self,
        key: str,
        dir: bool = False,
        recursive: bool = False,
        prev_value: str | None = None,
        prev_index: int = 0,
    ) -> Response:
        """Delete a key or directory, optionally compare-and-delete (`Client.delete`)."""
        return await self.execute(core.delete_call(key, dir, recursive, prev_value, prev_index))

    # --- watches ------------------------------------------------------------------------------------

    async def watch_once(
        self, key: str, index: int = 0, recursive: bool = False, timeout: float | None = None
    ) -> Response | None:
        """One long poll; None when it ended without an event (`Client.watch_once`)."""
        return await self.execute(core.watch_call(key, index, recursive, timeout))

    async def watch(self, key: str, index: int = 0, recursive: bool = False) -> Response:
        """Wait for the first event at or after ``index`` (0: the next event) and return it."""
        while True:
            resp = await self.watch_once(key, index, recursive)
            if resp is not None:
                return resp

    async def watcher(self, key: str, index: int = 0, recursive: bool = False) -> AsyncIterator[Response]:
        """Every event from ``index`` on, forever (`Client.watcher`)."""
        while True:
            resp = await self.watch(key, index, recursive)
            if resp.node is not None:
                index = resp.node.modified_index + 1
            yield resp

    # --- cluster ------------------------------------------------------------------------------------

    async def members(self) -> list[Member]:
        """The cluster's members (GET /v2/members)."""
        return await self.execute(core.members_call())

    async def leader(self) -> Member:
        """The current Raft leader (GET /v2/members/leader)."""
        return await self.execute(core.leader_call())

    async def member_add(self, peer_urls: list[str]) -> Member:
        """Add a member with these peer URLs."""
        return await self.execute(core.member_add_call(peer_urls))

    async def member_update(self, member_id: str, peer_urls: list[str]) -> None:
        """Replace a member's peer URLs."""
        await self.execute(core.member_update_call(member_id, peer_urls))

    async def member_remove(self, member_id: str) -> None:
        """Remove a member from the cluster."""
        await self.execute(core.member_remove_call(member_id))

    async def health(self) -> Health:
        """GET /health of the first endpoint that answers."""
        return await self.execute(core.health_call())

    async def version(self) -> Version:
        """GET /version."""
        return await self.execute(core.version_call())

    async def machines(self) -> list[str]:
        """GET /v2/machines."""
        return await self.execute(core.machines_call())

    async def self_stats(self) -> SelfStats:
        """GET /v2/stats/self."""
        return await self.execute(core.self_stats_call())

    async def leader_stats(self) -> LeaderStats:
        """GET /v2/stats/leader (the leader only)."""
        return await self.execute(core.leader_stats_call())

    async def store_stats(self) -> StoreStats:
        """GET /v2/stats/store."""
        return await self.execute(core.store_stats_call())

    async def sync(self) -> list[str]:
        """Replace the endpoints with the cluster's published client URLs."""
        urls = core.synced_endpoints(await self.members())
        if not urls:
            raise NoEndpointsError()
        if urls != self.endpoints:
            await self.close()
            self._failover.set_endpoints(urls)
        return urls

    # --- transport ----------------------------------------------------------------------------------

    async def _open(self, ep: core.Endpoint) -> _Conn:
        ctx = (self._ssl or core.ssl_context()) if ep.scheme == "https" else None
        return await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port, ssl=ctx), self.timeout)

    async def _roundtrip(self, ep: core.Endpoint, req: core.Request) -> tuple[int, dict[str, str], bytes]:
        payload = encode_request(ep, req, self._auth)
        limit = req.wait_timeout if req.streaming else (req.timeout or self.timeout)
        for attempt in range(2):
            conn = None if req.at_most_once else self._idle.pop(ep.url, None)
            reused = conn is not None
            if conn is None:
                try:
                    conn = await self._open(ep)
                except OSError as exc:
                    raise core.NotSent(str(exc)) from exc
            reader, writer = conn
            try:
                writer.write(payload)
                status, headers, body, keep_alive = await asyncio.wait_for(
                    read_response(reader, req.method), limit
                )
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
