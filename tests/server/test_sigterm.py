"""A clean stop: SIGTERM (systemd's stop) or SIGINT (Ctrl-C) during a write load ends the
process with status 0 within seconds, releases the data dir lock, and loses no write that a
client saw acknowledged."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.support.procs import ServerProcess, start_cluster, start_server

WRITERS = 8
STOP_WITHIN_S = 5.0


class WriteLoad:
    """``WRITERS`` threads PUTting distinct keys over keep-alive connections until stopped or
    refused; ``acked`` holds every key whose PUT was answered 201."""

    def __init__(self, url: str) -> None:
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 2379
        self.acked: dict[str, str] = {}
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WRITERS)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _run(self, w: int) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        n = 0
        while not self._stop.is_set():
            key, value = f"/load/w{w}-{n}", f"v{w}-{n}"
            try:
                conn.request(
                    "PUT",
                    "/v2/keys" + key,
                    body=urllib.parse.urlencode({"value": value}),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.errors += 1
                return  # the server is going away
            if resp.status == 201:
                with self._lock:
                    self.acked[key] = value
            n += 1


def lock_is_free(data_dir: str) -> bool:
    fd = os.open(os.path.join(data_dir, "member", "lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def get_value(srv: ServerProcess, key: str) -> str | None:
    u = urllib.parse.urlsplit(srv.url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 2379, timeout=10)
    try:
        conn.request("GET", "/v2/keys" + key)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        return None
    value: str = json.loads(body)["node"]["value"]
    return value


def stop_under_load(srv: ServerProcess, sig: int, load_s: float = 1.5) -> tuple[float, WriteLoad]:
    load = WriteLoad(srv.url)
    load.start()
    time.sleep(load_s)
    t0 = time.monotonic()
    srv.proc.send_signal(sig)
    try:
        srv.proc.wait(STOP_WITHIN_S + 10)
    finally:
        load.stop()
    return time.monotonic() - t0, load


@pytest.fixture
def workdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="fastkv-sigterm-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_under_write_load_stops_cleanly(workdir: str, sig: int) -> None:
    srv = start_server("fastkv", data_dir=workdir)
    data_dir = os.path.join(workdir, "data")
    try:
        took, load = stop_under_load(srv, sig)
        log = srv.log()
        assert srv.proc.returncode == 0, log[-2000:]
        assert took < STOP_WITHIN_S, f"stopping took {took:.2f}s"
        assert len(load.acked) > 50, "the load did not run"
        assert lock_is_free(data_dir)
        srv.restart()
        missing = [k for k, v in load.acked.items() if get_value(srv, k) != v]
        assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged writes lost: {missing[:5]}"
    finally:
        srv.stop(signal.SIGKILL)


def test_stop_under_load_logs_no_error(workdir: str) -> None:
    """Requests still arriving on open connections while the member stops are refused, not
    handed to a closed WAL writer (which the event loop would report as an error)."""
    srv = start_server("fastkv", data_dir=workdir)
    try:
        stop_under_load(srv, signal.SIGTERM, load_s=1.0)
        assert srv.proc.returncode == 0
        lines = [json.loads(ln) for ln in srv.log().splitlines() if ln.startswith("{")]
        errors = [ln for ln in lines if ln["level"] in ("error", "fatal")]
        assert not errors, errors[:2]
    finally:
        srv.stop(signal.SIGKILL)


def test_sigterm_on_a_cluster_leader_under_load(workdir: str) -> None:
    """The leader of a 3-member cluster stops within seconds under load; what it acknowledged
    is on the other members, which elect a new leader, and on itself after a restart."""
    members = start_cluster(
        "fastkv", 3, base_dir=workdir, extra=["--heartbeat-interval", "50", "--election-timeout", "500"]
    )
    try:
        leader = _leader(members)
        took, load = stop_under_load(leader, signal.SIGTERM)
        assert leader.proc.returncode == 0, leader.log()[-2000:]
        assert took < STOP_WITHIN_S, f"stopping took {took:.2f}s"
        assert len(load.acked) > 20, "the load did not run"
        assert lock_is_free(os.path.join(leader.data_dir, "data"))
        others = [m for m in members if m is not leader]
        keys = sorted(load.acked)
        for m in others:
            # Follower reads are local: poll until the member has caught up with the commit.
            deadline = time.monotonic() + 20
            missing = keys
            while missing and time.monotonic() < deadline:
                missing = [k for k in missing if get_value(m, k) != load.acked[k]]
                time.sleep(0.1 if missing else 0)
            assert not missing, f"{m.url}: {len(missing)} acknowledged writes missing: {missing[:5]}"
        leader.restart(30)
        missing = [k for k in keys if get_value(leader, k) != load.acked[k]]
        assert not missing, f"restarted leader: {len(missing)} acknowledged writes missing"
    finally:
        for m in members:
            m.stop(signal.SIGKILL)


def _leader(members: list[ServerProcess]) -> ServerProcess:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for m in members:
            u = urllib.parse.urlsplit(m.url)
            conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 2379, timeout=5)
            try:
                conn.request("GET", "/v2/stats/self")
                stats = json.loads(conn.getresponse().read())
            except OSError:
                continue
            finally:
                conn.close()
            if stats.get("state") == "StateLeader":
                return m
        time.sleep(0.1)
    raise AssertionError("no leader")


def test_sigterm_while_starting_exits_zero(workdir: str) -> None:
    """A stop asked for during startup (data dir opened, not yet serving) is still clean."""
    srv = start_server("fastkv", data_dir=workdir)
    srv.stop(signal.SIGTERM)
    log = open(srv.log_path, "ab")  # noqa: SIM115 - owned by the process
    srv.proc = subprocess.Popen(srv.argv, stdout=log, stderr=subprocess.STDOUT, env=srv.env)
    deadline = time.monotonic() + 15
    while "restarted member" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.005)
    srv.proc.send_signal(signal.SIGTERM)
    try:
        assert srv.proc.wait(STOP_WITHIN_S) == 0, srv.log()[-2000:]
        assert lock_is_free(os.path.join(workdir, "data"))
    finally:
        srv.stop(signal.SIGKILL)
