"""Wall-clock jumps on running members (libfaketime): TTLs follow cluster time, not a member's clock.

Every member runs under libfaketime with its own offset file (``<clock dir>/<member name>``, "+0" at
start) and a real monotonic clock (FAKETIME_DONT_FAKE_MONOTONIC=1); writing "+2h" to a member's file
moves that process's wall clock two hours ahead at once (FAKETIME_NO_CACHE=1).  Skipped when
libfaketime is not installed (``make etcd-bin`` installs it on Debian).  With libfaketime 0.9.10 and
a real monotonic clock, Python's ``time.sleep`` fails with EINVAL; the member never calls it (its
waits are the event loop's), only discovery retries do, which these tests do not use.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from fastkv.testing.cluster import Cluster, Launcher, default_command
from fastkv.testing.member import Member, poll

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(LIBFAKETIME), reason="libfaketime is not installed"),
]

TTL = 30
TWO_HOURS = 7200.0
# Each member's offset file is named after its --name flag.
_WRAPPER = (
    'for a; do [ "$prev" = --name ] && name=$a; prev=$a; done; '
    'export FAKETIME_TIMESTAMP_FILE="$FASTKV_TEST_CLOCK_DIR/$name"; exec "$@"'
)


def set_clock(clock_dir: str, name: str, offset: str) -> None:
    """Move member ``name``'s wall clock to ``offset`` from the real one ("+0", "+2h", "-30m")."""
    path = os.path.join(clock_dir, name)
    with open(path + ".tmp", "w") as f:
        f.write(offset + "\n")
    os.replace(path + ".tmp", path)


@pytest.fixture
def clocked(tmp_path) -> Iterator[tuple[Launcher, str]]:
    clock_dir = str(tmp_path / "clocks")
    os.mkdir(clock_dir)
    for i in range(3):
        set_clock(clock_dir, f"m{i}", "+0")
    env = {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FASTKV_TEST_CLOCK_DIR": clock_dir,
    }
    with Launcher(command=["/bin/sh", "-c", _WRAPPER, "sh", *default_command()], env=env) as launcher:
        yield launcher, clock_dir


