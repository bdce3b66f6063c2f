"""The non-key endpoints (etcd-v2.md §1.1, §1.8, §1.9): /version, /health, /v2/machines, /v2/members,
/v2/members/leader, /v2/stats/self, /v2/stats/store.

Member-dependent values (ids, URLs, times) are checked by shape; framing (trailing newline or not,
Content-Type) exactly.  Membership facts follow the target: the member count is ``target.cluster_size`` and,
through a follower, ``/v2/stats/self`` says ``StateFollower`` and ``/v2/stats/leader`` answers 403.
"""

from __future__ import annotations

import json
import re

from tests.conformance.conftest import HEX_ID, RFC3339_NANO_UTC, Api, Target

GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?(s|ms|µs|ns)$")
STORE_STATS_FIELDS = [
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
    "expireCount",
    "watchers",
]


def test_version(api: Api) -> None:
    r = api.request("GET", "/version")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert not r.body.endswith(b"\n")
    assert re.fullmatch(rb'\{"etcdserver":"\d+\.\d+\.\d+","etcdcluster":"\d+\.\d+\.0"\}', r.body), r.body


def test_health(api: Api) -> None:
    r = api.request("GET", "/health")
    assert r.status == 200
    assert r.body == b'{"health":"true"}'
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    assert r.header("X-Etcd-Cluster-Id") is None
    s = api.request("GET", "/health?serializable=true")
    assert (s.status, s.body) == (200, b'{"health":"true"}')


def test_machines(api: Api, target: Target) -> None:
    r = api.request("GET", "/v2/machines")
    assert r.status == 200
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    urls = r.body.decode().split(", ")
    assert target.url in urls
    assert not r.body.endswith(b"\n")
    h = api.request("HEAD", "/v2/machines")
    assert h.status == 200 and h.body == b""
    assert h.header("Content-Length") == str(len(r.body))


def _assert_member_shape(m: dict, raw: bytes) -> None:
    assert list(m) == ["id", "name", "peerURLs", "clientURLs"]
    assert HEX_ID.match(m["id"])
    assert isinstance(m["name"], str)
    assert all(u.startswith("http") for u in m["peerURLs"] + m["clientURLs"])


def test_members_list(api: Api, target: Target) -> None:
    r = api.request("GET", "/v2/members")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert HEX_ID.match(r.header("X-Etcd-Cluster-Id") or "")
    assert r.body.startswith(b'{"members":[') and r.body.endswith(b"]}\n")
    members = r.json()["members"]
    if target.cluster_size is None:
        assert len(members) >= 1
    else:
        assert len(members) == target.cluster_size
    for m in members:
        _assert_member_shape(m, r.body)
    assert [int(m["id"], 16) for m in members] == sorted(int(m["id"], 16) for m in members)
    assert any(target.url in m["clientURLs"] for m in members)


def test_members_leader(api: Api, target: Target) -> None:
    r = api.request("GET", "/v2/members/leader")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert r.body.endswith(b"]}\n")
    leader = r.json()
    _assert_member_shape(leader, r.body)
    ids = [m["id"] for m in api.request("GET", "/v2/members").json()["members"]]
    assert leader["id"] in ids
    if target.through_follower:
        assert target.url not in leader["clientURLs"]


def test_members_errors(api: Api) -> None:
    before = api.request("GET", "/v2/members").json()["members"]
    r = api.request("GET", "/v2/members/nonsense")
    assert (r.status, r.body) == (404, b'{"message":"Not found"}')
    assert r.header("Content-Type") == "application/json"
    r = api.request("DELETE", "/v2/members/123")
    assert (r.status, r.body) == (404, b'{"message":"No such member: 123"}')
    for method in ("DELETE", "PUT"):
        r = api.request(method, "/v2/members")
        assert r.status == 405
        assert r.body == b"Method Not Allowed\n"
    r = api.request(
        "POST",
        "/v2/members",
        body=b"peerURLs=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 415
    assert (
        r.body == b'{"message":"Bad Content-Type application/x-www-form-urlencoded, accept application/json"}'
    )
    r = api.request("POST", "/v2/members", body=b"garbage", headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert r.body == b'{"message":"invalid character \'g\' looking for beginning of value"}'
    r = api.request(
        "POST",
        "/v2/members",
        body=b'{"peerURLs":["not a url"]}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 400
    assert r.body == b'{"message":"URL scheme must be http, https, unix, or unixs: not a url"}'
    assert api.request("GET", "/v2/members").json()["members"] == before


def test_stats_self(api: Api, target: Target) -> None:
    r = api.request("GET", "/v2/stats/self")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert not r.body.endswith(b"\n")
    s = r.json()
    required = [
        "name",
        "id",
        "state",
        "startTime",
        "leaderInfo",
        "recvAppendRequestCnt",
        "sendAppendRequestCnt",
    ]
    assert [k for k in s if k in required] == required
    optional = {"recvPkgRate", "recvBandwidthRate", "sendPkgRate", "sendBandwidthRate"}
    assert set(s) - set(required) <= optional
    assert HEX_ID.match(s["id"])
    if target.through_follower:
        assert s["state"] == "StateFollower"
    elif target.cluster_size == 1:
        assert s["state"] == "StateLeader"
    else:
        assert s["state"] in ("StateLeader", "StateFollower")
    assert RFC3339_NANO_UTC.match(s["startTime"]) or re.match(r"^\d{4}-\d{2}-\d{2}T", s["startTime"])
    li = s["leaderInfo"]
    assert list(li) == ["leader", "uptime", "startTime"]
    assert HEX_ID.match(li["leader"])
    assert GO_DURATION.match(li["uptime"]), li["uptime"]
    assert isinstance(s["recvAppendRequestCnt"], int) and isinstance(s["sendAppendRequestCnt"], int)
    members = {m["id"]: m for m in api.request("GET", "/v2/members").json()["members"]}
    assert s["id"] in members and s["name"] == members[s["id"]]["name"]
    assert li["leader"] in members
    assert (li["leader"] == s["id"]) == (s["state"] == "StateLeader")


def test_stats_leader(api: Api, target: Target) -> None:
    r = api.request("GET", "/v2/stats/leader")
    assert r.header("Content-Type") == "application/json"
    if target.through_follower:
        assert (r.status, r.body) == (403, b'{"message":"not current leader"}')
        return
    if target.cluster_size != 1:
        return  # a 'url' target may be either
    assert r.status == 200
    assert not r.body.endswith(b"\n")
    s = r.json()
    assert s == {"leader": api.request("GET", "/v2/stats/self").json()["id"], "followers": {}}


def test_stats_store(api: Api, prefix: str) -> None:
    r = api.request("GET", "/v2/stats/store")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert not r.body.endswith(b"\n")
    before = r.json()
    assert list(before) == STORE_STATS_FIELDS
    assert all(isinstance(v, int) and v >= 0 for v in before.values())
    api.put(f"{prefix}/a", value="1")
    api.put(f"{prefix}/a", value="2", prevValue="nope")
    api.delete(f"{prefix}/a")
    after = json.loads(api.request("GET", "/v2/stats/store").body)
    assert after["setsSuccess"] == before["setsSuccess"] + 1
    assert after["compareAndSwapFail"] == before["compareAndSwapFail"] + 1
    assert after["deleteSuccess"] == before["deleteSuccess"] + 1


def test_endpoints_405(api: Api) -> None:
    for path in ("/version", "/health", "/v2/machines", "/v2/stats/self", "/v2/stats/store"):
        r = api.request("POST", path)
        assert r.status == 405, path
