"""What the leader knows about each follower's log (Raft paper figure 2: nextIndex, matchIndex)
and how it paces replication to it (thesis §4.2.1 flow control, etcd's tracker).

A Progress is in one of three states:

- PROBE: the leader does not know where the follower's log matches its own.  It sends at
  most one MsgApp per heartbeat interval (``probe_sent``) and backs ``next`` off on each
  rejection until the consistency check passes.
- REPLICATE: the logs match up to ``match``; the leader streams entries optimistically,
  advancing ``next`` as soon as a MsgApp is sent, with at most ``Inflights.size`` MsgApps
  unacknowledged so a slow follower cannot make the leader queue without bound.
- SNAPSHOT: the entries the follower needs were compacted; a snapshot at
  ``pending_snapshot`` is on its way and nothing else is sent until the follower
  acknowledges it or the transport reports a failure.

Invariants: ``match < next``; ``match`` only moves forward while this member stays leader.
"""

from __future__ import annotations

from collections import deque

PROBE = "StateProbe"
REPLICATE = "StateReplicate"
SNAPSHOT = "StateSnapshot"


class Inflights:
    """Last indexes of the MsgApps sent to one follower and not yet acknowledged, oldest first."""

    __slots__ = ("size", "_buf")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf: deque[int] = deque()

    def add(self, last_index: int) -> None:
        if len(self._buf) >= self.size:
            raise AssertionError("inflights overflow: the caller must check full() first")
        self._buf.append(last_index)

    def free_le(self, index: int) -> None:
        """An acknowledgement up to ``index`` frees every message ending at or before it."""
        buf = self._buf
        while buf and buf[0] <= index:
            buf.popleft()

    def free_first_one(self) -> None:
        if self._buf:
            self._buf.popleft()

    def full(self) -> bool:
        return len(self._buf) >= self.size

    def count(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()


class Progress:
    __slots__ = ("match", "next", "state", "pending_snapshot", "recent_active", "probe_sent", "inflights")

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.pending_snapshot = 0
        # Heard from since the last check-quorum round (thesis §6.2).
        self.recent_active = False
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)

    def _reset_state(self, state: str) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        # After a snapshot, resume right after it: the follower holds at least that much.
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; False when it is stale (reordered or duplicated)."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """The follower rejected a MsgApp whose previous entry was ``rejected``; back off ``next``.

        False when the rejection is stale: in REPLICATE a rejection at or below ``match``
        belongs to an older message; in PROBE only a rejection of the probe just sent counts.
        """
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        state = self.state
        if state == PROBE:
            return self.probe_sent
        if state == REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress({self.state} match={self.match} next={self.next} "
            f"inflight={self.inflights.count()} snap={self.pending_snapshot})"
        )
