"""Writes the hand-made seeds of every target into tests/fuzz/corpus/<target>/ (``python -m
tests.fuzz.make_seeds``).  Campaigns add their finds beside them (``python -m tests.fuzz.run T --merge``);
this script only (re)writes the files it names."""

from __future__ import annotations

import os
import struct

import orjson

from tests.fuzz import frame_target
from tests.fuzz.targets import SEEDS

FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"


def _req(
    method: str, target: str, body: bytes = b"", headers: bytes = b"Host: x\r\n", version: str = "1.1"
) -> bytes:
    head = f"{method} {target} HTTP/{version}\r\n".encode() + headers
    if body:
        head += FORM + b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def http_seeds() -> dict[str, bytes]:
    reqs = {
        "get": _req("GET", "/v2/keys/a"),
        "get-params": _req("GET", "/v2/keys/dir/?recursive=true&sorted=true&quorum=false"),
        "put": _req("PUT", "/v2/keys/a", b"value=1"),
        "put-cas": _req("PUT", "/v2/keys/a?prevValue=1&prevIndex=4", b"value=2&ttl=5"),
        "put-query": _req("PUT", "/v2/keys/a%2Fb?value=q&prevExist=false&noValueOnSuccess=true"),
        "post": _req("POST", "/v2/keys/queue", b"value=job"),
        "delete": _req("DELETE", "/v2/keys/a?dir=true&recursive=true"),
        "refresh": _req("PUT", "/v2/keys/a?refresh=true&ttl=10"),
        "bad-form": _req("PUT", "/v2/keys/a", b"value=%zz;x"),
        "watch": _req("GET", "/v2/keys/a?wait=true"),
        "watch-then-put": _req("GET", "/v2/keys/w?wait=true&stream=true")
        + _req("PUT", "/v2/keys/w", b"value=1"),
        "watch-index": _req("PUT", "/v2/keys/h", b"value=1")
        + _req("GET", "/v2/keys/h?wait=true&waitIndex=1"),
        "pipelined": b"".join(_req("PUT", f"/v2/keys/p{i}", b"value=%d" % i) for i in range(20)),
        "head": _req("HEAD", "/v2/keys/a"),
        "options": _req("OPTIONS", "*"),
        "redirect": _req("GET", "/v2/keys/../a//b/./c?x=1"),
        "absolute": _req("GET", "http://127.0.0.1:2379/v2/keys/a"),
        "http10": _req("GET", "/v2/keys/a", headers=b"", version="1.0"),
        "http10-keepalive": _req("PUT", "/v2/keys/a", b"value=1", b"Connection: keep-alive\r\n", "1.0"),
        "no-host": _req("GET", "/v2/keys/a", headers=b""),
        "close": _req("GET", "/version", headers=b"Host: x\r\nConnection: close\r\n")
        + _req("GET", "/health"),
        "members": _req("GET", "/v2/members")
        + _req(
            "POST",
            "/v2/members",
            headers=b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 38\r\n",
        )
        + b'{"peerURLs":["http://127.0.0.1:2390"]}',
        "member-put": _req(
            "PUT",
            "/v2/members/1234",
            headers=b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 38\r\n",
        )
        + b'{"peerURLs":["http://127.0.0.1:2391"]}'
        + _req("DELETE", "/v2/members/1234"),
        "stats": _req("GET", "/v2/stats/self")
        + _req("GET", "/v2/stats/store")
        + _req("GET", "/v2/stats/leader")
        + _req("GET", "/v2/machines")
        + _req("GET", "/metrics"),
        "chunked": b"PUT /v2/keys/c HTTP/1.1\r\nHost: x\r\n"
        + FORM
        + b"Transfer-Encoding: chunked\r\n\r\n3\r\nval\r\n4\r\nue=1\r\n0\r\n\r\n",
        "upgrade": b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2.0\r\n",
        "http09": b"GET /v2/keys/a\r\n",
        "bad-version": b"GET /v2/keys/a HTTP/2.0\r\nHost: x\r\n\r\n",
        "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "cors": _req("GET", "/v2/keys/a", headers=b"Host: x\r\nOrigin: http://example.test\r\n"),
        "bad-escape": _req("GET", "/v2/keys/%zz"),
        "long-line": _req("GET", "/v2/keys/" + "k" * 4100),
    }
    return {name: bytes([i]) + raw for i, (name, raw) in enumerate(reqs.items())}


