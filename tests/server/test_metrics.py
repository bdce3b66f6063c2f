"""/metrics against real processes: etcd 3.4's names, types, labels and help texts for what fastkv
shares with etcd, counters that follow the traffic, and (when etcd is installed) the shared names
checked against what a real etcd serves."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from fastkv.histogram import Histogram
from fastkv.server.metrics import network_families
from fastkv.transport.transport import RTT_BUCKETS_S
from tests.support.procs import ServerProcess, free_port, have_etcd, start_cluster, start_server

pytestmark = pytest.mark.slow

# (name as served, type, label names): what fastkv serves under etcd's names.
SHARED_SINGLE = [
    ("etcd_cluster_version", "gauge", {"cluster_version"}),
    ("etcd_server_has_leader", "gauge", set()),
    ("etcd_server_id", "gauge", {"server_id"}),
    ("etcd_server_is_leader", "gauge", set()),
    ("etcd_server_is_learner", "gauge", set()),
    ("etcd_server_leader_changes_seen_total", "counter", set()),
    ("etcd_server_proposals_applied_total", "gauge", set()),
    ("etcd_server_proposals_committed_total", "gauge", set()),
    ("etcd_server_proposals_failed_total", "counter", set()),
    ("etcd_server_proposals_pending", "gauge", set()),
    ("etcd_server_version", "gauge", {"server_version"}),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram", set()),
    ("etcd_disk_wal_write_bytes_total", "gauge", set()),
    ("etcd_debugging_store_expires_total", "counter", set()),
    ("etcd_debugging_store_reads_total", "counter", {"action"}),
    ("etcd_debugging_store_watch_requests_total", "counter", set()),
    ("etcd_debugging_store_watchers", "gauge", set()),
    ("etcd_debugging_store_writes_total", "counter", {"action"}),
]
SHARED_CLUSTER = [
    ("etcd_network_active_peers", "gauge", {"Local", "Remote"}),
    ("etcd_network_peer_received_bytes_total", "counter", {"From"}),
    ("etcd_network_peer_round_trip_time_seconds", "histogram", {"To"}),
    ("etcd_network_peer_sent_bytes_total", "counter", {"To"}),
]
FASTKV_ONLY = [
    ("fastkv_wal_group_commit_entries", "histogram", set()),
    ("fastkv_apply_duration_seconds", "histogram", set()),
    ("fastkv_cluster_time_skew_seconds", "gauge", set()),
]


def family_name(name: str, typ: str) -> str:
    """The name prometheus_client's parser gives a family (counters lose their _total)."""
    return name[:-6] if typ == "counter" and name.endswith("_total") else name


