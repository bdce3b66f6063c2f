"""The entries after an etcd member's commit index are kept in the migrated member's Raft log, so a
write the cluster committed (and acknowledged) before this member heard of it is not lost."""

from __future__ import annotations

import io
import json
import os

import orjson
import pytest

from fastkv.cli.main import run
from fastkv.migrate.datadir import read_data_dir
from fastkv.migrate.etcdpb import ENTRY_TYPE, METADATA_TYPE, SNAPSHOT_TYPE, STATE_TYPE
from fastkv.raft.types import ENTRY_CONF_CHANGE, ENTRY_INTERNAL, ENTRY_MEMBER_ATTRIBUTES, ENTRY_NORMAL
from fastkv.storage.wal import WAL
from fastkv.v2store.request import V2Request
from tests.migrate.etcdhistory import http
from tests.migrate.test_decoders import Segment, fb, fv, request, write
from tests.support.procs import start_server

MEMBER = 0xBDAE9BBC11DD390D
OTHER = 0x2A
CLUSTER = 0x2222
COMMITTED = 4  # entries 1-4 committed, 5-11 the tail


def _conf_change(kind: int, member_id: int, context: dict[str, object] | None) -> tuple[int, bytes]:
    cc = fv(1, 0) + fv(2, kind) + fv(3, member_id)
    if context is not None:
        cc += fb(4, json.dumps(context).encode())
    return 1, cc


def _etcd_dir(base: str, membership_changes: bool = True) -> str:
    """A member's log: bootstrap add, attributes, two writes committed; then, uncommitted, a new
    leader's empty entry, a write, a delete, new attributes, a v3 put, and (``membership_changes``)
    an add and a removal."""
    attrs = {"name": "n1", "clientURLs": ["http://127.0.0.1:2379"]}
    payloads: list[tuple[int, int, bytes]] = [
        (2, *_conf_change(0, MEMBER, {"id": MEMBER, "peerURLs": ["http://127.0.0.1:2380"], "name": "n1"})),
        (2, 0, request("PUT", f"/0/members/{MEMBER:x}/attributes", val=json.dumps(attrs))),
        (2, 0, request("PUT", "/1/a", val="committed")),
        (2, 0, request("PUT", "/1/b", val="committed too")),
        (3, 0, b""),
        (3, 0, request("PUT", "/1/tail", val="acknowledged by the leader")),
        (3, 0, request("DELETE", "/1/a")),
        (3, 0, request("PUT", f"/0/members/{MEMBER:x}/attributes", val=json.dumps({**attrs, "name": "n1b"}))),
        (3, 0, fb(100, fv(1, 7)) + fv(1, 7) + fb(4, fb(1, b"k") + fb(2, b"v"))),
        (3, *_conf_change(0, OTHER, {"id": OTHER, "peerURLs": ["http://127.0.0.1:2390"], "name": "n2"})),
        (3, *_conf_change(1, OTHER, None)),
    ]
    if not membership_changes:
        payloads = payloads[:-2]
    seg = Segment()
    seg.add(METADATA_TYPE, fv(1, MEMBER) + fv(2, CLUSTER))
    seg.add(SNAPSHOT_TYPE, b"")
    for i, (term, etype, payload) in enumerate(payloads, start=1):
        seg.add(ENTRY_TYPE, fv(1, etype) + fv(2, term) + fv(3, i) + fb(4, payload))
    seg.add(STATE_TYPE, fv(1, 3) + fv(2, MEMBER) + fv(3, COMMITTED))
    data_dir = os.path.join(base, "etcd")
    write(os.path.join(data_dir, "member", "wal"), "0000000000000000-0000000000000000.wal", seg.buf)
    return data_dir


