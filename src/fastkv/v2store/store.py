"""The v2 store: etcd 3.4's ``v2store.store`` as a deterministic library (time is passed in).

Rules (see docs/design.md for the contract and etcd-v2.md §1.3-§2 for the behaviour):

- One global index.  Every successful mutation (set, create, update, CAS, delete, CAD, each expired
  node, and refreshes) takes the next index and produces exactly one event, which enters the history.
  Gets, watches and failed operations change nothing but the stats.
- Errors carry the store index at the moment they are raised.  Walk errors: 100 with the first missing
  prefix, 104 with the file in the way; 102/105/108 with the node path; 107 with ``/``.
- ``set`` replaces a file (new createdIndex); it never replaces a directory (102).  ``update`` and CAS keep
  createdIndex.  Updating a directory (TTL only) reports the new modifiedIndex but does not store it,
  exactly like etcd.  Intermediate directories are created with the write's index and no TTL.
- Absolute expirations come in the request (unix ns); ``ttl`` in answers is computed with the
  ``now_ns`` of the operation.  A new node whose expiry is before 2000-01-01 is permanent.
- Refreshes keep the value, take an index, enter the history, and are delivered to no watcher.
- SYNC removes every node whose expiry is <= ``req.time``, earliest first, one ``expire`` event each; an
  expiring directory takes its subtree with it and watchers anywhere below get the directory's event.
- Watchers are called synchronously during ``apply`` (see watcher.py).
- Dirty tracking for the persistent backend (storage/backend.py): every mutation files the node it
  created or changed under its path in ``_changed`` (auto-created parent directories included), and
  every removal files the removed subtree's root in ``_removed`` and drops the subtree's paths from
  ``_changed``.  ``take_changes`` hands both over with the history events since the last call.  Writing
  the removals first and then the current content of every changed path reproduces the tree exactly:
  a path re-created after its removal is in ``_changed`` again.
"""

from __future__ import annotations

import orjson

from fastkv._native.keyindex import (
    MIN_EXPIRE_NS,
    Event,
    KeyIndex,
    Node,
    NodeView,
    PathError,
    clean_path,
    ttl_of,
)
from fastkv.v2store import errors as E
from fastkv.v2store.errors import V2Error
from fastkv.v2store.event import (
    COMPARE_AND_DELETE,
    COMPARE_AND_SWAP,
    CREATE,
    DELETE,
    EXPIRE,
    GET,
    SET,
    UPDATE,
)
from fastkv.v2store.history import EventHistory
from fastkv.v2store.request import V2Request
from fastkv.v2store.stats import Stats
from fastkv.v2store.ttl import TTLIndex
from fastkv.v2store.watcher import Callback, Watcher, WatcherHub

HISTORY_CAPACITY = 1000
INT64_MAX = (1 << 63) - 1
SNAPSHOT_VERSION = 1


def _compare_fail_cause(node: Node, which: int, prev_value: str, prev_index: int) -> str:
    if which == 1:
        return f"[{prev_index} != {node.modified_index}]"
    if which == 2:
        return f"[{prev_value} != {node.value}]"
    return f"[{prev_value} != {node.value}] [{prev_index} != {node.modified_index}]"


