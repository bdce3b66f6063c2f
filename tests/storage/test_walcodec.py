"""The compiled WAL codec against its pure-Python twin, and the framing rules themselves."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkv._native import walcodec as native
from fastkv.raft.types import Entry, HardState
from tests.twins import walcodec as twin

u64 = st.integers(0, 2**64 - 1)
small = st.integers(0, 12)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("entry"), small, st.integers(1, 12), st.integers(0, 255), st.binary(max_size=40)),
        st.tuples(st.just("state"), u64, u64, u64),
        st.tuples(st.just("crc")),
        st.tuples(st.just("snap"), u64, u64),
        st.tuples(st.just("meta"), st.sampled_from([b"", b"m", b"other metadata"])),
    ),
    max_size=25,
)


def encode(mod: Any, seq: list[tuple], crc: int) -> tuple[bytes, int]:
    enc = mod.Encoder(crc)
    for op in seq:
        kind = op[0]
        if kind == "entry":
            enc.add_entries([Entry(*op[1:])])
        elif kind == "state":
            enc.add_hard_state(HardState(*op[1:]))
        elif kind == "crc":
            enc.add_crc()
        elif kind == "snap":
            enc.add_snapshot(*op[1:])
        else:
            enc.add_metadata(op[1])
    assert len(enc) == len(enc.getvalue())
    return enc.getvalue(), enc.crc


def replay(mod: Any, buf: bytes, first_index: int) -> tuple:
    dec = mod.Decoder(Entry, HardState, first_index)
    stop = dec.decode(buf, 0)
    return (
        stop,
        dec.record_end,
        [tuple(e) for e in dec.entries],
        dec.hard_state,
        dec.metadata,
        None if dec.snapshot is None else tuple(dec.snapshot),
        dec.last_index,
        dec.crc,
        dec.crc_known,
    )


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_encoder_matches_twin(seq: list[tuple], crc: int, first_index: int) -> None:
    got, got_crc = encode(native, seq, crc)
    want, want_crc = encode(twin, seq, crc)
    assert got == want
    assert got_crc == want_crc
    assert len(got) % 8 == 0
    assert replay(native, got, first_index) == replay(twin, want, first_index)


@settings(max_examples=400, deadline=None)
@given(ops, st.data())
def test_decoder_matches_twin_on_damage(seq: list[tuple], data: st.DataObject) -> None:
    buf = bytearray(encode(twin, [("crc",), *seq], 0)[0])
    damage = data.draw(st.sampled_from(["flip", "truncate", "zero_tail", "garbage_tail"]))
    if damage == "flip" and buf:
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] ^= data.draw(st.integers(1, 255))
    elif damage == "truncate":
        del buf[data.draw(st.integers(0, len(buf))) :]
    elif damage == "zero_tail":
        cut = data.draw(st.integers(0, len(buf)))
        buf[cut:] = bytes(len(buf) - cut + data.draw(st.integers(0, 40)))
    else:
        buf += data.draw(st.binary(max_size=40))
    first_index = data.draw(st.integers(0, 3))
    assert replay(native, bytes(buf), first_index) == replay(twin, bytes(buf), first_index)
    assert native.data_end(bytes(buf)) == twin.data_end(bytes(buf))


def test_record_layout() -> None:
    enc = native.Encoder(0)
    enc.add_entries([Entry(3, 7, 1, b"abc")])
    buf = enc.getvalue()
    assert len(buf) == 16 + 24  # 17 fixed + 3 data = 20, padded to 24
    assert buf[0:4] == (20).to_bytes(4, "little")
    assert buf[4] == native.ENTRY_RECORD
    assert buf[16:24] == (3).to_bytes(8, "little")
    assert buf[24:32] == (7).to_bytes(8, "little")
    assert buf[32] == 1 and buf[33:36] == b"abc" and buf[36:40] == bytes(4)


def test_crc_chains_across_records_and_encoders() -> None:
    one = native.Encoder(0)
    one.add_entries([Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")])
    first = native.Encoder(0)
    first.add_entries([Entry(1, 1, 0, b"a")])
    second = native.Encoder(first.crc)
    second.add_entries([Entry(1, 2, 0, b"b")])
    assert first.getvalue() + second.getvalue() == one.getvalue()
    assert second.crc == one.crc


def test_replay_truncates_the_suffix_and_skips_below_first_index() -> None:
    enc = native.Encoder(0)
    enc.add_crc()
    enc.add_entries([Entry(1, i, 0, b"%d" % i) for i in range(1, 8)])
    enc.add_entries([Entry(2, 4, 0, b"new4"), Entry(2, 5, 0, b"new5")])
    dec = native.Decoder(Entry, HardState, 3)
    assert dec.decode(enc.getvalue()) == (len(enc), native.END)
    assert [(e.term, e.index) for e in dec.entries] == [(1, 3), (2, 4), (2, 5)]
    assert dec.entries[-1].data == b"new5"
    assert dec.last_index == 5


def test_gap_and_chain_break_are_reported_at_the_record() -> None:
    enc = native.Encoder(0)
    enc.add_crc()
    enc.add_entries([Entry(1, 1, 0, b"")])
    good = len(enc)
    enc.add_entries([Entry(1, 3, 0, b"")])
    dec = native.Decoder(Entry, HardState, 1)
    assert dec.decode(enc.getvalue()) == (good, native.INDEX_GAP)

    dec = native.Decoder(Entry, HardState, 1)
    dec.crc, dec.crc_known = 12345, True
    assert dec.decode(enc.getvalue()) == (0, native.BAD_CHAIN)


def test_entry_must_be_a_four_tuple_of_the_right_types() -> None:
    enc = native.Encoder(0)
    with pytest.raises(TypeError):
        enc.add_entries([(1, 2, 3)])
    with pytest.raises(OverflowError):
        enc.add_entries([Entry(-1, 1, 0, b"")])
    with pytest.raises(TypeError):
        Entry(1, 1, 0, bytearray(b"x"))  # type: ignore[arg-type]
    enc.add_entries([(1, 1, 0, bytearray(b"x"))])  # a tuple may carry any buffer as data
    dec = native.Decoder(Entry, HardState)
    dec.decode(enc.getvalue())
    assert dec.entries == [Entry(1, 1, 0, b"x")]


def test_data_end() -> None:
    assert native.data_end(b"") == 0
    assert native.data_end(bytes(100)) == 0
    assert native.data_end(b"\x01" + bytes(100)) == 1
    assert native.data_end(bytes(17) + b"\x01" + bytes(64)) == 18
    assert native.data_end(b"\x01" * 9, 3) == 9
    assert native.data_end(b"\x01" + bytes(20), 5) == 5
