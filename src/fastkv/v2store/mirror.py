"""Mirror apply: another v2 server's nodes and events written into a store with their own indexes.

``fastkvctl mirror`` copies a running etcd (or any v2 server) into a fresh fastkv cluster and then
follows its watch stream.  Ordinary v2 writes cannot set createdIndex/modifiedIndex, so the mirror
sends its data as ``MirrorOp`` batches (one replicated log entry each, ``ENTRY_MIRROR``), applied here.

Rules:

- A store is in one of three mirror states, kept in the internal ``/0`` namespace as ``/0/mirror``
  (written without taking a store index, never visible through the keys API):
  *none* (no mirror ever), *following* (a mirror of ``source``), *finished* (cut over).
- ``begin`` is accepted only on a store that never took a user write: its user tree is empty and every
  index it ever handed out is still in the history and belongs to an internal write (the cluster's own
  ``/0`` writes, v2 auth's ``/2``).  Beginning again with the same source while following is a resume.
- While following, the store takes no user writes (the server refuses them: ``refuses_user_writes``)
  and does not expire keys by itself (SYNC is skipped): the source's ``expire`` events are mirrored.
  Keys keep the source's absolute expirations, so after ``finish`` they expire on the next SYNC at the
  same time as on the source.
- ``nodes`` puts nodes exactly as given (value, dir, createdIndex, modifiedIndex, expiration), creating
  missing parent directories with ``parent_index``; ``remove`` drops subtrees; neither makes an event.
- ``events`` applies the source's events (set, create, update, compareAndSwap, delete,
  compareAndDelete, expire) at their own indexes, strictly increasing; each one enters the history and
  reaches this store's watchers as on the source.  Indexes the source used for what a watch never shows
  (its own /0 writes, refreshes) become placeholder history events no watcher sees, so the history
  keeps one event per index.  This store's own internal writes made while following (a member
  publishing after a restart) are rolled back out of the index when the source's next event needs it.
- ``index`` moves the store index forward to the source's (never back), with placeholders.
- ``finish`` ends following: user writes and TTL expiry resume.  A finished store refuses ``begin``.
- A batch is checked before anything changes; a bad batch is a V2Error (209) and changes nothing.
"""

from __future__ import annotations

import orjson

from fastkv._native.keyindex import MIN_EXPIRE_NS, Event, Node, NodeView, PathError, clean_path, ttl_of
from fastkv.v2store import errors as E
from fastkv.v2store.errors import V2Error
from fastkv.v2store.event import (
    COMPARE_AND_DELETE,
    COMPARE_AND_SWAP,
    CREATE,
    DELETE,
    EXPIRE,
    SET,
    UPDATE,
)
from fastkv.v2store.history import CLEARED_KEY
from fastkv.v2store.store import Store

MARKER = "/mirror"  # in the /0 namespace
CLUSTER_NS = "0"
FOLLOWING = "following"
FINISHED = "finished"
PUT_ACTIONS = frozenset((SET, CREATE, UPDATE, COMPARE_AND_SWAP))
REMOVE_ACTIONS = frozenset((DELETE, COMPARE_AND_DELETE, EXPIRE))

# A node record: [key, dir, value, createdIndex, modifiedIndex, expiration (unix ns, 0: none)].
NodeRecord = list
# An event record: [action, node record, prevNode record or None, index].
EventRecord = list


def mirror_state(store: Store) -> dict | None:
    """The ``/0/mirror`` record ({"source", "state", "index"}) or None when this store never mirrored."""
    ns = store.namespaces.get(CLUSTER_NS)
    if ns is None:
        return None
    node = ns.tree.get(MARKER)
    if node is None or node.children is not None:
        return None
    return orjson.loads(node.value)


def refuses_user_writes(store: Store) -> str | None:
    """Why a user write is refused now (the store is following a source), or None."""
    state = mirror_state(store)
    if state is not None and state["state"] == FOLLOWING:
        return (
            f"this cluster is a read-only mirror of {state['source']} (at index {state['index']}): "
            "it takes writes after `fastkvctl mirror --finish`"
        )
    return None


def _bad(store: Store, cause: str) -> V2Error:
    return V2Error(E.INVALID_FIELD, "mirror: " + cause, store.index)


def _set_marker(store: Store, state: dict) -> None:
    ns = store.namespaces[CLUSTER_NS]
    value = orjson.dumps(state).decode()
    node = ns.tree.get(MARKER)
    if node is None:
        node = Node(MARKER, value, False, store.index, 0)
        node.modified_index = store.index
        ns.tree.root.children[MARKER] = node  # type: ignore[index]
    else:
        node.value = value
    ns._changed[MARKER] = node
    store._ns_dirty = True


def _never_written(store: Store) -> bool:
    hist = store.history
    if len(hist) != store.index:
        return store.index == 0
    return all(e.internal for e in hist)


