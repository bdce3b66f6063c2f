"""backup(): a consistent copy of a data dir made by a real server, stopped or running, that a server
starts from and serves every write acknowledged before the backup began, with its index."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastkv._native import walcodec
from fastkv.raft.types import ENTRY_NORMAL, Entry, HardState
from fastkv.storage import backup as backup_mod
from fastkv.storage.backend import Backend
from fastkv.storage.backup import BackupError, backup
from fastkv.storage.wal import WAL, list_segments
from fastkv.v2store.request import V2Request
from tests.support.clusterutil import TIMING, member_by_id, until, wait_one_leader
from tests.support.procs import ServerProcess, start_cluster, start_server

pytestmark = pytest.mark.slow

SNAPSHOT_EVERY = ["--snapshot-count", "50"]


class Client:
    """One keep-alive connection to a server's client URL."""

    def __init__(self, url: str) -> None:
        self.conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=5)

    def put(self, key: str, value: str) -> int:
        self.conn.request(
            "PUT",
            "/v2/keys" + key,
            body=f"value={value}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        resp = self.conn.getresponse()
        body = resp.read()
        assert resp.status in (200, 201), body
        return int(json.loads(body)["node"]["modifiedIndex"])

    def get(self, key: str) -> tuple[int, dict]:
        self.conn.request("GET", "/v2/keys" + key)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())

    def close(self) -> None:
        self.conn.close()


class Writer(threading.Thread):
    """Writes /bk/w<id>/<n> = v<n> (each key once) until stopped; records what was acknowledged."""

    def __init__(self, url: str, wid: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.wid = wid
        self.stop_flag = stop
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[str, int]] = {}

    def run(self) -> None:
        client = Client(self.url)
        deadline = time.monotonic() + 60
        n = 0
        try:
            while not self.stop_flag.is_set() and time.monotonic() < deadline:
                key, value = f"/bk/w{self.wid}/{n}", f"v{n}"
                index = client.put(key, value)
                with self.lock:
                    self.acked[key] = (value, index)
                n += 1
        finally:
            client.close()

    def snapshot(self) -> dict[str, tuple[str, int]]:
        with self.lock:
            return dict(self.acked)


def write_keys(url: str, n: int, prefix: str = "/k") -> dict[str, tuple[str, int]]:
    client = Client(url)
    try:
        return {f"{prefix}/{i}": (f"v{i}", client.put(f"{prefix}/{i}", f"v{i}")) for i in range(n)}
    finally:
        client.close()


def assert_serves(url: str, expected: dict[str, tuple[str, int]]) -> None:
    client = Client(url)
    try:
        for key, (value, index) in expected.items():
            status, body = client.get(key)
            assert status == 200, (key, body)
            assert (body["node"]["value"], body["node"]["modifiedIndex"]) == (value, index), key
    finally:
        client.close()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for srv in started:
        srv.stop()


def start(servers: list[ServerProcess], root: Path, **kwargs: object) -> ServerProcess:
    root.mkdir(parents=True, exist_ok=True)
    srv = start_server("fastkv", data_dir=str(root), **kwargs)  # type: ignore[arg-type]
    servers.append(srv)
    return srv


def data_dir(srv: ServerProcess) -> str:
    return os.path.join(srv.data_dir, "data")


def tree_digest(path: str) -> dict[str, str]:
    """Every file under path with a hash of its bytes."""
    out = {}
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def backup_wal(backup_dir: str, applied_index: int) -> tuple[bytes, HardState, list[Entry]]:
    wal = WAL.open(os.path.join(backup_dir, "member", "wal"), snap_index=applied_index)
    try:
        return wal.read_all()
    finally:
        wal.close()


def kv_applied_index(backup_dir: str) -> int:
    kv = Backend.open(os.path.join(backup_dir, "member", "kv"))
    try:
        return kv.applied_index()
    finally:
        kv.close()


# -- a stopped member ------------------------------------------------------------------------


