"""The WAL on real files: round trips, group commit, segments, torn tails, corruption."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from fastkv.raft.types import EMPTY_HARD_STATE, Entry, HardState
from fastkv.storage import wal as wal_module
from fastkv.storage.wal import WAL, WALCorruptError, WALError, WALWriteError, list_segments

SMALL_SEGMENT = 4096


def ents(first: int, count: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(term, i, 0, (b"%d:" % i).ljust(size, b"v")) for i in range(first, first + count)]


def reopen(wal_dir: Path, snap_index: int = 0, segment_size_bytes: int = SMALL_SEGMENT) -> tuple:
    wal = WAL.open(str(wal_dir), segment_size_bytes=segment_size_bytes, snap_index=snap_index)
    try:
        return (*wal.read_all(), wal)
    finally:
        wal.close()


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "member" / "wal"


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts fdatasync calls made by the WAL (they still happen)."""
    calls: list[int] = []
    real = wal_module.walcodec.datasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(wal_module.walcodec, "datasync", counting)
    return calls


def test_create_then_open_round_trip(wal_dir: Path) -> None:
    assert not WAL.exists(str(wal_dir))
    wal = WAL.create(str(wal_dir), b"cluster-7", segment_size_bytes=SMALL_SEGMENT)
    assert WAL.exists(str(wal_dir))
    assert wal.segments() == ["0000000000000000-0000000000000000.wal"]
    wal.save(HardState(1, 1, 0), ents(1, 3))
    wal.save(HardState(1, 1, 3), [])
    wal.close()

    metadata, hard_state, entries, reopened = reopen(wal_dir)
    assert metadata == b"cluster-7"
    assert hard_state == HardState(1, 1, 3)
    assert entries == ents(1, 3)
    assert all(type(e) is Entry for e in entries)
    assert reopened.repaired is None
    assert reopened.snapshot == (0, 0)
    assert os.path.getsize(wal_dir / reopened.segments()[0]) == SMALL_SEGMENT  # preallocated


def test_empty_wal_reads_empty(wal_dir: Path) -> None:
    WAL.create(str(wal_dir), b"", segment_size_bytes=SMALL_SEGMENT).close()
    assert reopen(wal_dir)[:3] == (b"", EMPTY_HARD_STATE, [])


def test_create_refuses_an_existing_wal(wal_dir: Path) -> None:
    WAL.create(str(wal_dir), b"m").close()
    with pytest.raises(FileExistsError):
        WAL.create(str(wal_dir), b"m")


