"""The etcd 3.4/3.5 protobuf messages a data dir holds, decoded by hand (field numbers are etcd's).

- ``walpb.Record`` {1 type int64, 2 crc uint32, 3 data bytes}: one WAL record.
- ``raftpb.Entry`` {1 Type, 2 Term, 3 Index, 4 Data}; ``raftpb.HardState`` {1 term, 2 vote, 3 commit}.
- ``walpb.Snapshot`` {1 index, 2 term (, 3 conf_state in 3.5)}: a snapshot marker in the WAL.
- ``etcdserverpb.Metadata`` {1 NodeID, 2 ClusterID}: the WAL's metadata record.
- ``snappb.Snapshot`` {1 crc uint32, 2 data}: a ``.snap`` file; data is a ``raftpb.Snapshot``
  {1 data (the v2 store's JSON), 2 metadata {1 conf_state {1 voters, 2 learners, ...}, 2 index, 3 term}}.
- ``raftpb.ConfChange`` {1 ID, 2 Type, 3 NodeID, 4 Context}: member add/remove/update; the context is
  the member's JSON.
- ``etcdserverpb.Request`` (the v2 request) {1 ID, 2 Method, 3 Path, 4 Val, 5 Dir, 6 PrevValue,
  7 PrevIndex, 8 PrevExist (optional), 9 Expiration, 10 Wait, 11 Since, 12 Recursive, 13 Sorted,
  14 Quorum, 15 Time, 16 Stream, 17 Refresh (optional)}.
- ``etcdserverpb.InternalRaftRequest``: 1 ID, 2 v2 (a Request), 3..11 and 1000+ the v3 requests,
  1300 ``cluster_version_set`` {1 ver} and 1301 ``cluster_member_attr_set`` {1 member_ID,
  2 member_attributes {1 name, 2 client_urls}} (etcd 3.5's replacements for the v2 PUTs of
  /0/version and /0/members/<id>/attributes).

Normal entries: etcd 3.4 proposes v2 requests as a bare ``Request``, v3 requests wrapped in an
``InternalRaftRequest``.  etcd tells them apart by trying the wrapper first and falling back to a bare
Request when that fails to decode; ``decode_normal_entry`` does the same, with a decoder that fails
where gogo's does (a known field with the wrong wire type, a malformed nested v2 request).
"""

from __future__ import annotations

from dataclasses import dataclass

from .protowire import BYTES, VARINT, Buffer, WireError, as_int64, as_str, expect, fields, read_varint

# walpb record types
METADATA_TYPE, ENTRY_TYPE, STATE_TYPE, CRC_TYPE, SNAPSHOT_TYPE = 1, 2, 3, 4, 5
# raftpb entry types
ENTRY_NORMAL, ENTRY_CONF_CHANGE, ENTRY_CONF_CHANGE_V2 = 0, 1, 2
# raftpb ConfChangeType
CONF_ADD_NODE, CONF_REMOVE_NODE, CONF_UPDATE_NODE, CONF_ADD_LEARNER_NODE = 0, 1, 2, 3

U32 = (1 << 32) - 1


@dataclass(slots=True)
class Record:
    type: int
    crc: int
    data: memoryview


@dataclass(slots=True)
class RaftEntry:
    term: int
    index: int
    type: int
    data: bytes


@dataclass(slots=True)
class HardState:
    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(slots=True)
class WalSnapshot:
    index: int = 0
    term: int = 0


@dataclass(slots=True)
class Metadata:
    node_id: int = 0
    cluster_id: int = 0


@dataclass(slots=True)
class RaftSnapshot:
    data: bytes
    index: int
    term: int
    voters: list[int]
    learners: list[int]


@dataclass(slots=True)
class ConfChange:
    id: int
    type: int
    node_id: int
    context: bytes


@dataclass(slots=True)
class Request:
    """etcd's v2 request as it sits in the Raft log (``etcdserverpb.Request``)."""

    id: int = 0
    method: str = ""
    path: str = ""
    val: str = ""
    dir: bool = False
    prev_value: str = ""
    prev_index: int = 0
    prev_exist: bool | None = None
    expiration: int = 0
    wait: bool = False
    since: int = 0
    recursive: bool = False
    sorted: bool = False
    quorum: bool = False
    time: int = 0
    stream: bool = False
    refresh: bool | None = None


@dataclass(slots=True)
class NormalEntry:
    """What a normal entry carries: a v2 request, or one of 3.5's cluster requests, or a v3 request
    (``v3`` names it; it changes only the v3 backend)."""

    v2: Request | None = None
    cluster_version: str | None = None
    member_attributes: tuple[int, str, list[str]] | None = None
    v3: str | None = None


