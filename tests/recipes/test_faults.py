"""The recipes on a real 3-member fastkv cluster with the Raft leader killed (kill -9) and a client process
paused (SIGSTOP) past its TTL.

Every recipe user is a separate process (`fault_worker`), so a pause stops it whole, keep-alive included.
Each test prints one ``FAULTS`` summary line with what it counted.  What is checked:

- locks: in the order they were granted, fencing tokens strictly grow; the holders' leases, as intervals
  of the machine's monotonic clock from acquisition to the earlier of release and lease expiry, never
  overlap; the critical sections the fence accepted never overlap either (in store indexes);
- election: the same for terms, and an observer never sees one leader follow another without a vacancy;
- queue: every item put is taken exactly once;
- semaphore: never more live holds than its limit; counter: no acknowledged add lost or doubled;
  double barrier: nobody leaves a round before all entered it;
- pub/sub: a resumable watcher's copy of a subtree ends equal to the store's after its member is killed
  and after its reader stalled past the 1000-event history (it lists again);
- discovery: a killed or paused instance is gone within its TTL plus one election timeout, plus the
  expiry tick (the leader expires keys every 500 ms) and a scheduling allowance for a busy machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fastkv.client import Client, ClientError, OutcomeUnknown
from fastkv.recipes import coordination, discovery, election, queue
from fastkv.recipes.watch import ResumableWatcher, Resync
from tests.recipes.fault_worker import SEMAPHORE_LIMIT
from tests.support.clusterutil import TIMING, member_by_id, wait_one_leader
from tests.support.procs import ServerProcess, have_etcd, start_cluster

REPO = Path(__file__).resolve().parents[2]
TTL = 2
ELECTION_TIMEOUT = 0.5  # TIMING's --election-timeout
EXPIRY_TICK = 0.5
ALLOWANCE = 1.5  # watch delivery and scheduling on a loaded 2-core machine

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster() -> Iterator[list[ServerProcess]]:
    kind = os.environ.get("RECIPES_TARGET", "fastkv")  # "etcd": the same checks on a real etcd cluster
    if kind == "etcd" and not have_etcd():
        pytest.skip("etcd not installed")
    members = start_cluster(kind, 3, extra=TIMING)
    try:
        yield members
    finally:
        for m in members:
            m.stop(signal.SIGKILL)


def endpoints(members: list[ServerProcess]) -> list[str]:
    return [m.url for m in members]


def until(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


class Workers:
    """Worker processes of one role, their record files and a shared stop file."""

    def __init__(self, tmp: Path, role: str, name: str, urls: list[str], count: int) -> None:
        self.stop_file = tmp / f"{role}.stop"
        self.outs = [tmp / f"{role}-{i}.jsonl" for i in range(count)]
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable, "-m", "tests.recipes.fault_worker", role,
                    "--endpoints", ",".join(urls), "--name", name, "--out", str(out),
                    "--stop", str(self.stop_file), "--ttl", str(TTL),
                ],
                cwd=REPO, env=env, stderr=open(str(out) + ".err", "w"),  # noqa: SIM115
            )
            for out in self.outs
        ]  # fmt: skip

    def records(self, kind: str | None = None) -> list[dict]:
        out = []
        for path in self.outs:
            if path.exists():
                for line in path.read_text().splitlines():
                    if line.strip():
                        rec = json.loads(line)
                        if kind is None or rec["kind"] == kind:
                            out.append(rec)
        return out

    def by_pid(self, pid: int) -> subprocess.Popen:
        return next(p for p in self.procs if p.pid == pid)

    def finish(self, timeout: float = 20.0) -> None:
        self.stop_file.touch()
        for p in self.procs:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def errors(self) -> str:
        return "\n".join(Path(str(o) + ".err").read_text()[-2000:] for o in self.outs)


def kill_leader(members: list[ServerProcess]) -> tuple[ServerProcess, float]:
    """kill -9 the Raft leader; (the survivors, the time a new leader was agreed on after the kill)."""
    old = wait_one_leader(members)
    leader = member_by_id(members, old)
    t0 = time.monotonic()
    leader.kill9()
    rest = [m for m in members if m is not leader]
    wait_one_leader(rest, 20, not_id=old)
    return leader, time.monotonic() - t0


def lock_holder(c: Client, directory: str) -> tuple[int, int] | None:
    """(pid, token) of the current lock holder, from the first in-order key."""
    try:
        children = c.get(directory, sorted=True, quorum=True).node.children()
    except ClientError:
        return None
    return (int((children[0].value or "").split(":")[1]), children[0].created_index) if children else None


def leader_holder(c: Client, key: str) -> tuple[int, int] | None:
    """(pid, token) of the current leader, from the election key."""
    try:
        node = c.get(key, quorum=True).node
    except ClientError:
        return None
    return int((node.value or "").split("-")[1]), node.created_index


def pause_holder(current: Callable[[], tuple[int, int] | None]) -> tuple[int, int, float]:
    """SIGSTOP the process holding the lock / leadership, making sure it still held it once stopped;
    (pid, its token, when it was stopped)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cur = current()
        if cur is None:
            time.sleep(0.02)
            continue
        os.kill(cur[0], signal.SIGSTOP)
        stopped = time.monotonic()
        # Still the holder once stopped, and still a little later (a release it sent just before the
        # stop would have landed by then): it was paused while holding.
        if current() == cur and (time.sleep(0.3) or current() == cur):
            return cur[0], cur[1], stopped
        os.kill(cur[0], signal.SIGCONT)  # it let go just before: try again
    raise AssertionError("could not pause a holder while it held")


