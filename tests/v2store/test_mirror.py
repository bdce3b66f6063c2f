"""Mirror apply (v2store/mirror.py): another server's nodes and events with their own indexes."""

from __future__ import annotations

import pytest

from fastkv.storage.backend import Backend
from fastkv.v2store import errors as E
from fastkv.v2store.errors import V2Error
from fastkv.v2store.mirror import apply_mirror, mirror_state, refuses_user_writes
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store

NOW = 1_700_000_000 * 10**9
SRC = "http://etcd:2379"


def bootstrapped() -> Store:
    """A fresh member's store: its own /0 writes took indexes 1-3."""
    s = Store()
    s.apply_internal(V2Request("PUT", "/0/members/1/raftAttributes", value="{}", prev_exist=False), NOW)
    s.apply_internal(V2Request("PUT", "/0/members/1/attributes", value="{}"), NOW)
    s.apply_internal(V2Request("PUT", "/0/version", value="3.4.0"), NOW)
    return s


def node(
    key: str, value: str = "", created: int = 0, modified: int = 0, expire: int = 0, dir: bool = False
) -> list:
    return [key, dir, value, created, modified or created, expire]


def initial(s: Store) -> dict:
    """The copy of a source at index 40: a dir, a file, a TTL file, a hidden key."""
    return apply_mirror(
        s,
        {
            "source": SRC,
            "begin": True,
            "nodes": [
                node("/d", created=10, dir=True),
                node("/d/f", "v", created=11, modified=20),
                node("/t", "ttl", created=30, expire=NOW + 60 * 10**9),
                node("/_h", "hidden", created=31),
            ],
            "parent_index": 40,
            "index": 40,
        },
        NOW,
    )


def test_copy_keeps_indexes_ttls_and_moves_the_store_index() -> None:
    s = bootstrapped()
    state = initial(s)
    assert state == {"source": SRC, "state": "following", "index": 40}
    assert s.index == 40
    f = s.get("/d/f", False, False, NOW).node
    assert (f.value, f.created_index, f.modified_index) == ("v", 11, 20)
    t = s.get("/t", False, False, NOW).node
    assert (t.expiration, t.ttl) == (NOW + 60 * 10**9, 60)
    assert s.get("/_h", False, False, NOW).node.value == "hidden"
    # The history holds no source event before 40: an older waitIndex is cleared, a newer one waits.
    with pytest.raises(V2Error) as err:
        s.watch("/", True, False, 10, lambda e: None)
    assert err.value.code == E.EVENT_INDEX_CLEARED
    w = s.watch("/", True, False, 41, lambda e: None)
    assert w.history_event is None


def test_events_apply_at_their_indexes_and_reach_watchers() -> None:
    s = bootstrapped()
    initial(s)
    seen = []
    s.watch("/", True, True, 0, seen.append)
    apply_mirror(
        s,
        {
            "source": SRC,
            "events": [
                ["set", node("/new/deep", "x", created=42), None, 42],  # 41: a refresh nobody saw
                ["compareAndSwap", node("/d/f", "w", created=11, modified=43), node("/d/f", "v", 11, 20), 43],
                ["create", node("/q/00000000000000000044", "job", created=44), None, 44],
                [
                    "delete",
                    node("/d", created=10, modified=45, dir=True),
                    node("/d", created=10, dir=True),
                    45,
                ],
                [
                    "expire",
                    node("/t", created=30, modified=46),
                    node("/t", "ttl", 30, 30, NOW + 60 * 10**9),
                    46,
                ],
            ],
        },
        NOW,
    )
    assert s.index == 46
    assert [e.index for e in seen] == [42, 43, 44, 45, 46]
    assert [e.action for e in seen] == ["set", "compareAndSwap", "create", "delete", "expire"]
    deep = s.get("/new", True, False, NOW).node
    assert deep.created_index == 42 and deep.nodes[0].created_index == 42  # implicit dir: the write's index
    for gone in ("/d", "/d/f", "/t"):
        with pytest.raises(V2Error):
            s.get(gone, False, False, NOW)
    # From history: the mirrored event at its index; the placeholder of 41 is skipped like a refresh.
    assert s.watch("/", True, False, 41, lambda e: None).history_event.index == 42  # type: ignore[union-attr]
    assert s.watch("/q", True, False, 41, lambda e: None).history_event.index == 44  # type: ignore[union-attr]


def test_user_writes_refused_while_following_and_accepted_after_finish() -> None:
    s = bootstrapped()
    assert refuses_user_writes(s) is None
    initial(s)
    assert "read-only mirror of http://etcd:2379" in (refuses_user_writes(s) or "")
    apply_mirror(s, {"source": SRC, "finish": True}, NOW)
    assert refuses_user_writes(s) is None
    assert mirror_state(s) == {"source": SRC, "state": "finished", "index": 40}
    assert s.apply(V2Request("PUT", "/after", value="1"), NOW).index == 41  # type: ignore[union-attr]
    with pytest.raises(V2Error) as err:
        apply_mirror(s, {"source": SRC, "begin": True}, NOW)
    assert err.value.code == E.ROOT_RONLY


