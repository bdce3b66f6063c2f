"""Type stubs for the compiled key tree, node views, events and their JSON encoder (native/keyindex.pyx)."""

from collections.abc import Callable, Iterable
from typing import Any

MIN_EXPIRE_NS: int
COMPARE_MATCH: int
COMPARE_INDEX_NOT_MATCH: int
COMPARE_VALUE_NOT_MATCH: int
COMPARE_NOT_MATCH: int

class PathError(Exception):
    code: int
    cause: str
    def __init__(self, code: int, cause: str) -> None: ...

def clean_path(p: str) -> str: ...
def ttl_of(expire_ns: int, now_ns: int) -> int: ...
def format_time(ns: int) -> str: ...
def encode_string(s: str) -> bytes: ...

class NodeView:
    key: str
    value: str | None
    dir: bool
    expiration: int
    ttl: int
    nodes: list[NodeView] | None
    modified_index: int
    created_index: int
    def __init__(
        self,
        key: str,
        value: str | None,
        dir: bool,
        expiration: int = 0,
        ttl: int = 0,
        nodes: list[NodeView] | None = None,
        modified_index: int = 0,
        created_index: int = 0,
    ) -> None: ...
    def to_json(self) -> bytes: ...

class Event:
    action: str
    node: NodeView
    prev_node: NodeView | None
    etcd_index: int
    refresh: bool
    internal: bool
    def __init__(
        self,
        action: str,
        node: NodeView,
        prev_node: NodeView | None = None,
        etcd_index: int = 0,
        refresh: bool = False,
        internal: bool = False,
    ) -> None: ...
    @property
    def index(self) -> int: ...
    def with_etcd_index(self, etcd_index: int) -> Event: ...
    def to_json(self) -> bytes: ...

class Node:
    @property
    def path(self) -> str: ...
    value: str
    children: dict[str, Node] | None
    created_index: int
    modified_index: int
    expire_ns: int
    @property
    def hidden(self) -> bool: ...
    def __init__(
        self, path: str, value: str, is_dir: bool, created_index: int, expire_ns: int = 0
    ) -> None: ...
    def is_dir(self) -> bool: ...
    def compare(self, prev_value: str, prev_index: int) -> int: ...
    def repr(self, recursive: bool, sorted: bool, now_ns: int) -> NodeView: ...
    def load(self, recursive: bool, sorted: bool, now_ns: int) -> NodeView: ...

class KeyIndex:
    @property
    def root(self) -> Node: ...
    def __init__(self) -> None: ...
    def find(self, path: str) -> Node: ...
    def get(self, path: str) -> Node | None: ...
    def ensure_dir(self, path: str, index: int) -> Node: ...
    def parent_of(self, node: Node) -> Node | None: ...
    def unlink(self, node: Node) -> bool: ...
    def subtree(self, top: Node) -> list[Node]: ...

__all__ = [
    "Event",
    "KeyIndex",
    "Node",
    "NodeView",
    "PathError",
    "clean_path",
    "encode_string",
    "format_time",
    "ttl_of",
]

# Record encoding for the RocksDB backend (fastkv.storage.backend).
ACTIONS: tuple[str, ...]

def node_key(path: str) -> bytes: ...
def encode_node(node: Node, ttl_seq: int) -> bytes: ...
def put_nodes(
    put: Callable[[bytes, bytes], None],
    nodes: dict[str, Node],
    ttl_live: dict[Node, int],
    prefix: bytes = b"",
) -> None: ...
def load_nodes(
    tree: KeyIndex, items: Iterable[Any], prefix: bytes = b""
) -> tuple[int, list[tuple[int, Node]]]: ...
def encode_event(e: Event) -> bytes: ...
def put_events(put: Callable[[bytes, bytes], None], events: list[Event], slot_keys: list[bytes]) -> None: ...
def decode_event(rec: bytes) -> Event: ...
