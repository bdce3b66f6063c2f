"""The real etcdctl (ETCDCTL_API=2) against the target, compared with the same commands against a real etcd.

Each step's exit code, stdout and stderr must equal what etcdctl prints against etcd 3.4 (the literal
expectations below were observed there) and must be identical between target and reference once etcd
indexes are normalized (``[1163]`` → ``[N]``, ``[1 != 13]`` → ``[N != N]``).  When the target is etcd itself
the reference is the target.

etcdctl first syncs the member list and then talks to a random member; against a cluster target that would
leave the follower under test (and a read could land on a member that has not applied the write yet), so
there every target command runs with ``--no-sync``, which pins etcdctl to the given endpoint.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conformance.conftest import Api, Target, wait_until
from tests.support.procs import have_etcd, start_server

pytestmark = pytest.mark.etcd

CTL_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def reference(target: Target) -> Iterator[Target]:
    if not have_etcd():
        pytest.skip("etcd/etcdctl not installed")
    if target.kind == "etcd":
        yield target
        return
    server = start_server("etcd")
    try:
        yield Target("etcd", server.url, server)
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def ctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["ETCDCTL_API"] = "2"
    return env


def pinned(target: Target) -> list[str]:
    """etcdctl's global flags that keep it on ``target.url`` (see the module docstring)."""
    return [] if target.cluster_size == 1 else ["--no-sync"]


