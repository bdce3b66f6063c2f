"""3-member PUT throughput, fastkv against etcd: now the ``cluster-put-leader-<c>`` and
``cluster-put-follower-<c>`` scenarios of ``python -m fastkv.bench`` (see bench/README.md).  Kept so
the old command still works:

    python -m bench.cluster_put [--runs 3] [--duration 5] [--connections 1,64] [--target leader]

runs ``python -m fastkv.bench run -s cluster-put-<target>-<c> ...`` and writes
bench/results/cluster-put-<target>-<c>.json and REPORT.md.
"""

from __future__ import annotations

import argparse
import sys

from fastkv.bench.cli import main as bench_main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="3")
    ap.add_argument("--duration", default="5")
    ap.add_argument("--connections", default="1,64")
    ap.add_argument("--systems", default="fastkv,etcd")
    ap.add_argument("--target", choices=("leader", "follower"), default="leader")
    args = ap.parse_args()
    argv = ["run", "--runs", args.runs, "--duration", args.duration, "--systems", args.systems]
    for c in args.connections.split(","):
        argv += ["-s", f"cluster-put-{args.target}-{int(c)}"]
    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
