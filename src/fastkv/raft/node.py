"""RaftNode: the Raft state machine (raft.py) plus the Ready/advance contract with the caller.

No clock, socket, file or asyncio here.  The caller (server/) drives it:

1. ``tick()``, ``step(msg)``, ``propose(data)``, ``read_index(ctx)`` ... change the
   in-memory state;
2. ``ready()`` returns what must happen next, and the caller does it in this order:
   a. if ``rd.snapshot``: persist it and restore the state machine from it;
   b. persist ``rd.hard_state`` and ``rd.entries`` (one WAL write; fdatasync when
      ``rd.must_sync``);
   c. only then send ``rd.messages``: a vote or an acknowledgement must never go out for
      state that a crash could still lose (Raft paper figure 2, "respond after persisting");
      when ``must_sync`` is False nothing in the Ready needs the disk and they may go at once;
   d. apply ``rd.committed_entries`` in order (they are already durable, so this may run
      before or during the write of b), then serve ``rd.read_states`` whose index is applied;
   e. ``advance(rd)``.
   At most one Ready is outstanding: ``ready()`` is not called again before ``advance``.
   Messages may be stepped in and proposals made while a Ready is being persisted.

Entries are committed only once a quorum of voters has them durably, counting this
member only after its own WAL write (``advance``), so nothing is applied before it is on
disk here (Raft paper §5.3, §5.4.2: only entries of the current term are committed by
counting replicas; a new leader appends an empty entry to commit earlier ones).

Proposals only append to the leader's log; the MsgApps that carry them are built once per
Ready (``_flush_appends``), so a burst of proposals costs one message per follower.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .confchange import ConfChange
from .log import RaftLog
from .messages import Message, Snapshot
from .raft import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, NotLeaderError, RaftCore
from .readonly import ReadState
from .types import EMPTY_HARD_STATE, Entry, HardState

__all__ = [
    "CANDIDATE",
    "FOLLOWER",
    "LEADER",
    "PRE_CANDIDATE",
    "ConfChange",
    "NotLeaderError",
    "RaftNode",
    "Ready",
]


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None  # None when unchanged since the last Ready
    entries: list[Entry]  # to persist before anything else is acknowledged
    committed_entries: list[Entry]  # durable and committed: apply in order
    # True when the Ready must be fdatasynced before messages go out or anything is
    # acknowledged: new entries, a snapshot, or a new term or vote.  A commit-only change
    # need not be: a lost commit index is recomputed after restart.
    must_sync: bool = True
    soft_state_changed: bool = False  # ``lead`` or ``state`` changed since the last Ready
    messages: list[Message] = field(default_factory=list)
    snapshot: Snapshot | None = None  # to persist and restore the state machine from, first
    read_states: list[ReadState] = field(default_factory=list)


class RaftNode(RaftCore):
    __slots__ = ("_prev_hard_state", "_prev_soft_state")

    def __init__(
        self,
        node_id: int,
        voters: list[int],
        log: RaftLog | None = None,
        hard_state: HardState = EMPTY_HARD_STATE,
        *,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_inflight: int = 256,
        max_size_per_msg: int = 1 << 20,
        rng: random.Random | None = None,
    ) -> None:
        """``voters`` and ``log`` as restored from the snapshot and WAL; options as etcd's raft.Config."""
        super().__init__(
            node_id,
            voters,
            log,
            hard_state,
            election_tick=election_tick,
            heartbeat_tick=heartbeat_tick,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight=max_inflight,
            max_size_per_msg=max_size_per_msg,
            rng=rng,
        )
        self._prev_hard_state = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft_state = (0, FOLLOWER)

    def has_ready(self) -> bool:
        if self._bcast_pending:
            self._flush_appends()
        log = self.log
        return bool(
            self.msgs
            or self.read_states
            or log.pending_snapshot is not None
            or log.stable_index < log.offset + len(log.entries)
            or min(log.committed, log.stable_index) > log.applied
            or self._prev_hard_state != (self.term, self.vote, log.committed)
            or self._prev_soft_state != (self.lead, self.state)
        )

    def ready(self) -> Ready:
        if self._bcast_pending:
            self._flush_appends()
        log = self.log
        hs = HardState(self.term, self.vote, log.committed)
        prev = self._prev_hard_state
        entries = log.unstable()
        snapshot = log.pending_snapshot
        soft = (self.lead, self.state)
        soft_changed = soft != self._prev_soft_state
        self._prev_soft_state = soft
        msgs, self.msgs = self.msgs, []
        read_states, self.read_states = self.read_states, []
        return Ready(
            hard_state=hs if hs != prev else None,
            entries=entries,
            committed_entries=log.next_committed(),
            must_sync=bool(entries) or snapshot is not None or hs.term != prev.term or hs.vote != prev.vote,
            soft_state_changed=soft_changed,
            messages=msgs,
            snapshot=snapshot,
            read_states=read_states,
        )

    def advance(self, rd: Ready) -> None:
        """The caller persisted ``rd`` and applied ``rd.committed_entries``."""
        log = self.log
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if rd.snapshot is not None and log.pending_snapshot is rd.snapshot:
            log.pending_snapshot = None
        if rd.committed_entries:
            index = rd.committed_entries[-1].index
            # A snapshot installed meanwhile may already have moved ``applied`` past them.
            if index > log.applied:
                log.applied_to(index)
        if rd.entries:
            last = rd.entries[-1]
            # The log may have been truncated since; only mark what is still ours (by Log
            # Matching, an entry with the same index and term has the same prefix).
            if log.term(last.index) == last.term:
                log.stable_to(last.index)
                if self.state == LEADER:
                    me = self.progress.get(self.id)
                    if me is not None and me.maybe_update(last.index):
                        self._maybe_commit()

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {
            "id": self.id,
            "term": self.term,
            "vote": self.vote,
            "lead": self.lead,
            "state": self.state,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "voters": list(self.voters),
        }
        if self.state == LEADER:
            status["progress"] = {
                v: {"match": pr.match, "next": pr.next, "state": pr.state} for v, pr in self.progress.items()
            }
            status["lead_transferee"] = self.lead_transferee
        return status
