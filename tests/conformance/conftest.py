"""Fixtures for the conformance suite: one target server per session, raw HTTP helpers, unique key prefixes.

The target is chosen by the environment:

- ``FASTKV_TARGET_URL=<url>``: an already running endpoint (nothing is started or stopped);
- ``FASTKV_TARGET=etcd``: a real etcd 3.4 started with ``--enable-v2``;
- ``FASTKV_TARGET=fastkv`` (the default, and what CI runs): fastkv started from this checkout, one member;
- ``FASTKV_TARGET=fastkv-cluster`` / ``FASTKV_TARGET=etcd-cluster``: a 3-member cluster (fastkv, or real etcd
  members to prove the suite), started with ``tests.support.procs.start_cluster``; once every member agrees
  on a leader, the suite talks to a member that is **not** the leader, so every write is forwarded and every
  watch is served from a follower's replicated store.

Tests that check single-member facts (the members list, ``/v2/stats/self`` state, ``/v2/stats/leader``) ask
``target.cluster_size`` and ``target.through_follower`` instead of assuming one member; the keys API
assertions are the same for every target.

Rules every test module follows:

- Talk HTTP with ``http.client`` or raw sockets, never with a client library, so the bytes on the wire are
  what is asserted.
- Each test works under its own key prefix (fixture ``prefix``), so tests never see each other's keys and
  can run against a long-lived endpoint.
- Never assert an absolute etcd index: etcd's first user write gets index 4 because of internal writes under
  ``/0``; assert relations instead (``createdIndex == X-Etcd-Index`` of the write, +1 per write, …).
- Every network wait has a timeout (``IO_TIMEOUT`` unless a test says otherwise).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.procs import ServerProcess, have_etcd, start_cluster, start_server

IO_TIMEOUT = 5.0
HEX_ID = re.compile(r"^[1-9a-f][0-9a-f]*$")
# Go's time.Time JSON: RFC3339Nano in UTC with trailing fractional zeros trimmed.
RFC3339_NANO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d*[1-9])?Z$")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}


@dataclass
class Target:
    """The endpoint under test: ``kind`` is 'etcd', 'fastkv', 'etcd-cluster', 'fastkv-cluster' or 'url'.

    ``members`` are every process started for the target (``server`` is the one under test among them);
    ``cluster_size`` is None for a 'url' target, whose membership is not known up front.
    """

    kind: str
    url: str
    server: ServerProcess | None = None
    members: list[ServerProcess] = field(default_factory=list)
    cluster_size: int | None = 1
    through_follower: bool = False
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80


@dataclass
class Reply:
    """One HTTP answer with its headers in wire order and the complete body."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def header_names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def etcd_index(self) -> int:
        value = self.header("X-Etcd-Index")
        assert value is not None, f"no X-Etcd-Index in {self.headers}"
        return int(value)


def encode_params(params: dict[str, Any] | list[tuple[str, Any]] | None) -> str:
    if not params:
        return ""
    items = params.items() if isinstance(params, dict) else params
    return urllib.parse.urlencode([(k, _param(v)) for k, v in items])


