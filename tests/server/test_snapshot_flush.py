"""A snapshot's RocksDB flush, which holds up every WAL save behind it on the writer thread, finds
little left to write: RocksDB was asked to flush in the background shortly before."""

from __future__ import annotations

import asyncio

from fastkv.server.config import parse_config
from fastkv.server.etcdserver import EtcdServer
from fastkv.server.readyloop import SNAPSHOT_PREFLUSH_ENTRIES
from fastkv.storage.backend import Backend
from fastkv.v2store.request import V2Request
from tests.support.procs import free_port

SNAPSHOT_COUNT = 40


def _args(tmp_path) -> list[str]:
    peer = f"http://127.0.0.1:{free_port()}"
    return [
        "--data-dir", str(tmp_path / "d"),
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"default={peer}",
        "--snapshot-count", str(SNAPSHOT_COUNT),
    ]  # fmt: skip


def test_each_snapshot_flush_follows_one_early_background_flush(tmp_path, monkeypatch) -> None:
    calls: list[tuple[str, int]] = []
    real_flush, real_flush_soon = Backend.flush, Backend.flush_soon

    def flush(self: Backend) -> None:
        calls.append(("flush", self.applied_index()))
        real_flush(self)

    def flush_soon(self: Backend) -> None:
        calls.append(("flush_soon", self.applied_index()))
        real_flush_soon(self)

    monkeypatch.setattr(Backend, "flush", flush)
    monkeypatch.setattr(Backend, "flush_soon", flush_soon)
    srv = EtcdServer.open(parse_config(_args(tmp_path), {}))
    lead = min(SNAPSHOT_PREFLUSH_ENTRIES, SNAPSHOT_COUNT // 4)

    async def scenario() -> None:
        await srv.start()
        for i in range(3 * SNAPSHOT_COUNT):
            await asyncio.wait_for(srv.propose(V2Request("PUT", f"/k{i}", value=str(i))), 5)
        await srv.stop()

    asyncio.run(scenario())
    snapshot_flushes = [i for i, (name, _) in enumerate(calls) if name == "flush"]
    # Stopping flushes RocksDB too (Backend.close, not Backend.flush): every flush here is a snapshot's.
    assert len(snapshot_flushes) >= 2, calls
    previous = -1
    for at in snapshot_flushes:
        between = [name for name, _ in calls[previous + 1 : at]]
        assert between == ["flush_soon"], calls
        # Asked for no earlier than `lead` entries before the snapshot.
        assert calls[at][1] - calls[at - 1][1] <= lead, calls
        previous = at
    srv2 = EtcdServer.open(parse_config(_args(tmp_path), {}))
    try:
        assert srv2.store.get(f"/k{3 * SNAPSHOT_COUNT - 1}", False, False, 0).node.value == str(
            3 * SNAPSHOT_COUNT - 1
        )
    finally:
        asyncio.run(srv2.stop())