def request(url: str, method: str, key: str, **form: Any) -> tuple[int, dict, dict]:
    """(status, X-headers, JSON body) of a keys request."""
    data = urllib.parse.urlencode(form).encode() if form else None
    req = urllib.request.Request(f"{url}/v2/keys{key}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def node(url: str, key: str) -> dict | None:
    status, _, body = request(url, "GET", key)
    if status == 404:
        return None
    assert status == 200, body
    return body["node"]  # type: ignore[no-any-return]


def unix(expiration: str) -> float:
    """etcd's RFC 3339 expiration (nanoseconds) as unix seconds."""
    head, _, frac = expiration.rstrip("Z").partition(".")
    dt = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    return dt.timestamp() + float("0." + (frac or "0"))


def raft_index(m: Member) -> int:
    _, headers, _ = request(m.client_url, "GET", "/")
    return int(headers["X-Raft-Index"])


def wait_for_syncs(leader: Member, n: int, key: str) -> None:
    """Until the leader has committed ``n`` more entries (SYNCs every 500 ms while TTL keys exist), or
    ``key`` is gone (then SYNCs stop)."""
    start = raft_index(leader)
    poll(
        f"{n} entries committed",
        lambda: raft_index(leader) >= start + n or node(leader.client_url, key) is None,
        30,
    )


def skew_logged(m: Member) -> bool:
    return "the wall clock differs from cluster time" in m.log()


def three(launcher: Launcher) -> tuple[Cluster, Member, list[Member]]:
    cluster = launcher.cluster(3)
    leader = cluster.leader()
    return cluster, leader, [m for m in cluster if m is not leader]


@pytest.mark.timeout(120)
def test_a_leader_two_hours_ahead_expires_nothing_early(clocked) -> None:
    launcher, clock_dir = clocked
    cluster, leader, followers = three(launcher)
    written = time.time()
    for i in range(5):
        status, _, _ = request(leader.client_url, "PUT", f"/lease/{i}", value="v", ttl=TTL)
        assert status == 201
    set_clock(clock_dir, leader.name, "+2h")
    # etcd expires every key within these three seconds of SYNCs from a leader at +2h.
    wait_for_syncs(leader, 6, "/lease/0")
    elapsed = time.time() - written
    assert elapsed < TTL - 5, "the machine was too slow for this test's window"
    for m in cluster:  # written seconds ago: every member has applied them
        for i in range(5):
            n = node(m.client_url, f"/lease/{i}")
            assert n is not None, f"{m.name}: /lease/{i} expired early"
            assert TTL - elapsed - 2 <= n["ttl"] <= TTL, (m.name, n)
    # A key written now, through the leader: ttl 30, and its expiration is real time + 30 s.
    before = time.time()
    status, _, body = request(leader.client_url, "PUT", "/fresh", value="v", ttl=TTL)
    assert status == 201 and body["node"]["ttl"] == TTL
    assert before + TTL - 2 <= unix(body["node"]["expiration"]) <= time.time() + TTL + 2
    for m in followers:
        n = poll(f"/fresh on {m.name}", lambda m=m: node(m.client_url, "/fresh"), 10)
        assert TTL - 2 <= n["ttl"] <= TTL
    poll("the leader's skew warning", lambda: skew_logged(leader), 30)
    line = next(x for x in leader.log().splitlines() if "the wall clock differs from cluster time" in x)
    skew = float(json.loads(line)["clock-skew"].rstrip("s"))
    assert TWO_HOURS - 5 <= skew <= TWO_HOURS + 5
    # Keys still expire, on cluster time: a 1 s key goes, never before its second is up.
    sent = time.time()
    request(leader.client_url, "PUT", "/short", value="v", ttl=1)
    poll("/short expired", lambda: node(leader.client_url, "/short") is None, 30)
    assert time.time() - sent >= 1


@pytest.mark.timeout(120)
def test_a_follower_ahead_stamps_nothing_on_the_keys_it_receives(clocked) -> None:
    launcher, clock_dir = clocked
    cluster, leader, followers = three(launcher)
    ahead = followers[0]
    set_clock(clock_dir, ahead.name, "+2h")
    before = time.time()
    status, _, body = request(ahead.client_url, "PUT", "/via-follower", value="v", ttl=TTL)
    assert status == 201
    # etcd answers ttl 7217 here: the follower's wall clock became the key's expiration.
    assert body["node"]["ttl"] == TTL
    assert before + TTL - 2 <= unix(body["node"]["expiration"]) <= time.time() + TTL + 2
    for m in cluster:  # local reads: a member may apply the write a moment later
        n = poll(f"/via-follower on {m.name}", lambda m=m: node(m.client_url, "/via-follower"), 10)
        assert TTL - 2 <= n["ttl"] <= TTL, (m.name, n)
    sent = time.time()
    status, _, body = request(ahead.client_url, "PUT", "/short", value="v", ttl=1, prevExist="false")
    assert status == 201 and body["node"]["ttl"] == 1
    # Gone after its second (not kept alive two hours by the follower's clock), and not before.
    poll("/short expired", lambda: all(node(m.client_url, "/short") is None for m in cluster), 30)
    assert time.time() - sent >= 0.9
    poll("the follower's skew warning", lambda: skew_logged(ahead), 30)
    assert not skew_logged(leader)


@pytest.mark.timeout(120)
def test_keys_expire_on_time_when_no_clock_jumps(clocked) -> None:
    launcher, _ = clocked
    cluster, leader, followers = three(launcher)
    sent = time.time()
    request(followers[0].client_url, "PUT", "/a", value="v", ttl=2)
    request(leader.client_url, "PUT", "/b", value="v", ttl=3)
    for key, ttl in (("/a", 2), ("/b", 3)):
        poll(f"{key} expired", lambda key=key: all(node(m.client_url, key) is None for m in cluster), 30)
        assert time.time() - sent >= ttl - 1  # never early (the answer's ttl is rounded up)
    assert not any(skew_logged(m) for m in cluster)


@pytest.mark.timeout(180)
def test_a_member_restarted_with_a_clock_ahead_takes_the_cluster_time(clocked) -> None:
    launcher, clock_dir = clocked
    cluster, leader, followers = three(launcher)
    request(leader.client_url, "PUT", "/lease", value="v", ttl=TTL)
    written = time.time()
    late = followers[0]
    late.stop()
    set_clock(clock_dir, late.name, "+2h")
    late.start()
    late.wait_ready(30)
    # Its reads show the cluster's ttl once it follows the leader (SYNCs stamp every 500 ms).
    n = poll(
        "the restarted member's ttl in line",
        lambda: (x := node(late.client_url, "/lease")) is not None and x["ttl"] <= TTL and x,
        30,
    )
    assert n["ttl"] >= TTL - (time.time() - written) - 2
    assert node(leader.client_url, "/lease") is not None
    poll("the restarted member's skew warning", lambda: skew_logged(late), 30)


@pytest.mark.timeout(180)
def test_a_whole_cluster_restart_after_downtime_expires_what_is_due(clocked) -> None:
    """The cluster is down for an hour (every wall clock moves on by an hour): keys due meanwhile
    expire at the restart, and a key written after it has the right ttl."""
    launcher, clock_dir = clocked
    cluster, leader, _ = three(launcher)
    request(leader.client_url, "PUT", "/due", value="v", ttl=TTL)
    request(leader.client_url, "PUT", "/kept", value="v", ttl=3 * 3600)
    for m in cluster:
        m.stop()
    for m in cluster:
        set_clock(clock_dir, m.name, "+1h")
    for m in cluster:
        m.start()
    for m in cluster:
        m.wait_ready(30)
    leader = cluster.leader()
    poll("/due expired", lambda: node(leader.client_url, "/due") is None, 30)
    kept = node(leader.client_url, "/kept")
    assert kept is not None and 2 * 3600 - 60 <= kept["ttl"] <= 2 * 3600


def skew_seconds(m: Member) -> float:
    with urllib.request.urlopen(m.client_url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("fastkv_cluster_time_skew_seconds "):
                return float(line.split()[1])
    raise AssertionError("no fastkv_cluster_time_skew_seconds")


@pytest.mark.timeout(120)
def test_a_member_restarted_into_an_idle_cluster_takes_the_current_time(clocked) -> None:
    """The log's last stamp is seconds old (nothing was written since): a restarted member must not
    take it for the current time; it asks the leader for a fresh stamp."""
    launcher, _ = clocked
    cluster, leader, followers = three(launcher)
    late = followers[0]
    late.stop()
    request(leader.client_url, "PUT", "/plain", value="v")  # the restarted member catches up on it
    written = time.monotonic()
    # The cluster stays idle for four seconds: the last stamp in the log is that old.
    time.sleep(max(0.0, 4 - (time.monotonic() - written)))
    late.start()
    late.wait_ready(30)
    try:
        poll("the restarted member's cluster time", lambda: abs(skew_seconds(late)) < 0.5, 15)
    except TimeoutError as e:
        logs = "\n".join(m.log_tail(15) for m in cluster)
        raise AssertionError(f"{e}; skew {skew_seconds(late)} s\n{logs}") from None
    before = time.time()
    status, _, body = request(late.client_url, "PUT", "/k", value="v", ttl=TTL)
    assert status == 201 and body["node"]["ttl"] == TTL
    assert before + TTL - 1 <= unix(body["node"]["expiration"]) <= time.time() + TTL + 1
    for m in cluster:
        n = poll(f"/k on {m.name}", lambda m=m: node(m.client_url, "/k"), 10)
        assert TTL - 2 <= n["ttl"] <= TTL, (m.name, n)
