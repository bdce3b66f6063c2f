"""Recovery benchmark: fill N keys through Store + Backend, then time a restart (open + load_store).

    .venv/bin/python -m bench.recovery [--keys 1000000] [--value-size 100] [--batch 1000] [--dir DIR]

The fill runs in one process and the load in a fresh one, so the load's RSS is what a restarted member
holds: resident bytes after load minus the interpreter's RSS before it, divided by the key count.
Prints one JSON object.  Keys are /k/<dir>/<key>: 1000 keys per directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

NOW = 1_795_218_935 * 1_000_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill(path: str, keys: int, value_size: int, batch: int) -> dict:
    from fastkv.storage.backend import Backend
    from fastkv.v2store.request import V2Request
    from fastkv.v2store.store import Store

    store = Store()
    backend = Backend.open(path)
    # Incompressible values (RocksDB compresses its blocks): windows of one random pool.
    pool = random.Random(7).randbytes(65536 + value_size).hex()
    apply_s = prepare_s = write_s = 0.0
    t_start = time.perf_counter()
    for applied, start in enumerate(range(0, keys, batch), start=1):
        t0 = time.perf_counter()
        for i in range(start, min(start + batch, keys)):
            value = pool[(i * 7919) % 65536 :][:value_size]
            store.apply(V2Request("PUT", f"/k/{i // 1000:05d}/{i:08d}", value=value), NOW)
        t1 = time.perf_counter()
        b = backend.prepare(store.take_changes(), applied, 1, b"members" if applied == 1 else None)
        t2 = time.perf_counter()
        backend.write(b)
        t3 = time.perf_counter()
        apply_s += t1 - t0
        prepare_s += t2 - t1
        write_s += t3 - t2
    t0 = time.perf_counter()
    backend.close()
    close_s = time.perf_counter() - t0
    return {
        "fill_s": round(time.perf_counter() - t_start, 3),
        "apply_us_per_key": round(apply_s / keys * 1e6, 3),
        "prepare_us_per_key": round(prepare_s / keys * 1e6, 3),
        "write_us_per_key": round(write_s / keys * 1e6, 3),
        "final_flush_s": round(close_s, 3),
        "fill_rss_mb": round(rss_bytes() / 2**20, 1),
    }


def load(path: str) -> dict:
    import gc

    from fastkv.storage.backend import Backend

    gc.collect()
    base = rss_bytes()
    t0 = time.perf_counter()
    backend = Backend.open(path)
    t1 = time.perf_counter()
    store = backend.load_store()
    t2 = time.perf_counter()
    n = len(store.tree.subtree(store.tree.root)) - 1
    rss = rss_bytes()
    assert store.get("/k/00000/00000000", False, False, NOW).node.value is not None
    return {
        "open_s": round(t1 - t0, 3),
        "load_store_s": round(t2 - t1, 3),
        "restart_s": round(t2 - t0, 3),
        "nodes": n,
        "etcd_index": store.index,
        "rss_mb": round(rss / 2**20, 1),
        "rss_bytes_per_node": round((rss - base) / n, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--phase", choices=["all", "fill", "load"], default="all")
    args = ap.parse_args()
    if args.phase == "fill":
        print(json.dumps(fill(args.dir, args.keys, args.value_size, args.batch)))
        return
    if args.phase == "load":
        print(json.dumps(load(args.dir)))
        return
    root = tempfile.mkdtemp(prefix="fastkv-recovery-", dir=args.dir)
    path = os.path.join(root, "db")
    try:
        common = [sys.executable, "-m", "bench.recovery", "--dir", path]
        sizes = ["--keys", str(args.keys), "--value-size", str(args.value_size), "--batch", str(args.batch)]
        out = subprocess.run([*common, "--phase", "fill", *sizes], capture_output=True, text=True, check=True)
        result = {"keys": args.keys, "value_size": args.value_size, "batch": args.batch}
        result |= json.loads(out.stdout)
        out = subprocess.run([*common, "--phase", "load"], capture_output=True, text=True, check=True)
        result |= json.loads(out.stdout)
        du = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True)
        result["db_mb"] = round(int(du.stdout.split()[0]) / 2**20, 1)
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
