"""The RocksDB backend: apply rounds written as batches come back as the same store after a reopen."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import rocksdict

from fastkv.storage.backend import Backend, BackendError
from fastkv.storage.backend import _options as backend_options
from fastkv.v2store.errors import V2Error
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store

NOW = 1_795_218_935 * 1_000_000_000
S = 1_000_000_000
NAMES = ["a", "b", "_h", "c d", "é", "a-b", "a!", "\udcff"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def random_request(rng: random.Random, now: int) -> V2Request:
    path = "/" + "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))
    ttl = rng.choice([0, 0, 0, 1, 2, 5])
    expiration = now + ttl * S if ttl else 0
    value = rng.choice(["", "v", "w", "x" * 40, "<&>é"])
    op = rng.randrange(12)
    if op <= 2:
        return V2Request("PUT", path, value=value, expiration=expiration)
    if op == 3:
        return V2Request("PUT", path, dir=True, expiration=expiration)
    if op == 4:
        return V2Request("POST", path, value=value, expiration=expiration)
    if op == 5:
        return V2Request("PUT", path, value=value, prev_exist=True, expiration=expiration)
    if op == 6:
        return V2Request("PUT", path, refresh=True, prev_exist=True, expiration=now + 3 * S)
    if op == 7:
        return V2Request("PUT", path, value=value, prev_value=rng.choice(["v", "w"]), expiration=expiration)
    if op == 8:
        return V2Request("DELETE", path)
    if op == 9:
        return V2Request("DELETE", path, recursive=True)
    if op == 10:
        return V2Request("DELETE", path, prev_value=rng.choice(["v", "w"]))
    return V2Request("SYNC", "/", time=now)


def rounds(seed: int, max_ops: int = 8) -> Iterator[tuple[int, list[V2Request]]]:
    """An endless deterministic script: (now_ns, requests) per apply round, the clock 0.3 s per round."""
    rng = random.Random(seed)
    now = NOW
    while True:
        now += 3 * S // 10
        yield now, [random_request(rng, now) for _ in range(rng.randint(1, max_ops))]


def apply_round(store: Store, now: int, reqs: list[V2Request]) -> None:
    for req in reqs:
        try:
            if req.path.startswith(("/0/", "/2/")) and req.method != "SYNC":
                store.apply_internal(req, now)
            else:
                store.apply(req, now)
        except V2Error:
            pass


def internal_rounds(seed: int) -> Iterator[tuple[int, list[V2Request]]]:
    """``rounds`` with about a third of the requests moved into the internal namespaces /0 and /2."""
    rng = random.Random(seed + 1000)
    for now, reqs in rounds(seed):
        for req in reqs:
            if req.method != "SYNC" and rng.random() < 0.35:
                req.path = rng.choice(("/0", "/2")) + req.path
        yield now, reqs


def state(store: Store) -> tuple:
    """Everything a restart must restore; children order aside (not kept, etcd's is random)."""
    nodes = sorted(
        (n.path, n.is_dir(), n.value, n.created_index, n.modified_index, n.expire_ns, n.hidden)
        for n in store.tree.subtree(store.tree.root)
    )
    history = [(e.action, e.node, e.prev_node, e.etcd_index, e.refresh, e.internal) for e in store.history]
    ttl = [n.path for n in store._ttl_order()]
    namespaces = [
        (
            name,
            sorted(
                (n.path, n.is_dir(), n.value, n.created_index, n.modified_index, n.expire_ns)
                for n in ns.tree.subtree(ns.tree.root)
            ),
            [n.path for n in ns._ttl_order()],
        )
        for name, ns in sorted(store.namespaces.items())
    ]
    return (
        namespaces,
        store.index,
        nodes,
        ttl,
        history,
        store.history.start_index,
        store.history.last_index,
        store.stats.to_list(),
    )


def write_round(backend: Backend, store: Store, applied: int, term: int = 1) -> None:
    backend.write(backend.prepare(store.take_changes(), applied, term))


@pytest.fixture
def db_dir(tmp_path):
    return str(tmp_path / "db")


@pytest.mark.parametrize("seed", range(6))
def test_random_rounds_round_trip(db_dir, seed):
    store = Store()
    backend = Backend.open(db_dir)
    for applied, (now, reqs) in enumerate(rounds(seed), start=1):
        apply_round(store, now, reqs)
        write_round(backend, store, applied)
        if applied % 40 == 0:
            backend.close()
            backend = Backend.open(db_dir)
            assert backend.applied_index() == applied
            loaded = backend.load_store()
            assert state(loaded) == state(store)
        if applied == 200:
            break
    backend.close()


@pytest.mark.parametrize("seed", range(3))
def test_random_rounds_with_internal_namespaces_round_trip(db_dir, seed):
    store = Store()
    backend = Backend.open(db_dir)
    for applied, (now, reqs) in enumerate(internal_rounds(seed), start=1):
        apply_round(store, now, reqs)
        write_round(backend, store, applied)
        if applied % 40 == 0:
            backend.close()
            backend = Backend.open(db_dir)
            loaded = backend.load_store()
            assert state(loaded) == state(store)
            # The loaded store goes on like the original: same index, same namespace stats.
            if applied == 160:
                store = loaded
        if applied == 200:
            break
    assert any(e.internal for e in store.history)
    assert any(ns.tree.root.children for ns in store.namespaces.values())
    backend.close()


def test_all_changes_rewrites_namespaces(db_dir):
    store = Store()
    store.apply_internal(V2Request("PUT", "/0/members/a/attributes", value="x"), NOW)
    store.apply(V2Request("PUT", "/k", value="v"), NOW)
    backend = Backend.open(db_dir)
    write_round(backend, store, 1)
    other = Store()
    other.apply_internal(V2Request("PUT", "/2/users/u", value="y"), NOW)
    backend.write(backend.prepare(other.all_changes(), 2, 1))
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    assert state(loaded) == state(other)


def test_history_over_1000_events_keeps_last_1000(db_dir):
    store = Store()
    backend = Backend.open(db_dir)
    for i in range(2500):
        store.apply(V2Request("PUT", f"/k{i % 7}", value=str(i)), NOW)
        if i % 300 == 299:
            write_round(backend, store, i)
    # One round with more than 1000 events (a SYNC expiring many keys is one).
    for i in range(1500):
        store.apply(V2Request("PUT", f"/t/{i}", value="x", expiration=NOW + S), NOW)
    store.apply(V2Request("SYNC", "/", time=NOW + 2 * S), NOW + 2 * S)
    write_round(backend, store, 3000)
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    assert len(loaded.history) == 1000
    assert state(loaded) == state(store)
    assert loaded.get("/t", False, False, NOW).node.nodes is None  # empty dir left behind


def test_subtree_delete_and_expire_persisted(db_dir):
    store = Store()
    backend = Backend.open(db_dir)
    for i in range(50):
        store.apply(V2Request("PUT", f"/d/x{i}/y", value="1"), NOW)
        store.apply(V2Request("PUT", f"/d0/{i}", value="keep"), NOW)
    store.apply(V2Request("PUT", "/e", dir=True, expiration=NOW + S), NOW)
    store.apply(V2Request("PUT", "/e/f/g", value="1"), NOW)
    store.apply(V2Request("PUT", "/d-sibling", value="keep"), NOW)
    write_round(backend, store, 1)
    store.apply(V2Request("DELETE", "/d", recursive=True), NOW)
    store.apply(V2Request("SYNC", "/", time=NOW + S), NOW + S)
    write_round(backend, store, 2)
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    paths = sorted(n.path for n in loaded.tree.subtree(loaded.tree.root))
    assert paths == ["/", "/d-sibling", "/d0"] + sorted(f"/d0/{i}" for i in range(50))
    assert not loaded.has_ttl_keys()
    assert state(loaded) == state(store)
    # The database holds no stale records below the removed directories.
    db = rocksdict.Rdict(db_dir, backend_options())  # the options the database was made with
    keys = [k for k in db.keys(from_key=b"/") if k.startswith(b"/")]
    db.close()
    assert not [k for k in keys if k.startswith((b"/d/", b"/e"))]


def test_removed_then_recreated_in_one_round(db_dir):
    store = Store()
    backend = Backend.open(db_dir)
    store.apply(V2Request("PUT", "/a/b/c", value="old"), NOW)
    store.apply(V2Request("PUT", "/a/b/d", value="old"), NOW)
    write_round(backend, store, 1)
    store.apply(V2Request("PUT", "/a/b/e", value="new-then-gone"), NOW)
    store.apply(V2Request("DELETE", "/a", recursive=True), NOW)
    store.apply(V2Request("PUT", "/a/b/c", value="new"), NOW)
    write_round(backend, store, 2)
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    assert sorted(n.path for n in loaded.tree.subtree(loaded.tree.root)) == ["/", "/a", "/a/b", "/a/b/c"]
    assert loaded.tree.find("/a/b/c").value == "new"
    assert state(loaded) == state(store)


def test_hidden_keys_stay_hidden(db_dir):
    store = Store()
    backend = Backend.open(db_dir)
    store.apply(V2Request("PUT", "/dir/_hidden", value="h"), NOW)
    store.apply(V2Request("PUT", "/dir/shown", value="s"), NOW)
    store.apply(V2Request("PUT", "/_top/x", value="t"), NOW)
    write_round(backend, store, 1)
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    assert loaded.get("/dir", True, True, NOW).to_json() == store.get("/dir", True, True, NOW).to_json()
    assert loaded.get("/", True, True, NOW).to_json() == store.get("/", True, True, NOW).to_json()
    assert b"_hidden" not in loaded.get("/dir", True, True, NOW).to_json()
    assert loaded.get("/dir/_hidden", False, False, NOW).node.value == "h"


def test_ttl_heap_rebuilt_with_tie_order(db_dir):
    store = Store()
    backend = Backend.open(db_dir)
    # Equal deadlines set in an order that is not the key order: they must expire in the order set.
    for name in ["z", "m", "a", "q"]:
        store.apply(V2Request("PUT", f"/t/{name}", value="1", expiration=NOW + 5 * S), NOW)
    store.apply(V2Request("PUT", "/t/m", value="2", expiration=NOW + 5 * S), NOW)  # re-timed: now last
    store.apply(V2Request("PUT", "/early", value="1", expiration=NOW + 2 * S), NOW)
    store.apply(V2Request("PUT", "/perm", value="1"), NOW)
    write_round(backend, store, 1)
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    assert loaded.has_ttl_keys()
    sync = V2Request("SYNC", "/", time=NOW + 10 * S)
    expired = [e.node.key for e in loaded.delete_expired(sync.time, NOW + 10 * S)]
    assert expired == ["/early", "/t/z", "/t/a", "/t/q", "/t/m"]
    assert [e.node.key for e in store.delete_expired(sync.time, NOW + 10 * S)] == expired
    assert not loaded.has_ttl_keys()
    assert state(loaded) == state(store)


def test_meta_membership_and_checkpoint(db_dir, tmp_path):
    store = Store()
    backend = Backend.open(db_dir)
    assert backend.meta() == (0, 0, 0, None, 0)
    store.apply(V2Request("PUT", "/k", value="v1"), NOW)
    backend.write(backend.prepare(store.take_changes(), 7, 2, b"members-v1", NOW))
    store.apply(V2Request("PUT", "/k", value="v2"), NOW)
    backend.write(backend.prepare(store.take_changes(), 9, 3))
    # A round that did not move the cluster time keeps the last one written.
    assert backend.meta() == (9, 3, 2, b"members-v1", NOW)
    cp = str(tmp_path / "checkpoint")
    backend.checkpoint(cp)
    store.apply(V2Request("PUT", "/k", value="v3"), NOW)
    backend.write(backend.prepare(store.take_changes(), 10, 3, None, NOW + 5 * S))
    backend.close()
    copy = Backend.open(cp)
    assert copy.meta() == (9, 3, 2, b"members-v1", NOW)
    assert copy.load_store().tree.find("/k").value == "v2"
    copy.close()
    again = Backend.open(db_dir)
    assert again.meta() == (10, 3, 3, b"members-v1", NOW + 5 * S)
    assert again.load_store().tree.find("/k").value == "v3"


def test_all_changes_replaces_everything(db_dir):
    backend = Backend.open(db_dir)
    other = Store()
    other.apply(V2Request("PUT", "/stale/x", value="gone"), NOW)
    write_round(backend, other, 1)
    store = Store()
    for now, reqs in rounds(11):
        apply_round(store, now, reqs)
        if store.index > 300:
            break
    backend.write(backend.prepare(store.all_changes(), 500, 4, b"m"))
    assert store.take_changes().nodes == {}
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    assert state(loaded) == state(store)


def test_foreign_version_refused(db_dir):
    db = rocksdict.Rdict(db_dir, backend_options())  # the options the database was made with
    db.put(b"\x01v", b"99")
    db.close()
    with pytest.raises(BackendError, match="format version"):
        Backend.open(db_dir)


CHILD = """
import sys
sys.path.insert(0, {repo!r})
from tests.storage.test_backend import apply_round, rounds
from fastkv.storage.backend import Backend
from fastkv.v2store.store import Store
backend = Backend.open({path!r})
store = Store()
for applied, (now, reqs) in enumerate(rounds({seed}, 30), start=1):
    apply_round(store, now, reqs)
    backend.write(backend.prepare(store.take_changes(), applied, 1))
    if applied % 97 == 0:
        backend.flush()
        print(applied, flush=True)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_leaves_a_consistent_applied_state(db_dir, seed):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=REPO, path=db_dir, seed=seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    flushed = 0
    deadline = time.monotonic() + 30
    try:
        assert child.stdout is not None
        while flushed < 97 * 6 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            flushed = int(line)
        time.sleep(random.Random(seed).uniform(0, 0.05))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert flushed >= 97 * 6
    backend = Backend.open(db_dir)
    applied = backend.applied_index()
    assert applied >= flushed
    loaded = backend.load_store()
    reference = Store()
    for i, (now, reqs) in enumerate(rounds(seed, 30), start=1):
        apply_round(reference, now, reqs)
        if i == applied:
            break
    assert state(loaded) == state(reference)


def test_keys_differing_only_in_invalid_bytes_stay_distinct(db_dir):
    ff = b"/al/\xff".decode("utf-8", "surrogateescape")
    fe = b"/al/\xfe".decode("utf-8", "surrogateescape")
    store = Store()
    store.apply(V2Request("PUT", ff, value="A"), NOW)
    store.apply(V2Request("PUT", fe, value="B"), NOW)
    store.apply_internal(V2Request("PUT", "/2/users/" + ff[4:], value="C"), NOW)
    backend = Backend.open(db_dir)
    write_round(backend, store, 1)
    backend.close()
    loaded = Backend.open(db_dir).load_store()
    assert state(loaded) == state(store)
    assert loaded.get(ff, False, False, NOW).node.value == "A"
    assert loaded.get(fe, False, False, NOW).node.value == "B"
    assert loaded.get_internal("/2/users/" + ff[4:]).node.value == "C"
    assert [e.node.key for e in loaded.history] == [ff, fe, "/2/users/" + ff[4:]]
