"""Pure-Python twin of native/httpcodec.pyx, written straight from Go's url/path/strconv sources.

Kept deliberately naive (no fast paths) so that a hypothesis test comparing it with the compiled module
checks the optimisations, not just the shared logic.
"""

from __future__ import annotations

import codecs

GO_REPLACE = "fastkv-go-replace-twin"


def _go_replace(err: UnicodeDecodeError) -> tuple[str, int]:
    """One U+FFFD per byte of an invalid sequence, as Go's UTF-8 decoder."""
    return "\ufffd" * (err.end - err.start), err.end


codecs.register_error(GO_REPLACE, _go_replace)

_HEX = "0123456789abcdefABCDEF"
_GO_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def quote_go(s: bytes) -> str:
    out = ['"']
    i = 0
    while i < len(s):
        c = s[i]
        if c in (0x22, 0x5C):
            out.append("\\" + chr(c))
            i += 1
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
            i += 1
        elif c < 0x80:
            out.append(_GO_ESCAPES.get(c, f"\\x{c:02x}"))
            i += 1
        else:
            for width in (2, 3, 4):
                try:
                    ch = s[i : i + width].decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if ch.isprintable():
                    out.append(ch)
                    i += width
                    break
            else:
                out.append(f"\\x{c:02x}")
                i += 1
    out.append('"')
    return "".join(out)


def unescape(s: bytes, query: bool) -> bytes:
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == 0x25:
            if i + 2 >= len(s) or chr(s[i + 1]) not in _HEX or chr(s[i + 2]) not in _HEX:
                raise ValueError("invalid URL escape " + quote_go(s[i : i + 3]))
            out.append(int(s[i + 1 : i + 3], 16))
            i += 3
        elif c == 0x2B and query:
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    return bytes(out)


def parse_form(data: bytes, form: dict[str, str]) -> str | None:
    err: str | None = None
    for piece in data.split(b"&"):
        if b";" in piece:
            err = "invalid semicolon separator in query"
            continue
        if not piece:
            continue
        key, _, value = piece.partition(b"=")
        try:
            k = unescape(key, True).decode("utf-8", GO_REPLACE)
            v = unescape(value, True).decode("utf-8", GO_REPLACE)
        except ValueError as e:
            if err is None:
                err = str(e)
            continue
        form.setdefault(k, v)
    return err


def clean_path(p: str) -> str:
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    parts: list[str] = []
    for element in p.split("/"):
        if element in ("", "."):
            continue
        if element == "..":
            if parts:
                parts.pop()
        else:
            parts.append(element)
    cleaned = "/" + "/".join(parts)
    if p.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def parse_bool(s: str) -> int:
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return 1
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return 0
    return -1


def parse_uint64(s: str) -> int:
    if not s or any(c not in "0123456789" for c in s):
        return -1
    v = int(s)
    return v if v < 1 << 64 else -1