def test_the_tail_becomes_fastkv_entries(tmp_path: object) -> None:
    state = read_data_dir(_etcd_dir(str(tmp_path)))
    assert state.commit_index == state.applied_index == COMMITTED
    assert state.uncommitted_entries == len(state.tail) == 7
    assert [(e.term, e.index) for e in state.tail] == [(3, i) for i in range(5, 12)]
    empty, put, delete, attrs, v3, add, remove = state.tail
    assert (empty.type, empty.data) == (ENTRY_NORMAL, b"")
    assert put.type == ENTRY_NORMAL
    req = V2Request.decode(put.data)
    assert (req.method, req.path, req.value) == ("PUT", "/tail", "acknowledged by the leader")
    assert delete.type == ENTRY_NORMAL and V2Request.decode(delete.data).path == "/a"
    assert attrs.type == ENTRY_MEMBER_ATTRIBUTES
    assert orjson.loads(attrs.data) == {
        "member_id": f"{MEMBER:x}",
        "name": "n1b",
        "clientURLs": ["http://127.0.0.1:2379"],
    }
    assert (v3.type, v3.data) == (ENTRY_NORMAL, b"")
    assert add.type == ENTRY_CONF_CHANGE
    assert orjson.loads(add.data) == {
        "op": "add",
        "member": {"id": f"{OTHER:x}", "name": "n2", "peerURLs": ["http://127.0.0.1:2390"], "clientURLs": []},
    }
    assert orjson.loads(remove.data) == {"op": "remove", "member_id": f"{OTHER:x}"}
    # Nothing of the tail is applied by the migration itself.
    assert state.store.tree.find("/1/a").value == "committed"


def test_internal_paths_stay_internal(tmp_path: object) -> None:
    seg = Segment()
    seg.add(METADATA_TYPE, fv(1, MEMBER) + fv(2, CLUSTER))
    seg.add(SNAPSHOT_TYPE, b"")
    context = {"id": MEMBER, "peerURLs": ["http://127.0.0.1:2380"], "name": "n1"}
    entries = [_conf_change(0, MEMBER, context), (0, request("PUT", "/0/version", val="3.4.0"))]
    for i, (etype, payload) in enumerate(entries, start=1):
        seg.add(ENTRY_TYPE, fv(1, etype) + fv(2, 2) + fv(3, i) + fb(4, payload))
    seg.add(STATE_TYPE, fv(1, 2) + fv(2, MEMBER) + fv(3, 1))
    data_dir = os.path.join(str(tmp_path), "etcd")
    write(os.path.join(data_dir, "member", "wal"), "0000000000000000-0000000000000000.wal", seg.buf)
    (version,) = read_data_dir(data_dir).tail
    assert version.type == ENTRY_INTERNAL
    assert V2Request.decode(version.data).path == "/0/version"


@pytest.mark.timeout(120)
def test_a_migrated_member_commits_the_tail(tmp_path: object) -> None:
    """Alone in its cluster, the migrated member becomes the leader and commits the tail, as etcd
    would on restart: its store shows the write, the delete and the new attributes."""
    base = str(tmp_path)
    # Without the add and the removal: alone, the member could not commit past an add of a member
    # that never starts.
    source = _etcd_dir(base, membership_changes=False)
    out, err = io.StringIO(), io.StringIO()
    code = run(["migrate", "--from-etcd-data-dir", source, "--data-dir", os.path.join(base, "data")],
               stdout=out, stderr=err, env=dict(os.environ))  # fmt: skip
    assert code == 0, err.getvalue()
    assert "5 uncommitted entries kept in the Raft log" in out.getvalue()
    wal = WAL.open(os.path.join(base, "data", "member", "wal"), snap_index=COMMITTED)
    try:
        _, hard_state, entries = wal.read_all()
    finally:
        wal.close()
    assert hard_state.commit == COMMITTED
    assert [(e.term, e.index, e.type, e.data) for e in entries] == [
        (e.term, e.index, e.type, e.data) for e in read_data_dir(source).tail
    ]

    srv = start_server("fastkv", data_dir=base, name="n1")
    try:
        status, _, body = http("GET", srv.url + "/v2/keys/tail")
        assert status == 200 and json.loads(body)["node"]["value"] == "acknowledged by the leader"
        assert json.loads(body)["node"]["modifiedIndex"] == 5  # etcd's store indexes: 1-4, then the tail
        assert http("GET", srv.url + "/v2/keys/a")[0] == 404
        assert json.loads(http("GET", srv.url + "/v2/keys/b")[2])["node"]["value"] == "committed too"
    finally:
        srv.stop()
