"""The applied state in RocksDB (rocksdict): what lets a restart skip replaying the whole log.

Each apply round becomes ONE RocksDB write batch: the round's node changes, its history events and the
applied index/term, etcd index, store stats (and the membership when it changed).  A batch is atomic, so
the database always holds the state as of exactly one applied index.  A restart loads that state and
replays only the WAL entries after it.

Rules and why:

- RocksDB's own WAL is off.  fastkv's WAL is the durable log; the database only saves replay time.  With
  one column family, a memtable flush writes whole batches in order, so after kill -9 (or a power loss)
  the files hold the state as of some applied index <= the last one written, never a torn round.  The
  price: unflushed batches are lost in a crash and replayed from the WAL.  Hence the one rule for the
  server: ``flush()`` before the WAL may drop entries at or below ``applied_index()`` (segment release).
- ``prepare`` runs on the event loop right after the round's apply, before the store changes again (the
  changes hold live nodes): it only encodes (Cython) and appends to a WriteBatch, ~1 us per changed key.
  ``write`` runs on the WAL writer thread, unsynced; RocksDB releases the GIL while it works.
- Key layout in the default column family (byte order matters):
    ``/path\\x00``   a node record (native/keyindex.pyx: encode_node); the root is implicit.
    ``/path/...``    the subtree of /path: the range [``/path/``, ``/path0``) (``0`` follows ``/``), so a
                     removed directory costs one point delete and one range delete, whatever its size.
    ``\\x01m``        applied index, applied term, etcd index (3 x u64 LE) + the 15 stats counters (i64).
    ``\\x01c``        the membership blob (written only when it changes).
    ``\\x01t``        the cluster time of the applied state (i64 LE unix ns, the newest entry stamp applied;
                     absent = 0: state written before stamps, or migrated from etcd).
    ``\\x01v``        the format version.
    ``\\x02`` + u16   the history ring: the event with index i in slot i % 1000.  Every index has exactly
                     one event, so after a batch the ring holds the last 1000 events; overwriting a slot
                     needs no delete and no range tombstone.  Internal namespaces' events are in it too
                     (flag ``internal``, full store path as key).
    ``\\x03`` + ns + ``/path\\x00``
                     a node of the internal namespace ``ns`` (``0``: cluster, ``2``: v2 auth), the path
                     relative to it (``\\x030/members/x\\x00`` is ``/0/members/x``); same record and range
                     rules as the user tree under the prefix ``\\x03`` + ns.
  A node key sorts before every key below it (``\\x00`` < ``/``), so a load in key order always finds a
  node's parent already built.  Children come back in key order (the insertion order of a directory is
  not kept; etcd lists children in Go map order, which is random).
- The TTL heap's tie-break (equal deadlines expire in the order they were set) is persisted as the node's
  deadline sequence number, so a restarted replica expires ties in the same order as one that never
  stopped.
- Records are compact binary, not JSON; the node tree is rebuilt by one Cython loop over an iterator in
  key order (``load_nodes``).

Memory: RAM keeps the whole v2 tree (values included: reads, CAS and watch answers never touch the disk),
about 210 bytes + len(path) + len(value) per key (a parent's dict is keyed by the child's own path
string, so a name costs nothing more), and RocksDB adds its memtables (<= MEMTABLE_BYTES x
MAX_MEMTABLES) and a small block cache.  Measured (bench/recovery.py, 1M keys /k/<5 digits>/<8 digits>,
100-byte values, 2-core VM): restart (open + load_store) 0.4 s; 363 MB resident after the load, 353
bytes per node over the bare interpreter; etcd 3.4 holds 1.6-1.8 GB for the same keys.  Per changed key: prepare ~1.3 us on the loop (node record +
history event), write ~1.9 us on the writer thread.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DBCompressionType,
    MemtableFactory,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from fastkv._native.keyindex import decode_event, load_nodes, node_key, put_events, put_nodes
from fastkv.v2store.stats import FIELDS as STATS_FIELDS
from fastkv.v2store.stats import Stats
from fastkv.v2store.store import HISTORY_CAPACITY, Changes, Store

from . import failpoint

FORMAT_VERSION = b"1"
MEMTABLE_BYTES = 16 << 20
MAX_MEMTABLES = 3
BLOCK_CACHE_BYTES = 8 << 20

META_KEY = b"\x01m"
MEMBERSHIP_KEY = b"\x01c"
CLUSTER_TIME_KEY = b"\x01t"
VERSION_KEY = b"\x01v"
HISTORY_PREFIX = b"\x02"
NAMESPACE_PREFIX = b"\x03"
NODES_BEGIN, NODES_END = b"/", b"0"

_META = struct.Struct(f"<QQQ{len(STATS_FIELDS)}q")
_SLOT = struct.Struct(">H")
_I64 = struct.Struct("<q")
_SLOT_KEYS = [HISTORY_PREFIX + _SLOT.pack(i) for i in range(HISTORY_CAPACITY)]


class BackendError(Exception):
    """The database is not a fastkv backend, or its records are damaged."""


class BackendMeta(NamedTuple):
    applied_index: int
    applied_term: int
    etcd_index: int
    membership: bytes | None
    cluster_time_ns: int = 0


class Batch:
    """One apply round, ready for ``Backend.write``."""

    __slots__ = ("wb", "applied_index", "applied_term", "etcd_index", "membership", "cluster_time_ns")

    def __init__(
        self,
        wb: WriteBatch,
        applied_index: int,
        applied_term: int,
        etcd_index: int,
        membership: bytes | None,
        cluster_time_ns: int | None = None,
    ) -> None:
        self.wb = wb
        self.applied_index = applied_index
        self.applied_term = applied_term
        self.etcd_index = etcd_index
        self.membership = membership
        self.cluster_time_ns = cluster_time_ns

    def __len__(self) -> int:
        return len(self.wb)


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    # Small memtables: they bound both the RAM RocksDB adds and the log replayed after kill -9.
    opts.set_write_buffer_size(MEMTABLE_BYTES)
    opts.set_max_write_buffer_number(MAX_MEMTABLES)
    # A vector memtable: an insert is an append (~0.1 us against ~2 us for the skip list at 100k random
    # keys), and rocksdict holds the GIL while it inserts, so this is time the event loop gets back.
    # Sorting moves to the background flush.  Lookups in an unsorted memtable are slow, but the
    # database is only read right after it is opened, when the memtable is empty (no RocksDB WAL).
    opts.set_memtable_factory(MemtableFactory.vector())
    opts.set_allow_concurrent_memtable_write(False)
    opts.set_max_background_jobs(2)
    opts.set_compression_type(DBCompressionType.lz4())
    opts.set_level_compaction_dynamic_level_bytes(True)
    opts.set_keep_log_file_num(2)
    opts.set_max_log_file_size(1 << 20)
    table = BlockBasedOptions()
    # The database is read once, sequentially, at startup: big blocks, a small cache.
    table.set_block_size(32 << 10)
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    opts.set_block_based_table_factory(table)
    return opts


def _namespace_prefix(name: str) -> bytes:
    return NAMESPACE_PREFIX + name.encode()


def _put_removals(wb: WriteBatch, removed: list[tuple[str, bool]], prefix: bytes = b"") -> None:
    for path, was_dir in removed:
        if path != "/":
            wb.delete(prefix + node_key(path))
        if was_dir:
            begin, end = _path_key_range(path)
            wb.delete_range(prefix + begin, prefix + end)


def _path_key_range(path: str) -> tuple[bytes, bytes]:
    """The key range of the subtree below ``path`` (its children and their descendants)."""
    if path == "/":
        return NODES_BEGIN, NODES_END
    prefix = node_key(path)[:-1]
    return prefix + b"/", prefix + b"0"


class Backend:
    __slots__ = ("path", "_db", "_wopts", "_meta")

    def __init__(self, path: str, db: Rdict) -> None:
        self.path = path
        self._db = db
        self._wopts = WriteOptions()
        self._wopts.disable_wal = True  # type: ignore[assignment,method-assign]  # a property at runtime
        self._meta = self._read_meta()

    @classmethod
    def open(cls, path: str) -> Backend:
        """Open (or create) the database at ``path``; a checkpoint directory opens the same way."""
        os.makedirs(path, mode=0o700, exist_ok=True)
        db = Rdict(path, _options())
        version = db.get(VERSION_KEY)
        if version is None:
            if db.get(META_KEY) is not None:
                db.close()
                raise BackendError(f"{path}: no format version")
            db.put(VERSION_KEY, FORMAT_VERSION)
            db.flush()
        elif version != FORMAT_VERSION:
            db.close()
            raise BackendError(f"{path}: format version {version!r}, this fastkv reads {FORMAT_VERSION!r}")
        return cls(path, db)

    def _read_meta(self) -> BackendMeta:
        raw = self._db.get(META_KEY)
        membership = self._db.get(MEMBERSHIP_KEY)
        raw_time = self._db.get(CLUSTER_TIME_KEY)
        cluster_time = _I64.unpack(raw_time)[0] if raw_time is not None and len(raw_time) == _I64.size else 0
        if raw is None:
            return BackendMeta(0, 0, 0, membership, cluster_time)
        if len(raw) != _META.size:
            raise BackendError(f"{self.path}: meta record of {len(raw)} bytes")
        applied_index, applied_term, etcd_index = _META.unpack(raw)[:3]
        return BackendMeta(applied_index, applied_term, etcd_index, membership, cluster_time)

    def applied_index(self) -> int:
        """The index of the last entry whose round was written (durable only after ``flush``)."""
        return self._meta.applied_index

    def meta(self) -> BackendMeta:
        return self._meta

    # ----- writing ------------------------------------------------------------------------------------

    def prepare(
        self,
        changes: Changes,
        applied_index: int,
        applied_term: int,
        membership: bytes | None = None,
        cluster_time_ns: int | None = None,
    ) -> Batch:
        """Encode one apply round (on the event loop, before the store changes again).
        ``cluster_time_ns``: the applied state's cluster time, when the round moved it."""
        wb = WriteBatch(raw_mode=True)
        if changes.removed:
            _put_removals(wb, changes.removed)
        if changes.nodes:
            put_nodes(wb.put, changes.nodes, changes.ttl_live)
        if changes.namespaces:
            for name, ns in changes.namespaces.items():
                prefix = _namespace_prefix(name)
                _put_removals(wb, ns.removed, prefix)
                put_nodes(wb.put, ns.nodes, ns.ttl_live, prefix)
        events = changes.events
        if events:
            if len(events) > HISTORY_CAPACITY:
                events = events[-HISTORY_CAPACITY:]
            put_events(wb.put, events, _SLOT_KEYS)
        wb.put(META_KEY, _META.pack(applied_index, applied_term, changes.index, *changes.stats))
        if membership is not None:
            wb.put(MEMBERSHIP_KEY, membership)
        if cluster_time_ns is not None:
            wb.put(CLUSTER_TIME_KEY, _I64.pack(cluster_time_ns))
        return Batch(wb, applied_index, applied_term, changes.index, membership, cluster_time_ns)

    def write(self, batch: Batch) -> None:
        """Apply a prepared round (on the writer thread; unsynced: see ``flush``).  A batch is
        consumed even when the write fails, so a refused round cannot be written again; after a
        failure for space the server writes the whole state instead (``reopen`` first)."""
        failpoint.hit("backend_write")
        self._db.write(batch.wb, self._wopts)
        meta = self._meta
        membership = batch.membership if batch.membership is not None else meta.membership
        cluster_time = batch.cluster_time_ns if batch.cluster_time_ns is not None else meta.cluster_time_ns
        self._meta = BackendMeta(
            batch.applied_index, batch.applied_term, batch.etcd_index, membership, cluster_time
        )

    def flush(self) -> None:
        """Make every written round durable (memtables to synced SST files)."""
        self._db.flush(True)

    def flush_soon(self) -> None:
        """Start writing the memtables out in RocksDB's background and return at once (writes go
        on meanwhile), so that a ``flush`` soon after has little left to do."""
        self._db.flush(False)

    def checkpoint(self, dir: str) -> None:
        """A consistent copy in ``dir`` (must not exist): hard links to the table files, after a flush.
        ``Backend.open(dir)`` opens it."""
        Checkpoint(self._db).create_checkpoint(dir)

    def close(self) -> None:
        self._db.flush(True)
        self._db.close()

    def reopen(self) -> None:
        """Close the database without flushing and open it again: RocksDB refuses every write after
        a background flush failed (for space, say) until it is reopened.  Rounds not yet flushed
        are lost, as in a crash: the caller then writes the whole applied state (the WAL holds every
        round since the last flush anyway).  Raises if it cannot be opened (the disk is still
        full); it may be called again."""
        try:
            self._db.close()
        except Exception:  # noqa: BLE001 - closing what failed; opening again is what matters
            pass
        self._db = Rdict(self.path, _options())
        self._meta = self._read_meta()

    # ----- loading ------------------------------------------------------------------------------------

    def load_store(self) -> Store:
        """The v2 store as of ``applied_index()``: tree, TTL heap, etcd index, stats, last 1000 events."""
        ropts = ReadOptions()
        ropts.set_readahead_size(2 << 20)
        ropts.fill_cache(False)  # type: ignore[call-arg]  # the stub lacks the flag
        store = Store()
        try:
            _, ttl = load_nodes(store.tree, self._db.items(from_key=NODES_BEGIN, read_opt=ropts))
        except ValueError as err:
            raise BackendError(f"{self.path}: {err}") from None
        ttl.sort(key=_first)
        push = store.ttl.push
        for _, node in ttl:
            push(node)
        for name, ns in store.namespaces.items():
            prefix = _namespace_prefix(name)
            try:
                _, ttl = load_nodes(
                    ns.tree, self._db.items(from_key=prefix + NODES_BEGIN, read_opt=ropts), prefix
                )
            except ValueError as err:
                raise BackendError(f"{self.path}: namespace {name}: {err}") from None
            ttl.sort(key=_first)
            for _, node in ttl:
                ns.ttl.push(node)

        raw = self._db.get(META_KEY)
        if raw is not None:
            values = _META.unpack(raw)
            store.index = values[2]
            store.stats = Stats.from_list(list(values[3:]))
            for ns in store.namespaces.values():
                ns.index = store.index
                ns.stats = store.stats
        oldest = store.index - HISTORY_CAPACITY
        events = []
        for key, rec in self._db.items(from_key=HISTORY_PREFIX, read_opt=ropts):
            if bytes(key)[:1] != HISTORY_PREFIX:  # type: ignore[arg-type]
                break
            e = decode_event(rec)
            if oldest < e.node.modified_index <= store.index:
                events.append(e)
        events.sort(key=_event_index)
        add = store.history.add
        for e in events:
            add(e)
        store.mark_clean()
        return store


def _first(item: tuple[int, object]) -> int:
    return item[0]


def _event_index(e: object) -> int:
    return e.node.modified_index  # type: ignore[attr-defined]
