"""Request framing and methods as Go's net/http reads them (etcd 3.4's client listener).

- ``Transfer-Encoding``: on HTTP/1.1 exactly one header saying ``chunked`` (any case) is served; anything
  else gets Go's ``501 Not Implemented`` with ``Unsupported transfer encoding`` and a close.  With
  ``chunked``, a Content-Length is ignored and the chunks are read.
- A Content-Length that does not fit an int64 gets Go's bare ``400 Bad Request`` and a close.
- Any method token is a request: each endpoint answers one it does not serve with ``405`` and its
  ``Allow`` list, an unclean path with a ``301``, an unknown path with ``404``; a token with characters
  a token may not hold gets the bare ``400``.  This holds for a request alone, pipelined behind another
  in one write, or with its method split between writes.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from tests.conformance.conftest import Api, Target, parse_raw, raw_exchange
from tests.conformance.test_bad_input import Sentinel, host_header, sentinel  # noqa: F401 - fixture

UNSUPPORTED_TE = (
    b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"Unsupported transfer encoding"
)
BARE_400 = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"400 Bad Request"
)
FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"


def put_head(target: Target, key: str, extra: bytes) -> bytes:
    return f"PUT /v2/keys{key} HTTP/1.1\r\n".encode() + host_header(target) + FORM + extra


@pytest.mark.parametrize(
    "encoding",
    [
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: \r\n",
    ],
    ids=["gzip-chunked", "identity", "chunked-twice-in-one", "gzip", "two-headers", "empty"],
)
def test_unsupported_transfer_encoding_is_501(target: Target, sentinel: Sentinel, encoding: bytes) -> None:  # noqa: F811
    data = put_head(target, sentinel.key, encoding + b"\r\n") + b"7\r\nvalue=1\r\n0\r\n\r\n"
    assert raw_exchange(target, data, timeout=3) == UNSUPPORTED_TE
    sentinel.check()


def test_chunked_in_any_case_is_read(target: Target, api: Api, prefix: str) -> None:
    data = (
        put_head(target, f"{prefix}/k", b"Transfer-Encoding: Chunked\r\n\r\n") + b"7\r\nvalue=1\r\n0\r\n\r\n"
    )
    status, _, _ = parse_raw(raw_exchange(target, data, timeout=3, read_all=False))
    assert status == 201
    assert api.get(f"{prefix}/k").json()["node"]["value"] == "1"


def test_chunked_wins_over_content_length(target: Target, api: Api, prefix: str) -> None:
    data = (
        put_head(target, f"{prefix}/k", b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
        + b"7\r\nvalue=2\r\n0\r\n\r\n"
        + b"GET /version HTTP/1.1\r\n"
        + host_header(target)
        + b"\r\n"
    )
    out = raw_exchange(target, data, timeout=3)
    status, _, _ = parse_raw(out)
    assert status == 201
    # The connection goes on after the chunks: the next request on it is answered.
    assert out.count(b"HTTP/1.1 200 OK") == 1 and b"etcdserver" in out
    assert api.get(f"{prefix}/k").json()["node"]["value"] == "2"


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, 2**64, 10**30])
def test_content_length_past_int64_is_400(target: Target, sentinel: Sentinel, length: int) -> None:  # noqa: F811
    data = put_head(target, sentinel.key, b"Content-Length: %d\r\n\r\n" % length) + b"value=1"
    assert raw_exchange(target, data, timeout=3) == BARE_400
    sentinel.check()


# Allow lists as etcd 3.4 sends them, per endpoint.
ALLOW = {
    "/v2/keys": "HEAD,GET,PUT,POST,DELETE",
    "/v2/keys/a/b": "HEAD,GET,PUT,POST,DELETE",
    "/v2/members": "GET,POST,DELETE,PUT",
    "/v2/members/leader": "GET,POST,DELETE,PUT",
    "/v2/members/abc": "GET,POST,DELETE,PUT",
    "/v2/machines": "GET,HEAD",
    "/v2/stats/self": "GET",
    "/v2/stats/store": "GET",
    "/v2/stats/leader": "GET",
    "/version": "GET",
    "/health": "GET",
    "/v2/auth/enable": "GET,PUT,DELETE",
    "/v2/auth/users": "GET",
    "/v2/auth/users/root": "GET,PUT,DELETE",
    "/v2/auth/roles": "GET",
    "/v2/auth/roles/x": "GET,PUT,DELETE",
    "/debug/vars": "GET",
}
METHODS = [
    "PROPFIND",
    "PATCH",
    "TRACE",
    "CONNECT",
    "FOO",
    "get",
    "PLAY",
    "PRI",
    "X-CUSTOM",
    "M-SEARCH",
    "GETX",
    "PROPFINDX",
]


def exchange_one(target: Target, request: bytes) -> tuple[int, dict[str, str], bytes]:
    return parse_raw(raw_exchange(target, request, timeout=3, read_all=False))


@pytest.mark.parametrize("method", METHODS)
def test_unserved_methods_get_405_with_allow(target: Target, method: str) -> None:
    for path, allow in ALLOW.items():
        request = f"{method} {path} HTTP/1.1\r\n".encode() + host_header(target) + b"\r\n"
        status, headers, body = exchange_one(target, request)
        assert (status, headers.get("allow"), body) == (405, allow, b"Method Not Allowed\n"), (method, path)
        assert headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("method", ["PROPFIND", "FOO", "PATCH"])
def test_unknown_methods_on_unclean_and_unknown_paths(target: Target, method: str) -> None:
    host = host_header(target)
    status, headers, body = exchange_one(
        target, f"{method} /v2/keys/../a?x=1 HTTP/1.1\r\n".encode() + host + b"\r\n"
    )
    assert (status, headers.get("location"), body) == (301, "/v2/a?x=1", b"")
    # etcd's /metrics handler answers every method.
    assert exchange_one(target, f"{method} /metrics HTTP/1.1\r\n".encode() + host + b"\r\n")[0] == 200
    for path in ("/nope", "/v2/nope", "/v2/stats/nope", "/v2/auth", "/debug/vars/"):
        status, _, body = exchange_one(target, f"{method} {path} HTTP/1.1\r\n".encode() + host + b"\r\n")
        assert (status, body) == (404, b"404 page not found\n"), path


def test_connect_is_a_request_like_another(target: Target) -> None:
    host = host_header(target)
    # An authority-form target has no path: nothing serves it.
    status, _, body = exchange_one(
        target, f"CONNECT {target.host}:{target.port} HTTP/1.1\r\n".encode() + host + b"\r\n"
    )
    assert (status, body) == (404, b"404 page not found\n")
    # The connection goes on after a CONNECT, unclean paths are not redirected for it (Go's ServeMux).
    out = raw_exchange(
        target,
        b"CONNECT /v2/keys/../version HTTP/1.1\r\n"
        + host
        + b"\r\nGET /version HTTP/1.1\r\n"
        + host
        + b"\r\n",
        timeout=3,
    )
    assert out.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: HEAD,GET,PUT,POST,DELETE\r\n" in out
    assert b"HTTP/1.1 200 OK\r\n" in out and b"etcdserver" in out


def test_invalid_method_token_is_bare_400(target: Target, sentinel: Sentinel) -> None:  # noqa: F811
    for token in (b"G@T", b"GE(T", b"G\x7fT"):
        out = raw_exchange(
            target,
            token + b" /v2/keys" + sentinel.key.encode() + b" HTTP/1.1\r\n" + host_header(target) + b"\r\n",
            timeout=3,
        )
        assert out == BARE_400, token
    sentinel.check()


def test_unknown_methods_pipelined_and_split(target: Target, sentinel: Sentinel) -> None:  # noqa: F811
    host = host_header(target)
    get = b"GET /version HTTP/1.1\r\n" + host + b"\r\n"
    put = put_head(target, sentinel.key, b"Content-Length: 7\r\n\r\n") + b"value=x"
    foo = b"FOO /v2/keys/x HTTP/1.1\r\n" + host + b"\r\n"
    play = b"PLAY /v2/members HTTP/1.1\r\n" + host + b"\r\n"
    stream = get + foo + put + play + foo + get
    expected = [200, 405, 200, 405, 405, 200]
    cuts = [None, 3, len(get) + 2, len(get) + len(foo) + len(put) + 1, len(get) + len(foo) + 40]
    for cut in cuts:
        pieces = [stream] if cut is None else [stream[:cut], stream[cut:]]
        with socket.create_connection((target.host, target.port), timeout=3) as s:
            for piece in pieces:
                s.sendall(piece)
                time.sleep(0.05)  # separate reads on the server (not asserted: any cut must work)
            out = b""
            deadline = time.monotonic() + 3
            while out.count(b"HTTP/1.1 ") < len(expected) or not out.endswith(b"}"):
                assert time.monotonic() < deadline, (cut, out)
                s.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = s.recv(65536)
                assert chunk, (cut, out)
                out += chunk
        statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
        assert statuses == expected, cut
    r = sentinel.api.get(sentinel.key)
    assert r.json()["node"]["value"] == "x"
    sentinel.value = "x"
    sentinel.index = r.etcd_index
