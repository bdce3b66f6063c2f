"""Byte-level pieces of responses as Go's net/http writes them for etcd 3.4.

Header order is Go's: the handler's headers sorted by name (CORS first, since "Access-..." sorts first),
then ``Date``, ``Content-Length``, a sniffed ``Content-Type``, ``Connection``, ``Transfer-Encoding``.
A body of at most 2048 bytes (Go's bufferBeforeChunkingSize) gets a Content-Length; a longer one is sent
chunked on HTTP/1.1 and unframed (connection closed) on HTTP/1.0.
"""

from __future__ import annotations

import time
from email.utils import formatdate

import orjson

STATUS_TEXT: dict[int, str] = {
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

STATUS_LINE_11 = {code: f"HTTP/1.1 {code} {text}\r\n".encode() for code, text in STATUS_TEXT.items()}
STATUS_LINE_10 = {code: f"HTTP/1.0 {code} {text}\r\n".encode() for code, text in STATUS_TEXT.items()}

# Go's bufferBeforeChunkingSize: larger bodies are not buffered whole, so no Content-Length.
MAX_BUFFERED_BODY = 2048

CT_JSON = b"Content-Type: application/json\r\n"
CT_TEXT = b"Content-Type: text/plain; charset=utf-8\r\n"
NOSNIFF = b"X-Content-Type-Options: nosniff\r\n"
# http.Error(w, "Method Not Allowed", 405) and friends.
PLAIN_ERROR_HEADERS = CT_TEXT + NOSNIFF
METHOD_NOT_ALLOWED_BODY = b"Method Not Allowed\n"
NOT_FOUND_BODY = b"404 page not found\n"

CORS_METHODS = b"Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
CORS_HEADERS = b"Access-Control-Allow-Headers: accept, content-type, authorization\r\n"


def cors_lines(origin: str) -> bytes:
    return CORS_HEADERS + CORS_METHODS + b"Access-Control-Allow-Origin: " + origin.encode("latin-1") + b"\r\n"


_date_second = -1
_date_line = b""


def date_line() -> bytes:
    """``Date: ...\\r\\n``, formatted once per second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_line


def go_json(obj: object) -> bytes:
    """encoding/json output: HTML-sensitive characters escaped like Go does."""
    b = orjson.dumps(obj)
    if b"<" in b or b">" in b or b"&" in b or b"\xe2\x80\xa8" in b or b"\xe2\x80\xa9" in b:
        b = (
            b.replace(b"<", b"\\u003c")
            .replace(b">", b"\\u003e")
            .replace(b"&", b"\\u0026")
            .replace(b"\xe2\x80\xa8", b"\\u2028")
            .replace(b"\xe2\x80\xa9", b"\\u2029")
        )
    return b


def http_error_body(message: str) -> bytes:
    """etcd's httptypes.HTTPError body: ``{"message":"..."}`` without a newline."""
    return go_json({"message": message})


def malformed_response(status: int, text: str) -> bytes:
    """What Go writes itself, before any handler, for a request it cannot read; the connection then closes."""
    return (
        f"HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
        f"{status} {text}"
    ).encode()


_HTML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"}
# url.URL.EscapedPath (encodePath): bytes kept as they are besides the unreserved ones.
_PATH_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+,/:;=@")


def escape_path(path: str) -> str:
    raw = path.encode("utf-8", "surrogateescape")
    return "".join(chr(c) if c in _PATH_SAFE else f"%{c:02X}" for c in raw)


def redirect_target(clean_path: str, raw_query: bytes) -> str:
    target = escape_path(clean_path)
    if raw_query:
        # http.Redirect's hexEscapeNonASCII (lowercase hex, unlike the path escaping).
        target += "?" + "".join(chr(c) if c < 0x80 else f"%{c:x}" for c in raw_query)
    return target


def redirect_body(target: str) -> bytes:
    """http.Redirect's body for GET (with Fprintln's extra newline)."""
    escaped = "".join(_HTML_ESCAPES.get(c, c) for c in target)
    return f'<a href="{escaped}">Moved Permanently</a>.\n\n'.encode()


# /metrics (promhttp, text format 0.0.4), as a header line.
METRICS_CONTENT_TYPE = b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
