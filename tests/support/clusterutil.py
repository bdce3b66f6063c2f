"""Shared pieces of the multi-member process tests: HTTP requests, leader lookups, a writer
that records acknowledged writes, and the check that every acknowledged write is on every member."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from tests.support.procs import ServerProcess, fastkv_argv, free_port

# Short timeouts keep failover quick; the ratio is etcd's default (10 ticks per election).
TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def request(
    url: str,
    method: str = "GET",
    data: dict[str, str] | None = None,
    timeout: float = 10.0,
    json_body: object = None,
):
    """(status, headers, decoded JSON body) of one request; a form body from ``data`` or a JSON
    body from ``json_body``."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    ctype = "application/x-www-form-urlencoded"
    if json_body is not None:
        body, ctype = json.dumps(json_body).encode(), "application/json"
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def put(m: ServerProcess, key: str, value: str) -> dict:
    status, _, body = request(f"{m.url}/v2/keys/{key}", "PUT", {"value": value})
    assert status in (200, 201), (status, body)
    return body


def wait_value(m: ServerProcess, key: str, value: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, _, body = request(f"{m.url}/v2/keys/{key}", timeout=2)
            last = (status, body)
            if status == 200 and body["node"]["value"] == value:
                return
        except OSError as e:
            last = e
        time.sleep(0.02)
    raise AssertionError(f"{m.url}: {key} != {value!r} after {timeout}s: {last}")


def leader_ids(members: list[ServerProcess]) -> list[str | None]:
    out: list[str | None] = []
    for m in members:
        try:
            status, _, body = request(f"{m.url}/v2/members/leader", timeout=2)
            out.append(body["id"] if status == 200 else None)
        except OSError:
            out.append(None)
    return out


def wait_one_leader(members: list[ServerProcess], timeout: float = 15.0, not_id: str = "") -> str:
    deadline = time.monotonic() + timeout
    ids: list[str | None] = []
    while time.monotonic() < deadline:
        ids = leader_ids(members)
        if ids[0] is not None and ids[0] != not_id and all(i == ids[0] for i in ids):
            return ids[0]
        time.sleep(0.05)
    raise AssertionError(f"members do not agree on a leader within {timeout}s: {ids}")


def member_by_id(members: list[ServerProcess], ident: str) -> ServerProcess:
    status, _, body = request(f"{members[0].url}/v2/members")
    urls = {m["id"]: m["peerURLs"][0] for m in body["members"]}
    return next(m for m in members if m.peer_url == urls[ident])


class Writer(threading.Thread):
    """Writes k0, k1, ... through the members in turn; records what was acknowledged."""

    def __init__(self, members: list[ServerProcess]) -> None:
        super().__init__(daemon=True)
        self.members = members
        self.acked: dict[str, str] = {}
        self.ack_times: list[tuple[float, float]] = []  # (sent, acknowledged)
        self.stop_flag = threading.Event()
        self.skip: set[str] = set()  # urls not to use (killed)

    def run(self) -> None:
        n = 0
        turn = 0
        while not self.stop_flag.is_set():
            targets = [m for m in self.members if m.url not in self.skip]
            m = targets[turn % len(targets)]
            turn += 1
            key, value = f"w{n}", f"value-{n}"
            sent = time.monotonic()
            try:
                status, _, _ = request(f"{m.url}/v2/keys/{key}", "PUT", {"value": value}, timeout=2)
            except OSError:
                time.sleep(0.01)
                continue
            if status in (200, 201):
                self.acked[key] = value
                self.ack_times.append((sent, time.monotonic()))
                n += 1
            else:
                time.sleep(0.01)


def check_all_acked(members: list[ServerProcess], acked: dict[str, str], timeout: float = 20.0) -> None:
    for m in members:
        deadline = time.monotonic() + timeout
        while True:
            status, _, body = request(f"{m.url}/v2/keys/?recursive=true")
            have = (
                {n["key"][1:]: n.get("value") for n in body["node"].get("nodes", [])} if status == 200 else {}
            )
            missing = {k: v for k, v in acked.items() if have.get(k) != v}
            if not missing:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{m.url} lacks {len(missing)} acknowledged writes: {sorted(missing)[:5]}"
                )
            time.sleep(0.05)