def _uint(number: int, wire: int, value: object, message: str) -> int:
    expect(number, wire, VARINT, message)
    assert isinstance(value, int)
    return value


def _bytes(number: int, wire: int, value: object, message: str) -> memoryview:
    expect(number, wire, BYTES, message)
    assert isinstance(value, memoryview)
    return value


def decode_record(data: Buffer) -> Record:
    # Fast path for the layout gogo writes (fields 1, 2, 3 with their wire types); anything else takes
    # the general decoder, which refuses what gogo refuses.
    buf = data if isinstance(data, memoryview) else memoryview(data)
    end = len(buf)
    rtype, crc, payload = 0, 0, buf[0:0]
    pos = 0
    while pos < end:
        key = buf[pos]
        if key == 0x08:
            rtype, pos = read_varint(buf, pos + 1)
            rtype = as_int64(rtype)
        elif key == 0x10:
            crc, pos = read_varint(buf, pos + 1)
            if crc > U32:
                raise WireError("walpb.Record: crc does not fit 32 bits")
        elif key == 0x1A:
            length, pos = read_varint(buf, pos + 1)
            if length > end - pos:
                raise WireError(f"field 3: {length} bytes announced, {end - pos} left")
            payload = buf[pos : pos + length]
            pos += length
        else:
            return _decode_record_general(buf)
    return Record(rtype, crc, payload)


def _decode_record_general(data: Buffer) -> Record:
    rtype, crc, payload = 0, 0, memoryview(b"")
    for n, w, v in fields(data):
        if n == 1:
            rtype = as_int64(_uint(n, w, v, "walpb.Record"))
        elif n == 2:
            crc = _uint(n, w, v, "walpb.Record")
            if crc > U32:
                raise WireError("walpb.Record: crc does not fit 32 bits")
        elif n == 3:
            payload = _bytes(n, w, v, "walpb.Record")
    return Record(rtype, crc, payload)


def decode_entry(data: Buffer) -> RaftEntry:
    buf = data if isinstance(data, memoryview) else memoryview(data)
    end = len(buf)
    etype = term = index = 0
    payload = b""
    pos = 0
    while pos < end:
        key = buf[pos]
        if key == 0x08:
            etype, pos = read_varint(buf, pos + 1)
        elif key == 0x10:
            term, pos = read_varint(buf, pos + 1)
        elif key == 0x18:
            index, pos = read_varint(buf, pos + 1)
        elif key == 0x22:
            length, pos = read_varint(buf, pos + 1)
            if length > end - pos:
                raise WireError(f"field 4: {length} bytes announced, {end - pos} left")
            payload = bytes(buf[pos : pos + length])
            pos += length
        else:
            return _decode_entry_general(buf)
    return RaftEntry(term, index, etype, payload)


def _decode_entry_general(data: Buffer) -> RaftEntry:
    etype = term = index = 0
    payload = b""
    for n, w, v in fields(data):
        if n == 1:
            etype = _uint(n, w, v, "raftpb.Entry")
        elif n == 2:
            term = _uint(n, w, v, "raftpb.Entry")
        elif n == 3:
            index = _uint(n, w, v, "raftpb.Entry")
        elif n == 4:
            payload = bytes(_bytes(n, w, v, "raftpb.Entry"))
    return RaftEntry(term, index, etype, payload)


def decode_hard_state(data: Buffer) -> HardState:
    hs = HardState()
    for n, w, v in fields(data):
        if n == 1:
            hs.term = _uint(n, w, v, "raftpb.HardState")
        elif n == 2:
            hs.vote = _uint(n, w, v, "raftpb.HardState")
        elif n == 3:
            hs.commit = _uint(n, w, v, "raftpb.HardState")
    return hs


def decode_wal_snapshot(data: Buffer) -> WalSnapshot:
    snap = WalSnapshot()
    for n, w, v in fields(data):
        if n == 1:
            snap.index = _uint(n, w, v, "walpb.Snapshot")
        elif n == 2:
            snap.term = _uint(n, w, v, "walpb.Snapshot")
    return snap


def decode_metadata(data: Buffer) -> Metadata:
    md = Metadata()
    for n, w, v in fields(data):
        if n == 1:
            md.node_id = _uint(n, w, v, "etcdserverpb.Metadata")
        elif n == 2:
            md.cluster_id = _uint(n, w, v, "etcdserverpb.Metadata")
    return md


