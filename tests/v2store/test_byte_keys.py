"""Keys are byte strings: a key that is not UTF-8 reaches the store as a str whose invalid bytes are lone
surrogates (``surrogateescape``), stays distinct from every other key through the store, the WAL entry
encoding and snapshots, and is written in JSON as Go writes the raw bytes (one U+FFFD per invalid byte)."""

from __future__ import annotations

import orjson
import pytest

from fastkv.v2store.errors import V2Error
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store

from .conftest import NOW, Driver

FF = b"/al/\xff".decode("utf-8", "surrogateescape")
FE = b"/al/\xfe".decode("utf-8", "surrogateescape")


def test_distinct_invalid_bytes_are_distinct_keys(d: Driver) -> None:
    assert FF != FE
    assert d.put(FF, value="A") == (
        b'{"action":"set","node":{"key":"/al/\\ufffd","value":"A","modifiedIndex":1,"createdIndex":1}}\n'
    )
    # A create (no prevNode), not an update of the first key.
    assert d.put(FE, value="B") == (
        b'{"action":"set","node":{"key":"/al/\\ufffd","value":"B","modifiedIndex":2,"createdIndex":2}}\n'
    )
    assert orjson.loads(d.get(FF))["node"]["value"] == "A"
    assert orjson.loads(d.get(FE))["node"]["value"] == "B"
    listing = orjson.loads(d.get("/al", sorted=True))["node"]["nodes"]
    assert [n["value"] for n in listing] == ["B", "A"]  # 0xFE sorts before 0xFF
    # The replacement character itself is a third key.
    assert orjson.loads(d.get("/al/\ufffd"))["errorCode"] == 100


def test_error_causes_write_each_invalid_byte_as_replacement(d: Driver) -> None:
    key = b"/x\xe2\x82".decode("utf-8", "surrogateescape")
    assert d.get(key) == b'{"errorCode":100,"message":"Key not found","cause":"/x\\ufffd\\ufffd","index":0}\n'


def test_sorted_listing_follows_byte_order(d: Driver) -> None:
    # Bytes: EE 80 80 (U+E000) < F0 90 80 80 (U+10000) < FF, while code points put U+DCFF first.
    for name in ("\ue000", "\U00010000", "\udcff", "a"):
        d.put("/s/" + name, value=name.encode("utf-8", "surrogateescape").hex())
    nodes = d.store.get("/s", False, True, NOW).node.nodes
    assert nodes is not None
    assert [n.key for n in nodes] == ["/s/a", "/s/\ue000", "/s/\U00010000", "/s/\udcff"]


@pytest.mark.parametrize("where", ["path", "value", "prev_value", "all"])
def test_request_encoding_round_trips_lone_surrogates(where: str) -> None:
    odd = "\udcff\udc80x\ud800"
    kw = {"path": "/k", "value": "v", "prev_value": "p"}
    for field in ("path", "value", "prev_value") if where == "all" else (where,):
        kw[field] = kw[field] + odd
    req = V2Request("PUT", kw["path"], id=77, value=kw["value"], prev_value=kw["prev_value"], expiration=-5)
    data = req.encode()
    assert V2Request.peek_id(data) == 77
    back = V2Request.decode(data)
    assert (back.id, back.method, back.path, back.value, back.prev_value, back.expiration) == (
        77,
        "PUT",
        kw["path"],
        kw["value"],
        kw["prev_value"],
        -5,
    )


def test_request_encoding_is_unchanged_for_utf8() -> None:
    data = V2Request("PUT", "/k\ufffd", id=3, value="v").encode()
    assert len(orjson.loads(data)) == 13
    assert V2Request.decode(data).path == "/k\ufffd"


def test_distinct_keys_survive_the_log_and_a_snapshot() -> None:
    store = Store()
    for path, value in ((FF, "A"), (FE, "B")):
        store.apply(V2Request.decode(V2Request("PUT", path, value=value).encode()), NOW)
    copy = Store.recover(store.save())
    assert copy.get(FF, False, False, NOW).node.value == "A"
    assert copy.get(FE, False, False, NOW).node.value == "B"
    assert [e.node.key for e in copy.history] == [FF, FE]
    with pytest.raises(V2Error):
        copy.get("/al/\ufffd", False, False, NOW)