def test_backup_of_a_stopped_member_checkpoints_the_live_state(tmp_path, servers):
    src = start(servers, tmp_path / "src", extra=SNAPSHOT_EVERY)
    written = write_keys(src.url, 120)
    src.stop()
    wal_before = tree_digest(os.path.join(data_dir(src), "member", "wal"))
    snap_before = tree_digest(os.path.join(data_dir(src), "member", "snap"))
    dst = str(tmp_path / "dst" / "data")

    result = backup(data_dir(src), dst)

    assert not result.member_running and result.snapshot is None
    # Stopped cleanly: RocksDB holds every applied round, nothing is left to replay.
    assert result.applied_index == kv_applied_index(dst) == result.last_index
    assert result.applied_index >= max(index for _, index in written.values())
    assert sorted(os.listdir(os.path.join(dst, "member"))) == ["kv", "snap", "wal"]
    assert os.listdir(os.path.join(dst, "member", "snap")) == []
    metadata, hard_state, entries = backup_wal(dst, result.applied_index)
    assert json.loads(metadata)["name"] == "default"
    assert entries == [] and hard_state.commit == result.applied_index
    # The live WAL and snapshots are untouched, and the member's lock is free again.
    assert tree_digest(os.path.join(data_dir(src), "member", "wal")) == wal_before
    assert tree_digest(os.path.join(data_dir(src), "member", "snap")) == snap_before
    with open(os.path.join(data_dir(src), "member", "lock")) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)

    restored = start(servers, tmp_path / "dst")
    assert_serves(restored.url, written)
    # The restored member takes writes after the old ones (and after its attributes, published on start).
    assert Client(restored.url).put("/after", "x") == max(index for _, index in written.values()) + 2
    # The source still starts from its own dir.
    src.restart()
    assert_serves(src.url, written)


def test_stopped_member_with_a_torn_tail_is_repaired_in_the_copy_only(tmp_path, servers):
    src = start(servers, tmp_path / "src")
    written = write_keys(src.url, 30)
    src.stop()
    wal_dir = os.path.join(data_dir(src), "member", "wal")
    tail = os.path.join(wal_dir, list_segments(wal_dir)[-1].name)
    with open(tail, "rb") as f:
        buf = f.read()
    end, status = walcodec.Decoder(Entry, HardState).decode(buf, 0)
    assert status == walcodec.END
    # Half of one more entry record: a write the crash cut short.
    enc = walcodec.Encoder()
    enc.add_entries([Entry(99, 10_000, 0, b"x" * 100)])
    with open(tail, "r+b") as f:
        f.seek(end)
        f.write(enc.getvalue()[:60])
    before = tree_digest(wal_dir)
    dst = str(tmp_path / "dst" / "data")

    result = backup(data_dir(src), dst)

    assert tree_digest(wal_dir) == before  # no repair, no .broken file in the live dir
    assert result.last_index < 10_000
    restored = start(servers, tmp_path / "dst")
    assert_serves(restored.url, written)


# -- a running member ------------------------------------------------------------------------


def test_backup_of_a_running_member_under_writes_keeps_every_acknowledged_write(tmp_path, servers):
    src = start(servers, tmp_path / "src", extra=SNAPSHOT_EVERY)
    stop = threading.Event()
    writers = [Writer(src.url, i, stop) for i in range(4)]
    for w in writers:
        w.start()
    try:
        snap_dir = os.path.join(data_dir(src), "member", "snap")
        deadline = time.monotonic() + 30
        while sum(len(w.snapshot()) for w in writers) < 600 and time.monotonic() < deadline:
            time.sleep(0.02)
        acked_before: dict[str, tuple[str, int]] = {}
        for w in writers:
            acked_before.update(w.snapshot())
        assert len(acked_before) >= 600
        assert any(name.endswith(".snap") for name in os.listdir(snap_dir))
        dst = str(tmp_path / "dst" / "data")

        result = backup(data_dir(src), dst)

        written_during = sum(len(w.snapshot()) for w in writers) - len(acked_before)
    finally:
        stop.set()
        for w in writers:
            w.join(10)
    assert written_during > 0, "the backup did not overlap any write"
    assert result.member_running
    # The checkpoint's own applied index counts, not the snapshot's name (the server may
    # checkpoint a round or two past the index it names the snapshot with).
    assert result.snapshot is not None and result.applied_index >= result.snapshot[1]
    assert kv_applied_index(dst) == result.applied_index
    _, _, entries = backup_wal(dst, result.applied_index)
    assert [e.index for e in entries] == list(range(result.applied_index + 1, result.last_index + 1))
    # The live WAL was read through a copy only.
    live_wal = os.listdir(os.path.join(data_dir(src), "member", "wal"))
    assert not [n for n in live_wal if n.endswith(".broken")]
    assert "wal-copy.tmp" not in os.listdir(os.path.join(dst, "member"))

    restored = start(servers, tmp_path / "dst")
    assert_serves(restored.url, acked_before)
    # The source member never noticed.
    assert_serves(src.url, acked_before)


