"""REPORT.md and plots from the scenario JSON files in a results directory.

The tables need nothing beyond the standard library; the plots need matplotlib (the ``bench``
extra) and are left out, with a note in the report, when it is not installed.
"""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Any

from fastkv.bench.scenarios import DEFAULT, SECURITY, variant_base

ORDER = {s.name: i for i, s in enumerate(DEFAULT + SECURITY)}
UNITS = {"rps": "req/s", "fanout_ms": "ms", "p99_ms": "ms", "rss_mib": "MiB"}
LABELS = {
    "rps": "throughput",
    "fanout_ms": "fan-out time",
    "p99_ms": "p99 latency",
    "rss_mib": "VmRSS",
}


def load(results_dir: str) -> list[dict[str, Any]]:
    """Every scenario JSON in ``results_dir`` (files of other tools are skipped), in suite order."""
    docs = []
    for path in glob.glob(os.path.join(results_dir, "*.json")):
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and "scenario" in doc and "systems" in doc:
            docs.append(doc)
    docs.sort(key=lambda d: (ORDER.get(d["scenario"], len(ORDER)), d["scenario"]))
    return docs


def _num(v: float | None, metric: str = "") -> str:
    if v is None:
        return "-"
    if metric == "rps" or abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _median(doc: dict[str, Any], system: str, metric: str) -> float | None:
    v = doc["systems"].get(system, {}).get("median", {}).get(metric)
    return float(v) if v is not None else None


def _spread(doc: dict[str, Any], system: str, metric: str) -> str:
    s = doc["systems"].get(system, {})
    lo, hi = s.get("min", {}).get(metric), s.get("max", {}).get(metric)
    if lo is None or hi is None or s.get("ok_runs", 0) < 2:
        return ""
    return f" ({_num(lo, metric)}-{_num(hi, metric)})"


def _systems(docs: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for d in docs:
        for s in d["systems"]:
            if s not in seen:
                seen.append(s)
    return sorted(seen, key=lambda s: (s != "fastkv", s))


def _run_loads(doc: dict[str, Any]) -> list[float]:
    """The 1-minute load averages recorded around the scenario's runs (before and after each)."""
    out: list[float] = []
    for sd in doc["systems"].values():
        for r in sd.get("runs", []):
            out.extend(r.get("detail", {}).get("load_1m", []))
    return out


def _load_range(doc: dict[str, Any]) -> str:
    loads = _run_loads(doc)
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"


def summary_table(docs: list[dict[str, Any]]) -> list[str]:
    systems = _systems(docs)
    head = "| scenario | what | metric | " + " | ".join(systems) + " | fastkv/etcd | runs ok | load |"
    lines = [head, "|" + "---|" * (len(systems) + 6)]
    for d in docs:
        m = d["metric"]
        better = "higher is better" if d["higher_is_better"] else "lower is better"
        cells = [f"{_num(_median(d, s, m), m)}{_spread(d, s, m)}" for s in systems]
        ratio = d["ratios"].get(m)
        ok = ", ".join(
            f"{s} {d['systems'][s]['ok_runs']}/{d['systems'][s]['ok_runs'] + d['systems'][s]['failed_runs']}"
            for s in systems
            if s in d["systems"]
        )
        lines.append(
            f"| `{d['scenario']}` | {d['title']} | {LABELS.get(m, m)} ({UNITS.get(m, '')}, {better}) | "
            + " | ".join(cells)
            + f" | {f'{ratio:.2f}' if ratio else '-'} | {ok} | {_load_range(d)} |"
        )
    return lines


def detail(doc: dict[str, Any]) -> list[str]:
    systems = _systems([doc])
    metrics: list[str] = []
    for s in systems:
        for k in doc["systems"][s].get("median", {}):
            if k not in metrics and k != "errors":
                metrics.append(k)
    out = [f"### `{doc['scenario']}`: {doc['title']}", ""]
    params = ", ".join(f"{k}={v}" for k, v in doc["params"].items() if v not in (0, "", [], None))
    out += [f"Parameters: {params}; runs: {doc['runs']}; duration: {doc.get('duration_s') or '-'} s; "
            f"measured {doc['date']}.", ""]  # fmt: skip
    if metrics:
        out.append("| metric (median of the runs) | " + " | ".join(systems) + " | fastkv/etcd |")
        out.append("|" + "---|" * (len(systems) + 2))
        for k in metrics:
            ratio = doc["ratios"].get(k)
            cells = [f"{_num(_median(doc, s, k), k)}{_spread(doc, s, k)}" for s in systems]
            out.append(f"| {k} | " + " | ".join(cells) + f" | {f'{ratio:.2f}' if ratio else '-'} |")
        out.append("")
    for s in systems:
        runs = doc["systems"][s]["runs"]
        per_run = []
        for i, r in enumerate(runs):
            if r.get("error"):
                per_run.append(f"run {i + 1}: FAILED ({r['error']})")
            else:
                v = r["metrics"].get(doc["metric"])
                notes = []
                if r.get("detail", {}).get("leader_changed"):
                    notes.append("leader changed")
                if r.get("detail", {}).get("note"):
                    notes.append(str(r["detail"]["note"]))
                if r.get("detail", {}).get("tls"):
                    notes.append(str(r["detail"]["tls"]))
                load = r.get("detail", {}).get("load_1m")
                if load:
                    notes.append("load " + " -> ".join(f"{x:.1f}" for x in load))
                per_run.append(
                    f"run {i + 1}: {_num(v, doc['metric'])}" + (f" ({'; '.join(notes)})" if notes else "")
                )
        out.append(f"- {s} {doc['metric']} per run: " + ", ".join(per_run))
    out.append("")
    out.append("Commands (first run of each system):")
    out.append("")
    out.append("```")
    for s in systems:
        runs = doc["systems"][s]["runs"]
        if not runs:
            continue
        for c in runs[0].get("servers", [])[:1]:
            out.append(
                f"# {s} server" + (" (one of the members)" if doc["params"].get("members", 1) > 1 else "")
            )
            out.append(c)
        for c in runs[0].get("commands", []):
            out.append(f"# {s} load")
            out.append(c)
    out.append("```")
    out.append("")
    return out


# -- TLS and auth against their plain twins ----------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratio_text(v: float | None) -> str:
    """A ratio with two decimals, or two significant digits below 0.1 (auth on etcd: 0.00090)."""
    if v is None:
        return "-"
    if v <= 0 or v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.{1 - math.floor(math.log10(v))}f}"


