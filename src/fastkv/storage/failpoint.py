"""Named crash points for crash-recovery tests.

``hit(name)`` does nothing unless the environment variable FASTKV_FAILPOINTS (read once,
at import) lists ``name``: a comma-separated list of ``name`` (the process SIGKILLs
itself, exactly like ``kill -9``: no atexit handlers, no flushing) or ``name=exit`` (the
process ends with ``os._exit(99)``) or ``name=enospc`` (the point raises
``OSError(ENOSPC)``, "No space left on device", instead of going on: a full disk);
``name@N`` (or ``name=exit@N``) fires only at the
N-th hit, so a crash can be placed in the middle of a workload.  Unarmed, a hit costs one
dict lookup.

Points in the WAL: ``before_wal_write`` (nothing of the batch written), ``after_wal_write``
(written, not yet fdatasynced), ``after_wal_sync`` (durable, save() not yet returned),
``wal_segment_cut`` (a new segment renamed into place, the directory not yet fsynced).
Points in the server: ``before_apply`` (entries durable and committed, none of the batch
applied or acknowledged), ``during_snapshot`` (snapshot file written, WAL marker not yet),
``before_snapshot_install`` (a leader's snapshot received, nothing of it unpacked yet).
In the backend: ``backend_write`` (an apply round's RocksDB batch, before it is written).

An ``enospc`` point fires at every hit from the N-th on, not once: a disk stays full.  When
FASTKV_FAILPOINT_NOSPACE_FILE names a file, it fires only while that file exists, so a test
fills the disk by creating the file and frees it by deleting it, without a restart.
"""

from __future__ import annotations

import errno
import os
import signal

EXIT_STATUS = 99


def _parse(spec: str) -> dict[str, list]:
    """name -> [action, hits left before firing]."""
    armed: dict[str, list] = {}
    for item in spec.split(","):
        item, _, nth = item.strip().partition("@")
        name, _, action = item.partition("=")
        if name:
            armed[name] = [action or "kill", int(nth) if nth else 1]
    return armed


_armed: dict[str, list] = _parse(os.environ.get("FASTKV_FAILPOINTS", ""))
# While set, ``enospc`` points fire only while this file exists.
_nospace_file: str | None = os.environ.get("FASTKV_FAILPOINT_NOSPACE_FILE") or None


def hit(name: str) -> None:
    if not _armed:
        return
    point = _armed.get(name)
    if point is None:
        return
    if point[1] > 1:
        point[1] -= 1
        return
    if point[0] == "enospc":
        if _nospace_file is None or os.path.exists(_nospace_file):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (failpoint {name})")
        return
    point[1] = 0
    if point[0] == "exit":
        os._exit(EXIT_STATUS)
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(EXIT_STATUS)  # unreachable unless SIGKILL is somehow not delivered at once


def arm(spec: str, nospace_file: str | None = None) -> None:
    """Replaces the armed points and the ``enospc`` gate file (for in-process tests; processes use
    the environment)."""
    global _armed, _nospace_file
    _armed = _parse(spec)
    _nospace_file = nospace_file
