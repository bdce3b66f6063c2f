"""The write-ahead log: Raft's entries and hard state, durable before anyone is told.

Layout: ``<wal_dir>/<seq:016x>-<index:016x>.wal`` segments, seq counting from 0 without
gaps and index the first entry index the segment may hold (etcd's naming).  Each segment
is preallocated to ``segment_size_bytes`` of zeros and starts with a head of records: the
running crc carried over from the previous segment, the metadata, the last snapshot marker
(if any) and the hard state at the time of the cut.  Record framing is in
native/walcodec.pyx.

Rules and invariants:
- save() encodes the whole batch into one buffer, writes it with one pwrite(2) and makes
  it durable with ONE fdatasync(2), both with the GIL released: the caller (a dedicated
  writer thread) groups everything that arrived during the previous fsync into one call.
- A segment is created as a ``.tmp`` file holding its head (and, on a cut, the batch that
  did not fit the previous segment), fdatasynced, renamed, and the directory fsynced: a
  segment under its final name always has a whole head, so the chain can be followed.
  A cut therefore costs one fdatasync plus one directory fsync, once per segment.
- Segment files are zero-filled (blocks written, not just reserved) before use: appending
  into reserved-but-unwritten extents makes each fdatasync commit metadata as well, which
  measured about 1.6x slower on ext4.  The first segment is filled at create(); the next
  one in a background thread once the tail is half full, so a cut rarely waits for it.
- A batch goes whole into one segment.  Cutting *before* the batch (not after, like etcd)
  keeps the previous segment untouched once its last save returned, so no extra sync of
  it is needed; a batch larger than a segment simply makes that segment longer.
- Every live entry written before segment k has an index below k's name index (the name
  is the first index of the batch that opened it, or the last index + 1), so replay after
  a snapshot at index s starts at the last segment named <= s + 1 and misses nothing.
- Replay: bytes that end the data (sixteen zeros at a record boundary) end a segment.
  Only in the last segment may a record be bad without the log being corrupt, and only
  when nothing but zeros follows it (a write cut short by a crash, "torn tail"): the
  segment is copied to ``<name>.broken``, truncated at the last whole record and
  preallocated again.  Any other bad record, a broken crc chain between segments, a
  missing segment or an entry index gap raises WALCorruptError naming file and offset.
- After a write or fsync error the WAL refuses every later save (WALWriteError): after a
  failed fsync the kernel may have dropped the dirty pages, so retrying could report data
  durable that is not.
- One exception: a full disk (ENOSPC/EDQUOT) met *before* any fsync of the batch (by its
  pwrite, or by creating, filling or renaming a new segment) raises WALNoSpaceError and
  leaves the WAL as it was before the call (same tail, offset and crc; a half-made segment
  is deleted), so the caller may retry the same save once space returns.  Bytes of the
  batch that did reach the page cache lie past the end of the log: the retry overwrites
  them, and a crash meanwhile leaves a torn tail that replay cuts off.  ENOSPC reported by
  fdatasync (or by the directory fsync after a rename) is as fatal as any other fsync error.

Non-goals: locking the directory against a second process, purging by count (the server
calls release_to), and tolerating torn writes that persisted out of order (a zeroed
sector followed by written ones in the last batch is reported as corruption).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import shutil
import threading
import time
from typing import NamedTuple

from .._native import walcodec
from ..histogram import Histogram
from ..logutil import event
from ..raft.types import EMPTY_HARD_STATE, Entry, HardState
from . import failpoint
from .fileutil import (
    BROKEN_SUFFIX,
    NO_SPACE_ERRNOS,
    TMP_SUFFIX,
    fsync_dir,
    make_dir_durable,
    preallocate,
    read_file,
    remove_tmp_files,
    zero_fill,
)

DEFAULT_SEGMENT_SIZE_BYTES = 64 * 1024 * 1024
SLOW_FDATASYNC_S = 1.0  # etcd's warnSyncDuration
_log = logging.getLogger("fastkv.wal")
WAL_SUFFIX = ".wal"
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")

#: Upper bounds of etcd's etcd_disk_wal_fsync_duration_seconds buckets: 1 ms doubling to 8.192 s.
FSYNC_BUCKETS_S = tuple(0.001 * 2**i for i in range(14))
#: Upper bounds for the entries one save() writes (the group commit size): 1 doubling to 4096.
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))

# Statuses where the record's own bytes are wrong, which a crash mid-write can cause.
_TEARABLE = frozenset({walcodec.BAD_HEADER, walcodec.SHORT, walcodec.BAD_CRC})


class WALError(Exception):
    """Base of the WAL's own errors."""