_r = ratio_text


def variant_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``tls-``/``auth-`` scenario whose plain twin is in ``docs``: the medians of the
    headline metric with and without, each system's variant/plain ratio, fastkv/etcd for both and how
    much TLS or auth moved it, and whether both were measured by the same invocation."""
    by_name = {d["scenario"]: d for d in docs}
    rows = []
    for d in docs:
        vb = variant_base(d["scenario"])
        if vb is None or vb[1] not in by_name:
            continue
        variant, base_name = vb
        base = by_name[base_name]
        m = d["metric"]
        row: dict[str, Any] = {"scenario": d["scenario"], "base": base_name, "variant": variant, "metric": m}
        for s in ("fastkv", "etcd"):
            on, off = _median(d, s, m), _median(base, s, m)
            row[s] = (off, on, _ratio(on, off))
        plain = _ratio(row["fastkv"][0], row["etcd"][0])
        secured = _ratio(row["fastkv"][1], row["etcd"][1])
        row["fastkv_etcd"] = (plain, secured, _ratio(secured, plain))
        row["same_run"] = bool(d.get("run_id")) and d.get("run_id") == base.get("run_id")
        rows.append(row)
    return rows


def variant_table(docs: list[dict[str, Any]]) -> list[str]:
    rows = variant_rows(docs)
    if not rows:
        return []
    out = [
        "## TLS and auth against plain",
        "",
        "Each `tls-`/`auth-` scenario against its plain twin (the name without the prefix).  Medians of the "
        "headline metric, plain -> with TLS or auth; `on/off` is the variant over the plain figure for the "
        "same system; `fastkv/etcd` is the ratio of the two systems without and with it, and `moved` how much "
        "TLS or auth changed that ratio (1.00: not at all).",
        "",
        "| scenario | against | metric | fastkv plain -> on | fastkv on/off | etcd plain -> on | etcd on/off "
        "| fastkv/etcd plain | fastkv/etcd on | moved | same run |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        m = r["metric"]
        cells = [f"`{r['scenario']}`", f"`{r['base']}`", f"{LABELS.get(m, m)} ({UNITS.get(m, '')})"]
        for s in ("fastkv", "etcd"):
            off, on, ratio = r[s]
            cells += [f"{_num(off, m)} -> {_num(on, m)}", _r(ratio)]
        plain, secured, moved = r["fastkv_etcd"]
        cells += [_r(plain), _r(secured), _r(moved), "yes" if r["same_run"] else "no (separate invocations)"]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


# -- plots ---------------------------------------------------------------------------------------


def _family(doc: dict[str, Any]) -> str | None:
    """Closed-loop throughput scenarios grouped into lines of a throughput/connections plot."""
    p = doc["params"]
    if doc["kind"] != "wrk" or p.get("server_flags"):
        return None
    what = {"put": "PUT", "get": "GET", "qget": "quorum GET"}[p["mode"]]
    if p["members"] > 1:
        what += f", {p['members']} members, to {p['target']}"
    if p.get("tls"):
        what += ", TLS"
    if p.get("auth"):
        what += ", auth"
    return what


COLORS = {  # light to dark: p50, p99, p99.9
    "fastkv": ["#9ecae1", "#3182bd", "#08519c"],
    "etcd": ["#fdae6b", "#e6550d", "#a63603"],
    "other": ["#bdbdbd", "#737373", "#252525"],
}


def _color(system: str, shade: int) -> str:
    shades = COLORS.get(system, COLORS["other"])
    return shades[shade % len(shades)]


# One look per system, topology and variant, so every series of a plot can be told apart:
# (colour, marker, line).
SERIES = {
    ("fastkv", 1, ""): ("#3182bd", "o", "-"),
    ("fastkv", 3, ""): ("#31a354", "^", "-"),
    ("etcd", 1, ""): ("#e6550d", "s", "--"),
    ("etcd", 3, ""): ("#756bb1", "D", "--"),
    ("fastkv", 1, "TLS"): ("#08306b", "P", "-."),
    ("etcd", 1, "TLS"): ("#7f2704", "X", ":"),
    ("fastkv", 1, "auth"): ("#17becf", "v", "-."),
    ("etcd", 1, "auth"): ("#e377c2", "<", ":"),
}


def _series_style(system: str, family: str) -> tuple[str, str, str]:
    members = 3 if "members" in family else 1
    variant = "TLS" if family.endswith(", TLS") else "auth" if family.endswith(", auth") else ""
    return SERIES.get((system, members, variant), ("#737373", "x", ":"))


def _run_values(doc: dict[str, Any], system: str, metric: str) -> list[float]:
    """The metric of every successful run of ``system``."""
    runs = doc["systems"].get(system, {}).get("runs", [])
    return [r["metrics"][metric] for r in runs if not r.get("error") and metric in r.get("metrics", {})]


def plots(docs: list[dict[str, Any]], plot_dir: str) -> list[str]:
    """Write the PNGs; their file names (empty when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(plot_dir, exist_ok=True)
    systems = _systems(docs)
    written = []

    # 1. Throughput: against connections (workloads measured at several connection counts, lines)
    # and every closed-loop scenario side by side (bars), medians with min-max error bars and each
    # run's figure as a dot.
    fams: dict[tuple[str, str], list[tuple[int, float, float, float, list[float]]]] = {}
    tput = [d for d in docs if _family(d) is not None]
    for d in tput:
        for s in systems:
            sd = d["systems"].get(s, {})
            med = sd.get("median", {}).get("rps")
            if med is not None:
                pt = (
                    d["params"]["connections"],
                    med,
                    sd["min"]["rps"],
                    sd["max"]["rps"],
                    _run_values(d, s, "rps"),
                )
                fams.setdefault((str(_family(d)), s), []).append(pt)
    if tput:
        lines = {k: v for k, v in fams.items() if len(v) > 1}
        fig, axes = plt.subplots(1, 2 if lines else 1, figsize=(13 if lines else 8, 5), squeeze=False)
        if lines:
            ax = axes[0][0]
            for (fam, s), pts in sorted(lines.items()):
                pts.sort()
                color, marker, line = _series_style(s, fam)
                err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, capsize=3, color=color,
                            marker=marker, linestyle=line, markersize=7, label=f"{s}: {fam}")  # fmt: skip
                runs_x = [p[0] for p in pts for _ in p[4]]
                runs_y = [v for p in pts for v in p[4]]
                ax.scatter(runs_x, runs_y, s=10, color=color, marker=marker, alpha=0.35, zorder=3)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("connections")
            ax.set_ylabel("requests/s (median, bars: min-max, dots: runs)")
            ax.set_title("Closed-loop throughput against connections")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        ax = axes[0][-1]
        width = 0.8 / len(systems)
        for si, s in enumerate(systems):
            tx: list[float] = []
            ty: list[float] = []
            lo: list[float] = []
            hi: list[float] = []
            dots_x: list[float] = []
            dots_y: list[float] = []
            for i, d in enumerate(tput):
                sd = d["systems"].get(s, {})
                med = sd.get("median", {}).get("rps")
                if med is not None:
                    x = i - 0.4 + width * (si + 0.5)
                    tx.append(x)
                    ty.append(med)
                    lo.append(med - sd["min"]["rps"])
                    hi.append(sd["max"]["rps"] - med)
                    values = _run_values(d, s, "rps")
                    dots_x += [x] * len(values)
                    dots_y += values
            color, marker, _ = _series_style(s, "")
            ax.bar(tx, ty, width, yerr=[lo, hi], capsize=3, color=color, label=s, alpha=0.85)
            ax.scatter(dots_x, dots_y, s=9, color="black", marker=marker, alpha=0.5, zorder=3)
        ax.set_xticks(range(len(tput)))
        ax.set_xticklabels([d["scenario"] for d in tput], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("requests/s (median, bars: min-max, dots: runs)")
        ax.set_title("Closed-loop throughput per scenario")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(plot_dir, "throughput_vs_connections.png"), dpi=110)
        plt.close(fig)
        written.append("throughput_vs_connections.png")

    # 2. Latency percentiles, one panel per way of measuring it: closed loop (wrk: from sending a
    # request to its answer) and paced (from the time the schedule meant to send it).
    pcts = ["p50_ms", "p99_ms", "p999_ms"]
    panels = [
        (kind, title, [d for d in docs if d["kind"] == kind])
        for kind, title in (
            ("wrk", "Latency, closed loop:\nfrom sending a request to its answer"),
            ("paced", "Latency, paced load:\nfrom the intended send time"),
        )
    ]
    panels = [p for p in panels if p[2]]
    if panels:
        ratios = [max(2, len(p[2])) for p in panels]
        fig, axes = plt.subplots(
            1, len(panels), figsize=(max(8, 1.3 * sum(ratios)), 5), squeeze=False,
            gridspec_kw={"width_ratios": ratios},
        )  # fmt: skip
        for ax, (_, title, lat) in zip(axes[0], panels, strict=True):
            width = 0.8 / (len(systems) * len(pcts))
            for si, s in enumerate(systems):
                for pi, p in enumerate(pcts):
                    bx: list[float] = []
                    by: list[float] = []
                    blo: list[float] = []
                    bhi: list[float] = []
                    for i, d in enumerate(lat):
                        v = _median(d, s, p)
                        if v is not None:
                            sd = d["systems"][s]
                            bx.append(i - 0.4 + width * (si * len(pcts) + pi + 0.5))
                            by.append(max(v, 1e-3))
                            blo.append(max(v - sd["min"].get(p, v), 0.0))
                            bhi.append(max(sd["max"].get(p, v) - v, 0.0))
                    ax.bar(bx, by, width, yerr=[blo, bhi], capsize=2, error_kw={"elinewidth": 0.8},
                           label=f"{s} {p[:-3]}", color=_color(s, pi), edgecolor="black", linewidth=0.3)  # fmt: skip
            ax.set_xticks(range(len(lat)))
            ax.set_xticklabels([d["scenario"] for d in lat], rotation=30, ha="right", fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("ms (median of runs, bars: min-max; log scale)")
            ax.set_title(title, fontsize=10)
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(plot_dir, "latency_percentiles.png"), dpi=110)
        plt.close(fig)
        written.append("latency_percentiles.png")

    # 3. Watch fan-out against the number of watchers.
    wd = sorted((d for d in docs if d["kind"] == "watch"), key=lambda d: d["params"]["watchers"])
    if wd:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for s in systems:
            # Watchers of the key itself as lines, recursive watchers of a directory as other markers.
            for recursive in (False, True):
                group = [d for d in wd if bool(d["params"].get("recursive")) == recursive]
                for metric, style in (("fanout_ms", "-o"), ("median_ms", ":.")):
                    found = [(d["params"]["watchers"], _median(d, s, metric), d) for d in group]
                    pts2 = [(x, y, d) for x, y, d in found if y is not None]
                    if pts2:
                        label = f"{s}: last watcher" if metric == "fanout_ms" else f"{s}: median watcher"
                        if recursive:
                            label += " (recursive)"
                            style = "s" if metric == "fanout_ms" else "x"
                        shade = 1 if metric == "fanout_ms" else 0
                        # Bars: the min-max of the runs around their median.
                        lows, highs = [], []
                        for _, y, d in pts2:
                            values = _run_values(d, s, metric) or [y]
                            lows.append(max(0.0, y - min(values)))
                            highs.append(max(0.0, max(values) - y))
                        ax.errorbar(
                            [p[0] for p in pts2],
                            [p[1] for p in pts2],
                            yerr=[lows, highs],
                            fmt=style,
                            capsize=3,
                            color=_color(s, shade),
                            label=label,
                        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("watchers")
        ax.set_ylabel("ms (median of runs, bars: min-max)")
        ax.set_title("Watch fan-out: from just before the write to the watcher's event")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(plot_dir, "watch_fanout.png"), dpi=110)
        plt.close(fig)
        written.append("watch_fanout.png")
    return written


