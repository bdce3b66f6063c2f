"""The nemesis runner: ``python -m tests.nemesis.run --runs N --target fastkv|etcd --seed S``.

Run i uses seed S+i and one fault class (the classes in turn, ``mixed`` among them: each of its
faults drawn from every class).  A run: a fresh 3-member cluster, load (register clients and ack
writers), ``--faults`` faults of the class one after another (each held 1-3 s, then undone, then
the cluster must answer again within a minute), then the checks of tests/nemesis/checks.py.
Replay a run with ``--seed <its seed> --runs 1 --classes <its class>``.

Writes ``<out>/runs.jsonl`` (one record per run, appended), ``<out>/table.json`` and
``<out>/table.md`` (the per-class table of the runs of this invocation); keeps the member logs of
a failed run in ``<out>/failed-<target>-<seed>``.  ``--ledger docs/reliability.md`` adds the
invocation to the ledger of that file and updates its running totals.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

from tests.nemesis import faults, iptables
from tests.nemesis.checks import judge, longest_gap_s
from tests.nemesis.cluster import Cluster, HarnessError
from tests.nemesis.workload import Load
from tests.support.procs import have_etcd

HOLD_S = (1.0, 3.0)
SETTLE_S = 1.0


def plan(target: str, requested: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(classes to run in turn, class -> why not run) for ``target``."""
    skipped: dict[str, str] = {}
    names = list(faults.CLASSES)
    for name in names:
        c = faults.CLASSES[name]
        if target == "etcd" and c.needs == "partition" and not iptables.available():
            skipped[name] = "etcd dials its peers itself: its links are cut with iptables, which needs root"
        elif target == "etcd" and c.needs in ("disk", "clock"):
            skipped[name] = "etcd is a static Go binary: the LD_PRELOAD fault library cannot reach it"
        elif c.needs in ("disk", "clock") and not shutil.which("cc") and not shutil.which("gcc"):
            skipped[name] = "no C compiler to build the fault library"
    runnable = [n for n in names if n not in skipped] + [faults.MIXED]
    if requested:
        unknown = [r for r in requested if r not in runnable and r not in skipped]
        if unknown:
            raise SystemExit(f"unknown fault classes: {unknown}")
        runnable = [r for r in requested if r in runnable]
    return runnable, skipped


def _all_but_logs(directory: str, names: list[str]) -> list[str]:
    """copytree's ignore: keep the directories and the server logs, nothing of the data."""
    return [n for n in names if not n.endswith(".log") and not os.path.isdir(os.path.join(directory, n))]


def one_run(
    target: str, cls: str, seed: int, n_faults: int, out_dir: str, log_lines: list[str]
) -> dict[str, Any]:
    rng = random.Random(seed)
    began = time.monotonic()

    def log(line: str) -> None:
        stamp = f"{time.monotonic() - began:7.2f}s"
        log_lines.append(f"{stamp} {line}")

    base_dir = tempfile.mkdtemp(prefix=f"nemesis-{target}-{seed}-")
    record: dict[str, Any] = {"target": target, "class": cls, "seed": seed, "faults": []}
    mixed_pool = [n for n in faults.CLASSES if n not in faults.MIXED_EXCLUDES]
    wants = {faults.CLASSES[cls].needs} if cls != faults.MIXED else {"disk", "clock"}
    cluster: Cluster | None = None
    load: Load | None = None
    try:
        cluster = Cluster(
            target,
            base_dir,
            log,
            disk_faults="disk" in wants,
            clock_faults="clock" in wants,
            token=f"nemesis-{seed}",
        )
        pool = [n for n in mixed_pool if cluster.supports(faults.CLASSES[n].needs)]
        load = Load(cluster.client_urls, seed)
        load.start()
        time.sleep(SETTLE_S)
        for _ in range(n_faults):
            name = rng.choice(pool) if cls == faults.MIXED else cls
            fault = faults.CLASSES[name]
            log(f"fault {name}")
            start_ns = time.monotonic_ns()
            heal = fault.inject(cluster, rng)
            time.sleep(rng.uniform(*HOLD_S))
            heal()
            cluster.heal_all()
            up_ns = time.monotonic_ns()
            log(f"healed {name}: every member answers")
            time.sleep(SETTLE_S)
            end_ns = up_ns + int(SETTLE_S * 1e9)
            record["faults"].append(
                {
                    "class": name,
                    "recovery_s": round((up_ns - start_ns) / 1e9, 3),
                    "gap_s": round(longest_gap_s(load.rec.successes, start_ns, end_ns), 3),
                }
            )
        load.stop()
        verdicts = judge(cluster.live(), load)
        record.update(
            passed=verdicts.passed,
            converged=verdicts.converged.ok,
            convergence=verdicts.converged.detail,
            linearizable=verdicts.linearizable,
            lin_detail=verdicts.lin_detail,
            lost=len(verdicts.lost),
            lost_detail=dict(list(verdicts.lost.items())[:10]),
            late=len(verdicts.late),
            late_detail=verdicts.late[:10],
            ops=verdicts.ops,
            acked=verdicts.acked,
            errored=len(load.rec.errored) + len(load.errored_keys()),
            unexpected_reads=load.rec.unexpected[:10],
        )
    except (HarnessError, RuntimeError, OSError, AssertionError, KeyError, ValueError) as e:
        record.update(
            passed=False, error=f"{type(e).__name__}: {e}"[:3000], trace=traceback.format_exc()[-3000:]
        )
    finally:
        if load is not None and not load.stop_flag.is_set():
            try:
                load.stop()
            except RuntimeError:
                pass
        if cluster is not None:
            cluster.close()
        record["seconds"] = round(time.monotonic() - began, 1)
        record["log"] = log_lines[-200:]
        if not record.get("passed"):
            keep = os.path.join(out_dir, f"failed-{target}-{seed}")
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(base_dir, keep, ignore=_all_but_logs)
        shutil.rmtree(base_dir, ignore_errors=True)
    return record


