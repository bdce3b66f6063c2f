"""Write a varied v2 history into a real etcd, record what it answers, stop it: the material the
migration tests decode and compare against.

The history covers files, directories (made explicitly and implicitly), in-order keys, hidden keys,
TTL keys and a TTL directory, a refresh, a key that expires while etcd runs (SYNC entries with expire
events), deletes (file, recursive dir), compare-and-swap and compare-and-delete (successful and
refused), prevExist creates and updates, and values needing JSON escapes.  With a small
``--snapshot-count`` etcd takes several snapshots and leaves a WAL tail after the last.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from tests.support.procs import ServerProcess

# Go's RFC 3339 expiration in etcd's answers, and the remaining-seconds field that depends on when
# the answer was made.
_TTL_FIELD = re.compile(rb'"ttl":-?\d+')


def http(method: str, url: str, form: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def mask_ttl(body: bytes) -> bytes:
    """The body with each node's remaining ``ttl`` (which depends on the moment of the answer)
    replaced; expirations are absolute and stay."""
    return _TTL_FIELD.sub(b'"ttl":"*"', body)


@dataclass
class EtcdAnswers:
    """What etcd answered after the history, just before it was stopped."""

    index: int  # X-Etcd-Index of the recursive GET
    tree: bytes  # GET /v2/keys/?recursive=true&sorted=true
    hidden: dict[str, bytes]  # key -> GET body for the hidden keys (not listed by the recursive GET)
    user_nodes: int  # files and directories below the root, hidden ones included
    members: bytes  # GET /v2/members
    cluster_id: str  # X-Etcd-Cluster-Id
    watches: dict[str, bytes]  # query -> body of a watch answered from etcd's event history


def write_history(url: str, files: int = 60) -> dict[str, str]:
    assert files >= 12, "the history updates and deletes /k/5 to /k/11"
    """The history (see the module docstring); returns the hidden keys' paths by name."""
    keys = url + "/v2/keys"

    def ok(method: str, path: str, form: dict[str, str] | None = None, expect: int | None = None) -> dict:
        status, _, body = http(method, keys + path, form)
        if expect is not None:
            assert status == expect, (method, path, status, body)
        else:
            assert status in (200, 201), (method, path, status, body)
        return json.loads(body)

    ok("PUT", "/a/b/c", {"value": "deep"})
    for i in range(files):
        ok("PUT", f"/k/{i}", {"value": f"v{i}"})
    ok("PUT", "/d", {"dir": "true"})
    ok("PUT", "/d/x", {"value": "in d"})
    ok("PUT", "/emptydir", {"dir": "true"})
    for j in range(3):
        ok("POST", "/queue", {"value": f"job{j}"})
    ok("PUT", "/_hidden", {"value": "h"})
    ok("PUT", "/a/_secret", {"value": "s"})
    ok("PUT", "/ttl", {"value": "lives", "ttl": "3600"})
    ok("PUT", "/ttldir", {"dir": "true", "ttl": "7200"})
    ok("PUT", "/ttldir/f", {"value": "in a ttl dir"})
    ok("PUT", "/refreshed", {"value": "r", "ttl": "600"})
    ok("PUT", "/refreshed?refresh=true&prevExist=true", {"ttl": "5400"})
    # A key that expires while etcd runs: the leader's SYNC entry deletes it.
    ok("PUT", "/short", {"value": "gone soon", "ttl": "1"})
    deadline = time.monotonic() + 15
    while http("GET", keys + "/short")[0] != 404:
        assert time.monotonic() < deadline, "etcd did not expire /short"
        time.sleep(0.1)
    ok("DELETE", "/k/5")
    ok("DELETE", "/d?recursive=true")
    ok("PUT", "/k/7?prevValue=v7", {"value": "w7"})
    ok("PUT", "/k/8?prevValue=nope", {"value": "x"}, expect=412)
    created = ok("PUT", "/k/new?prevExist=false", {"value": "fresh"})
    ok("PUT", "/k/new?prevExist=false", {"value": "again"}, expect=412)
    ok("PUT", "/k/9?prevExist=true", {"value": "updated"})
    ok("DELETE", f"/k/new?prevIndex={created['node']['modifiedIndex']}")
    ok("DELETE", "/k/10?prevValue=wrong", expect=412)
    ok("PUT", "/esc", {"value": '<tag> & "quotes" \u2028 \u00e9\u4e2d \\ \n end'})
    ok("PUT", "/k/11", {"value": "overwritten"})
    ok("PUT", "/tail/1", {"value": "after the last snapshot?"})
    return {"_hidden": "/_hidden", "_secret": "/a/_secret"}


