"""The tool against real servers: the watch driver with 100 watchers, fill, and a 1 s PUT scenario."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request

import pytest

from fastkv.bench import servers, watch, wrk
from fastkv.bench.cli import main
from tests.support.procs import ServerProcess, start_server

pytestmark = pytest.mark.slow
needs_wrk = pytest.mark.skipif(not wrk.have_wrk(), reason="wrk is not installed")


@pytest.fixture()
def fastkv(tmp_path) -> ServerProcess:  # type: ignore[misc]
    srv = start_server("fastkv", data_dir=str(tmp_path))
    yield srv
    srv.stop()


def test_watch_driver_100_watchers(fastkv: ServerProcess) -> None:
    medians, rounds = watch.run(fastkv.url, watchers=100, rounds=3)
    assert len(rounds) == 3
    assert medians["fanout_max_ms"] == max(r["fanout_ms"] for r in rounds)
    for one in rounds:
        assert 0 < one["first_ms"] <= one["median_ms"] <= one["fanout_ms"] < 5000
        assert 0 < one["ack_ms"] < 5000 and 0 < one["driver_busy_ms"] <= one["fanout_ms"]
    # Every round wrote the key once (warm-up + 3 rounds), and the watchers saw it each time.
    with urllib.request.urlopen(fastkv.url + "/v2/keys/bench/watch") as resp:
        assert json.loads(resp.read())["node"]["modifiedIndex"] >= 4


def test_watch_driver_reconnects_after_the_server_closes(fastkv: ServerProcess) -> None:
    with watch.WatchDriver(fastkv.url, 5) as d:
        d.round()
        for s in d.socks[:2]:  # as if the server had closed these after the event
            d._drop(d.socks.index(s))
        assert d.round()["fanout_ms"] > 0


@needs_wrk
def test_fill_writes_every_key_once(fastkv: ServerProcess) -> None:
    wrk.fill(fastkv.url, 301, value_bytes=10, prefix="f", connections=8)
    with urllib.request.urlopen(fastkv.url + "/v2/keys/f?sorted=true") as resp:
        nodes = json.loads(resp.read())["node"]["nodes"]
    assert sorted(n["key"] for n in nodes) == sorted(f"/f/k{i}" for i in range(301))
    assert {n["modifiedIndex"] - n["createdIndex"] for n in nodes} == {0}  # none written twice
    assert {n["value"] for n in nodes} == {"v" * 10}


@needs_wrk
def test_put_scenario_smoke(tmp_path) -> None:
    out = tmp_path / "results"
    assert (
        main(
            ["run", "-s", "put-8", "--runs", "1", "--duration", "1", "--systems", "fastkv", "--out", str(out)]
        )
        == 0
    )
    doc = json.loads((out / "put-8.json").read_text())
    run = doc["systems"]["fastkv"]["runs"][0]
    assert run["error"] is None, run
    assert run["metrics"]["rps"] > 0 and run["metrics"]["errors"] == 0
    assert run["metrics"]["p50_ms"] <= run["metrics"]["p99_ms"] <= run["metrics"]["max_ms"]
    assert 0 < run["metrics"]["client_cpu_cores"] < 4 and run["metrics"]["client_us_per_request"] > 0
    assert "kv.lua" in run["commands"][0] and "fastkv.cmd.server" in run["servers"][0]
    assert "| `put-8` |" in (out / "REPORT.md").read_text()


@needs_wrk
def test_paced_scenario_against_an_external_endpoint(fastkv: ServerProcess, tmp_path) -> None:
    """--fastkv-url: nothing is started; the paced script holds its rate and times every request."""
    out = tmp_path / "results"
    argv = ["run", "-s", "put-paced-300", "--runs", "1", "--duration", "1", "--systems", "fastkv",
            "--fastkv-url", fastkv.url, "--out", str(out), "--no-report"]  # fmt: skip
    assert main(argv) == 0
    run = json.loads((out / "put-paced-300.json").read_text())["systems"]["fastkv"]["runs"][0]
    assert run["error"] is None, run
    m = run["metrics"]
    assert m["untimed"] == 0 and sum(run["detail"]["histogram_us"].values()) == m["requests"]
    assert 200 < m["rps"] < 400
    assert run["servers"] == [f"(external endpoint {fastkv.url})"]
    assert servers.external("fastkv", fastkv.url).urls == [fastkv.url]


@needs_wrk
def test_paced_load_counts_a_stall_against_every_request_due_in_it(fastkv: ServerProcess) -> None:
    """Coordinated omission: the server is stopped for 0.6 s of a 500/s run.  About 300 requests
    were due during the stall; each is timed from when it was due, so far more than the 8 that
    were in flight on the 8 connections come out slower than 100 ms."""
    stop = threading.Timer(0.6, os.kill, (fastkv.proc.pid, signal.SIGSTOP))
    cont = threading.Timer(1.2, os.kill, (fastkv.proc.pid, signal.SIGCONT))
    stop.start()
    cont.start()
    try:
        r = wrk.run(fastkv.url, "paced.lua", 8, 3, ["500", "2", "100", "1000"])
    finally:
        cont.join()
        os.kill(fastkv.proc.pid, signal.SIGCONT)
    hist = r.hist
    assert sum(hist.values()) == r["requests"] and r["untimed"] == 0
    slow = sum(c for b, c in hist.items() if b >= 100_000)
    assert slow >= 100, hist
    assert 0.9 * 500 < r["rps"] < 1.1 * 500


@needs_wrk
def test_snapshot_scenario_counts_the_snapshots_taken() -> None:
    """The snapshot scenario's count comes from the server's log; a change of the log line shows here."""
    from dataclasses import replace

    from fastkv.bench.scenarios import measure, resolve, start_for

    sc = replace(resolve("put-snapshots-16"), server_flags=("--snapshot-count", "200"), warmup_s=0)
    dep = start_for(sc, "fastkv")
    try:
        r = measure(sc, dep, 1)
    finally:
        dep.stop()
    assert r.error is None, r
    assert r.metrics["snapshots"] >= 1 and r.metrics["requests"] >= 200


@needs_wrk
def test_a_run_with_error_answers_is_failed_not_measured(fastkv: ServerProcess) -> None:
    """GETs of keys that were never written are all 404: counted, and the run is reported as failed."""
    from dataclasses import replace

    from fastkv.bench.scenarios import measure, resolve

    sc = replace(resolve("get-4"), preload=0, warmup_s=0)
    r = measure(sc, servers.external("fastkv", fastkv.url), 1)
    assert r.metrics["errors"] == r.metrics["requests"] > 0
    assert r.error == f"{r.metrics['errors']:.0f} failed requests" and not r.ok
