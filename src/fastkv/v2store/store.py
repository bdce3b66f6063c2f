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
- Expirations are absolute unix ns: a request's relative ``ttl`` becomes ``now_ns + ttl`` in ``apply``
  (a request without one may carry an absolute ``expiration``); ``ttl`` in answers is computed with
  the ``now_ns`` of the operation.  A new node whose expiry is before 2000-01-01 is permanent.
- Refreshes keep the value, take an index, enter the history, and are delivered to no watcher.
- SYNC removes every node whose expiry is <= ``req.time``, earliest first, one ``expire`` event each; an
  expiring directory takes its subtree with it and watchers anywhere below get the directory's event.
- Watchers are called synchronously during ``apply`` (see watcher.py).
- Internal namespaces (etcd's ``/0`` cluster and ``/2`` v2 auth; the user keys, etcd's ``/1``, are this
  store's own tree): each is a ``Store`` of its own in ``namespaces``, sharing this store's history and
  stats, its index synchronised around every ``apply_internal``.  Its events take the next index and a
  history slot, carry full paths and ``internal``, and reach no watcher (``InternalHub``).
- Stats follow etcd's counting, artefacts included: some refusals count as successes (see
  ``compare_and_delete``, ``update``, ``delete`` and docs/design.md).
- Dirty tracking for the persistent backend (storage/backend.py): every mutation files the node it
  created or changed under its path in ``_changed`` (auto-created parent directories included), and
  every removal files the removed subtree's root in ``_removed`` and drops the subtree's paths from
  ``_changed``.  ``take_changes`` hands both over with the history events since the last call.  Writing
  the removals first and then the current content of every changed path reproduces the tree exactly:
  a path re-created after its removal is in ``_changed`` again.
