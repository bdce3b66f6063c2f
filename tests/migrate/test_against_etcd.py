"""Decoding real etcd 3.4 data dirs gives the tree, indexes, TTLs and members etcd served."""

from __future__ import annotations

import json
import time

import pytest

from fastkv.migrate import etcdsnap, etcdwal, v2json
from fastkv.migrate.datadir import read_data_dir
from fastkv.migrate.v2json import parse_go_time
from fastkv.migrate.writer import fastkv_store, membership_record
from tests.migrate.conftest import EtcdDir
from tests.migrate.etcdhistory import mask_ttl

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]


def _check_against_answers(etcd: EtcdDir) -> None:
    state = read_data_dir(etcd.data_dir)
    answers = etcd.answers
    assert state.store_index == answers.index
    assert f"{state.cluster_id:x}" == answers.cluster_id
    assert state.user_key_count() == answers.user_nodes
    store = fastkv_store(state)
    now = time.time_ns()
    tree = store.get("/", True, True, now).to_json()
    assert mask_ttl(tree) == mask_ttl(answers.tree)
    for path, body in answers.hidden.items():
        assert mask_ttl(store.get(path, False, False, now).to_json()) == mask_ttl(body)
    # The members etcd listed: ids, names, peer and client URLs.
    listed = sorted(json.loads(answers.members)["members"], key=lambda m: m["id"])
    decoded = sorted(json.loads(membership_record(state))["members"], key=lambda m: m["id"])
    assert decoded == listed
    assert state.cluster_version == "3.4.0"
    assert state.applied_index == state.commit_index
    # Stopping the members one by one can leave the last leader change's empty entry uncommitted on
    # the member stopped last: it is kept for the Raft log, after the commit index.
    assert len(state.tail) == state.uncommitted_entries
    assert [e.index for e in state.tail] == list(
        range(state.commit_index + 1, state.commit_index + 1 + len(state.tail))
    )
    assert state.torn_tail is None


def test_single_member(etcd_single: EtcdDir) -> None:
    state = read_data_dir(etcd_single.data_dir)
    # The history took several snapshots and left entries after the last one.
    snaps = etcdsnap.list_snapshots(etcd_single.data_dir + "/member/snap")
    assert snaps and state.snapshot_index == snaps[-1][1] > 0
    assert state.replayed_entries > 0
    # The refused CAS, create and CAD are in the log and change nothing, as in etcd.
    assert state.failed_requests + state.snapshot_index > 0
    assert [m.name for m in state.members] == ["e1"]
    assert state.member_id == state.members[0].id
    _check_against_answers(etcd_single)


def test_single_member_ttls_are_absolute(etcd_single: EtcdDir) -> None:
    state = read_data_dir(etcd_single.data_dir)
    store = fastkv_store(state)
    answers = json.loads(etcd_single.answers.tree)["node"]["nodes"]
    by_key = {n["key"]: n for n in answers}
    for key in ("/ttl", "/ttldir", "/refreshed"):
        node = store.get(key, False, False, time.time_ns()).node
        assert node.expiration == parse_go_time(by_key[key]["expiration"])
    assert "/short" not in by_key
    assert store.has_ttl_keys()


@pytest.mark.parametrize("which", ["single", "m0", "m1", "m2"])
def test_replay_from_scratch_equals_snapshot_plus_tail(which: str, request: pytest.FixtureRequest) -> None:
    """Replaying the whole WAL from an empty store (possible while etcd kept every segment) reaches
    the same state as the newest snapshot plus the tail, the /0 cluster namespace included: the
    replay applies etcd's semantics to etcd's internal paths."""
    from fastkv.migrate import datadir

    if which == "single":
        etcd_single: EtcdDir = request.getfixturevalue("etcd_single")
    else:
        etcd_single = request.getfixturevalue("etcd_cluster")[int(which[1])]
    scan = etcdwal.scan(etcd_single.data_dir + "/member/wal")
    wal = etcdwal.read_from(scan, etcdwal.WalSnapshot(0, 0))
    store = datadir._fresh_store()
    replay = datadir._Replay(store, 0)
    for e in wal.entries:
        if e.index <= wal.hard_state.commit:
            replay.apply(e)
    from_snapshot = read_data_dir(etcd_single.data_dir).store
    assert store.index == from_snapshot.index
    now = time.time_ns()
    assert store.get("/", True, True, now).to_json() == from_snapshot.get("/", True, True, now).to_json()


def test_three_members(etcd_cluster: list[EtcdDir]) -> None:
    ids = set()
    for etcd in etcd_cluster:
        state = read_data_dir(etcd.data_dir)
        assert sorted(m.name for m in state.members) == ["m0", "m1", "m2"]
        assert state.member(state.member_id).name == etcd.name  # type: ignore[union-attr]
        ids.add(state.member_id)
        assert state.removed == etcd.removed
        # etcd's newest snapshot already holds the tombstone: the replay of the membership changes
        # is checked against etcd's own /0 by test_replay_from_scratch_equals_snapshot_plus_tail.
        snap_dir = etcd.data_dir + "/member/snap"
        term, index, name = etcdsnap.list_snapshots(snap_dir)[-1]
        snap = etcdsnap.read_snapshot(f"{snap_dir}/{name}", term, index)
        paths = {n[0] for n in v2json.load(snap.data, name).nodes}
        assert f"/0/removed_members/{etcd.removed[0]:x}" in paths
        _check_against_answers(etcd)
    assert len(ids) == 3