def check_exclusive(records: list[dict], start: str, what: str) -> tuple[int, int, int]:
    """Tokens grow in grant order, lease intervals and fenced sections do not overlap; returns
    (sections the fence accepted, sections it refused, stale grants).

    A grant is stale when the lease had already lapsed by the time the worker noted it: the worker was
    paused between being granted and writing down the time, so its noted time is not the grant's.  It
    never held a valid lease (its interval is empty), and its token is checked by the fence instead."""
    ordered = sorted(records, key=lambda r: r[start])
    live = [r for r in ordered if r["end"] > r[start]]
    tokens = [r["token"] for r in live]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), f"{what}: tokens {tokens}"
    assert len({r["token"] for r in records}) == len(records), f"{what}: a token granted twice"
    for a, b in zip(live, live[1:], strict=False):
        assert a["end"] <= b[start], f"{what}: leases overlap: {a} {b}"
    accepted = sorted((r for r in records if r["fence"] == "ok"), key=lambda r: r["entered"])
    for a, b in zip(accepted, accepted[1:], strict=False):
        assert a["token"] < b["token"] and a["left"] < b["entered"], (
            f"{what}: fenced sections overlap: {a} {b}"
        )
    return len(accepted), len(records) - len(accepted), len(records) - len(live)


def test_lock_under_leader_kill_and_paused_holder(cluster: list[ServerProcess], tmp_path: Path) -> None:
    urls = endpoints(cluster)
    w = Workers(tmp_path, "lock", "faultlock", urls, 3)
    try:
        until("5 holds", lambda: len(w.records("hold")) >= 5, 30)
        _, failover = kill_leader(cluster)
        before = len(w.records("hold"))
        until("3 holds after the leader kill", lambda: len(w.records("hold")) >= before + 3, 30)
        with Client([m.url for m in cluster if m.proc.poll() is None]) as c:
            pid, _, paused_at = pause_holder(lambda: lock_holder(c, "/locks/faultlock"))
        handover = until(
            "another holder while paused",
            lambda: min(
                (r["acquired"] for r in w.records("hold") if r["pid"] != pid and r["acquired"] > paused_at),
                default=0,
            ),
            30,
        )
        assert isinstance(handover, float)
        until("paused past the TTL", lambda: time.monotonic() > paused_at + TTL + 1, TTL + 5)
        os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        until(
            "the paused one records again",
            lambda: any(
                r["pid"] == pid and r["end"] > paused_at or r["pid"] == pid and r["acquired"] > resumed
                for r in w.records("hold")
            ),
            30,
        )
        before = len(w.records("hold"))
        until("3 more holds", lambda: len(w.records("hold")) >= before + 3, 30)
    finally:
        w.finish()
    holds = w.records("hold")
    assert holds, w.errors()
    accepted, refused, stale = check_exclusive(holds, "acquired", "lock")
    print(
        f"\nFAULTS lock: holds={len(holds)} holders={len({r['pid'] for r in holds})} fence_accepted={accepted} "
        f"fence_refused={refused} stale_grants={stale} leader_failover={failover:.2f}s handover_after_pause={handover - paused_at:.2f}s "
        f"ttl={TTL}s"
    )


