"""The Ready loop: Raft, the WAL, the writer thread, the peer transport and snapshots.

The write path, for every write (quorum reads use ReadIndex instead: no log entry):

    propose -> raft log entry -> Ready -> WAL write + ONE fdatasync (writer thread)
    -> commit -> apply (applier.py) -> the waiting request is answered (wait.py).

Group commit falls out of the loop: while one WAL write is in flight, new proposals pile up and
all of them ride the next write.  A request is answered only after the fdatasync that made its
entry durable and the apply that produced its event, so an acknowledged write survives kill -9.
Every apply round also writes one RocksDB batch (the round's changes + the applied index,
unsynced) on the writer thread, with the next writer job or at the next tick; RocksDB is flushed
before the WAL may drop anything, so the WAL always covers what RocksDB could lose.

Rules:
- Nothing but the writer thread touches the WAL once the loop runs, one job at a time, so saves,
  snapshot markers and segment releases are ordered.  (A single member's lone-entry rounds are
  saved on the loop itself, and then the writer is idle: saves never overlap.)
- A failed WAL write is fatal: the member stops acknowledging and exits (no retry that could
  acknowledge a write whose predecessor was lost).  Except a full disk met before any fsync
  (WALNoSpaceError, a RocksDB round or a snapshot refused for space): the member raises the
  NOSPACE alarm, refuses new writes ("etcdserver: no space"), keeps serving reads and watches,
  holds the Ready whose save failed (nothing in it is acknowledged, no vote or append answer
  for it leaves) and retries that same save every NO_SPACE_PROBE_S until it succeeds; then the
  loop goes on and the alarm clears.  A leader whose disk is full hands leadership to an
  up-to-date follower.  See docs/design.md, "Disk full".
- Ready order: the leader sends its messages at once (thesis §10.2.1), everyone else only after
  the WAL write that makes the Ready durable; then apply, then advance.
- A follower forwards proposals to the leader (MsgProp).  With no leader known, proposals are held
  and forwarded once one is, but only those whose client still waits: a request answered (timed
  out) is never proposed afterwards.  A forward the transport dropped before writing any byte of
  it (the leader unreachable, the connection lost with it queued) is handed back and forwarded
  again, to whoever leads by then, while its client waits; one written to a socket may have
  arrived and is never sent twice.
- A follower behind the leader's compacted log receives the newest snapshot (the RocksDB
  checkpoint as an archive) and swaps it in for its applied state on the writer thread.
- Every request entry enters the leader's log stamped with the leader's cluster time (docs/design.md,
  "Time"): the leader's own requests are stamped when they are made, a follower's when the leader
  receives them (MsgProp), and any proposed while this member did not lead when it comes to lead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import queue
import random
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..logutil import event
from ..raft.confchange import CONF_ADD_NODE, CONF_REMOVE_NODE, ConfChange
from ..raft.messages import (
    MSG_APP,
    MSG_HEARTBEAT,
    MSG_HEARTBEAT_RESP,
    MSG_PROP,
    MSG_READ_INDEX,
    MSG_READ_INDEX_RESP,
    MSG_SNAP,
    MSG_TIMEOUT_NOW,
    Message,
    Snapshot,
    SnapshotMeta,
)
from ..raft.node import LEADER, NotLeaderError, RaftNode, Ready
from ..raft.types import ENTRY_CONF_CHANGE, ENTRY_INTERNAL, ENTRY_NORMAL, Entry, HardState
from ..storage import failpoint
from ..storage.backend import Backend, Batch
from ..storage.fileutil import TMP_SUFFIX, fsync_dir, is_no_space
from ..storage.snap import Snapshotter, archive_dir, restore_archive, snap_name
from ..storage.wal import WAL, WALNoSpaceError
from ..transport.transport import STATUS_GONE, Transport, parse_peer_url
from ..v2store.errors import LEADER_ELECT, RAFT_INTERNAL, V2Error
from ..v2store.request import V2Request
from .applier import ApplierV2
from .bootstrap import OLD_SUFFIX, OpenedMember, StartupError
from .config import Config
from .security import MemberTLS
from .wait import Wait, Waiter

log = logging.getLogger("fastkv.etcdserver")

# Rounds with at most this many new entries are fdatasynced on the event loop (see _handle_ready).
INLINE_SYNC_MAX_ENTRIES = 1
# Proposals held on a member that knows no leader yet.  Beyond this, error 301 at once.
MAX_HELD_PROPOSALS = 10000
# While the disk is full: how often the held WAL save (and the other writes refused for space)
# is tried again.
NO_SPACE_PROBE_S = 1.0
# Rewriting the applied state after RocksDB refused a round for space costs a pass over every key:
# it is not tried while the file system has less than this free.
NO_SPACE_RESYNC_MIN_FREE_BYTES = 1 << 20
#: The cause of the error a write gets while the NOSPACE alarm is raised (etcd's ErrNoSpace text).
NO_SPACE_CAUSE = "etcdserver: no space"
# What a member whose WAL save is held may still send: a leader its own messages (a leader may
# send before its write is durable, and counts itself only once it is); anyone, what claims
# nothing about its disk (heartbeat answers and read-index requests confirm leadership only).
_LEADER_SENDS_WHILE_HELD = frozenset({MSG_APP, MSG_HEARTBEAT, MSG_SNAP, MSG_TIMEOUT_NOW, MSG_READ_INDEX_RESP})
_SENDS_WHILE_HELD = frozenset({MSG_HEARTBEAT_RESP, MSG_READ_INDEX})
# Apply rounds whose RocksDB batches wait for a writer job to ride on before one is made for them.
MAX_DEFERRED_BATCHES = 64
# How many entries before a snapshot is due RocksDB starts writing its memtable out in the
# background (at most a quarter of --snapshot-count): the snapshot's own flush, which holds up the
# writer thread and so every WAL save, then has only these entries' changes left to write.
SNAPSHOT_PREFLUSH_ENTRIES = 5000


class _Writer:
    """The one writer thread: jobs run one at a time, in submission order.  It also holds the RocksDB
    batches of apply rounds that have no WAL write to ride on (commit-only rounds): they go with the
    next job, ahead of it (or after the WAL sync for a round's persist job), so a round's batch
    costs no thread hand-off of its own.  Every job runs after every batch deferred before it was
    submitted.  (RocksDB is not what makes a write durable: the WAL is, replayed from RocksDB's
    applied index.)

    A lean queue and thread rather than a ThreadPoolExecutor: ``post`` makes no Future, and its
    jobs report their own outcome (the hot path, once per WAL round)."""

    def __init__(
        self,
        write_batches: Callable[[list[Batch]], None],
        on_background_error: Callable[[BaseException], None],
    ) -> None:
        self._write_batches = write_batches
        self._on_background_error = on_background_error
        self._deferred: list[Batch] = []
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Any] | None] = (
            queue.SimpleQueue()
        )
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="wal-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, args, fut = job
            if fut is None:
                try:
                    fn(*args)
                except BaseException as e:  # noqa: BLE001 - reported to the owner, the thread goes on
                    try:
                        self._on_background_error(e)
                    except BaseException:  # noqa: BLE001 - a closed loop: nobody is left to tell
                        pass
                continue
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
                fut.set_exception(e)
            else:
                fut.set_result(result)

    def defer(self, batch: Batch) -> None:
        self._deferred.append(batch)
        if len(self._deferred) >= MAX_DEFERRED_BATCHES:
            self.flush()

    def take_deferred(self) -> list[Batch]:
        """The deferred batches, for a job that writes them itself."""
        batches, self._deferred = self._deferred, []
        return batches

    def flush(self) -> None:
        """A job for the deferred batches, if any (a failure goes to ``on_background_error``)."""
        if self._deferred:
            self._jobs.put((self._write_batches, (self.take_deferred(),), None))

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` after the batches deferred so far, with no Future: an exception it raises
        goes to ``on_background_error``."""
        if self._stopped:
            raise RuntimeError("the writer thread has stopped")
        self.flush()
        self._jobs.put((fn, args, None))

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """``fn(*args)`` after the batches deferred so far; its outcome in the Future."""
        if self._stopped:
            raise RuntimeError("the writer thread has stopped")
        self.flush()
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((fn, args, fut))
        return fut

    def shutdown(self, wait: bool = True) -> None:
        """Write what is deferred, run what is queued, then stop the thread."""
        if not self._stopped:
            self._stopped = True
            self.flush()
            self._jobs.put(None)
        if wait:
            self._thread.join()


def _snapshot_catch_up_entries() -> int:
    """Entries kept after a snapshot so slow followers can catch up from the log: 5000 like
    etcd's; FASTKV_SNAPSHOT_CATCH_UP_ENTRIES overrides it (tests exercise compaction)."""
    return int(os.environ.get("FASTKV_SNAPSHOT_CATCH_UP_ENTRIES", 5000))


def _request_id(e: Entry) -> int:
    """The request id an entry carries (0: none, or the member's own request)."""
    try:
        if e.type in (ENTRY_NORMAL, ENTRY_INTERNAL):
            return V2Request.peek_id(e.data)
        if e.type == ENTRY_CONF_CHANGE:
            return int(orjson.loads(e.data).get("request_id", 0))
    except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        pass
    return 0


def _free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system (unknown: a lot)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


class ReadyLoop:
    def __init__(
        self,
        cfg: Config,
        opened: OpenedMember,
        wait: Wait,
        clock: Callable[[], int],
        *,
        on_leader_change: Callable[[], None],
        on_rejected_gone: Callable[[], None],
        on_fatal: Callable[[str], None],
        cluster_info: Callable[[], str],
        tls: MemberTLS | None = None,
        cluster_time: Callable[[], int] | None = None,
    ) -> None:
        """``clock``: the wall clock (stats); ``cluster_time``: the time entries are stamped with
        (clusterclock.py; the wall clock when not given)."""
        self.cfg = cfg
        self._tls = tls
        self.member_id = opened.member_id
        self.cluster_id = opened.cluster_id
        self.wal: WAL = opened.wal
        self.snapshotter: Snapshotter = opened.snapshotter
        self.applier: ApplierV2 = opened.applier
        self.wait = wait
        self._clock = clock
        self._cluster_time = cluster_time or clock
        # Some held proposals were made while this member did not lead: they carry no stamp yet.
        self._unstamped_held = False
        self._on_leader_change = on_leader_change
        self._on_rejected_gone = on_rejected_gone
        self._on_fatal = on_fatal
        self._cluster_info = cluster_info
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer = _Writer(self._write_batches, self._background_failed)
        # Proposals not yet in the Raft log: (request id, encoded request); id 0 = the member's own
        # (SYNC), proposed whatever happens to clients.
        self._proposals: list[tuple[int, bytes]] = []
        # Requests on the internal namespaces queued among them, by position in _proposals (their
        # order with the client's writes is kept: etcd's /0/version comes before writes made after it).
        self._internal_at: set[int] = set()
        # (request id, entry type, data): configuration changes, attribute publications and requests
        # on the internal namespaces, in the order they were made.
        self._conf_proposals: list[tuple[int, int, bytes]] = []
        # Forwarded entries the transport dropped unsent, with their request ids: forwarded again
        # once the leader's connection is up, while their client waits.
        self._unsent: list[tuple[int, Entry]] = []
        # Quorum reads (ReadIndex, Raft thesis §6.4): request ids not yet handed to Raft, and
        # confirmed reads waiting for the store to apply up to their read index.
        self._reads: list[int] = []
        self._confirmed_reads: list[tuple[int, int]] = []
        self._persisting = False
        self._scheduled = False
        self.fatal: str | None = None
        # The NOSPACE alarm: what was refused for space ("wal", "backend", "snapshot") -> why.
        self.no_space: dict[str, str] = {}
        self.no_space_raised = 0  # how many times the alarm was raised (/metrics shows it once it was)
        # The Ready whose WAL save failed for space, held until the same save succeeds:
        # (ready, hard state saved with it, messages deferred until it is durable).
        self._held: tuple[Ready, HardState | None, list[Message] | None] | None = None
        self._held_retry_running = False
        # A Ready whose snapshot could not be installed for space, held the same way.
        self._held_install: Ready | None = None
        self._probe_handle: asyncio.TimerHandle | None = None
        # Set (on the writer thread) when a RocksDB round was refused for space: RocksDB holds the
        # state of some earlier round, later rounds are dropped until one batch holding the whole
        # applied state is written (a refused WriteBatch cannot be written again: RocksDB
        # consumes it either way).
        self._backend_stale = False
        self._backend_resync_running = False
        self._snapshot_index = opened.snapshot_index
        self._snapshot_running = False
        # The snapshot index (_snapshot_index + snapshot count) whose early flush was asked for.
        self._preflushed_for = 0
        # A snapshot is owed (asked for while one was running): taken when the running one is done.
        self._snapshot_pending = False
        self.transport: Transport | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._last_lead = 0
        # The newest commit-only hard state not yet in the WAL (written by the next save or tick).
        self._unsaved_hard_state: HardState | None = None
        # Whether the last WAL round held at most INLINE_SYNC_MAX_ENTRIES entries (see _handle_ready).
        self._lone_round = True
        self.stopping = False
        self._closed = False
        # /v2/stats/self and /metrics.
        self.append_counts = {"recvAppendRequestCnt": 0, "sendAppendRequestCnt": 0}
        self.leader_changes = 0
        self.leader_since_ns = clock()
        raft_log = opened.raft_log
        # etcd: election ticks = election timeout / heartbeat interval, one tick per heartbeat.
        election_tick = max(2, cfg.election_timeout_ms // max(1, cfg.heartbeat_interval_ms))
        raft_log.snapshot_source = self._snapshot_for_peer
        # Configured for a cluster even with one voter: members can be added at runtime.
        self.raft = RaftNode(
            self.member_id,
            opened.voters,
            raft_log,
            opened.hard_state,
            election_tick=election_tick,
            heartbeat_tick=1,
            rng=random.Random(self.member_id ^ time.time_ns()),
        )

    @property
    def multi_member(self) -> bool:
        """More than one voter: ticks, elections and peer traffic are needed."""
        return len(self.raft.voters) > 1

    # -- starting and stopping -----------------------------------------------------------

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Listen for peers (a single member too: it can be joined after a member add) and start
        ticking.  A single member campaigns at once; in a cluster the randomized election timeout
        decides who campaigns first (etcd's rule)."""
        self._loop = loop
        await self._start_transport()
        self.leader_since_ns = self._clock()
        self._tick_handle = loop.call_later(self.cfg.heartbeat_interval_ms / 1000.0, self._on_tick)
        if not self.multi_member:
            self.raft.campaign()
            event(
                log,
                logging.INFO,
                "became leader",
                **{"local-member-id": f"{self.member_id:x}", "term": self.raft.term},
            )
        self.kick()

    async def _start_transport(self) -> None:
        loop = self._loop
        assert loop is not None
        tls = self._tls
        self.transport = Transport(
            self.member_id,
            self.cluster_id,
            self._on_peer_message,
            loop,
            on_unreachable=self.raft.report_unreachable,
            on_snapshot_status=self.raft.report_snapshot,
            is_removed=lambda mid: mid in self.applier.membership.removed,
            on_rejected=self._on_peer_rejected,
            on_dropped_proposal=self._on_dropped_proposal,
            cluster_info=self._cluster_info,
            rng=random.Random(self.member_id ^ time.time_ns() ^ 0x5EED),
            server_tls=tls.peer if tls is not None else None,
            dial_ssl=tls.peer_dial if tls is not None else None,
            allowed_cn=tls.peer_info.allowed_cn if tls is not None else "",
        )
        for url in self.cfg.listen_peer_urls:
            try:
                host, port = parse_peer_url(url)
            except ValueError as e:
                raise StartupError(f"cannot listen on {url!r}: {e}") from None
            if host == "localhost":
                host = "127.0.0.1"
            try:
                await self.transport.start(host, port, tls=url.startswith("https://"))
            except OSError as e:
                raise StartupError(f"listen tcp {host}:{port}: {e.strerror or e}") from None
        self.sync_peers()

    async def stop(self) -> None:
        """Hand leadership over, let the WAL write in flight finish, close the WAL and RocksDB.
        Requests not yet in the log are answered "server stopped"; none of them was acknowledged."""
        self.stopping = True
        if self._loop is not None:
            await self._transfer_leadership()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.transport is not None:
            try:
                await self.transport.stop()
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
        never_proposed = self._never_proposed()
        self._proposals.clear()
        self._unsent.clear()
        self._internal_at.clear()
        self._conf_proposals.clear()
        self._reads.clear()
        deadline = time.monotonic() + 5
        # A snapshot in progress finishes, and its log compaction and purge are queued.
        if self._probe_handle is not None:
            self._probe_handle.cancel()
            self._probe_handle = None
        while (
            ((self._persisting and not self._holding) or self._snapshot_running)
            and time.monotonic() < deadline
            and not self.fatal
        ):
            await asyncio.sleep(0.005)
        if self._unsaved_hard_state is not None and self.fatal is None and not self._holding:
            self._writer.submit(self.wal.save, self._unsaved_hard_state, [])
            self._unsaved_hard_state = None
        self._closed = True
        # Requests never proposed are answered "server stopped"; a write that may be in the log
        # (the held Ready's included: partly on disk, applied after a restart) is of unknown outcome.
        self._fail_waiters(V2Error(RAFT_INTERNAL, "etcdserver: server stopped"), never_proposed)
        # Off the loop: a snapshot checkpoint may still be running on the writer.
        await asyncio.get_running_loop().run_in_executor(None, self._writer.shutdown, True)
        self.close_files()

    def close_files(self) -> None:
        for close in (self.wal.close, self.applier.backend.close):
            try:
                close()
            except Exception:  # noqa: BLE001 - closing what may already be broken
                pass

    async def _transfer_leadership(self) -> None:
        """A leader that stops hands leadership to its most up-to-date voter first (etcd 3.4's
        graceful stop), so the cluster does not wait out an election timeout; bounded by one
        election timeout, after which the member stops anyway."""
        raft = self.raft
        if raft.state != LEADER or not self.multi_member or self.fatal is not None:
            return
        if self.member_id in self.applier.membership.removed:
            return
        to = self._transferee()
        if to is None:
            return
        event(
            log,
            logging.INFO,
            "leadership transfer on stop",
            **{"local-member-id": f"{self.member_id:x}", "transferee": f"{to:x}"},
        )
        raft.transfer_leader(to)
        self.kick()
        deadline = time.monotonic() + self.cfg.election_timeout_ms / 1000.0
        while time.monotonic() < deadline and raft.lead in (self.member_id, 0) and raft.state == LEADER:
            await asyncio.sleep(0.005)

    # -- peers ---------------------------------------------------------------------------

    def sync_peers(self) -> None:
        """The transport's peers follow the membership (peer URLs included)."""
        t = self.transport
        if t is None:
            return
        members = self.applier.membership.members
        for m in members.values():
            if m.id != self.member_id and m.peer_urls:
                t.update_peer(m.id, m.peer_urls)
        for pid in t.peers():
            if pid not in members:
                t.remove_peer(pid)

    def add_voter(self, member_id: int) -> None:
        if member_id not in self.raft.voters:
            self.raft.apply_conf_change(ConfChange(CONF_ADD_NODE, member_id))

    def remove_voter(self, member_id: int) -> None:
        if member_id in self.raft.voters:
            self.raft.apply_conf_change(ConfChange(CONF_REMOVE_NODE, member_id))

    def _on_peer_rejected(self, peer_id: int, status: int, reason: str) -> None:
        """A peer refused our connection.  410 means this member was removed from the cluster
        (the entry may never have reached us): stop for good, as etcd does."""
        if status == STATUS_GONE:
            self._on_rejected_gone()

    def _on_peer_message(self, m: Message) -> None:
        if m.type == MSG_APP:
            self.append_counts["recvAppendRequestCnt"] += 1
        elif m.type == MSG_PROP and self.raft.state == LEADER:
            m.entries = self._stamp_entries(m.entries)
        self.raft.step(m)
        if self._held is None and self._held_install is None:
            self.kick()
        else:
            self._send_while_held()

    def _send(self, messages: list[Message]) -> None:
        t = self.transport
        if t is None or not messages:
            return
        n = 0
        for m in messages:
            if m.type == MSG_APP:
                n += 1
        self.append_counts["sendAppendRequestCnt"] += n
        t.send(messages)
        t.flush()

    def _on_tick(self) -> None:
        loop = self._loop
        if loop is None or self.fatal is not None:
            return
        self._tick_handle = loop.call_later(self.cfg.heartbeat_interval_ms / 1000.0, self._on_tick)
        if self._unsaved_hard_state is not None and not self._persisting:
            hard_state, self._unsaved_hard_state = self._unsaved_hard_state, None
            if self.multi_member:
                self._writer.post(self.wal.save, hard_state, [], False)
            else:
                # Where a single member's saves happen (inline, see _handle_ready), so an older
                # hard state can never land after a newer one.
                try:
                    self.wal.save(hard_state, [], False)
                except WALNoSpaceError:
                    # A commit index alone (Raft recomputes it): the next save carries a newer one.
                    pass
                except Exception as e:  # noqa: BLE001 - any other WAL failure is fatal
                    self.fail(f"WAL write failed: {e}")
        self._writer.flush()
        self.raft.tick()
        if self._unsent:
            self._retry_unsent()
        self._on_leader_change()
        if self._holding:
            self._send_while_held()
        else:
            self.kick()

    # -- forwards lost before they left ---------------------------------------------------

    def _on_dropped_proposal(self, m: Message) -> None:
        """The transport dropped a forward unsent.  Entries of this member's waiting clients are
        kept for _retry_unsent; the member's own (request id 0: SYNC, attribute publication) are
        made again by their own timers."""
        is_waiting = self.wait.is_waiting
        for e in m.entries:
            rid = _request_id(e)
            if rid and is_waiting(rid) and len(self._unsent) < MAX_HELD_PROPOSALS:
                self._unsent.append((rid, e))

    def _retry_unsent(self) -> None:
        """Forward the dropped entries again, once a leader is known and reachable (or this member
        leads), keeping only those whose client still waits."""
        raft = self.raft
        lead = raft.lead
        if lead == 0:
            return
        is_waiting = self.wait.is_waiting
        unsent = [(rid, e) for rid, e in self._unsent if is_waiting(rid)]
        if raft.state != LEADER:
            t = self.transport
            if t is None or not t.is_active(lead):
                self._unsent = unsent
                return
        self._unsent = []
        if not unsent:
            return
        entries = [Entry(0, 0, e.type, e.data) for _, e in unsent]
        if raft.state == LEADER:
            try:
                for e in entries:
                    raft.propose(e.data, e.type)
            except NotLeaderError:
                self._unsent = unsent
                return
        else:
            raft.step(Message(MSG_PROP, frm=self.member_id, entries=entries))
        event(log, logging.INFO, "forwarded proposals again", count=len(entries), leader=f"{lead:x}")

    # -- proposing -----------------------------------------------------------------------

    def can_accept(self, write: bool = True) -> V2Error | None:
        """Why a new request (a write, or a quorum read with ``write=False``) must be refused
        now, or None.  The NOSPACE alarm refuses writes only."""
        if self.fatal is not None or self.stopping:
            return V2Error(RAFT_INTERNAL, "etcdserver: " + (self.fatal or "server stopped"))
        if self.no_space and write:
            return V2Error(RAFT_INTERNAL, NO_SPACE_CAUSE)
        raft = self.raft
        if raft.state != LEADER and (
            not self.multi_member or (raft.lead == 0 and len(self._proposals) >= MAX_HELD_PROPOSALS)
        ):
            return V2Error(LEADER_ELECT)
        return None

    def propose(self, rid: int, data: bytes) -> None:
        """A request entry: stamped by its maker if this member leads, else by the leader."""
        if self.raft.state != LEADER:
            self._unstamped_held = True
        self._proposals.append((rid, data))
        self.kick()

    def propose_internal(self, rid: int, data: bytes) -> None:
        """A request on the store's internal namespaces (ENTRY_INTERNAL), in order with the writes."""
        if self.raft.state != LEADER:
            self._unstamped_held = True
        self._internal_at.add(len(self._proposals))
        self._proposals.append((rid, data))
        self.kick()

    def _stamp_entries(self, entries: list[Entry]) -> list[Entry]:
        """Request entries given the leader's cluster time, those that carry no stamp yet."""
        now = self._cluster_time()
        out = []
        for e in entries:
            if e.data and (e.type == ENTRY_NORMAL or e.type == ENTRY_INTERNAL):
                data = V2Request.stamped(e.data, now)
                if data is not e.data:
                    e = Entry(e.term, e.index, e.type, data)
            out.append(e)
        return out

    def propose_conf(self, rid: int, etype: int, data: bytes) -> None:
        self._conf_proposals.append((rid, etype, data))
        self.kick()

    def read(self, rid: int) -> None:
        """A quorum read: confirm leadership for the current commit index, then serve it from
        the local store once it has applied that index."""
        self._reads.append(rid)
        if self._holding:
            self._send_while_held()
        else:
            self.kick()

    def kick(self) -> None:
        if not self._scheduled and not self._persisting and self._loop is not None and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._run_ready)

    def _run_ready(self) -> None:
        """One turn of the Ready loop: hand new entries to the writer, apply what is durable."""
        self._scheduled = False
        if self._persisting or self.fatal is not None or self._closed:
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
            self._on_soft_state()
        if rd.snapshot is not None:
            self._install_snapshot(rd)
            return
        self._handle_ready(rd)

    def _submit_proposals(self) -> None:
        """Into the leader's log, or forwarded to the leader (MsgProp), or held while no leader is
        known.  Only proposals whose client still waits leave this member."""
        raft = self.raft
        if raft.state != LEADER and raft.lead == 0:
            return  # held until a leader is known (the sweep answers their clients in time)
        is_waiting = self.wait.is_waiting
        internal_at = self._internal_at
        if internal_at:
            typed = [
                (ENTRY_INTERNAL if i in internal_at else ENTRY_NORMAL, d)
                for i, (rid, d) in enumerate(self._proposals)
                if rid == 0 or is_waiting(rid)
            ]
            self._internal_at = set()
            proposals = []
        else:
            typed = []
            proposals = [d for rid, d in self._proposals if rid == 0 or is_waiting(rid)]
        conf = [c for c in self._conf_proposals if c[0] == 0 or is_waiting(c[0])]
        self._proposals = []
        self._conf_proposals = []
        if raft.state == LEADER and self._unstamped_held:
            # Made while another member led; this one leads now, so it stamps them.
            self._unstamped_held = False
            now = self._cluster_time()
            proposals = [V2Request.stamped(d, now) for d in proposals]
            typed = [(etype, V2Request.stamped(d, now)) for etype, d in typed]
        if raft.state == LEADER:
            try:
                if proposals:
                    raft.propose_many(proposals)
                for etype, data in typed:
                    raft.propose(data, etype)
                for i, (_, etype, data) in enumerate(conf):
                    if etype == ENTRY_CONF_CHANGE and raft.pending_conf_index > raft.log.applied:
                        # One configuration change at a time: the rest wait for it to apply.
                        self._conf_proposals = conf[i:]
                        break
                    raft.propose(data, etype)
            except NotLeaderError:
                # A leadership transfer in progress.
                if not self.multi_member:
                    self.wait.fail_all(V2Error(LEADER_ELECT))
            return
        entries = [Entry(0, 0, ENTRY_NORMAL, d) for d in proposals]
        entries.extend(Entry(0, 0, etype, d) for etype, d in typed)
        entries.extend(Entry(0, 0, etype, d) for _, etype, d in conf)
        if entries:
            raft.step(Message(MSG_PROP, frm=self.member_id, entries=entries))

    def _on_soft_state(self) -> None:
        lead = self.raft.lead
        if lead != self._last_lead:
            if lead != 0:
                self.leader_changes += 1
                self.leader_since_ns = self._clock()
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
            self.kick()
        self._on_leader_change()

    # -- one Ready -----------------------------------------------------------------------

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
            batch = self.applier.apply(rd.committed_entries, self._clock(), self.wait, self._loop)
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

            lone = len(rd.entries) <= INLINE_SYNC_MAX_ENTRIES
            lone_before, self._lone_round = self._lone_round, lone
            if lone and lone_before and not self.multi_member:
                # A lone entry on a single member after another lone one (one client at a time):
                # write and fdatasync it right here, the GIL released meanwhile.  Handing it to
                # the writer thread and back costs two thread wake-ups and GIL hand-offs, more
                # than the loop could do during this fdatasync (+15% PUT/s at 1 connection).  A
                # lone entry after a larger round is a lull between busy rounds: the loop keeps
                # parsing the next round's requests during that fdatasync instead.  In a cluster
                # the loop also carries peer traffic, and no gain was measured there.  Saves
                # never overlap: the next one waits for _on_persisted.
                try:
                    self.wal.save(hard_state, rd.entries)
                    exc: BaseException | None = None
                except BaseException as e:
                    exc = e
                loop.call_soon(self._on_persisted, rd, exc, deferred, hard_state)
            else:

                def saved(exc: BaseException | None) -> None:
                    loop.call_soon_threadsafe(self._on_persisted, rd, exc, deferred, hard_state)

                # One writer job: the WAL write + fdatasync, reported at once, then the RocksDB
                # batches deferred so far and this round's (the acknowledgement never waits for
                # RocksDB).
                batches = self._writer.take_deferred()
                if batch is not None:
                    batches.append(batch)
                self._writer.post(self._persist_round, hard_state, rd.entries, batches, saved)
                batch = None
        elif rd.hard_state is not None:
            # A commit index alone: a crash may lose it (Raft recomputes it).  It rides the next
            # WAL write, or a heartbeat tick writes it unsynced, so the WAL's commit index stays
            # current for --force-new-cluster and backups without a write per request.
            self._unsaved_hard_state = rd.hard_state
        if batch is not None:
            self._writer.defer(batch)
        if not rd.must_sync:
            raft.advance(rd)
            if raft.has_ready():
                self.kick()
        self._maybe_snapshot()

    def _serve_reads(self) -> None:
        """Answer the confirmed quorum reads whose read index the store has applied."""
        applied = self.applier.applied_index
        waiting = []
        now = self._cluster_time()
        store = self.applier.store
        for index, rid in self._confirmed_reads:
            if index > applied:
                waiting.append((index, rid))
                continue
            w = self.wait.take(rid)
            if w is None or w.req is None:
                continue
            req = w.req
            try:
                if w.internal:
                    result = store.get_internal(req.path, req.recursive, req.sorted, now)
                else:
                    result = store.get(req.path, req.recursive, req.sorted, now)
            except V2Error as err:
                w.done(None, err)
                continue
            w.done(result, None)
        self._confirmed_reads = waiting

    def _persist_round(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        batches: list[Batch],
        saved: Callable[[BaseException | None], None],
    ) -> None:
        """On the writer thread: WAL write + fdatasync, report, then the RocksDB batches (written
        even when the WAL refused this round's new entries for space: they hold entries durable
        before)."""
        try:
            self.wal.save(hard_state, entries)
        except BaseException as e:
            saved(e)
            if not isinstance(e, WALNoSpaceError):
                return
        else:
            saved(None)
        if batches:
            self._write_batches(batches)

    def _write_batches(self, batches: list[Batch]) -> None:
        """On the writer thread: apply rounds in order; a failure stops the member."""
        try:
            for batch in batches:
                self._write_batch(batch)
        except BaseException as e:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.fail, f"applied state write failed: {e}")

    def _write_batch(self, batch: Batch) -> None:
        """On the writer thread: one apply round into RocksDB, in order.  After a round refused for
        space every later one is dropped until ``_resync_backend`` writes the whole state (the WAL
        still holds all of them: a crash meanwhile replays them); other failures raise."""
        if self._backend_stale:
            return
        try:
            self.applier.backend.write(batch)
        except Exception as e:
            if not is_no_space(e):
                raise
            self._backend_stale = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._raise_no_space, "backend", f"applied state write: {e}")

    def _resync_backend(self, batch: Batch) -> bool:
        """On the writer thread: write ``batch``, the whole applied state (Store.all_changes), over
        whatever RocksDB holds; True once written (later rounds are written again), False while
        the disk is still full (other failures raise)."""
        if not self._backend_stale:
            return True
        backend = self.applier.backend
        try:
            # RocksDB keeps refusing writes after a flush failed for space until it is reopened.
            backend.reopen()
            backend.write(batch)
        except Exception as e:
            if is_no_space(e):
                return False
            raise
        self._backend_stale = False
        return True

    def _on_persisted(
        self,
        rd: Ready,
        exc: BaseException | None,
        deferred: list[Message] | None = None,
        hard_state: HardState | None = None,
    ) -> None:
        if self._closed:
            self._persisting = False
            return
        if isinstance(exc, WALNoSpaceError) and self.fatal is None:
            # Nothing of this Ready is durable and nothing in it was acknowledged: hold it (and
            # every later one: _persisting stays set) and try the same save again later.
            self._held = (rd, hard_state, deferred)
            self._raise_no_space("wal", str(exc))
            self._send_while_held()
            return
        self._persisting = False
        if exc is not None:
            self.fail(f"WAL write failed: {exc}")
            return
        if deferred:
            self._send(deferred)
        self.raft.advance(rd)
        self._run_ready()

    def _background_failed(self, exc: BaseException) -> None:
        """A writer-thread job nobody waits for failed (called on the writer thread): the member
        stops (an unsynced commit index refused for space excepted: Raft recomputes it, the next
        save carries it)."""
        if not isinstance(exc, WALNoSpaceError) and self._loop is not None:
            self._loop.call_soon_threadsafe(self.fail, f"WAL write failed: {exc}")

    # -- a full disk -----------------------------------------------------------------------

    def _raise_no_space(self, source: str, reason: str) -> None:
        """Raise the NOSPACE alarm for ``source``: refuse new writes, answer the ones not yet
        proposed (they never will be), step down as leader, and probe until space returns."""
        if self._closed or self.fatal is not None:
            return
        first = not self.no_space
        self.no_space[source] = reason
        if first:
            self.no_space_raised += 1
            event(
                log,
                logging.WARNING,
                "alarm raised: NOSPACE; writes are refused until there is space again",
                **{"local-member-id": f"{self.member_id:x}", "alarm": "NOSPACE"},
                reason=reason,
            )
            self._refuse_unproposed()
            self._step_down_for_space()
        if self._probe_handle is None and self._loop is not None:
            self._probe_handle = self._loop.call_later(NO_SPACE_PROBE_S, self._probe_space)

    def _clear_no_space(self, source: str) -> None:
        if self.no_space.pop(source, None) is not None and not self.no_space:
            event(
                log,
                logging.INFO,
                "alarm cleared: NOSPACE; writes are accepted again",
                **{"local-member-id": f"{self.member_id:x}", "alarm": "NOSPACE"},
            )

    def _never_proposed(self) -> set[int]:
        """Request ids that certainly never reached a Raft log: still queued here, or forwards the
        transport dropped unsent."""
        ids = {rid for rid, _ in self._proposals}
        ids.update(c[0] for c in self._conf_proposals)
        ids.update(rid for rid, _ in self._unsent)
        return ids

    def _fail_waiters(self, err: V2Error, never_proposed: set[int]) -> None:
        """Finish every waiting request as the member stops: reads and requests never proposed get
        ``err``; a write that may be in a log (here or on the leader it was forwarded to) gets
        OutcomeUnknown, since the cluster may still commit it."""

        def may_be_proposed(rid: int, w: Waiter) -> bool:
            return rid not in never_proposed and (w.req is None or w.req.method != "QGET")

        self.wait.fail_all(err, may_be_proposed)

    def _refuse_unproposed(self) -> None:
        """Client requests queued but not yet in the Raft log are answered "no space" and dropped:
        a request refused is never proposed afterwards.  The member's own proposals stay."""
        err = V2Error(RAFT_INTERNAL, NO_SPACE_CAUSE)
        take = self.wait.take
        kept: list[tuple[int, bytes]] = []
        kept_internal: set[int] = set()
        for i, (rid, data) in enumerate(self._proposals):
            if rid == 0:
                if i in self._internal_at:
                    kept_internal.add(len(kept))
                kept.append((rid, data))
                continue
            w = take(rid)
            if w is not None:
                w.done(None, V2Error(err.code, err.cause))
        self._proposals, self._internal_at = kept, kept_internal
        conf = []
        for c in self._conf_proposals:
            if c[0] == 0:
                conf.append(c)
                continue
            w = take(c[0])
            if w is not None:
                w.done(None, V2Error(err.code, err.cause))
        self._conf_proposals = conf
        # Forwards the transport dropped unsent never reached a leader: refused the same way.
        for rid, _ in self._unsent:
            w = take(rid)
            if w is not None:
                w.done(None, V2Error(err.code, err.cause))
        self._unsent = []

    def _transferee(self) -> int | None:
        """The voter a leader hands leadership to: the most up-to-date one it heard from lately."""
        raft = self.raft
        candidates = [
            (pr.match, pid)
            for pid, pr in raft.progress.items()
            if pid != self.member_id and pid in raft.voters and pr.recent_active
        ]
        return max(candidates)[1] if candidates else None

    def _step_down_for_space(self) -> None:
        """A leader that cannot write its log hands leadership to its most up-to-date active
        voter (it cannot commit its own new entries meanwhile, and the cluster can)."""
        raft = self.raft
        if raft.state != LEADER or not self.multi_member or self._held is None:
            return
        to = self._transferee()
        if to is None:
            return
        event(
            log,
            logging.INFO,
            "leadership transfer: the disk is full",
            **{"local-member-id": f"{self.member_id:x}", "transferee": f"{to:x}"},
        )
        raft.transfer_leader(to)

    @property
    def _holding(self) -> bool:
        """A Ready is held for space (its WAL save, or its snapshot's install)."""
        return self._held is not None or self._held_install is not None

    def _send_while_held(self) -> None:
        """While a Ready is held for space no new Ready is taken, but Raft keeps stepping: send
        what needs no disk (a leader's own messages, heartbeat answers, read-index requests),
        drop the rest (answers that would claim entries or votes not yet durable: Raft treats
        them as lost messages), and serve the quorum reads it confirms."""
        raft = self.raft
        if not self._holding or self._closed:
            return
        raft.has_ready()  # builds the appends batched for this turn
        msgs, raft.msgs = raft.msgs, []
        allowed = _LEADER_SENDS_WHILE_HELD if raft.state == LEADER else _SENDS_WHILE_HELD
        out = [m for m in msgs if m.type in allowed]
        if out:
            self._send(out)
        if self._reads and (raft.state == LEADER or raft.lead != 0):
            reads, self._reads = self._reads, []
            for rid in reads:
                raft.read_index(rid.to_bytes(8, "big"))
            msgs, raft.msgs = raft.msgs, []
            out = [m for m in msgs if m.type in allowed]
            if out:
                self._send(out)
        if raft.read_states:
            self._confirmed_reads.extend(
                (rs.index, int.from_bytes(rs.request_ctx, "big")) for rs in raft.read_states
            )
            raft.read_states = []
        if self._confirmed_reads:
            self._serve_reads()

    def _probe_space(self) -> None:
        """Every NO_SPACE_PROBE_S while the alarm is raised: try again what was refused for space
        (the held WAL save, the RocksDB rounds, the snapshot); each success clears its part."""
        self._probe_handle = None
        loop = self._loop
        if loop is None or self._closed or self.fatal is not None or not self.no_space:
            return
        if self._held is not None and not self._held_retry_running:
            self._held_retry_running = True
            rd, hard_state, _ = self._held
            fut = self._writer.submit(self.wal.save, hard_state, rd.entries)
            fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._held_retry_done, f))
        if (
            "backend" in self.no_space
            and not self._backend_resync_running
            and _free_bytes(self.applier.backend.path) >= NO_SPACE_RESYNC_MIN_FREE_BYTES
        ):
            # Every round applied so far is in this batch; rounds applied later follow it on the
            # writer thread, which runs jobs in order.
            applier = self.applier
            whole = applier.backend.prepare(
                applier.store.all_changes(),
                applier.applied_index,
                applier.applied_term,
                applier.membership.save(),
            )
            self._backend_resync_running = True
            fut2 = self._writer.submit(self._resync_backend, whole)
            fut2.add_done_callback(lambda f: loop.call_soon_threadsafe(self._resync_done, f))
        if "snapshot" in self.no_space and not self._snapshot_running:
            self._maybe_snapshot(force=True, retry=True)
        if self._held_install is not None and not self._held_retry_running:
            rd_install, self._held_install = self._held_install, None
            self._install_snapshot(rd_install)
        if self._held is not None and self.raft.state == LEADER and not self.raft.lead_transferee:
            # No voter was active to take over when the disk filled: try again.
            self._step_down_for_space()
            self._send_while_held()
        self._probe_handle = loop.call_later(NO_SPACE_PROBE_S, self._probe_space)

    def _held_retry_done(self, f: concurrent.futures.Future[None]) -> None:
        self._held_retry_running = False
        if self._closed or self._held is None:
            return
        exc = f.exception()
        if isinstance(exc, WALNoSpaceError):
            return
        rd, hard_state, deferred = self._held
        self._held = None
        if exc is None:
            self._clear_no_space("wal")
        self._on_persisted(rd, exc, deferred, hard_state)

    def _resync_done(self, f: concurrent.futures.Future[bool]) -> None:
        self._backend_resync_running = False
        if self._closed:
            return
        exc = f.exception()
        if exc is not None:
            self.fail(f"applied state write failed: {exc}")
        elif f.result():
            self._clear_no_space("backend")

    def fail(self, reason: str) -> None:
        """A durability failure: acknowledge nothing more and stop the member."""
        if self.fatal is not None:
            return
        self.fatal = reason
        event(log, logging.CRITICAL, "the member stops acknowledging writes and exits", reason=reason)
        self._fail_waiters(V2Error(RAFT_INTERNAL, "etcdserver: " + reason), self._never_proposed())
        self._on_fatal(reason)

    # -- snapshots -----------------------------------------------------------------------

    def _maybe_snapshot(self, force: bool = False, retry: bool = False) -> None:
        """Every --snapshot-count applied entries (or now, with ``force``): make RocksDB durable,
        keep a checkpoint of it as the snapshot, and let the WAL and the in-memory log drop what
        it covers.  A snapshot refused for space leaves no files behind and is tried again by
        the probe (``retry``), not by every round."""
        applier = self.applier
        applied, term = applier.applied_index, applier.applied_term
        if self._snapshot_running or applied == 0 or self.stopping:
            return
        if "snapshot" in self.no_space and not retry:
            return
        if not force and applied - self._snapshot_index < self.cfg.snapshot_count:
            due = self._snapshot_index + self.cfg.snapshot_count
            lead = min(SNAPSHOT_PREFLUSH_ENTRIES, self.cfg.snapshot_count // 4)
            if applied >= due - lead and self._preflushed_for != due:
                self._preflushed_for = due
                self._writer.post(self._flush_backend_soon)
            return
        self._snapshot_pending = False
        assert self._loop is not None
        meta = orjson.dumps(
            {"membership": applier.membership.save().decode(), "index": applied, "term": term}
        )
        self._snapshot_running = True
        backend = applier.backend

        def write_snapshot() -> None:
            # The writer thread runs jobs in order, so RocksDB holds exactly the state at
            # ``applied`` here: every earlier round's batch was written, no later one yet
            # (unless a round was refused for space: then there is no consistent state to keep).
            if self._backend_stale:
                raise OSError(errno.ENOSPC, "the applied state waits for space to be written")
            data_dir = self.snapshotter.data_dir(term, applied)
            try:
                backend.flush()
                backend.checkpoint(data_dir)
            except Exception as e:
                if is_no_space(e):
                    # RocksDB refuses every write after a failed flush: rewrite it whole (reopened).
                    self._backend_stale = True
                    self._remove_snapshot_files(term, applied)
                    loop.call_soon_threadsafe(self._raise_no_space, "backend", f"applied state flush: {e}")
                raise
            try:
                failpoint.hit("during_snapshot")
                self.snapshotter.save(term, applied, meta)
                self.wal.save_snapshot(term, applied)
            except Exception as e:
                if is_no_space(e) or isinstance(e, WALNoSpaceError):
                    # Without its WAL marker the snapshot is not used: remove it, room included.
                    self._remove_snapshot_files(term, applied)
                raise

        def done(f: concurrent.futures.Future[None]) -> None:
            self._snapshot_running = False
            if self._closed:
                return
            exc = f.exception()
            if exc is not None and (is_no_space(exc) or isinstance(exc, WALNoSpaceError)):
                self._raise_no_space("snapshot", f"snapshot at index {applied}: {exc}")
                return
            if exc is not None:
                self.fail(f"snapshot at index {applied} failed: {exc}")
                return
            self._clear_no_space("snapshot")
            self._snapshot_index = max(self._snapshot_index, applied)
            compact_to = min(applied - _snapshot_catch_up_entries(), self.raft.log.applied)
            if compact_to > self.raft.log.offset:
                self.raft.log.compact(compact_to)
                self._writer.submit(self.wal.release_to, compact_to, self.cfg.max_wals)
            if self.cfg.max_snapshots > 0:
                self._writer.submit(self.snapshotter.purge, self.cfg.max_snapshots)
            event(log, logging.INFO, "saved snapshot", **{"snapshot-index": applied, "snapshot-term": term})
            if self._snapshot_pending:
                self._maybe_snapshot(force=True)

        loop = self._loop
        fut = self._writer.submit(write_snapshot)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(done, f))

    def _flush_backend_soon(self) -> None:
        """On the writer thread, shortly before a snapshot: RocksDB writes its memtable out in the
        background, while the writer goes on.  The snapshot's flush is still what makes its state
        durable; this one only leaves it less to write.  A failure here (a full disk, say) shows
        again at the next write or flush, where it is handled."""
        if self._backend_stale:
            return
        try:
            self.applier.backend.flush_soon()
        except Exception as e:  # noqa: BLE001 - see the docstring
            log.debug("early flush before a snapshot: %s", e)

    def _remove_snapshot_files(self, term: int, index: int) -> None:
        """A snapshot that failed before its WAL marker: its checkpoint, file and temporary."""
        shutil.rmtree(self.snapshotter.data_dir(term, index), ignore_errors=True)
        path = os.path.join(self.snapshotter.dir, snap_name(term, index))
        for name in (path, path + TMP_SUFFIX):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

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
        old_backend = self.applier.backend
        kv_dir = old_backend.path
        member_dir = os.path.dirname(kv_dir)
        incoming = kv_dir + ".incoming"
        self._persisting = True
        installed_backend: list[Backend] = []

        def install() -> None:
            shutil.rmtree(incoming, ignore_errors=True)
            try:
                failpoint.hit("before_snapshot_install")
                restore_archive([snapshot.data], incoming)
            except Exception as e:
                if is_no_space(e):
                    # Nothing swapped yet: drop the partial copy, hold the Ready, retry later.
                    shutil.rmtree(incoming, ignore_errors=True)
                raise
            try:
                old_backend.close()
            except Exception:
                # A database refused for space (maybe left closed by a failed reopen) is
                # replaced whole here anyway.
                if not self._backend_stale:
                    raise
            os.rename(kv_dir, kv_dir + OLD_SUFFIX)
            os.rename(incoming, kv_dir)
            fsync_dir(member_dir)
            shutil.rmtree(kv_dir + OLD_SUFFIX, ignore_errors=True)
            installed_backend.append(Backend.open(kv_dir))
            # The state just installed is whole: rounds after it are written again.
            self._backend_stale = False
            self.wal.save_snapshot(meta.term, meta.index)

        def installed(f: concurrent.futures.Future[None]) -> None:
            self._persisting = False
            if installed_backend:
                self.applier.backend = installed_backend[0]
            if self._closed:
                return
            exc = f.exception()
            if exc is not None and not installed_backend and is_no_space(exc) and self.fatal is None:
                self._persisting = True
                self._held_install = rd
                self._raise_no_space(
                    "snapshot-install", f"installing the snapshot at index {meta.index}: {exc}"
                )
                self._send_while_held()
                return
            if exc is not None:
                self.fail(f"installing the snapshot at index {meta.index} failed: {exc}")
                return
            self._clear_no_space("snapshot-install")
            self._clear_no_space("backend")
            backend = installed_backend[0]
            bm = backend.meta()
            if bm.applied_index != meta.index:
                self.fail(f"the snapshot for index {meta.index} holds state at {bm.applied_index}")
                return
            self.applier.restore(backend)
            self.sync_peers()
            self._snapshot_index = meta.index
            event(
                log, logging.INFO, "installed the leader's snapshot",
                **{"snapshot-index": meta.index, "snapshot-term": meta.term},
            )  # fmt: skip
            # The installed state becomes this member's newest snapshot too: its WAL has nothing
            # between its previous snapshot and this one, so a backup or a restart must start here.
            self._snapshot_pending = True
            self._maybe_snapshot(force=True)
            self._handle_ready(rd)

        fut = self._writer.submit(install)
        loop = self._loop
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(installed, f))

    # -- what others read ----------------------------------------------------------------

    def connected_since(self, cutoff_ns: int, member_ids: list[int]) -> int:
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

    def peer_active_since_ns(self, member_id: int) -> int:
        t = self.transport
        return t.active_since_ns(member_id) if t is not None else 0

    def stats_leader_followers(self) -> dict[str, Any]:
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
        return followers
