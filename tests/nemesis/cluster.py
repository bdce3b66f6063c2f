"""A 3-member cluster (fastkv or etcd) the nemesis can hurt: processes, links, disks and clocks.

fastkv: every member dials each peer through its own fault proxy (FASTKV_PEER_DIAL names the
proxy per peer id), so a link is one ordered pair of members: ``block(a, b)`` drops what ``a``
sends to ``b`` and nothing else.  Disks fail and wall clocks jump through the LD_PRELOAD library
of faultlib.c (control files per member), loaded only when the run has disk or clock faults, so
other runs see untouched processes.

etcd: started the same way (static bootstrap, same timing flags); its members dial the advertised
peer URLs themselves, so links are cut with iptables instead (tests/nemesis/iptables.py: each
member under its own uid, connections marked by who dialed them) when the harness runs as root
with iptables.  etcd is a static Go binary that an LD_PRELOAD library cannot reach: no disk or
clock faults for it.  ``supports`` says which fault kinds a cluster can do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from fastkv.server.identity import format_id, member_id_for
from fastkv.transport.faultproxy import ThreadedFaultProxy
from fastkv.transport.transport import PEER_DIAL_ENV
from tests.nemesis import iptables
from tests.support.history import Ambiguous, NotSent, call
from tests.support.procs import ServerProcess, fastkv_argv, free_port, start_cluster, wait_http_ok

TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]
HERE = os.path.dirname(os.path.abspath(__file__))


class HarnessError(Exception):
    """The harness could not do what the schedule asked (a member did not come back, ...)."""


def build_fault_lib(cache_dir: str) -> str | None:
    """Compiles faultlib.c into ``cache_dir`` (once); None when no C compiler is there."""
    src = os.path.join(HERE, "faultlib.c")
    out = os.path.join(cache_dir, "libnemesisfault.so")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    os.makedirs(cache_dir, exist_ok=True)
    tmp = out + f".{os.getpid()}.tmp"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", tmp, src, "-ldl"], check=True, capture_output=True)
    os.replace(tmp, out)
    return out


def _distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class Cluster:
    """Three members named m0..m2 (more join through ``replace_member``); ``log`` receives one
    line per action, for the run's record."""

    def __init__(
        self,
        target: str,
        base_dir: str,
        log: Callable[[str], None],
        disk_faults: bool = False,
        clock_faults: bool = False,
        size: int = 3,
        token: str = "nemesis",
    ) -> None:
        if target not in ("fastkv", "etcd"):
            raise ValueError(f"unknown target {target!r}")
        self.target = target
        self.base_dir = base_dir
        self.log = log
        self.token = token
        self.names = [f"m{i}" for i in range(size)]
        self.proxies: dict[tuple[str, str], ThreadedFaultProxy] = {}
        self.links: iptables.IptablesLinks | None = None
        self.blocked: set[tuple[str, str]] = set()
        self.paused: set[str] = set()
        self.removed: set[str] = set()
        self.members: dict[str, ServerProcess] = {}
        self.control_dir = os.path.join(base_dir, "control")
        os.makedirs(self.control_dir, exist_ok=True)
        self._lock = threading.Lock()
        self._next_member = size
        member_env: dict[str, dict[str, str]] = {n: {} for n in self.names}
        pairs = [(a, b) for a in self.names for b in self.names if a != b]
        use_proxies = target == "fastkv"
        free = _distinct_ports(2 * size + (len(pairs) if use_proxies else 0))
        ports = {n: (free[2 * i], free[2 * i + 1]) for i, n in enumerate(self.names)}
        if use_proxies:
            ids = {n: member_id_for([f"http://127.0.0.1:{ports[n][1]}"], token) for n in self.names}
            for i, (a, b) in enumerate(pairs):
                self.proxies[(a, b)] = ThreadedFaultProxy(ports[b][1], listen_port=free[2 * size + i])
            for a in self.names:
                member_env[a][PEER_DIAL_ENV] = ",".join(
                    f"{format_id(ids[b])}=http://127.0.0.1:{self.proxies[(a, b)].port}"
                    for b in self.names
                    if b != a
                )
        self.fault_lib: str | None = None
        if (disk_faults or clock_faults) and target == "fastkv":
            self.fault_lib = build_fault_lib(os.path.join(tempfile.gettempdir(), "nemesis-lib"))
        for n in self.names:
            member_env[n].update(self._fault_env(n))
        try:
            if target == "etcd" and iptables.available():
                self.links = iptables.IptablesLinks()
                self.members = self._start_etcd_per_uid(ports)
            else:
                members = start_cluster(
                    target,
                    size,
                    base_dir=base_dir,
                    extra=TIMING,
                    token=token,
                    ports=ports,
                    member_env=member_env,
                    timeout=60,
                )
                self.members = dict(zip(self.names, members, strict=True))
        except Exception:
            self._close_links()
            raise

    def _as_uid(self, name: str, peer_port: int, data_dir: str) -> list[str]:
        """The argv prefix running member ``name`` under its own uid (its connections marked)."""
        assert self.links is not None
        uid = self.links.add_member(name, peer_port)
        os.chmod(self.base_dir, 0o755)
        os.makedirs(data_dir, exist_ok=True)
        os.chown(data_dir, uid, uid)
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]

    def _start_etcd_per_uid(self, ports: dict[str, tuple[int, int]]) -> dict[str, ServerProcess]:
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in self.names)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        members: dict[str, ServerProcess] = {}
        for n in self.names:
            url, peer = f"http://127.0.0.1:{ports[n][0]}", f"http://127.0.0.1:{ports[n][1]}"
            data_dir = os.path.join(self.base_dir, n)
            argv = self._as_uid(n, ports[n][1], data_dir) + [
                "etcd", "--enable-v2", "--name", n, "--data-dir", os.path.join(data_dir, "data"),
                "--listen-client-urls", url, "--advertise-client-urls", url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token, *TIMING,
            ]  # fmt: skip
            log_path = os.path.join(data_dir, "server.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            members[n] = ServerProcess("etcd", url, peer, data_dir, argv, proc, log_path, env)
        try:
            for m in members.values():
                wait_http_ok(m.url + "/health", 60, m.proc)
        except (RuntimeError, TimeoutError) as e:
            for m in members.values():
                m.kill9()
            raise HarnessError(f"etcd cluster did not start: {e}") from None
        return members

    # --- what this cluster can do -------------------------------------------------------------

    def supports(self, kind: str) -> bool:
        if kind == "partition":
            return bool(self.proxies) or self.links is not None
        if kind in ("disk", "clock"):
            return self.fault_lib is not None
        return kind in ("process", "membership")

    def _fault_env(self, name: str) -> dict[str, str]:
        if not self.fault_lib:
            return {}
        return {
            "LD_PRELOAD": self.fault_lib,
            "NEMESIS_DISK_FAULT": os.path.join(self.control_dir, f"{name}.disk"),
            "NEMESIS_CLOCK_OFFSET": os.path.join(self.control_dir, f"{name}.clock"),
        }

    # --- members --------------------------------------------------------------------------------

    def live(self) -> list[ServerProcess]:
        """Members in the cluster (not removed), running or not."""
        return [m for n, m in self.members.items() if n not in self.removed]

    def client_urls(self) -> list[str]:
        return [m.url for m in self.live()]

    def name_of(self, m: ServerProcess) -> str:
        return next(n for n, x in self.members.items() if x is m)

    def running(self, m: ServerProcess) -> bool:
        return m.proc.poll() is None

    def leader(self, timeout: float = 20.0) -> ServerProcess:
        """The member every reachable running member names as leader."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            views: dict[str, str | None] = {}
            for m in self.live():
                if not self.running(m) or self.name_of(m) in self.paused:
                    continue
                try:
                    status, body = call(m.url, "GET", "/v2/members/leader", timeout=1.0)
                    views[m.url] = body["peerURLs"][0] if status == 200 else None
                except (Ambiguous, NotSent, KeyError, TypeError):
                    views[m.url] = None
            last = views
            agreed = set(views.values())
            if len(agreed) == 1 and None not in agreed:
                peer = agreed.pop()
                for m in self.live():
                    if m.peer_url == peer:
                        return m
            time.sleep(0.05)
        raise HarnessError(f"no agreed leader within {timeout}s: {last}")

    def kill9(self, m: ServerProcess) -> None:
        self.log(f"kill -9 {self.name_of(m)}")
        self.paused.discard(self.name_of(m))
        m.kill9()

    def start(self, m: ServerProcess, wait: bool = True, timeout: float = 60.0) -> None:
        """(Re)starts a member that is not running on its data dir."""
        if self.running(m):
            return
        self.log(f"start {self.name_of(m)}")
        m.launch()
        if wait:
            self.wait_up(m, timeout)

    def wait_up(self, m: ServerProcess, timeout: float = 60.0, restarts: int = 2) -> None:
        """Waits until ``m`` answers /health.  A member that exits meanwhile on its own (a disk
        error that struck just before the fault was undone is fatal a moment later) is started
        again, as an operator would, at most ``restarts`` times."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait_http_ok(m.url + "/health", max(1.0, deadline - time.monotonic()), m.proc)
                return
            except (RuntimeError, TimeoutError) as e:
                if restarts > 0 and not self.running(m) and time.monotonic() < deadline:
                    restarts -= 1
                    self.log(
                        f"{self.name_of(m)} exited ({m.proc.returncode}) while coming back: started again"
                    )
                    m.launch()
                    continue
                raise HarnessError(f"{self.name_of(m)} did not come back: {e}\n{m.log()[-1500:]}") from None

    def pause(self, m: ServerProcess) -> None:
        self.log(f"SIGSTOP {self.name_of(m)}")
        self.paused.add(self.name_of(m))
        m.proc.send_signal(signal.SIGSTOP)

    def resume(self, m: ServerProcess) -> None:
        self.log(f"SIGCONT {self.name_of(m)}")
        self.paused.discard(self.name_of(m))
        if self.running(m):
            m.proc.send_signal(signal.SIGCONT)

    # --- links ----------------------------------------------------------------------------------

    def block(self, src: ServerProcess, dst: ServerProcess) -> None:
        """Drop what ``src`` sends to ``dst`` (one direction)."""
        a, b = self.name_of(src), self.name_of(dst)
        self.log(f"block {a} -> {b}")
        if self.links is not None:
            self.links.block(a, b)
        else:
            self.proxies[(a, b)].set_blackhole()
        self.blocked.add((a, b))

    def heal_links(self) -> None:
        if self.blocked:
            self.log("heal all links")
        if self.links is not None:
            self.links.heal()
        else:
            for pair in list(self.blocked):
                self.proxies[pair].heal()
        self.blocked.clear()

    # --- disks and clocks -----------------------------------------------------------------------

    def set_disk(self, m: ServerProcess, fault: str) -> None:
        """``fault``: 'fsync' (fsync fails with EIO), 'enospc' (disk full) or '' (healed)."""
        name = self.name_of(m)
        self.log(f"disk {name}: {fault or 'healed'}")
        path = os.path.join(self.control_dir, f"{name}.disk")
        with open(path + ".tmp", "w") as f:
            f.write(fault)
        os.replace(path + ".tmp", path)

    def set_clock(self, m: ServerProcess, offset_s: int) -> None:
        """Steps ``m``'s wall clock to ``offset_s`` from true time (within 20 ms)."""
        name = self.name_of(m)
        self.log(f"clock {name}: {offset_s:+d}s")
        path = os.path.join(self.control_dir, f"{name}.clock")
        with open(path + ".tmp", "w") as f:
            f.write(f"{offset_s}\n")
        os.replace(path + ".tmp", path)

    # --- membership -----------------------------------------------------------------------------

    def replace_member(self, victim: ServerProcess, timeout: float = 60.0) -> ServerProcess:
        """Removes ``victim`` through the members API, waits for it to leave, then adds a fresh
        member (new name, ports and data dir) and starts it with --initial-cluster-state existing.
        The new member dials its peers directly (no proxy): it is not partitionable."""
        vname = self.name_of(victim)
        others = [m for m in self.live() if m is not victim]
        ident = self._member_id(others[0], victim.peer_url)
        self.log(f"member remove {vname} ({ident})")
        self._until(
            f"remove {vname}",
            lambda: self._members_call(others, "DELETE", f"/v2/members/{ident}", ok=(204, 404)),
            timeout,
        )
        self._until(
            f"{vname} gone from the member list",
            lambda: self._member_id(others[0], victim.peer_url) is None,
            timeout,
        )
        self.removed.add(vname)
        try:
            victim.proc.wait(15)
        except subprocess.TimeoutExpired:
            victim.kill9()
        name = f"m{self._next_member}"
        self._next_member += 1
        cport, pport = _distinct_ports(2)
        url, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
        self.log(f"member add {name} {peer}")
        self._until(
            f"add {name}",
            lambda: (
                self._members_call(others, "POST", "/v2/members", json_body={"peerURLs": [peer]}, ok=(201,))
                or self._member_id(others[0], peer) not in (None, "?")
            ),
            timeout,
        )
        body: Any = None

        def listed() -> bool:
            nonlocal body
            try:
                status, body = call(others[0].url, "GET", "/v2/members", timeout=5)
            except (Ambiguous, NotSent):
                return False
            return status == 200 and any(peer in m["peerURLs"] for m in body["members"])

        self._until(f"{name} in the member list", listed, timeout)
        initial = []
        for mem in body["members"]:
            mname = mem.get("name") or (name if peer in mem["peerURLs"] else "")
            initial.append(f"{mname}={mem['peerURLs'][0]}")
        data_dir = os.path.join(self.base_dir, name)
        os.makedirs(data_dir, exist_ok=True)
        base = fastkv_argv() if self.target == "fastkv" else ["etcd", "--enable-v2"]
        if self.links is not None:
            base = self._as_uid(name, pport, data_dir) + base
        argv = base + [
            "--name", name,
            "--data-dir", os.path.join(data_dir, "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", ",".join(initial),
            "--initial-cluster-state", "existing",
        ] + TIMING  # fmt: skip
        env = {k: v for k, v in victim.env.items() if k != PEER_DIAL_ENV}
        env.update(self._fault_env(name))
        log_path = os.path.join(data_dir, "server.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        member = ServerProcess(self.target, url, peer, data_dir, argv, proc, log_path, env)
        self.members[name] = member
        self.wait_up(member, timeout)
        return member

    def _member_id(self, via: ServerProcess, peer_url: str) -> str | None:
        try:
            status, body = call(via.url, "GET", "/v2/members", timeout=2)
        except (Ambiguous, NotSent):
            return "?"  # unknown: keep waiting
        if status != 200:
            return "?"
        return next((m["id"] for m in body["members"] if peer_url in m["peerURLs"]), None)

    def _members_call(
        self,
        via: list[ServerProcess],
        method: str,
        path: str,
        json_body: Any = None,
        ok: tuple[int, ...] = (),
    ) -> bool:
        import json
        import urllib.error
        import urllib.request

        for m in via:
            data = json.dumps(json_body).encode() if json_body is not None else None
            req = urllib.request.Request(m.url + path, data=data, method=method)
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                continue
            if status in ok:
                return True
        return False

    @staticmethod
    def _until(what: str, cond: Callable[[], Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.5)
        raise HarnessError(f"{what}: not within {timeout}s")

    # --- back to normal and away ----------------------------------------------------------------

    def heal_all(self, timeout: float = 60.0) -> None:
        """Undo every fault: links, disks, clocks, paused and stopped members; wait until every
        member answers /health."""
        self.heal_links()
        for m in self.live():
            name = self.name_of(m)
            if os.path.exists(os.path.join(self.control_dir, f"{name}.disk")):
                self.set_disk(m, "")
            if os.path.exists(os.path.join(self.control_dir, f"{name}.clock")):
                self.set_clock(m, 0)
            if name in self.paused:
                self.resume(m)
        for m in self.live():
            if not self.running(m):
                self.start(m, wait=False)
        for m in self.live():
            self.wait_up(m, timeout)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {n}\n{m.log()[-tail:]}" for n, m in self.members.items())

    def _close_links(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        if self.links is not None:
            self.links.close()

    def close(self) -> None:
        for m in self.members.values():
            if self.running(m):
                m.proc.send_signal(signal.SIGCONT)
                m.kill9()
        self._close_links()
