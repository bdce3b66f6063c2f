"""The applier: committed entries in, state changes and answers out (etcd's applyAll / ApplierV2).

It owns the applied state: the v2 store, the membership, and the applied index and term, and it
prepares the RocksDB batch that holds each round's effects.  It knows nothing of Raft's progress,
the WAL, threads or sockets: what applying an entry means for the rest of the member (a voter to
add to Raft, peers to dial, this member removed or published) is told to an ``ApplyListener``.

Rules:
- Entries are applied in log order, one at a time, on the event loop; the same entries give the
  same state on every member.  Time comes from the log (docs/design.md, "Time"): the applied state's
  cluster time ``time_ns`` is the newest stamp the leader put on an entry (never backwards: an older
  stamp after a newer one leaves it), every TTL becomes ``time_ns + ttl``, every SYNC expires what is
  due at ``time_ns``, and the events' ttl views are computed at ``time_ns``.  The wall clock passed
  in (``now_ns``) is only used while no stamp was ever applied (a log written before stamps).
- A request's answer goes to its waiter, if this member has one: ``done(event, None)`` or
  ``done(None, V2Error)``.  A store error leaves the state (and the index) unchanged.
- Configuration takes effect on apply (etcd's rule): membership changes are made here and then
  reported to the listener, which changes Raft's voters and the transport's peers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import orjson

from ..histogram import Histogram
from ..logutil import event
from ..raft.types import (
    ENTRY_CONF_CHANGE,
    ENTRY_INTERNAL,
    ENTRY_MEMBER_ATTRIBUTES,
    ENTRY_MIRROR,
    ENTRY_NORMAL,
    Entry,
)
from ..storage import failpoint
from ..storage.backend import Backend, Batch
from ..v2store.errors import INVALID_FIELD, ROOT_RONLY, V2Error
from ..v2store.mirror import apply_mirror, refuses_user_writes
from ..v2store.request import V2Request
from ..v2store.store import Store
from .membership import Member, Membership
from .wait import Wait, Waiter

log = logging.getLogger("fastkv.etcdserver")

# etcd's cluster namespace in the v2 store (membership, cluster version).
CLUSTER_NAMESPACE = "0"
MEMBERS = "/0/members"
REMOVED_MEMBERS = "/0/removed_members"
CLUSTER_VERSION_PATH = "/0/version"


def _go_json(obj: Any) -> str:
    """encoding/json of a small struct of strings and string lists, with Go's escaping of <, > and &."""
    return orjson.dumps(obj).decode().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# fastkv_apply_duration_seconds: 10 us to about 5 s.
APPLY_BUCKETS_S = tuple(0.00001 * 2**i for i in range(20))


class ApplyListener(Protocol):
    """What applying committed entries tells the rest of the member."""

    def voter_added(self, member_id: int) -> None: ...

    def voter_removed(self, member_id: int) -> None: ...

    def peers_changed(self) -> None: ...

    def self_removed(self) -> None: ...

    def self_published(self) -> None: ...

    def member_published(self, member_id: int) -> None: ...

    def stamp_applied(self, stamp_ns: int) -> None:
        """The newest entry stamp of a round."""
        ...


class _Replay:
    """The listener while a member replays its log at start: Raft and peers do not exist yet (they
    are built from the replayed membership); only a removal of this member must be remembered."""

    def voter_added(self, member_id: int) -> None:
        pass

    def voter_removed(self, member_id: int) -> None:
        pass

    def peers_changed(self) -> None:
        pass

    def self_removed(self) -> None:
        pass

    def self_published(self) -> None:
        pass

    def member_published(self, member_id: int) -> None:
        pass

    def stamp_applied(self, stamp_ns: int) -> None:
        pass


