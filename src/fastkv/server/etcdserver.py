"""EtcdServer: where Raft, the WAL, snapshots and the v2 store meet.

The write path, for every write (quorum reads use ReadIndex instead: no log entry):

    propose(req) -> raft log entry -> Ready -> WAL write + ONE fdatasync (writer thread)
    -> commit -> apply to the v2 store -> the waiting request's future resolves.

Group commit falls out of the loop: while one WAL write is in flight, new proposals pile
up and all of them ride the next write.  A request is answered only after the fdatasync
that made its entry durable and the apply that produced its event, so an acknowledged
write survives kill -9.  Every apply round also writes one RocksDB batch (the round's
changes + the applied index, unsynced) on the writer thread; on restart the state is loaded
from RocksDB and only the WAL entries after its applied index are replayed.  RocksDB is
flushed before the WAL may drop anything, so the WAL always covers what RocksDB could lose.

Rules worth keeping in mind:
- Apply happens on the event loop, in log order, one entry at a time.  Nothing but the
  WAL writer thread touches the WAL, and it runs one job at a time, so saves, snapshot
  markers and segment releases are ordered.
- A failed WAL write is fatal: the member stops acknowledging and exits (no retry that
  could acknowledge a write whose predecessor was lost).
- TTL expiry is a SYNC entry proposed by the leader every 500 ms while TTL keys exist,
  carrying the leader's clock, so every replica expires the same keys at the same index.

With several members (static bootstrap from --initial-cluster):
- Every member writes the same bootstrap entries (one membership "add" per member, sorted
  by id, term 1, committed) so the logs match from index 1; ids as identity.py derives them.
- A tick every --heartbeat-interval drives elections and heartbeats (election ticks =
  election timeout / heartbeat interval); nobody campaigns at start.
- Ready order: the leader sends its messages at once (thesis §10.2.1, etcd), everyone else
  only after the WAL write that makes the Ready durable; then apply, then advance.
- A follower forwards proposals to the leader (MsgProp); the request's future resolves when
  this member applies the entry carrying its request id.  With no leader known, proposals
  are held and forwarded once one is; the sweep answers 300 "request timed out" as etcd.
  A proposal lost with a dead leader is neither retried nor answered before that timeout:
  retrying could apply it twice.
- Each member publishes its name and client URLs as an ENTRY_MEMBER_ATTRIBUTES entry once
  it knows a leader, retried until applied.
- On restart the voters are the membership as of the last applied entry.
- A follower behind the leader's compacted log receives the newest snapshot (the RocksDB
  checkpoint as an archive) and swaps it in for its applied state on the writer thread.
- Not yet: runtime member add/remove, joining with --initial-cluster-state existing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from typing import Any

import orjson

from .._native.keyindex import format_time
from ..histogram import Histogram
from ..logutil import event
from ..raft.confchange import CONF_ADD_NODE, CONF_REMOVE_NODE, ConfChange
from ..raft.log import RaftLog
from ..raft.messages import MSG_APP, MSG_PROP, Message, Snapshot, SnapshotMeta
from ..raft.node import LEADER, NotLeaderError, RaftNode, Ready
from ..raft.types import ENTRY_CONF_CHANGE, ENTRY_MEMBER_ATTRIBUTES, ENTRY_NORMAL, Entry, HardState
from ..storage import failpoint
from ..storage.backend import Backend, BackendError, Batch
from ..storage.fileutil import fsync_dir
from ..storage.snap import Snapshotter, archive_dir, restore_archive
from ..storage.wal import WAL
from ..transport.transport import STATUS_GONE, Transport, fetch_cluster_info, parse_peer_url
from ..v2store.errors import LEADER_ELECT, RAFT_INTERNAL, V2Error
from ..v2store.event import Event
from ..v2store.request import V2Request
from ..v2store.store import Store
from .config import Config
from .identity import cluster_id_for, member_id_for
from .membership import Member, Membership
from .metrics import APPLY_BUCKETS_S

log = logging.getLogger("fastkv.etcdserver")

SYNC_INTERVAL_S = 0.5
# Rounds with at most this many new entries are fdatasynced on the event loop (see _handle_ready).
INLINE_SYNC_MAX_ENTRIES = 1
# Where the applied state waits while a snapshot from the leader replaces it.
OLD_SUFFIX = ".old"
WAITER_SWEEP_INTERVAL_S = 0.1
PUBLISH_RETRY_S = 1.0
# Proposals held on a member that knows no leader yet (they wait for one, then are forwarded;
# the sweep times them out with error 300 like etcd).  Beyond this, error 301 at once.
MAX_HELD_PROPOSALS = 10000
# etcd's strict reconfiguration check: peers must have been connected this long (HealthInterval).
HEALTH_INTERVAL_S = 5.0
# A removed member answers its last requests, then exits (etcd: about a second later).
REMOVED_EXIT_DELAY_S = 1.0


class StartupError(Exception):
    """The member cannot start; the message is one line for the operator."""


class MembershipError(Exception):
    """A refused member change; ``http_status`` and the message are what /v2/members answers."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status


def _segment_size_bytes() -> int:
    """WAL segment size: 64 MiB like etcd's; FASTKV_WAL_SEGMENT_SIZE_BYTES overrides it (tests
    use small segments to exercise segment cuts)."""
    return int(os.environ.get("FASTKV_WAL_SEGMENT_SIZE_BYTES", 64 * 1024 * 1024))


def _snapshot_catch_up_entries() -> int:
    """Entries kept after a snapshot so slow followers can catch up from the log: 5000 like
    etcd's; FASTKV_SNAPSHOT_CATCH_UP_ENTRIES overrides it (tests exercise compaction)."""
    return int(os.environ.get("FASTKV_SNAPSHOT_CATCH_UP_ENTRIES", 5000))


def _format_go_duration(seconds: float) -> str:
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


