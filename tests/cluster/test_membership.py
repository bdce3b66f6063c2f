"""Runtime reconfiguration with real processes (etcd-v2.md §1.8, §6.1): member add with the new
member joining through --initial-cluster-state existing, member remove (the removed member exits
and stays out), removal of the leader, the strict reconfiguration checks, and a join whose
--initial-cluster does not match the cluster.  Driven through the real etcdctl and fastkvctl.

Every acknowledged write made while the cluster grows and shrinks must be on every member left.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.clusterutil import (
    TIMING,
    Writer,
    add_member,
    check_all_acked,
    ctl,
    member_by_id,
    members_of,
    remove_member,
    request,
    start_joining,
    until,
    wait_exit,
    wait_one_leader,
    wait_value,
)
from tests.support.procs import (
    ServerProcess,
    free_port,
    have_etcd,
    start_cluster,
    start_server,
    wait_http_ok,
)

TOOLS = ["fastkvctl", pytest.param("etcdctl", marks=pytest.mark.skipif(not have_etcd(), reason="no etcdctl"))]

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cluster(tmp_path) -> Iterator[list[ServerProcess]]:
    members = start_cluster("fastkv", 3, base_dir=str(tmp_path), extra=TIMING, token="membership-test")
    try:
        yield members  # tests append the members they start, so all are cleaned up
    finally:
        for m in members:
            m.kill9()


@pytest.mark.parametrize("tool", TOOLS)
def test_grow_three_to_five_and_back_under_writes(cluster: list[ServerProcess], tmp_path, tool: str) -> None:
    entry = cluster[0].url
    writer = Writer(list(cluster))
    writer.start()
    try:
        joined: list[tuple[str, ServerProcess]] = []
        for name in ("m3", "m4"):
            peer = f"http://127.0.0.1:{free_port()}"
            new_id, env_vars = add_member(tool, entry, name, peer)
            # Listed as unstarted (no name, no client URLs) until it joins and publishes.
            rc, out, _ = ctl(tool, entry, "member", "list")
            assert rc == 0 and f"{new_id}[unstarted]: peerURLs={peer}\n" in out, out
            proc = start_joining(str(tmp_path), env_vars, extra=None)
            cluster.append(proc)
            wait_http_ok(proc.url + "/health", 20, proc.proc)
            until(
                f"{name} published",
                lambda nid=new_id, n=name: any(m["id"] == nid and m["name"] == n for m in members_of(entry)),
            )
            writer.members.append(proc)
            joined.append((new_id, proc))
        rc, out, _ = ctl(tool, entry, "member", "list")
        lines = out.splitlines()
        assert rc == 0 and len(lines) == 5, out
        assert sum(line.endswith("isLeader=true") for line in lines) == 1, out
        assert all("[unstarted]" not in line and "clientURLs=http://" in line for line in lines), out
        acked_at_five = len(writer.acked)
        # Back to three: remove both new members; each removed process exits on its own, with 0.
        for new_id, proc in reversed(joined):
            writer.skip.add(proc.url)
            remove_member(tool, entry, new_id)
            assert wait_exit(proc) == 0
            assert "permanently removed" in proc.log()
        time.sleep(0.5)
    finally:
        writer.stop_flag.set()
        writer.join(10)
    remaining = cluster[:3]
    assert len(members_of(entry)) == 3
    assert len(writer.acked) > acked_at_five > 0
    check_all_acked(remaining, writer.acked)


def test_remove_the_leader_and_the_removed_member_stays_out(cluster: list[ServerProcess]) -> None:
    leader_id = wait_one_leader(cluster)
    leader = member_by_id(cluster, leader_id)
    rest = [m for m in cluster if m is not leader]
    writer = Writer(rest)
    writer.start()
    try:
        until(
            "leader removed",
            lambda: request(f"{rest[0].url}/v2/members/{leader_id}", "DELETE", timeout=15)[0] == 204,
            timeout=30,
            every=0.5,
        )
        assert wait_exit(leader) == 0
        assert "the data-dir used by this member must be removed" in leader.log()
        new_leader = wait_one_leader(rest, not_id=leader_id)
        assert new_leader != leader_id
        # The id is tombstoned: removing it again is 410, and it is gone from the list.
        status, _, body = request(f"{rest[1].url}/v2/members/{leader_id}", "DELETE")
        assert (status, body) == (410, {"message": f"Member permanently removed: {leader_id}"})
        assert sorted(m["id"] for m in members_of(rest[0].url)) == sorted(
            m["id"] for m in members_of(rest[1].url)
        )
        assert leader_id not in {m["id"] for m in members_of(rest[0].url)}
        time.sleep(0.5)
    finally:
        writer.stop_flag.set()
        writer.join(10)
    assert len(writer.acked) > 0
    check_all_acked(rest, writer.acked)
    # Restarted with its old data dir, the removed member exits again (status 0).
    leader.launch()
    assert wait_exit(leader) == 0


def test_strict_reconfiguration_refuses_changes_that_risk_quorum(cluster: list[ServerProcess]) -> None:
    m0, m1, m2 = cluster
    ids = {m["peerURLs"][0]: m["id"] for m in members_of(m0.url)}
    # Let every connection age past etcd's 5 s health interval, then lose m2.
    until("members connected", lambda: request(f"{m0.url}/health")[0] == 200)
    time.sleep(5.5)
    m2.kill9()
    time.sleep(1.0)  # m0 notices the closed connection
    # Adding while a voter is unreachable, or removing a live member while one is down: 500.
    status, _, body = request(
        f"{m0.url}/v2/members",
        "POST",
        json_body={"peerURLs": [f"http://127.0.0.1:{free_port()}"]},
    )
    assert (status, body) == (500, {"message": "Internal Server Error"})
    status, _, body = request(f"{m0.url}/v2/members/{ids[m1.peer_url]}", "DELETE")
    assert (status, body) == (500, {"message": "Internal Server Error"})
    assert len(members_of(m0.url)) == 3
    # Removing the member that is down is allowed: the rest keep a quorum.
    until(
        "the member that is down removed",
        lambda: request(f"{m0.url}/v2/members/{ids[m2.peer_url]}", "DELETE", timeout=15)[0] in (204, 410),
        timeout=20,
        every=0.5,
    )
    assert sorted(m["id"] for m in members_of(m1.url)) == sorted([ids[m0.peer_url], ids[m1.peer_url]])
    status, _, _ = request(f"{m1.url}/v2/keys/after", "PUT", {"value": "two"})
    assert status == 201
    wait_value(m0, "after", "two")


def test_join_with_a_mismatched_initial_cluster_is_refused(cluster: list[ServerProcess], tmp_path) -> None:
    # Never added through member add: the cluster has three members, the flags say four.
    peer = f"http://127.0.0.1:{free_port()}"
    initial = ",".join(f"m{i}={m.peer_url}" for i, m in enumerate(cluster)) + f",m9={peer}"
    proc = start_joining(
        str(tmp_path),
        {"ETCD_NAME": "m9", "ETCD_INITIAL_CLUSTER": initial, "ETCD_INITIAL_CLUSTER_STATE": "existing"},
    )
    assert wait_exit(proc) == 1
    assert "member count is unequal" in proc.log()


def test_a_single_member_grows_to_two(tmp_path) -> None:
    os.makedirs(tmp_path / "first")
    first = start_server("fastkv", str(tmp_path / "first"), extra=TIMING, name="solo")
    second: ServerProcess | None = None
    try:
        status, _, _ = request(f"{first.url}/v2/keys/before", "PUT", {"value": "1"})
        assert status == 201
        peer = f"http://127.0.0.1:{free_port()}"
        new_id, env_vars = add_member("fastkvctl", first.url, "duo", peer)
        assert (
            env_vars["ETCD_INITIAL_CLUSTER"] == f"duo={peer},solo={first.peer_url}"
            or env_vars["ETCD_INITIAL_CLUSTER"] == f"solo={first.peer_url},duo={peer}"
        )
        second = start_joining(str(tmp_path), env_vars)
        wait_http_ok(second.url + "/health", 20, second.proc)
        wait_value(second, "before", "1")
        until(
            "a write through the new member",
            lambda: request(f"{second.url}/v2/keys/after", "PUT", {"value": "2"})[0] == 201,
        )
        wait_value(first, "after", "2")
        assert {m["name"] for m in members_of(first.url)} == {"solo", "duo"}
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)
