"""A full disk (ENOSPC) is not fatal: the member raises the NOSPACE alarm, keeps serving reads and
watches, refuses writes with "etcdserver: no space", and takes writes again once space returns,
without a restart.  The disk is "filled" by the ``enospc`` failpoints (storage/failpoint.py), gated
by a file: create it and the WAL (or RocksDB) write path meets ENOSPC, delete it and space is back."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastkv.server.config import parse_config
from fastkv.server.etcdserver import EtcdServer
from fastkv.server.readyloop import NO_SPACE_CAUSE
from fastkv.storage import failpoint
from fastkv.v2store.errors import RAFT_INTERNAL, V2Error
from fastkv.v2store.request import V2Request
from tests.server.test_crash_recovery import Writer, assert_acknowledged_writes_present
from tests.support.procs import free_port, start_server, wait_http_ok


def _args(tmp_path) -> list[str]:
    peer = f"http://127.0.0.1:{free_port()}"
    return [
        "--data-dir", str(tmp_path / "d"),
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"default={peer}",
    ]  # fmt: skip


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _alarm_gauge(srv: EtcdServer) -> float | None:
    """etcd_debugging_server_alarms{server_id=<this member>, alarm_type="NOSPACE"}, or None."""
    for fam in text_string_to_metric_families(srv.metrics_text().decode()):
        for sample in fam.samples:
            if sample.name == "etcd_debugging_server_alarms" and sample.labels == {
                "server_id": f"{srv.member_id:x}",
                "alarm_type": "NOSPACE",
            }:
                return sample.value
    return None


@pytest.fixture
def disk(tmp_path):
    """The gate file: while it exists, the armed enospc points fail."""
    flag = str(tmp_path / "disk-full")
    yield flag
    failpoint.arm("")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("point", ["before_wal_write", "backend_write"])
def test_single_member_survives_a_full_disk(tmp_path, disk, point):
    failpoint.arm(f"{point}=enospc", disk)
    cfg = parse_config(_args(tmp_path), {})
    srv = EtcdServer.open(cfg)

    async def scenario() -> None:
        await srv.start()
        assert _alarm_gauge(srv) is None  # etcd's series appears once an alarm was raised
        ok = await srv.propose(V2Request("PUT", "/a", value="1"))
        assert ok is not None and ok.action == "set"
        seen = []
        srv.watch("/a", False, True, 0, seen.append)

        open(disk, "w").close()  # the disk fills
        pending = srv.propose(V2Request("PUT", "/a", value="2"))
        if point == "before_wal_write":
            # Accepted before the disk was known full: in the log, never acknowledged until durable.
            await _until(lambda: srv.alarms() == ["NOSPACE"])
            await asyncio.sleep(0.2)
            assert not pending.done()
        else:
            # The WAL took it; the applied-state write is what failed: answered, alarm raised.
            assert (await asyncio.wait_for(pending, 5)).node.value == "2"
            await _until(lambda: srv.alarms() == ["NOSPACE"])
        assert not srv.is_healthy()
        with pytest.raises(V2Error) as err:
            await asyncio.wait_for(srv.propose(V2Request("PUT", "/b", value="x")), 5)
        assert err.value.code == RAFT_INTERNAL and err.value.cause == NO_SPACE_CAUSE
        assert srv.fatal_error is None
        # Reads keep working: local and quorum.
        assert srv.get("/a").node.value in ("1", "2")
        q = await asyncio.wait_for(srv.propose(V2Request("GET", "/a", quorum=True)), 5)
        assert q is not None and q.node.value == srv.get("/a").node.value
        assert _alarm_gauge(srv) == 1.0

        os.unlink(disk)  # space returns
        if point == "before_wal_write":
            got = await asyncio.wait_for(pending, 10)
            assert got is not None and got.node.value == "2"
        await _until(lambda: srv.alarms() == [], 10)
        assert srv.is_healthy()
        ok = await asyncio.wait_for(srv.propose(V2Request("PUT", "/b", value="3")), 5)
        assert ok is not None and ok.node.value == "3"
        assert [e.node.value for e in seen] == ["2"]
        assert _alarm_gauge(srv) == 0.0
        await srv.stop()

    asyncio.run(scenario())
    # What was acknowledged is there after a restart; "/b"=x was refused and never applied.
    srv2 = EtcdServer.open(cfg)
    assert srv2.store.get("/a", False, False, 0).node.value == "2"
    b = srv2.store.get("/b", False, False, 0).node
    assert b.value == "3" and b.modified_index == b.created_index
    asyncio.run(srv2.stop())


def _http(url: str, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    addr = urllib.parse.urlsplit(url).netloc
    conn = http.client.HTTPConnection(addr, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _poll(cond, timeout: float = 20.0, what: str = "", log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what}\n{log()[-3000:]}")
        time.sleep(0.05)


def _last_acked(writers: list[Writer]) -> int:
    """The highest modifiedIndex acknowledged to any writer (they rewrite a few keys)."""
    return max((index for w in writers for _, index in list(w.acked.values())), default=0)


def _metric(url: str, name: str, labels: dict[str, str]) -> float | None:
    for fam in text_string_to_metric_families(_http(url, "GET", "/metrics")[1].decode()):
        for sample in fam.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_member_process_through_a_full_disk_then_kill9(tmp_path):
    """Under write load the WAL meets ENOSPC: writes are refused with 300 "etcdserver: no space",
    reads, quorum reads and watches go on, /health is 503 and /metrics shows NOSPACE; once space
    returns writes succeed without a restart, and after kill -9 every acknowledged write is there."""
    flag = str(tmp_path / "disk-full")
    srv = start_server(
        "fastkv",
        data_dir=str(tmp_path),
        env_extra={"FASTKV_FAILPOINTS": "before_wal_write=enospc", "FASTKV_FAILPOINT_NOSPACE_FILE": flag},
    )
    stop = threading.Event()
    writers = [Writer(srv.url, i, stop) for i in range(4)]
    try:
        assert _http(srv.url, "PUT", "/v2/keys/w", "value=before")[0] == 201
        for w in writers:
            w.start()
        _poll(lambda: _last_acked(writers) > 20, what="writes acknowledged")
        open(flag, "w").close()  # the disk fills under load
        _poll(lambda: _http(srv.url, "GET", "/health")[0] == 503, what="/health unhealthy")
        assert _http(srv.url, "GET", "/health") == (503, b'{"health":"false"}\n')
        assert _http(srv.url, "GET", "/health?exclude=NOSPACE") == (200, b'{"health":"true"}')
        assert _http(srv.url, "GET", "/health?exclude=CORRUPT")[0] == 503
        assert _metric(srv.url, "etcd_debugging_server_alarms", {"alarm_type": "NOSPACE"}) == 1.0
        status, body = _http(srv.url, "PUT", "/v2/keys/refused", "value=x")
        assert status == 500, body
        err = json.loads(body)
        assert (err["errorCode"], err["message"], err["cause"]) == (
            300,
            "Raft Internal Error",
            "etcdserver: no space",
        )
        # Reads: local, quorum, and a watch from the history answer at once; a waiting watch is held.
        status, body = _http(srv.url, "GET", "/v2/keys/w")
        assert status == 200 and json.loads(body)["node"]["value"] == "before"
        created = json.loads(body)["node"]["modifiedIndex"]
        status, body = _http(srv.url, "GET", "/v2/keys/w?quorum=true")
        assert status == 200 and json.loads(body)["node"]["value"] == "before"
        status, body = _http(srv.url, "GET", f"/v2/keys/w?wait=true&waitIndex={created}")
        assert status == 200 and json.loads(body)["node"]["value"] == "before"
        watched: list[tuple[int, bytes]] = []
        watcher = threading.Thread(
            target=lambda: watched.append(_http(srv.url, "GET", "/v2/keys/w?wait=true")), daemon=True
        )
        watcher.start()
        acked_while_full = _last_acked(writers)
        time.sleep(0.5)
        assert srv.proc.poll() is None, srv.log()[-2000:]

        os.unlink(flag)  # space returns
        _poll(lambda: _http(srv.url, "GET", "/health")[0] == 200, what="/health healthy again")
        assert _metric(srv.url, "etcd_debugging_server_alarms", {"alarm_type": "NOSPACE"}) == 0.0
        assert _http(srv.url, "PUT", "/v2/keys/w", "value=after")[0] == 200
        watcher.join(10)
        assert watched and watched[0][0] == 200 and json.loads(watched[0][1])["node"]["value"] == "after"
        _poll(
            lambda: _last_acked(writers) > acked_while_full + 20,
            what="writes again",
            log=srv.log,
        )
        assert _http(srv.url, "GET", "/v2/keys/refused")[0] == 404  # refused, never applied
        assert "alarm raised: NOSPACE" in srv.log() and "alarm cleared: NOSPACE" in srv.log()
        srv.kill9()
        stop.set()
        for w in writers:
            w.join(10)
        srv.env = {k: v for k, v in srv.env.items() if not k.startswith("FASTKV_FAILPOINT")}
        srv.launch()
        wait_http_ok(srv.url + "/health", 20, srv.proc)
        assert_acknowledged_writes_present(srv.url, writers, " after a full disk and kill -9")
        assert _http(srv.url, "GET", "/v2/keys/refused")[0] == 404
    finally:
        stop.set()
        srv.stop()


@pytest.mark.timeout(60)
def test_a_snapshot_refused_for_space_leaves_nothing_and_is_taken_later(tmp_path, disk):
    """ENOSPC while a snapshot is written (its checkpoint made, the file not yet): the partial
    snapshot is removed, the alarm raised; the probe takes it once there is space."""
    failpoint.arm("during_snapshot=enospc", disk)
    cfg = parse_config([*_args(tmp_path), "--snapshot-count", "20"], {})
    srv = EtcdServer.open(cfg)
    snap_dir = tmp_path / "d" / "member" / "snap"

    async def scenario() -> None:
        await srv.start()
        open(disk, "w").close()
        i = 0
        while not srv.alarms():
            assert i < 200, "no snapshot was attempted"
            await asyncio.wait_for(srv.propose(V2Request("PUT", f"/k{i}", value=str(i))), 5)
            i += 1
        assert not srv.is_healthy() and srv.fatal_error is None
        assert sorted(p.name for p in snap_dir.iterdir()) == []
        with pytest.raises(V2Error) as err:
            await asyncio.wait_for(srv.propose(V2Request("PUT", "/refused", value="x")), 5)
        assert err.value.cause == NO_SPACE_CAUSE
        os.unlink(disk)
        await _until(lambda: srv.alarms() == [], 10)
        names = sorted(p.name for p in snap_dir.iterdir())
        assert len(names) == 2 and names[0].endswith(".snap") and names[1] == names[0] + ".db", names
        await asyncio.wait_for(srv.propose(V2Request("PUT", "/after", value="1")), 5)
        await srv.stop()

    asyncio.run(scenario())
    srv2 = EtcdServer.open(cfg)
    assert srv2.store.get("/after", False, False, 0).node.value == "1"
    with pytest.raises(V2Error):
        srv2.store.get("/refused", False, False, 0)
    asyncio.run(srv2.stop())


@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs mounted for the test (needs root and mount(2): skipped where not allowed)."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: str, leave_bytes: int) -> str:
    """A file that takes all the free space of ``path``'s file system but ``leave_bytes``."""
    filler = os.path.join(path, "filler")
    st = os.statvfs(path)
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        f.write(bytes(max(0, st.f_bavail * st.f_frsize - leave_bytes)))
    return filler


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["wal_segment", "rocksdb_flush"])
def test_a_really_full_file_system(small_fs, where):
    """No injection: the data dir is on a small file system that really fills.  With 256 KiB WAL
    segments the next segment cannot be made ("wal_segment"); with frequent snapshots RocksDB's
    flush fails first ("rocksdb_flush": RocksDB then refuses writes until it is reopened).  Either
    way the member raises NOSPACE, refuses writes, and takes writes again once the filler is gone;
    after kill -9 every acknowledged write is there."""
    flags = ["--snapshot-count", "200" if where == "rocksdb_flush" else "100000"]
    srv = start_server(
        "fastkv", data_dir=small_fs, extra=flags, env_extra={"FASTKV_WAL_SEGMENT_SIZE_BYTES": str(256 * 1024)}
    )
    acked: dict[str, str] = {}
    value = "v" * (1000 if where == "wal_segment" else 100)
    try:
        filler = _fill(small_fs, 48 * 1024)
        refused = None
        for i in range(5000):
            status, body = _http(srv.url, "PUT", f"/v2/keys/k{i}", f"value={value}{i}")
            if status in (200, 201):
                acked[f"/k{i}"] = f"{value}{i}"
                continue
            refused = (i, status, json.loads(body))
            # The write whose save met the full disk waits (held) and times out; the next ones
            # are refused at once.
            if refused[2]["cause"] != "etcdserver: request timed out":
                break
        assert refused is not None, "the file system never filled"
        assert refused[1] == 500 and refused[2]["cause"] == "etcdserver: no space", refused
        assert _http(srv.url, "GET", "/health")[0] == 503
        assert _http(srv.url, "GET", "/v2/keys/k0")[0] == 200
        assert srv.proc.poll() is None
        # RocksDB's flush fails either as the snapshot's own or in the background just before it
        # (readyloop's early flush), and then the next RocksDB write reports it.
        reasons = (
            ("applied state flush", "applied state write") if where == "rocksdb_flush" else ("WAL write",)
        )
        assert any(reason in srv.log() for reason in reasons), srv.log()[-2000:]
        os.unlink(filler)
        _poll(lambda: _http(srv.url, "GET", "/health")[0] == 200, what="healthy again", log=srv.log)
        for i in range(5000, 5300):
            status, body = _http(srv.url, "PUT", f"/v2/keys/k{i}", f"value=after{i}")
            assert status in (200, 201), body
            acked[f"/k{i}"] = f"after{i}"
        srv.kill9()
        srv.launch()
        wait_http_ok(srv.url + "/health", 20, srv.proc)
        for key, v in acked.items():
            status, body = _http(srv.url, "GET", "/v2/keys" + key)
            assert status == 200 and json.loads(body)["node"]["value"] == v, (key, status, body)
    finally:
        srv.kill9()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill9_while_the_disk_is_full_loses_no_acknowledged_write(tmp_path):
    """kill -9 while a Ready is held for space (its save failed, maybe half written): after a
    restart with space every acknowledged write is there, and nothing refused was applied."""
    flag = str(tmp_path / "disk-full")
    srv = start_server(
        "fastkv",
        data_dir=str(tmp_path),
        env_extra={"FASTKV_FAILPOINTS": "before_wal_write=enospc", "FASTKV_FAILPOINT_NOSPACE_FILE": flag},
    )
    stop = threading.Event()
    writers = [Writer(srv.url, i, stop) for i in range(4)]
    try:
        for w in writers:
            w.start()
        _poll(lambda: _last_acked(writers) > 20, what="writes acknowledged")
        open(flag, "w").close()
        _poll(lambda: _http(srv.url, "GET", "/health")[0] == 503, what="/health unhealthy", log=srv.log)
        assert _http(srv.url, "PUT", "/v2/keys/refused", "value=x")[0] == 500
        srv.kill9()
        stop.set()
        for w in writers:
            w.join(10)
        os.unlink(flag)
        srv.env = {k: v for k, v in srv.env.items() if not k.startswith("FASTKV_FAILPOINT")}
        srv.launch()
        wait_http_ok(srv.url + "/health", 20, srv.proc)
        assert_acknowledged_writes_present(srv.url, writers, " after kill -9 with a full disk")
        assert _http(srv.url, "GET", "/v2/keys/refused")[0] == 404
    finally:
        stop.set()
        srv.stop()
