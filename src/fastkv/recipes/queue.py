"""Work queues: FIFO from in-order keys, and a priority queue, where every item is taken exactly once.

Putting: an item is POSTed as an in-order key under the queue's directory (the store names it by its
creation index, so key order is arrival order), with a unique item id stored beside the value.  The POST
is sent at most once; when its outcome is unknown, the producer lists the queue for its item id before
sending it again, so a member dying mid-request does not enqueue the item twice.

Taking is two conditional writes, both needed for "exactly once" when members fail:

1. *Claim*: compare-and-swap the oldest unclaimed item, conditioned on its modifiedIndex (``prevIndex``),
   to a claim value holding the consumer's unique claim token and the item.  Of several consumers racing
   for an item exactly one claim succeeds; the others get "compare failed" and move to the next item.
   The claim is sent at most once; if its outcome is unknown, the consumer reads the item's next event from
   the history (a watch from the item's modifiedIndex + 1): it is the consumer's own only if that event is
   the swap to *its* claim value.  A bare compare-and-delete could not be resolved this way, because a
   delete event does not say who deleted.
2. *Remove*: compare-and-delete the claimed key with ``prevValue`` = the claim value (repeated until done
   or the key is gone).

An item is handed to exactly one consumer.  A consumer that dies between claim and remove leaves a claimed
key behind (visible with `Queue.claimed`): the item was taken, but not processed; nothing takes it again.
If the history is cleared before an unknown claim is resolved (more than 1000 writes in between), the
consumer re-reads the key instead; a claim that landed only after that read would stay unclaimed by anyone.

`PriorityQueue` keeps one sub-directory per priority, named by the zero-padded priority, so a sorted
recursive listing lists the lowest number first and, within a priority, arrival order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fastkv.client import (
    AsyncClient,
    Client,
    CompareFailed,
    EventIndexCleared,
    KeyNotFound,
    OutcomeUnknown,
    core,
)
from fastkv.recipes._runtime import TRANSIENT, Sleep, Steps, arun, backoff, list_steps, new_token, run

DEFAULT_PREFIX = "/queues"
CLAIM_MARK = "claimed "
PRIORITY_DIGITS = 3
RESOLVE_WAIT = 5.0  # how long an unknown claim may take to show up in the history


@dataclass(frozen=True, slots=True)
class Item:
    """A taken item: its value, its unique id, the key it had and that key's createdIndex."""

    value: str
    id: str
    key: str
    index: int


def _encode(item_id: str, value: str) -> str:
    return json.dumps({"id": item_id, "value": value}, separators=(",", ":"))


def _decode(raw: str | None) -> tuple[str, str] | None:
    try:
        obj = json.loads(raw or "")
        return str(obj["id"]), str(obj["value"])
    except (ValueError, KeyError, TypeError):
        return None


def put_steps(directory: str, value: str, deadline: float) -> Steps[str]:
    item_id = new_token()
    raw = _encode(item_id, value)
    attempt = 0
    while True:
        try:
            resp = yield core.at_most_once(core.create_in_order_call(directory, raw))
            return resp.node.key  # type: ignore[no-any-return]
        except OutcomeUnknown:
            keys, _ = yield from list_steps(directory)
            for node in keys:
                if node.value == raw:
                    return node.key  # type: ignore[no-any-return]
        except TRANSIENT:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"could not enqueue into {directory}")
        yield Sleep(backoff(attempt))
        attempt += 1


def _resolve_claim_steps(node: Any, claim: str) -> Steps[bool]:
    """Whether our claim of ``node`` (whose swap had an unknown outcome) was applied."""
    deadline = time.monotonic() + RESOLVE_WAIT
    attempt = 0
    while time.monotonic() < deadline:
        try:
            event = yield core.watch_call(
                node.key, node.modified_index + 1, False, deadline - time.monotonic()
            )
            if event is None:
                return False  # nothing happened to the item: the claim was not applied
            return bool(event.action == "compareAndSwap" and event.node.value == claim)
        except EventIndexCleared:
            try:
                resp = yield core.get_call(node.key, quorum=True)
                return bool(resp.node.value == claim)
            except KeyNotFound:
                return False
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1
    return False


def _remove_claimed_steps(key: str, claim: str) -> Steps[None]:
    attempt = 0
    while True:
        try:
            yield core.delete_call(key, prev_value=claim)
            return
        except (KeyNotFound, CompareFailed):
            return
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1


