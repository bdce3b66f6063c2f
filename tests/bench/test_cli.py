"""Argument parsing and scenario names of ``python -m fastkv.bench``."""

from __future__ import annotations

import pytest

from fastkv.bench import cli
from fastkv.bench.scenarios import DEFAULT, resolve, with_overrides


def parse(*argv: str):
    return cli.parser().parse_args(list(argv))


def test_run_defaults() -> None:
    a = parse("run", "--scenario", "put-1", "-s", "put-64")
    assert a.scenario == ["put-1", "put-64"]
    assert (a.runs, a.duration, a.systems) == (5, 5.0, ["fastkv", "etcd"])
    assert a.out == "bench/results" and a.fastkv_url is None and a.etcd_url is None


def test_run_all_and_options() -> None:
    a = parse("run", "--all", "--runs", "1", "--duration", "2", "--systems", "etcd",
              "--fastkv-url", "http://127.0.0.1:1", "--value-bytes", "256", "--keyspace", "500")  # fmt: skip
    assert a.all and a.runs == 1 and a.duration == 2.0 and a.systems == ["etcd"]
    scs = cli.scenarios_from(a)
    assert [s.name for s in scs] == [s.name for s in DEFAULT]
    assert all(s.value_bytes == 256 for s in scs)
    get = next(s for s in scs if s.name == "get-64")
    assert (get.keyspace, get.preload) == (500, 500)  # a GET scenario preloads its whole key space
    put = next(s for s in scs if s.name == "put-64")
    assert (put.keyspace, put.preload) == (500, 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],  # neither --scenario nor --all
        ["run", "--all", "-s", "put-1"],  # both
        ["run", "--all", "--systems", "fastkv,zookeeper"],
        ["run", "--all", "--systems", "etcd,etcd"],
        ["run", "--all", "--runs", "0"],
        ["run", "--all", "--duration", "-1"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(SystemExit, match="unknown scenario 'put-fast'.*put-64"):
        cli.main(["run", "-s", "put-fast"])


def test_name_patterns() -> None:
    s = resolve("put-128")
    assert (s.kind, s.mode, s.connections, s.members, s.metric) == ("wrk", "put", 128, 1, "rps")
    s = resolve("qget-16")
    assert (s.mode, s.connections, s.preload) == ("qget", 16, 10_000)
    s = resolve("cluster-put-follower-32")
    assert (s.members, s.target, s.connections) == (3, "follower", 32)
    s = resolve("watch-2000")
    assert (s.kind, s.watchers, s.higher_is_better, s.recursive) == ("watch", 2000, False, False)
    s = resolve("watch-recursive-300")
    assert (s.kind, s.watchers, s.recursive, s.name) == ("watch", 300, True, "watch-recursive-300")
    assert resolve("put-paced-8k").rate == 8000 and resolve("put-paced-500").rate == 500
    s = resolve("put-snapshots-64")
    assert "--snapshot-count" in s.server_flags and s.metric == "p99_ms"
    s = resolve("memory-2m")
    assert (s.keys, s.max_runs) == (2_000_000, 1)


def test_default_suite_is_what_the_issue_asks() -> None:
    names = [s.name for s in DEFAULT]
    for n in ["put-1", "put-64", "put-256", "cluster-put-leader-64", "cluster-put-follower-64", "get-64",
              "qget-64", "watch-100", "watch-1000", "watch-5000", "watch-recursive-5000", "put-paced-15k", "put-snapshots-64",
              "memory-1m"]:  # fmt: skip
        assert n in names
    assert all(resolve(n) is s for n, s in zip(names, DEFAULT, strict=True))


def test_overrides_leave_watch_key_space_alone() -> None:
    s = with_overrides(resolve("watch-100"), None, 10)
    assert s.keyspace == resolve("watch-100").keyspace


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "put-paced-15k" in out and "watch-5000" in out
