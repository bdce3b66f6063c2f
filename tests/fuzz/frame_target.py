"""Target ``frame``: the peer frame decoder (transport/codec.py) on arbitrary, damaged and re-sealed bytes.

The first input byte picks a mode and seeds how the stream is cut into reads:

- mode 0, raw: the rest of the input is the byte stream;
- mode 1, damaged: a stream of valid frames of every kind (messages with entries, proposals, an inline
  and a streamed snapshot, hello, ping...) with bit flips or a truncation read from the input;
- mode 2, sealed: frames built from the input (type, envelope, payload, optionally lying lengths) with
  correct checksums, so that the envelope and payload checks behind the crcs are reached.

Invariants:
- ``feed`` raises nothing but ``FrameError`` (and only that once failed);
- bounded memory: the decoder never holds more than it was given, a declared length is refused before
  any of it is buffered (under atheris, libFuzzer's -rss_limit_mb catches an allocation of it too);
- every frame it yields is well typed: ids, terms and indexes are ints in [0, 2**64), flags bools,
  context and data bytes, entries Entry, voters a list of such ints, strings str;
- how the stream is cut into reads changes nothing: the same frames, the same failure or none;
- damaged valid frames: any flipped bit is an error; a truncated stream yields exactly the frames wholly
  before the cut, and no error.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from fastkv._native.crc32c import crc32c
from fastkv.raft.messages import (
    MSG_APP,
    MSG_HEARTBEAT,
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
    Decoder,
    FrameError,
    Hello,
    HelloReply,
    Ping,
    Pong,
    SnapAck,
    encode,
    encode_snapshot,
)
from tests.fuzz.reader import Reader

MAX_FRAME = 1 << 16
MAX_SNAPSHOT = 1 << 18
U64 = 1 << 64
_HEAD16 = struct.Struct("<2sBBIII")


class FuzzFailure(AssertionError):
    pass


def valid_frames() -> tuple[list[bytes], list[Any]]:
    """(encoded pieces, the frames a decoder yields for them)."""
    snap = Message(
        MSG_SNAP, to=2, frm=1, term=4, snapshot=Snapshot(SnapshotMeta(40, 3, [1, 2, 3]), b"S" * 700)
    )
    frames: list[Any] = [
        Hello(0xC1FBC22789D8C638, 0x32689CDAA5C21ADD, 2, codec.STREAM_MESSAGE),
        HelloReply(200, "", 5),
        Message(
            MSG_APP,
            to=2,
            frm=1,
            term=3,
            log_term=3,
            index=9,
            commit=8,
            entries=[Entry(3, 10 + i, i % 2, b"e%d" % i * (i + 1)) for i in range(4)],
        ),
        Message(MSG_PROP, to=1, frm=2, entries=[Entry(0, 0, 0, b"a"), Entry(0, 0, 1, b"")]),
        Message(MSG_HEARTBEAT, to=2, frm=1, term=U64 - 1, commit=7, context=b"ctx\x00\xff"),
        Message(MSG_VOTE, to=3, frm=1, term=9, log_term=8, index=77, reject=True, reject_hint=4),
        Message(MSG_SNAP, to=2, frm=1, term=4, snapshot=Snapshot(SnapshotMeta(5, 2, [1]), b"inline")),
        SnapAck(False, "snapshot too old: \u00e9"),
        Ping(123456789),
        Pong(U64 - 1),
    ]
    pieces = [encode(f) for f in frames]
    pieces.append(b"".join(encode_snapshot(snap, 256)))
    frames.append(snap)
    return pieces, frames


_VALID = valid_frames()


def _u64(v: Any) -> bool:
    return type(v) is int and 0 <= v < U64


def check_frame(f: Any) -> None:
    if type(f) is Message:
        ok = all(
            _u64(getattr(f, n))
            for n in ("type", "to", "frm", "term", "log_term", "index", "commit", "reject_hint")
        )
        ok = ok and type(f.reject) is bool and type(f.context) is bytes and type(f.entries) is list
        ok = ok and all(type(e) is Entry for e in f.entries)
        s = f.snapshot
        if s is not None:
            ok = (
                ok
                and type(s) is Snapshot
                and type(s.data) is bytes
                and _u64(s.meta.index)
                and _u64(s.meta.term)
            )
            ok = ok and type(s.meta.voters) is list and all(_u64(v) for v in s.meta.voters)
    elif type(f) is Hello:
        ok = _u64(f.cluster_id) and _u64(f.frm) and _u64(f.to) and type(f.stream) is str and _u64(f.version)
    elif type(f) is HelloReply:
        ok = _u64(f.status) and type(f.reason) is str and _u64(f.frm)
    elif type(f) is SnapAck:
        ok = type(f.ok) is bool and type(f.reason) is str
    elif type(f) in (Ping, Pong):
        ok = _u64(f.sent_ns)
    else:
        ok = False
    if not ok:
        raise FuzzFailure(f"decoded frame is not well typed: {f!r}")


def decode(reads: list[bytes]) -> tuple[list[Any], str | None]:
    dec = Decoder(MAX_FRAME, MAX_SNAPSHOT)
    out: list[Any] = []
    fed = 0
    for data in reads:
        fed += len(data)
        try:
            frames = dec.feed(data)
        except FrameError as e:
            try:
                dec.feed(b"x")
            except FrameError:
                pass
            else:
                raise FuzzFailure("a failed decoder accepted more input") from e
            return out, type(e).__name__
        for f in frames:
            check_frame(f)
        out += frames
        if dec.buffered > fed:
            raise FuzzFailure(f"decoder holds {dec.buffered} bytes after being given {fed}")
        if dec.buffered > MAX_FRAME + MAX_SNAPSHOT:
            raise FuzzFailure(f"decoder holds {dec.buffered} bytes, over its limits")
    return out, None


def _splits(rng: random.Random, data: bytes, max_read: int) -> list[bytes]:
    reads = []
    i = 0
    while i < len(data):
        n = rng.randint(1, max_read)
        reads.append(data[i : i + n])
        i += n
    return reads


def _sealed(r: Reader) -> bytes:
    out = []
    while r.left:
        ftype = r.byte() % 10
        env = r.chunk()
        payload = r.chunk()
        lie = r.byte()
        env_len = r.uint(4) if lie & 1 else len(env)
        payload_len = r.uint(4) if lie & 2 else len(payload)
        head = _HEAD16.pack(
            codec.MAGIC, codec.PROTOCOL_VERSION, ftype, env_len, payload_len, crc32c(payload, crc32c(env))
        )
        out.append(head + struct.pack("<I", crc32c(head)) + env + payload)
    return b"".join(out)


def frame(data: bytes) -> None:
    r = Reader(data)
    first = r.byte()
    mode, seed = first % 3, first // 3
    expect_error: bool | None = None
    expect_frames: list[Any] | None = None
    if mode == 0:
        stream = r.rest()
    elif mode == 1:
        pieces, frames = _VALID
        buf = bytearray(b"".join(pieces))
        if r.bool():
            cut = r.below(len(buf) + 1)
            del buf[cut:]
            ends = [sum(len(p) for p in pieces[: i + 1]) for i in range(len(pieces))]
            expect_frames = [f for f, end in zip(frames, ends, strict=True) if end <= cut]
            expect_error = False
        else:
            for _ in range(1 + r.byte() % 4):
                buf[r.below(len(buf))] ^= r.byte() or 1
            expect_error = bytes(buf) != b"".join(pieces)
            if not expect_error:
                expect_frames = frames
        stream = bytes(buf)
    else:
        stream = _sealed(r)

    whole = decode([stream])
    rng = random.Random(seed * 7919 + len(stream))
    small = (
        [stream[i : i + 1] for i in range(len(stream))] if len(stream) <= 2048 else _splits(rng, stream, 16)
    )
    for reads in (small, _splits(rng, stream, max(2, len(stream) // 3 + 1))):
        other = decode(reads)
        if (other[1] is None) != (whole[1] is None) or (whole[1] is None and other[0] != whole[0]):
            raise FuzzFailure(
                f"outcome depends on the reads: whole {whole!r}, in {len(reads)} reads {other!r}"
            )
    if expect_error is not None and (whole[1] is not None) != expect_error:
        raise FuzzFailure(f"damage {'not ' if expect_error else ''}detected: {whole!r}")
    if expect_frames is not None and whole[0] != expect_frames:
        raise FuzzFailure(f"frames {whole[0]!r} != expected {expect_frames!r}")
