"""Scenario tests, one feature each, on the synchronous harness (deterministic rngs)."""

from __future__ import annotations

import random

import pytest

from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_PRE_VOTE,
    MSG_PRE_VOTE_RESP,
    MSG_SNAP,
    MSG_TIMEOUT_NOW,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Message,
)
from fastkv.raft.node import CANDIDATE, FOLLOWER, LEADER, NotLeaderError, RaftNode
from fastkv.raft.progress import PROBE, REPLICATE, Inflights
from fastkv.raft.readonly import ReadState
from fastkv.raft.types import ENTRY_CONF_CHANGE, ENTRY_NORMAL, Entry, HardState

from .harness import Net


def test_election_one_leader_and_followers_learn_it() -> None:
    net = Net([1, 2, 3])
    leader = net.elect(1)
    assert leader.state == LEADER and leader.term == 1
    for i in (2, 3):
        assert net.nodes[i].state == FOLLOWER and net.nodes[i].lead == 1 and net.nodes[i].term == 1
    # The new term's empty entry commits everywhere (§5.4.2).
    assert all(net.nodes[i].log.committed == 1 for i in (1, 2, 3))


def test_randomized_timeouts_elect_exactly_one_leader() -> None:
    net = Net([1, 2, 3, 4, 5])
    for n in net.nodes.values():
        assert 10 <= n.randomized_election_timeout < 20
    net.tick_all(25)
    leaders = [n for n in net.nodes.values() if n.state == LEADER]
    assert len(leaders) == 1
    assert {n.lead for n in net.nodes.values()} == {leaders[0].id}


def test_vote_refused_to_stale_log_and_once_per_term() -> None:
    n = RaftNode(1, [1, 2, 3], election_tick=10)
    n.log.restore_stable([Entry(1, 1, 0, b""), Entry(2, 2, 0, b"")])
    n.step(Message(MSG_VOTE, to=1, frm=2, term=3, index=5, log_term=1))  # older last term
    n.step(Message(MSG_VOTE, to=1, frm=3, term=3, index=2, log_term=2))
    n.step(Message(MSG_VOTE, to=1, frm=2, term=3, index=9, log_term=3))  # already voted for 3
    rd = n.ready()
    assert [(m.to, m.reject) for m in rd.messages] == [(2, True), (3, False), (2, True)]
    assert rd.hard_state == HardState(3, 3, 0) and rd.must_sync


def test_pre_vote_keeps_a_partitioned_member_from_disrupting() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.tick(3, 100)  # many election timeouts alone
    assert net.nodes[3].term == 1 and net.nodes[3].state != LEADER
    assert any(m.type == MSG_PRE_VOTE for m in net.sent) and not any(
        m.type == MSG_VOTE and m.frm == 3 for m in net.sent
    )
    net.heal()
    net.tick_all(3)
    assert net.nodes[1].state == LEADER and net.nodes[1].term == 1
    assert net.nodes[3].lead == 1