"""

from __future__ import annotations

import itertools
from typing import Any

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
from fastkv.v2store.request import V2Request, expiration_for_ttl
from fastkv.v2store.stats import Stats
from fastkv.v2store.ttl import TTLIndex
from fastkv.v2store.watcher import Callback, FanOut, Watcher, WatcherHub

HISTORY_CAPACITY = 1000
# etcd's store tree: /0 cluster (members, version), /1 the user keys (this store's own tree), /2 v2 auth.
USER_NAMESPACE = "1"
_INTERNAL_VERSIONS = itertools.count(1)
INTERNAL_NAMESPACES = ("0", "2")
# Error codes whose cause is a node path (made absolute for internal namespaces).
_PATH_CAUSES = frozenset((E.KEY_NOT_FOUND, E.NOT_FILE, E.NOT_DIR, E.NODE_EXIST, E.DIR_NOT_EMPTY))
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
SNAPSHOT_VERSION = 1


def _compare_fail_cause(node: Node, which: int, prev_value: str, prev_index: int) -> str:
    if which == 1:
        return f"[{prev_index} != {node.modified_index}]"
    if which == 2:
        return f"[{prev_value} != {node.value}]"
    return f"[{prev_value} != {node.value}] [{prev_index} != {node.modified_index}]"


class Store:
    __slots__ = (
        "index",
        "tree",
        "ttl",
        "history",
        "hub",
        "stats",
        "namespaces",
        "_changed",
        "_removed",
        "_taken_index",
        "_ns_dirty",
        "internal_version",
    )

    def __init__(self, namespaces: tuple[str, ...] = INTERNAL_NAMESPACES) -> None:
        self.index = 0
        self.tree = KeyIndex()
        self.ttl = TTLIndex()
        self.history = EventHistory(HISTORY_CAPACITY)
        self.hub = WatcherHub(self.history)
        self.stats = Stats()
        self._changed: dict[str, Node] = {}
        self._removed: list[tuple[str, bool]] = []
        self._taken_index = 0  # store index at the last take_changes
        # Internal namespaces: name -> a store of the same semantics sharing this one's history and stats
        # (its index is synchronised around each internal operation); empty in a namespace's own store.
        self.namespaces: dict[str, Store] = {}
        for name in namespaces:
            self._add_namespace(name)
        self._ns_dirty = False  # an internal namespace changed since the last take_changes
        # Changes whenever anything in an internal namespace does; unique across Store objects, so a
        # reader may memoize internal reads by it (v2 auth's per-request checks do).
        self.internal_version = next(_INTERNAL_VERSIONS)

    def _add_namespace(self, name: str) -> Store:
        if not name or "/" in name or name == USER_NAMESPACE:
            raise ValueError(f"bad namespace name {name!r}")
        ns = Store(())
        ns.history = self.history
        ns.stats = self.stats
        ns.hub = InternalHub(self.history, "/" + name)
        self.namespaces[name] = ns
        return ns

    # ----- internal namespaces: etcd's /0 (cluster) and /2 (v2 auth) ------------------------------------

    def _namespace_of(self, path: str) -> tuple[Store, str, str]:
        """(namespace store, its prefix "/0", the path inside it) for a full store path like /0/members/x."""
        path = clean_path(path)
        slash = path.find("/", 1)
        name = path[1:slash] if slash > 0 else path[1:]
        ns = self.namespaces.get(name)
        if ns is None:
            raise V2Error(E.INVALID_FIELD, f"not an internal namespace: {path}", self.index)
        return ns, "/" + name, path[slash:] if slash > 0 else "/"

    def apply_internal(self, req: V2Request, now_ns: int) -> Event | None:
        """Apply a committed request on an internal namespace: ``req.path`` is a full store path
        (``/0/members/8e9e05c52164694d/attributes``, ``/0/version``, ``/2/users/alice``).  Same semantics,
        index, history slots and stats as ``apply``; no user watcher sees the event, which carries the full
        path.  V2Error causes carry full paths too.  SYNC expires every namespace: use ``apply``."""
        ns, prefix, inner = self._namespace_of(req.path)
        if req.method == "SYNC":
            raise V2Error(E.INVALID_FIELD, "SYNC applies to the whole store: use apply", self.index)
        hub: InternalHub = ns.hub  # type: ignore[assignment]
        hub.last = None
        if inner == "/" and req.method == "PUT" and req.dir and req.prev_exist is False:
            return self._create_namespace_dir(ns, prefix, now_ns)
        local = req.copy()
        local.path = inner
        ns.index = self.index
        try:
            event = ns.apply(local, now_ns)
        except V2Error as err:
            raise _prefixed_error(err, prefix) from None
        finally:
            if ns.index != self.index:
                self.index = ns.index
                self._ns_dirty = True
                self.internal_version = next(_INTERNAL_VERSIONS)
        if event is None:
            return None
        if event.action == GET:
            return _prefixed_event(event, prefix)
        return hub.last

    def _create_namespace_dir(self, ns: Store, prefix: str, now_ns: int) -> Event:
        """etcd creates its ``/2`` directory itself (v2 auth's first write): the namespace's root
        comes into being with that index.  Afterwards (or once the namespace holds anything) the
        create fails as on etcd.  The index is not kept across a restart, where nothing asks again."""
        root = ns.tree.root
        if root.created_index or root.children:
            self.stats.createFail += 1
            raise V2Error(E.NODE_EXIST, prefix, self.index)
        self.index += 1
        root.created_index = root.modified_index = self.index
        self.stats.createSuccess += 1
        self._ns_dirty = True
        self.internal_version = next(_INTERNAL_VERSIONS)
        hub: InternalHub = ns.hub  # type: ignore[assignment]
        hub.add(Event(CREATE, root.repr(False, False, now_ns), None, self.index))
        assert hub.last is not None
        return hub.last

    def get_internal(
        self, path: str, recursive: bool = False, sorted: bool = False, now_ns: int = 0
    ) -> Event:
        """A read of an internal namespace (full store path); counted in the stats like ``get``, as etcd
        counts its own reads of ``/0``."""
        ns, prefix, inner = self._namespace_of(path)
        ns.index = self.index
        try:
            return _prefixed_event(ns.get(inner, recursive, sorted, now_ns), prefix)
        except V2Error as err:
            raise _prefixed_error(err, prefix) from None

    # ----- dirty tracking -----------------------------------------------------------------------------

    def take_changes(self) -> Changes:
        """What changed since the last call (or since the store was built or loaded).

        The nodes are live objects: encode them (Backend.prepare) before the store is mutated again."""
        changed, self._changed = self._changed, {}
        removed, self._removed = self._removed, []
        events = self.history.last(self.index - self._taken_index)
        self._taken_index = self.index
        changes = Changes(changed, removed, events, self.index, self.ttl.live, self.stats.to_list())
        if self._ns_dirty:
            self._ns_dirty = False
            changes.namespaces = {}
            for name, ns in self.namespaces.items():
                if ns._changed or ns._removed:
                    changes.namespaces[name] = NamespaceChanges(ns._changed, ns._removed, ns.ttl.live)
                    ns._changed, ns._removed = {}, []
        return changes

    def all_changes(self) -> Changes:
        """The whole state as changes that replace everything (a fresh or reset backend); also resets the
        dirty tracking, like take_changes."""
        self.take_changes()
        changes = Changes(
            _all_nodes(self),
            [("/", True)],
            list(self.history),
            self.index,
            self.ttl.live,
            self.stats.to_list(),
        )
        changes.namespaces = {
            name: NamespaceChanges(_all_nodes(ns), [("/", True)], ns.ttl.live)
            for name, ns in self.namespaces.items()
        }
        return changes

    def mark_clean(self) -> None:
        """Forget tracked changes: the state was just loaded from (or fully written to) the backend."""
        self._changed = {}
        self._removed = []
        self._taken_index = self.index
        self._ns_dirty = False
        for ns in self.namespaces.values():
            ns._changed = {}
            ns._removed = []

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
        return len(self.ttl) != 0 or any(len(ns.ttl) for ns in self.namespaces.values())

    def stats_json(self) -> bytes:
        return self.stats.to_json(self.hub.count)

    # ----- apply: etcd's apply_v2 ---------------------------------------------------------------------

    def apply(self, req: V2Request, now_ns: int) -> Event | None:
        """Apply one committed request; raises V2Error for store errors (the index is unchanged then)."""
        method = req.method
        # An int64 like etcd's request field.  Negative values are kept: a TTL too large for Go's time
        # wraps (request.expiration_for_ttl); a new node then is permanent (before 2000), an updated one
        # expires at the next SYNC, as in etcd.  A relative ttl becomes absolute here, at ``now_ns``:
        # the one place an expiration is stamped (the applier passes the entry's cluster time).
        ttl = req.ttl
        if ttl is not None:
            expire = expiration_for_ttl(now_ns, ttl)
        else:
            expire = req.expiration or 0
            if expire > INT64_MAX:
                expire = INT64_MAX
            elif expire < INT64_MIN:
                expire = INT64_MIN
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
        children = parent.children
        assert children is not None  # ensure_dir returns directories only
        prev_view = None
        old = children.get(path)
        if old is not None:
            if not replace:
                raise V2Error(E.NODE_EXIST, path, self.index)
            if old.children is not None:
                raise V2Error(E.NOT_FILE, path, self.index)
            prev_view = old.repr(False, False, now_ns)
            if old.expire_ns:
                self.ttl.remove(old)
        node = Node(path, value, dir, next_index, expire_ns)
        children[path] = node
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
        if path == "/":
            self.stats.updateSuccess += 1  # etcd counts this refusal as a success (stats artefact)
            raise V2Error(E.ROOT_RONLY, "/", self.index)
        try:
            node = self._find(path)
        except V2Error:
            self.stats.updateFail += 1
            raise
        is_dir = node.children is not None
        if is_dir and value:
            self.stats.updateSuccess += 1  # counted as a success by etcd too
            raise V2Error(E.NOT_FILE, path, self.index)
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
        if path == "/":
            self.stats.compareAndSwapSuccess += 1  # etcd counts this refusal as a success (stats artefact)
            raise V2Error(E.ROOT_RONLY, "/", self.index)
        try:
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
        if path == "/":
            self.stats.deleteSuccess += 1  # etcd counts this refusal as a success (stats artefact)
            raise V2Error(E.ROOT_RONLY, "/", self.index)
        try:
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
        # etcd counts only a missing key (or a file in the way) as a failed compare-and-delete: a
        # directory or a failed comparison is refused but counted as a success (stats artefact).
        node = self._find_counted(path, "compareAndDeleteFail")
        if node.children is not None:
            self.stats.compareAndDeleteSuccess += 1
            # etcd's root is its namespace directory "/1", trimmed from the cause: no cause at all.
            raise V2Error(E.NOT_FILE, path if path != "/" else "", self.index)
        which = node.compare(prev_value, min(prev_index, INT64_MAX))
        if which:
            self.stats.compareAndDeleteSuccess += 1
            raise V2Error(E.TEST_FAILED, _compare_fail_cause(node, which, prev_value, prev_index), self.index)
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
        """SYNC: expire every node whose deadline is <= ``cutoff_ns``, earliest first (internal namespaces
        included: etcd keeps one TTL heap for its whole tree)."""
        events: list[Event] = []
        ttl = self.ttl
        if any(len(ns.ttl) for ns in self.namespaces.values()):
            return self._delete_expired_all(cutoff_ns, now_ns)
        while True:
            node = ttl.top()
            if node is None or node.expire_ns > cutoff_ns:
                break
            events.append(self._expire(node, now_ns))
        return events

    def _expire(self, node: Node, now_ns: int) -> Event:
        """Expire ``node``, the earliest live deadline of this store's TTL index."""
        self.index += 1
        is_dir = node.children is not None
        event = Event(
            EXPIRE,
            NodeView(node.path, None, is_dir, 0, 0, None, self.index, node.created_index),
            node.repr(False, False, now_ns),
            self.index,
        )
        self.ttl.pop()
        self._remove(node, event)
        self.stats.expireCount += 1
        self.hub.notify(event)
        return event

    def _delete_expired_all(self, cutoff_ns: int, now_ns: int) -> list[Event]:
        """The earliest deadline across the user tree and the namespaces each time (ties: user tree first,
        then namespaces in name order; each TTL index keeps its own tie order)."""
        events: list[Event] = []
        stores = [self, *(self.namespaces[name] for name in sorted(self.namespaces))]
        while True:
            best: Store | None = None
            best_node: Node | None = None
            for st in stores:
                node = st.ttl.top()
                if (
                    node is not None
                    and node.expire_ns <= cutoff_ns
                    and (best_node is None or node.expire_ns < best_node.expire_ns)
                ):
                    best, best_node = st, node
            if best is None or best_node is None:
                return events
            if best is self:
                events.append(self._expire(best_node, now_ns))
                continue
            hub: InternalHub = best.hub  # type: ignore[assignment]
            best.index = self.index
            best._expire(best_node, now_ns)
            self.index = best.index
            self._ns_dirty = True
            events.append(hub.last)  # type: ignore[arg-type]

    # ----- helpers ------------------------------------------------------------------------------------

    def _find(self, path: str) -> Node:
        try:
            return self.tree.find(path)
        except PathError as err:
            raise V2Error(err.code, err.cause, self.index) from None

    def _find_counted(self, path: str, fail_counter: str) -> Node:
        """``_find``, counting a failure in the stats counter named ``fail_counter``."""
        try:
            return self.tree.find(path)
        except PathError as err:
            setattr(self.stats, fail_counter, getattr(self.stats, fail_counter) + 1)
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
        self,
        path: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        callback: Callback,
        sink: Any = None,
        fan_out: FanOut | None = None,
    ) -> Watcher:
        """Register a watcher (see watcher.py; ``sink``/``fan_out``: batched delivery)."""
        self.stats.watchRequests += 1
        if since_index == 0:
            since_index = self.index + 1
        return self.hub.watch(
            clean_path(path), recursive, stream, since_index, self.index, callback, sink, fan_out
        )

    # ----- snapshots ----------------------------------------------------------------------------------

    def _save_tree(self) -> dict:
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
        return {"nodes": nodes, "ttl_order": [n.path for n in self._ttl_order()]}

    def save(self) -> bytes:
        """The whole state but the watchers: trees (with TTLs; internal namespaces under ``namespaces``),
        index, history and write stats.  A string holding lone surrogates (a key or value that was not
        UTF-8) is saved as ``{"u8": hex of its bytes}``, since JSON strings cannot hold them."""
        state = self._save_tree()
        state.update(
            {
                "version": SNAPSHOT_VERSION,
                "index": self.index,
                "history": [_event_to_list(e) for e in self.history],
                "stats": self.stats.to_list(),
                "namespaces": {name: ns._save_tree() for name, ns in self.namespaces.items()},
            }
        )
        try:
            return orjson.dumps(state)
        except orjson.JSONEncodeError:
            return orjson.dumps(_escape_strings(state))

    def _ttl_order(self) -> list[Node]:
        live = self.ttl.live
        entries = sorted(e for e in self.ttl.heap if live.get(e[2]) == e[1])
        return [e[2] for e in entries]

    @classmethod
    def from_state(cls, state: dict) -> Store:
        """``recover`` from the decoded form of ``save`` (another system's data, say, put into it)."""
        try:
            data = orjson.dumps(state)
        except orjson.JSONEncodeError:
            data = orjson.dumps(_escape_strings(state))
        return cls.recover(data)

    @classmethod
    def recover(cls, data: bytes) -> Store:
        state = orjson.loads(data)
        if b'{"u8":' in data:
            state = _unescape_strings(state)
        store = cls()
        store.index = state["index"]
        store._recover_tree(state)
        for name, tree_state in state.get("namespaces", {}).items():
            ns = store.namespaces.get(name) or store._add_namespace(name)
            ns._recover_tree(tree_state)
            ns.index = store.index
        for item in state["history"]:
            store.history.add(_event_from_list(item))
        store.stats = Stats.from_list(state["stats"])
        for ns in store.namespaces.values():
            ns.stats = store.stats
        store.mark_clean()
        return store

    def _recover_tree(self, state: dict) -> None:
        store = self
        by_path: dict[str, Node] = {}
        for path, value, created, modified, expire in state["nodes"]:
            if path == "/":
                node = store.tree.root
                node.created_index, node.modified_index = created, modified
            else:
                node = Node(path, value if value is not None else "", value is None, created, expire)
                node.modified_index = modified
                slash = path.rfind("/")
                by_path[path[:slash] or "/"].children[path] = node  # type: ignore[index]
            by_path[path] = node
        for path in state["ttl_order"]:
            store.ttl.push(by_path[path])


