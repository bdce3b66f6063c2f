"""v2 errors (etcd-v2.md §1.6, §1.7), parameter parsing (§1.4) and compare-and-swap/delete (§2.6).

Parse errors are answered before the store is touched: ``X-Etcd-Index: 0`` and ``"index":0``.  Store errors
carry the current store index.  No rejected request may advance the index.
"""

from __future__ import annotations

import pytest

from tests.conformance.conftest import Api, Reply


def assert_error(r: Reply, status: int, code: int, message: str, cause: str | None, index: int) -> None:
    assert r.status == status, r.body
    fields = f'{{"errorCode":{code},"message":"{message}"'
    if cause is not None:
        fields += f',"cause":{_json_str(cause)}'
    fields += f',"index":{index}}}\n'
    assert r.body == fields.encode()
    assert r.header("X-Etcd-Index") == str(index)
    assert r.header("Content-Type") == "application/json"
    assert r.header("X-Raft-Index") is None


def _json_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


PARSE_ERRORS = [
    # (method, params, code, message, cause)
    ("PUT", {"ttl": "abc"}, 202, "The given TTL in POST form is not a number", 'invalid value for "ttl"'),
    ("PUT", {"ttl": "-1"}, 202, "The given TTL in POST form is not a number", 'invalid value for "ttl"'),
    ("PUT", {"ttl": "1.5"}, 202, "The given TTL in POST form is not a number", 'invalid value for "ttl"'),
    ("POST", {"ttl": "x"}, 202, "The given TTL in POST form is not a number", 'invalid value for "ttl"'),
    (
        "PUT",
        {"prevIndex": "x"},
        203,
        "The given index in POST form is not a number",
        'invalid value for "prevIndex"',
    ),
    (
        "PUT",
        {"prevIndex": "-1"},
        203,
        "The given index in POST form is not a number",
        'invalid value for "prevIndex"',
    ),
    (
        "DELETE",
        {"prevIndex": "x"},
        203,
        "The given index in POST form is not a number",
        'invalid value for "prevIndex"',
    ),
    (
        "GET",
        {"wait": "true", "waitIndex": "x"},
        203,
        "The given index in POST form is not a number",
        'invalid value for "waitIndex"',
    ),
    ("PUT", {"prevValue": ""}, 201, "PrevValue is Required in POST form", '"prevValue" cannot be empty'),
    ("DELETE", {"prevValue": ""}, 201, "PrevValue is Required in POST form", '"prevValue" cannot be empty'),
    ("PUT", {"prevExist": "yes"}, 209, "Invalid field", "invalid value for prevExist"),
    ("PUT", {"refresh": "x"}, 209, "Invalid field", "invalid value for refresh"),
    ("PUT", {"dir": "maybe"}, 209, "Invalid field", 'invalid value for "dir"'),
    ("GET", {"recursive": "x"}, 209, "Invalid field", 'invalid value for "recursive"'),
    ("DELETE", {"recursive": "x"}, 209, "Invalid field", 'invalid value for "recursive"'),
    ("GET", {"sorted": "x"}, 209, "Invalid field", 'invalid value for "sorted"'),
    ("GET", {"wait": "x"}, 209, "Invalid field", 'invalid value for "wait"'),
    ("GET", {"wait": "true", "stream": "x"}, 209, "Invalid field", 'invalid value for "stream"'),
    ("GET", {"quorum": "x"}, 209, "Invalid field", 'invalid value for "quorum"'),
    ("PUT", {"noValueOnSuccess": "x"}, 209, "Invalid field", 'invalid value for "noValueOnSuccess"'),
    ("PUT", {"wait": "true"}, 209, "Invalid field", '"wait" can only be used with GET requests'),
    ("DELETE", {"wait": "true"}, 209, "Invalid field", '"wait" can only be used with GET requests'),
    (
        "PUT",
        {"refresh": "true", "ttl": "5", "value": "v"},
        211,
        "Value provided on refresh",
        "A value was provided on a refresh",
    ),
    ("PUT", {"refresh": "true"}, 212, "A TTL must be provided on refresh", "No TTL value set"),
]


@pytest.mark.parametrize(("method", "params", "code", "message", "cause"), PARSE_ERRORS)
def test_parse_errors_have_index_zero(
    api: Api, prefix: str, method: str, params: dict[str, str], code: int, message: str, cause: str
) -> None:
    sentinel = api.put(f"{prefix}/k", value="keep")
    before = sentinel.etcd_index
    path = f"/v2/keys{prefix}/k"
    r = api.request(method, path, query=params)
    assert_error(r, 400, code, message, cause, 0)
    if method in ("PUT", "POST"):
        r2 = api.request(method, path, form=params)
        assert_error(r2, 400, code, message, cause, 0)
    assert api.index() == before
    assert api.get(f"{prefix}/k").json()["node"]["value"] == "keep"


def test_delete_ignores_form_body(api: Api, prefix: str) -> None:
    """Go's ParseForm reads the body only for POST/PUT/PATCH: a DELETE's form body is not parameters."""
    c = api.put(f"{prefix}/k", value="one")
    r = api.request("DELETE", f"/v2/keys{prefix}/k", form={"prevValue": "other", "recursive": "bogus"})
    assert r.status == 200
    assert r.json()["action"] == "delete"
    assert r.etcd_index == c.etcd_index + 1


def test_empty_ttl_means_no_ttl(api: Api, prefix: str) -> None:
    r = api.put(f"{prefix}/t", value="1", ttl="")
    assert r.status == 201
    assert "ttl" not in r.json()["node"] and "expiration" not in r.json()["node"]


