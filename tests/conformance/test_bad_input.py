"""Raw-socket abuse against the target: malformed HTTP, bad encodings, huge keys and values, invalid
parameters, short bodies, slow and vanishing clients.

After every abuse the server must still answer and the data must be unchanged: a sentinel key keeps its
value and, when the request was rejected, the store index has not moved.

Where etcd answers with a v2 error the exact error is asserted.  Where etcd's answer comes from Go's HTTP
server or etcd's connection multiplexer (plain ``400 Bad Request`` text, or closing the connection without
a word), fastkv cannot match byte for byte; those cases accept a clean 4xx or a closed connection.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conformance.conftest import Api, Target, parse_raw, raw_exchange, response_complete, wait_until


@dataclass
class Sentinel:
    api: Api
    key: str
    value: str
    index: int

    def check(self, index_unchanged: bool = True) -> None:
        r = self.api.get(self.key)
        assert r.status == 200, "server no longer answers properly"
        assert r.json()["node"]["value"] == self.value
        if index_unchanged:
            assert r.etcd_index == self.index, "a rejected request changed the store"


@pytest.fixture
def sentinel(api: Api, prefix: str) -> Iterator[Sentinel]:
    value = "sentinel-" + prefix
    r = api.put(f"{prefix}/sentinel", value=value)
    assert r.status == 201
    s = Sentinel(api, f"{prefix}/sentinel", value, r.etcd_index)
    yield s
    s.check(index_unchanged=False)


def host_header(target: Target) -> bytes:
    return f"Host: {target.host}:{target.port}\r\n".encode()


def assert_rejected_cleanly(out: bytes) -> None:
    """Either the connection was closed without an answer, or the answer is a 4xx."""
    if out == b"":
        return
    status, _, _ = parse_raw(out)
    assert 400 <= status < 500, out[:300]


def still_usable_or_closed(target: Target, data: bytes) -> None:
    """Send ``data`` and then a valid request on the same connection: it must be answered or refused."""
    with socket.create_connection((target.host, target.port), timeout=3) as s:
        s.sendall(data)
        try:
            s.sendall(b"GET /version HTTP/1.1\r\n" + host_header(target) + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        buf = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            buf += chunk
            if b"etcdserver" in buf:
                break
        # Whatever came back must be well-formed responses; a closed connection is fine too.
        assert buf == b"" or buf.startswith(b"HTTP/1."), buf[:200]


MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "unknown http version": b"GET /v2/keys/ HTTP/9.9\r\n{host}\r\n",
    "space in path": b"GET /v2/keys/a b HTTP/1.1\r\n{host}\r\n",
    "no http version": b"GET /v2/keys/\r\n\r\n",
    "empty lines only": b"\r\n\r\n",
    "missing host on 1.1": b"GET /v2/keys/ HTTP/1.1\r\n\r\n",
    "header without colon": b"GET /v2/keys/ HTTP/1.1\r\n{host}NoColonHere\r\n\r\n",
    "bad percent in path": b"GET /v2/keys/a%zz HTTP/1.1\r\n{host}\r\n",
    "relative request target": b"GET v2/keys/a HTTP/1.1\r\n{host}\r\n",
    "control char in path": b"GET /v2/keys/a\x01b HTTP/1.1\r\n{host}\r\n",
    "non-numeric content-length": b"PUT /v2/keys/x HTTP/1.1\r\n{host}Content-Length: abc\r\n\r\n",
    "negative content-length": b"PUT /v2/keys/x HTTP/1.1\r\n{host}Content-Length: -1\r\n\r\n",
    "bad chunk size": (
        b"PUT /v2/keys/x HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\n"
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_http_is_rejected(target: Target, sentinel: Sentinel, name: str) -> None:
    data = MALFORMED[name].replace(b"{host}", host_header(target))
    out = raw_exchange(target, data, timeout=2, read_all=False)
    assert_rejected_cleanly(out)
    still_usable_or_closed(target, data)
    sentinel.check()


def test_huge_header_is_rejected(target: Target, sentinel: Sentinel) -> None:
    data = b"GET /v2/keys/ HTTP/1.1\r\n" + host_header(target) + b"X-Big: " + b"a" * (2 << 20) + b"\r\n\r\n"
    try:
        out = raw_exchange(target, data, timeout=3)
    except (BrokenPipeError, ConnectionResetError):
        out = b""
    assert_rejected_cleanly(out)
    sentinel.check()


def test_http_1_0_and_bare_lf_requests_are_served(target: Target, sentinel: Sentinel) -> None:
    key = sentinel.key.encode()
    out = raw_exchange(target, b"GET /v2/keys" + key + b" HTTP/1.0\r\n\r\n", timeout=3)
    status, headers, body = parse_raw(out)
    assert status == 200
    assert json.loads(body)["node"]["value"] == sentinel.value
    lf = b"GET /v2/keys" + key + b" HTTP/1.1\n" + host_header(target).replace(b"\r\n", b"\n") + b"\n"
    out = raw_exchange(target, lf, timeout=3, read_all=False)
    # etcd (Go) accepts bare LF line ends; a stricter parser may refuse them, but cleanly.
    if out and parse_raw(out)[0] != 200:
        assert_rejected_cleanly(out)
    sentinel.check()


def test_bad_percent_encoding_in_query_and_form(api: Api, target: Target, sentinel: Sentinel) -> None:
    expected = (
        b'{"errorCode":210,"message":"Invalid POST form","cause":"invalid URL escape \\"%zz\\"","index":0}\n'
    )
    r = api.request("GET", "/v2/keys" + sentinel.key + "?recursive=%zz")
    assert (r.status, r.body, r.header("X-Etcd-Index")) == (400, expected, "0")
    r = api.request(
        "PUT",
        "/v2/keys" + sentinel.key,
        body=b"value=%zz",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (r.status, r.body) == (400, expected)
    sentinel.check()


def test_invalid_utf8_in_key_and_value_is_replaced_in_json(api: Api, target: Target, prefix: str) -> None:
    r = api.request("PUT", "/v2/keys" + prefix + "/%ff%fe")
    assert r.status == 201
    assert r.body.startswith(
        b'{"action":"set","node":{"key":"' + prefix.encode() + b'/\\ufffd\\ufffd","value":""'
    )
    assert api.request("GET", "/v2/keys" + prefix + "/%ff%fe").status == 200
    r = api.request(
        "PUT",
        "/v2/keys" + prefix + "/v",
        body=b"value=%ff%fe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 201
    assert b'"value":"\\ufffd\\ufffd"' in r.body
    r = api.request("GET", "/v2/keys" + prefix + "/a%00b")
    assert r.status == 404
    assert r.json()["cause"] == prefix + "/a\x00b"
    assert b"/a\\u0000b" in r.body


@pytest.mark.parametrize(
    "encoded,replacements",
    [("%f0%9f%98", 3), ("%e2%82A", 2), ("%ed%a0%80", 3), ("%c0%af", 2)],
    ids=["truncated 4-byte", "truncated 3-byte then ASCII", "surrogate", "overlong"],
)
def test_each_invalid_byte_becomes_one_replacement_char(
    api: Api, prefix: str, encoded: str, replacements: int
) -> None:
    # Go decodes invalid UTF-8 one byte at a time: every byte of a bad sequence is one U+FFFD.
    r = api.request(
        "PUT",
        "/v2/keys" + prefix + "/r",
        body=f"value={encoded}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status in (200, 201)
    tail = "A" if encoded.endswith("A") else ""
    assert r.json()["node"]["value"] == "\ufffd" * replacements + tail


def test_raw_non_ascii_bytes_in_request_target(api: Api, target: Target, prefix: str) -> None:
    # etcd (Go) takes raw bytes in the path as the key: the same key as its percent-encoded form.  A
    # stricter HTTP parser may refuse them; that refusal must be a clean 4xx that changes nothing.
    before = api.index()
    request = b"PUT /v2/keys" + prefix.encode() + b"/\xff\xfe HTTP/1.1\r\n" + host_header(target)
    out = raw_exchange(target, request + b"Content-Length: 0\r\n\r\n", timeout=3, read_all=False)
    status, _, body = parse_raw(out) if out else (0, {}, b"")
    if status == 201:
        assert b'"key":"' + prefix.encode() + b'/\\ufffd\\ufffd"' in body
        assert api.request("GET", "/v2/keys" + prefix + "/%ff%fe").status == 200
    else:
        assert_rejected_cleanly(out)
        assert api.index() == before


def test_long_key_near_4k_works(api: Api, prefix: str) -> None:
    key = f"{prefix}/" + "k" * (3900 - len(prefix))
    r = api.put(key, value="long")
    assert r.status == 201
    assert api.get(key).json()["node"]["key"] == key


def test_huge_key_is_refused_without_damage(target: Target, sentinel: Sentinel, prefix: str) -> None:
    # etcd's connection multiplexer resets connections whose request line exceeds ~4 KB.
    path = f"/v2/keys{prefix}/" + "k" * 100_000
    data = f"PUT {path} HTTP/1.1\r\n".encode() + host_header(target) + b"Content-Length: 7\r\n"
    data += b"Content-Type: application/x-www-form-urlencoded\r\n\r\nvalue=1"
    try:
        out = raw_exchange(target, data, timeout=3)
    except (BrokenPipeError, ConnectionResetError):
        out = b""
    if out:
        status, _, _ = parse_raw(out)
        assert status in (201, 400, 413, 414, 431), out[:200]
        if status == 201:
            pytest.fail("100 KB key accepted; etcd refuses it")
    sentinel.check()


def test_5mb_value_round_trips(api: Api, prefix: str) -> None:
    value = "x" * (5 << 20)
    r = api.request(
        "PUT",
        "/v2/keys" + prefix + "/big",
        body=b"value=" + value.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status == 201
    g = api.request("GET", "/v2/keys" + prefix + "/big", timeout=30)
    assert g.status == 200
    assert g.json()["node"]["value"] == value


def test_form_over_10mb_is_post_too_large(api: Api, sentinel: Sentinel) -> None:
    body = b"value=" + b"x" * (10 << 20)
    r = api.request(
        "PUT",
        "/v2/keys" + sentinel.key,
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status == 400
    assert (
        r.body
        == b'{"errorCode":210,"message":"Invalid POST form","cause":"http: POST too large","index":0}\n'
    )
    sentinel.check()


def test_body_with_other_content_type_is_not_a_form(api: Api, prefix: str) -> None:
    r = api.request(
        "PUT", "/v2/keys" + prefix + "/j", body=b"value=1", headers={"Content-Type": "application/json"}
    )
    assert r.status == 201
    assert r.json()["node"]["value"] == ""


def test_chunked_request_body(target: Target, prefix: str, api: Api) -> None:
    data = (
        f"PUT /v2/keys{prefix}/c HTTP/1.1\r\n".encode()
        + host_header(target)
        + b"Transfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
        + b"3\r\nval\r\n4\r\nue=1\r\n0\r\n\r\n"
    )
    status, _, body = parse_raw(raw_exchange(target, data, timeout=3, read_all=False))
    assert status == 201
    assert json.loads(body)["node"]["value"] == "1"


@pytest.mark.parametrize(
    ("params", "code", "cause"),
    [
        ({"ttl": "18446744073709551616"}, 202, 'invalid value for "ttl"'),
        ({"ttl": " 5"}, 202, 'invalid value for "ttl"'),
        ({"ttl": "+5"}, 202, 'invalid value for "ttl"'),
        ({"ttl": "0x10"}, 202, 'invalid value for "ttl"'),
        ({"prevIndex": "18446744073709551616"}, 203, 'invalid value for "prevIndex"'),
        ({"prevIndex": "1e3"}, 203, 'invalid value for "prevIndex"'),
        ({"prevExist": ""}, 209, "invalid value for prevExist"),
        ({"dir": "yes"}, 209, 'invalid value for "dir"'),
        ({"noValueOnSuccess": "2"}, 209, 'invalid value for "noValueOnSuccess"'),
    ],
)
def test_invalid_parameter_values(
    api: Api, sentinel: Sentinel, params: dict[str, str], code: int, cause: str
) -> None:
    r = api.put(sentinel.key, **params)
    assert r.status == 400
    assert r.json()["errorCode"] == code and r.json()["cause"] == cause and r.json()["index"] == 0
    sentinel.check()


def test_invalid_wait_index_values(api: Api, sentinel: Sentinel) -> None:
    for bad in ("-1", "x", "18446744073709551616", "1.0"):
        r = api.get(sentinel.key, wait="true", waitIndex=bad)
        assert r.status == 400
        assert r.json() == {
            "errorCode": 203,
            "message": "The given index in POST form is not a number",
            "cause": 'invalid value for "waitIndex"',
            "index": 0,
        }
    sentinel.check()


def test_max_prev_index_is_a_failed_compare(api: Api, sentinel: Sentinel) -> None:
    r = api.put(sentinel.key, value="other", prevIndex="18446744073709551615")
    assert r.status == 412
    assert r.json()["cause"] == f"[18446744073709551615 != {sentinel.index}]"
    sentinel.check()


def test_unknown_parameters_are_ignored(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/u", value="v", foo="bar", TTL="x", Value="y")
    assert r.status == 201
    assert r.json()["node"]["value"] == "v" and "ttl" not in r.json()["node"]


def test_body_shorter_than_content_length_then_close(target: Target, sentinel: Sentinel) -> None:
    data = (
        f"PUT /v2/keys{sentinel.key} HTTP/1.1\r\n".encode()
        + host_header(target)
        + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nvalue=abc"
    )
    with socket.create_connection((target.host, target.port), timeout=3) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(2)
        try:
            out = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            out = b""
    assert_rejected_cleanly(out)
    sentinel.check()


def test_vanish_mid_headers_and_mid_body(target: Target, sentinel: Sentinel) -> None:
    partials = [
        b"PUT /v2/keys" + sentinel.key.encode(),
        b"PUT /v2/keys" + sentinel.key.encode() + b" HTTP/1.1\r\n" + host_header(target) + b"Content-Le",
        b"PUT /v2/keys"
        + sentinel.key.encode()
        + b" HTTP/1.1\r\n"
        + host_header(target)
        + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\nvalue=chan",
    ]
    for data in partials:
        s = socket.create_connection((target.host, target.port), timeout=3)
        s.sendall(data)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    time.sleep(0.1)
    sentinel.check()


def test_slow_byte_by_byte_client(target: Target, prefix: str, api: Api) -> None:
    body = b"value=slow"
    data = (
        f"PUT /v2/keys{prefix}/slow HTTP/1.1\r\n".encode()
        + host_header(target)
        + b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection((target.host, target.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in data:
            s.sendall(bytes([b]))
            time.sleep(0.002)
        buf = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if response_complete(buf):
                break
    status, _, resp = parse_raw(buf)
    assert status == 201
    assert json.loads(resp)["node"]["value"] == "slow"
    assert api.get(f"{prefix}/slow").json()["node"]["value"] == "slow"


def test_pipelined_requests_are_answered_in_order(target: Target, prefix: str) -> None:
    reqs = b""
    for n in range(3):
        body = f"value={n}".encode()
        reqs += (
            f"PUT /v2/keys{prefix}/p HTTP/1.1\r\n".encode()
            + host_header(target)
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    reqs += (
        f"GET /v2/keys{prefix}/p HTTP/1.1\r\n".encode() + host_header(target) + b"Connection: close\r\n\r\n"
    )
    out = raw_exchange(target, reqs, timeout=5)
    statuses, bodies = [], []
    while out:
        status, headers, body = parse_raw(out)
        statuses.append(status)
        bodies.append(json.loads(body))
        out = out.partition(b"\r\n\r\n")[2][int(headers["content-length"]) :]
    assert statuses == [201, 200, 200, 200]
    assert [b["node"]["value"] for b in bodies] == ["0", "1", "2", "2"]
    assert bodies[3]["action"] == "get"


def test_clients_vanishing_mid_watch(api: Api, target: Target, prefix: str, sentinel: Sentinel) -> None:
    def watchers() -> int:
        return int(api.request("GET", "/v2/stats/store").json()["watchers"])

    base = watchers()
    watches = [api.watch(f"{prefix}/w{n}", recursive="true") for n in range(5)]
    stream = api.watch(f"{prefix}/s", stream="true")
    assert wait_until(lambda: watchers() == base + 6, 3.0)
    for w in watches:
        w.close()
    stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    stream.close()
    assert wait_until(lambda: watchers() == base, 3.0), "watchers of vanished clients were not removed"
    for n in range(5):
        assert api.put(f"{prefix}/w{n}/x", value="1").status == 201
    assert api.put(f"{prefix}/s", value="1").status == 201
    sentinel.check(index_unchanged=False)