def test_backup_of_a_running_member_without_a_snapshot_replays_the_whole_wal(tmp_path, servers):
    src = start(servers, tmp_path / "src")  # default --snapshot-count: no snapshot here
    written = write_keys(src.url, 80)
    stop = threading.Event()
    writer = Writer(src.url, 0, stop)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while len(writer.snapshot()) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        written.update(writer.snapshot())
        dst = str(tmp_path / "dst" / "data")
        result = backup(data_dir(src), dst)
    finally:
        stop.set()
        writer.join(10)
    assert result.member_running and result.snapshot is None
    assert result.applied_index == 0 and kv_applied_index(dst) == 0
    _, _, entries = backup_wal(dst, 0)
    assert entries[0].index == 1 and entries[-1].index == result.last_index
    assert result.last_index >= max(index for _, index in written.values())

    restored = start(servers, tmp_path / "dst")
    assert_serves(restored.url, written)


def test_running_member_with_many_segments_copies_only_those_after_the_snapshot(
    tmp_path, servers, monkeypatch
):
    src = start(
        servers,
        tmp_path / "src",
        extra=SNAPSHOT_EVERY,
        env_extra={"FASTKV_WAL_SEGMENT_SIZE_BYTES": str(8 * 1024)},
    )
    written = write_keys(src.url, 400)
    wal_dir = os.path.join(data_dir(src), "member", "wal")
    segments = list_segments(wal_dir)
    assert len(segments) > 4
    copied: list[str] = []
    real_copyfile = shutil.copyfile

    def recording(s: str, d: str, **kw: object) -> object:
        copied.append(os.path.basename(s))
        return real_copyfile(s, d, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_mod.shutil, "copyfile", recording)
    dst = str(tmp_path / "dst" / "data")

    result = backup(data_dir(src), dst)

    assert result.member_running and result.snapshot is not None
    assert result.applied_index >= 350
    copied_segments = [s for s in segments if s.name in copied]
    # From the last segment that may hold applied_index + 1 to the tail, and no earlier one.
    assert copied_segments[0].first_index <= result.applied_index + 1
    assert segments.index(copied_segments[0]) > 0
    assert copied_segments == segments[segments.index(copied_segments[0]) :]
    monkeypatch.undo()
    restored = start(servers, tmp_path / "dst")
    assert_serves(restored.url, written)


def test_a_held_lock_means_running_the_newest_snapshot_is_used(tmp_path, servers):
    src = start(servers, tmp_path / "src", extra=SNAPSHOT_EVERY)
    written = write_keys(src.url, 175)
    src.stop()
    snaps = sorted(
        n for n in os.listdir(os.path.join(data_dir(src), "member", "snap")) if n.endswith(".snap")
    )
    newest = (int(snaps[-1][:16], 16), int(snaps[-1][17:33], 16))
    dst = str(tmp_path / "dst" / "data")
    # Holding the member's lock ourselves stands for a running member, deterministically.
    with open(os.path.join(data_dir(src), "member", "lock")) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = backup(data_dir(src), dst)
    assert result.member_running and result.snapshot == newest
    assert newest[1] <= result.applied_index == kv_applied_index(dst) < result.last_index
    restored = start(servers, tmp_path / "dst")
    assert_serves(restored.url, written)


