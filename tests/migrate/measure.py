"""Time a migration of a large etcd data dir: ``python -m tests.migrate.measure --keys 100000``.

Fills a real etcd 3.4 (its default flags: one snapshot every 100000 entries, so both a snapshot and a
WAL tail are read for 100k keys) with ``--keys`` keys of 100-byte values in directories of 1000,
records its recursive GET, stops it, runs ``fastkvctl migrate`` and times the decode and the write,
starts fastkv on the result and compares the recursive GET byte for byte (ttl fields aside; there are
none here) and the indexes.  The online path has its own script, tests/migrate/measure_mirror.py.  Prints one JSON object.  Not a test: it takes minutes; docs/migration.md has the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from fastkv.migrate.datadir import read_data_dir
from fastkv.migrate.writer import write_data_dir
from tests.migrate.etcdhistory import http as http_call
from tests.support.procs import start_server


def fill(url: str, keys: int, threads: int = 32) -> None:
    host = urllib.parse.urlsplit(url).netloc
    value = "v" * 100
    errors: list[str] = []

    def worker(first: int) -> None:
        conn = http.client.HTTPConnection(host, timeout=30)
        for i in range(first, keys, threads):
            body = urllib.parse.urlencode({"value": value})
            conn.request(
                "PUT", f"/v2/keys/k/{i // 1000:05d}/{i:08d}", body,
                {"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            r = conn.getresponse()
            r.read()
            if r.status not in (200, 201):
                errors.append(f"{i}: {r.status}")
        conn.close()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(f"{len(errors)} writes failed, first: {errors[0]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--snapshot-count", type=int, default=100000, help="etcd's flag (its default)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="migrate-measure-")
    result: dict[str, object] = {"keys": args.keys, "snapshot_count": args.snapshot_count}
    try:
        os.makedirs(os.path.join(base, "etcd"))
        extra = ["--snapshot-count", str(args.snapshot_count)]
        etcd = start_server("etcd", data_dir=os.path.join(base, "etcd"), name="e1", extra=extra)
        try:
            t0 = time.monotonic()
            fill(etcd.url, args.keys)
            result["etcd_fill_s"] = round(time.monotonic() - t0, 1)
            _, headers, tree = http_call("GET", etcd.url + "/v2/keys/?recursive=true&sorted=true")
        finally:
            etcd.stop()
        source = os.path.join(base, "etcd", "data")
        result["etcd_data_dir_mb"] = round(
            sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(source) for f in fs) / 1e6, 1
        )

        t0 = time.monotonic()
        state = read_data_dir(source)
        result["decode_s"] = round(time.monotonic() - t0, 2)
        result["snapshot_index"] = state.snapshot_index
        result["replayed_entries"] = state.replayed_entries
        t0 = time.monotonic()
        write_data_dir(state, os.path.join(base, "in-process"), "e1")
        result["write_s"] = round(time.monotonic() - t0, 2)
        del state

        target = os.path.join(base, "fastkv", "data")
        os.makedirs(os.path.dirname(target))
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "fastkv.cli.main", "migrate", "--from-etcd-data-dir", source,
             "--data-dir", target],
            check=True, capture_output=True,
        )  # fmt: skip
        result["fastkvctl_migrate_s"] = round(time.monotonic() - t0, 2)

        t0 = time.monotonic()
        srv = start_server("fastkv", data_dir=os.path.join(base, "fastkv"), name="e1", timeout=120)
        result["fastkv_start_s"] = round(time.monotonic() - t0, 2)
        try:
            _, fheaders, ftree = http_call("GET", srv.url + "/v2/keys/?recursive=true&sorted=true")
        finally:
            srv.stop()
        result["etcd_index"] = int(headers["X-Etcd-Index"])
        # fastkv's start publishes the member's attributes, taking one index as a restarted etcd does.
        result["fastkv_index"] = int(fheaders["X-Etcd-Index"])
        result["same_tree_bytes"] = tree == ftree
        result["tree_bytes"] = len(tree)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
