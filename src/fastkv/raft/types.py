"""Raft's persistent vocabulary: log entries and the hard state (Raft paper, figure 2)."""

from __future__ import annotations

from typing import NamedTuple

# Entry types.  NORMAL entries carry an encoded V2Request (or nothing: the empty entry a
# new leader appends to commit entries of earlier terms, Raft paper §5.4.2).
ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1


class Entry(NamedTuple):
    term: int
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: Raft's name
    type: int
    data: bytes


class HardState(NamedTuple):
    """What must be on disk before a member answers any message: term, vote, commit."""

    term: int
    vote: int
    commit: int


EMPTY_HARD_STATE = HardState(0, 0, 0)