def test_election_under_leader_kill_and_paused_leader(cluster: list[ServerProcess], tmp_path: Path) -> None:
    urls = endpoints(cluster)
    observed: list[tuple[float, election.Leader | None]] = []
    obs_client = Client(urls)
    stop_obs = threading.Event()

    def observe() -> None:
        watcher = election.Election(obs_client, "faultelect")
        for leader in watcher.observe(poll_timeout=1):
            observed.append((time.monotonic(), leader))
            if stop_obs.is_set():
                return

    threading.Thread(target=observe, daemon=True).start()
    w = Workers(tmp_path, "leader", "faultelect", urls, 3)
    try:
        until("4 terms", lambda: len(w.records("term")) >= 4, 30)
        _, failover = kill_leader(cluster)
        before = len(w.records("term"))
        until("3 terms after the kill", lambda: len(w.records("term")) >= before + 3, 30)
        leader_now = until("a leader", lambda: next((ld for _, ld in reversed(observed) if ld), None), 20)
        assert isinstance(leader_now, election.Leader)
        pid = int(leader_now.value.split("-")[1])
        paused_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        takeover = until(
            "a new leader while paused",
            lambda: next(
                (t for t, ld in observed if t > paused_at and ld and ld.token > leader_now.token), 0
            ),
            30,
        )
        assert isinstance(takeover, float)
        until("paused past the TTL", lambda: time.monotonic() > paused_at + TTL + 1, TTL + 5)
        os.kill(pid, signal.SIGCONT)
        before = len(w.records("term"))
        until("3 more terms", lambda: len(w.records("term")) >= before + 3, 30)
    finally:
        stop_obs.set()
        w.finish()
    terms = w.records("term")
    accepted, refused, stale = check_exclusive(terms, "won", "election")
    seq = [ld for _, ld in observed]
    for a, b in zip(seq, seq[1:], strict=False):
        assert a is None or b is None, f"two leaders in a row observed: {a} then {b}"
    leaders = [ld for ld in seq if ld]
    assert [ld.token for ld in leaders] == sorted(ld.token for ld in leaders)
    print(
        f"\nFAULTS election: terms={len(terms)} candidates={len({r['pid'] for r in terms})} "
        f"observed_leaders={len(leaders)} observed_changes={len(seq)} fence_accepted={accepted} "
        f"fence_refused={refused} stale_grants={stale} leader_failover={failover:.2f}s takeover_after_pause={takeover - paused_at:.2f}s"
    )


