"""Applying entries at cluster time: the leader's stamps, not any member's wall clock, decide
expirations and expiry; the applied state's time never goes back, survives a restart, and logs
written before stamps still replay (server/applier.py, v2store/request.py)."""

from __future__ import annotations

import orjson
import pytest

from fastkv._native.raftentry import Entry
from fastkv.raft.types import ENTRY_INTERNAL, ENTRY_NORMAL
from fastkv.server.applier import ApplierV2
from fastkv.server.membership import Membership
from fastkv.server.wait import Wait
from fastkv.storage.backend import Backend
from fastkv.v2store.request import V2Request, expiration_for_ttl
from fastkv.v2store.store import Store

S = 1_000_000_000
T0 = 1_800_000_000 * S
HOUR = 3600 * S
# What a member's wall clock says while it applies: two hours ahead (it must not matter).
WALL_AHEAD = T0 + 2 * HOUR


class Stamps:
    """An ApplyListener that records the round stamps."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def voter_added(self, member_id: int) -> None: ...
    def voter_removed(self, member_id: int) -> None: ...
    def peers_changed(self) -> None: ...
    def self_removed(self) -> None: ...
    def self_published(self) -> None: ...
    def member_published(self, member_id: int) -> None: ...

    def stamp_applied(self, stamp_ns: int) -> None:
        self.seen.append(stamp_ns)


class Member:
    """One replica's applier over its own RocksDB."""

    def __init__(self, path: str) -> None:
        self.backend = Backend.open(path)
        store = self.backend.load_store() if self.backend.applied_index() else Store()
        self.applier = ApplierV2(1, store, Membership(), self.backend)
        self.listener = Stamps()
        self.applier.listener = self.listener
        self.wait = Wait(0, 5.0)
        self.index = self.backend.applied_index()

    def apply(self, *reqs: V2Request, term: int = 2, wall_ns: int = WALL_AHEAD) -> None:
        entries = []
        for r in reqs:
            self.index += 1
            entries.append(Entry(term, self.index, ENTRY_NORMAL, r.encode()))
        self.backend.write(self.applier.apply(entries, wall_ns, self.wait, None))

    def node(self, path: str) -> dict | None:
        store = self.applier.store
        n = store.tree.get(path)
        return None if n is None else {"expire_ns": n.expire_ns, "value": n.value}

    def close(self) -> None:
        self.backend.close()


@pytest.fixture
def member(tmp_path):
    m = Member(str(tmp_path / "kv"))
    yield m
    m.close()


def test_a_ttl_becomes_an_expiration_at_the_entrys_stamp(member: Member) -> None:
    member.apply(V2Request("PUT", "/k", value="v", ttl=30, time=T0))
    assert member.node("/k") == {"expire_ns": T0 + 30 * S, "value": "v"}
    assert member.applier.time_ns == T0
    # The answer a watcher or the history keeps shows ttl 30 whatever the wall clock says.
    e = member.applier.store.get("/k", False, False, member.applier.time_ns)
    assert orjson.loads(e.to_json())["node"]["ttl"] == 30
    assert member.listener.seen == [T0]


def test_a_sync_expires_what_is_due_at_cluster_time_not_at_the_wall_clock(member: Member) -> None:
    member.apply(V2Request("PUT", "/k", value="v", ttl=30, time=T0))
    member.apply(V2Request("SYNC", "", time=T0 + 29 * S))  # the wall clock says two hours later
    assert member.node("/k") is not None
    member.apply(V2Request("SYNC", "", time=T0 + 30 * S))
    assert member.node("/k") is None


def test_the_applied_time_never_goes_back(member: Member) -> None:
    member.apply(V2Request("PUT", "/a", value="1", ttl=10, time=T0 + 5 * S))
    # A new leader's first stamp trails the old leader's last one by a commit latency.
    member.apply(V2Request("PUT", "/b", value="2", ttl=10, time=T0 + 4 * S))
    assert member.node("/b")["expire_ns"] == T0 + 15 * S
    assert member.applier.time_ns == T0 + 5 * S
    member.apply(V2Request("SYNC", "", time=T0 + 14 * S))
    assert member.node("/a") is not None and member.node("/b") is not None
    member.apply(V2Request("SYNC", "", time=T0 + 15 * S))
    assert member.node("/a") is None and member.node("/b") is None
    assert member.applier.store.stats.expireCount == 2


def test_an_unstamped_entry_applies_at_the_applied_time(member: Member) -> None:
    member.apply(V2Request("PUT", "/a", value="1", time=T0))
    member.apply(V2Request("PUT", "/k", value="v", ttl=30))
    assert member.node("/k")["expire_ns"] == T0 + 30 * S


