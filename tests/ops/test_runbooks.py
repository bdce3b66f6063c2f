"""docs/operations.md, executed: one test per runbook, following its steps with its commands
(fastkv's flags, fastkvctl's commands) on 127.0.0.1 instead of the document's hosts.

``RUNBOOKS`` maps every "## Runbook: ..." heading of the document to the test that runs it, and
``test_every_runbook_is_tested`` keeps the two in step.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.clusterutil import (
    TIMING,
    Writer,
    add_member,
    check_all_acked,
    ctl,
    members_of,
    put,
    remove_member,
    request,
    start_joining,
    until,
    wait_exit,
    wait_value,
)
from tests.support.procs import ServerProcess, fastkv_argv, free_port, start_cluster, wait_http_ok

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "operations.md")
RUNBOOKS: dict[str, Callable[..., None]] = {}

pytestmark = pytest.mark.timeout(150)


def runbook(title: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def mark(fn: Callable[..., None]) -> Callable[..., None]:
        RUNBOOKS[title] = fn
        return fn

    return mark


def endpoints(members: list[ServerProcess]) -> str:
    return ",".join(m.url for m in members)


def healthy(members: list[ServerProcess]) -> bool:
    rc, out, _ = ctl("fastkvctl", endpoints(members), "cluster-health")
    return rc == 0 and out.endswith("cluster is healthy\n")


def relaunch(m: ServerProcess, argv: list[str] | None = None) -> None:
    """Start a stopped member again (same flags unless ``argv`` is given)."""
    if argv is not None:
        m.argv = argv
    m.launch()


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


def write_for(members: list[ServerProcess], seconds: float) -> dict[str, str]:
    """Writes through every member in turn for ``seconds``; the acknowledged ones."""
    writer = Writer(list(members))
    writer.start()
    time.sleep(seconds)
    writer.stop_flag.set()
    writer.join(10)
    assert writer.acked
    return writer.acked


@pytest.fixture
def cluster(tmp_path) -> Iterator[list[ServerProcess]]:
    members = start_cluster("fastkv", 3, base_dir=str(tmp_path), extra=TIMING, token="runbook-test")
    try:
        yield members  # tests append what they start, so everything is cleaned up
    finally:
        for m in members:
            m.kill9()


def test_every_runbook_is_tested() -> None:
    with open(DOC) as f:
        titles = re.findall(r"^## Runbook: (.+)$", f.read(), re.M)
    assert titles and sorted(titles) == sorted(RUNBOOKS)


@runbook("start a three-member cluster")
def test_start_a_three_member_cluster(cluster: list[ServerProcess]) -> None:
    until("cluster-health exits 0", lambda: healthy(cluster))
    rc, out, _ = ctl("fastkvctl", endpoints(cluster), "member", "list")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 3 and sum(line.endswith("isLeader=true") for line in lines) == 1


@runbook("add a member")
def test_add_a_member(cluster: list[ServerProcess], tmp_path) -> None:
    peer = f"http://127.0.0.1:{free_port()}"
    new_id, env_vars = add_member("fastkvctl", endpoints(cluster), "m3", peer)
    rc, out, _ = ctl("fastkvctl", endpoints(cluster), "member", "list")
    assert f"{new_id}[unstarted]: peerURLs={peer}\n" in out
    new = start_joining(str(tmp_path), env_vars)
    cluster.append(new)
    wait_http_ok(new.url + "/health", 20, new.proc)
    until("m3 listed with its name and client URL", lambda: any(
        m["id"] == new_id and m["name"] == "m3" and m["clientURLs"] == [new.url] for m in members_of(cluster[0].url)
    ))  # fmt: skip
    until("cluster-health exits 0", lambda: healthy(cluster))


@runbook("remove a member")
def test_remove_a_member(cluster: list[ServerProcess]) -> None:
    leaving = cluster[2]
    ident = next(m["id"] for m in members_of(cluster[0].url) if m["peerURLs"] == [leaving.peer_url])
    rest = endpoints(cluster[:2])
    remove_member("fastkvctl", rest, ident)
    assert wait_exit(leaving) == 0
    assert "permanently removed from the cluster" in leaving.log()
    relaunch(leaving)  # with its old data dir: exits again
    assert wait_exit(leaving) == 0
    rc, _, err = ctl("fastkvctl", rest, "member", "remove", ident)
    assert rc == 1 and f"Couldn't find a member in the cluster with an ID of {ident}." in err, err
    status, _, body = request(f"{cluster[0].url}/v2/members/{ident}", "DELETE")
    assert (status, body) == (410, {"message": f"Member permanently removed: {ident}"})
    shutil.rmtree(flag_value(leaving.argv, "--data-dir"))
    until("cluster-health exits 0", lambda: healthy(cluster[:2]))


@runbook("replace a failed member")
def test_replace_a_failed_member(cluster: list[ServerProcess], tmp_path) -> None:
    failed = cluster.pop(2)
    failed.kill9()
    shutil.rmtree(flag_value(failed.argv, "--data-dir"))  # its disk is gone
    ident = next(m["id"] for m in members_of(cluster[0].url) if m["peerURLs"] == [failed.peer_url])
    live = endpoints(cluster)
    until(
        "member remove of the failed member",
        lambda: ctl("fastkvctl", live, "member", "remove", ident)[0] == 0,
        timeout=30,
        every=0.5,
    )
    new_id, env_vars = add_member("fastkvctl", live, "m3", f"http://127.0.0.1:{free_port()}")
    new = start_joining(str(tmp_path), env_vars)
    cluster.append(new)
    wait_http_ok(new.url + "/health", 20, new.proc)
    put(cluster[0], "after-replace", "yes")
    wait_value(new, "after-replace", "yes")
    assert sorted(m["id"] for m in members_of(new.url)) == sorted(
        [m["id"] for m in members_of(cluster[0].url)]
    )
    assert new_id in {m["id"] for m in members_of(new.url)} and ident not in {
        m["id"] for m in members_of(new.url)
    }
    until("cluster-health exits 0", lambda: healthy(cluster))


@runbook("move a member to a new address")
def test_move_a_member_to_a_new_address(cluster: list[ServerProcess]) -> None:
    moving = cluster[2]
    ident = next(m["id"] for m in members_of(cluster[0].url) if m["peerURLs"] == [moving.peer_url])
    new_peer = f"http://127.0.0.1:{free_port()}"
    new_client = f"http://127.0.0.1:{free_port()}"
    rc, out, err = ctl("fastkvctl", endpoints(cluster), "member", "update", ident, new_peer)
    assert (rc, out) == (0, f"Updated member with ID {ident} in cluster\n"), err
    assert moving.stop() == 0
    argv = moving.argv
    for flag, value in (
        ("--listen-peer-urls", new_peer),
        ("--initial-advertise-peer-urls", new_peer),
        ("--listen-client-urls", new_client),
        ("--advertise-client-urls", new_client),
    ):
        argv = with_flag(argv, flag, value)
    moving.url, moving.peer_url = new_client, new_peer
    relaunch(moving, argv)
    wait_http_ok(new_client + "/health", 20, moving.proc)
    until("the new client URL published", lambda: any(
        m["id"] == ident and m["clientURLs"] == [new_client] and m["peerURLs"] == [new_peer]
        for m in members_of(cluster[0].url)
    ))  # fmt: skip
    put(cluster[0], "after-move", "yes")
    wait_value(moving, "after-move", "yes")
    until("cluster-health exits 0", lambda: healthy(cluster))


@runbook("restart after losing a majority (data intact)")
def test_restart_after_losing_a_majority(cluster: list[ServerProcess]) -> None:
    acked = write_for(cluster, 1.0)
    survivor, lost = cluster[0], cluster[1:]
    for m in lost:
        m.kill9()
    # No quorum: the survivor still serves local reads but cannot write (error 300 or a timeout).
    wait_value(survivor, "w0", acked["w0"])
    try:
        status, _, body = request(f"{survivor.url}/v2/keys/during", "PUT", {"value": "x"}, timeout=15)
        assert status >= 500, body
    except TimeoutError:
        pass
    for m in lost:
        relaunch(m)
    for m in lost:
        wait_http_ok(m.url + "/health", 20, m.proc)
    until("cluster-health exits 0", lambda: healthy(cluster))
    check_all_acked(cluster, acked)


@runbook("back up a member")
def test_back_up_a_member(cluster: list[ServerProcess], tmp_path) -> None:
    put(cluster[0], "backed-up", "1")
    wait_value(cluster[0], "backed-up", "1")  # applied on the member being backed up
    backup_dir = str(tmp_path / "backup")
    rc, out, err = ctl(
        "fastkvctl", endpoints(cluster), "backup",
        "--data-dir", flag_value(cluster[0].argv, "--data-dir"), "--backup-dir", backup_dir,
    )  # fmt: skip
    assert rc == 0, err
    assert os.path.isdir(os.path.join(backup_dir, "member", "wal"))
    # A backup is started only through --force-new-cluster (next runbook), which checks its data.
    _force_new_cluster_and_grow(cluster, backup_dir, tmp_path, {"backed-up": "1"})


def _force_new_cluster_and_grow(
    cluster: list[ServerProcess], data_dir: str, tmp_path, expect: dict[str, str]
) -> None:
    """Steps 2-4 of the disaster recovery runbook on ``data_dir``; every other member stopped."""
    for m in cluster:
        m.kill9()
    cport, pport = free_port(), free_port()
    url, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    argv = fastkv_argv() + [
        "--name", "m0", "--data-dir", data_dir,
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
    ] + TIMING  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    log_path = str(tmp_path / "restored.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv + ["--force-new-cluster"], stdout=log, stderr=subprocess.STDOUT, env=env)
    restored = ServerProcess("fastkv", url, peer, data_dir, argv, proc, log_path, env)
    cluster.append(restored)
    wait_http_ok(url + "/health", 20, proc)
    assert "force new cluster" in restored.log()
    check_all_acked([restored], expect)

    # /health needs only a leader; the member publishes its new client URL through the log after
    # that, so the list shows the old member's URL until that entry is applied (seconds under load).
    def alone_with_new_urls() -> bool:
        members = members_of(url)
        assert len(members) == 1 and members[0]["peerURLs"] == [peer], members
        return members[0]["clientURLs"] == [url]

    until("the restored member alone in the list with its new client URL", alone_with_new_urls)
    # Restart without the flag: still the same one-member cluster with the same data.
    assert restored.stop() == 0
    relaunch(restored, argv)
    wait_http_ok(url + "/health", 20, restored.proc)
    assert len(members_of(url)) == 1
    # Grow it back: the second member starts right after its add (two members need both).
    _, env_vars = add_member("fastkvctl", url, "m1", f"http://127.0.0.1:{free_port()}")
    second = start_joining(str(tmp_path), env_vars)
    cluster.append(second)
    wait_http_ok(second.url + "/health", 20, second.proc)
    check_all_acked([second], expect)
    put(restored, "grown-again", "yes")
    wait_value(second, "grown-again", "yes")
    until("cluster-health exits 0", lambda: healthy([restored, second]))


@runbook("disaster recovery with --force-new-cluster")
def test_disaster_recovery_with_force_new_cluster(cluster: list[ServerProcess], tmp_path) -> None:
    acked = write_for(cluster, 1.0)
    # Two members are lost for good; the survivor has applied every acknowledged write (the most
    # up-to-date member, by its X-Raft-Index) and is stopped (step 1).
    survivor = cluster[0]
    check_all_acked([survivor], acked)
    cluster[1].kill9()
    cluster[2].kill9()
    assert survivor.stop(signal.SIGTERM) == 0
    _force_new_cluster_and_grow(cluster, flag_value(survivor.argv, "--data-dir"), tmp_path, acked)


def _openssl_cert(pki: str, name: str, ca: str, san: str) -> None:
    """Step 1 of the TLS runbook: the openssl commands, for one certificate."""
    key, csr, cert = (os.path.join(pki, f"{name}{suffix}") for suffix in ("-key.pem", ".csr", ".pem"))
    subprocess.run(
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", f"/CN={name}", "-keyout", key, "-out", csr],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    ext = os.path.join(pki, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(pki, f"{ca}.pem"),
         "-CAkey", os.path.join(pki, f"{ca}-key.pem"), "-CAcreateserial", "-days", "365",
         "-out", cert, "-extfile", ext],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


@runbook("run a cluster with TLS")
def test_run_a_cluster_with_tls(tmp_path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pki = str(tmp_path / "pki")
    os.makedirs(pki)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "3650", "-subj", "/CN=fastkv CA", "-keyout", os.path.join(pki, "ca-key.pem"),
         "-out", os.path.join(pki, "ca.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    names = ["m0", "m1", "m2"]
    for n in [*names, "operator"]:
        _openssl_cert(pki, n, "ca", "IP:127.0.0.1")
    ports = {n: (free_port(), free_port()) for n in names}
    initial = ",".join(f"{n}=https://127.0.0.1:{ports[n][1]}" for n in names)
    members: list[ServerProcess] = []
    ca = os.path.join(pki, "ca.pem")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "FASTKV_FAILPOINTS"))}
    try:
        for n in names:
            url, peer = f"https://127.0.0.1:{ports[n][0]}", f"https://127.0.0.1:{ports[n][1]}"
            cert, key = os.path.join(pki, f"{n}.pem"), os.path.join(pki, f"{n}-key.pem")
            argv = fastkv_argv() + [
                "--name", n, "--data-dir", str(tmp_path / n),
                "--listen-client-urls", url, "--advertise-client-urls", url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-token", "prod-config-1",
                "--initial-cluster-state", "new",
                "--cert-file", cert, "--key-file", key, "--client-cert-auth", "--trusted-ca-file", ca,
                "--peer-cert-file", cert, "--peer-key-file", key, "--peer-client-cert-auth",
                "--peer-trusted-ca-file", ca,
            ] + TIMING  # fmt: skip
            log_path = str(tmp_path / f"{n}.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            members.append(ServerProcess("fastkv", url, peer, str(tmp_path / n), argv, proc, log_path, env))
        tls = ["--ca-file", ca, "--cert-file", os.path.join(pki, "operator.pem"),
               "--key-file", os.path.join(pki, "operator-key.pem")]  # fmt: skip
        # Step 3: cluster-health through the client certificate, then a write read back everywhere.
        until(
            "cluster-health over TLS exits 0",
            lambda: ctl("fastkvctl", endpoints(members), *tls, "cluster-health")[0] == 0,
            timeout=40,
        )
        rc, out, err = ctl("fastkvctl", members[0].url, *tls, "set", "/tls/runbook", "ok")
        assert rc == 0 and out == "ok\n", err
        for m in members:
            rc, out, err = ctl("fastkvctl", m.url, *tls, "get", "/tls/runbook")
            assert rc == 0 and out == "ok\n", err
        # Without a client certificate the member refuses the connection.
        rc, _, _ = ctl("fastkvctl", members[0].url, "--ca-file", ca, "get", "/tls/runbook")
        assert rc != 0
        # Step 4: rotate m0's certificate by renaming new files over the old ones; no restart.
        _openssl_cert(pki, "m0-next", "ca", "IP:127.0.0.1")
        os.replace(os.path.join(pki, "m0-next-key.pem"), os.path.join(pki, "m0-key.pem"))
        os.replace(os.path.join(pki, "m0-next.pem"), os.path.join(pki, "m0.pem"))

        def serves_new_cert() -> bool:
            out = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{ports['m0'][0]}", "-CAfile", ca,
                 "-cert", os.path.join(pki, "operator.pem"), "-key", os.path.join(pki, "operator-key.pem")],
                input=b"", capture_output=True, timeout=30,
            ).stdout  # fmt: skip
            return b"CN = m0-next" in out or b"CN=m0-next" in out

        until("m0 serves its new certificate", serves_new_cert, timeout=20)
        rc, out, err = ctl("fastkvctl", members[0].url, *tls, "get", "/tls/runbook")
        assert rc == 0 and out == "ok\n", err
        assert all(m.proc.poll() is None for m in members)
    finally:
        for m in members:
            m.kill9()


@runbook("turn on authentication")
def test_turn_on_authentication(cluster: list[ServerProcess]) -> None:
    eps = endpoints(cluster)
    root, app = "root:r00t-Secret", "app-user:app-Secret"

    def ok(*args: str) -> str:
        rc, out, err = ctl("fastkvctl", eps, *args)
        assert rc == 0, (args, out, err)
        return out

    # Step 1.
    assert ok("user", "add", root) == "User root created\n"
    assert ok("role", "add", "app") == "Role app created\n"
    ok("role", "grant", "app", "--path", "/app/*", "--readwrite")
    assert ok("user", "add", app) == "User app-user created\n"
    ok("user", "grant", "app-user", "--roles", "app")
    # Step 2.
    assert ok("auth", "enable") == "Authentication Enabled\n"
    ok("-u", root, "role", "revoke", "guest", "--path", "/*", "--readwrite")
    # Step 3, on every member.
    for m in cluster:
        rc, _, err = ctl("fastkvctl", m.url, "set", "/app/feature", "on")
        assert rc == 4 and "The request requires user authentication" in err, err
        rc, out, err = ctl("fastkvctl", m.url, "-u", app, "set", "/app/feature", "on")
        assert rc == 0 and out == "on\n", err
        rc, _, err = ctl("fastkvctl", m.url, "-u", app, "set", "/other", "x")
        assert rc == 4 and "The request requires user authentication" in err, err
    # The state is replicated data: it is there after every member restarted.
    for m in cluster:
        m.restart()
    rc, out, err = ctl("fastkvctl", cluster[1].url, "-u", app, "get", "/app/feature")
    assert rc == 0 and out == "on\n", err
    assert ok("-u", root, "auth", "disable") == "Authentication Disabled\n"


# --- moving from etcd ---------------------------------------------------------------------------


def _etcd_views(url: str, hidden: list[str]) -> dict[str, object]:
    """What clients see of a v2 server: python-etcd's reading of every node (hidden keys included) with
    the store index, and etcdctl's listing and extended gets (the TTL line masked: it counts down)."""
    import etcd  # python-etcd

    host, port = url.rsplit("//", 1)[1].split(":")
    client = etcd.Client(host=host, port=int(port), read_timeout=10)
    root = client.read("/", recursive=True, sorted=True)
    nodes = []
    for key in [None, *hidden]:
        res = root if key is None else client.read(key, recursive=True, sorted=True)
        for n in res.get_subtree():
            nodes.append((n.key, n.value, n.dir, n.createdIndex, n.modifiedIndex, n.expiration, n.ttl))
    rc, listing, err = ctl("etcdctl", url, "ls", "--recursive", "--sort", "-p", "/")
    assert rc == 0, err
    files = [k for k in listing.split() if not k.endswith("/")] + hidden
    gets = {}
    for key in files:
        rc, out, err = ctl("etcdctl", url, "-o", "extended", "get", key)
        assert rc == 0, (key, err)
        gets[key] = re.sub(r"(?m)^TTL: \d+$", "TTL: *", out)
    from tests.migrate.etcdhistory import http, mask_ttl

    status, _, raw = http("GET", url + "/v2/keys/?recursive=true&sorted=true")
    assert status == 200, raw
    return {"index": root.etcd_index, "nodes": nodes, "ls": listing, "gets": gets, "raw": mask_ttl(raw)}


