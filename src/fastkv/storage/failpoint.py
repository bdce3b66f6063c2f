"""Named crash points for crash-recovery tests.

``hit(name)`` does nothing unless the environment variable FASTKV_FAILPOINTS (read once,
at import) lists ``name``: a comma-separated list of ``name`` (the process SIGKILLs
itself, exactly like ``kill -9``: no atexit handlers, no flushing) or ``name=exit`` (the
process ends with ``os._exit(99)``).  Unarmed, a hit costs one set lookup.

Points in the WAL: ``before_wal_write`` (nothing of the batch written), ``after_wal_write``
(written, not yet fdatasynced), ``after_wal_sync`` (durable, save() not yet returned),
``wal_segment_cut`` (a new segment renamed into place, the directory not yet fsynced).
Points in the server: ``before_apply`` (entries durable and committed, none of the batch
applied or acknowledged), ``during_snapshot`` (snapshot file written, WAL marker not yet).
"""

from __future__ import annotations

import os
import signal

EXIT_STATUS = 99


def _parse(spec: str) -> dict[str, str]:
    armed = {}
    for item in spec.split(","):
        name, _, action = item.strip().partition("=")
        if name:
            armed[name] = action or "kill"
    return armed


_armed: dict[str, str] = _parse(os.environ.get("FASTKV_FAILPOINTS", ""))


def hit(name: str) -> None:
    if not _armed:
        return
    action = _armed.get(name)
    if action is None:
        return
    if action == "exit":
        os._exit(EXIT_STATUS)
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(EXIT_STATUS)  # unreachable unless SIGKILL is somehow not delivered at once


def arm(spec: str) -> None:
    """Replaces the armed points (for in-process tests; processes use the environment)."""
    global _armed
    _armed = _parse(spec)
