"""Blocking client over ``http.client``, safe to share between threads.

Requests are tried on the pinned endpoint first, then on the others (`core.Failover`); the endpoint that
answers becomes pinned.  Idle keep-alive connections are pooled per endpoint; a thread takes one (or opens
a new one) for each request and puts it back afterwards, so several threads (a recipe's keep-alive thread
and the application) can use one client at once.  ``timeout`` bounds each request (connect and every read)
except watches, which wait as long as the server holds them (or their own ``timeout``).  ``deadline`` (a
``time.monotonic()`` instant, or None) bounds the whole of every call made until it is changed, like a Go
context: past it a call raises DeadlineExceeded.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from fastkv.client import core
from fastkv.client.model import (
    DeadlineExceeded,
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

_RETRY_ON_REUSED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_MAX_IDLE = 4  # idle connections kept per endpoint


class Client:
    """A blocking etcd v2 client over one or more endpoints (client URLs of one cluster).

    ``timeout``: seconds per request (None: no limit).  ``ca_file``, ``cert_file``, ``key_file``: TLS for
    https endpoints (CA bundle to verify the server; client certificate and key), or ``ssl_context`` for a
    ready context.  ``username``/``password``: HTTP basic auth sent with every request.  ``on_request``
    receives the equivalent curl command line of every attempt (etcdctl --debug).
    """

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
        self.deadline: float | None = None
        self.on_request = on_request
        if ssl_context is None and (ca_file or cert_file or key_file):
            ssl_context = core.ssl_context(ca_file, cert_file, key_file)
        self._ssl = ssl_context
        self._auth = core.basic_auth(username, password) if username else None
        self._options = (timeout, on_request, ssl_context, username, password)
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        # Sent with every request (fastkvctl's --username puts Authorization here).
        self.headers: dict[str, str] = {}

    def with_endpoints(self, endpoints: list[str]) -> Client:
        """A new client for other endpoints (e.g. one member's URL) with this client's options (timeout,
        TLS, credentials)."""
        timeout, on_request, ssl_context, username, password = self._options
        client = Client(
            endpoints,
            timeout,
            on_request,
            ssl_context=ssl_context,
            username=username,
            password=password,
        )
        client.headers.update(self.headers)
        return client

    @property
    def endpoints(self) -> list[str]:
        """The client URLs in use, in failover order from the first given."""
        return [e.url for e in self._failover.endpoints]

    def close(self) -> None:
        """Close the idle connections (the client stays usable; it reconnects on demand)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, call: core.Call[T]) -> T:
        """Run one prepared `core.Call` with endpoint failover and return its parsed result."""
        attempts = core.failover_attempts(self._failover, call, self.on_request)
        ep = next(attempts)
        while True:
            outcome: core.Outcome
            try:
                outcome = self._roundtrip(ep, call.request)
            except (OSError, http.client.HTTPException) as exc:
                if (isinstance(exc, socket.timeout) or isinstance(exc.__cause__, socket.timeout)) and (
                    self.deadline is not None and time.monotonic() >= self.deadline
                ):
                    raise DeadlineExceeded() from None
                outcome = exc
            try:
                ep = attempts.send(outcome)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    # --- keys ---------------------------------------------------------------------------------------

    def get(self, key: str, recursive: bool = False, sorted: bool = False, quorum: bool = False) -> Response:
        """Read a key, or list a directory (its children; all levels with ``recursive``; ``sorted`` by
        key).  ``quorum`` reads through Raft (linearizable) instead of from the member's own store.
        Raises `KeyNotFound` when it does not exist."""
        return self.execute(core.get_call(key, recursive, sorted, quorum))

    def set(
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
        """PUT a key (or a directory with ``dir``), optionally with a TTL in seconds (``""`` removes it).

        Conditions: ``prev_value``/``prev_index`` make it a compare-and-swap (`CompareFailed` when they
        do not hold), ``prev_exist`` True/False requires the key to exist (`KeyNotFound`) or not
        (`NodeExists`).  ``refresh`` resets the TTL without changing the value and without waking
        watchers (give ``ttl``; usually with ``prev_exist=True``)."""
        return self.execute(core.set_call(key, value, ttl, prev_value, prev_index, prev_exist, dir, refresh))

    def create(self, key: str, value: str = "", ttl: int | None = None) -> Response:
        """Create a key that must not exist yet (`NodeExists` otherwise)."""
        return self.execute(core.set_call(key, value, ttl, prev_exist=False))

    def update(self, key: str, value: str = "", ttl: int | str | None = None) -> Response:
        """Change a key that must exist (`KeyNotFound` otherwise)."""
        return self.execute(core.set_call(key, value, ttl, prev_exist=True))

    def refresh(self, key: str, ttl: int, prev_value: str | None = None, prev_index: int = 0) -> Response:
        """Reset an existing key's TTL to ``ttl`` seconds, keeping its value; watchers are not woken.
        ``prev_value``/``prev_index`` make it conditional (`CompareFailed`); `KeyNotFound` when the
        key has gone (expired or deleted)."""
        return self.execute(
            core.set_call(key, "", ttl, prev_value, prev_index, prev_exist=True, refresh=True)
        )

    def compare_and_swap(
        self, key: str, value: str, prev_value: str | None = None, prev_index: int = 0, ttl: int | None = None
    ) -> Response:
        """Set ``key`` to ``value`` only if its value is ``prev_value`` and/or its modifiedIndex is
        ``prev_index`` (at least one must be given); `CompareFailed` or `KeyNotFound` otherwise."""
        if not prev_value and not prev_index:
            raise ValueError("compare_and_swap needs prev_value or prev_index")
        return self.execute(core.set_call(key, value, ttl, prev_value, prev_index))

    def compare_and_delete(self, key: str, prev_value: str | None = None, prev_index: int = 0) -> Response:
        """Delete ``key`` only if its value is ``prev_value`` and/or its modifiedIndex is ``prev_index``
        (at least one must be given); `CompareFailed` or `KeyNotFound` otherwise."""
        if not prev_value and not prev_index:
            raise ValueError("compare_and_delete needs prev_value or prev_index")
        return self.execute(core.delete_call(key, prev_value=prev_value, prev_index=prev_index))

    def mkdir(self, key: str, ttl: int | None = None) -> Response:
        """Create a directory that must not exist yet (`NodeExists` otherwise)."""
        return self.execute(core.set_call(key, ttl=ttl, prev_exist=False, dir=True))

    def create_in_order(self, dir_key: str, value: str = "", ttl: int | None = None) -> Response:
        """POST a new key under ``dir_key`` whose name is the store index: keys created this way sort in
        creation order (the in-order keys of queues and locks)."""
        return self.execute(core.create_in_order_call(dir_key, value, ttl))

    def delete(
        self,
        key: str,
        dir: bool = False,
        recursive: bool = False,
        prev_value: str | None = None,
        prev_index: int = 0,
    ) -> Response:
        """Delete a key; ``dir`` for an empty directory, ``recursive`` for a directory and everything in
        it; ``prev_value``/``prev_index`` make it a compare-and-delete."""
        return self.execute(core.delete_call(key, dir, recursive, prev_value, prev_index))

    # --- watches ------------------------------------------------------------------------------------

    def watch_once(
        self, key: str, index: int = 0, recursive: bool = False, timeout: float | None = None
    ) -> Response | None:
        """One long poll for the first event on ``key`` (and below, with ``recursive``) whose
        modifiedIndex is at least ``index`` (0: the next event).  None when the server ended the poll
        without an event or ``timeout`` seconds passed.  `EventIndexCleared` when ``index`` is older
        than the server's event history."""
        return self.execute(core.watch_call(key, index, recursive, timeout))

    def watch(self, key: str, index: int = 0, recursive: bool = False) -> Response:
        """Block until the first event at or after ``index`` (0: the next event) and return it."""
        while True:
            resp = self.watch_once(key, index, recursive)
            if resp is not None:
                return resp

    def watcher(self, key: str, index: int = 0, recursive: bool = False) -> Iterator[Response]:
        """Every event from ``index`` on, forever; each poll continues after the last event's index.
        (For a watcher that survives a cleared history, see `fastkv.recipes.ResumableWatcher`.)"""
        while True:
            resp = self.watch(key, index, recursive)
            if resp.node is not None:
                index = resp.node.modified_index + 1
            yield resp

    # --- cluster ------------------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """The cluster's members (GET /v2/members)."""
        return self.execute(core.members_call())

    def leader(self) -> Member:
        """The current Raft leader (GET /v2/members/leader); `ClusterError` during an election."""
        return self.execute(core.leader_call())

    def member_add(self, peer_urls: list[str]) -> Member:
        """Add a member with these peer URLs; the answer has its new id (start it with
        ``--initial-cluster-state existing``)."""
        return self.execute(core.member_add_call(peer_urls))

    def member_update(self, member_id: str, peer_urls: list[str]) -> None:
        """Replace a member's peer URLs."""
        self.execute(core.member_update_call(member_id, peer_urls))

    def member_remove(self, member_id: str) -> None:
        """Remove a member from the cluster."""
        self.execute(core.member_remove_call(member_id))

    def health(self) -> Health:
        """GET /health of the first endpoint that answers (without a 5xx)."""
        return self.execute(core.health_call())

    def version(self) -> Version:
        """GET /version: server and cluster versions."""
        return self.execute(core.version_call())

    def machines(self) -> list[str]:
        """GET /v2/machines: the client URLs the cluster publishes."""
        return self.execute(core.machines_call())

    def self_stats(self) -> SelfStats:
        """GET /v2/stats/self of the answering member: its Raft state and traffic."""
        return self.execute(core.self_stats_call())

    def leader_stats(self) -> LeaderStats:
        """GET /v2/stats/leader: follower latencies; only the leader answers (`HTTPError` 403 otherwise)."""
        return self.execute(core.leader_stats_call())

    def store_stats(self) -> StoreStats:
        """GET /v2/stats/store: the store's operation counters."""
        return self.execute(core.store_stats_call())

    def sync(self) -> list[str]:
        """Replace the endpoints with the cluster's published client URLs (GET /v2/members)."""
        urls = core.synced_endpoints(self.members())
        if not urls:
            raise NoEndpointsError()
        if urls != self.endpoints:
            self.close()
            self._failover.set_endpoints(urls)
        return urls

    # --- transport ----------------------------------------------------------------------------------

    def _take(self, ep: core.Endpoint, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            pool = self._idle.get(ep.url)
            if pool and not fresh:
                return pool.pop(), True
        if ep.scheme == "https":
            ctx = self._ssl or core.ssl_context()
            return http.client.HTTPSConnection(ep.host, ep.port, timeout=self.timeout, context=ctx), False
        return http.client.HTTPConnection(ep.host, ep.port, timeout=self.timeout), False

    def _give_back(self, ep: core.Endpoint, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault(ep.url, [])
            if len(pool) < _MAX_IDLE and ep.url in {e.url for e in self._failover.endpoints}:
                pool.append(conn)
                return
        conn.close()

    def _request_timeout(self, req: core.Request) -> float | None:
        timeout = req.wait_timeout if req.streaming else (req.timeout or self.timeout)
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded()
            timeout = remaining if timeout is None else min(timeout, remaining)
        return timeout

    def _roundtrip(self, ep: core.Endpoint, req: core.Request) -> tuple[int, dict[str, str], bytes]:
        headers = dict(self.headers)
        if req.content_type:
            headers["Content-Type"] = req.content_type
        if self._auth:
            headers["Authorization"] = self._auth
        for attempt in range(2):
            timeout = self._request_timeout(req)
            conn, reused = self._take(ep, fresh=req.at_most_once)
            if conn.sock is None:
                conn.timeout = self.timeout if timeout is None else min(timeout, self.timeout or timeout)
                try:
                    conn.connect()
                except OSError as exc:
                    conn.close()
                    raise core.NotSent(str(exc)) from exc
            try:
                conn.sock.settimeout(timeout)
                conn.request(req.method, ep.base_path + req.target, req.body, headers)
                resp = conn.getresponse()
                body = resp.read()
            except _RETRY_ON_REUSED:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: retry once on a new one
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._give_back(ep, conn)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        raise AssertionError("unreachable")