METHOD = """\
## Method

- Load generator for request workloads: wrk (C, one epoll loop per thread, LuaJIT hooks), 2 threads
  (1 for a single connection), with the Lua scripts in `src/fastkv/bench/lua/`.  Its own CPU is
  measured every run (`client_cpu_cores`, `client_us_per_request`): about 4 µs of user time plus
  about 9 µs of kernel time (loopback TCP, which any client pays) per closed-loop request, about
  0.3-0.4 of a core at 15-25k requests/s, so it stays well below the server's cost on the other
  core.  A Python client would spend tens of µs of user time per request on top.  A run with any
  answer other than 200/201 or any socket error counts as failed and is not in the medians.
- Every run starts a fresh system (new data directory, fresh processes) unless an endpoint was given
  with `--fastkv-url`/`--etcd-url`; both acknowledge writes only after fdatasync.  A 1 s warm-up
  precedes each measurement.  The systems alternate run by run (fastkv, etcd, etcd, fastkv, ...), and
  the tables give the median of the runs with the min-max spread in parentheses.
- Closed-loop scenarios (`put-*`, `get-*`, `qget-*`, `cluster-*`, `put-snapshots-*`): each connection
  sends its next request when the previous one is answered; latency is wrk's, from send to answer.
- Paced (`put-paced-*`): open loop.  Each wrk thread keeps a schedule of slots (rate/threads per
  second); a free connection claims the next slot and sends just before it is due.  Slots are never
  skipped: when the server stalls, the overdue slots are sent as soon as connections free up, and
  every request is timed from its intended send time (carried in the value, echoed by the PUT answer).
  That is the coordinated-omission correction: a stall counts against every request that should have
  been sent during it.  `uncorrected_p99_ms` is wrk's own figure from the actual send, for comparison.
- Watch fan-out (`watch-*`): N connections long-poll `GET /v2/keys/bench/watch?wait=true`; once every
  one is registered (both systems send the headers at registration), the clock starts just before a PUT
  of the key and stops when the last watcher has the complete event.  `watch-recursive-*`: the same with
  `GET /v2/keys/bench/watchdir?wait=true&recursive=true` and the PUT to `/bench/watchdir/sub/key`.  The
  driver is one epoll loop whose receiving phase is compiled (`fastkv._native.benchwatch`: one `recv` per
  ready socket and no Python object per watcher, about 1 µs per watcher; the Python loop it replaced
  took about 4 µs and is kept as its twin); `driver_busy_ms` is its own processing time during the
  delivery, which overlaps with the server's writing.  `server_cpu_ms` is the server's CPU time (all its
  threads, from /proc/<pid>/task/*/schedstat) from just before the PUT to the last event.
- `put-snapshots-*`: both systems with `--snapshot-count 10000`, so a 5 s run at tens of thousands of
  writes per second takes several snapshots; the figure is the p99.
- `memory-*`: VmRSS of the server after writing the keys once each (100 B values) with wrk, 1 s after
  the last write.
- `tls-*` (group `security`): the closed-loop scenario with https client URLs; both systems get the
  same certificate (EC P-256, signed by a CA generated for the run into its temporary directory) through
  `--cert-file`/`--key-file`, server-side TLS only (wrk cannot present a client certificate, so neither
  asks for one).  wrk does not verify the certificate; the tool's own requests do.  Connections are
  kept alive, so each of the 64 pays one handshake per wrk run.  The runs record the protocol and cipher
  a client with this machine's OpenSSL defaults negotiates with each server.
- `auth-*` (group `security`): v2 auth turned on through the HTTP API after the preload (root user, a
  role `bench` with read and write on `/bench*` and `/bench/*`, user `bench` holding it, auth enabled,
  the guest role stripped of its permissions so a request without credentials is refused), checked
  (no credentials: 401; bench in `/bench`: accepted; bench outside: 401), then every wrk request carries
  `Authorization: Basic` for `bench` (the credentials reach kv.lua through the environment, never the
  command line).  After the warm-up the tool waits until the server is idle, as requests queued
  behind password checks would otherwise run into the measurement.  The report compares each with its
  plain twin from the same run.
"""