def test_a_file_vanishing_while_copying_makes_the_backup_start_over(tmp_path, servers, monkeypatch):
    src = start(servers, tmp_path / "src", extra=SNAPSHOT_EVERY)
    written = write_keys(src.url, 60)
    src.stop()
    real_copyfile = shutil.copyfile
    calls = []

    def purged_once(s: str, d: str, **kw: object) -> object:
        calls.append(s)
        if len(calls) == 1:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", s)
        return real_copyfile(s, d, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_mod.shutil, "copyfile", purged_once)
    dst = str(tmp_path / "dst" / "data")
    with open(os.path.join(data_dir(src), "member", "lock")) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = backup(data_dir(src), dst)
        assert result.attempts == 2
        with pytest.raises(BackupError, match="no consistent copy in 2 attempts"):
            calls.clear()
            monkeypatch.setattr(backup_mod.shutil, "copyfile", _always_vanishing)
            backup(data_dir(src), str(tmp_path / "dst2" / "data"), attempts=2)
    assert not (tmp_path / "dst2").exists()  # nothing left behind
    monkeypatch.undo()
    restored = start(servers, tmp_path / "dst")
    assert_serves(restored.url, written)


def _always_vanishing(s: str, d: str, **kw: object) -> None:
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", s)


def test_a_corrupt_live_wal_is_refused(tmp_path, stopped_data_dir):
    src = str(tmp_path / "src")
    shutil.copytree(stopped_data_dir, src)
    wal_dir = os.path.join(src, "member", "wal")
    seg = os.path.join(wal_dir, list_segments(wal_dir)[0].name)
    with open(seg, "r+b") as f:
        buf = f.read()
        middle = walcodec.data_end(buf) // 2
        f.seek(middle)
        f.write(bytes([buf[middle] ^ 0xFF]))
    with pytest.raises(BackupError, match=r"the WAL in .* cannot be read: .* at offset"):
        backup(src, str(tmp_path / "b1"))
    with open(os.path.join(src, "member", "lock")) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BackupError, match=r"no consistent copy in 2 attempts.* at offset"):
            backup(src, str(tmp_path / "b2"), attempts=2)
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


# -- refusals --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_data_dir(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("stopped")
    srv = start_server("fastkv", data_dir=str(root))
    try:
        write_keys(srv.url, 5)
    finally:
        srv.stop()
    yield os.path.join(str(root), "data")