def test_without_pre_vote_a_rejoining_member_deposes_the_leader() -> None:
    net = Net([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    net.tick(3, 30)
    assert net.nodes[3].term > 1
    net.heal()
    # Its next campaign, at a higher term than the leader's, forces an election.
    net.tick_all(30)
    assert net.nodes[1].term > 1
    assert sum(n.state == LEADER for n in net.nodes.values()) == 1


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.tick(1, 25)
    assert net.nodes[1].state == FOLLOWER and net.nodes[1].lead == 0
    with pytest.raises(NotLeaderError):
        net.nodes[1].propose(b"x")


def test_check_quorum_lease_ignores_vote_requests() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    n2 = net.nodes[2]
    n2.step(Message(MSG_VOTE, to=2, frm=3, term=5, index=99, log_term=9))
    assert n2.term == 1 and n2.lead == 1 and not n2.msgs


def test_log_repair_after_leader_change() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a", b"b", b"c")
    assert net.nodes[3].log.last_index() == 1
    net.heal()
    net.isolate(1)
    net.tick_all(30)  # 2 has the longer log than 3: it wins
    assert net.nodes[2].state == LEADER
    net.propose(2, b"d")
    assert net.data(3) == [b"a", b"b", b"c", b"d"]
    net.heal()
    net.tick_all(2)
    assert net.data(1) == [b"a", b"b", b"c", b"d"]


def test_conflicting_uncommitted_suffix_is_truncated() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.nodes[1].propose_many([b"lost1", b"lost2"])
    net.stabilize()
    assert net.nodes[1].log.last_index() == 3 and net.nodes[1].log.committed == 1
    net.tick_all(30)
    new = next(i for i in (2, 3) if net.nodes[i].state == LEADER)
    net.propose(new, b"kept")
    net.heal()
    net.tick_all(2)
    n1 = net.nodes[1]
    assert n1.state == FOLLOWER and n1.lead == new
    assert [e.data for e in n1.log.entries] == [b"", b"", b"kept"]
    assert net.data(1) == [b"kept"]


def test_duplicate_old_append_does_not_truncate() -> None:
    n = RaftNode(2, [1, 2, 3])
    n.step(
        Message(
            MSG_APP,
            to=2,
            frm=1,
            term=1,
            index=0,
            log_term=0,
            entries=[Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")],
        )
    )
    n.step(Message(MSG_APP, to=2, frm=1, term=1, index=0, log_term=0, entries=[Entry(1, 1, 0, b"a")]))
    assert n.log.last_index() == 2


def test_commit_only_entries_of_the_current_term_figure_8() -> None:
    # Leader of term 3 holds an entry of term 2 that a majority now stores: counting
    # replicas must not commit it; the entry of term 3 after it commits both.
    log = RaftLog()
    log.restore_stable([Entry(1, 1, 0, b""), Entry(2, 2, 0, b"old")])
    n = RaftNode(1, [1, 2, 3], log, HardState(2, 0, 1))
    n.campaign()
    n.step(Message(MSG_PRE_VOTE_RESP, to=1, frm=2, term=3))
    n.step(Message(MSG_VOTE_RESP, to=1, frm=2, term=3))
    assert n.state == LEADER and n.term == 3 and n.log.last_index() == 3
    n.advance(n.ready())
    n.step(Message(MSG_APP_RESP, to=1, frm=2, term=3, index=2))
    assert n.log.committed == 1, "an entry of term 2 committed by counting replicas in term 3"
    n.step(Message(MSG_APP_RESP, to=1, frm=2, term=3, index=3))
    assert n.log.committed == 3


def test_leader_counts_itself_only_after_its_write() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    n1 = net.nodes[1]
    n1.propose(b"x")
    rd = n1.ready()  # not advanced: the leader's own copy is not durable yet
    for m in rd.messages:
        net.nodes[m.to].step(m)
    net.process(2)
    for m in net.queue:
        if m.to == 1:
            n1.step(m)
    net.queue.clear()
    # Follower 2 + leader (not durable) would be 2 of 3: not yet.
    assert n1.log.committed == 1
    n1.advance(rd)
    assert n1.log.committed == 2


def test_snapshot_sent_to_follower_behind_compaction() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for i in range(20):
        net.propose(1, b"v%d" % i)
    net.compact(1)
    assert net.nodes[1].log.offset == 21
    net.heal()
    net.tick_all(2)
    n3 = net.nodes[3]
    assert [s.meta.index for s in net.installed[3]] == [21]
    assert net.installed[3][0].data == b"state@21"
    assert n3.log.offset == 21 and n3.log.committed == 21
    net.propose(1, b"after")
    assert net.data(3) == [b"after"]
    assert net.nodes[1].progress[3].state == REPLICATE


def test_snapshot_failure_returns_follower_to_probe() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.compact(1)
    net.cut.clear()
    net.drop = lambda m: m.type == MSG_SNAP
    net.tick(1, 1)
    pr = net.nodes[1].progress[3]
    assert pr.state == PROBE and pr.probe_sent
    net.heal()
    net.tick(1, 2)
    assert net.nodes[3].log.committed == net.nodes[1].log.committed


def test_no_snapshot_available_is_retried_later() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.nodes[1].log.compact(2)  # no snapshot registered yet
    net.heal()
    net.tick(1, 3)
    assert net.nodes[3].log.committed == 1
    net.compact(1)
    net.tick(1, 2)
    assert net.nodes[3].log.committed == 2


def test_inflights_bound_unacknowledged_appends() -> None:
    net = Net([1, 2], max_inflight=2)
    net.elect(1)
    n1 = net.nodes[1]
    assert n1.progress[2].state == REPLICATE
    net.drop = lambda m: m.type == MSG_APP_RESP  # the follower's answers are lost
    for i in range(6):
        n1.propose(b"p%d" % i)
        net.stabilize()
    apps = [m for m in net.sent if m.type == MSG_APP and m.entries and m.entries[0].data.startswith(b"p")]
    assert len(apps) == 2 and n1.progress[2].inflights.full()
    net.drop = None
    net.tick(1, 1)  # the heartbeat answer frees a slot; the rest flows
    assert net.data(2) == [b"p%d" % i for i in range(6)]


def test_inflights_ring() -> None:
    f = Inflights(3)
    for i in (5, 7, 9):
        f.add(i)
    assert f.full()
    with pytest.raises(AssertionError):
        f.add(11)
    f.free_le(7)
    assert f.count() == 1 and not f.full()
    f.free_le(100)
    assert f.count() == 0


def test_max_size_per_msg_splits_batches() -> None:
    net = Net([1, 2], max_size_per_msg=10)
    net.elect(1)
    net.propose(1, *[b"12345" for _ in range(6)])
    sizes = [len(m.entries) for m in net.sent if m.type == MSG_APP and m.entries and m.entries[0].data]
    assert sizes and max(sizes) <= 2 and sum(sizes) == 6
    assert net.data(2) == [b"12345"] * 6


def test_leadership_transfer() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].transfer_leader(2)
    net.stabilize()
    assert net.nodes[2].state == LEADER and net.nodes[2].term == 2
    assert net.nodes[1].state == FOLLOWER and net.nodes[1].lead == 2
    assert any(m.type == MSG_TIMEOUT_NOW for m in net.sent)


def test_leadership_transfer_catches_up_a_lagging_transferee_first() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a", b"b")
    net.heal()
    n1 = net.nodes[1]
    net.drop = lambda m: m.type == MSG_APP  # hold the catch-up back
    n1.transfer_leader(3)
    net.stabilize()
    assert n1.lead_transferee == 3
    with pytest.raises(NotLeaderError):
        n1.propose(b"refused during transfer")
    net.drop = None
    net.tick(1, 1)
    assert net.nodes[3].state == LEADER and net.data(3)[:2] == [b"a", b"b"]


def test_leadership_transfer_aborts_after_an_election_timeout() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leader(3)
    net.stabilize()
    assert net.nodes[1].lead_transferee == 3
    net.cut = {(1, 3), (3, 1)}
    net.tick(1, 10)
    n1 = net.nodes[1]
    assert n1.state == LEADER and n1.lead_transferee == 0
    n1.propose(b"accepted again")


def test_read_index_on_leader_and_follower() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].read_index(b"r1")
    net.stabilize()
    assert net.read_states[1] == [ReadState(2, b"r1")]
    net.nodes[3].read_index(b"r2")
    net.stabilize()
    assert net.read_states[3] == [ReadState(2, b"r2")]
    assert not any(
        m.type in (MSG_APP,) and m.frm == 1 and m.entries and m.entries[-1].index > 2 for m in net.sent
    )


def test_read_index_waits_for_an_entry_of_the_leaders_term() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.isolate(1)
    # Hold back the new term's entry: until it commits, the leader's commit index may be stale.
    net.drop = lambda m: m.type == MSG_APP
    net.tick_all(30)
    n2 = next(n for i, n in net.nodes.items() if i != 1 and n.state == LEADER)
    assert n2.log.term(n2.log.committed) != n2.term
    n2.read_index(b"r")
    net.stabilize()
    assert net.read_states[n2.id] == []
    net.drop = None
    net.cut.clear()
    net.tick(n2.id, 1)
    assert net.read_states[n2.id] == [ReadState(n2.log.committed, b"r")]
    assert n2.log.term(n2.log.committed) == n2.term


def test_read_index_needs_a_quorum_of_heartbeats() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"r")
    net.tick(1, 5)
    assert net.read_states[1] == []


