"""The peer wire format: a sans-IO frame codec (bytes in, frames out; frames in, bytes out).

Every frame is a fixed 20-byte header, an orjson envelope for the small fields and raw
payload bytes (all integers little-endian):

    0   2   magic b"FK"
    2   u8  protocol version (PROTOCOL_VERSION)
    3   u8  frame type (FRAME_HELLO ... FRAME_PONG)
    4   u32 envelope length E
    8   u32 payload length P
    12  u32 body crc:   crc32c(envelope + payload)
    16  u32 header crc: crc32c(bytes 0..16)
    20  E   envelope (orjson)
    20+E P  payload

Rules and invariants:
- The header has its own crc so a damaged length is never trusted: without it a flipped
  length bit would make the reader wait for bytes that never come, or swallow the frames
  that follow, before the body crc could complain.  Any flipped bit of a frame is detected.
- A frame longer than ``max_frame_bytes`` is refused as soon as its header is read, before
  any of it is buffered; so is a streamed snapshot declared larger than ``max_snapshot_bytes``.
- pickle is never used: the envelope is JSON of ints, bools, strings and lists; bytes travel raw.
  The decoder checks every envelope field's type (ids, terms, indexes, lengths: ints in
  [0, 2**64); flags: bools), so a frame it yields is well typed whatever its sender put in it.
- Entries travel as WAL entry records (the walcodec C encoder: term u64, index u64, type
  u8, data, each record 8-byte aligned with its own crc), so a MsgApp of 64 entries
  encodes in a few microseconds.  The receiver replays them with the WAL decoder when
  their indexes are consecutive (every MsgApp: Raft paper §5.3) and parses the records one
  by one otherwise (proposals carry index 0), so any list of entries round-trips.
- A MsgSnap is either one FRAME_MESSAGE with the snapshot data inline, or streamed:
  FRAME_SNAP_BEGIN (the message with the data length, no data) followed by FRAME_SNAP_CHUNK
  frames whose payloads concatenate to the data.  Either way the Decoder yields one
  Message with ``snapshot.data`` filled in, after the last byte arrived.
- The Decoder keeps nothing it has yielded and copies a partial frame at most once per
  feed (it waits until the whole frame is buffered before parsing it).

Non-goals: sockets, timers and connection state (transport.py); deciding what a peer may
send (the transport checks the handshake; the codec only checks that frames are intact).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from fastkv._native.crc32c import crc32c
from fastkv._native.walcodec import END as RECORDS_END
from fastkv._native.walcodec import ENTRY_FIXED_SIZE, ENTRY_RECORD
from fastkv._native.walcodec import HEADER_SIZE as RECORD_HEADER_SIZE
from fastkv._native.walcodec import Decoder as RecordDecoder
from fastkv._native.walcodec import Encoder as RecordEncoder
from fastkv.raft.messages import Message, Snapshot, SnapshotMeta
from fastkv.raft.types import Entry, HardState

MAGIC = b"FK"
PROTOCOL_VERSION = 1

FRAME_HELLO = 1  # dialer -> listener, first frame of every connection
FRAME_HELLO_REPLY = 2  # listener -> dialer: 200 or etcd's refusal status
FRAME_MESSAGE = 3  # one raft Message
FRAME_SNAP_BEGIN = 4  # a MsgSnap whose data follows in chunks
FRAME_SNAP_CHUNK = 5  # raw snapshot data
FRAME_SNAP_ACK = 6  # listener -> dialer: the snapshot was handed to raft (or why not)
FRAME_PING = 7  # dialer -> listener, for the round-trip time
FRAME_PONG = 8  # listener -> dialer, echoes the ping

FRAME_NAMES = {
    FRAME_HELLO: "hello",
    FRAME_HELLO_REPLY: "hello-reply",
    FRAME_MESSAGE: "message",
    FRAME_SNAP_BEGIN: "snapshot-begin",
    FRAME_SNAP_CHUNK: "snapshot-chunk",
    FRAME_SNAP_ACK: "snapshot-ack",
    FRAME_PING: "ping",
    FRAME_PONG: "pong",
}

STREAM_MESSAGE = "message"  # a long-lived connection carrying every message but MsgSnap
STREAM_SNAPSHOT = "snapshot"  # one connection per streamed MsgSnap
STREAM_MEMBERS = "members"  # one question: the cluster id and members (a member joining)

HEADER = struct.Struct("<2sBBIIII")
HEADER_SIZE = HEADER.size
_HEAD16 = struct.Struct("<2sBBIII")
_U32 = struct.Struct("<I")
_RECORD = struct.Struct("<IB3xII")  # walcodec record header: length, type, pad, crc, hcrc
_ENTRY = struct.Struct("<QQB")  # walcodec entry payload prefix: term, index, type

DEFAULT_MAX_FRAME_BYTES = 64 << 20
DEFAULT_MAX_SNAPSHOT_BYTES = 8 << 30
DEFAULT_SNAPSHOT_CHUNK_BYTES = 256 << 10


_U64_END = 1 << 64


def _is_u64(v: object) -> bool:
    return type(v) is int and 0 <= v < _U64_END


class FrameError(ValueError):
    """The byte stream is not a valid sequence of frames; the connection must be closed."""


class FrameTooLarge(FrameError):
    pass


@dataclass(slots=True)
class Hello:
    """First frame on a connection: who is dialing whom, in which cluster, for what."""

    cluster_id: int
    frm: int
    to: int
    stream: str
    version: int = PROTOCOL_VERSION


@dataclass(slots=True)
class HelloReply:
    """200 accepts; otherwise etcd's answer: 412 cluster/version/to mismatch, 410 removed member,
    404 unknown sender."""

    status: int
    reason: str
    frm: int


@dataclass(slots=True)
class SnapAck:
    ok: bool
    reason: str = ""


@dataclass(slots=True)
class Ping:
    sent_ns: int


@dataclass(slots=True)
class Pong:
    sent_ns: int


Frame = Message | Hello | HelloReply | SnapAck | Ping | Pong


def _frame(ftype: int, envelope: bytes, payload: bytes | bytearray | memoryview = b"") -> bytes:
    body_crc = crc32c(payload, crc32c(envelope)) if payload else crc32c(envelope)
    head = _HEAD16.pack(MAGIC, PROTOCOL_VERSION, ftype, len(envelope), len(payload), body_crc)
    if payload:
        return b"".join((head, _U32.pack(crc32c(head)), envelope, payload))
    return b"".join((head, _U32.pack(crc32c(head)), envelope))


def _encode_entries(entries: list[Entry]) -> bytes:
    # One encoder per call: the codec may be used from several threads, and creating one
    # costs less than a microsecond at this capacity (it grows by realloc when needed).
    enc = RecordEncoder(0, 16384)
    enc.add_entries(entries)
    return enc.getvalue()


def _message_parts(m: Message, inline_snapshot: bool) -> tuple[bytes, list[bytes]]:
    parts: list[bytes] = []
    ctx = m.context
    if ctx:
        parts.append(ctx)
    ents = m.entries
    ents_len = 0
    if ents:
        records = _encode_entries(ents)
        ents_len = len(records)
        parts.append(records)
    snap = m.snapshot
    if snap is None:
        snap_env = None
    else:
        meta = snap.meta
        snap_env = [meta.index, meta.term, meta.voters, len(snap.data)]
        if inline_snapshot and snap.data:
            parts.append(snap.data)
    env = orjson.dumps(
        [
            m.type,
            m.to,
            m.frm,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject,
            m.reject_hint,
            len(ctx),
            len(ents),
            ents_len,
            snap_env,
        ]
    )
    return env, parts


def encode_message(m: Message) -> bytes:
    """One FRAME_MESSAGE carrying everything, snapshot data included."""
    env, parts = _message_parts(m, True)
    if not parts:
        return _frame(FRAME_MESSAGE, env)
    return _frame(FRAME_MESSAGE, env, parts[0] if len(parts) == 1 else b"".join(parts))


def encode_snapshot(m: Message, chunk_bytes: int = DEFAULT_SNAPSHOT_CHUNK_BYTES) -> Iterator[bytes]:
    """A MsgSnap as FRAME_SNAP_BEGIN then FRAME_SNAP_CHUNKs of at most chunk_bytes, lazily, so a
    sender that waits for the socket to drain between frames holds one chunk at a time."""
    if m.snapshot is None:
        raise ValueError("encode_snapshot needs a message with a snapshot")
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    env, parts = _message_parts(m, False)
    yield _frame(FRAME_SNAP_BEGIN, env, b"".join(parts))
    data = memoryview(m.snapshot.data)
    for start in range(0, len(data), chunk_bytes):
        yield _frame(FRAME_SNAP_CHUNK, b"", data[start : start + chunk_bytes])


def encode_hello(h: Hello) -> bytes:
    return _frame(FRAME_HELLO, orjson.dumps([h.version, h.cluster_id, h.frm, h.to, h.stream]))


def encode_hello_reply(r: HelloReply) -> bytes:
    return _frame(FRAME_HELLO_REPLY, orjson.dumps([r.status, r.reason, r.frm]))


def encode_snap_ack(a: SnapAck) -> bytes:
    return _frame(FRAME_SNAP_ACK, orjson.dumps([a.ok, a.reason]))


def encode_ping(p: Ping) -> bytes:
    return _frame(FRAME_PING, orjson.dumps(p.sent_ns))


def encode_pong(p: Pong) -> bytes:
    return _frame(FRAME_PONG, orjson.dumps(p.sent_ns))


def encode(frame: Frame) -> bytes:
    """Any frame kind as one buffer (a MsgSnap inline; see encode_snapshot to stream it)."""
    if type(frame) is Message:
        return encode_message(frame)
    if type(frame) is Hello:
        return encode_hello(frame)
    if type(frame) is HelloReply:
        return encode_hello_reply(frame)
    if type(frame) is SnapAck:
        return encode_snap_ack(frame)
    if type(frame) is Ping:
        return encode_ping(frame)
    if type(frame) is Pong:
        return encode_pong(frame)
    raise TypeError(f"cannot encode {type(frame).__name__}")


def _decode_entries(records: memoryview, count: int) -> list[Entry]:
    if len(records) < RECORD_HEADER_SIZE + ENTRY_FIXED_SIZE:
        raise FrameError("entry records too short")
    first_index = _ENTRY.unpack_from(records, RECORD_HEADER_SIZE)[1]
    if first_index:
        dec = RecordDecoder(Entry, HardState, first_index)
        end, status = dec.decode(records)
        if status == RECORDS_END and end == len(records) and len(dec.entries) == count:
            return dec.entries
    return _decode_entries_one_by_one(records, count)


def _decode_entries_one_by_one(records: memoryview, count: int) -> list[Entry]:
    # Entries whose indexes are not consecutive (proposals: index 0) or that the WAL replay
    # rules would merge.  The frame's body crc already covers every record.
    out: list[Entry] = []
    off = 0
    size = len(records)
    while off < size:
        if size - off < RECORD_HEADER_SIZE:
            raise FrameError("truncated entry record")
        length, rtype, _, _ = _RECORD.unpack_from(records, off)
        if rtype != ENTRY_RECORD or length < ENTRY_FIXED_SIZE:
            raise FrameError("bad entry record")
        start = off + RECORD_HEADER_SIZE
        off = start + ((length + 7) & ~7)
        if off > size:
            raise FrameError("truncated entry record")
        term, index, etype = _ENTRY.unpack_from(records, start)
        out.append(Entry(term, index, etype, bytes(records[start + ENTRY_FIXED_SIZE : start + length])))
    if len(out) != count:
        raise FrameError(f"envelope says {count} entries, payload holds {len(out)}")
    return out


class _SnapshotAssembly:
    __slots__ = ("message", "data", "size")

    def __init__(self, message: Message, size: int) -> None:
        self.message = message
        self.size = size
        self.data = bytearray()


class Decoder:
    """Turns a byte stream into frames.  ``feed(chunk)`` returns the frames completed by chunk
    (Message, Hello, HelloReply, SnapAck, Ping, Pong) and raises FrameError on anything
    malformed, after which the Decoder must not be used again."""

    __slots__ = ("max_frame_bytes", "max_snapshot_bytes", "_buf", "_need", "_snap", "_failed")

    def __init__(
        self,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        self._buf = bytearray()
        # Bytes the buffer must hold before parsing is worth trying again: the whole frame
        # once its header is known, so a large frame arriving in many reads is parsed once.
        self._need = HEADER_SIZE
        self._snap: _SnapshotAssembly | None = None
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held: a partial frame plus the snapshot being assembled."""
        return len(self._buf) + (len(self._snap.data) if self._snap is not None else 0)

    @property
    def in_snapshot(self) -> bool:
        return self._snap is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._failed:
            raise FrameError("decoder already failed")
        out: list[Frame] = []
        buf = self._buf
        try:
            if not buf:
                # The common case: whole frames in one read, parsed straight from the chunk.
                used = self._parse(data, out)
                if used < len(data):
                    buf += memoryview(data)[used:]
                return out
            buf += data
            if len(buf) < self._need:
                return out
            used = self._parse(buf, out)
            del buf[:used]
            return out
        except FrameError:
            self._failed = True
            raise

    def _parse(self, data: bytes | bytearray | memoryview, out: list[Frame]) -> int:
        # Every memoryview made here dies when this returns (CPython refcounting), so the
        # caller may resize its bytearray afterwards.
        view = memoryview(data)
        size = len(view)
        off = 0
        while size - off >= HEADER_SIZE:
            magic, version, ftype, env_len, payload_len, body_crc, head_crc = HEADER.unpack_from(view, off)
            if crc32c(view[off : off + 16]) != head_crc:
                raise FrameError("frame header checksum mismatch")
            if magic != MAGIC:
                raise FrameError("not a fastkv peer stream (bad magic)")
            if version != PROTOCOL_VERSION:
                raise FrameError(f"unsupported peer protocol version {version}")
            total = HEADER_SIZE + env_len + payload_len
            if total > self.max_frame_bytes:
                raise FrameTooLarge(f"frame of {total} bytes exceeds the limit of {self.max_frame_bytes}")
            if size - off < total:
                self._need = total
                return off
            env_end = off + HEADER_SIZE + env_len
            env = view[off + HEADER_SIZE : env_end]
            payload = view[env_end : off + total]
            if crc32c(payload, crc32c(env)) != body_crc:
                raise FrameError(f"{FRAME_NAMES.get(ftype, ftype)} frame checksum mismatch")
            off += total
            frame = self._frame(ftype, env, payload)
            if frame is not None:
                out.append(frame)
        self._need = HEADER_SIZE
        return off

    def _frame(self, ftype: int, env: memoryview, payload: memoryview) -> Frame | None:
        if self._snap is not None and ftype != FRAME_SNAP_CHUNK:
            raise FrameError(f"{FRAME_NAMES.get(ftype, ftype)} frame inside a snapshot stream")
        try:
            if ftype == FRAME_MESSAGE:
                return _decode_message(env, payload, True)[0]
            if ftype == FRAME_SNAP_CHUNK:
                return self._chunk(env, payload)
            if ftype == FRAME_SNAP_BEGIN:
                m, size = _decode_message(env, payload, False)
                if m.snapshot is None:
                    raise FrameError("snapshot-begin frame without a snapshot")
                if size > self.max_snapshot_bytes:
                    raise FrameTooLarge(
                        f"snapshot of {size} bytes exceeds the limit of {self.max_snapshot_bytes}"
                    )
                if size == 0:
                    return m
                self._snap = _SnapshotAssembly(m, size)
                return None
            fields = orjson.loads(env)
            if payload:
                raise FrameError(f"unexpected payload in a {FRAME_NAMES.get(ftype, ftype)} frame")
            if ftype == FRAME_HELLO:
                version, cluster_id, frm, to, stream = fields
                if not (_is_u64(version) and _is_u64(cluster_id) and _is_u64(frm) and _is_u64(to)):
                    raise FrameError("malformed hello frame: ids must be unsigned 64-bit integers")
                if type(stream) is not str:
                    raise FrameError("malformed hello frame: the stream is not a string")
                return Hello(cluster_id, frm, to, stream, version)
            if ftype == FRAME_HELLO_REPLY:
                status, reason, frm = fields
                if not (_is_u64(status) and _is_u64(frm) and type(reason) is str):
                    raise FrameError("malformed hello-reply frame")
                return HelloReply(status, reason, frm)
            if ftype == FRAME_SNAP_ACK:
                ok, reason = fields
                if type(ok) is not bool or type(reason) is not str:
                    raise FrameError("malformed snapshot-ack frame")
                return SnapAck(ok, reason)
            if ftype in (FRAME_PING, FRAME_PONG):
                if not _is_u64(fields):
                    raise FrameError(f"malformed {FRAME_NAMES[ftype]} frame")
                return Ping(fields) if ftype == FRAME_PING else Pong(fields)
        except (orjson.JSONDecodeError, TypeError, ValueError) as e:
            if isinstance(e, FrameError):
                raise
            raise FrameError(f"malformed {FRAME_NAMES.get(ftype, ftype)} frame: {e}") from None
        raise FrameError(f"unknown frame type {ftype}")

    def _chunk(self, env: memoryview, payload: memoryview) -> Message | None:
        snap = self._snap
        if snap is None:
            raise FrameError("snapshot chunk outside a snapshot stream")
        if env:
            raise FrameError("snapshot chunk with an envelope")
        if len(snap.data) + len(payload) > snap.size:
            raise FrameError("snapshot chunks exceed the declared snapshot size")
        snap.data += payload
        if len(snap.data) < snap.size:
            return None
        self._snap = None
        m = snap.message
        assert m.snapshot is not None
        m.snapshot.data = bytes(snap.data)
        return m


