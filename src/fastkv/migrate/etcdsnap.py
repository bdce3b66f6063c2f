"""Reading etcd's snapshot files (``member/snap/<term:016x>-<index:016x>.snap``), read-only.

A file is a ``snappb.Snapshot`` {crc, data}: ``crc`` is the CRC-32C (Castagnoli) of ``data``, and
``data`` a ``raftpb.Snapshot`` whose own ``data`` is the v2 store as JSON and whose metadata holds the
Raft index, term and voters at the snapshot.  ``member/snap/db`` beside them is the v3 backend (bbolt);
it is not read, only noticed.

Rules: etcd 3.4 starts from the newest snapshot file that the WAL also records (at or below the WAL's
commit index).  A snapshot file that does not check out (empty, truncated, crc mismatch, name and
contents disagreeing) is refused here rather than skipped: etcd would rename it ``.broken`` and fall
back to an older one, silently starting from older state; a migration must not.  Move it aside by
hand to get etcd's behaviour.
"""

from __future__ import annotations

import os
import re

from .._native.crc32c import crc32c
from .errors import EtcdDataError
from .etcdpb import RaftSnapshot, decode_raft_snapshot, decode_snap_file
from .protowire import WireError

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


def list_snapshots(snap_dir: str) -> list[tuple[int, int, str]]:
    """(term, index, name) of each snapshot file, oldest first."""
    if not os.path.isdir(snap_dir):
        return []
    found = []
    for name in os.listdir(snap_dir):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1), 16), int(m.group(2), 16), name))
    found.sort(key=lambda t: (t[1], t[0]))
    return found


def read_snapshot(path: str, term: int, index: int) -> RaftSnapshot:
    with open(path, "rb") as f:
        buf = f.read()
    if not buf:
        raise EtcdDataError(f"{path}: empty snapshot file")
    try:
        crc, data = decode_snap_file(buf)
    except WireError as e:
        raise EtcdDataError(f"{path}: undecodable snapshot file, truncated or corrupt ({e})") from None
    if not len(data) or crc == 0:
        raise EtcdDataError(f"{path}: snapshot file holds no data")
    if crc32c(data) != crc:
        raise EtcdDataError(
            f"{path}: snapshot crc mismatch (file says {crc:08x}, data gives {crc32c(data):08x})"
        )
    try:
        snap = decode_raft_snapshot(data)
    except WireError as e:
        raise EtcdDataError(f"{path}: undecodable raft snapshot ({e})") from None
    if (snap.term, snap.index) != (term, index):
        raise EtcdDataError(
            f"{path}: holds the snapshot at term {snap.term} index {snap.index}, its name says otherwise"
        )
    return snap
