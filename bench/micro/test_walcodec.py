"""WAL record codec and CRC32C: fastkv._native.walcodec / crc32c against tests/twins/walcodec.py.

- append: what ``WAL.save`` does per group commit, minus the write: frame 64 entries of 100 bytes and
  the hard state onto a reused encoder, chained to the previous crc, and take the bytes.
- replay: decode that batch (a crc record, 64 entries, the hard state) as WAL recovery does.
- crc32c: checksum of the whole encoded batch (~8 KiB) and of one 100-byte payload; the native module's
  portable table path (crc32c_software) runs too, to show what SSE4.2 adds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.twins import walcodec as twin

from fastkv._native import crc32c as native_crc
from fastkv._native import walcodec as native
from fastkv.raft.types import Entry, HardState

from .conftest import FIRST_INDEX, TERM, payload

IMPLS = {"native": native, "twin": twin}
PREV_CRC = 0x1234ABCD
HARD_STATE = (TERM, 2, FIRST_INDEX + 63)


def _append(mod: Any, entries: list[Entry]) -> Callable[[], bytes]:
    enc = mod.Encoder(PREV_CRC)

    def append() -> bytes:
        enc.clear()
        enc.crc = PREV_CRC
        enc.add_entries(entries)
        enc.add_hard_state(HARD_STATE)
        return enc.getvalue()

    return append


@pytest.fixture(scope="module")
def entries(entry_batch: list[tuple[int, int, int, bytes]]) -> list[Entry]:
    return [Entry(*e) for e in entry_batch]


@pytest.fixture(scope="module")
def encoded(entries: list[Entry]) -> bytes:
    """The batch as a WAL segment holds it: after the crc record that carries the previous crc."""
    enc = native.Encoder(PREV_CRC)
    enc.add_crc()
    enc.add_entries(entries)
    enc.add_hard_state(HARD_STATE)
    return enc.getvalue()


@pytest.mark.parametrize("impl", IMPLS)
def test_wal_append(benchmark: Any, impl: str, entries: list[Entry]) -> None:
    benchmark.group = "walcodec: append 64 x 100 B + hard state"
    out = benchmark(_append(IMPLS[impl], entries))
    assert out == _append(twin, entries)()
    assert len(out) == 64 * (16 + 120) + 16 + 24


@pytest.mark.parametrize("impl", IMPLS)
def test_wal_replay(benchmark: Any, impl: str, encoded: bytes, entries: list[Entry]) -> None:
    benchmark.group = "walcodec: replay 64 x 100 B + hard state"
    mod = IMPLS[impl]

    def replay() -> Any:
        dec = mod.Decoder(Entry, HardState, FIRST_INDEX)
        return dec, dec.decode(encoded)

    dec, result = benchmark(replay)
    assert result == (len(encoded), mod.END)
    assert dec.entries == entries
    assert dec.hard_state == HardState(*HARD_STATE)
    ref = twin.Decoder(Entry, HardState, FIRST_INDEX)
    ref.decode(encoded)
    assert (dec.crc, dec.last_index) == (ref.crc, ref.last_index)


CRC_IMPLS = {
    "native": native_crc.crc32c,
    "native-software": native_crc.crc32c_software,
    "twin": twin.crc32c,
}


@pytest.mark.parametrize("impl", CRC_IMPLS)
def test_crc32c_batch(benchmark: Any, impl: str, encoded: bytes) -> None:
    benchmark.group = f"crc32c: {len(encoded)} B (one encoded batch)"
    assert benchmark(CRC_IMPLS[impl], encoded, PREV_CRC) == twin.crc32c(encoded, PREV_CRC)


@pytest.mark.parametrize("impl", CRC_IMPLS)
def test_crc32c_entry(benchmark: Any, impl: str) -> None:
    benchmark.group = "crc32c: 100 B (one payload)"
    data = payload(7)
    assert benchmark(CRC_IMPLS[impl], data) == twin.crc32c(data)
