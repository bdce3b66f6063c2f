"""The readers on synthetic input: every truncation, every flipped payload bit, the message shapes.

The encoder here is a test twin written from the format description in docs/migration.md; the real
files etcd writes are covered by test_against_etcd.py and test_refusals.py.
"""

from __future__ import annotations

import os

import pytest

from fastkv._native.crc32c import crc32c
from fastkv.migrate import etcdwal
from fastkv.migrate.errors import EtcdDataError
from fastkv.migrate.etcdpb import (
    CRC_TYPE,
    ENTRY_TYPE,
    METADATA_TYPE,
    SNAPSHOT_TYPE,
    STATE_TYPE,
    decode_normal_entry,
    decode_request,
)
from fastkv.migrate.protowire import WireError, fields, read_varint
from fastkv.migrate.v2json import parse_go_time

# ----- a tiny protobuf encoder ---------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def fb(num: int, data: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(data)) + data


def request(method: str, path: str, **kw: int | str) -> bytes:
    out = fv(1, 77) + fb(2, method.encode()) + fb(3, path.encode())
    out += fb(4, str(kw.get("val", "")).encode()) + fv(5, 0) + fb(6, b"") + fv(7, 0)
    for num in (9, 10, 11, 12, 13, 14, 15, 16):
        out += fv(num, int(kw.get(str(num), 0)))
    return out


# ----- protowire -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63, 2**64 - 1])
def test_varint_round_trip(n: int) -> None:
    assert read_varint(memoryview(varint(n)), 0) == (n, len(varint(n)))


@pytest.mark.parametrize(
    "data",
    [b"\x80", b"\xff" * 10 + b"\x01", b"\x08", b"\x12\x05abc", b"\x0b", b"\x0c", b"\x00\x01", b"\x09abc"],
)
def test_malformed_fields(data: bytes) -> None:
    with pytest.raises(WireError):
        list(fields(data))


def test_request_fields() -> None:
    raw = request("PUT", "/1/k", val="v", **{"9": -5 & ((1 << 64) - 1), "15": 123})
    raw += fv(8, 1) + fv(17, 1)
    req = decode_request(raw)
    assert (req.id, req.method, req.path, req.val) == (77, "PUT", "/1/k", "v")
    assert (req.expiration, req.time, req.prev_exist, req.refresh) == (-5, 123, True, True)
    assert decode_request(request("PUT", "/1/k")).prev_exist is None


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "QGET", "SYNC"])
def test_bare_v2_request_is_not_taken_for_a_wrapper(method: str) -> None:
    ne = decode_normal_entry(request(method, "/1/x", val="y"))
    assert ne.v2 is not None and ne.v2.method == method and ne.v3 is None


def test_wrapped_requests() -> None:
    wrapped = decode_normal_entry(fv(1, 9) + fb(2, request("PUT", "/1/w", val="z")))
    assert wrapped.v2 is not None and wrapped.v2.path == "/1/w"
    put = decode_normal_entry(fb(100, fv(1, 1)) + fv(1, 10) + fb(4, fb(1, b"k") + fb(2, b"v")))
    assert put.v3 == "put" and put.v2 is None
    version = decode_normal_entry(fv(1, 11) + fb(1300, fb(1, b"3.5.0")))
    assert version.cluster_version == "3.5.0"
    attrs = decode_normal_entry(fv(1, 12) + fb(1301, fv(1, 0xABC) + fb(2, fb(1, b"n1") + fb(2, b"http://c"))))
    assert attrs.member_attributes == (0xABC, "n1", ["http://c"])


# ----- WAL segments --------------------------------------------------------------------------------


def frame(rtype: int, data: bytes, crc: int) -> bytes:
    rec = fv(1, rtype) + fv(2, crc) + fb(3, data)
    pad = (8 - len(rec) % 8) % 8
    word = len(rec) | ((0x80 | pad) << 56 if pad else 0)
    return word.to_bytes(8, "little") + rec + bytes(pad)


def entry(term: int, index: int, payload: bytes) -> bytes:
    return fv(1, 0) + fv(2, term) + fv(3, index) + fb(4, payload)


class Segment:
    def __init__(self, crc: int = 0) -> None:
        self.crc = crc
        self.buf = frame(CRC_TYPE, b"", crc)
        self.ends = [len(self.buf)]

    def add(self, rtype: int, data: bytes) -> None:
        self.crc = crc32c(data, self.crc)
        self.buf += frame(rtype, data, self.crc)
        self.ends.append(len(self.buf))


def standard_segment() -> Segment:
    seg = Segment()
    seg.add(METADATA_TYPE, fv(1, 0x1111) + fv(2, 0x2222))
    seg.add(SNAPSHOT_TYPE, b"")
    for i in range(1, 6):
        seg.add(ENTRY_TYPE, entry(2, i, request("PUT", f"/1/key{i}", val=f"value-{i}")))
        seg.add(STATE_TYPE, fv(1, 2) + fv(2, 0x1111) + fv(3, i))
    return seg