class ApplierV2:
    def __init__(self, member_id: int, store: Store, membership: Membership, backend: Backend) -> None:
        self.member_id = member_id
        self.store = store
        self.membership = membership
        self.backend = backend
        # The last entry applied to the store (and handed to RocksDB in that round's batch).
        # Ahead of raft.log.applied, which moves only when the Ready is advanced.
        self.applied_index = 0
        self.applied_term = 0
        # This member's client URLs as it publishes them (a published entry that matches is ours).
        self.client_urls: list[str] = []
        self.listener: ApplyListener = _Replay()
        self.apply_seconds = Histogram(APPLY_BUCKETS_S)
        self._membership_changed = False
        # Why user writes are refused (the store follows a mirror source), or None: checked per write.
        self.mirror_refusal = refuses_user_writes(store)
        # The applied state's cluster time (unix ns; 0 = no stamp applied yet), kept with it in RocksDB.
        self.time_ns = backend.meta().cluster_time_ns
        # The newest stamp of the round being applied (0: none).
        self._round_stamp = 0

    def apply(
        self, entries: list[Entry], now_ns: int, wait: Wait, loop: asyncio.AbstractEventLoop | None
    ) -> Batch:
        """Apply entries in order, answering their waiters; returns the RocksDB batch of the round.

        With a ``loop``, the round's watch events are delivered only when the loop runs its next
        queued callback, so the writes' answers (queued as the waiters resolve) go out first."""
        failpoint.hit("before_apply")
        started = time.perf_counter()
        store = self.store
        time_before = self.time_ns
        self._round_stamp = 0
        if loop is not None and store.hub.count > 0:
            store.hub.hold()
            try:
                self._apply_entries(entries, now_ns, wait)
            finally:
                loop.call_soon(store.hub.release)
        else:
            self._apply_entries(entries, now_ns, wait)
        membership_changed, self._membership_changed = self._membership_changed, False
        self.apply_seconds.observe(time.perf_counter() - started)
        last = entries[-1]
        self.applied_index, self.applied_term = last.index, last.term
        if self._round_stamp:
            self.listener.stamp_applied(self._round_stamp)
        return self.backend.prepare(
            store.take_changes(),
            last.index,
            last.term,
            self.membership.save() if membership_changed else None,
            self.time_ns if self.time_ns != time_before else None,
        )

    @staticmethod
    def _request(w: Waiter | None, e: Entry) -> V2Request:
        """The request an entry carries: this member's own object when it waits for it (it need not be
        decoded again), with the stamp the leader gave the entry if it was made unstamped."""
        if w is None or w.req is None:
            return V2Request.decode(e.data)
        req = w.req
        if not req.time:
            req.time = V2Request.peek_time(e.data)
        return req

    def _stamp(self, req: V2Request, wall_ns: int) -> int:
        """The cluster time ``req`` applies at: its stamp moves the applied state's time forward."""
        t = req.time
        if t:
            if t > self._round_stamp:
                self._round_stamp = t
            if t > self.time_ns:
                self.time_ns = t
        now = self.time_ns or wall_ns
        if req.method == "SYNC":
            req.time = now  # what is due at the applied state's time, never less
        return now

    def _apply_entries(self, entries: list[Entry], wall_ns: int, wait: Wait) -> None:
        store = self.store
        for e in entries:
            etype = e.type
            if etype == ENTRY_NORMAL:
                if not e.data:
                    continue  # a new leader's empty entry
                w = wait.take(V2Request.peek_id(e.data))
                req = self._request(w, e)
                now = self._stamp(req, wall_ns)
                if self.mirror_refusal is not None and req.method != "QGET":
                    # A mirror: the source's events are its only writes, its expire events its expiry.
                    if w is not None:
                        w.done(None, V2Error(ROOT_RONLY, self.mirror_refusal, store.index))
                    continue
                try:
                    result = store.apply(req, now)
                except V2Error as err:
                    if w is not None:
                        w.done(None, err)
                    continue
                if w is not None:
                    w.done(result, None)
            elif etype == ENTRY_INTERNAL:
                w = wait.take(V2Request.peek_id(e.data))
                req = self._request(w, e)
                now = self._stamp(req, wall_ns)
                try:
                    result = store.apply_internal(req, now)
                except V2Error as err:
                    if w is not None:
                        w.done(None, err)
                    continue
                if w is not None:
                    w.done(result, None)
            elif etype == ENTRY_MIRROR:
                self._apply_mirror(e, self.time_ns or wall_ns, wait)
            elif etype == ENTRY_CONF_CHANGE:
                self._apply_conf_change(e, wait)
                self._membership_changed = True
            elif etype == ENTRY_MEMBER_ATTRIBUTES and self._apply_attributes(e):
                self._membership_changed = True

    def _apply_mirror(self, e: Entry, now: int, wait: Wait) -> None:
        """A mirror batch (v2store/mirror.py); its answer is the mirror state after it."""
        payload = orjson.loads(e.data)
        w = wait.take(payload.get("request_id", 0))
        try:
            try:
                state = apply_mirror(self.store, payload["batch"], now)
            except (KeyError, TypeError, ValueError, IndexError) as bad:
                # The same on every member: the batch's checks run before anything changes.
                raise V2Error(
                    INVALID_FIELD, f"mirror: malformed batch ({bad!r:.200})", self.store.index
                ) from None
        except V2Error as err:
            if w is not None:
                w.done(None, err)
            return
        self.mirror_refusal = refuses_user_writes(self.store)
        if w is not None:
            w.done(state, None)  # type: ignore[arg-type]

    def _apply_conf_change(self, e: Entry, wait: Wait) -> None:
        cc = orjson.loads(e.data)
        op = cc["op"]
        listener = self.listener
        now = 0  # these writes carry no TTL: the time does not enter the state
        if op == "add":
            added = Member.from_dict(cc["member"])
            self.membership.add(added)
            self._record(V2Request("PUT", f"{MEMBERS}/{added.id:x}/raftAttributes",
                                   value=_go_json({"peerURLs": added.peer_urls}), prev_exist=False), now)  # fmt: skip
            listener.voter_added(added.id)
            listener.peers_changed()
        elif op == "remove":
            removed_id = int(cc["member_id"], 16)
            self.membership.members.pop(removed_id, None)
            self.membership.removed.add(removed_id)
            self._record(V2Request("DELETE", f"{MEMBERS}/{removed_id:x}", dir=True, recursive=True), now)
            self._record(
                V2Request("PUT", f"{REMOVED_MEMBERS}/{removed_id:x}", value="", prev_exist=False), now
            )
            listener.voter_removed(removed_id)
            listener.peers_changed()
            if removed_id == self.member_id:
                listener.self_removed()
        elif op == "update":
            member = self.membership.members.get(int(cc["member_id"], 16))
            if member is not None:
                member.peer_urls = list(cc["peerURLs"])
                self._record(V2Request("PUT", f"{MEMBERS}/{member.id:x}/raftAttributes",
                                       value=_go_json({"peerURLs": member.peer_urls}), prev_exist=True), now)  # fmt: skip
                listener.peers_changed()
        else:
            raise ValueError(f"unknown membership change {op!r} at index {e.index}")
        w = wait.take(cc.get("request_id", 0))
        if w is not None:
            w.done(Member.from_dict(cc["member"]) if op == "add" else None, None)
        fields: dict[str, Any] = {"op": op, "index": e.index}
        if op == "add":
            fields["member-id"] = cc["member"]["id"]
            fields["peer-urls"] = cc["member"]["peerURLs"]
        else:
            fields["member-id"] = cc["member_id"]
            if op == "update":
                fields["peer-urls"] = cc["peerURLs"]
        event(log, logging.INFO, "applied membership change", **fields)

    def _apply_attributes(self, e: Entry) -> bool:
        """A member's published name and client URLs (etcd's /0/members/<id>/attributes)."""
        attrs = orjson.loads(e.data)
        member_id = int(attrs["member_id"], 16)
        member = self.membership.members.get(member_id)
        if member is None:
            return False
        member.name = attrs["name"]
        member.client_urls = list(attrs["clientURLs"])
        published: dict[str, Any] = {}
        if member.name:
            published["name"] = member.name
        if member.client_urls:
            published["clientURLs"] = member.client_urls
        self._record(V2Request("PUT", f"{MEMBERS}/{member_id:x}/attributes", value=_go_json(published)), 0)
        if member_id == self.member_id and member.client_urls == self.client_urls:
            self.listener.self_published()
        self.listener.member_published(member_id)
        return True

    def _record(self, req: V2Request, now_ns: int) -> None:
        """One of etcd's own writes under /0 (docs/design.md, "etcd's internal writes"): it takes a
        store index, a history slot and a stats count as on etcd, so indexes match etcd's."""
        try:
            self.store.apply_internal(req, now_ns)
        except V2Error as err:
            # The same on every member (the store is deterministic): noted, not fatal.
            event(log, logging.WARNING, "internal write refused", path=req.path, error=str(err))

    def stored_cluster_version(self) -> str:
        """/0/version as applied (read without counting it in the stats)."""
        node = self.store.namespaces[CLUSTER_NAMESPACE].tree.get("/version")
        return node.value if node is not None and node.children is None else ""

    def restore(self, backend: Backend) -> None:
        """Take over the state a snapshot from the leader left in ``backend``; live watchers stay."""
        bm = backend.meta()
        store = backend.load_store()
        store.adopt_watchers(self.store)
        self.store = store
        self.backend = backend
        self.mirror_refusal = refuses_user_writes(store)
        if bm.membership is not None:
            self.membership = Membership.recover(bm.membership)
        self.applied_index, self.applied_term = bm.applied_index, bm.applied_term
        self.time_ns = bm.cluster_time_ns
