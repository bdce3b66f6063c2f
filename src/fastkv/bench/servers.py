"""Start fastkv or etcd on 127.0.0.1 for a benchmark run, or stand in for an endpoint started elsewhere.

Every run that starts its own system gets a fresh data directory, so runs do not inherit each other's
keys, WAL or snapshots.  Both systems get the same flags; etcd also gets ``--enable-v2``.  Both
acknowledge a write only after fdatasync (etcd's default, fastkv's only mode).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

SYSTEMS = ("fastkv", "etcd")
READY_TIMEOUT_S = 30.0
_rng = random.Random(os.getpid() ^ time.time_ns())


def free_port() -> int:
    """A TCP port in [20000, 32000) that binds on 127.0.0.1 now (below the ephemeral range)."""
    for _ in range(200):
        port = _rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def server_base_argv(kind: str) -> list[str]:
    if kind == "fastkv":
        return [sys.executable, "-m", "fastkv.cmd.server"]
    if kind == "etcd":
        return ["etcd", "--enable-v2"]
    raise ValueError(f"unknown system {kind!r}")


def http(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """One request; HTTP errors are returned as (status, body), connection errors raise OSError."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Member:
    """One server process this tool started."""

    url: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-chars:]
        except OSError as e:
            return f"<log unreadable: {e}>"


@dataclass
class Deployment:
    """A running system: the client URLs of its members, and the processes when this tool owns them."""

    kind: str
    urls: list[str]
    members: list[Member] = field(default_factory=list)
    base_dir: str | None = None

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def external(self) -> bool:
        return not self.members

    def pid(self) -> int | None:
        """The server's pid when this tool started a single member (for VmRSS)."""
        return self.members[0].proc.pid if len(self.members) == 1 else None

    def commands(self) -> list[str]:
        return [" ".join(m.argv) for m in self.members] or [f"(external endpoint {self.url})"]

    def log_tails(self) -> dict[str, str]:
        return {m.url: m.log_tail() for m in self.members}

    def stop(self) -> None:
        for m in self.members:
            m.stop()
        if self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "FASTKV_FAILPOINTS"))}


def _wait_ready(members: list[Member], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for m in members:
        while True:
            if m.proc.poll() is not None:
                raise RuntimeError(f"{m.url} exited with {m.proc.returncode}:\n{m.log_tail()}")
            try:
                if http(m.url + "/health", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{m.url} not healthy within {timeout} s:\n{m.log_tail()}")
            time.sleep(0.05)


def start(
    kind: str, size: int = 1, extra: list[str] | None = None, timeout: float = READY_TIMEOUT_S
) -> Deployment:
    """Start a ``size``-member ``kind`` cluster (static bootstrap) on free ports in a fresh temp dir and
    wait until every member answers /health, which needs an elected leader."""
    base_dir = tempfile.mkdtemp(prefix=f"fastkv-bench-{kind}-")
    names = [f"m{i}" for i in range(size)]
    ports = {n: (free_port(), free_port()) for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    env = child_env()
    members: list[Member] = []
    try:
        for n in names:
            url, peer = f"http://127.0.0.1:{ports[n][0]}", f"http://127.0.0.1:{ports[n][1]}"
            data_dir = os.path.join(base_dir, n)
            os.makedirs(data_dir)
            argv = server_base_argv(kind) + [
                "--name", n,
                "--data-dir", os.path.join(data_dir, "data"),
                "--listen-client-urls", url,
                "--advertise-client-urls", url,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{kind}",
            ] + (extra or [])  # fmt: skip
            log_path = os.path.join(data_dir, "server.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            members.append(Member(url, argv, proc, log_path))
        _wait_ready(members, timeout)
    except BaseException:
        for m in members:
            m.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
        raise
    return Deployment(kind, [m.url for m in members], members, base_dir)


def external(kind: str, url: str) -> Deployment:
    """An endpoint started elsewhere; its cluster members are found through /v2/members."""
    url = url.rstrip("/")
    urls = [url]
    try:
        status, body = http(url + "/v2/members")
        if status == 200:
            for m in json.loads(body).get("members", []):
                for u in m.get("clientURLs") or []:
                    if u.rstrip("/") not in urls:
                        urls.append(u.rstrip("/"))
    except (OSError, ValueError):
        pass
    return Deployment(kind, urls)


def leader_url(dep: Deployment, timeout: float = READY_TIMEOUT_S) -> str:
    """The client URL of the current leader, asking each member in turn until one names it."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for u in dep.urls:
            try:
                status, body = http(u + "/v2/members/leader", timeout=1)
                urls = json.loads(body).get("clientURLs") or [] if status == 200 else []
                if urls:
                    return str(urls[0]).rstrip("/")
                last = status
            except (OSError, ValueError) as e:
                last = e
        time.sleep(0.05)
    raise TimeoutError(f"no leader within {timeout} s: {last}")


def wait_write_ok(url: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Block until one PUT through ``url`` is acknowledged (the commit path works end to end)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, _ = http(url + "/v2/keys/bench-ready", "PUT", b"value=1")
            if status in (200, 201):
                return
            last = status
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"no write acknowledged through {url} within {timeout} s: {last}")


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