class WALCorruptError(WALError):
    """The log on disk cannot be trusted; the message names the file and the offset."""


class WALWriteError(WALError):
    """A write or fsync failed; this WAL accepts no further saves."""


class WALNoSpaceError(WALWriteError):
    """The disk is full and nothing of the save counts as written: the WAL is as it was before
    the call and accepts the same save again (see the module docstring)."""


class _SyncFailed(OSError):
    """An fsync/fdatasync failed (or a step after a segment's rename): what is on disk is
    unknown, whatever the errno, so it is never retried."""


def _datasync(fd: int) -> None:
    try:
        walcodec.datasync(fd)
    except OSError as e:
        raise _SyncFailed(e.errno, e.strerror) from e


class Segment(NamedTuple):
    seq: int
    first_index: int  # the first entry index the segment may hold

    @property
    def name(self) -> str:
        return segment_name(self.seq, self.first_index)


def segment_name(seq: int, index: int) -> str:
    return f"{seq:016x}-{index:016x}{WAL_SUFFIX}"


def list_segments(wal_dir: str) -> list[Segment]:
    """The segments in wal_dir ordered by seq (other files, .tmp and .broken ignored)."""
    segments = []
    for name in os.listdir(wal_dir):
        m = _SEGMENT_NAME.match(name)
        if m:
            segments.append(Segment(int(m.group(1), 16), int(m.group(2), 16)))
    segments.sort()
    return segments


_UNREAD, _READY, _CLOSED = "unread", "ready", "closed"


