"""etcd 3.4 corners the store reproduces (checked against a real etcd by tests/conformance/test_divergences.py):
how /v2/stats/store counts refused operations, compare-and-delete on the root, and TTLs too large for Go."""

from __future__ import annotations

import orjson
import pytest

from fastkv.v2store.request import expiration_for_ttl

from .conftest import NOW, Driver, S

BIG = 99_999_999_999  # seconds: now + BIG overflows Go's UnixNano


def counters(d: Driver) -> dict:
    return {k: v for k, v in orjson.loads(d.store.stats_json()).items() if v}


def test_refusals_etcd_counts_as_successes(d: Driver) -> None:
    d.put("/dir", dir=True)
    d.put("/f", value="1")
    before = counters(d)
    assert orjson.loads(d.delete("/", recursive=True))["errorCode"] == 107
    assert orjson.loads(d.put("/", value="x", prev_exist=True))["errorCode"] == 107
    assert orjson.loads(d.put("/dir", value="x", prev_exist=True))["errorCode"] == 102
    assert orjson.loads(d.put("/", value="x", prev_value="y"))["errorCode"] == 107
    assert orjson.loads(d.delete("/", prev_value="x"))["errorCode"] == 102
    assert orjson.loads(d.delete("/dir", prev_value="x"))["errorCode"] == 102
    assert orjson.loads(d.delete("/f", prev_value="nope"))["errorCode"] == 101
    after = counters(d)
    assert after == {
        **before,
        "deleteSuccess": 1,
        "updateSuccess": 2,
        "compareAndSwapSuccess": 1,
        "compareAndDeleteSuccess": 3,
    }
    assert d.store.index == 2  # nothing changed


def test_failures_etcd_counts_as_failures(d: Driver) -> None:
    d.put("/f", value="1")
    d.put("/dir/x", value="1")
    assert orjson.loads(d.delete("/nope", prev_value="x"))["errorCode"] == 100
    assert orjson.loads(d.delete("/f/x", prev_value="x"))["errorCode"] == 104
    assert orjson.loads(d.put("/nope", value="x", prev_exist=True))["errorCode"] == 100
    assert orjson.loads(d.put("/dir", value="x", prev_value="y"))["errorCode"] == 102
    assert orjson.loads(d.delete("/dir"))["errorCode"] == 102
    assert orjson.loads(d.delete("/dir", dir=True))["errorCode"] == 108
    assert orjson.loads(d.put("/", value="x"))["errorCode"] == 107
    assert counters(d) == {
        "setsSuccess": 2,
        "setsFail": 1,
        "compareAndDeleteFail": 2,
        "updateFail": 1,
        "compareAndSwapFail": 1,
        "deleteFail": 2,
    }


def test_compare_and_delete_on_root_has_no_cause(d: Driver) -> None:
    assert d.delete("/", prev_index=1) == b'{"errorCode":102,"message":"Not a file","index":0}\n'


@pytest.mark.parametrize(
    "ttl,expected",
    [
        (0, NOW),
        (1, NOW + S),
        (9_223_372_036, NOW + 9_223_372_036 * S - (1 << 64)),  # the sum wraps
        (BIG, NOW + ((BIG * S) % (1 << 64)) - (1 << 64)),  # the duration wraps, then the sum
        ((1 << 64) - 1, NOW - S),  # int64(-1) seconds
        (20_000_000_000, NOW + 20_000_000_000 * S - (1 << 64)),
    ],
)
def test_expiration_for_ttl_wraps_like_go(ttl: int, expected: int) -> None:
    got = expiration_for_ttl(NOW, ttl)
    assert got == expected
    assert -(1 << 63) <= got < (1 << 63)


def test_huge_ttl_on_create_is_permanent(d: Driver) -> None:
    exp = expiration_for_ttl(NOW, BIG)
    assert exp < 0
    body = d.put("/k", value="v", expiration=exp)
    assert body == b'{"action":"set","node":{"key":"/k","value":"v","modifiedIndex":1,"createdIndex":1}}\n'
    assert not d.store.has_ttl_keys()


def test_wrapped_ttl_after_2000_is_a_real_deadline(d: Driver) -> None:
    exp = expiration_for_ttl(NOW, 20_000_000_000)  # wraps to 2076, as etcd showed
    body = orjson.loads(d.put("/k", value="v", expiration=exp))
    assert body["node"]["expiration"].startswith("2076-")
    assert body["node"]["ttl"] == -(-(exp - NOW) // S) == 1553255927  # etcd printed the same


def test_huge_ttl_on_update_expires_at_next_sync(d: Driver) -> None:
    d.put("/k", value="a")
    exp = expiration_for_ttl(NOW, BIG)
    body = orjson.loads(d.put("/k", value="b", prev_exist=True, expiration=exp))
    # Go's Time.Sub saturates: the ttl etcd prints for an expiry in the 1600s.
    assert body["node"]["ttl"] == -9223372036
    assert body["node"]["expiration"].startswith("16")
    d.sync()
    assert orjson.loads(d.get("/k"))["errorCode"] == 100
    assert d.store.stats.expireCount == 1