def record_answers(url: str, hidden: dict[str, str]) -> EtcdAnswers:
    status, headers, tree = http("GET", url + "/v2/keys/?recursive=true&sorted=true")
    assert status == 200, tree
    index = int(headers["X-Etcd-Index"])
    hidden_bodies = {}
    for path in hidden.values():
        st, _, body = http("GET", url + "/v2/keys" + path)
        assert st == 200, body
        hidden_bodies[path] = body
    _, _, members = http("GET", url + "/v2/members")
    nodes = count_nodes(json.loads(tree)["node"]) + len(hidden)
    watches = {}
    nodes_by_key = {n["key"]: n for n in json.loads(tree)["node"]["nodes"]}
    for query in watch_queries(nodes_by_key["/tail"]["nodes"][0]["modifiedIndex"]):
        st, _, body = http("GET", url + "/v2/keys" + query)
        assert st == 200, (query, body)
        watches[query] = body
    return EtcdAnswers(index, tree, hidden_bodies, nodes, members, headers["X-Etcd-Cluster-Id"], watches)


def watch_queries(last_user_write: int) -> list[str]:
    """Watches that etcd answers at once from its event history (each has a past event to find)."""
    return [
        "/k/7?wait=true&waitIndex=1",
        "/short?wait=true&waitIndex=1",
        "/d?wait=true&waitIndex=1",
        "/k?wait=true&recursive=true&waitIndex=1",
        f"/?wait=true&recursive=true&waitIndex={last_user_write - 2}",
        f"/tail/1?wait=true&waitIndex={last_user_write}",
    ]


def count_nodes(node: dict) -> int:
    return sum(1 + count_nodes(child) for child in node.get("nodes", []))


def wait_applied(members: list[ServerProcess], timeout: float = 15.0) -> None:
    """Until every member answers with the same X-Etcd-Index (all applied the history; the Raft
    index keeps moving with the leader's SYNC entries while TTL keys exist)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = set()
        for m in members:
            _, headers, _ = http("GET", m.url + "/v2/keys/")
            seen.add(headers.get("X-Etcd-Index"))
        if len(seen) == 1:
            return
        assert time.monotonic() < deadline, f"members did not converge: {seen}"
        time.sleep(0.1)


def http_json(method: str, url: str, doc: object | None = None) -> tuple[int, bytes]:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def change_members(url: str, peer_url: str, other_peer_url: str) -> int:
    """Add a member that never starts, move its peer URL, remove it (three configuration changes, the
    removal leaving a tombstone under /0/removed_members); returns its id."""
    # etcd refuses an add (500) until its peers have been connected for 5 s (strict reconfig check).
    deadline = time.monotonic() + 30
    while True:
        status, body = http_json("POST", url + "/v2/members", {"peerURLs": [peer_url]})
        if status != 500 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 201, body
    member_id = json.loads(body)["id"]
    status, body = http_json("PUT", f"{url}/v2/members/{member_id}", {"peerURLs": [other_peer_url]})
    assert status == 204, body
    status, body = http_json("DELETE", f"{url}/v2/members/{member_id}")
    assert status == 204, body
    return int(member_id, 16)
