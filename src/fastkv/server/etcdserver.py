"""EtcdServer: one member, composed of the parts that each own their state.

| part | owns |
|---|---|
| ``bootstrap.open_member`` | the data dir lock; bootstrap, join, restart, force-new-cluster |
| ``readyloop.ReadyLoop`` | Raft, the WAL, the writer thread, the peer transport, snapshots |
| ``applier.ApplierV2`` | the v2 store, the membership, the applied index (entries in, results out) |
| ``wait.Wait`` | requests waiting for their entry, by request id, and their timeouts |
| ``admin.MembershipAdmin`` | the checks before a member change is proposed |
| ``stats`` | the stats bodies |

This class is the facade the API talks to (``interface.V2Server``) and the member's lifecycle:
start, the attribute publication, the TTL SYNC proposals, the request timeout sweep, removal
and stop.

Rules worth keeping in mind:
- Time is cluster time (clusterclock.py, docs/design.md "Time"): the leader stamps each request it
  makes with its cluster time (the readyloop stamps what followers forward), TTLs become absolute
  on apply from those stamps, and local reads show ttls at this member's estimate of cluster time.
  No member's wall clock, once the member runs, moves it; a skew between the two is logged.
- TTL expiry is a SYNC entry proposed by the leader every 500 ms while TTL keys exist, carrying
  the leader's cluster time, so every replica expires the same keys at the same index.
- Each member publishes its name and client URLs as an ENTRY_MEMBER_ATTRIBUTES entry once it knows
  a leader, retried until applied; a member is ready (systemd READY=1) once its own is applied.
- A request's answer is final: once the sweep answers "request timed out", its proposal is dropped
  if it has not left this member yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from .. import ETCD_CLUSTER_VERSION
from ..logutil import event
from ..raft.node import LEADER, RaftNode
from ..raft.types import ENTRY_CONF_CHANGE, ENTRY_MEMBER_ATTRIBUTES, ENTRY_MIRROR
from ..storage.wal import WAL
from ..transport.transport import Transport
from ..v2auth.access import Auth
from ..v2auth.store import AuthStore
from ..v2store.errors import RAFT_INTERNAL, ROOT_RONLY, V2Error
from ..v2store.event import Event
from ..v2store.mirror import mirror_state
from ..v2store.request import V2Request
from ..v2store.store import Store
from ..v2store.watcher import FanOut, Watcher
from . import stats
from .admin import MembershipAdmin
from .applier import CLUSTER_VERSION_PATH, ApplierV2
from .bootstrap import StartupError, open_member
from .clusterclock import ClusterClock
from .config import Config
from .interface import Done, WatchCallback
from .membership import Member, Membership
from .readyloop import ReadyLoop
from .security import MemberTLS
from .wait import Wait

__all__ = ["EtcdServer", "StartupError"]

AUTH_NAMESPACE = "2"

log = logging.getLogger("fastkv.etcdserver")

SYNC_INTERVAL_S = 0.5
WAITER_SWEEP_INTERVAL_S = 0.1
PUBLISH_RETRY_S = 1.0
# A removed member answers its last requests, then exits (etcd: about a second later).
REMOVED_EXIT_DELAY_S = 1.0


class EtcdServer:
    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], int] = time.time_ns,
        mono: Callable[[], int] = time.monotonic_ns,
        rng: random.Random | None = None,
        tls: MemberTLS | None = None,
    ) -> None:
        """Open (or bootstrap) the member's data dir and recover its state.  Raises StartupError.
        ``clock``/``mono``: the wall and monotonic clocks (unix ns, ns) cluster time is made from.
        ``tls``: the member's TLS (security.prepare_tls) when any of its URLs is https."""
        self.cfg = cfg
        self.name = cfg.name
        self.now_ns = clock
        rng = rng or random.Random()
        self.client_urls: list[str] = list(cfg.advertise_client_urls)
        self.cors: set[str] | None = cfg.cors
        self.start_time_ns = clock()
        opened = open_member(cfg, clock, tls.peer_dial if tls is not None else None)
        self.member_id = opened.member_id
        self.cluster_id = opened.cluster_id
        self._lock_fd = opened.lock_fd
        self._applier: ApplierV2 = opened.applier
        self._applier.client_urls = self.client_urls
        self._applier.listener = self
        # Seeded from the applied state's time (the replay is done) or the wall clock, read once here.
        self.cluster_clock = ClusterClock(self._applier.time_ns, wall=clock, mono=mono)
        self._wait = Wait(rng.getrandbits(48) << 16, 5.0 + 2 * cfg.election_timeout_ms / 1000.0)
        self._loop_: asyncio.AbstractEventLoop | None = None
        self._ready_loop = ReadyLoop(
            cfg,
            opened,
            self._wait,
            clock,
            on_leader_change=self._on_leader_change,
            on_rejected_gone=self.self_removed,
            on_fatal=lambda reason: self._stopped.set(),
            cluster_info=self._cluster_info,
            tls=tls,
            cluster_time=self.cluster_clock.now,
        )
        self._admin = MembershipAdmin(
            lambda: self._applier.membership,
            self.member_id,
            cfg.strict_reconfig_check,
            self._ready_loop.connected_since,
            self._ready_loop.peer_active_since_ns,
            clock,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        # Set once the member has joined and published its attributes (systemd READY=1).
        self._ready = asyncio.Event()
        # Keys requests wait for that too (etcd serves clients only once ready): a restarted
        # member's store may lack writes the cluster acknowledged before the restart, until it
        # has applied its own publication, which the leader commits after everything before it.
        self.serving = False
        self._until_serving: list[Callable[[], None]] = []
        self._published = False
        self._publish_due = 0.0
        self._time_asked_due = 0.0
        self._version_due = 0.0
        # This member was removed from the cluster: it exits (status 0) and never comes back.
        self.removed = False
        # For /metrics: proposals that failed as etcd counts them (timed out, or refused).
        self.proposals_failed = 0
        # The v2 auth state lives in the store's /2 namespace; checks read the applied state.
        self.auth = Auth(AuthStore(_StoreAuthBackend(self)))

    @classmethod
    def open(cls, cfg: Config, **kwargs: Any) -> EtcdServer:
        return cls(cfg, **kwargs)

    # -- what metrics.py and the tests read ------------------------------------------------

    @property
    def store(self) -> Store:
        return self._applier.store

    @property
    def membership(self) -> Membership:
        return self._applier.membership

    @property
    def raft(self) -> RaftNode:
        return self._ready_loop.raft

    @property
    def wal(self) -> WAL:
        return self._ready_loop.wal

    @property
    def transport(self) -> Transport | None:
        return self._ready_loop.transport

    @property
    def applied_index(self) -> int:
        return self._applier.applied_index

    @property
    def pending_requests(self) -> int:
        return len(self._wait)

    @property
    def leader_changes(self) -> int:
        return self._ready_loop.leader_changes

    @property
    def apply_seconds(self) -> Any:
        return self._applier.apply_seconds

    @property
    def multi_member(self) -> bool:
        return self._ready_loop.multi_member

    @property
    def fatal_error(self) -> str | None:
        return self._ready_loop.fatal

    # -- ApplyListener (applier.py) -------------------------------------------------------

    def voter_added(self, member_id: int) -> None:
        self._ready_loop.add_voter(member_id)

    def voter_removed(self, member_id: int) -> None:
        self._ready_loop.remove_voter(member_id)

    def peers_changed(self) -> None:
        self._ready_loop.sync_peers()

    def member_published(self, member_id: int) -> None:
        # Ahead of any request waiting to be served: /0/version takes the index etcd gives it.
        self._maybe_set_cluster_version()

    def stamp_applied(self, stamp_ns: int) -> None:
        """An applied stamp is a lower bound of cluster time (the leader made it a while ago)."""
        self.cluster_clock.observe(stamp_ns)

    @property
    def clock_skew_seconds(self) -> float:
        """This member's wall clock minus cluster time (/metrics)."""
        return self.cluster_clock.skew_ns() / 1e9

    def self_published(self) -> None:
        self._published = True
        self._ready.set()
        if not self.serving:
            self.serving = True
            waiting, self._until_serving = self._until_serving, []
            loop = self._loop_
            for resume in waiting:
                if loop is not None:
                    loop.call_soon(resume)

    def when_serving(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` once keys requests may be served (at once if they may)."""
        if self.serving:
            resume()
        else:
            self._until_serving.append(resume)

    def self_removed(self) -> None:
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
        if self._loop_ is None:
            self._stopped.set()
            return
        # Answer what is in flight (the DELETE that removed us, maybe), then stop.
        self._loop_.call_later(REMOVED_EXIT_DELAY_S, self._stopped.set)

    # -- running -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the Ready loop and the background loops.  A single member elects itself at once
        and returns once it serves; in a cluster start() returns at once."""
        self._loop_ = loop = asyncio.get_running_loop()
        if self.member_id in self.membership.removed:
            # Its own log says so: a removed member never serves again (etcd exits 0 too).
            self.self_removed()
            return
        await self._ready_loop.start(loop)
        self._tasks.append(loop.create_task(self._sync_loop()))
        self._tasks.append(loop.create_task(self._sweep_loop()))
        if self.multi_member:
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
        # Serve once this member's attributes are applied (which needs the new term's empty
        # entry committed first); they go through the log so members added later see them.
        self._maybe_publish()
        deadline = time.monotonic() + 30
        while not self._published and time.monotonic() < deadline:
            if self.fatal_error:
                raise StartupError(self.fatal_error)
            await asyncio.sleep(0.001)

    async def stop(self) -> None:
        """Refuse new requests, let the WAL write in flight finish, close the WAL.  Requests not
        yet in the log are answered "server stopped"; none of them was acknowledged."""
        for t in self._tasks:
            t.cancel()
        await self._ready_loop.stop()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def wait_ready(self) -> None:
        """Until the member has joined its cluster and published its name and client URLs
        through the log (etcd's ReadyNotify): when systemd is told READY=1."""
        await self._ready.wait()

    async def wait_fatal(self) -> str:
        await self._stopped.wait()
        return self.fatal_error or "stopped"

    def _cluster_info(self) -> str:
        """What a joining member asks a peer for: the cluster id and membership."""
        return orjson.dumps(
            {
                "cluster_id": f"{self.cluster_id:x}",
                "members": [m.to_dict() for m in self.membership.sorted()],
                "removed": sorted(self.membership.removed),
            }
        ).decode()

    def _on_leader_change(self) -> None:
        """Raft's soft state changed, or a tick passed."""
        if self.raft.state == LEADER:
            self.cluster_clock.lead()
        else:
            self._maybe_ask_time()
        self._maybe_publish()

    def _maybe_ask_time(self) -> None:
        """A follower whose cluster time is not anchored (it started from the later of its wall clock
        and its log's last stamp) asks the leader for the time: an unstamped SYNC, which the leader
        stamps when it receives it, and whose applied time this member then takes as cluster time,
        backwards too.  The log's last stamp alone will not do: in an idle cluster it may be old.
        Retried every second until the clock is anchored (or this member leads)."""
        clock = self.cluster_clock
        if (
            clock.anchored
            or self.raft.lead == 0
            or self._loop_ is None
            or self.fatal_error
            or self._ready_loop.no_space
        ):
            return
        now = time.monotonic()
        if now < self._time_asked_due:
            return
        self._time_asked_due = now + PUBLISH_RETRY_S
        req = V2Request("SYNC", "", id=self._wait.next_id())

        def applied(result: Any, err: V2Error | None) -> None:
            # Applied: req.time is now the time it applied at, the leader's fresh stamp or later.  A
            # store that follows a mirror source refuses the SYNC, but only after stamping it.
            if (err is None or err.code == ROOT_RONLY) and self.raft.state != LEADER:
                clock.follow(req.time)

        self._wait.register(req.id, req, applied)
        self._ready_loop.propose(req.id, req.encode())

    def _maybe_publish(self) -> None:
        """Publish this member's name and client URLs through the log once a leader is known,
        retrying until the entry is applied (a proposal can be lost in a leader change)."""
        self._maybe_set_cluster_version()
        if self._published or self.raft.lead == 0 or self._loop_ is None or self._ready_loop.no_space:
            return
        now = time.monotonic()
        if now < self._publish_due:
            return
        self._publish_due = now + PUBLISH_RETRY_S
        attrs = {"member_id": f"{self.member_id:x}", "name": self.name, "clientURLs": self.client_urls}
        self._ready_loop.propose_conf(0, ENTRY_MEMBER_ATTRIBUTES, orjson.dumps(attrs))

    def _maybe_set_cluster_version(self) -> None:
        """The leader writes /0/version once every member has published (etcd's version monitor
        decides it once it knows every member's version), retrying until it is applied."""
        if self.raft.state != LEADER or self._loop_ is None or self.fatal_error is not None:
            return
        if self._ready_loop.no_space:
            return
        if self._applier.stored_cluster_version() == ETCD_CLUSTER_VERSION:
            return
        if not all(m.name for m in self.membership.members.values()):
            return
        now = time.monotonic()
        if now < self._version_due:
            return
        self._version_due = now + PUBLISH_RETRY_S
        req = V2Request(
            "PUT",
            CLUSTER_VERSION_PATH,
            value=ETCD_CLUSTER_VERSION,
            id=self._wait.next_id(),
            time=self.cluster_clock.now(),
        )
        self._ready_loop.propose_internal(0, req.encode())

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            if (
                self.raft.state == LEADER
                and self.store.has_ttl_keys()
                and not self.fatal_error
                and not self._ready_loop.no_space
            ):
                req = V2Request("SYNC", "", id=self._wait.next_id(), time=self.cluster_clock.now())
                self._ready_loop.propose(0, req.encode())
            self._check_skew()

    def _check_skew(self) -> None:
        """Warn (rate-limited) when this member's wall clock is off cluster time by more than 1 s."""
        skew = self.cluster_clock.skew_warning()
        if skew is not None:
            event(
                log,
                logging.WARNING,
                "the wall clock differs from cluster time; TTLs follow cluster time",
                **{
                    "local-member-id": f"{self.member_id:x}",
                    "clock-skew": f"{skew / 1e9:.3f}s",
                    "cluster-time-anchored": self.cluster_clock.anchored,
                },
            )

    async def _sweep_loop(self) -> None:
        """Fail requests that waited longer than the request timeout (etcd's error 300)."""
        while True:
            await asyncio.sleep(WAITER_SWEEP_INTERVAL_S)
            for w in self._wait.expired():
                self.proposals_failed += 1
                w.done(None, V2Error(RAFT_INTERNAL, "etcdserver: request timed out"))

    # -- the client API (interface.V2Server) ---------------------------------------------

    def do(self, req: V2Request, done: Done) -> None:
        method = req.method
        if method == "HEAD" or (method == "GET" and not req.quorum):
            try:
                result = self._applier.store.get(
                    req.path, req.recursive, req.sorted, self.cluster_clock.now()
                )
            except V2Error as err:
                done(None, err)
                return
            done(result, None)
            return
        if method == "GET":
            # quorum=true: linearizable, through Raft (etcd's QGET).
            req.method = "QGET"
        elif self._applier.mirror_refusal is not None:
            done(None, V2Error(ROOT_RONLY, self._applier.mirror_refusal, self._applier.store.index))
            return
        refused = self._ready_loop.can_accept(write=req.method != "QGET")
        if refused is not None:
            if refused.code != RAFT_INTERNAL:
                self.proposals_failed += 1
            done(None, refused)
            return
        wait = self._wait
        rid = wait.next_id()
        req.id = rid
        wait.register(rid, req, done)
        if self._ready_loop.raft.state == LEADER:
            req.time = self.cluster_clock.now()
        if req.method == "QGET":
            # Linearizable without a log entry (ReadIndex).
            self._ready_loop.read(rid)
        else:
            self._ready_loop.propose(rid, req.encode())

    def do_internal(self, req: V2Request, done: Done) -> None:
        """A request on the store's internal namespaces (``req.path`` like /2/users/alice): writes
        through the log as ENTRY_INTERNAL entries, QGET through ReadIndex, GET locally."""
        if req.method == "GET":
            try:
                result = self._applier.store.get_internal(
                    req.path, req.recursive, req.sorted, self.cluster_clock.now()
                )
            except V2Error as err:
                done(None, err)
                return
            done(result, None)
            return
        refused = self._ready_loop.can_accept(write=req.method != "QGET")
        if refused is not None:
            done(None, refused)
            return
        rid = self._wait.next_id()
        req.id = rid
        self._wait.register(rid, req, done, internal=True)
        if self._ready_loop.raft.state == LEADER:
            req.time = self.cluster_clock.now()
        if req.method == "QGET":
            self._ready_loop.read(rid)
        else:
            self._ready_loop.propose_internal(rid, req.encode())

    def mirror_apply(self, batch: dict[str, Any], done: Callable[[Any, V2Error | None], None]) -> None:
        """Replicate one mirror batch (v2store/mirror.py) as an ENTRY_MIRROR entry; ``done(state,
        error)`` once this member applied it."""
        refused = self._ready_loop.can_accept()
        if refused is not None:
            done(None, refused)
            return
        rid = self._wait.next_id()
        self._wait.register(rid, None, done)
        self._ready_loop.propose_conf(rid, ENTRY_MIRROR, orjson.dumps({"request_id": rid, "batch": batch}))

    def mirror_status(self) -> dict[str, Any]:
        """The mirror state as applied here, with the store index."""
        store = self._applier.store
        state = mirror_state(store) or {"state": "none"}
        return {**state, "storeIndex": store.index}

    def propose(self, req: V2Request) -> asyncio.Future[Event | None]:
        """``do`` with a future: resolves with the event after fdatasync + apply."""
        fut, done = self._future_done()
        self.do(req, done)
        return fut

    def propose_internal(self, req: V2Request) -> asyncio.Future[Event | None]:
        """``do_internal`` with a future."""
        fut, done = self._future_done()
        self.do_internal(req, done)
        return fut

    def _future_done(self) -> tuple[asyncio.Future[Any], Done]:
        assert self._loop_ is not None, "server not started"
        fut: asyncio.Future[Any] = self._loop_.create_future()

        def done(result: Any, err: V2Error | None) -> None:
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(result)

        return fut, done

    def get(self, path: str, recursive: bool = False, sorted: bool = False) -> Event:
        return self._applier.store.get(path, recursive, sorted, self.cluster_clock.now())

    def watch(
        self,
        path: str,
        recursive: bool,
        stream: bool,
        since: int,
        callback: WatchCallback,
        sink: Any = None,
        fan_out: FanOut | None = None,
    ) -> Watcher:
        return self._applier.store.watch(path, recursive, stream, since, callback, sink, fan_out)

    def raft_index(self) -> int:
        return self._ready_loop.raft.log.committed

    def raft_term(self) -> int:
        return self._ready_loop.raft.term

    def leader_id(self) -> int:
        return self._ready_loop.raft.lead

    def raft_status(self) -> dict[str, object]:
        return self._ready_loop.raft.status()

    def members(self) -> list[Member]:
        return self._applier.membership.sorted()

    def is_healthy(self, excluded_alarms: frozenset[str] = frozenset()) -> bool:
        """etcd's /health: a leader is known and no alarm is raised (etcd 3.4 reports a member
        with an active alarm, NOSPACE included, as unhealthy) but those excluded."""
        if self.fatal_error is not None or self.raft.lead == 0:
            return False
        return all(a in excluded_alarms for a in self.alarms())

    @property
    def no_space_raised(self) -> int:
        return self._ready_loop.no_space_raised

    def alarms(self) -> list[str]:
        """The alarms raised on this member, etcd's alarm type names (only NOSPACE exists here)."""
        return ["NOSPACE"] if self._ready_loop.no_space else []

    def stats_self(self) -> bytes:
        rl = self._ready_loop
        return stats.self_stats(
            name=self.name,
            member_id=self.member_id,
            state=rl.raft.state,
            start_time_ns=self.start_time_ns,
            leader_id=rl.raft.lead,
            leader_since_ns=rl.leader_since_ns,
            now_ns=self.now_ns(),
            append_counts=rl.append_counts,
        )

    def stats_leader(self) -> bytes:
        return stats.leader_stats(self.member_id, self._ready_loop.stats_leader_followers())

    def stats_store(self) -> bytes:
        return self._applier.store.stats_json()

    def metrics_text(self) -> bytes:
        from . import metrics

        return metrics.render(self)

    def add_member(self, peer_urls: list[str]) -> asyncio.Future[Member]:
        return self._propose_conf_change(self._admin.check_add(peer_urls))

    def update_member(self, member_id: int, peer_urls: list[str]) -> asyncio.Future[None]:
        return self._propose_conf_change(self._admin.check_update(member_id, peer_urls))

    def remove_member(self, member_id: int) -> asyncio.Future[None]:
        return self._propose_conf_change(self._admin.check_remove(member_id))

    def _propose_conf_change(self, cc: dict[str, Any]) -> asyncio.Future[Any]:
        """Replicate a membership change; the future resolves once this member applied it."""
        assert self._loop_ is not None
        fut: asyncio.Future[Any] = self._loop_.create_future()
        rl = self._ready_loop
        refused = rl.can_accept()
        if refused is not None and (rl.fatal is not None or rl.stopping or rl.no_space):
            fut.set_exception(refused)
            return fut

        def done(result: Any, err: V2Error | None) -> None:
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(result)

        rid = self._wait.next_id()
        self._wait.register(rid, None, done)
        cc["request_id"] = rid
        rl.propose_conf(rid, ENTRY_CONF_CHANGE, orjson.dumps(cc))
        return fut


class _StoreAuthBackend:
    """v2auth's AuthBackend on this member: /2 requests through the log, reads of the applied state."""

    def __init__(self, server: EtcdServer) -> None:
        self._server = server
        # peek's answers while the store's internal namespaces stay as they are (every request with
        # auth on peeks the enabled flag, its user and its roles).
        self._peeked: dict[str, tuple[int, str] | None] = {}
        self._peeked_version = 0

    async def do(self, req: V2Request) -> Event:
        event = await self._server.propose_internal(req)
        assert event is not None
        return event

    def get(self, path: str) -> Event:
        return self._server.store.get_internal(path)

    def version(self) -> int:
        """The store's internal namespaces' version: it moves with every change under /0 and /2."""
        return self._server.store.internal_version

    def peek(self, path: str) -> tuple[int, str] | None:
        """(modifiedIndex, value) of the file at ``path`` (/2/...), or None: a key index lookup, no
        stats, no event (it runs on every authenticated request)."""
        store = self._server.store
        if store.internal_version != self._peeked_version:
            self._peeked.clear()
            self._peeked_version = store.internal_version
        try:
            return self._peeked[path]
        except KeyError:
            pass
        node = store.namespaces[AUTH_NAMESPACE].tree.get(path[2:] or "/")
        found = None if node is None or node.children is not None else (node.modified_index, node.value)
        if len(self._peeked) < 4096:
            self._peeked[path] = found
        return found