def write(dir_: str, name: str, data: bytes, fill: int = 4096) -> str:
    os.makedirs(dir_, exist_ok=True)
    path = os.path.join(dir_, name)
    with open(path, "wb") as f:
        f.write(data + bytes(fill))
    return path


def test_whole_segment(tmp_path: object) -> None:
    seg = standard_segment()
    d = os.path.join(str(tmp_path), "wal")
    write(d, "0000000000000000-0000000000000000.wal", seg.buf)
    wal = etcdwal.read_from(etcdwal.scan(d), etcdwal.WalSnapshot(0, 0))
    assert [e.index for e in wal.entries] == [1, 2, 3, 4, 5]
    assert (wal.metadata.node_id, wal.metadata.cluster_id) == (0x1111, 0x2222)
    assert wal.hard_state.commit == 5 and wal.torn is None


def test_last_segment_cut_at_every_offset(tmp_path: object) -> None:
    """A crash may cut the last segment anywhere: what remains is always a prefix of the records."""
    seg = standard_segment()
    d = os.path.join(str(tmp_path), "wal")
    for cut in range(1, len(seg.buf)):
        path = write(d, "0000000000000000-0000000000000000.wal", seg.buf[:cut], fill=0)
        scan = etcdwal.scan(d)
        whole = sum(1 for end in seg.ends if end <= cut)
        assert len(scan.records) == whole
        assert (scan.torn is None) == (cut in seg.ends)
        os.unlink(path)


def test_flipped_payload_bit_is_refused(tmp_path: object) -> None:
    seg = standard_segment()
    d = os.path.join(str(tmp_path), "wal")
    starts = [0, *seg.ends[:-1]]
    for start, end in zip(starts[1:], seg.ends[1:], strict=True):
        word = int.from_bytes(seg.buf[start : start + 8], "little")
        length = word & ((1 << 56) - 1)
        for pos in range(start + 8, start + 8 + length):  # the record, not its length word or padding
            damaged = bytearray(seg.buf)
            damaged[pos] ^= 0x04
            write(d, "0000000000000000-0000000000000000.wal", bytes(damaged))
            # The crc covers a record's data, not its type (etcd's format): a type flipped to another
            # known type passes the scan and is caught when the records are interpreted.
            with pytest.raises(EtcdDataError, match="corrupt|no metadata record"):
                etcdwal.read_from(etcdwal.scan(d), etcdwal.WalSnapshot(0, 0))
        assert end > start


def test_torn_record_before_the_last_segment_is_refused(tmp_path: object) -> None:
    first = standard_segment()
    second = Segment(first.crc)
    second.add(ENTRY_TYPE, entry(2, 6, request("PUT", "/1/six")))
    d = os.path.join(str(tmp_path), "wal")
    write(d, "0000000000000000-0000000000000000.wal", first.buf[: first.ends[-1] - 3], fill=0)
    write(d, "0000000000000001-0000000000000006.wal", second.buf)
    with pytest.raises(EtcdDataError, match="the WAL is corrupt"):
        etcdwal.scan(d)


def test_crc_chain_across_segments(tmp_path: object) -> None:
    first = standard_segment()
    second = Segment(first.crc ^ 1)  # does not continue the chain
    d = os.path.join(str(tmp_path), "wal")
    write(d, "0000000000000000-0000000000000000.wal", first.buf)
    write(d, "0000000000000001-0000000000000006.wal", second.buf)
    with pytest.raises(EtcdDataError, match="does not continue the chain"):
        etcdwal.scan(d)


def test_overwritten_tail_and_gap(tmp_path: object) -> None:
    seg = standard_segment()
    seg.add(ENTRY_TYPE, entry(3, 3, request("PUT", "/1/new3")))  # a new leader's entry 3
    d = os.path.join(str(tmp_path), "wal")
    write(d, "0000000000000000-0000000000000000.wal", seg.buf)
    wal = etcdwal.read_from(etcdwal.scan(d), etcdwal.WalSnapshot(0, 0))
    assert [(e.index, e.term) for e in wal.entries] == [(1, 2), (2, 2), (3, 3)]
    seg.add(ENTRY_TYPE, entry(3, 9, request("PUT", "/1/nine")))
    write(d, "0000000000000000-0000000000000000.wal", seg.buf)
    with pytest.raises(EtcdDataError, match="entries are missing"):
        etcdwal.read_from(etcdwal.scan(d), etcdwal.WalSnapshot(0, 0))