def _param(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def key_path(key: str) -> str:
    """The /v2/keys URL path of a key, percent-encoding everything but '/'."""
    return "/v2/keys" + urllib.parse.quote(key, safe="/")


class Api:
    """Minimal etcd v2 HTTP client: one connection per request, exact bytes kept."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def connect(self, timeout: float = IO_TIMEOUT) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.target.host, self.target.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | list[tuple[str, Any]] | None = None,
        form: dict[str, Any] | list[tuple[str, Any]] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = IO_TIMEOUT,
    ) -> Reply:
        qs = encode_params(query)
        url = path + ("?" + qs if qs else "")
        hdrs = dict(headers or {})
        if form is not None:
            body = encode_params(form).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn = self.connect(timeout)
        try:
            conn.request(method, url, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, resp.reason, resp.getheaders(), data)
        finally:
            conn.close()

    def get(self, key: str, **query: Any) -> Reply:
        return self.request("GET", key_path(key), query=query)

    def head(self, key: str, **query: Any) -> Reply:
        return self.request("HEAD", key_path(key), query=query)

    def put(self, key: str, query: dict[str, Any] | None = None, **form: Any) -> Reply:
        return self.request("PUT", key_path(key), query=query, form=form)

    def post(self, key: str, query: dict[str, Any] | None = None, **form: Any) -> Reply:
        return self.request("POST", key_path(key), query=query, form=form)

    def delete(self, key: str, **query: Any) -> Reply:
        return self.request("DELETE", key_path(key), query=query)

    def index(self) -> int:
        """The current etcd index (X-Etcd-Index of a root GET, which never changes it)."""
        return self.request("GET", "/v2/keys/").etcd_index

    def watch(self, key: str, timeout: float = IO_TIMEOUT, **query: Any) -> Watch:
        """Start ``GET key?wait=true&…`` and return once the response headers arrived."""
        query = {"wait": "true", **query}
        return Watch.open(self.target, key_path(key) + "?" + encode_params(query), timeout)


class Watch:
    """A raw-socket HTTP response whose headers have arrived; the chunked body is decoded on demand.

    Raw sockets (not http.client) so that "nothing arrives within t" can be checked without poisoning the
    connection, and so that a test can vanish mid-watch by closing the socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = b""  # received, not yet decoded
        self.decoded = b""  # de-chunked body bytes not yet returned
        self.ended = False
        self.status = 0
        self.headers: list[tuple[str, str]] = []

    @classmethod
    def open(cls, target: Target, path: str, timeout: float = IO_TIMEOUT) -> Watch:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        w = cls(sock)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n\r\n".encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in w.raw:
            w._recv(deadline)
        head, _, w.raw = w.raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        w.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            w.headers.append((name.strip(), value.strip()))
        if w.header("Transfer-Encoding") != "chunked":
            length = int(w.header("Content-Length") or "0")
            while len(w.raw) < length:
                w._recv(deadline)
            w.decoded, w.raw, w.ended = w.raw[:length], b"", True
        return w

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    def _recv(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("watch: no data in time")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("watch: connection closed by server")
        self.raw += data

    def _decode(self) -> None:
        while not self.ended:
            line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            size = int(line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            if size == 0:
                self.ended = True
            self.decoded += rest[:size]
            self.raw = rest[size + 2 :]

    def read_body(self, timeout: float = IO_TIMEOUT) -> bytes:
        """The rest of the body, up to the terminating chunk."""
        deadline = time.monotonic() + timeout
        self._decode()
        while not self.ended:
            self._recv(deadline)
            self._decode()
        body, self.decoded = self.decoded, b""
        return body

    def read_line(self, timeout: float = IO_TIMEOUT) -> bytes:
        """One streamed event line including its newline."""
        deadline = time.monotonic() + timeout
        self._decode()
        while b"\n" not in self.decoded:
            if self.ended:
                raise ConnectionError(f"stream ended without a full line: {self.decoded!r}")
            self._recv(deadline)
            self._decode()
        line, _, self.decoded = self.decoded.partition(b"\n")
        return line + b"\n"

    def nothing_within(self, seconds: float) -> bool:
        """True if no body byte arrives within ``seconds`` (the watch is still pending)."""
        self._decode()
        if self.decoded or self.ended:
            raise AssertionError(f"watch produced data unexpectedly: {self.decoded!r}")
        try:
            self._recv(time.monotonic() + seconds)
        except TimeoutError:
            return True
        self._decode()
        raise AssertionError(f"watch produced data unexpectedly: {self.raw!r} {self.decoded!r}")

    def close(self) -> None:
        self.sock.close()


CLUSTER_SIZE = 3
TARGET_KINDS = ("fastkv", "etcd", "fastkv-cluster", "etcd-cluster")


def _get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def _follower_of(members: list[ServerProcess], timeout: float = 20.0) -> ServerProcess:
    """A member that is not the leader, once every member reports the same leader id."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = []
        for m in members:
            try:
                seen.append(_get_json(m.url + "/v2/stats/self")[1])
            except OSError as e:
                seen.append(repr(e))
        leaders = {s["leaderInfo"]["leader"] if isinstance(s, dict) else None for s in seen}
        if len(leaders) == 1 and None not in leaders:
            leader = leaders.pop()
            leader_known = any(s["id"] == leader for s in seen)
            followers = [m for m, s in zip(members, seen, strict=True) if s["id"] != leader]
            if (
                leader_known
                and followers
                and all(s["state"] == "StateFollower" for s in seen if s["id"] != leader)
            ):
                return followers[0]
        time.sleep(0.05)
    raise RuntimeError(f"members did not agree on a leader within {timeout}s: {seen}")


def _start_target() -> Target:
    url = os.environ.get("FASTKV_TARGET_URL")
    if url:
        return Target("url", url.rstrip("/"), cluster_size=None)
    kind = os.environ.get("FASTKV_TARGET", "fastkv")
    if kind not in TARGET_KINDS:
        raise pytest.UsageError(f"FASTKV_TARGET={kind!r}: expected one of {', '.join(TARGET_KINDS)}")
    if kind.startswith("etcd") and not have_etcd():
        pytest.skip(f"FASTKV_TARGET={kind} but etcd is not installed")
    if not kind.endswith("-cluster"):
        server = start_server(kind)
        return Target(kind, server.url, server, [server])
    members = start_cluster(kind.removesuffix("-cluster"), CLUSTER_SIZE, token=f"conformance-{kind}")
    try:
        follower = _follower_of(members)
    except Exception:
        _stop_all(members)
        raise
    return Target(kind, follower.url, follower, members, CLUSTER_SIZE, through_follower=True)


def _stop_all(members: list[ServerProcess]) -> None:
    for m in members:
        m.stop()
        shutil.rmtree(m.data_dir, ignore_errors=True)
    if len(members) > 1:  # start_cluster put every member's directory under one temporary base
        shutil.rmtree(os.path.dirname(members[0].data_dir), ignore_errors=True)


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    t = _start_target()
    try:
        yield t
    finally:
        _stop_all(t.members)


@pytest.fixture(scope="session")
def api(target: Target) -> Api:
    return Api(target)


_SESSION_TAG = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:x}"


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test (in this or an earlier session) uses, e.g. ``/ct1a2b/test_cas_ok``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80]
    return f"/ct{_SESSION_TAG}/{name}"


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def raw_exchange(target: Target, data: bytes, timeout: float = IO_TIMEOUT, read_all: bool = True) -> bytes:
    """Send raw bytes on a fresh connection and return everything read until close or timeout."""
    with socket.create_connection((target.host, target.port), timeout=timeout) as s:
        s.sendall(data)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_all and response_complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def response_complete(data: bytes) -> bool:
    """True when ``data`` holds one complete Content-Length-framed HTTP response."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return m is not None and len(body) >= int(m.group(1))


def parse_raw(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the first response in ``data``."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body
