"""Randomized simulations: many seeds of 3 and 5 members over a lossy, reordering, partitioning network.

FASTKV_SIM_SEEDS scales the number of seeds (default 300 for 3 members and 200 for 5);
FASTKV_SIM_STEPS the steps per seed.  A failure names its seed: rerun it with
``Cluster(n, seed).run(steps)`` to replay it exactly.
"""

from __future__ import annotations

import os

import pytest

from .sim import Cluster, Faults

SEEDS = int(os.environ.get("FASTKV_SIM_SEEDS", "300"))
STEPS = int(os.environ.get("FASTKV_SIM_STEPS", "1000"))


def run_seeds(n: int, seeds: range, **options: object) -> tuple[int, int, int]:
    committed = reads = leaders = 0
    for seed in seeds:
        c = Cluster(n, seed, **options)
        try:
            c.run(STEPS)
            c.settle()
        except AssertionError as e:
            raise AssertionError(f"{n} members, seed {seed}: {e}") from e
        committed += len(c.committed)
        reads += c.reads_done
        leaders += len(c.leader_of_term)
    return committed, reads, leaders


@pytest.mark.timeout(600)
def test_three_members_many_seeds() -> None:
    committed, reads, leaders = run_seeds(3, range(SEEDS))
    # The faults must not have made the run trivial: entries commit, reads complete, leaders change.
    assert committed > SEEDS * 10 and reads > SEEDS and leaders > SEEDS


@pytest.mark.timeout(600)
def test_five_members_many_seeds() -> None:
    seeds = range(10_000, 10_000 + SEEDS * 2 // 3)
    committed, reads, leaders = run_seeds(5, seeds)
    assert committed > len(seeds) * 10 and reads > len(seeds) and leaders > len(seeds)


@pytest.mark.timeout(600)
def test_without_pre_vote_and_check_quorum() -> None:
    seeds = range(20_000, 20_000 + max(SEEDS // 6, 10))
    committed, _, _ = run_seeds(3, seeds, pre_vote=False, check_quorum=False)
    assert committed > len(seeds) * 10


@pytest.mark.timeout(600)
def test_heavy_faults() -> None:
    faults = Faults(drop=0.2, duplicate=0.1, max_delay=12, partition=0.03, crash=0.02, compact=0.05)
    seeds = range(30_000, 30_000 + max(SEEDS // 6, 10))
    for seed in seeds:
        c = Cluster(5, seed, faults=Faults(**faults.__dict__))
        try:
            c.run(STEPS)
            c.settle()
        except AssertionError as e:
            raise AssertionError(f"heavy faults, seed {seed}: {e}") from e


@pytest.mark.timeout(600)
def test_membership_changes() -> None:
    """Single-member adds and removes under the same faults (the spare member joins, voters leave)."""
    seeds = range(40_000, 40_000 + max(SEEDS // 3, 10))
    changed = 0
    for n in (3, 5):
        for seed in seeds:
            c = Cluster(n, seed, faults=Faults(conf_change=0.03))
            try:
                c.run(STEPS)
                c.settle()
            except AssertionError as e:
                raise AssertionError(f"membership, {n} members, seed {seed}: {e}") from e
            voters = next(m.node.voters for m in c.leaders())
            changed += voters != c.ids
    assert changed > len(seeds) // 2