def _same_views(before: dict, after: dict, index_moved: int = 0) -> None:
    """Equal, but for each node's remaining ttl, which ticks down (the expiration is compared exactly), and the store
    index, ``index_moved`` ahead (the members' publications after a restart, as etcd's restart makes)."""
    assert after["index"] == before["index"] + index_moved
    assert after["raw"] == before["raw"]  # the recursive GET, byte for byte (ttl fields aside)
    assert after["ls"] == before["ls"]
    moved = f"Index: {before['index'] + index_moved}"
    expected = {k: re.sub(r"(?m)^Index: \d+$", moved, v) for k, v in before["gets"].items()}
    assert after["gets"] == expected
    assert len(after["nodes"]) == len(before["nodes"])
    for a, b in zip(after["nodes"], before["nodes"], strict=True):
        assert a[:6] == b[:6]
        assert (a[6] is None) == (b[6] is None) and (a[6] is None or 0 <= b[6] - a[6] <= 60), (a, b)


def _etcd_cluster_with_v2_data(tmp_path) -> tuple[list[ServerProcess], list[str]]:
    from tests.migrate.etcdhistory import write_history
    from tests.support.procs import have_etcd

    if not have_etcd():
        pytest.skip("etcd not installed")
    etcd_members = start_cluster("etcd", 3, base_dir=str(tmp_path / "etcd"), token="etcd-to-fastkv")
    try:
        hidden = sorted(write_history(etcd_members[0].url).values())
    except BaseException:
        for m in etcd_members:
            m.kill9()
        raise
    return etcd_members, hidden