class InternalHub(WatcherHub):
    """The hub of an internal namespace: nobody watches it.  Its events enter the shared history (they
    take their index's slot) with the namespace prefix on their keys and ``internal`` set, so that no
    user watch, live or from history, ever matches them; ``last`` is the newest such event."""

    __slots__ = ("prefix", "last")

    def __init__(self, history: EventHistory, prefix: str) -> None:
        super().__init__(history)
        self.prefix = prefix
        self.last: Event | None = None

    def add(self, event: Event) -> None:
        e = _prefixed_event(event, self.prefix)
        e.internal = True
        self.history.add(e)
        self.last = e

    notify = add

    def notify_deleted(self, event: Event, path: str) -> None:
        pass

    def watch(
        self,
        path: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        store_index: int,
        callback: Callback,
        sink: Any = None,
        fan_out: FanOut | None = None,
    ) -> Watcher:
        raise V2Error(E.INVALID_FIELD, "internal namespaces cannot be watched", store_index)


def _prefixed_view(v: NodeView, prefix: str) -> NodeView:
    """``v`` (and its listed children) with keys under ``prefix``; a namespace root's key "" becomes the
    prefix itself."""
    nodes = v.nodes
    if nodes is not None:
        nodes = [_prefixed_view(n, prefix) for n in nodes]
    return NodeView(
        prefix + v.key, v.value, v.dir, v.expiration, v.ttl, nodes, v.modified_index, v.created_index
    )


