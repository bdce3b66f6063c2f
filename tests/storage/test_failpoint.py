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


def test_an_enospc_point_fails_from_its_nth_hit_while_the_gate_file_exists(tmp_path) -> None:
    import errno

    import pytest

    gate = tmp_path / "full"
    failpoint.arm("before_wal_write=enospc@2", str(gate))
    try:
        failpoint.hit("before_wal_write")  # hit 1 of 2: nothing yet
        failpoint.hit("before_wal_write")  # the gate file is absent: nothing
        gate.touch()
        for _ in range(3):  # a full disk stays full
            with pytest.raises(OSError) as err:
                failpoint.hit("before_wal_write")
            assert err.value.errno == errno.ENOSPC
        gate.unlink()
        failpoint.hit("before_wal_write")
        failpoint.arm("backend_write=enospc")  # no gate file: always
        with pytest.raises(OSError):
            failpoint.hit("backend_write")
    finally:
        failpoint.arm(os.environ.get("FASTKV_FAILPOINTS", ""))


def test_is_no_space_knows_the_errnos_and_rocksdb_words() -> None:
    import errno

    from fastkv.storage.fileutil import is_no_space

    assert is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_no_space(OSError(errno.EIO, "Input/output error"))
    assert is_no_space(Exception("IO error: No space left on device: While appending to file: x.sst"))
    assert not is_no_space(Exception("IO error: Input/output error"))
