"""fastkv.testing.Launcher, Member and Cluster against real fastkv processes."""

from __future__ import annotations

import os
import signal
import socket
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from fastkv.client import Client
from fastkv.testing import Launcher, MemberError, member_environment
from fastkv.testing.member import http_json
from fastkv.testing.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def launcher() -> Iterator[Launcher]:
    with Launcher() as launcher:
        yield launcher


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def value(client: Client, key: str) -> str | None:
    return client.get(key, quorum=True).node.value


def test_member_lifecycle(launcher: Launcher) -> None:
    m = launcher.member()
    assert m.running and not m.paused and m.client_url.startswith("http://127.0.0.1:")
    assert int(m.client_url.rsplit(":", 1)[1]) < 32768 and int(m.peer_url.rsplit(":", 1)[1]) < 32768
    with m.client() as c:
        c.set("/k", "v1")
    assert m.stop() == 0 and not m.running and m.pid is None
    m.start()
    m.wait_ready()
    with m.client() as c:
        assert value(c, "/k") == "v1"  # data dir kept across the restart
        c.set("/k", "v2")
    assert m.kill() == -signal.SIGKILL
    m.restart()
    with m.client() as c:
        assert value(c, "/k") == "v2"  # acknowledged before the kill -9: durable
    assert "ready to serve client requests" in m.log()


def test_pause_and_resume(launcher: Launcher) -> None:
    m = launcher.member()
    m.pause()
    assert m.paused and m.running
    with pytest.raises(OSError):  # stopped: the request times out
        http_json(m.client_url + "/health", timeout=0.5)
    m.resume()
    m.wait_ready(10)
    # Stopping a paused member works too (it is resumed to act on SIGTERM).
    m.pause()
    assert m.stop() == 0


def test_cluster_leader_kill_and_catch_up(launcher: Launcher) -> None:
    cluster = launcher.cluster(3)
    assert [m.name for m in cluster] == ["m0", "m1", "m2"] and len(cluster.endpoints.split(",")) == 3
    leader = cluster.leader()
    followers = cluster.followers()
    assert len(followers) == 2 and leader not in followers
    assert {m.id for m in cluster} == {m.id for m in cluster.client().members()}
    leader.kill()
    new_leader = cluster.leader()
    assert new_leader is not leader and new_leader in followers
    with new_leader.client() as c:
        c.set("/after", "kill")
    leader.restart()
    cluster.wait_healthy()
    with leader.client() as c:
        assert value(c, "/after") == "kill"


def test_close_leaves_no_process_and_no_directory() -> None:
    launcher = Launcher()
    cluster = launcher.cluster(3)
    cluster[1].pause()
    cluster[2].kill()
    pids = [m.proc.pid for m in cluster if m.proc is not None]
    base = launcher.base_dir
    assert os.path.isdir(base)
    launcher.close()
    assert all(gone(pid) for pid in pids)
    assert not os.path.exists(base)


def test_a_taken_port_is_replaced(launcher: Launcher) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        taken = s.getsockname()[1]
        ports = iter([taken])
        launcher.port = lambda: next(ports, None) or free_port()
        m = launcher.member()
        assert str(taken) not in m.client_url + m.peer_url
        assert launcher.started == [m] and len(os.listdir(launcher.base_dir)) == 1


def test_a_command_that_cannot_run(tmp_path) -> None:
    missing = Launcher(command=[str(tmp_path / "no-such-fastkv")], base_dir=str(tmp_path))
    with missing, pytest.raises(MemberError, match="cannot run"):
        missing.member()
    failing = Launcher(command=[sys.executable, "-c", "print('bad flags'); raise SystemExit(3)"])
    with failing, pytest.raises(MemberError, match=r"exited with 3 before it was ready\n.*bad flags"):
        failing.member()


def test_member_environment(monkeypatch) -> None:
    monkeypatch.setenv("ETCD_NAME", "x")
    monkeypatch.setenv("FASTKV_FAILPOINTS", "before_wal_save=panic")
    monkeypatch.delenv("FASTKV_WAL_SEGMENT_SIZE_BYTES", raising=False)
    env = member_environment({"A": "1"})
    assert "ETCD_NAME" not in env and "FASTKV_FAILPOINTS" not in env
    assert env["FASTKV_WAL_SEGMENT_SIZE_BYTES"] == str(4 * 1024 * 1024) and env["A"] == "1"
    monkeypatch.setenv("FASTKV_WAL_SEGMENT_SIZE_BYTES", "123")
    assert member_environment()["FASTKV_WAL_SEGMENT_SIZE_BYTES"] == "123"


def test_extra_args_come_last_and_the_member_accepts_them(launcher: Launcher) -> None:
    m = launcher.member(extra_args=["--snapshot-count", "50"])
    assert m.argv[-2:] == ["--snapshot-count", "50"]
    with urllib.request.urlopen(m.client_url + "/version", timeout=5) as r:
        assert b"etcdserver" in r.read()