def _prefixed_event(e: Event, prefix: str) -> Event:
    """``e`` with every key under ``prefix`` (a namespace's view made a full store path)."""
    prev = e.prev_node
    return Event(
        e.action,
        _prefixed_view(e.node, prefix),
        _prefixed_view(prev, prefix) if prev is not None else None,
        e.etcd_index,
        e.refresh,
        e.internal,
    )


def _prefixed_error(err: V2Error, prefix: str) -> V2Error:
    if err.code in _PATH_CAUSES and err.cause.startswith("/"):
        return V2Error(err.code, prefix + err.cause if err.cause != "/" else prefix, err.index)
    return err


def _all_nodes(store: Store) -> dict[str, Node]:
    nodes = {n.path: n for n in store.tree.subtree(store.tree.root)}
    del nodes["/"]
    return nodes


class NamespaceChanges:
    """An internal namespace's part of ``Changes``: ``nodes``, ``removed`` and ``ttl_live`` as in ``Changes``,
    paths relative to the namespace (``/members/x`` for ``/0/members/x``)."""

    __slots__ = ("nodes", "removed", "ttl_live")

    def __init__(
        self, nodes: dict[str, Node], removed: list[tuple[str, bool]], ttl_live: dict[Node, int]
    ) -> None:
        self.nodes = nodes
        self.removed = removed
        self.ttl_live = ttl_live