def test_queue_items_taken_exactly_once(cluster: list[ServerProcess], tmp_path: Path) -> None:
    urls = endpoints(cluster)
    total = 120
    put_errors: list[str] = []
    w = Workers(tmp_path, "consumer", "faultq", urls, 3)

    def produce() -> None:
        with Client(urls) as c:
            q = queue.Queue(c, "faultq")
            for i in range(total):
                try:
                    q.put(f"item-{i}", timeout=30)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    put_errors.append(f"item-{i}: {e}")
                time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        until("30 items taken", lambda: len(w.records("item")) >= 30, 40)
        _, failover = kill_leader(cluster)
        until("60 items taken", lambda: len(w.records("item")) >= 60, 40)
        pid = w.records("item")[-1]["pid"]
        os.kill(pid, signal.SIGSTOP)
        until(
            "others take while one is paused",
            lambda: sum(1 for r in w.records("item") if r["pid"] != pid) >= 70,
            40,
        )
        os.kill(pid, signal.SIGCONT)
        producer.join(60)
        until("every item taken", lambda: len(w.records("item")) >= total - len(put_errors), 40)
    finally:
        w.finish()
        producer.join(5)
    assert not put_errors, put_errors
    taken = [r["value"] for r in w.records("item")]
    dupes = sorted({v for v in taken if taken.count(v) > 1})
    assert not dupes, f"taken more than once: {dupes}"
    assert sorted(taken) == sorted(f"item-{i}" for i in range(total))
    with Client([m.url for m in cluster if m.proc.poll() is None]) as c:
        left = queue.Queue(c, "faultq")
        assert left.size() == 0 and left.claimed() == []
    per = {
        pid: sum(1 for r in w.records("item") if r["pid"] == pid)
        for pid in {r["pid"] for r in w.records("item")}
    }
    print(
        f"\nFAULTS queue: items_put={total} items_taken={len(taken)} duplicates=0 lost=0 "
        f"per_consumer={sorted(per.values())} leader_failover={failover:.2f}s"
    )


def test_dead_instance_leaves_discovery(cluster: list[ServerProcess], tmp_path: Path) -> None:
    urls = endpoints(cluster)
    bound = TTL + ELECTION_TIMEOUT + EXPIRY_TICK + ALLOWANCE
    w = Workers(tmp_path, "instance", "faultsvc", urls, 3)
    with Client(urls) as c, discovery.ServiceDiscovery(c, "faultsvc", poll_timeout=1) as disc:
        removals: list[str] = []
        disc.add_listener(lambda e: removals.append(e.key.rsplit("/", 1)[1]) if e.kind == "removed" else None)
        try:
            until("3 instances", lambda: len(disc.instances()) == 3, 30)
            ids = {f"i{p.pid}": p for p in w.procs}
            killed, paused = w.procs[0], w.procs[1]
            # kill -9 an instance and the Raft leader at once: expiry waits for the new leader.
            t0 = time.monotonic()
            killed.kill()
            _, failover = kill_leader(cluster)
            until(
                "killed instance gone", lambda: f"i{killed.pid}" not in {i.id for i in disc.instances()}, 20
            )
            gone_killed = time.monotonic() - t0
            # SIGSTOP another past its TTL: gone, then back after SIGCONT (its keep-alive re-registers).
            t1 = time.monotonic()
            os.kill(paused.pid, signal.SIGSTOP)
            until(
                "paused instance gone", lambda: f"i{paused.pid}" not in {i.id for i in disc.instances()}, 20
            )
            gone_paused = time.monotonic() - t1
            os.kill(paused.pid, signal.SIGCONT)
            t2 = time.monotonic()
            until("paused instance back", lambda: f"i{paused.pid}" in {i.id for i in disc.instances()}, 20)
            back = time.monotonic() - t2
            survivors = {f"i{p.pid}" for p in w.procs[1:]}
            until("both survivors listed", lambda: {i.id for i in disc.instances()} == survivors, 20)
            balancer = discovery.RoundRobinBalancer(disc)
            picked = {balancer.pick().id for _ in range(6)}
            assert picked == survivors and set(ids) >= picked
        finally:
            w.finish()
        until("clean exits deregistered", lambda: disc.instances() == [], 20)
    print(
        f"\nFAULTS discovery: instances=3 gone_after_kill9_with_leader_kill={gone_killed:.2f}s "
        f"gone_after_sigstop={gone_paused:.2f}s back_after_sigcont={back:.2f}s leader_failover={failover:.2f}s "
        f"bound={bound:.1f}s (ttl {TTL}s + election {ELECTION_TIMEOUT}s + expiry tick {EXPIRY_TICK}s + {ALLOWANCE}s) "
        f"removals_of_the_live_instance={removals.count(f'i{w.procs[2].pid}') - 1}"
    )
    assert gone_killed <= bound and gone_paused <= bound


