"""Pure-Python twin of native/keyindex.pyx: same names, same behaviour, written plainly.

The JSON encoder here follows Go's encoding/json rules character by character and formats times with
the datetime module, so a hypothesis test comparing it with the compiled module checks the fast paths
(byte tables, civil-date arithmetic) rather than shared code.
"""

from __future__ import annotations

import datetime
import struct

MIN_EXPIRE_NS = 946684800 * 1_000_000_000
COMPARE_MATCH = 0
COMPARE_INDEX_NOT_MATCH = 1
COMPARE_VALUE_NOT_MATCH = 2
COMPARE_NOT_MATCH = 3
NS_PER_S = 1_000_000_000


class PathError(Exception):
    def __init__(self, code: int, cause: str) -> None:
        super().__init__(code, cause)
        self.code = code
        self.cause = cause


def clean_path(p: str) -> str:
    out: list[str] = []
    for comp in ("/" + p).split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return "/" + "/".join(out)


def ttl_of(expire_ns: int, now_ns: int) -> int:
    d = max(-(1 << 63), min(expire_ns - now_ns, (1 << 63) - 1))  # Go's Time.Sub saturates
    q = abs(d) // NS_PER_S
    r = abs(d) % NS_PER_S
    if d >= 0:
        return q + (1 if r else 0)
    return -q


def format_time(ns: int) -> str:
    secs, frac = divmod(ns, NS_PER_S)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        s += "." + f"{frac:09d}".rstrip("0")
    return s + "Z"


def encode_string(s: str) -> bytes:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or ch in "<>&" or o in (0x2028, 0x2029, 0xFFFD):
            # U+FFFD stands for invalid UTF-8 the API replaced; Go writes an invalid byte as \ufffd.
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out).encode()


class NodeView:
    __slots__ = ("key", "value", "dir", "expiration", "ttl", "nodes", "modified_index", "created_index")

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
    ) -> None:
        self.key = key
        self.value = value
        self.dir = dir
        self.expiration = expiration
        self.ttl = ttl
        self.nodes = nodes
        self.modified_index = modified_index
        self.created_index = created_index

    def to_json(self) -> bytes:
        parts: list[bytes] = []
        if self.key:
            parts.append(b'"key":' + encode_string(self.key))
        if self.value is not None:
            parts.append(b'"value":' + encode_string(self.value))
        if self.dir:
            parts.append(b'"dir":true')
        if self.expiration:
            parts.append(b'"expiration":"' + format_time(self.expiration).encode() + b'"')
        if self.ttl:
            parts.append(b'"ttl":%d' % self.ttl)
        if self.nodes:
            parts.append(b'"nodes":[' + b",".join(n.to_json() for n in self.nodes) + b"]")
        if self.modified_index:
            parts.append(b'"modifiedIndex":%d' % self.modified_index)
        if self.created_index:
            parts.append(b'"createdIndex":%d' % self.created_index)
        return b"{" + b",".join(parts) + b"}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeView):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __repr__(self) -> str:
        return "NodeView(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__) + ")"


class Event:
    __slots__ = ("action", "node", "prev_node", "etcd_index", "refresh", "internal")

    def __init__(
        self,
        action: str,
        node: NodeView,
        prev_node: NodeView | None = None,
        etcd_index: int = 0,
        refresh: bool = False,
        internal: bool = False,
    ) -> None:
        self.action = action
        self.node = node
        self.prev_node = prev_node
        self.etcd_index = etcd_index
        self.refresh = refresh
        self.internal = internal

    @property
    def index(self) -> int:
        return self.node.modified_index

    def with_etcd_index(self, etcd_index: int) -> Event:
        return Event(self.action, self.node, self.prev_node, etcd_index, self.refresh, self.internal)

    def to_json(self) -> bytes:
        out = b'{"action":' + encode_string(self.action)
        if self.node is not None:
            out += b',"node":' + self.node.to_json()
        if self.prev_node is not None:
            out += b',"prevNode":' + self.prev_node.to_json()
        return out + b"}\n"