def table(records: list[dict[str, Any]], skipped: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for cls in [*faults.CLASSES, faults.MIXED]:
        runs = [r for r in records if r["class"] == cls]
        if not runs:
            if cls in skipped:
                rows.append({"class": cls, "not_run": skipped[cls]})
            continue
        gaps = [f["gap_s"] for r in runs for f in r["faults"]]
        rows.append(
            {
                "class": cls,
                "runs": len(runs),
                "passed": sum(1 for r in runs if r.get("passed")),
                "faults": len(gaps),
                "checked": sum(1 for r in runs if "linearizable" in r),
                "linearizable": sum(1 for r in runs if r.get("linearizable") == "linearizable"),
                "acked_lost": sum(r.get("lost", 0) for r in runs),
                "late_applied": sum(r.get("late", 0) for r in runs),
                "not_converged": sum(1 for r in runs if r.get("converged") is False),
                "harness_errors": sum(1 for r in runs if "error" in r),
                "unavail_max_s": max(gaps) if gaps else None,
                "unavail_median_s": sorted(gaps)[len(gaps) // 2] if gaps else None,
                "acked": sum(r.get("acked", 0) for r in runs),
                "errored": sum(r.get("errored", 0) for r in runs),
            }
        )
    return rows


def markdown(target: str, rows: list[dict[str, Any]]) -> str:
    head = (
        f"| {target}: class | runs | passed | linearizable / checked | acked writes lost | late-applied errored writes "
        "| not converged | harness errors | unavailability max / median (s) | acked writes | errored writes |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "not_run" in r:
            lines.append(f"| {r['class']} | not run: {r['not_run']} | | | | | | | | | |")
            continue
        unavail = (
            f"{r['unavail_max_s']:.2f} / {r['unavail_median_s']:.2f}"
            if r["unavail_max_s"] is not None
            else "-"
        )
        lines.append(
            f"| {r['class']} | {r['runs']} | {r['passed']} | {r['linearizable']}/{r['checked']} | {r['acked_lost']} "
            f"| {r['late_applied']} | {r['not_converged']} | {r['harness_errors']} | {unavail} | {r['acked']} "
            f"| {r['errored']} |"
        )
    return head + "\n".join(lines) + "\n"


LEDGER_START = "<!-- nemesis-ledger -->"
TOTALS_RE = re.compile(r"<!-- nemesis-totals -->.*?<!-- /nemesis-totals -->", re.S)


def update_ledger(path: str, target: str, seed: int, records: list[dict[str, Any]]) -> None:
    """Appends one row (date, target, seeds, runs, passed) after the ledger marker of ``path`` and
    rewrites the totals between the totals markers from every row of the ledger."""
    with open(path) as f:
        text = f.read()
    if LEDGER_START not in text or not TOTALS_RE.search(text):
        raise SystemExit(f"{path}: no ledger markers")
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    passed = sum(1 for r in records if r.get("passed"))
    classes = ",".join(sorted({r["class"] for r in records}))
    row = f"| {when} | {target} | {seed}..{seed + len(records) - 1} | {len(records)} | {passed} | {classes} |"
    head, tail = text.split(LEDGER_START, 1)
    tail_lines = tail.split("\n")
    # The ledger table follows the marker: its header, separator, then rows; the new row goes last.
    end = 1
    while end < len(tail_lines) and tail_lines[end].startswith("|"):
        end += 1
    tail_lines.insert(end, row)
    text = head + LEDGER_START + "\n".join(tail_lines)
    totals: dict[str, list[int]] = {}
    for line in text.split(LEDGER_START, 1)[1].split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[3].isdigit():
            t = totals.setdefault(cells[1], [0, 0])
            t[0] += int(cells[3])
            t[1] += int(cells[4])
    summary = "; ".join(f"{t}: {p} of {n} runs passed" for t, (n, p) in sorted(totals.items()))
    text = TOTALS_RE.sub(f"<!-- nemesis-totals -->{summary}<!-- /nemesis-totals -->", text)
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.nemesis.run", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--target", choices=("fastkv", "etcd"), default="fastkv")
    ap.add_argument("--seed", type=int, default=None, help="first seed (default: from the clock, printed)")
    ap.add_argument("--faults", type=int, default=3, help="faults per run")
    ap.add_argument(
        "--classes", default="", help="comma-separated fault classes (default: all the target supports)"
    )
    ap.add_argument("--out", default="build/nemesis")
    ap.add_argument("--ledger", default="", help="a docs file with ledger markers to record the runs in")
    ap.add_argument(
        "--report", default="", help="only print the table of the runs recorded in this runs.jsonl"
    )
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            recs = [r for r in map(json.loads, f) if r["target"] == args.target]
        print(markdown(args.target, table(recs, plan(args.target, None)[1])), end="")
        return 0
    if args.target == "etcd" and not have_etcd():
        print("etcd is not installed", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    classes, skipped = plan(args.target, [c for c in args.classes.split(",") if c] or None)
    out_dir = os.path.join(args.out, args.target)
    os.makedirs(out_dir, exist_ok=True)
    print(
        f"nemesis: target {args.target}, seeds {seed}..{seed + args.runs - 1}, classes {classes}", flush=True
    )
    for name, why in skipped.items():
        print(f"  not run: {name}: {why}", flush=True)
    records: list[dict[str, Any]] = []
    for i in range(args.runs):
        cls = classes[i % len(classes)]
        lines: list[str] = []
        rec = one_run(args.target, cls, seed + i, args.faults, out_dir, lines)
        records.append(rec)
        with open(os.path.join(out_dir, "runs.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        gaps = ", ".join(f"{f['class']} {f['gap_s']:.2f}s" for f in rec["faults"])
        status = "PASS" if rec.get("passed") else "FAIL"
        print(
            f"run {i + 1}/{args.runs} seed {seed + i} class {cls}: {status} in {rec['seconds']}s; "
            f"{rec.get('linearizable', '-')}, lost {rec.get('lost', '-')}, late {rec.get('late', '-')}, "
            f"converged {rec.get('converged', '-')}, acked {rec.get('acked', '-')}, ops {rec.get('ops', '-')}; "
            f"unavailability {gaps}",
            flush=True,
        )
        if not rec.get("passed"):
            for key in ("error", "convergence", "lin_detail", "lost_detail", "late_detail"):
                if rec.get(key):
                    print(f"  {key}: {rec[key]}", flush=True)
            print("  " + "\n  ".join(rec["log"][-30:]), flush=True)
    rows = table(records, skipped)
    md = markdown(args.target, rows)
    with open(os.path.join(out_dir, "table.json"), "w") as f:
        json.dump({"target": args.target, "seed": seed, "runs": len(records), "rows": rows}, f, indent=1)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(md)
    print(md)
    if args.ledger:
        update_ledger(args.ledger, args.target, seed, records)
    return 0 if all(r.get("passed") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
