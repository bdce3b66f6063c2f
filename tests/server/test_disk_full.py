"""A full disk (ENOSPC) is not fatal: the member raises the NOSPACE alarm, keeps serving reads and
watches, refuses writes with "etcdserver: no space", and takes writes again once space returns,
without a restart.  The disk is "filled" by the ``enospc`` failpoints (storage/failpoint.py), gated
by a file: create it and the WAL (or RocksDB) write path meets ENOSPC, delete it and space is back."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastkv.server.config import parse_config
from fastkv.server.etcdserver import EtcdServer
from fastkv.server.readyloop import NO_SPACE_CAUSE
from fastkv.storage import failpoint
from fastkv.v2store.errors import RAFT_INTERNAL, V2Error
from fastkv.v2store.request import V2Request
from tests.support.procs import free_port


def _args(tmp_path) -> list[str]:
    peer = f"http://127.0.0.1:{free_port()}"
    return [
        "--data-dir", str(tmp_path / "d"),
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"default={peer}",
    ]  # fmt: skip


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _alarm_gauge(srv: EtcdServer) -> float | None:
    """etcd_debugging_server_alarms{server_id=<this member>, alarm_type="NOSPACE"}, or None."""
    for fam in text_string_to_metric_families(srv.metrics_text().decode()):
        for sample in fam.samples:
            if sample.name == "etcd_debugging_server_alarms" and sample.labels == {
                "server_id": f"{srv.member_id:x}",
                "alarm_type": "NOSPACE",
            }:
                return sample.value
    return None


@pytest.fixture
def disk(tmp_path):
    """The gate file: while it exists, the armed enospc points fail."""
    flag = str(tmp_path / "disk-full")
    yield flag
    failpoint.arm("")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("point", ["before_wal_write", "backend_write"])
def test_single_member_survives_a_full_disk(tmp_path, disk, point):
    failpoint.arm(f"{point}=enospc", disk)
    cfg = parse_config(_args(tmp_path), {})
    srv = EtcdServer.open(cfg)

    async def scenario() -> None:
        await srv.start()
        assert _alarm_gauge(srv) is None  # etcd's series appears once an alarm was raised
        ok = await srv.propose(V2Request("PUT", "/a", value="1"))
        assert ok is not None and ok.action == "set"
        seen = []
        srv.watch("/a", False, True, 0, seen.append)

        open(disk, "w").close()  # the disk fills
        pending = srv.propose(V2Request("PUT", "/a", value="2"))
        if point == "before_wal_write":
            # Accepted before the disk was known full: in the log, never acknowledged until durable.
            await _until(lambda: srv.alarms() == ["NOSPACE"])
            await asyncio.sleep(0.2)
            assert not pending.done()
        else:
            # The WAL took it; the applied-state write is what failed: answered, alarm raised.
            assert (await asyncio.wait_for(pending, 5)).node.value == "2"
            await _until(lambda: srv.alarms() == ["NOSPACE"])
        assert not srv.is_healthy()
        with pytest.raises(V2Error) as err:
            await asyncio.wait_for(srv.propose(V2Request("PUT", "/b", value="x")), 5)
        assert err.value.code == RAFT_INTERNAL and err.value.cause == NO_SPACE_CAUSE
        assert srv.fatal_error is None
        # Reads keep working: local and quorum.
        assert srv.get("/a").node.value in ("1", "2")
        q = await asyncio.wait_for(srv.propose(V2Request("GET", "/a", quorum=True)), 5)
        assert q is not None and q.node.value == srv.get("/a").node.value
        assert _alarm_gauge(srv) == 1.0

        os.unlink(disk)  # space returns
        if point == "before_wal_write":
            got = await asyncio.wait_for(pending, 10)
            assert got is not None and got.node.value == "2"
        await _until(lambda: srv.alarms() == [], 10)
        assert srv.is_healthy()
        ok = await asyncio.wait_for(srv.propose(V2Request("PUT", "/b", value="3")), 5)
        assert ok is not None and ok.node.value == "3"
        assert [e.node.value for e in seen] == ["2"]
        assert _alarm_gauge(srv) == 0.0
        await srv.stop()

    asyncio.run(scenario())
    # What was acknowledged is there after a restart; "/b"=x was refused and never applied.
    srv2 = EtcdServer.open(cfg)
    assert srv2.store.get("/a", False, False, 0).node.value == "2"
    b = srv2.store.get("/b", False, False, 0).node
    assert b.value == "3" and b.modified_index == b.created_index
    asyncio.run(srv2.stop())
