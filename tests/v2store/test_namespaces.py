"""Internal namespaces (/0 cluster, /2 v2 auth): etcd's writes share the store index, the history's slots
and the stats with the user keys, and stay invisible to user reads and watches.

The sequences below are what etcd 3.4.23 writes (read back from its v2 snapshot, see docs/design.md
"Internal writes"); the indexes and counters asserted are etcd's."""

from __future__ import annotations

import orjson
import pytest

from fastkv.v2store.errors import V2Error
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store

from .conftest import NOW, S

MEMBER = "8e9e05c52164694d"
ATTRS = '{"name":"default","clientURLs":["http://localhost:2379"]}'
RAFT_ATTRS = '{"peerURLs":["http://localhost:2380"]}'


def internal(store: Store, method: str, path: str, **kw):
    return store.apply_internal(V2Request(method, path, **kw), NOW)


def bootstrap_single(store: Store) -> None:
    """A fresh single member: raftAttributes created (conf change), attributes published, version set."""
    internal(store, "PUT", f"/0/members/{MEMBER}/raftAttributes", value=RAFT_ATTRS, prev_exist=False)
    internal(store, "PUT", f"/0/members/{MEMBER}/attributes", value=ATTRS)
    internal(store, "PUT", "/0/version", value="3.4.0")


def write_stats(store: Store) -> dict:
    stats = orjson.loads(store.stats_json())
    return {k: v for k, v in stats.items() if v and not k.startswith("gets")}


def test_first_user_write_of_a_single_member_gets_index_4() -> None:
    store = Store()
    bootstrap_single(store)
    assert store.index == 3
    event = store.apply(V2Request("PUT", "/a", value="1"), NOW)
    assert event is not None
    assert (
        event.to_json()
        == b'{"action":"set","node":{"key":"/a","value":"1","modifiedIndex":4,"createdIndex":4}}\n'
    )
    # etcd's snapshot after this write: setsSuccess 3, createSuccess 1.
    assert write_stats(store) == {"setsSuccess": 3, "createSuccess": 1}


def test_internal_events_carry_full_paths_and_indexes() -> None:
    store = Store()
    e = internal(store, "PUT", f"/0/members/{MEMBER}/raftAttributes", value=RAFT_ATTRS, prev_exist=False)
    assert e is not None and e.internal
    assert (e.action, e.node.key, e.node.created_index, e.etcd_index) == (
        "create",
        f"/0/members/{MEMBER}/raftAttributes",
        1,
        1,
    )
    e = internal(store, "PUT", f"/0/members/{MEMBER}/attributes", value=ATTRS)
    assert e is not None and (e.action, e.node.key, e.node.modified_index) == (
        "set",
        f"/0/members/{MEMBER}/attributes",
        2,
    )
    got = store.get_internal("/0/members", recursive=True, sorted=True, now_ns=NOW)
    assert got.node.key == "/0/members"
    assert got.node.nodes is not None
    member = got.node.nodes[0]
    assert member.key == f"/0/members/{MEMBER}" and member.created_index == 1
    assert [n.key for n in member.nodes or []] == [
        f"/0/members/{MEMBER}/attributes",
        f"/0/members/{MEMBER}/raftAttributes",
    ]
    with pytest.raises(V2Error) as err:
        store.get_internal("/0/version")
    assert (err.value.code, err.value.cause, err.value.index) == (100, "/0/version", 2)


def test_three_member_bootstrap_and_membership_changes_take_etcds_indexes() -> None:
    store = Store()
    ids = ["3f76e0c6aa7a131a", "b77975edd94096b8", "f7db65710d0fddad"]
    for i in ids:  # the bootstrap conf changes, in id order
        internal(store, "PUT", f"/0/members/{i}/raftAttributes", value=RAFT_ATTRS, prev_exist=False)
    for i in (ids[2], ids[0], ids[1]):  # publications, in the order members got them committed
        internal(store, "PUT", f"/0/members/{i}/attributes", value=ATTRS)
    internal(store, "PUT", "/0/version", value="3.4.0")
    assert store.apply(V2Request("PUT", "/a", value="1"), NOW).etcd_index == 8  # type: ignore[union-attr]
    new = "861acc5be941ec66"
    internal(store, "PUT", f"/0/members/{new}/raftAttributes", value=RAFT_ATTRS, prev_exist=False)  # add: 9
    assert store.apply(V2Request("PUT", "/b", value="1"), NOW).etcd_index == 10  # type: ignore[union-attr]
    internal(
        store, "PUT", f"/0/members/{new}/raftAttributes", value=RAFT_ATTRS, prev_exist=True
    )  # update: 11
    assert store.apply(V2Request("PUT", "/c", value="1"), NOW).etcd_index == 12  # type: ignore[union-attr]
    internal(store, "DELETE", f"/0/members/{new}", recursive=True)  # remove: 13
    internal(store, "PUT", f"/0/removed_members/{new}", value="", prev_exist=False)  # 14
    assert store.apply(V2Request("PUT", "/d", value="1"), NOW).etcd_index == 15  # type: ignore[union-attr]
    # etcd's counters at that point (its /v2/stats/store, gets aside).
    assert write_stats(store) == {
        "setsSuccess": 8,
        "deleteSuccess": 1,
        "updateSuccess": 1,
        "createSuccess": 5,
    }
    removed = store.get_internal("/0/removed_members", now_ns=NOW).node
    assert removed.created_index == 14 and removed.nodes is not None
    assert removed.nodes[0].key == f"/0/removed_members/{new}" and removed.nodes[0].value == ""


