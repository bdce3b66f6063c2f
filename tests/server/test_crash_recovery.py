"""kill -9 while clients write: every write that got a 2xx is there after the restart,
with the modifiedIndex it was acknowledged with.  Runs against fastkv (and etcd, which
must pass it too: FASTKV_CRASH_TARGET=etcd)."""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.parse

import pytest

from tests.support.procs import have_etcd, start_server

TARGET = os.environ.get("FASTKV_CRASH_TARGET", "fastkv")
pytestmark = pytest.mark.slow


class Writer(threading.Thread):
    """Writes /crash/w<id>/<n> = v<n> until stopped; records what was acknowledged."""

    def __init__(self, url: str, wid: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.addr = urllib.parse.urlsplit(url).netloc
        self.wid = wid
        self.stop_flag = stop
        self.acked: dict[str, tuple[str, int]] = {}
        self.errors = 0

    def run(self) -> None:
        n = 0
        conn = http.client.HTTPConnection(self.addr, timeout=5)
        deadline = time.monotonic() + 30
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            key = f"/crash/w{self.wid}/{n % 50}"
            value = f"v{n}"
            try:
                conn.request(
                    "PUT",
                    "/v2/keys" + key,
                    body=f"value={value}",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                if self.stop_flag.wait(0.01):
                    break
                conn = http.client.HTTPConnection(self.addr, timeout=5)
                continue
            if resp.status in (200, 201):
                node = json.loads(body)["node"]
                self.acked[key] = (value, node["modifiedIndex"])
            n += 1
        conn.close()


def read_key(url: str, key: str) -> dict:
    addr = urllib.parse.urlsplit(url).netloc
    conn = http.client.HTTPConnection(addr, timeout=5)
    try:
        conn.request("GET", "/v2/keys" + key)
        resp = conn.getresponse()
        return {"status": resp.status, **json.loads(resp.read())}
    finally:
        conn.close()


def assert_acknowledged_writes_present(url: str, writers: list[Writer], context: str = "") -> None:
    """Every acknowledged write is there with the index it was acknowledged with (or a later
    write of the same key, which may have been applied without being acknowledged)."""
    acked = {k: v for w in writers for k, v in w.acked.items()}
    for key, (value, modified_index) in acked.items():
        got = read_key(url, key)
        assert got["status"] == 200, f"acknowledged key {key} lost{context}: {got}"
        node = got["node"]
        assert node["modifiedIndex"] >= modified_index, (key, node, modified_index)
        if node["modifiedIndex"] == modified_index:
            assert node["value"] == value


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill9_under_write_load_loses_no_acknowledged_write(tmp_path, seed):
    if TARGET == "etcd" and not have_etcd():
        pytest.skip("etcd not installed")
    rng = random.Random(seed)
    srv = start_server(TARGET, data_dir=str(tmp_path))
    stop = threading.Event()
    writers = [Writer(srv.url, i, stop) for i in range(8)]
    try:
        for w in writers:
            w.start()
        time.sleep(0.3 + rng.random() * 0.7)  # a random moment under load
        srv.kill9()
        stop.set()
        for w in writers:
            w.join(10)
        acked = {k: v for w in writers for k, v in w.acked.items()}
        assert len(acked) > 50, "the writers got too few writes acknowledged to test anything"
        srv.restart()
        assert_acknowledged_writes_present(srv.url, writers)
    finally:
        stop.set()
        srv.stop()
