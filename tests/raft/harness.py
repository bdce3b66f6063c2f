"""A small synchronous cluster for scenario tests: every Ready is persisted and applied at once,
messages are delivered in order unless a test cuts links or filters them."""

from __future__ import annotations

import random
from collections.abc import Callable

from fastkv.raft.confchange import ConfChange
from fastkv.raft.messages import MSG_SNAP, Message, Snapshot, SnapshotMeta
from fastkv.raft.node import RaftNode
from fastkv.raft.readonly import ReadState
from fastkv.raft.types import ENTRY_CONF_CHANGE, Entry


class Net:
    def __init__(self, ids: list[int], **options: object) -> None:
        self.ids = list(ids)
        self.options: dict[str, object] = {"election_tick": 10, "heartbeat_tick": 1}
        self.options.update(options)
        self.nodes: dict[int, RaftNode] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.snapshots: dict[int, Snapshot] = {}
        self.installed: dict[int, list[Snapshot]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.sent: list[Message] = []  # every message that left a member, for assertions
        self.cut: set[tuple[int, int]] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.queue: list[Message] = []
        for i in self.ids:
            self.add(i, self.ids)

    def add(self, node_id: int, voters: list[int]) -> RaftNode:
        node = RaftNode(node_id, voters, rng=random.Random(node_id), **self.options)  # type: ignore[arg-type]
        node.log.snapshot_source = lambda: self.snapshots.get(node_id)
        self.nodes[node_id] = node
        self.applied[node_id] = []
        self.installed[node_id] = []
        self.read_states[node_id] = []
        return node

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self) -> None:
        self.cut.clear()
        self.drop = None

    def process(self, node_id: int) -> None:
        node = self.nodes[node_id]
        while node.has_ready():
            rd = node.ready()
            if rd.snapshot is not None:
                self.installed[node_id].append(rd.snapshot)
                self.snapshots[node_id] = rd.snapshot
            self.applied[node_id].extend(rd.committed_entries)
            for e in rd.committed_entries:
                if e.type == ENTRY_CONF_CHANGE:
                    op, _, who = e.data.partition(b":")
                    node.apply_conf_change(ConfChange(op.decode(), int(who)))
            self.read_states[node_id].extend(rd.read_states)
            self.sent.extend(rd.messages)
            self.queue.extend(rd.messages)
            node.advance(rd)

    def deliver(self, m: Message) -> None:
        if (m.frm, m.to) in self.cut or m.to not in self.nodes or (self.drop is not None and self.drop(m)):
            if m.type == MSG_SNAP and m.frm in self.nodes:
                self.nodes[m.frm].report_snapshot(m.to, False)
            return
        self.nodes[m.to].step(m)
        if m.type == MSG_SNAP:
            self.nodes[m.frm].report_snapshot(m.to, True)

    def stabilize(self, rounds: int = 200) -> None:
        """Persist, send and deliver until nothing moves."""
        for _ in range(rounds):
            for i in list(self.nodes):
                self.process(i)
            if not self.queue:
                return
            queue, self.queue = self.queue, []
            for m in queue:
                self.deliver(m)
        raise AssertionError("network did not stabilize")

    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].tick()
            self.stabilize()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.tick()
            self.stabilize()

    def elect(self, node_id: int) -> RaftNode:
        self.nodes[node_id].campaign()
        self.stabilize()
        return self.nodes[node_id]

    def propose(self, node_id: int, *values: bytes) -> int:
        index = self.nodes[node_id].propose_many(list(values))
        self.stabilize()
        return index

    def compact(self, node_id: int) -> None:
        node = self.nodes[node_id]
        index = node.log.applied
        snap = Snapshot(SnapshotMeta(index, node.log.term(index), list(node.voters)), b"state@%d" % index)
        self.snapshots[node_id] = snap
        node.log.compact(index)

    def data(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.data]
