"""What a run is judged by, once the faults are healed and the load stopped.

- convergence: every member serves the same store index and the same tree (plain reads);
- acknowledged writes lost: an acknowledged ``acked/`` key missing (or different) on any member;
- late-applied errored writes: a value whose write was answered with an error, seen afterwards
  (read by a client, or in a member's final tree);
- linearizability of the register history, final quorum reads through every member included;
- unavailability: per fault, the longest stretch without any successful operation, from the
  fault's start until a second after the cluster answered again.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.nemesis.workload import KEYS, Load
from tests.support.history import Ambiguous, NotSent, call
from tests.support.linearizability import Operation, Verdict, check, read
from tests.support.procs import ServerProcess


def _tree(url: str) -> tuple[str | None, Any]:
    """(X-Etcd-Index, root node) of a plain recursive read."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/v2/keys/?recursive=true&sorted=true&quorum=false")
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"null")
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {body}")
        return resp.getheader("X-Etcd-Index"), body["node"]
    finally:
        conn.close()


def flatten(node: dict[str, Any], out: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """key (no leading slash) -> value for every leaf of a recursive listing."""
    out = {} if out is None else out
    for child in node.get("nodes", []) or []:
        if child.get("dir"):
            flatten(child, out)
        else:
            out[child["key"].lstrip("/")] = child.get("value")
    return out


@dataclass
class Converged:
    ok: bool
    detail: str
    trees: dict[str, dict[str, str | None]] = field(default_factory=dict)  # url -> flattened tree


def wait_converged(members: list[ServerProcess], timeout: float = 30.0) -> Converged:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            views = {m.url: _tree(m.url) for m in members}
            indexes = {url: v[0] for url, v in views.items()}
            nodes = {url: json.dumps(v[1], sort_keys=True) for url, v in views.items()}
            if len(set(indexes.values())) == 1 and len(set(nodes.values())) == 1:
                return Converged(
                    True,
                    f"index {next(iter(indexes.values()))}",
                    {u: flatten(v[1]) for u, v in views.items()},
                )
            last = f"indexes {indexes}; trees equal: {len(set(nodes.values())) == 1}"
        except (OSError, RuntimeError, http.client.HTTPException, ValueError) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            trees: dict[str, dict[str, str | None]] = {}
            for m in members:
                try:
                    trees[m.url] = flatten(_tree(m.url)[1])
                except (OSError, RuntimeError, http.client.HTTPException, ValueError):
                    trees[m.url] = {}
            return Converged(False, f"not converged within {timeout}s: {last}", trees)
        time.sleep(0.2)


def final_reads(members: list[ServerProcess]) -> list[Operation]:
    """A quorum read of every register through every member (clients 100+), for the checker."""
    ops: list[Operation] = []
    for i, m in enumerate(members):
        for key in KEYS:
            start = time.monotonic_ns()
            try:
                status, body = call(m.url, "GET", f"/v2/keys/{key}?quorum=true", timeout=5)
            except (Ambiguous, NotSent):
                continue
            ret = time.monotonic_ns()
            if status == 200:
                ops.append(read(key, start, ret, body["node"]["value"], 100 + i))
            elif status == 404:
                ops.append(read(key, start, ret, None, 100 + i))
    return ops


def lost_acknowledged(acked: dict[str, str], trees: dict[str, dict[str, str | None]]) -> dict[str, list[str]]:
    """key -> the member URLs that lack it (or hold another value)."""
    lost: dict[str, list[str]] = {}
    for key, value in acked.items():
        bad = [url for url, tree in trees.items() if tree.get(key) != value]
        if bad:
            lost[key] = bad
    return lost


def late_applied(load: Load, history: list[Operation], trees: dict[str, dict[str, str | None]]) -> list[str]:
    """Writes answered with an error whose effect was seen afterwards."""
    out: list[str] = []
    errored = dict(load.rec.errored)
    seen_values = {op.value for op in history if op.kind == "read" and op.value is not None}
    for tree in trees.values():
        seen_values.update(v for k, v in tree.items() if k in KEYS and v is not None)
    out += [f"{what} (value seen later)" for value, what in errored.items() if value in seen_values]
    for key, why in load.errored_keys().items():
        holders = [url for url, tree in trees.items() if key in tree]
        if holders:
            out.append(f"PUT {key}: answered {why}, present on {holders}")
    return out


def longest_gap_s(successes: list[int], start_ns: int, end_ns: int) -> float:
    """The longest stretch within [start, end] with no successful operation (seconds); a stretch
    still open at ``end`` runs until the first success after it, if any."""
    points = sorted(t for t in successes if start_ns < t <= end_ns)
    after = [t for t in successes if t > end_ns]
    marks = [start_ns, *points, min(after) if after else end_ns]
    return max(b - a for a, b in zip(marks, marks[1:], strict=False)) / 1e9 if len(marks) > 1 else 0.0


@dataclass
class Verdicts:
    converged: Converged
    linearizable: str
    lin_detail: str
    lost: dict[str, list[str]]
    late: list[str]
    ops: int
    acked: int

    @property
    def passed(self) -> bool:
        return self.converged.ok and self.linearizable == Verdict.OK.value and not self.lost and not self.late


def judge(members: list[ServerProcess], load: Load, budget_s: float = 60.0) -> Verdicts:
    converged = wait_converged(members)
    history = load.history() + final_reads(members)
    result = check(history, budget_s=budget_s)
    acked = load.acked()
    return Verdicts(
        converged=converged,
        linearizable=result.verdict.value,
        lin_detail="" if result.verdict is Verdict.OK else result.explain()[:4000],
        lost=lost_acknowledged(acked, converged.trees),
        late=late_applied(load, history, converged.trees),
        ops=len(history),
        acked=len(acked),
    )
