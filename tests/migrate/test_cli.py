"""``fastkvctl migrate``: a fastkv member starts from the result and serves etcd's tree byte for byte."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest

from fastkv.cli.main import run
from tests.migrate.conftest import EtcdDir
from tests.migrate.etcdhistory import http, mask_ttl
from tests.support.procs import spawn_member, start_server, wait_http_ok

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]


def _migrate(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(["migrate", *args], stdout=out, stderr=err, env=dict(os.environ))
    return code, out.getvalue(), err.getvalue()


def _tree_digest(path: str) -> dict[str, str]:
    digests = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                digests[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def test_fastkv_serves_the_migrated_tree(etcd_single: EtcdDir, tmp_path: object) -> None:
    base = str(tmp_path)
    before = _tree_digest(etcd_single.data_dir)
    code, out, err = _migrate(
        "--from-etcd-data-dir", etcd_single.data_dir, "--data-dir", os.path.join(base, "data")
    )
    assert code == 0, err
    assert "migrated etcd member" in out and "as 'e1'" in out
    assert _tree_digest(etcd_single.data_dir) == before  # the etcd data dir is only read
    assert not [n for n in os.listdir(base) if n.endswith(".migrating")]

    answers = etcd_single.answers
    srv = start_server("fastkv", data_dir=base, name="e1")
    try:
        status, headers, tree = http("GET", srv.url + "/v2/keys/?recursive=true&sorted=true")
        assert status == 200
        # One more store write than etcd showed: the member's attributes, published on every start
        # (etcd restarted on its own data dir does the same).
        assert int(headers["X-Etcd-Index"]) == answers.index + 1
        assert headers["X-Etcd-Cluster-Id"] == answers.cluster_id
        assert mask_ttl(tree) == mask_ttl(answers.tree)
        for path, body in answers.hidden.items():
            assert mask_ttl(http("GET", srv.url + "/v2/keys" + path)[2]) == mask_ttl(body)
        members = json.loads(http("GET", srv.url + "/v2/members")[2])["members"]
        etcd_members = json.loads(answers.members)["members"]
        assert [(m["id"], m["name"], m["peerURLs"]) for m in members] == [
            (m["id"], m["name"], m["peerURLs"]) for m in etcd_members
        ]
        # Watches from an index before the migration are answered from the carried-over history.
        for query, body in answers.watches.items():
            assert mask_ttl(http("GET", srv.url + "/v2/keys" + query)[2]) == mask_ttl(body), query
        # The next write takes the index after the publication: fastkv's index continues etcd's.
        status, _, body = http("PUT", srv.url + "/v2/keys/after", {"value": "migration"})
        assert status == 201
        assert json.loads(body)["node"]["createdIndex"] == answers.index + 2
        # A TTL key keeps its absolute expiration.
        etcd_ttl = next(n for n in json.loads(answers.tree)["node"]["nodes"] if n["key"] == "/ttl")
        fastkv_ttl = json.loads(http("GET", srv.url + "/v2/keys/ttl")[2])["node"]
        assert fastkv_ttl["expiration"] == etcd_ttl["expiration"]
        assert 0 < fastkv_ttl["ttl"] <= etcd_ttl["ttl"]
    finally:
        srv.stop()
    # And again after a restart (the state is in the backend, not only in memory).
    srv = start_server("fastkv", data_dir=base, name="e1")
    try:
        _, headers, tree = http("GET", srv.url + "/v2/keys/?recursive=true&sorted=true")
        assert int(headers["X-Etcd-Index"]) == answers.index + 3  # a publication per start, the write
        assert b'"key":"/after"' in tree
    finally:
        srv.stop()


def test_refusal_writes_nothing(etcd_copy: str, tmp_path: object) -> None:
    seg_dir = os.path.join(etcd_copy, "member", "wal")
    seg = os.path.join(seg_dir, sorted(os.listdir(seg_dir))[0])
    with open(seg, "r+b") as f:
        f.seek(300)
        b = f.read(1)
        f.seek(300)
        f.write(bytes([b[0] ^ 0xFF]))
    target = os.path.join(str(tmp_path), "out")
    code, out, err = _migrate("--from-etcd-data-dir", etcd_copy, "--data-dir", target)
    assert code == 1 and out == ""
    assert err.startswith("Error:  ") and err.count("\n") == 1 and "the WAL is corrupt" in err
    assert os.listdir(str(tmp_path)) == ["etcd"]


def test_existing_target_is_refused(etcd_single: EtcdDir, tmp_path: object) -> None:
    target = os.path.join(str(tmp_path), "out")
    os.makedirs(target)
    with open(os.path.join(target, "keep"), "w") as f:
        f.write("x")
    code, _, err = _migrate("--from-etcd-data-dir", etcd_single.data_dir, "--data-dir", target)
    assert code == 1 and "is not empty" in err
    assert os.listdir(target) == ["keep"]


def test_empty_target_and_name(etcd_single: EtcdDir, tmp_path: object) -> None:
    target = os.path.join(str(tmp_path), "data")
    os.makedirs(target)
    code, out, err = _migrate(
        "--from-etcd-data-dir", etcd_single.data_dir, "--data-dir", target, "--name", "renamed"
    )
    assert code == 0, err
    assert "as 'renamed'" in out
    srv = start_server("fastkv", data_dir=str(tmp_path), name="renamed")
    try:
        deadline = time.monotonic() + 10
        while True:
            members = json.loads(http("GET", srv.url + "/v2/members")[2])["members"]
            if members[0]["name"] == "renamed":  # published by the member after its start
                break
            assert time.monotonic() < deadline, members
            time.sleep(0.05)
    finally:
        srv.stop()
    shutil.rmtree(target, ignore_errors=True)


def test_missing_flags() -> None:
    code, _, err = _migrate("--data-dir", "/nonexistent")
    assert code == 1 and "--from-etcd-data-dir and --data-dir are required" in err


def test_three_member_cluster_moves_over(etcd_cluster: list[EtcdDir], tmp_path: object) -> None:
    """Each etcd member's data dir migrated, each fastkv member started on its etcd member's URLs: the
    cluster serves etcd's tree from every member and replicates the next write at etcd's next index."""
    base = str(tmp_path)
    etcd_members = {m["name"]: m for m in json.loads(etcd_cluster[0].answers.members)["members"]}
    procs = []
    try:
        for etcd in etcd_cluster:
            os.makedirs(os.path.join(base, etcd.name))
            target = os.path.join(base, etcd.name, "data")
            code, _, err = _migrate("--from-etcd-data-dir", etcd.data_dir, "--data-dir", target)
            assert code == 0, err
        for etcd in etcd_cluster:
            me = etcd_members[etcd.name]
            ports = (int(me["clientURLs"][0].rsplit(":", 1)[1]), int(me["peerURLs"][0].rsplit(":", 1)[1]))
            procs.append(spawn_member("fastkv", etcd.name, base, [], ports=ports))
        for p in procs:
            wait_http_ok(p.url + "/health", 30, p.proc)
        answers = etcd_cluster[0].answers
        for p in procs:
            status, headers, tree = http("GET", p.url + "/v2/keys/?recursive=true&sorted=true")
            assert status == 200
            # Each of the three members published its attributes on start, as etcd's do.
            assert int(headers["X-Etcd-Index"]) == answers.index + 3
            assert headers["X-Etcd-Cluster-Id"] == answers.cluster_id
            assert mask_ttl(tree) == mask_ttl(answers.tree)
            for query, body in answers.watches.items():
                assert mask_ttl(http("GET", p.url + "/v2/keys" + query)[2]) == mask_ttl(body), query
        members = json.loads(http("GET", procs[0].url + "/v2/members")[2])["members"]
        assert sorted((m["id"], m["name"], m["peerURLs"]) for m in members) == sorted(
            (m["id"], m["name"], m["peerURLs"]) for m in etcd_members.values()
        )
        status, _, body = http("PUT", procs[2].url + "/v2/keys/after", {"value": "migration"})
        assert status == 201
        assert json.loads(body)["node"]["createdIndex"] == answers.index + 4
        deadline = time.monotonic() + 10
        for p in procs:
            while http("GET", p.url + "/v2/keys/after")[0] != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        for p in procs:
            p.stop()


def test_separate_wal_dir(etcd_copy: str, tmp_path: object) -> None:
    """etcd's --wal-dir: the WAL outside the data dir."""
    wal_dir = os.path.join(str(tmp_path), "etcd-wal")
    shutil.move(os.path.join(etcd_copy, "member", "wal"), wal_dir)
    target = os.path.join(str(tmp_path), "out")
    code, _, err = _migrate("--from-etcd-data-dir", etcd_copy, "--data-dir", target)
    assert code == 1 and "no WAL segments" in err
    code, out, err = _migrate(
        "--from-etcd-data-dir", etcd_copy, "--from-etcd-wal-dir", wal_dir, "--data-dir", target
    )
    assert code == 0, err
    assert os.path.isdir(os.path.join(target, "member", "kv"))


