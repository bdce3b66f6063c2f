"""Every example in examples/ runs against a real fastkv member and prints what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, url: str) -> tuple[int, list[str]]:
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--endpoints", url], capture_output=True, text=True, timeout=90
    )
    assert p.returncode in (0, 5), p.stderr
    return p.returncode, p.stdout.splitlines()


def test_every_example_is_tested() -> None:
    tested = {
        n.removeprefix("test_") + ".py"
        for n in globals()
        if n.startswith("test_")
        and n not in ("test_every_example_is_tested", "test_example_has_help_and_endpoints_flag")
    }
    # test_*.py are pytest files (the pytest plugin's sample user test), run by pytest itself.
    assert {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_")} == tested


def test_service_discovery(member_url: str) -> None:
    code, out = run_example("service_discovery.py", member_url)
    assert code == 0
    assert out == [
        "event: added a",
        "event: added b",
        "round robin: a a b b",
        "event: removed a",
        "a dropped after its TTL: True",
        "live: b=10.0.0.2:8080",
        "event: removed b",
        "live after b left: none",
    ]


def test_config_watch(member_url: str) -> None:
    code, out = run_example("config_watch.py", member_url)
    assert out == [
        "added: /db/url = postgres://db1:5432",
        "updated: /db/url = postgres://db2:5432",
        "added: /feature/search = on",
        "removed: /feature/search = None",
        "view: True",
    ]


def test_locks(member_url: str) -> None:
    _, out = run_example("locks.py", member_url)
    assert out == ["holders: 3 tokens increasing: True", "third permit: timed out (limit 2)"]


def test_work_queue(member_url: str) -> None:
    _, out = run_example("work_queue.py", member_url)
    assert out == ["queued: 10", "taken: 10 distinct: 10", "priority order: page-oncall reindex cleanup"]


def test_coordination(member_url: str) -> None:
    _, out = run_example("coordination.py", member_url)
    assert out == [
        "barrier: waiter passed after release: True",
        "double barrier: enter enter enter leave leave leave",
        "counter: 100",
    ]


def test_leader_election(member_url: str) -> None:
    _, out = run_example("leader_election.py", member_url)
    observed = [line for line in out if line.startswith("observed leader:")]
    assert observed == [f"observed leader: {v}" for v in ("(none)", "alpha", "(none)", "beta", "(none)")]
    assert sorted(set(out) - set(observed)) == [
        "alpha leads: True",
        "beta leads: True",
        "terms in order: True",
    ]


def test_cluster_monitor(member_url: str) -> None:
    code, out = run_example("cluster_monitor.py", member_url)
    assert code == 0
    member_id = out[0].split()[1]
    assert out == [
        f"member {member_id} is healthy: got healthy result from {member_url}",
        "cluster is healthy",
        f"member {member_id} (default): leader",
        f"cluster leader: {member_id}",
    ]


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_"))
)
def test_example_has_help_and_endpoints_flag(name: str) -> None:
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--help"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0 and "--endpoints" in p.stdout
