"""fastkv and a real etcd 3.4, both fresh single members, given the same random requests: every
answer must be the same bytes, with the same absolute X-Etcd-Index (no normalising of indexes); the
one allowance is the order of an unsorted directory listing, which etcd draws from Go's random map
order.

The requests mix sets, creates, in-order creates, updates, directories, compare-and-swap and
compare-and-delete (matching and failing), deletes (recursive or not), plain, recursive and sorted
reads, and the errors each can give, over a small key space so that they collide.  TTLs are left
out (their remaining seconds depend on when each server answers).
"""

from __future__ import annotations

import http.client
import json
import random
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.support.procs import ServerProcess, have_etcd, start_server

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.slow,
    pytest.mark.skipif(not have_etcd(), reason="etcd not installed"),
]

KEYS = ["/a", "/a/b", "/a/b/c", "/d", "/d/e", "/f", "/q", "/_hidden", "/a/_h"]
SEEDS = [1, 2, 3, 4, 5]
REQUESTS = 400


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    etcd = start_server("etcd")
    fastkv = start_server("fastkv")
    try:
        yield etcd, fastkv
    finally:
        etcd.stop()
        fastkv.stop()


def _request(rng: random.Random, prefix: str) -> tuple[str, str, dict[str, str]]:
    key = prefix + rng.choice(KEYS)
    value = rng.choice(["1", "2", "x y", "<&>", ""])
    kind = rng.randrange(12)
    if kind == 0:
        return "PUT", key, {"value": value}
    if kind == 1:
        return "PUT", key, {"value": value, "prevExist": "false"}
    if kind == 2:
        return "PUT", key, {"value": value, "prevExist": "true"}
    if kind == 3:
        return "PUT", key, {"dir": "true"}
    if kind == 4:
        return "POST", key, {"value": value}
    if kind == 5:
        return "PUT", key, {"value": value, "prevValue": rng.choice(["1", "2"])}
    if kind == 6:
        return "PUT", key, {"value": value, "prevIndex": str(rng.randrange(1, 40))}
    if kind == 7:
        return "DELETE", key, rng.choice([{}, {"dir": "true"}, {"recursive": "true"}])
    if kind == 8:
        return "DELETE", key, {"prevValue": rng.choice(["1", "2"])}
    if kind == 9:
        return "DELETE", key, {"prevIndex": str(rng.randrange(1, 40))}
    if kind == 10:
        return "GET", prefix or "/", {"recursive": "true", "sorted": "true"}
    return "GET", key, rng.choice([{}, {"sorted": "true"}, {"quorum": "true"}])


def _call(server: ServerProcess, method: str, key: str, form: dict[str, str]) -> tuple[int, str, bytes]:
    host, port = server.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    query = urllib.parse.urlencode(form)
    try:
        if method in ("GET", "DELETE"):
            conn.request(method, f"/v2/keys{key}" + (f"?{query}" if query else ""))
        else:
            conn.request(
                method,
                f"/v2/keys{key}",
                body=query,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        r = conn.getresponse()
        return r.status, r.getheader("X-Etcd-Index") or "", r.read()
    finally:
        conn.close()


def _sorted_listing(body: bytes) -> bytes:
    doc = json.loads(body)

    def order(node: dict) -> None:
        if "nodes" in node:
            node["nodes"].sort(key=lambda n: n["key"])
            for child in node["nodes"]:
                order(child)

    if "node" in doc:
        order(doc["node"])
    return json.dumps(doc).encode()


@pytest.mark.parametrize("seed", SEEDS)
def test_same_answers_with_absolute_indexes(pair: tuple[ServerProcess, ServerProcess], seed: int) -> None:
    etcd, fastkv = pair
    rng = random.Random(seed)
    prefix = f"/s{seed}"
    divergences = []
    for i in range(REQUESTS):
        method, key, form = _request(rng, prefix)
        a = _call(etcd, method, key, form)
        b = _call(fastkv, method, key, form)
        if a != b and method == "GET" and "sorted" not in form:
            # etcd lists a directory's children in Go's map order, which is random: compare sets.
            a, b = (a[0], a[1], _sorted_listing(a[2])), (b[0], b[1], _sorted_listing(b[2]))
        if a != b:
            divergences.append((i, method, key, form, a, b))
    assert divergences == [], divergences[:3]
