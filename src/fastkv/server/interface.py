"""What the client API needs from a member, as one typed interface.

``api/`` is written against :class:`V2Server` only; :class:`fastkv.server.etcdserver.EtcdServer`
implements it.  Everything the HTTP layer may do with a member is here, so the API never reaches
into the store, the watcher hub or Raft, and a second API (or a test double) needs nothing else.

Rules:
- ``do`` decides how a keys request is served: a plain GET is read from the local store and
  answered at once (``done`` runs before ``do`` returns); a quorum GET is a ReadIndex read; every
  write goes through the Raft log and is answered after its entry is durable and applied.
- ``done(event, error)`` is called exactly once, on the event loop, with either an event or a
  ``V2Error`` (a write's event may be None only for SYNC, which clients cannot send).
- ``get`` is the local read with no parameters (the hot path of a plain ``GET /v2/keys/k``).
- A write whose member stops (a durability failure, removal, shutdown) after its entry may have left
  it is finished with :class:`OutcomeUnknown`: the other members may still commit it, so no answer
  may say it failed.  The keys API closes the connection without an answer, as a crashed member's
  would be; a client must treat it like a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from ..v2auth.access import Auth
from ..v2store.errors import V2Error
from ..v2store.event import Event
from ..v2store.request import V2Request
from ..v2store.watcher import FanOut, Watcher
from .membership import Member

Done = Callable[[Event | None, V2Error | None], None]


class OutcomeUnknown(V2Error):
    """The member stopped while this write may have been in the Raft log: applied or not, nobody
    here can tell.  Never to be answered as a failure."""


WatchCallback = Callable[[Event], None]


class V2Server(Protocol):
    """A member as the v2 client API sees it."""

    member_id: int
    cluster_id: int
    name: str
    # --cors: the allowed origins ("*" for any), None when CORS is off.
    cors: set[str] | None
    # The member's clock (unix ns): a TTL becomes an absolute expiration with it.
    now_ns: Callable[[], int]
    # v2 auth: who may do what (the state is replicated in the store's /2 namespace).
    auth: Auth
    # Keys requests may be served: the member has joined and caught up with what the cluster
    # acknowledged before it (re)started.  Until then the API holds them (``when_serving``).
    serving: bool

    def when_serving(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` once ``serving`` (at once if it is)."""
        ...

    def do(self, req: V2Request, done: Done) -> None:
        """Serve a keys request (GET, QGET-worthy GET, PUT, POST, DELETE); see the module rules."""
        ...

    def mirror_apply(self, batch: dict, done: Callable[[object, V2Error | None], None]) -> None:
        """Replicate a mirror batch (v2store/mirror.py); ``done(state, error)`` once applied here."""
        ...

    def mirror_status(self) -> dict:
        """The mirror state applied here ({"state": "none"} when never mirrored) and "storeIndex"."""
        ...

    def get(self, path: str, recursive: bool = False, sorted: bool = False) -> Event:
        """A local read of the applied state; raises V2Error."""
        ...

    def watch(
        self,
        path: str,
        recursive: bool,
        stream: bool,
        since: int,
        callback: WatchCallback,
        sink: Any = None,
        fan_out: FanOut | None = None,
    ) -> Watcher:
        """Register a watcher (or find its event in history); raises V2Error 401 when cleared.
        ``sink``/``fan_out``: a one-shot watcher's batched delivery (v2store/watcher.py)."""
        ...

    def raft_index(self) -> int:
        """X-Raft-Index: the commit index."""
        ...

    def raft_term(self) -> int:
        """X-Raft-Term."""
        ...

    def leader_id(self) -> int:
        """The leader this member follows, 0 when none is known."""
        ...

    def raft_status(self) -> dict[str, object]:
        """The Raft node's status (id, term, vote, lead, state, commit, applied; progress and
        lead_transferee on the leader), for /debug/vars."""
        ...

    def members(self) -> list[Member]:
        """The cluster's members in id order."""
        ...

    def is_healthy(self, excluded_alarms: frozenset[str] = frozenset()) -> bool:
        """/health: a leader is known, the member has not failed, and no alarm is raised but those
        in ``excluded_alarms`` (etcd's alarm type names, e.g. NOSPACE)."""
        ...

    def stats_self(self) -> bytes: ...

    def stats_leader(self) -> bytes: ...

    def stats_store(self) -> bytes: ...

    def metrics_text(self) -> bytes:
        """/metrics in Prometheus' text format."""
        ...

    def add_member(self, peer_urls: list[str]) -> asyncio.Future[Member]:
        """Raises MembershipError subclasses (admin.py) before proposing anything."""
        ...

    def update_member(self, member_id: int, peer_urls: list[str]) -> asyncio.Future[None]: ...

    def remove_member(self, member_id: int) -> asyncio.Future[None]: ...
