"""Ten thousand idle long-poll watchers cost little memory and no CPU, and a write still
reaches exactly the watchers it should."""

from __future__ import annotations

import os
import resource
import socket
import time
import urllib.request

import orjson
import pytest

from tests.support.procs import start_server

pytestmark = pytest.mark.slow
WATCHERS = 10_000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_watchers(url: str) -> int:
    with urllib.request.urlopen(url + "/v2/stats/store", timeout=5) as r:
        return orjson.loads(r.read())["watchers"]


def wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_ten_thousand_idle_watchers(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < WATCHERS + 500:
        pytest.skip(f"needs {WATCHERS + 500} file descriptors, the limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    srv = start_server("fastkv", data_dir=str(tmp_path))
    host, port = srv.url.removeprefix("http://").split(":")
    socks: list[socket.socket] = []
    try:
        urllib.request.urlopen(srv.url + "/v2/keys/", timeout=5).read()
        base_rss = rss_kib(srv.proc.pid)
        for i in range(WATCHERS):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(f"GET /v2/keys/idle/k{i}?wait=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(s)
        wait_for(lambda: store_watchers(srv.url) == WATCHERS)
        time.sleep(0.5)
        rss_per_watcher = (rss_kib(srv.proc.pid) - base_rss) * 1024 / WATCHERS
        cpu0 = cpu_seconds(srv.proc.pid)
        time.sleep(3.0)
        idle_cpu = cpu_seconds(srv.proc.pid) - cpu0
        print(
            f"\n{WATCHERS} idle watchers: {rss_per_watcher:.0f} bytes of RSS each, {idle_cpu:.3f} s CPU in 3 s idle"
        )
        assert rss_per_watcher < 8 * 1024, rss_per_watcher
        assert idle_cpu < 0.15, idle_cpu

        # A write wakes exactly its own watcher.
        req = urllib.request.Request(srv.url + "/v2/keys/idle/k4242", data=b"value=hit", method="PUT")
        urllib.request.urlopen(req, timeout=5).read()
        s = socks[4242]
        s.settimeout(5)
        got = b""
        while b'"hit"' not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        assert b'"action":"set"' in got and b"/idle/k4242" in got
        wait_for(lambda: store_watchers(srv.url) == WATCHERS - 1)

        # Clients that go away take their watchers with them.
        for s in socks:
            s.close()
        socks.clear()
        wait_for(lambda: store_watchers(srv.url) == 0)
    finally:
        for s in socks:
            s.close()
        srv.stop()
