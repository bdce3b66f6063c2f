"""The named scenarios and how one run of each is measured on one deployment.

Names with a number at the end take it as the connection count (``put-128``, ``get-16``,
``cluster-put-follower-32``), the watcher count (``watch-2000``) or the rate (``put-paced-8000``),
so any point can be measured by naming it; ``DEFAULT`` lists the suite that ``--all`` runs and
``GROUPS`` the named sets (``security``: the TLS and auth scenarios with their plain twins).

``tls-<put|get|qget>-N`` is the closed-loop scenario over https, both systems started with the same
generated certificate; ``auth-<put|get|qget>-N`` the same with v2 auth enabled and every request sent
as user ``bench`` (Basic auth).  Their plain twin is the name without the prefix: the report compares
each with its twin measured in the same run.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from fastkv.bench import servers, watch, wrk


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "wrk" (closed loop), "paced" (open loop), "watch", "memory"
    title: str
    metric: str  # the headline metric, a key of a run's ``metrics``
    higher_is_better: bool
    mode: str = "put"  # wrk: put | get | qget
    members: int = 1
    target: str = "leader"  # which member the load goes to: leader | follower
    connections: int = 64
    value_bytes: int = 100
    keyspace: int = 100_000
    preload: int = 0  # keys written before the measurement (GET scenarios)
    rate: int = 0  # paced: requests per second
    watchers: int = 0
    recursive: bool = False  # watch: the watchers wait on a directory with recursive=true
    rounds: int = 0
    keys: int = 0  # memory: keys loaded
    server_flags: tuple[str, ...] = ()
    max_runs: int = 0  # 0: as many as --runs
    warmup_s: float = 1.0
    tls: bool = False  # https client URLs, the same generated certificate for both systems
    auth: bool = False  # v2 auth enabled, every request as user bench with Basic credentials
    min_duration_s: float = 0  # a measurement lasts at least this long, whatever --duration says

    def params(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k not in ("name", "title", "kind")}


SNAPSHOT_COUNT = 10_000


def _closed(name: str, mode: str, connections: int, members: int = 1, target: str = "leader") -> Scenario:
    what = {"put": "PUT", "get": "GET (local read)", "qget": "GET quorum=true"}[mode]
    where = "single node" if members == 1 else f"{members} members, to the {target}"
    return Scenario(
        name=name,
        kind="wrk",
        title=f"{what}, {where}, {connections} connection{'s' if connections > 1 else ''}",
        metric="rps",
        higher_is_better=True,
        mode=mode,
        members=members,
        target=target,
        connections=connections,
        keyspace=10_000 if mode != "put" else 100_000,
        preload=10_000 if mode != "put" else 0,
    )


# etcd checks a bcrypt hash (about 55 ms of CPU here) on every authenticated request, so at 64
# connections its answers come in waves seconds apart; 10 s holds a few of them.
AUTH_MIN_DURATION_S = 10.0

VARIANTS = {
    "tls": "over TLS (https, server certificate only)",
    "auth": "with v2 auth on (Basic auth as user bench)",
}


def variant_base(name: str) -> tuple[str, str] | None:
    """(variant, plain twin's name) of a ``tls-``/``auth-`` scenario name, else None."""
    prefix, sep, rest = name.partition("-")
    if sep and prefix in VARIANTS:
        return prefix, rest
    return None


def _secure(variant: str, mode: str, connections: int) -> Scenario:
    base = _closed(f"{mode}-{connections}", mode, connections)
    return replace(
        base,
        name=f"{variant}-{base.name}",
        title=f"{base.title}, {VARIANTS[variant]}",
        tls=variant == "tls",
        auth=variant == "auth",
        min_duration_s=AUTH_MIN_DURATION_S if variant == "auth" else 0,
    )


def _watch(n: int, recursive: bool = False) -> Scenario:
    return Scenario(
        name=f"watch-recursive-{n}" if recursive else f"watch-{n}",
        kind="watch",
        title=(
            f"watch fan-out: one write below a directory reaching {n} recursive watchers of it"
            if recursive
            else f"watch fan-out: one write reaching {n} watchers"
        )
        + " (just before the write -> last watcher has it)",
        metric="fanout_ms",
        higher_is_better=False,
        watchers=n,
        rounds=20 if n <= 1000 else 10,
        recursive=recursive,
    )


def _paced(rate: int, name: str | None = None) -> Scenario:
    return Scenario(
        name=name or (f"put-paced-{rate // 1000}k" if rate % 1000 == 0 else f"put-paced-{rate}"),
        kind="paced",
        title=f"PUT latency at a fixed {rate:,} PUT/s (open loop, 64 connections), single node",
        metric="p99_ms",
        higher_is_better=False,
        rate=rate,
    )


def _snapshots(connections: int) -> Scenario:
    return Scenario(
        name=f"put-snapshots-{connections}",
        kind="wrk",
        title=f"PUT p99 with --snapshot-count {SNAPSHOT_COUNT} (snapshots during the run), {connections} connections",
        metric="p99_ms",
        higher_is_better=False,
        connections=connections,
        server_flags=("--snapshot-count", str(SNAPSHOT_COUNT)),
    )


MEMORY = Scenario(
    name="memory-1m",
    kind="memory",
    title="resident memory (VmRSS) after loading 1M keys of 100 B, single node",
    metric="rss_mib",
    higher_is_better=False,
    keys=1_000_000,
    max_runs=1,
    warmup_s=0,
)

DEFAULT: list[Scenario] = [
    _closed("put-1", "put", 1),
    _closed("put-64", "put", 64),
    _closed("put-256", "put", 256),
    _closed("cluster-put-leader-1", "put", 1, 3, "leader"),
    _closed("cluster-put-leader-64", "put", 64, 3, "leader"),
    _closed("cluster-put-follower-64", "put", 64, 3, "follower"),
    _closed("get-64", "get", 64),
    _closed("qget-64", "qget", 64),
    _watch(100),
    _watch(1000),
    _watch(5000),
    _watch(5000, recursive=True),
    _paced(15_000),
    _snapshots(64),
    MEMORY,
]
SECURITY: list[Scenario] = [
    _secure("tls", "put", 64),
    _secure("tls", "get", 64),
    _secure("auth", "put", 64),
    _secure("auth", "get", 64),
]
BY_NAME = {s.name: s for s in DEFAULT + SECURITY}
# Named sets for -s: each variant with its plain twin, so the comparison is from the same run.
GROUPS: dict[str, list[Scenario]] = {
    "security": [BY_NAME["put-64"], BY_NAME["get-64"], *SECURITY],
}

_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Scenario]]] = [
    (re.compile(r"(put|get|qget)-(\d+)"), lambda m: _closed(m.group(0), m.group(1), int(m.group(2)))),
    (
        re.compile(r"cluster-put-(leader|follower)-(\d+)"),
        lambda m: _closed(m.group(0), "put", int(m.group(2)), 3, m.group(1)),
    ),
    (
        re.compile(r"(tls|auth)-(put|get|qget)-(\d+)"),
        lambda m: _secure(m.group(1), m.group(2), int(m.group(3))),
    ),
    (re.compile(r"watch-(\d+)"), lambda m: _watch(int(m.group(1)))),
    (re.compile(r"watch-recursive-(\d+)"), lambda m: _watch(int(m.group(1)), recursive=True)),
    (
        re.compile(r"put-paced-(\d+)(k?)"),
        lambda m: _paced(int(m.group(1)) * (1000 if m.group(2) else 1), m.group(0)),
    ),
    (re.compile(r"put-snapshots-(\d+)"), lambda m: _snapshots(int(m.group(1)))),
    (
        re.compile(r"memory-(\d+)([km])"),
        lambda m: replace(
            MEMORY,
            name=m.group(0),
            keys=int(m.group(1)) * (1000 if m.group(2) == "k" else 1_000_000),
            title=MEMORY.title.replace("1M", f"{m.group(1)}{m.group(2).upper()}"),
        ),
    ),
]