def scrape(url: str) -> dict[str, Metric]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Metric], sample: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet, like a fresh etcd series)."""
    for fam in fams.values():
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def label_names(fam: Metric) -> set[str]:
    return {k for s in fam.samples for k in s.labels if k != "le"}


def put(url: str, key: str, form: dict[str, str]) -> dict:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(f"{url}/v2/keys/{key}", data=data, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        return orjson.loads(r.read())


def get(url: str, path: str) -> bytes:
    with urllib.request.urlopen(url + path, timeout=10) as r:
        return r.read()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def settled(url: str) -> dict[str, Metric]:
    """A scrape once the commit index stopped moving (startup entries all applied)."""
    last = scrape(url)
    for _ in range(40):
        time.sleep(0.1)
        cur = scrape(url)
        committed = value(cur, "etcd_server_proposals_committed_total")
        if committed == value(last, "etcd_server_proposals_committed_total") and committed == value(
            cur, "etcd_server_proposals_applied_total"
        ):
            return cur
        last = cur
    raise AssertionError("the commit index never settled")


def exercise(url: str) -> None:
    """Traffic that makes every shared single-member family show a series, on fastkv or etcd."""
    put(url, "m/a", {"value": "1"})
    put(url, f"m/new{time.monotonic_ns()}", {"value": "2", "prevExist": "false"})
    get(url, "/v2/keys/m/a")
    get(url, "/v2/keys/m?recursive=true")
    get(url, "/v2/keys/m/a?wait=true&waitIndex=1")  # served from the event history at once


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = start_server("fastkv")
    try:
        yield srv
    finally:
        srv.stop()


def test_histogram_buckets_are_upper_bounds_and_inf_catches_the_rest():
    h = Histogram((0.1, 1.0))
    for v in (0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.counts == [1, 2, 1]
    assert h.sum == pytest.approx(8.6)


def test_route_answers_like_etcd(server):
    host, port = server.url.removeprefix("http://").split(":")
    for method, has_body in (("GET", True), ("HEAD", False), ("POST", True)):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request(method, "/metrics")
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        # etcd's promhttp handler serves every method alike.
        assert r.status == 200, method
        assert r.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        assert bool(body) == has_body, method
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/metrics/")
        assert conn.getresponse().status == 404
    finally:
        conn.close()


def test_etcd_names_types_labels_and_values(server):
    exercise(server.url)
    fams = scrape(server.url)
    for name, typ, labels in SHARED_SINGLE + FASTKV_ONLY:
        fam = fams.get(family_name(name, typ))
        assert fam is not None, name
        assert fam.type == typ, name
        assert fam.samples, name
        assert label_names(fam) == labels, name
    # One member: no peers, so (as on etcd) no peer series at all.
    for name, typ, _ in SHARED_CLUSTER:
        assert family_name(name, typ) not in fams, name
    member_id = orjson.loads(get(server.url, "/v2/stats/self"))["id"]
    assert value(fams, "etcd_server_id", server_id=member_id) == 1
    assert value(fams, "etcd_server_version", server_version="3.4.23") == 1
    assert value(fams, "etcd_cluster_version", cluster_version="3.4") == 1
    assert value(fams, "etcd_server_has_leader") == 1
    assert value(fams, "etcd_server_is_leader") == 1
    assert value(fams, "etcd_server_is_learner") == 0
    assert value(fams, "etcd_server_leader_changes_seen_total") == 1
    # Process and runtime metrics come from prometheus_client's own collectors.
    assert "process_cpu_seconds" in fams and "python_info" in fams
    buckets = [s for s in fams["etcd_disk_wal_fsync_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == [
        "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128",
        "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "+Inf",
    ]  # fmt: skip


def test_counters_follow_the_traffic(server):
    n = 25
    before = settled(server.url)
    for i in range(n):
        put(server.url, "c/k", {"value": str(i)})
    get(server.url, "/v2/keys/c/k")
    get(server.url, "/v2/keys/c?recursive=true")
    get(server.url, "/v2/keys/c/k?wait=true&waitIndex=1")
    after = scrape(server.url)

    def delta(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    assert delta("etcd_server_proposals_committed_total") == n
    assert delta("etcd_server_proposals_applied_total") == n
    assert value(after, "etcd_server_proposals_pending") == 0
    assert delta("etcd_debugging_store_writes_total", action="set") == n
    assert delta("etcd_debugging_store_reads_total", action="get") == 1
    assert delta("etcd_debugging_store_reads_total", action="getRecursive") == 1
    assert delta("etcd_debugging_store_watch_requests_total") == 1
    # One connection, one write at a time: every PUT is its own WAL write and fdatasync.
    assert delta("etcd_disk_wal_fsync_duration_seconds_count") >= n
    assert delta("etcd_disk_wal_fsync_duration_seconds_sum") > 0
    assert delta("etcd_disk_wal_write_bytes_total") > n * 10
    assert delta("fastkv_wal_group_commit_entries_count") >= 1
    assert delta("fastkv_wal_group_commit_entries_sum") >= n
    assert delta("fastkv_apply_duration_seconds_count") >= 1
    fsync_inf = value(after, "etcd_disk_wal_fsync_duration_seconds_bucket", le="+Inf")
    assert fsync_inf == value(after, "etcd_disk_wal_fsync_duration_seconds_count")


def test_expired_keys_and_watchers(server):
    before = scrape(server.url)
    put(server.url, "ttl/k", {"value": "x", "ttl": "1"})
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    try:
        conn.request("GET", "/v2/keys/never?wait=true")
        wait_for(
            lambda: value(scrape(server.url), "etcd_debugging_store_watchers") == 1, 5, "the watcher to count"
        )
        wait_for(
            lambda: (
                value(scrape(server.url), "etcd_debugging_store_expires_total")
                == value(before, "etcd_debugging_store_expires_total") + 1
            ),
            5,
            "the key to expire",
        )
    finally:
        conn.close()
    wait_for(lambda: value(scrape(server.url), "etcd_debugging_store_watchers") == 0, 5, "the watcher to go")


def test_cluster_peer_metrics_and_leader_changes(tmp_path):
    members = start_cluster("fastkv", 3, base_dir=str(tmp_path))
    try:
        ids = {m.url: orjson.loads(get(m.url, "/v2/stats/self"))["id"] for m in members}
        put(members[0].url, "k", {"value": "v"})
        # The peers' probes answer about once a second: wait for every member's first RTT.
        wait_for(
            lambda: all(
                value(scrape(m.url), "etcd_network_peer_round_trip_time_seconds_count", To=ids[o.url]) >= 1
                for m in members
                for o in members
                if o is not m
            ),
            10,
            "round-trip observations",
        )
        scrapes = {m.url: scrape(m.url) for m in members}
        leaders = [m for m in members if value(scrapes[m.url], "etcd_server_is_leader") == 1]
        assert len(leaders) == 1
        for m in members:
            fams = scrapes[m.url]
            assert value(fams, "etcd_server_has_leader") == 1
            assert value(fams, "etcd_server_leader_changes_seen_total") >= 1
            for name, typ, labels in SHARED_CLUSTER:
                fam = fams[family_name(name, typ)]
                assert fam.type == typ and label_names(fam) == labels, name
            for o in members:
                if o is m:
                    continue
                peer = ids[o.url]
                assert value(fams, "etcd_network_active_peers", Local=ids[m.url], Remote=peer) == 1
                if leaders[0] in (m, o):  # followers may never talk to each other (probes aside)
                    assert value(fams, "etcd_network_peer_sent_bytes_total", To=peer) > 0
                    assert value(fams, "etcd_network_peer_received_bytes_total", From=peer) > 0
        old = leaders[0]
        survivors = [m for m in members if m is not old]
        changes = {m.url: value(scrapes[m.url], "etcd_server_leader_changes_seen_total") for m in survivors}
        old.kill9()

        def new_leader() -> bool:
            fams = [scrape(m.url) for m in survivors]
            return sum(value(f, "etcd_server_is_leader") for f in fams) == 1 and all(
                value(f, "etcd_server_has_leader") == 1 for f in fams
            )

        wait_for(new_leader, 15, "a new leader")
        for m in survivors:
            assert value(scrape(m.url), "etcd_server_leader_changes_seen_total") >= changes[m.url] + 1
    finally:
        for m in members:
            m.stop()


def _shape(fams: dict[str, Metric]) -> dict[str, tuple[str, str, frozenset[str]]]:
    return {
        name: (fam.type, fam.documentation, frozenset(label_names(fam)))
        for name, fam in fams.items()
        if name.startswith("etcd_")
    }


@pytest.mark.etcd
@pytest.mark.skipif(not have_etcd(), reason="needs the real etcd")
def test_shared_names_are_etcds(server, tmp_path):
    """Every etcd_* family fastkv serves exists on a real etcd 3.4 with the same type, help text
    and label names: one member with the same traffic, then the peer families of three members."""
    etcd = start_server("etcd", data_dir=str(tmp_path))
    try:
        exercise(etcd.url)
        theirs = _shape(scrape(etcd.url))
    finally:
        etcd.stop()
    exercise(server.url)
    ours = _shape(scrape(server.url))
    assert {family_name(n, t) for n, t, _ in SHARED_SINGLE} <= set(ours)
    for name, shape in ours.items():
        assert theirs.get(name) == shape, name

    members = start_cluster("etcd", 3, base_dir=str(tmp_path / "cluster"))
    try:
        wanted = {family_name(n, t) for n, t, _ in SHARED_CLUSTER}
        # etcd observes a peer's round-trip time about 5 s after the peers connect.
        wait_for(lambda: wanted <= set(scrape(members[0].url)), 20, "etcd's peer families")
        theirs = _shape(scrape(members[0].url))
    finally:
        for m in members:
            m.stop()
    # Our peer families, from a transport with one peer that has seen traffic and a probe.
    ours = {
        fam.name: (fam.type, fam.documentation, frozenset(label_names(fam)))
        for fam in network_families(SimpleNamespace(member_id=1, transport=_OnePeerTransport()))
    }
    for name in wanted:
        assert ours[name] == theirs[name], name


class _OnePeerTransport:
    """What network_families reads from the transport: one peer, 2, active, with traffic."""

    received_bytes = {2: 100}

    def peers(self) -> list[int]:
        return [2]

    def is_active(self, peer_id: int) -> bool:
        return True

    def stats(self, peer_id: int) -> dict[str, int]:
        return {"sent": 3, "dropped": 0, "queued": 0}

    def sent_bytes(self, peer_id: int) -> int:
        return 120

    def rtt_histogram(self, peer_id: int) -> tuple[list[int], float]:
        counts = [0] * (len(RTT_BUCKETS_S) + 1)
        counts[3] = 1
        return counts, 0.0007


def test_listen_metrics_urls_serve_metrics_and_health_only(tmp_path):
    murl = f"http://127.0.0.1:{free_port()}"
    srv = start_server("fastkv", str(tmp_path), extra=["--listen-metrics-urls", murl])
    try:
        with urllib.request.urlopen(murl + "/metrics", timeout=5) as r:
            names = {f.name for f in text_string_to_metric_families(r.read().decode())}
        assert "etcd_server_has_leader" in names
        with urllib.request.urlopen(murl + "/health", timeout=5) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(murl + "/v2/keys/", timeout=5)
        assert err.value.code == 404
    finally:
        srv.stop()