class Store:
    __slots__ = ("index", "tree", "ttl", "history", "hub", "stats", "_changed", "_removed", "_taken_index")

    def __init__(self) -> None:
        self.index = 0
        self.tree = KeyIndex()
        self.ttl = TTLIndex()
        self.history = EventHistory(HISTORY_CAPACITY)
        self.hub = WatcherHub(self.history)
        self.stats = Stats()
        self._changed: dict[str, Node] = {}
        self._removed: list[tuple[str, bool]] = []
        self._taken_index = 0  # store index at the last take_changes

    # ----- dirty tracking -----------------------------------------------------------------------------

    def take_changes(self) -> Changes:
        """What changed since the last call (or since the store was built or loaded).

        The nodes are live objects: encode them (Backend.prepare) before the store is mutated again."""
        changed, self._changed = self._changed, {}
        removed, self._removed = self._removed, []
        events = self.history.last(self.index - self._taken_index)
        self._taken_index = self.index
        return Changes(changed, removed, events, self.index, self.ttl.live, self.stats.to_list())

    def all_changes(self) -> Changes:
        """The whole state as changes that replace everything (a fresh or reset backend); also resets the
        dirty tracking, like take_changes."""
        self.take_changes()
        nodes = {n.path: n for n in self.tree.subtree(self.tree.root)}
        del nodes["/"]
        return Changes(
            nodes, [("/", True)], list(self.history), self.index, self.ttl.live, self.stats.to_list()
        )

    def mark_clean(self) -> None:
        """Forget tracked changes: the state was just loaded from (or fully written to) the backend."""
        self._changed = {}
        self._removed = []
        self._taken_index = self.index

    # ----- reads --------------------------------------------------------------------------------------

    def get(self, path: str, recursive: bool, sorted: bool, now_ns: int) -> Event:
        if recursive:
            self.stats.getsRecursive += 1  # failed or not, like etcd's read counter
        try:
            node = self.tree.find(clean_path(path))
        except PathError as err:
            self.stats.getsFail += 1
            raise V2Error(err.code, err.cause, self.index) from None
        self.stats.getsSuccess += 1
        return Event(GET, node.load(recursive, sorted, now_ns), None, self.index)

    def adopt_watchers(self, replaced: Store) -> None:
        """Take over the live watchers of the store this one replaces (a snapshot installed from
        the leader), as etcd's store recovery keeps its watcher hub: they are notified of this
        store's events from now on."""
        self.hub = replaced.hub
        self.hub.history = self.history

    @property
    def watcher_count(self) -> int:
        return self.hub.count

    def has_ttl_keys(self) -> bool:
        return len(self.ttl) != 0

    def stats_json(self) -> bytes:
        return self.stats.to_json(self.hub.count)

    # ----- apply: etcd's apply_v2 ---------------------------------------------------------------------

    def apply(self, req: V2Request, now_ns: int) -> Event | None:
        """Apply one committed request; raises V2Error for store errors (the index is unchanged then)."""
        method = req.method
        # Clamp to int64 like the wire format of etcd's request (nothing the API sends should be larger).
        expire = req.expiration or 0
        if expire < 0:
            expire = 0
        elif expire > INT64_MAX:
            expire = INT64_MAX
        refresh = bool(req.refresh)
        if method == "PUT":
            prev_exist = req.prev_exist
            if prev_exist is not None:
                if prev_exist:
                    if not req.prev_index and not req.prev_value:
                        return self.update(req.path, req.value, expire, refresh, now_ns)
                    return self.compare_and_swap(
                        req.path, req.prev_value, req.prev_index, req.value, expire, refresh, now_ns
                    )
                return self.create(req.path, req.dir, req.value, False, expire, now_ns)
            if req.prev_index > 0 or req.prev_value:
                return self.compare_and_swap(
                    req.path, req.prev_value, req.prev_index, req.value, expire, refresh, now_ns
                )
            return self.set(req.path, req.dir, req.value, expire, refresh, now_ns)
        if method == "POST":
            return self.create(req.path, req.dir, req.value, True, expire, now_ns)
        if method == "DELETE":
            if req.prev_index > 0 or req.prev_value:
                return self.compare_and_delete(req.path, req.prev_value, req.prev_index, now_ns)
            return self.delete(req.path, req.dir, req.recursive, now_ns)
        if method == "QGET" or method == "GET":
            return self.get(req.path, req.recursive, req.sorted, now_ns)
        if method == "SYNC":
            self.delete_expired(req.time, now_ns)
            return None
        raise V2Error(E.INVALID_FIELD, f"unknown method {method!r}", self.index)

    # ----- mutations: etcd's store methods ------------------------------------------------------------

    def set(self, path: str, dir: bool, value: str, expire_ns: int, refresh: bool, now_ns: int) -> Event:
        path = clean_path(path)
        stats = self.stats
        prev: Node | None = None
        parent: Node | None = None
        walk_ok = False
        if not refresh:
            # The walk can only fail on a missing key (which set allows) when the parent is a
            # directory: then skip find and the PathError it would raise for every new key.
            slash = path.rfind("/")
            parent = self.tree.get(path[:slash] if slash > 0 else "/")
            walk_ok = parent is not None and parent.children is not None
        if not walk_ok:
            try:
                prev = self.tree.find(path)
            except PathError as err:
                if err.code != E.KEY_NOT_FOUND or refresh:
                    stats.setsFail += 1
                    raise V2Error(err.code, err.cause, self.index) from None
        if refresh:
            value = prev.value  # type: ignore[union-attr]
        try:
            # The replaced file's view becomes prevNode (etcd loads the same view of it).
            event = self._create_node(
                path, dir, value, True, expire_ns, SET, now_ns, parent if walk_ok else None
            )
        except V2Error:
            stats.setsFail += 1
            raise
        stats.setsSuccess += 1
        if refresh:
            event.refresh = True
            self.hub.add(event)
        else:
            self.hub.notify(event)
        return event

    def create(self, path: str, dir: bool, value: str, unique: bool, expire_ns: int, now_ns: int) -> Event:
        if unique:
            path = f"{path}/{self.index + 1:020d}"
        try:
            event = self._create_node(clean_path(path), dir, value, False, expire_ns, CREATE, now_ns)
        except V2Error:
            self.stats.createFail += 1
            raise
        self.stats.createSuccess += 1
        self.hub.notify(event)
        return event

    def _create_node(
        self,
        path: str,
        dir: bool,
        value: str,
        replace: bool,
        expire_ns: int,
        action: str,
        now_ns: int,
        parent: Node | None = None,
    ) -> Event:
        """etcd's internalCreate: the new node, its parents, and the event (not yet in the history).
        ``parent``: the existing directory at the path's parent, when the caller already looked it up."""
        if path == "/":
            raise V2Error(E.ROOT_RONLY, "/", self.index)
        if expire_ns < MIN_EXPIRE_NS:
            expire_ns = 0
        next_index = self.index + 1
        slash = path.rfind("/")
        if parent is None:
            try:
                parent = self.tree.ensure_dir(path[:slash] if slash > 0 else "/", next_index)
            except PathError as err:
                self.stats.setsFail += 1  # etcd counts walk failures as failed sets, whatever the op
                raise V2Error(err.code, err.cause, self.index) from None
        name = path[slash + 1 :]
        children = parent.children
        assert children is not None  # ensure_dir returns directories only
        prev_view = None
        old = children.get(name)
        if old is not None:
            if not replace:
                raise V2Error(E.NODE_EXIST, path, self.index)
            if old.children is not None:
                raise V2Error(E.NOT_FILE, path, self.index)
            prev_view = old.repr(False, False, now_ns)
            if old.expire_ns:
                self.ttl.remove(old)
        node = Node(path, value, dir, next_index, expire_ns)
        children[name] = node
        changed = self._changed
        changed[path] = node
        if parent.created_index == next_index and parent is not self.tree.root:
            # ensure_dir created it, maybe with ancestors: all of them carry this index.
            created: Node | None = parent
            while created is not None and created.created_index == next_index and created.path != "/":
                changed[created.path] = created
                created = self.tree.parent_of(created)
        if expire_ns:
            self.ttl.push(node)
        self.index = next_index
        return Event(action, node.repr(False, False, now_ns), prev_view, next_index)

    def update(self, path: str, value: str, expire_ns: int, refresh: bool, now_ns: int) -> Event:
        path = clean_path(path)
        try:
            if path == "/":
                raise V2Error(E.ROOT_RONLY, "/", self.index)
            node = self._find(path)
            is_dir = node.children is not None
            if is_dir and value:
                raise V2Error(E.NOT_FILE, path, self.index)
        except V2Error:
            self.stats.updateFail += 1
            raise
        if refresh:
            value = node.value
        next_index = self.index + 1
        prev_view = node.repr(False, False, now_ns)
        if not is_dir:
            node.value = value
            node.modified_index = next_index
        self._retime(node, expire_ns)
        self._changed[path] = node
        view = NodeView(
            path,
            None if is_dir else value,
            is_dir,
            node.expire_ns,
            ttl_of(node.expire_ns, now_ns) if node.expire_ns else 0,
            None,
            next_index,  # a directory reports the new index without keeping it (etcd quirk)
            node.created_index,
        )
        event = Event(UPDATE, view, prev_view, next_index)
        self.index = next_index
        self.stats.updateSuccess += 1
        if refresh:
            event.refresh = True
            self.hub.add(event)
        else:
            self.hub.notify(event)
        return event

    def compare_and_swap(
        self,
        path: str,
        prev_value: str,
        prev_index: int,
        value: str,
        expire_ns: int,
        refresh: bool,
        now_ns: int,
    ) -> Event:
        path = clean_path(path)
        try:
            if path == "/":
                raise V2Error(E.ROOT_RONLY, "/", self.index)
            node = self._compared_file(path, prev_value, prev_index)
        except V2Error:
            self.stats.compareAndSwapFail += 1
            raise
        if refresh:
            value = node.value
        self.index += 1
        prev_view = node.repr(False, False, now_ns)
        node.value = value
        node.modified_index = self.index
        self._retime(node, expire_ns)
        self._changed[path] = node
        event = Event(COMPARE_AND_SWAP, node.repr(False, False, now_ns), prev_view, self.index)
        self.stats.compareAndSwapSuccess += 1
        if refresh:
            event.refresh = True
            self.hub.add(event)
        else:
            self.hub.notify(event)
        return event

    def delete(self, path: str, dir: bool, recursive: bool, now_ns: int) -> Event:
        path = clean_path(path)
        try:
            if path == "/":
                raise V2Error(E.ROOT_RONLY, "/", self.index)
            if recursive:
                dir = True
            node = self._find(path)
            if node.children is not None:
                if not dir:
                    raise V2Error(E.NOT_FILE, path, self.index)
                if node.children and not recursive:
                    raise V2Error(E.DIR_NOT_EMPTY, path, self.index)
        except V2Error:
            self.stats.deleteFail += 1
            raise
        next_index = self.index + 1
        event = Event(
            DELETE,
            NodeView(path, None, node.children is not None, 0, 0, None, next_index, node.created_index),
            node.repr(False, False, now_ns),
            next_index,
        )
        self._remove(node, event)
        self.index = next_index
        self.stats.deleteSuccess += 1
        self.hub.notify(event)
        return event

    def _compared_file(self, path: str, prev_value: str, prev_index: int) -> Node:
        """The file at ``path`` if it passes the compare-and-swap/delete conditions; else etcd's
        error: 100 missing, 102 a directory, 101 with the failed conditions as cause."""
        node = self._find(path)
        if node.children is not None:
            raise V2Error(E.NOT_FILE, path, self.index)
        which = node.compare(prev_value, min(prev_index, INT64_MAX))
        if which:
            raise V2Error(E.TEST_FAILED, _compare_fail_cause(node, which, prev_value, prev_index), self.index)
        return node

    def compare_and_delete(self, path: str, prev_value: str, prev_index: int, now_ns: int) -> Event:
        path = clean_path(path)
        try:
            node = self._compared_file(path, prev_value, prev_index)
        except V2Error:
            self.stats.compareAndDeleteFail += 1
            raise
        self.index += 1
        event = Event(
            COMPARE_AND_DELETE,
            NodeView(path, None, False, 0, 0, None, self.index, node.created_index),
            node.repr(False, False, now_ns),
            self.index,
        )
        self._remove(node, event)
        self.stats.compareAndDeleteSuccess += 1
        self.hub.notify(event)
        return event

    def delete_expired(self, cutoff_ns: int, now_ns: int) -> list[Event]:
        """SYNC: expire every node whose deadline is <= ``cutoff_ns``, earliest first."""
        events = []
        ttl = self.ttl
        while True:
            node = ttl.top()
            if node is None or node.expire_ns > cutoff_ns:
                break
            self.index += 1
            is_dir = node.children is not None
            event = Event(
                EXPIRE,
                NodeView(node.path, None, is_dir, 0, 0, None, self.index, node.created_index),
                node.repr(False, False, now_ns),
                self.index,
            )
            ttl.pop()
            self._remove(node, event)
            self.stats.expireCount += 1
            self.hub.notify(event)
            events.append(event)
        return events

    # ----- helpers ------------------------------------------------------------------------------------

    def _find(self, path: str) -> Node:
        try:
            return self.tree.find(path)
        except PathError as err:
            raise V2Error(err.code, err.cause, self.index) from None

    def _retime(self, node: Node, expire_ns: int) -> None:
        """etcd's UpdateTTL: 0 makes the node permanent."""
        if expire_ns:
            node.expire_ns = expire_ns
            self.ttl.push(node)
        elif node.expire_ns:
            node.expire_ns = 0
            self.ttl.remove(node)

    def _remove(self, node: Node, event: Event) -> None:
        """Detach ``node`` and its subtree; watchers on every removed path get ``event``."""
        self.tree.unlink(node)
        hub, ttl, changed = self.hub, self.ttl, self._changed
        self._removed.append((node.path, node.children is not None))
        if node.children:
            # Reverse pre-order: every node after all of its descendants, like etcd's recursion.
            for n in reversed(self.tree.subtree(node)):
                if n.expire_ns:
                    ttl.remove(n)
                changed.pop(n.path, None)
                hub.notify_deleted(event, n.path)
        else:
            if node.expire_ns:
                ttl.remove(node)
            changed.pop(node.path, None)
            hub.notify_deleted(event, node.path)

    # ----- watch --------------------------------------------------------------------------------------

    def watch(
        self, path: str, recursive: bool, stream: bool, since_index: int, callback: Callback
    ) -> Watcher:
        self.stats.watchRequests += 1
        if since_index == 0:
            since_index = self.index + 1
        return self.hub.watch(clean_path(path), recursive, stream, since_index, self.index, callback)

    # ----- snapshots ----------------------------------------------------------------------------------

    def save(self) -> bytes:
        """The whole state but the watchers: tree (with TTLs), index, history and write stats."""
        nodes = [
            [
                n.path,
                None if n.children is not None else n.value,
                n.created_index,
                n.modified_index,
                n.expire_ns,
            ]
            for n in self.tree.subtree(self.tree.root)
        ]
        return orjson.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "index": self.index,
                "nodes": nodes,
                "ttl_order": [n.path for n in self._ttl_order()],
                "history": [_event_to_list(e) for e in self.history],
                "stats": self.stats.to_list(),
            }
        )

    def _ttl_order(self) -> list[Node]:
        live = self.ttl.live
        entries = sorted(e for e in self.ttl.heap if live.get(e[2]) == e[1])
        return [e[2] for e in entries]

    @classmethod
    def recover(cls, data: bytes) -> Store:
        state = orjson.loads(data)
        store = cls()
        store.index = state["index"]
        by_path: dict[str, Node] = {}
        for path, value, created, modified, expire in state["nodes"]:
            if path == "/":
                node = store.tree.root
                node.created_index, node.modified_index = created, modified
            else:
                node = Node(path, value if value is not None else "", value is None, created, expire)
                node.modified_index = modified
                slash = path.rfind("/")
                by_path[path[:slash] or "/"].children[path[slash + 1 :]] = node  # type: ignore[index]
            by_path[path] = node
        for path in state["ttl_order"]:
            store.ttl.push(by_path[path])
        for item in state["history"]:
            store.history.add(_event_from_list(item))
        store.stats = Stats.from_list(state["stats"])
        store.mark_clean()
        return store


