"""Peer frame codec (src/fastkv/transport/codec.py) on a MsgApp of 64 entries of 100 bytes.

The codec has no pure-Python twin: it is Python around the native WAL record codec and CRC32C.  What
is compared instead is its two entry decoders: a MsgApp (consecutive indexes) is replayed by the
native WAL decoder in one call, while a MsgProp of the same entries (index 0: proposals) falls back
to parsing the records one by one with struct, the pure-Python path.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastkv.raft.messages import MSG_APP, MSG_PROP, Message
from fastkv.raft.types import Entry
from fastkv.transport import codec

from .conftest import FIRST_INDEX, TERM


def _message(kind: str, entry_batch: list[tuple[int, int, int, bytes]]) -> Message:
    if kind == "MsgApp":
        ents = [Entry(*e) for e in entry_batch]
        return Message(MSG_APP, 2, 1, TERM, TERM, FIRST_INDEX - 1, ents, FIRST_INDEX + 40)
    ents = [Entry(0, 0, 0, e[3]) for e in entry_batch]
    return Message(MSG_PROP, 1, 2, TERM, entries=ents)


def test_encode_msgapp(benchmark: Any, entry_batch: list[tuple[int, int, int, bytes]]) -> None:
    benchmark.group = "transport: encode MsgApp 64 x 100 B"
    m = _message("MsgApp", entry_batch)
    frame = benchmark(codec.encode_message, m)
    assert codec.Decoder().feed(frame) == [m]


@pytest.mark.parametrize("kind", ["MsgApp", "MsgProp"])
def test_decode(benchmark: Any, kind: str, entry_batch: list[tuple[int, int, int, bytes]]) -> None:
    benchmark.group = "transport: decode 64 x 100 B (MsgApp: WAL decoder, MsgProp: one by one)"
    m = _message(kind, entry_batch)
    frame = codec.encode_message(m)

    def decode() -> list[Any]:
        return codec.Decoder().feed(frame)

    assert benchmark(decode) == [m]
