"""The writer thread: jobs in order, RocksDB batches of commit-only rounds deferred to the next job
(or tick, or stop) without ever passing a job submitted after them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from fastkv.server.config import parse_config
from fastkv.server.etcdserver import EtcdServer
from fastkv.server.readyloop import MAX_DEFERRED_BATCHES, _Writer
from fastkv.storage.backend import Backend
from fastkv.v2store.request import V2Request
from tests.support.procs import free_port


class _Recorder:
    def __init__(self) -> None:
        self.order: list[Any] = []
        self.errors: list[BaseException] = []
        self.threads: set[str] = set()

    def write_batches(self, batches: list[Any]) -> None:
        self.threads.add(threading.current_thread().name)
        self.order.extend(batches)

    def job(self, name: str) -> str:
        self.threads.add(threading.current_thread().name)
        self.order.append(name)
        return name


def test_deferred_batches_run_before_any_later_job() -> None:
    rec = _Recorder()
    w = _Writer(rec.write_batches, rec.errors.append)  # type: ignore[arg-type]
    w.defer("b1")  # type: ignore[arg-type]
    w.defer("b2")  # type: ignore[arg-type]
    assert w.submit(rec.job, "snapshot").result(5) == "snapshot"
    w.defer("b3")  # type: ignore[arg-type]
    w.post(rec.job, "save")
    w.defer("b4")  # type: ignore[arg-type]
    w.shutdown(True)
    assert rec.order == ["b1", "b2", "snapshot", "b3", "save", "b4"]
    assert rec.threads == {"wal-writer"}
    assert rec.errors == []


def test_a_persist_job_takes_the_deferred_batches_itself() -> None:
    rec = _Recorder()
    w = _Writer(rec.write_batches, rec.errors.append)  # type: ignore[arg-type]
    w.defer("b1")  # type: ignore[arg-type]
    taken = w.take_deferred()
    w.post(rec.write_batches, [*taken, "b2"])
    w.shutdown(True)
    assert rec.order == ["b1", "b2"]  # once each, in order


def test_deferred_batches_are_bounded() -> None:
    rec = _Recorder()
    w = _Writer(rec.write_batches, rec.errors.append)  # type: ignore[arg-type]
    for i in range(MAX_DEFERRED_BATCHES):
        w.defer(i)  # type: ignore[arg-type]
    assert w.take_deferred() == []  # the last one sent them all to the thread
    w.shutdown(True)
    assert rec.order == list(range(MAX_DEFERRED_BATCHES))


def test_failures_reach_their_owner() -> None:
    rec = _Recorder()
    w = _Writer(rec.write_batches, rec.errors.append)  # type: ignore[arg-type]

    def broken() -> None:
        raise OSError("disk gone")

    w.post(broken)
    fut = w.submit(broken)
    with pytest.raises(OSError):
        fut.result(5)
    w.post(rec.job, "after")  # the thread goes on
    w.shutdown(True)
    assert [str(e) for e in rec.errors] == ["disk gone"]
    assert rec.order == ["after"]
    with pytest.raises(RuntimeError):
        w.post(rec.job, "too late")


def test_stop_writes_every_applied_round_to_rocksdb(tmp_path) -> None:
    """A single member's lone writes leave their batches deferred; a stop writes them, so the
    applied state on disk is the last applied index (nothing left for the WAL to replay)."""
    peer = f"http://127.0.0.1:{free_port()}"
    args = [
        "--data-dir", str(tmp_path / "d"),
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"default={peer}",
    ]  # fmt: skip
    cfg = parse_config(args, {})
    srv = EtcdServer.open(cfg)
    applied: list[int] = []

    async def scenario() -> None:
        await srv.start()
        for i in range(5):
            ev = await asyncio.wait_for(srv.propose(V2Request("PUT", f"/k{i}", value=str(i))), 10)
            assert ev is not None
        applied.append(srv.applied_index)
        await srv.stop()

    asyncio.run(scenario())
    kv_dirs = list((tmp_path / "d").rglob("kv"))
    assert len(kv_dirs) == 1, kv_dirs
    backend = Backend.open(str(kv_dirs[0]))
    try:
        assert backend.meta().applied_index == applied[0]
    finally:
        backend.close()