def test_watcher_resumes_across_leader_kill_and_a_stalled_reader(cluster: list[ServerProcess]) -> None:
    """Pub/sub: a ResumableWatcher keeps an exact copy of a subtree while the member it reads from (the
    leader) is killed, and while its reader stalls long enough for etcd's 1000-event history to move
    past it (error 401: it lists again).  Its copy always ends equal to the store's."""
    urls = endpoints(cluster)
    leader = member_by_id(cluster, wait_one_leader(cluster))
    order = [leader.url] + [u for u in urls if u != leader.url]  # the watcher reads from the leader
    state: dict[str, str] = {}
    kinds = {"resync": 0, "event": 0}
    stalled = threading.Event()
    resume = threading.Event()
    watcher = None

    def follow() -> None:
        nonlocal watcher

        with Client(order) as c:
            watcher = ResumableWatcher(c, "/cfg", poll_timeout=1.0)
            for item in watcher:
                if isinstance(item, Resync):
                    kinds["resync"] += 1
                    state.clear()
                    state.update({k: n.value or "" for k, n in item.leaves().items()})
                else:
                    kinds["event"] += 1
                    node = item.node
                    if node is None or node.dir:
                        continue
                    if item.action in ("delete", "compareAndDelete", "expire"):
                        state.pop(node.key, None)
                    else:
                        state[node.key] = node.value or ""
                if stalled.is_set():
                    resume.wait(60)
                    stalled.clear()

    t = threading.Thread(target=follow, daemon=True)
    t.start()

    def write(c: Client, i: int) -> None:
        for _attempt in range(50):
            try:
                c.set(f"/cfg/k{i % 40}", f"v{i}")
                return
            except ClientError:
                time.sleep(0.1)
        raise AssertionError(f"write {i} never acknowledged")

    try:
        with Client(urls) as c:
            for i in range(50):
                write(c, i)
            until("the watcher caught up", lambda: state.get("/cfg/k9") == "v49", 20)
            _, failover = kill_leader(cluster)
            live = [m.url for m in cluster if m.proc.poll() is None]
            with Client(live) as c2:
                for i in range(50, 100):
                    write(c2, i)
                until("the watcher follows after the kill", lambda: state.get("/cfg/k19") == "v99", 30)
                stalled.set()
                until("the reader stalls", lambda: kinds["event"] > 0 and stalled.is_set(), 10)
                for i in range(100, 1300):  # more than the 1000 events etcd's history keeps
                    write(c2, i)
                resume.set()
                until("the watcher relisted and caught up", lambda: state.get("/cfg/k19") == "v1299", 40)
                final = {
                    n.key: n.value or "" for n in c2.get("/cfg", recursive=True).node.leaves() if not n.dir
                }
        assert state == final
        assert kinds["resync"] >= 2, kinds  # the first listing, and the one after error 401
    finally:
        if watcher is not None:
            watcher.stop()
        resume.set()
        t.join(10)
    print(
        f"\nFAULTS watch: events={kinds['event']} listings={kinds['resync']} keys={len(state)} "
        f"leader_failover={failover:.2f}s state_equal=True"
    )