class Node:
    __slots__ = ("path", "value", "children", "created_index", "modified_index", "expire_ns")

    def __init__(self, path: str, value: str, is_dir: bool, created_index: int, expire_ns: int = 0) -> None:
        self.path = path
        self.value = "" if is_dir else value
        self.children: dict[str, Node] | None = {} if is_dir else None
        self.created_index = created_index
        self.modified_index = created_index
        self.expire_ns = expire_ns

    @property
    def hidden(self) -> bool:
        return self.path.rsplit("/", 1)[-1].startswith("_")

    def is_dir(self) -> bool:
        return self.children is not None

    def compare(self, prev_value: str, prev_index: int) -> int:
        index_ok = prev_index == 0 or self.modified_index == prev_index
        value_ok = prev_value == "" or self.value == prev_value
        if index_ok and value_ok:
            return COMPARE_MATCH
        if index_ok:
            return COMPARE_VALUE_NOT_MATCH
        if value_ok:
            return COMPARE_INDEX_NOT_MATCH
        return COMPARE_NOT_MATCH

    def repr(self, recursive: bool, sorted: bool, now_ns: int) -> NodeView:
        return self._view(recursive, recursive, sorted, now_ns)

    def load(self, recursive: bool, sorted: bool, now_ns: int) -> NodeView:
        return self._view(True, recursive, sorted, now_ns)

    def _view(self, list_children: bool, recursive: bool, sorted_: bool, now_ns: int) -> NodeView:
        ttl = ttl_of(self.expire_ns, now_ns) if self.expire_ns else 0
        key = "" if self.path == "/" else self.path
        if self.children is None:
            return NodeView(
                key, self.value, False, self.expire_ns, ttl, None, self.modified_index, self.created_index
            )
        nodes = None
        if list_children and self.children:
            nodes = [
                c._view(recursive, recursive, sorted_, now_ns) for c in self.children.values() if not c.hidden
            ]
            if sorted_:
                # Go sorts keys as byte strings: invalid bytes are surrogateescape'd code points.
                nodes.sort(key=lambda v: v.key.encode("utf-8", "surrogateescape"))
        return NodeView(key, None, True, self.expire_ns, ttl, nodes, self.modified_index, self.created_index)


class KeyIndex:
    def __init__(self) -> None:
        self.root = Node("/", "", True, 0, 0)

    def _components(self, path: str) -> list[str]:
        return [c for c in path.split("/") if c]

    def find(self, path: str) -> Node:
        curr = self.root
        walked = ""
        for name in self._components(path):
            if curr.children is None:
                raise PathError(104, curr.path)
            walked += "/" + name
            child = curr.children.get(walked)  # children are keyed by their full path
            if child is None:
                raise PathError(100, walked)
            curr = child
        return curr

    def get(self, path: str) -> Node | None:
        try:
            return self.find(path)
        except PathError:
            return None

    def ensure_dir(self, path: str, index: int) -> Node:
        curr = self.root
        walked = ""
        for name in self._components(path):
            walked += "/" + name
            assert curr.children is not None
            child = curr.children.get(walked)
            if child is None:
                child = Node(walked, "", True, index, 0)
                curr.children[walked] = child
            elif child.children is None:
                raise PathError(104, child.path)
            curr = child
        return curr

    def parent_of(self, node: Node) -> Node | None:
        if node.path == "/":
            return None
        parent = self.get(node.path.rsplit("/", 1)[0] or "/")
        if parent is None or parent.children is None or parent.children.get(node.path) is not node:
            return None
        return parent

    def unlink(self, node: Node) -> bool:
        parent = self.parent_of(node)
        if parent is None:
            return False
        del parent.children[node.path]  # type: ignore[union-attr]
        return True

    def subtree(self, top: Node) -> list[Node]:
        out = []
        stack = [top]
        while stack:
            n = stack.pop()
            out.append(n)
            if n.children:
                stack.extend(reversed(n.children.values()))
        return out