@runbook("moving from etcd, offline")
def test_moving_from_etcd_offline(tmp_path) -> None:
    etcd_members, hidden = _etcd_cluster_with_v2_data(tmp_path)
    started: list[ServerProcess] = []
    try:
        until("every etcd member applied the writes", lambda: len({
            request(m.url + "/v2/keys/")[1].get("X-Etcd-Index") for m in etcd_members
        }) == 1, timeout=60)  # fmt: skip
        before = _etcd_views(etcd_members[0].url, hidden)
        # 1. Stop etcd, every member.
        for m in etcd_members:
            m.stop()
        # 2. fastkvctl migrate, per member.
        for i, m in enumerate(etcd_members):
            target = str(tmp_path / f"fastkv-m{i}")
            rc, out, err = ctl_plain(
                "migrate", "--from-etcd-data-dir", flag_value(m.argv, "--data-dir"), "--data-dir", target
            )
            assert rc == 0 and f"as 'm{i}'" in out, (out, err)
            # 3. fastkv on the etcd member's URLs, with the migrated data dir.
            argv = fastkv_argv() + [
                "--name", f"m{i}", "--data-dir", target,
                "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            ] + TIMING  # fmt: skip
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "FASTKV_FAILPOINTS"))}
            log = str(tmp_path / f"f{i}.log")
            srv = ServerProcess("fastkv", m.url, m.peer_url, target, argv, m.proc, log, env)
            srv.launch()
            started.append(srv)
        for srv in started:
            wait_http_ok(srv.url + "/health", 30, srv.proc)
        until("cluster-health exits 0", lambda: healthy(started), timeout=60)
        # Each member published its name and URLs once started, as a restarted etcd member does: the
        # store index moved by one per member, no node changed.
        until("every member published", lambda: request(started[0].url + "/v2/keys/")[1].get("X-Etcd-Index")
              == str(before["index"] + 3), timeout=60)  # fmt: skip
        after = _etcd_views(started[1].url, hidden)
        _same_views(before, after, index_moved=3)
        # The cluster takes writes, at the next index.
        status, _, body = request(started[2].url + "/v2/keys/after-move", "PUT", {"value": "1"})
        assert status == 201 and body["node"]["modifiedIndex"] == before["index"] + 4, body
    finally:
        for m in started + etcd_members:
            m.kill9()


