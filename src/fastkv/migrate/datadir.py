"""An etcd 3.4/3.5 data dir, decoded: the v2 store as etcd would hold it after a restart.

``read_data_dir(path)`` reads ``member/snap`` and ``member/wal`` (see etcdsnap.py and etcdwal.py for
their rules), loads the newest usable snapshot's v2 store and replays the committed entries after it:

- normal entries: the v2 requests (PUT, POST, DELETE, SYNC, QGET; GET never reaches the log) through
  ``fastkv.v2store.store.Store`` with etcd's apply rules, over the full internal paths (``/0/...``,
  ``/1/...``, ``/2/...``); a request the store refuses changes nothing, as in etcd.  etcd 3.5's cluster
  version and member attribute requests become the PUTs 3.4 made.  v3 requests (the v3 API's keys,
  leases, auth) only touch the v3 backend and are counted, not applied.
- configuration changes: member add (``/0/members/<id>/raftAttributes`` created), remove (the member's
  directory deleted, ``/0/removed_members/<id>`` created) and update (raftAttributes updated), each
  skipped when etcd's validation would refuse it (adding a known or removed id, removing or updating an
  unknown one, or giving a member peer URLs another member has).
- entries after the commit index in the hard state were not known to be committed here: they are not
  applied, and are kept, as fastkv entries, for the migrated member's Raft log (tail.py), as etcd
  keeps them in its log: the cluster may have committed them.

The result keeps every node with its indexes and absolute expiration, the store index, the members
(from ``/0/members``, as etcd itself reads them back), the removed ids, the cluster id and this member's
id (from the WAL metadata), and the Raft term, vote, commit and applied index.

Refused (``EtcdDataError``): anything the readers refuse, a WAL whose commit index is beyond its last
entry, an entry type etcd 3.4/3.5 never writes, and a data dir whose v2 store holds no user key while
it has v3 data (v3 requests in the WAL, or a ``member/snap/db`` larger than an unused one): fastkv
serves the v2 API only, and migrating such a dir would silently leave every v3 key behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson

from fastkv._native.keyindex import PathError
from fastkv.raft.types import Entry
from fastkv.v2store.errors import V2Error
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store

from . import etcdsnap, etcdwal, v2json
from .errors import EtcdDataError
from .etcdpb import (
    CONF_ADD_LEARNER_NODE,
    CONF_ADD_NODE,
    CONF_REMOVE_NODE,
    CONF_UPDATE_NODE,
    ENTRY_CONF_CHANGE,
    ENTRY_NORMAL,
    RaftEntry,
    WalSnapshot,
    decode_conf_change,
    decode_normal_entry,
)
from .protowire import WireError
from .tail import fastkv_entries, v2_request
from .v2json import AUTH_PREFIX, KEYS_PREFIX, MEMBERS_DIR, REMOVED_DIR, VERSION_KEY

# A v3 backend that was never written to is a few pages of bbolt bookkeeping.
EMPTY_V3_DB_MAX_BYTES = 1 << 20


@dataclass(slots=True)
class EtcdMember:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool = False


@dataclass(slots=True)
class EtcdState:
    """What ``read_data_dir`` found (see the module docstring)."""

    data_dir: str
    member_id: int
    cluster_id: int
    members: list[EtcdMember]
    removed: list[int]
    cluster_version: str
    store: Store
    raft_term: int
    raft_vote: int
    commit_index: int
    applied_index: int
    applied_term: int
    snapshot_index: int
    snapshot_term: int
    replayed_entries: int
    uncommitted_entries: int
    v3_entries: int
    failed_requests: int
    torn_tail: str | None
    #: The entries after the commit index as fastkv entries (tail.py): kept in the Raft log.
    tail: list[Entry]

    @property
    def store_index(self) -> int:
        return self.store.index

    def user_key_count(self) -> int:
        """Files and directories below /1 (the user's keys)."""
        try:
            node = self.store.tree.find(KEYS_PREFIX)
        except PathError:
            return 0
        return sum(1 for _ in self.store.tree.subtree(node)) - 1

    @property
    def v2_auth_enabled(self) -> bool:
        """etcd's v2 auth was switched on (``/2/enabled``): its users and roles guard the keys."""
        try:
            return self.store.tree.find(AUTH_PREFIX + "/enabled").value == "true"
        except PathError:
            return False

    def member(self, member_id: int) -> EtcdMember | None:
        return next((m for m in self.members if m.id == member_id), None)


def _store_from_snapshot(snap: v2json.V2Snapshot) -> Store:
    ttl = sorted((n for n in snap.nodes if n[4]), key=lambda n: (n[4], n[3]))
    state = {
        "version": 1,
        "index": snap.index,
        "nodes": snap.nodes,
        "ttl_order": [n[0] for n in ttl],
        "history": snap.history,
        "stats": snap.stats,
    }
    return Store.recover(orjson.dumps(state))


def _fresh_store() -> Store:
    """etcd's store before its first entry: ``/0`` and ``/1`` directories at index 0."""
    nodes: list[list[Any]] = [["/", None, 0, 0, 0], ["/0", None, 0, 0, 0], ["/1", None, 0, 0, 0]]
    return _store_from_snapshot(v2json.V2Snapshot(nodes, 0, [0] * len(v2json.STATS_FIELDS), 2))


class _Replay:
    def __init__(self, store: Store, now_ns: int) -> None:
        self.store = store
        self.now_ns = now_ns
        self.v3_entries = 0
        self.failed = 0

    def apply(self, e: RaftEntry) -> None:
        if e.type == ENTRY_NORMAL:
            if e.data:
                self._normal(e)
        elif e.type == ENTRY_CONF_CHANGE:
            self._conf_change(e)
        else:
            raise EtcdDataError(f"entry {e.index} has type {e.type}, which etcd 3.4/3.5 never writes")

    def _put(self, req: V2Request) -> bool:
        try:
            self.store.apply(req, self.now_ns)
        except V2Error:
            self.failed += 1
            return False
        return True

    def _normal(self, e: RaftEntry) -> None:
        try:
            ne = decode_normal_entry(e.data)
        except WireError as err:
            raise EtcdDataError(f"entry {e.index}: undecodable request ({err})") from None
        if ne.v2 is not None:
            if ne.v2.method == "SYNC" and ne.v2.time:
                self.now_ns = ne.v2.time
            self._put(v2_request(ne.v2, ne.v2.path))
        elif ne.cluster_version is not None:
            self._put(V2Request("PUT", VERSION_KEY, value=ne.cluster_version))
        elif ne.member_attributes is not None:
            mid, name, urls = ne.member_attributes
            if self._exists(f"{MEMBERS_DIR}/{mid:x}"):
                value = orjson.dumps(_attributes_json(name, urls)).decode()
                self._put(V2Request("PUT", f"{MEMBERS_DIR}/{mid:x}/attributes", value=value))
        else:
            self.v3_entries += 1

    def _exists(self, path: str) -> bool:
        try:
            self.store.tree.find(path)
        except PathError:
            return False
        return True

    def _conf_change(self, e: RaftEntry) -> None:
        try:
            cc = decode_conf_change(e.data)
        except WireError as err:
            raise EtcdDataError(f"entry {e.index}: undecodable configuration change ({err})") from None
        mid = cc.node_id
        member_dir = f"{MEMBERS_DIR}/{mid:x}"
        removed = self._exists(f"{REMOVED_DIR}/{mid:x}")
        if cc.type in (CONF_ADD_NODE, CONF_ADD_LEARNER_NODE, CONF_UPDATE_NODE):
            try:
                m = orjson.loads(cc.context)
                peer_urls = list(m.get("peerURLs") or [])
                ctx_id = int(m["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise EtcdDataError(
                    f"entry {e.index}: configuration change context is not a member ({err})"
                ) from None
            if ctx_id != mid:
                raise EtcdDataError(
                    f"entry {e.index}: configuration change for {mid:x} carries member {ctx_id:x}"
                )
            raft_attrs: dict[str, Any] = {"peerURLs": peer_urls}
            if m.get("isLearner"):
                raft_attrs["isLearner"] = True
            value = orjson.dumps(raft_attrs).decode()
            # etcd's ValidateConfigurationChange: peer URLs another member uses refuse the change.
            taken = {u for m in _members(self.store)[0] if m.id != mid for u in m.peer_urls}
            if taken.intersection(peer_urls):
                return
            if cc.type == CONF_UPDATE_NODE:
                if self._exists(member_dir) and not removed:
                    self._put(V2Request("PUT", member_dir + "/raftAttributes", value=value, prev_exist=True))
            elif not self._exists(member_dir) and not removed:
                self._put(V2Request("PUT", member_dir + "/raftAttributes", value=value, prev_exist=False))
        elif cc.type == CONF_REMOVE_NODE:
            if self._exists(member_dir) and not removed:
                self._put(V2Request("DELETE", member_dir, dir=True, recursive=True))
                self._put(V2Request("PUT", f"{REMOVED_DIR}/{mid:x}", value="", prev_exist=False))
        else:
            raise EtcdDataError(f"entry {e.index}: unknown configuration change type {cc.type}")


def _first_sync_time(entries: list[RaftEntry], commit: int) -> int:
    """The time of the first SYNC entry (0 if none): the replay's clock until then.

    etcd logs no apply times, yet the events it keeps in its watch history carry the ``ttl`` left at
    apply time.  The leader proposes a SYNC with its clock every 500 ms while TTL keys exist, so the
    last SYNC's time stands in for the clock (the first one's before it): a replayed event's ``ttl``
    is then within a second of etcd's, its expiration exact."""
    for e in entries:
        if e.index > commit:
            break
        if e.type == ENTRY_NORMAL and e.data and b"SYNC" in e.data:
            try:
                req = decode_normal_entry(e.data).v2
            except WireError:
                continue
            if req is not None and req.method == "SYNC" and req.time:
                return req.time
    return 0


def _attributes_json(name: str, client_urls: list[str]) -> dict[str, Any]:
    # Go's json.Marshal of etcd's Attributes: both fields omitempty.
    out: dict[str, Any] = {}
    if name:
        out["name"] = name
    if client_urls:
        out["clientURLs"] = client_urls
    return out


def _members(store: Store) -> tuple[list[EtcdMember], list[int], str]:
    members: list[EtcdMember] = []
    tree = store.tree
    try:
        mdir = tree.find(MEMBERS_DIR)
        children = dict(mdir.children or {})
    except PathError:
        children = {}
    for node in sorted(children.values(), key=lambda n: n.path):
        name = node.path.rsplit("/", 1)[1]
        raft: dict[str, Any] = {}
        attrs: dict[str, Any] = {}
        for child_name, target in (("raftAttributes", raft), ("attributes", attrs)):
            child = (node.children or {}).get(f"{node.path}/{child_name}")
            if child is not None and child.value:
                try:
                    target.update(orjson.loads(child.value))
                except orjson.JSONDecodeError:
                    raise EtcdDataError(f"{MEMBERS_DIR}/{name}/{child_name} is not JSON") from None
        members.append(
            EtcdMember(
                int(name, 16),
                attrs.get("name", ""),
                list(raft.get("peerURLs") or []),
                list(attrs.get("clientURLs") or []),
                bool(raft.get("isLearner", False)),
            )
        )
    try:
        removed = sorted(int(p.rsplit("/", 1)[1], 16) for p in (tree.find(REMOVED_DIR).children or {}))
    except PathError:
        removed = []
    try:
        version = tree.find(VERSION_KEY).value
    except PathError:
        version = ""
    return members, removed, version


def _v3_db_bytes(member_dir: str) -> int:
    try:
        return os.path.getsize(os.path.join(member_dir, "snap", "db"))
    except OSError:
        return 0


def read_data_dir(data_dir: str, now_ns: int = 0, wal_dir: str | None = None) -> EtcdState:
    """Decode an etcd data dir (read-only); ``wal_dir`` is etcd's ``--wal-dir`` if it had one.
    ``now_ns`` only feeds the ``ttl`` of replayed events, which are not kept.  Raises EtcdDataError."""
    member_dir = os.path.join(data_dir, "member")
    wal_dir = wal_dir or os.path.join(member_dir, "wal")
    snap_dir = os.path.join(member_dir, "snap")
    if not os.path.isdir(member_dir):
        raise EtcdDataError(f"{data_dir}: not an etcd data dir (no member/ directory)")
    scan = etcdwal.scan(wal_dir)
    hard_state = etcdwal.last_hard_state(scan)
    recorded = {(s.index, s.term) for s in etcdwal.snapshot_markers(scan) if s.index <= hard_state.commit}
    start = WalSnapshot(0, 0)
    snapshot = None
    for term, index, name in reversed(etcdsnap.list_snapshots(snap_dir)):
        path = os.path.join(snap_dir, name)
        snap = etcdsnap.read_snapshot(path, term, index)
        if (index, term) in recorded and snapshot is None:
            snapshot = (path, snap)
            start = WalSnapshot(index, term)
    wal = etcdwal.read_from(scan, start)
    hs = wal.hard_state
    last_index = wal.entries[-1].index if wal.entries else start.index
    if hs.commit > last_index:
        raise EtcdDataError(
            f"{wal_dir}: the hard state says entries up to {hs.commit} are committed but the WAL ends at "
            f"{last_index}: entries are missing"
        )
    if snapshot is not None:
        path, snap = snapshot
        store = _store_from_snapshot(v2json.load(snap.data, path))
    else:
        store = _fresh_store()
    replay = _Replay(store, _first_sync_time(wal.entries, hs.commit) or now_ns)
    applied_index, applied_term = start.index, start.term
    replayed = 0
    for e in wal.entries:
        if e.index > hs.commit:
            break
        replay.apply(e)
        applied_index, applied_term = e.index, e.term
        replayed += 1
    members, removed, version = _members(store)
    state = EtcdState(
        data_dir=data_dir,
        member_id=wal.metadata.node_id,
        cluster_id=wal.metadata.cluster_id,
        members=members,
        removed=removed,
        cluster_version=version,
        store=store,
        raft_term=hs.term,
        raft_vote=hs.vote,
        commit_index=hs.commit,
        applied_index=applied_index,
        applied_term=applied_term,
        snapshot_index=start.index,
        snapshot_term=start.term,
        replayed_entries=replayed,
        uncommitted_entries=len(wal.entries) - replayed,
        v3_entries=replay.v3_entries,
        failed_requests=replay.failed,
        torn_tail=wal.torn,
        tail=fastkv_entries(wal.entries[replayed:]),
    )
    if state.user_key_count() == 0:
        v3_db = _v3_db_bytes(member_dir)
        if etcdwal.has_v3_requests(scan) or v3_db > EMPTY_V3_DB_MAX_BYTES:
            raise EtcdDataError(
                f"{data_dir}: holds v3 data (v3 requests in the WAL or a {v3_db}-byte member/snap/db) and no "
                "v2 keys: fastkv serves the v2 API only, so nothing would be migrated; refusing"
            )
    if state.member(state.member_id) is None:
        raise EtcdDataError(
            f"{data_dir}: member {state.member_id:x} of the WAL is not in the cluster's members"
        )
    return state
