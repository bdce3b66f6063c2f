"""/v2/keys basics: the decision table of etcd-v2.md §1.3, bodies (§1.5), headers (§1.2), paths (§1.4).

Bodies are compared byte for byte: field order, omission rules and the trailing newline are part of the
contract.  Index values are taken from the response's own X-Etcd-Index, never assumed.
"""

from __future__ import annotations

import re

from tests.conformance.conftest import CORS_HEADERS, HEX_ID, Api, Reply, key_path


def file_node(key: str, value: str, mi: int, ci: int) -> str:
    return f'{{"key":"{key}","value":"{value}","modifiedIndex":{mi},"createdIndex":{ci}}}'


def assert_keys_headers(r: Reply, success: bool = True) -> None:
    assert r.header("Content-Type") == "application/json"
    assert HEX_ID.match(r.header("X-Etcd-Cluster-Id") or ""), r.headers
    assert re.fullmatch(r"\d+", r.header("X-Etcd-Index") or "")
    if success:
        assert int(r.header("X-Raft-Index") or "0") > 0
        assert int(r.header("X-Raft-Term") or "0") > 0
    else:
        assert r.header("X-Raft-Index") is None
        assert r.header("X-Raft-Term") is None
    assert r.header("Content-Length") == str(len(r.body))
    assert r.body.endswith(b"}\n")
    for name, value in CORS_HEADERS.items():
        assert r.header(name) == value


