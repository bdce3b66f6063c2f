"""The Raft log held in memory: entries since the last compaction, split into stable
(already written to the WAL) and unstable (not yet written) parts.

Invariants:
- ``entries[i].index == offset + i + 1``; ``offset`` is the index of the last compacted
  entry (the snapshot index) and ``offset_term`` its term.
- ``applied <= committed <= last_index()``; ``committed`` only moves forward.
- ``stable_index`` is the highest index known to be durable on this member; entries above
  it are returned by ``unstable()`` until ``stable_to`` is called after the WAL write.
"""

from __future__ import annotations

from .types import Entry


class RaftLog:
    __slots__ = ("entries", "offset", "offset_term", "committed", "applied", "stable_index")

    def __init__(self, offset: int = 0, offset_term: int = 0) -> None:
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_term = offset_term
        self.committed = offset
        self.applied = offset
        self.stable_index = offset

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

    def restore_stable(self, entries: list[Entry]) -> None:
        """Load entries read back from the WAL: durable by definition."""
        self.append(entries)
        self.stable_index = self.last_index()

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