def test_refuses_a_dir_that_is_not_a_data_dir(tmp_path):
    with pytest.raises(BackupError, match="is not a fastkv data dir: no such directory"):
        backup(str(tmp_path / "missing"), str(tmp_path / "b"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="is not a fastkv data dir: no 'member/kv'"):
        backup(str(tmp_path / "empty"), str(tmp_path / "b"))
    # An etcd data dir: member/wal and member/snap but no member/kv.
    etcd_like = tmp_path / "etcd" / "member"
    (etcd_like / "snap").mkdir(parents=True)
    (etcd_like / "wal").mkdir()
    (etcd_like / "wal" / "0000000000000000-0000000000000000.wal").write_bytes(b"\x01" * 64)
    with pytest.raises(BackupError, match="is not a fastkv data dir: no 'member/kv'"):
        backup(str(tmp_path / "etcd"), str(tmp_path / "b"))
    (etcd_like / "kv").mkdir()
    (etcd_like / "wal" / "0000000000000000-0000000000000000.wal").unlink()
    with pytest.raises(BackupError, match="no WAL segments in"):
        backup(str(tmp_path / "etcd"), str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_refuses_a_backup_dir_that_is_not_empty(tmp_path, stopped_data_dir):
    b = tmp_path / "b"
    b.mkdir()
    (b / "x").write_text("keep me")
    with pytest.raises(BackupError, match="backup dir .* is not empty"):
        backup(stopped_data_dir, str(b))
    assert os.listdir(b) == ["x"]
    (tmp_path / "bw").mkdir()
    (tmp_path / "bw" / "y").write_text("")
    with pytest.raises(BackupError, match="backup wal dir .* is not empty"):
        backup(stopped_data_dir, str(tmp_path / "c"), backup_wal_dir=str(tmp_path / "bw"))
    assert not (tmp_path / "c").exists()


def test_an_existing_empty_backup_dir_is_used_and_emptied_again_on_failure(tmp_path, stopped_data_dir):
    b = tmp_path / "b"
    b.mkdir()
    result = backup(stopped_data_dir, str(b))
    assert result.applied_index > 0 and os.listdir(b) == ["member"]
    c = tmp_path / "c"
    c.mkdir()
    with open(os.path.join(stopped_data_dir, "member", "lock")) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Running mode reads the WAL copy; a WAL from another member is not fastkv's metadata.
        wal = os.path.join(stopped_data_dir, "member", "wal")
        saved = tmp_path / "saved-wal"
        shutil.copytree(wal, saved)
        try:
            shutil.rmtree(wal)
            w = WAL.create(wal, b"not json")
            w.save(HardState(1, 0, 1), [Entry(1, 1, 0, b"")])
            w.close()
            with pytest.raises(BackupError, match="does not hold fastkv member metadata"):
                backup(stopped_data_dir, str(c))
        finally:
            shutil.rmtree(wal)
            shutil.copytree(saved, wal)
    assert os.listdir(c) == []


# -- a follower that installed the leader's snapshot -----------------------------------------


def test_backup_of_a_running_follower_after_it_installed_the_leaders_snapshot(tmp_path, servers):
    """A follower that caught up from the leader's snapshot has no WAL entries between its own
    older snapshot and the installed one: the installed state must be its newest snapshot, or a
    backup (or a restart) would find a gap in the log."""
    members = start_cluster(
        "fastkv", 3, base_dir=str(tmp_path / "cluster"), extra=TIMING + SNAPSHOT_EVERY,
        env_extra={"FASTKV_SNAPSHOT_CATCH_UP_ENTRIES": "10"},
    )  # fmt: skip
    servers.extend(members)
    leader = member_by_id(members, wait_one_leader(members))
    follower = next(m for m in members if m is not leader)
    written = write_keys(leader.url, 60, prefix="/before")  # the follower's own snapshot at 50
    until("the follower's first snapshot", lambda: "saved snapshot" in follower.log())
    follower.kill9()
    written.update(write_keys(leader.url, 200, prefix="/away"))  # compacted past the follower
    follower.launch()
    until(
        "the follower installs the leader's snapshot",
        lambda: "installed the leader's snapshot" in follower.log(),
    )
    written.update(write_keys(leader.url, 20, prefix="/after"))
    until("the follower to apply the last write", lambda: Client(follower.url).get("/after/19")[0] == 200)

    dst = str(tmp_path / "dst" / "data")
    result = backup(data_dir(follower), dst)
    assert result.member_running
    _, hard_state, entries = backup_wal(dst, result.applied_index)
    assert [e.index for e in entries] == list(range(result.applied_index + 1, result.last_index + 1))
    # --force-new-cluster keeps what the member's WAL says is committed (etcd's rule); the
    # follower learns and records the last commits a heartbeat later, so the newest writes may
    # fall outside it.  Everything from before the snapshot install must be there.
    uncommitted = {
        V2Request.decode(e.data).path
        for e in entries
        if e.index > hard_state.commit and e.type == ENTRY_NORMAL
    }
    assert not {k for k in uncommitted if not k.startswith("/after")}
    committed = {k: v for k, v in written.items() if k not in uncommitted}

    restored = start(servers, tmp_path / "dst", name="m0", extra=["--force-new-cluster"])
    assert_serves(restored.url, committed)
