"""A minimal protocol buffers wire-format reader, strict enough to tell a record from garbage.

etcd's WAL, snapshot and Raft entry formats are a handful of small gogo-protobuf messages; reading
them needs only varints, fixed-width numbers and length-delimited fields.  ``fields`` yields
``(number, wire_type, value)`` where ``value`` is an int (varint, fixed32, fixed64) or a memoryview
(length-delimited).  Anything that does not parse (a truncated varint, a length past the end, a group,
an unknown wire type, field number 0) raises ``WireError``.  ``expect`` lets a message decoder
refuse a known field carried with the wrong wire type, as gogo's generated decoders do: etcd relies on
that to tell a bare v2 ``Request`` from an ``InternalRaftRequest``.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, BYTES, GROUP_START, GROUP_END, FIXED32 = 0, 1, 2, 3, 4, 5

Buffer = bytes | bytearray | memoryview
Value = int | memoryview


class WireError(ValueError):
    pass


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it); at most 10 bytes, as a uint64."""
    end = len(buf)
    if pos < end and buf[pos] < 0x80:
        return buf[pos], pos + 1
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:
                raise WireError("varint overflows 64 bits")
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(data: Buffer) -> Iterator[tuple[int, int, Value]]:
    buf = data if isinstance(data, memoryview) else memoryview(data)
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire, value
        elif wire == BYTES:
            length, pos = read_varint(buf, pos)
            if length > end - pos:
                raise WireError(f"field {number}: {length} bytes announced, {end - pos} left")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire == FIXED64:
            if end - pos < 8:
                raise WireError("truncated fixed64")
            yield number, wire, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == FIXED32:
            if end - pos < 4:
                raise WireError("truncated fixed32")
            yield number, wire, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise WireError(f"field {number}: unsupported wire type {wire}")


def expect(number: int, wire: int, wanted: int, message: str) -> None:
    if wire != wanted:
        raise WireError(f"{message}: field {number} has wire type {wire}, expected {wanted}")


def as_int64(value: int) -> int:
    """A varint read as uint64, reinterpreted as Go's int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def as_str(value: Value) -> str:
    """A string field; invalid UTF-8 becomes U+FFFD, as fastkv's API decodes keys and values."""
    assert isinstance(value, memoryview)
    return bytes(value).decode("utf-8", "replace")
