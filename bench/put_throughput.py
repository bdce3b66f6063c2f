"""Single-node PUT throughput, fastkv against etcd: now the ``put-<connections>`` scenarios of
``python -m fastkv.bench`` (see bench/README.md).  Kept so the old command still works:

    python -m bench.put_throughput [--runs 3] [--duration 5] [--connections 1,64] [--systems fastkv,etcd]

runs ``python -m fastkv.bench run -s put-1 -s put-64 ...`` and writes bench/results/put-<c>.json and
REPORT.md.
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
    args = ap.parse_args()
    argv = ["run", "--runs", args.runs, "--duration", args.duration, "--systems", args.systems]
    for c in args.connections.split(","):
        argv += ["-s", f"put-{int(c)}"]
    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
