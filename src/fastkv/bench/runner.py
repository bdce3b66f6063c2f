"""Run scenarios: alternate the systems run by run, print progress to stderr, write one JSON per scenario.

Run i measures the systems in the given order when i is odd and in reverse when i is even
(fastkv, etcd, etcd, fastkv, fastkv, etcd, ...), so a drift of the machine during a scenario
weighs on both systems alike.  Each run of a system this tool starts is a fresh deployment.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

from fastkv.bench import servers
from fastkv.bench.report import ratio_text
from fastkv.bench.scenarios import (
    RunResult,
    Scenario,
    duration_for,
    measure,
    start_for,
    summarize,
    variant_base,
)

DEFAULT_OUT = os.path.join("bench", "results")


def _first_line(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return ((p.stdout or p.stderr).strip().splitlines() or [""])[0]
    except (OSError, subprocess.SubprocessError):
        return "not found"


def machine_info() -> dict[str, object]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("MemTotal")), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wrk": _first_line(["wrk", "-v"]),
        "etcd": _first_line(["etcd", "--version"]),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def raise_fd_limit() -> None:
    """Watch fan-out holds thousands of sockets; servers started from here inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _fmt(sc: Scenario, r: RunResult) -> str:
    if not r.ok:
        return f"FAILED {r.error}"
    m = r.metrics
    if sc.kind == "watch":
        return (
            f"fan-out {m['fanout_ms']:.2f} ms (first {m['first_ms']:.2f}, ack {m['ack_ms']:.2f}, "
            f"driver busy {m['driver_busy_ms']:.2f} ms)"
        )
    if sc.kind == "memory":
        return f"VmRSS {m['rss_mib']:.0f} MiB ({m['bytes_per_key']:.0f} B/key), fill {m['fill_rps']:,.0f}/s"
    text = f"{m['rps']:,.0f} req/s p50 {m['p50_ms']:.2f} ms p99 {m['p99_ms']:.2f} ms max {m['max_ms']:.1f} ms"
    if "snapshots" in m:
        text += f", {m['snapshots']:.0f} snapshots"
    if r.detail.get("leader_changed"):
        text += "  LEADER CHANGED"
    if "note" in r.detail:
        text += f"  ({r.detail['note']})"
    return text


def _estimate_s(sc: Scenario, duration_s: float) -> float:
    """Rough seconds per run, only for the progress line's time left."""
    if sc.kind == "memory":
        return sc.keys / 25_000 + 5
    if sc.kind == "watch":
        return 2 + sc.watchers * (sc.rounds + 1) / 15_000
    extra = 3.0 if sc.auth else 0.0  # auth set-up and the wait for the server to settle
    return 2 + 2 * sc.members + sc.warmup_s + duration_for(sc, duration_s) + sc.preload / 20_000 + extra