def test_begin_refused_on_a_cluster_that_took_a_user_write() -> None:
    s = bootstrapped()
    s.apply(V2Request("PUT", "/x", value="1"), NOW)
    s.apply(V2Request("DELETE", "/x"), NOW)
    with pytest.raises(V2Error) as err:
        apply_mirror(s, {"source": SRC, "begin": True, "nodes": [node("/a", "1", 5)]}, NOW)
    assert err.value.code == E.ROOT_RONLY and "taken writes of its own" in err.value.cause
    assert mirror_state(s) is None and s.index == 5


def test_a_bad_batch_changes_nothing() -> None:
    s = bootstrapped()
    initial(s)
    before = s.save()
    for batch in (
        {
            "source": SRC,
            "events": [["set", node("/a", "1", 50), None, 50], ["set", node("/b", "1", 49), None, 49]],
        },
        {"source": SRC, "nodes": [node("/z", "1", 3)], "events": [["bogus", node("/a", "1", 50), None, 50]]},
        {"source": "http://other:2379", "index": 60},
        {"source": SRC, "nodes": [["/x"]]},
        {"source": SRC, "nodes": [node("/ok", "1", 50), ["/y", False, "v", "50", 50, 0]]},
        {"source": SRC, "remove": ["/d"], "nodes": [node("/ok", "1", 50), ["/y", False, None, 50, 50, 0]]},
        {"source": SRC, "events": [["set", node("/a", "1", 50), ["/a", False, "x", 1, 1, None], 50]]},
    ):
        with pytest.raises(V2Error):
            apply_mirror(s, batch, NOW)
        assert s.save() == before


def test_own_internal_writes_while_following_give_way_to_the_source() -> None:
    """A member publishing its attributes after a restart takes an index the source also uses."""
    s = bootstrapped()
    initial(s)
    s.apply_internal(V2Request("PUT", "/0/members/1/attributes", value='{"name":"m0"}'), NOW)
    assert s.index == 41
    apply_mirror(s, {"source": SRC, "events": [["set", node("/k", "v", 41), None, 41]]}, NOW)
    assert s.index == 41
    assert s.watch("/", True, False, 41, lambda e: None).history_event.node.key == "/k"  # type: ignore[union-attr]


def test_source_index_below_the_fresh_clusters_own() -> None:
    """A one-member source at index 2 into a cluster whose bootstrap took 1-3."""
    s = bootstrapped()
    apply_mirror(s, {"source": SRC, "begin": True, "nodes": [node("/a", "1", 2)], "index": 2}, NOW)
    assert s.index == 2
    assert s.apply  # user writes stay refused, the next source event takes index 3
    apply_mirror(s, {"source": SRC, "events": [["set", node("/b", "2", 3), None, 3]]}, NOW)
    assert s.get("/b", False, False, NOW).node.created_index == 3


def test_mirrored_state_survives_the_backend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = bootstrapped()
    backend = Backend.open(str(tmp_path / "kv"))
    backend.write(backend.prepare(s.all_changes(), 3, 1))
    initial(s)
    backend.write(backend.prepare(s.take_changes(), 4, 1))
    apply_mirror(s, {"source": SRC, "events": [["set", node("/d/g", "x", 45), None, 45]]}, NOW)
    backend.write(backend.prepare(s.take_changes(), 5, 1))
    backend.close()
    loaded = Backend.open(str(tmp_path / "kv")).load_store()
    assert loaded.index == 45
    assert loaded.get("/", True, True, NOW).to_json() == s.get("/", True, True, NOW).to_json()
    assert refuses_user_writes(loaded) is not None
    assert loaded.watch("/d", True, False, 41, lambda e: None).history_event.index == 45  # type: ignore[union-attr]
    with pytest.raises(V2Error) as err:
        loaded.watch("/", True, False, 10, lambda e: None)
    assert err.value.code == E.EVENT_INDEX_CLEARED and err.value.cause.startswith(
        "the requested history has been cleared [41/10]"
    )


def test_a_jump_past_the_history_size_survives_the_backend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = bootstrapped()
    backend = Backend.open(str(tmp_path / "kv"))
    backend.write(backend.prepare(s.all_changes(), 3, 1))
    apply_mirror(s, {"source": SRC, "begin": True, "nodes": [node("/a", "1", 500)], "index": 5000}, NOW)
    apply_mirror(s, {"source": SRC, "events": [["set", node("/b", "2", 5003), None, 5003]]}, NOW)
    backend.write(backend.prepare(s.take_changes(), 4, 1))
    backend.close()
    loaded = Backend.open(str(tmp_path / "kv")).load_store()
    for store in (s, loaded):
        assert store.index == 5003 and len(store.history) == 1000
        with pytest.raises(V2Error) as err:
            store.watch("/", True, False, 4500, lambda e: None)
        assert err.value.code == E.EVENT_INDEX_CLEARED
        assert "[5001/4500]" in err.value.cause
        assert store.watch("/", True, False, 5001, lambda e: None).history_event.index == 5003  # type: ignore[union-attr]
