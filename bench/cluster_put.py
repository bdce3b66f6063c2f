"""Cluster write throughput: PUT with 100-byte values at 1 and 64 connections against a
3-member fastkv cluster and a 3-member etcd cluster, all members on this machine.

Every run starts a fresh cluster (tests.support.procs.start_cluster), waits until
GET /v2/members/leader names a leader and one PUT through the target member succeeds, then
drives wrk with bench/put.lua at the target member's client URL: the leader by default,
or a follower with --target follower (each write is then forwarded to the leader).  Each
write is acknowledged only once a quorum has it durably (fdatasync) in its log, on both
systems.  The systems are alternated run by run after a one-second warm-up; the report
gives the median of the runs, their spread and the ratio fastkv/etcd.  A run with any
non-2xx answer or socket error, or whose cluster did not come up, counts as failed and is
reported as such, not averaged in; the tails of the member logs of a failed run are printed
and kept in the JSON.  A leader change during the measurement is recorded with the run.

    python -m bench.cluster_put [--runs 3] [--duration 5] [--connections 1,64] [--target leader]

Results are written to bench/results/cluster_put.json (cluster_put_follower.json for
--target follower, unless --out says otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.procs import ServerProcess, start_cluster  # noqa: E402

from bench.put_throughput import run_wrk  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SIZE = 3
READY_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 3000


def leader_client_url(members: list[ServerProcess], timeout: float = READY_TIMEOUT_S) -> str:
    """The client URL of the current leader, asking each member in turn until one names it."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for m in members:
            try:
                with urllib.request.urlopen(m.url + "/v2/members/leader", timeout=1) as r:
                    urls = json.loads(r.read()).get("clientURLs") or []
                    if urls:
                        return urls[0].rstrip("/")
            except Exception as e:  # noqa: BLE001 - during election (503) or still starting
                last = e
        time.sleep(0.05)
    raise TimeoutError(f"no leader within {timeout}s: {last}")