def test_older_entries_replay_with_their_absolute_expirations(member: Member) -> None:
    """A log written before stamps: the API put absolute expirations in, SYNC carried the time."""
    old_put = V2Request("PUT", "/k", value="v", expiration=T0 + 30 * S).encode()
    assert len(orjson.loads(old_put)) == 13  # the older entry format, unchanged
    member.apply(V2Request.decode(old_put))
    assert member.node("/k")["expire_ns"] == T0 + 30 * S
    assert member.applier.time_ns == 0  # nothing stamped yet: views use the wall clock given
    member.apply(V2Request("SYNC", "", time=T0 + 29 * S))
    assert member.node("/k") is not None and member.applier.time_ns == T0 + 29 * S
    member.apply(V2Request("SYNC", "", time=T0 + 30 * S))
    assert member.node("/k") is None


def test_go_wrapping_of_huge_ttls_is_kept(member: Member) -> None:
    # Go: 2^64-1 s is -1 s; 10^10 s wraps to an expiry before 2000, which makes a new key permanent.
    huge = (1 << 64) - 1
    member.apply(V2Request("PUT", "/k", value="v", ttl=huge, time=T0))
    assert member.node("/k")["expire_ns"] == expiration_for_ttl(T0, huge) == T0 - S
    member.apply(V2Request("PUT", "/p", value="v", ttl=10**10, time=T0))
    assert expiration_for_ttl(T0, 10**10) < 946_684_800 * S
    assert member.node("/p")["expire_ns"] == 0


def test_the_cluster_time_survives_a_restart(tmp_path) -> None:
    m = Member(str(tmp_path / "kv"))
    m.apply(V2Request("PUT", "/k", value="v", ttl=30, time=T0))
    m.apply(V2Request("PUT", "/plain", value="v"))  # a round that does not move the time
    m.close()
    again = Member(str(tmp_path / "kv"))
    try:
        assert again.applier.time_ns == T0
        assert again.node("/k")["expire_ns"] == T0 + 30 * S
        again.apply(V2Request("PUT", "/j", value="v", ttl=5))
        assert again.node("/j")["expire_ns"] == T0 + 5 * S
    finally:
        again.close()


def test_own_unstamped_request_takes_the_stamp_the_leader_gave_its_entry(member: Member) -> None:
    """A follower registers its request unstamped; the leader stamps the entry it forwarded.  The
    follower applies its own request object, with the entry's stamp, like every other replica."""
    req = V2Request("PUT", "/k", value="v", ttl=30, id=77)
    answers: list = []
    member.wait.register(77, req, lambda ev, err: answers.append((ev, err)))
    stamped = V2Request.stamped(req.encode(), T0)
    member.index += 1
    batch = member.applier.apply(
        [Entry(2, member.index, ENTRY_NORMAL, stamped)], WALL_AHEAD, member.wait, None
    )
    member.backend.write(batch)
    assert member.node("/k")["expire_ns"] == T0 + 30 * S
    ((ev, err),) = answers
    assert err is None and orjson.loads(ev.to_json())["node"]["ttl"] == 30


def test_stamping_keeps_an_existing_stamp_and_the_rest_of_the_request() -> None:
    req = V2Request("PUT", "/k\udcff", value="v", ttl=7, prev_exist=True, refresh=None, id=5)
    data = req.encode()
    out = V2Request.decode(V2Request.stamped(data, T0))
    assert (out.id, out.path, out.value, out.ttl, out.prev_exist, out.time) == (
        5,
        "/k\udcff",
        "v",
        7,
        True,
        T0,
    )
    again = V2Request.stamped(V2Request.stamped(data, T0), T0 + S)
    assert V2Request.decode(again).time == T0
    plain = V2Request("DELETE", "/k", id=6).encode()
    assert len(orjson.loads(plain)) == 13
    assert V2Request.decode(V2Request.stamped(plain, T0)).time == T0


def test_internal_entries_are_stamped_too(member: Member) -> None:
    member.index += 1
    req = V2Request("PUT", "/2/users/x", value="{}", ttl=9, time=T0)
    member.backend.write(
        member.applier.apply(
            [Entry(2, member.index, ENTRY_INTERNAL, req.encode())], WALL_AHEAD, member.wait, None
        )
    )
    assert member.applier.store.namespaces["2"].tree.find("/users/x").expire_ns == T0 + 9 * S


def test_a_snapshot_carries_the_cluster_time(tmp_path) -> None:
    """A follower that installs the leader's snapshot (a RocksDB checkpoint) takes its cluster time."""
    leader = Member(str(tmp_path / "leader"))
    follower = Member(str(tmp_path / "follower"))
    try:
        leader.apply(V2Request("PUT", "/k", value="v", ttl=30, time=T0 + 7 * S))
        leader.backend.flush()
        leader.backend.checkpoint(str(tmp_path / "snap"))
        snap = Backend.open(str(tmp_path / "snap"))
        follower.applier.restore(snap)
        assert follower.applier.time_ns == T0 + 7 * S
        assert follower.applier.store.tree.get("/k").expire_ns == T0 + 37 * S
        follower.backend.close()
        follower.applier.backend = follower.backend = snap
        follower.index = snap.applied_index()
        follower.apply(V2Request("PUT", "/j", value="v", ttl=1))  # unstamped: applies at the snapshot's time
        assert follower.node("/j")["expire_ns"] == T0 + 8 * S
    finally:
        leader.close()
        follower.close()
