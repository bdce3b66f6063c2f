"""The Raft log held in memory: entries since the last compaction, split into stable
(already written to the WAL) and unstable (not yet written) parts, plus the snapshot that
replaces the compacted prefix.

Invariants:
- ``entries[i].index == offset + i + 1``; ``offset`` is the index of the last compacted
  entry (the snapshot index) and ``offset_term`` its term.
- ``applied <= committed <= last_index()``; ``committed`` only moves forward, and no entry
  at or below it is ever replaced (Raft paper §5.4, State Machine Safety).
- ``stable_index`` is the highest index known to be durable on this member; entries above
  it are returned by ``unstable()`` until ``stable_to`` is called after the WAL write.
- ``pending_snapshot`` is a snapshot received from the leader and installed in memory
  (``restore``) but not yet handed to the caller through a Ready; the caller persists it
  and restores its state machine from it before applying anything after it.
- ``snapshot_source`` (set by the caller) returns the newest snapshot this member holds,
  which covers at least ``offset``; the leader sends it to followers that need entries
  already compacted away (§7).  It may return None when none is available yet.

Non-goals: no I/O.  Entries are shared, immutable objects; slices handed out are copies of
the list, never views the log later mutates.
"""

from __future__ import annotations

from collections.abc import Callable

from .messages import Snapshot
from .types import Entry


class RaftLog:
    __slots__ = (
        "entries",
        "offset",
        "offset_term",
        "committed",
        "applied",
        "stable_index",
        "pending_snapshot",
        "snapshot_source",
    )

    def __init__(self, offset: int = 0, offset_term: int = 0) -> None:
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_term = offset_term
        self.committed = offset
        self.applied = offset
        self.stable_index = offset
        self.pending_snapshot: Snapshot | None = None
        self.snapshot_source: Callable[[], Snapshot | None] | None = None

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; 0 when unknown (compacted or beyond the end)."""
        if index == self.offset:
            return self.offset_term
        i = index - self.offset - 1
        if 0 <= i < len(self.entries):
            return self.entries[i].term
        return 0

    def match_term(self, index: int, term: int) -> bool:
        """Whether this log holds an entry at ``index`` of ``term`` (the AppendEntries consistency check)."""
        if index < self.offset or index > self.last_index():
            return False
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate's log is at least as up-to-date as ours (Raft paper §5.4.1)."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries with index in [lo, hi), at least one, then as many as fit in ``max_bytes`` of data."""
        entries = self.entries[lo - self.offset - 1 : hi - self.offset - 1]
        if len(entries) > 1:
            size = 0
            for n, e in enumerate(entries):
                size += len(e.data)
                if size > max_bytes and n > 0:
                    return entries[:n]
        return entries

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (fast log back-off, thesis §5.3 note).

        Entries above it cannot match a log whose entry at ``index`` has ``term``, so the
        leader may skip them all in one round trip instead of one entry per round trip.
        """
        index = min(index, self.last_index())
        while index > self.offset and self.term(index) > term:
            index -= 1
        return index

    def append(self, entries: list[Entry]) -> None:
        """Append, truncating any conflicting suffix first (Raft paper §5.3)."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise ValueError(f"append at {first} would overwrite committed entries (commit {self.committed})")
        keep = first - self.offset - 1
        if keep < len(self.entries):
            del self.entries[keep:]
            self.stable_index = min(self.stable_index, first - 1)
        elif keep > len(self.entries):
            raise ValueError(f"gap in log: last {self.last_index()}, appending at {first}")
        self.entries.extend(entries)

    def maybe_append(self, index: int, log_term: int, commit: int, entries: list[Entry]) -> int:
        """A follower's handling of AppendEntries (§5.3): -1 when the consistency check fails,
        otherwise the index of the last entry the leader sent, after appending what is new."""
        if not self.match_term(index, log_term):
            return -1
        last_new = index + len(entries)
        # Skip the entries we already hold: a duplicated or reordered MsgApp must not
        # truncate entries a later message appended (§5.3: delete only on conflict).
        start = 0
        n = len(entries)
        while start < n:
            e = entries[start]
            if self.term(e.index) != e.term:
                break
            start += 1
        if start < n:
            if entries[start].index <= self.committed:
                raise AssertionError(
                    f"entry {entries[start].index} conflicts with committed entries (commit {self.committed})"
                )
            self.append(entries[start:] if start else entries)
        self.commit_to(min(commit, last_new))
        return last_new

    def restore_stable(self, entries: list[Entry]) -> None:
        """Load entries read back from the WAL: durable by definition."""
        self.append(entries)
        self.stable_index = self.last_index()

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (a follower far behind, §7)."""
        meta = snapshot.meta
        self.entries = []
        self.offset = self.committed = self.applied = self.stable_index = meta.index
        self.offset_term = meta.term
        self.pending_snapshot = snapshot

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable_index - self.offset :]

    def stable_to(self, index: int) -> None:
        self.stable_index = max(self.stable_index, min(index, self.last_index()))

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index():
                raise ValueError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def has_next_committed(self) -> bool:
        return min(self.committed, self.stable_index) > self.applied

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet handed out for applying, limited to durable ones."""
        hi = min(self.committed, self.stable_index)
        if hi <= self.applied:
            return []
        return self.entries[self.applied - self.offset : hi - self.offset]

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise ValueError(f"applied {index} outside [{self.applied}, {self.committed}]")
        self.applied = index

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (included), which a snapshot now covers."""
        if index <= self.offset:
            return
        if index > self.applied:
            raise ValueError(f"compact {index} beyond applied {self.applied}")
        term = self.term(index)
        del self.entries[: index - self.offset]
        self.offset, self.offset_term = index, term
