"""wrk as the HTTP load generator, driven by the Lua scripts shipped in ``fastkv/bench/lua``.

wrk is C with one epoll loop per thread, and its Lua hooks run in LuaJIT, so it spends a few
microseconds of CPU per request where a Python client spends tens: on a 2-core machine whose other
core runs the server, the client must cost far less than the server or it measures itself.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources

AUTH_ENV = "FASTKV_BENCH_AUTHORIZATION"  # kv.lua sends its value as the Authorization header

RESULT_RE = re.compile(r"^RESULT (.*)$", re.M)
HIST_RE = re.compile(r"^HIST ?(.*)$", re.M)


def lua_path(name: str) -> str:
    """Filesystem path of a packaged wrk script."""
    return str(resources.files("fastkv.bench").joinpath("lua", name))


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def threads_for(connections: int) -> int:
    """One wrk thread per core the client may use: one for a single connection, else two."""
    return 1 if connections == 1 else 2


def wrk_argv(url: str, script: str, connections: int, duration_s: float, args: list[str]) -> list[str]:
    return [
        "wrk",
        "-t", str(threads_for(connections)),
        "-c", str(connections),
        "-d", f"{max(1, round(duration_s))}s",
        "--timeout", "10s",
        "--latency",
        "-s", lua_path(script),
        url,
        "--", *args,
    ]  # fmt: skip


def parse_output(out: str) -> dict[str, float]:
    """The RESULT line's fields (and, from paced.lua, the latency histogram as ``hist``)."""
    m = RESULT_RE.search(out)
    if not m:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out[-2000:]}")
    r: dict[str, float] = {k: float(v) for k, v in (kv.split("=", 1) for kv in m.group(1).split())}
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
    return r


def parse_hist(out: str) -> dict[int, int]:
    m = HIST_RE.search(out)
    if not m:
        return {}
    return {int(b): int(c) for b, c in (p.split(":") for p in m.group(1).split())}


def percentile(hist: dict[int, int], q: float) -> float:
    """The q-th percentile (0-100) of a bucketed histogram, as the bucket's lower bound in µs."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = q / 100 * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return float(b)
    return float(max(hist))


@dataclass
class WrkResult:
    """One wrk run: the RESULT fields (plus ``rps``), paced.lua's histogram, the command line."""

    values: dict[str, float]
    hist: dict[int, int]
    command: str

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def run(
    url: str,
    script: str,
    connections: int,
    duration_s: float,
    args: list[str],
    authorization: str | None = None,
) -> WrkResult:
    """Run wrk once and parse what the script printed.  ``authorization`` goes to the script through
    the environment (``FASTKV_BENCH_AUTHORIZATION``), so credentials stay out of the command line;
    the recorded command names the variable, not its value."""
    argv = wrk_argv(url, script, connections, duration_s, args)
    env = None
    if authorization:
        env = {**os.environ, AUTH_ENV: authorization}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-2000:]}")
    values = parse_output(proc.stdout)
    # wrk's own CPU (user + kernel): what the load generator costs beside the server.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    values["client_cpu_cores"] = cpu / (values["duration_us"] / 1e6) if values["duration_us"] else 0.0
    values["client_us_per_request"] = cpu * 1e6 / values["requests"] if values["requests"] else 0.0
    command = shlex.join(argv)
    if authorization:
        command = f"{AUTH_ENV}='<Basic credentials of the bench user>' {command}"
    return WrkResult(values, parse_hist(proc.stdout), command)


def fill(url: str, total: int, value_bytes: int = 100, prefix: str = "bench", connections: int = 64) -> float:
    """PUT keys <prefix>/k0 .. k<total-1> once each with wrk (fill.lua); seconds taken.

    wrk's main thread sleeps for the whole -d, so each wrk thread leaves a marker file when its
    share is acknowledged and wrk is stopped once all markers are there."""
    nthreads = 2
    tmp = tempfile.mkdtemp(prefix="fastkv-bench-fill-")
    marker = os.path.join(tmp, "done")
    argv = wrk_argv(
        url, "fill.lua", connections, 3600, [str(total), str(nthreads), str(value_bytes), prefix, marker]
    )
    argv[2] = str(nthreads)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        markers = [f"{marker}.{t}" for t in range(nthreads)]
        while not all(os.path.exists(m) for m in markers):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"wrk exited before the fill completed:\n{out[-2000:]}")
            if time.monotonic() - t0 > 3000:
                raise TimeoutError("fill did not complete")
            time.sleep(0.05)
        errors = 0
        for m in markers:
            with open(m) as f:
                errors += int(f.read() or 0)
        if errors:
            raise RuntimeError(f"fill of {total} keys had {errors} failed requests")
        return time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
