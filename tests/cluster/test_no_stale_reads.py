"""A restarted member never answers from a state older than what the cluster acknowledged.

After kill -9 of every member right after an acknowledged write, each member replays its WAL
only up to the commit index it had persisted, which may lag behind the write: until it has
rejoined and applied the rest, its store does not hold the write.  Keys requests wait for that
(etcd serves clients only once the member is ready); the very first answer of every member,
polled from the moment it listens, must already show the write.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.support.clusterutil import TIMING, put
from tests.support.procs import ServerProcess, start_cluster

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _first_answer(m: ServerProcess, path: str, deadline: float) -> tuple[int, dict]:
    """The first answer the member gives to GET ``path`` once it accepts connections."""
    host, port = m.url.split("//")[1].split(":")
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        except (ConnectionRefusedError, ConnectionResetError):
            time.sleep(0.01)
        finally:
            conn.close()
    raise AssertionError(f"{m.url} never answered")


@pytest.mark.parametrize("round_", range(3))
def test_first_answer_after_whole_cluster_crash_has_the_acknowledged_write(tmp_path, round_: int) -> None:
    members = start_cluster("fastkv", 3, base_dir=str(tmp_path), extra=TIMING)
    try:
        for i in range(20):
            put(members[i % 3], f"warm/{i}", "x")
        body = put(members[0], "last", f"acked-{round_}")
        index = body["node"]["modifiedIndex"]
        for m in members:
            m.kill9()
        for m in members:
            m.launch()
        deadline = time.monotonic() + 60
        for m in members:
            status, answer = _first_answer(m, "/v2/keys/last", deadline)
            assert status == 200, (m.url, status, answer, m.log()[-2000:])
            assert answer["node"]["value"] == f"acked-{round_}" and answer["node"]["modifiedIndex"] == index
    finally:
        for m in members:
            m.kill9()
