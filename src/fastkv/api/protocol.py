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
- A one-shot HTTP/1.1 watch on a plain TCP connection registers a ``watchfan.Sink`` (its socket) with
  ``_fan_out``: the hub hands all the sinks of one event over at once, the event's last chunk is built
  once and written to every socket in one compiled pass, and the connections are finished in one
  ``call_soon`` afterwards (off the fan-out's clock).  Everything else goes through ``_on_watch_event``.
- Limits as Go's: request line + headers at most 1 MiB + 4 KiB (else 431 and close), a urlencoded body at
  most 10 MiB (else errorCode 210 and close); other bodies are dropped past the same cap.  A request Go
  cannot read gets Go's bare ``400 Bad Request`` and the connection closes.
- The first line of a connection, line end included, is at most 4096 bytes: etcd's connection multiplexer
  (cmux) reads it into a 4096-byte buffer to tell HTTP/1 from gRPC and resets the connection when the line
  does not fit (probed: 4094 bytes + CRLF pass, 4095 + CRLF do not).  Later requests on the connection
  reach Go's server directly and only have its 1 MiB limit, here too.  Where etcd resets, fastkv answers
  ``414 URI Too Long`` and closes: the key is refused all the same, and a client can tell why.
- Framing as Go's reads it: a ``Transfer-Encoding`` other than exactly one header saying ``chunked`` (any
  case) gets ``501 Not Implemented`` and a close (on HTTP/1.0 too, where Go ignores the header: llhttp
  would read such a body to the connection's end); with ``chunked`` a Content-Length is ignored; a
  Content-Length past int64 gets ``400 Bad Request``.  These are answered at the head, so nothing of the
  body is read.
- Any method token is a request, as in Go: llhttp knows a fixed list, so a message whose method it
  refuses (an unknown token, RTSP's, PRI) is re-fed from its first byte to a new parser with a
  placeholder method, and the real token is what routing sees (405 with ``Allow``, 404, 301 as etcd).
  A CONNECT without a body is parsed on after llhttp's protocol-switch stop, as Go reads on.
  The message's first byte is found by re-parsing the read from its first message boundary: a read that
  starts inside a message uses what is left of its Content-Length body, or the bytes kept from a
  boundary on when the previous read ended inside a head or chunked body (up to 64 KiB of them; a
  refused method behind a longer one split over reads gets 400 and a close).
- A read that is exactly one request of the plainest form (``httpcodec.simple_request``: GET, PUT, POST or
  DELETE on HTTP/1.1, a few ordinary headers, a Content-Length body) while the connection is idle is
  routed without httptools: the same ``_Request`` the callbacks would build, for a fraction of the
  Python calls.  Anything else, and every read that does not hold one whole request, goes to the
  parser; tests/api/test_simple_request.py checks that both give the same answers and writes.
- Only HTTP/1.0 and HTTP/1.1 are served.  A request line without a version (HTTP/0.9, which httptools
  accepts) or with another major version gets ``400 Bad Request`` and the connection closes; etcd closes
  silently on a connection's first request (cmux), and Go answers 400/505 on later ones.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import httptools

from .._native.httpcodec import clean_path, simple_request, unescape
from .._native.watchfan import Sink, send_all
from ..logutil import event as log_event
from ..netutil import address_text
from ..server.interface import OutcomeUnknown, V2Server
from ..tls import ServerTLS, common_names
from ..v2auth.access import KeysAccess
from ..v2store.errors import RAFT_INTERNAL, V2Error
from ..v2store.event import Event
from . import cluster, mirror
from .auth import no_auth, serve_auth
from .debugvars import serve_debug_vars
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
from .tlsstream import TLSListener

log = logging.getLogger("fastkv.api")

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


def _fan_out(event: Any, sinks: list[Sink]) -> None:
    """The hub's batched delivery of ``event`` to one-shot chunked watch answers: the event's chunk
    and the last chunk built once and written to every connection in one pass (one syscall each),
    then the connections finished together on the next loop turn."""
    body = _event_body(event)
    delivered = send_all(b"%x\r\n%s\r\n%s" % (len(body), body, _CHUNK_END), sinks)
    if delivered:
        sinks[0].owner._loop.call_soon(_finish_fanned_out, sinks)


def _finish_fanned_out(sinks: list[Sink]) -> None:
    for sink in sinks:
        if not sink.live:
            sink.owner._watch_fanned_out(sink)


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
# Go's unsupportedTEError answer (no status text in the body, unlike its other refusals).
_UNSUPPORTED_TRANSFER_ENCODING = (
    b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"Unsupported transfer encoding"
)
# Go's parseContentLength: strconv.ParseUint(value, 10, 63).
_MAX_CONTENT_LENGTH = (1 << 63) - 1
# RFC 7230 tchar: what Go's validMethod accepts in a method token.
_TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# What an unknown method is replaced by for llhttp (the real token is kept aside).
_PLACEHOLDER_METHOD = b"GET"
# The most kept of a message in progress to find where the next one starts.
_MAX_MESSAGE_PREFIX = 64 * 1024
# llhttp's refusals, besides HttpParserInvalidMethodError, of a method token Go takes as any other
# (RTSP's methods on HTTP/1.x, PRI without HTTP/2's preface).
_METHOD_ERRORS = ("Invalid method for HTTP/x.x request", "HTTP/2 Connection Preface")


def _new_parser(protocol: Any) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    # Transfer-Encoding is judged in on_headers_complete as Go does (501), and chunked framing wins over
    # a Content-Length as in Go, so llhttp must not refuse these itself.
    parser.set_dangerous_leniencies(lenient_chunked_length=True, lenient_transfer_encoding=True)
    return parser


class _MessageCounter:
    """httptools callbacks that only count complete messages (to locate message boundaries)."""

    __slots__ = ("completed",)

    def __init__(self) -> None:
        self.completed = 0

    def on_message_complete(self) -> None:
        self.completed += 1


def _messages_end(data: bytes | bytearray, count: int) -> int:
    """The offset in ``data`` (which starts at a message boundary) just past its first ``count``
    messages: the shortest prefix a fresh parser completes ``count`` messages in."""
    if count <= 0:
        return 0

    def completed_in(n: int) -> int:
        counter = _MessageCounter()
        try:
            _new_parser(counter).feed_data(data[:n])
        except httptools.HttpParserError:
            pass
        return counter.completed

    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        if completed_in(mid) >= count:
            hi = mid
        else:
            lo = mid + 1
    return lo


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
        "connect_body",
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
        # A CONNECT whose head announced a body (llhttp does not read it): the connection ends after it.
        self.connect_body = False


class ClientProtocol(asyncio.Protocol):
    def __init__(
        self, server: V2Server, metrics_only: bool = False, tls: ServerTLS | None = None, v2: bool = True
    ) -> None:
        self._server = server
        # --enable-v2: with it false, every /v2 path is unknown (404), as in etcd 3.4.
        self._v2 = v2
        self._tls = tls
        # The verified client certificate's first CN (the v2 auth user when no Authorization header
        # is sent, with --client-cert-auth), or "".
        self.cert_cn = ""
        # v2 auth: the Authorization header of this connection's last admitted keys request and
        # the access resolved for it (see _keys_allowed).
        self._keys_access: tuple[str | None, KeysAccess] | None = None
        # A --listen-metrics-urls listener: /metrics and /health only, as etcd's.
        self._metrics_only = metrics_only
        self._loop = asyncio.get_running_loop()
        cors = server.cors
        self._cors_any = cors is not None and "*" in cors
        self._cors_origins = frozenset(cors) if cors else frozenset()
        self._cors_static = cors_lines("*") if self._cors_any else b""
        self._cluster_id = b"X-Etcd-Cluster-Id: %x\r\n" % server.cluster_id
        self._transport: asyncio.Transport | None = None
        self._parser = _new_parser(self)
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
        # Message boundaries: a message has begun and not completed; messages completed so far.
        self._in_message = False
        self._completed = 0
        # The real method of the message being parsed when llhttp was given a placeholder, and the
        # start of such a message whose method token has not ended yet.
        self._method_token: str | None = None
        self._pending_start: bytes | None = None
        # The bytes from a message boundary on when a read ended in a head or chunked body (None
        # when not known), and how many messages complete in them.
        self._message_prefix: bytearray | None = None
        self._prefix_messages = 0
        # The Content-Length header of the message being parsed (None: none, or chunked framing).
        self._content_length: bytes | None = None
        # Framing headers of the message being parsed, judged at its head as Go does.
        self._te_headers = 0
        self._te_value = b""
        self._content_length_too_large = False
        # The CONNECT just parsed had no body: parsing goes on after llhttp's protocol-switch stop.
        self._connect_goes_on = False
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
        # The socket's fd when watch answers may be written to it directly (plain TCP), else -1;
        # the batched delivery of the one-shot watch in progress.
        self._fd = -1
        self._sink: Sink | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._tls is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self._fd = sock.fileno()
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        # A resumed TLS 1.2 session skipped verification: its certificate is checked against the
        # current CRL here, as etcd checks every connection.
        reason = self._tls.check_peer(ssl_object)
        if reason is not None:
            remote = address_text(transport.get_extra_info("peername"))
            log_event(log, logging.WARNING, "rejected connection", **{"remote-addr": remote, "error": reason})
            self._broken = True
            transport.close()
            return
        # With v2 auth on, the verified certificate's CN is the user of requests sent without
        # credentials (etcd's client certificate authentication).
        names = common_names(ssl_object.getpeercert()) if self._tls.info.verifies_clients else []
        self.cert_cn = names[0] if names else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.close()
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
        if (
            not self._in_message
            and self._current is None
            and self._first_line <= 0
            and not self._queue
            and not self._closing
            and self._pending_start is None
        ):
            # One whole request of the plainest form in this read: routed without the parser (the
            # same request either way; see httpcodec.simple_request).
            simple = simple_request(data)
            # On a connection's first request, cmux's first-line limit applies as on the general path.
            if simple is not None and (self._first_line < 0 or data.find(b"\n", 0, MAX_FIRST_LINE) >= 0):
                self._first_line = -1
                self._completed += 1
                r = _Request()
                r.method, r.target, r.content_type, r.body = simple
                self._dispatch(r)
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
        if self._pending_start is not None:
            data, self._pending_start = self._pending_start + data, None
            self._restart_message(data)
        else:
            self._feed(data)
        if not self._in_body and self._head_bytes > MAX_HEADER_BYTES and not self._broken:
            self._reject(_HEADERS_TOO_LARGE, linger=True)

    def _feed(self, data: bytes) -> None:
        completed = self._completed
        mid_message = self._in_message
        # Where a read that starts inside a message stands (for a method refused in it): the
        # message's bytes so far, or what is left of its Content-Length body.
        length_left = -1
        if (
            mid_message
            and self._message_prefix is None
            and self._in_body
            and self._content_length is not None
        ):
            length_left = int(self._content_length) - self._body_size
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._message_prefix = None
            self._upgraded(data, int(e.args[0]) if e.args else len(data))
            return
        except httptools.HttpParserError as e:
            self._parse_error(e, data, self._completed - completed, mid_message, length_left)
            return
        if self._in_message:
            self._keep_message_prefix(data, self._completed - completed, mid_message, length_left)
        elif mid_message:
            self._message_prefix = None

    def _from_boundary(
        self, data: bytes, count: int, mid_message: bool, length_left: int
    ) -> tuple[bytes | bytearray, int] | None:
        """The bytes from a message boundary up to the end of ``data`` (one read, in which ``count``
        messages completed), with the number of messages completed in them; None where unknown."""
        if not mid_message:
            return data, count
        kept = self._message_prefix
        if kept is not None:
            kept += data
            return kept, self._prefix_messages + count
        if length_left >= 0 and count > 0:
            return data[length_left:], count - 1
        return None

    def _parse_error(
        self, error: httptools.HttpParserError, data: bytes, count: int, mid_message: bool, length_left: int
    ) -> None:
        if self._broken:
            return
        reason = str(error)
        if isinstance(error, httptools.HttpParserInvalidMethodError) or any(
            m in reason for m in _METHOD_ERRORS
        ):
            found = self._from_boundary(data, count, mid_message, length_left)
            self._message_prefix = None
            if found is None:
                return self._reject(_BAD_REQUEST)
            base, count = found
            # The refused message starts right after the last one completed.
            return self._restart_message(bytes(base[_messages_end(base, count) :]))
        self._message_prefix = None
        if "Transfer-Encoding" in reason:
            return self._reject(_UNSUPPORTED_TRANSFER_ENCODING)
        self._reject(_BAD_REQUEST)

    def _keep_message_prefix(self, data: bytes, count: int, mid_message: bool, length_left: int) -> None:
        """The read ended inside a message: keep the bytes from a message boundary on when it is in
        its head or a chunked body (up to a bound), in case a method llhttp refuses follows it.  A
        Content-Length body needs none: what is left of it is known.  Where the message in progress
        starts is worked out only when it is needed (or the bytes kept pass the bound)."""
        if self._in_body and self._content_length is not None:
            self._message_prefix = None
            return
        found = self._from_boundary(data, count, mid_message, length_left)
        if found is None:
            self._message_prefix = None
            return
        base, count = found
        kept = base if isinstance(base, bytearray) else bytearray(base)
        if len(kept) > _MAX_MESSAGE_PREFIX:
            del kept[: _messages_end(kept, count)]
            count = 0
            if len(kept) > _MAX_MESSAGE_PREFIX:
                self._message_prefix = None
                return
        self._message_prefix = kept
        self._prefix_messages = count

    def _restart_message(self, data: bytes) -> None:
        """``data`` starts a message whose method llhttp refuses: parse it (and what follows) with a
        fresh parser, the method token replaced by a placeholder."""
        self._parser = _new_parser(self)
        self._in_message = False
        # What the refused parse saw of the message (llhttp refuses RTSP's methods after the URL).
        self._url_parts.clear()
        self._reading = _Request()
        self._has_host = False
        self._te_headers, self._te_value, self._content_length_too_large = 0, b"", False
        self._content_length = None
        start = 0
        while start < len(data) and data[start] in b"\r\n":
            start += 1
        space = data.find(b" ", start)
        token = data[start:space] if space >= 0 else data[start:]
        if any(c not in _TOKEN_BYTES for c in token) or (space == start):
            # Go: "invalid method", 400.
            return self._reject(_BAD_REQUEST)
        if space < 0:
            # The token has not ended yet: wait for the rest (bounded by the header limits).
            self._pending_start = data
            return
        self._method_token = token.decode("latin-1")
        self._feed(_PLACEHOLDER_METHOD + data[space:])

    def _upgraded(self, data: bytes, head_end: int) -> None:
        """llhttp stopped after a head it takes for a protocol switch.  A CONNECT without a body is a
        request like any other to Go: the connection goes on after its answer.  An Upgrade header
        is ignored by Go's handlers, but what follows is not HTTP we understand: it is the last answer."""
        if self._connect_goes_on:
            self._connect_goes_on = False
            self._parser = _new_parser(self)
            self._in_message = False
            if head_end < len(data):
                self._feed(data[head_end:])
            return
        self._broken = True
        if self._current is None and not self._queue:
            self._close()
        elif self._queue:
            self._queue[-1].keep_alive = False
        elif self._current is not None:
            self._current.keep_alive = False

    # -- httptools callbacks -----------------------------------------------------------

    # The state of the next message is reset where this one's is used up, in on_headers_complete and
    # on_message_complete; on_message_begin only marks that a message has begun.

    def on_message_begin(self) -> None:
        self._in_message = True

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
        elif n == 17 and name.lower() == b"transfer-encoding":
            self._te_headers += 1
            self._te_value = value
        elif n == 14 and name.lower() == b"content-length":
            self._content_length = value
            if len(value) > 18:  # 18 digits always fit an int64
                digits = value.strip(b" \t")
                if digits.isdigit() and int(digits) > _MAX_CONTENT_LENGTH:
                    self._content_length_too_large = True

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        r = self._reading
        parser = self._parser
        if self._method_token is None:
            r.method = parser.get_method().decode("latin-1")
        else:
            r.method, self._method_token = self._method_token, None
        version = parser.get_http_version()
        r.http11 = version == "1.1"
        r.keep_alive = parser.should_keep_alive()
        url_parts = self._url_parts
        r.target = url_parts[0] if len(url_parts) == 1 else b"".join(url_parts)
        url_parts.clear()
        if self._te_headers or self._content_length_too_large or r.method == "CONNECT":
            if self._judge_framing(r, version):
                return
        elif version not in _HTTP_VERSIONS:
            # Answered now, as Go answers at the request line, whether or not a body follows; nothing
            # after it is read (the rest of this read included).
            return self._answer_at_head(r, _BAD_REQUEST)
        elif parser.should_upgrade():
            # Whatever follows the head is not HTTP we understand: this is the last answer.
            r.keep_alive = False
        if r.http11 and not self._has_host:
            r.bad = _NO_HOST
        self._has_host = False

    def _judge_framing(self, r: _Request, version: str) -> bool:
        """Go's checks of a head with Transfer-Encoding, an oversized Content-Length or a CONNECT;
        True when the message was answered here."""
        te_headers, te_value, too_large = self._te_headers, self._te_value, self._content_length_too_large
        self._te_headers, self._te_value, self._content_length_too_large = 0, b"", False
        if te_headers:
            self._content_length = None  # chunked framing (any Content-Length is ignored, as by Go)
        if r.method == "CONNECT":
            # llhttp reads no body after a CONNECT head; Go reads it as any other.  Without one, the
            # connection goes on after llhttp's protocol-switch stop.
            r.connect_body = bool(te_headers) or (
                self._content_length is not None and int(self._content_length) > 0
            )
            if r.connect_body:
                r.keep_alive = False
            self._connect_goes_on = not r.connect_body
        elif self._parser.should_upgrade():
            r.keep_alive = False
        if version not in _HTTP_VERSIONS:
            self._answer_at_head(r, _BAD_REQUEST)
            return True
        if te_headers and (te_headers != 1 or te_value.strip(b" \t").lower() != b"chunked"):
            # Go's parseTransferEncoding.  Go ignores the header on HTTP/1.0 and reads by Content-Length;
            # llhttp would read such a body to the end of the connection, so it is refused as on 1.1.
            self._answer_at_head(r, _UNSUPPORTED_TRANSFER_ENCODING)
            return True
        if too_large and not te_headers:
            self._answer_at_head(r, _BAD_REQUEST)
            return True
        return False

    def _answer_at_head(self, r: _Request, response: bytes) -> None:
        """Refuse the message being parsed now (as Go does while reading it), whether or not a body
        follows; nothing after it is read (the rest of this read included)."""
        r.bad = response
        self._broken = True
        self._discarding = True
        self._reading = _Request()
        self._has_host = False
        self._submit(r)

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
        self._in_message = False
        self._content_length = None
        self._completed += 1
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
            if r.method == "CONNECT":
                # An authority-form target: Go's URL has an empty path, which no handler serves.
                return self._reply(404, PLAIN_ERROR_HEADERS, NOT_FOUND_BODY)
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
        # Go's ServeMux routes a CONNECT by its path as sent, without the redirect to the clean one.
        if cleaned != path and method != "CONNECT":
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
        if not self._v2 and path.startswith("/v2"):
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
                return self._serve_auth(r, path, raw_query)
            if path == "/v2/machines":
                return cluster.serve_machines(server, self._reply, method)
            if path.startswith("/v2/stats/") and path[10:] in ("self", "store", "leader"):
                return cluster.serve_stats(server, self._reply, method, path[10:])
        elif path == mirror.PATH:
            return self._serve_mirror(r)
        elif path == "/version":
            return cluster.serve_version(self._reply, method)
        elif path == "/health":
            return cluster.serve_health(self._server, self._reply, method, raw_query)
        elif path == "/debug/vars":
            return serve_debug_vars(self._server, self._reply, method)
        elif path == "/metrics":
            # etcd's promhttp handler answers every method alike (HEAD without the body).
            return self._reply(200, METRICS_CONTENT_TYPE, self._server.metrics_text())
        self._reply(404, PLAIN_ERROR_HEADERS, NOT_FOUND_BODY)

    # -- /v2/auth and the endpoints that need root ------------------------------------

    def _serve_auth(self, r: _Request, path: str, raw_query: bytes) -> None:
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
                raw_query,
            )
        )
        task.add_done_callback(self._async_done(r))

    def _serve_mirror(self, r: _Request) -> None:
        """``/fastkv/mirror`` (api/mirror.py); root only when v2 auth is on."""
        if not self._server.auth.enabled():
            return mirror.serve_mirror(self._server, self._reply_for(r), r.method, r.body, r.too_large)

        async def guarded() -> None:
            reply = self._reply_for(r)
            if not await self._server.auth.has_write_root_access(
                "PUT", r.authorization, self.cert_cn or None
            ):
                return no_auth(reply)
            mirror.serve_mirror(self._server, reply, r.method, r.body, r.too_large)

        self._loop.create_task(guarded()).add_done_callback(self._async_done(r))

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
        request is served again).  The connection keeps the access resolved for its last header
        while the auth state stays at the same version (keep-alive clients repeat the header)."""
        if r.auth_checked:
            return True
        auth = self._server.auth
        recursive = _recursive_flag(r, raw_query)
        memo = self._keys_access
        if memo is not None and memo[1].version == auth.version() and memo[0] == r.authorization:
            access = memo[1]
        else:
            cert_cn = self.cert_cn or None
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
            access = auth.keys_access(caller)
            self._keys_access = None if caller.refused else (r.authorization, access)
        err = access.error(r.method, key, recursive)
        if err is not None:
            self._reply_error(err)
            return False
        return True

    def _on_done(self, event: Event | None, err: V2Error | None) -> None:
        if self._transport is None or self._current is None:
            return
        if err is not None:
            if isinstance(err, OutcomeUnknown):
                # Applied or not, nobody here can tell: no answer may say it failed.
                self._transport.abort()
                return
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
        r = self._current
        assert r is not None
        sink = None
        if self._fd >= 0 and r.http11 and not req.stream:
            sink = Sink(self._fd, self._transport, self)
        self._watch_early = []
        try:
            watcher = self._server.watch(
                req.path, req.recursive, req.stream, req.since, self._on_watch_event, sink, _fan_out
            )
        except V2Error as e:
            self._watch_early = None
            return self._reply_error(e)
        early, self._watch_early = self._watch_early, None
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
        self._sink = sink
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
            self._sink = None
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

    def _watch_fanned_out(self, sink: Sink) -> None:
        """``_fan_out`` wrote this connection's event and last chunk: the watch answer is complete."""
        if self._sink is not sink:
            return  # the connection went away meanwhile
        self._sink = None
        self._watcher = None
        self._watch_chunked = False
        self._watch_stream = False
        self._finish()

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
    server: V2Server,
    host: str,
    port: int,
    metrics_only: bool = False,
    tls: ServerTLS | None = None,
    v2: bool = True,
) -> asyncio.AbstractServer:
    """Listen for clients on host:port; every connection is served by a ClientProtocol
    (``metrics_only``: a --listen-metrics-urls listener, serving /metrics and /health; ``tls``:
    an https listener (api/tlsstream.py), whose certificates are re-read per handshake when they
    change; ``v2``: the /v2 API is served, --enable-v2)."""
    loop = asyncio.get_running_loop()
    if tls is not None:
        return TLSListener.listen(
            loop, tls, lambda: ClientProtocol(server, metrics_only, tls, v2), host, port
        )
    return await loop.create_server(
        lambda: ClientProtocol(server, metrics_only, tls, v2), host, port, reuse_address=True, backlog=1024
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
