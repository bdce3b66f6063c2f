"""Start real servers (fastkv or etcd) on 127.0.0.1 for tests, with bounded waits.

Ports come from fastkv.testing.free_port: at random below 32768 (the kernel's ephemeral range
starts there, so a fixed port above it could collide with an outgoing connection), checked by
binding, never twice in one process.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

from fastkv.testing.ports import free_port as _free_port

# Data dirs made here (no directory given): removed when the test process exits.
_made_dirs: list[str] = []


@atexit.register
def _remove_made_dirs() -> None:
    for d in _made_dirs:
        shutil.rmtree(d, ignore_errors=True)


def _make_dir(prefix: str) -> str:
    d = tempfile.mkdtemp(prefix=prefix)
    _made_dirs.append(d)
    return d


def free_port() -> int:
    """A TCP port below 32768 that is free on 127.0.0.1 right now and was not handed out before by
    this process: fastkv.testing's, so these helpers and the pytest plugin's fixtures draw from one
    set of handed-out ports."""
    return _free_port()


def have_etcd() -> bool:
    return shutil.which("etcd") is not None and shutil.which("etcdctl") is not None


def wait_http_ok(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - still starting
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


@dataclass
class ServerProcess:
    """A running server: ``kind`` is 'fastkv' or 'etcd'; ``url`` its client URL."""

    kind: str
    url: str
    peer_url: str
    data_dir: str
    argv: list[str]
    proc: subprocess.Popen
    log_path: str
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def launch(self) -> None:
        """Start the (stopped) server again with ``argv``, without waiting for it."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def restart(self, timeout: float = 20.0) -> None:
        self.stop()
        self.launch()
        wait_http_ok(self.url + "/health", timeout, self.proc)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


def single_member_args(data_dir: str, name: str, url: str, peer_url: str) -> list[str]:
    """etcd's flags for a one-member cluster serving ``url`` and ``peer_url``."""
    return [
        "--name", name,
        "--data-dir", data_dir,
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"{name}={peer_url}",
    ]  # fmt: skip


def fastkv_argv() -> list[str]:
    return [sys.executable, "-m", "fastkv.cmd.server"]


def start_server(
    kind: str,
    data_dir: str | None = None,
    extra: list[str] | None = None,
    name: str = "default",
    timeout: float = 20.0,
    env_extra: dict[str, str] | None = None,
) -> ServerProcess:
    """Start a single-member fastkv or etcd (with --enable-v2) on free 127.0.0.1 ports."""
    cport, pport = free_port(), free_port()
    url, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    data_dir = data_dir or _make_dir(f"{kind}-test-")
    base = fastkv_argv() if kind == "fastkv" else ["etcd", "--enable-v2"]
    argv = base + single_member_args(os.path.join(data_dir, "data"), name, url, peer) + (extra or [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "FASTKV_FAILPOINTS"))}
    env.update(env_extra or {})
    log_path = os.path.join(data_dir, "server.log")
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = ServerProcess(kind, url, peer, data_dir, argv, proc, log_path, env)
    try:
        wait_http_ok(url + "/health", timeout, proc)
    except Exception:
        srv.stop(signal.SIGKILL)
        raise RuntimeError(f"{kind} did not start: {srv.log()[-2000:]}") from None
    return srv


def start_cluster(
    kind: str,
    size: int = 3,
    base_dir: str | None = None,
    extra: list[str] | None = None,
    token: str = "test-cluster",
    timeout: float = 30.0,
    env_extra: dict[str, str] | None = None,
    ports: dict[str, tuple[int, int]] | None = None,
    member_env: dict[str, dict[str, str]] | None = None,
) -> list[ServerProcess]:
    """Start a ``size``-member fastkv or etcd cluster on free 127.0.0.1 ports (static bootstrap,
    --initial-cluster-state new), all members at once, and wait until each answers /health
    (which needs a leader).  Members are named m0, m1, ...; each data dir is under base_dir.
    ``ports``: name -> (client port, peer port), chosen by the caller (e.g. to aim proxies at
    them first); ``member_env``: name -> environment added for that member only."""
    base_dir = base_dir or _make_dir(f"{kind}-cluster-")
    names = [f"m{i}" for i in range(size)]
    ports = ports or {n: (free_port(), free_port()) for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "FASTKV_FAILPOINTS"))}
    env.update(env_extra or {})
    base = fastkv_argv() if kind == "fastkv" else ["etcd", "--enable-v2"]
    members: list[ServerProcess] = []
    for n in names:
        url, peer = f"http://127.0.0.1:{ports[n][0]}", f"http://127.0.0.1:{ports[n][1]}"
        data_dir = os.path.join(base_dir, n)
        os.makedirs(data_dir, exist_ok=True)
        argv = base + [
            "--name",
            n,
            "--data-dir",
            os.path.join(data_dir, "data"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            token,
        ]
        argv += extra or []
        log_path = os.path.join(data_dir, "server.log")
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
        menv = {**env, **(member_env or {}).get(n, {})}
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=menv)
        members.append(ServerProcess(kind, url, peer, data_dir, argv, proc, log_path, menv))
    try:
        for m in members:
            wait_http_ok(m.url + "/health", timeout, m.proc)
    except Exception:
        logs = "\n".join(f"--- {m.data_dir}\n{m.log()[-1500:]}" for m in members)
        for m in members:
            m.stop(signal.SIGKILL)
        raise RuntimeError(f"{kind} cluster did not start:\n{logs}") from None
    return members


def spawn_member(
    kind: str,
    name: str,
    base_dir: str,
    args: list[str],
    env_extra: dict[str, str] | None = None,
    ports: tuple[int, int] | None = None,
) -> ServerProcess:
    """Start one fastkv or etcd member named ``name`` on 127.0.0.1 (``ports`` = (client, peer),
    free ones by default) with only the bootstrap flags in ``args`` (discovery, SRV ...) added,
    without waiting for it; its data dir and log are under ``base_dir/name``.  Use
    ``wait_http_ok(m.url + "/health", ...)`` to wait."""
    cport, pport = ports or (free_port(), free_port())
    url, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    data_dir = os.path.join(base_dir, name)
    os.makedirs(data_dir, exist_ok=True)
    base = fastkv_argv() if kind == "fastkv" else ["etcd", "--enable-v2"]
    argv = base + [
        "--name", name,
        "--data-dir", os.path.join(data_dir, "data"),
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
    ] + args  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "FASTKV_FAILPOINTS"))}
    env.update(env_extra or {})
    log_path = os.path.join(data_dir, "server.log")
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return ServerProcess(kind, url, peer, data_dir, argv, proc, log_path, env)
