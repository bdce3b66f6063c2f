"""Key tree, node views and event encoders: fastkv._native.keyindex against tests/twins/keyindex.py.

The tree benchmarks run on a store-sized tree (1024 keys under /registry/d00..d15, 64 per directory)
and repeat what ``fastkv.v2store.store.Store`` does per request:

- find: the walk behind every GET/DELETE/CAS of a key three levels deep;
- set: ``_create_node`` replacing an existing key: ensure_dir of the parent, the previous node's
  view, a new Node linked in, and the Event with both views;
- list: GET of one directory, recursive and sorted (64 child views), as JSON;
- subtree: the nodes of one directory, as a recursive DELETE or a snapshot walks them.

The event benchmarks use a ``set`` event whose node and prevNode carry a 100-character JSON value and a
TTL (so the expiration timestamp is formatted): ``to_json`` is the HTTP response body, ``encode_event`` /
``decode_event`` the record the RocksDB backend keeps for the watch history.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.twins import keyindex as twin

from fastkv._native import keyindex as native

from .conftest import json_value

IMPLS = {"native": native, "twin": twin}
NOW_NS = 1_767_225_600 * 1_000_000_000 + 123_456_789  # 2026-01-01T00:00:00.123456789Z
DIRS = 16
KEYS = 1024
VALUE = json_value()
KEY = "/registry/d07/key-0423"


def _key(i: int) -> str:
    return f"/registry/d{i % DIRS:02d}/key-{i:04d}"


def _build(mod: Any) -> Any:
    tree = mod.KeyIndex()
    for i in range(KEYS):
        path = _key(i)
        slash = path.rfind("/")
        parent = tree.ensure_dir(path[:slash], i + 1)
        expire = NOW_NS + 10 * 1_000_000_000 if i % 4 == 0 else 0
        parent.children[path[slash + 1 :]] = mod.Node(path, VALUE, False, i + 1, expire)
    return tree


def _set(mod: Any, tree: Any, path: str, value: str, index: int) -> Any:
    slash = path.rfind("/")
    parent = tree.ensure_dir(path[:slash], index)
    name = path[slash + 1 :]
    old = parent.children.get(name)
    prev = old.repr(False, False, NOW_NS) if old is not None else None
    node = mod.Node(path, value, False, index, 0)
    parent.children[name] = node
    return mod.Event("set", node.repr(False, False, NOW_NS), prev, index)


@pytest.fixture(scope="module")
def trees() -> dict[str, Any]:
    return {name: _build(mod) for name, mod in IMPLS.items()}


@pytest.mark.parametrize("path", ["/registry/d07/key-0423", "/registry//d07/./x/../key-0423/"])
@pytest.mark.parametrize("impl", IMPLS)
def test_clean_path(benchmark: Any, impl: str, path: str) -> None:
    benchmark.group = f"keyindex: clean_path {path!r}"
    assert benchmark(IMPLS[impl].clean_path, path) == twin.clean_path(path) == KEY


@pytest.mark.parametrize("impl", IMPLS)
def test_tree_find(benchmark: Any, impl: str, trees: dict[str, Any]) -> None:
    benchmark.group = "keyindex: find a key 3 levels deep (1024-key tree)"
    node = benchmark(trees[impl].find, KEY)
    ref = trees["twin"].find(KEY)
    assert (
        (node.path, node.value, node.modified_index)
        == (ref.path, ref.value, ref.modified_index)
        == (
            KEY,
            VALUE,
            424,
        )
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_tree_set(benchmark: Any, impl: str) -> None:
    benchmark.group = "keyindex: set (replace a key, both views, Event)"

    def replaced(mod: Any) -> tuple[Any, Any]:
        # A tree of its own where KEY was already set at 2000, so every timed call sees the same prev.
        tree = _build(mod)
        _set(mod, tree, KEY, VALUE, 2000)
        return tree, _set(mod, tree, KEY, VALUE, 2000)

    mod = IMPLS[impl]
    tree, _ = replaced(mod)
    event = benchmark(_set, mod, tree, KEY, VALUE, 2000)
    assert event.to_json() == replaced(twin)[1].to_json()
    assert event.prev_node is not None and event.prev_node.modified_index == 2000


@pytest.mark.parametrize("impl", IMPLS)
def test_tree_list(benchmark: Any, impl: str, trees: dict[str, Any]) -> None:
    benchmark.group = "keyindex: GET dir recursive sorted (64 children) to JSON"
    tree = trees[impl]

    def list_dir() -> bytes:
        return tree.find("/registry/d03").load(True, True, NOW_NS).to_json()

    body = benchmark(list_dir)
    assert body == trees["twin"].find("/registry/d03").load(True, True, NOW_NS).to_json()
    assert body.count(b'"key":') == 65


@pytest.mark.parametrize("impl", IMPLS)
def test_tree_subtree(benchmark: Any, impl: str, trees: dict[str, Any]) -> None:
    benchmark.group = "keyindex: subtree of a 64-key directory"
    tree = trees[impl]
    nodes = benchmark(tree.subtree, tree.find("/registry/d05"))
    ref = trees["twin"].subtree(trees["twin"].find("/registry/d05"))
    assert [n.path for n in nodes] == [n.path for n in ref]
    assert len(nodes) == 65


def _event(mod: Any) -> Any:
    expire = NOW_NS + 10 * 1_000_000_000
    node = mod.NodeView(KEY, VALUE, False, expire, 10, None, 2001, 2001)
    prev = mod.NodeView(KEY, VALUE[::-1], False, expire - 5_000_000_000, 5, None, 1990, 424)
    return mod.Event("set", node, prev, 2001)


EVENTS = {name: _event(mod) for name, mod in IMPLS.items()}


@pytest.mark.parametrize("impl", IMPLS)
def test_event_to_json(benchmark: Any, impl: str) -> None:
    benchmark.group = "keyindex: Event.to_json (100 B value, TTL, prevNode)"
    body = benchmark(EVENTS[impl].to_json)
    assert body == EVENTS["twin"].to_json()
    assert body.startswith(b'{"action":"set","node":{"key":"/registry/d07/key-0423","value":"{\\"host')


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_event(benchmark: Any, impl: str) -> None:
    benchmark.group = "keyindex: encode_event (history record)"
    rec = benchmark(IMPLS[impl].encode_event, EVENTS[impl])
    assert rec == twin.encode_event(EVENTS["twin"])


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_event(benchmark: Any, impl: str) -> None:
    benchmark.group = "keyindex: decode_event (history record)"
    rec = twin.encode_event(EVENTS["twin"])
    event = benchmark(IMPLS[impl].decode_event, rec)
    assert event.to_json() == EVENTS["twin"].to_json()
    assert IMPLS[impl].encode_event(event) == rec