def resolve(name: str) -> Scenario:
    """The scenario called ``name``: a default one, or one built from a name pattern."""
    if name in BY_NAME:
        return BY_NAME[name]
    for pat, make in _PATTERNS:
        m = pat.fullmatch(name)
        if m:
            return make(m)
    known = ", ".join(BY_NAME)
    raise ValueError(
        f"unknown scenario {name!r}; known: {known}; groups: {', '.join(GROUPS)}; patterns: put-N, get-N, "
        "qget-N, tls-put-N, tls-get-N, tls-qget-N, auth-put-N, auth-get-N, auth-qget-N, cluster-put-leader-N, "
        "cluster-put-follower-N, watch-N, watch-recursive-N, put-paced-N[k], put-snapshots-N, memory-N(k|m)"
    )


def expand(name: str) -> list[Scenario]:
    """The scenarios a ``-s`` name stands for: a group's members, or the one scenario."""
    if name in GROUPS:
        return list(GROUPS[name])
    return [resolve(name)]


def with_overrides(sc: Scenario, value_bytes: int | None, keyspace: int | None) -> Scenario:
    """Apply --value-bytes / --keyspace (a GET scenario preloads its whole key space)."""
    if value_bytes is not None:
        sc = replace(sc, value_bytes=value_bytes)
    if keyspace is not None and sc.kind in ("wrk", "paced"):
        sc = replace(sc, keyspace=keyspace, preload=keyspace if sc.preload else 0)
    return sc