def _decode_message(env: memoryview, payload: memoryview, inline_snapshot: bool) -> tuple[Message, int]:
    """The message and its snapshot's declared data length (the data itself is left empty
    when not inline: it follows in chunks)."""
    (
        mtype,
        to,
        frm,
        term,
        log_term,
        index,
        commit,
        reject,
        reject_hint,
        ctx_len,
        n_entries,
        ents_len,
        snap_env,
    ) = orjson.loads(env)
    for v in (mtype, to, frm, term, log_term, index, commit, reject_hint, ctx_len, n_entries, ents_len):
        if type(v) is not int or v < 0 or v >= _U64_END:
            raise FrameError("malformed message frame: a field is not an unsigned 64-bit integer")
    if type(reject) is not bool:
        raise FrameError("malformed message frame: reject is not a bool")
    data_len = 0
    if snap_env is not None:
        if type(snap_env) is not list or len(snap_env) != 4:
            raise FrameError("malformed snapshot metadata")
        s_index, s_term, voters, data_len = snap_env
        if not (_is_u64(s_index) and _is_u64(s_term) and _is_u64(data_len)):
            raise FrameError("malformed snapshot metadata")
        if type(voters) is not list or not all(_is_u64(v) for v in voters):
            raise FrameError("malformed snapshot metadata: voters")
    end = ctx_len + ents_len
    if snap_env is not None and inline_snapshot:
        end += data_len
    if end != len(payload):
        raise FrameError("message payload length disagrees with its envelope")
    context = bytes(payload[:ctx_len]) if ctx_len else b""
    if n_entries:
        entries = _decode_entries(payload[ctx_len : ctx_len + ents_len], n_entries)
    elif ents_len:
        raise FrameError("entry bytes without entries")
    else:
        entries = []
    snapshot = None
    if snap_env is not None:
        data = bytes(payload[ctx_len + ents_len :]) if inline_snapshot and data_len else b""
        snapshot = Snapshot(SnapshotMeta(s_index, s_term, voters), data)
    m = Message(
        mtype, to, frm, term, log_term, index, entries, commit, reject, reject_hint, context, snapshot
    )
    return m, data_len