def test_open_refuses_a_missing_wal(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WAL.open(str(tmp_path / "nothing"))


def test_read_all_once_and_save_only_after_it(wal_dir: Path) -> None:
    WAL.create(str(wal_dir), b"m").close()
    wal = WAL.open(str(wal_dir))
    with pytest.raises(WALError):
        wal.save(None, ents(1, 1))
    wal.read_all()
    with pytest.raises(WALError):
        wal.read_all()
    wal.save(None, ents(1, 1))
    wal.close()
    with pytest.raises(WALError):
        wal.save(None, ents(2, 1))


def test_a_group_of_1000_entries_is_one_write_and_one_fdatasync(wal_dir: Path, fdatasyncs: list[int]) -> None:
    wal = WAL.create(str(wal_dir), b"m")
    fdatasyncs.clear()
    batch = ents(1, 1000, size=100)
    wal.save(HardState(2, 1, 1000), batch)
    assert len(fdatasyncs) == 1
    wal.save(None, [])  # nothing to write: no fsync either
    assert len(fdatasyncs) == 1
    wal.close()
    _, hard_state, entries, _ = reopen(wal_dir, segment_size_bytes=64 << 20)
    assert entries == batch
    assert hard_state == HardState(2, 1, 1000)


def test_segments_are_cut_named_and_replayed_across(wal_dir: Path, fdatasyncs: list[int]) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    written: list[Entry] = []
    for first in range(1, 400, 7):
        batch = ents(first, 7, size=30)
        fdatasyncs.clear()
        wal.save(HardState(1, 0, first), batch)
        assert len(fdatasyncs) == 1  # a cut syncs the new segment only (plus its directory)
        written += batch
    names = wal.segments()
    wal.close()

    segments = list_segments(str(wal_dir))
    assert [s.name for s in segments] == names
    assert len(segments) > 5
    assert [s.seq for s in segments] == list(range(len(segments)))
    # Each segment is named after the first entry it holds; each earlier one is trimmed.
    for seg in segments[1:]:
        assert (seg.first_index - 1) % 7 == 0
    for seg in segments[:-1]:
        assert os.path.getsize(wal_dir / seg.name) <= SMALL_SEGMENT

    _, hard_state, entries, _ = reopen(wal_dir)
    assert entries == written
    assert hard_state == HardState(1, 0, 393)

    # After a snapshot only the segments that may hold later entries are read.
    snap = segments[3].first_index + 2
    _, _, after, reopened = reopen(wal_dir, snap_index=snap)
    assert after == written[snap:]
    assert reopened.segments()[0] == segments[3].name


def test_hard_state_survives_cuts_and_state_only_saves(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    wal.save(HardState(5, 2, 0), [])
    for i in range(1, 60):
        wal.save(None, ents(i, 1, term=5, size=200))
    wal.close()
    _, hard_state, entries, reopened = reopen(wal_dir, snap_index=50)
    assert len(reopened.segments()) < len(list_segments(str(wal_dir)))
    assert hard_state == HardState(5, 2, 0)  # carried in the head of every later segment
    assert [e.index for e in entries] == list(range(51, 60))


def test_raft_truncation_replaces_the_suffix(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    wal.save(HardState(1, 1, 3), ents(1, 10, term=1))
    wal.save(HardState(2, 2, 3), ents(6, 3, term=2))  # a new leader overwrote 6..10
    wal.close()
    _, hard_state, entries, _ = reopen(wal_dir)
    assert entries == ents(1, 5, term=1) + ents(6, 3, term=2)
    assert hard_state == HardState(2, 2, 3)


def test_raft_truncation_across_a_segment_boundary(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    wal.save(None, ents(1, 30, term=1, size=100))
    wal.save(None, ents(31, 30, term=1, size=100))  # does not fit: opens segment 1
    assert len(wal.segments()) == 2
    wal.save(None, ents(20, 2, term=3))
    wal.close()
    _, _, entries, _ = reopen(wal_dir)
    assert entries == ents(1, 19, term=1, size=100) + ents(20, 2, term=3)
    _, _, entries, _ = reopen(wal_dir, snap_index=10)
    assert entries == ents(11, 9, term=1, size=100) + ents(20, 2, term=3)


def test_entry_index_gap_is_corruption(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m")
    wal.save(None, ents(1, 3))
    wal.save(None, ents(5, 1))
    wal.close()
    with pytest.raises(
        WALCorruptError, match=r"0000000000000000-0000000000000000\.wal: entry index gap at offset"
    ):
        reopen(wal_dir, segment_size_bytes=64 << 20)


def test_appending_after_reopen_continues_the_chain(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    wal.save(None, ents(1, 20, size=50))
    wal.close()
    for first in (21, 41, 61):
        wal = WAL.open(str(wal_dir), segment_size_bytes=SMALL_SEGMENT)
        _, _, entries = wal.read_all()
        assert entries == ents(1, first - 1, size=50)
        wal.save(None, ents(first, 20, size=50))
        wal.close()
    assert len(list_segments(str(wal_dir))) > 1


def test_snapshot_marker_and_release(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    for first in range(1, 200, 10):
        wal.save(None, ents(first, 10, size=60))
    wal.save_snapshot(1, 150)
    before = list_segments(str(wal_dir))
    wal.release_to(120)
    after = list_segments(str(wal_dir))
    assert after == [s for s in before if s.seq >= after[0].seq]
    assert after[0].first_index <= 120 < after[1].first_index
    wal.save(None, ents(201, 5))
    wal.close()

    _, _, entries, reopened = reopen(wal_dir, snap_index=150)
    assert [e.index for e in entries] == list(range(151, 206))
    assert reopened.snapshot == (1, 150)


def test_leftover_tmp_segment_is_removed_on_open(wal_dir: Path) -> None:
    WAL.create(str(wal_dir), b"m").close()
    stray = wal_dir / "0000000000000001-0000000000000005.wal.tmp"
    stray.write_bytes(b"half a segment")
    reopen(wal_dir)
    assert not stray.exists()


def test_missing_middle_segment_is_corruption(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    for first in range(1, 100, 10):
        wal.save(None, ents(first, 10, size=100))
    wal.close()
    segments = list_segments(str(wal_dir))
    os.unlink(wal_dir / segments[2].name)
    with pytest.raises(WALCorruptError, match="missing"):
        WAL.open(str(wal_dir), segment_size_bytes=SMALL_SEGMENT)


def test_segment_from_another_log_breaks_the_crc_chain(tmp_path: Path) -> None:
    dirs = []
    for n in (1, 2):
        d = tmp_path / f"wal{n}"
        wal = WAL.create(str(d), b"m", segment_size_bytes=SMALL_SEGMENT)
        for first in range(1, 100, 10):
            wal.save(None, ents(first, 10, size=100, term=n))
        wal.close()
        dirs.append(d)
    seg = list_segments(str(dirs[0]))[2].name
    assert seg in [s.name for s in list_segments(str(dirs[1]))]
    shutil.copyfile(dirs[1] / seg, dirs[0] / seg)
    with pytest.raises(WALCorruptError, match=rf"{seg}: crc chain broken between segments at offset 0"):
        reopen(dirs[0])


# -- torn tails and corruption ---------------------------------------------------------


def build_with_last_record(wal_dir: Path) -> tuple[str, int, int, list[Entry]]:
    """A WAL whose last segment ends with one entry record: (its path, record start,
    record end, the entries before it)."""
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    wal.save(HardState(1, 1, 1), ents(1, 4, size=40))
    wal.save(HardState(1, 1, 4), ents(5, 4, size=40))
    start = wal._offset
    wal.save(None, ents(9, 1, size=40))
    end = wal._offset
    wal.close()
    return str(wal_dir / wal.segments()[-1]), start, end, ents(1, 8, size=40)


def test_torn_tail_at_every_offset_is_repaired(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    path, start, end, before = build_with_last_record(pristine)
    name = os.path.basename(path)
    assert end - start == 16 + 64  # 17 + 40 payload, padded
    for cut in range(start, end):
        for mode in ("zeroed", "truncated"):
            wal_dir = tmp_path / f"cut{cut}{mode}"
            shutil.copytree(pristine, wal_dir)
            seg = wal_dir / name
            data = bytearray(seg.read_bytes())
            # A cut inside the zero padding of a record in preallocated space loses nothing.
            whole = mode == "zeroed" and not any(data[cut:end])
            if mode == "zeroed":  # the preallocated space after a write that stopped short
                data[cut:] = bytes(len(data) - cut)
            else:
                del data[cut:]
            seg.write_bytes(data)

            wal = WAL.open(str(wal_dir), segment_size_bytes=SMALL_SEGMENT)
            _, hard_state, entries = wal.read_all()
            assert entries == (before + ents(9, 1, size=40) if whole else before), (cut, mode)
            assert hard_state == HardState(1, 1, 4)
            torn = any(data[start:cut]) and not whole
            assert (wal.repaired is not None) == torn, (cut, mode)
            assert (wal_dir / (name + ".broken")).exists() == torn
            # The repaired log takes appends, and they replay after a restart.
            wal.save(None, ents(9, 2, term=2))
            wal.close()
            _, _, entries, _ = reopen(wal_dir)
            assert entries == before + ents(9, 2, term=2), (cut, mode)
            assert os.path.getsize(seg) == SMALL_SEGMENT


def test_flipped_byte_in_a_middle_record_is_refused_naming_file_and_offset(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    path, start, _, _ = build_with_last_record(pristine)
    name = os.path.basename(path)
    # The two records before the last one: entry 8 (80 bytes, 7 of them padding) and the
    # hard state of the second save (40 bytes).
    entry_8, state = start - 120, start - 40
    for pos in range(entry_8, start):
        middle = entry_8 if pos < state else state
        wal_dir = tmp_path / f"flip{pos}"
        shutil.copytree(pristine, wal_dir)
        seg = wal_dir / name
        data = bytearray(seg.read_bytes())
        data[pos] ^= 0x20
        seg.write_bytes(data)
        with pytest.raises(WALCorruptError) as info:
            reopen(wal_dir)
        assert str(info.value).startswith(str(seg) + ": ")
        assert str(info.value).endswith(f"at offset {middle}"), (pos, str(info.value))


def test_damage_in_the_last_record_with_data_after_it_is_corruption(tmp_path: Path) -> None:
    path, start, end, _ = build_with_last_record(tmp_path / "w")
    data = bytearray(Path(path).read_bytes())
    data[start + 20] ^= 1  # inside the last record's payload
    data[end + 100] = 7  # and something written well after it
    Path(path).write_bytes(data)
    with pytest.raises(WALCorruptError, match=f"crc mismatch at offset {start}"):
        reopen(tmp_path / "w")


def test_torn_looking_tail_in_an_earlier_segment_is_corruption(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    for first in range(1, 100, 10):
        wal.save(None, ents(first, 10, size=100))
    wal.close()
    first_seg = wal_dir / list_segments(str(wal_dir))[0].name
    data = bytearray(first_seg.read_bytes())
    del data[len(data) - 5 :]
    first_seg.write_bytes(data)
    with pytest.raises(WALCorruptError, match="runs past the end of the file"):
        reopen(wal_dir)


def test_garbage_after_the_end_marker_is_corruption(tmp_path: Path) -> None:
    path, _, end, _ = build_with_last_record(tmp_path / "w")
    data = bytearray(Path(path).read_bytes())
    data[end + 16 : end + 20] = b"junk"
    Path(path).write_bytes(data)
    with pytest.raises(WALCorruptError, match=f"data after the end marker at offset {end}"):
        reopen(tmp_path / "w")


# -- write failures ----------------------------------------------------------------------


def test_fsync_error_fails_the_wal_for_good(wal_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WAL.create(str(wal_dir), b"m")
    wal.save(None, ents(1, 1))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(wal_module.walcodec, "datasync", failing)
    with pytest.raises(WALWriteError, match="injected"):
        wal.save(None, ents(2, 1))
    monkeypatch.undo()
    with pytest.raises(WALWriteError):
        wal.save(None, ents(2, 1))  # no retry-and-carry-on, even once the disk is back
    with pytest.raises(WALWriteError):
        wal.save_snapshot(1, 1)
    wal.close()


def test_write_error_fails_the_wal(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m")
    os.close(wal._fd)  # the descriptor goes bad under the WAL: write(2) fails with EBADF
    fd = os.open(os.devnull, os.O_RDONLY)  # make sure the number is not silently reused...
    try:
        if fd == wal._fd:  # ...as a writable file
            with pytest.raises(WALWriteError):
                wal.save(None, ents(1, 1))
        else:
            with pytest.raises(WALWriteError, match="Bad file descriptor"):
                wal.save(None, ents(1, 1))
        with pytest.raises(WALWriteError):
            wal.save(None, ents(1, 1))
    finally:
        os.close(fd)
        wal._fd = -1


def test_bad_entry_is_a_type_error_and_leaves_the_wal_usable(wal_dir: Path) -> None:
    wal = WAL.create(str(wal_dir), b"m")
    with pytest.raises(TypeError):
        wal.save(None, [Entry(1, 1, 0, b"ok"), (1, 2)])  # type: ignore[list-item]
    wal.save(None, ents(1, 2))
    wal.close()
    assert reopen(wal_dir, segment_size_bytes=64 << 20)[2] == ents(1, 2)


@pytest.mark.parametrize("where", ["zero_fill", "datasync"])
def test_a_full_disk_at_creation_leaves_no_segment_behind(tmp_path, monkeypatch, where: str) -> None:
    """ENOSPC while the first segment is written: the error reaches the caller, and no .tmp file
    stays to keep the disk full (the next start would misreport the cause)."""
    import errno

    from fastkv.storage import wal as wal_module

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "zero_fill":
        monkeypatch.setattr(wal_module, "zero_fill", no_space)
    else:
        monkeypatch.setattr(wal_module.walcodec, "datasync", no_space)
    d = tmp_path / "wal"
    with pytest.raises(OSError, match="No space left"):
        WAL.create(str(d), b"meta", segment_size_bytes=1 << 20)
    assert [p.name for p in d.iterdir()] == []
    monkeypatch.undo()
    w = WAL.create(str(d), b"meta", segment_size_bytes=1 << 20)
    w.close()
    assert WAL.exists(str(d))


@pytest.mark.parametrize("cut", [False, True], ids=["append", "segment_cut"])
def test_a_full_disk_before_the_fsync_leaves_the_wal_retryable(
    wal_dir: Path, tmp_path: Path, cut: bool
) -> None:
    """ENOSPC from the write (or from making the next segment): WALNoSpaceError, the WAL as it
    was, and the same save succeeds once there is space; bytes a partial write left past the end
    are overwritten by the retry."""
    from fastkv.storage import failpoint
    from fastkv.storage.wal import WALNoSpaceError

    flag = tmp_path / "full"
    wal = WAL.create(str(wal_dir), b"m", segment_size_bytes=SMALL_SEGMENT)
    wal.save(HardState(1, 0, 0), ents(1, 3))
    if cut:  # fill the tail so that the next save opens a new segment
        wal.save(None, ents(4, 1, size=SMALL_SEGMENT - 400))
    first = 5 if cut else 4
    segments_before = wal.segments()
    failpoint.arm("before_wal_write=enospc", str(flag))
    try:
        flag.touch()
        for _ in range(2):
            with pytest.raises(WALNoSpaceError, match="No space left"):
                wal.save(HardState(1, 0, 3), ents(first, 2))
        assert wal.segments() == segments_before
        assert not [p for p in wal_dir.iterdir() if p.name.endswith(".tmp")]
        if not cut:
            os.pwrite(wal._fd, b"\xff" * 40, wal._offset)  # what a partial write may leave
        flag.unlink()
        wal.save(HardState(1, 0, 3), ents(first, 2))
        assert len(wal.segments()) == len(segments_before) + (1 if cut else 0)
    finally:
        failpoint.arm("")
    wal.save(None, ents(first + 2, 1))
    wal.close()
    _, hs, entries, _ = reopen(wal_dir)
    assert [e.index for e in entries] == list(range(1, first + 3))
    assert hs == HardState(1, 0, 3)


def test_a_full_disk_reported_by_fdatasync_is_fatal(wal_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC from fdatasync is an fsync failure like EIO: the pages' fate is unknown, no retry."""
    from fastkv.storage.wal import WALNoSpaceError

    wal = WAL.create(str(wal_dir), b"m")
    wal.save(None, ents(1, 1))

    def failing(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal_module.walcodec, "datasync", failing)
    with pytest.raises(WALWriteError) as err:
        wal.save(None, ents(2, 1))
    assert not isinstance(err.value, WALNoSpaceError)
    monkeypatch.undo()
    with pytest.raises(WALWriteError):
        wal.save(None, ents(2, 1))
    wal.close()


def test_zero_fill_flushes_each_chunk_as_it_goes(tmp_path, monkeypatch) -> None:
    """A segment's zeros reach the disk one chunk at a time (never a whole segment waiting to be
    written back, which WAL fdatasyncs on the same disk would queue behind), and all of them."""
    from fastkv.storage import fileutil

    synced_sizes: list[int] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        synced_sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr(fileutil.os, "fdatasync", fdatasync)
    chunk = fileutil.ZERO_FILL_CHUNK_BYTES
    size = 2 * chunk + chunk // 2
    path = tmp_path / "spare"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fileutil.zero_fill(fd, size)
    finally:
        os.close(fd)
    assert synced_sizes == [chunk, 2 * chunk, size]
    assert path.read_bytes() == bytes(size)