@dataclass
class RunResult:
    """One run of one scenario on one system."""

    system: str
    metrics: dict[str, float] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # load generator command lines
    servers: list[str] = field(default_factory=list)  # server command lines
    error: str | None = None
    logs: dict[str, str] = field(default_factory=dict)
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def _target_url(sc: Scenario, dep: servers.Deployment) -> str:
    if sc.members == 1:
        return dep.url
    if len(dep.urls) < sc.members:
        raise RuntimeError(f"{sc.name} needs a {sc.members}-member cluster; {dep.url} has {len(dep.urls)}")
    leader = servers.leader_url(dep)
    if sc.target == "leader":
        return leader
    followers = [u for u in dep.urls if u != leader]
    if not followers:
        raise RuntimeError(f"leader {leader} is not among the members {dep.urls}")
    return followers[0]


def _ms(us: float) -> float:
    return us / 1000.0


def _snapshots_logged(dep: servers.Deployment) -> int:
    """Snapshots the members have logged so far: etcd logs "saved snapshot at index N", fastkv a
    JSON line with msg "saved snapshot"."""
    return sum(m.log_tail(1 << 30).count("saved snapshot") for m in dep.members)


def _measure_wrk(sc: Scenario, dep: servers.Deployment, url: str, duration_s: float, res: RunResult) -> None:
    args = [sc.mode, str(sc.value_bytes), str(sc.keyspace)]
    if sc.preload:
        t = wrk.fill(url, sc.preload, sc.value_bytes, "bench")
        res.detail["preload_s"] = round(t, 2)
    authorization = None
    if sc.auth:
        # After the preload: it is set-up, and etcd checks a bcrypt hash per authenticated request.
        t0 = time.monotonic()
        authorization = servers.enable_auth(dep, url)
        res.detail["auth_setup_s"] = round(time.monotonic() - t0, 2)
    leader = servers.leader_url(dep) if sc.members > 1 else None
    if sc.warmup_s:
        wrk.run(url, "kv.lua", sc.connections, sc.warmup_s, args, authorization)
    if sc.auth and not dep.external:
        # Requests still queued when the warm-up's wrk exits (password checks take milliseconds on
        # etcd) would otherwise be served during the measurement.
        res.detail["settle_s"] = round(servers.settle(dep.pids()), 2)
    snaps_before = _snapshots_logged(dep)
    r = wrk.run(url, "kv.lua", sc.connections, duration_s, args, authorization)
    res.commands.append(r.command)
    if not r["requests"]:
        raise RuntimeError(f"no request was answered within the {duration_s:g} s run")
    res.metrics = {
        "rps": r["rps"],
        "p50_ms": _ms(r["p50_us"]),
        "p90_ms": _ms(r["p90_us"]),
        "p99_ms": _ms(r["p99_us"]),
        "p999_ms": _ms(r["p999_us"]),
        "max_ms": _ms(r["max_us"]),
        "requests": r["requests"],
        "client_cpu_cores": r["client_cpu_cores"],
        "client_us_per_request": r["client_us_per_request"],
        "errors": r["non2xx"] + r["sockerr"],
    }
    if "--snapshot-count" in sc.server_flags and not dep.external:
        res.metrics["snapshots"] = float(_snapshots_logged(dep) - snaps_before)
    if leader is not None:
        res.detail["leader_changed"] = servers.leader_url(dep, timeout=5.0) != leader
    if sc.server_flags and dep.external:
        res.detail["note"] = "external endpoint: server flags as configured there"


def _measure_paced(
    sc: Scenario, dep: servers.Deployment, url: str, duration_s: float, res: RunResult
) -> None:
    threads = wrk.threads_for(sc.connections)
    args = [str(sc.rate), str(threads), str(sc.value_bytes), str(sc.keyspace)]
    if sc.warmup_s:
        wrk.run(url, "paced.lua", sc.connections, sc.warmup_s, args)
    r = wrk.run(url, "paced.lua", sc.connections, duration_s, args)
    res.commands.append(r.command)
    hist = r.hist
    res.detail["histogram_us"] = {str(k): v for k, v in sorted(hist.items())}
    res.metrics = {
        "p50_ms": _ms(wrk.percentile(hist, 50)),
        "p90_ms": _ms(wrk.percentile(hist, 90)),
        "p99_ms": _ms(wrk.percentile(hist, 99)),
        "p999_ms": _ms(wrk.percentile(hist, 99.9)),
        "max_ms": _ms(max(hist) if hist else 0),
        "rps": r["rps"],
        "target_rps": float(sc.rate),
        "uncorrected_p99_ms": _ms(r["p99_us"]),
        "requests": r["requests"],
        "client_cpu_cores": r["client_cpu_cores"],
        "client_us_per_request": r["client_us_per_request"],
        "untimed": r["untimed"],
        "errors": r["non2xx"] + r["sockerr"],
    }
    if r["rps"] < 0.97 * sc.rate:
        res.detail["note"] = (
            f"achieved {r['rps']:.0f}/s, below the target {sc.rate}/s: the system could not keep up"
        )


