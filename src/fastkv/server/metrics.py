"""``/metrics``: the Prometheus text format, with etcd 3.4's names for what fastkv shares with etcd.

Rules:
- Nothing on the request path calls prometheus_client.  The server, the store's stats, the WAL and
  the transport keep plain ints (and bucket arrays for histograms) where they already count things;
  ``ServerCollector`` turns them into metric families when /metrics is scraped.
- An ``etcd_*`` metric has etcd 3.4.23's name, type, label names and help text, quirks included:
  ``etcd_server_proposals_committed_total`` and ``..._applied_total`` are gauges holding the Raft
  commit and applied indexes, as etcd's are.  What fastkv cannot measure is left out rather than
  served as a constant zero (a zero would tell a dashboard something false).
- One exception to 3.4: ``etcd_debugging_server_alarms`` (the NOSPACE alarm, see docs/design.md
  "Disk full") has etcd 3.6's name, labels and help, since etcd 3.4 exports no alarm metric.
- What etcd lacks is ``fastkv_*``.  process_* and python_* come from prometheus_client's collectors.
- Label values appear the way etcd's lazily created series do: a store action once it has been seen,
  a peer's send failures once there is one, a peer's round-trip histogram after its first probe.

Known differences from etcd's counts: etcd's v2 store also holds its membership keys (``/0/...``),
whose reads and writes show in its store counters; a write under a path whose parent is a file
counts as a failed set besides its own action (etcd's /v2/stats/store counts it so, its Prometheus
counter does not); the store's counters live in its snapshots, so they survive a restart (etcd's
reset) and follow the leader's snapshot when one is installed.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .. import ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION
from ..raft.node import LEADER
from ..transport.transport import RTT_BUCKETS_S

if TYPE_CHECKING:
    from .etcdserver import EtcdServer

#: What etcd 3.4 answers /metrics with (promhttp, text format 0.0.4), as a header line.
CONTENT_TYPE = b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"

# v2 store write actions, as etcd labels them, and the Stats fields that count them.
_WRITE_ACTIONS = (
    ("compareAndDelete", "compareAndDeleteSuccess", "compareAndDeleteFail"),
    ("compareAndSwap", "compareAndSwapSuccess", "compareAndSwapFail"),
    ("create", "createSuccess", "createFail"),
    ("delete", "deleteSuccess", "deleteFail"),
    ("set", "setsSuccess", "setsFail"),
    ("update", "updateSuccess", "updateFail"),
)


def _buckets(bounds: Sequence[float], counts: Iterable[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs from per-bucket counts; the last one is +Inf."""
    out: list[tuple[str, float]] = []
    total = 0
    les = [floatToGoString(b) for b in bounds] + ["+Inf"]
    for le, n in zip(les, counts, strict=True):
        total += n
        out.append((le, total))
    return out


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class ServerCollector(Collector):
    """Reads one EtcdServer's counters at scrape time (on the event loop, like every request)."""

    def __init__(self, server: EtcdServer) -> None:
        self._server = weakref.ref(server)

    def collect(self) -> Iterator[Metric]:
        srv = self._server()
        if srv is None:
            return
        for fam in itertools.chain(
            server_families(srv), wal_families(srv), store_families(srv), network_families(srv)
        ):
            # Like Go's registry: a labelled family with no series yet is not shown at all.
            if fam.samples:
                yield fam
        h = srv.apply_seconds
        apply = HistogramMetricFamily(
            "fastkv_apply_duration_seconds",
            "Time to apply one round of committed entries to the v2 store, watcher notifications included.",
        )
        apply.add_metric([], _buckets(h.bounds, list(h.counts)), sum_value=h.sum)
        yield apply
        yield _gauge(
            "fastkv_cluster_time_skew_seconds",
            "This member's wall clock minus the cluster time TTLs follow (positive: the wall clock is ahead).",
            srv.clock_skew_seconds,
        )


def server_families(srv: EtcdServer) -> Iterator[Metric]:
    """etcd_server_* and etcd_cluster_version (etcdserver/metrics.go, membership/metrics.go)."""
    raft = srv.raft
    major_minor = ".".join(ETCD_CLUSTER_VERSION.split(".")[:2])
    fam = GaugeMetricFamily(
        "etcd_cluster_version",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        labels=["cluster_version"],
    )
    fam.add_metric([major_minor], 1)
    yield fam
    yield _gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        1 if raft.lead else 0,
    )
    fam = GaugeMetricFamily(
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        labels=["server_id"],
    )
    fam.add_metric([f"{srv.member_id:x}"], 1)
    yield fam
    yield _gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        1 if raft.state == LEADER else 0,
    )
    # fastkv has no learners: every member votes.
    yield _gauge(
        "etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", 0
    )
    yield _counter(
        "etcd_server_leader_changes_seen_total", "The number of leader changes seen.", srv.leader_changes
    )
    # etcd's are gauges set to the commit and applied indexes (so are these).
    yield _gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        srv.applied_index,
    )
    yield _gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        raft.log.committed,
    )
    yield _counter(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        srv.proposals_failed,
    )
    # Requests waiting for their entry to be applied (or their quorum read to be served).
    yield _gauge(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        srv.pending_requests,
    )
    if srv.no_space_raised:
        # etcd 3.4 exports no alarm metric; etcd 3.6 added this gauge (its series appears once the
        # alarm was raised, 1 while active, 0 after).  fastkv's alarm is this member's own.
        fam = GaugeMetricFamily(
            "etcd_debugging_server_alarms",
            "Alarms for every member in cluster. 1 for 'server_id' label with current ID. "
            "2 for 'alarm_type' label with type of this alarm",
            labels=["server_id", "alarm_type"],
        )
        fam.add_metric([f"{srv.member_id:x}", "NOSPACE"], 1 if srv.alarms() else 0)
        yield fam
    fam = GaugeMetricFamily(
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        labels=["server_version"],
    )
    fam.add_metric([ETCD_SERVER_VERSION], 1)
    yield fam


