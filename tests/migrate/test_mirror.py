"""``fastkvctl mirror`` against a real etcd 3.4: refusals, resuming past a cleared history, TTLs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.migrate.etcdhistory import http, mask_ttl
from tests.support.clusterutil import until
from tests.support.procs import ServerProcess, have_etcd, start_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pair() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    if not have_etcd():
        pytest.skip("etcd not installed")
    etcd = start_server("etcd", name="e1")
    try:
        fastkv = start_server("fastkv", name="f1")
    except BaseException:
        etcd.kill9()
        raise
    try:
        yield etcd, fastkv
    finally:
        etcd.kill9()
        fastkv.kill9()


def mirror(
    dest: str, source: str, *extra: str, user: str = "", timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    argv = [sys.executable, "-m", "fastkv.cli.main", "--endpoints", dest]
    argv += ["-u", user] if user else []
    argv += ["mirror", "--from", source]
    return subprocess.run(
        [*argv, "--resync-interval", "0.2s", *extra], capture_output=True, text=True, env=env, timeout=timeout
    )


def tree(url: str) -> tuple[str, bytes]:
    status, headers, body = http("GET", url + "/v2/keys/?recursive=true&sorted=true")
    assert status == 200, body
    return headers["X-Etcd-Index"], mask_ttl(body)


def test_a_cluster_that_took_writes_is_refused_and_unchanged(pair) -> None:  # type: ignore[no-untyped-def]
    etcd, fastkv = pair
    assert http("PUT", etcd.url + "/v2/keys/a", {"value": "1"})[0] == 201
    assert http("PUT", fastkv.url + "/v2/keys/mine", {"value": "x"})[0] == 201
    before = tree(fastkv.url)
    p = mirror(fastkv.url, etcd.url, "--finish")
    assert p.returncode == 1
    assert "Error:  " in p.stderr and "this cluster has taken writes of its own" in p.stderr, p.stderr
    assert tree(fastkv.url) == before
    status, _, body = http("PUT", fastkv.url + "/v2/keys/mine", {"value": "y"})
    assert status == 200, body  # still a normal cluster


def test_resume_past_a_cleared_history_resyncs(pair) -> None:  # type: ignore[no-untyped-def]
    etcd, fastkv = pair
    for i in range(20):
        assert http("PUT", f"{etcd.url}/v2/keys/k/{i}", {"value": str(i)})[0] == 201
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    argv = [sys.executable, "-m", "fastkv.cli.main", "--endpoints", fastkv.url, "mirror", "--from", etcd.url]
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        until(
            "the mirror following",
            lambda: http("GET", fastkv.url + "/fastkv/mirror")[2].find(b"following") > 0,
        )
        until("the copy", lambda: tree(fastkv.url)[0] == tree(etcd.url)[0])
    finally:
        follower.terminate()
        follower.wait(10)
    # More than the 1000 events etcd's history holds, a delete and an overwrite among them.
    for i in range(1100):
        assert http("PUT", f"{etcd.url}/v2/keys/more/{i % 50}", {"value": str(i)})[0] in (200, 201)
    assert http("DELETE", f"{etcd.url}/v2/keys/k/3")[0] == 200
    p = mirror(fastkv.url, etcd.url, "--finish")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "no longer holds index" in p.stdout and "resync:" in p.stdout, p.stdout
    assert tree(fastkv.url) == tree(etcd.url)
    # A watch from before the resync is told the history was cleared, as etcd would.
    status, _, body = http("GET", fastkv.url + "/v2/keys/?wait=true&recursive=true&waitIndex=30")
    assert status == 400 and b'"errorCode":401' in body, body


def test_ttls_expire_as_on_the_source_then_on_their_own(pair) -> None:  # type: ignore[no-untyped-def]
    etcd, fastkv = pair
    assert http("PUT", etcd.url + "/v2/keys/short", {"value": "s", "ttl": "1"})[0] == 201
    assert http("PUT", etcd.url + "/v2/keys/later", {"value": "l", "ttl": "4"})[0] == 201
    expiration = http("GET", etcd.url + "/v2/keys/later")[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    argv = [sys.executable, "-m", "fastkv.cli.main", "--endpoints", fastkv.url, "mirror", "--from", etcd.url]
    follower = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    try:
        until("etcd expired /short", lambda: http("GET", etcd.url + "/v2/keys/short")[0] == 404, timeout=15)
        until(
            "the expire event mirrored",
            lambda: http("GET", fastkv.url + "/v2/keys/short")[0] == 404,
            timeout=15,
        )
        status, _, body = http(
            "GET", fastkv.url + "/v2/keys/short?wait=true&waitIndex=" + str(_index_of(etcd))
        )
        assert status == 200 and b'"action":"expire"' in body, body
    finally:
        follower.terminate()
        follower.wait(10)
    assert mask_ttl(http("GET", fastkv.url + "/v2/keys/later")[2]) == mask_ttl(expiration)
    p = mirror(fastkv.url, etcd.url, "--finish")
    assert p.returncode == 0, (p.stdout, p.stderr)
    etcd.stop()  # from now on only fastkv's own expiry can remove /later
    started = time.monotonic()
    until(
        "fastkv expired /later itself",
        lambda: http("GET", fastkv.url + "/v2/keys/later")[0] == 404,
        timeout=15,
    )
    assert time.monotonic() - started < 10


def _index_of(etcd: ServerProcess) -> int:
    """The index of etcd's expire event of /short: the first event after /later's creation."""
    status, _, body = http("GET", etcd.url + "/v2/keys/later")
    assert status == 200
    import json

    return json.loads(body)["node"]["createdIndex"] + 1


def test_the_mirror_endpoint_refuses_bad_batches() -> None:
    fastkv = start_server("fastkv", name="f1")
    try:
        status, _, body = http("GET", fastkv.url + "/fastkv/mirror")
        assert status == 200 and b'"state":"none"' in body, body
        for payload, cause in (
            (b"not json", b"the batch is not JSON"),
            (b"[1, 2]", b"the batch is not a JSON object"),
            (b'{"nodes": []}', b"no source named"),
            (b'{"source": "http://x", "index": 10}', b"not mirroring: begin first"),
        ):
            status, body = _post(fastkv.url + "/fastkv/mirror", payload)
            assert status == 400 and b'"errorCode":209' in body and cause in body, body
        status, _, body = http("DELETE", fastkv.url + "/fastkv/mirror")
        assert status == 405, body
        assert http("PUT", fastkv.url + "/v2/keys/a", {"value": "1"})[0] == 201  # still a normal cluster
    finally:
        fastkv.kill9()


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_with_v2_auth_on_the_destination_only_root_may_mirror(pair) -> None:  # type: ignore[no-untyped-def]
    etcd, fastkv = pair
    assert http("PUT", etcd.url + "/v2/keys/a", {"value": "1"})[0] == 201
    ctl = [sys.executable, "-m", "fastkv.cli.main", "--endpoints", fastkv.url]
    for args in (["user", "add", "root:pw"], ["auth", "enable"]):
        assert subprocess.run([*ctl, *args], capture_output=True, timeout=30).returncode == 0
    p = mirror(fastkv.url, etcd.url, "--finish")
    assert p.returncode == 1 and p.stderr.endswith("refused: Insufficient credentials\n"), p.stderr
    assert http("GET", fastkv.url + "/fastkv/mirror")[0] == 401  # the state too is root's to read
    p = mirror(fastkv.url, etcd.url, "--finish", user="root:pw")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert tree(fastkv.url)[1] == tree(etcd.url)[1]
