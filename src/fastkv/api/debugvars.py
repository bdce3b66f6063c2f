"""``GET /debug/vars``: the expvar page etcd 3.4 serves on its client URLs (not on metrics URLs).

Go's expvar handler writes ``{``, then every published variable as ``"name": <json>`` in name order,
joined by ``,\\n``, then ``}``.  etcd publishes four:

- ``cmdline``: the process's arguments (here ``sys.argv``: the program, then the flags);
- ``file_descriptor_limit``: the soft RLIMIT_NOFILE;
- ``memstats``: Go's runtime.MemStats.  Every field is present, with this process's value where Python
  has one (resident memory from /proc, the allocator's block count, the collector's counters) and 0, or
  an empty list, where Go's allocator has a notion CPython does not expose (size classes, pause
  history, malloc counts); the mapping is in ``_memstats``;
- ``raft.status``: the Raft node's status as etcd's raft.Status marshals it (ids in hex).

Only GET is served (405 with ``Allow: GET`` otherwise), as etcd's mux entry for expvar.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

from ..server.interface import V2Server
from .response import METHOD_NOT_ALLOWED_BODY, PLAIN_ERROR_HEADERS, go_json

ALLOW_GET = b"Allow: GET\r\n"
CONTENT_TYPE = b"Content-Type: application/json; charset=utf-8\r\n"
# Go's MemStats keeps the last 256 pause times and ends.
_PAUSE_SLOTS = 256
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_status() -> dict[str, int]:
    """/proc/self/status sizes in bytes (kB lines), empty where there is no /proc."""
    sizes: dict[str, int] = {}
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                name, _, rest = line.partition(b":")
                fields = rest.split()
                if len(fields) == 2 and fields[1] == b"kB" and fields[0].isdigit():
                    sizes[name.decode()] = int(fields[0]) * 1024
    except OSError:
        pass
    return sizes


def _memstats() -> dict[str, Any]:
    """runtime.MemStats's fields, in Go's order, filled from what CPython and Linux tell."""
    status = _proc_status()
    rss = status.get("VmRSS", 0)
    anon = status.get("RssAnon", rss)
    stack = status.get("VmStk", 0)
    collections = sum(s.get("collections", 0) for s in gc.get_stats())
    return {
        # Heap: the process's anonymous resident memory (CPython's arenas and malloc'd blocks).
        "Alloc": anon,
        "TotalAlloc": 0,
        # Everything resident.
        "Sys": rss,
        "Lookups": 0,
        "Mallocs": 0,
        "Frees": 0,
        "HeapAlloc": anon,
        "HeapSys": anon,
        "HeapIdle": 0,
        "HeapInuse": anon,
        "HeapReleased": 0,
        # Blocks CPython's allocator holds now.
        "HeapObjects": sys.getallocatedblocks(),
        "StackInuse": stack,
        "StackSys": stack,
        "MSpanInuse": 0,
        "MSpanSys": 0,
        "MCacheInuse": 0,
        "MCacheSys": 0,
        "BuckHashSys": 0,
        "GCSys": 0,
        "OtherSys": max(0, rss - anon - stack),
        "NextGC": 0,
        "LastGC": 0,
        "PauseTotalNs": 0,
        "PauseNs": [0] * _PAUSE_SLOTS,
        "PauseEnd": [0] * _PAUSE_SLOTS,
        # Collections of every generation by CPython's cycle collector.
        "NumGC": collections,
        "NumForcedGC": 0,
        "GCCPUFraction": 0,
        "EnableGC": gc.isenabled(),
        "DebugGC": gc.get_debug() != 0,
        "BySize": [],
    }


def raft_status_json(status: dict[str, Any]) -> bytes:
    """etcd's raft.Status MarshalJSON: ids as hex strings, ``progress`` empty off the leader."""
    progress = status.get("progress") or {}
    parts = [
        b'{"id":"%x","term":%d,"vote":"%x","commit":%d,"lead":"%x","raftState":"%s","applied":%d,"progress":{'
        % (
            status["id"],
            status["term"],
            status["vote"],
            status["commit"],
            status["lead"],
            str(status["state"]).encode(),
            status["applied"],
        ),
        b",".join(
            b'"%x":{"match":%d,"next":%d,"state":"%s"}'
            % (member, p["match"], p["next"], str(p["state"]).encode())
            for member, p in progress.items()
        ),
        b'},"leadtransferee":"%x"}' % status.get("lead_transferee", 0),
    ]
    return b"".join(parts)


def debug_vars_body(server: V2Server) -> bytes:
    variables: list[tuple[str, bytes]] = [
        ("cmdline", go_json(sys.argv)),
        ("file_descriptor_limit", b"%d" % resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
        ("memstats", go_json(_memstats())),
        ("raft.status", raft_status_json(server.raft_status())),
    ]
    lines = b",\n".join(go_json(name) + b": " + value for name, value in sorted(variables))
    return b"{\n" + lines + b"\n}\n"


def serve_debug_vars(server: V2Server, reply: Callable[..., None], method: str) -> None:
    if method != "GET":
        return reply(405, ALLOW_GET + PLAIN_ERROR_HEADERS, METHOD_NOT_ALLOWED_BODY)
    reply(200, CONTENT_TYPE, debug_vars_body(server))
