"""systemd integration: sd_notify readiness (READY=1 only once the member has joined a
cluster with a leader), STOPPING=1 on SIGTERM, and the unit/environment files in
contrib/systemd that an operator installs."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastkv.server.config import FLAGS, parse_config
from tests.support.procs import fastkv_argv, free_port, start_server, wait_http_ok

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "systemd" / "fastkv.service"
ENV_FILE = REPO / "contrib" / "systemd" / "fastkv.conf"


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, directory: str, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"fastkv-test-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = os.path.join(directory, "notify.sock")
            self.sock.bind(path)
            self.env_value = path

    def messages(self, timeout: float) -> list[bytes]:
        """Every datagram that arrives within ``timeout`` seconds."""
        out = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recv(4096))
            except TimeoutError:
                break
        return out

    def wait_for(self, state: bytes, timeout: float) -> float:
        """Seconds until a datagram holding ``state`` arrives; fails after ``timeout``."""
        start = time.monotonic()
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(4096)
            except TimeoutError:
                break
            if state in msg.split(b"\n"):
                return time.monotonic() - start
        raise AssertionError(f"no {state!r} on the notify socket within {timeout}s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def workdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="fastkv-systemd-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_single_node_sends_ready_then_stopping(workdir: str, abstract: bool) -> None:
    ns = NotifySocket(workdir, abstract)
    srv = start_server("fastkv", data_dir=workdir, env_extra={"NOTIFY_SOCKET": ns.env_value})
    try:
        ns.wait_for(b"READY=1", 10)
        assert srv.stop(signal.SIGTERM) == 0
        assert b"STOPPING=1" in ns.messages(1.0)
    finally:
        srv.stop(signal.SIGKILL)
        ns.close()


def test_no_notify_socket_is_a_quiet_no_op(workdir: str) -> None:
    srv = start_server("fastkv", data_dir=workdir)
    try:
        assert srv.stop(signal.SIGTERM) == 0
        assert "notify" not in srv.log()
    finally:
        srv.stop(signal.SIGKILL)


def test_cluster_member_is_ready_only_with_a_quorum(workdir: str) -> None:
    """Started one by one, the first member of a 3-member cluster serves HTTP at once but
    tells systemd READY=1 only after a second member is up and a leader is elected."""
    names = ["m0", "m1", "m2"]
    ports = {n: (free_port(), free_port()) for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    for n in names:
        os.makedirs(os.path.join(workdir, n))
    sockets = {n: NotifySocket(os.path.join(workdir, n), abstract=False) for n in names}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(n: str) -> None:
        client, peer = f"http://127.0.0.1:{ports[n][0]}", f"http://127.0.0.1:{ports[n][1]}"
        argv = fastkv_argv() + [
            "--name", n, "--data-dir", os.path.join(workdir, n, "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial, "--initial-cluster-token", "systemd-test",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "FASTKV_FAILPOINTS"))}
        env["NOTIFY_SOCKET"] = sockets[n].env_value
        log = open(os.path.join(workdir, n, "server.log"), "ab")  # noqa: SIM115 - owned by the process
        procs[n] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    try:
        start("m0")
        # It answers clients (the version endpoint needs no leader) but is not ready.
        wait_http_ok(f"http://127.0.0.1:{ports['m0'][0]}/version", 15, procs["m0"])
        assert b"READY=1" not in b"\n".join(sockets["m0"].messages(3.0))
        assert procs["m0"].poll() is None
        start("m1")
        sockets["m0"].wait_for(b"READY=1", 20)
        sockets["m1"].wait_for(b"READY=1", 20)
        start("m2")
        sockets["m2"].wait_for(b"READY=1", 20)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for s in sockets.values():
            s.close()


# --- contrib/systemd -------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_file_shape() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["EnvironmentFile"].lstrip("-") == "/etc/fastkv/fastkv.conf"
    assert svc["ExecStart"].split()[0].startswith("/")
    assert svc["Restart"] == "on-failure"
    assert svc["LimitNOFILE"] == "40000"
    assert svc["User"]
    # A member of a new cluster is ready only with a quorum: systemd must wait long enough.
    assert svc["TimeoutStartSec"] in ("0", "infinity") or int(svc["TimeoutStartSec"].rstrip("s")) >= 60
    assert svc.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_unit_file_passes_systemd_analyze(workdir: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the structural test covers the unit)")
    # verify wants the ExecStart binary to exist: point it at a real executable.
    text = UNIT.read_text()
    exec_start = _unit()["Service"]["ExecStart"].split()[0]
    unit = Path(workdir) / "fastkv.service"
    unit.write_text(text.replace(exec_start, shutil.which("true") or "/bin/true"))
    r = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=30, check=False
    )
    # verify exits 0 even for unknown keys: any line about the unit is a problem.
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "fastkv.service" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def _env_file() -> dict[str, str]:
    env = {}
    for raw in ENV_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {raw!r}"
        env[key] = value.strip('"')
    return env


def _commented_variables() -> dict[str, str]:
    """The documented-but-commented ``#ETCD_X=value`` lines."""
    env = {}
    for raw in ENV_FILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#ETCD_"):
            key, _, value = line[1:].partition("=")
            env[key] = value.strip('"')
    return env


def test_environment_file_uses_only_accepted_variables(workdir: str) -> None:
    env = _env_file()
    commented = _commented_variables()
    assert env and all(k.startswith("ETCD_") for k in env)
    assert {"ETCD_NAME", "ETCD_DATA_DIR"} <= set(env)
    known = {fl.env for fl in FLAGS.values()}
    for key in list(env) + list(commented):
        assert key in known, f"{key} is not a flag fastkv accepts"
    env = dict(env, ETCD_DATA_DIR=os.path.join(workdir, "data"))
    cfg = parse_config([], env)
    assert not [ln for ln in cfg.log_lines if "unrecognized environment variable" in ln]
    assert cfg.name == env["ETCD_NAME"]
    # The commented examples are valid as a set too (a cluster member's configuration).
    cfg = parse_config([], dict(commented, ETCD_DATA_DIR=os.path.join(workdir, "data2")))
    assert not [ln for ln in cfg.log_lines if "unrecognized environment variable" in ln]
