"""Reading etcd's write-ahead log (``member/wal/<seq:016x>-<index:016x>.wal``), read-only.

Format: a segment is a run of frames, each an 8-byte little-endian length word followed by a
``walpb.Record`` and padding to 8 bytes.  The low 56 bits of the word are the record's length; when the
top bit is set, bits 56-58 say how many padding bytes follow.  A zero word (preallocated space) or the
end of the file ends a segment.  Each record's ``crc`` is the CRC-32C (Castagnoli) of its data continued
from the previous record's (one chain across all segments); a segment opens with a ``crc`` record
holding the chain value so far, which restarts the chain there.

Rules (etcd's, ``wal/decoder.go`` and ``wal.ReadAll``):

- Segments must be numbered without gaps; a missing one is corruption.
- A record that cannot be read (cut short by the end of the file, undecodable, or failing its crc)
  is a *torn write* only in the last segment and only when the frame runs past the end of the file or
  one of its 512-byte sector pieces is all zeros: a crash artefact that etcd truncates away.  The
  records before it are kept and the rest of the segment is ignored.  Anywhere else it is corruption.
- A ``crc`` record whose value disagrees with the chain is corruption; so is a second metadata record
  that differs from the first, and a record type etcd does not know.
- Entries are kept from the chosen snapshot's index on; an entry whose index is at or below one read
  earlier replaces it and everything after it (a new leader overwrote an uncommitted tail).
- The chosen snapshot must be recorded in the WAL with the same term.

Everything here raises ``EtcdDataError`` with a one-line message naming the file and offset.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass, field

from .._native.crc32c import crc32c
from .errors import EtcdDataError
from .etcdpb import (
    CRC_TYPE,
    ENTRY_NORMAL,
    ENTRY_TYPE,
    METADATA_TYPE,
    SNAPSHOT_TYPE,
    STATE_TYPE,
    HardState,
    Metadata,
    RaftEntry,
    WalSnapshot,
    decode_entry,
    decode_hard_state,
    decode_metadata,
    decode_normal_entry,
    decode_record,
    decode_wal_snapshot,
)
from .protowire import WireError

FRAME_BYTES = 8
SECTOR_BYTES = 512
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


@dataclass(slots=True)
class WalRecord:
    type: int
    data: bytes
    path: str
    offset: int

    @property
    def where(self) -> str:
        return f"{self.path} at offset {self.offset}"


@dataclass(slots=True)
class WalScan:
    """Every record of every segment, checked, in order; ``torn`` says where a torn tail was cut."""

    segments: list[str]
    records: list[WalRecord]
    torn: str | None = None


@dataclass(slots=True)
class WalContents:
    metadata: Metadata
    hard_state: HardState
    entries: list[RaftEntry]
    snapshots: list[WalSnapshot] = field(default_factory=list)
    torn: str | None = None
    segments: list[str] = field(default_factory=list)


def list_segments(wal_dir: str) -> list[tuple[int, int, str]]:
    """(seq, index, name) of each segment, by seq; other files (``.tmp``, ``.broken``) are ignored."""
    found = []
    for name in os.listdir(wal_dir):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1), 16), int(m.group(2), 16), name))
    found.sort()
    return found


def _is_torn(data: memoryview, file_offset: int) -> bool:
    """Whether a record's bytes (starting at ``file_offset``) include a sector piece of only zeros."""
    pos = 0
    off = file_offset
    while pos < len(data):
        n = min(SECTOR_BYTES - off % SECTOR_BYTES, len(data) - pos)
        if not any(data[pos : pos + n]):
            return True
        pos += n
        off += n
    return False


