"""fastkvctl against etcdctl: the same command sequences, compared byte for byte.

etcdctl (the oracle) runs against a real etcd under key prefix ``/o<n>``; fastkvctl runs against
``target_url`` under ``/f<n>``.  Only what must differ is normalized: the prefix, the program name, indexes
(the two runs share one store, so indexes differ) and expiration times.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.etcd

_counter = itertools.count()
_INDEX = re.compile(
    r'("(?:createdIndex|modifiedIndex)":|(?:Created-Index|Modified-Index|Index): |\) \[)(\d+)'
)
_IN_ORDER_KEY = re.compile(r"/\d{20}")
_EXPIRATION = re.compile(r'"expiration":"[^"]*"')


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["ETCDCTL_API"] = "2"
    return env


def run_tool(tool: str, url: str | None, args: list[str], stdin: str = "") -> tuple[int, str, str]:
    argv = ["etcdctl"] if tool == "etcdctl" else [sys.executable, "-m", "fastkv.cli.main"]
    if url is not None:
        argv += ["--endpoints", url]
    p = subprocess.run(argv + args, input=stdin, capture_output=True, text=True, env=_env(), timeout=30)
    return p.returncode, p.stdout, p.stderr


def normalize(text: str, prefix: str) -> str:
    text = text.replace(prefix, "/P").replace("fastkvctl", "etcdctl")
    text = _EXPIRATION.sub('"expiration":"E"', text)
    text = _IN_ORDER_KEY.sub("/N", text)
    return _INDEX.sub(lambda m: m.group(1) + "N", text)


def compare(oracle_url: str, target_url: str, script: list[list[str]], stdin: str = "") -> None:
    n = next(_counter)
    results = {}
    for tool, url, prefix in (("etcdctl", oracle_url, f"/o{n}"), ("fastkvctl", target_url, f"/f{n}")):
        outs = []
        for args in script:
            args = [a.replace("/P", prefix) for a in args]
            code, out, err = run_tool(tool, url, args, stdin)
            outs.append((args, code, normalize(out, prefix), normalize(err, prefix)))
        results[tool] = outs
    for (args, *want), (_, *got) in zip(results["etcdctl"], results["fastkvctl"], strict=True):
        assert got == want, f"fastkvctl {' '.join(args)}"


FORMATS = ["simple", "json", "extended"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_set_get_update_rm(oracle_url: str, target_url: str, fmt: str) -> None:
    o = ["-o", fmt]
    compare(
        oracle_url,
        target_url,
        [
            [*o, "set", "/P/a", 'hello <&> "q" é'],
            [*o, "set", "/P/a", "two"],
            [*o, "get", "/P/a"],
            [*o, "set", "--swap-with-value", "two", "/P/a", "three"],
            [*o, "set", "--swap-with-value", "nope", "/P/a", "four"],
            [*o, "update", "/P/a", "five"],
            [*o, "update", "/P/missing", "x"],
            [*o, "mk", "/P/a", "dup"],
            [*o, "mk", "/P/b", "new"],
            [*o, "get", "/P"],
            [*o, "get", "/P/nope"],
            [*o, "rm", "--with-value", "bad", "/P/b"],
            [*o, "rm", "--with-value", "new", "/P/b"],
            [*o, "rm", "/P/a"],
            [*o, "rm", "/P/a"],
        ],
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_directories_and_ls(oracle_url: str, target_url: str, fmt: str) -> None:
    o = ["-o", fmt]
    compare(
        oracle_url,
        target_url,
        [
            [*o, "mkdir", "/P/d"],
            [*o, "mkdir", "/P/d"],
            [*o, "setdir", "/P/d"],
            [*o, "setdir", "/P/e"],
            [*o, "updatedir", "/P/e"],
            [*o, "set", "/P/d/x", "1"],
            [*o, "mkdir", "/P/d/sub"],
            [*o, "set", "/P/d/sub/y", "2"],
            [*o, "ls", "--sort", "/P"],
            [*o, "ls", "--sort", "-r", "-p", "/P"],
            [*o, "ls", "/P/d/x"],
            [*o, "rm", "/P/d"],
            [*o, "rmdir", "/P/d"],
            [*o, "rmdir", "/P/e"],
            [*o, "rm", "--dir", "/P/d/sub"],
            [*o, "rm", "-r", "/P/d"],
        ],
    )


def test_ttl_and_in_order(oracle_url: str, target_url: str) -> None:
    compare(
        oracle_url,
        target_url,
        [
            ["-o", "json", "mk", "--ttl", "100", "/P/t", "v"],
            ["-o", "extended", "get", "/P/t"],
            ["mk", "/P/t2", "v", "--ttl", "50"],
            ["-o", "json", "get", "/P/t2"],
            ["mk", "--in-order", "/P/q", "first"],
            ["ls", "/P/q"],
        ],
    )


def test_watch_history(oracle_url: str, target_url: str) -> None:
    compare(
        oracle_url,
        target_url,
        [
            ["set", "/P/w/a", "1"],
            ["mkdir", "/P/w/d"],
            ["watch", "--after-index", "1", "/P/w/a"],
            ["watch", "-r", "--after-index", "1", "/P/w"],
            ["-o", "json", "watch", "-r", "--after-index", "1", "/P/w"],
        ],
    )


def test_stdin_and_arg_errors(oracle_url: str, target_url: str) -> None:
    compare(oracle_url, target_url, [["set", "/P/s"], ["update", "/P/s"]], stdin="from stdin\n")
    compare(
        oracle_url,
        target_url,
        [
            ["set", "/P/s"],
            ["get"],
            ["rm"],
            ["watch"],
            ["exec-watch", "/P/x"],
            ["set", "--", "/P/dash", "-v"],
            ["get", "/P/dash", "extra", "--unknown"],
            ["get", "--bogus", "/P/dash"],
            ["set", "--ttl", "abc", "/P/k", "v"],
            ["get", "-q=x", "/P/k"],
            ["-o", "nope", "get", "/P/dash"],
        ],
    )


def test_help_and_global_flags(oracle_url: str, target_url: str) -> None:
    cmds = ["set", "mk", "mkdir", "setdir", "update", "updatedir", "rm", "rmdir", "get", "ls", "watch"]
    script = [["--help"], [], ["help", "get"], ["nope"], ["--bogus"], ["--timeout", "1", "get", "/x"]]
    script += [[c, "--help"] for c in [*cmds, "exec-watch", "member", "cluster-health"]]
    script += [["member", "list", "-h"], ["member", "add", "-h"], ["member", "remove", "-h"]]
    compare(oracle_url, target_url, script)


def test_member_commands(oracle_url: str, target_url: str) -> None:
    compare(
        oracle_url,
        target_url,
        [
            ["member", "list", "extra"],
            ["member", "add", "only-name"],
            ["member", "remove"],
            ["member", "remove", "default"],
            ["member", "update", "x"],
        ],
    )


def _strip_ids(text: str) -> str:
    return re.sub(r"[0-9a-f]{12,16}|http://127\.0\.0\.1:\d+", "X", text)


def test_member_list_and_cluster_health(oracle_url: str, target_url: str) -> None:
    for args in (["member", "list"], ["cluster-health"]):
        want = run_tool("etcdctl", oracle_url, args)
        got = run_tool("fastkvctl", target_url, args)
        assert (got[0], _strip_ids(got[1]), got[2]) == (want[0], _strip_ids(want[1]), want[2])


@pytest.mark.parametrize("no_sync", [False, True])
def test_connection_refused(no_sync: bool) -> None:
    from tests.support.procs import free_port, have_etcd

    if not have_etcd():
        pytest.skip("etcd/etcdctl not installed")
    url = f"http://127.0.0.1:{free_port()}"
    args = (["--no-sync"] if no_sync else []) + ["get", "/x"]
    want = run_tool("etcdctl", url, args)
    got = run_tool("fastkvctl", url, args)
    assert got == want
    assert got[0] == (4 if no_sync else 2)


def test_endpoint_env_precedence(oracle_url: str) -> None:
    env = _env()
    env["ETCDCTL_ENDPOINTS"] = oracle_url
    env["ETCDCTL_PEERS"] = "http://127.0.0.1:1"
    argv = [sys.executable, "-m", "fastkv.cli.main", "--no-sync", "ls", "/"]
    assert subprocess.run(argv, capture_output=True, env=env, timeout=30).returncode == 0
    env.pop("ETCDCTL_ENDPOINTS")
    assert subprocess.run(argv, capture_output=True, env=env, timeout=30).returncode == 4


@pytest.mark.parametrize("no_sync", [False, True])
def test_total_timeout_expires_like_etcdctl(oracle_url: str, no_sync: bool) -> None:
    """Against an endpoint that accepts connections but never answers, --total-timeout ends the
    sync with exit 2 and a command with exit 4, whatever --timeout says."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = ["--timeout", "10s", "--total-timeout", "300ms"] + (["--no-sync"] if no_sync else [])
        args += ["get", "/tt-missing"]
        want = run_tool("etcdctl", url, args)
        got = run_tool("fastkvctl", url, args)
    assert got == want
    assert got == (4 if no_sync else 2, "", "Error:  context deadline exceeded\n")
