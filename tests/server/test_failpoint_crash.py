"""Crash at each failpoint under concurrent writes: no acknowledged write is lost, and the
member restarts on its own data (torn tails repaired, snapshots and segment cuts consistent)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.server.test_crash_recovery import Writer, assert_acknowledged_writes_present
from tests.support.procs import start_server

pytestmark = pytest.mark.slow

# (failpoint, hit at which it fires, extra flags, extra environment)
CASES = [
    ("before_wal_write", 150, [], {}),
    ("after_wal_write", 150, [], {}),
    ("after_wal_sync", 150, [], {}),
    ("before_apply", 150, [], {}),
    ("during_snapshot", 2, ["--snapshot-count", "100"], {}),
    ("wal_segment_cut", 2, [], {"FASTKV_WAL_SEGMENT_SIZE_BYTES": str(64 * 1024)}),
]


@pytest.mark.parametrize("point,nth,flags,env", CASES, ids=[c[0] for c in CASES])
def test_crash_at_failpoint_loses_no_acknowledged_write(tmp_path, point, nth, flags, env):
    srv = start_server(
        "fastkv",
        data_dir=str(tmp_path),
        extra=flags,
        env_extra={"FASTKV_FAILPOINTS": f"{point}@{nth}", **env},
    )
    stop = threading.Event()
    writers = [Writer(srv.url, i, stop) for i in range(8)]
    try:
        for w in writers:
            w.start()
        deadline = time.monotonic() + 20
        while srv.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.proc.poll() is not None, f"failpoint {point} never fired"
        assert srv.proc.returncode == -9, srv.log()[-2000:]
        stop.set()
        for w in writers:
            w.join(10)
        assert sum(len(w.acked) for w in writers) > 0
        srv.env = {k: v for k, v in srv.env.items() if k != "FASTKV_FAILPOINTS"}
        srv.restart()
        assert_acknowledged_writes_present(srv.url, writers, f" after a crash at {point}")
    finally:
        stop.set()
        srv.stop()
