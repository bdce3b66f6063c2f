"""Record a real history against a 3-member fastkv cluster while its leader is killed with SIGKILL
and restarted, then check it is linearizable.

Six client threads issue quorum reads (``GET ?quorum=true``), writes (``PUT value``) and
compare-and-swaps (``PUT prevValue=...``) on three keys through random members for a few seconds.
Every written value is unique, so a read names the write it saw.  Outcomes:

- 200/201: done.  412 "Compare failed" or 404 "Key not found" on a cas: definitely failed.
  404 on a read: the key is missing.
- Connection refused: the request never reached a server (the member is down), so it is
  dropped from the history: it cannot have taken effect.
- Timeout (2 s), reset, or any 5xx: ambiguous; it may take effect later or never.

The recording (clients, outcomes, leader lookup) lives in tests/support/history.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.history import CLIENT_TIMEOUT_S, Client
from tests.support.history import agreed_leader as _leader
from tests.support.linearizability import Operation, Verdict, check, read
from tests.support.procs import ServerProcess, have_etcd, start_cluster

TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]
CLIENTS = 6
RUN_S = 5.0

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


@pytest.fixture(
    params=[
        "fastkv",
        pytest.param(
            "etcd",
            marks=[pytest.mark.etcd, pytest.mark.skipif(not have_etcd(), reason="etcd not installed")],
        ),
    ]
)
def cluster(request: pytest.FixtureRequest, tmp_path) -> Iterator[list[ServerProcess]]:
    """A 3-member cluster of fastkv, or of the real etcd to show the harness itself is sound."""
    members = start_cluster(request.param, 3, base_dir=str(tmp_path), extra=TIMING, token="lin-test")
    try:
        yield members
    finally:
        for m in members:
            m.kill9()


def test_history_with_leader_kill9_is_linearizable(cluster: list[ServerProcess]) -> None:
    _leader(cluster)
    stop = threading.Event()
    clients = [Client(i, cluster, stop) for i in range(CLIENTS)]
    started = time.monotonic()
    for c in clients:
        c.start()
    try:
        time.sleep(RUN_S / 2)
        victim = _leader(cluster)
        killed_at = time.monotonic_ns()
        victim.kill9()
        # Let the two survivors elect a leader and serve for a while before the victim returns.
        # Requests in flight at the kill may hang until the client timeout, so wait for answers.
        _leader([m for m in cluster if m is not victim])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(_answered_since(c, killed_at) for c in clients) < 20:
            time.sleep(0.05)
        victim.restart(timeout=20)
        restarted_at = time.monotonic_ns()
        # Keep going for a while with the old leader back as a follower.
        time.sleep(max(1.0, RUN_S - (time.monotonic() - started)))
    finally:
        stop.set()
        for c in clients:
            c.join(CLIENT_TIMEOUT_S + 5)
    assert not any(c.is_alive() for c in clients)
    unexpected = [u for c in clients for u in c.unexpected]
    assert not unexpected, unexpected[:5]

    history = [op for c in clients for op in c.history]
    completed = [op for op in history if not op.ambiguous]
    counts = {k: sum(c.counts[k] for c in clients) for k in ("sent", "ambiguous", "not-sent")}
    print(
        f"\n{len(history)} operations recorded ({len(completed)} completed), {counts}, "
        f"{sum(op.kind == 'cas' and op.ok is True for op in history)} successful cas, "
        f"restart took {(restarted_at - killed_at) / 1e9:.2f}s"
    )
    assert len(completed) >= 100
    assert any(killed_at < op.call and op.ret < restarted_at for op in completed), "no failover progress"
    assert any(op.kind == "write" and op.call > restarted_at for op in completed), "no write after restart"
    assert any(op.kind == "cas" and op.ok for op in completed), "no cas ever succeeded"

    checked_at = time.monotonic()
    result = check(history, budget_s=30)
    print(f"checked in {time.monotonic() - checked_at:.2f}s: {result.verdict.value}")
    assert result.verdict is Verdict.OK, result.explain()

    # The checker is not blind to this history: plant a stale read and it must be caught.
    planted = _plant_stale_read(history)
    assert planted is not None, "no read follows two sequential writes: history too thin"
    bad = check(planted, budget_s=30)
    assert bad.verdict is Verdict.ILLEGAL


def _answered_since(client: Client, since_ns: int) -> int:
    """How many of the client's latest operations were called after ``since_ns`` and answered."""
    recent = client.history[-50:]  # a copy: the client thread keeps appending
    return sum(1 for op in recent if op.call > since_ns and not op.ambiguous)


def _plant_stale_read(history: list[Operation]) -> list[Operation] | None:
    """Rewrite one completed read to return a value overwritten before it was called: the value of
    a completed write w0 such that another completed write w1 was called after w0 returned and
    returned before the read was called.  Values are unique, so nothing can explain it."""
    for i, r in enumerate(history):
        if r.kind != "read" or r.ambiguous:
            continue
        writes = sorted(
            (op for op in history if op.key == r.key and op.kind == "write" and op.ret < r.call),
            key=lambda op: op.ret,
        )
        for w1 in reversed(writes):
            w0 = next((w for w in writes if w.ret < w1.call), None)
            if w0 is not None:
                out = list(history)
                out[i] = read(r.key, r.call, r.ret, w0.value, r.client)
                return out
    return None
