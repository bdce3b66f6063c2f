"""/v2/stats/self times are Go's RFC 3339 with nanoseconds, trailing zeros trimmed."""

from __future__ import annotations

import asyncio

import orjson

from fastkv.server.config import parse_config
from fastkv.server.etcdserver import EtcdServer


def test_stats_self_times_use_gos_format(tmp_path):
    cfg = parse_config(["--data-dir", str(tmp_path / "d")], {})
    srv = EtcdServer.open(cfg, clock=lambda: 1_700_000_000_000_000_000)
    try:
        stats = orjson.loads(srv.stats_self())
        assert stats["startTime"] == "2023-11-14T22:13:20Z"
        assert list(stats) == [
            "name",
            "id",
            "state",
            "startTime",
            "leaderInfo",
            "recvAppendRequestCnt",
            "sendAppendRequestCnt",
        ]
    finally:
        asyncio.run(srv.stop())