_NO_NAMESPACE_CHANGES: dict[str, NamespaceChanges] = {}


class Changes:
    """What ``Store.take_changes`` hands to the backend for one apply round.

    ``nodes``: path -> live node, for every node created or changed (content, indexes, TTL); ``removed``:
    ``(path, was_dir)`` roots of removed subtrees, in removal order (``("/", True)`` clears everything);
    ``events``: the history events of the round, oldest first (at most the history's capacity);
    ``index``: the store index after the round; ``ttl_live``: node -> deadline sequence (TTLIndex.live),
    whose order breaks ties between equal deadlines; ``stats``: Stats.to_list(); ``namespaces``: name ->
    NamespaceChanges for each internal namespace that changed (usually none)."""

    __slots__ = ("nodes", "removed", "events", "index", "ttl_live", "stats", "namespaces")

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
        # Shared and empty unless an internal namespace changed (take_changes then sets a dict of its own).
        self.namespaces: dict[str, NamespaceChanges] = _NO_NAMESPACE_CHANGES


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
    return [e.action, _view_to_list(e.node), _view_to_list(e.prev_node), e.etcd_index, e.refresh, e.internal]


def _event_from_list(x: list) -> Event:
    action, node, prev, etcd_index, refresh = x[:5]
    internal = len(x) > 5 and x[5]
    return Event(action, _view_from_list(node), _view_from_list(prev), etcd_index, refresh, internal)  # type: ignore[arg-type]


def _escape_strings(x: object) -> object:
    """``x`` with every str holding lone surrogates replaced by ``{"u8": hex of its surrogatepass UTF-8}``."""
    if isinstance(x, str):
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            return {"u8": x.encode("utf-8", "surrogatepass").hex()}
        return x
    if isinstance(x, list):
        return [_escape_strings(v) for v in x]
    if isinstance(x, dict):
        return {k: _escape_strings(v) for k, v in x.items()}
    return x


def _unescape_strings(x: object) -> object:
    if isinstance(x, dict):
        if len(x) == 1 and "u8" in x:
            return bytes.fromhex(x["u8"]).decode("utf-8", "surrogatepass")
        return {k: _unescape_strings(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_unescape_strings(v) for v in x]
    return x
