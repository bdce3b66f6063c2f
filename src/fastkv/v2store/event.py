"""v2 events: what a store operation produced, as etcd's ``Event`` and ``NodeExtern``.

``Event`` and ``NodeView`` live in the compiled ``fastkv._native.keyindex`` (their JSON encoder is the
hottest code of every response); this module names them for the rest of the package and lists the actions.

- ``event.node`` / ``event.prev_node`` are immutable ``NodeView`` snapshots taken when the event happened
  (``ttl`` is computed with that operation's ``now_ns``), so history replays answer what etcd answered.
- ``event.etcd_index`` is the store index after the operation (X-Etcd-Index); ``event.index`` is the
  node's modifiedIndex, the event's position in the watch history.
- ``event.refresh`` marks TTL refreshes: they take an index and enter the history but no watcher sees them.
- ``event.to_json()`` is etcd's exact body, trailing newline included.
"""

from __future__ import annotations

from fastkv._native.keyindex import Event, NodeView

GET = "get"
CREATE = "create"
SET = "set"
UPDATE = "update"
DELETE = "delete"
COMPARE_AND_SWAP = "compareAndSwap"
COMPARE_AND_DELETE = "compareAndDelete"
EXPIRE = "expire"

__all__ = [
    "COMPARE_AND_DELETE",
    "COMPARE_AND_SWAP",
    "CREATE",
    "DELETE",
    "EXPIRE",
    "Event",
    "GET",
    "NodeView",
    "SET",
    "UPDATE",
    "is_created",
]


def is_created(event: Event) -> bool:
    """True when etcd answers 201: a create, or a set that replaced nothing."""
    return event.action == CREATE or (event.action == SET and event.prev_node is None)