class EtcdServer:
    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.now_ns = clock
        self._rng = rng or random.Random()
        self.client_urls: list[str] = list(cfg.advertise_client_urls)
        self.peer_urls: list[str] = list(cfg.initial_advertise_peer_urls)
        self.cors: set[str] | None = cfg.cors
        self.member_id = 0
        self.cluster_id = 0
        self.store = Store()
        self.membership = Membership()
        self.raft: RaftNode
        self.wal: WAL
        self.snapshotter: Snapshotter
        self.backend: Backend
        self.start_time_ns = clock()
        self._lock_fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-writer")
        # Proposals not yet in the Raft log, and their waiters by request id.
        self._proposals: list[bytes] = []
        # (entry type, data): configuration changes and attribute publications.
        self._conf_proposals: list[tuple[int, bytes]] = []
        # Quorum reads (ReadIndex, Raft thesis §6.4): request ids not yet handed to Raft, and
        # confirmed reads waiting for the store to apply up to their read index.
        self._reads: list[int] = []
        self._confirmed_reads: list[tuple[int, int]] = []
        self._waiters: dict[int, tuple[asyncio.Future[Any], V2Request | None, float]] = {}
        self._next_request_id = self._rng.getrandbits(48) << 16
        self._persisting = False
        self._scheduled = False
        self._fatal: str | None = None
        self._snapshot_index = 0
        self._snapshot_running = False
        # The last entry applied to the store (and handed to RocksDB in that round's batch).
        # Ahead of raft.log.applied, which moves only when the Ready is advanced.
        self._applied_index = 0
        self._applied_term = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._request_timeout_s = 5.0 + 2 * cfg.election_timeout_ms / 1000.0
        self._stopped = asyncio.Event()
        # Set once the member has joined and published its attributes (systemd READY=1).
        self._ready = asyncio.Event()
        self._stats = {"recvAppendRequestCnt": 0, "sendAppendRequestCnt": 0}
        self._leader_since_ns = 0
        # Multi-member state: the peer transport, the tick timer, the attribute publication.
        self.transport: Transport | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._published = False
        self._publish_due = 0.0
        self._last_lead = 0
        # This member was removed from the cluster: it exits (status 0) and never comes back.
        self.removed = False
        # The newest commit-only hard state not yet in the WAL (written by the next save or tick).
        self._unsaved_hard_state: HardState | None = None
        # Set by _apply_entries when the round changed the membership (saved with its batch).
        self._membership_changed = False
        # stop(): no new requests once stopping; no writer-thread work once closed.
        self._stopping = False
        self._closed = False
        # For /metrics (metrics.py): leader changes seen, proposals that failed as etcd counts them
        # (timed out, or refused for want of a leader), and the duration of each apply round.
        self.leader_changes = 0
        self.proposals_failed = 0
        self.apply_seconds = Histogram(APPLY_BUCKETS_S)

    @property
    def multi_member(self) -> bool:
        """More than one voter: ticks, elections and peer traffic are needed."""
        return len(self.raft.voters) > 1

    def _new_raft(self, voters: list[int], raft_log: RaftLog, hard_state: HardState) -> RaftNode:
        # Configured for a cluster even with one voter: members can be added at runtime.
        cfg = self.cfg
        # etcd: election ticks = election timeout / heartbeat interval, one tick per heartbeat.
        election_tick = max(2, cfg.election_timeout_ms // max(1, cfg.heartbeat_interval_ms))
        raft_log.snapshot_source = self._snapshot_for_peer
        return RaftNode(
            self.member_id,
            voters,
            raft_log,
            hard_state,
            election_tick=election_tick,
            heartbeat_tick=1,
            rng=random.Random(self.member_id ^ time.time_ns()),
        )

    # -- opening the data dir ------------------------------------------------------------

    @classmethod
    def open(cls, cfg: Config, **kwargs: Any) -> EtcdServer:
        """Open (or bootstrap) the member's data dir and recover its state.  Raises StartupError."""
        srv = cls(cfg, **kwargs)
        srv._open_data_dir()
        return srv

    def _open_data_dir(self) -> None:
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
        self._lock_data_dir(member_dir)
        self.snapshotter = Snapshotter(snap_dir)
        kv_dir = os.path.join(member_dir, "kv")
        if not os.path.exists(kv_dir) and os.path.exists(kv_dir + OLD_SUFFIX):
            # A crash in the middle of installing a snapshot from the leader: the old state and
            # the WAL still agree (the WAL marker is written after the swap completes).
            os.rename(kv_dir + OLD_SUFFIX, kv_dir)
            fsync_dir(member_dir)
        try:
            self.backend = Backend.open(kv_dir)
        except BackendError as e:
            raise StartupError(str(e)) from None
        if WAL.exists(wal_dir):
            self._restart(wal_dir)
        elif self.backend.applied_index() > 0:
            raise StartupError(
                f"data directory {cfg.data_dir!r} holds applied state up to index "
                f"{self.backend.applied_index()} but no WAL: refusing to start on incomplete data"
            )
        else:
            self._bootstrap(wal_dir)

    def _lock_data_dir(self, member_dir: str) -> None:
        fd = os.open(os.path.join(member_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StartupError(
                f"data directory {self.cfg.data_dir!r} is in use by another member process"
            ) from None
        self._lock_fd = fd

    def _bootstrap(self, wal_dir: str) -> None:
        cfg = self.cfg
        if (cfg.discovery or cfg.discovery_srv) and not cfg.initial_cluster:
            raise StartupError("discovery did not produce an initial cluster")
        by_name = self._initial_cluster_by_name()
        if cfg.initial_cluster_state == "existing":
            self._join(wal_dir, by_name)
            return
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
        try:
            self.wal = WAL.create(wal_dir, metadata, segment_size_bytes=_segment_size_bytes())
        except OSError as e:
            raise StartupError(f"cannot create the WAL in {wal_dir!r}: {e.strerror or e}") from None
        # The initial membership is the first entries of the log, committed by definition,
        # like etcd's bootstrap ConfChange entries.  Sorted by id, so every member writes the
        # same bytes and the logs match from the start.
        entries = [
            Entry(1, i + 1, ENTRY_CONF_CHANGE, orjson.dumps({"op": "add", "member": m.to_dict()}))
            for i, m in enumerate(initial_members)
        ]
        hard_state = HardState(term=1, vote=0, commit=len(entries))
        self.wal.save(hard_state, entries)
        raft_log = RaftLog()
        raft_log.restore_stable(entries)
        self.raft = self._new_raft(ids, raft_log, hard_state)
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

    def _initial_cluster_by_name(self) -> dict[str, list[str]]:
        by_name: dict[str, list[str]] = {}
        for name, url in self.cfg.initial_cluster:
            by_name.setdefault(name, []).append(url)
        if self.cfg.name not in by_name:
            raise StartupError(
                f"couldn't find local name {self.cfg.name!r} in the initial cluster configuration"
            )
        return by_name

    def _join(self, wal_dir: str, by_name: dict[str, list[str]]) -> None:
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
                remote = orjson.loads(fetch_cluster_info(url, timeout_s=2.0))
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
        try:
            self.wal = WAL.create(wal_dir, metadata, segment_size_bytes=_segment_size_bytes())
        except OSError as e:
            raise StartupError(f"cannot create the WAL in {wal_dir!r}: {e.strerror or e}") from None
        raft_log = RaftLog()
        self.raft = self._new_raft(sorted(self.membership.members), raft_log, HardState(0, 0, 0))
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

    def _cluster_info(self) -> str:
        """What a joining member asks a peer for: the cluster id and membership."""
        return orjson.dumps(
            {
                "cluster_id": f"{self.cluster_id:x}",
                "members": [m.to_dict() for m in self.membership.sorted()],
                "removed": sorted(self.membership.removed),
            }
        ).decode()

    def _restart(self, wal_dir: str) -> None:
        meta = self.backend.meta()
        applied, applied_term = meta.applied_index, meta.applied_term
        if applied > 0:
            self.store = self.backend.load_store()
            if meta.membership is not None:
                self.membership = Membership.recover(meta.membership)
        self.wal = WAL.open(wal_dir, snap_index=applied, segment_size_bytes=_segment_size_bytes())
        metadata, hard_state, entries = self.wal.read_all()
        meta_wal = orjson.loads(metadata)
        if meta_wal["name"] != self.cfg.name and not self.cfg.force_new_cluster:
            raise StartupError(
                f"data directory {self.cfg.data_dir!r} belongs to member {meta_wal['name']!r} "
                f"({meta_wal['member_id']:x}), not to {self.cfg.name!r}"
            )
        self.member_id = meta_wal["member_id"]
        self.cluster_id = meta_wal["cluster_id"]
        if entries and entries[0].index != applied + 1:
            raise StartupError(
                f"the WAL in {wal_dir!r} starts at index {entries[0].index} but the applied state "
                f"ends at {applied}: entries are missing, refusing to start"
            )
        if self.cfg.force_new_cluster:
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
        self._snapshot_index = self._applied_index = applied
        self._applied_term = applied_term
        # Replay what was committed before the crash; the rest commits after the election.
        # The voters are the membership as of the last applied entry (configuration takes
        # effect on apply), so replay before building the Raft node.
        if not self.membership.members and "joined" in meta_wal:
            # Joined a running cluster and crashed before the leader's log arrived.
            joined = Membership.recover(orjson.dumps(meta_wal["joined"]))
            self.membership.members, self.membership.removed = joined.members, joined.removed
        replayed = self._apply_committed(raft_log)
        if self.cfg.force_new_cluster:
            hard_state = self._force_new_cluster(raft_log, hard_state)
        voters = sorted(self.membership.members) or [self.member_id]
        self.raft = self._new_raft(voters, raft_log, hard_state)
        # Publish again after every restart, as etcd does: ready means joined *now*.
        self._published = False
        self._ready.clear()
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

    def _force_new_cluster(self, raft_log: RaftLog, hard_state: HardState) -> HardState:
        """--force-new-cluster: make this member the only one, keeping every committed write.
        The change is written as ordinary membership entries (every other member removed, this
        one added if missing), committed by this member alone and applied here, so a restart
        without the flag finds the same one-member cluster.  Unlike etcd 3.4 (issue #7570) the
        member keeps the peer URLs its flags advertise."""
        term = max(hard_state.term, raft_log.last_term(), 1)
        index = raft_log.last_index()
        changes: list[dict[str, Any]] = []
        for mid in sorted(self.membership.members):
            if mid != self.member_id:
                changes.append({"op": "remove", "member_id": f"{mid:x}"})
        if self.member_id not in self.membership.members:
            me = Member(self.member_id, self.name, self.peer_urls, [])
            changes.append({"op": "add", "member": me.to_dict()})
        else:
            me = self.membership.members[self.member_id]
            if me.peer_urls != self.peer_urls:
                changes.append(
                    {"op": "update", "member_id": f"{self.member_id:x}", "peerURLs": self.peer_urls}
                )
        new_entries = [
            Entry(term, index + i + 1, ENTRY_CONF_CHANGE, orjson.dumps(cc)) for i, cc in enumerate(changes)
        ]
        hard_state = HardState(term=term, vote=self.member_id, commit=index + len(new_entries))
        self.wal.save(hard_state, new_entries)
        raft_log.restore_stable(new_entries)
        raft_log.commit_to(hard_state.commit)
        self._apply_committed(raft_log)
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

    def _apply_committed(self, raft_log: RaftLog) -> int:
        n = 0
        while True:
            committed = raft_log.next_committed()
            if not committed:
                return n
            self.backend.write(self._apply(committed))
            raft_log.applied_to(committed[-1].index)
            n += len(committed)

    # -- snapshots -----------------------------------------------------------------------

    def _maybe_snapshot(self, force: bool = False) -> None:
        """Every --snapshot-count applied entries (or now, with ``force``): make RocksDB durable,
        keep a checkpoint of it as the snapshot, and let the WAL and the in-memory log drop what
        it covers."""
        applied, term = self._applied_index, self._applied_term
        if self._snapshot_running or applied == 0 or self._stopping:
            return
        if not force and applied - self._snapshot_index < self.cfg.snapshot_count:
            return
        assert self._loop is not None
        meta = orjson.dumps({"membership": self.membership.save().decode(), "index": applied, "term": term})
        self._snapshot_running = True

        def write_snapshot() -> None:
            # The writer thread runs jobs in order, so RocksDB holds exactly the state at
            # ``applied`` here: every earlier round's batch was written, no later one yet.
            self.backend.flush()
            self.backend.checkpoint(self.snapshotter.data_dir(term, applied))
            failpoint.hit("during_snapshot")
            self.snapshotter.save(term, applied, meta)
            self.wal.save_snapshot(term, applied)

        def done(f: concurrent.futures.Future[None]) -> None:
            self._snapshot_running = False
            if self._closed:
                return
            exc = f.exception()
            if exc is not None:
                self._fail(f"snapshot at index {applied} failed: {exc}")
                return
            self._snapshot_index = applied
            compact_to = min(applied - _snapshot_catch_up_entries(), self.raft.log.applied)
            if compact_to > self.raft.log.offset:
                self.raft.log.compact(compact_to)
                self._writer.submit(self.wal.release_to, compact_to, self.cfg.max_wals)
            if self.cfg.max_snapshots > 0:
                self._writer.submit(self.snapshotter.purge, self.cfg.max_snapshots)
            event(log, logging.INFO, "saved snapshot", **{"snapshot-index": applied, "snapshot-term": term})

        fut = self._writer.submit(write_snapshot)
        fut.add_done_callback(lambda f: self._loop.call_soon_threadsafe(done, f) if self._loop else None)

    # -- running -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for peers (a single member too: it can be joined after a member add), start
        the tick timer and the background loops.  A single member elects itself at once and
        returns once it serves; in a cluster the randomized election timeout decides who
        campaigns first (etcd's rule) and start() returns at once."""
        self._loop = loop = asyncio.get_running_loop()
        if self.member_id in self.membership.removed:
            # Its own log says so: a removed member never serves again (etcd exits 0 too).
            self._on_removed()
            return
        await self._start_transport()
        self._leader_since_ns = self.now_ns()
        self._tasks.append(loop.create_task(self._sync_loop()))
        self._tasks.append(loop.create_task(self._sweep_loop()))
        self._tick_handle = loop.call_later(self.cfg.heartbeat_interval_ms / 1000.0, self._on_tick)
        if self.multi_member:
            self._kick()
            event(
                log,
                logging.INFO,
                "started cluster member",
                **{
                    "local-member-id": f"{self.member_id:x}",
                    "voters": [f"{v:x}" for v in self.raft.voters],
                    "peer-urls": self.cfg.listen_peer_urls,
                },
            )
            return
        self.raft.campaign()
        event(
            log,
            logging.INFO,
            "became leader",
            **{"local-member-id": f"{self.member_id:x}", "term": self.raft.term},
        )
        self._kick()
        # Serve once this member's attributes are applied (which needs the new term's empty
        # entry committed first); they go through the log so members added later see them.
        self._maybe_publish()
        deadline = time.monotonic() + 30
        while not self._published and time.monotonic() < deadline:
            if self._fatal:
                raise StartupError(self._fatal)
            await asyncio.sleep(0.001)

    async def _start_transport(self) -> None:
        loop = self._loop
        assert loop is not None
        self.transport = Transport(
            self.member_id,
            self.cluster_id,
            self._on_peer_message,
            loop,
            on_unreachable=self.raft.report_unreachable,
            on_snapshot_status=self.raft.report_snapshot,
            is_removed=lambda mid: mid in self.membership.removed,
            on_rejected=self._on_peer_rejected,
            cluster_info=self._cluster_info,
            rng=random.Random(self.member_id ^ time.time_ns() ^ 0x5EED),
        )
        for url in self.cfg.listen_peer_urls:
            try:
                host, port = parse_peer_url(url)
            except ValueError as e:
                raise StartupError(f"cannot listen on {url!r}: {e}") from None
            if host == "localhost":
                host = "127.0.0.1"
            try:
                await self.transport.start(host, port)
            except OSError as e:
                raise StartupError(f"listen tcp {host}:{port}: {e.strerror or e}") from None
        self._sync_peers()

    def _sync_peers(self) -> None:
        """The transport's peers follow the membership (peer URLs included)."""
        t = self.transport
        if t is None:
            return
        for m in self.membership.members.values():
            if m.id != self.member_id and m.peer_urls:
                t.update_peer(m.id, m.peer_urls)
        for pid in t.peers():
            if pid not in self.membership.members:
                t.remove_peer(pid)

    def _on_peer_rejected(self, peer_id: int, status: int, reason: str) -> None:
        """A peer refused our connection.  410 means this member was removed from the cluster
        (the entry may never have reached us): stop for good, as etcd does."""
        if status == STATUS_GONE and not self.removed:
            self._on_removed()

    def _on_removed(self) -> None:
        if self.removed:
            return
        self.removed = True
        event(
            log,
            logging.WARNING,
            "the member has been permanently removed from the cluster; "
            "the data-dir used by this member must be removed",
            **{"local-member-id": f"{self.member_id:x}"},
        )
        if self._loop is None:
            self._stopped.set()
            return
        # Answer what is in flight (the DELETE that removed us, maybe), then stop.
        self._loop.call_later(REMOVED_EXIT_DELAY_S, self._stopped.set)

    def _on_tick(self) -> None:
        loop = self._loop
        if loop is None or self._fatal is not None:
            return
        self._tick_handle = loop.call_later(self.cfg.heartbeat_interval_ms / 1000.0, self._on_tick)
        if self._unsaved_hard_state is not None and not self._persisting:
            hard_state, self._unsaved_hard_state = self._unsaved_hard_state, None
            if self.multi_member:
                self._writer.submit(self.wal.save, hard_state, [], False).add_done_callback(
                    self._check_background_write
                )
            else:
                # Where a single member's saves happen (inline, see _handle_ready), so an older
                # hard state can never land after a newer one.
                try:
                    self.wal.save(hard_state, [], False)
                except Exception as e:  # noqa: BLE001 - any WAL failure is fatal
                    self._fail(f"WAL write failed: {e}")
        self.raft.tick()
        self._maybe_publish()
        self._kick()

    def _on_peer_message(self, m: Message) -> None:
        if m.type == MSG_APP:
            self._stats["recvAppendRequestCnt"] += 1
        self.raft.step(m)
        self._kick()

    def _send(self, messages: list[Message]) -> None:
        t = self.transport
        if t is None or not messages:
            return
        n = 0
        for m in messages:
            if m.type == MSG_APP:
                n += 1
        self._stats["sendAppendRequestCnt"] += n
        t.send(messages)
        t.flush()

    def _maybe_publish(self) -> None:
        """Publish this member's name and client URLs through the log once a leader is known,
        retrying until the entry is applied (a proposal can be lost in a leader change)."""
        if self._published or self.raft.lead == 0 or self._loop is None:
            return
        now = time.monotonic()
        if now < self._publish_due:
            return
        self._publish_due = now + PUBLISH_RETRY_S
        attrs = {"member_id": f"{self.member_id:x}", "name": self.name, "clientURLs": self.client_urls}
        self._conf_proposals.append((ENTRY_MEMBER_ATTRIBUTES, orjson.dumps(attrs)))
        self._kick()

    async def stop(self) -> None:
        """Refuse new requests, let the WAL write in flight finish, close the WAL.  Requests not
        yet in the log are answered "server stopped"; none of them was acknowledged."""
        self._stopping = True
        await self._transfer_leadership()
        for t in self._tasks:
            t.cancel()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.stop()
        self._proposals.clear()
        self._conf_proposals.clear()
        self._reads.clear()
        deadline = time.monotonic() + 5
        # A snapshot in progress finishes, and its log compaction and purge are queued.
        while (
            (self._persisting or self._snapshot_running) and time.monotonic() < deadline and not self._fatal
        ):
            await asyncio.sleep(0.005)
        if self._unsaved_hard_state is not None and self._fatal is None:
            self._writer.submit(self.wal.save, self._unsaved_hard_state, [])
            self._unsaved_hard_state = None
        self._closed = True
        for fut, _, _ in self._waiters.values():
            if not fut.done():
                fut.set_exception(V2Error(RAFT_INTERNAL, "etcdserver: server stopped"))
        self._waiters.clear()
        # Off the loop: a snapshot checkpoint may still be running on the writer.
        await asyncio.get_running_loop().run_in_executor(None, self._writer.shutdown, True)
        with contextlib.suppress(Exception):
            self.wal.close()
        with contextlib.suppress(Exception):
            self.backend.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def _transfer_leadership(self) -> None:
        """A leader that stops hands leadership to its most up-to-date voter first (etcd 3.4's
        graceful stop), so the cluster does not wait out an election timeout; bounded by one
        election timeout, after which the member stops anyway."""
        raft = self.raft
        if raft.state != LEADER or not self.multi_member or self._fatal is not None or self.removed:
            return
        candidates = [
            (pr.match, pid)
            for pid, pr in raft.progress.items()
            if pid != self.member_id and pid in raft.voters and pr.recent_active
        ]
        if not candidates:
            return
        _, to = max(candidates)
        event(
            log,
            logging.INFO,
            "leadership transfer on stop",
            **{"local-member-id": f"{self.member_id:x}", "transferee": f"{to:x}"},
        )
        raft.transfer_leader(to)
        self._kick()
        deadline = time.monotonic() + self.cfg.election_timeout_ms / 1000.0
        while time.monotonic() < deadline and raft.lead in (self.member_id, 0) and raft.state == LEADER:
            await asyncio.sleep(0.005)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            if self.raft.state == LEADER and self.store.has_ttl_keys() and not self._fatal:
                req = V2Request("SYNC", "", id=self._new_id(), time=self.now_ns())
                self._proposals.append(req.encode())
                self._kick()

    async def _sweep_loop(self) -> None:
        """Fail requests that waited longer than the request timeout (etcd's error 300)."""
        while True:
            await asyncio.sleep(WAITER_SWEEP_INTERVAL_S)
            now = time.monotonic()
            expired = []
            for rid, (_, _, deadline) in self._waiters.items():
                if deadline > now:
                    break  # insertion order = deadline order
                expired.append(rid)
            for rid in expired:
                fut = self._waiters.pop(rid)[0]
                if not fut.done():
                    self.proposals_failed += 1
                    fut.set_exception(V2Error(RAFT_INTERNAL, "etcdserver: request timed out"))

    # -- proposing -----------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_request_id += 1
        return self._next_request_id

    def propose(self, req: V2Request) -> asyncio.Future[Event | None]:
        """Replicate and apply ``req``; the future resolves with its event after fdatasync + apply."""
        loop = self._loop
        assert loop is not None, "server not started"
        fut: asyncio.Future[Event | None] = loop.create_future()
        if self._fatal is not None or self._stopping:
            fut.set_exception(V2Error(RAFT_INTERNAL, "etcdserver: " + (self._fatal or "server stopped")))
            return fut
        if self.raft.state != LEADER and (
            not self.multi_member or (self.raft.lead == 0 and len(self._proposals) >= MAX_HELD_PROPOSALS)
        ):
            self.proposals_failed += 1
            fut.set_exception(V2Error(LEADER_ELECT))
            return fut
        self._next_request_id += 1
        rid = self._next_request_id
        req.id = rid
        self._waiters[rid] = (fut, req, time.monotonic() + self._request_timeout_s)
        if req.method == "QGET":
            # Linearizable without a log entry: confirm leadership for the current commit
            # index, then serve from the local store once it has applied that index.
            self._reads.append(rid)
        else:
            self._proposals.append(req.encode())
        self._kick()
        return fut

    def _kick(self) -> None:
        if not self._scheduled and not self._persisting and self._loop is not None and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._run_ready)

    def _run_ready(self) -> None:
        """One turn of the Ready loop: hand new entries to the writer, apply what is durable."""
        self._scheduled = False
        if self._persisting or self._fatal is not None or self._closed:
            return
        raft = self.raft
        if self._proposals or self._conf_proposals:
            self._submit_proposals()
        if self._reads and (raft.state == LEADER or raft.lead != 0):
            # Held while no leader is known: a follower without one would drop them.
            reads, self._reads = self._reads, []
            for rid in reads:
                raft.read_index(rid.to_bytes(8, "big"))
        if not raft.has_ready():
            return
        rd = raft.ready()
        if rd.soft_state_changed:
            self._on_soft_state(rd)
        if rd.snapshot is not None:
            self._install_snapshot(rd)
            return
        self._handle_ready(rd)

    def _handle_ready(self, rd: Ready) -> None:
        """Steps b-e of the Ready contract (raft/node.py), once any snapshot is installed."""
        raft = self.raft
        # The leader may send before its own write is durable (thesis §10.2.1: it counts
        # itself only after advance); everyone else answers only for durable state.
        send_now = not rd.must_sync or raft.state == LEADER
        if send_now and rd.messages:
            self._send(rd.messages)
        batch = None
        if rd.committed_entries:
            # Committed entries are already durable here: apply them while the next write runs.
            batch = self._apply(rd.committed_entries)
        if rd.read_states:
            self._confirmed_reads.extend(
                (rs.index, int.from_bytes(rs.request_ctx, "big")) for rs in rd.read_states
            )
        if self._confirmed_reads:
            self._serve_reads()
        if rd.must_sync:
            self._persisting = True
            loop = self._loop
            assert loop is not None
            deferred = None if send_now else rd.messages
            hard_state = rd.hard_state or self._unsaved_hard_state
            self._unsaved_hard_state = None

            if len(rd.entries) <= INLINE_SYNC_MAX_ENTRIES and not self.multi_member:
                # A lone entry on a single member (one client at a time): write and fdatasync it
                # right here, the GIL released meanwhile.  Handing it to the writer thread and
                # back costs two thread wake-ups and GIL hand-offs, more than the loop could do
                # during this fdatasync (+15% PUT/s at 1 connection).  In a cluster the loop
                # also carries peer traffic, and no gain was measured there.  Saves never
                # overlap: the next one waits for _on_persisted.
                try:
                    self.wal.save(hard_state, rd.entries)
                    exc: BaseException | None = None
                except BaseException as e:
                    exc = e
                loop.call_soon(self._on_persisted, rd, exc, deferred)
            else:

                def saved(exc: BaseException | None) -> None:
                    loop.call_soon_threadsafe(self._on_persisted, rd, exc, deferred)

                # One writer job: the WAL write + fdatasync, reported at once, then this round's
                # RocksDB batch (so the acknowledgement never waits for RocksDB).
                self._writer.submit(self._persist_round, hard_state, rd.entries, batch, saved)
                batch = None
        elif rd.hard_state is not None:
            # A commit index alone: a crash may lose it (Raft recomputes it).  It rides the next
            # WAL write, or a heartbeat tick writes it unsynced, so the WAL's commit index stays
            # current for --force-new-cluster and backups without a write per request.
            self._unsaved_hard_state = rd.hard_state
        if batch is not None:
            self._writer.submit(self.backend.write, batch).add_done_callback(self._check_background_write)
        if not rd.must_sync:
            raft.advance(rd)
            if raft.has_ready():
                self._kick()
        self._maybe_snapshot()

    def _snapshot_for_peer(self) -> Snapshot | None:
        """The newest snapshot, for a follower behind the compacted log: its RocksDB checkpoint
        streamed as an archive.  Read on the event loop (a big snapshot stalls it; see notes)."""
        snap = self.snapshotter.load()
        if snap is None or snap[1] < self.raft.log.offset:
            # None covers what the log no longer holds (after a restart the log starts at the
            # applied index): take one now; Raft asks again on its next heartbeat.
            self._maybe_snapshot(force=True)
            return None
        term, index, meta = snap
        voters = sorted(int(m["id"], 16) for m in orjson.loads(orjson.loads(meta)["membership"])["members"])
        data = b"".join(archive_dir(self.snapshotter.data_dir(term, index)))
        return Snapshot(SnapshotMeta(index, term, voters), data)

    def _install_snapshot(self, rd: Ready) -> None:
        """Replace the applied state with the leader's snapshot (on the writer thread, after every
        batch queued before it), then go on with the rest of the Ready on the event loop."""
        snapshot = rd.snapshot
        assert snapshot is not None and self._loop is not None
        meta = snapshot.meta
        member_dir = os.path.dirname(self.backend.path)
        kv_dir = self.backend.path
        incoming = kv_dir + ".incoming"
        self._persisting = True

        def install() -> None:
            shutil.rmtree(incoming, ignore_errors=True)
            restore_archive([snapshot.data], incoming)
            self.backend.close()
            os.rename(kv_dir, kv_dir + OLD_SUFFIX)
            os.rename(incoming, kv_dir)
            fsync_dir(member_dir)
            shutil.rmtree(kv_dir + OLD_SUFFIX, ignore_errors=True)
            self.backend = Backend.open(kv_dir)
            self.wal.save_snapshot(meta.term, meta.index)

        def installed(f: concurrent.futures.Future[None]) -> None:
            self._persisting = False
            if self._closed:
                return
            exc = f.exception()
            if exc is not None:
                self._fail(f"installing the snapshot at index {meta.index} failed: {exc}")
                return
            bm = self.backend.meta()
            if bm.applied_index != meta.index:
                self._fail(f"the snapshot for index {meta.index} holds state at {bm.applied_index}")
                return
            store = self.backend.load_store()
            store.adopt_watchers(self.store)
            self.store = store
            if bm.membership is not None:
                self.membership = Membership.recover(bm.membership)
                self._sync_peers()
            self._applied_index, self._applied_term = meta.index, meta.term
            self._snapshot_index = meta.index
            event(
                log, logging.INFO, "installed the leader's snapshot",
                **{"snapshot-index": meta.index, "snapshot-term": meta.term},
            )  # fmt: skip
            self._handle_ready(rd)

        fut = self._writer.submit(install)
        loop = self._loop
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(installed, f))

    def _serve_reads(self) -> None:
        """Answer the confirmed quorum reads whose read index the store has applied."""
        applied = self._applied_index
        waiting = []
        now = self.now_ns()
        for index, rid in self._confirmed_reads:
            if index > applied:
                waiting.append((index, rid))
                continue
            w = self._waiters.pop(rid, None)
            if w is None or w[0].done() or w[1] is None:
                continue
            req = w[1]
            try:
                w[0].set_result(self.store.get(req.path, req.recursive, req.sorted, now))
            except V2Error as err:
                w[0].set_exception(err)
        self._confirmed_reads = waiting

    def _submit_proposals(self) -> None:
        """Into the leader's log, or forwarded to the leader (MsgProp), or held while no
        leader is known (the sweep times them out)."""
        raft = self.raft
        if raft.state == LEADER:
            proposals, self._proposals = self._proposals, []
            conf_proposals, self._conf_proposals = self._conf_proposals, []
            try:
                if proposals:
                    raft.propose_many(proposals)
                for i, (etype, data) in enumerate(conf_proposals):
                    if etype == ENTRY_CONF_CHANGE and raft.pending_conf_index > raft.log.applied:
                        # One configuration change at a time: the rest wait for it to apply.
                        self._conf_proposals[:0] = conf_proposals[i:]
                        break
                    raft.propose(data, etype)
            except NotLeaderError:
                # A leadership transfer in progress.
                if not self.multi_member:
                    self._fail_waiters(V2Error(LEADER_ELECT))
            return
        if raft.lead == 0:
            return  # held until a leader is known
        proposals, self._proposals = self._proposals, []
        conf_proposals, self._conf_proposals = self._conf_proposals, []
        entries = [Entry(0, 0, ENTRY_NORMAL, d) for d in proposals]
        entries.extend(Entry(0, 0, etype, d) for etype, d in conf_proposals)
        raft.step(Message(MSG_PROP, frm=self.member_id, entries=entries))

    def _on_soft_state(self, rd: Ready) -> None:
        lead = self.raft.lead
        if lead != self._last_lead:
            if lead != 0:
                self.leader_changes += 1
                self._leader_since_ns = self.now_ns()
                event(
                    log,
                    logging.INFO,
                    "leader changed",
                    **{
                        "local-member-id": f"{self.member_id:x}",
                        "leader": f"{lead:x}",
                        "term": self.raft.term,
                        "state": self.raft.state,
                    },
                )
            else:
                event(
                    log,
                    logging.INFO,
                    "lost leader",
                    **{"local-member-id": f"{self.member_id:x}", "term": self.raft.term},
                )
            self._last_lead = lead
        if lead != 0 and (self._proposals or self._conf_proposals):
            self._kick()
        self._maybe_publish()

    def _persist_round(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        batch: Batch | None,
        saved: Callable[[BaseException | None], None],
    ) -> None:
        """On the writer thread: WAL write + fdatasync, report, then the RocksDB batch."""
        try:
            self.wal.save(hard_state, entries)
        except BaseException as e:
            saved(e)
            return
        saved(None)
        if batch is not None:
            try:
                self.backend.write(batch)
            except BaseException as e:
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._fail, f"applied state write failed: {e}")

    def _on_persisted(
        self, rd: Ready, exc: BaseException | None, deferred: list[Message] | None = None
    ) -> None:
        self._persisting = False
        if self._closed:
            return
        if exc is not None:
            self._fail(f"WAL write failed: {exc}")
            return
        if deferred:
            self._send(deferred)
        self.raft.advance(rd)
        self._run_ready()

    def _check_background_write(self, f: concurrent.futures.Future[None]) -> None:
        """Writer-thread jobs nobody waits for: a failure still stops the member."""
        exc = f.exception()
        if exc is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._fail, f"WAL write failed: {exc}")

    def _fail(self, reason: str) -> None:
        """A durability failure: acknowledge nothing more and stop the member."""
        if self._fatal is not None:
            return
        self._fatal = reason
        event(log, logging.CRITICAL, "the member stops acknowledging writes and exits", reason=reason)
        self._fail_waiters(V2Error(RAFT_INTERNAL, "etcdserver: " + reason))
        self._stopped.set()

    def _fail_waiters(self, err: V2Error) -> None:
        waiters, self._waiters = self._waiters, {}
        for fut, _, _ in waiters.values():
            if not fut.done():
                fut.set_exception(V2Error(err.code, err.cause, err.index))

    # -- applying ------------------------------------------------------------------------

    def _apply(self, entries: list[Entry]) -> Batch:
        """Apply entries in order; returns the RocksDB batch holding their effects."""
        failpoint.hit("before_apply")
        started = time.perf_counter()
        now = self.now_ns()
        store = self.store
        waiters = self._waiters
        # Watchers get this round's events after the writes' answers (queued callbacks run in
        # order, and the answers are queued as the waiters resolve below).
        loop = self._loop
        if loop is not None and store.hub.count > 0:
            store.hub.hold()
            try:
                self._apply_entries(entries, store, waiters, now)
            finally:
                loop.call_soon(store.hub.release)
        else:
            self._apply_entries(entries, store, waiters, now)
        membership_changed, self._membership_changed = self._membership_changed, False
        self.apply_seconds.observe(time.perf_counter() - started)
        last = entries[-1]
        self._applied_index, self._applied_term = last.index, last.term
        return self.backend.prepare(
            self.store.take_changes(),
            last.index,
            last.term,
            self.membership.save() if membership_changed else None,
        )

    def _apply_entries(self, entries: list[Entry], store: Store, waiters: dict[int, Any], now: int) -> None:
        membership_changed = False
        for e in entries:
            if e.type == ENTRY_NORMAL:
                if not e.data:
                    continue  # a new leader's empty entry
                # Our own proposals: reuse the request object instead of decoding the entry.
                w = waiters.pop(V2Request.peek_id(e.data), None)
                req = w[1] if w is not None and w[1] is not None else V2Request.decode(e.data)
                try:
                    result = store.apply(req, now)
                except V2Error as err:
                    if w is not None and not w[0].done():
                        w[0].set_exception(err)
                    continue
                if w is not None and not w[0].done():
                    w[0].set_result(result)
            elif e.type == ENTRY_CONF_CHANGE:
                self._apply_conf_change(e)
                membership_changed = True
            elif e.type == ENTRY_MEMBER_ATTRIBUTES:
                membership_changed = self._apply_attributes(e) or membership_changed
        if membership_changed:
            self._membership_changed = True

    def _apply_conf_change(self, e: Entry) -> None:
        cc = orjson.loads(e.data)
        op = cc["op"]
        if op == "add":
            added = Member.from_dict(cc["member"])
            self.membership.add(added)
            # During restart replay there is no Raft node yet: it is built from the membership.
            raft: RaftNode | None = getattr(self, "raft", None)
            if raft is not None and added.id not in raft.voters:
                raft.apply_conf_change(ConfChange(CONF_ADD_NODE, added.id))
            self._sync_peers()
        elif op == "remove":
            removed_id = int(cc["member_id"], 16)
            self.membership.members.pop(removed_id, None)
            self.membership.removed.add(removed_id)
            raft = getattr(self, "raft", None)
            if raft is not None and removed_id in raft.voters:
                raft.apply_conf_change(ConfChange(CONF_REMOVE_NODE, removed_id))
            self._sync_peers()
            if removed_id == self.member_id:
                self._on_removed()
        elif op == "update":
            member = self.membership.members.get(int(cc["member_id"], 16))
            if member is not None:
                member.peer_urls = list(cc["peerURLs"])
                if member.id == self.member_id:
                    self.peer_urls = list(cc["peerURLs"])
                self._sync_peers()
        else:
            raise ValueError(f"unknown membership change {op!r} at index {e.index}")
        w = self._waiters.pop(cc.get("request_id", 0), None)
        if w is not None and not w[0].done():
            w[0].set_result(Member.from_dict(cc["member"]) if op == "add" else None)
        fields: dict[str, Any] = {"op": op, "index": e.index}
        if op == "add":
            fields["member-id"] = cc["member"]["id"]
            fields["peer-urls"] = cc["member"]["peerURLs"]
        else:
            fields["member-id"] = cc["member_id"]
            if op == "update":
                fields["peer-urls"] = cc["peerURLs"]
        event(log, logging.INFO, "applied membership change", **fields)

    def _apply_attributes(self, e: Entry) -> bool:
        """A member's published name and client URLs (etcd's /0/members/<id>/attributes)."""
        attrs = orjson.loads(e.data)
        member_id = int(attrs["member_id"], 16)
        member = self.membership.members.get(member_id)
        if member is None:
            return False
        member.name = attrs["name"]
        member.client_urls = list(attrs["clientURLs"])
        if member_id == self.member_id and member.client_urls == self.client_urls:
            self._published = True
            self._ready.set()
        return True

    # -- what the API reads --------------------------------------------------------------

    def raft_index(self) -> int:
        return self.raft.log.committed

    def raft_term(self) -> int:
        return self.raft.term

    def leader_id(self) -> int:
        return self.raft.lead

    def members(self) -> list[Member]:
        return self.membership.sorted()

    def is_healthy(self) -> bool:
        return self._fatal is None and self.raft.lead != 0

    def stats_self(self) -> bytes:
        now = self.now_ns()
        lead = self.raft.lead
        stats: dict[str, Any] = {
            "name": self.name,
            "id": f"{self.member_id:x}",
            "state": self.raft.state,
            "startTime": format_time(self.start_time_ns),
            "leaderInfo": {
                "leader": f"{lead:x}" if lead else "",
                "uptime": _format_go_duration((now - self._leader_since_ns) / 1e9),
                "startTime": format_time(self._leader_since_ns),
            },
            "recvAppendRequestCnt": self._stats["recvAppendRequestCnt"],
            "sendAppendRequestCnt": self._stats["sendAppendRequestCnt"],
        }
        return orjson.dumps(stats)

    def stats_leader(self) -> bytes:
        """etcd's /v2/stats/leader: per follower, the round-trip time of the peer connection's
        last probe (milliseconds) and the messages sent / dropped by the transport."""
        followers: dict[str, Any] = {}
        t = self.transport
        if t is not None:
            for pid in sorted(t.peers()):
                rtt = t.round_trip_time(pid)
                ms = rtt * 1000.0 if rtt is not None else 0.0
                st = t.stats(pid)
                followers[f"{pid:x}"] = {
                    "latency": {
                        "current": ms,
                        "average": ms,
                        "standardDeviation": 0.0,
                        "minimum": ms,
                        "maximum": ms,
                    },
                    "counts": {"fail": st["dropped"], "success": st["sent"]},
                }
        return orjson.dumps({"leader": f"{self.member_id:x}", "followers": followers})

    def _check_peer_urls_free(self, peer_urls: list[str], except_id: int = 0) -> None:
        for m in self.membership.members.values():
            if m.id != except_id and set(m.peer_urls) & set(peer_urls):
                raise MembershipError(409, "membership: peerURL exists")

    def _check_member(self, member_id: int) -> Member:
        if member_id in self.membership.removed:
            raise MembershipError(410, f"Member permanently removed: {member_id:x}")
        member = self.membership.members.get(member_id)
        if member is None:
            raise KeyError(member_id)
        return member

    def _propose_conf_change(self, cc: dict[str, Any]) -> asyncio.Future[Any]:
        """Replicate a membership change; the future resolves once this member applied it."""
        assert self._loop is not None
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self._fatal is not None or self._stopping:
            fut.set_exception(V2Error(RAFT_INTERNAL, "etcdserver: " + (self._fatal or "server stopped")))
            return fut
        rid = self._new_id()
        self._waiters[rid] = (fut, None, time.monotonic() + self._request_timeout_s)
        cc["request_id"] = rid
        self._conf_proposals.append((ENTRY_CONF_CHANGE, orjson.dumps(cc)))
        self._kick()
        return fut

    def _connected_since(self, cutoff_ns: int, member_ids: list[int]) -> int:
        """How many of ``member_ids`` this member has been connected to since ``cutoff_ns``
        (itself included), per its peer transport (etcd's numConnectedSince)."""
        t = self.transport
        n = 0
        for mid in member_ids:
            if mid == self.member_id:
                n += 1
                continue
            since = t.active_since_ns(mid) if t is not None else 0
            if since and since <= cutoff_ns:
                n += 1
        return n

    def _health_cutoff_ns(self) -> int:
        # The transport stamps connections with time.monotonic_ns.
        return time.monotonic_ns() - int(HEALTH_INTERVAL_S * 1e9)

    def add_member(self, peer_urls: list[str]) -> asyncio.Future[Any]:
        """POST /v2/members: a new voter, unstarted (no name, no client URLs) until it joins
        with --initial-cluster-state existing and publishes its attributes."""
        self._check_peer_urls_free(peer_urls)
        member_id = member_id_for(peer_urls, "", now_s=self.now_ns() // 1_000_000_000)
        if member_id in self.membership.members or member_id in self.membership.removed:
            raise MembershipError(409, "membership: ID exists")
        if self.cfg.strict_reconfig_check:
            voters = list(self.membership.members)
            started = sum(1 for m in self.membership.members.values() if m.name)
            size = len(voters) + 1
            # etcd's IsReadyToAddVotingMember: a quorum of the new size must be started,
            # except for growing one started member to two (restoring from a backup).
            if not (started == 1 and size == 2) and started < size // 2 + 1:
                raise RuntimeError("etcdserver: re-configuration failed due to not enough started members")
            if self._connected_since(self._health_cutoff_ns(), voters) < len(voters):
                raise RuntimeError("etcdserver: unhealthy cluster")
        member = Member(member_id, "", peer_urls, [])
        return self._propose_conf_change({"op": "add", "member": member.to_dict()})

    def update_member(self, member_id: int, peer_urls: list[str]) -> asyncio.Future[Any]:
        """Change a member's peer URLs through the log, as etcd's ConfChangeUpdateNode."""
        self._check_member(member_id)
        self._check_peer_urls_free(peer_urls, except_id=member_id)
        return self._propose_conf_change(
            {"op": "update", "member_id": f"{member_id:x}", "peerURLs": peer_urls}
        )

    def remove_member(self, member_id: int) -> asyncio.Future[Any]:
        """DELETE /v2/members/<id>: the member leaves the configuration and its id is tombstoned."""
        self._check_member(member_id)
        if self.cfg.strict_reconfig_check:
            others = [m for m in self.membership.members.values() if m.id != member_id]
            started = sum(1 for m in others if m.name)
            # etcd's IsReadyToRemoveVotingMember: the rest must hold a started quorum.
            if started < len(others) // 2 + 1:
                raise RuntimeError("etcdserver: re-configuration failed due to not enough started members")
            t = self.transport
            down = member_id != self.member_id and (t is None or t.active_since_ns(member_id) == 0)
            if not down:
                # Removing a live member must leave a quorum of members we are connected to.
                voters = list(self.membership.members)
                active = self._connected_since(self._health_cutoff_ns(), voters)
                if active - 1 < 1 + (len(voters) - 1) // 2:
                    raise RuntimeError("etcdserver: unhealthy cluster")
        return self._propose_conf_change({"op": "remove", "member_id": f"{member_id:x}"})

    async def wait_ready(self) -> None:
        """Until the member has joined its cluster and published its name and client URLs
        through the log (etcd's ReadyNotify): when systemd is told READY=1."""
        await self._ready.wait()

    @property
    def fatal_error(self) -> str | None:
        return self._fatal

    async def wait_fatal(self) -> str:
        await self._stopped.wait()
        return self._fatal or "stopped"
