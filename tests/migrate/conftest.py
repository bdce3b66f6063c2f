"""Real etcd data dirs, made once per session (each test copies one before damaging it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.migrate.etcdhistory import (
    EtcdAnswers,
    change_members,
    http,
    record_answers,
    wait_applied,
    write_history,
)
from tests.support.procs import free_port, have_etcd, start_cluster, start_server

SNAPSHOT_COUNT = "25"


@dataclass
class EtcdDir:
    data_dir: str  # the stopped member's --data-dir
    name: str
    answers: EtcdAnswers
    removed: list[int] = field(default_factory=list)  # member ids removed during the history


def _require_etcd() -> None:
    if not have_etcd():
        pytest.skip("etcd not installed")


@pytest.fixture(scope="session")
def etcd_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdDir]:
    _require_etcd()
    base = str(tmp_path_factory.mktemp("etcd-single"))
    srv = start_server("etcd", data_dir=base, name="e1", extra=["--snapshot-count", SNAPSHOT_COUNT])
    try:
        hidden = write_history(srv.url)
        answers = record_answers(srv.url, hidden)
    finally:
        srv.stop()  # etcd re-raises SIGTERM after its clean shutdown: status -15
    yield EtcdDir(os.path.join(base, "data"), "e1", answers)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EtcdDir]]:
    _require_etcd()
    base = str(tmp_path_factory.mktemp("etcd-cluster"))
    members = start_cluster("etcd", 3, base_dir=base, extra=["--snapshot-count", SNAPSHOT_COUNT])
    try:
        hidden = write_history(members[1].url)
        # Then enough writes for a snapshot after the membership changes, so that etcd's own /0 (in
        # that snapshot) is compared with the replay of the changes (test_replay_from_scratch_...).
        removed = change_members(
            members[0].url, f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        )
        for i in range(int(SNAPSHOT_COUNT) + 5):
            assert http("PUT", f"{members[2].url}/v2/keys/late/{i}", {"value": str(i)})[0] == 201
        wait_applied(members)
        answers = [record_answers(m.url, hidden) for m in members]
    finally:
        for m in members:
            m.stop()
    dirs = [EtcdDir(os.path.join(m.data_dir, "data"), f"m{i}", answers[i]) for i, m in enumerate(members)]
    for d in dirs:
        d.removed = [removed]
    yield dirs
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_v3_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A data dir written through the v3 API only."""
    _require_etcd()
    base = str(tmp_path_factory.mktemp("etcd-v3"))
    srv = start_server("etcd", data_dir=base, name="e1")
    try:
        env = {**os.environ, "ETCDCTL_API": "3"}
        for i in range(3):
            subprocess.run(
                ["etcdctl", "--endpoints", srv.url, "put", f"v3key{i}", "value"],
                env=env,
                check=True,
                capture_output=True,
                timeout=20,
            )
    finally:
        srv.stop()  # etcd re-raises SIGTERM after its clean shutdown: status -15
    yield os.path.join(base, "data")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def etcd_copy(etcd_single: EtcdDir, tmp_path: object) -> str:
    """A private copy of the single member's data dir, to damage."""
    dest = os.path.join(str(tmp_path), "etcd")
    shutil.copytree(etcd_single.data_dir, dest)
    return dest


@pytest.fixture(scope="session")
def etcd_two_segments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdDir]:
    """A data dir whose WAL spans two segments (etcd cuts at 64 MB: ~70 writes of 1 MB)."""
    _require_etcd()
    base = str(tmp_path_factory.mktemp("etcd-segments"))
    srv = start_server("etcd", data_dir=base, name="e1")
    try:
        fill_wal(srv.url, 70, 1 << 20)
        hidden = write_history(srv.url, files=12)
        answers = record_answers(srv.url, hidden)
    finally:
        srv.stop()
    data = os.path.join(base, "data")
    assert len(os.listdir(os.path.join(data, "member", "wal"))) >= 2
    yield EtcdDir(data, "e1", answers)
    shutil.rmtree(base, ignore_errors=True)


def fill_wal(url: str, count: int, value_bytes: int) -> None:
    """``count`` writes of a ``value_bytes`` value to one key, over one connection."""
    import http.client
    import urllib.parse

    host = urllib.parse.urlsplit(url).netloc
    conn = http.client.HTTPConnection(host, timeout=30)
    body = urllib.parse.urlencode({"value": "x" * value_bytes})
    try:
        for _ in range(count):
            conn.request("PUT", "/v2/keys/big", body, {"Content-Type": "application/x-www-form-urlencoded"})
            r = conn.getresponse()
            r.read()
            assert r.status in (200, 201), r.status
    finally:
        conn.close()


@pytest.fixture(scope="session")
def etcd_v2_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A data dir with a v2 key, a root user and v2 auth enabled."""
    _require_etcd()
    base = str(tmp_path_factory.mktemp("etcd-auth"))
    srv = start_server("etcd", data_dir=base, name="e1")
    try:
        assert http("PUT", srv.url + "/v2/keys/guarded", {"value": "x"})[0] == 201
        env = {**os.environ, "ETCDCTL_API": "2"}
        for args in (["user", "add", "root:rootpw"], ["auth", "enable"]):
            subprocess.run(
                ["etcdctl", "--endpoints", srv.url, *args],
                env=env,
                check=True,
                capture_output=True,
                timeout=20,
            )
    finally:
        srv.stop()
    yield os.path.join(base, "data")
    shutil.rmtree(base, ignore_errors=True)