def _repeated_uint(w: int, v: object, into: list[int], message: str) -> None:
    """A repeated uint64: one varint per field, or (proto3 style) packed into one bytes field."""
    if w == VARINT:
        assert isinstance(v, int)
        into.append(v)
        return
    if w != BYTES:
        raise WireError(f"{message}: repeated uint64 with wire type {w}")
    assert isinstance(v, memoryview)
    pos = 0
    while pos < len(v):
        x, pos = read_varint(v, pos)
        into.append(x)


def decode_snap_file(data: Buffer) -> tuple[int, memoryview]:
    """(crc, data) of a ``snappb.Snapshot``."""
    crc, payload = 0, memoryview(b"")
    for n, w, v in fields(data):
        if n == 1:
            crc = _uint(n, w, v, "snappb.Snapshot")
        elif n == 2:
            payload = _bytes(n, w, v, "snappb.Snapshot")
    return crc, payload


def decode_raft_snapshot(data: Buffer) -> RaftSnapshot:
    snap = RaftSnapshot(b"", 0, 0, [], [])
    for n, w, v in fields(data):
        if n == 1:
            snap.data = bytes(_bytes(n, w, v, "raftpb.Snapshot"))
        elif n == 2:
            for mn, mw, mv in fields(_bytes(n, w, v, "raftpb.Snapshot")):
                if mn == 1:
                    for cn, cw, cv in fields(_bytes(mn, mw, mv, "raftpb.SnapshotMetadata")):
                        if cn == 1:
                            _repeated_uint(cw, cv, snap.voters, "raftpb.ConfState")
                        elif cn == 2:
                            _repeated_uint(cw, cv, snap.learners, "raftpb.ConfState")
                elif mn == 2:
                    snap.index = _uint(mn, mw, mv, "raftpb.SnapshotMetadata")
                elif mn == 3:
                    snap.term = _uint(mn, mw, mv, "raftpb.SnapshotMetadata")
    return snap


def decode_conf_change(data: Buffer) -> ConfChange:
    cc = ConfChange(0, 0, 0, b"")
    for n, w, v in fields(data):
        if n == 1:
            cc.id = _uint(n, w, v, "raftpb.ConfChange")
        elif n == 2:
            cc.type = _uint(n, w, v, "raftpb.ConfChange")
        elif n == 3:
            cc.node_id = _uint(n, w, v, "raftpb.ConfChange")
        elif n == 4:
            cc.context = bytes(_bytes(n, w, v, "raftpb.ConfChange"))
    return cc


_REQUEST_STRINGS = {2: "method", 3: "path", 4: "val", 6: "prev_value"}
_REQUEST_BOOLS = {5: "dir", 8: "prev_exist", 10: "wait", 12: "recursive", 13: "sorted", 14: "quorum"}
_REQUEST_BOOLS.update({16: "stream", 17: "refresh"})
_REQUEST_UINTS = {1: "id", 7: "prev_index", 11: "since"}
_REQUEST_INTS = {9: "expiration", 15: "time"}


def decode_request(data: Buffer) -> Request:
    # Fast path: every field with the wire type gogo writes; anything else takes the general decoder.
    buf = data if isinstance(data, memoryview) else memoryview(data)
    end = len(buf)
    req = Request()
    pos = 0
    while pos < end:
        key = buf[pos]
        if key == 0x80 or key == 0x88:  # fields 16 and 17: two-byte keys
            if pos + 1 >= end or buf[pos + 1] != 0x01:
                return _decode_request_general(buf)
            value, pos = read_varint(buf, pos + 2)
            if key == 0x80:
                req.stream = value != 0
            else:
                req.refresh = value != 0
            continue
        wire = key & 7
        number = key >> 3
        if wire == VARINT and (name := _REQUEST_VARINT_KEYS.get(number)) is not None:
            if pos + 1 < end and buf[pos + 1] < 0x80:  # most are zeros and false
                value = buf[pos + 1]
                pos += 2
            else:
                value, pos = read_varint(buf, pos + 1)
            if number in _REQUEST_INTS:
                setattr(req, name, as_int64(value))
            elif number in _REQUEST_BOOLS:
                setattr(req, name, value != 0)
            else:
                setattr(req, name, value)
        elif wire == BYTES and (name := _REQUEST_STRINGS.get(number)) is not None:
            length, pos = read_varint(buf, pos + 1)
            if length > end - pos:
                raise WireError(f"field {number}: {length} bytes announced, {end - pos} left")
            setattr(req, name, bytes(buf[pos : pos + length]).decode("utf-8", "replace"))
            pos += length
        else:
            return _decode_request_general(buf)
    return req


