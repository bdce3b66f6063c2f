"""Clusters bootstrapped as etcd bootstraps them without --initial-cluster: through the discovery
protocol on another (single-member) fastkv, and from DNS SRV records served by
tests/support/dnsserver.py.  Every member is a real process on 127.0.0.1."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time

import pytest

from fastkv.cli import main as ctl
from fastkv.server.identity import cluster_id_for, member_id_for
from tests.support.clusterutil import put, request, wait_one_leader, wait_value
from tests.support.dnsserver import DNSServer
from tests.support.procs import (
    ServerProcess,
    free_port,
    have_etcd,
    spawn_member,
    start_server,
    wait_http_ok,
)

TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def wait_all_healthy(members: list[ServerProcess], timeout: float = 30.0) -> None:
    try:
        for m in members:
            wait_http_ok(m.url + "/health", timeout, m.proc)
    except Exception:
        logs = "\n".join(f"--- {m.data_dir}\n{m.log()[-1500:]}" for m in members)
        raise AssertionError(f"cluster did not start:\n{logs}") from None


def assert_one_cluster(members: list[ServerProcess], token: str) -> None:
    """Same cluster id and member list everywhere, ids derived from ``token``, one leader, and
    a write through one member readable on all."""
    ids = {f"{member_id_for([m.peer_url], token):x}" for m in members}
    expected_cid = f"{cluster_id_for(int(i, 16) for i in ids):x}"
    views = []
    for m in members:
        status, headers, body = request(f"{m.url}/v2/members")
        assert status == 200
        assert headers["X-Etcd-Cluster-Id"] == expected_cid
        views.append(sorted(x["id"] for x in body["members"]))
    assert all(v == sorted(ids) for v in views)
    assert wait_one_leader(members) in ids
    put(members[1], "bootstrapped/by", "discovery")
    for m in members:
        wait_value(m, "bootstrapped/by", "discovery")


def test_discovery_bootstrap_full_cluster_and_fallback(tmp_path) -> None:
    (tmp_path / "disc").mkdir()
    disc = start_server("fastkv", str(tmp_path / "disc"))
    members: list[ServerProcess] = []
    try:
        durl = f"{disc.url}/v2/keys/_etcd/registry/proc-test"
        status, _, _ = request(f"{durl}/_config/size", "PUT", {"value": "3"})
        assert status == 201
        members = [
            spawn_member("fastkv", f"d{i}", str(tmp_path), ["--discovery", durl, *TIMING]) for i in range(3)
        ]
        wait_all_healthy(members)
        assert_one_cluster(members, durl)
        # The registrations are the members' ids, values name=peerURL.
        _, _, listing = request(durl)
        regs = {
            n["key"].rsplit("/", 1)[1]: n["value"]
            for n in listing["node"]["nodes"]
            if "_config" not in n["key"]
        }
        assert regs == {
            f"{member_id_for([m.peer_url], durl):x}": f"d{i}={m.peer_url}" for i, m in enumerate(members)
        }

        # A fourth member finds the token full and, asked to exit, exits with etcd's message.
        late = _run_late(tmp_path, "late", ["--discovery", durl, "--discovery-fallback", "exit"])
        assert late.returncode == 1
        assert late.stderr.strip().splitlines()[-1] == (
            "fastkv: failed to join discovery cluster (discovery: cluster is full)"
        )
        # The default fallback is a v2 proxy, which fastkv does not have: a clear refusal.
        late2 = _run_late(tmp_path, "late2", ["--discovery", durl])
        assert late2.returncode == 1
        last = late2.stderr.strip().splitlines()[-1]
        assert last.startswith("fastkv: failed to join discovery cluster (discovery: cluster is full); ")
        assert "no proxy mode" in last and "--discovery-fallback exit" in last

        # Once bootstrapped, --discovery is ignored: a restart does not ask the service again.
        disc.stop()
        members[0].restart(timeout=20)
        wait_one_leader(members)
    finally:
        for m in members:
            m.kill9()
        disc.stop(signal.SIGKILL)


def _run_late(tmp_path, name: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    m = spawn_member("fastkv", name, str(tmp_path), args)
    try:
        m.proc.wait(20)
    finally:
        m.kill9()
    with open(m.log_path) as f:
        stderr = f.read()
    assert "Traceback" not in stderr
    assert not os.path.exists(os.path.join(m.data_dir, "data", "member", "wal", "")) or not os.listdir(
        os.path.join(m.data_dir, "data", "member", "wal")
    )
    return subprocess.CompletedProcess(m.argv, m.proc.returncode, "", stderr)


def test_srv_bootstrap(tmp_path) -> None:
    ports = {f"s{i}": (free_port(), free_port()) for i in range(3)}
    # Targets are "localhost" (resolved by the system for peer traffic); one record is an IP.
    records: dict = {
        "_etcd-server._tcp.srv.test": [
            ("SRV", 0, 0, ports["s0"][1], "localhost"),
            ("SRV", 0, 0, ports["s1"][1], "localhost"),
            ("SRV", 0, 0, ports["s2"][1], "127.0.0.1"),
        ],
    }
    token = "srv-token"
    members: list[ServerProcess] = []
    with DNSServer(records) as dns:
        env = {"FASTKV_DNS_SERVER": dns.address}
        args = ["--discovery-srv", "srv.test", "--initial-cluster-token", token, *TIMING]
        try:
            members = [spawn_member("fastkv", n, str(tmp_path), args, env, ports[n]) for n in ports]
            wait_all_healthy(members)
            urls = {
                "s0": f"http://localhost:{ports['s0'][1]}",
                "s1": f"http://localhost:{ports['s1'][1]}",
                "s2": f"http://127.0.0.1:{ports['s2'][1]}",
            }
            ids = {f"{member_id_for([u], token):x}": n for n, u in urls.items()}
            leader = wait_one_leader(members)
            assert leader in ids
            for m in members:
                status, headers, body = request(f"{m.url}/v2/members")
                assert status == 200
                assert headers["X-Etcd-Cluster-Id"] == f"{cluster_id_for(int(i, 16) for i in ids):x}"
                assert {x["id"]: x["peerURLs"] for x in body["members"]} == {
                    i: [urls[n]] for i, n in ids.items()
                }
            put(members[2], "bootstrapped/by", "srv")
            for m in members:
                wait_value(m, "bootstrapped/by", "srv")
            assert ("_etcd-server-ssl._tcp.srv.test.", "SRV") in dns.queries

            # fastkvctl -D finds the client URLs in _etcd-client._tcp (http: only when insecure).
            records["_etcd-client._tcp.srv.test"] = [("SRV", 0, 0, ports["s1"][0], "localhost")]
            out, err = io.StringIO(), io.StringIO()
            ctl_env = {"FASTKV_DNS_SERVER": dns.address, "ETCDCTL_DISCOVERY_SRV": "srv.test"}
            # Nothing secure found: the --endpoints flag applies (nothing listens there).
            argv = ["--endpoints", f"http://127.0.0.1:{free_port()}", "--no-sync", "get", "/bootstrapped/by"]
            code = ctl.run(argv, stdout=out, stderr=err, env=ctl_env)
            assert err.getvalue().splitlines()[0] == (
                f'ignoring discovered insecure endpoint "http://localhost.:{ports["s1"][0]}"'
            )
            assert code == 4 and out.getvalue() == ""
            out, err = io.StringIO(), io.StringIO()
            argv = ["-D", "srv.test", "--insecure-discovery", "--no-sync", "get", "/bootstrapped/by"]
            code = ctl.run(argv, stdout=out, stderr=err, env={"FASTKV_DNS_SERVER": dns.address})
            assert (code, out.getvalue(), err.getvalue()) == (0, "srv\n", "")
            assert (out.getvalue(), err.getvalue()) == ("srv\n", "")

            # A member that is not in the records refuses to start, with etcd's message.
            outsider = spawn_member("fastkv", "s9", str(tmp_path), args, env)
            try:
                assert outsider.proc.wait(20) == 1
            finally:
                outsider.kill9()
            last = outsider.log().strip().splitlines()[-1]
            assert last == (
                'fastkv: error setting up initial cluster: cannot find local etcd member "s9" in SRV records'
            )
        finally:
            for m in members:
                m.kill9()


def test_wait_is_bounded_by_signals(tmp_path) -> None:
    """A member waiting for the others stops on SIGTERM (no proxy, no partial WAL)."""
    (tmp_path / "disc").mkdir()
    disc = start_server("fastkv", str(tmp_path / "disc"))
    try:
        durl = f"{disc.url}/v2/keys/_etcd/registry/waiting"
        request(f"{durl}/_config/size", "PUT", {"value": "2"})
        m = spawn_member("fastkv", "w0", str(tmp_path), ["--discovery", durl])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            _, _, listing = request(durl)
            if any("_config" not in n["key"] for n in listing["node"].get("nodes", [])):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("w0 never registered")
        m.proc.send_signal(signal.SIGTERM)
        try:
            assert m.proc.wait(5) in (0, -signal.SIGTERM)  # stops promptly, not after the wait
        finally:
            m.kill9()
        assert not os.path.isdir(os.path.join(m.data_dir, "data", "member", "wal"))
    finally:
        disc.stop(signal.SIGKILL)


@pytest.mark.skipif(not have_etcd(), reason="etcd is not installed")
def test_etcd_members_bootstrap_through_a_fastkv_discovery_service(tmp_path) -> None:
    """The other direction: real etcd members run etcd's own discovery client against fastkv."""
    (tmp_path / "disc").mkdir()
    disc = start_server("fastkv", str(tmp_path / "disc"))
    members: list[ServerProcess] = []
    try:
        durl = f"{disc.url}/v2/keys/_etcd/registry/etcd-members"
        status, _, _ = request(f"{durl}/_config/size", "PUT", {"value": "3"})
        assert status == 201
        members = [spawn_member("etcd", f"e{i}", str(tmp_path), ["--discovery", durl]) for i in range(3)]
        wait_all_healthy(members)
        assert_one_cluster(members, durl)
        late = spawn_member(
            "etcd", "late", str(tmp_path), ["--discovery", durl, "--discovery-fallback", "exit"]
        )
        try:
            assert late.proc.wait(20) == 1
        finally:
            late.kill9()
        assert "failed to join discovery cluster (discovery: cluster is full)" in late.log()
    finally:
        for m in members:
            m.kill9()
        disc.stop(signal.SIGKILL)
