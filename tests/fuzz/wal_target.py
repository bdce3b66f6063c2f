"""Target ``wal``: damaged and arbitrary WAL segments, through WAL.open + read_all (storage/wal.py on
native/walcodec.pyx).

A small log (1 KiB segments: entries, hard states, a snapshot marker, a Raft suffix replacement, four
segments) is written once per process by the WAL itself.  Each input picks one damage and applies it to a
copy of that log in a scratch directory:

- mode 0, flips: up to four (segment, offset, xor mask) bit flips;
- mode 1, truncation: one segment cut at an offset;
- mode 2, arbitrary tail: one segment's bytes from an offset replaced by the rest of the input;
- mode 3, overwrite: a run of input bytes written over one segment at an offset;
- mode 4, sealed records: the last segment cut after one of its records, then records made from the
  input (entries with rewritten or skipped indexes, hard states, crc, snapshot and metadata records,
  payloads of any length) with correct chained crcs, so the checks behind the crcs are reached.

Invariants:
- ``read_all`` returns or raises ``WALCorruptError`` (naming the file), nothing else;
- what it returns is exactly what the records before the first bad record hold (replayed by the twin),
  and a bad record is accepted as a torn tail only in the last segment;
- a flip or a truncation never makes a wrong record accepted: what is read back is the whole log or what
  the log held after one of the records of its last segment (a torn tail cut off), never anything else;
- a change inside the data of any segment is detected: the whole log is never read back after one;
- truncating the last segment anywhere is a torn tail (the records before the cut, nothing else) unless
  the cut loses the only metadata record; truncating an earlier segment is always corruption;
- the compiled decoder and its pure-Python twin (tests/twins/walcodec.py) stop at the same offset with
  the same status and the same records, segment after segment;
- a repaired log opens again to the same state without a repair, and takes an append that is read back.
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import tempfile

from fastkv._native import walcodec
from fastkv.raft.types import Entry, HardState
from fastkv.storage.wal import _TEARABLE, WAL, WALCorruptError
from tests.fuzz.reader import Reader
from tests.twins import walcodec as twin

SEGMENT_BYTES = 1024
METADATA = b"fuzz-cluster-metadata"

State = tuple[bytes, HardState, list[Entry]]


class FuzzFailure(AssertionError):
    pass


def _ents(first: int, count: int, term: int) -> list[Entry]:
    return [Entry(term, i, i % 2, b"v%d-" % i + b"x" * (i % 13)) for i in range(first, first + count)]


def _write_log(wal_dir: str) -> None:
    wal = WAL.create(wal_dir, METADATA, segment_size_bytes=SEGMENT_BYTES)
    try:
        wal.save(HardState(1, 1, 0), _ents(1, 4, 1))
        wal.save(HardState(1, 1, 4), [])
        wal.save(HardState(2, 2, 4), _ents(5, 6, 2))
        wal.save_snapshot(2, 6)
        wal.save(None, _ents(9, 5, 3))  # replaces 9..10 of term 2
        wal.save(HardState(3, 2, 12), _ents(14, 8, 3))
        wal.save(HardState(3, 2, 21), _ents(22, 9, 3))
        wal.save(HardState(4, 3, 29), _ents(31, 3, 4))
    finally:
        wal.close()


def _scratch_root() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = tempfile.mkdtemp(prefix="fastkv-fuzz-wal-", dir=base)
    atexit.register(shutil.rmtree, root, True)
    return root


def _read(wal_dir: str) -> tuple[State, str | None]:
    wal = WAL.open(wal_dir, segment_size_bytes=SEGMENT_BYTES)
    try:
        metadata, hard_state, entries = wal.read_all()
        return (metadata, hard_state, list(entries)), wal.repaired
    finally:
        wal.close()


def _record_ends(buf: bytes) -> list[int]:
    """Offsets where the records of a pristine segment end."""
    ends = []
    off = 0
    while off + walcodec.HEADER_SIZE <= len(buf) and any(buf[off : off + walcodec.HEADER_SIZE]):
        length = int.from_bytes(buf[off : off + 4], "little")
        off += walcodec.HEADER_SIZE + ((length + 7) & ~7)
        ends.append(off)
    return ends


class _Log:
    """The pristine log: its segment files and the states a torn tail may leave."""

    def __init__(self) -> None:
        self.root = _scratch_root()
        src = os.path.join(self.root, "pristine")
        _write_log(src)
        self.names = sorted(n for n in os.listdir(src) if n.endswith(".wal"))
        self.segments = []
        for n in self.names:
            with open(os.path.join(src, n), "rb") as f:
                self.segments.append(f.read())
        self.full, _ = _read(src)
        shutil.rmtree(src)
        if len(self.segments) < 3:
            raise RuntimeError(f"the fuzz log should span several segments, it has {len(self.segments)}")
        # data_end per segment: where its last record ends.
        self.data_ends = [(_record_ends(s) or [0])[-1] for s in self.segments]
        # The states a torn last segment may leave: cut after each of its records (None: no metadata).
        last = self.segments[-1]
        self.prefix_states: dict[int, State | None] = {}
        for cut in [0, *_record_ends(last)]:
            self.prefix_states[cut] = self._state_with_last(last[:cut])
        self.work = os.path.join(self.root, "work")

    def _state_with_last(self, last: bytes) -> State | None:
        dec = walcodec.Decoder(Entry, HardState, 1)
        for buf in [*self.segments[:-1], last]:
            _, status = dec.decode(buf, 0)
            assert status == walcodec.END
        if dec.metadata is None:
            return None
        return dec.metadata, dec.hard_state or HardState(0, 0, 0), list(dec.entries)

    def lay_out(self, segments: list[bytes]) -> str:
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        for name, data in zip(self.names, segments, strict=True):
            with open(os.path.join(self.work, name), "wb") as f:
                f.write(data)
        return self.work


_log: _Log | None = None


def _get_log() -> _Log:
    global _log
    if _log is None:
        _log = _Log()
    return _log


def _replay_both(segments: list[bytes]) -> tuple[State | None, int, int]:
    """Replays the segments in order with the compiled decoder and its twin, which must agree; returns
    the state when they stop (None without metadata), the status and the index of the segment."""
    decoders = [walcodec.Decoder(Entry, HardState, 1), twin.Decoder(Entry, HardState, 1)]
    status = walcodec.END
    i = 0
    for i, buf in enumerate(segments):
        stops = [dec.decode(buf, 0) for dec in decoders]
        views = [
            (stop, d.record_end, list(d.entries), d.hard_state, d.metadata, d.snapshot, d.crc)
            for stop, d in zip(stops, decoders, strict=True)
        ]
        if views[0] != views[1]:
            raise FuzzFailure(f"walcodec and its twin disagree in segment {i}: {views[0]!r} != {views[1]!r}")
        status = stops[0][1]
        if status != walcodec.END:
            break
    dec = decoders[1]
    if dec.metadata is None:
        return None, status, i
    return (dec.metadata, dec.hard_state or HardState(0, 0, 0), list(dec.entries)), status, i


def _sealed_tail(log: _Log, r: Reader) -> bytes:
    """The last segment cut after one of its records, then records built from the input with correct
    crcs chained to what precedes them (so the checks behind the crcs are reached)."""
    cuts = sorted(log.prefix_states)
    cut = cuts[r.below(len(cuts))]
    dec = walcodec.Decoder(Entry, HardState, 1)
    for buf in [*log.segments[:-1], log.segments[-1][:cut]]:
        dec.decode(buf, 0)
    crc = dec.crc
    out = bytearray(log.segments[-1][:cut])
    index = dec.last_index
    while r.left:
        rtype = 1 + r.byte() % 5
        if r.bool():
            payload = r.chunk(64)  # any payload, of any length
        elif rtype == walcodec.ENTRY_RECORD:
            index = max(0, index + (r.byte() % 5) - 3)  # often the next index, sometimes a rewrite or a gap
            term = r.byte() % 8
            payload = struct.pack("<QQB", term, index, r.byte() % 3) + r.chunk(24)
        elif rtype == walcodec.STATE_RECORD:
            payload = struct.pack(
                "<QQQ", r.byte() % 8, r.byte() % 4, index - r.byte() % 3 if index > 2 else 0
            )
        elif rtype == walcodec.CRC_RECORD:
            payload = struct.pack("<I", crc if r.bool() else r.uint(4))
        elif rtype == walcodec.SNAPSHOT_RECORD:
            payload = struct.pack("<QQ", r.byte() % 8, r.byte())
        else:
            payload = METADATA if r.bool() else r.chunk(32)
        record, crc = twin.frame(rtype, payload, crc)
        out += record
    return bytes(out)


def _after_repair(wal_dir: str, state: State) -> None:
    again, repaired = _read(wal_dir)
    if again != state or repaired is not None:
        raise FuzzFailure(f"reopening gives {again!r} (repaired={repaired}) instead of {state!r}")
    wal = WAL.open(wal_dir, segment_size_bytes=SEGMENT_BYTES)
    try:
        _, hard_state, entries = wal.read_all()
        nxt = Entry(hard_state.term or 1, (entries[-1].index if entries else 0) + 1, 0, b"appended")
        wal.save(HardState(hard_state.term, hard_state.vote, hard_state.commit), [nxt])
    finally:
        wal.close()
    (_, _, entries_after), _ = _read(wal_dir)
    if not entries_after or entries_after[-1] != nxt:
        raise FuzzFailure(f"an append after the repair is not read back: {entries_after[-3:]!r}")


def wal(data: bytes) -> None:
    log = _get_log()
    r = Reader(data)
    mode = r.byte() % 5
    segments = [bytearray(s) for s in log.segments]
    last = len(segments) - 1
    cut: tuple[int, int] | None = None  # (segment, offset) of a truncation
    arbitrary = mode >= 2  # new bytes, not only damage to the pristine log
    if mode == 0:
        for _ in range(1 + r.byte() % 4):
            seg = r.below(len(segments))
            pos = r.below(len(segments[seg]))
            segments[seg][pos] ^= r.byte() or 1
    elif mode == 1:
        seg = r.below(len(segments))
        at = r.below(len(segments[seg]) + 1)
        del segments[seg][at:]
        cut = (seg, at)
    elif mode == 2:
        seg = r.below(len(segments))
        at = r.below(len(segments[seg]) + 1)
        segments[seg][at:] = r.rest()
    elif mode == 3:
        seg = r.below(len(segments))
        pos = r.below(len(segments[seg]))
        patch = r.chunk()
        segments[seg][pos : pos + len(patch)] = patch
    else:
        segments[last] = bytearray(_sealed_tail(log, r))
    model, status, stop_seg = _replay_both([bytes(s) for s in segments])
    # Did a byte inside some segment's records change (flips may cancel out)?
    touched_data = any(
        bytes(seg[:end]) != pristine[:end]
        for seg, pristine, end in zip(segments, log.segments, log.data_ends, strict=True)
    )

    wal_dir = log.lay_out([bytes(s) for s in segments])
    try:
        state, repaired = _read(wal_dir)
    except WALCorruptError as e:
        if wal_dir not in str(e):
            raise FuzzFailure(f"corruption error without the file name: {e}") from e
        if cut is not None and cut[0] == last:
            prefix = log.prefix_states[max(k for k in log.prefix_states if k <= cut[1])]
            if prefix is not None:
                raise FuzzFailure(f"truncating the last segment at {cut[1]} is not a torn tail: {e}") from e
        return
    # Accepted: exactly the records before the first bad one, which only a torn last segment may hold.
    if state != model:
        raise FuzzFailure(f"read back {state!r}, but the records before the first bad one hold {model!r}")
    if status != walcodec.END and (stop_seg != last or status not in _TEARABLE):
        raise FuzzFailure(f"accepted a log whose segment {stop_seg} stops with status {status}")
    if not arbitrary:
        if state == log.full:
            if touched_data:
                raise FuzzFailure("a change inside the records went undetected")
        elif state not in log.prefix_states.values():
            raise FuzzFailure(f"a damaged log read back as a state it never held: {state!r}")
    if cut is not None:
        if cut[0] != last:
            if cut[1] < len(log.segments[cut[0]]):
                raise FuzzFailure(f"segment {cut[0]} truncated at {cut[1]} was accepted")
        else:
            expected = log.prefix_states[max(k for k in log.prefix_states if k <= cut[1])]
            if cut[1] >= log.data_ends[last]:
                expected = log.full
            if state != expected:
                raise FuzzFailure(f"truncation at {cut[1]} read back {state!r}, expected {expected!r}")
    if repaired is not None:
        _after_repair(wal_dir, state)
