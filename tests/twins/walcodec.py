"""Pure-Python twin of native/walcodec.pyx and native/crc32c.pyx: the readable reference
the property tests hold the compiled codec to (same bytes out, same replay, same stops).

See native/walcodec.pyx for the record layout and the rules; this file restates them as
plainly as possible and is never used by fastkv itself.
"""

from __future__ import annotations

import struct
from typing import Any

HEADER_SIZE = 16
ENTRY_FIXED_SIZE = 17

ENTRY_RECORD, STATE_RECORD, CRC_RECORD, SNAPSHOT_RECORD, METADATA_RECORD = 1, 2, 3, 4, 5
END, BAD_HEADER, SHORT, BAD_CRC, BAD_PAYLOAD, BAD_CHAIN, METADATA_MISMATCH, INDEX_GAP, BAD_PADDING = range(9)


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Bit-reflected CRC-32C, one byte at a time, continuing a finished crc."""
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _padded(n: int) -> int:
    return (n + 7) & ~7


def frame(rtype: int, payload: bytes, prev_crc: int) -> tuple[bytes, int]:
    """One record chained to prev_crc: (its bytes, its crc)."""
    head8 = struct.pack("<IB3x", len(payload), rtype)
    crc = crc32c(payload, crc32c(head8, prev_crc))
    head12 = head8 + struct.pack("<I", crc)
    pad = b"\0" * (_padded(len(payload)) - len(payload))
    return head12 + struct.pack("<I", crc32c(head12)) + payload + pad, crc


class Encoder:
    def __init__(self, crc: int = 0) -> None:
        self.crc = crc
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def _add(self, rtype: int, payload: bytes) -> None:
        record, self.crc = frame(rtype, payload, self.crc)
        self._buf += record

    def add_entries(self, entries: list[Any]) -> None:
        for entry in entries:
            self.add_entry(entry)

    def add_entry(self, entry: Any) -> None:
        term, index, etype, data = entry
        self._add(ENTRY_RECORD, struct.pack("<QQB", term, index, etype) + bytes(data))

    def add_hard_state(self, hard_state: Any) -> None:
        self._add(STATE_RECORD, struct.pack("<QQQ", *hard_state))

    def add_crc(self) -> None:
        self._add(CRC_RECORD, struct.pack("<I", self.crc))

    def add_snapshot(self, term: int, index: int) -> None:
        self._add(SNAPSHOT_RECORD, struct.pack("<QQ", term, index))

    def add_metadata(self, metadata: bytes) -> None:
        self._add(METADATA_RECORD, bytes(metadata))

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def clear(self) -> None:
        self._buf.clear()


def data_end(buf: bytes, start: int = 0) -> int:
    end = len(buf)
    while end > start and buf[end - 1] == 0:
        end -= 1
    return end


class Decoder:
    def __init__(self, entry_cls: Any, state_cls: Any, first_index: int = 1) -> None:
        self.entries: list[Any] = []
        self.first_index = first_index or 1
        self.metadata: bytes | None = None
        self.hard_state: Any = None
        self.snapshot: tuple[int, int] | None = None
        self.last_index = 0
        self.crc = 0
        self.crc_known = False
        self.record_end = 0
        self._entry_cls = entry_cls
        self._state_cls = state_cls

    def decode(self, buf: bytes, offset: int = 0) -> tuple[int, int]:
        while True:
            self.record_end = offset + HEADER_SIZE
            rest = buf[offset:]
            if not rest:
                return offset, END
            if len(rest) < HEADER_SIZE:
                return offset, (SHORT if any(rest) else END)
            head = rest[:HEADER_SIZE]
            if not any(head):
                return offset, END
            length, rtype, r0, r1, r2, crc, hcrc = struct.unpack("<IBBBBII", head)
            if hcrc != crc32c(head[:12]) or (r0, r1, r2) != (0, 0, 0) or not 1 <= rtype <= 5:
                return offset, BAD_HEADER
            total = HEADER_SIZE + _padded(length)
            self.record_end = offset + total
            if total > len(rest):
                return offset, SHORT
            payload = rest[HEADER_SIZE : HEADER_SIZE + length]
            seed = self.crc
            if rtype == CRC_RECORD:
                if length != 4:
                    return offset, BAD_PAYLOAD
                (carried,) = struct.unpack("<I", payload)
                if self.crc_known and carried != self.crc:
                    return offset, BAD_CHAIN
                seed = carried
            if crc32c(payload, crc32c(head[:8], seed)) != crc:
                return offset, BAD_CRC
            if any(rest[HEADER_SIZE + length : total]):
                return offset, BAD_PADDING
            if rtype == ENTRY_RECORD:
                if length < ENTRY_FIXED_SIZE:
                    return offset, BAD_PAYLOAD
                term, index, etype = struct.unpack_from("<QQB", payload)
                if index >= self.first_index:
                    pos = index - self.first_index
                    if pos > len(self.entries):
                        return offset, INDEX_GAP
                    # Raft log truncation: a re-written index replaces the suffix from it.
                    del self.entries[pos:]
                    self.entries.append(
                        self._entry_cls(term, index, etype, bytes(payload[ENTRY_FIXED_SIZE:]))
                    )
                self.last_index = index
            elif rtype == STATE_RECORD:
                if length != 24:
                    return offset, BAD_PAYLOAD
                self.hard_state = self._state_cls(*struct.unpack("<QQQ", payload))
            elif rtype == SNAPSHOT_RECORD:
                if length != 16:
                    return offset, BAD_PAYLOAD
                self.snapshot = struct.unpack("<QQ", payload)
            elif rtype == METADATA_RECORD:
                if self.metadata is None:
                    self.metadata = bytes(payload)
                elif self.metadata != payload:
                    return offset, METADATA_MISMATCH
            self.crc = crc
            self.crc_known = True
            offset += total