def test_semaphore_under_leader_kill_and_paused_holder(cluster: list[ServerProcess], tmp_path: Path) -> None:
    """Never more than the semaphore's limit of live holds at once (leases as monotonic-clock intervals,
    from acquisition to the earlier of release and lease expiry), through a leader kill and a holder
    paused past its TTL."""
    urls = endpoints(cluster)
    w = Workers(tmp_path, "semaphore", "faultsem", urls, 4)
    try:
        until("6 holds", lambda: len(w.records("hold")) >= 6, 30)
        _, failover = kill_leader(cluster)
        before = len(w.records("hold"))
        until("4 holds after the leader kill", lambda: len(w.records("hold")) >= before + 4, 30)
        pid = w.records("hold")[-1]["pid"]
        os.kill(pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        until("paused past the TTL", lambda: time.monotonic() > paused_at + TTL + 1, TTL + 5)
        os.kill(pid, signal.SIGCONT)
        before = len(w.records("hold"))
        until("4 more holds", lambda: len(w.records("hold")) >= before + 4, 30)
    finally:
        w.finish()
    holds = w.records("hold")
    assert holds, w.errors()
    edges = sorted([(r["acquired"], 1) for r in holds] + [(r["end"], -1) for r in holds])
    most = live = 0
    for _, step in edges:
        live += step
        most = max(most, live)
    assert most <= SEMAPHORE_LIMIT, f"{most} holds at once"
    print(
        f"\nFAULTS semaphore: holds={len(holds)} holders={len({r['pid'] for r in holds})} "
        f"limit={SEMAPHORE_LIMIT} most_at_once={most} leader_failover={failover:.2f}s ttl={TTL}s"
    )


def test_counter_adds_through_a_leader_kill(cluster: list[ServerProcess]) -> None:
    """Coordination: four clients add to one compare-and-swap counter while the leader is killed; the
    final value is exactly the acknowledged adds plus those whose outcome was unknown and did land
    (never a lost or doubled acknowledged add), and each value handed back is unique."""
    urls = endpoints(cluster)
    acked: list[int] = []
    unknown = 0
    lock_ = threading.Lock()
    stop = threading.Event()

    def adder() -> None:
        nonlocal unknown
        with Client(urls, timeout=2.0) as c:
            counter = coordination.Counter(c, "/counters/faults")
            while not stop.is_set():
                try:
                    got = counter.add(1)
                except OutcomeUnknown:
                    with lock_:
                        unknown += 1
                    continue
                except ClientError:
                    time.sleep(0.05)
                    continue
                with lock_:
                    acked.append(got.value)

    threads = [threading.Thread(target=adder, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        until("50 adds", lambda: len(acked) >= 50, 30)
        _, failover = kill_leader(cluster)
        before = len(acked)
        until("50 adds after the kill", lambda: len(acked) >= before + 50, 30)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    with Client([m.url for m in cluster if m.proc.poll() is None]) as c:
        final = coordination.Counter(c, "/counters/faults").value()
    assert len(set(acked)) == len(acked), "two adds handed back the same value"
    assert len(acked) <= final <= len(acked) + unknown, (len(acked), unknown, final)
    print(
        f"\nFAULTS counter: acknowledged_adds={len(acked)} unknown_outcomes={unknown} final={final} "
        f"leader_failover={failover:.2f}s"
    )


def test_double_barrier_rounds_through_a_leader_kill(cluster: list[ServerProcess]) -> None:
    """Coordination: three participants go through double-barrier rounds (all enter, then all leave)
    while the leader is killed; no participant leaves a round before every one of them entered it."""
    urls = endpoints(cluster)
    rounds = 6
    log: list[tuple[int, str, int]] = []
    lk = threading.Lock()
    errors: list[str] = []

    def participant(i: int) -> None:
        with Client(urls, timeout=2.0) as c:
            for r in range(rounds):
                b = coordination.DoubleBarrier(c, f"faultbarrier-{r}", 3, ttl=10, poll=0.5)
                if not b.enter(timeout=30):
                    errors.append(f"{i} could not enter round {r}")
                    return
                with lk:
                    log.append((r, "enter", i))
                time.sleep(0.1)
                if not b.leave(timeout=30):
                    errors.append(f"{i} could not leave round {r}")
                    return
                with lk:
                    log.append((r, "leave", i))

    threads = [threading.Thread(target=participant, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    until("a round done", lambda: sum(1 for e in log if e[1] == "leave") >= 3, 30)
    _, failover = kill_leader(cluster)
    for t in threads:
        t.join(90)
    assert not errors, errors
    for r in range(rounds):
        entered = [k for k, e in enumerate(log) if e[0] == r and e[1] == "enter"]
        left = [k for k, e in enumerate(log) if e[0] == r and e[1] == "leave"]
        assert len(entered) == 3 and len(left) == 3, (r, log)
        assert max(entered) < min(left), f"round {r}: someone left before all entered"
    print(f"\nFAULTS barrier: rounds={rounds} participants=3 leader_failover={failover:.2f}s")
