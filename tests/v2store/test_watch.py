"""Watches: live delivery, history, hidden rules, streams, ancestor removal (etcd-v2.md §2.7, §2.2)."""

from __future__ import annotations

import pytest

from fastkv.v2store.errors import V2Error
from fastkv.v2store.store import Store

from .conftest import Driver


def watch(d: Driver, path: str, recursive: bool = False, stream: bool = False, since: int = 0):
    got: list[bytes] = []
    w = d.store.watch(path, recursive, stream, since, lambda e: got.append(e.to_json()))
    return w, got


def test_live_watch_fires_once_and_is_removed(d: Driver) -> None:
    w, got = watch(d, "/k")
    assert w.start_index == 0 and w.history_event is None and d.store.watcher_count == 1
    d.put("/k", value="1")
    d.put("/k", value="2")
    assert got == [b'{"action":"set","node":{"key":"/k","value":"1","modifiedIndex":1,"createdIndex":1}}\n']
    assert d.store.watcher_count == 0


def test_remove_unregisters(d: Driver) -> None:
    w, got = watch(d, "/k")
    w.remove()
    w.remove()
    d.put("/k", value="1")
    assert got == [] and d.store.watcher_count == 0


def test_recursive_and_non_recursive_on_a_dir(d: Driver) -> None:
    d.put("/dir/x", value="0")
    _, flat = watch(d, "/dir")
    _, deep = watch(d, "/dir", recursive=True)
    d.put("/dir/x", value="1")
    assert flat == [] and len(deep) == 1
    d.delete("/dir", recursive=True)
    assert flat == [
        b'{"action":"delete","node":{"key":"/dir","dir":true,"modifiedIndex":3,"createdIndex":1},'
        b'"prevNode":{"key":"/dir","dir":true,"modifiedIndex":1,"createdIndex":1}}\n'
    ]


def test_ancestor_delete_reaches_watchers_below(d: Driver) -> None:
    d.put("/wp/c/d", value="1")
    _, got = watch(d, "/wp/c/d")
    d.delete("/wp", recursive=True)
    assert got == [
        b'{"action":"delete","node":{"key":"/wp","dir":true,"modifiedIndex":2,"createdIndex":1},'
        b'"prevNode":{"key":"/wp","dir":true,"modifiedIndex":1,"createdIndex":1}}\n'
    ]


def test_hidden_live_rules(d: Driver) -> None:
    _, parent = watch(d, "/hw", recursive=True, stream=True)
    _, direct = watch(d, "/hw/_h")
    _, root = watch(d, "/", recursive=True, stream=True)
    d.put("/hw/_h", value="1")
    d.put("/_top", value="1")
    assert parent == [] and root == [] and len(direct) == 1
    d.put("/hw/v", value="1")
    assert len(parent) == 1 and len(root) == 1


