"""Start fastkv or etcd on 127.0.0.1 for a benchmark run, or stand in for an endpoint started elsewhere.

Every run that starts its own system gets a fresh data directory, so runs do not inherit each other's
keys, WAL or snapshots.  Both systems get the same flags; etcd also gets ``--enable-v2``.  Both
acknowledge a write only after fdatasync (etcd's default, fastkv's only mode).

With ``tls=True`` the client URLs are https and both systems get ``--cert-file``/``--key-file`` of a
certificate generated into the run's directory (server-side TLS only: wrk cannot present a client
certificate, so neither system asks for one).  ``enable_auth`` turns on v2 auth through the HTTP API
with a ``bench`` user limited to the ``/bench`` keys; its passwords are random per run and appear in
no log, command line or result file.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from fastkv.bench import certs

SYSTEMS = ("fastkv", "etcd")
READY_TIMEOUT_S = 30.0
_rng = random.Random(os.getpid() ^ time.time_ns())


# Every port free_port returned: the members of one cluster ask for several before any binds, so a
# port is handed out once per process (a member given the same client and peer port cannot start).
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port in [20000, 32000) that binds on 127.0.0.1 now (below the ephemeral range) and was
    not returned before by this process."""
    for _ in range(200):
        port = _rng.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def server_base_argv(kind: str) -> list[str]:
    if kind == "fastkv":
        return [sys.executable, "-m", "fastkv.cmd.server"]
    if kind == "etcd":
        return ["etcd", "--enable-v2"]
    raise ValueError(f"unknown system {kind!r}")


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_file`` (the system's CAs when None)."""
    return ssl.create_default_context(cafile=ca_file)


def http(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 2.0,
    *,
    context: ssl.SSLContext | None = None,
    authorization: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> tuple[int, bytes]:
    """One request; HTTP errors are returned as (status, body), connection errors raise OSError
    (``ssl.SSLError`` included).  ``context`` verifies an https server."""
    headers = {"Content-Type": content_type} if body is not None else {}
    if authorization:
        headers["Authorization"] = authorization
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except urllib.error.URLError as e:  # connection refused, TLS handshake failure, ...
        if isinstance(e.reason, OSError):
            raise e.reason from None
        raise OSError(str(e.reason)) from None


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


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
    tls: certs.TLSFiles | None = None  # the certificates this tool generated for its servers
    ca_file: str | None = None  # what the tool's own requests trust (https URLs)
    authorization: str | None = field(default=None, repr=False)  # bench user's, once auth is on

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")

    def context(self) -> ssl.SSLContext | None:
        """The client TLS context for the tool's own requests (None for http)."""
        return tls_context(self.ca_file) if self.https else None

    @property
    def external(self) -> bool:
        return not self.members

    def pids(self) -> list[int]:
        """The pids of the members this tool started (none for an external endpoint)."""
        return [m.proc.pid for m in self.members]

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


def _wait_ready(members: list[Member], timeout: float, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    for m in members:
        while True:
            if m.proc.poll() is not None:
                raise RuntimeError(f"{m.url} exited with {m.proc.returncode}:\n{m.log_tail()}")
            try:
                if http(m.url + "/health", timeout=1, context=context)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{m.url} not healthy within {timeout} s:\n{m.log_tail()}")
            time.sleep(0.05)


def tls_flags(files: certs.TLSFiles | None) -> list[str]:
    """The client-side TLS flags, the same for both systems: the server's certificate and key."""
    if files is None:
        return []
    return ["--cert-file", files.cert_file, "--key-file", files.key_file]


def member_argv(
    kind: str,
    name: str,
    data_dir: str,
    client_url: str,
    peer_url: str,
    initial_cluster: str,
    extra: list[str] | None = None,
    tls: certs.TLSFiles | None = None,
) -> list[str]:
    """The command line of one member (static bootstrap of a new cluster)."""
    return server_base_argv(kind) + [
        "--name", name,
        "--data-dir", data_dir,
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", initial_cluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", f"bench-{kind}",
    ] + tls_flags(tls) + (extra or [])  # fmt: skip


def start(
    kind: str,
    size: int = 1,
    extra: list[str] | None = None,
    timeout: float = READY_TIMEOUT_S,
    tls: bool = False,
) -> Deployment:
    """Start a ``size``-member ``kind`` cluster (static bootstrap) on free ports in a fresh temp dir and
    wait until every member answers /health, which needs an elected leader.  ``tls``: https client
    URLs with a certificate generated into that directory (peer URLs stay http on loopback)."""
    base_dir = tempfile.mkdtemp(prefix=f"fastkv-bench-{kind}-")
    names = [f"m{i}" for i in range(size)]
    ports = {n: (free_port(), free_port()) for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    scheme = "https" if tls else "http"
    env = child_env()
    members: list[Member] = []
    try:
        files = certs.generate(os.path.join(base_dir, "tls")) if tls else None
        context = tls_context(files.ca_file) if files else None
        for n in names:
            url, peer = f"{scheme}://127.0.0.1:{ports[n][0]}", f"http://127.0.0.1:{ports[n][1]}"
            data_dir = os.path.join(base_dir, n)
            os.makedirs(data_dir)
            argv = member_argv(kind, n, os.path.join(data_dir, "data"), url, peer, initial, extra, files)
            log_path = os.path.join(data_dir, "server.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            members.append(Member(url, argv, proc, log_path))
        _wait_ready(members, timeout, context)
    except BaseException:
        for m in members:
            m.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
        raise
    return Deployment(
        kind, [m.url for m in members], members, base_dir, tls=files, ca_file=files.ca_file if files else None
    )


def external(kind: str, url: str, ca_file: str | None = None) -> Deployment:
    """An endpoint started elsewhere; its cluster members are found through /v2/members.  An https
    endpoint is verified against ``ca_file`` (the system's CAs when None)."""
    url = url.rstrip("/")
    urls = [url]
    context = tls_context(ca_file) if url.startswith("https://") else None
    try:
        status, body = http(url + "/v2/members", context=context)
        if status == 200:
            for m in json.loads(body).get("members", []):
                for u in m.get("clientURLs") or []:
                    if u.rstrip("/") not in urls:
                        urls.append(u.rstrip("/"))
    except (OSError, ValueError):
        pass
    return Deployment(kind, urls, ca_file=ca_file)


def leader_url(dep: Deployment, timeout: float = READY_TIMEOUT_S) -> str:
    """The client URL of the current leader, asking each member in turn until one names it."""
    deadline = time.monotonic() + timeout
    last: object = None
    context = dep.context()
    while time.monotonic() < deadline:
        for u in dep.urls:
            try:
                status, body = http(u + "/v2/members/leader", timeout=1, context=context)
                urls = json.loads(body).get("clientURLs") or [] if status == 200 else []
                if urls:
                    return str(urls[0]).rstrip("/")
                last = status
            except ssl.SSLCertVerificationError:
                raise
            except (OSError, ValueError) as e:
                last = e
        time.sleep(0.05)
    raise TimeoutError(f"no leader within {timeout} s: {last}")


def wait_write_ok(url: str, timeout: float = READY_TIMEOUT_S, context: ssl.SSLContext | None = None) -> None:
    """Block until one PUT through ``url`` is acknowledged (the commit path works end to end)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, _ = http(url + "/v2/keys/bench-ready", "PUT", b"value=1", context=context)
            if status in (200, 201):
                return
            last = status
        except ssl.SSLCertVerificationError:
            raise  # waiting does not make the certificate trusted
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


# -- v2 auth -------------------------------------------------------------------------------------

BENCH_USER = "bench"
BENCH_ROLE = "bench"
BENCH_PATTERNS = ["/bench*", "/bench/*"]  # etcd's prefix rules; kv.lua and fill.lua write /bench/k<n>


class AuthSetupError(RuntimeError):
    """A step of enabling auth got an answer other than the one etcd gives."""


def auth_steps(
    root_password: str, bench_password: str
) -> list[tuple[str, str, dict[str, object], tuple[int, ...], bool]]:
    """The requests that turn auth on, in order: (method, path, JSON body, accepted statuses, as root).

    The root user, a ``bench`` role with read and write on the ``/bench`` keys, a ``bench`` user
    holding it, auth enabled, and the guest role (created by the enable with access to every key)
    stripped of its permissions, so a request without credentials is refused rather than served as
    the guest's."""
    perms = {"read": BENCH_PATTERNS, "write": BENCH_PATTERNS}
    every = {"read": ["/*"], "write": ["/*"]}
    return [
        ("PUT", "/v2/auth/users/root", {"user": "root", "password": root_password}, (200, 201), False),
        (
            "PUT",
            f"/v2/auth/roles/{BENCH_ROLE}",
            {"role": BENCH_ROLE, "permissions": {"kv": perms}},
            (200, 201),
            False,
        ),
        (
            "PUT",
            f"/v2/auth/users/{BENCH_USER}",
            {"user": BENCH_USER, "password": bench_password, "roles": [BENCH_ROLE]},
            (200, 201),
            False,
        ),
        ("PUT", "/v2/auth/enable", {}, (200,), True),
        ("PUT", "/v2/auth/roles/guest", {"role": "guest", "revoke": {"kv": every}}, (200,), True),
    ]


def _answer(status: int, body: bytes) -> str:
    return f"{status} {body.decode('utf-8', 'replace').strip()[:500]}"


def enable_auth(dep: Deployment, url: str | None = None, timeout: float = 30.0) -> str:
    """Turn v2 auth on through ``url`` (the deployment's first member by default) and check it took:
    auth reported enabled, a PUT without credentials refused (401), the ``bench`` user's PUT
    accepted and its PUT outside ``/bench`` refused.  Returns the bench user's ``Authorization``
    header (also kept as ``dep.authorization``).  Raises AuthSetupError naming the step and the
    server's answer; the request bodies (they carry passwords) are never part of the message."""
    url = (url or dep.url).rstrip("/")
    context = dep.context()
    root_password, bench_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    root = basic_authorization("root", root_password)
    bench = basic_authorization(BENCH_USER, bench_password)
    for method, path, obj, ok, as_root in auth_steps(root_password, bench_password):
        status, body = http(
            url + path,
            method,
            json.dumps(obj).encode(),
            timeout,
            context=context,
            authorization=root if as_root else None,
            content_type="application/json",
        )
        if status not in ok:
            raise AuthSetupError(
                f"enabling auth on {dep.kind}: {method} {path} answered {_answer(status, body)}"
            )

    def check(what: str, method: str, path: str, authz: str | None, want: tuple[int, ...]) -> None:
        data = b"value=1" if method == "PUT" else None
        status, body = http(url + path, method, data, timeout, context=context, authorization=authz)
        if status not in want:
            raise AuthSetupError(
                f"auth on {dep.kind} does not hold: {what}: {method} {path} answered {_answer(status, body)}, "
                f"expected {' or '.join(map(str, want))}"
            )

    status, body = http(url + "/v2/auth/enable", timeout=timeout, context=context)
    try:
        enabled = status == 200 and json.loads(body).get("enabled") is True
    except ValueError:
        enabled = False
    if not enabled:
        raise AuthSetupError(f"auth on {dep.kind}: GET /v2/auth/enable answered {_answer(status, body)}")
    check("no credentials", "PUT", "/v2/keys/bench/auth-check", None, (401,))
    check("user bench", "PUT", "/v2/keys/bench/auth-check", bench, (200, 201))
    check("user bench outside /bench", "PUT", "/v2/keys/other/auth-check", bench, (401,))
    check("user bench reading", "GET", "/v2/keys/bench/auth-check", bench, (200,))
    dep.authorization = bench
    return bench


# -- probes ----------------------------------------------------------------------------------------


def tls_session(url: str, context: ssl.SSLContext, timeout: float = 5.0) -> str:
    """Protocol and cipher a TLS client with this machine's OpenSSL defaults negotiates with ``url``."""
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as s,
    ):
        cipher = s.cipher()
        return f"{s.version()} {cipher[0] if cipher else '?'}"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], idle_cores: float = 0.1, window_s: float = 0.2, timeout: float = 20.0) -> float:
    """Wait until the processes together use less than ``idle_cores`` over a ``window_s`` window
    (work queued by a load that has ended, such as password checks, is done); seconds waited."""
    t0 = time.monotonic()
    if not pids:
        return 0.0
    prev = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - t0 < timeout:
        time.sleep(window_s)
        now = sum(cpu_seconds(p) for p in pids)
        if now - prev < idle_cores * window_s:
            break
        prev = now
    return time.monotonic() - t0