# ----- persistent records (see native/keyindex.pyx for the format) -----------------------------------

ACTIONS = ("get", "create", "set", "update", "delete", "compareAndSwap", "compareAndDelete", "expire")


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def node_key(path: str) -> bytes:
    return _utf8(path) + b"\x00"


def encode_node(node: Node, ttl_seq: int) -> bytes:
    is_dir = node.children is not None
    out = struct.pack("<Bqqq", 1 if is_dir else 0, node.created_index, node.modified_index, node.expire_ns)
    if node.expire_ns:
        out += struct.pack("<q", ttl_seq)
    return out + (b"" if is_dir else _utf8(node.value))


def put_nodes(put, nodes: dict, ttl_live: dict, prefix: bytes = b"") -> None:
    for path, node in nodes.items():
        put(prefix + node_key(path), encode_node(node, ttl_live.get(node, 0) if node.expire_ns else 0))


def load_nodes(tree: KeyIndex, items, prefix: bytes = b"") -> tuple[int, list]:
    ttl = []
    count = 0
    for key, rec in items:
        if not key.startswith(prefix):
            break
        key = key[len(prefix) :]
        if not key.startswith(b"/") or not key.endswith(b"\x00"):
            break
        path = key[:-1].decode("utf-8", "surrogatepass")
        parent = tree.get(path.rsplit("/", 1)[0] or "/")
        if parent is None or parent.children is None:
            raise ValueError(f"node record without a parent directory: {key!r}")
        flags, created, modified, expire = struct.unpack_from("<Bqqq", rec)
        rest = rec[25:]
        node = Node(path, "", bool(flags & 1), created, expire)
        node.modified_index = modified
        if expire:
            ttl.append((struct.unpack_from("<q", rest)[0], node))
            rest = rest[8:]
        if not flags & 1:
            node.value = rest.decode("utf-8", "surrogatepass")
        parent.children[path] = node
        count += 1
    return count, ttl


def _view_record(v: NodeView) -> bytes:
    key = _utf8(v.key)
    flags = (1 if v.dir else 0) | (2 if v.value is not None else 0)
    out = (
        struct.pack("<BqqqqI", flags, v.expiration, v.ttl, v.modified_index, v.created_index, len(key)) + key
    )
    if v.value is not None:
        value = _utf8(v.value)
        out += struct.pack("<I", len(value)) + value
    return out


def encode_event(e: Event) -> bytes:
    flags = (1 if e.refresh else 0) | (2 if e.prev_node is not None else 0) | (4 if e.internal else 0)
    out = struct.pack("<BBq", ACTIONS.index(e.action), flags, e.etcd_index) + _view_record(e.node)
    if e.prev_node is not None:
        out += _view_record(e.prev_node)
    return out


def _read_view(rec: bytes, pos: int) -> tuple[NodeView, int]:
    flags, expiration, ttl, modified, created, kn = struct.unpack_from("<BqqqqI", rec, pos)
    pos += 37
    key = rec[pos : pos + kn].decode("utf-8", "surrogatepass")
    pos += kn
    value = None
    if flags & 2:
        (vn,) = struct.unpack_from("<I", rec, pos)
        value = rec[pos + 4 : pos + 4 + vn].decode("utf-8", "surrogatepass")
        pos += 4 + vn
    return NodeView(key, value, bool(flags & 1), expiration, ttl, None, modified, created), pos


def decode_event(rec: bytes) -> Event:
    code, flags, etcd_index = struct.unpack_from("<BBq", rec)
    node, pos = _read_view(rec, 10)
    prev = None
    if flags & 2:
        prev, pos = _read_view(rec, pos)
    if pos != len(rec):
        raise ValueError("trailing bytes in event record")
    return Event(ACTIONS[code], node, prev, etcd_index, bool(flags & 1), bool(flags & 4))