def wal_families(srv: EtcdServer) -> Iterator[Metric]:
    """etcd_disk_wal_* (wal/metrics.go) and the group commit size, from the WAL's own counts."""
    wal = getattr(srv, "wal", None)
    if wal is None:
        return
    fam = HistogramMetricFamily(
        "etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL."
    )
    fsync = wal.fsync_seconds
    fam.add_metric([], _buckets(fsync.bounds, list(fsync.counts)), sum_value=fsync.sum)
    yield fam
    # A gauge in etcd 3.4.
    yield _gauge(
        "etcd_disk_wal_write_bytes_total", "Total number of bytes written in WAL.", wal.bytes_written
    )
    fam = HistogramMetricFamily(
        "fastkv_wal_group_commit_entries",
        "Raft entries carried by one WAL write (one fdatasync): the group commit size.",
    )
    batch = wal.batch_entries
    fam.add_metric([], _buckets(batch.bounds, list(batch.counts)), sum_value=batch.sum)
    yield fam


def store_families(srv: EtcdServer) -> Iterator[Metric]:
    """etcd_debugging_store_* (v2store/metrics.go), from the store's /v2/stats/store counters."""
    store = srv.store
    stats = store.stats
    yield _counter("etcd_debugging_store_expires_total", "Total number of expired keys.", stats.expireCount)
    # etcd counts failed reads and writes under the same labels as successful ones.
    recursive = stats.getsRecursive
    plain = stats.getsSuccess + stats.getsFail - recursive
    fam = CounterMetricFamily(
        "etcd_debugging_store_reads_total",
        "Total number of reads action by (get/getRecursive), local to this member.",
        labels=["action"],
    )
    if plain > 0:
        fam.add_metric(["get"], plain)
    if recursive > 0:
        fam.add_metric(["getRecursive"], recursive)
    yield fam
    yield _counter(
        "etcd_debugging_store_watch_requests_total",
        "Total number of incoming watch requests (new or reestablished).",
        stats.watchRequests,
    )
    yield _gauge("etcd_debugging_store_watchers", "Count of currently active watchers.", store.watcher_count)
    fam = CounterMetricFamily(
        "etcd_debugging_store_writes_total",
        "Total number of writes (e.g. set/compareAndDelete) seen by this member.",
        labels=["action"],
    )
    for action, ok, failed in _WRITE_ACTIONS:
        n = getattr(stats, ok) + getattr(stats, failed)
        if n:
            fam.add_metric([action], n)
    yield fam


def network_families(srv: EtcdServer) -> Iterator[Metric]:
    """etcd_network_* (rafthttp/metrics.go and its active-peers gauge), from the peer transport."""
    t = srv.transport
    if t is None:
        return  # one member: etcd shows no peer series either
    local = f"{srv.member_id:x}"
    peers = sorted(t.peers())
    active = GaugeMetricFamily(
        "etcd_network_active_peers",
        "The current number of active peer connections.",
        labels=["Local", "Remote"],
    )
    received = CounterMetricFamily(
        "etcd_network_peer_received_bytes_total",
        "The total number of bytes received from peers.",
        labels=["From"],
    )
    rtt = HistogramMetricFamily(
        "etcd_network_peer_round_trip_time_seconds",
        "Round-Trip-Time histogram between peers",
        labels=["To"],
    )
    sent = CounterMetricFamily(
        "etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", labels=["To"]
    )
    failures = CounterMetricFamily(
        "etcd_network_peer_sent_failures_total",
        "The total number of send failures from peers.",
        labels=["To"],
    )
    for pid in peers:
        peer = f"{pid:x}"
        st = t.stats(pid)
        active.add_metric([local, peer], 1 if t.is_active(pid) else 0)
        sent.add_metric([peer], t.sent_bytes(pid))
        if st["dropped"]:
            failures.add_metric([peer], st["dropped"])
        counts, total = t.rtt_histogram(pid)
        if any(counts):
            rtt.add_metric([peer], _buckets(RTT_BUCKETS_S, counts), sum_value=total)
    for pid, n in sorted(t.received_bytes.items()):
        received.add_metric([f"{pid:x}"], n)
    yield active
    yield received
    yield rtt
    yield sent
    yield failures


_registries: weakref.WeakKeyDictionary[EtcdServer, CollectorRegistry] = weakref.WeakKeyDictionary()


def registry_for(server: EtcdServer) -> CollectorRegistry:
    """One registry per server: its counters, plus the process and Python runtime collectors."""
    reg = _registries.get(server)
    if reg is None:
        reg = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        reg.register(ServerCollector(server))
        _registries[server] = reg
    return reg


def render(server: EtcdServer) -> bytes:
    """The /metrics body (text format 0.0.4)."""
    return generate_latest(registry_for(server))
