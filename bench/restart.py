"""Restart cost: time to serve again and resident memory, fastkv against etcd 3.4.

Two cases, each run on both systems on this machine:

- ``keys``: a member holding N keys (default 1M) of 100-byte values, most of its state in
  its applied state / snapshot;
- ``wal``: a member whose last N entries (default 500k) are only in the WAL (fastkv:
  --snapshot-count above N so nothing is snapshotted; etcd: the same flag).

The keys are written over HTTP with wrk (fastkv/bench/lua/fill.lua, 64 connections, each key once),
the member is killed with SIGKILL, restarted, and the time from exec to the first 200 of
a GET of the last key written is measured, then VmRSS is read.  fastkv's RocksDB flush is part of
what the kill can lose; its WAL replay covers it, so the measured restart includes it.

    python -m bench.restart [--keys 1000000] [--wal-entries 500000] [--systems fastkv,etcd]

Writes bench/results/restart.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

from fastkv.bench import servers, wrk

HERE = os.path.dirname(os.path.abspath(__file__))


def fill(url: str, n: int) -> float:
    """Write keys /fill/k0 .. k<n-1> once each (fastkv/bench/lua/fill.lua, 64 connections)."""
    return wrk.fill(url, n, 100, "fill")


def time_restart(srv: servers.Member, probe_key: str) -> float:
    srv.proc.kill()
    srv.proc.wait()
    t0 = time.monotonic()
    with open(srv.log_path, "ab") as log:
        srv.proc = subprocess.Popen(srv.argv, stdout=log, stderr=subprocess.STDOUT, env=servers.child_env())
    deadline = t0 + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(srv.url + "/v2/keys" + probe_key, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - still starting
            pass
        if srv.proc.poll() is not None:
            raise RuntimeError(f"{srv.url} exited during restart:\n{srv.log_tail()}")
        time.sleep(0.02)
    raise TimeoutError("restart took over 600 s")


def run_case(kind: str, case: str, n: int) -> dict[str, float]:
    extra = ["--snapshot-count", str(n * 2)] if case == "wal" else []
    dep = servers.start(kind, extra=extra, timeout=60)
    srv = dep.members[0]
    try:
        fill_s = fill(srv.url, n)
        time.sleep(1)
        before = servers.rss_mib(srv.proc.pid)
        restart_s = time_restart(srv, f"/fill/k{n - 1}")
        time.sleep(1)
        after = servers.rss_mib(srv.proc.pid)
        return {
            "keys": n,
            "fill_s": fill_s,
            "restart_s": restart_s,
            "rss_before_mib": before,
            "rss_after_restart_mib": after,
            "bytes_per_key_after_restart": after * 1024 * 1024 / n,
        }
    finally:
        dep.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--wal-entries", type=int, default=500_000)
    ap.add_argument("--systems", default="fastkv,etcd")
    ap.add_argument("--cases", default="keys,wal")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "restart.json"))
    args = ap.parse_args()
    results: dict[str, dict[str, object]] = {}
    for case in args.cases.split(","):
        n = args.keys if case == "keys" else args.wal_entries
        results[case] = {}
        for kind in args.systems.split(","):
            r = run_case(kind, case, n)
            results[case][kind] = r
            print(
                f"{case:>4} {kind:>6}: {n:,} keys written in {r['fill_s']:.1f} s; restart {r['restart_s']:.2f} s; "
                f"RSS {r['rss_after_restart_mib']:.0f} MiB after restart ({r['bytes_per_key_after_restart']:.0f} B/key)",
                flush=True,
            )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}, f, indent=2
        )
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