def form_seeds() -> dict[str, bytes]:
    def one(method: int, ct: int, key: bytes, body: bytes, query: bytes, too_large: bool = False) -> bytes:
        return (
            bytes([method, ct, 0xFF if too_large else 0, len(key)]) + key + bytes([len(body)]) + body + query
        )

    return {
        "put-value": one(2, 1, b"a/b", b"value=1", b""),
        "put-every-param": one(
            2,
            1,
            b"k",
            b"value=v&ttl=30&prevValue=p&prevIndex=3",
            b"prevExist=true&noValueOnSuccess=1&dir=false&recursive=F&sorted=t&quorum=0&stream=FALSE",
        ),
        "get-watch": one(0, 0, b"d/", b"", b"wait=true&waitIndex=18446744073709551615&recursive=true"),
        "refresh": one(2, 1, b"r", b"", b"refresh=true&ttl=5"),
        "errors": one(3, 1, b"e", b"a=%zz&b=%4", b"c=1;d=2&ttl=-1"),
        "escapes": one(3, 1, b"%ff", b"k%20+v=%E2%82%AC+%ff&=empty&novalue&&", b"x=%2B%2b"),
        "media-params": one(2, 0xFF, b"", b"value=1", b"")[:2]
        + bytes([0, 0, 44])
        + b'application/x-www-form-urlencoded; q="a\\"b"'
        + bytes([0, 7])
        + b"value=1",
        "too-large": one(2, 1, b"a", b"value=1", b"", too_large=True),
    }


def wal_seeds() -> dict[str, bytes]:
    return {
        "flip-first": bytes([0, 0]) + struct.pack("<HHB", 0, 40, 4),
        "flip-last-record": bytes([0, 0]) + struct.pack("<HHB", 2, 300, 1),
        "flip-zeros": bytes([0, 1]) + struct.pack("<HHBHHB", 2, 900, 0x80, 2, 1000, 1),
        "truncate-last": bytes([1]) + struct.pack("<HH", 2, 150),
        "truncate-middle": bytes([1]) + struct.pack("<HH", 1, 500),
        "garbage-tail": bytes([2])
        + struct.pack("<HH", 2, 320)
        + b"\x08\x00\x00\x00\x01\x00\x00\x00"
        + b"\xab" * 40,
        "overwrite": bytes([3]) + struct.pack("<HH", 0, 100) + bytes([16]) + b"\x00" * 16,
        # Sealed records after the last one: the next entry, a hard state, a snapshot marker.
        "sealed-next": bytes([4])
        + struct.pack("<H", 8)
        + bytes([0, 0, 4, 2, 7])
        + b"next"
        + bytes([1, 0, 4, 1, 34])
        + bytes([3, 0, 4, 200]),
        # An entry whose index is 2**63 past the log's first index: once wrapped to a negative position,
        # cutting entries off the log's end instead of being an index gap.
        "sealed-huge-index": bytes([4])
        + struct.pack("<H", 8)
        + bytes([0, 1, 18])
        + struct.pack("<QQB", 4, (1 << 63) + 5, 0)
        + b"x",
    }


def frame_seeds() -> dict[str, bytes]:
    pieces, _ = frame_target._VALID
    stream = b"".join(pieces)
    out = {"raw-valid": b"\x00" + stream, "raw-bad-magic": b"\x03" + b"XX" + stream[2:60]}
    out["truncate"] = b"\x01\x01" + struct.pack("<H", len(stream) // 2)
    out["flip"] = b"\x04\x00\x00" + struct.pack("<HB", 30, 0x10)
    sealed = bytearray(b"\x02")
    for p in pieces[:-1]:
        ftype = p[3]
        env_len, payload_len = struct.unpack_from("<II", p, 4)
        if env_len > 255 or payload_len > 255:
            continue
        env, payload = p[20 : 20 + env_len], p[20 + env_len :]
        sealed += bytes([ftype, env_len]) + env + bytes([payload_len]) + payload + b"\x00"
    out["sealed-valid"] = bytes(sealed)
    env = orjson.dumps([7, 2, 1, 4, 0, 0, 0, False, 0, 0, 0, 0, [40, 3, [1, 2], 1 << 40]])
    out["sealed-huge-snapshot"] = b"\x02" + bytes([4, len(env)]) + env + b"\x00\x00"
    out["sealed-lying-length"] = b"\x02" + bytes([3, 2]) + b"[]" + b"\x00\x01" + struct.pack("<I", 0xFFFFFF00)
    return out


def main() -> None:
    for target, seeds in (
        ("http", http_seeds()),
        ("form", form_seeds()),
        ("wal", wal_seeds()),
        ("frame", frame_seeds()),
    ):
        d = os.path.join(SEEDS, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, f"seed-{name}"), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
