"""The sans-IO Raft core: proposals and ticks in, ``Ready`` out, ``advance()`` back.

No clock, socket, file or asyncio here.  The caller (server/) drives it:

1. ``propose(data)`` / ``tick()`` change the in-memory state;
2. ``ready()`` returns what must happen next: the hard state and entries to persist,
   and the committed entries that may be applied;
3. the caller persists (one WAL write + one fdatasync for the whole Ready), applies the
   committed entries, then calls ``advance(rd)``.

Entries are committed only once a quorum of voters has them durably, counting this
member only after its own WAL write (``advance``), so nothing is applied before it is on
disk here (Raft paper §5.3, §5.4.2: only entries of the current term are committed by
counting replicas; a new leader appends an empty entry to commit earlier ones).

This version runs clusters of one voter: the member elects itself at once.  Multi-voter
elections, replication messages, per-follower progress and ReadIndex arrive with the
clustering work; the log, the Ready contract and the commit rule are already the ones
they build on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .log import RaftLog
from .types import EMPTY_HARD_STATE, ENTRY_NORMAL, Entry, HardState

FOLLOWER = "StateFollower"
CANDIDATE = "StateCandidate"
LEADER = "StateLeader"


class NotLeaderError(Exception):
    """A proposal reached a member that is not the leader."""


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None  # None when unchanged since the last Ready
    entries: list[Entry]  # to persist before anything else is acknowledged
    committed_entries: list[Entry]  # durable and committed: apply in order
    # True when the Ready must be fdatasynced before messages go out or anything is
    # acknowledged: new entries, or a new term or vote.  A commit-only change need not be:
    # a lost commit index is recomputed after restart.
    must_sync: bool = True
    soft_state_changed: bool = False
    messages: list[object] = field(default_factory=list)


class RaftNode:
    __slots__ = ("id", "voters", "log", "term", "vote", "state", "lead", "_prev_hard_state", "_match")

    def __init__(
        self,
        node_id: int,
        voters: list[int],
        log: RaftLog | None = None,
        hard_state: HardState = EMPTY_HARD_STATE,
    ) -> None:
        if node_id not in voters:
            raise ValueError(f"member {node_id:x} is not among the voters")
        self.id = node_id
        self.voters = sorted(voters)
        self.log = log or RaftLog()
        self.term = hard_state.term
        self.vote = hard_state.vote
        if hard_state.commit:
            self.log.commit_to(min(hard_state.commit, self.log.last_index()))
        self.state = FOLLOWER
        self.lead = 0
        self._prev_hard_state = HardState(self.term, self.vote, self.log.committed)
        # Highest index each voter is known to hold durably (self included).
        self._match: dict[int, int] = {v: 0 for v in self.voters}
        self._match[self.id] = self.log.stable_index

    # -- inputs -------------------------------------------------------------------------

    def campaign(self) -> None:
        """Start an election (Raft paper §5.2).  A sole voter wins it at once."""
        if len(self.voters) != 1:
            raise NotImplementedError("elections among several voters are not implemented yet")
        self.term += 1
        self.vote = self.id
        self._become_leader()

    def tick(self) -> None:
        """One logical clock tick.  A sole voter with no leader campaigns."""
        if self.state != LEADER and len(self.voters) == 1:
            self.campaign()

    def propose(self, data: bytes, entry_type: int = ENTRY_NORMAL) -> int:
        """Append a proposal to the leader's log; returns its index."""
        if self.state != LEADER:
            raise NotLeaderError()
        index = self.log.last_index() + 1
        self.log.entries.append(Entry(self.term, index, entry_type, data))
        return index

    def propose_many(self, items: list[bytes]) -> int:
        """Append several proposals; returns the index of the last one."""
        if self.state != LEADER:
            raise NotLeaderError()
        term = self.term
        index = self.log.last_index()
        append = self.log.entries.append
        for data in items:
            index += 1
            append(Entry(term, index, ENTRY_NORMAL, data))
        return index

    # -- outputs ------------------------------------------------------------------------

    def has_ready(self) -> bool:
        log = self.log
        return (
            log.stable_index < log.last_index()
            or min(log.committed, log.stable_index) > log.applied
            or self._hard_state() != self._prev_hard_state
        )

    def ready(self) -> Ready:
        hs = self._hard_state()
        prev = self._prev_hard_state
        entries = self.log.unstable()
        return Ready(
            hard_state=hs if hs != prev else None,
            entries=entries,
            committed_entries=self.log.next_committed(),
            must_sync=bool(entries) or hs.term != prev.term or hs.vote != prev.vote,
        )

    def advance(self, rd: Ready) -> None:
        """The caller persisted ``rd.entries`` / ``rd.hard_state`` and applied ``rd.committed_entries``."""
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if rd.entries:
            last = rd.entries[-1]
            # The log may have been truncated since; only mark what is still ours.
            if self.log.term(last.index) == last.term:
                self.log.stable_to(last.index)
                self._match[self.id] = max(self._match[self.id], last.index)
                if self.state == LEADER:
                    self._maybe_commit()

    # -- internals ----------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _become_leader(self) -> None:
        self.state = LEADER
        self.lead = self.id
        # The empty entry of the new term lets earlier-term entries commit (§5.4.2).
        self.propose(b"")

    def _maybe_commit(self) -> None:
        matches = sorted((self._match[v] for v in self.voters), reverse=True)
        quorum_index = matches[len(self.voters) // 2]
        # Only entries of the current term are committed by counting replicas (§5.4.2).
        if quorum_index > self.log.committed and self.log.term(quorum_index) == self.term:
            self.log.commit_to(quorum_index)

    def status(self) -> dict[str, int | str]:
        return {
            "id": self.id,
            "term": self.term,
            "vote": self.vote,
            "lead": self.lead,
            "state": self.state,
            "commit": self.log.committed,
            "applied": self.log.applied,
        }
