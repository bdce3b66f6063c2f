"""The v2 store as etcd saves it in a snapshot (``v2store.store`` marshalled by Go's encoding/json).

Shape: ``{"Root": node, "WatcherHub": {"EventHistory": ...}, "CurrentIndex": n, "Stats": {...},
"CurrentVersion": 2}``; a node is ``{"Path", "CreatedIndex", "ModifiedIndex", "ExpireTime", "Value",
"Children"}`` where ``Children`` is null for a file and an object (name -> node) for a directory, and
``ExpireTime`` is Go's RFC 3339 time with nanoseconds (the zero time ``0001-01-01T00:00:00Z`` meaning
permanent).  The root is ``/``; etcd keeps its cluster data under ``/0`` (members, removed members, the
cluster version), the user's keys under ``/1`` and v2 auth under ``/2``.

``flatten`` turns it into the node list ``fastkv.v2store.store.Store.recover`` reads: parents before
children, each ``[path, value or None for a directory, createdIndex, modifiedIndex, expire_ns]``; the watcher hub's
event history (etcd's last 1000 events) comes along, so watches can resume from an index.
"""

from __future__ import annotations

import calendar
import re
from typing import Any

import orjson

from .errors import EtcdDataError

_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|([+-])(\d{2}):(\d{2}))$"
)
GO_ZERO_TIME = "0001-01-01T00:00:00Z"

# etcd's namespaces in its v2 store.
CLUSTER_PREFIX = "/0"
KEYS_PREFIX = "/1"
AUTH_PREFIX = "/2"
MEMBERS_DIR = "/0/members"
REMOVED_DIR = "/0/removed_members"
VERSION_KEY = "/0/version"


def user_key(path: str) -> str | None:
    """The user's key for a path of etcd's store under ``/1`` (``/1/a`` is ``/a``, ``/1`` is ``/``);
    None for a path in another namespace."""
    if path == KEYS_PREFIX:
        return "/"
    if path.startswith(KEYS_PREFIX + "/"):
        return path[len(KEYS_PREFIX) :]
    return None


STATS_FIELDS = (
    "getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess", "deleteFail",
    "updateSuccess", "updateFail", "createSuccess", "createFail", "compareAndSwapSuccess",
    "compareAndSwapFail", "compareAndDeleteSuccess", "compareAndDeleteFail", "expireCount",
)  # fmt: skip


def parse_go_time(text: str) -> int:
    """Unix nanoseconds of a Go RFC 3339 time; 0 for Go's zero time (a permanent node)."""
    if text == GO_ZERO_TIME:
        return 0
    m = _TIME.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if year == 1 and month == 1 and day == 1 and hour == minute == second == 0 and not m.group(7):
        return 0
    frac = (m.group(7) or "").ljust(9, "0")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m.group(8) != "Z":
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    return seconds * 1_000_000_000 + int(frac)


class V2Snapshot:
    """The parts of etcd's saved store a migration keeps: ``nodes`` as above, ``history`` the event
    history oldest first, each event as ``Store.recover`` reads it (``[action, node, prevNode,
    etcd_index, refresh]``, a node as ``[key, value, dir, expiration_ns, ttl, modifiedIndex,
    createdIndex]``)."""

    __slots__ = ("nodes", "index", "stats", "version", "history")

    def __init__(
        self,
        nodes: list[list[Any]],
        index: int,
        stats: list[int],
        version: int,
        history: list[list[Any]] | None = None,
    ) -> None:
        self.nodes = nodes
        self.index = index
        self.stats = stats
        self.version = version
        self.history = history or []


def _view(node: dict[str, Any] | None) -> list[Any] | None:
    if node is None:
        return None
    expiration = node.get("expiration")
    return [
        node["key"],
        node.get("value"),
        bool(node.get("dir", False)),
        parse_go_time(expiration) if expiration else 0,
        int(node.get("ttl", 0)),
        int(node["modifiedIndex"]),
        int(node["createdIndex"]),
    ]


def _history(hub: dict[str, Any] | None) -> list[list[Any]]:
    """etcd's event ring (``Queue``: ``Events`` of ``Capacity`` slots, ``Size`` of them used from
    ``Front``), oldest first.  etcd does not save an event's EtcdIndex; the node's modifiedIndex is the
    index the event was made at."""
    queue = ((hub or {}).get("EventHistory") or {}).get("Queue") or {}
    slots = queue.get("Events") or []
    size, front = int(queue.get("Size", 0)), int(queue.get("Front", 0))
    capacity = int(queue.get("Capacity", len(slots)) or 1)
    out = []
    for i in range(size):
        e = slots[(front + i) % capacity]
        node = _view(e["node"])
        assert node is not None
        out.append([e["action"], node, _view(e.get("prevNode")), node[5], bool(e.get("refresh", False))])
    return out


def load(data: bytes, where: str) -> V2Snapshot:
    try:
        state = orjson.loads(data)
        root = state["Root"]
        index = int(state["CurrentIndex"])
        raw_stats = state.get("Stats") or {}
        stats = [int(raw_stats.get(f, 0)) for f in STATS_FIELDS]
        nodes: list[list[Any]] = []
        _flatten(root, "/", nodes)
        history = _history(state.get("WatcherHub"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AssertionError) as e:
        raise EtcdDataError(f"{where}: the v2 store in the snapshot is not etcd's JSON ({e!r})") from None
    return V2Snapshot(nodes, index, stats, int(state.get("CurrentVersion", 0)), history)


def _flatten(node: dict[str, Any], path: str, out: list[list[Any]]) -> None:
    # Iterative: a deep tree must not hit Python's recursion limit.
    stack = [(node, path)]
    while stack:
        n, p = stack.pop()
        if n.get("Path", p) != p:
            raise ValueError(f"node {n.get('Path')!r} stored under {p!r}")
        children = n.get("Children")
        expire = parse_go_time(n.get("ExpireTime") or "0001-01-01T00:00:00Z")
        created, modified = int(n["CreatedIndex"]), int(n["ModifiedIndex"])
        if children is None:
            out.append([p, n.get("Value", ""), created, modified, expire])
            continue
        out.append([p, None, created, modified, expire])
        base = "" if p == "/" else p
        for name in sorted(children, reverse=True):
            stack.append((children[name], f"{base}/{name}"))
