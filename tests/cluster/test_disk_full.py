"""A 3-member cluster where one member's disk fills (follower or leader): the other two keep
serving writes; the full member refuses writes with "etcdserver: no space", serves local reads and
reports the NOSPACE alarm (/health 503); a full leader hands leadership over.  Once space returns
the member catches up without a restart, and every acknowledged write is on every member.

The disk is "filled" per member by the gated ``enospc`` failpoint in the WAL write path
(storage/failpoint.py): the member's gate file exists = its disk is full."""

from __future__ import annotations

import os

import pytest

from tests.support.clusterutil import (
    TIMING,
    Writer,
    check_all_acked,
    member_by_id,
    put,
    request,
    until,
    wait_one_leader,
    wait_value,
)
from tests.support.procs import start_cluster

pytestmark = pytest.mark.slow


def _health(url: str) -> int:
    try:
        return request(f"{url}/health", timeout=2)[0]
    except OSError:
        return 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("victim", ["follower", "leader"])
def test_cluster_keeps_working_while_one_member_disk_is_full(tmp_path, victim):
    names = [f"m{i}" for i in range(3)]
    flags = {n: str(tmp_path / f"{n}-disk-full") for n in names}
    member_env = {
        n: {"FASTKV_FAILPOINTS": "before_wal_write=enospc", "FASTKV_FAILPOINT_NOSPACE_FILE": flags[n]}
        for n in names
    }
    members = start_cluster("fastkv", 3, base_dir=str(tmp_path / "c"), extra=TIMING, member_env=member_env)
    writer = Writer([])
    try:
        lead = wait_one_leader(members)
        leader = member_by_id(members, lead)
        target = leader if victim == "leader" else next(m for m in members if m is not leader)
        others = [m for m in members if m is not target]
        put(leader, "before", "1")
        wait_value(target, "before", "1")
        writer.members = others  # clients of the healthy members
        writer.start()
        until("writes acknowledged", lambda: len(writer.acked) > 10)

        open(flags[names[members.index(target)]], "w").close()  # the disk fills
        until("the full member reports NOSPACE", lambda: _health(target.url) == 503)
        if victim == "leader":
            new_lead = until(
                "another leader",
                lambda: (
                    (ids := {request(f"{m.url}/v2/members/leader", timeout=2)[2].get("id") for m in others})
                    and len(ids) == 1
                    and lead not in ids
                    and next(iter(ids))
                ),
            )
            assert new_lead != lead
        acked = len(writer.acked)
        until("the cluster takes writes while one disk is full", lambda: len(writer.acked) > acked + 20, 30)
        assert all(_health(m.url) == 200 for m in others)
        status, _, body = request(f"{target.url}/v2/keys/refused", "PUT", {"value": "x"})
        assert status == 500 and body["errorCode"] == 300 and body["cause"] == "etcdserver: no space", body
        status, _, body = request(f"{target.url}/v2/keys/before")
        assert status == 200 and body["node"]["value"] == "1"
        assert target.proc.poll() is None

        os.unlink(flags[names[members.index(target)]])  # space returns
        until("the member is healthy again", lambda: _health(target.url) == 200, 30)
        acked = len(writer.acked)
        until("writes go on", lambda: len(writer.acked) > acked + 10, 30)
        writer.members = members  # the recovered member takes writes too
        acked = len(writer.acked)
        until("writes through every member", lambda: len(writer.acked) > acked + 10, 30)
        writer.stop_flag.set()
        writer.join(10)
        check_all_acked(members, writer.acked, 30)
        for m in members:
            assert request(f"{m.url}/v2/keys/refused")[0] == 404
        assert "alarm cleared: NOSPACE" in target.log()
        if victim == "leader":
            assert "leadership transfer: the disk is full" in target.log()
    finally:
        writer.stop_flag.set()
        for m in members:
            m.stop()


@pytest.mark.timeout(180)
def test_follower_installs_the_leaders_snapshot_once_space_returns(tmp_path):
    """A follower that is behind the leader's compacted log restarts with a full disk: unpacking
    the leader's snapshot fails for space, the member holds it (alarm raised, still running) and
    installs it once space returns, then has every acknowledged write."""
    names = [f"m{i}" for i in range(3)]
    flags = {n: str(tmp_path / f"{n}-disk-full") for n in names}
    member_env = {
        n: {"FASTKV_FAILPOINTS": "before_snapshot_install=enospc", "FASTKV_FAILPOINT_NOSPACE_FILE": flags[n]}
        for n in names
    }
    members = start_cluster(
        "fastkv",
        3,
        base_dir=str(tmp_path / "c"),
        extra=TIMING + ["--snapshot-count", "50"],
        env_extra={"FASTKV_SNAPSHOT_CATCH_UP_ENTRIES": "10"},
        member_env=member_env,
    )
    try:
        leader = member_by_id(members, wait_one_leader(members))
        follower = next(m for m in members if m is not leader)
        flag = flags[names[members.index(follower)]]
        follower.kill9()
        acked = {}
        for i in range(300):
            put(leader, f"s{i % 120}", str(i))
            acked[f"s{i % 120}"] = str(i)
        open(flag, "w").close()
        follower.launch()
        until(
            "the follower holds the snapshot for space", lambda: "alarm raised: NOSPACE" in follower.log(), 30
        )
        assert follower.proc.poll() is None
        assert _health(follower.url) == 503
        assert "installed the leader's snapshot" not in follower.log()
        os.unlink(flag)
        until("the follower is healthy", lambda: _health(follower.url) == 200, 30)
        check_all_acked(members, acked, 30)
        assert "installed the leader's snapshot" in follower.log()
        assert "alarm cleared: NOSPACE" in follower.log()
        snap_dir = os.path.join(follower.data_dir, "data", "member")
        assert not os.path.exists(os.path.join(snap_dir, "kv.incoming"))
    finally:
        for m in members:
            m.kill9()
