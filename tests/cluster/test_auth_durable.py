"""v2 auth state (users, roles, the enabled flag) is replicated data: it survives restarts and kill -9,
reaches a follower through a snapshot from the leader, and comes along in a backup started with
--force-new-cluster."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.support.clusterutil import TIMING, ctl, member_by_id, until, wait_one_leader
from tests.support.procs import ServerProcess, fastkv_argv, free_port, start_cluster, wait_http_ok

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

ROOT = ("root", "r00t-secret")
ALICE = ("alice", "alice-secret")


def _req(url: str, method: str = "GET", body: bytes | None = None, creds: tuple[str, str] | None = None,
         ctype: str = "application/json") -> tuple[int, dict]:  # fmt: skip
    r = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        r.add_header("Content-Type", ctype)
    if creds is not None:
        r.add_header("Authorization", "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _enable_auth(url: str) -> None:
    def call(method: str, path: str, doc: object, creds: tuple[str, str] | None = None) -> None:
        status, body = _req(url + path, method, json.dumps(doc).encode(), creds)
        assert status in (200, 201), (path, status, body)

    call("PUT", "/v2/auth/users/root", {"user": "root", "password": ROOT[1]})
    call(
        "PUT",
        "/v2/auth/roles/app",
        {"role": "app", "permissions": {"kv": {"read": ["/app/*"], "write": ["/app/*"]}}},
    )
    call("PUT", "/v2/auth/users/alice", {"user": "alice", "password": ALICE[1], "roles": ["app"]})
    status, body = _req(url + "/v2/auth/enable", "PUT", b"", ROOT)
    assert status == 200, body
    # Enabling creates the guest role with read and write on everything: take that away.
    call(
        "PUT",
        "/v2/auth/roles/guest",
        {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
        ROOT,
    )


def _check_enforced(url: str, tag: str) -> None:
    status, body = _req(url + "/v2/auth/enable")
    assert status == 200 and body == {"enabled": True}, body
    status, body = _req(
        url + f"/v2/keys/app/{tag}", "PUT", b"value=anon", None, "application/x-www-form-urlencoded"
    )
    assert status == 401 and body["errorCode"] == 110, body
    status, body = _req(
        url + f"/v2/keys/app/{tag}", "PUT", b"value=ok", ALICE, "application/x-www-form-urlencoded"
    )
    assert status in (200, 201), body
    status, body = _req(
        url + "/v2/keys/other", "PUT", b"value=no", ALICE, "application/x-www-form-urlencoded"
    )
    assert status == 401, body
    status, body = _req(url + "/v2/auth/users", creds=ROOT)
    assert status == 200 and sorted(u["user"] for u in body["users"]) == ["alice", "root"], body


def test_auth_survives_restart_snapshot_and_backup(tmp_path) -> None:
    members = start_cluster(
        "fastkv", 3, base_dir=str(tmp_path), extra=TIMING + ["--snapshot-count", "50"],
        env_extra={"FASTKV_SNAPSHOT_CATCH_UP_ENTRIES": "10"},
    )  # fmt: skip
    extra: list[ServerProcess] = []
    try:
        leader = member_by_id(members, wait_one_leader(members))
        follower = next(m for m in members if m is not leader)
        follower.kill9()
        _enable_auth(leader.url)
        for i in range(150):  # snapshots and compaction while the follower is away
            status, body = _req(leader.url + f"/v2/keys/app/k{i % 30}", "PUT", b"value=x", ALICE,
                                "application/x-www-form-urlencoded")  # fmt: skip
            assert status in (200, 201), body
        follower.restart()
        until(
            "the follower installs the leader's snapshot",
            lambda: "installed the leader's snapshot" in follower.log(),
        )
        _check_enforced(follower.url, "after-snapshot")
        # Every member restarted, gracefully then with kill -9.
        for m in members:
            m.restart()
        wait_one_leader(members)
        for m in members:
            _check_enforced(m.url, f"restart-{members.index(m)}")
        for m in members:
            m.kill9()
        for m in members:
            m.launch()
        for m in members:
            wait_http_ok(m.url + "/health", 30, m.proc)
        _check_enforced(members[0].url, "after-kill")
        # A backup (of a stopped member) started alone with --force-new-cluster keeps the auth state.
        backup_dir = str(tmp_path / "backup")
        data_dir = members[0].argv[members[0].argv.index("--data-dir") + 1]
        for m in members:
            m.kill9()
        rc, _, err = ctl(
            "fastkvctl", members[0].url, "backup", "--data-dir", data_dir, "--backup-dir", backup_dir
        )
        assert rc == 0, err
        cport, pport = free_port(), free_port()
        url, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
        argv = fastkv_argv() + [
            "--name", "m0", "--data-dir", backup_dir, "--force-new-cluster",
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        ] + TIMING  # fmt: skip
        log_path = str(tmp_path / "restored.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        restored = ServerProcess("fastkv", url, peer, backup_dir, argv, proc, log_path)
        extra.append(restored)
        wait_http_ok(url + "/health", 30, proc)
        _check_enforced(url, "restored")
    finally:
        for m in members + extra:
            m.kill9()