class Changes:
    """What ``Store.take_changes`` hands to the backend for one apply round.

    ``nodes``: path -> live node, for every node created or changed (content, indexes, TTL); ``removed``:
    ``(path, was_dir)`` roots of removed subtrees, in removal order (``("/", True)`` clears everything);
    ``events``: the history events of the round, oldest first (at most the history's capacity);
    ``index``: the store index after the round; ``ttl_live``: node -> deadline sequence (TTLIndex.live),
    whose order breaks ties between equal deadlines; ``stats``: Stats.to_list()."""

    __slots__ = ("nodes", "removed", "events", "index", "ttl_live", "stats")

    def __init__(
        self,
        nodes: dict[str, Node],
        removed: list[tuple[str, bool]],
        events: list[Event],
        index: int,
        ttl_live: dict[Node, int],
        stats: list[int],
    ) -> None:
        self.nodes = nodes
        self.removed = removed
        self.events = events
        self.index = index
        self.ttl_live = ttl_live
        self.stats = stats


def _view_to_list(v: NodeView | None) -> list | None:
    if v is None:
        return None
    return [v.key, v.value, v.dir, v.expiration, v.ttl, v.modified_index, v.created_index]


def _view_from_list(x: list | None) -> NodeView | None:
    if x is None:
        return None
    key, value, dir_, expiration, ttl, modified, created = x
    return NodeView(key, value, dir_, expiration, ttl, None, modified, created)


def _event_to_list(e: Event) -> list:
    return [e.action, _view_to_list(e.node), _view_to_list(e.prev_node), e.etcd_index, e.refresh]


def _event_from_list(x: list) -> Event:
    action, node, prev, etcd_index, refresh = x
    return Event(action, _view_from_list(node), _view_from_list(prev), etcd_index, refresh)  # type: ignore[arg-type]
