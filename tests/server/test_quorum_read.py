"""quorum=true GETs are served by ReadIndex: linearizable, and no log entry is written for them."""

from __future__ import annotations

import urllib.request

import orjson
import pytest

from tests.support.procs import start_server

pytestmark = pytest.mark.slow


def request(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), orjson.loads(e.read())


def test_quorum_get_reads_the_latest_write_without_a_log_entry(tmp_path):
    srv = start_server("fastkv", data_dir=str(tmp_path))
    try:
        status, headers, _ = request(srv.url + "/v2/keys/q/a", "PUT", b"value=1")
        assert status == 201
        raft_index = int(headers["X-Raft-Index"])
        for _ in range(20):
            status, headers, body = request(srv.url + "/v2/keys/q/a?quorum=true")
            assert status == 200 and body["node"]["value"] == "1"
            assert int(headers["X-Raft-Index"]) == raft_index
        status, headers, body = request(srv.url + "/v2/keys/q/missing?quorum=true")
        assert status == 404 and body["errorCode"] == 100
        status, headers, body = request(srv.url + "/v2/keys/q?quorum=true&recursive=true&sorted=true")
        assert [n["key"] for n in body["node"]["nodes"]] == ["/q/a"]
        assert int(headers["X-Raft-Index"]) == raft_index
    finally:
        srv.stop()
