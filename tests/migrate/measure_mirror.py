"""Time the online path on a large etcd: ``python -m tests.migrate.measure_mirror --keys 100000``.

Fills a real etcd 3.4 with ``--keys`` keys of 100-byte values (as tests/migrate/measure.py), starts a
fresh fastkv cluster of ``--members`` members and times:

- ``fastkvctl mirror``'s copy (the listing, the batches, the index jump), from its own report line;
- following: ``--follow-keys`` more writes into etcd at full speed (32 connections) while the mirror
  runs, then how long after the last write the mirror reports "0 events behind (in sync)", and the
  largest lag it reported meanwhile;
- ``--finish`` after ``--catchup-keys`` writes made while the mirror was stopped (fewer than etcd's
  1000-event history): the catch-up from etcd's history and the cut-over, end to end.

Then it compares the recursive GET of ``/`` (sorted) of etcd and fastkv byte for byte, and their
X-Etcd-Index, and counts the keys.  Prints one JSON object.  Not a test: it takes minutes;
docs/migration.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from tests.migrate.etcdhistory import count_nodes
from tests.migrate.etcdhistory import http as http_call
from tests.migrate.measure import fill
from tests.support.procs import start_cluster, start_server

LAG = re.compile(rb"source index (\d+), applied index (\d+), (\d+) events behind, ([\d.]+) s behind")


def fill_more(url: str, first: int, count: int) -> None:
    """``count`` more keys under /more, like ``fill``."""
    import http.client
    import urllib.parse

    host = urllib.parse.urlsplit(url).netloc

    def worker(start: int) -> None:
        conn = http.client.HTTPConnection(host, timeout=30)
        for i in range(start, count, 32):
            conn.request(
                "PUT", f"/v2/keys/more/{(first + i) // 1000:05d}/{first + i:08d}",
                urllib.parse.urlencode({"value": "m" * 100}),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            r = conn.getresponse()
            r.read()
        conn.close()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--follow-keys", type=int, default=10000)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--catchup-keys", type=int, default=900, help="written while the mirror is stopped")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="mirror-measure-")
    result: dict[str, object] = {
        "keys": args.keys,
        "follow_keys": args.follow_keys,
        "catchup_keys": args.catchup_keys,
        "members": args.members,
    }
    etcd = dest = None
    try:
        os.makedirs(os.path.join(base, "etcd"))
        etcd = start_server("etcd", data_dir=os.path.join(base, "etcd"), name="e1")
        t0 = time.monotonic()
        fill(etcd.url, args.keys)
        result["etcd_fill_s"] = round(time.monotonic() - t0, 1)
        dest = start_cluster("fastkv", args.members, base_dir=os.path.join(base, "fastkv"))
        endpoints = ",".join(m.url for m in dest)
        argv = [
            sys.executable,
            "-m",
            "fastkv.cli.main",
            "--endpoints",
            endpoints,
            "mirror",
            "--from",
            etcd.url,
        ]
        argv += ["--report-interval", "0.2s", "--resync-interval", "1s"]
        log_path = os.path.join(base, "mirror.out")
        t0 = time.monotonic()
        with open(log_path, "wb") as out:
            mirror = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

        def log() -> bytes:
            with open(log_path, "rb") as f:
                return f.read()

        while b"mirror: copied" not in log():
            if mirror.poll() is not None:
                raise RuntimeError(log().decode())
            time.sleep(0.05)
        result["copy_wall_s"] = round(time.monotonic() - t0, 2)
        copied = re.search(rb"copied (\d+) nodes put.* in ([\d.]+)s", log())
        assert copied is not None
        result["copy_nodes"] = int(copied.group(1))
        result["copy_reported_s"] = float(copied.group(2))

        start_len = len(log())
        t0 = time.monotonic()
        fill_more(etcd.url, 0, args.follow_keys)
        written = time.monotonic()
        result["follow_writes_s"] = round(written - t0, 2)
        _, headers, _ = http_call("GET", etcd.url + "/v2/keys/")
        target = int(headers["X-Etcd-Index"])
        pattern = re.compile(
            rb"source index %d, applied index %d, 0 events behind.*\(in sync\)" % (target, target)
        )
        while not pattern.search(log()[start_len:]):
            if mirror.poll() is not None or time.monotonic() - written > 600:
                raise RuntimeError(log()[-3000:].decode())
            time.sleep(0.05)
        result["follow_caught_up_after_last_write_s"] = round(time.monotonic() - written, 2)
        lags = [m for m in LAG.finditer(log()[start_len:])]
        result["follow_max_events_behind"] = max(int(m.group(3)) for m in lags)
        result["follow_max_seconds_behind"] = max(float(m.group(4)) for m in lags)
        mirror.send_signal(signal.SIGINT)
        mirror.wait(30)
        # Interrupted: more writes meanwhile, which --finish catches up from etcd's history.
        fill_more(etcd.url, args.follow_keys, args.catchup_keys)

        t0 = time.monotonic()
        done = subprocess.run([*argv, "--finish"], capture_output=True, check=True)
        result["finish_s"] = round(time.monotonic() - t0, 2)
        assert b"mirror: finished" in done.stdout, done.stdout

        _, eh, etree = http_call("GET", etcd.url + "/v2/keys/?recursive=true&sorted=true")
        _, fh, ftree = http_call("GET", dest[0].url + "/v2/keys/?recursive=true&sorted=true")
        result["etcd_index"] = int(eh["X-Etcd-Index"])
        result["fastkv_index"] = int(fh["X-Etcd-Index"])
        result["etcd_nodes"] = count_nodes(json.loads(etree)["node"])
        result["fastkv_nodes"] = count_nodes(json.loads(ftree)["node"])
        result["same_tree_bytes"] = etree == ftree
        result["tree_bytes"] = len(etree)
    finally:
        for m in dest or []:
            m.stop()
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
