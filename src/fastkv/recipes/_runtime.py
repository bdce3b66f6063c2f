"""How a recipe's logic runs on either client: each recipe step is written once, as a generator.

A step generator yields operations and receives their results: a `fastkv.client.core.Call` is executed by
the client (its parsed result is sent back in; a `ClientError` is thrown in at the ``yield``), a `Sleep`
pauses (True is sent back when the recipe was asked to stop meanwhile).  `run` drives a generator on a
blocking `Client`, `arun` on an `AsyncClient`; `Background` and `AsyncBackground` run one in a daemon
thread or an asyncio task (keep-alives, watch loops) until stopped.  Time comes from ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from fastkv.client import AsyncClient, Client, ClientError, ClusterError, LeaderElection, RaftInternal, core

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Op = core.Call[Any] | Sleep
Steps = Generator[Op, Any, T]

# Errors after which the same read or idempotent write is simply tried again: no member answered, or the
# cluster had no leader / could not commit in time.
TRANSIENT = (ClusterError, RaftInternal, LeaderElection)


def backoff(attempt: int, base: float = 0.05, cap: float = 1.0) -> float:
    """The pause before retry number ``attempt`` (0-based): doubling from ``base`` up to ``cap``."""
    return float(min(cap, base * (2 ** min(attempt, 10))))


def run(client: Client, steps: Steps[T], stop: threading.Event | None = None) -> T:
    """Drive ``steps`` to completion on a blocking client and return what it returns."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value, error = None, None
        if isinstance(op, Sleep):
            if stop is None:
                time.sleep(max(0.0, op.seconds))
                value = False
            else:
                value = stop.wait(max(0.0, op.seconds))
            continue
        try:
            value = client.execute(op)
        except ClientError as exc:
            error = exc


async def arun(client: AsyncClient, steps: Steps[T], stop: asyncio.Event | None = None) -> T:
    """Drive ``steps`` to completion on an asyncio client and return what it returns."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value, error = None, None
        if isinstance(op, Sleep):
            if stop is None:
                await asyncio.sleep(max(0.0, op.seconds))
                value = False
            else:
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, op.seconds))
                    value = True
                except TimeoutError:
                    value = False
            continue
        try:
            value = await client.execute(op)
        except ClientError as exc:
            error = exc


class Background:
    """A step generator running in a daemon thread until it returns or `stop` is called.  ``make_steps``
    gets a ``should_stop()`` function to check between operations; `Sleep` returns True when stopped.  An
    exception that escapes the generator is kept in ``error``."""

    def __init__(
        self, client: Client, make_steps: Callable[[Callable[[], bool]], Steps[Any]], name: str
    ) -> None:
        self._client = client
        self._make_steps = make_steps
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            run(self._client, self._make_steps(self.stopping.is_set), self.stopping)
        except BaseException as exc:  # noqa: BLE001 - reported through .error
            self.error = exc

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the loop to stop at its next pause and wait for the thread (up to ``timeout``)."""
        self.stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class AsyncBackground:
    """`Background` for asyncio: the generator runs in a task of the running loop."""

    def __init__(
        self, client: AsyncClient, make_steps: Callable[[Callable[[], bool]], Steps[Any]], name: str
    ) -> None:
        self.stopping = asyncio.Event()
        self.error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._main(client, make_steps), name=name)

    async def _main(
        self, client: AsyncClient, make_steps: Callable[[Callable[[], bool]], Steps[Any]]
    ) -> None:
        try:
            await arun(client, make_steps(self.stopping.is_set), self.stopping)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported through .error
            self.error = exc

    async def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the loop to stop at its next pause; cancel it if it has not ended within ``timeout``."""
        self.stopping.set()
        if self._task is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    @property
    def alive(self) -> bool:
        return not self._task.done()


def list_steps(
    directory: str, recursive: bool = False, deadline: float | None = None
) -> Steps[tuple[list[Any], int]]:
    """A linearizable (quorum) listing of ``directory``: its keys in key order (recursive: every key
    below it, depth first) and the store index of the listing.  A missing directory is empty.
    Transient errors are retried until ``deadline`` (a ``time.monotonic()`` instant; None: forever),
    after which the last one is raised."""
    from fastkv.client import KeyNotFound

    attempt = 0
    while True:
        try:
            resp = yield core.get_call(directory, recursive=recursive, sorted=True, quorum=True)
            node = resp.node
            keys = [] if node is None else [n for n in node.leaves() if not n.dir and n is not node]
            return keys, resp.etcd_index
        except KeyNotFound as err:
            return [], err.index
        except TRANSIENT:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            yield Sleep(backoff(attempt))
            attempt += 1


def new_token() -> str:
    """A value no other process (or earlier call) will ever write: host, pid and 64 random bits."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:16]}"
