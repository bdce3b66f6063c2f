"""Snapshot files: atomic save, newest valid load, corrupt ones skipped, purge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastkv.storage import snap
from fastkv.storage.snap import Snapshotter, snap_name


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    assert s.load() is None
    data = os.urandom(200_000)
    s.save(3, 1200, data)
    assert os.listdir(tmp_path / "snap") == ["0000000000000003-00000000000004b0.snap"]
    assert s.load() == (3, 1200, data)


def test_newest_wins(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path))
    s.save(1, 10, b"ten")
    s.save(2, 30, b"thirty")
    s.save(1, 20, b"twenty")
    assert s.load() == (2, 30, b"thirty")


@pytest.mark.parametrize("damage", ["flip_data", "flip_header", "truncate", "empty", "rename"])
def test_corrupt_newest_is_skipped_and_renamed(tmp_path: Path, damage: str) -> None:
    s = Snapshotter(str(tmp_path))
    s.save(1, 10, b"good old state")
    s.save(1, 20, b"newer state, about to be damaged")
    newest = tmp_path / snap.snap_name(1, 20)
    data = bytearray(newest.read_bytes())
    if damage == "flip_data":
        data[-3] ^= 1
    elif damage == "flip_header":
        data[9] ^= 1
    elif damage == "truncate":
        del data[-1:]
    elif damage == "empty":
        data = bytearray()
    newest.write_bytes(data)
    if damage == "rename":  # a valid file under a name that does not match its header
        os.rename(tmp_path / snap.snap_name(1, 10), tmp_path / snap.snap_name(1, 25))
        assert s.load() == (1, 20, b"newer state, about to be damaged")
        assert (tmp_path / (snap.snap_name(1, 25) + ".broken")).exists()
        return
    assert s.load() == (1, 10, b"good old state")
    assert (tmp_path / (snap.snap_name(1, 20) + ".broken")).exists()
    assert not newest.exists()
    assert s.load() == (1, 10, b"good old state")


def test_all_corrupt_loads_none(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path))
    s.save(1, 10, b"x")
    (tmp_path / snap.snap_name(1, 10)).write_bytes(b"garbage")
    assert s.load() is None


def test_purge_keeps_the_newest(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path))
    for i in range(1, 6):
        s.save(1, i * 100, b"%d" % i)
    (tmp_path / "0000000000000001-0000000000000600.snap.tmp").write_bytes(b"interrupted")
    removed = s.purge(2)
    assert removed == [snap.snap_name(1, i * 100) for i in (1, 2, 3)]
    assert sorted(os.listdir(tmp_path)) == [snap.snap_name(1, 400), snap.snap_name(1, 500)]
    assert s.purge(0) == [snap.snap_name(1, 400)]  # never deletes the last one
    assert s.load() == (1, 500, b"5")


def test_empty_data(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path))
    s.save(0, 0, b"")
    assert s.load() == (0, 0, b"")


def test_purge_removes_data_dirs_of_purged_and_unfinished_snapshots(tmp_path) -> None:
    snaps = Snapshotter(str(tmp_path))
    for term, index in [(1, 10), (1, 20), (2, 30)]:
        os.makedirs(snaps.data_dir(term, index))
        snaps.save(term, index, b"meta")
    os.makedirs(snaps.data_dir(2, 40))  # a checkpoint whose snapshot file was never written
    snaps.purge(2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [snap_name(1, 20), snap_name(2, 30), snap_name(1, 20) + ".db", snap_name(2, 30) + ".db"]
    )


def test_snapshot_data_dir_streams_and_restores(tmp_path) -> None:
    from fastkv.storage.backend import Backend

    src = tmp_path / "db"
    db = Backend.open(str(src))
    db.close()
    (src / "extra.bin").write_bytes(os.urandom(700_000))
    chunks = list(snap.archive_dir(str(src), chunk_bytes=4096))
    assert len(chunks) > 100  # streamed in pieces, not as one buffer
    dest = tmp_path / "restored"
    # Fed in arbitrary splits, the stream rebuilds the same files.
    data = b"".join(chunks)
    pieces = [data[i : i + 777] for i in range(0, len(data), 777)]
    snap.restore_archive(pieces, str(dest))
    for name in os.listdir(src):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    Backend.open(str(dest)).close()


@pytest.mark.parametrize("damage", ["truncate", "flip", "trailing"])
def test_damaged_snapshot_stream_is_refused_and_leaves_nothing(tmp_path, damage) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 5000)
    data = bytearray(b"".join(snap.archive_dir(str(src))))
    if damage == "truncate":
        data = data[:-3]
    elif damage == "flip":
        data[100] ^= 1
    else:
        data += b"junk"
    dest = tmp_path / "dest"
    with pytest.raises(snap.SnapshotArchiveError):
        snap.restore_archive([bytes(data)], str(dest))
    assert not dest.exists() and not (tmp_path / "dest.tmp").exists()