def take_steps(directory: str, recursive: bool, deadline: float | None, poll: float) -> Steps[Item | None]:
    """Claim and remove the first unclaimed item; wait for one (up to ``deadline``) when there is none."""
    token = new_token()
    while True:
        try:
            keys, index = yield from list_steps(directory, recursive, deadline)
        except TRANSIENT:
            return None  # the cluster could not be read before the deadline
        for node in keys:
            if (node.value or "").startswith(CLAIM_MARK):
                continue
            decoded = _decode(node.value)
            if decoded is None:
                continue  # not an item of this queue
            claim = f"{CLAIM_MARK}{token} {node.value}"
            try:
                yield core.at_most_once(core.set_call(node.key, claim, prev_index=node.modified_index))
                mine = True
            except (CompareFailed, KeyNotFound):
                mine = False
            except OutcomeUnknown:
                mine = yield from _resolve_claim_steps(node, claim)
            except TRANSIENT:
                mine = False  # the request reached no member
            if mine:
                yield from _remove_claimed_steps(node.key, claim)
                return Item(decoded[1], decoded[0], node.key, node.created_index)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        wait = poll if deadline is None else max(0.01, min(poll, deadline - time.monotonic()))
        try:
            yield core.watch_call(directory, index + 1, True, wait)
        except (EventIndexCleared, *TRANSIENT):
            pass


def _claimed(keys: list[Any]) -> list[str]:
    return [n.key for n in keys if (n.value or "").startswith(CLAIM_MARK)]


class Queue:
    """A FIFO queue named ``name`` (in-order keys under ``<prefix>/<name>``)."""

    recursive = False

    def __init__(self, client: Client, name: str, prefix: str = DEFAULT_PREFIX, poll: float = 2.0) -> None:
        self.client = client
        self.directory = f"{prefix.rstrip('/')}/{name}"
        self.poll = poll

    def put(self, value: str, timeout: float = 30.0) -> str:
        """Append ``value``; returns the item's key."""
        return run(self.client, put_steps(self.directory, value, time.monotonic() + timeout))

    def take(self, timeout: float | None = None) -> Item | None:
        """Remove and return the oldest item, waiting up to ``timeout`` seconds for one (None: forever);
        None when none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return run(self.client, take_steps(self.directory, self.recursive, deadline, self.poll))

    def size(self) -> int:
        """Items waiting (claimed ones not counted)."""
        keys, _ = run(self.client, list_steps(self.directory, self.recursive))
        return len(keys) - len(_claimed(keys))

    def claimed(self) -> list[str]:
        """Keys of items claimed by a consumer that has not removed them (yet, or ever: it died)."""
        keys, _ = run(self.client, list_steps(self.directory, self.recursive))
        return _claimed(keys)


class PriorityQueue(Queue):
    """Items with a priority (0 first, up to 10**PRIORITY_DIGITS - 1); FIFO within a priority."""

    recursive = True

    def put(self, value: str, timeout: float = 30.0, priority: int = 0) -> str:  # type: ignore[override]
        if not 0 <= priority < 10**PRIORITY_DIGITS:
            raise ValueError(f"priority must be in [0, {10**PRIORITY_DIGITS})")
        sub = f"{self.directory}/{priority:0{PRIORITY_DIGITS}d}"
        return run(self.client, put_steps(sub, value, time.monotonic() + timeout))


class AsyncQueue:
    """`Queue` for asyncio."""

    recursive = False

    def __init__(
        self, client: AsyncClient, name: str, prefix: str = DEFAULT_PREFIX, poll: float = 2.0
    ) -> None:
        self.client = client
        self.directory = f"{prefix.rstrip('/')}/{name}"
        self.poll = poll

    async def put(self, value: str, timeout: float = 30.0) -> str:
        return await arun(self.client, put_steps(self.directory, value, time.monotonic() + timeout))

    async def take(self, timeout: float | None = None) -> Item | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        return await arun(self.client, take_steps(self.directory, self.recursive, deadline, self.poll))

    async def size(self) -> int:
        keys, _ = await arun(self.client, list_steps(self.directory, self.recursive))
        return len(keys) - len(_claimed(keys))

    async def claimed(self) -> list[str]:
        keys, _ = await arun(self.client, list_steps(self.directory, self.recursive))
        return _claimed(keys)


class AsyncPriorityQueue(AsyncQueue):
    """`PriorityQueue` for asyncio."""

    recursive = True

    async def put(self, value: str, timeout: float = 30.0, priority: int = 0) -> str:  # type: ignore[override]
        if not 0 <= priority < 10**PRIORITY_DIGITS:
            raise ValueError(f"priority must be in [0, {10**PRIORITY_DIGITS})")
        sub = f"{self.directory}/{priority:0{PRIORITY_DIGITS}d}"
        return await arun(self.client, put_steps(sub, value, time.monotonic() + timeout))
