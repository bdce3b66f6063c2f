"""Output formats without a server (expected bytes observed on etcdctl 3.4.23)."""

from __future__ import annotations

import io

from fastkv.cli.output import go_json_response, go_json_string, ls_lines, print_response_key
from fastkv.client import Node, Response


def _print(resp: Response, fmt: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    print_response_key(resp, fmt, out, err)
    return out.getvalue(), err.getvalue()


SET = Response(
    "set",
    Node("/a/b", "v2", created_index=5, modified_index=5),
    Node("/a/b", "hello <&>", created_index=4, modified_index=4),
    etcd_index=5,
)


def test_go_json_escaping() -> None:
    assert (
        go_json_string('a<b>&"\\\n\t\x01\u2028é') == '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\t\\u0001\\u2028é"'
    )


def test_json_format_matches_go_client_marshal() -> None:
    assert go_json_response(SET) == (
        '{"action":"set","node":{"key":"/a/b","value":"v2","nodes":null,"createdIndex":5,"modifiedIndex":5},'
        '"prevNode":{"key":"/a/b","value":"hello \\u003c\\u0026\\u003e","nodes":null,"createdIndex":4,'
        '"modifiedIndex":4}}'
    )
    ttl = Response(
        "create",
        Node(
            "/a/d",
            "x",
            ttl=100,
            expiration="2026-11-20T23:45:01.801240453Z",
            created_index=8,
            modified_index=8,
        ),
    )
    assert go_json_response(ttl) == (
        '{"action":"create","node":{"key":"/a/d","value":"x","nodes":null,"createdIndex":8,"modifiedIndex":8,'
        '"expiration":"2026-11-20T23:45:01.801240453Z","ttl":100},"prevNode":null}'
    )
    d = Response(
        "get",
        Node(
            "/l1",
            dir=True,
            created_index=18,
            modified_index=18,
            nodes=[Node("/l1/f", "1", created_index=20, modified_index=20)],
        ),
    )
    assert go_json_response(d) == (
        '{"action":"get","node":{"key":"/l1","dir":true,"value":"","nodes":[{"key":"/l1/f","value":"1",'
        '"nodes":null,"createdIndex":20,"modifiedIndex":20}],"createdIndex":18,"modifiedIndex":18},"prevNode":null}'
    )


def test_simple_and_extended() -> None:
    assert _print(SET, "simple") == ("v2\n", "")
    assert _print(SET, "extended") == (
        "Key: /a/b\nCreated-Index: 5\nModified-Index: 5\nPrevNode.Value: hello <&>\nTTL: 0\nIndex: 5\n\nv2\n",
        "",
    )
    delete = Response(
        "delete", Node("/a/b", None, created_index=4, modified_index=9), Node("/a/b", "x"), etcd_index=9
    )
    assert _print(delete, "simple") == ("PrevNode.Value: x\n", "")
    assert _print(delete, "extended")[0].endswith("PrevNode.Value: x\nTTL: 0\nIndex: 9\n")
    assert _print(SET, "yaml") == ("", "Unsupported output format: yaml\n")


def test_ls_lines() -> None:
    tree = Node(
        "/l1",
        dir=True,
        nodes=[Node("/l1/f", "1"), Node("/l1/sub", dir=True, nodes=[Node("/l1/sub/g", "2")])],
    )
    assert ls_lines(Response("get", tree), True) == ["/l1/f", "/l1/sub/", "/l1/sub/g"]
    assert ls_lines(Response("get", Node("/l1/f", "1")), False) == ["/l1/f"]
