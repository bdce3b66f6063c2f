"""Snapshot files: ``<snap_dir>/<term:016x>-<index:016x>.snap``, each whole or absent.

A snapshot may own a directory beside its file, ``<name>.db`` (the server keeps a RocksDB
checkpoint of the applied state there).  The file is written after the directory is
complete, so a ``.db`` directory without its file is debris of a crash: purge removes it,
and removes each purged snapshot's directory with its file.

File layout (little-endian): ``FKVSNAP1`` magic, u64 term, u64 index, u64 data length,
u32 crc32c of the 32 bytes before it continued over the data, u32 zero, then the data.

Rules: a snapshot is written to a temporary file, fdatasynced, renamed and the directory
fsynced, so a crash leaves either the old set or the new set of files.  load() returns the
newest snapshot that checks out (name, length and crc must agree) and renames any newer
one that does not to ``<name>.broken`` so it is not tried again (nor purged silently:
an operator may want it).  Which snapshot the WAL replay starts from is the caller's choice.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
from collections.abc import Iterable, Iterator

from .._native.crc32c import crc32c
from ..logutil import event
from .fileutil import BROKEN_SUFFIX, fsync_dir, read_file, remove_tmp_files, write_file_atomic

log = logging.getLogger(__name__)

SNAP_SUFFIX = ".snap"
DATA_DIR_SUFFIX = ".db"
MAGIC = b"FKVSNAP1"
_FIELDS = struct.Struct("<8sQQQ")  # magic, term, index, data length: what the crc starts with
_CHECK = struct.Struct("<II")  # crc, zero
HEADER_SIZE = _FIELDS.size + _CHECK.size
_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapshotCorruptError(Exception):
    pass


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}{SNAP_SUFFIX}"


def encode(term: int, index: int, data: bytes) -> tuple[bytes, bytes]:
    """(header, data) as written to the file."""
    fields = _FIELDS.pack(MAGIC, term, index, len(data))
    return fields + _CHECK.pack(crc32c(data, crc32c(fields)), 0), data


def decode(buf: bytes, term: int, index: int) -> bytes:
    """The data of a snapshot file named (term, index); raises SnapshotCorruptError."""
    if len(buf) < HEADER_SIZE:
        raise SnapshotCorruptError(f"{len(buf)} bytes is shorter than the header")
    magic, f_term, f_index, length = _FIELDS.unpack_from(buf)
    crc, zero = _CHECK.unpack_from(buf, _FIELDS.size)
    if magic != MAGIC:
        raise SnapshotCorruptError("bad magic")
    if (f_term, f_index) != (term, index):
        raise SnapshotCorruptError(f"header says term {f_term} index {f_index}, the name disagrees")
    if length != len(buf) - HEADER_SIZE or zero != 0:
        raise SnapshotCorruptError(
            f"header says {length} bytes of data, the file holds {len(buf) - HEADER_SIZE}"
        )
    view = memoryview(buf)
    if crc32c(view[HEADER_SIZE:], crc32c(view[: _FIELDS.size])) != crc:
        raise SnapshotCorruptError("crc mismatch")
    return buf[HEADER_SIZE:]


class Snapshotter:
    def __init__(self, snap_dir: str) -> None:
        self.dir = snap_dir

    def save(self, term: int, index: int, data: bytes) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        head, body = encode(term, index, data)
        write_file_atomic(self.dir, snap_name(term, index), (head, body))

    def load(self) -> tuple[int, int, bytes] | None:
        """(term, index, data) of the newest valid snapshot, or None if there is none."""
        for term, index in reversed(self._list()):
            path = os.path.join(self.dir, snap_name(term, index))
            try:
                return term, index, decode(read_file(path), term, index)
            except (SnapshotCorruptError, OSError) as e:
                event(
                    log,
                    logging.WARNING,
                    "unusable snapshot, renamed",
                    path=path,
                    error=str(e),
                    to=path + BROKEN_SUFFIX,
                )
                os.rename(path, path + BROKEN_SUFFIX)
                fsync_dir(self.dir)
        return None

    def data_dir(self, term: int, index: int) -> str:
        """The directory a snapshot at (term, index) may own."""
        return os.path.join(self.dir, snap_name(term, index) + DATA_DIR_SUFFIX)

    def purge(self, keep: int) -> list[str]:
        """Deletes all but the newest ``keep`` (at least 1) snapshots and their directories, and
        directories whose snapshot file was never written; returns the snapshot names deleted."""
        if not os.path.isdir(self.dir):
            return []
        remove_tmp_files(self.dir)
        names = [snap_name(t, i) for t, i in self._list()]
        doomed = names[: max(len(names) - max(keep, 1), 0)]
        for name in doomed:
            os.unlink(os.path.join(self.dir, name))
        kept = set(names) - set(doomed)
        for entry in os.listdir(self.dir):
            if entry.endswith(DATA_DIR_SUFFIX) and entry[: -len(DATA_DIR_SUFFIX)] not in kept:
                shutil.rmtree(os.path.join(self.dir, entry), ignore_errors=True)
        if doomed:
            fsync_dir(self.dir)
        return doomed

    def _list(self) -> list[tuple[int, int]]:
        """(term, index) of every snapshot file, oldest first."""
        if not os.path.isdir(self.dir):
            return []
        found = []
        for name in os.listdir(self.dir):
            m = _SNAP_NAME.match(name)
            if m:
                found.append((int(m.group(1), 16), int(m.group(2), 16)))
        found.sort()
        return found


# -- streaming a snapshot's data directory ------------------------------------------------
#
# A snapshot sent to a follower is its RocksDB checkpoint directory as one byte stream:
# for each regular file, sorted by name, ``u16 name length, u64 size, name, content``;
# then a zero name length and the u32 crc32c of everything before it.  The stream is made
# in chunks read from the files as it goes, so a large snapshot never sits in memory whole.

_ARCHIVE_ENTRY = struct.Struct("<HQ")
ARCHIVE_CHUNK_BYTES = 256 * 1024


class SnapshotArchiveError(Exception):
    pass


def archive_dir(path: str, chunk_bytes: int = ARCHIVE_CHUNK_BYTES) -> Iterator[bytes]:
    """The stream of directory ``path`` (regular files only, no subdirectories)."""
    crc = 0
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            continue
        encoded = name.encode()
        size = os.path.getsize(full)
        head = _ARCHIVE_ENTRY.pack(len(encoded), size) + encoded
        crc = crc32c(head, crc)
        yield head
        with open(full, "rb") as f:
            left = size
            while left:
                chunk = f.read(min(chunk_bytes, left))
                if not chunk:
                    raise SnapshotArchiveError(f"{full} shrank while it was being sent")
                left -= len(chunk)
                crc = crc32c(chunk, crc)
                yield chunk
    end = _ARCHIVE_ENTRY.pack(0, 0)
    crc = crc32c(end, crc)
    yield end + struct.pack("<I", crc)


def restore_archive(chunks: Iterable[bytes], dest: str) -> None:
    """Write a stream made by ``archive_dir`` into the new directory ``dest``, durably; a torn
    or corrupt stream raises SnapshotArchiveError and leaves no ``dest`` behind."""
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o700)
    try:
        _restore_into(iter(chunks), tmp)
        os.rename(tmp, dest)
        fsync_dir(os.path.dirname(os.path.abspath(dest)))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _restore_into(chunks: Iterator[bytes], dir_path: str) -> None:
    buf = bytearray()
    crc = 0

    def take(n: int) -> bytes:
        while len(buf) < n:
            try:
                buf.extend(next(chunks))
            except StopIteration:
                raise SnapshotArchiveError("snapshot stream ended early") from None
        out = bytes(buf[:n])
        del buf[:n]
        return out

    while True:
        head = take(_ARCHIVE_ENTRY.size)
        name_len, size = _ARCHIVE_ENTRY.unpack(head)
        crc = crc32c(head, crc)
        if name_len == 0:
            (want,) = struct.unpack("<I", take(4))
            if want != crc or buf or next(chunks, None) is not None:
                raise SnapshotArchiveError("snapshot stream checksum mismatch or trailing data")
            fsync_dir(dir_path)
            return
        raw_name = take(name_len)
        crc = crc32c(raw_name, crc)
        name = raw_name.decode()
        if "/" in name or name in (".", ".."):
            raise SnapshotArchiveError(f"bad file name {name!r} in snapshot stream")
        fd = os.open(os.path.join(dir_path, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            left = size
            while left:
                if not buf:
                    try:
                        buf.extend(next(chunks))
                    except StopIteration:
                        raise SnapshotArchiveError("snapshot stream ended early") from None
                piece = bytes(buf[: min(left, len(buf))])
                del buf[: len(piece)]
                crc = crc32c(piece, crc)
                os.write(fd, piece)
                left -= len(piece)
            os.fsync(fd)
        finally:
            os.close(fd)
