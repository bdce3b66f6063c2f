"""A WAL write or fsync error is fatal: the member acknowledges nothing more and stops."""

from __future__ import annotations

import asyncio

import pytest

from fastkv.server.config import parse_config
from fastkv.server.etcdserver import EtcdServer
from fastkv.server.interface import OutcomeUnknown
from fastkv.storage.wal import WALWriteError
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


def test_failed_fsync_stops_acknowledging(tmp_path):
    cfg = parse_config(_args(tmp_path), {})
    srv = EtcdServer.open(cfg)

    async def scenario() -> None:
        await srv.start()
        ok = await srv.propose(V2Request("PUT", "/a", value="1"))
        assert ok is not None and ok.action == "set"
        real_save = srv.wal.save

        def failing_save(hard_state, entries):
            raise WALWriteError("fdatasync: [Errno 5] Input/output error")

        srv.wal.save = failing_save  # type: ignore[method-assign]
        with pytest.raises(V2Error) as err:
            await asyncio.wait_for(srv.propose(V2Request("PUT", "/b", value="2")), 5)
        assert err.value.code == RAFT_INTERNAL
        # /b was in the log when the save failed: whether it ends up applied (here, or by other
        # members of a cluster) is unknown, so it is not reported as failed.
        assert isinstance(err.value, OutcomeUnknown)
        assert "WAL write failed" in (srv.fatal_error or "")
        # Even once the disk "recovers", nothing more is acknowledged: no retry-and-carry-on.
        srv.wal.save = real_save  # type: ignore[method-assign]
        with pytest.raises(V2Error) as err:
            await asyncio.wait_for(srv.propose(V2Request("PUT", "/c", value="3")), 5)
        assert not isinstance(err.value, OutcomeUnknown)  # refused before it was proposed
        assert "WAL write failed" in await asyncio.wait_for(srv.wait_fatal(), 5)
        await srv.stop()

    asyncio.run(scenario())
    # The write that failed was never acknowledged and is not applied on restart either.
    srv2 = EtcdServer.open(cfg)
    assert srv2.store.get("/a", False, False, 0).node.value == "1"
    with pytest.raises(V2Error):
        srv2.store.get("/b", False, False, 0)
    asyncio.run(srv2.stop())
