"""``fastkvctl backup``: a consistent copy of a member's data dir that a member can start from.

A member's state is the RocksDB applied state at its applied index A plus the WAL entries after A.
A backup writes exactly that into the backup dir B:

    B/member/kv     a RocksDB copy holding the state at A (an empty database when A is 0)
    B/member/wal    a fresh WAL (WAL.create) with the source's metadata bytes, a snapshot marker at A,
                    the entries after A in order and one hard state
    B/member/snap   empty

Where the RocksDB copy comes from depends on whether the member runs:

- Stopped (its ``member/lock`` flock can be taken): a RocksDB checkpoint of the live ``member/kv``.
  The flock is held until the backup is done, so the member cannot start meanwhile.
- Running (the flock and RocksDB's own LOCK are held, the WAL tail is being appended): a copy of the
  newest snapshot's checkpoint directory (``snap/<term>-<index>.snap.db``).  A checkpoint is never
  written after its ``.snap`` file exists, so copying it is safe; the server may purge it meanwhile,
  which shows up as a missing file and makes the backup start over.  With no snapshot yet, the copy
  starts from an empty database and the whole WAL, which nothing has released yet.

A is always read from the copied database itself, never taken from a snapshot's name: the server may
checkpoint a round or two past the index it names the snapshot with.

Either way the WAL segment files that may hold entries after A are copied first, and only the COPY
is opened and read with WAL.open/read_all: a torn tail (the member was writing it while we copied) is
repaired in the copy, never in the live dir, which the backup never writes to.  The live WAL directory
is only listed (WAL.open would also delete the live writer's ``.tmp`` spare segment).

Why this holds every write acknowledged before the backup started: an acknowledged write's entry was
fdatasynced into a segment that existed then, and segments are only released below a snapshot's index,
so the segments listed after the RocksDB copy was chosen hold every entry from A + 1 up to at least that
write.  A race that breaks this (a segment released or a snapshot purged while we copy, a write still
landing in the copied tail so that zeros precede written bytes in the copy) is detected — a missing file,
an index gap, a corrupt tail — and the whole copy is retried, up to ``attempts`` times.

The metadata (name, member id, cluster id) is kept, so ``fastkv --name <same> --data-dir B`` restarts
from the backup as the same single member.  Not done yet: etcd's backup rewrites the WAL with a new random
member id and cluster id and drops membership entries, for ``--force-new-cluster`` restores that start a
new cluster from a member of an old multi-member one; that comes with multi-member clusters.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from dataclasses import dataclass

import orjson

from ..raft.types import Entry, HardState
from . import snap
from .backend import Backend, BackendError
from .fileutil import fsync_dir, make_dir_durable, read_file
from .wal import DEFAULT_SEGMENT_SIZE_BYTES, WAL, WALError, list_segments

DEFAULT_ATTEMPTS = 5
# Where the live WAL segments are copied before they are read; removed when the backup is done.
_WAL_COPY_DIR = "wal-copy.tmp"
_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class BackupError(Exception):
    """The backup cannot be made; the message is one line for the operator."""


class _Retry(Exception):
    """The live member changed the files under us: copy again."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    applied_index: int  # A: the index of the RocksDB state in the backup
    last_index: int  # the last entry in the backup's WAL (A if none)
    entries: int  # entries in the backup's WAL, all after A
    member_running: bool  # the source member held its lock: the newest snapshot was used
    snapshot: tuple[int, int] | None  # (term, index) of the snapshot copied, if any
    attempts: int


@dataclass(frozen=True, slots=True)
class _WALCopy:
    metadata: bytes
    hard_state: HardState
    entries: list[Entry]


def backup(
    data_dir: str,
    backup_dir: str,
    *,
    wal_dir: str | None = None,
    backup_wal_dir: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    segment_size_bytes: int = DEFAULT_SEGMENT_SIZE_BYTES,
) -> BackupResult:
    """Copy the member in ``data_dir`` (its WAL in ``wal_dir`` if given) to ``backup_dir`` (the WAL to
    ``backup_wal_dir`` if given).  Raises BackupError; on failure nothing this call created is left."""
    data_dir = data_dir or "."
    backup_dir = backup_dir or "."
    member_dir = os.path.join(data_dir, "member")
    src_kv = os.path.join(member_dir, "kv")
    src_wal = wal_dir or os.path.join(member_dir, "wal")
    _check_source(data_dir, src_kv, src_wal)
    dst_member = os.path.join(backup_dir, "member")
    dst_wal = backup_wal_dir or os.path.join(dst_member, "wal")
    _check_empty(backup_dir, "backup dir")
    if backup_wal_dir:
        _check_empty(backup_wal_dir, "backup wal dir")

    created = _Created()
    lock_fd = _try_lock(os.path.join(member_dir, "lock"))
    try:
        created.make_dir(backup_dir)
        created.make_dir(dst_member)
        created.make_dir(os.path.join(dst_member, "snap"))
        if backup_wal_dir:
            created.make_dir(backup_wal_dir)
        result = _copy(
            member_dir, src_kv, src_wal, dst_member, dst_wal, lock_fd < 0, attempts, segment_size_bytes
        )
        fsync_dir(dst_member)
        fsync_dir(backup_dir)
        return result
    except OSError as e:
        created.undo()
        where = f" ({e.filename})" if e.filename else ""
        raise BackupError(f"backup to {backup_dir!r} failed: {_reason(e)}{where}") from None
    except BaseException:
        created.undo()
        raise
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)