@runbook("moving from etcd, online")
def test_moving_from_etcd_online(cluster: list[ServerProcess], tmp_path) -> None:
    from tests.migrate.etcdhistory import http

    etcd_members, hidden = _etcd_cluster_with_v2_data(tmp_path)
    mirror_log = tmp_path / "mirror.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    argv = [*fastkvctl_argv(), "--endpoints", endpoints(cluster), "mirror", "--from", endpoints(etcd_members)]
    argv += ["--report-interval", "0.5s", "--resync-interval", "0.5s"]
    try:
        # 1. Start the mirror: it copies etcd, then follows it.
        with open(mirror_log, "w") as out:
            mirror = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        until("the copy", lambda: "mirror: copied" in mirror_log.read_text(), timeout=60)
        # The mirror is read-only until cut-over.
        status, _, body = request(cluster[0].url + "/v2/keys/early", "PUT", {"value": "x"})
        assert status == 400 and body["errorCode"] == 107 and "read-only mirror" in body["cause"], body
        # The etcd member the mirror reads from goes down: it carries on with the next one.
        etcd_members[0].stop()
        source = etcd_members[1].url
        # Applications keep writing to etcd meanwhile: a refresh, hidden keys, a delete...
        for i in range(20):
            assert http("PUT", f"{etcd_members[1 + i % 2].url}/v2/keys/live/{i}", {"value": str(i)})[0] == 201
        assert http("POST", f"{source}/v2/keys/queue", {"value": "late job"})[0] == 201
        assert http("PUT", f"{source}/v2/keys/_late_hidden", {"value": "h"})[0] == 201
        assert http("PUT", f"{source}/v2/keys/ttl?refresh=true&prevExist=true", {"ttl": "1800"})[0] == 200
        assert http("DELETE", f"{source}/v2/keys/k/3")[0] == 200
        hidden = sorted([*hidden, "/_late_hidden"])
        # 2. Stop writes to etcd; wait for the mirror's lag line to say 0 at etcd's index.
        index = int(http("GET", source + "/v2/keys/")[1]["X-Etcd-Index"])
        until("lag 0", lambda: re.search(
            rf"source index {index}, applied index {index}, 0 events behind, 0\.0 s behind \(in sync\)",
            mirror_log.read_text(),
        ), timeout=60)  # fmt: skip
        assert f"mirror: source {etcd_members[0].url} failed" in mirror_log.read_text()
        before = _etcd_views(source, hidden)
        # 3. Stop the mirror, end it (it catches up first), point the clients at fastkv.
        mirror.send_signal(signal.SIGINT)
        assert mirror.wait(15) == 130
        p = subprocess.run([*argv, "--finish"], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0 and "mirror: finished" in p.stdout, (p.stdout, p.stderr)
        for m in etcd_members:
            m.stop()
        after = _etcd_views(cluster[2].url, hidden)
        _same_views(before, after)
        status, _, body = request(cluster[1].url + "/v2/keys/after-move", "PUT", {"value": "1"})
        assert status == 201 and body["node"]["modifiedIndex"] == before["index"] + 1, body
    finally:
        for m in etcd_members:
            m.kill9()


def fastkvctl_argv() -> list[str]:
    return [sys.executable, "-m", "fastkv.cli.main"]


def ctl_plain(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """fastkvctl without --endpoints (offline commands)."""
    p = subprocess.run([*fastkvctl_argv(), *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr
