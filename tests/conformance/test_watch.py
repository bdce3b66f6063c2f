"""Watches (etcd-v2.md §2.7): long poll, history, the 1000-event window, recursion, stream, hidden keys.

A watch's headers are flushed at registration; the event body arrives later.  ``X-Etcd-Index`` of a watch is
the store index at registration.  The event body delivered to a watcher is byte-identical to the body of
the write that caused it.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

from tests.conformance.conftest import Api

PENDING = 0.3


def test_long_poll_headers_arrive_before_the_event(api: Api, prefix: str) -> None:
    k = f"{prefix}/k"
    base = api.put(f"{prefix}/other", value="0").etcd_index
    w = api.watch(k)
    try:
        assert w.status == 200
        assert w.header("X-Etcd-Index") == str(base)
        assert w.header("Content-Type") == "application/json"
        assert w.header("Transfer-Encoding") == "chunked"
        assert int(w.header("X-Raft-Index") or 0) > 0
        assert int(w.header("X-Raft-Term") or 0) > 0
        assert w.header("X-Etcd-Cluster-Id")
        assert w.nothing_within(PENDING)
        write = api.put(k, value="hello")
        assert w.read_body() == write.body
    finally:
        w.close()


def test_watch_missing_key_waits_and_sees_create(api: Api, prefix: str) -> None:
    w = api.watch(f"{prefix}/nope/deeper")
    try:
        assert w.status == 200
        assert w.nothing_within(PENDING)
        c = api.put(f"{prefix}/nope/deeper", value="x", prevExist="false")
        assert w.read_body() == c.body
    finally:
        w.close()


def test_actions_delivered_to_watchers(api: Api, prefix: str) -> None:
    k = f"{prefix}/k"
    c = api.put(k, value="1")
    writes = [
        lambda: api.put(k, value="2", prevExist="true"),
        lambda: api.put(k, value="3", prevValue="2"),
        lambda: api.delete(k, prevValue="3"),
        lambda: api.put(k, value="4", prevExist="false"),
        lambda: api.delete(k),
    ]
    expected = ["update", "compareAndSwap", "compareAndDelete", "create", "delete"]
    index = c.etcd_index
    for write, action in zip(writes, expected, strict=True):
        w = api.watch(k, waitIndex=str(index + 1))
        try:
            r = write()
            body = w.read_body()
        finally:
            w.close()
        assert body == r.body
        assert json.loads(body)["action"] == action
        index = r.etcd_index


def test_wait_index_served_from_history(api: Api, prefix: str) -> None:
    k = f"{prefix}/k"
    first = api.put(k, value="1")
    api.put(k, value="2")
    last = api.put(f"{prefix}/z", value="3")
    w = api.watch(k, waitIndex=str(first.etcd_index))
    try:
        assert w.header("X-Etcd-Index") == str(last.etcd_index)
        assert w.read_body() == first.body
    finally:
        w.close()
    # waitIndex between events: the first matching event at or after it.
    w = api.watch(k, waitIndex=str(first.etcd_index + 1))
    try:
        assert json.loads(w.read_body())["node"]["value"] == "2"
    finally:
        w.close()


def test_wait_index_in_the_future(api: Api, prefix: str) -> None:
    k = f"{prefix}/k"
    c = api.put(k, value="1")
    w = api.watch(k, waitIndex=str(c.etcd_index + 2))
    try:
        api.put(k, value="2")
        assert w.nothing_within(PENDING)
        third = api.put(k, value="3")
        assert w.read_body() == third.body
    finally:
        w.close()


def test_history_is_cleared_after_1000_events(api: Api, prefix: str) -> None:
    first = api.put(f"{prefix}/k", value="start")
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda n: api.put(f"{prefix}/f{n % 50}", value=str(n)).status, range(1005)))
    assert set(statuses) <= {200, 201}
    r = api.get(f"{prefix}/k", wait="true", waitIndex=str(first.etcd_index))
    assert r.status == 400
    body = r.json()
    assert list(body) == ["errorCode", "message", "cause", "index"]
    assert body["errorCode"] == 401
    assert body["message"] == "The event in requested index is outdated and cleared"
    m = re.fullmatch(r"the requested history has been cleared \[(\d+)/(\d+)\]", body["cause"])
    assert m, body["cause"]
    assert int(m.group(2)) == first.etcd_index
    assert int(m.group(1)) == body["index"] - 999
    assert r.etcd_index == body["index"] >= first.etcd_index + 1005
    assert r.header("X-Raft-Index") is None
    assert r.body.endswith(b"}\n")


def test_recursive_watch(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/d/x", value="0")
    w = api.watch(f"{prefix}/d", recursive="true")
    try:
        r = api.put(f"{prefix}/d/a/b/c", value="deep")
        assert w.read_body() == r.body
    finally:
        w.close()


def test_non_recursive_watch_on_dir_ignores_children_but_sees_own_delete(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/d/x", value="0")
    w = api.watch(f"{prefix}/d")
    try:
        api.put(f"{prefix}/d/x", value="1")
        assert w.nothing_within(PENDING)
        r = api.delete(f"{prefix}/d", recursive="true")
        assert w.read_body() == r.body
    finally:
        w.close()


def test_ancestor_delete_notifies_descendant_watcher(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/wp/c/leaf", value="0")
    w = api.watch(f"{prefix}/wp/c/leaf")
    try:
        r = api.delete(f"{prefix}/wp", recursive="true")
        body = w.read_body()
    finally:
        w.close()
    assert body == r.body
    assert json.loads(body)["node"]["key"] == f"{prefix}/wp"


def test_sibling_prefix_does_not_match(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/ab", value="0")
    w = api.watch(f"{prefix}/a", recursive="true")
    try:
        api.put(f"{prefix}/ab", value="1")
        assert w.nothing_within(PENDING)
        r = api.put(f"{prefix}/a", value="mine")
        assert w.read_body() == r.body
    finally:
        w.close()


def test_stream_watch_delivers_one_line_per_event(api: Api, prefix: str) -> None:
    w = api.watch(f"{prefix}/s", recursive="true", stream="true")
    try:
        assert w.status == 200
        for n in range(3):
            r = api.put(f"{prefix}/s/k{n}", value=str(n))
            assert w.read_line() == r.body
        assert w.nothing_within(PENDING)
    finally:
        w.close()


def test_stream_watch_from_history_returns_one_event_only(api: Api, prefix: str) -> None:
    first = api.put(f"{prefix}/s", value="1")
    api.put(f"{prefix}/s", value="2")
    w = api.watch(f"{prefix}/s", stream="true", waitIndex=str(first.etcd_index))
    try:
        assert w.read_line() == first.body
        api.put(f"{prefix}/s", value="3")
        assert w.nothing_within(PENDING * 2)
    finally:
        w.close()


def test_hidden_keys_live_watch(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/hw/v", value="0")
    rec = api.watch(f"{prefix}/hw", recursive="true")
    direct = api.watch(f"{prefix}/hw/_h")
    try:
        h = api.put(f"{prefix}/hw/_h", value="hidden")
        assert direct.read_body() == h.body
        assert rec.nothing_within(PENDING)
        api.put(f"{prefix}/hw/_hd/x", value="hidden too")
        v = api.put(f"{prefix}/hw/v", value="visible")
        assert rec.read_body() == v.body
    finally:
        rec.close()
        direct.close()


def test_hidden_dir_recursive_watch_sees_its_own_children(api: Api, prefix: str) -> None:
    w = api.watch(f"{prefix}/_hd", recursive="true")
    try:
        r = api.put(f"{prefix}/_hd/x", value="1")
        assert w.read_body() == r.body
    finally:
        w.close()


def test_hidden_keys_leak_from_history(api: Api, prefix: str) -> None:
    h = api.put(f"{prefix}/hw/_h", value="hidden")
    api.put(f"{prefix}/hw/v", value="visible")
    r = api.get(f"{prefix}/hw", wait="true", recursive="true", waitIndex=str(h.etcd_index))
    assert r.status == 200
    assert r.body == h.body


def test_quorum_disables_wait(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/k", value="1")
    r = api.get(f"{prefix}/k", wait="true", quorum="true")
    assert r.status == 200
    assert json.loads(r.body)["action"] == "get"
    assert r.etcd_index == c.etcd_index


def test_refresh_does_not_notify_live_or_from_history(api: Api, prefix: str) -> None:
    k = f"{prefix}/r"
    c = api.put(k, value="v", ttl="100")
    w = api.watch(k)
    try:
        ref = api.put(k, ttl="100", refresh="true", prevExist="true")
        assert ref.etcd_index == c.etcd_index + 1
        assert w.nothing_within(PENDING)
        u = api.put(k, value="w", prevExist="true")
        assert w.read_body() == u.body
    finally:
        w.close()
    r = api.get(k, wait="true", waitIndex=str(ref.etcd_index))
    assert r.body == u.body


def test_pending_watch_counts_in_store_stats(api: Api, prefix: str) -> None:
    def watchers() -> int:
        return int(api.request("GET", "/v2/stats/store").json()["watchers"])

    base = watchers()
    w = api.watch(f"{prefix}/k")
    try:
        assert watchers() == base + 1
        api.put(f"{prefix}/k", value="1")
        w.read_body()
    finally:
        w.close()
    assert watchers() == base


def test_wait_index_zero_means_next_event(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/k", value="old")
    w = api.watch(f"{prefix}/k", waitIndex="0")
    try:
        assert w.nothing_within(PENDING)
        r = api.put(f"{prefix}/k", value="new")
        assert w.read_body() == r.body
    finally:
        w.close()


def test_watch_parse_error_carries_no_raft_headers(api: Api, prefix: str) -> None:
    r = api.get(f"{prefix}/k", wait="true", waitIndex="x")
    assert r.status == 400
    assert r.header("X-Raft-Index") is None and r.header("X-Etcd-Index") == "0"
