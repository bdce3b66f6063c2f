"""WAL append throughput: the Cython writer against the pure-Python writer, batch sizes 1 to 1000.

Each writer appends batches of entries (100-byte payloads) to a preallocated file and makes
each batch durable with one fdatasync, exactly what ``WAL.save`` does per group commit:

- cython: ``fastkv._native.walcodec.Encoder`` frames the records (CRC32C in C, SSE4.2 when
  present) and ``Encoder.write`` + ``datasync`` run with the GIL released;
- python: the readable twin in tests/twins/walcodec.py (struct framing, table CRC32C in
  Python) + ``os.pwrite`` + ``os.fdatasync``.

Both are also timed without the fdatasync ("encode+write"), which isolates the CPU cost that
competes with request handling on the event loop's core.

    python -m bench.wal_append [--seconds 2] [--sizes 1,10,100,1000]

Writes bench/results/wal_append.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.twins import walcodec as twin  # noqa: E402

from fastkv._native import walcodec  # noqa: E402
from fastkv.raft.types import Entry  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PAYLOAD = b"v" * 100
FILE_BYTES = 1 << 30


def run(writer: str, batch: int, seconds: float, sync: bool) -> dict[str, float]:
    fd, path = tempfile.mkstemp(prefix="walbench-", dir=os.environ.get("FASTKV_BENCH_DIR"))
    try:
        os.posix_fallocate(fd, 0, FILE_BYTES)
        os.fsync(fd)
        enc = walcodec.Encoder(0) if writer == "cython" else twin.Encoder(0)
        offset = 0
        index = 0
        n_entries = n_bytes = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            entries = [Entry(1, index + i + 1, 0, PAYLOAD) for i in range(batch)]
            index += batch
            enc.add_entries(entries)
            size = len(enc)
            if offset + size > FILE_BYTES:
                offset = 0
            if writer == "cython":
                enc.write(fd, offset)
                if sync:
                    walcodec.datasync(fd)
            else:
                os.pwrite(fd, enc.getvalue(), offset)
                if sync:
                    os.fdatasync(fd)
            enc.clear()
            offset += size
            n_entries += batch
            n_bytes += size
        elapsed = time.perf_counter() - t0
        return {"entries_per_s": n_entries / elapsed, "mb_per_s": n_bytes / elapsed / 1e6}
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="1,10,100,1000")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "wal_append.json"))
    args = ap.parse_args()
    results: list[dict[str, object]] = []
    print(f"{'batch':>6} {'mode':>13} {'writer':>7} {'entries/s':>12} {'MB/s':>8}")
    for batch in (int(s) for s in args.sizes.split(",")):
        for sync in (True, False):
            row: dict[str, object] = {"batch": batch, "fdatasync": sync}
            for writer in ("cython", "python"):
                r = run(writer, batch, args.seconds, sync)
                row[writer] = r
                mode = "fdatasync" if sync else "encode+write"
                print(f"{batch:>6} {mode:>13} {writer:>7} {r['entries_per_s']:>12,.0f} {r['mb_per_s']:>8.1f}")
            c, p = row["cython"], row["python"]
            row["speedup"] = c["entries_per_s"] / p["entries_per_s"]  # type: ignore[index]
            results.append(row)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "payload_bytes": 100,
                "results": results,
            },
            f,
            indent=2,
        )
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
