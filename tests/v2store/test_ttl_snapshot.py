"""TTL, SYNC expiry and snapshots (etcd-v2.md §2.4, §2.5, §2.9)."""

from __future__ import annotations

from fastkv.v2store.store import Store

from .conftest import NOW, Driver, S


def test_ttl_answer_and_countdown(d: Driver) -> None:
    assert d.put("/t", value="v", ttl=5) == (
        b'{"action":"set","node":{"key":"/t","value":"v","expiration":"2026-11-20T23:55:40Z","ttl":5,'
        b'"modifiedIndex":1,"createdIndex":1}}\n'
    )
    d.now += S // 2  # 4.5 s left -> ceil -> 5
    assert b'"ttl":5,' in d.get("/t")
    d.now += S // 2 + 1
    assert b'"ttl":4,' in d.get("/t")


def test_ttl_zero_has_expiration_but_no_ttl_and_goes_at_next_sync(d: Driver) -> None:
    assert d.put("/z", value="v", ttl=0) == (
        b'{"action":"set","node":{"key":"/z","value":"v","expiration":"2026-11-20T23:55:35Z",'
        b'"modifiedIndex":1,"createdIndex":1}}\n'
    )
    d.sync()
    assert d.get("/z") == b'{"errorCode":100,"message":"Key not found","cause":"/z","index":2}\n'


def test_sync_expires_in_deadline_order_with_own_indexes(d: Driver) -> None:
    d.put("/b", value="b", ttl=2)
    d.put("/a", value="a", ttl=1)
    d.put("/c", value="c", ttl=10)
    d.put("/p", value="p")
    got = []
    d.store.watch("/", True, True, 0, lambda e: got.append((e.action, e.node.key, e.index)))
    d.sync(at=NOW + 2 * S)  # expiry <= time goes
    assert got == [("expire", "/a", 5), ("expire", "/b", 6)]
    assert d.store.index == 6 and d.store.has_ttl_keys()
    d.sync(at=NOW + 10 * S)
    assert not d.store.has_ttl_keys() and d.store.stats.expireCount == 3


def test_expire_event_body(d: Driver) -> None:
    d.put("/ex", value="v", ttl=1)
    got = []
    d.store.watch("/ex", False, False, 0, lambda e: got.append(e.to_json()))
    d.now += S
    d.sync()
    assert got == [
        b'{"action":"expire","node":{"key":"/ex","modifiedIndex":2,"createdIndex":1},'
        b'"prevNode":{"key":"/ex","value":"v","expiration":"2026-11-20T23:55:36Z","modifiedIndex":1,"createdIndex":1}}\n'
    ]


def test_set_and_delete_drop_the_deadline(d: Driver) -> None:
    d.put("/a", value="1", ttl=1)
    d.put("/a", value="2")
    d.put("/b", value="1", ttl=1)
    d.delete("/b")
    d.put("/dd/x", value="1", ttl=1)
    d.delete("/dd", recursive=True)
    assert not d.store.has_ttl_keys()
    d.sync(at=NOW + 100 * S)
    assert b'"value":"2"' in d.get("/a")


def test_dir_expiry_takes_children_and_their_deadlines(d: Driver) -> None:
    d.put("/dir", dir=True, ttl=1)
    d.put("/dir/k", value="v", ttl=50)
    d.sync(at=NOW + S)
    assert not d.store.has_ttl_keys() and d.store.index == 3
    assert d.get("/dir/k") == b'{"errorCode":100,"message":"Key not found","cause":"/dir","index":3}\n'


def test_children_do_not_extend_a_dir_ttl(d: Driver) -> None:
    d.put("/dir", dir=True, ttl=1)
    d.put("/dir/k", value="v")
    d.put("/dir/k", value="w")
    d.sync(at=NOW + S)
    assert d.store.get("/", False, False, NOW).node.nodes is None


def test_old_expirations_mean_permanent_on_create(d: Driver) -> None:
    d.put("/old", value="v", expiration=5)
    assert not d.store.has_ttl_keys() and b"expiration" not in d.get("/old")


def test_snapshot_round_trip(d: Driver) -> None:
    d.put("/a/b", value="1")
    d.put("/t", value="v", ttl=30)
    d.put("/d", dir=True, ttl=60)
    d.put("/_h", value="hidden")
    d.put("/r", value="x", ttl=5)
    d.put("/r", refresh=True, ttl=9)
    d.delete("/a/b")
    d.get("/a")
    data = d.store.save()
    s2 = Store.recover(data)
    assert s2.index == d.store.index
    assert s2.get("/", True, True, NOW).to_json() == d.store.get("/", True, True, NOW).to_json()
    assert s2.get("/_h", False, False, NOW).to_json() == d.store.get("/_h", False, False, NOW).to_json()
    assert s2.save() == d.store.save()
    assert s2.stats_json() == d.store.stats_json()
    # History survives: a watch from index 1 is answered from it.
    w = s2.watch("/a/b", False, False, 1, print)
    assert w.history_event.to_json() == d.store.watch("/a/b", False, False, 1, print).history_event.to_json()
    # Refresh events stay skipped and TTLs keep their order.
    assert s2.watch("/r", False, False, 6, print).history_event is None
    from fastkv.v2store.request import V2Request

    s2.apply(V2Request("SYNC", "/", time=NOW + 100 * S), NOW)
    assert [e.node.key for e in s2.history][-3:] == ["/r", "/t", "/d"]