def test_user_reads_never_see_internal_keys() -> None:
    store = Store()
    bootstrap_single(store)
    root = store.get("/", True, True, NOW)
    assert root.node.nodes is None and root.etcd_index == 3
    with pytest.raises(V2Error) as err:
        store.get("/0/members", False, False, NOW)
    assert (err.value.code, err.value.cause) == (100, "/0")
    # A user key named like an internal one is a different key.
    store.apply(V2Request("PUT", "/0/version", value="mine"), NOW)
    assert store.get("/0/version", False, False, NOW).node.value == "mine"
    assert store.get_internal("/0/version").node.value == "3.4.0"


def test_watchers_never_see_internal_events() -> None:
    store = Store()
    seen: list = []
    live = store.watch("/", True, True, 0, seen.append)
    bootstrap_single(store)
    internal(store, "DELETE", f"/0/members/{MEMBER}", recursive=True)
    assert seen == []
    store.apply(V2Request("PUT", "/a", value="1"), NOW)
    assert [e.node.key for e in seen] == ["/a"]
    live.remove()
    # From history: waitIndex 1 skips the internal events and answers the first user event.
    w = store.watch("/", True, False, 1, seen.append)
    assert w.history_event is not None and w.history_event.node.key == "/a"
    assert w.history_event.node.modified_index == 5
    w = store.watch("/0", True, False, 1, seen.append)
    assert w.history_event is None
    w.remove()


def test_internal_events_take_history_slots() -> None:
    store = Store()
    store.apply(V2Request("PUT", "/a", value="1"), NOW)
    for i in range(1000):
        internal(store, "PUT", "/0/version", value=f"3.4.{i}")
    with pytest.raises(V2Error) as err:
        store.watch("/a", False, False, 1, lambda e: None)
    assert err.value.code == 401
    assert err.value.cause == "the requested history has been cleared [2/1]"


def test_errors_and_root_rules_in_a_namespace() -> None:
    store = Store()
    with pytest.raises(V2Error) as err:
        internal(store, "PUT", "/0", value="x")
    assert (err.value.code, err.value.cause) == (107, "/")
    internal(store, "PUT", "/0/version", value="3.4.0")
    with pytest.raises(V2Error) as err:
        internal(store, "PUT", "/0/version/x", value="x")
    assert (err.value.code, err.value.cause, err.value.index) == (104, "/0/version", 1)
    with pytest.raises(V2Error) as err:
        internal(store, "PUT", "/0/version", value="x", prev_exist=False)
    assert (err.value.code, err.value.cause) == (105, "/0/version")
    with pytest.raises(V2Error) as err:
        internal(store, "PUT", "/1/a", value="x")
    assert err.value.code == 209
    with pytest.raises(V2Error):
        internal(store, "PUT", "/0/../x", value="x")
    assert store.index == 1


def test_v2_auth_namespace() -> None:
    store = Store()
    user = '{"user":"alice","password":"$2a$10$hash","roles":["r"]}'
    e = internal(store, "PUT", "/2/users/alice", value=user, prev_exist=False)
    assert e is not None and e.node.key == "/2/users/alice" and e.etcd_index == 1
    assert store.get_internal("/2/users/alice").node.value == user
    assert store.get("/", False, False, NOW).node.nodes is None


def test_internal_ttl_expires_in_deadline_order_with_user_keys() -> None:
    store = Store()
    store.apply(V2Request("PUT", "/u", value="1", expiration=NOW + 2 * S), NOW)
    internal(store, "PUT", "/2/t", value="1", expiration=NOW + S)
    seen: list = []
    store.watch("/", True, True, 0, seen.append)
    store.apply(V2Request("SYNC", "/", time=NOW + 3 * S), NOW + 3 * S)
    assert store.index == 4
    assert [e.node.key for e in seen] == ["/u"] and seen[0].node.modified_index == 4
    assert not store.has_ttl_keys()
    assert store.stats.expireCount == 2
    with pytest.raises(V2Error):
        store.get_internal("/2/t")


def test_save_recover_keeps_namespaces() -> None:
    store = Store()
    bootstrap_single(store)
    store.apply(V2Request("PUT", "/a", value="1"), NOW)
    internal(store, "PUT", "/2/users/\udcff", value="x")
    copy = Store.recover(store.save())
    assert copy.stats.to_list() == store.stats.to_list()
    assert copy.index == 5
    assert copy.get_internal("/0/version").node.value == "3.4.0"
    assert copy.get_internal("/2/users/\udcff").node.modified_index == 5
    assert [e.internal for e in copy.history] == [True, True, True, False, True]
    internal(copy, "PUT", "/0/version", value="3.5.0")
    assert copy.index == 6 and copy.stats.setsSuccess == store.stats.setsSuccess + 1


def test_take_changes_reports_namespace_changes() -> None:
    store = Store()
    store.take_changes()
    store.apply(V2Request("PUT", "/a", value="1"), NOW)
    assert store.take_changes().namespaces == {}
    bootstrap_single(store)
    changes = store.take_changes()
    assert set(changes.namespaces) == {"0"}
    assert sorted(changes.namespaces["0"].nodes) == [
        "/members",
        f"/members/{MEMBER}",
        f"/members/{MEMBER}/attributes",
        f"/members/{MEMBER}/raftAttributes",
        "/version",
    ]
    assert [e.node.key for e in changes.events][0] == f"/0/members/{MEMBER}/raftAttributes"
    assert changes.nodes == {}
    assert store.take_changes().namespaces == {}
