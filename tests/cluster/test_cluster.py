"""Multi-member fastkv clusters as real processes on 127.0.0.1: static bootstrap, one leader,
replication through any member, the leader or a follower killed with SIGKILL and restarted.

Every wait is bounded; writes are acknowledged only after a quorum has them durably, so an
acknowledged write must be on every member once the cluster has settled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from fastkv.server.identity import cluster_id_for, member_id_for
from tests.support.clusterutil import (
    Writer,
    check_all_acked,
    member_by_id,
    put,
    request,
    wait_one_leader,
    wait_value,
)
from tests.support.procs import ServerProcess, start_cluster

# Short timeouts keep failover quick; the ratio is etcd's default (10 ticks per election).
TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]
TOKEN = "cluster-test-token"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path) -> Iterator[list[ServerProcess]]:
    members = start_cluster("fastkv", 3, base_dir=str(tmp_path), extra=TIMING, token=TOKEN)
    try:
        yield members
    finally:
        for m in members:
            m.kill9()


def test_bootstrap_ids_one_leader_and_published_members(cluster: list[ServerProcess]) -> None:
    leader = wait_one_leader(cluster)
    ids = {f"{member_id_for([m.peer_url], TOKEN):x}": f"m{i}" for i, m in enumerate(cluster)}
    assert leader in ids
    expected_cid = f"{cluster_id_for(int(i, 16) for i in ids):x}"
    deadline = time.monotonic() + 10
    while True:
        views = []
        for m in cluster:
            status, headers, body = request(f"{m.url}/v2/members")
            assert status == 200
            assert headers["X-Etcd-Cluster-Id"] == expected_cid
            views.append(body["members"])
        # Names and client URLs arrive through the log (published attributes).
        if all(all(x["clientURLs"] for x in v) for v in views) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for view in views:
        assert view == views[0]
        assert {x["id"]: x["name"] for x in view} == ids
        for x in view:
            m = cluster[int(x["name"][1:])]
            assert x["peerURLs"] == [m.peer_url]
            assert x["clientURLs"] == [m.url]
    for m in cluster:
        status, _, _ = request(f"{m.url}/health")
        assert status == 200
        _, _, stats = request(f"{m.url}/v2/stats/self")
        assert stats["leaderInfo"]["leader"] == leader
        assert stats["state"] == ("StateLeader" if stats["id"] == leader else "StateFollower")
        status, _, lstats = request(f"{m.url}/v2/stats/leader")
        if stats["id"] == leader:
            assert status == 200 and lstats["leader"] == leader
            assert set(lstats["followers"]) == set(ids) - {leader}
        else:
            assert status == 403


def test_writes_through_every_member_are_read_on_every_member(cluster: list[ServerProcess]) -> None:
    leader = wait_one_leader(cluster)
    indexes = []
    for i, m in enumerate(cluster):
        body = put(m, f"k{i}", f"v{i}")
        indexes.append(body["node"]["modifiedIndex"])
    assert indexes == sorted(indexes) and len(set(indexes)) == 3
    for i in range(3):
        for m in cluster:
            wait_value(m, f"k{i}", f"v{i}")
    # A quorum read through a follower goes through the log: it sees the latest write.
    follower = next(m for m in cluster if m is not member_by_id(cluster, leader))
    put(cluster[0], "q", "latest")
    status, _, body = request(f"{follower.url}/v2/keys/q?quorum=true")
    assert status == 200 and body["node"]["value"] == "latest"
    # Raft index and term agree once the followers caught up.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        heads = [request(f"{m.url}/v2/keys/q")[1] for m in cluster]
        if len({(h["X-Etcd-Index"], h["X-Raft-Index"], h["X-Raft-Term"]) for h in heads}) == 1:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"members disagree: {heads}")


def test_leader_kill9_under_writes_fails_over_and_keeps_every_acknowledged_write(
    cluster: list[ServerProcess],
) -> None:
    old_leader_id = wait_one_leader(cluster)
    old_leader = member_by_id(cluster, old_leader_id)
    rest = [m for m in cluster if m is not old_leader]
    writer = Writer(cluster)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while len(writer.acked) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(writer.acked) >= 50
        writer.skip.add(old_leader.url)
        killed_at = time.monotonic()
        old_leader.kill9()
        new_leader = wait_one_leader(rest, timeout=15, not_id=old_leader_id)
        assert new_leader != old_leader_id
        elected_s = time.monotonic() - killed_at
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not [
            a for s, a in writer.ack_times if s > killed_at + elected_s
        ]:
            time.sleep(0.01)
        resumed = [a for s, a in writer.ack_times if s > killed_at + elected_s]
        assert resumed, "no write acknowledged after the new leader was elected"
        first_any = min(a for s, a in writer.ack_times if a > killed_at)
        print(
            f"\nnew leader {elected_s:.2f}s after kill -9; a write sent after the election acknowledged "
            f"{resumed[0] - killed_at:.2f}s after the kill; first acknowledgement of any write "
            f"{first_any - killed_at:.2f}s after the kill"
        )
        n_before = len(writer.acked)
        deadline = time.monotonic() + 10
        while len(writer.acked) < n_before + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(writer.acked) >= n_before + 50
        old_leader.restart()
        writer.skip.discard(old_leader.url)
        time.sleep(0.5)
    finally:
        writer.stop_flag.set()
        writer.join(10)
    wait_one_leader(cluster)
    check_all_acked(cluster, writer.acked)


def test_follower_kill9_and_restart_catches_up(cluster: list[ServerProcess]) -> None:
    leader_id = wait_one_leader(cluster)
    leader = member_by_id(cluster, leader_id)
    follower = next(m for m in cluster if m is not leader)
    for i in range(20):
        put(leader, f"a{i}", str(i))
    follower.kill9()
    acked = {f"a{i}": str(i) for i in range(20)}
    others = [m for m in cluster if m is not follower]
    for i in range(200):
        put(others[i % 2], f"b{i}", str(i))
        acked[f"b{i}"] = str(i)
    follower.restart()
    check_all_acked(cluster, acked)
    assert wait_one_leader(cluster) == leader_id
    # The restarted member serves writes again.
    put(follower, "after", "restart")
    for m in cluster:
        wait_value(m, "after", "restart")


def test_ttl_expires_on_every_member(cluster: list[ServerProcess]) -> None:
    leader_id = wait_one_leader(cluster)
    follower = next(m for m in cluster if m is not member_by_id(cluster, leader_id))
    status, _, body = request(f"{follower.url}/v2/keys/ttl", "PUT", {"value": "x", "ttl": "1"})
    assert status == 201 and body["node"]["ttl"] == 1
    for m in cluster:
        wait_value(m, "ttl", "x")
    # The leader's SYNC entry expires it at the same index everywhere.
    deadline = time.monotonic() + 10
    for m in cluster:
        while True:
            status, _, body = request(f"{m.url}/v2/keys/ttl")
            if status == 404:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
    indexes = {request(f"{m.url}/v2/keys/ttl")[2]["index"] for m in cluster}
    assert len(indexes) == 1


def test_whole_cluster_restart_keeps_data_and_ids(cluster: list[ServerProcess]) -> None:
    wait_one_leader(cluster)
    for i in range(30):
        put(cluster[i % 3], f"r{i}", str(i))
    _, headers, before = request(f"{cluster[0].url}/v2/members")
    for m in cluster:
        m.stop()
    # All at once: a lone member cannot elect a leader, so restart() would wait in vain.
    for m in cluster:
        log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the process
        m.proc = subprocess.Popen(m.argv, stdout=log, stderr=subprocess.STDOUT, env=m.env)
    wait_one_leader(cluster)
    check_all_acked(cluster, {f"r{i}": str(i) for i in range(30)})
    _, headers2, after = request(f"{cluster[0].url}/v2/members")
    assert headers2["X-Etcd-Cluster-Id"] == headers["X-Etcd-Cluster-Id"]
    assert after == before


def test_follower_behind_the_compacted_log_catches_up_from_a_snapshot(tmp_path) -> None:
    members = start_cluster(
        "fastkv",
        3,
        base_dir=str(tmp_path),
        extra=TIMING + ["--snapshot-count", "50"],
        token=TOKEN,
        env_extra={"FASTKV_SNAPSHOT_CATCH_UP_ENTRIES": "10"},
    )
    try:
        leader_id = wait_one_leader(members)
        leader = member_by_id(members, leader_id)
        follower = next(m for m in members if m is not leader)
        follower.kill9()
        acked = {}
        for i in range(300):
            put(leader, f"s{i % 120}", str(i))
            acked[f"s{i % 120}"] = str(i)
        follower.restart()
        check_all_acked(members, acked)
        assert "installed the leader's snapshot" in follower.log()
        # The member goes on from the snapshot: new writes reach it, and it restarts from it.
        put(leader, "after-snapshot", "yes")
        wait_value(follower, "after-snapshot", "yes")
        follower.restart()
        wait_value(follower, "after-snapshot", "yes")
        wait_value(follower, "s0", acked["s0"])
    finally:
        for m in members:
            m.kill9()


def test_leader_paused_with_sigstop_loses_leadership_and_catches_up(cluster: list[ServerProcess]) -> None:
    """A paused leader is a partitioned leader: the others elect a new one and keep writing; once
    resumed it steps down (it sees the higher term) and catches up, losing nothing."""
    old_leader_id = wait_one_leader(cluster)
    old_leader = member_by_id(cluster, old_leader_id)
    rest = [m for m in cluster if m is not old_leader]
    writer = Writer(rest)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while len(writer.acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        old_leader.proc.send_signal(signal.SIGSTOP)
        try:
            new_leader = wait_one_leader(rest, timeout=15, not_id=old_leader_id)
            assert new_leader != old_leader_id
            n_before = len(writer.acked)
            deadline = time.monotonic() + 10
            while len(writer.acked) < n_before + 50 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(writer.acked) >= n_before + 50, "writes did not resume under the new leader"
        finally:
            old_leader.proc.send_signal(signal.SIGCONT)
        assert wait_one_leader(cluster, timeout=15) == new_leader
    finally:
        writer.stop_flag.set()
        writer.join(10)
    check_all_acked(cluster, writer.acked)


def test_five_members_survive_two_failures(tmp_path) -> None:
    members = start_cluster("fastkv", 5, base_dir=str(tmp_path), extra=TIMING, token=TOKEN)
    try:
        leader_id = wait_one_leader(members)
        leader = member_by_id(members, leader_id)
        follower = next(m for m in members if m is not leader)
        acked = {}
        for i in range(30):
            put(members[i % 5], f"f{i}", str(i))
            acked[f"f{i}"] = str(i)
        # Any two members down (here the leader and a follower): the other three are a majority.
        leader.kill9()
        follower.kill9()
        rest = [m for m in members if m is not leader and m is not follower]
        wait_one_leader(rest, timeout=15, not_id=leader_id)
        for i in range(30, 80):
            put(rest[i % 3], f"f{i}", str(i))
            acked[f"f{i}"] = str(i)
        leader.restart()
        follower.restart()
        check_all_acked(members, acked)
        wait_one_leader(members)
    finally:
        for m in members:
            m.kill9()


def test_leader_stopped_with_sigterm_hands_over_leadership(cluster: list[ServerProcess]) -> None:
    leader_id = wait_one_leader(cluster)
    leader = member_by_id(cluster, leader_id)
    rest = [m for m in cluster if m is not leader]
    put(rest[0], "before-stop", "1")
    assert leader.stop(signal.SIGTERM) == 0
    lines = [json.loads(ln) for ln in leader.log().splitlines() if ln.startswith("{")]
    transfer = [r for r in lines if r["msg"] == "leadership transfer on stop"]
    assert transfer, leader.log()[-2000:]
    new_leader = wait_one_leader(rest, not_id=leader_id)
    # The transferee (the most up-to-date voter) leads now; no election timeout was waited out.
    assert new_leader == transfer[-1]["transferee"]
    put(rest[1], "after-stop", "2")
    wait_value(rest[0], "after-stop", "2")
