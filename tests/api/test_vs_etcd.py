"""Differential test: the same raw requests to a real etcd 3.4 and to fastkv's API layer.

Only answers that do not depend on store contents are compared (parse errors, routing, redirects, 404/405,
OPTIONS, /version, malformed HTTP): status line, header names in order (Date aside) and body bytes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
import uvloop

from fastkv.api.protocol import serve_client
from tests.api.fake import FakeServer
from tests.support.procs import free_port, have_etcd, start_server

pytestmark = [pytest.mark.etcd, pytest.mark.skipif(not have_etcd(), reason="etcd not installed")]


@pytest.fixture(scope="module")
def etcd_port() -> Iterator[int]:
    s = start_server("etcd")
    try:
        yield int(s.url.rsplit(":", 1)[1])
    finally:
        s.stop()


@pytest.fixture(scope="module")
def fastkv_port() -> Iterator[int]:
    port = free_port()
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    fake = FakeServer()

    def main() -> None:
        asyncio.set_event_loop(loop)
        listener = loop.run_until_complete(serve_client(fake, "127.0.0.1", port))
        ready.set()
        loop.run_forever()
        listener.close()

    t = threading.Thread(target=main, daemon=True)
    t.start()
    assert ready.wait(10)
    yield port
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def exchange(port: int, data: bytes) -> tuple[str, list[str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        raw = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    names = [line.split(":", 1)[0] for line in lines[1:] if not line.startswith("Date:")]
    return lines[0], names, body


def H(
    method: str, target: str, body: bytes = b"", ct: str | None = "application/x-www-form-urlencoded"
) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if ct and body:
        head += f"Content-Type: {ct}\r\n"
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


CASES = [
    H("GET", "/v2/keys/a?recursive=bad&waitIndex=x"),
    H("PUT", "/v2/keys/a?wait=true&prevValue=&ttl=x&prevIndex=1"),
    H("PUT", "/v2/keys/a?prevValue=&ttl=x"),
    H("PUT", "/v2/keys/a?ttl=x&prevExist=maybe"),
    H("PUT", "/v2/keys/a?prevExist=x&refresh=true"),
    H("PUT", "/v2/keys/a?refresh=true&ttl=3", b"value=v"),
    H("PUT", "/v2/keys/a?refresh=true&ttl="),
    H("PUT", "/v2/keys/a?refresh=yes"),
    H("PUT", "/v2/keys/a?noValueOnSuccess=2&dir=x"),
    H("PUT", "/v2/keys/a?sorted=x&recursive=1"),
    H("GET", "/v2/keys/a?stream=x&quorum=x"),
    H("DELETE", "/v2/keys/a?wait=true"),
    H("HEAD", "/v2/keys/a?wait=true"),
    H("PUT", "/v2/keys/a?x=1;y=2&z=%zz"),
    H("PUT", "/v2/keys/a?z=%zz", b"value=%"),
    H("PUT", "/v2/keys/a", b"value=1&prevIndex=-3"),
    H("PUT", "/v2/keys/a?ttl=5", b"ttl=abc"),
    H("PUT", "/v2/keys/a", b"value=1", "application/x-www-form-urlencoded; charset"),
    H("PUT", "/v2/keys/a", b"value=1", "a/"),
    H("PUT", "/v2/keys/a?waitIndex=18446744073709551616"),
    H("PATCH", "/v2/keys/a"),
    H("GET", "/foo"),
    H("GET", "/v2/keysx"),
    H("GET", "/v2/stats/self/"),
    H("OPTIONS", "/v2/keys/a"),
    H("GET", "/v2/keys/a//b/../c?x=1&y=<"),
    H("PUT", "/v2/keys/a//b"),
    H("GET", "/v2/keys/%E2%82%AC/./x"),
    H("GET", "/version"),
    H("POST", "/version"),
    H("POST", "/v2/machines"),
    H("POST", "/v2/stats/leader"),
    H("GET", "/v2/members/abc"),
    H("DELETE", "/v2/members"),
    H("PATCH", "/v2/members/abc"),
    H("DELETE", "/v2/members/zz"),
    H("POST", "/v2/members", b"{}", None),
    H("POST", "/v2/members", b"gg", "application/json"),
    H("POST", "/v2/members", b"", "application/json"),
    H("POST", "/v2/members", b'{"peerURLs":["not a url"]}', "Application/JSON; charset=utf-8"),
    H("POST", "/v2/members", b'{"peerURLs":[]}', "application/json"),
    b"GET /v2/keys/a%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/keys/a HTTP/1.1\r\n\r\n",
]


@pytest.mark.parametrize(
    "data", CASES, ids=[c.split(b"\r\n")[0].decode() + f" #{i}" for i, c in enumerate(CASES)]
)
def test_same_answer_as_etcd(data: bytes, etcd_port: int, fastkv_port: int) -> None:
    assert exchange(fastkv_port, data) == exchange(etcd_port, data)


def answered(port: int, data: bytes) -> bool:
    """Whether the request got a normal answer: etcd refuses by closing, fastkv with a 400 or 414."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            head = s.recv(12)
        except (BrokenPipeError, ConnectionResetError):
            return False
    return head.startswith(b"HTTP/1.1 ") and head[9:12] not in (b"400", b"414")


@pytest.mark.parametrize("length", [4000, 4093, 4094, 4095, 4096, 4097, 100_000])
def test_first_line_limit_as_etcd(length: int, etcd_port: int, fastkv_port: int) -> None:
    line = b"GET /v2/keys/" + b"k" * (length - 22) + b" HTTP/1.1"
    assert len(line) == length
    data = line + b"\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert answered(fastkv_port, data) == answered(etcd_port, data) == (length <= 4094)


@pytest.mark.parametrize(
    "data", [b"GET /v2/keys/\r\n\r\n", b"GET /v2/keys/ HTTP/0.9\r\n\r\n", b"GET /v2/keys/ HTTP/2.0\r\n\r\n"]
)
def test_other_http_versions_refused_as_etcd(data: bytes, etcd_port: int, fastkv_port: int) -> None:
    assert not answered(etcd_port, data)
    assert not answered(fastkv_port, data)
