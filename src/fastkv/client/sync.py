"""Blocking client over ``http.client`` with one keep-alive connection per endpoint.

Requests are tried on the pinned endpoint first, then on the others (`core.Failover`); the endpoint that
answers becomes pinned.  ``timeout`` bounds each request (connect and every read) except watches, which
wait as long as the server holds them.  ``deadline`` (a ``time.monotonic()`` instant, or None) bounds the
whole of every call made until it is changed, like a Go context: past it a call raises DeadlineExceeded.  Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastkv.client import core
from fastkv.client.model import DeadlineExceeded, Member, NoEndpointsError, Response

_RETRY_ON_REUSED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Client(core.Api):
    def __init__(
        self,
        endpoints: list[str] | None = None,
        timeout: float | None = 2.0,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self._failover = core.Failover(endpoints or ["http://127.0.0.1:2379"])
        self.timeout = timeout
        self.deadline: float | None = None
        self.on_request = on_request  # receives the equivalent curl command line (etcdctl --debug)
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self.headers: dict[str, str] = {}  # sent with every request (``Authorization`` for a user)

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._failover.endpoints]

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self) -> list[str]:
        """Replace the endpoints with the cluster's published client URLs (GET /v2/members)."""
        members: list[Member] = self.members()
        urls = core.synced_endpoints(members)
        if not urls:
            raise NoEndpointsError()
        if urls != self.endpoints:
            self.close()
            self._failover.set_endpoints(urls)
        return urls

    def watch(self, key: str, index: int = 0, recursive: bool = False) -> Response:
        """Block until the first event at or after ``index`` (0: the next event)."""
        while True:
            resp = self.watch_once(key, index, recursive)
            if resp is not None:
                return resp

    def watcher(self, key: str, index: int = 0, recursive: bool = False) -> Iterator[Response]:
        """Every event from ``index`` on, forever; each poll continues after the last event's index."""
        while True:
            resp = self.watch(key, index, recursive)
            if resp.node is not None:
                index = resp.node.modified_index + 1
            yield resp

    def _connection(self, ep: core.Endpoint, streaming: bool) -> tuple[http.client.HTTPConnection, bool]:
        conn = self._conns.get(ep.url)
        if conn is None:
            cls = http.client.HTTPSConnection if ep.scheme == "https" else http.client.HTTPConnection
            conn = cls(ep.host, ep.port, timeout=self.timeout)
            self._conns[ep.url] = conn
        timeout = None if streaming else self.timeout
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded()
            timeout = remaining if timeout is None else min(timeout, remaining)
        conn.timeout = timeout
        reused = conn.sock is not None
        if not reused:
            conn.connect()
        conn.sock.settimeout(timeout)
        return conn, reused

    def _roundtrip(self, ep: core.Endpoint, req: core.Request) -> tuple[int, dict[str, str], bytes]:
        headers = (
            {**self.headers, "Content-Type": req.content_type} if req.content_type else dict(self.headers)
        )
        for attempt in range(2):
            conn, reused = self._connection(ep, req.streaming)
            try:
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
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        raise AssertionError("unreachable")

    def _execute(self, call: core.Call[Any]) -> Any:
        attempts = core.failover_attempts(self._failover, call, self.on_request)
        ep = next(attempts)
        while True:
            outcome: core.Outcome
            try:
                outcome = self._roundtrip(ep, call.request)
            except (OSError, http.client.HTTPException) as exc:
                if (
                    isinstance(exc, socket.timeout)
                    and self.deadline is not None
                    and time.monotonic() >= self.deadline
                ):
                    raise DeadlineExceeded() from None
                outcome = exc
            try:
                ep = attempts.send(outcome)
            except StopIteration as done:
                return done.value
