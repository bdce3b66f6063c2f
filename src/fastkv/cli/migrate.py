"""``fastkvctl migrate --from-etcd-data-dir D [--from-etcd-wal-dir W] --data-dir F [--name N]``: take
over a stopped etcd member's data dir, offline.

Reads D without changing it (fastkv.migrate.datadir), writes F as the data dir of fastkv member N (by
default the etcd member's own name) all or nothing (fastkv.migrate.writer), then prints what was
migrated.  etcd's /0 (cluster) and /2 (v2 auth: users, roles, the enabled flag) come along as the
store's internal namespaces, so indexes and auth carry over.  Start the member with
``fastkv --name N --data-dir F`` and the etcd member's peer URLs.  A refusal is one ``Error:`` line on stderr and exit status 1; nothing is
written then.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, TextIO

from fastkv.cli import flags as fl

if TYPE_CHECKING:
    from fastkv.migrate.datadir import EtcdState

FLAGS = [
    fl.Flag(("from-etcd-data-dir",), "string", "Path to the stopped etcd member's data dir (read only)"),
    fl.Flag(("from-etcd-wal-dir",), "string", "Path to the etcd member's --wal-dir, if it had one"),
    fl.Flag(("data-dir",), "string", "Path to the new fastkv data dir (must not exist or be empty)"),
    fl.Flag(("name",), "string", "fastkv member name (default: the etcd member's name)"),
]


def _subtree_size(state: EtcdState, prefix: str) -> int:
    try:
        node = state.store.tree.find(prefix)
    except Exception:  # noqa: BLE001 - PathError: the namespace does not exist
        return 0
    return sum(1 for _ in state.store.tree.subtree(node)) - 1


def migrate(flags: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    # Imported here: every other fastkvctl command would pay for loading them.
    from fastkv.migrate.datadir import read_data_dir
    from fastkv.migrate.errors import EtcdDataError
    from fastkv.migrate.v2json import AUTH_PREFIX, CLUSTER_PREFIX
    from fastkv.migrate.writer import TargetError, write_data_dir
    from fastkv.storage.wal import DEFAULT_SEGMENT_SIZE_BYTES

    source, target = flags["from-etcd-data-dir"], flags["data-dir"]
    if not source or not target:
        stderr.write("Error:  --from-etcd-data-dir and --data-dir are required\n")
        return 1
    started = time.monotonic()
    try:
        state = read_data_dir(source, time.time_ns(), flags["from-etcd-wal-dir"] or None)
        me = state.member(state.member_id)
        name = flags["name"] or (me.name if me is not None else "") or "default"
        segment = int(os.environ.get("FASTKV_WAL_SEGMENT_SIZE_BYTES", DEFAULT_SEGMENT_SIZE_BYTES))
        write_data_dir(state, target, name, segment_size_bytes=segment)
    except (EtcdDataError, TargetError) as err:
        stderr.write(f"Error:  {err}\n")
        return 1
    except OSError as err:
        stderr.write(f"Error:  cannot write {target}: {err}\n")
        return 1
    elapsed = time.monotonic() - started
    keys = state.user_key_count()
    out = [
        f"migrated etcd member {state.member_id:x} of cluster {state.cluster_id:x} to {target} as {name!r} "
        f"in {elapsed:.2f}s",
        f"  user keys and dirs: {keys}; store index {state.store_index}; raft applied index "
        f"{state.applied_index} term {state.raft_term}",
        f"  from snapshot at index {state.snapshot_index} + {state.replayed_entries} WAL entries replayed "
        f"({state.failed_requests} refused by the store as in etcd, {state.v3_entries} v3 requests ignored); "
        f"{state.uncommitted_entries} uncommitted entries kept in the Raft log",
        "  members: "
        + ", ".join(f"{m.name or '(unstarted)'}={m.id:x}" for m in state.members)
        + (f"; removed: {', '.join(f'{r:x}' for r in state.removed)}" if state.removed else ""),
    ]
    if state.torn_tail:
        out.append(f"  torn WAL tail ignored: {state.torn_tail}")
    out.append(
        f"  internal namespaces: {_subtree_size(state, CLUSTER_PREFIX)} {CLUSTER_PREFIX} cluster nodes "
        f"(cluster version {state.cluster_version or '-'}), {_subtree_size(state, AUTH_PREFIX)} "
        f"{AUTH_PREFIX} auth nodes (v2 auth {'enabled' if state.v2_auth_enabled else 'disabled'})"
    )
    if any(m.is_learner for m in state.members):
        out.append("  learners become voting members (fastkv has no learners)")
    stdout.write("\n".join(out) + "\n")
    return 0


def action(ctx: Any) -> None:
    """The Command action for fastkv.cli.main (imported there; main's Exit is imported at call time)."""
    code = migrate(ctx.flags, ctx.stdout, ctx.stderr)
    if code:
        from fastkv.cli.main import Exit

        raise Exit(code)
