"""Opening a member's data dir: lock it, then bootstrap, join, restart or force a new cluster.

The result is an :class:`OpenedMember`: the WAL, the applied state (RocksDB and the v2 store, with
the committed log replayed into it), the Raft log and hard state to build Raft from, and the ids.
Nothing here runs on the event loop or talks to peers except the one question a joining member
asks (``fetch_cluster_info``).

Rules:
- Every failure is a ``StartupError`` with one line for the operator, raised before anything is
  served; a data dir that cannot be trusted (applied state without a WAL, a WAL that does not
  reach back to the applied state, another member's WAL) is refused, never repaired by guessing.
- Static bootstrap: every member writes the same bootstrap entries (one membership "add" per
  member, sorted by id, term 1, committed) so the logs match from index 1.
- Restart: RocksDB holds the state at some applied index A; the WAL entries after A up to the
  persisted commit index are replayed; the voters are the membership as of the last applied entry.
- ``--force-new-cluster`` keeps every committed entry, drops the uncommitted tail, and writes the
  change as ordinary membership entries.
"""

from __future__ import annotations

import fcntl
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..logutil import event
from ..raft.log import RaftLog
from ..raft.types import ENTRY_CONF_CHANGE, Entry, HardState
from ..storage.backend import Backend, BackendError
from ..storage.fileutil import fsync_dir
from ..storage.snap import Snapshotter
from ..storage.wal import WAL
from ..transport.transport import fetch_cluster_info
from ..v2store.store import Store
from .applier import ApplierV2
from .config import Config
from .identity import cluster_id_for, member_id_for
from .membership import Member, Membership
from .wait import Wait

log = logging.getLogger("fastkv.etcdserver")

# Where the applied state waits while a snapshot from the leader replaces it.
OLD_SUFFIX = ".old"


class StartupError(Exception):
    """The member cannot start; the message is one line for the operator."""


def segment_size_bytes() -> int:
    """WAL segment size: 64 MiB like etcd's; FASTKV_WAL_SEGMENT_SIZE_BYTES overrides it (tests
    use small segments to exercise segment cuts)."""
    return int(os.environ.get("FASTKV_WAL_SEGMENT_SIZE_BYTES", 64 * 1024 * 1024))


@dataclass
class OpenedMember:
    member_id: int
    cluster_id: int
    wal: WAL
    snapshotter: Snapshotter
    applier: ApplierV2
    raft_log: RaftLog
    hard_state: HardState
    voters: list[int]
    # The index of the newest snapshot (the applied index RocksDB was loaded at, on restart).
    snapshot_index: int
    # The flock on <data-dir>/member/lock, held while the member runs.
    lock_fd: int
    # A restart (the member publishes its attributes again) rather than a first start.
    restarted: bool


def open_member(
    cfg: Config, clock: Callable[[], int], peer_dial: ssl.SSLContext | None = None
) -> OpenedMember:
    """Open (or bootstrap) the member's data dir and recover its state.  Raises StartupError.
    ``peer_dial``: how to reach https peers when joining a running cluster."""
    return _Opener(cfg, clock, peer_dial).open()


