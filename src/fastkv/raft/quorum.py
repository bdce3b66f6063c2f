"""Majority quorums over one set of voters (Raft paper §5.2, §5.3; thesis §4 single-server changes).

Any two majorities of the same voter set intersect, which is what makes an elected leader
hold every committed entry and a committed entry survive any later election.  Single-server
membership changes (thesis §4.1) keep every majority of the old set intersecting every
majority of the new one, so one voter set at a time suffices; joint consensus is a non-goal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

VOTE_PENDING = 0
VOTE_WON = 1
VOTE_LOST = 2


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Iterable[int], match: Mapping[int, int]) -> int:
    """The highest index held by a majority of ``voters`` (``match`` maps voter -> durable index)."""
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not indexes:
        return 0
    return indexes[majority(len(indexes)) - 1]


def vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> int:
    """WON once a majority granted, LOST once a majority can no longer grant, else PENDING."""
    granted = rejected = total = 0
    for v in voters:
        total += 1
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    need = majority(total)
    if granted >= need:
        return VOTE_WON
    if total - rejected < need:
        return VOTE_LOST
    return VOTE_PENDING


def has_quorum(voters: Iterable[int], active: Iterable[int]) -> bool:
    """Whether the members in ``active`` form a majority of ``voters``."""
    voter_set = set(voters)
    return len(voter_set.intersection(active)) >= majority(len(voter_set))