def test_history_does_not_filter_hidden(d: Driver) -> None:
    d.put("/hw/_h", value="1")
    w, got = watch(d, "/hw", recursive=True, since=1)
    assert got == [] and d.store.watcher_count == 0
    assert w.history_event.to_json() == (
        b'{"action":"set","node":{"key":"/hw/_h","value":"1","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert w.start_index == 1 and w.history_event.etcd_index == 1


def test_history_future_and_default_index(d: Driver) -> None:
    d.put("/a", value="1")
    w, got = watch(d, "/a", since=5)
    assert w.history_event is None and w.start_index == 1
    for i in range(4):
        d.put("/a", value=str(i))
    assert got == [
        b'{"action":"set","node":{"key":"/a","value":"3","modifiedIndex":5,"createdIndex":5},'
        b'"prevNode":{"key":"/a","value":"2","modifiedIndex":4,"createdIndex":4}}\n'
    ]


def test_stream_with_history_returns_only_that_event(d: Driver) -> None:
    d.put("/s", value="1")
    w, got = watch(d, "/s", stream=True, since=1)
    d.put("/s", value="2")
    assert w.history_event is not None and got == [] and d.store.watcher_count == 0


def test_stream_watch_gets_its_own_delete_twice(d: Driver) -> None:
    # Verified on etcd 3.4.23: the removed path and the ancestor walk both deliver it.
    _, got = watch(d, "/sw", stream=True)
    d.put("/sw", value="1")
    d.delete("/sw")
    assert len(got) == 3 and got[1] == got[2] and got[1].startswith(b'{"action":"delete"')


def test_refresh_is_not_delivered_and_skipped_in_history(d: Driver) -> None:
    d.put("/r", value="v", ttl=100)
    _, got = watch(d, "/r", stream=True)
    d.put("/r", refresh=True, ttl=200)
    d.put("/r", refresh=True, prev_exist=True, ttl=200)
    d.put("/r", refresh=True, prev_value="v", ttl=200)
    assert got == [] and d.store.index == 4
    w, _ = watch(d, "/r", since=2)
    assert w.history_event is None
    d.put("/r", value="w")
    w, _ = watch(d, "/r", since=2)
    assert w.history_event.node.modified_index == 5


def test_refresh_set_on_missing_key_fails(d: Driver) -> None:
    assert (
        d.put("/nope", refresh=True, ttl=5)
        == b'{"errorCode":100,"message":"Key not found","cause":"/nope","index":0}\n'
    )


def test_history_cleared_after_1000_events(d: Driver) -> None:
    for i in range(1100):
        d.put("/k", value=str(i))
    with pytest.raises(V2Error) as err:
        d.store.watch("/k", False, False, 8, lambda e: None)
    assert err.value.to_json() == (
        b'{"errorCode":401,"message":"The event in requested index is outdated and cleared",'
        b'"cause":"the requested history has been cleared [101/8]","index":1100}\n'
    )
    w = d.store.watch("/k", False, False, 101, lambda e: None)
    assert w.history_event.node.modified_index == 101


def test_history_ancestor_dir_delete_matches_by_prefix(d: Driver) -> None:
    d.put("/foo/x", value="1")
    d.delete("/foo", recursive=True)
    w, _ = watch(d, "/foo/x", since=2)
    assert w.history_event.action == "delete"
    w, _ = watch(d, "/foobar", since=2)  # etcd's plain string prefix test
    assert w.history_event is not None


def test_expire_delivers_dir_event_to_watchers_below(d: Driver) -> None:
    d.put("/ed", dir=True, ttl=1)
    d.put("/ed/a/b", value="1")
    _, got = watch(d, "/ed/a/b")
    _, root = watch(d, "/", recursive=True)
    d.now += 2_000_000_000
    d.sync()
    expected = (
        b'{"action":"expire","node":{"key":"/ed","dir":true,"modifiedIndex":3,"createdIndex":1},'
        b'"prevNode":{"key":"/ed","dir":true,"expiration":"2026-11-20T23:55:36Z","ttl":-1,'
        b'"modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert got == [expected] and root == [expected]


def test_watcher_memory_is_small() -> None:
    import tracemalloc

    s = Store()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ws = [s.watch(f"/w/{i % 100}", False, False, 0, print) for i in range(10_000)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert s.watcher_count == 10_000 and used / len(ws) < 300


def test_a_replacing_store_keeps_the_live_watchers() -> None:
    from fastkv.v2store.request import V2Request

    old = Store()
    got: list[str] = []
    w = old.watch("/k", False, True, 0, lambda e: got.append(e.action))
    assert w.history_event is None
    new = Store.recover(old.save())
    new.adopt_watchers(old)
    assert new.watcher_count == 1
    new.apply(V2Request("PUT", "/k", value="v"), 0)
    assert got == ["set"]
    w.remove()
    assert new.watcher_count == 0


class _Batches:
    """A fan_out that records each call: (event JSON, the sinks it was given)."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, list[str]]] = []

    def __call__(self, event, sinks: list[str]) -> None:
        self.calls.append((event.to_json(), list(sinks)))


def test_held_one_shot_sinks_are_delivered_in_one_batch_per_event(d: Driver) -> None:
    fan = _Batches()
    called: list[str] = []
    for i in range(3):
        d.store.watch("/b/k", False, False, 0, lambda e: called.append("callback"), f"s{i}", fan)
    d.store.watch("/b", True, False, 0, lambda e: called.append("rec"), "s-rec", fan)
    d.store.watch("/b/k", False, False, 0, lambda e: called.append("plain"))  # no sink: callback
    _, stream = watch(d, "/b/k", stream=True)
    # A stream watcher with a sink still goes through its callback, every event.
    d.store.watch("/b/k", False, True, 0, lambda e: called.append("stream-cb"), "s-stream", fan)
    hub = d.store.hub
    hub.hold()
    d.put("/b/k", value="1")
    d.put("/b/k", value="2")
    assert fan.calls == [] and called == [] and stream == []
    assert d.store.watcher_count == 2  # the one-shot watchers left at notify time
    hub.release()
    assert [sinks for _, sinks in fan.calls] == [["s-rec", "s0", "s1", "s2"]]  # "/b" before "/b/k"
    assert b'"value":"1"' in fan.calls[0][0]
    assert called == ["plain", "stream-cb", "stream-cb"]
    assert len(stream) == 2 and b'"value":"1"' in stream[0] and b'"value":"2"' in stream[1]


def test_outside_a_held_round_a_sink_watcher_gets_its_callback(d: Driver) -> None:
    fan = _Batches()
    got: list[bytes] = []
    d.store.watch("/c", False, False, 0, lambda e: got.append(e.to_json()), "sink", fan)
    d.put("/c", value="1")
    assert fan.calls == [] and len(got) == 1 and d.store.watcher_count == 0


def test_a_failing_fan_out_does_not_stop_the_round(d: Driver) -> None:
    def broken(event, sinks) -> None:
        raise RuntimeError("consumer bug")

    got: list[bytes] = []
    d.store.watch("/e", False, False, 0, lambda e: None, "sink", broken)
    d.store.watch("/e", False, False, 0, lambda e: got.append(e.to_json()))
    d.store.hub.hold()
    d.put("/e", value="1")
    d.store.hub.release()
    assert len(got) == 1 and d.store.watcher_count == 0