def ctl(tool: str, url: str, *args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    argv = ["etcdctl"] if tool == "etcdctl" else [sys.executable, "-m", "fastkv.cli.main"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["ETCDCTL_API"] = "2"
    p = subprocess.run(
        argv + ["--endpoints", url, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    return p.returncode, p.stdout, p.stderr


def members_of(url: str) -> list[dict]:
    status, _, body = request(f"{url}/v2/members", timeout=5)
    assert status == 200, body
    return body["members"]


def until(what: str, check, timeout: float = 20.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def add_member(tool: str, url: str, name: str, peer: str) -> tuple[str, dict[str, str]]:
    """``member add`` until the strict reconfiguration check lets it through (the member taking
    the request must have been connected to every peer for 5 s); returns the new id and the
    environment the tool printed for the new member."""
    out = ""

    def attempt() -> bool:
        nonlocal out
        rc, out, err = ctl(tool, url, "member", "add", name, peer)
        if rc == 0:
            return True
        assert not any(peer in m["peerURLs"] for m in members_of(url.split(",")[0])), (
            f"add failed but happened: {err}"
        )
        return False

    until(f"member add {name}", attempt, timeout=30, every=0.5)
    m = re.match(r"Added member named (\S+) with ID ([0-9a-f]+) to cluster\n\n", out)
    assert m is not None and m.group(1) == name, out
    env = dict(re.findall(r'^(ETCD_[A-Z_]+)="(.*)"$', out, re.M))
    assert env["ETCD_NAME"] == name and env["ETCD_INITIAL_CLUSTER_STATE"] == "existing", out
    assert f"{name}={peer}" in env["ETCD_INITIAL_CLUSTER"].split(","), out
    return m.group(2), env


def start_joining(base_dir: str, env_vars: dict[str, str], extra: list[str] | None = None) -> ServerProcess:
    """Start the member ``member add`` announced, configured the way etcdctl's output says:
    its name, initial cluster and state from the environment, its URLs from flags."""
    name = env_vars["ETCD_NAME"]
    peer = next(
        u.split("=", 1)[1] for u in env_vars["ETCD_INITIAL_CLUSTER"].split(",") if u.startswith(name + "=")
    )
    url = f"http://127.0.0.1:{free_port()}"
    data_dir = tempfile.mkdtemp(dir=base_dir, prefix=f"{name}-")  # never an old member's dir
    argv = fastkv_argv() + [
        "--data-dir", os.path.join(data_dir, "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
    ] + TIMING + (extra or [])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env.update(env_vars)
    log_path = os.path.join(data_dir, "server.log")
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return ServerProcess("fastkv", url, peer, data_dir, argv, proc, log_path, env)


def wait_exit(p: ServerProcess, timeout: float = 15.0) -> int:
    try:
        return p.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{p.url} still running after {timeout}s:\n{p.log()[-1500:]}") from None


def remove_member(tool: str, url: str, ident: str) -> None:
    """``member remove`` until the member is gone from the list.  An attempt refused by the
    strict reconfiguration check is retried; an attempt whose answer is lost (the member that
    took it may be the one removed, and it stops) counts once the list no longer has the id.
    Every successful attempt must print etcdctl's line."""
    first = url.split(",")[0]

    def attempt() -> bool:
        rc, out, err = ctl(tool, url, "member", "remove", ident)
        if rc == 0:
            assert out == f"Removed member {ident} from cluster\n", (out, err)
            return True
        return ident not in {m["id"] for m in members_of(first)}

    until(f"member remove {ident}", attempt, timeout=30, every=0.5)