def _copy(
    member_dir: str,
    src_kv: str,
    src_wal: str,
    dst_member: str,
    dst_wal: str,
    running: bool,
    attempts: int,
    segment_size_bytes: int,
) -> BackupResult:
    dst_kv = os.path.join(dst_member, "kv")
    wal_copy_dir = os.path.join(dst_member, _WAL_COPY_DIR)
    snap_dir = os.path.join(member_dir, "snap")
    # Stopped, nothing moves: one attempt is enough, and any error is the data's.
    tries = max(attempts, 1) if running else 1
    last_race = ""
    for attempt in range(1, tries + 1):
        for path in (dst_kv, wal_copy_dir):
            shutil.rmtree(path, ignore_errors=True)
        try:
            snapshot = None
            if running:
                snapshot = _newest_snapshot(snap_dir)
                if snapshot is not None:
                    _copy_tree(
                        os.path.join(snap_dir, snap.snap_name(*snapshot) + snap.DATA_DIR_SUFFIX), dst_kv
                    )
            elif os.path.isdir(src_kv):
                _checkpoint_live(src_kv, dst_kv)
            applied_index, applied_term = _open_kv(dst_kv)
            wal = _copy_wal(src_wal, wal_copy_dir, applied_index, running)
        except _Retry as race:
            last_race = str(race)
            continue
        finally:
            shutil.rmtree(wal_copy_dir, ignore_errors=True)
        _write_wal(dst_wal, wal, applied_index, applied_term, segment_size_bytes)
        return BackupResult(
            applied_index,
            wal.entries[-1].index if wal.entries else applied_index,
            len(wal.entries),
            running,
            snapshot,
            attempt,
        )
    raise BackupError(
        f"no consistent copy in {tries} attempts, the member kept changing its files: {last_race}"
    )


# -- checking the arguments ------------------------------------------------------------------


def _check_source(data_dir: str, src_kv: str, src_wal: str) -> None:
    if not os.path.isdir(data_dir):
        raise BackupError(f"{data_dir!r} is not a fastkv data dir: no such directory")
    if not os.path.isdir(src_kv):
        # etcd's data dirs have member/wal and member/snap too, but no member/kv.
        raise BackupError(f"{data_dir!r} is not a fastkv data dir: no {os.path.relpath(src_kv, data_dir)!r}")
    try:
        segments = list_segments(src_wal)
    except OSError as e:
        raise BackupError(
            f"{data_dir!r} is not a fastkv data dir: cannot list {src_wal!r}: {_reason(e)}"
        ) from None
    if not segments:
        raise BackupError(f"{data_dir!r} is not a fastkv data dir: no WAL segments in {src_wal!r}")


def _check_empty(path: str, what: str) -> None:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise BackupError(f"{what} {path!r} cannot be used: {_reason(e)}") from None
    if names:
        raise BackupError(f"{what} {path!r} is not empty")


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


# -- the lock --------------------------------------------------------------------------------