def wait_write_ok(url: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Block until one PUT through ``url`` is acknowledged (the commit path works end to end)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        req = urllib.request.Request(
            url + "/v2/keys/bench/ready",
            data=b"value=1",
            method="PUT",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status in (200, 201):
                    return
        except Exception as e:  # noqa: BLE001 - e.g. 500/503 while the leader settles
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"no write acknowledged through {url} within {timeout}s: {last}")


def pick_target(members: list[ServerProcess], leader_url: str, target: str) -> str:
    if target == "leader":
        return leader_url
    followers = [m.url for m in members if m.url != leader_url]
    if not followers:
        raise RuntimeError(f"leader {leader_url} is not among the members' client URLs")
    return followers[0]


def log_tails(members: list[ServerProcess]) -> dict[str, str]:
    tails = {}
    for m in members:
        try:
            tails[m.url] = m.log()[-LOG_TAIL_CHARS:]
        except OSError as e:
            tails[m.url] = f"<log unreadable: {e}>"
    return tails


def one_run(kind: str, connections: int, duration_s: int, target: str) -> dict[str, object]:
    """One fresh cluster, one measurement.  Never raises: a failure is returned as a run
    with ``error`` set (and the member logs), so the other runs still complete."""
    tmp = tempfile.mkdtemp(prefix=f"bench-cluster-{kind}-")
    members: list[ServerProcess] = []
    run: dict[str, object] = {}
    try:
        members = start_cluster(kind, size=CLUSTER_SIZE, base_dir=tmp, token=f"bench-{kind}")
        leader = leader_client_url(members)
        url = pick_target(members, leader, target)
        wait_write_ok(url)
        run_wrk(url, connections, 1)  # warm-up: connections, caches, WAL preallocation
        run.update(run_wrk(url, connections, duration_s))
        leader_after = leader_client_url(members, timeout=5.0)
        run["leader_changed"] = leader_after != leader
        if run["non2xx"] or run["sockerr"]:  # type: ignore[truthy-bool]
            run["logs"] = log_tails(members)
    except Exception as e:  # noqa: BLE001 - report and carry on with the other runs
        run["error"] = f"{type(e).__name__}: {e}"
        run["logs"] = log_tails(members)
    finally:
        for m in members:
            m.stop()
            if m.proc.poll() is None:
                m.stop(signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return run


def is_ok(r: dict[str, object]) -> bool:
    return "error" not in r and r["non2xx"] == 0 and r["sockerr"] == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", default="1,64")
    ap.add_argument("--systems", default="fastkv,etcd")
    ap.add_argument("--target", choices=("leader", "follower"), default="leader")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    out = args.out or os.path.join(
        HERE, "results", "cluster_put.json" if args.target == "leader" else "cluster_put_follower.json"
    )
    systems = args.systems.split(",")
    conns = [int(c) for c in args.connections.split(",")]
    runs: dict[str, dict[int, list[dict[str, object]]]] = {s: {c: [] for c in conns} for s in systems}
    for c in conns:
        for i in range(args.runs):
            for s in systems:  # alternate the systems run by run
                r = one_run(s, c, args.duration, args.target)
                runs[s][c].append(r)
                head = f"[{c:>3} conn] run {i + 1}/{args.runs} {s:>6}:"
                if "error" in r:
                    print(f"{head} FAILED {r['error']}", flush=True)
                else:
                    bad = r["non2xx"] + r["sockerr"]  # type: ignore[operator]
                    print(
                        f"{head} {r['rps']:9.0f} req/s "
                        f"p50 {r['p50_us'] / 1000:.2f} ms p99 {r['p99_us'] / 1000:.2f} ms"  # type: ignore[operator]
                        + (f"  ERRORS: {bad:.0f}" if bad else "")
                        + ("  LEADER CHANGED" if r["leader_changed"] else ""),
                        flush=True,
                    )
                if "logs" in r:
                    for url, tail in r["logs"].items():  # type: ignore[attr-defined]
                        print(f"--- {s} member {url} log tail:\n{tail}", file=sys.stderr, flush=True)
    summary: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cluster_size": CLUSTER_SIZE,
        "target": args.target,
        "duration_s": args.duration,
        "value_bytes": 100,
        "results": {},
    }
    print()
    for c in conns:
        row: dict[str, object] = {}
        for s in systems:
            ok = [float(r["rps"]) for r in runs[s][c] if is_ok(r)]  # type: ignore[arg-type]
            measured = [r for r in runs[s][c] if "error" not in r]
            row[s] = {
                "median_rps": statistics.median(ok) if ok else None,
                "min_rps": min(ok) if ok else None,
                "max_rps": max(ok) if ok else None,
                "failed_runs": len(runs[s][c]) - len(ok),
                "median_p99_ms": (
                    statistics.median(float(r["p99_us"]) / 1000 for r in measured)  # type: ignore[arg-type]
                    if measured
                    else None
                ),
                "runs": runs[s][c],
            }
        if "fastkv" in row and "etcd" in row:
            f, e = row["fastkv"]["median_rps"], row["etcd"]["median_rps"]  # type: ignore[index]
            row["ratio_fastkv_over_etcd"] = (f / e) if f and e else None
        summary["results"][str(c)] = row  # type: ignore[index]
        line = "  ".join(
            f"{s} {row[s]['median_rps'] or 0:,.0f}/s"  # type: ignore[index]
            + (f" ({row[s]['failed_runs']} failed)" if row[s]["failed_runs"] else "")  # type: ignore[index]
            for s in systems
        )
        ratio = row.get("ratio_fastkv_over_etcd")
        print(
            f"PUT {c:>3} connections, {CLUSTER_SIZE} members, to {args.target}: {line}"
            + (f"  ratio {ratio:.2f}" if ratio else "")
        )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(summary, fh, indent=2)
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