def test_sole_voter_reads_at_once() -> None:
    n = RaftNode(1, [1])
    n.campaign()
    n.advance(n.ready())
    n.read_index(b"x")
    assert n.ready().read_states == [ReadState(1, b"x")]


def test_conf_change_add_and_remove() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    n1 = net.nodes[1]
    net.add(4, [1, 2, 3, 4])
    n1.propose(b"add:4", ENTRY_CONF_CHANGE)
    # One pending change at a time: a second one becomes an empty normal entry.
    i = n1.propose(b"remove:3", ENTRY_CONF_CHANGE)
    assert n1.log.entries[i - 1 - n1.log.offset].type == ENTRY_NORMAL
    net.stabilize()
    assert all(n.voters == [1, 2, 3, 4] for i, n in net.nodes.items() if i != 4)
    assert net.nodes[4].log.committed == n1.log.committed
    # Four voters: two are no longer a quorum.
    net.isolate(3)
    net.cut |= {(4, 1), (1, 4)}
    net.propose(1, b"needs 3 of 4")
    assert n1.log.committed < n1.log.last_index()
    net.heal()
    net.tick(1, 1)
    assert n1.log.committed == n1.log.last_index()
    net.propose(1, b"remove:3")
    n1.propose(b"remove:3", ENTRY_CONF_CHANGE)
    net.stabilize()
    assert n1.voters == [1, 2, 4] and 3 not in n1.progress
    net.isolate(3)
    net.propose(1, b"without 3")
    assert net.data(4)[-1] == b"without 3"


def test_removed_leader_steps_down() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"x")
    net.nodes[1].propose(b"remove:1", ENTRY_CONF_CHANGE)
    net.stabilize()
    assert net.nodes[1].state == FOLLOWER and net.nodes[1].voters == [2, 3]
    net.tick_all(40)
    assert {n.lead for i, n in net.nodes.items() if i != 1} in ({2}, {3})


def test_candidate_steps_down_on_append_of_its_term() -> None:
    n = RaftNode(1, [1, 2, 3], pre_vote=False)
    n.campaign()
    assert n.state == CANDIDATE and n.term == 1
    n.step(Message(MSG_HEARTBEAT, to=1, frm=2, term=1))
    assert n.state == FOLLOWER and n.lead == 2


def test_messages_wait_for_the_hard_state_write() -> None:
    n = RaftNode(1, [1, 2, 3], pre_vote=False)
    n.campaign()
    rd = n.ready()
    assert rd.must_sync and rd.hard_state == HardState(1, 1, 0)
    assert {m.type for m in rd.messages} == {MSG_VOTE}


def test_sole_voter_ticks_into_leadership_deterministically() -> None:
    a = RaftNode(1, [1], rng=random.Random(7))
    a.tick()
    assert a.state == LEADER and a.term == 1
