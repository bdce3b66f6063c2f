"""Damaged, torn and v3-only etcd data dirs: refused with one clear line, or (a torn tail) accepted
as etcd accepts it."""

from __future__ import annotations

import os
import shutil

import pytest

from fastkv.migrate import etcdsnap, etcdwal
from fastkv.migrate.datadir import read_data_dir
from fastkv.migrate.errors import EtcdDataError
from tests.migrate.conftest import EtcdDir

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]


def _frames(path: str) -> list[tuple[int, int]]:
    """(offset, 8 + record length) of each frame of a WAL segment, up to the zero fill (the padding
    after a record is not covered by its checksum, in etcd's format too)."""
    with open(path, "rb") as f:
        buf = f.read()
    out = []
    pos = 0
    while pos + 8 <= len(buf):
        word = int.from_bytes(buf[pos : pos + 8], "little")
        if word == 0:
            break
        length = word & ((1 << 56) - 1)
        pad = (word >> 56) & 7 if word >> 63 else 0
        out.append((pos, 8 + length))
        pos += 8 + length + pad
    return out


def _segments(data_dir: str) -> list[str]:
    wal_dir = os.path.join(data_dir, "member", "wal")
    return [os.path.join(wal_dir, s[2]) for s in etcdwal.list_segments(wal_dir)]


def _patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x20]))


def _refused(data_dir: str) -> str:
    with pytest.raises(EtcdDataError) as info:
        read_data_dir(data_dir)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_flipped_byte_in_the_middle_of_the_wal(etcd_copy: str) -> None:
    seg = _segments(etcd_copy)[-1]
    frames = _frames(seg)
    off, length = frames[len(frames) // 2]
    _flip(seg, off + length - 3)
    message = _refused(etcd_copy)
    assert f"{seg} at offset {off}" in message and "the WAL is corrupt" in message


def test_torn_last_record_is_accepted_like_etcd(etcd_copy: str) -> None:
    whole = read_data_dir(etcd_copy)
    seg = _segments(etcd_copy)[-1]
    off, length = _frames(seg)[-1]
    _patch(seg, off + 8, bytes(length - 8))  # the length word survived, the record's sector did not
    state = read_data_dir(etcd_copy)
    assert state.torn_tail is not None and f"offset {off}" in state.torn_tail
    assert state.applied_index <= whole.applied_index
    assert state.user_key_count() > 0


def test_wal_cut_short_in_its_last_record_is_accepted(etcd_copy: str) -> None:
    seg = _segments(etcd_copy)[-1]
    off, _ = _frames(seg)[-1]
    os.truncate(seg, off + 5)
    state = read_data_dir(etcd_copy)
    assert state.torn_tail is not None and "frame header cut short" in state.torn_tail


def test_torn_record_that_is_not_zeroed_is_corruption(etcd_copy: str) -> None:
    """A bad last record whose sectors are not zero is not a torn write (etcd's isTornEntry)."""
    seg = _segments(etcd_copy)[-1]
    off, length = _frames(seg)[-1]
    _flip(seg, off + length - 2)
    assert "the WAL is corrupt" in _refused(etcd_copy)


def test_truncated_snapshot(etcd_copy: str) -> None:
    snap_dir = os.path.join(etcd_copy, "member", "snap")
    name = etcdsnap.list_snapshots(snap_dir)[-1][2]
    path = os.path.join(snap_dir, name)
    os.truncate(path, os.path.getsize(path) // 2)
    message = _refused(etcd_copy)
    assert message.startswith(path) and "truncated or corrupt" in message


def test_snapshot_crc_mismatch(etcd_copy: str) -> None:
    snap_dir = os.path.join(etcd_copy, "member", "snap")
    name = etcdsnap.list_snapshots(snap_dir)[-1][2]
    path = os.path.join(snap_dir, name)
    _flip(path, os.path.getsize(path) // 2)
    message = _refused(etcd_copy)
    assert message.startswith(path) and "snapshot crc mismatch" in message


def test_empty_snapshot(etcd_copy: str) -> None:
    snap_dir = os.path.join(etcd_copy, "member", "snap")
    path = os.path.join(snap_dir, etcdsnap.list_snapshots(snap_dir)[0][2])
    os.truncate(path, 0)
    assert "empty snapshot file" in _refused(etcd_copy)


def test_no_wal(etcd_copy: str) -> None:
    shutil.rmtree(os.path.join(etcd_copy, "member", "wal"))
    assert "no WAL segments" in _refused(etcd_copy)


def test_not_a_data_dir(tmp_path: object) -> None:
    assert "not an etcd data dir" in _refused(str(tmp_path))


def test_v3_only(etcd_v3_only: str) -> None:
    message = _refused(etcd_v3_only)
    assert "v3 data" in message and "no v2 keys" in message


@pytest.fixture
def two_segments_copy(etcd_two_segments: EtcdDir, tmp_path: object) -> str:
    dest = os.path.join(str(tmp_path), "etcd")
    shutil.copytree(etcd_two_segments.data_dir, dest)
    return dest


def test_two_segments_decode(etcd_two_segments: EtcdDir) -> None:
    """The crc chain continues across the cut."""
    state = read_data_dir(etcd_two_segments.data_dir)
    assert state.store_index == etcd_two_segments.answers.index


def test_missing_first_segment(two_segments_copy: str) -> None:
    os.unlink(_segments(two_segments_copy)[0])
    assert "segments before it are missing" in _refused(two_segments_copy)


def test_gap_between_segments(two_segments_copy: str) -> None:
    last = _segments(two_segments_copy)[-1]
    name = os.path.basename(last)
    seq = int(name[:16], 16)
    os.rename(last, os.path.join(os.path.dirname(last), f"{seq + 1:016x}{name[16:]}"))
    assert f"WAL segment {seq:016x} is missing" in _refused(two_segments_copy)


def test_damage_before_the_last_segment_is_never_a_torn_tail(two_segments_copy: str) -> None:
    first = _segments(two_segments_copy)[0]
    off, length = _frames(first)[-1]
    _patch(first, off + 8, bytes(length - 8))
    assert "the WAL is corrupt" in _refused(two_segments_copy)


def test_running_etcd_is_refused(tmp_path: object) -> None:
    from tests.support.procs import have_etcd, start_server

    if not have_etcd():
        pytest.skip("etcd not installed")
    srv = start_server("etcd", data_dir=str(tmp_path), name="e1")
    try:
        message = _refused(os.path.join(str(tmp_path), "data"))
        assert "etcd is still running on this data dir" in message
    finally:
        srv.stop()
    read_data_dir(os.path.join(str(tmp_path), "data"))  # stopped: fine
