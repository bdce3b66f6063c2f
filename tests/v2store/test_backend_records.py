"""Persistent records of native/keyindex.pyx against the pure-Python twin, and the store's dirty tracking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import fastkv._native.keyindex as native
import tests.twins.keyindex as twin
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store

NOW = 1_795_218_935_000_000_000
S = 1_000_000_000

texts = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
ints = st.integers(-(1 << 63), (1 << 63) - 1)
names = st.sampled_from(["a", "b", "_h", "é", "a-b", "\udcff", "x\x00y"])
paths = st.lists(names, min_size=1, max_size=3).map(lambda cs: "/" + "/".join(cs))


def view(mod, key, value, is_dir, nums):
    return mod.NodeView(key, None if is_dir else value, is_dir, nums[0], nums[1], None, nums[2], nums[3])


@settings(max_examples=300)
@given(
    st.sampled_from(native.ACTIONS),
    st.booleans(),
    ints,
    texts,
    texts,
    st.booleans(),
    st.tuples(ints, ints, ints, ints),
    st.none() | st.tuples(texts, texts, st.booleans(), st.tuples(ints, ints, ints, ints)),
)
def test_event_records_match_twin_and_round_trip(action, refresh, etcd_index, key, value, is_dir, nums, prev):
    out = []
    for mod in (native, twin):
        p = view(mod, prev[0], prev[1], prev[2], prev[3]) if prev else None
        e = mod.Event(action, view(mod, key, value, is_dir, nums), p, etcd_index, refresh)
        rec = mod.encode_event(e)
        back = mod.decode_event(rec)
        assert back.to_json() == e.to_json()
        assert (back.action, back.refresh, back.etcd_index) == (action, refresh, etcd_index)
        assert back.node.ttl == nums[1] and back.node.key == key
        out.append(rec)
    assert out[0] == out[1]
    assert native.decode_event(out[1]).to_json() == twin.decode_event(out[0]).to_json()


@settings(max_examples=200)
@given(st.lists(st.tuples(paths, texts, st.booleans(), ints, ints, st.sampled_from([0, NOW, NOW + 1]), ints)))
def test_node_records_and_bulk_load_match_twin(specs):
    trees = []
    for mod in (native, twin):
        tree = mod.KeyIndex()
        live = {}
        records = {}
        for path, value, is_dir, created, modified, expire, seq in specs:
            node = mod.Node(path, value, is_dir, created, expire)
            node.modified_index = modified
            live[node] = seq
            records[path] = node
        # Every parent as a directory record, so the load finds it.
        for path in list(records):
            parts = path.split("/")
            for i in range(2, len(parts)):
                parent = "/".join(parts[:i])
                old = records.get(parent)
                if old is None or old.children is None:
                    records[parent] = mod.Node(parent, "", True, 1, 0)
        puts = []
        mod.put_nodes(lambda k, v: puts.append((k, v)), records, live)  # noqa: B023
        puts.sort()
        count, ttl = mod.load_nodes(tree, iter(puts + [(b"\x02\x00\x00", b"")]))
        assert count == len(records)
        loaded = {n.path: n for n in tree.subtree(tree.root) if n.path != "/"}
        assert sorted(loaded) == sorted(records)
        for path, n in loaded.items():
            r = records[path]
            assert (n.value, n.is_dir(), n.created_index, n.modified_index, n.expire_ns, n.hidden) == (
                r.value,
                r.is_dir(),
                r.created_index,
                r.modified_index,
                r.expire_ns,
                r.hidden,
            )
        assert sorted((s, n.path) for s, n in ttl) == sorted(
            (live[r], p) for p, r in records.items() if r.expire_ns
        )
        trees.append((puts, sorted((n.path, n.value) for n in loaded.values())))
    assert trees[0] == trees[1]


def test_load_refuses_an_orphan_record():
    rec = native.encode_node(native.Node("/a/b", "v", False, 1), 0)
    try:
        native.load_nodes(native.KeyIndex(), iter([(b"/a/b\x00", rec)]))
    except ValueError as err:
        assert "without a parent" in str(err)
    else:
        raise AssertionError("orphan accepted")


def test_take_changes_tracks_mutations():
    store = Store()
    store.apply(V2Request("PUT", "/a/b/c", value="1"), NOW)
    store.apply(V2Request("PUT", "/x", value="1", expiration=NOW + 5 * S), NOW)
    ch = store.take_changes()
    assert sorted(ch.nodes) == ["/a", "/a/b", "/a/b/c", "/x"]  # auto-created parents included
    assert ch.removed == [] and ch.index == 2
    assert [e.index for e in ch.events] == [1, 2]
    assert ch.ttl_live[ch.nodes["/x"]] > 0
    assert store.take_changes().nodes == {} and store.take_changes().events == []

    store.apply(V2Request("PUT", "/x", refresh=True, prev_exist=True, expiration=NOW + 9 * S), NOW)
    store.apply(V2Request("PUT", "/a/b/d", value="2"), NOW)
    store.apply(V2Request("DELETE", "/a", recursive=True), NOW)
    store.apply(V2Request("PUT", "/a/e", value="3"), NOW)
    ch = store.take_changes()
    assert sorted(ch.nodes) == ["/a", "/a/e", "/x"]  # /a/b/d came and went with /a
    assert ch.removed == [("/a", True)]
    assert [e.action for e in ch.events] == ["update", "set", "delete", "set"]
    assert ch.events[0].refresh

    store.apply(V2Request("DELETE", "/a/e"), NOW)
    store.apply(V2Request("SYNC", "/", time=NOW + 10 * S), NOW + 10 * S)
    ch = store.take_changes()
    assert ch.nodes == {} and ch.removed == [("/a/e", False), ("/x", False)]
    assert [e.action for e in ch.events] == ["delete", "expire"]
    assert ch.stats == store.stats.to_list()