class _Opener:
    def __init__(self, cfg: Config, clock: Callable[[], int], peer_dial: ssl.SSLContext | None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.peer_dial = peer_dial
        self.lock_fd = -1
        self.member_id = 0
        self.cluster_id = 0
        self.membership = Membership()

    def open(self) -> OpenedMember:
        try:
            return self._open()
        except BaseException:
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
            raise

    def _open(self) -> OpenedMember:
        cfg = self.cfg
        member_dir = os.path.join(cfg.data_dir, "member")
        wal_dir = cfg.wal_dir or os.path.join(member_dir, "wal")
        snap_dir = os.path.join(member_dir, "snap")
        try:
            os.makedirs(member_dir, mode=0o700, exist_ok=True)
            os.makedirs(snap_dir, mode=0o700, exist_ok=True)
            probe = os.path.join(member_dir, ".probe")
            with open(probe, "wb") as f:
                f.write(b"x")
            os.unlink(probe)
        except OSError as e:
            raise StartupError(f"cannot access data directory {cfg.data_dir!r}: {e.strerror or e}") from None
        self._lock(member_dir)
        snapshotter = Snapshotter(snap_dir)
        kv_dir = os.path.join(member_dir, "kv")
        if not os.path.exists(kv_dir) and os.path.exists(kv_dir + OLD_SUFFIX):
            # A crash in the middle of installing a snapshot from the leader: the old state and
            # the WAL still agree (the WAL marker is written after the swap completes).
            os.rename(kv_dir + OLD_SUFFIX, kv_dir)
            fsync_dir(member_dir)
        try:
            backend = Backend.open(kv_dir)
        except BackendError as e:
            raise StartupError(str(e)) from None
        try:
            if WAL.exists(wal_dir):
                return self._restart(wal_dir, backend, snapshotter)
            if backend.applied_index() > 0:
                raise StartupError(
                    f"data directory {cfg.data_dir!r} holds applied state up to index "
                    f"{backend.applied_index()} but no WAL: refusing to start on incomplete data"
                )
            return self._bootstrap(wal_dir, backend, snapshotter)
        except BaseException:
            backend.close()
            raise

    def _lock(self, member_dir: str) -> None:
        fd = os.open(os.path.join(member_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StartupError(
                f"data directory {self.cfg.data_dir!r} is in use by another member process"
            ) from None
        self.lock_fd = fd

    def _opened(
        self,
        wal: WAL,
        snapshotter: Snapshotter,
        applier: ApplierV2,
        raft_log: RaftLog,
        hard_state: HardState,
        voters: list[int],
        snapshot_index: int,
        restarted: bool,
    ) -> OpenedMember:
        return OpenedMember(
            self.member_id,
            self.cluster_id,
            wal,
            snapshotter,
            applier,
            raft_log,
            hard_state,
            voters,
            snapshot_index,
            self.lock_fd,
            restarted,
        )

    def _create_wal(self, wal_dir: str, metadata: bytes) -> WAL:
        try:
            return WAL.create(wal_dir, metadata, segment_size_bytes=segment_size_bytes())
        except OSError as e:
            raise StartupError(f"cannot create the WAL in {wal_dir!r}: {e.strerror or e}") from None

    # -- a new member --------------------------------------------------------------------

    def _bootstrap(self, wal_dir: str, backend: Backend, snapshotter: Snapshotter) -> OpenedMember:
        cfg = self.cfg
        if (cfg.discovery or cfg.discovery_srv) and not cfg.initial_cluster:
            raise StartupError("discovery did not produce an initial cluster")
        by_name = self._initial_cluster_by_name()
        if cfg.initial_cluster_state == "existing":
            return self._join(wal_dir, by_name, backend, snapshotter)
        token = cfg.initial_cluster_token_for_ids()
        # Every member derives the same ids from the same flags (spec §3.3).
        initial_members = sorted(
            (Member(member_id_for(urls, token), name, urls, []) for name, urls in by_name.items()),
            key=lambda m: m.id,
        )
        ids = [m.id for m in initial_members]
        if len(set(ids)) != len(ids):
            raise StartupError("--initial-cluster lists the same peer URLs for two members")
        self.member_id = member_id_for(by_name[cfg.name], token)
        self.cluster_id = cluster_id_for(ids)
        metadata = orjson.dumps(
            {"name": cfg.name, "member_id": self.member_id, "cluster_id": self.cluster_id}
        )
        wal = self._create_wal(wal_dir, metadata)
        # The initial membership is the first entries of the log, committed by definition,
        # like etcd's bootstrap ConfChange entries.  Sorted by id, so every member writes the
        # same bytes and the logs match from the start.
        entries = [
            Entry(1, i + 1, ENTRY_CONF_CHANGE, orjson.dumps({"op": "add", "member": m.to_dict()}))
            for i, m in enumerate(initial_members)
        ]
        hard_state = HardState(term=1, vote=0, commit=len(entries))
        wal.save(hard_state, entries)
        raft_log = RaftLog()
        raft_log.restore_stable(entries)
        applier = ApplierV2(self.member_id, Store(), self.membership, backend)
        event(
            log,
            logging.INFO,
            "bootstrapped member",
            **{
                "local-member-id": f"{self.member_id:x}",
                "cluster-id": f"{self.cluster_id:x}",
                "members": len(ids),
                "data-dir": cfg.data_dir,
            },
        )
        return self._opened(wal, snapshotter, applier, raft_log, hard_state, ids, 0, False)

    def _initial_cluster_by_name(self) -> dict[str, list[str]]:
        by_name: dict[str, list[str]] = {}
        for name, url in self.cfg.initial_cluster:
            by_name.setdefault(name, []).append(url)
        if self.cfg.name not in by_name:
            raise StartupError(
                f"couldn't find local name {self.cfg.name!r} in the initial cluster configuration"
            )
        return by_name

    def _join(
        self, wal_dir: str, by_name: dict[str, list[str]], backend: Backend, snapshotter: Snapshotter
    ) -> OpenedMember:
        """--initial-cluster-state existing: ask the running members who is in the cluster, check
        that --initial-cluster describes exactly that (etcd's ValidateClusterAndAssignIDs), take
        this member's id and the cluster id from them, and start with an empty log: the leader
        sends the log (or a snapshot) once it reaches us."""
        cfg = self.cfg
        mine = set(by_name[cfg.name])
        remote = None
        errors = []
        for url in sorted({u for _, u in cfg.initial_cluster} - mine):
            try:
                remote = orjson.loads(fetch_cluster_info(url, timeout_s=2.0, ssl_context=self.peer_dial))
                break
            except (OSError, ValueError) as e:
                errors.append(f"{url}: {e}")
        if remote is None:
            raise StartupError(
                "cannot fetch cluster info from peer urls: could not retrieve cluster information "
                "from the given URLs" + (f" ({'; '.join(errors)})" if errors else "")
            )
        members = [Member.from_dict(d) for d in remote["members"]]
        described = ",".join(f"{n}={u}" for n, urls in sorted(by_name.items()) for u in urls)
        if len(members) != len(by_name):
            raise StartupError(f"error validating peerURLs {described}: member count is unequal")
        for name, urls in by_name.items():
            match = next((m for m in members if sorted(m.peer_urls) == sorted(urls)), None)
            if match is None:
                raise StartupError(
                    f"error validating peerURLs {described}: PeerURLs: no match found for existing "
                    f"member ({name}, {','.join(sorted(urls))})"
                )
            if name == cfg.name:
                self.member_id = match.id
        if self.member_id in remote["removed"]:
            raise StartupError(f"member {self.member_id:x} has already been removed from the cluster")
        self.cluster_id = int(remote["cluster_id"], 16)
        for m in members:
            self.membership.add(m)
        self.membership.removed = set(remote["removed"])
        # The membership we joined is kept in the WAL metadata: until the leader's log (or
        # snapshot) reaches us it is the only record of who our peers are.
        metadata = orjson.dumps(
            {
                "name": cfg.name,
                "member_id": self.member_id,
                "cluster_id": self.cluster_id,
                "joined": orjson.loads(self.membership.save()),
            }
        )
        wal = self._create_wal(wal_dir, metadata)
        applier = ApplierV2(self.member_id, Store(), self.membership, backend)
        event(
            log,
            logging.INFO,
            "joining cluster",
            **{
                "local-member-id": f"{self.member_id:x}",
                "cluster-id": f"{self.cluster_id:x}",
                "members": len(members),
            },
        )
        voters = sorted(self.membership.members)
        return self._opened(wal, snapshotter, applier, RaftLog(), HardState(0, 0, 0), voters, 0, False)

    # -- a member that ran before -------------------------------------------------------

    def _restart(self, wal_dir: str, backend: Backend, snapshotter: Snapshotter) -> OpenedMember:
        cfg = self.cfg
        meta = backend.meta()
        applied, applied_term = meta.applied_index, meta.applied_term
        store = Store()
        if applied > 0:
            store = backend.load_store()
            if meta.membership is not None:
                self.membership = Membership.recover(meta.membership)
        wal = WAL.open(wal_dir, snap_index=applied, segment_size_bytes=segment_size_bytes())
        try:
            metadata, hard_state, entries = wal.read_all()
            meta_wal = orjson.loads(metadata)
            if meta_wal["name"] != cfg.name and not cfg.force_new_cluster:
                raise StartupError(
                    f"data directory {cfg.data_dir!r} belongs to member {meta_wal['name']!r} "
                    f"({meta_wal['member_id']:x}), not to {cfg.name!r}"
                )
            self.member_id = meta_wal["member_id"]
            self.cluster_id = meta_wal["cluster_id"]
            if entries and entries[0].index != applied + 1:
                raise StartupError(
                    f"the WAL in {wal_dir!r} starts at index {entries[0].index} but the applied state "
                    f"ends at {applied}: entries are missing, refusing to start"
                )
            if cfg.force_new_cluster:
                discarded = [e for e in entries if e.index > hard_state.commit]
                if discarded:
                    event(
                        log, logging.WARNING, "force new cluster: discarding uncommitted WAL entries",
                        **{"discarded-entries": len(discarded)},
                    )  # fmt: skip
                    entries = entries[: len(entries) - len(discarded)]
            raft_log = RaftLog(applied, applied_term)
            raft_log.restore_stable(entries)
            raft_log.commit_to(min(hard_state.commit, raft_log.last_index()))
            if not self.membership.members and "joined" in meta_wal:
                # Joined a running cluster and crashed before the leader's log arrived.
                joined = Membership.recover(orjson.dumps(meta_wal["joined"]))
                self.membership.members, self.membership.removed = joined.members, joined.removed
            applier = ApplierV2(self.member_id, store, self.membership, backend)
            applier.applied_index, applier.applied_term = applied, applied_term
            # Replay what was committed before the crash; the rest commits after the election.
            # The voters are the membership as of the last applied entry (configuration takes
            # effect on apply), so replay before building the Raft node.
            replayed = self._replay(applier, raft_log)
            if cfg.force_new_cluster:
                hard_state = self._force_new_cluster(wal, applier, raft_log, hard_state)
        except BaseException:
            wal.close()
            raise
        voters = sorted(applier.membership.members) or [self.member_id]
        event(
            log,
            logging.INFO,
            "restarted member",
            **{
                "local-member-id": f"{self.member_id:x}",
                "cluster-id": f"{self.cluster_id:x}",
                "commit-index": raft_log.committed,
                "applied-index": applied,
                "replayed-entries": replayed,
            },
        )
        return self._opened(wal, snapshotter, applier, raft_log, hard_state, voters, applied, True)

    def _replay(self, applier: ApplierV2, raft_log: RaftLog) -> int:
        wait = Wait(0, 0.0)
        n = 0
        while True:
            committed = raft_log.next_committed()
            if not committed:
                return n
            applier.backend.write(applier.apply(committed, self.clock(), wait, None))
            raft_log.applied_to(committed[-1].index)
            n += len(committed)

    def _force_new_cluster(
        self, wal: WAL, applier: ApplierV2, raft_log: RaftLog, hard_state: HardState
    ) -> HardState:
        """--force-new-cluster: make this member the only one, keeping every committed write.
        The change is written as ordinary membership entries (every other member removed, this
        one added if missing), committed by this member alone and applied here, so a restart
        without the flag finds the same one-member cluster.  Unlike etcd 3.4 (issue #7570) the
        member keeps the peer URLs its flags advertise."""
        peer_urls = list(self.cfg.initial_advertise_peer_urls)
        membership = applier.membership
        term = max(hard_state.term, raft_log.last_term(), 1)
        index = raft_log.last_index()
        changes: list[dict[str, Any]] = []
        for mid in sorted(membership.members):
            if mid != self.member_id:
                changes.append({"op": "remove", "member_id": f"{mid:x}"})
        if self.member_id not in membership.members:
            me = Member(self.member_id, self.cfg.name, peer_urls, [])
            changes.append({"op": "add", "member": me.to_dict()})
        else:
            me = membership.members[self.member_id]
            if me.peer_urls != peer_urls:
                changes.append({"op": "update", "member_id": f"{self.member_id:x}", "peerURLs": peer_urls})
        new_entries = [
            Entry(term, index + i + 1, ENTRY_CONF_CHANGE, orjson.dumps(cc)) for i, cc in enumerate(changes)
        ]
        hard_state = HardState(term=term, vote=self.member_id, commit=index + len(new_entries))
        wal.save(hard_state, new_entries)
        raft_log.restore_stable(new_entries)
        raft_log.commit_to(hard_state.commit)
        self._replay(applier, raft_log)
        event(
            log,
            logging.WARNING,
            "force new cluster: this member is now the only member",
            **{
                "local-member-id": f"{self.member_id:x}",
                "cluster-id": f"{self.cluster_id:x}",
                "changes": len(changes),
            },
        )
        return hard_state


def resolve_initial_cluster(cfg: Config) -> Config:
    """Fill in the initial cluster from --discovery or --discovery-srv, on first boot only.

    Once the member has a WAL both are ignored, as in etcd.  A full discovery cluster ends
    the process (fastkv has no v2 proxy to fall back to), whatever --discovery-fallback says.
    """
    if not (cfg.discovery or cfg.discovery_srv):
        return cfg
    if WAL.exists(cfg.wal_path):
        if cfg.discovery:
            log.warning("discovery token ignored since a cluster has already been initialized")
        return cfg
    if cfg.discovery_srv:
        from . import srv

        try:
            return srv.bootstrap_config(cfg)
        except srv.SRVError as e:
            raise StartupError(str(e)) from None
    from . import discovery

    try:
        return discovery.bootstrap_config(cfg)
    except discovery.DiscoveryError as e:
        if e.reason == discovery.ERR_FULL_CLUSTER and cfg.discovery_fallback == "proxy":
            raise StartupError(
                f"{e}; cannot fall back to a v2 proxy (--discovery-fallback proxy, the default): "
                "fastkv has no proxy mode, --discovery-fallback exit is the supported setting"
            ) from None
        if e.reason == discovery.ERR_DUPLICATE_ID:
            raise StartupError(
                f'{e}: member "{cfg.name}" has previously registered with discovery service token '
                f"({cfg.discovery}), but no valid cluster configuration was found in the data dir "
                f"({cfg.data_dir}); check the data dir if the previous bootstrap succeeded, or use a new "
                "discovery token if it failed"
            ) from None
        raise
