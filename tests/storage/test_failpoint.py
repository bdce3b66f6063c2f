"""Failpoints kill the process at the named point of a WAL save; the log stays replayable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastkv.raft.types import Entry
from fastkv.storage import failpoint
from fastkv.storage.wal import WAL

CHILD = textwrap.dedent(
    """
    import sys
    from fastkv.raft.types import Entry
    from fastkv.storage.wal import WAL
    wal = WAL.open(sys.argv[1], segment_size_bytes=int(sys.argv[2]))
    wal.read_all()
    wal.save(None, [Entry(1, 2, 0, b"second")])
    print("survived", flush=True)
    """
)


@pytest.mark.parametrize(
    ("point", "segment_size_bytes", "kept"),
    [
        ("before_wal_write", 1 << 20, False),
        ("after_wal_write", 1 << 20, True),  # a process crash keeps the page cache
        ("after_wal_sync", 1 << 20, True),
        ("before_wal_write", 64, False),  # on a cut: the new segment never appears
        ("after_wal_sync", 64, True),
        ("before_wal_write=exit", 1 << 20, False),
    ],
)
def test_crash_at_point_leaves_a_replayable_log(
    tmp_path: Path, point: str, segment_size_bytes: int, kept: bool
) -> None:
    wal_dir = str(tmp_path / "wal")
    wal = WAL.create(wal_dir, b"m", segment_size_bytes=segment_size_bytes)
    wal.save(None, [Entry(1, 1, 0, b"first")])
    wal.close()
    env = dict(os.environ, FASTKV_FAILPOINTS=f"unrelated,{point}")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, wal_dir, str(segment_size_bytes)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    want_status = failpoint.EXIT_STATUS if point.endswith("=exit") else -signal.SIGKILL
    assert proc.returncode == want_status, proc.stderr.decode()
    assert b"survived" not in proc.stdout

    wal = WAL.open(wal_dir, segment_size_bytes=segment_size_bytes)
    _, _, entries = wal.read_all()
    wal.close()
    want = [Entry(1, 1, 0, b"first")] + ([Entry(1, 2, 0, b"second")] if kept else [])
    assert entries == want


def test_unarmed_points_do_nothing() -> None:
    failpoint.arm("")
    failpoint.hit("before_wal_write")
    failpoint.arm("something_else")
    try:
        failpoint.hit("before_wal_write")
    finally:
        failpoint.arm(os.environ.get("FASTKV_FAILPOINTS", ""))
