"""A member of a real 3-member fastkv cluster cut off from the other two, under load, then healed.

Routing: every member dials each peer through its own fault proxy (6 proxies for 3 members),
named by FASTKV_PEER_DIAL (member id -> proxy address), so isolating member A means
blackholing A->B, A->C, B->A and C->A while B<->C keeps working.

While isolated, the victim must not answer any request definitely (no acknowledged write, no
quorum read, no failed compare: each needs the majority); requests sent to it time out and are
recorded as maybe-applied.  The majority keeps serving: after a leader victim, a new leader is
elected among the two and the old one steps down on its own (check-quorum).  After healing the
victim follows the leader again and catches up: every acknowledged write is then on every member
(plain GET, quorum=false), and the whole history (clients doing PUT, quorum GET and CAS on a few
keys through all members, see tests/support/history.py) is linearizable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fastkv.server.identity import format_id, member_id_for
from fastkv.transport.faultproxy import ThreadedFaultProxy
from fastkv.transport.transport import PEER_DIAL_ENV
from tests.support.history import (
    CLIENT_TIMEOUT_S,
    KEYS,
    Ambiguous,
    Client,
    NotSent,
    agreed_leader,
    call,
)
from tests.support.linearizability import Operation, Verdict, check, read
from tests.support.procs import ServerProcess, free_port, start_cluster

TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]
TOKEN = "partition-test"
NAMES = ["m0", "m1", "m2"]
CLIENTS = 6
WRITERS = 2
BEFORE_S = 1.5  # load before the partition
AFTER_S = 1.5  # load after the victim rejoined
MIN_MAJORITY_WRITES = 5  # writes the majority must acknowledge while the victim is cut off

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@dataclass
class ProxiedCluster:
    members: list[ServerProcess]
    ids: dict[str, int]  # member name -> member id
    proxies: dict[tuple[str, str], ThreadedFaultProxy]  # (dialer, dialed) -> the proxy between

    def name(self, m: ServerProcess) -> str:
        return NAMES[self.members.index(m)]

    def isolate(self, m: ServerProcess) -> None:
        """Blackhole every link to and from ``m`` (both directions of both pairs)."""
        victim = self.name(m)
        for (a, b), proxy in self.proxies.items():
            if victim in (a, b):
                proxy.set_blackhole()

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def logs(self) -> str:
        return "\n".join(f"--- {self.name(m)}\n{m.log()[-3000:]}" for m in self.members)


def _distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture
def net(tmp_path: Any) -> Iterator[ProxiedCluster]:
    pairs = [(a, b) for a in NAMES for b in NAMES if a != b]
    free = _distinct_ports(2 * len(NAMES) + len(pairs))
    ports = {n: (free[2 * i], free[2 * i + 1]) for i, n in enumerate(NAMES)}
    ids = {n: member_id_for([f"http://127.0.0.1:{ports[n][1]}"], TOKEN) for n in NAMES}
    proxies: dict[tuple[str, str], ThreadedFaultProxy] = {}
    members: list[ServerProcess] = []
    try:
        for i, (a, b) in enumerate(pairs):
            proxies[(a, b)] = ThreadedFaultProxy(ports[b][1], listen_port=free[2 * len(NAMES) + i])
        member_env = {
            a: {
                PEER_DIAL_ENV: ",".join(
                    f"{format_id(ids[b])}=http://127.0.0.1:{proxies[(a, b)].port}" for b in NAMES if b != a
                )
            }
            for a in NAMES
        }
        members = start_cluster(
            "fastkv",
            len(NAMES),
            base_dir=str(tmp_path),
            extra=TIMING,
            token=TOKEN,
            ports=ports,
            member_env=member_env,
        )
        yield ProxiedCluster(members, ids, proxies)
    finally:
        for m in members:
            m.kill9()
        for proxy in proxies.values():
            proxy.close()


def _wait(what: str, cond: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Polls ``cond`` until it returns something truthy (returned); AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = cond()
        except (Ambiguous, NotSent):
            got = None
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _stats_self(m: ServerProcess) -> dict[str, Any]:
    status, body = call(m.url, "GET", "/v2/stats/self", timeout=1.0)
    assert status == 200, body
    return dict(body)


class Writer(threading.Thread):
    """PUTs a fresh key per request through random members; remembers every acknowledged one."""

    def __init__(self, ident: int, members: list[ServerProcess], stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"writer-{ident}")
        self.writer_id = ident
        self.members = members
        self.stop_flag = stop
        self.acked: list[tuple[str, str, str, int, int]] = []  # url, key, value, call, return
        self.ambiguous = 0
        self.unexpected: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            m = self.members[(self.writer_id + n) % len(self.members)]
            key, value = f"acked/w{self.writer_id}-{n}", f"v{self.writer_id}-{n}"
            start = time.monotonic_ns()
            try:
                status, body = call(m.url, "PUT", f"/v2/keys/{key}", {"value": value})
            except Ambiguous:
                self.ambiguous += 1
                continue
            except NotSent:
                time.sleep(0.01)
                continue
            if status in (200, 201):
                self.acked.append((m.url, key, value, start, time.monotonic_ns()))
            else:
                self.unexpected.append(f"PUT {key}: {status} {body}")


def _write_through_leader(members: list[ServerProcess], key: str, value: str, timeout: float = 15.0) -> None:
    def attempt() -> bool:
        leader = agreed_leader(members, timeout=5)
        status, _ = call(leader.url, "PUT", f"/v2/keys/{key}", {"value": value})
        return status in (200, 201)

    _wait(f"PUT {key} through the leader", attempt, timeout)


def _plain_get(m: ServerProcess, key: str) -> str | None:
    status, body = call(m.url, "GET", f"/v2/keys/{key}?quorum=false", timeout=5)
    if status == 404:
        return None
    assert status == 200, (m.url, key, status, body)
    return str(body["node"]["value"])


def _final_reads(members: list[ServerProcess], history: list[Operation]) -> dict[str, str | None]:
    """Once writes stopped: every member's quorum read of each key (recorded in ``history``, so
    the checker sees the final state) and its plain read must agree.  Repeated a few times when a
    late maybe-applied write lands in between."""
    final: dict[str, str | None] = {}
    for key in KEYS:

        def agree(key: str = key) -> bool:
            quorum: list[str | None] = []
            for i, m in enumerate(members):
                start = time.monotonic_ns()
                status, body = call(m.url, "GET", f"/v2/keys/{key}?quorum=true", timeout=5)
                ret = time.monotonic_ns()
                assert status in (200, 404), (status, body)
                value = body["node"]["value"] if status == 200 else None
                history.append(read(key, start, ret, value, 100 + i))
                quorum.append(value)
            plain = [_plain_get(m, key) for m in members]
            final[key] = quorum[0]
            return len(set(quorum + plain)) == 1

        _wait(f"all members to agree on {key}", agree, 10, interval=0.2)
    return final


@pytest.mark.parametrize("victim_role", ["leader", "follower"])
def test_partitioned_member_then_healed(net: ProxiedCluster, victim_role: str) -> None:
    members = net.members
    began = time.monotonic()
    # Each member dialed each peer through its own proxy: the override is in effect.
    _wait("every pair connected through its proxy", lambda: all(p.accepted for p in net.proxies.values()), 10)
    leader = agreed_leader(members)

    stop = threading.Event()
    clients = [Client(i, members, stop) for i in range(CLIENTS)]
    writers = [Writer(i, members, stop) for i in range(WRITERS)]
    for t in [*clients, *writers]:
        t.start()
    try:
        time.sleep(BEFORE_S)
        leader = agreed_leader(members)
        victim = leader if victim_role == "leader" else next(m for m in members if m is not leader)
        rest = [m for m in members if m is not victim]
        rest_ids = {format_id(net.ids[net.name(m)]) for m in rest}
        net.isolate(victim)
        cut_at = time.monotonic_ns()
        if victim_role == "leader":
            # Still leader right after the cut: check-quorum gives it an election timeout first.
            at_cut = _stats_self(victim)
            assert at_cut["state"] == "StateLeader", f"leadership moved before the cut: {at_cut}"

        # The majority has (or elects) a leader of its own and keeps serving.
        new_leader = agreed_leader(rest, timeout=15)
        elected_at = time.monotonic_ns()
        # The victim is not (or no longer) leader: check-quorum made an isolated leader step down.
        _wait("the victim to step down", lambda: _stats_self(victim)["state"] != "StateLeader", 10)
        stepped_down_s = (time.monotonic_ns() - cut_at) / 1e9

        # A write sent to the victim itself is never acknowledged while it is cut off.
        probes: list[str] = []
        for i in range(2):
            try:
                status, body = call(victim.url, "PUT", f"/v2/keys/probe{i}", {"value": f"isolated-{i}"})
                probes.append(f"{status} {body}")
            except Ambiguous as e:
                probes.append(f"ambiguous ({e!r})")
        assert not any(p.startswith(("200", "201")) for p in probes), probes

        def majority_wrote() -> bool:
            by_clients = [
                op
                for c in clients
                for url, op in list(c.answered)
                if url != victim.url and op.kind != "read" and op.ok is not False and op.call > elected_at
            ]
            by_writers = [
                a for w in writers for a in list(w.acked) if a[0] != victim.url and a[3] > elected_at
            ]
            return bool(by_writers) and len(by_clients) + len(by_writers) >= MIN_MAJORITY_WRITES

        _wait("writes through the majority", majority_wrote, 15)
        isolated_victim = _stats_self(victim)
        assert isolated_victim["state"] != "StateLeader", isolated_victim
        # Replication to the victim stopped too: what the majority acknowledged since is not there.
        since_cut = [
            (key, value) for w in writers for url, key, value, start, _ in list(w.acked) if start > cut_at
        ]
        assert since_cut
        leaked = [kv for kv in since_cut if _plain_get(victim, kv[0]) is not None]
        assert not leaked, f"the isolated {victim_role} received {leaked[:5]}"
        net.heal()
        healed_at = time.monotonic_ns()

        # The victim follows a leader of the majority again.
        _wait(
            "the victim to rejoin as follower",
            lambda: (
                (s := _stats_self(victim))["state"] == "StateFollower"
                and s["leaderInfo"]["leader"] in rest_ids
            ),
            15,
        )
        rejoined_s = (time.monotonic_ns() - healed_at) / 1e9
        time.sleep(AFTER_S)
    finally:
        stop.set()
        for t in [*clients, *writers]:
            t.join(CLIENT_TIMEOUT_S + 5)
    assert not any(t.is_alive() for t in [*clients, *writers])
    unexpected = [u for c in clients for u in c.unexpected] + [u for w in writers for u in w.unexpected]
    assert not unexpected, unexpected[:5]

    # Nothing the victim answered definitely was both asked and answered while it was cut off.
    while_cut = [
        (op.kind, op.key, op.value, op.ok)
        for c in clients
        for url, op in c.answered
        if url == victim.url and op.call >= cut_at and op.ret <= healed_at
    ] + [
        a[1:3]
        for w in writers
        for a in w.acked
        if a[0] == victim.url and a[3] >= cut_at and a[4] <= healed_at
    ]
    assert not while_cut, f"the isolated {victim_role} answered {while_cut[:5]}\n{net.logs()}"
    # Writes (and successful cas) the majority acknowledged between the election and the heal.
    by_majority = sum(
        1
        for c in clients
        for url, op in c.answered
        if url != victim.url and op.kind != "read" and op.ok is not False
        if op.call >= elected_at and op.ret <= healed_at
    ) + sum(
        1 for w in writers for a in w.acked if a[0] != victim.url and a[3] >= elected_at and a[4] <= healed_at
    )

    # Catch-up: a marker written after everything else is on every member, victim included.
    marker = f"marker-{time.monotonic_ns()}"
    _write_through_leader(members, "marker", marker)
    for m in members:

        def caught_up(m: ServerProcess = m) -> bool:
            return _plain_get(m, "marker") == marker

        _wait(f"{net.name(m)} to apply the marker", caught_up, 15)

    # Every acknowledged write is on every member.
    acked = [a for w in writers for a in w.acked]
    assert acked
    for m in members:
        missing = [(key, value) for _, key, value, _, _ in acked if _plain_get(m, key) != value]
        assert not missing, f"{net.name(m)} lacks acknowledged writes {missing[:5]}"

    # The probes timed out: maybe applied (a held request may still be forwarded after healing).
    probes_applied = sum(_plain_get(members[0], f"probe{i}") is not None for i in range(len(probes)))

    history = [op for c in clients for op in c.history]
    final = _final_reads(members, history)
    completed = [op for op in history if not op.ambiguous]
    checked_at = time.monotonic()
    result = check(history, budget_s=30)
    check_s = time.monotonic() - checked_at
    print(
        f"\n{victim_role} isolated: majority leader after {(elected_at - cut_at) / 1e9:.2f}s, victim not leader "
        f"after {stepped_down_s:.2f}s (state {isolated_victim['state']}), rejoined {rejoined_s:.2f}s after heal; "
        f"probes {probes}, {probes_applied} applied later; {by_majority} writes acknowledged by the majority while cut; "
        f"{len(acked)} acked unique writes; {len(history)} ops ({len(completed)} completed); "
        f"final {final}; {result.verdict.value} (checked in {check_s:.2f}s); "
        f"leader {'kept' if new_leader is leader else 'changed'}; total {time.monotonic() - began:.1f}s"
    )
    assert result.verdict is Verdict.OK, result.explain()
    assert any(op.kind == "cas" and op.ok for op in completed), "no cas ever succeeded"
