"""The TTL index: which nodes expire when, so a SYNC costs O(expired * log n), not O(keys).

A binary heap of ``(expire_ns, seq, node)`` with lazy deletion: ``live`` maps each node that currently
has a TTL to the ``seq`` of its one valid heap entry.  Removing or re-timing a node only touches
``live``; stale entries are dropped when they reach the top.  Ties on ``expire_ns`` expire in the order
the deadlines were set (``seq``), the same on every replica.  The heap is rebuilt when stale entries
outnumber live ones, so its size stays O(live).
"""

from __future__ import annotations

import heapq

from fastkv._native.keyindex import Node


class TTLIndex:
    __slots__ = ("heap", "live", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Node]] = []
        self.live: dict[Node, int] = {}
        self.seq = 0

    def __len__(self) -> int:
        return len(self.live)

    def push(self, node: Node) -> None:
        """Track ``node`` at its current ``expire_ns`` (replacing any earlier deadline)."""
        self.seq += 1
        self.live[node] = self.seq
        heapq.heappush(self.heap, (node.expire_ns, self.seq, node))
        if len(self.heap) > 64 and len(self.heap) > 2 * len(self.live):
            self._compact()

    def remove(self, node: Node) -> None:
        self.live.pop(node, None)

    def top(self) -> Node | None:
        """The live node with the earliest deadline, or None."""
        heap, live = self.heap, self.live
        while heap:
            _, seq, node = heap[0]
            if live.get(node) == seq:
                return node
            heapq.heappop(heap)
        return None

    def pop(self) -> None:
        node = self.top()
        if node is not None:
            heapq.heappop(self.heap)
            del self.live[node]

    def _compact(self) -> None:
        live = self.live
        self.heap = [entry for entry in self.heap if live.get(entry[2]) == entry[1]]
        heapq.heapify(self.heap)
