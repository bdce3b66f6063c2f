"""The uncommitted tail of an etcd member's Raft log, as fastkv Raft entries.

Entries after the hard state's commit index were not known to be committed on this member, but
some may have been committed (and acknowledged) by the cluster: a follower learns the commit index
only with the leader's next message, and a cluster stopped member by member often leaves the last
entry of a leader change uncommitted on the member stopped last.  etcd keeps such entries in its
log and Raft settles them on the next start; a migrated member does the same, so each entry keeps
its term and index and becomes the fastkv entry that applies the same change:

- an empty normal entry (a new leader's) and a v3 request (which changes only the v3 backend):
  an empty normal entry;
- a v2 request on ``/1``: the same request on the user's tree (``/1/a`` is ``/a``); on ``/0`` or
  ``/2`` (cluster version, v2 auth): an internal request on the full path; SYNC and QGET as they
  are;
- a member's published attributes (3.4's PUT of ``/0/members/<id>/attributes``, 3.5's
  ``cluster_member_attr_set``): a member attributes entry; 3.5's ``cluster_version_set``: the PUT
  of ``/0/version``;
- configuration changes (add, add learner, remove, update): fastkv's configuration change.

The payloads are the ones ``fastkv.server`` proposes (``server/admin.py``, ``server/etcdserver.py``;
this layer sits below the server and does not import it): a configuration change is JSON
``{"op": "add", "member": {...}}``, ``{"op": "remove", "member_id": hex}`` or
``{"op": "update", "member_id": hex, "peerURLs": [...]}``; member attributes are JSON
``{"member_id": hex, "name": ..., "clientURLs": [...]}``.
"""

from __future__ import annotations

import orjson

from fastkv.raft.types import (
    ENTRY_CONF_CHANGE,
    ENTRY_INTERNAL,
    ENTRY_MEMBER_ATTRIBUTES,
    ENTRY_NORMAL,
    Entry,
)
from fastkv.v2store.request import V2Request

from . import etcdpb
from .errors import EtcdDataError
from .protowire import WireError
from .v2json import MEMBERS_DIR, VERSION_KEY, user_key

ATTRIBUTES = "/attributes"


def fastkv_entries(tail: list[etcdpb.RaftEntry]) -> list[Entry]:
    """The fastkv entry for each etcd entry, same term and index.  Raises EtcdDataError."""
    return [_convert(e) for e in tail]


def _convert(e: etcdpb.RaftEntry) -> Entry:
    if e.type == etcdpb.ENTRY_CONF_CHANGE:
        return Entry(e.term, e.index, ENTRY_CONF_CHANGE, orjson.dumps(_conf_change(e)))
    if e.type != etcdpb.ENTRY_NORMAL:
        raise EtcdDataError(f"entry {e.index} has type {e.type}, which etcd 3.4/3.5 never writes")
    if not e.data:
        return Entry(e.term, e.index, ENTRY_NORMAL, b"")
    try:
        ne = etcdpb.decode_normal_entry(e.data)
    except WireError as err:
        raise EtcdDataError(f"entry {e.index}: undecodable request ({err})") from None
    if ne.v2 is not None:
        return _request(e, ne.v2)
    if ne.cluster_version is not None:
        req = V2Request("PUT", VERSION_KEY, value=ne.cluster_version)
        return Entry(e.term, e.index, ENTRY_INTERNAL, req.encode())
    if ne.member_attributes is not None:
        mid, name, urls = ne.member_attributes
        return Entry(e.term, e.index, ENTRY_MEMBER_ATTRIBUTES, _attributes(mid, name, urls))
    return Entry(e.term, e.index, ENTRY_NORMAL, b"")  # a v3 request


def _request(e: etcdpb.RaftEntry, r: etcdpb.Request) -> Entry:
    path = r.path
    if r.method == "PUT" and path.startswith(MEMBERS_DIR + "/") and path.endswith(ATTRIBUTES):
        member = path[len(MEMBERS_DIR) + 1 : -len(ATTRIBUTES)]
        try:
            mid = int(member, 16)
            attrs = orjson.loads(r.val)
            name, urls = str(attrs.get("name", "")), [str(u) for u in attrs.get("clientURLs") or []]
        except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError) as err:
            raise EtcdDataError(f"entry {e.index}: member attributes that do not decode ({err})") from None
        return Entry(e.term, e.index, ENTRY_MEMBER_ATTRIBUTES, _attributes(mid, name, urls))
    user = user_key(path)
    if r.method == "SYNC":
        etype, fastkv_path = ENTRY_NORMAL, path
    elif user is not None:
        etype, fastkv_path = ENTRY_NORMAL, user
    else:
        etype, fastkv_path = ENTRY_INTERNAL, path
    req = v2_request(r, fastkv_path)
    return Entry(e.term, e.index, etype, req.encode())


def v2_request(r: etcdpb.Request, path: str) -> V2Request:
    """etcd's v2 request as fastkv's, on ``path``."""
    return V2Request(
        r.method,
        path,
        id=r.id,
        value=r.val,
        dir=r.dir,
        prev_value=r.prev_value,
        prev_index=r.prev_index,
        prev_exist=r.prev_exist,
        expiration=r.expiration,
        recursive=r.recursive,
        sorted=r.sorted,
        time=r.time,
        refresh=r.refresh,
        quorum=r.quorum,
    )


def _attributes(member_id: int, name: str, client_urls: list[str]) -> bytes:
    return orjson.dumps({"member_id": f"{member_id:x}", "name": name, "clientURLs": client_urls})


def _conf_change(e: etcdpb.RaftEntry) -> dict[str, object]:
    try:
        cc = etcdpb.decode_conf_change(e.data)
    except WireError as err:
        raise EtcdDataError(f"entry {e.index}: undecodable configuration change ({err})") from None
    member_id = f"{cc.node_id:x}"
    if cc.type == etcdpb.CONF_REMOVE_NODE:
        return {"op": "remove", "member_id": member_id}
    try:
        m = orjson.loads(cc.context)
        peer_urls = [str(u) for u in m.get("peerURLs") or []]
        client_urls = [str(u) for u in m.get("clientURLs") or []]
        name = str(m.get("name") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError) as err:
        raise EtcdDataError(
            f"entry {e.index}: configuration change context is not a member ({err})"
        ) from None
    if cc.type == etcdpb.CONF_UPDATE_NODE:
        return {"op": "update", "member_id": member_id, "peerURLs": peer_urls}
    if cc.type in (etcdpb.CONF_ADD_NODE, etcdpb.CONF_ADD_LEARNER_NODE):
        member = {"id": member_id, "name": name, "peerURLs": peer_urls, "clientURLs": client_urls}
        return {"op": "add", "member": member}
    raise EtcdDataError(f"entry {e.index}: configuration change of unknown type {cc.type}")
