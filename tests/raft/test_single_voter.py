"""The Raft core with one voter: election, the Ready contract, commit only after persistence."""

import pytest

from fastkv.raft.log import RaftLog
from fastkv.raft.node import LEADER, NotLeaderError, RaftNode
from fastkv.raft.types import Entry, HardState


def drive(node: RaftNode) -> list[Entry]:
    """Play the caller: persist and apply every Ready until none is left; return applied entries."""
    applied: list[Entry] = []
    for _ in range(100):
        if not node.has_ready():
            return applied
        rd = node.ready()
        applied.extend(rd.committed_entries)
        node.advance(rd)
    raise AssertionError("Ready loop did not settle")


def test_sole_voter_elects_itself_and_commits_its_empty_entry():
    n = RaftNode(1, [1])
    with pytest.raises(NotLeaderError):
        n.propose(b"x")
    n.campaign()
    assert n.state == LEADER and n.term == 1 and n.vote == 1 and n.lead == 1
    rd = n.ready()
    assert rd.hard_state == HardState(1, 1, 0)
    assert rd.entries == [Entry(1, 1, 0, b"")]
    assert rd.committed_entries == []  # not durable yet: nothing may be applied
    n.advance(rd)
    rd = n.ready()
    assert rd.committed_entries == [Entry(1, 1, 0, b"")]
    assert rd.hard_state == HardState(1, 1, 1)
    n.advance(rd)
    assert not n.has_ready()


def test_proposals_commit_in_order_only_after_advance():
    n = RaftNode(1, [1])
    n.campaign()
    drive(n)
    assert n.propose_many([b"a", b"b"]) == 3
    rd = n.ready()
    assert [e.data for e in rd.entries] == [b"a", b"b"]
    assert rd.committed_entries == []
    n.propose(b"c")  # arrives while the first batch is being written
    n.advance(rd)
    rd2 = n.ready()
    assert [e.data for e in rd2.committed_entries] == [b"a", b"b"]
    assert [e.data for e in rd2.entries] == [b"c"]
    n.advance(rd2)
    assert [e.data for e in drive(n)] == [b"c"]
    assert n.log.applied == n.log.committed == 4


def test_restart_replays_only_committed_and_commits_rest_after_election():
    log = RaftLog()
    log.restore_stable([Entry(1, 1, 0, b""), Entry(1, 2, 0, b"a"), Entry(1, 3, 0, b"b")])
    n = RaftNode(1, [1], log, HardState(1, 1, 2))
    assert [e.data for e in n.log.next_committed()] == [b"", b"a"]
    n.log.applied_to(2)
    n.campaign()
    assert n.term == 2
    applied = drive(n)
    # Entry 3 of the old term commits together with the new term's empty entry (§5.4.2).
    assert [(e.term, e.index, e.data) for e in applied] == [(1, 3, b"b"), (2, 4, b"")]


def test_log_truncates_conflicting_suffix_and_guards_commit():
    log = RaftLog()
    log.restore_stable([Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b"), Entry(1, 3, 0, b"c")])
    log.commit_to(1)
    log.append([Entry(2, 2, 0, b"x")])
    assert [e.data for e in log.entries] == [b"a", b"x"]
    assert log.stable_index == 1
    with pytest.raises(ValueError):
        log.append([Entry(2, 1, 0, b"y")])
    with pytest.raises(ValueError):
        log.append([Entry(2, 9, 0, b"gap")])


def test_compaction_keeps_term_of_snapshot_index():
    log = RaftLog()
    log.restore_stable([Entry(1, i, 0, b"") for i in range(1, 11)])
    log.commit_to(10)
    log.applied_to(10)
    log.compact(6)
    assert log.offset == 6 and log.term(6) == 1 and log.term(5) == 0
    assert log.last_index() == 10 and len(log.entries) == 4