def test_not_a_directory_cause_is_blocking_file(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/f", value="1")
    idx = w.etcd_index
    assert_error(api.put(f"{prefix}/f/child", value="2"), 400, 104, "Not a directory", f"{prefix}/f", idx)
    assert_error(api.get(f"{prefix}/f/child"), 400, 104, "Not a directory", f"{prefix}/f", idx)
    assert_error(api.post(f"{prefix}/f", value="2"), 400, 104, "Not a directory", f"{prefix}/f", idx)
    assert api.index() == idx


def test_not_a_file(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/d", dir="true")
    idx = w.etcd_index
    assert_error(api.put(f"{prefix}/d", value="x"), 403, 102, "Not a file", f"{prefix}/d", idx)
    assert_error(api.put(f"{prefix}/d", dir="true"), 403, 102, "Not a file", f"{prefix}/d", idx)
    assert_error(api.delete(f"{prefix}/d"), 403, 102, "Not a file", f"{prefix}/d", idx)
    assert_error(api.delete(f"{prefix}/d", prevValue="x"), 403, 102, "Not a file", f"{prefix}/d", idx)
    assert_error(
        api.put(f"{prefix}/d", value="x", prevExist="true", prevIndex=str(idx)),
        403,
        102,
        "Not a file",
        f"{prefix}/d",
        idx,
    )
    assert api.index() == idx


def test_directory_not_empty(api: Api, prefix: str) -> None:
    w = api.put(f"{prefix}/d/c", value="1")
    idx = w.etcd_index
    assert_error(api.delete(f"{prefix}/d", dir="true"), 403, 108, "Directory not empty", f"{prefix}/d", idx)
    assert api.index() == idx


def test_cas_on_value(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/k", value="one")
    i = c.etcd_index
    bad = api.put(f"{prefix}/k", value="two", prevValue="zero")
    assert_error(bad, 412, 101, "Compare failed", "[zero != one]", i)
    ok = api.put(f"{prefix}/k", value="two", prevValue="one")
    assert ok.status == 200
    j = ok.etcd_index
    assert j == i + 1
    k = f"{prefix}/k"
    assert ok.body == (
        f'{{"action":"compareAndSwap","node":{{"key":"{k}","value":"two","modifiedIndex":{j},"createdIndex":{i}}},'
        f'"prevNode":{{"key":"{k}","value":"one","modifiedIndex":{i},"createdIndex":{i}}}}}\n'.encode()
    )


def test_cas_on_index_and_both(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/k", value="one")
    i = c.etcd_index
    assert_error(
        api.put(f"{prefix}/k", value="x", prevIndex=str(i + 100)),
        412,
        101,
        "Compare failed",
        f"[{i + 100} != {i}]",
        i,
    )
    assert_error(
        api.put(f"{prefix}/k", value="x", prevIndex=str(i + 100), prevValue="two"),
        412,
        101,
        "Compare failed",
        f"[two != one] [{i + 100} != {i}]",
        i,
    )
    # Only the failing half is reported.
    assert_error(
        api.put(f"{prefix}/k", value="x", prevIndex=str(i), prevValue="two"),
        412,
        101,
        "Compare failed",
        "[two != one]",
        i,
    )
    ok = api.put(f"{prefix}/k", value="x", prevIndex=str(i))
    assert ok.status == 200 and ok.json()["action"] == "compareAndSwap"
    ok2 = api.put(f"{prefix}/k", value="y", prevIndex=str(ok.etcd_index), prevValue="x", prevExist="true")
    assert ok2.status == 200 and ok2.json()["action"] == "compareAndSwap"


def test_prev_index_zero_is_no_condition(api: Api, prefix: str) -> None:
    api.put(f"{prefix}/k", value="one")
    r = api.put(f"{prefix}/k", value="two", prevIndex="0")
    assert r.status == 200 and r.json()["action"] == "set"


def test_cas_missing_key(api: Api, prefix: str) -> None:
    idx = api.put(f"{prefix}/other", value="1").etcd_index
    assert_error(
        api.put(f"{prefix}/k", value="x", prevValue="a"), 404, 100, "Key not found", f"{prefix}/k", idx
    )
    assert_error(api.delete(f"{prefix}/k", prevIndex="3"), 404, 100, "Key not found", f"{prefix}/k", idx)


def test_compare_and_delete(api: Api, prefix: str) -> None:
    c = api.put(f"{prefix}/k", value="one")
    i = c.etcd_index
    assert_error(api.delete(f"{prefix}/k", prevValue="two"), 412, 101, "Compare failed", "[two != one]", i)
    assert_error(
        api.delete(f"{prefix}/k", prevIndex=str(i + 7)), 412, 101, "Compare failed", f"[{i + 7} != {i}]", i
    )
    ok = api.delete(f"{prefix}/k", prevValue="one", prevIndex=str(i))
    assert ok.status == 200
    j = ok.etcd_index
    k = f"{prefix}/k"
    assert ok.body == (
        f'{{"action":"compareAndDelete","node":{{"key":"{k}","modifiedIndex":{j},"createdIndex":{i}}},'
        f'"prevNode":{{"key":"{k}","value":"one","modifiedIndex":{i},"createdIndex":{i}}}}}\n'.encode()
    )


def test_error_index_is_current_store_index(api: Api, prefix: str) -> None:
    a = api.put(f"{prefix}/a", value="1")
    r = api.get(f"{prefix}/missing")
    assert r.json()["index"] == a.etcd_index == r.etcd_index
    b = api.put(f"{prefix}/b", value="1")
    r = api.get(f"{prefix}/missing")
    assert r.json()["index"] == b.etcd_index
