"""Startup failures are one line on stderr and a non-zero exit, never a traceback; a data
dir survives restarts, snapshots and log compaction."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request

import orjson
import pytest

from fastkv.storage.backend import Backend
from tests.support.procs import fastkv_argv, free_port, start_server
from tests.support.procs import single_member_args as member_args

pytestmark = pytest.mark.slow


def run_fastkv(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    return subprocess.run(fastkv_argv() + args, capture_output=True, text=True, timeout=timeout, env=env)


def single_member_args(data_dir: str, name: str = "default", port: int | None = None) -> list[str]:
    url = f"http://127.0.0.1:{port or free_port()}"
    return member_args(data_dir, name, url, f"http://127.0.0.1:{free_port()}")


def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("fastkv:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_fastkv(single_member_args(str(tmp_path / "d"), port=port))
    assert_one_line_error(r, f"127.0.0.1:{port}", "address already in use")


def test_data_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run_fastkv(single_member_args(str(blocker / "data")))
    assert_one_line_error(r, "cannot access data directory")


def test_data_dir_of_another_member(tmp_path):
    srv = start_server("fastkv", data_dir=str(tmp_path), name="alpha")
    srv.stop()
    r = run_fastkv(single_member_args(str(tmp_path / "data"), name="beta"))
    assert_one_line_error(r, "belongs to member 'alpha'")


def test_data_dir_in_use_by_a_running_member(tmp_path):
    srv = start_server("fastkv", data_dir=str(tmp_path))
    try:
        r = run_fastkv(single_member_args(str(tmp_path / "data")))
        assert_one_line_error(r, "in use by another member process")
    finally:
        srv.stop()


def test_corrupt_wal_refuses_to_start(tmp_path):
    srv = start_server("fastkv", data_dir=str(tmp_path))
    for i in range(20):
        put(srv.url, f"/c/{i}", "x" * 50)
    srv.stop()
    wal_dir = tmp_path / "data" / "member" / "wal"
    seg = sorted(p for p in os.listdir(wal_dir) if p.endswith(".wal"))[0]
    with open(wal_dir / seg, "r+b") as f:
        f.seek(300)
        b = f.read(1)
        f.seek(300)
        f.write(bytes([b[0] ^ 0xFF]))
    r = run_fastkv(srv.argv[len(fastkv_argv()) :])
    assert_one_line_error(r, seg)


def put(url: str, key: str, value: str) -> dict:
    req = urllib.request.Request(url + "/v2/keys" + key, data=f"value={value}".encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return orjson.loads(resp.read())


def get(url: str, key: str) -> dict:
    with urllib.request.urlopen(url + "/v2/keys" + key, timeout=5) as resp:
        return orjson.loads(resp.read())


def test_restart_after_snapshots_and_compaction_keeps_everything(tmp_path):
    srv = start_server("fastkv", data_dir=str(tmp_path), extra=["--snapshot-count", "200"])
    try:
        written = {}
        for i in range(700):
            ev = put(srv.url, f"/s/k{i % 300}", f"v{i}")
            written[f"/s/k{i % 300}"] = (f"v{i}", ev["node"]["modifiedIndex"])
        snap_dir = tmp_path / "data" / "member" / "snap"
        snaps = [s for s in os.listdir(snap_dir) if s.endswith(".snap")]
        assert snaps, os.listdir(snap_dir)
        srv.stop()
        for name in snaps:
            # Each snapshot's checkpoint holds exactly the state at the index in its name.
            db = Backend.open(str(snap_dir / (name + ".db")))
            try:
                assert db.applied_index() == int(name[17:33], 16), name
            finally:
                db.close()
        srv.restart()
        for key, (value, index) in written.items():
            node = get(srv.url, key)["node"]
            assert (node["value"], node["modifiedIndex"]) == (value, index)
        # The store index continues where it stopped, after the member's own write on every start
        # (its attributes under /0, as etcd publishes them).
        ev = put(srv.url, "/s/after", "x")
        assert ev["node"]["modifiedIndex"] == max(i for _, i in written.values()) + 2
    finally:
        srv.stop()


def test_snapshots_under_concurrent_writes_hold_the_state_their_name_says(tmp_path):
    import threading
    import time

    from tests.server.test_crash_recovery import Writer

    srv = start_server("fastkv", data_dir=str(tmp_path), extra=["--snapshot-count", "300"])
    stop = threading.Event()
    writers = [Writer(srv.url, i, stop) for i in range(8)]
    try:
        for w in writers:
            w.start()
        time.sleep(2.0)
    finally:
        stop.set()
        for w in writers:
            w.join(10)
        srv.stop()
    snap_dir = tmp_path / "data" / "member" / "snap"
    snaps = [s for s in os.listdir(snap_dir) if s.endswith(".snap")]
    assert snaps, "no snapshot was taken"
    for name in snaps:
        db = Backend.open(str(snap_dir / (name + ".db")))
        try:
            assert db.applied_index() == int(name[17:33], 16), name
        finally:
            db.close()


def test_restart_after_log_compaction_and_purge(tmp_path):
    srv = start_server(
        "fastkv",
        data_dir=str(tmp_path),
        extra=["--snapshot-count", "100", "--max-snapshots", "2", "--max-wals", "2"],
        env_extra={"FASTKV_SNAPSHOT_CATCH_UP_ENTRIES": "50", "FASTKV_WAL_SEGMENT_SIZE_BYTES": "16384"},
    )
    member = tmp_path / "data" / "member"
    try:
        written = {}
        for i in range(1500):
            ev = put(srv.url, f"/p/k{i % 400}", f"v{i}")
            written[f"/p/k{i % 400}"] = (f"v{i}", ev["node"]["modifiedIndex"])
        srv.stop()
        snaps = sorted(os.listdir(member / "snap"))
        assert len([s for s in snaps if s.endswith(".snap")]) == 2, snaps
        assert len([s for s in snaps if s.endswith(".snap.db")]) == 2, snaps
        wals = [w for w in os.listdir(member / "wal") if w.endswith(".wal")]
        # 1500 writes span dozens of 16 KiB segments; all but the ones after the last
        # compaction point are released.
        assert 2 <= len(wals) <= 4, wals
        srv.restart()
        for key, (value, index) in written.items():
            node = get(srv.url, key)["node"]
            assert (node["value"], node["modifiedIndex"]) == (value, index)
    finally:
        srv.stop()