def test_snapshot_must_be_recorded(tmp_path: object) -> None:
    d = os.path.join(str(tmp_path), "wal")
    write(d, "0000000000000000-0000000000000000.wal", standard_segment().buf)
    with pytest.raises(EtcdDataError, match="does not record the snapshot at index 3"):
        etcdwal.read_from(etcdwal.scan(d), etcdwal.WalSnapshot(3, 2))


# ----- Go times ------------------------------------------------------------------------------------


def test_go_times() -> None:
    assert parse_go_time("0001-01-01T00:00:00Z") == 0
    assert parse_go_time("1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_go_time("2026-12-03T19:46:53.715034784Z") == 1796327213715034784
    assert parse_go_time("2026-12-03T20:46:53.7+01:00") == 1796327213700000000
    with pytest.raises(ValueError):
        parse_go_time("yesterday")


def test_etcd35_cluster_requests_replay_as_34_writes(tmp_path: object) -> None:
    """A 3.5-style log: the bootstrap member add, then the member's attributes and the cluster version
    as InternalRaftRequests (3.4 wrote them as v2 PUTs), then a user write and a v3 put."""
    import json

    from fastkv.migrate.datadir import read_data_dir

    member_id = 0xBDAE9BBC11DD390D
    context = json.dumps({"id": member_id, "peerURLs": ["http://127.0.0.1:2380"], "name": "n1"}).encode()
    conf_change = fv(1, 0) + fv(2, 0) + fv(3, member_id) + fb(4, context)
    attrs = fv(1, 5) + fb(1301, fv(1, member_id) + fb(2, fb(1, b"n1") + fb(2, b"http://127.0.0.1:2379")))
    version = fv(1, 6) + fb(1300, fb(1, b"3.5.0"))
    v3_put = fb(100, fv(1, 7)) + fv(1, 7) + fb(4, fb(1, b"k") + fb(2, b"v"))
    seg = Segment()
    seg.add(METADATA_TYPE, fv(1, member_id) + fv(2, 0x2222))
    seg.add(SNAPSHOT_TYPE, b"")
    payloads = [
        (1, conf_change),
        (0, attrs),
        (0, version),
        (0, request("PUT", "/1/user", val="u")),
        (0, v3_put),
    ]
    for i, (etype, payload) in enumerate(payloads, start=1):
        seg.add(ENTRY_TYPE, fv(1, etype) + fv(2, 2) + fv(3, i) + fb(4, payload))
    seg.add(STATE_TYPE, fv(1, 2) + fv(2, member_id) + fv(3, len(payloads)))
    data_dir = os.path.join(str(tmp_path), "etcd")
    write(os.path.join(data_dir, "member", "wal"), "0000000000000000-0000000000000000.wal", seg.buf)
    state = read_data_dir(data_dir)
    assert state.store.index == 4  # raftAttributes, attributes, version, /1/user
    assert state.cluster_version == "3.5.0"
    assert [(m.id, m.name, m.peer_urls, m.client_urls) for m in state.members] == [
        (member_id, "n1", ["http://127.0.0.1:2380"], ["http://127.0.0.1:2379"])
    ]
    node = state.store.tree.find(f"/0/members/{member_id:x}/attributes")
    assert node.value == '{"name":"n1","clientURLs":["http://127.0.0.1:2379"]}'
    assert state.store.tree.find("/1/user").value == "u"
    assert state.v3_entries == 1 and state.cluster_id == 0x2222


def test_conf_changes_etcd_would_refuse_are_skipped(tmp_path: object) -> None:
    """Committed but refused at apply by etcd's validation: a second add of an id, an add reusing
    another member's peer URL, a removal of an unknown id."""
    import json

    from fastkv.migrate.datadir import read_data_dir

    def add(member_id: int, url: str) -> bytes:
        ctx = json.dumps({"id": member_id, "peerURLs": [url]}).encode()
        return fv(1, 0) + fv(2, 0) + fv(3, member_id) + fb(4, ctx)

    changes = [add(1, "http://a"), add(1, "http://b"), add(2, "http://a"), fv(2, 1) + fv(3, 3)]
    seg = Segment()
    seg.add(METADATA_TYPE, fv(1, 1) + fv(2, 9))
    seg.add(SNAPSHOT_TYPE, b"")
    for i, cc in enumerate(changes, start=1):
        seg.add(ENTRY_TYPE, fv(1, 1) + fv(2, 2) + fv(3, i) + fb(4, cc))
    seg.add(STATE_TYPE, fv(1, 2) + fv(3, len(changes)))
    data_dir = os.path.join(str(tmp_path), "etcd")
    write(os.path.join(data_dir, "member", "wal"), "0000000000000000-0000000000000000.wal", seg.buf)
    state = read_data_dir(data_dir)
    assert [(m.id, m.peer_urls) for m in state.members] == [(1, ["http://a"])]
    assert state.removed == [] and state.store.index == 1