def test_v2_auth_comes_along(etcd_v2_auth: str, tmp_path: object) -> None:
    """etcd's users, roles and enabled flag are migrated: fastkv enforces them from its first start."""
    base = os.path.join(str(tmp_path), "fk")
    os.makedirs(base)
    code, out, err = _migrate("--from-etcd-data-dir", etcd_v2_auth, "--data-dir", os.path.join(base, "data"))
    assert code == 0, err
    assert "v2 auth enabled" in out and "rootpw" not in out and "$2a$" not in out
    srv = start_server("fastkv", data_dir=base, name="e1")
    try:
        assert json.loads(http("GET", srv.url + "/v2/auth/enable")[2]) == {"enabled": True}
        req = urllib.request.Request(srv.url + "/v2/auth/users")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 401
        req.add_header("Authorization", "Basic " + base64.b64encode(b"root:rootpw").decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            assert [u["user"] for u in json.loads(r.read())["users"]] == ["root"]
    finally:
        srv.stop()


def test_help() -> None:
    code, out, _ = _migrate("--help")
    assert code == 0 and "--from-etcd-data-dir" in out
    # Not in the application help, which is etcdctl's word for word.
    app = io.StringIO()
    assert run(["--help"], stdout=app, stderr=io.StringIO(), env={}) == 0
    assert "migrate" not in app.getvalue()


def test_migrated_ttl_key_expires_on_time(tmp_path: object) -> None:
    """A TTL key migrated with a few seconds left expires in fastkv at etcd's absolute expiration."""
    from fastkv.migrate.v2json import parse_go_time
    from tests.support.procs import have_etcd

    if not have_etcd():
        pytest.skip("etcd not installed")
    base = str(tmp_path)
    os.makedirs(os.path.join(base, "etcd"))
    etcd = start_server("etcd", data_dir=os.path.join(base, "etcd"), name="e1")
    try:
        status, headers, body = http("PUT", etcd.url + "/v2/keys/brief", {"value": "x", "ttl": "4"})
        assert status == 201
        expiration = parse_go_time(json.loads(body)["node"]["expiration"])
        index = int(headers["X-Etcd-Index"])
    finally:
        etcd.stop()
    os.makedirs(os.path.join(base, "fastkv"))
    code, _, err = _migrate(
        "--from-etcd-data-dir",
        os.path.join(base, "etcd", "data"),
        "--data-dir",
        os.path.join(base, "fastkv", "data"),
    )
    assert code == 0, err
    srv = start_server("fastkv", data_dir=os.path.join(base, "fastkv"), name="e1")
    try:
        assert http("GET", srv.url + "/v2/keys/brief")[0] == 200 or time.time_ns() > expiration
        deadline = time.monotonic() + 15
        while http("GET", srv.url + "/v2/keys/brief")[0] != 404:
            assert time.monotonic() < deadline, "the migrated TTL key did not expire"
            time.sleep(0.1)
        assert time.time_ns() >= expiration
        status, _, body = http("GET", srv.url + f"/v2/keys/brief?wait=true&waitIndex={index + 2}")
        assert status == 200 and json.loads(body)["action"] == "expire"
        # After the member's attributes, published on start (index + 1).
        assert json.loads(body)["node"]["modifiedIndex"] == index + 2
    finally:
        srv.stop()