class Runner:
    def __init__(
        self,
        scenarios: list[Scenario],
        systems: list[str],
        runs: int,
        duration_s: float,
        out_dir: str = DEFAULT_OUT,
        urls: dict[str, str] | None = None,
        note: str = "",
        log: Callable[[str], None] | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.scenarios = scenarios
        self.systems = systems
        self.runs = runs
        self.duration_s = duration_s
        self.out_dir = out_dir
        self.urls = urls or {}
        self.note = note
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.ca_file = ca_file
        # Names this invocation in every JSON it writes, so the report can tell which results were
        # measured together (a TLS or auth scenario is compared with its plain twin of the same run).
        self.run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f"-{os.getpid()}"

    def runs_for(self, sc: Scenario) -> int:
        return min(self.runs, sc.max_runs) if sc.max_runs else self.runs

    def one(self, sc: Scenario, kind: str) -> RunResult:
        """One run on a fresh deployment; the machine's 1-minute load average just before it starts
        and right after it ends goes with the result (other work on the machine skews a figure)."""
        load_before = os.getloadavg()[0]
        r = self._one(sc, kind)
        r.detail["load_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        return r

    def _one(self, sc: Scenario, kind: str) -> RunResult:
        if kind in self.urls:
            dep = servers.external(kind, self.urls[kind], self.ca_file)
        else:
            try:
                dep = start_for(sc, kind)
            except Exception as e:  # noqa: BLE001 - a system that does not start is a failed run
                return RunResult(kind, error=f"{kind} did not start: {type(e).__name__}: {e}")
        try:
            return measure(sc, dep, self.duration_s)
        finally:
            dep.stop()

    def run(self) -> list[str]:
        """Run every scenario; the paths of the JSON files written."""
        raise_fd_limit()
        os.makedirs(self.out_dir, exist_ok=True)
        machine = machine_info()
        plan = [(sc, i) for sc in self.scenarios for i in range(self.runs_for(sc))]
        total_est = sum(_estimate_s(sc, self.duration_s) * len(self.systems) for sc, _ in plan)
        steps = len(plan) * len(self.systems)
        t_start = time.monotonic()
        done_est = 0.0
        step = 0
        written = []
        self.log(
            f"fastkv.bench: {len(self.scenarios)} scenarios, {steps} runs, about {total_est / 60:.0f} min"
        )
        for sc in self.scenarios:
            n = self.runs_for(sc)
            per_system: dict[str, list[RunResult]] = {s: [] for s in self.systems}
            self.log(f"== {sc.name}: {sc.title}")
            for i in range(n):
                order = self.systems if i % 2 == 0 else list(reversed(self.systems))
                for kind in order:
                    step += 1
                    t0 = time.monotonic()
                    if _estimate_s(sc, self.duration_s) >= 20:
                        self.log(f"[{step}/{steps}] {sc.name} run {i + 1}/{n} {kind:>6}: running ...")
                    r = self.one(sc, kind)
                    per_system[kind].append(r)
                    done_est += _estimate_s(sc, self.duration_s)
                    elapsed = time.monotonic() - t_start
                    left = elapsed / done_est * (total_est - done_est) if done_est else 0.0
                    self.log(
                        f"[{step}/{steps}] {sc.name} run {i + 1}/{n} {kind:>6}: {_fmt(sc, r)}"
                        f"   ({time.monotonic() - t0:.0f} s; {elapsed / 60:.1f} min elapsed, ~{left / 60:.1f} min left)"
                    )
                    for url, tail in r.logs.items():
                        self.log(f"--- {kind} {url} log tail:\n{tail}")
            path = self.write(sc, per_system, machine, n)
            written.append(path)
            self.log(f"   {self.headline(sc, path)}")
        return written

    def headline(self, sc: Scenario, path: str) -> str:
        with open(path) as f:
            doc = json.load(f)
        parts = []
        for s in self.systems:
            v = doc["systems"][s]["median"].get(sc.metric)
            parts.append(f"{s} {v:,.2f}" if v is not None else f"{s} -")
        ratio = doc["ratios"].get(sc.metric)
        text = f"median {sc.metric}: " + ", ".join(parts) + (f"; fastkv/etcd {ratio:.2f}" if ratio else "")
        vb = variant_base(sc.name)
        base_path = os.path.join(self.out_dir, f"{vb[1]}.json") if vb else ""
        if vb and os.path.exists(base_path):
            with open(base_path) as f:
                base = json.load(f)
            if base.get("run_id") == self.run_id:
                ons = []
                for s in self.systems:
                    on = doc["systems"][s]["median"].get(sc.metric)
                    off = base["systems"].get(s, {}).get("median", {}).get(sc.metric)
                    ons.append(f"{s} {ratio_text(on / off if on is not None and off else None)}")
                text += f"; {vb[0]} on/off ({vb[1]} of this run): " + ", ".join(ons)
        return text

    def write(
        self, sc: Scenario, per_system: dict[str, list[RunResult]], machine: dict[str, object], n: int
    ) -> str:
        systems: dict[str, object] = {}
        medians: dict[str, dict[str, float]] = {}
        for kind, runs in per_system.items():
            summary = summarize(runs)
            medians[kind] = summary["median"]
            systems[kind] = {
                "external_url": self.urls.get(kind),
                "ok_runs": sum(r.ok for r in runs),
                "failed_runs": sum(not r.ok for r in runs),
                **summary,
                "runs": [asdict(r) for r in runs],
            }
        ratios: dict[str, float] = {}
        if "fastkv" in medians and "etcd" in medians:
            for k, v in medians["fastkv"].items():
                e = medians["etcd"].get(k)
                if e:
                    ratios[k] = v / e
        doc = {
            "scenario": sc.name,
            "title": sc.title,
            "kind": sc.kind,
            "metric": sc.metric,
            "higher_is_better": sc.higher_is_better,
            "params": sc.params(),
            "runs": n,
            "duration_s": duration_for(sc, self.duration_s) if sc.kind in ("wrk", "paced") else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": self.note,
            "run_id": self.run_id,
            "command": shlex.join([os.path.basename(sys.argv[0]) or "fastkv-bench", *sys.argv[1:]])
            if sys.argv[0].endswith("fastkv-bench")
            else shlex.join(["python", "-m", "fastkv.bench", *sys.argv[1:]]),
            "machine": machine,
            "systems": systems,
            "ratios": ratios,
        }
        path = os.path.join(self.out_dir, f"{sc.name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        return path
