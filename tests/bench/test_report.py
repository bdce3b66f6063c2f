"""The report builder on synthetic runs: JSON written by the runner, tables, ratios, plots."""

from __future__ import annotations

import builtins
import json
import os

import pytest

from fastkv.bench import report, wrk
from fastkv.bench.runner import Runner
from fastkv.bench.scenarios import RunResult, resolve


def _run(system: str, **metrics: float) -> RunResult:
    return RunResult(system, metrics={**metrics, "errors": 0.0}, commands=[f"wrk ... {system}"],
                     servers=[f"{system} --name m0"])  # fmt: skip


def write_synthetic(out: str) -> None:
    machine = {"cpus": 2, "cpu_model": "test cpu", "mem_total": "1 kB", "platform": "linux", "python": "3.11",
               "wrk": "wrk 4.1.0", "etcd": "etcd Version: 3.4.23", "loadavg_at_start": [0.1, 0.1, 0.1]}  # fmt: skip
    r = Runner([], ["fastkv", "etcd"], 3, 5.0, out, note="synthetic")
    lat = {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0, "max_ms": 5.0}
    for name, conns in (("put-1", 1), ("put-64", 64)):
        runs = {
            "fastkv": [_run("fastkv", rps=v * conns, **lat) for v in (100, 300, 200)],
            "etcd": [_run("etcd", rps=100.0 * conns, **lat) for _ in range(3)],
        }
        for i, run in enumerate(runs["fastkv"] + runs["etcd"]):
            run.detail["load_1m"] = [0.5 + i, 0.7 + i]  # as Runner.one records them
        r.write(resolve(name), runs, machine, 3)
    failed = RunResult("etcd", error="RuntimeError: boom")
    runs = {
        "fastkv": [
            _run("fastkv", fanout_ms=2.0, first_ms=0.5, median_ms=1.0, ack_ms=0.4, driver_busy_ms=0.3)
        ],
        "etcd": [
            _run("etcd", fanout_ms=4.0, first_ms=1.0, median_ms=2.0, ack_ms=0.6, driver_busy_ms=0.3),
            failed,
        ],
    }
    r.write(resolve("watch-100"), runs, machine, 2)
    with open(os.path.join(out, "put_throughput.json"), "w") as f:  # another tool's file: ignored
        json.dump({"results": {}}, f)


def test_runner_json_medians_and_ratios(tmp_path) -> None:
    write_synthetic(str(tmp_path))
    doc = json.loads((tmp_path / "put-64.json").read_text())
    assert doc["systems"]["fastkv"]["median"]["rps"] == 200 * 64
    assert (doc["systems"]["fastkv"]["min"]["rps"], doc["systems"]["fastkv"]["max"]["rps"]) == (
        100 * 64,
        300 * 64,
    )
    assert doc["ratios"]["rps"] == pytest.approx(2.0)
    assert doc["machine"]["cpus"] == 2 and doc["note"] == "synthetic"
    assert doc["systems"]["etcd"]["runs"][0]["commands"] == ["wrk ... etcd"]
    w = json.loads((tmp_path / "watch-100.json").read_text())
    assert (w["systems"]["etcd"]["ok_runs"], w["systems"]["etcd"]["failed_runs"]) == (1, 1)
    assert w["systems"]["etcd"]["median"]["fanout_ms"] == 4.0  # the failed run is not in the median
    assert w["ratios"]["fanout_ms"] == pytest.approx(0.5)


def test_report_tables_and_plots(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    write_synthetic(str(tmp_path))
    text = read(report.build(str(tmp_path)))
    assert [d["scenario"] for d in report.load(str(tmp_path))] == ["put-1", "put-64", "watch-100"]
    row = next(ln for ln in text.splitlines() if ln.startswith("| `put-64`"))
    assert "12,800 (6,400-19,200)" in row and "| 6,400 (6,400-6,400) |" in row and "| 2.00 |" in row
    assert row.endswith("| 0.5-5.7 |"), row  # the load around the scenario's runs
    assert "run 1: 6,400 (load 0.5 -> 0.7)" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| `watch-100`"))
    assert "lower is better" in row and "| 0.50 |" in row and "etcd 1/2" in row
    assert "run 2: FAILED (RuntimeError: boom)" in text
    assert "Note: synthetic" in text and "wrk ... fastkv" in text and "fastkv --name m0" in text
    for png in ("throughput_vs_connections.png", "latency_percentiles.png", "watch_fanout.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{png})" in text


def test_report_without_matplotlib(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    write_synthetic(str(tmp_path))
    text = read(report.build(str(tmp_path)))
    assert "| `put-1` |" in text and "matplotlib is not installed" in text
    assert not (tmp_path / "plots").exists()


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_report_of_an_empty_directory(tmp_path) -> None:
    assert "No scenario results" in read(report.build(str(tmp_path)))


def test_histogram_percentiles() -> None:
    hist = {10: 50, 20: 40, 1000: 9, 50000: 1}
    assert wrk.percentile(hist, 50) == 10
    assert wrk.percentile(hist, 90) == 20
    assert wrk.percentile(hist, 99) == 1000
    assert wrk.percentile(hist, 99.9) == 50000
    assert wrk.percentile({}, 99) == 0
    out = "HIST 10:3 2000:1\nRESULT requests=4 duration_us=2000000 non2xx=0 sockerr=0 p99_us=7\n"
    assert wrk.parse_hist(out) == {10: 3, 2000: 1}
    assert wrk.parse_output(out)["rps"] == 2.0
