"""Write throughput: PUT with 100-byte values at 1 and 64 connections, fastkv against etcd.

Both servers run on this machine, one at a time, with fdatasync before acknowledging
(etcd's default; fastkv's only mode).  The load generator is wrk (C, event-driven) with
bench/put.lua, so the client costs far less CPU than either server.  The systems are
alternated run by run after a warm-up; the report gives the median of the runs, their
spread and the ratio fastkv/etcd.  A run with any non-2xx answer or socket error counts
as failed and is reported as such, not averaged in.

    python -m bench.put_throughput [--runs 3] [--duration 5] [--connections 1,64]

Results are written to bench/results/put_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.procs import start_server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULT_RE = re.compile(r"RESULT (.*)")


def run_wrk(url: str, connections: int, duration_s: int) -> dict[str, float]:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{duration_s}s",
            "--latency",
            "-s",
            os.path.join(HERE, "put.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=True,
    ).stdout
    m = RESULT_RE.search(out)
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    fields = dict(kv.split("=") for kv in m.group(1).split())
    r = {k: float(v) for k, v in fields.items()}
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def one_run(kind: str, connections: int, duration_s: int) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    srv = start_server(kind, data_dir=tmp)
    try:
        run_wrk(srv.url, connections, 1)  # warm-up: connections, caches, WAL preallocation
        return run_wrk(srv.url, connections, duration_s)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", default="1,64")
    ap.add_argument("--systems", default="fastkv,etcd")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "put_throughput.json"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    systems = args.systems.split(",")
    conns = [int(c) for c in args.connections.split(",")]
    runs: dict[str, dict[int, list[dict[str, float]]]] = {s: {c: [] for c in conns} for s in systems}
    for c in conns:
        for i in range(args.runs):
            for s in systems:  # alternate the systems run by run
                r = one_run(s, c, args.duration)
                runs[s][c].append(r)
                bad = r["non2xx"] + r["sockerr"]
                print(
                    f"[{c:>3} conn] run {i + 1}/{args.runs} {s:>6}: {r['rps']:9.0f} req/s "
                    f"p50 {r['p50_us'] / 1000:.2f} ms p99 {r['p99_us'] / 1000:.2f} ms"
                    + (f"  ERRORS: {bad:.0f}" if bad else ""),
                    flush=True,
                )
    summary: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": args.duration,
        "value_bytes": 100,
        "results": {},
    }
    print()
    for c in conns:
        row: dict[str, object] = {}
        for s in systems:
            ok = [r["rps"] for r in runs[s][c] if r["non2xx"] + r["sockerr"] == 0]
            row[s] = {
                "median_rps": statistics.median(ok) if ok else None,
                "min_rps": min(ok) if ok else None,
                "max_rps": max(ok) if ok else None,
                "failed_runs": len(runs[s][c]) - len(ok),
                "median_p99_ms": statistics.median(r["p99_us"] / 1000 for r in runs[s][c]),
                "runs": runs[s][c],
            }
        if "fastkv" in row and "etcd" in row:
            f, e = row["fastkv"]["median_rps"], row["etcd"]["median_rps"]  # type: ignore[index]
            row["ratio_fastkv_over_etcd"] = (f / e) if f and e else None
        summary["results"][str(c)] = row  # type: ignore[index]
        line = "  ".join(f"{s} {row[s]['median_rps'] or 0:,.0f}/s" for s in systems)  # type: ignore[index]
        ratio = row.get("ratio_fastkv_over_etcd")
        print(f"PUT {c:>3} connections: {line}" + (f"  ratio {ratio:.2f}" if ratio else ""))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