def check_not_locked(path: str) -> None:
    """Refuse a WAL segment a running etcd holds: etcd locks its segments exclusively (Linux open file
    description locks, or flock where those are missing), and reading a log that is being written
    would migrate a moving target."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts with OFD (and POSIX) locks
            fcntl.lockf(fd, fcntl.LOCK_UN)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            raise EtcdDataError(
                f"{path} is locked: etcd is still running on this data dir; stop it first"
            ) from None
    finally:
        os.close(fd)


def scan(wal_dir: str) -> WalScan:
    segments = list_segments(wal_dir) if os.path.isdir(wal_dir) else []
    if not segments:
        raise EtcdDataError(f"{wal_dir}: no WAL segments (*.wal)")
    for (prev_seq, _, prev_name), (seq, _, name) in zip(segments, segments[1:], strict=False):
        if seq != prev_seq + 1:
            raise EtcdDataError(
                f"{os.path.join(wal_dir, name)}: WAL segment {prev_seq + 1:016x} is missing "
                f"(after {prev_name})"
            )
    check_not_locked(os.path.join(wal_dir, segments[-1][2]))
    out = WalScan([s[2] for s in segments], [])
    crc = 0
    last = len(segments) - 1
    for i, (_, _, name) in enumerate(segments):
        path = os.path.join(wal_dir, name)
        with open(path, "rb") as f:
            buf = memoryview(f.read())
        crc, torn = _scan_segment(path, buf, crc, i == last, out.records)
        if torn is not None:
            out.torn = torn
    return out


def _bad_record(path: str, offset: int, is_last: bool, problem: str, torn: bool) -> str:
    """The message for a torn tail (the caller stops reading there), or raise for corruption."""
    where = f"{path} at offset {offset}"
    if torn and is_last:
        return f"{where}: {problem} (torn write, ignored as etcd does)"
    raise EtcdDataError(f"{where}: {problem}: the WAL is corrupt")


def _scan_segment(
    path: str, buf: memoryview, crc: int, is_last: bool, records: list[WalRecord]
) -> tuple[int, str | None]:
    pos = 0
    end = len(buf)
    append = records.append
    while pos < end:
        if end - pos < FRAME_BYTES:
            return crc, _bad_record(
                path, pos, is_last, "a frame header cut short by the end of the file", True
            )
        word = int.from_bytes(buf[pos : pos + FRAME_BYTES], "little")
        if word == 0:
            break  # preallocated space: the segment's data ends here
        length = word & ((1 << 56) - 1)
        pad = (word >> 56) & 0x7 if word >> 63 else 0
        start = pos + FRAME_BYTES
        if start + length + pad > end:
            return crc, _bad_record(
                path, pos, is_last, f"a {length}-byte record runs past the end of the file", True
            )
        data = buf[start : start + length]
        try:
            rec = decode_record(data)
        except WireError as e:
            return crc, _bad_record(
                path,
                pos,
                is_last,
                f"undecodable record ({e})",
                _is_torn(buf[start : start + length + pad], start),
            )
        if rec.type == CRC_TYPE:
            if crc != 0 and rec.crc != crc:
                raise EtcdDataError(
                    f"{path} at offset {pos}: crc record {rec.crc:08x} does not continue the chain "
                    f"{crc:08x}: the WAL is corrupt"
                )
            crc = rec.crc
        else:
            crc = crc32c(rec.data, crc)
            if crc != rec.crc:
                torn = _is_torn(buf[start : start + length + pad], start)
                return crc, _bad_record(
                    path,
                    pos,
                    is_last,
                    f"crc mismatch (record says {rec.crc:08x}, data gives {crc:08x})",
                    torn,
                )
            if rec.type not in (METADATA_TYPE, ENTRY_TYPE, STATE_TYPE, SNAPSHOT_TYPE):
                raise EtcdDataError(
                    f"{path} at offset {pos}: unknown WAL record type {rec.type}: the WAL is corrupt"
                )
        append(WalRecord(rec.type, bytes(rec.data), path, pos))
        pos = start + length + pad
    return crc, None


def has_v3_requests(wal: WalScan) -> bool:
    """Whether any normal entry in the WAL (before the snapshot too) is a v3 request."""
    for r in wal.records:
        if r.type == ENTRY_TYPE:
            e: RaftEntry = _decode(decode_entry, r)
            if e.type == ENTRY_NORMAL and e.data:
                try:
                    if decode_normal_entry(e.data).v3 is not None:
                        return True
                except WireError:
                    continue
    return False


def snapshot_markers(wal: WalScan) -> list[WalSnapshot]:
    """The snapshots the WAL records, in order."""
    return [_decode(decode_wal_snapshot, r) for r in wal.records if r.type == SNAPSHOT_TYPE]


def last_hard_state(wal: WalScan) -> HardState:
    hs = HardState()
    for r in wal.records:
        if r.type == STATE_TYPE:
            hs = _decode(decode_hard_state, r)
    return hs


def _decode(fn, rec: WalRecord):  # type: ignore[no-untyped-def]
    try:
        return fn(rec.data)
    except WireError as e:
        raise EtcdDataError(f"{rec.where}: undecodable record data ({e}): the WAL is corrupt") from None


def read_from(wal: WalScan, start: WalSnapshot) -> WalContents:
    """The metadata, last hard state and the entries after ``start`` (etcd's ReadAll)."""
    first = _NAME.match(wal.segments[0])
    assert first is not None
    if int(first.group(2), 16) > start.index:
        # etcd's searchIndex: the segment holding the snapshot's successor must be there.
        raise EtcdDataError(
            f"{wal.segments[0]}: the oldest WAL segment starts after index {start.index}, where replay must "
            "begin: the segments before it are missing"
        )
    metadata_raw: bytes | None = None
    hs = HardState()
    entries: list[RaftEntry] = []
    snapshots: list[WalSnapshot] = []
    match = False
    for r in wal.records:
        if r.type == ENTRY_TYPE:
            e: RaftEntry = _decode(decode_entry, r)
            if e.index > start.index:
                keep = e.index - start.index - 1
                if keep > len(entries):
                    raise EtcdDataError(
                        f"{r.where}: entry {e.index} follows entry {start.index + len(entries)}: "
                        "entries are missing, the WAL is corrupt"
                    )
                del entries[keep:]
                entries.append(e)
        elif r.type == STATE_TYPE:
            hs = _decode(decode_hard_state, r)
        elif r.type == METADATA_TYPE:
            if metadata_raw is not None and metadata_raw != r.data:
                raise EtcdDataError(f"{r.where}: a second, different metadata record: the WAL is corrupt")
            metadata_raw = r.data
        elif r.type == SNAPSHOT_TYPE:
            s: WalSnapshot = _decode(decode_wal_snapshot, r)
            snapshots.append(s)
            if s.index == start.index:
                if s.term != start.term:
                    raise EtcdDataError(
                        f"{r.where}: the WAL records snapshot {s.index} at term {s.term}, "
                        f"the snapshot file says term {start.term}"
                    )
                match = True
    if metadata_raw is None:
        raise EtcdDataError(f"{wal.segments[0]}: the WAL has no metadata record")
    if not match:
        raise EtcdDataError(
            f"the WAL does not record the snapshot at index {start.index} (term {start.term}): "
            "its segments from before that snapshot are gone"
        )
    try:
        metadata = decode_metadata(metadata_raw)
    except WireError as e:
        raise EtcdDataError(f"undecodable WAL metadata ({e})") from None
    return WalContents(metadata, hs, entries, snapshots, wal.torn, wal.segments)