def _loadavg(machine: dict[str, Any]) -> str:
    vals = machine.get("loadavg_at_start") or []
    return " ".join(f"{float(v):.2f}" for v in vals) or "-"


def build(results_dir: str, plot: bool = True) -> str:
    """Write ``REPORT.md`` (and the plots) for the JSON in ``results_dir``; the report's path."""
    docs = load(results_dir)
    plot_dir = os.path.join(results_dir, "plots")
    pngs = plots(docs, plot_dir) if plot and docs else []
    dates = sorted(d["date"] for d in docs)
    notes = sorted({d.get("note") or "" for d in docs} - {""})
    lines = ["# fastkv against etcd: benchmark report", ""]
    if dates:
        lines.append(f"Measured {dates[0]} to {dates[-1]} (UTC).")
    for n in notes:
        lines.append(f"Note: {n}")
    if docs:
        m = docs[-1]["machine"]
        lines += [
            "",
            f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model')}), {m.get('mem_total')}, {m.get('platform')}; "
            f"Python {m.get('python')}; {m.get('wrk')}; {m.get('etcd')}; load average at start {_loadavg(m)}.",
        ]
        cmds = sorted({d["command"] for d in docs})
        lines += ["", "Produced by:", "", "```", *cmds, "```"]
    lines += ["", "## Summary", ""]
    if docs:
        lines += summary_table(docs)
        lines += ["", "fastkv/etcd is the ratio of the medians: above 1 is better for fastkv when higher is better, "
                  "below 1 when lower is better.  Each figure is the median of the runs with the min-max spread "
                  "in parentheses; `load` is the range of the machine's 1-minute load average just before and "
                  "after the scenario's runs (2 CPUs: above 2, other work competed for them)."]  # fmt: skip
    else:
        lines.append(f"No scenario results in {results_dir}.")
    if docs:
        vt = variant_table(docs)
        if vt:
            lines += [""] + vt[:-1]
    lines += ["", "## Plots", ""]
    if pngs:
        lines += [f"![{p[:-4]}](plots/{p})" for p in pngs]
    elif docs and plot:
        lines.append("matplotlib is not installed (`pip install 'fastkv[bench]'`), so there are no plots.")
    lines += ["", METHOD, "## Scenarios", ""]
    for d in docs:
        lines += detail(d)
    path = os.path.join(results_dir, "REPORT.md")
    os.makedirs(results_dir, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path