_REQUEST_VARINT_KEYS = {**_REQUEST_BOOLS, **_REQUEST_UINTS, **_REQUEST_INTS}


def _decode_request_general(data: Buffer) -> Request:
    req = Request()
    for n, w, v in fields(data):
        if n in _REQUEST_STRINGS:
            setattr(req, _REQUEST_STRINGS[n], as_str(_bytes(n, w, v, "etcdserverpb.Request")))
        elif n in _REQUEST_BOOLS:
            setattr(req, _REQUEST_BOOLS[n], _uint(n, w, v, "etcdserverpb.Request") != 0)
        elif n in _REQUEST_UINTS:
            setattr(req, _REQUEST_UINTS[n], _uint(n, w, v, "etcdserverpb.Request"))
        elif n in _REQUEST_INTS:
            setattr(req, _REQUEST_INTS[n], as_int64(_uint(n, w, v, "etcdserverpb.Request")))
    return req


# InternalRaftRequest fields that are messages (everything but ID): the v3 ones by name.
_V3_FIELDS = {
    3: "range", 4: "put", 5: "delete_range", 6: "txn", 7: "compaction", 8: "lease_grant",
    9: "lease_revoke", 10: "alarm", 11: "lease_checkpoint", 1000: "auth_enable", 1011: "auth_disable",
    1012: "authenticate", 1100: "auth_user_add", 1101: "auth_user_delete", 1102: "auth_user_get",
    1103: "auth_user_change_password", 1104: "auth_user_grant_role", 1105: "auth_user_revoke_role",
    1106: "auth_user_list", 1107: "auth_role_list", 1200: "auth_role_add", 1201: "auth_role_delete",
    1202: "auth_role_get", 1203: "auth_role_grant_permission", 1204: "auth_role_revoke_permission",
    1013: "auth_status", 1302: "downgrade_info_set",
}  # fmt: skip


def _decode_internal(data: Buffer) -> NormalEntry:
    out = NormalEntry()
    for n, w, v in fields(data):
        if n == 1:
            _uint(n, w, v, "InternalRaftRequest")
        elif n == 2:
            out.v2 = decode_request(_bytes(n, w, v, "InternalRaftRequest"))
        elif n == 100:
            _bytes(n, w, v, "InternalRaftRequest")  # the v3 request header
        elif n == 1300:
            ver = ""
            for cn, cw, cv in fields(_bytes(n, w, v, "InternalRaftRequest")):
                if cn == 1:
                    ver = as_str(_bytes(cn, cw, cv, "ClusterVersionSetRequest"))
            out.cluster_version = ver
        elif n == 1301:
            member_id, name, urls = 0, "", []
            for cn, cw, cv in fields(_bytes(n, w, v, "InternalRaftRequest")):
                if cn == 1:
                    member_id = _uint(cn, cw, cv, "ClusterMemberAttrSetRequest")
                elif cn == 2:
                    for an, aw, av in fields(_bytes(cn, cw, cv, "ClusterMemberAttrSetRequest")):
                        if an == 1:
                            name = as_str(_bytes(an, aw, av, "membershippb.Attributes"))
                        elif an == 2:
                            urls.append(as_str(_bytes(an, aw, av, "membershippb.Attributes")))
            out.member_attributes = (member_id, name, urls)
        elif n in _V3_FIELDS:
            _bytes(n, w, v, "InternalRaftRequest")
            out.v3 = _V3_FIELDS[n]
        # Other fields (a later etcd's requests) are skipped, as gogo skips unknown fields; the entry
        # then counts as a request fastkv does not apply.
    return out


# A bare Request's Method, read as the InternalRaftRequest's field 2 (a nested Request), never decodes:
# "PUT"/"POST" hit wire type 4/3 for field 10, "DELETE" wire type 4 for field 8, "QGET" a truncated
# fixed64, "SYNC" wire type 3, "GET" wire type 7.  So a payload that decodes as a Request with one of
# these methods is exactly one whose wrapper decoding fails: etcd's fallback, without the exception.
V2_METHODS = frozenset(("PUT", "POST", "DELETE", "QGET", "SYNC", "GET"))


def decode_normal_entry(data: bytes) -> NormalEntry:
    """A normal entry's payload as etcd's apply reads it (see the module docstring)."""
    try:
        req = decode_request(data)
    except WireError:
        req = None
    if req is not None and req.method in V2_METHODS:
        return NormalEntry(v2=req)
    try:
        return _decode_internal(data)
    except WireError:
        return NormalEntry(v2=decode_request(data))