def _measure_watch(sc: Scenario, dep: servers.Deployment, url: str, res: RunResult) -> None:
    # The server's CPU during each delivery, when this tool started it (one member).
    pid = dep.pid() if sc.members == 1 else None
    medians, rounds = watch.run(url, sc.watchers, sc.rounds, sc.value_bytes, sc.recursive, pid)
    res.detail["rounds"] = rounds
    res.metrics = medians
    res.metrics["errors"] = 0.0
    res.commands.append(
        f"fastkv.bench.watch.run({url!r}, watchers={sc.watchers}, rounds={sc.rounds}, "
        f"value_bytes={sc.value_bytes}, recursive={sc.recursive})"
    )


def _measure_memory(sc: Scenario, dep: servers.Deployment, url: str, res: RunResult) -> None:
    pid = dep.pid()
    if pid is None:
        raise RuntimeError("memory needs a single server started by this tool (its pid for VmRSS)")
    before = servers.rss_mib(pid)
    fill_s = wrk.fill(url, sc.keys, sc.value_bytes, "fill")
    time.sleep(1.0)
    after = servers.rss_mib(pid)
    res.commands.append(
        f"wrk -t 2 -c 64 -s {wrk.lua_path('fill.lua')} {url} -- {sc.keys} 2 {sc.value_bytes} fill <marker>"
    )
    res.metrics = {
        "rss_mib": after,
        "rss_empty_mib": before,
        "bytes_per_key": (after - before) * 1024 * 1024 / sc.keys,
        "fill_s": fill_s,
        "fill_rps": sc.keys / fill_s,
        "errors": 0.0,
    }


def duration_for(sc: Scenario, duration_s: float) -> float:
    """The measurement's length: ``--duration``, or the scenario's minimum when that is longer."""
    return max(duration_s, sc.min_duration_s)


def measure(sc: Scenario, dep: servers.Deployment, duration_s: float) -> RunResult:
    """One run on a running deployment.  Never raises: a failure is a run with ``error`` set."""
    duration_s = duration_for(sc, duration_s)
    res = RunResult(dep.kind, servers=dep.commands())
    try:
        url = _target_url(sc, dep)
        res.detail["url"] = url
        if sc.tls:
            if not url.startswith("https://"):
                raise RuntimeError(f"{sc.name} measures TLS and needs an https endpoint; {url} is not one")
            res.detail["tls"] = servers.tls_session(url, servers.tls_context(dep.ca_file))
        if sc.auth and dep.external:
            raise RuntimeError(f"{sc.name} turns auth on itself and needs a server this tool starts")
        if sc.members > 1 or dep.external:
            servers.wait_write_ok(url, context=dep.context())
        if sc.kind == "wrk":
            _measure_wrk(sc, dep, url, duration_s, res)
        elif sc.kind == "paced":
            _measure_paced(sc, dep, url, duration_s, res)
        elif sc.kind == "watch":
            _measure_watch(sc, dep, url, res)
        elif sc.kind == "memory":
            _measure_memory(sc, dep, url, res)
        else:
            raise ValueError(f"unknown scenario kind {sc.kind}")
        if res.metrics.get("errors"):
            res.error = f"{res.metrics['errors']:.0f} failed requests"
    except Exception as e:  # noqa: BLE001 - reported with the run, the other runs go on
        res.error = f"{type(e).__name__}: {e}"
    if res.error and not dep.external:
        res.logs = dep.log_tails()
    return res


def summarize(runs: list[RunResult]) -> dict[str, dict[str, float]]:
    """Median, min and max of every metric over the runs without errors."""
    ok = [r for r in runs if r.ok]
    out: dict[str, dict[str, float]] = {"median": {}, "min": {}, "max": {}}
    if not ok:
        return out
    for k in ok[0].metrics:
        vals = [r.metrics[k] for r in ok if k in r.metrics]
        out["median"][k] = statistics.median(vals)
        out["min"][k] = min(vals)
        out["max"][k] = max(vals)
    return out


def start_for(sc: Scenario, kind: str) -> servers.Deployment:
    return servers.start(kind, size=sc.members, extra=list(sc.server_flags), tls=sc.tls)
