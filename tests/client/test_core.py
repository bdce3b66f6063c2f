"""Request building and answer parsing, without a server (requests as etcdctl --debug shows them)."""

from __future__ import annotations

import pytest

from fastkv.client import EtcdError, HTTPError, core


def test_get_always_sends_quorum_recursive_sorted() -> None:
    assert core.get_call("/a/b").request.target == "/v2/keys/a/b?quorum=false&recursive=false&sorted=false"
    assert (
        core.get_call("/", True, True).request.target == "/v2/keys/?quorum=false&recursive=true&sorted=true"
    )


def test_set_variants() -> None:
    req = core.set_call("/a/b", "hello <&>").request
    assert (req.method, req.target, req.body) == ("PUT", "/v2/keys/a/b", b"value=hello+%3C%26%3E")
    assert core.set_call("/a/c", "x", 5, prev_exist=False).request.body == b"ttl=5&value=x"
    assert core.set_call("/a/c", "x", prev_exist=False).request.target == "/v2/keys/a/c?prevExist=false"
    cas = core.set_call("/k", "v", prev_value="old", prev_index=3).request
    assert cas.target == "/v2/keys/k?prevIndex=3&prevValue=old"
    d = core.set_call("/d1", ttl=10, prev_exist=True, dir=True).request
    assert (d.target, d.body) == ("/v2/keys/d1?dir=true&prevExist=true", b"ttl=10")
    assert core.set_call("/d1", dir=True).request.body == b""
    assert core.set_call("/k", ttl=5, refresh=True, prev_exist=True).request.body == b"refresh=true&ttl=5"


def test_delete_and_watch_and_in_order() -> None:
    assert (
        core.delete_call("/zz", prev_value="x", prev_index=3).request.target
        == "/v2/keys/zz?prevIndex=3&prevValue=x"
    )
    assert core.delete_call("/a", recursive=True).request.target == "/v2/keys/a?recursive=true"
    assert core.delete_call("/d1", dir=True).request.target == "/v2/keys/d1?dir=true"
    w = core.watch_call("/a", 4, True).request
    assert w.target == "/v2/keys/a?recursive=true&wait=true&waitIndex=4" and w.streaming
    post = core.create_in_order_call("/q", "v").request
    assert (post.method, post.target, post.body) == ("POST", "/v2/keys/q", b"value=v")


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("a b", "/v2/keys/a%20b"),
        ("/x//y/../z/", "/v2/keys/x/z/"),
        ("/k?#", "/v2/keys/k%3F%23"),
        ("/é!*'()", "/v2/keys/%C3%A9%21%2A%27%28%29"),
        ("/$&+,:;=@", "/v2/keys/$&+,:;=@"),
    ],
)
def test_key_paths_escaped_like_go(key: str, path: str) -> None:
    assert core.get_call(key).request.target.split("?")[0] == path


def test_parse_success_and_errors() -> None:
    body = b'{"action":"set","node":{"key":"/a","value":"1","modifiedIndex":4,"createdIndex":4}}\n'
    resp = core.parse_keys(201, {"x-etcd-index": "4", "x-raft-index": "9", "x-raft-term": "2"}, body)
    assert (
        resp.action,
        resp.node.key,
        resp.node.value,
        resp.etcd_index,
        resp.raft_index,
        resp.raft_term,
    ) == (
        "set",
        "/a",
        "1",
        4,
        9,
        2,
    )
    assert resp.prev_node is None
    with pytest.raises(EtcdError) as err:
        core.parse_keys(404, {}, b'{"errorCode":100,"message":"Key not found","cause":"/nope","index":5}\n')
    assert (err.value.code, err.value.cause, err.value.index, str(err.value)) == (
        100,
        "/nope",
        5,
        "100: Key not found (/nope) [5]",
    )
    assert core.parse_watch(200, {}, b"") is None
    with pytest.raises(HTTPError, match="No such member: 5"):
        core.member_remove_call("5").parse(404, {}, b'{"message":"No such member: 5"}')


def test_server_errors_move_to_next_endpoint() -> None:
    assert core.server_error(500, "http://a") == "client: etcd member http://a has no leader"
    assert core.server_error(502, "http://a") == "client: etcd member http://a returns server error [502]"
    assert core.server_error(404, "http://a") is None
