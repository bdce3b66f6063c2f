"""Directories, hidden keys, in-order keys, TTL, refresh and expiry (etcd-v2.md §2.2-§2.5).

TTL tests use ttl=1 and bounded polling: expiry is driven by a SYNC every 500 ms, so a key with ttl=1 is
gone within ~2 s.
"""

from __future__ import annotations

import datetime
import json
import re
import time

from tests.conformance.conftest import RFC3339_NANO_UTC, Api, wait_until

EXPIRY_WAIT = 4.0


def test_create_dir_with_set(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/d", dir="true", value="ignored")
    assert r.status == 201
    i = r.etcd_index
    assert (
        r.body
        == (
            f'{{"action":"set","node":{{"key":"{prefix}/d","dir":true,"modifiedIndex":{i},"createdIndex":{i}}}}}\n'
        ).encode()
    )


def test_create_dir_with_prev_exist_false_and_post(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/d", dir="true", prevExist="false")
    assert r.status == 201 and r.json()["action"] == "create" and r.json()["node"]["dir"] is True
    p = api.post(f"{prefix}/d", dir="true")
    assert p.status == 201
    node = p.json()["node"]
    assert node["dir"] is True and "value" not in node
    assert node["key"] == f"{prefix}/d/{p.etcd_index:020d}"


def test_listing_direct_children_only_unless_recursive(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/d/a", value="1")
    api.put(f"{prefix}/d/sub/b", value="2")
    r = api.get(f"{prefix}/d", sorted="true")
    assert r.status == 200
    node = r.json()["node"]
    assert list(node) == ["key", "dir", "nodes", "modifiedIndex", "createdIndex"]
    assert [c["key"] for c in node["nodes"]] == [f"{prefix}/d/a", f"{prefix}/d/sub"]
    sub = node["nodes"][1]
    assert sub["dir"] is True and "nodes" not in sub
    rec = api.get(f"{prefix}/d", recursive="true", sorted="true").json()["node"]
    assert rec["nodes"][1]["nodes"][0]["key"] == f"{prefix}/d/sub/b"
    assert rec["nodes"][1]["nodes"][0]["value"] == "2"


def test_empty_dir_has_no_nodes_field(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/e", dir="true")
    r = api.get(f"{prefix}/e")
    i = w.etcd_index
    assert (
        r.body
        == (
            f'{{"action":"get","node":{{"key":"{prefix}/e","dir":true,"modifiedIndex":{i},"createdIndex":{i}}}}}\n'
        ).encode()
    )


def test_sorted_is_bytewise_at_every_level(api: Api, prefix: str) -> None:
    names = ["b", "a", "B", "10", "9", "_h", "a b"]
    for n in names:
        api.put(f"{prefix}/s/{n}/x", value=n)
        api.put(f"{prefix}/s/a/{n}", value=n)
    r = api.get(f"{prefix}/s", recursive="true", sorted="true").json()["node"]
    top = [c["key"].rsplit("/", 1)[1] for c in r["nodes"]]
    assert top == sorted(n for n in names if not n.startswith("_"))
    a = next(c for c in r["nodes"] if c["key"].endswith("/a"))
    assert [c["key"].rsplit("/", 1)[1] for c in a["nodes"]] == sorted(
        {n for n in names if not n.startswith("_")} | {"x"}
    )


def test_intermediate_dirs_get_the_write_index_and_dirs_keep_modified_index(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/p/q/r", value="1")
    i = w.etcd_index
    p = api.get(f"{prefix}/p").json()["node"]
    assert (p["createdIndex"], p["modifiedIndex"]) == (i, i)
    api.put(f"{prefix}/p/q/s", value="2")
    api.put(f"{prefix}/p/q/r", value="3")
    q = api.get(f"{prefix}/p/q").json()["node"]
    assert (q["createdIndex"], q["modifiedIndex"]) == (i, i)


def test_delete_dirs(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/e", dir="true")
    r = api.delete(f"{prefix}/e", dir="true")
    assert r.status == 200
    node, prev = r.json()["node"], r.json()["prevNode"]
    assert node == {
        "key": f"{prefix}/e",
        "dir": True,
        "modifiedIndex": r.etcd_index,
        "createdIndex": prev["createdIndex"],
    }
    assert prev["dir"] is True
    api.put(f"{prefix}/full/a/b", value="1")
    r = api.delete(f"{prefix}/full", recursive="true")
    assert r.status == 200 and r.json()["node"]["dir"] is True
    assert "nodes" not in r.json()["prevNode"]
    assert api.get(f"{prefix}/full").status == 404
    f = api.put(f"{prefix}/file", value="1")
    r = api.delete(f"{prefix}/file", dir="true")
    assert r.status == 200 and r.etcd_index == f.etcd_index + 1


def test_hidden_keys_are_omitted_from_listings(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/h/visible", value="1")
    api.put(f"{prefix}/h/_hidden", value="2")
    api.put(f"{prefix}/h/_hdir/x", value="3")
    api.put(f"{prefix}/h/sub/_deep", value="4")
    r = api.get(f"{prefix}/h", recursive="true", sorted="true").json()["node"]
    keys = [c["key"] for c in r["nodes"]]
    assert keys == [f"{prefix}/h/sub", f"{prefix}/h/visible"]
    assert "nodes" not in r["nodes"][0]
    assert api.get(f"{prefix}/h/_hidden").json()["node"]["value"] == "2"
    inner = api.get(f"{prefix}/h/_hdir", recursive="true").json()["node"]
    assert [c["key"] for c in inner["nodes"]] == [f"{prefix}/h/_hdir/x"]


def test_in_order_keys(api: Api, prefix: str) -> None:
    created = []
    for v in ("first", "second", "third"):
        r = api.post(f"{prefix}/q", value=v)
        assert r.status == 201
        node = r.json()["node"]
        assert node["key"] == f"{prefix}/q/{r.etcd_index:020d}"
        assert re.fullmatch(r"\d{20}", node["key"].rsplit("/", 1)[1])
        assert r.json()["action"] == "create"
        created.append(node["key"])
    api.put(f"{prefix}/other", value="gap")
    r = api.post(f"{prefix}/q", value="fourth")
    created.append(r.json()["node"]["key"])
    listing = api.get(f"{prefix}/q", sorted="true").json()["node"]["nodes"]
    assert [c["key"] for c in listing] == created
    assert [c["value"] for c in listing] == ["first", "second", "third", "fourth"]


def test_post_ignores_prev_exist(api: Api, prefix: str) -> None:
    r = api.post(f"{prefix}/q", value="x", prevExist="true")
    assert r.status == 201 and r.json()["action"] == "create"


def test_ttl_fields_and_countdown(api: Api, prefix: str) -> None:
    before = time.time()
    r = api.put(f"{prefix}/t", value="v", ttl="100")
    after = time.time()
    node = r.json()["node"]
    assert list(node) == ["key", "value", "expiration", "ttl", "modifiedIndex", "createdIndex"]
    assert node["ttl"] == 100
    assert RFC3339_NANO_UTC.match(node["expiration"]), node["expiration"]
    exp = _parse_rfc3339(node["expiration"])
    assert before + 99 <= exp <= after + 101
    g = api.get(f"{prefix}/t").json()["node"]
    assert 99 <= g["ttl"] <= 100 and g["expiration"] == node["expiration"]


def test_ttl_zero_has_expiration_but_no_ttl_field(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/z", value="v", ttl="0")
    node = r.json()["node"]
    assert "expiration" in node and "ttl" not in node


def test_remove_ttl_by_update_with_empty_ttl_and_by_set(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/t", value="v", ttl="100")
    r = api.put(f"{prefix}/t", value="v", ttl="", prevExist="true")
    assert r.json()["action"] == "update"
    assert "ttl" not in r.json()["node"] and "expiration" not in r.json()["node"]
    assert "ttl" in r.json()["prevNode"]
    api.put(f"{prefix}/t2", value="v", ttl="100")
    r = api.put(f"{prefix}/t2", value="w")
    assert "ttl" not in r.json()["node"]


def test_key_expires_with_expire_event(api: Api, prefix: str) -> None:
    k = f"{prefix}/ex"
    c = api.put(k, value="v", ttl="1")
    i = c.etcd_index
    w = api.watch(k, waitIndex=str(i + 1), timeout=EXPIRY_WAIT + 2)
    try:
        body = w.read_body(timeout=EXPIRY_WAIT + 2)
    finally:
        w.close()
    exp = c.json()["node"]["expiration"]
    m = re.fullmatch(
        rb'\{"action":"expire","node":\{"key":"(.*)","modifiedIndex":(\d+),"createdIndex":(\d+)\},'
        rb'"prevNode":\{"key":"(.*)","value":"v","expiration":"(.*)","modifiedIndex":(\d+),"createdIndex":(\d+)\}\}\n',
        body,
    )
    assert m, body
    assert m.group(1).decode() == k == m.group(4).decode()
    assert int(m.group(2)) > i
    assert int(m.group(3)) == i == int(m.group(6)) == int(m.group(7))
    assert m.group(5).decode() == exp
    assert api.get(k).status == 404


def test_dir_ttl_expires_whole_subtree(api: Api, prefix: str) -> None:
    d = api.put(f"{prefix}/d", dir="true", ttl="1")
    assert d.json()["node"]["ttl"] == 1
    api.put(f"{prefix}/d/child/leaf", value="1")
    w = api.watch(f"{prefix}/d/child/leaf", timeout=EXPIRY_WAIT + 2)
    try:
        ev = w.read_body(timeout=EXPIRY_WAIT + 2)
    finally:
        w.close()
    e = json.loads(ev)
    assert e["action"] == "expire"
    assert e["node"]["key"] == f"{prefix}/d" and e["node"]["dir"] is True
    assert api.get(f"{prefix}/d/child/leaf").status == 404


def test_dir_ttl_update(api: Api, prefix: str) -> None:
    d = api.put(f"{prefix}/d", dir="true", ttl="100")
    i = d.etcd_index
    r = api.put(f"{prefix}/d", dir="true", prevExist="true", ttl="200")
    assert r.status == 200 and r.json()["action"] == "update"
    assert r.json()["node"]["ttl"] == 200
    # Quirk: the answer reports the new modifiedIndex, the stored dir keeps the old one.
    assert r.json()["node"]["modifiedIndex"] == i + 1 == r.etcd_index
    g = api.get(f"{prefix}/d").json()["node"]
    assert g["modifiedIndex"] == i
    assert 199 <= g["ttl"] <= 200
    r = api.put(f"{prefix}/d", dir="true", prevExist="true")
    assert "ttl" not in r.json()["node"]
    assert "ttl" not in api.get(f"{prefix}/d").json()["node"]


def test_refresh_with_prev_exist_keeps_value_and_created_index(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/r", value="keep", ttl="100")
    r = api.put(f"{prefix}/r", ttl="300", refresh="true", prevExist="true")
    assert r.status == 200
    body = r.json()
    assert body["action"] == "update"
    assert body["node"]["value"] == "keep" and body["node"]["ttl"] == 300
    assert body["node"]["createdIndex"] == c.etcd_index
    assert r.etcd_index == c.etcd_index + 1 == body["node"]["modifiedIndex"]
    assert body["prevNode"]["value"] == "keep"


def test_refresh_without_prev_exist_is_set_with_new_created_index(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/r", value="keep", ttl="100")
    r = api.put(f"{prefix}/r", ttl="300", refresh="true")
    assert r.status == 200
    body = r.json()
    assert body["action"] == "set"
    assert body["node"]["value"] == "keep"
    assert body["node"]["createdIndex"] == r.etcd_index == c.etcd_index + 1
    missing = api.put(f"{prefix}/nope", ttl="5", refresh="true")
    assert missing.status == 404 and missing.json()["errorCode"] == 100


def test_refresh_keeps_key_alive(api: Api, prefix: str) -> None:
    k = f"{prefix}/alive"
    api.put(k, value="v", ttl="1")
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        r = api.put(k, ttl="2", refresh="true", prevExist="true")
        assert r.status == 200, r.body
        time.sleep(0.3)
    assert api.get(k).json()["node"]["value"] == "v"
    assert wait_until(lambda: api.get(k).status == 404, EXPIRY_WAIT)


def _parse_rfc3339(s: str) -> float:
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z", s)
    assert m
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac
