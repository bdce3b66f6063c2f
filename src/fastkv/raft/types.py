"""Raft's persistent vocabulary: log entries and the hard state (Raft paper, figure 2)."""

from __future__ import annotations

from typing import NamedTuple

from fastkv._native.raftentry import Entry

# Entry types.  NORMAL entries carry an encoded V2Request (or nothing: the empty entry a
# new leader appends to commit entries of earlier terms, Raft paper §5.4.2).
ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1
# A member's published name and client URLs (etcd publishes them through the log too).  Not a
# configuration change for Raft: it neither changes voters nor blocks campaigns.
ENTRY_MEMBER_ATTRIBUTES = 2
# A v2 request on the store's internal namespaces (etcd's /0 cluster and /2 auth trees), which the
# keys API cannot reach: its path is the full store path (/2/users/alice).
ENTRY_INTERNAL = 3
# A batch of another v2 server's nodes and events, applied with their own indexes (fastkvctl mirror;
# v2store/mirror.py): JSON {"request_id", "batch"}.
ENTRY_MIRROR = 4


__all__ = [
    "EMPTY_HARD_STATE",
    "ENTRY_CONF_CHANGE",
    "ENTRY_INTERNAL",
    "ENTRY_MEMBER_ATTRIBUTES",
    "ENTRY_MIRROR",
    "ENTRY_NORMAL",
    "Entry",
    "HardState",
]


class HardState(NamedTuple):
    """What must be on disk before a member answers any message: term, vote, commit."""

    term: int
    vote: int
    commit: int


EMPTY_HARD_STATE = HardState(0, 0, 0)
