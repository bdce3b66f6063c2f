"""etcdctl's three output formats for a key response (etcd-v2.md §5.3).

- simple: the node's value; for a ``delete`` action ``PrevNode.Value: <old>``.
- extended: Key / Created-Index / Modified-Index / [PrevNode.Value] / TTL / Index (the X-Etcd-Index), then
  a blank line and the value unless the action is ``delete``.
- json: the Go client's ``Response`` marshalled by ``encoding/json``: no index, ``prevNode`` always present
  (``null`` when absent), nodes as ``key, [dir], value, nodes, createdIndex, modifiedIndex, [expiration],
  [ttl]`` with ``value`` always present and ``nodes`` ``null`` when empty, strings escaped like Go
  (``<``, ``>``, ``&``, U+2028, U+2029 as ``\\u``-escapes, control characters as ``\\u00XX`` except
  ``\\n``, ``\\r``, ``\\t``).
"""

from __future__ import annotations

from typing import TextIO

from fastkv.client.model import Node, Response

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES.update({c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"})
_ESCAPES.update({chr(b): f"\\u{b:04x}" for b in range(0x20) if chr(b) not in _ESCAPES})
_NEEDS_ESCAPE = frozenset(_ESCAPES)


def go_json_string(s: str) -> str:
    if _NEEDS_ESCAPE.isdisjoint(s):
        return f'"{s}"'
    return '"' + "".join(_ESCAPES.get(c, c) for c in s) + '"'


def go_json_node(node: Node | None) -> str:
    if node is None:
        return "null"
    parts = [f'"key":{go_json_string(node.key)}']
    if node.dir:
        parts.append('"dir":true')
    parts.append(f'"value":{go_json_string(node.value or "")}')
    if node.nodes:
        parts.append('"nodes":[' + ",".join(go_json_node(n) for n in node.nodes) + "]")
    else:
        parts.append('"nodes":null')
    parts.append(f'"createdIndex":{node.created_index}')
    parts.append(f'"modifiedIndex":{node.modified_index}')
    if node.expiration is not None:
        parts.append(f'"expiration":{go_json_string(node.expiration)}')
    if node.ttl:
        parts.append(f'"ttl":{node.ttl}')
    return "{" + ",".join(parts) + "}"


def go_json_response(resp: Response) -> str:
    return (
        f'{{"action":{go_json_string(resp.action)},"node":{go_json_node(resp.node)},'
        f'"prevNode":{go_json_node(resp.prev_node)}}}'
    )


def print_response_key(resp: Response, fmt: str, out: TextIO, err: TextIO) -> None:
    node = resp.node or Node()
    if fmt == "simple":
        if resp.action != "delete":
            out.write(f"{node.value or ''}\n")
        else:
            prev = resp.prev_node.value if resp.prev_node else ""
            out.write(f"PrevNode.Value: {prev or ''}\n")
    elif fmt == "extended":
        lines = [
            f"Key: {node.key}",
            f"Created-Index: {node.created_index}",
            f"Modified-Index: {node.modified_index}",
        ]
        if resp.prev_node is not None:
            lines.append(f"PrevNode.Value: {resp.prev_node.value or ''}")
        lines.append(f"TTL: {node.ttl}")
        lines.append(f"Index: {resp.etcd_index}")
        if resp.action != "delete":
            lines += ["", node.value or ""]
        out.write("\n".join(lines) + "\n")
    elif fmt == "json":
        out.write(go_json_response(resp) + "\n")
    else:
        err.write(f"Unsupported output format: {fmt}\n")


def ls_lines(resp: Response, slash_dirs: bool) -> list[str]:
    """``ls``: a file lists itself; a directory lists its subtree depth-first (as returned)."""
    lines: list[str] = []
    node = resp.node or Node()
    if not node.dir:
        lines.append(node.key)

    def walk(n: Node) -> None:
        lines.append(n.key + "/" if n.dir and slash_dirs else n.key)
        for child in n.nodes or ():
            walk(child)

    for child in node.nodes or ():
        walk(child)
    return lines
