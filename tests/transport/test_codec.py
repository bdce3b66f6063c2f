"""The peer frame codec: round trips of every frame kind, fed whole, byte by byte and in random
splits; truncation never yields a frame; any flipped bit is detected; limits are enforced."""

from __future__ import annotations

import random
import struct
import timeit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkv._native.crc32c import crc32c
from fastkv.raft.messages import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_NAMES,
    MSG_PROP,
    MSG_SNAP,
    MSG_VOTE,
    Message,
    Snapshot,
    SnapshotMeta,
)
from fastkv.raft.types import Entry
from fastkv.transport import codec
from fastkv.transport.codec import (
    HEADER_SIZE,
    Decoder,
    FrameError,
    FrameTooLarge,
    Hello,
    HelloReply,
    Ping,
    Pong,
    SnapAck,
    encode,
    encode_message,
    encode_snapshot,
)

U64 = (1 << 64) - 1


def app(n: int, first: int = 101, term: int = 3, size: int = 10) -> Message:
    ents = [Entry(term, first + i, i % 2, bytes([i % 256]) * (size + i % 5)) for i in range(n)]
    return Message(
        MSG_APP, to=2, frm=1, term=term, log_term=term, index=first - 1, entries=ents, commit=first - 2
    )


def every_message() -> list[Message]:
    out = [Message(t, to=2, frm=1, term=7, log_term=6, index=5, commit=4) for t in MSG_NAMES]
    out += [
        app(1),
        app(64),
        Message(MSG_APP_RESP, to=1, frm=2, term=3, index=9, reject=True, reject_hint=4),
        Message(MSG_HEARTBEAT, to=U64, frm=U64 - 1, term=U64, commit=U64, context=b"ctx\x00\xff"),
        Message(MSG_VOTE, to=3, frm=1, term=9, log_term=8, index=77, context=b"CampaignTransfer"),
        Message(
            MSG_PROP, to=1, frm=2, entries=[Entry(0, 0, 0, b"a"), Entry(0, 0, 1, b""), Entry(0, 0, 0, b"b")]
        ),
        Message(
            MSG_APP, to=2, frm=1, entries=[Entry(1, 5, 0, b"x"), Entry(2, 5, 0, b"y"), Entry(2, 9, 0, b"")]
        ),
        Message(MSG_APP, to=2, frm=1, entries=[Entry(1, 7, 0, b"x"), Entry(1, 6, 0, b"y")]),
        Message(MSG_APP, to=2, frm=1, entries=[Entry(U64, U64, 255, b"z" * 1000)]),
        Message(
            MSG_SNAP, to=2, frm=1, term=4, snapshot=Snapshot(SnapshotMeta(100, 3, [1, 2, 3]), b"S" * 5000)
        ),
        Message(MSG_SNAP, to=2, frm=1, term=4, snapshot=Snapshot(SnapshotMeta(0, 0, []), b"")),
        Message(
            MSG_SNAP,
            to=2,
            frm=1,
            context=b"c",
            entries=[Entry(1, 1, 0, b"e")],
            snapshot=Snapshot(SnapshotMeta(1, 1, [U64]), b"d"),
        ),
    ]
    return out


def other_frames() -> list[codec.Frame]:
    return [
        Hello(0xC1FBC22789D8C638, 0x32689CDAA5C21ADD, U64, codec.STREAM_MESSAGE),
        Hello(1, 2, 3, codec.STREAM_SNAPSHOT),
        HelloReply(200, "", 5),
        HelloReply(412, "cluster ID mismatch", U64),
        HelloReply(410, "removed member", 1),
        SnapAck(True),
        SnapAck(False, "snapshot too old: \u00e9"),
        Ping(123456789),
        Pong(U64),
    ]


def stream_of(frames: list[codec.Frame]) -> bytes:
    return b"".join(encode(f) for f in frames)


def feed_all(data: bytes, splits: list[int], dec: Decoder | None = None) -> list[codec.Frame]:
    dec = dec or Decoder()
    out: list[codec.Frame] = []
    prev = 0
    for cut in [*splits, len(data)]:
        out += dec.feed(data[prev:cut])
        prev = cut
    return out


def test_round_trip_every_message_type_whole() -> None:
    frames: list[codec.Frame] = [*every_message(), *other_frames()]
    for f in frames:
        assert Decoder().feed(encode(f)) == [f], f
    assert Decoder().feed(stream_of(frames)) == frames


def test_decoded_entries_are_entries() -> None:
    for m in (app(64), every_message()[-7]):
        (got,) = Decoder().feed(encode_message(m))
        assert isinstance(got, Message)
        assert all(type(e) is Entry for e in got.entries)
        assert [tuple(e) for e in got.entries] == [tuple(e) for e in m.entries]


