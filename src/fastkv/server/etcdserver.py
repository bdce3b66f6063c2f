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
from ..raft.confchange import CONF_ADD_NODE, ConfChange
from ..raft.log import RaftLog
from ..raft.messages import MSG_APP, MSG_PROP, Message, Snapshot, SnapshotMeta
from ..raft.node import LEADER, NotLeaderError, RaftNode, Ready
from ..raft.types import ENTRY_CONF_CHANGE, ENTRY_MEMBER_ATTRIBUTES, ENTRY_NORMAL, Entry, HardState
from ..storage import failpoint
from ..storage.backend import Backend, BackendError, Batch
from ..storage.fileutil import fsync_dir
from ..storage.snap import Snapshotter, archive_dir, restore_archive
from ..storage.wal import WAL
from ..transport.transport import Transport, parse_peer_url
from ..v2store.errors import LEADER_ELECT, RAFT_INTERNAL, V2Error
from ..v2store.event import Event
from ..v2store.request import V2Request
from ..v2store.store import Store
from .config import Config
from .identity import cluster_id_for, member_id_for
from .membership import Member, Membership

log = logging.getLogger("fastkv.etcdserver")

SYNC_INTERVAL_S = 0.5
# Where the applied state waits while a snapshot from the leader replaces it.
OLD_SUFFIX = ".old"
WAITER_SWEEP_INTERVAL_S = 0.1
PUBLISH_RETRY_S = 1.0
# Proposals held on a member that knows no leader yet (they wait for one, then are forwarded;
# the sweep times them out with error 300 like etcd).  Beyond this, error 301 at once.
MAX_HELD_PROPOSALS = 10000


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
        self._stats = {"recvAppendRequestCnt": 0, "sendAppendRequestCnt": 0}
        self._leader_since_ns = 0
        # Multi-member state: the peer transport, the tick timer, the attribute publication.
        self.transport: Transport | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._published = False
        self._publish_due = 0.0
        self._last_lead = 0

    @property
    def multi_member(self) -> bool:
        """More than one voter: ticks, elections and peer traffic are needed."""
        return len(self.raft.voters) > 1

    def _new_raft(self, voters: list[int], raft_log: RaftLog, hard_state: HardState) -> RaftNode:
        if len(voters) <= 1:
            return RaftNode(self.member_id, voters, raft_log, hard_state)
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
        if cfg.initial_cluster_state != "new":
            raise StartupError(
                "--initial-cluster-state existing needs a running cluster to join; "
                "joining is not available in this version"
            )
        if cfg.discovery or cfg.discovery_srv:
            raise StartupError("bootstrapping through discovery is not available in this version")
        by_name: dict[str, list[str]] = {}
        for name, url in cfg.initial_cluster:
            by_name.setdefault(name, []).append(url)
        if cfg.name not in by_name:
            raise StartupError(f"couldn't find local name {cfg.name!r} in the initial cluster configuration")
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
        log.info(
            "bootstrapped member %x of cluster %x (%d members) in %s",
            self.member_id,
            self.cluster_id,
            len(ids),
            cfg.data_dir,
        )

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
        if meta_wal["name"] != self.cfg.name:
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
        raft_log = RaftLog(applied, applied_term)
        raft_log.restore_stable(entries)
        raft_log.commit_to(min(hard_state.commit, raft_log.last_index()))
        self._snapshot_index = self._applied_index = applied
        self._applied_term = applied_term
        # Replay what was committed before the crash; the rest commits after the election.
        # The voters are the membership as of the last applied entry (configuration takes
        # effect on apply), so replay before building the Raft node.
        replayed = self._apply_committed(raft_log)
        voters = sorted(self.membership.members) or [self.member_id]
        self.raft = self._new_raft(voters, raft_log, hard_state)
        log.info(
            "restarted member %x of cluster %x at commit %d (applied state at %d, replayed %d entries)",
            self.member_id,
            self.cluster_id,
            raft_log.committed,
            applied,
            replayed,
        )

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

    def _maybe_snapshot(self) -> None:
        """Every --snapshot-count applied entries: make RocksDB durable, keep a checkpoint of it
        as the snapshot, and let the WAL and the in-memory log drop what it covers."""
        applied, term = self._applied_index, self._applied_term
        if self._snapshot_running or applied - self._snapshot_index < self.cfg.snapshot_count:
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
            log.info("saved snapshot at index %d", applied)

        fut = self._writer.submit(write_snapshot)
        fut.add_done_callback(lambda f: self._loop.call_soon_threadsafe(done, f) if self._loop else None)

    # -- running -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.multi_member:
            await self._start_cluster()
            return
        self.raft.campaign()
        self._leader_since_ns = self.now_ns()
        log.info("member %x became leader at term %d", self.member_id, self.raft.term)
        self._kick()
        self._tasks.append(self._loop.create_task(self._sync_loop()))
        self._tasks.append(self._loop.create_task(self._sweep_loop()))
        # Wait until the new term's empty entry is committed: the member then serves.
        deadline = time.monotonic() + 30
        while self.raft.log.applied < self.raft.log.last_index() and time.monotonic() < deadline:
            if self._fatal:
                raise StartupError(self._fatal)
            await asyncio.sleep(0.001)
        self._publish_self()

    async def _start_cluster(self) -> None:
        """Listen for peers, dial every other member, start the tick timer.  No campaign:
        the randomized election timeout decides who asks first (etcd's rule)."""
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
        self._leader_since_ns = self.now_ns()
        self._tasks.append(loop.create_task(self._sync_loop()))
        self._tasks.append(loop.create_task(self._sweep_loop()))
        self._tick_handle = loop.call_later(self.cfg.heartbeat_interval_ms / 1000.0, self._on_tick)
        self._kick()
        log.info(
            "member %x started with voters %s, listening for peers on %s",
            self.member_id,
            ",".join(f"{v:x}" for v in self.raft.voters),
            ", ".join(self.cfg.listen_peer_urls),
        )

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

    def _on_tick(self) -> None:
        loop = self._loop
        if loop is None or self._fatal is not None:
            return
        self._tick_handle = loop.call_later(self.cfg.heartbeat_interval_ms / 1000.0, self._on_tick)
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

    def _publish_self(self) -> None:
        me = self.membership.members.get(self.member_id)
        if me is not None:
            me.name = self.name
            me.client_urls = list(self.client_urls)

    async def stop(self) -> None:
        """Stop accepting proposals, let the in-flight write finish, close the WAL."""
        for t in self._tasks:
            t.cancel()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.stop()
        deadline = time.monotonic() + 5
        while (self._persisting or self._proposals) and time.monotonic() < deadline and not self._fatal:
            await asyncio.sleep(0.005)
        for fut, _, _ in self._waiters.values():
            if not fut.done():
                fut.set_exception(V2Error(RAFT_INTERNAL, "etcdserver: server stopped"))
        self._waiters.clear()
        self._writer.shutdown(wait=True)
        with contextlib.suppress(Exception):
            self.wal.close()
        with contextlib.suppress(Exception):
            self.backend.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

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
        if self._fatal is not None:
            fut.set_exception(V2Error(RAFT_INTERNAL, "etcdserver: " + self._fatal))
            return fut
        if self.raft.state != LEADER and (
            not self.multi_member or (self.raft.lead == 0 and len(self._proposals) >= MAX_HELD_PROPOSALS)
        ):
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
        if not self._scheduled and not self._persisting and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._run_ready)

    def _run_ready(self) -> None:
        """One turn of the Ready loop: hand new entries to the writer, apply what is durable."""
        self._scheduled = False
        if self._persisting or self._fatal is not None:
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
            cfut = self._writer.submit(self.wal.save, rd.hard_state, rd.entries)
            cfut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._on_persisted, rd, f, deferred))
        if batch is not None:
            # After the WAL save in the writer's queue: the fdatasync that acknowledges writes
            # does not wait behind this round's RocksDB batch.
            self._writer.submit(self.backend.write, batch)
        if not rd.must_sync:
            raft.advance(rd)
            if raft.has_ready():
                self._kick()
        self._maybe_snapshot()

    def _snapshot_for_peer(self) -> Snapshot | None:
        """The newest snapshot, for a follower behind the compacted log: its RocksDB checkpoint
        streamed as an archive.  Read on the event loop (a big snapshot stalls it; see notes)."""
        snap = self.snapshotter.load()
        if snap is None:
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
            log.info("installed the leader's snapshot at index %d (term %d)", meta.index, meta.term)
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
                for etype, data in conf_proposals:
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
                self._leader_since_ns = self.now_ns()
                log.info(
                    "member %x: leader is %x at term %d (%s)",
                    self.member_id,
                    lead,
                    self.raft.term,
                    self.raft.state,
                )
            else:
                log.info("member %x: no leader at term %d", self.member_id, self.raft.term)
            self._last_lead = lead
        if lead != 0 and (self._proposals or self._conf_proposals):
            self._kick()
        if self.multi_member:
            self._maybe_publish()

    def _on_persisted(
        self, rd: Ready, f: concurrent.futures.Future[None], deferred: list[Message] | None = None
    ) -> None:
        self._persisting = False
        exc = f.exception()
        if exc is not None:
            self._fail(f"WAL write failed: {exc}")
            return
        if deferred:
            self._send(deferred)
        self.raft.advance(rd)
        self._run_ready()

    def _fail(self, reason: str) -> None:
        """A durability failure: acknowledge nothing more and stop the member."""
        if self._fatal is not None:
            return
        self._fatal = reason
        log.critical("%s; the member stops acknowledging writes and exits", reason)
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
        membership_changed = False
        now = self.now_ns()
        store = self.store
        waiters = self._waiters
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
        last = entries[-1]
        self._applied_index, self._applied_term = last.index, last.term
        return self.backend.prepare(
            self.store.take_changes(),
            last.index,
            last.term,
            self.membership.save() if membership_changed else None,
        )

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
            w[0].set_result(None)
        log.info("applied membership change %s at index %d", op, e.index)

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

    def add_member(self, peer_urls: list[str]) -> Member:
        self._check_peer_urls_free(peer_urls)
        # Adding a voter to a one-member cluster needs the multi-voter Raft core.
        raise NotImplementedError("adding members is not available in this version")

    def update_member(self, member_id: int, peer_urls: list[str]) -> asyncio.Future[Any]:
        """Change a member's peer URLs through the log, as etcd's ConfChangeUpdateNode."""
        self._check_member(member_id)
        self._check_peer_urls_free(peer_urls, except_id=member_id)
        assert self._loop is not None
        fut: asyncio.Future[Any] = self._loop.create_future()
        rid = self._new_id()
        self._waiters[rid] = (fut, None, time.monotonic() + self._request_timeout_s)
        cc = {"op": "update", "member_id": f"{member_id:x}", "peerURLs": peer_urls, "request_id": rid}
        self._conf_proposals.append((ENTRY_CONF_CHANGE, orjson.dumps(cc)))
        self._kick()
        return fut

    def remove_member(self, member_id: int) -> None:
        self._check_member(member_id)
        # Strict reconfiguration check: the remaining members must still form a quorum of
        # started members.  With one member nothing remains, and etcd answers 500 as well.
        remaining = len(self.membership.members) - 1
        if remaining < 1:
            raise RuntimeError("removing the last member would leave no quorum")
        raise NotImplementedError("removing members is not available in this version")

    @property
    def fatal_error(self) -> str | None:
        return self._fatal

    async def wait_fatal(self) -> str:
        await self._stopped.wait()
        return self._fatal or "stopped"
