"""The client HTTP server: one asyncio Protocol per connection, httptools for parsing, no Tasks.

Rules and invariants:

- Requests on a connection are handled one at a time, in order, like Go's net/http: a pipelined request
  is queued until the previous response is complete, so a GET after a PUT sees the PUT.  Reading pauses
  when too many requests are queued.
- A request is answered by exactly one call of ``_reply`` (or, for a watch, by the watch head, its
  events and ``_end_watch``); ``_finish`` then closes the connection or starts the next queued request.
- The member is reached only through ``server.interface.V2Server``: keys requests go to ``server.do``
  with the connection's done callback (called at once for a local read, from the apply loop for a
  write or quorum read), watches to ``server.watch``; a GET with no parameters to ``server.get``.
- A watch holds its connection until its event arrives (or forever for ``stream=true``); the client going
  away removes the watcher.  Watch callbacks run inside the store's apply, so nothing there re-enters
  the store: the next request is started with ``call_soon``.
- Limits as Go's: request line + headers at most 1 MiB + 4 KiB (else 431 and close), a urlencoded body at
  most 10 MiB (else errorCode 210 and close); other bodies are dropped past the same cap.  A request Go
  cannot read gets Go's bare ``400 Bad Request`` and the connection closes.
- The first line of a connection, line end included, is at most 4096 bytes: etcd's connection multiplexer
  (cmux) reads it into a 4096-byte buffer to tell HTTP/1 from gRPC and resets the connection when the line
  does not fit (probed: 4094 bytes + CRLF pass, 4095 + CRLF do not).  Later requests on the connection
  reach Go's server directly and only have its 1 MiB limit, here too.  Where etcd resets, fastkv answers
  ``414 URI Too Long`` and closes: the key is refused all the same, and a client can tell why.
- Only HTTP/1.0 and HTTP/1.1 are served.  A request line without a version (HTTP/0.9, which httptools
  accepts) or with another major version gets ``400 Bad Request`` and the connection closes; etcd closes
  silently on a connection's first request (cmux), and Go answers 400/505 on later ones.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import httptools

from .._native.httpcodec import clean_path, unescape
from ..server.interface import V2Server
from ..tls import ServerTLS
from ..v2store.errors import RAFT_INTERNAL, V2Error
from ..v2store.event import Event
from . import cluster
from .auth import no_auth, serve_auth
from .keys import MAX_FORM_SIZE, build_form, key_path, parse_key_request
from .response import (
    CT_JSON,
    CT_TEXT,
    MAX_BUFFERED_BODY,
    METHOD_NOT_ALLOWED_BODY,
    METRICS_CONTENT_TYPE,
    NOT_FOUND_BODY,
    PLAIN_ERROR_HEADERS,
    STATUS_LINE_10,
    STATUS_LINE_11,
    cors_lines,
    date_line,
    malformed_response,
    redirect_body,
    redirect_target,
)

MAX_HEADER_BYTES = (1 << 20) + 4096
# cmux's maxHTTPRead: the first line of a connection, line end included.
MAX_FIRST_LINE = 4096
MAX_QUEUED_REQUESTS = 16
# Go's rstAvoidanceDelay.
LINGER_SECONDS = 0.5
# A stream watcher whose client stops reading is dropped past this much unsent data (etcd: 100 events).
WATCH_WRITE_LIMIT = 4 << 20

KEYS_ALLOW = b"Allow: HEAD,GET,PUT,POST,DELETE\r\n"
_KEYS_METHODS = frozenset(("GET", "HEAD", "PUT", "POST", "DELETE"))
_NO_VALUE_ACTIONS = frozenset(("set", "compareAndSwap", "create", "update"))
_NO_VALUE_BODIES: dict[str, bytes] = {}
_CHUNK_END = b"0\r\n\r\n"

# The last event fanned out and its JSON: every watcher of one write gets the same bytes.
_last_event: list[Any] = [None, b""]


def _event_body(event: Any) -> bytes:
    if _last_event[0] is not event:
        _last_event[0], _last_event[1] = event, event.to_json()
    return _last_event[1]  # type: ignore[no-any-return]


# A /v2/keys answer as _reply writes it for HTTP/1.1 keep-alive: status line, CORS lines, the other
# headers (sorted), Date, Content-Length, body.
_KEYS_ANSWER = (
    b"%s%s"
    + CT_JSON
    + b"%sX-Etcd-Index: %d\r\nX-Raft-Index: %d\r\nX-Raft-Term: %d\r\n%sContent-Length: %d\r\n\r\n%s"
)
_BAD_REQUEST = malformed_response(400, "Bad Request")
_NO_HOST = malformed_response(400, "Bad Request: missing required Host header")
_HEADERS_TOO_LARGE = malformed_response(431, "Request Header Fields Too Large")
_FIRST_LINE_TOO_LONG = malformed_response(414, "URI Too Long")
_HTTP_VERSIONS = frozenset(("1.0", "1.1"))


def _no_value_body(action: str) -> bytes:
    body = _NO_VALUE_BODIES.get(action)
    if body is None:
        body = _NO_VALUE_BODIES[action] = b'{"action":"' + action.encode() + b'"}\n'
    return body


class _Request:
    __slots__ = (
        "method",
        "http11",
        "keep_alive",
        "linger",
        "target",
        "content_type",
        "origin",
        "body",
        "too_large",
        "bad",
        "authorization",
        "auth_checked",
    )

    def __init__(self) -> None:
        self.method = ""
        self.http11 = True
        self.keep_alive = True
        # Close like Go's closeWriteAndWait: half-close, drop input for a while, then close, so that a
        # client still sending does not get a reset that destroys the answer.
        self.linger = False
        self.target = b""
        self.content_type: str | None = None
        self.origin: str | None = None
        self.body = b""
        self.too_large = False
        # A canned response for a request Go would reject while reading it (then close).
        self.bad: bytes | None = None
        # The Authorization header (v2 auth), or None.
        self.authorization: str | None = None
        # The v2 auth check passed (after a password check off the loop).
        self.auth_checked = False


class ClientProtocol(asyncio.Protocol):
    def __init__(self, server: V2Server, metrics_only: bool = False, tls: ServerTLS | None = None) -> None:
        self._server = server
        self._tls = tls
        # The verified client certificate's first CN (the v2 auth user when no Authorization header
        # is sent, with --client-cert-auth), or "".
        self.cert_cn = ""
        # A --listen-metrics-urls listener: /metrics and /health only, as etcd's.
        self._metrics_only = metrics_only
        self._loop = asyncio.get_running_loop()
        cors = server.cors
        self._cors_any = cors is not None and "*" in cors
        self._cors_origins = frozenset(cors) if cors else frozenset()
        self._cors_static = cors_lines("*") if self._cors_any else b""
        self._cluster_id = b"X-Etcd-Cluster-Id: %x\r\n" % server.cluster_id
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        # Parsing state of the request being read.
        self._reading = _Request()
        self._url_parts: list[bytes] = []
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._has_host = False
        self._in_body = False
        self._head_bytes = 0
        # Bytes of the connection's first line seen so far, -1 once its line end has arrived.
        self._first_line = 0
        self._broken = False
        # The message being parsed was answered at its head (a bad version): its body is dropped.
        self._discarding = False
        # Handling state.
        self._queue: collections.deque[_Request] = collections.deque()
        self._current: _Request | None = None
        self._paused = False
        self._eof = False
        self._closing = False
        self._draining = False
        # One write in flight per connection: its noValueOnSuccess, and a callback made once.
        self._no_value = False
        self._done_callback = self._on_done
        self._watcher: Any = None
        self._watch_stream = False
        self._watch_early: list[Any] | None = None
        self._watch_chunked = True

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            watcher.remove()

    def eof_received(self) -> bool | None:
        # A half-closed client still gets the answers to what it sent, but a watcher's client is gone
        # (Go's CloseNotify fires on EOF).
        self._eof = True
        if self._watcher is not None or self._watch_stream:
            return None
        if self._current is not None or self._queue:
            return True
        return None

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        if not self._in_body:
            self._head_bytes += len(data)
            seen = self._first_line
            if seen >= 0:
                # Checked before parsing, so a refused line has no effect at all.
                if data.find(b"\n", 0, MAX_FIRST_LINE - seen) >= 0:
                    self._first_line = -1
                elif seen + len(data) >= MAX_FIRST_LINE:
                    self._reject(_FIRST_LINE_TOO_LONG, linger=True)
                    return
                else:
                    self._first_line = seen + len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Go's handlers ignore Upgrade; whatever follows the head is not HTTP we understand.
            self._broken = True
            if self._current is None and not self._queue:
                self._close()
            elif self._queue:
                self._queue[-1].keep_alive = False
            elif self._current is not None:
                self._current.keep_alive = False
            return
        except httptools.HttpParserError:
            self._reject(_BAD_REQUEST)
            return
        if not self._in_body and self._head_bytes > MAX_HEADER_BYTES:
            self._reject(_HEADERS_TOO_LARGE, linger=True)

    # -- httptools callbacks -----------------------------------------------------------

    # No on_message_begin (one Python call less per request): the state of the next message is reset
    # where this one's is used up, in on_headers_complete and on_message_complete.

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 12:
            if name.lower() == b"content-type" and self._reading.content_type is None:
                self._reading.content_type = value.decode("latin-1")
        elif n == 4:
            if name.lower() == b"host":
                self._has_host = True
        elif n == 6 and name.lower() == b"origin" and self._reading.origin is None:
            self._reading.origin = value.decode("latin-1")
        elif n == 13 and name.lower() == b"authorization" and self._reading.authorization is None:
            self._reading.authorization = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        r = self._reading
        parser = self._parser
        r.method = parser.get_method().decode("latin-1")
        version = parser.get_http_version()
        r.http11 = version == "1.1"
        r.keep_alive = parser.should_keep_alive()
        url_parts = self._url_parts
        r.target = url_parts[0] if len(url_parts) == 1 else b"".join(url_parts)
        url_parts.clear()
        if parser.should_upgrade():
            # Whatever follows the head is not HTTP we understand: this is the last answer.
            r.keep_alive = False
        if version not in _HTTP_VERSIONS:
            # Answered now, as Go answers at the request line, whether or not a body follows; nothing
            # after it is read (the rest of this read included).
            r.bad = _BAD_REQUEST
            self._broken = True
            self._discarding = True
            self._reading = _Request()
            self._has_host = False
            self._submit(r)
            return
        if r.http11 and not self._has_host:
            r.bad = _NO_HOST
        self._has_host = False

    def on_body(self, body: bytes) -> None:
        if self._discarding:
            return
        size = self._body_size + len(body)
        self._body_size = size
        if size <= MAX_FORM_SIZE + 1:
            self._body_parts.append(body)
        elif not self._reading.too_large:
            self._reading.too_large = True
            self._body_parts.clear()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._discarding:
            self._body_parts.clear()
            return
        r = self._reading
        parts = self._body_parts
        if parts:
            r.body = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
        self._reading = _Request()
        self._body_size = 0
        if self._current is None and not self._queue and not self._closing:
            self._dispatch(r)  # _submit's common case, one call less
        else:
            self._submit(r)

    # -- request flow ------------------------------------------------------------------

    def _submit(self, r: _Request) -> None:
        if self._closing:
            return
        if self._current is None and not self._queue:
            self._dispatch(r)
            return
        self._queue.append(r)
        if len(self._queue) >= MAX_QUEUED_REQUESTS and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _reject(self, response: bytes, linger: bool = False) -> None:
        """Go's answer to an unreadable request, after the ones before it; then close."""
        self._broken = True
        r = _Request()
        r.bad = response
        r.keep_alive = False
        r.linger = linger
        self._submit(r)

    def _linger_close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._broken = True
        self._closing = True
        self._queue.clear()
        if transport.can_write_eof():
            transport.write_eof()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        self._loop.call_later(LINGER_SECONDS, transport.close)

    def _close(self) -> None:
        self._closing = True
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()

    def _finish(self) -> None:
        """The current response is complete: close, or start the queued requests (iteratively)."""
        r = self._current
        self._current = None
        if r is None or self._transport is None or self._closing:
            return
        if not r.keep_alive or (self._eof and not self._queue):
            if r.linger and not self._eof:
                self._linger_close()
            else:
                self._close()
            return
        if self._draining:
            return
        self._draining = True
        try:
            while self._current is None and self._queue and not self._closing:
                if self._paused and len(self._queue) <= MAX_QUEUED_REQUESTS // 2:
                    self._paused = False
                    self._transport.resume_reading()
                self._dispatch(self._queue.popleft())
        finally:
            self._draining = False

    def _next_soon(self) -> None:
        self._loop.call_soon(self._finish)

    def _dispatch(self, r: _Request) -> None:
        self._current = r
        if r.bad is not None:
            self._write(r.bad)
            r.keep_alive = False
            self._finish()
            return
        try:
            self._route(r)
        except Exception:  # noqa: BLE001 - one request's bug must not kill the connection's peers
            if self._current is r:
                self._reply(500, CT_TEXT, b"Internal Server Error\n")

    def _route(self, r: _Request) -> None:
        target = r.target
        q = target.find(b"?")
        if q >= 0:
            raw_path, raw_query = target[:q], target[q + 1 :]
        else:
            raw_path, raw_query = target, b""
        if not raw_path.startswith(b"/"):
            if raw_path == b"*" and r.method == "OPTIONS":
                return self._reply(200, b"", b"")
            scheme = raw_path.find(b"://")
            if scheme <= 0:
                return self._reply_bad()
            slash = raw_path.find(b"/", scheme + 3)
            raw_path = raw_path[slash:] if slash >= 0 else b"/"
        try:
            # Keys are byte strings: invalid UTF-8 is kept (as lone surrogates) so that distinct
            # keys stay distinct; JSON answers show each such byte as U+FFFD, as Go does.
            path = unescape(raw_path, False).decode("utf-8", "surrogateescape")
        except ValueError:
            return self._reply_bad()
        method = r.method
        if method == "OPTIONS":
            return self._reply(200, b"", b"")
        cleaned = clean_path(path)
        if cleaned != path:
            location = redirect_target(cleaned, raw_query)
            headers = b"Location: " + location.encode("latin-1") + b"\r\n"
            if method == "GET":
                return self._reply(
                    301, b"Content-Type: text/html; charset=utf-8\r\n" + headers, redirect_body(location)
                )
            if method == "HEAD":
                return self._reply(301, b"Content-Type: text/html; charset=utf-8\r\n" + headers, b"")
            return self._reply(301, headers, b"")
        if self._metrics_only and path != "/metrics" and path != "/health":
            return self._reply(404, PLAIN_ERROR_HEADERS, NOT_FOUND_BODY)
        if path.startswith("/v2/keys"):
            if len(path) == 8 or path[8] == "/":
                return self._serve_keys(r, path[8:], raw_query)
        elif path.startswith("/v2/"):
            server = self._server
            if path == "/v2/members" or path.startswith("/v2/members/"):
                if method in ("POST", "PUT", "DELETE") and server.auth.enabled():
                    return self._serve_guarded_members(r, path)
                return cluster.serve_members(server, self._reply, method, path[11:], r.content_type, r.body)
            if path == "/v2/auth" or path.startswith("/v2/auth/"):
                return self._serve_auth(r, path)
            if path == "/v2/machines":
                return cluster.serve_machines(server, self._reply, method)
            if path.startswith("/v2/stats/") and path[10:] in ("self", "store", "leader"):
                return cluster.serve_stats(server, self._reply, method, path[10:])
        elif path == "/version":
            return cluster.serve_version(self._reply, method)
        elif path == "/health":
            return cluster.serve_health(self._server, self._reply, method)
        elif path == "/metrics":
            # etcd's promhttp handler answers every method alike (HEAD without the body).
            return self._reply(200, METRICS_CONTENT_TYPE, self._server.metrics_text())
        self._reply(404, PLAIN_ERROR_HEADERS, NOT_FOUND_BODY)

    # -- /v2/auth and the endpoints that need root ------------------------------------

    def _serve_auth(self, r: _Request, path: str) -> None:
        task = self._loop.create_task(
            serve_auth(
                self._server.auth,
                self._server.cluster_id,
                self._reply_for(r),
                r.method,
                path[8:],
                r.body,
                r.authorization,
                self.cert_cn or None,
            )
        )
        task.add_done_callback(self._async_done(r))

    def _serve_guarded_members(self, r: _Request, path: str) -> None:
        async def guarded() -> None:
            reply = self._reply_for(r)
            if not await self._server.auth.has_write_root_access(
                r.method, r.authorization, self.cert_cn or None
            ):
                return no_auth(reply)
            cluster.serve_members(self._server, reply, r.method, path[11:], r.content_type, r.body)

        self._loop.create_task(guarded()).add_done_callback(self._async_done(r))

    def _reply_for(self, r: _Request) -> Callable[..., None]:
        """A reply function for a request answered later (after an await): it answers only while
        ``r`` is still the connection's current request."""

        def reply(status: int, headers: bytes, body: bytes, sniffed: bool = False) -> None:
            if self._current is r:
                self._reply(status, headers, body, sniffed)

        return reply

    def _async_done(self, r: _Request) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None and self._current is r:
                self._reply(500, CT_TEXT, b"Internal Server Error\n")

        return done

    def _reply_bad(self) -> None:
        r = self._current
        assert r is not None
        r.keep_alive = False
        self._write(_BAD_REQUEST)
        self._finish()

    # -- /v2/keys ----------------------------------------------------------------------

    def _serve_keys(self, r: _Request, key: str, raw_query: bytes) -> None:
        method = r.method
        if method not in _KEYS_METHODS:
            return self._reply(405, KEYS_ALLOW + PLAIN_ERROR_HEADERS, METHOD_NOT_ALLOWED_BODY)
        server = self._server
        if not server.serving:
            # Held until the member has caught up (a restarted member must not answer from an old
            # state); the connection's next requests queue behind this one.
            return server.when_serving(lambda: self._resume_keys(r, key, raw_query))
        if server.auth.enabled() and not self._keys_allowed(r, key, raw_query):
            return
        if not raw_query and not r.body and not r.too_large and (method == "GET" or method == "HEAD"):
            # A plain local read: no parameters, so parse_key_request's request would only carry the
            # path (no quorum, wait, recursive or sorted).
            try:
                event = server.get(key_path(key))
            except V2Error as e:
                return self._reply_error(e)
            return self._reply_event(event, False)
        try:
            if raw_query or r.body or r.too_large:
                form = build_form(method, r.content_type, r.body, r.too_large, raw_query)
            else:
                form = {}
            req, no_value = parse_key_request(method, key, form)
        except V2Error as e:
            if e.cause == "http: POST too large":
                r.keep_alive = False  # Go does not drain a body that large
                r.linger = True
            return self._reply_error(e)
        if req.wait and (method == "GET" or method == "HEAD") and not (method == "GET" and req.quorum):
            return self._start_watch(req)
        self._no_value = no_value
        server.do(req, self._done_callback)

    def _resume_keys(self, r: _Request, key: str, raw_query: bytes) -> None:
        if self._current is r and self._transport is not None:
            self._serve_keys(r, key, raw_query)

    def _keys_allowed(self, r: _Request, key: str, raw_query: bytes) -> bool:
        """With auth on: may the caller do this keys request?  False when it was answered (error 110)
        or is being checked off the loop (an unverified password: bcrypt runs in a thread, then the
        request is served again)."""
        if r.auth_checked:
            return True
        auth = self._server.auth
        cert_cn = self.cert_cn or None
        recursive = _recursive_flag(r, raw_query)
        caller = auth.caller_now(r.authorization, cert_cn)
        if caller is None:

            async def verify() -> None:
                checked = await auth.authenticate_async(r.authorization, cert_cn)
                if self._current is not r or self._transport is None:
                    return
                err = auth.key_access_error(checked, r.method, key, recursive)
                if err is not None:
                    return self._reply_error(err)
                r.auth_checked = True
                self._serve_keys(r, key, raw_query)

            self._loop.create_task(verify()).add_done_callback(self._async_done(r))
            return False
        err = auth.key_access_error(caller, r.method, key, recursive)
        if err is not None:
            self._reply_error(err)
            return False
        return True

    def _on_done(self, event: Event | None, err: V2Error | None) -> None:
        if self._transport is None or self._current is None:
            return
        if err is not None:
            return self._reply_error(err)
        if event is None:
            return self._reply_error(V2Error(RAFT_INTERNAL, "received response with no Event/Watcher"))
        self._reply_event(event, self._no_value)

    def _keys_headers(self, etcd_index: int) -> bytes:
        server = self._server
        return b"%sX-Etcd-Index: %d\r\nX-Raft-Index: %d\r\nX-Raft-Term: %d\r\n" % (
            self._cluster_id,
            etcd_index,
            server.raft_index(),
            server.raft_term(),
        )

    def _reply_event(self, event: Any, no_value: bool) -> None:
        action = event.action
        status = 201 if action == "create" or (action == "set" and event.prev_node is None) else 200
        if no_value and action in _NO_VALUE_ACTIONS:
            body = _no_value_body(action)
        else:
            body = event.to_json()
        r = self._current
        if (
            r is not None
            and r.http11
            and r.keep_alive
            and r.method != "HEAD"
            and len(body) <= MAX_BUFFERED_BODY
        ):
            # The common answer (HTTP/1.1 keep-alive, a buffered body): _reply's bytes, formatted
            # in one step.
            server = self._server
            self._write(
                _KEYS_ANSWER
                % (
                    STATUS_LINE_11[status],
                    self._cors_for(r),
                    self._cluster_id,
                    event.etcd_index,
                    server.raft_index(),
                    server.raft_term(),
                    date_line(),
                    len(body),
                    body,
                )
            )
            self._finish()
            return
        self._reply(status, CT_JSON + self._keys_headers(event.etcd_index), body)

    def _reply_error(self, e: V2Error) -> None:
        self._reply(e.status, b"%sX-Etcd-Index: %d\r\n" % (CT_JSON + self._cluster_id, e.index), e.to_json())

    # -- watches -----------------------------------------------------------------------

    def _start_watch(self, req: Any) -> None:
        self._watch_early = []
        try:
            watcher = self._server.watch(req.path, req.recursive, req.stream, req.since, self._on_watch_event)
        except V2Error as e:
            self._watch_early = None
            return self._reply_error(e)
        early, self._watch_early = self._watch_early, None
        r = self._current
        assert r is not None
        self._watch_chunked = r.http11
        if not r.http11:
            r.keep_alive = False  # HTTP/1.0: the body ends when the connection does
        head = [
            STATUS_LINE_11[200] if r.http11 else STATUS_LINE_10[200],
            self._cors_for(r),
            CT_JSON,
            self._keys_headers(watcher.start_index),
            date_line(),
        ]
        if r.http11:
            if not r.keep_alive:
                head.append(b"Connection: close\r\n")
            head.append(b"Transfer-Encoding: chunked\r\n")
        head.append(b"\r\n")
        self._write(b"".join(head))
        self._watch_stream = req.stream
        if watcher.history_event is not None:
            self._write_watch_event(watcher.history_event)
            if not req.stream:
                self._end_watch()
            # A stream served from history never gets more events (etcd keeps that bug): hold the line.
            return
        self._watcher = watcher
        for event in early:
            self._on_watch_event(event)

    def _write_watch_event(self, event: Any) -> None:
        body = _event_body(event)
        if self._watch_chunked:
            self._write(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self._write(body)

    def _on_watch_event(self, event: Any) -> None:
        if self._watch_early is not None:
            self._watch_early.append(event)
            return
        transport = self._transport
        if transport is None or self._watcher is None:
            return
        if not self._watch_stream:
            self._watcher = None  # the store removes a one-shot watcher itself
            body = _event_body(event)
            if self._watch_chunked:
                # The event's chunk and the last chunk in one send: a write fanned out to
                # thousands of watchers costs one syscall per watcher, not two.
                self._write(b"%x\r\n%s\r\n%s" % (len(body), body, _CHUNK_END))
                self._watch_chunked = False
            else:
                self._write(body)
            self._end_watch(soon=True)
            return
        self._write_watch_event(event)
        if transport.get_write_buffer_size() > WATCH_WRITE_LIMIT:
            # etcd drops a watcher whose client cannot keep up and ends the response.
            watcher, self._watcher = self._watcher, None
            self._loop.call_soon(watcher.remove)
            if self._current is not None:
                self._current.keep_alive = False
            self._end_watch(soon=True)

    def _end_watch(self, soon: bool = False) -> None:
        if self._watch_chunked:
            self._write(_CHUNK_END)
        self._watch_stream = False
        if soon:
            self._next_soon()
        else:
            self._finish()

    # -- writing -----------------------------------------------------------------------

    def _cors_for(self, r: _Request) -> bytes:
        if self._cors_any:
            return self._cors_static
        if r.origin is not None and r.origin in self._cors_origins:
            return cors_lines(r.origin)
        return b""

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _reply(self, status: int, headers: bytes, body: bytes, sniffed: bool = False) -> None:
        """Write one complete response for the current request, then move on."""
        r = self._current
        if r is None:
            return
        http11 = r.http11
        parts = [
            STATUS_LINE_11[status] if http11 else STATUS_LINE_10[status],
            self._cors_for(r),
            headers,
            date_line(),
        ]
        n = len(body)
        chunked = False
        if status == 204:
            body = b""
        elif r.method == "HEAD":
            if 0 < n <= MAX_BUFFERED_BODY:
                parts.append(b"Content-Length: %d\r\n" % n)
            body = b""
        elif n <= MAX_BUFFERED_BODY:
            parts.append(b"Content-Length: %d\r\n" % n)
        elif http11:
            chunked = True
        else:
            r.keep_alive = False
        if sniffed and n:
            parts.append(CT_TEXT)
        if http11:
            if not r.keep_alive:
                parts.append(b"Connection: close\r\n")
        elif r.keep_alive:
            parts.append(b"Connection: keep-alive\r\n")
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % n)
            parts.append(body)
            parts.append(b"\r\n0\r\n\r\n")
        else:
            parts.append(b"\r\n")
            parts.append(body)
        self._write(b"".join(parts))
        self._finish()


async def serve_client(
    server: V2Server, host: str, port: int, metrics_only: bool = False, tls: ServerTLS | None = None
) -> asyncio.Server:
    """Listen for clients on host:port; every connection is served by a ClientProtocol
    (``metrics_only``: a --listen-metrics-urls listener, serving /metrics and /health; ``tls``:
    an https listener, whose certificates are re-read per handshake when they change)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: ClientProtocol(server, metrics_only, tls),
        host,
        port,
        reuse_address=True,
        backlog=1024,
        ssl=tls.context if tls is not None else None,
    )


def _recursive_flag(r: _Request, raw_query: bytes) -> bool:
    """``recursive=true`` in the query or the form body, as the access check needs it (before the
    request is parsed: a request that fails to parse is refused all the same)."""
    if b"recursive" not in raw_query and b"recursive" not in r.body:
        return False
    try:
        form = build_form(r.method, r.content_type, r.body, r.too_large, raw_query)
    except V2Error:
        return False
    return form.get("recursive", "") in ("true", "1", "t", "T", "TRUE", "True")
