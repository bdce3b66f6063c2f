"""ReadIndex: linearizable reads without writing to the log (thesis §6.4).

1. The leader has committed an entry of its own term (otherwise it does not know the
   latest commit index; requests wait in ``RaftCore._pending_reads`` until it has).
2. It records its commit index as the request's read index, then
3. confirms it is still the leader by a round of heartbeats carrying the request's context:
   once a majority answered, no other leader with a newer term can have committed anything
   the read would miss.
4. The caller waits until its state machine applied the read index, then reads locally.

Requests are confirmed in arrival order: a heartbeat round acknowledged for one request
also confirms every request queued before it.  A request's ``ctx`` must be unique among
pending requests (the server uses its request id); a duplicate is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed read: safe to serve ``request_ctx`` once the state machine applied ``index``."""

    index: int
    request_ctx: bytes


class ReadIndexStatus:
    __slots__ = ("frm", "ctx", "index", "acks")

    def __init__(self, frm: int, ctx: bytes, index: int) -> None:
        self.frm = frm  # who asked: this member or a follower to answer with MsgReadIndexResp
        self.ctx = ctx
        self.index = index
        self.acks: set[int] = set()


class ReadOnly:
    __slots__ = ("pending", "queue")

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, frm: int, ctx: bytes) -> bool:
        if ctx in self.pending:
            return False
        self.pending[ctx] = ReadIndexStatus(frm, ctx, index)
        self.queue.append(ctx)
        return True

    def recv_ack(self, frm: int, ctx: bytes) -> set[int] | None:
        """Record that ``frm`` answered the heartbeat round of ``ctx``; returns who did so far."""
        status = self.pending.get(ctx)
        if status is None:
            return None
        status.acks.add(frm)
        return status.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release ``ctx`` and every request queued before it, oldest first."""
        if ctx not in self.pending:
            return []
        n = self.queue.index(ctx) + 1
        released = [self.pending.pop(c) for c in self.queue[:n]]
        del self.queue[:n]
        return released

    def last_pending_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def reset(self) -> None:
        self.pending.clear()
        self.queue.clear()