class _Spare:
    """A segment-sized file of written zeros, prepared by a background thread so that a cut
    does not stall a save for it (etcd's file pipeline).  Its name ends in .tmp: a crash
    leaves nothing that open() would not delete."""

    def __init__(self, path: str, size_bytes: int) -> None:
        self.path = path
        self._size_bytes = size_bytes
        self._fd = -1
        self._error: OSError | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, name="wal-spare", daemon=True).start()

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                zero_fill(fd, self._size_bytes)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        except OSError as e:
            self._error = e
        finally:
            self._done.set()

    def take(self) -> int:
        """The open file, once ready; raises the OSError that stopped its preparation."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        fd, self._fd = self._fd, -1
        return fd

    def discard(self) -> None:
        self._done.wait()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class WAL:
    """One member's log directory.  Use WAL.create or WAL.open, never the constructor."""

    def __init__(self, wal_dir: str, segment_size_bytes: int, snap_index: int) -> None:
        if segment_size_bytes <= 0:
            raise ValueError("segment_size_bytes must be positive")
        self.dir = wal_dir
        self.segment_size_bytes = segment_size_bytes
        self.snap_index = snap_index
        # Present segments, oldest first; the last one is open for appending once ready.
        self._segments: list[Segment] = []
        self._encoder = walcodec.Encoder()
        self._fd = -1
        # Write offset in the last segment: the end of its last whole record.
        self._offset = 0
        # Where the last segment's head ends: a segment holding no more than this is never cut.
        self._head_end = 0
        self._metadata = b""
        self._hard_state: HardState = EMPTY_HARD_STATE
        self._snapshot: tuple[int, int] | None = None
        # Index of the last entry written (or replayed): names the next segment.
        self._last_index = 0
        self._failed: BaseException | None = None
        self._state = _UNREAD
        self._lock = threading.Lock()
        # The next segment's file, zero-filled in the background once the tail is half full.
        self._spare: _Spare | None = None
        self._spare_at = segment_size_bytes // 2
        #: Path of the segment whose torn tail read_all() repaired, if any.
        self.repaired: str | None = None
        # For /metrics, written under the lock by the saving thread and read without it: etcd's
        # etcd_disk_wal_fsync_duration_seconds, and the entries per save (group commit size).
        self.fsync_seconds = Histogram(FSYNC_BUCKETS_S)
        self.batch_entries = Histogram(BATCH_BUCKETS)
        self.bytes_written = 0

    # -- creating and opening ---------------------------------------------------------

    @staticmethod
    def exists(wal_dir: str) -> bool:
        return os.path.isdir(wal_dir) and bool(list_segments(wal_dir))

    @classmethod
    def create(
        cls, wal_dir: str, metadata: bytes, segment_size_bytes: int = DEFAULT_SEGMENT_SIZE_BYTES
    ) -> WAL:
        """A new log holding only metadata, ready to append (no read_all needed)."""
        if WAL.exists(wal_dir):
            raise FileExistsError(f"a WAL already exists in {wal_dir!r}")
        make_dir_durable(wal_dir)
        remove_tmp_files(wal_dir)
        wal = cls(wal_dir, segment_size_bytes, 0)
        wal._metadata = bytes(metadata)
        enc = wal._encoder
        enc.add_crc()
        enc.add_metadata(wal._metadata)
        enc.add_snapshot(0, 0)
        wal._snapshot = (0, 0)
        try:
            wal._create_segment(Segment(0, 0), len(enc))
        finally:
            enc.clear()
        wal._state = _READY
        return wal

    @classmethod
    def open(
        cls, wal_dir: str, segment_size_bytes: int = DEFAULT_SEGMENT_SIZE_BYTES, snap_index: int = 0
    ) -> WAL:
        """Opens an existing log for one read_all() (replaying entries after snap_index)."""
        segments = list_segments(wal_dir) if os.path.isdir(wal_dir) else []
        if not segments:
            raise FileNotFoundError(f"no WAL segments in {wal_dir!r}")
        remove_tmp_files(wal_dir)
        # The last segment that may hold index snap_index + 1 (see the module docstring).
        start = 0
        for i, seg in enumerate(segments):
            if seg.first_index <= snap_index + 1:
                start = i
        selected = segments[start:]
        for prev, seg in zip(selected, selected[1:], strict=False):
            if seg.seq != prev.seq + 1:
                raise WALCorruptError(
                    f"{os.path.join(wal_dir, seg.name)}: segment {prev.seq + 1:016x} is missing before it"
                )
        wal = cls(wal_dir, segment_size_bytes, snap_index)
        wal._segments = selected
        return wal

    def read_all(self) -> tuple[bytes, HardState, list[Entry]]:
        """(metadata, hard state, entries after snap_index); once, right after open()."""
        with self._lock:
            if self._state != _UNREAD:
                raise WALError("read_all() is allowed once, right after WAL.open()")
            decoder = walcodec.Decoder(Entry, HardState, self.snap_index + 1)
            # Replay allocates one tuple per entry and nothing cyclic: the cyclic GC would
            # only rescan the growing list again and again.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                end = 0
                last = len(self._segments) - 1
                for i, seg in enumerate(self._segments):
                    end = self._replay_segment(decoder, seg, i == last)
            finally:
                if gc_was_enabled:
                    gc.enable()
            if decoder.metadata is None:
                raise WALCorruptError(f"{self._path(self._segments[0])}: no metadata record")
            self._metadata = decoder.metadata
            self._hard_state = decoder.hard_state or EMPTY_HARD_STATE
            self._snapshot = decoder.snapshot
            self._last_index = decoder.last_index
            self._encoder.crc = decoder.crc
            self._open_tail(end)
            self._state = _READY
            return self._metadata, self._hard_state, decoder.entries

    def _replay_segment(self, decoder: walcodec.Decoder, seg: Segment, is_last: bool) -> int:
        """Replays one segment into decoder; returns where its data ends."""
        path = self._path(seg)
        buf = read_file(path)
        offset, status = decoder.decode(buf, 0)
        if status == walcodec.END:
            if walcodec.data_end(buf, offset) > offset:
                raise WALCorruptError(f"{path}: data after the end marker at offset {offset}")
            return offset
        reason = walcodec.STATUS_NAMES[status]
        if is_last and status in _TEARABLE:
            # Torn only if nothing was written past the damaged record: a prefix write
            # cut short leaves zeros (or the end of the file) after its last byte.
            limit = offset + walcodec.HEADER_SIZE if status == walcodec.BAD_HEADER else decoder.record_end
            if walcodec.data_end(buf, offset) <= limit:
                self._repair(path, offset)
                return offset
        raise WALCorruptError(f"{path}: {reason} at offset {offset}")

    def _repair(self, path: str, offset: int) -> None:
        """Keeps a copy of the damaged segment, then cuts it at the last whole record."""
        shutil.copyfile(path, path + BROKEN_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, offset)
            # Zeros again up to the segment size: replay relies on them to end the data.
            preallocate(fd, self.segment_size_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.dir)
        self.repaired = path

    def _open_tail(self, end: int) -> None:
        seg = self._segments[-1]
        fd = os.open(self._path(seg), os.O_RDWR | os.O_CLOEXEC)
        try:
            preallocate(fd, self.segment_size_bytes)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._offset = end
        # An opened tail segment may be cut as soon as it holds anything.
        self._head_end = 0

    # -- appending --------------------------------------------------------------------

    def save(self, hard_state: HardState | None, entries: list[Entry], sync: bool = True) -> None:
        """Appends entries, then hard_state (if not None), durably: one write, one fdatasync.
        ``sync=False`` skips the fdatasync, for what a crash may lose (a commit index alone:
        Raft recomputes it), as etcd writes such a hard state without syncing."""
        with self._lock:
            self._check_writable()
            enc = self._encoder
            crc_before = enc.crc
            try:
                if entries:
                    enc.add_entries(entries)
                if hard_state is not None:
                    enc.add_hard_state(hard_state)
            except BaseException:
                enc.clear()
                enc.crc = crc_before
                raise
            if not len(enc):
                return
            try:
                if self._offset + len(enc) > self.segment_size_bytes and self._offset > self._head_end:
                    self._cut(crc_before, hard_state, entries)
                else:
                    self._write_and_sync(sync)
            except OSError as e:
                enc.clear()
                self._write_failed(e, crc_before)
            enc.clear()
            if entries:
                self._last_index = entries[-1].index
                self.batch_entries.observe(len(entries))
            if hard_state is not None:
                self._hard_state = hard_state

    def save_snapshot(self, term: int, index: int) -> None:
        """Records (durably) that a snapshot at (term, index) exists."""
        with self._lock:
            self._check_writable()
            enc = self._encoder
            crc_before = enc.crc
            enc.add_snapshot(term, index)
            try:
                self._write_and_sync()
            except OSError as e:
                enc.clear()
                self._write_failed(e, crc_before)
            enc.clear()
            self._snapshot = (term, index)

    def _write_failed(self, e: OSError, crc_before: int) -> None:
        """Raise for a failed save: WALNoSpaceError (the WAL rolled back, retry allowed) for a
        full disk met before any fsync, else WALWriteError and the WAL refuses every later save."""
        if e.errno in NO_SPACE_ERRNOS and not isinstance(e, _SyncFailed):
            self._encoder.crc = crc_before
            raise WALNoSpaceError(f"WAL write in {self.dir!r} failed: {e}") from e
        self._failed = e
        raise WALWriteError(f"WAL write in {self.dir!r} failed: {e}") from e

    def _write_and_sync(self, sync: bool = True) -> None:
        enc = self._encoder
        failpoint.hit("before_wal_write")
        enc.write(self._fd, self._offset)
        failpoint.hit("after_wal_write")
        self.bytes_written += len(enc)
        if not sync:
            self._offset += len(enc)
            return
        sync_start = time.monotonic()
        _datasync(self._fd)
        took = time.monotonic() - sync_start
        self.fsync_seconds.observe(took)
        if took > SLOW_FDATASYNC_S:
            # etcd's "slow fdatasync" warning: the disk, not fastkv, is holding writes back.
            event(_log, logging.WARNING, "slow fdatasync", took=f"{took:.6f}s", **{"expected-duration": "1s"})
        failpoint.hit("after_wal_sync")
        self._offset += len(enc)
        if self._spare is None and self._offset > self._spare_at:
            self._spare = _Spare(
                os.path.join(self.dir, f"{self._next_seq():016x}.spare{TMP_SUFFIX}"), self.segment_size_bytes
            )

    def _cut(self, crc_before: int, hard_state: HardState | None, entries: list[Entry]) -> None:
        """Opens the next segment with the batch that did not fit the current one."""
        enc = self._encoder
        enc.clear()
        enc.crc = crc_before
        enc.add_crc()
        enc.add_metadata(self._metadata)
        if self._snapshot is not None:
            enc.add_snapshot(*self._snapshot)
        enc.add_hard_state(self._hard_state)
        head_end = len(enc)
        if entries:
            enc.add_entries(entries)
        if hard_state is not None:
            enc.add_hard_state(hard_state)
        index = entries[0].index if entries else self._last_index + 1
        old_fd, old_end = self._fd, self._offset
        self._create_segment(Segment(self._next_seq(), index), head_end)
        # The old segment's data was durable when its last save returned; dropping its
        # preallocated zeros needs no sync (zeros or no bytes both end the data).
        try:
            os.ftruncate(old_fd, old_end)
        finally:
            os.close(old_fd)

    def _create_segment(self, seg: Segment, head_end: int) -> None:
        """Writes the encoder's buffer as the whole new segment seg; makes it the tail."""
        enc = self._encoder
        final = self._path(seg)
        fd, tmp = self._take_spare()
        try:
            failpoint.hit("before_wal_write")
            enc.write(fd, 0)
            failpoint.hit("after_wal_write")
            self.bytes_written += len(enc)
            sync_start = time.monotonic()
            _datasync(fd)
            self.fsync_seconds.observe(time.monotonic() - sync_start)
            os.rename(tmp, final)
        except BaseException:
            os.close(fd)
            # A segment that never became part of the log (a full disk, say) must not stay
            # behind: it would keep the disk full, and the next start would trip over it.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            failpoint.hit("wal_segment_cut")  # renamed, the directory not yet fsynced
            fsync_dir(self.dir)
            failpoint.hit("after_wal_sync")
        except OSError as e:
            # The segment is in the directory under its final name: never a retry from here.
            os.close(fd)
            raise _SyncFailed(
                e.errno, f"fsync of {self.dir!r} after creating {seg.name}: {e.strerror}"
            ) from e
        self._segments.append(seg)
        self._fd = fd
        self._offset = len(enc)
        self._head_end = head_end

    def _take_spare(self) -> tuple[int, str]:
        """A zero-filled file for the next segment: the one prepared in the background if
        there is one, else made now."""
        spare, self._spare = self._spare, None
        if spare is not None:
            try:
                return spare.take(), spare.path
            except OSError:
                spare.discard()  # e.g. no space for a whole segment: a sparse one still works
        tmp = os.path.join(self.dir, f"{self._next_seq():016x}{TMP_SUFFIX}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if self._segments:
                preallocate(fd, self.segment_size_bytes)
            else:
                # The first segment takes the whole of a short-lived cluster's writes.
                zero_fill(fd, self.segment_size_bytes)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return fd, tmp

    def _next_seq(self) -> int:
        return self._segments[-1].seq + 1 if self._segments else 0

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise WALWriteError(f"WAL in {self.dir!r} failed earlier: {self._failed}") from self._failed
        if self._state != _READY:
            raise WALError("the WAL is not open for appending (call read_all() after open())")

    # -- housekeeping -----------------------------------------------------------------

    def release_to(self, index: int, max_segments: int = 1) -> None:
        """Deletes the oldest segments that hold only entries below index (never the tail),
        while more than ``max_segments`` remain (etcd's --max-wals; 0 keeps every segment)."""
        if max_segments <= 0:
            return
        with self._lock:
            # Segment k holds entries below the next segment's name index only.  Oldest
            # first, each unlink made durable, so a crash never leaves a gap in the seqs.
            while len(self._segments) > max(max_segments, 1) and self._segments[1].first_index <= index:
                os.unlink(self._path(self._segments[0]))
                fsync_dir(self.dir)
                del self._segments[0]

    def close(self) -> None:
        with self._lock:
            if self._spare is not None:
                self._spare.discard()
                self._spare = None
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._state = _CLOSED

    # -- introspection ----------------------------------------------------------------

    @property
    def last_index(self) -> int:
        """Index of the last entry written or replayed (0 if none)."""
        return self._last_index

    @property
    def snapshot(self) -> tuple[int, int] | None:
        """(term, index) of the last snapshot marker seen or written."""
        return self._snapshot

    def segments(self) -> list[str]:
        """Names of the segments in use, oldest first."""
        return [seg.name for seg in self._segments]

    def _path(self, seg: Segment) -> str:
        return os.path.join(self.dir, seg.name)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
