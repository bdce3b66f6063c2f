"""Writing a decoded etcd data dir as a fastkv member's data dir, all or nothing.

The result is what a fastkv member would have on disk right after taking a snapshot at etcd's applied
index (docs/design.md, "Storage"):

- ``member/kv``: the RocksDB backend (storage/backend.py) holding the user's tree (etcd's ``/1``
  subtree as fastkv's root ``/``) with every createdIndex, modifiedIndex and absolute expiration, the
  store index equal to etcd's, etcd's store statistics, the membership (ids, names, peer and client
  URLs, removed ids) and the applied index and term;
- ``member/snap/<term>-<index>.snap`` and its ``.db`` checkpoint: a snapshot at the applied index, so
  the member can bring a lagging peer up to date from the first moment;
- ``member/wal``: a new WAL (storage/wal.py) whose metadata names the member (``--name``), its id and
  the cluster id, holding the snapshot marker, the hard state (etcd's term and vote, commit = the
  applied index) and etcd's entries after its commit index (tail.py), which Raft settles on start.

Everything is written below ``<parent>/.<name>.migrating`` and renamed to the target at the end (after
fsyncs), so an interrupted migration leaves no half-written data dir under the target's name; an
existing non-empty target is refused.

The membership record is the format ``fastkv.server.membership.Membership.save`` writes (this layer
sits below the server and must not import it): ``{"members": [{"id": hex, "name", "peerURLs",
"clientURLs"}], "removed": [ids]}``; snapshot metadata likewise follows ``EtcdServer._maybe_snapshot``.

The watch history (etcd's last 1000 events) is written with the user's events rewritten to fastkv's
root, so a watch with a ``waitIndex`` from before the migration is answered as etcd would.

Not written, because fastkv's store has no place for them yet: etcd's ``/0`` namespace beyond the
membership (the cluster version and the member nodes' own indexes) and the ``/2`` auth namespace
(their events stay in the history as refresh events, which no watcher receives); learner status (a
learner becomes a voter).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import orjson

from fastkv._native.keyindex import Event, NodeView, PathError
from fastkv.raft.types import HardState
from fastkv.storage.backend import Backend
from fastkv.storage.fileutil import fsync_dir
from fastkv.storage.snap import Snapshotter
from fastkv.storage.wal import DEFAULT_SEGMENT_SIZE_BYTES, WAL
from fastkv.v2store.store import INTERNAL_NAMESPACES, Store

from .datadir import EtcdState
from .errors import EtcdDataError
from .v2json import KEYS_PREFIX, user_key

TMP_SUFFIX = ".migrating"


class TargetError(Exception):
    """The fastkv data dir cannot be written where asked."""


def fastkv_store(state: EtcdState) -> Store:
    """etcd's v2 store as fastkv keeps it: the user's tree (etcd's /1) rooted at /, etcd's /0 (cluster)
    and /2 (v2 auth) as the store's internal namespaces, with etcd's index, history and stats."""
    tree = state.store.tree
    user = _subtree(tree, KEYS_PREFIX, keep_root_indexes=False)
    if user is None:
        raise EtcdDataError(f"{state.data_dir}: the v2 store has no {KEYS_PREFIX} namespace")
    namespaces = {}
    for name in INTERNAL_NAMESPACES:
        sub = _subtree(tree, "/" + name, keep_root_indexes=True)
        if sub is not None:
            namespaces[name] = sub
    snapshot = {
        "version": 1,
        "index": state.store.index,
        **user,
        "namespaces": namespaces,
        "history": [_event(e) for e in state.store.history],
        "stats": state.store.stats.to_list(),
    }
    return Store.from_state(snapshot)


def _subtree(tree: Any, prefix: str, keep_root_indexes: bool) -> dict[str, Any] | None:
    """The nodes under ``prefix`` with paths relative to it, in Store.save's form; None if absent."""
    try:
        top = tree.find(prefix)
    except PathError:
        return None
    cut = len(prefix)
    nodes: list[list[Any]] = []
    ttl: list[tuple[int, int, str]] = []
    for n in tree.subtree(top):
        path = n.path[cut:] or "/"
        if path == "/":
            if keep_root_indexes:
                nodes.append(["/", None, n.created_index, n.modified_index, 0])
            else:
                nodes.append(["/", None, 0, 0, 0])
            continue
        is_dir = n.children is not None
        nodes.append([path, None if is_dir else n.value, n.created_index, n.modified_index, n.expire_ns])
        if n.expire_ns:
            ttl.append((n.expire_ns, n.modified_index, path))
    ttl.sort()
    return {"nodes": nodes, "ttl_order": [t[2] for t in ttl]}


def _user_view(v: NodeView | None) -> list[Any] | None:
    if v is None:
        return None
    key = v.key[len(KEYS_PREFIX) :] or "/"
    return [key, v.value, v.dir, v.expiration, v.ttl, v.modified_index, v.created_index]


def _full_view(v: NodeView | None) -> list[Any] | None:
    if v is None:
        return None
    return [v.key, v.value, v.dir, v.expiration, v.ttl, v.modified_index, v.created_index]


def _event(e: Event) -> list[Any]:
    """A history event as fastkv keeps it: user events with keys relative to /1, the events of etcd's
    /0 and /2 namespaces as internal events (they keep their index's slot; no watcher sees them)."""
    if user_key(e.node.key) is not None:
        return [e.action, _user_view(e.node), _user_view(e.prev_node), e.etcd_index, e.refresh, False]
    return [e.action, _full_view(e.node), _full_view(e.prev_node), e.etcd_index, e.refresh, True]


def membership_record(state: EtcdState) -> bytes:
    members = [
        {"id": f"{m.id:x}", "name": m.name, "peerURLs": m.peer_urls, "clientURLs": m.client_urls}
        for m in sorted(state.members, key=lambda m: m.id)
    ]
    return orjson.dumps({"members": members, "removed": sorted(state.removed)})


def _check_target(target: str) -> None:
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise TargetError(f"{target}: exists and is not a directory")
        if os.listdir(target):
            raise TargetError(f"{target}: exists and is not empty; refusing to write over it")


def write_data_dir(
    state: EtcdState, target: str, name: str, segment_size_bytes: int = DEFAULT_SEGMENT_SIZE_BYTES
) -> Store:
    """Write ``state`` as the data dir of fastkv member ``name`` at ``target``; returns the store written.
    Raises TargetError (nothing written) or OSError (the temporary directory is removed)."""
    target = os.path.abspath(target)
    _check_target(target)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise TargetError(f"{parent}: no such directory")
    tmp = os.path.join(parent, "." + os.path.basename(target) + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)  # debris of an interrupted migration to the same target
    store = fastkv_store(state)
    try:
        _write(state, store, tmp, name, segment_size_bytes)
        _check_target(target)
        if os.path.isdir(target):
            os.rmdir(target)  # empty: checked just above
        os.rename(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return store


def _write(state: EtcdState, store: Store, tmp: str, name: str, segment_size_bytes: int) -> None:
    member_dir = os.path.join(tmp, "member")
    os.makedirs(os.path.join(member_dir, "snap"), mode=0o700)
    index, term = state.applied_index, state.applied_term
    membership = membership_record(state)
    backend = Backend.open(os.path.join(member_dir, "kv"))
    try:
        backend.write(backend.prepare(store.all_changes(), index, term, membership))
        backend.flush()
        snapshotter = Snapshotter(os.path.join(member_dir, "snap"))
        backend.checkpoint(snapshotter.data_dir(term, index))
    finally:
        backend.close()
    meta = orjson.dumps({"membership": membership.decode(), "index": index, "term": term})
    snapshotter.save(term, index, meta)
    metadata = orjson.dumps({"name": name, "member_id": state.member_id, "cluster_id": state.cluster_id})
    wal = WAL.create(os.path.join(member_dir, "wal"), metadata, segment_size_bytes=segment_size_bytes)
    try:
        wal.save_snapshot(term, index)
        hard_state = HardState(term=max(state.raft_term, term), vote=state.raft_vote, commit=index)
        wal.save(hard_state, state.tail)
    finally:
        wal.close()
    fsync_dir(member_dir)
    fsync_dir(tmp)
