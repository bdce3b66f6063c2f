"""The TLS and auth scenarios end to end: one 1 s run of each on fastkv and on a real etcd 3.4.

The auth scenarios run at 4 connections and without their 10 s minimum here: etcd checks a bcrypt
hash on every authenticated request, so at 64 connections a 1 s run can end before its first answer
(the 64-connection points are the ones the security group measures, for at least 10 s)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from fastkv.bench import servers, wrk
from fastkv.bench.cli import main
from fastkv.bench.runner import Runner
from fastkv.bench.scenarios import resolve, with_overrides

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not wrk.have_wrk(), reason="wrk is not installed"),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
]


@pytest.mark.parametrize(
    ("scenario", "system"),
    [
        ("tls-put-64", "fastkv"),
        ("tls-put-64", "etcd"),
        ("tls-get-64", "fastkv"),
        ("tls-get-64", "etcd"),
        ("auth-put-4", "fastkv"),
        ("auth-put-4", "etcd"),
        ("auth-get-4", "fastkv"),
        ("auth-get-4", "etcd"),
    ],
)
def test_one_second_run(scenario: str, system: str, tmp_path) -> None:
    out = tmp_path / "results"
    sc = replace(with_overrides(resolve(scenario), None, 300), min_duration_s=0)
    assert Runner([sc], [system], 1, 1, str(out), log=lambda line: None).run() == [
        str(out / f"{scenario}.json")
    ]
    text = (out / f"{scenario}.json").read_text()
    run = json.loads(text)["systems"][system]["runs"][0]
    assert run["error"] is None, run
    m = run["metrics"]
    assert m["requests"] > 0 and m["rps"] > 0 and m["errors"] == 0
    assert m["p50_ms"] <= m["p99_ms"] <= m["max_ms"]
    if scenario.startswith("tls-"):
        assert run["detail"]["url"].startswith("https://127.0.0.1:")
        assert run["detail"]["tls"].startswith("TLSv1.")
        assert "--cert-file" in run["servers"][0] and "--key-file" in run["servers"][0]
        assert " https://127.0.0.1:" in run["commands"][0]
    else:
        assert run["detail"]["url"].startswith("http://127.0.0.1:")
        assert run["detail"]["auth_setup_s"] > 0 and "settle_s" in run["detail"]
        assert run["commands"][0].startswith(f"{wrk.AUTH_ENV}='<Basic credentials of the bench user>' wrk ")
        # No credentials in the results: Basic headers of bench and root start with these.
        assert "YmVuY2g6" not in text and "cm9vdDo" not in text


def test_tls_scenario_against_an_https_endpoint_started_elsewhere(tmp_path) -> None:
    """--fastkv-url https://... with --ca-file: nothing is started, the tool verifies the server with
    that CA; without it the certificate is not trusted and the run fails at once, naming why."""
    dep = servers.start("fastkv", tls=True)
    try:
        assert dep.tls is not None and dep.url.startswith("https://127.0.0.1:")
        out = tmp_path / "results"
        argv = ["run", "-s", "tls-put-8", "--runs", "1", "--duration", "1", "--systems", "fastkv",
                "--fastkv-url", dep.url, "--out", str(out), "--no-report"]  # fmt: skip
        assert main([*argv, "--ca-file", dep.tls.ca_file]) == 0
        run = json.loads((out / "tls-put-8.json").read_text())["systems"]["fastkv"]["runs"][0]
        assert run["error"] is None, run
        assert run["servers"] == [f"(external endpoint {dep.url})"] and run["metrics"]["requests"] > 0
        assert main(argv) == 0
        run = json.loads((out / "tls-put-8.json").read_text())["systems"]["fastkv"]["runs"][0]
        assert "certificate verify failed" in run["error"]
        # A plain scenario against the https endpoint: the tool's own check refuses at once too.
        assert main([*argv[:2], "put-8", *argv[3:]]) == 0
        run = json.loads((out / "put-8.json").read_text())["systems"]["fastkv"]["runs"][0]
        assert "certificate verify failed" in run["error"]
    finally:
        dep.stop()