def _try_lock(lock_path: str) -> int:
    """The member's flock if it can be taken now (the member is stopped), else -1 (it runs)."""
    try:
        # Read-only and without O_CREAT: the backup never writes into the data dir.
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1  # no member ever locked it: treat it as running, which only reads files
    except OSError as e:
        raise BackupError(f"cannot open {lock_path!r}: {_reason(e)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return -1
        raise BackupError(f"cannot lock {lock_path!r}: {_reason(e)}") from None
    return fd


# -- the RocksDB state -----------------------------------------------------------------------


def _newest_snapshot(snap_dir: str) -> tuple[int, int] | None:
    """(term, index) of the newest snapshot whose file checks out and whose checkpoint exists.
    Unlike Snapshotter.load, renames nothing: the live dir is the member's."""
    try:
        names = os.listdir(snap_dir)
    except FileNotFoundError:
        return None
    found = sorted(
        (int(m.group(1), 16), int(m.group(2), 16)) for m in map(_SNAP_NAME.match, names) if m is not None
    )
    for term, index in reversed(found):
        path = os.path.join(snap_dir, snap.snap_name(term, index))
        try:
            snap.decode(read_file(path), term, index)
        except (snap.SnapshotCorruptError, OSError):
            continue
        if os.path.isdir(path + snap.DATA_DIR_SUFFIX):
            return term, index
    return None


def _copy_tree(src: str, dst: str) -> None:
    """A durable copy of a checkpoint directory; a file vanishing meanwhile (purged) is a race."""
    try:
        names = os.listdir(src)
        os.makedirs(dst, mode=0o700)
        for name in names:
            s, d = os.path.join(src, name), os.path.join(dst, name)
            if os.path.isdir(s):
                _copy_tree(s, d)
                continue
            shutil.copyfile(s, d)
            fd = os.open(d, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except FileNotFoundError as e:
        raise _Retry(f"{e.filename} vanished while copying it") from None
    fsync_dir(dst)


def _checkpoint_live(src_kv: str, dst_kv: str) -> None:
    try:
        live = Backend.open(src_kv)
    except (BackendError, OSError) as e:
        raise BackupError(f"cannot open {src_kv!r}: {e}") from None
    try:
        live.checkpoint(dst_kv)
    finally:
        live.close()


def _open_kv(dst_kv: str) -> tuple[int, int]:
    """(applied index, applied term) of the copied state; creates an empty database if none was copied."""
    try:
        kv = Backend.open(dst_kv)
    except (BackendError, OSError) as e:
        raise BackupError(f"the copied applied state in {dst_kv!r} cannot be opened: {e}") from None
    try:
        meta = kv.meta()
        return meta.applied_index, meta.applied_term
    finally:
        kv.close()


# -- the WAL ---------------------------------------------------------------------------------


def _copy_wal(src_wal: str, copy_dir: str, applied_index: int, running: bool) -> _WALCopy:
    """Copies the segments that may hold entries after applied_index, then reads the copy."""
    segments = list_segments(src_wal)
    # As WAL.open selects them: from the last segment named <= applied_index + 1.
    start = 0
    for i, seg in enumerate(segments):
        if seg.first_index <= applied_index + 1:
            start = i
    os.makedirs(copy_dir, mode=0o700)
    try:
        for seg in segments[start:]:
            shutil.copyfile(os.path.join(src_wal, seg.name), os.path.join(copy_dir, seg.name))
    except FileNotFoundError as e:
        raise _Retry(f"WAL segment {e.filename} was released while copying it") from None

    # A tiny segment size: reading the copy must not preallocate it to full size again.
    wal = WAL.open(copy_dir, segment_size_bytes=1, snap_index=applied_index)
    try:
        metadata, hard_state, entries = wal.read_all()
        last_index = wal.last_index
    except WALError as e:
        if running:
            raise _Retry(str(e)) from None
        raise BackupError(f"the WAL in {src_wal!r} cannot be read: {e}") from None
    finally:
        wal.close()
    _check_metadata(metadata, src_wal)
    if entries and entries[0].index != applied_index + 1:
        message = f"the WAL starts at index {entries[0].index}, the applied state ends at {applied_index}"
        if running:
            raise _Retry(message)
        raise BackupError(f"{src_wal!r}: {message}")
    if last_index < applied_index:
        # RocksDB only holds rounds whose entries were durable in the WAL first.
        raise BackupError(
            f"the WAL in {src_wal!r} ends at index {last_index}, behind the applied state at {applied_index}"
        )
    return _WALCopy(metadata, hard_state, entries)


def _check_metadata(metadata: bytes, src_wal: str) -> None:
    try:
        meta = orjson.loads(metadata)
        ok = isinstance(meta, dict) and {"name", "member_id", "cluster_id"} <= meta.keys()
    except orjson.JSONDecodeError:
        ok = False
    if not ok:
        raise BackupError(f"the WAL in {src_wal!r} does not hold fastkv member metadata")


def _write_wal(
    dst_wal: str, wal: _WALCopy, applied_index: int, applied_term: int, segment_size_bytes: int
) -> None:
    entries = wal.entries
    last = entries[-1] if entries else None
    hs = wal.hard_state
    # The hard state record of the last batch may be missing (a tail torn between the batch's
    # entries and its hard state); no term in the log may exceed the hard state's.
    term = max(hs.term, applied_term, last.term if last else 0)
    last_index = last.index if last else applied_index
    hard_state = HardState(
        term=term,
        vote=hs.vote if term == hs.term else 0,
        commit=min(max(hs.commit, applied_index), last_index),
    )
    out = WAL.create(dst_wal, wal.metadata, segment_size_bytes=segment_size_bytes)
    try:
        if applied_index:
            out.save_snapshot(applied_term, applied_index)
        out.save(hard_state, entries)
    finally:
        out.close()


# -- undoing a failed backup -----------------------------------------------------------------


class _Created:
    """The directories this backup created, to remove them (and only them) after a failure."""

    def __init__(self) -> None:
        self._dirs: list[str] = []
        self._emptied: list[str] = []

    def make_dir(self, path: str) -> None:
        if os.path.isdir(path):
            self._emptied.append(path)  # checked empty before: empty it again on failure
            return
        # The outermost directory that does not exist yet: make_dir_durable creates it too.
        top = os.path.abspath(path)
        while not os.path.isdir(os.path.dirname(top)):
            top = os.path.dirname(top)
        make_dir_durable(path)
        self._dirs.append(top)

    def undo(self) -> None:
        for path in reversed(self._dirs):
            shutil.rmtree(path, ignore_errors=True)
        for path in self._emptied:
            with contextlib.suppress(OSError):
                for name in os.listdir(path):
                    full = os.path.join(path, name)
                    if os.path.isdir(full) and not os.path.islink(full):
                        shutil.rmtree(full, ignore_errors=True)
                    else:
                        os.unlink(full)