def apply_mirror(store: Store, batch: dict, now_ns: int) -> dict:
    """Apply one mirror batch (the decoded ``ENTRY_MIRROR`` payload); returns the mirror state after it.
    Keys of ``batch``: ``source`` (required), optionally ``begin``, ``remove``, ``nodes`` + ``parent_index``,
    ``events``, ``index``, ``finish`` (applied in that order)."""
    source = batch.get("source")
    if not isinstance(source, str) or not source:
        raise _bad(store, "no source named")
    state = mirror_state(store)
    if batch.get("begin") and state is None:
        if store.tree.root.children or not _never_written(store):
            raise V2Error(
                E.ROOT_RONLY,
                "mirror: this cluster has taken writes of its own; mirror into a fresh cluster",
                store.index,
            )
        # Every index so far is this store's own internal write: the source's indexes may take them all.
        state = {"source": source, "state": FOLLOWING, "index": 0}
    if state is None:
        raise _bad(store, "not mirroring: begin first")
    if state["state"] == FINISHED:
        raise V2Error(
            E.ROOT_RONLY,
            f"mirror: finished mirroring {state['source']}; this cluster takes its own writes",
            store.index,
        )
    if state["source"] != source:
        raise _bad(store, f"this cluster mirrors {state['source']}, not {source}")
    events = batch.get("events") or []
    target = batch.get("index", 0)
    _check(store, batch, events, target, state)
    for path in batch.get("remove") or ():
        _remove_quiet(store, clean_path(path))
    parent_index = batch.get("parent_index", 0)
    for rec in batch.get("nodes") or ():
        _put_node(store, rec, parent_index)
    for rec in events:
        _apply_event(store, rec, now_ns)
    if target > store.index:
        _advance(store, target, True)
    elif target and target < store.index:
        _rewind(store, target)
    # The last index taken from the source: unchanged by a batch of nodes only.
    mirrored = store.index if events or target else state["index"]
    state = {"source": source, "state": FINISHED if batch.get("finish") else FOLLOWING, "index": mirrored}
    _set_marker(store, state)
    return state


def _check(store: Store, batch: dict, events: list, target: int, state: dict) -> None:
    """Everything that could refuse the batch, before anything changes."""
    if not isinstance(events, list) or not isinstance(target, int):
        raise _bad(store, "malformed batch")
    nodes = batch.get("nodes") or []
    removes = batch.get("remove") or []
    if (
        not isinstance(nodes, list)
        or not isinstance(removes, list)
        or not isinstance(batch.get("parent_index", 0), int)
    ):
        raise _bad(store, "malformed batch")
    for rec in nodes:
        if not _is_node_record(rec):
            raise _bad(store, f"bad node record {rec!r:.200}")
    for path in removes:
        if not isinstance(path, str) or not path.startswith("/"):
            raise _bad(store, f"bad path to remove {path!r:.200}")
    floor = _rewind_floor(store, state)
    last = floor
    for rec in events:
        if (
            not isinstance(rec, list)
            or len(rec) != 4
            or rec[0] not in PUT_ACTIONS | REMOVE_ACTIONS
            or not _is_node_record(rec[1])
            or not (rec[2] is None or _is_node_record(rec[2]))
        ):
            raise _bad(store, f"bad event record {rec!r:.200}")
        index = rec[3]
        if not isinstance(index, int) or index <= last:
            raise _bad(store, f"event index {index} is not after {last}")
        last = index
    if target and target < last:
        raise _bad(store, f"the source's index {target} is below this store's {last}")


_NODE_TYPES = (str, bool, str, int, int, int)


def _is_node_record(rec: object) -> bool:
    """[key, dir, value, createdIndex, modifiedIndex, expiration], the key absolute."""
    return (
        isinstance(rec, list)
        and len(rec) == 6
        and all(isinstance(v, t) for v, t in zip(rec, _NODE_TYPES, strict=True))
        and rec[0].startswith("/")
    )


def _rewind_floor(store: Store, state: dict) -> int:
    """The lowest index the source's next event may have: the last index mirrored, when everything this
    store did since is its own internal writes (a member publishing after a restart while following),
    whose indexes the source's events take over; else this store's index."""
    mirrored = state["index"]
    extra = store.index - mirrored
    if extra <= 0:
        return store.index
    if extra <= len(store.history) and all(e.internal for e in store.history.last(extra)):
        return mirrored
    return store.index


def _rewind(store: Store, to_index: int) -> None:
    """Drop this store's trailing internal events above ``to_index`` from the history and the index."""
    hist = store.history
    while store.index > to_index:
        if hist.size and hist.last_index == store.index:
            hist.size -= 1
            if hist.size:
                back = (hist.front + hist.size - 1) % hist.capacity
                hist.last_index = hist.events[back].index  # type: ignore[union-attr]
            else:
                hist.start_index = hist.last_index = 0
        store.index -= 1
    store._taken_index = min(store._taken_index, to_index)
    for ns in store.namespaces.values():
        ns.index = store.index