def test_set_new_key_is_201_with_exact_body(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/a", value="1")
    assert (r.status, r.reason) == (201, "Created")
    assert_keys_headers(r)
    i = r.etcd_index
    assert r.body == f'{{"action":"set","node":{file_node(f"{prefix}/a", "1", i, i)}}}\n'.encode()


def test_set_existing_key_is_200_with_prev_node_and_new_created_index(api: Api, prefix: str) -> None:
    first = api.put(f"{prefix}/a", value="1")
    r = api.put(f"{prefix}/a", value="2")
    assert r.status == 200
    i, j = first.etcd_index, r.etcd_index
    assert j == i + 1
    k = f"{prefix}/a"
    assert r.body == (
        f'{{"action":"set","node":{file_node(k, "2", j, j)},"prevNode":{file_node(k, "1", i, i)}}}\n'.encode()
    )


def test_get_file(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/a", value="v")
    r = api.get(f"{prefix}/a")
    assert r.status == 200
    assert_keys_headers(r)
    i = w.etcd_index
    assert r.etcd_index == i
    assert r.body == f'{{"action":"get","node":{file_node(f"{prefix}/a", "v", i, i)}}}\n'.encode()


def test_put_without_value_sets_empty_string(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/e")
    assert r.status == 201
    assert r.json()["node"]["value"] == ""
    assert b'"value":""' in r.body


def test_gets_and_failed_writes_do_not_advance_the_index(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/a", value="1")
    api.get(f"{prefix}/a")
    api.get(f"{prefix}/missing")
    bad = api.put(f"{prefix}/a", value="2", prevValue="nope")
    assert bad.status == 412
    assert bad.etcd_index == w.etcd_index
    assert api.index() == w.etcd_index
    w2 = api.put(f"{prefix}/b", value="1")
    assert w2.etcd_index == w.etcd_index + 1


def test_create_with_prev_exist_false(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/c", value="x", prevExist="false")
    assert r.status == 201
    i = r.etcd_index
    assert r.body == f'{{"action":"create","node":{file_node(f"{prefix}/c", "x", i, i)}}}\n'.encode()
    again = api.put(f"{prefix}/c", value="y", prevExist="false")
    assert again.status == 412
    assert_keys_headers(again, success=False)
    assert again.body == (
        f'{{"errorCode":105,"message":"Key already exists","cause":"{prefix}/c","index":{i}}}\n'.encode()
    )


def test_update_keeps_created_index(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/u", value="1")
    r = api.put(f"{prefix}/u", value="2", prevExist="true")
    assert r.status == 200
    i, j = c.etcd_index, r.etcd_index
    k = f"{prefix}/u"
    assert r.body == (
        f'{{"action":"update","node":{file_node(k, "2", j, i)},"prevNode":{file_node(k, "1", i, i)}}}\n'.encode()
    )


def test_update_without_value_blanks_it(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/u", value="1")
    r = api.put(f"{prefix}/u", prevExist="true")
    assert r.json()["node"]["value"] == ""


def test_update_missing_key_is_404(api: Api, prefix: str) -> None:
    idx = api.index()
    r = api.put(f"{prefix}/nope", value="1", prevExist="true")
    assert r.status == 404
    assert r.body == (
        f'{{"errorCode":100,"message":"Key not found","cause":"{prefix}","index":{idx}}}\n'.encode()
    )


def test_delete_file(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/d", value="1")
    r = api.delete(f"{prefix}/d")
    assert r.status == 200
    assert_keys_headers(r)
    i, j = c.etcd_index, r.etcd_index
    assert j == i + 1
    k = f"{prefix}/d"
    assert r.body == (
        f'{{"action":"delete","node":{{"key":"{k}","modifiedIndex":{j},"createdIndex":{i}}},'
        f'"prevNode":{file_node(k, "1", i, i)}}}\n'.encode()
    )
    assert api.get(k).status == 404


def test_key_not_found_cause_is_first_missing_component(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/x", value="1")
    r = api.get(f"{prefix}/a/b/c")
    assert r.status == 404
    assert_keys_headers(r, success=False)
    assert r.json() == {
        "errorCode": 100,
        "message": "Key not found",
        "cause": f"{prefix}/a",
        "index": r.etcd_index,
    }
    assert list(r.json()) == ["errorCode", "message", "cause", "index"]


def test_root_listing_has_no_key_and_no_indexes(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/a", value="1")
    r = api.request("GET", "/v2/keys")
    assert r.status == 200
    assert r.body.startswith(b'{"action":"get","node":{"dir":true,"nodes":[')
    node = r.json()["node"]
    assert set(node) == {"dir", "nodes"}
    slash = api.request("GET", "/v2/keys/")
    assert slash.status == 200
    assert set(slash.json()["node"]) == {"dir", "nodes"}


def test_root_is_read_only(api: Api) -> None:
    idx = api.index()
    for method in ("PUT", "DELETE"):
        r = api.request(method, "/v2/keys/", form={"value": "x"} if method == "PUT" else None)
        assert r.status == 400
        assert (
            r.body
            == f'{{"errorCode":107,"message":"Root is read only","cause":"/","index":{idx}}}\n'.encode()
        )
    assert api.index() == idx


def test_head_has_get_headers_and_no_body(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/h", value="hello")
    g = api.get(f"{prefix}/h")
    h = api.head(f"{prefix}/h")
    assert h.status == 200
    assert h.body == b""
    assert h.header("Content-Length") == str(len(g.body))
    assert h.header("Content-Type") == "application/json"
    assert h.header("X-Etcd-Index") == g.header("X-Etcd-Index")
    missing = api.head(f"{prefix}/nope")
    assert missing.status == 404
    assert missing.body == b""


def test_options_is_empty_200_with_cors(api: Api, prefix: str) -> None:
    r = api.request("OPTIONS", key_path(f"{prefix}/a"))
    assert r.status == 200
    assert r.body == b""
    assert r.header("Content-Length") == "0"
    for name, value in CORS_HEADERS.items():
        assert r.header(name) == value


def test_cors_headers_on_every_kind_of_answer(api: Api) -> None:
    for path in ("/v2/keys/", "/v2/keys/definitely/not/here", "/version", "/health", "/nope", "/v2/members"):
        r = api.request("GET", path)
        for name, value in CORS_HEADERS.items():
            assert r.header(name) == value, (path, r.headers)


def test_unsupported_method_is_405_with_allow(api: Api, prefix: str) -> None:
    for method in ("PATCH", "TRACE", "PROPFIND", "FOO"):
        r = api.request(method, key_path(f"{prefix}/a"))
        if method == "FOO" and r.status == 400:
            # etcd answers 405; an HTTP parser that only knows registered methods refuses it earlier.
            continue
        assert r.status == 405
        assert r.header("Allow") == "HEAD,GET,PUT,POST,DELETE"
        assert r.body == b"Method Not Allowed\n"
        assert r.header("Content-Type") == "text/plain; charset=utf-8"


def test_unknown_path_is_404_page_not_found(api: Api) -> None:
    for path in ("/nope", "/v2/nope", "/v2", "/v2/stats", "/v2/keysx"):
        r = api.request("GET", path)
        assert r.status == 404, path
        assert r.body == b"404 page not found\n"
        assert r.header("Content-Type") == "text/plain; charset=utf-8"


def test_non_canonical_paths_redirect_301(api: Api, prefix: str) -> None:
    cases = {
        f"/v2/keys/{prefix}/a": f"/v2/keys{prefix}/a",
        f"/v2/keys{prefix}//a": f"/v2/keys{prefix}/a",
        f"/v2/keys{prefix}/./a": f"/v2/keys{prefix}/a",
        f"/v2/keys{prefix}/x/../a": f"/v2/keys{prefix}/a",
        "//v2/keys/a": "/v2/keys/a",
    }
    idx = api.index()
    for path, location in cases.items():
        for method in ("GET", "PUT", "DELETE"):
            r = api.request(method, path)
            assert r.status == 301, (method, path)
            assert r.header("Location") == location
    assert api.index() == idx


def test_redirect_keeps_query_string(api: Api, prefix: str) -> None:
    r = api.request("GET", f"/v2/keys{prefix}//a?recursive=true")
    assert r.status == 301
    assert r.header("Location") == f"/v2/keys{prefix}/a?recursive=true"


def test_trailing_slash_is_ignored(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/a/b", value="1")
    r = api.request("GET", f"/v2/keys{prefix}/a/b/")
    assert r.status == 200
    assert r.json()["node"]["key"] == f"{prefix}/a/b"


def test_percent_decoding_of_key(api: Api, prefix: str) -> None:
    r = api.request("PUT", f"/v2/keys{prefix}/x%2Fy%20z", form={"value": "1"})
    assert r.status == 201
    assert r.json()["node"]["key"] == f"{prefix}/x/y z"
    listing = api.get(f"{prefix}/x")
    assert listing.json()["node"]["dir"] is True
    assert listing.json()["node"]["nodes"][0]["key"] == f"{prefix}/x/y z"


def test_body_param_wins_over_query_param(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/q", query={"value": "fromquery"}, value="frombody")
    assert r.json()["node"]["value"] == "frombody"
    r = api.put(f"{prefix}/q2", query={"value": "fromquery"})
    assert r.json()["node"]["value"] == "fromquery"


def test_first_of_repeated_params_wins(api: Api, prefix: str) -> None:
    r = api.request("PUT", key_path(f"{prefix}/r"), form=[("value", "one"), ("value", "two")])
    assert r.json()["node"]["value"] == "one"


def test_bool_syntax_accepts_go_parse_bool_spellings(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/b", value="0")
    for n, spelling in enumerate(["1", "t", "T", "TRUE", "true", "True"]):
        r = api.put(f"{prefix}/b", value=str(n + 1), prevExist=spelling)
        assert r.status == 200 and r.json()["action"] == "update", spelling
    for spelling in ["0", "f", "F", "FALSE", "false", "False"]:
        r = api.put(f"{prefix}/new-{spelling}", value="x", prevExist=spelling)
        assert r.status == 201 and r.json()["action"] == "create", spelling


def test_json_escaping_of_values_and_keys(api: Api, prefix: str) -> None:
    value = '<a&b>"\\\u2028\u2029\té'
    r = api.put(f"{prefix}/esc<&>", value=value)
    assert r.status == 201
    assert r.json()["node"]["value"] == value
    assert r.json()["node"]["key"] == f"{prefix}/esc<&>"
    assert b'\\u003ca\\u0026b\\u003e\\"\\\\\\u2028\\u2029\\t\xc3\xa9' in r.body
    assert f"{prefix}/esc\\u003c\\u0026\\u003e".encode() in r.body


def test_no_value_on_success(api: Api, prefix: str) -> None:
    k = f"{prefix}/n"
    r = api.put(k, value="1", noValueOnSuccess="true")
    assert (r.status, r.body) == (201, b'{"action":"set"}\n')
    r = api.put(k, value="2", prevExist="true", noValueOnSuccess="true")
    assert (r.status, r.body) == (200, b'{"action":"update"}\n')
    r = api.put(k, value="3", prevValue="2", noValueOnSuccess="true")
    assert (r.status, r.body) == (200, b'{"action":"compareAndSwap"}\n')
    r = api.put(f"{prefix}/n2", value="1", prevExist="false", noValueOnSuccess="true")
    assert (r.status, r.body) == (201, b'{"action":"create"}\n')
    r = api.post(f"{prefix}/q", value="1", noValueOnSuccess="true")
    assert (r.status, r.body) == (201, b'{"action":"create"}\n')
    err = api.put(k, value="4", prevValue="nope", noValueOnSuccess="true")
    assert err.status == 412
    assert err.json()["errorCode"] == 101
    assert api.get(k).json()["node"]["value"] == "3"


def test_cluster_id_is_stable(api: Api, prefix: str) -> None:
    ids = {
        api.put(f"{prefix}/a", value="1").header("X-Etcd-Cluster-Id"),
        api.get(f"{prefix}/a").header("X-Etcd-Cluster-Id"),
        api.get(f"{prefix}/missing").header("X-Etcd-Cluster-Id"),
        api.request("GET", "/v2/members").header("X-Etcd-Cluster-Id"),
    }
    assert len(ids) == 1
    assert HEX_ID.match(ids.pop() or "")


def test_raft_index_and_term_are_monotonic(api: Api, prefix: str) -> None:
    a = api.put(f"{prefix}/a", value="1")
    b = api.put(f"{prefix}/a", value="2")
    assert int(b.header("X-Raft-Index") or 0) > int(a.header("X-Raft-Index") or 0)
    assert int(b.header("X-Raft-Term") or 0) >= int(a.header("X-Raft-Term") or 0)
    g = api.get(f"{prefix}/a")
    assert int(g.header("X-Raft-Index") or 0) >= int(b.header("X-Raft-Index") or 0)


def test_quorum_get(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/a", value="1")
    r = api.get(f"{prefix}/a", quorum="true")
    assert r.status == 200
    i = w.etcd_index
    assert r.etcd_index == i
    assert r.body == f'{{"action":"get","node":{file_node(f"{prefix}/a", "1", i, i)}}}\n'.encode()
    missing = api.get(f"{prefix}/missing", quorum="true")
    assert missing.status == 404
    assert missing.json()["errorCode"] == 100
    assert api.index() == i