def ctl(url: str, *args: str, stdin: str = "", flags: list[str] | None = None) -> tuple[int, str, str]:
    p = subprocess.run(
        ["etcdctl", "--endpoints", url, *(flags or []), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ctl_env(),
        timeout=CTL_TIMEOUT,
    )
    return p.returncode, p.stdout, p.stderr


def normalize(text: str) -> str:
    return re.sub(r"\[[^\]\n]*\]", lambda m: re.sub(r"\d+", "N", m.group()), text)


def steps(p: str) -> list[tuple[list[str], int, str, str]]:
    """(args, exit code, stdout, stderr) as etcdctl 3.4.23 prints them against etcd 3.4.23."""
    return [
        (["set", f"{p}/k", "v"], 0, "v\n", ""),
        (["get", f"{p}/k"], 0, "v\n", ""),
        (
            ["set", "--swap-with-value", "wrong", f"{p}/k", "v2"],
            4,
            "",
            "Error:  101: Compare failed ([wrong != v]) [N]\n",
        ),
        (["set", "--swap-with-value", "v", f"{p}/k", "v2"], 0, "v2\n", ""),
        (["update", f"{p}/k", "v3"], 0, "v3\n", ""),
        (["update", f"{p}/missing", "v"], 4, "", f"Error:  100: Key not found ({p}/missing) [N]\n"),
        (["mk", f"{p}/k", "x"], 4, "", f"Error:  105: Key already exists ({p}/k) [N]\n"),
        (["mk", f"{p}/new", "x"], 0, "x\n", ""),
        (["mkdir", f"{p}/d"], 0, "", ""),
        (["mkdir", f"{p}/d"], 4, "", f"Error:  105: Key already exists ({p}/d) [N]\n"),
        (["ls", "--sort", p], 0, f"{p}/d\n{p}/k\n{p}/new\n", ""),
        (["ls", "--sort", "-r", "-p", p], 0, f"{p}/d/\n{p}/k\n{p}/new\n", ""),
        (["ls", f"{p}/new"], 0, f"{p}/new\n", ""),
        (["get", f"{p}/d"], 1, "", f"{p}/d: is a directory\n"),
        (["get", f"{p}/missing/deeper"], 4, "", f"Error:  100: Key not found ({p}/missing) [N]\n"),
        (["rm", f"{p}/k"], 0, "PrevNode.Value: v3\n", ""),
        (["rm", f"{p}/k"], 4, "", f"Error:  100: Key not found ({p}/k) [N]\n"),
        (["rm", f"{p}/d"], 4, "", f"Error:  102: Not a file ({p}/d) [N]\n"),
        (["rmdir", f"{p}/d"], 0, "", ""),
        (["mkdir", f"{p}/d2"], 0, "", ""),
        (["set", f"{p}/d2/x", "1"], 0, "1\n", ""),
        (["rmdir", f"{p}/d2"], 4, "", f"Error:  108: Directory not empty ({p}/d2) [N]\n"),
        (["rm", f"{p}/d2"], 4, "", f"Error:  102: Not a file ({p}/d2) [N]\n"),
        (["rm", "--recursive", f"{p}/d2"], 0, "", ""),
        (
            ["rm", "--with-value", "nope", f"{p}/new"],
            4,
            "",
            "Error:  101: Compare failed ([nope != x]) [N]\n",
        ),
        (["rm", "--with-index", "1", f"{p}/new"], 4, "", "Error:  101: Compare failed ([N != N]) [N]\n"),
        (["rm", "--with-value", "x", f"{p}/new"], 0, "\n", ""),
        (["ls", "--sort", p], 0, "", ""),
        (["get"], 1, "", "Error:  key required\n"),
        (["set", f"{p}/k"], 1, "", "Error:  value required\n"),
        (["update"], 1, "", "Error:  key required\n"),
        (["mk"], 1, "", "Error:  key required\n"),
        (["mkdir"], 1, "", "Error:  key required\n"),
        (["rmdir"], 1, "", "Error:  key required\n"),
        (["rm"], 1, "", "Error:  key required\n"),
        (["watch"], 1, "", "Error:  key required\n"),
    ]


def test_etcdctl_key_commands_match_etcd(target: Target, reference: Target, prefix: str) -> None:
    p = prefix + "/ctl"
    for args, code, out, err in steps(p):
        got_ref = ctl(reference.url, *args)
        got = ctl(target.url, *args, flags=pinned(target)) if reference is not target else got_ref
        expected = (code, out, err)
        assert (got_ref[0], got_ref[1], normalize(got_ref[2])) == expected, (args, "reference", got_ref)
        assert (got[0], got[1], normalize(got[2])) == expected, (args, "target", got)


def test_etcdctl_set_reads_value_from_stdin(target: Target, prefix: str) -> None:
    code, out, err = ctl(target.url, "set", f"{prefix}/k", stdin="from stdin\n", flags=pinned(target))
    # The whole of stdin is the value, its newline included.
    assert (code, out, err) == (0, "from stdin\n\n", "")
    assert ctl(target.url, "get", f"{prefix}/k", flags=pinned(target)) == (0, "from stdin\n\n", "")


def test_etcdctl_unreachable_endpoint(target: Target) -> None:
    # The sync fails before any key request: exit 2.
    code, out, err = ctl("http://127.0.0.1:1", "get", "/x")
    assert code == 2
    assert err.startswith("Error:  client: etcd cluster is unavailable or misconfigured")


def _watch_lines(
    url: str, key: str, expected_lines: int, writes: list, flags: list[str] | None = None
) -> list[str]:
    """Run ``etcdctl watch --forever --recursive key`` while ``writes`` run, return its first output lines."""
    proc = subprocess.Popen(
        ["etcdctl", "--endpoints", url, *(flags or []), "watch", "--forever", "--recursive", key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ctl_env(),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    api = Api(Target("x", url))

    def watchers() -> int:
        return int(api.request("GET", "/v2/stats/store").json()["watchers"])

    got: list[str] = []
    try:
        assert wait_until(lambda: watchers() >= 1, 5.0), "etcdctl watch never registered"
        stop = threading.Event()

        def writer() -> None:
            # Bounded: one pass over the writes, each waiting for the watch to re-register first.
            for write in writes:
                if stop.is_set():
                    return
                wait_until(lambda: watchers() >= 1 or stop.is_set(), 5.0)
                write(api)

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        deadline = time.monotonic() + 10.0
        while len(got) < expected_lines and time.monotonic() < deadline:
            try:
                got.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        stop.set()
        w.join(6.0)
    finally:
        proc.kill()
        proc.wait(5.0)
    return got


def test_etcdctl_watch_recursive(target: Target, reference: Target, prefix: str) -> None:
    key = f"{prefix}/w"
    writes = [
        lambda a: a.put(f"{key}/a", value="1"),
        lambda a: a.put(f"{key}/dir", dir="true"),  # directory events are skipped silently
        lambda a: a.put(f"{key}/a", value="2", prevExist="true"),
        lambda a: a.put(f"{key}/b/c", value="3"),
        lambda a: a.delete(f"{key}/a"),
    ]
    expected = [
        f"[set] {key}/a\n",
        "1\n",
        f"[update] {key}/a\n",
        "2\n",
        f"[set] {key}/b/c\n",
        "3\n",
        f"[delete] {key}/a\n",
        "PrevNode.Value: 2\n",
    ]
    got_ref = _watch_lines(reference.url, key, len(expected), writes)
    assert got_ref == expected
    if reference is not target:
        assert _watch_lines(target.url, key, len(expected), writes, pinned(target)) == expected