def _placeholder(index: int, cleared_to: int) -> Event:
    """The history slot of an index the source used for something no watch shows (``cleared_to`` 0) or
    of one a copy took over without its event (a watch reaching it is told the history was cleared up
    to ``cleared_to``)."""
    if cleared_to:
        view = NodeView(CLEARED_KEY, "", False, 0, 0, None, index, cleared_to)
    else:
        view = NodeView("/0", "", False, 0, 0, None, index, index)
    return Event(SET, view, None, index, True, True)


def _advance(store: Store, target: int, cleared: bool) -> None:
    """Move the index to ``target``, filling the history with placeholders (never more than it holds):
    ``cleared`` for a copy or resync, whose changes made no events."""
    hist = store.history
    start = store.index + 1
    if target - store.index >= hist.capacity:
        hist.events = [None] * hist.capacity
        hist.front = hist.size = hist.start_index = hist.last_index = 0
        start = target - hist.capacity + 1
    cleared_to = target if cleared else 0
    for i in range(start, target + 1):
        hist.add(_placeholder(i, cleared_to))
    store.index = target
    for ns in store.namespaces.values():
        ns.index = target


def _view(rec: NodeRecord | None, now_ns: int, with_value: bool = True) -> NodeView | None:
    if rec is None:
        return None
    key, is_dir, value, created, modified, expire = rec
    return NodeView(
        key,
        None if is_dir or not with_value else value,
        bool(is_dir),
        expire,
        ttl_of(expire, now_ns) if expire else 0,
        None,
        modified,
        created,
    )


def _apply_event(store: Store, rec: EventRecord, now_ns: int) -> None:
    action, node_rec, prev_rec, index = rec
    if index <= store.index:
        _rewind(store, index - 1)
    if index - 1 > store.index:
        _advance(store, index - 1, False)
    path = clean_path(node_rec[0])
    if action in REMOVE_ACTIONS:
        event = Event(action, _view(node_rec, now_ns, False), _view(prev_rec, now_ns), index)  # type: ignore[arg-type]
        store.index = index
        try:
            node = store.tree.find(path)
        except PathError:
            node = None
        if node is not None and path != "/":
            store._remove(node, event)
        store.hub.notify(event)
    else:
        if action == UPDATE and node_rec[1]:
            # A directory's TTL update: etcd reports the new index but keeps the stored one.
            node = store.tree.get(path)
            if node is not None and node.children is not None:
                store._retime(node, _expire(node_rec[5]))
                store._changed[path] = node
            else:
                _put_node(store, node_rec, index)
        else:
            _put_node(store, node_rec, index)
        store.index = index
        store.hub.notify(Event(action, _view(node_rec, now_ns), _view(prev_rec, now_ns), index))  # type: ignore[arg-type]
    for ns in store.namespaces.values():
        ns.index = store.index


def _expire(ns: int) -> int:
    return ns if ns >= MIN_EXPIRE_NS else 0


def _put_node(store: Store, rec: NodeRecord, parent_index: int) -> None:
    key, is_dir, value, created, modified, expire = rec
    path = clean_path(key)
    if path == "/":
        return
    expire = _expire(expire)
    slash = path.rfind("/")
    try:
        parent = store.tree.ensure_dir(path[:slash] if slash > 0 else "/", parent_index or created)
    except PathError as err:
        raise V2Error(err.code, err.cause, store.index) from None
    changed = store._changed
    p: Node | None = parent
    while p is not None and p is not store.tree.root and p.path not in changed:
        changed[p.path] = p
        p = store.tree.parent_of(p)
    children = parent.children
    assert children is not None
    old = children.get(path)
    if old is not None:
        if is_dir and old.children is not None:
            old.created_index, old.modified_index = created, modified
            store._retime(old, expire)
            changed[path] = old
            return
        _remove_quiet(store, path)
    node = Node(path, "" if is_dir else value, bool(is_dir), created, expire)
    node.modified_index = modified
    children[path] = node
    changed[path] = node
    if expire:
        store.ttl.push(node)


def _remove_quiet(store: Store, path: str) -> None:
    """Drop ``path`` and its subtree without an event (a resync found it gone on the source)."""
    if path == "/":
        for child in list(store.tree.root.children.values()):  # type: ignore[union-attr]
            _remove_quiet(store, child.path)
        return
    node = store.tree.get(path)
    if node is None:
        return
    store.tree.unlink(node)
    store._removed.append((node.path, node.children is not None))
    nodes = store.tree.subtree(node) if node.children else [node]
    for n in nodes:
        if n.expire_ns:
            store.ttl.remove(n)
        store._changed.pop(n.path, None)
