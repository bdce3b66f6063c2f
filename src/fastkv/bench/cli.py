"""Command line: ``python -m fastkv.bench run|report|list`` (also installed as ``fastkv-bench``).

python -m fastkv.bench run --scenario put-1 --scenario put-64 --runs 5 --duration 5
python -m fastkv.bench run --all --systems fastkv,etcd
python -m fastkv.bench run --scenario get-64 --fastkv-url http://127.0.0.1:2379
python -m fastkv.bench run -s security --runs 5 --duration 5   # TLS and auth against their plain twins
python -m fastkv.bench report
python -m fastkv.bench list
"""

from __future__ import annotations

import argparse
import sys

from fastkv.bench import report, wrk
from fastkv.bench.runner import DEFAULT_OUT, Runner
from fastkv.bench.scenarios import DEFAULT, GROUPS, SECURITY, Scenario, expand, with_overrides
from fastkv.bench.servers import SYSTEMS


def _systems(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in SYSTEMS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"systems must be among {', '.join(SYSTEMS)}, got {text!r}")
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"a system is listed twice in {text!r}")
    return out


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fastkv-bench",
        description="Benchmark fastkv against etcd (v2 API) with named scenarios.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run scenarios, write bench/results/<scenario>.json and REPORT.md")
    pick = run.add_mutually_exclusive_group(required=True)
    pick.add_argument(
        "--scenario",
        "-s",
        action="append",
        metavar="NAME",
        help=f"scenario or group ({', '.join(GROUPS)}) to run (repeatable)",
    )
    pick.add_argument("--all", action="store_true", help="every default scenario (see `list`)")
    run.add_argument("--runs", type=_positive_int, default=5, help="runs per system (default 5)")
    run.add_argument(
        "--duration", type=_positive_int, default=5, help="whole seconds per measurement (default 5)"
    )
    run.add_argument(
        "--systems", type=_systems, default=list(SYSTEMS), help="comma list (default fastkv,etcd)"
    )
    run.add_argument("--fastkv-url", help="target this fastkv endpoint instead of starting one")
    run.add_argument("--etcd-url", help="target this etcd endpoint instead of starting one")
    run.add_argument("--ca-file", help="CA certificate that verifies https endpoints given with --*-url")
    run.add_argument("--value-bytes", type=_positive_int, help="value size for every scenario (default 100)")
    run.add_argument("--keyspace", type=_positive_int, help="keys the requests spread over")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    run.add_argument("--note", default="", help="a line for the report, e.g. the machine's state")
    run.add_argument("--no-report", action="store_true", help="only write the JSON")
    rep = sub.add_parser("report", help="rebuild REPORT.md and the plots from the JSON")
    rep.add_argument("--out", default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    rep.add_argument("--no-plots", action="store_true", help="tables only")
    sub.add_parser("list", help="list the default scenarios and the named groups")
    return ap


def scenarios_from(args: argparse.Namespace) -> list[Scenario]:
    if args.all:
        chosen = list(DEFAULT)
    else:
        chosen = []
        for name in args.scenario:
            try:
                found = expand(name)
            except ValueError as e:
                raise SystemExit(f"fastkv-bench: {e}") from None
            chosen += [sc for sc in found if sc.name not in {c.name for c in chosen}]
    return [with_overrides(sc, args.value_bytes, args.keyspace) for sc in chosen]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        for sc in DEFAULT:
            print(f"{sc.name:<26} {sc.title}")
        print("\nnot in --all:")
        for sc in SECURITY:
            print(f"{sc.name:<26} {sc.title}")
        for group, members in GROUPS.items():
            print(f"\ngroup {group} (-s {group}): {' '.join(sc.name for sc in members)}")
        return 0
    if args.command == "report":
        print(report.build(args.out, plot=not args.no_plots))
        return 0
    scenarios = scenarios_from(args)
    if any(sc.kind in ("wrk", "paced", "memory") for sc in scenarios) and not wrk.have_wrk():
        print("fastkv-bench: wrk is required for these scenarios (apt-get install wrk)", file=sys.stderr)
        return 2
    urls = {k: u for k, u in (("fastkv", args.fastkv_url), ("etcd", args.etcd_url)) if u}
    runner = Runner(
        scenarios, args.systems, args.runs, args.duration, args.out, urls, args.note, ca_file=args.ca_file
    )
    written = runner.run()
    for path in written:
        print(path)
    if not args.no_report:
        print(report.build(args.out))
    return 0