def test_byte_by_byte() -> None:
    frames: list[codec.Frame] = [*every_message(), *other_frames()]
    data = stream_of(frames)
    dec = Decoder()
    out: list[codec.Frame] = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
    assert out == frames
    assert dec.buffered == 0


def test_random_splits() -> None:
    frames: list[codec.Frame] = [*every_message(), *other_frames()]
    data = stream_of(frames)
    rng = random.Random(7)
    for _ in range(200):
        splits = sorted(rng.sample(range(1, len(data)), rng.randrange(1, 40)))
        assert feed_all(data, splits) == frames


def test_memoryview_and_bytearray_chunks() -> None:
    m = app(8)
    data = encode_message(m)
    dec = Decoder()
    assert dec.feed(bytearray(data[:10])) == []
    assert dec.feed(memoryview(data)[10:]) == [m]


def test_truncated_at_every_offset_yields_nothing() -> None:
    for f in [app(5), every_message()[-3], HelloReply(412, "x", 1), Ping(1)]:
        data = encode(f)
        for cut in range(len(data)):
            dec = Decoder()
            assert dec.feed(data[:cut]) == [], (f, cut)
            # and the rest completes it
            assert dec.feed(data[cut:]) == [f]


def test_every_flipped_bit_is_detected() -> None:
    for f in [app(3, size=3), Hello(1, 2, 3, "message"), every_message()[-1]]:
        data = encode(f)
        for bit in range(len(data) * 8):
            bad = bytearray(data)
            bad[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(FrameError):
                Decoder().feed(bytes(bad))


def test_flipped_length_bit_fails_at_once() -> None:
    # Without a header crc a larger length would make the reader wait forever.
    data = bytearray(encode(Ping(5)))
    data[9] ^= 0x01  # payload length += 256
    with pytest.raises(FrameError, match="header checksum"):
        Decoder().feed(bytes(data[:HEADER_SIZE]))


def test_decoder_refuses_after_error() -> None:
    dec = Decoder()
    with pytest.raises(FrameError):
        dec.feed(b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxx")
    with pytest.raises(FrameError):
        dec.feed(encode(Ping(1)))


def forge(
    ftype: int, env: bytes, payload: bytes = b"", version: int = codec.PROTOCOL_VERSION, magic: bytes = b"FK"
) -> bytes:
    head = struct.pack(
        "<2sBBIII", magic, version, ftype, len(env), len(payload), crc32c(payload, crc32c(env))
    )
    return head + struct.pack("<I", crc32c(head)) + env + payload


def test_well_checksummed_garbage_is_refused() -> None:
    msg_env = orjson.dumps([3, 2, 1, 0, 0, 0, 0, False, 0, 0, 0, 0, None])
    cases = [
        (forge(99, b"[]"), "unknown frame type"),
        (forge(codec.FRAME_PING, b"[1,"), "malformed ping"),
        (forge(codec.FRAME_HELLO, b"[1,2]"), "malformed hello"),
        (forge(codec.FRAME_PING, b"1", b"x"), "unexpected payload"),
        (forge(codec.FRAME_MESSAGE, msg_env, b"extra"), "disagrees"),
        (forge(codec.FRAME_SNAP_CHUNK, b"", b"data"), "outside a snapshot"),
        (forge(codec.FRAME_PING, b"1", version=2), "version 2"),
        (forge(codec.FRAME_PING, b"1", magic=b"XX"), "bad magic"),
        (forge(codec.FRAME_SNAP_BEGIN, msg_env), "without a snapshot"),
        (
            forge(
                codec.FRAME_MESSAGE, orjson.dumps([3, 2, 1, 0, 0, 0, 0, False, 0, 0, 2, 8, None]), bytes(8)
            ),
            "entry",
        ),
    ]
    for data, match in cases:
        with pytest.raises(FrameError, match=match):
            Decoder().feed(data)


def test_frame_size_limit() -> None:
    big = encode_message(app(1, size=10_000))
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 4096"):
        # refused from the header alone, before the body is buffered
        Decoder(max_frame_bytes=4096).feed(big[:HEADER_SIZE])
    assert len(Decoder(max_frame_bytes=len(big)).feed(big)) == 1


def snap_msg(size: int, seed: int = 1) -> Message:
    data = random.Random(seed).randbytes(size)
    return Message(MSG_SNAP, to=2, frm=1, term=5, snapshot=Snapshot(SnapshotMeta(1000, 4, [1, 2, 3]), data))


def test_streamed_snapshot_round_trip() -> None:
    m = snap_msg(100_003)
    frames = list(encode_snapshot(m, chunk_bytes=4096))
    assert len(frames) == 1 + 25
    assert all(len(f) <= HEADER_SIZE + 4096 for f in frames[1:])
    data = b"".join(frames)
    dec = Decoder()
    assert feed_all(data, [len(data) - 1], dec) == [m]
    rng = random.Random(3)
    assert feed_all(data, sorted(rng.sample(range(1, len(data)), 300))) == [m]
    # an empty snapshot is just the begin frame
    empty = Message(MSG_SNAP, to=2, frm=1, snapshot=Snapshot(SnapshotMeta(5, 1, [1]), b""))
    assert Decoder().feed(b"".join(encode_snapshot(empty))) == [empty]


def test_streamed_snapshot_then_messages() -> None:
    m = snap_msg(10_000)
    data = b"".join(encode_snapshot(m, 1000)) + encode(SnapAck(True))
    assert Decoder().feed(data) == [m, SnapAck(True)]


def test_streamed_snapshot_limits() -> None:
    frames = list(encode_snapshot(snap_msg(10_000), 1000))
    with pytest.raises(FrameTooLarge, match="snapshot of 10000 bytes"):
        Decoder(max_snapshot_bytes=9_999).feed(frames[0])
    # a frame other than a chunk in the middle of a snapshot
    with pytest.raises(FrameError, match="inside a snapshot"):
        Decoder().feed(frames[0] + frames[1] + encode(Ping(1)))
    # more chunk bytes than declared
    with pytest.raises(FrameError, match="exceed the declared"):
        Decoder().feed(b"".join(frames[:-1]) + forge(codec.FRAME_SNAP_CHUNK, b"", bytes(1001)))
    # and past the end it is a chunk outside any snapshot
    with pytest.raises(FrameError, match="outside a snapshot"):
        Decoder().feed(b"".join(frames) + frames[1])


def test_truncated_snapshot_stream_yields_nothing() -> None:
    data = b"".join(encode_snapshot(snap_msg(3000), 500))
    for cut in range(0, len(data), 7):
        assert Decoder().feed(data[:cut]) == []


def test_encode_snapshot_requires_snapshot() -> None:
    with pytest.raises(ValueError):
        list(encode_snapshot(app(1)))


entries_st = st.lists(
    st.builds(
        Entry,
        st.integers(0, U64),
        st.integers(0, U64),
        st.integers(0, 255),
        st.binary(max_size=64),
    ),
    max_size=20,
)

messages_st = st.builds(
    Message,
    type=st.sampled_from(sorted(MSG_NAMES)),
    to=st.integers(0, U64),
    frm=st.integers(0, U64),
    term=st.integers(0, U64),
    log_term=st.integers(0, U64),
    index=st.integers(0, U64),
    entries=entries_st,
    commit=st.integers(0, U64),
    reject=st.booleans(),
    reject_hint=st.integers(0, U64),
    context=st.binary(max_size=40),
    snapshot=st.none()
    | st.builds(
        Snapshot,
        st.builds(
            SnapshotMeta, st.integers(0, U64), st.integers(0, U64), st.lists(st.integers(0, U64), max_size=5)
        ),
        st.binary(max_size=300),
    ),
)

consecutive_st = st.builds(
    lambda term, first, datas: [Entry(term, first + i, 0, d) for i, d in enumerate(datas)],
    st.integers(0, 1 << 40),
    st.integers(1, 1 << 40),
    st.lists(st.binary(max_size=50), max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages_st, min_size=1, max_size=5), st.data())
def test_property_round_trip_any_split(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode_message(m) for m in msgs)
    splits = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=10))))
    assert feed_all(stream, splits) == msgs


@settings(max_examples=200, deadline=None)
@given(consecutive_st)
def test_property_consecutive_entries(ents: list[Entry]) -> None:
    m = Message(MSG_APP, to=2, frm=1, entries=ents)
    assert Decoder().feed(encode_message(m)) == [m]


@settings(max_examples=100, deadline=None)
@given(messages_st.filter(lambda m: m.snapshot is not None), st.integers(1, 100), st.data())
def test_property_streamed_snapshot(m: Message, chunk: int, data: st.DataObject) -> None:
    stream = b"".join(encode_snapshot(m, chunk))
    splits = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=10))))
    assert feed_all(stream, splits) == [m]


@settings(max_examples=200, deadline=None)
@given(messages_st, st.data())
def test_property_corruption_detected(m: Message, data: st.DataObject) -> None:
    frame = bytearray(encode_message(m))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        Decoder().feed(bytes(frame))


def test_encode_speed_msgapp_64_entries() -> None:
    m = app(64, size=20)
    n = 2000
    best = min(timeit.repeat(lambda: encode_message(m), number=n, repeat=5)) / n
    # A few µs on a normal machine; the bound leaves room for slow CI.
    assert best < 40e-6, f"encode of a 64-entry MsgApp took {best * 1e6:.1f} µs"
