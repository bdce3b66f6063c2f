"""The fault classes.  Each one hurts the cluster and returns how to undo it; the runner holds
the fault for a seeded while, undoes it, then waits until every member answers again.

A class needs one ability of the cluster (``Cluster.supports``): ``process`` (signals), ``partition``
(per-pair links), ``disk`` (the LD_PRELOAD library of faultlib.c), ``clock`` (the same library) or ``membership``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.nemesis.cluster import Cluster
from tests.support.procs import ServerProcess

Heal = Callable[[], None]


@dataclass(frozen=True)
class FaultClass:
    name: str
    needs: str
    doc: str
    inject: Callable[[Cluster, random.Random], Heal]


def _nothing() -> None:
    return None


def _leader_or_any(cluster: Cluster, rng: random.Random) -> ServerProcess:
    """The leader half of the time, else any member (a follower being hurt matters too)."""
    if rng.random() < 0.5:
        return cluster.leader()
    return rng.choice(cluster.live())


def kill_leader(cluster: Cluster, rng: random.Random) -> Heal:
    victim = cluster.leader()
    cluster.kill9(victim)
    return lambda: cluster.start(victim, wait=False)


def kill_member(cluster: Cluster, rng: random.Random) -> Heal:
    victim = rng.choice(cluster.live())
    cluster.kill9(victim)
    return lambda: cluster.start(victim, wait=False)


def kill_all(cluster: Cluster, rng: random.Random) -> Heal:
    members = cluster.live()
    for m in members:
        cluster.kill9(m)

    def heal() -> None:
        for m in members:
            cluster.start(m, wait=False)

    return heal


def fast_restart(cluster: Cluster, rng: random.Random) -> Heal:
    """kill -9 and start again at once, a few times in a row, without waiting for the member
    to catch up (or even to answer) in between: a crash loop."""
    for _ in range(rng.randint(2, 4)):
        victim = _leader_or_any(cluster, rng)
        cluster.kill9(victim)
        cluster.start(victim, wait=False)
        time.sleep(rng.uniform(0.05, 0.6))
    return _nothing


def pause(cluster: Cluster, rng: random.Random) -> Heal:
    victim = _leader_or_any(cluster, rng)
    cluster.pause(victim)
    return lambda: cluster.resume(victim)


def isolate_leader(cluster: Cluster, rng: random.Random) -> Heal:
    victim = cluster.leader()
    for other in cluster.live():
        if other is not victim:
            cluster.block(victim, other)
            cluster.block(other, victim)
    return cluster.heal_links


def one_way(cluster: Cluster, rng: random.Random) -> Heal:
    """What one member sends (or what it receives) is lost; the other direction still flows."""
    victim = _leader_or_any(cluster, rng)
    inbound = rng.random() < 0.5
    for other in cluster.live():
        if other is not victim:
            if inbound:
                cluster.block(other, victim)
            else:
                cluster.block(victim, other)
    return cluster.heal_links


def bridge(cluster: Cluster, rng: random.Random) -> Heal:
    """Two members cannot hear each other; both still hear the third (the bridge)."""
    members = cluster.live()
    hub = rng.choice(members)
    a, b = [m for m in members if m is not hub][:2]
    cluster.block(a, b)
    cluster.block(b, a)
    return cluster.heal_links


def _disk(fault: str) -> Callable[[Cluster, random.Random], Heal]:
    def inject(cluster: Cluster, rng: random.Random) -> Heal:
        victim = _leader_or_any(cluster, rng)
        cluster.set_disk(victim, fault)

        def heal() -> None:
            cluster.set_disk(victim, "")
            time.sleep(0.05)  # the library re-reads its control file every 20 ms
            if not cluster.running(victim):
                code = victim.proc.returncode
                cluster.log(f"{cluster.name_of(victim)} had exited ({code}) under the {fault} fault")
                cluster.start(victim, wait=False)

        return heal

    return inject


def clock_jump(cluster: Cluster, rng: random.Random) -> Heal:
    victim = _leader_or_any(cluster, rng)
    offset = rng.choice((-1, 1)) * rng.randint(60, 3 * 3600)
    cluster.set_clock(victim, offset)
    return lambda: cluster.set_clock(victim, 0)


def membership(cluster: Cluster, rng: random.Random) -> Heal:
    """Remove a member through the members API and add a fresh one, under load."""
    victim = _leader_or_any(cluster, rng)
    cluster.replace_member(victim)
    return _nothing


CLASSES: dict[str, FaultClass] = {
    c.name: c
    for c in (
        FaultClass("kill-leader", "process", "kill -9 of the leader, restarted after the hold", kill_leader),
        FaultClass(
            "kill-member", "process", "kill -9 of a random member, restarted after the hold", kill_member
        ),
        FaultClass("kill-all", "process", "kill -9 of every member at once, all restarted", kill_all),
        FaultClass("fast-restart", "process", "2-4 kill -9 + immediate restarts in a row", fast_restart),
        FaultClass("sigstop", "process", "SIGSTOP of the leader or a member, SIGCONT after the hold", pause),
        FaultClass("isolate-leader", "partition", "the leader cut off both ways", isolate_leader),
        FaultClass("one-way", "partition", "all a member sends, or all it receives, dropped", one_way),
        FaultClass("bridge", "partition", "two members cut from each other, both reach the third", bridge),
        FaultClass("fsync-eio", "disk", "fsync/fdatasync fail with EIO on a member", _disk("fsync")),
        FaultClass("disk-full", "disk", "writes to files fail with ENOSPC on a member", _disk("enospc")),
        FaultClass("clock-jump", "clock", "a member's wall clock steps by 1 min - 3 h", clock_jump),
        FaultClass(
            "membership", "membership", "member remove + add of a fresh member under load", membership
        ),
    )
}

MIXED = "mixed"
# "mixed" picks each fault from every class the cluster supports, except membership (its new
# member has no fault proxy, so later link faults could not reach it).
MIXED_EXCLUDES = {"membership"}


def available(cluster_supports: Callable[[str], bool]) -> list[str]:
    return [name for name, c in CLASSES.items() if cluster_supports(c.needs)]
