"""A deterministic simulation of a Raft cluster over a hostile network, checking safety at every step.

Each member is a RaftNode driven exactly as the server drives it: ``ready()`` is taken,
committed entries are applied at once (they are durable), the Ready is "written" to an
in-memory disk some steps later, only then are its messages sent and ``advance`` called.
Messages may be stepped in and proposals made while a write is in flight.  A crash loses
everything not yet on the disk (the in-flight Ready included); a restart rebuilds the member
from its disk: newest snapshot, WAL entries, hard state, then replays committed entries.

The network drops, duplicates, delays (so reorders) messages and partitions members.  All
randomness comes from one ``random.Random(seed)``: a failing seed replays exactly.

Checked after every action (``check``), the safety properties of Raft (paper figure 3):
- Election Safety: at most one leader per term.
- Log Matching: an (index, term) pair identifies one entry and the term of the one before
  it, for every entry any member ever wrote (checked on each Ready's entries).
- State Machine Safety: a committed index never gets another entry; every member applies
  the same entry at each index, in index order, and snapshots carry the same digest.
- Leader Completeness: a leader of term T holds every entry committed at a term below T.
- ReadIndex linearizability: a read's index is at least the highest commit index any
  member knew when the read was requested.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

from fastkv.raft.confchange import ConfChange
from fastkv.raft.log import RaftLog
from fastkv.raft.messages import MSG_SNAP, Message, Snapshot, SnapshotMeta
from fastkv.raft.node import LEADER, NotLeaderError, RaftNode, Ready
from fastkv.raft.types import EMPTY_HARD_STATE, ENTRY_CONF_CHANGE, Entry, HardState


class SafetyViolation(AssertionError):
    pass


@dataclass
class Disk:
    hard_state: HardState = EMPTY_HARD_STATE
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None


@dataclass
class Member:
    id: int
    node: RaftNode
    disk: Disk
    applied: int = 0
    digest: int = 0
    inflight: Ready | None = None
    persist_at: int = 0
    commit_checked: int = 0
    down_until: int = -1


@dataclass
class Faults:
    drop: float = 0.05
    duplicate: float = 0.03
    max_delay: int = 6
    partition: float = 0.02
    crash: float = 0.01
    compact: float = 0.02
    propose: float = 0.12
    read: float = 0.03
    transfer: float = 0.01
    conf_change: float = 0.0


class Cluster:
    def __init__(self, n: int, seed: int, faults: Faults | None = None, **raft_options: object) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.ids = list(range(1, n + 1))  # the initial voters
        # One spare member, outside the configuration until a conf change adds it.
        self.all_ids = list(range(1, n + 2))
        # Small messages and windows split a new leader's catch-up into many MsgApps, which
        # is what exposes a wrong commit rule (figure 8) or a wrong inflight accounting.
        self.raft_options: dict[str, object] = {
            "election_tick": 5,
            "heartbeat_tick": 1,
            "max_inflight": self.rng.choice([1, 2, 4, 64]),
            "max_size_per_msg": self.rng.choice([0, 6, 20, 1 << 20]),
        }
        self.raft_options.update(raft_options)
        self.now = 0
        self.members: dict[int, Member] = {}
        for i in self.all_ids:
            self.members[i] = self._boot(i, Disk())
        # (deliver_at, seq, msg); seq keeps equal times in a deterministic order.
        self.net: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.isolated: set[int] = set()
        # Global knowledge the checks compare every member against.
        self.leader_of_term: dict[int, int] = {}
        self.entry_of: dict[
            tuple[int, int], tuple[int, bytes, int]
        ] = {}  # (index, term) -> (type, data, prev term)
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.commit_term: dict[int, int] = {}  # index -> lowest term of a member that knew it committed
        self.applied: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, digest after it)
        self.reads: dict[bytes, int] = {}  # ctx -> highest commit known when requested
        self.reads_done = 0
        self.proposed = 0
        self.next_value = 0
        self.spare_added = False

    # -- members ------------------------------------------------------------------------

    def _boot(self, node_id: int, disk: Disk) -> Member:
        snap = disk.snapshot
        if snap is not None:
            log = RaftLog(snap.meta.index, snap.meta.term)
            voters = list(snap.meta.voters)
        else:
            log = RaftLog()
            voters = list(self.ids)
        log.restore_stable(list(disk.entries))
        node = RaftNode(
            node_id,
            voters,
            log,
            disk.hard_state,
            rng=random.Random(self.rng.getrandbits(64)),
            **self.raft_options,  # type: ignore[arg-type]
        )
        m = Member(node_id, node, disk)
        log.snapshot_source = lambda: m.disk.snapshot
        if snap is not None:
            m.applied, m.digest = self._restore_sm(snap)
        m.commit_checked = log.offset
        # Replay what the disk says is committed, as the server does on restart.
        while True:
            entries = log.next_committed()
            if not entries:
                break
            self._apply(m, entries)
            log.applied_to(entries[-1].index)
        return m

    def _restore_sm(self, snap: Snapshot) -> tuple[int, int]:
        index = snap.meta.index
        digest = int(snap.data)
        known = self.applied.get(index)
        if index and (known is None or known[2] != digest or known[0] != snap.meta.term):
            raise SafetyViolation(f"snapshot at {index} has digest {digest}, applied history says {known}")
        return index, digest

    def _apply(self, m: Member, entries: list[Entry]) -> None:
        for e in entries:
            if e.index != m.applied + 1:
                raise SafetyViolation(f"member {m.id} applies {e.index} after {m.applied}")
            m.digest = zlib.crc32(b"%d:%d:%s" % (e.term, e.index, e.data), m.digest)
            m.applied = e.index
            if e.type == ENTRY_CONF_CHANGE:
                op, _, who = e.data.partition(b":")
                m.node.apply_conf_change(ConfChange(op.decode(), int(who)))
            known = self.applied.setdefault(e.index, (e.term, e.data, m.digest))
            if known != (e.term, e.data, m.digest):
                raise SafetyViolation(f"member {m.id} applied {e!r} at {e.index}, another applied {known}")

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.down_until < 0]

    def leaders(self) -> list[Member]:
        return [m for m in self.live() if m.node.state == LEADER]

    def crash(self, m: Member, down_for: int) -> None:
        m.down_until = self.now + down_for
        m.inflight = None

    def restart(self, m: Member) -> None:
        self.members[m.id] = self._boot(m.id, m.disk)

    # -- the Ready loop -----------------------------------------------------------------

    def take_ready(self, m: Member, delay: int) -> bool:
        node = m.node
        if m.inflight is not None or not node.has_ready():
            return False
        rd = node.ready()
        self._check_new_entries(m, rd.entries)
        if rd.snapshot is not None:
            m.applied, m.digest = self._restore_sm(rd.snapshot)
        if rd.committed_entries:
            self._apply(m, rd.committed_entries)
        for rs in rd.read_states:
            self._check_read(m, rs.index, rs.request_ctx)
        m.inflight = rd
        m.persist_at = self.now + delay
        if not rd.must_sync:
            self.finish_persist(m)
        return True

    def finish_persist(self, m: Member) -> None:
        rd = m.inflight
        assert rd is not None
        disk = m.disk
        if rd.snapshot is not None:
            disk.snapshot = rd.snapshot
            disk.entries = []
        if rd.entries:
            first = rd.entries[0].index
            disk.entries = [e for e in disk.entries if e.index < first] + list(rd.entries)
        base = disk.snapshot.meta.index if disk.snapshot is not None else 0
        if disk.entries and disk.entries[0].index != base + 1:
            raise SafetyViolation(
                f"member {m.id}: disk log starts at {disk.entries[0].index} after snapshot {base}"
            )
        if rd.hard_state is not None:
            disk.hard_state = rd.hard_state
        m.inflight = None
        for msg in rd.messages:
            self.send(msg)
        m.node.advance(rd)

    # -- network ------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        f = self.faults
        if msg.to in self.isolated or msg.frm in self.isolated or self.rng.random() < f.drop:
            if msg.type == MSG_SNAP:
                self.members[msg.frm].node.report_snapshot(msg.to, False)
            elif self.rng.random() < 0.3:
                self.members[msg.frm].node.report_unreachable(msg.to)
            return
        self.seq += 1
        self.net.append((self.now + self.rng.randrange(f.max_delay + 1), self.seq, msg))

    def deliver_one(self) -> bool:
        ready = [i for i, (at, _, _) in enumerate(self.net) if at <= self.now]
        if not ready:
            return False
        i = self.rng.choice(ready)
        at, seq, msg = self.net[i]
        if self.rng.random() >= self.faults.duplicate:
            del self.net[i]
        self.deliver(msg)
        return True

    def deliver(self, msg: Message) -> None:
        to = self.members.get(msg.to)
        ok = not (to is None or to.down_until >= 0 or msg.to in self.isolated or msg.frm in self.isolated)
        if ok:
            to.node.step(msg)
        if msg.type == MSG_SNAP:
            # The transport always reports how a snapshot send ended (etcd's ReportSnapshot):
            # a leader that never hears would keep the follower paused forever.
            sender = self.members[msg.frm]
            if sender.down_until < 0:
                sender.node.report_snapshot(msg.to, ok)

    # -- actions ------------------------------------------------------------------------

    def propose(self, leader: Member) -> None:
        values = []
        for _ in range(self.rng.randint(1, 3)):
            self.next_value += 1
            values.append(b"v%d" % self.next_value)
        try:
            leader.node.propose_many(values)
            self.proposed += len(values)
        except NotLeaderError:
            pass

    def change_conf(self, leader: Member) -> None:
        """Add the spare member once, or remove a voter while more than three remain."""
        voters = leader.node.voters
        spare = self.all_ids[-1]
        if spare not in voters and not self.spare_added:
            data = b"add:%d" % spare
        elif len(voters) > 3:
            data = b"remove:%d" % self.rng.choice(voters)
        else:
            return
        try:
            leader.node.propose(data, ENTRY_CONF_CHANGE)
        except NotLeaderError:
            return
        self.spare_added = self.spare_added or data.startswith(b"add")

    def read(self, m: Member) -> None:
        self.next_value += 1
        ctx = b"r%d" % self.next_value
        self.reads[ctx] = max(x.node.log.committed for x in self.live())
        m.node.read_index(ctx)

    def compact(self, m: Member) -> None:
        log = m.node.log
        index = m.applied
        if index <= log.offset or log.pending_snapshot is not None or m.inflight is not None:
            return
        if index > log.stable_index:
            return
        term = log.term(index)
        snap = Snapshot(SnapshotMeta(index, term, list(m.node.voters)), b"%d" % m.digest)
        m.disk.snapshot = snap
        m.disk.entries = [e for e in m.disk.entries if e.index > index]
        log.compact(index)

    def step(self) -> None:
        """One random action, then the safety checks."""
        self.now += 1
        rng = self.rng
        f = self.faults
        for m in self.members.values():
            if 0 <= m.down_until <= self.now:
                self.restart(m)
        live = self.live()
        r = rng.random()
        if r < 0.15:
            for m in live:
                m.node.tick()
        elif r < 0.55:
            for _ in range(rng.randint(1, 4)):
                if not self.deliver_one():
                    break
        else:
            for m in live:
                if m.inflight is not None and m.persist_at <= self.now:
                    self.finish_persist(m)
                self.take_ready(m, rng.randrange(3))
        if rng.random() < f.propose:
            for m in self.leaders():
                self.propose(m)
        if rng.random() < f.read and live:
            self.read(rng.choice(live))
        if rng.random() < f.compact and live:
            self.compact(rng.choice(live))
        if rng.random() < f.transfer:
            for m in self.leaders():
                m.node.transfer_leader(rng.choice(self.all_ids))
        if rng.random() < f.conf_change:
            for m in self.leaders():
                self.change_conf(m)
        if rng.random() < f.partition:
            if self.isolated:
                self.isolated = set()
            else:
                self.isolated = set(rng.sample(self.all_ids, rng.randint(1, len(self.all_ids) // 2)))
        if rng.random() < f.crash:
            victim = rng.choice(self.all_ids)
            if self.members[victim].down_until < 0:
                self.crash(self.members[victim], rng.randint(1, 40))
        self.check()

    # -- checks -------------------------------------------------------------------------

    def _check_new_entries(self, m: Member, entries: list[Entry]) -> None:
        if not entries:
            return
        log = m.node.log
        prev_term = log.term(entries[0].index - 1)
        for e in entries:
            key = (e.index, e.term)
            value = (e.type, e.data, prev_term)
            known = self.entry_of.setdefault(key, value)
            if known != value:
                raise SafetyViolation(
                    f"log matching: member {m.id} has {e!r} after term {prev_term}, saw {known}"
                )
            prev_term = e.term

    def _check_read(self, m: Member, index: int, ctx: bytes) -> None:
        floor = self.reads.pop(ctx, None)
        if floor is None:
            return  # duplicated answer
        if index < floor:
            raise SafetyViolation(f"read {ctx!r} at {index} misses commit {floor} known before it")
        self.reads_done += 1

    def check(self) -> None:
        for m in self.live():
            node = m.node
            log = node.log
            if node.state == LEADER:
                prev = self.leader_of_term.setdefault(node.term, m.id)
                if prev != m.id:
                    raise SafetyViolation(f"two leaders in term {node.term}: {prev} and {m.id}")
            if not (log.applied <= log.committed <= log.last_index()):
                raise SafetyViolation(f"member {m.id}: applied {log.applied} commit {log.committed}")
            if log.committed > m.commit_checked:
                lo = max(m.commit_checked, log.offset)
                for e in log.entries[lo - log.offset : log.committed - log.offset]:
                    known = self.committed.setdefault(e.index, (e.term, e.data))
                    if known != (e.term, e.data):
                        raise SafetyViolation(f"committed entry {e.index} changed: {known} then {e!r}")
                    ct = self.commit_term.get(e.index)
                    if ct is None or node.term < ct:
                        self.commit_term[e.index] = node.term
                        self._check_leaders_hold(e.index)
                m.commit_checked = log.committed
        for m in self.leaders():
            if m.node.term not in self._completeness_checked:
                self._completeness_checked.add(m.node.term)
                for index in self.committed:
                    self._check_leader_holds(m, index)

    _completeness_checked: set[int]

    def _check_leaders_hold(self, index: int) -> None:
        for m in self.leaders():
            self._check_leader_holds(m, index)

    def _check_leader_holds(self, m: Member, index: int) -> None:
        node = m.node
        if node.term <= self.commit_term[index] or index <= node.log.offset:
            return
        term = self.committed[index][0]
        if node.log.term(index) != term:
            raise SafetyViolation(
                f"leader {m.id} of term {node.term} lacks entry {index} (term {term}) committed "
                f"by term {self.commit_term[index]}"
            )

    # -- running ------------------------------------------------------------------------

    def run(self, steps: int) -> None:
        self._completeness_checked = set()
        for _ in range(steps):
            self.step()

    def settle(self, rounds: int = 400) -> None:
        """Heal everything and run without faults until a leader commits and every member applies it."""
        self.isolated = set()
        self.faults = Faults(
            drop=0, duplicate=0, max_delay=0, partition=0, crash=0, compact=0, propose=0, read=0, transfer=0
        )
        for m in self.members.values():
            if m.down_until >= 0:
                self.restart(m)
        marker: tuple[int, int] | None = None  # (term, index) of the entry every member must apply
        for _ in range(rounds):
            self.now += 1
            for m in self.live():
                m.node.tick()
            for _ in range(3):
                while self.deliver_one():
                    pass
                for m in self.live():
                    if m.inflight is not None:
                        self.finish_persist(m)
                    self.take_ready(m, 0)
                    if m.inflight is not None:
                        self.finish_persist(m)
            self.check()
            leaders = self.leaders()
            if len(leaders) != 1 or leaders[0].node.lead_transferee:
                continue
            lead = leaders[0].node
            if marker is None or marker[0] != lead.term:
                marker = (lead.term, lead.propose(b"settle"))
            term, index = marker
            if self.committed.get(index) == (term, b"settle") and all(
                self.members[v].applied >= index for v in lead.voters
            ):
                return
        raise AssertionError(f"cluster did not settle: {[m.node.status() for m in self.members.values()]}")
