"""Service discovery and client-side load balancing.

An instance registers itself with `ServiceRegistration`: a key ``<prefix>/<service>/<instance id>``
holding its address, with a TTL, kept alive by refresh (which does not wake watchers, so a healthy
instance costs its watchers nothing).  A clean exit deletes the key (`deregister`, or leaving the
``with`` block); a crash or a pause longer than the TTL lets it expire.  If the key has expired while the
instance lived on (it was paused), the keep-alive puts it back.

Clients find the instances with `ServiceDiscovery`, a `TreeCache` of the service's directory: it lists,
then watches from the listing's index, so it misses no registration and drops an instance as soon as its
key is deleted or expires.  `RoundRobinBalancer` hands out the live instances in turn, reading the cache at
every pick, so a removed instance is never handed out after the cache saw its removal.

A dead instance disappears from discovery within its TTL plus the time the cluster needs to elect a
leader if the leader died too (expiry is driven by the leader), plus one watch round trip.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from fastkv.client import AsyncClient, Client, KeyNotFound, core
from fastkv.recipes._lease import Lease, keepalive_steps
from fastkv.recipes._runtime import TRANSIENT, AsyncBackground, Background, Sleep, Steps, arun, backoff, run
from fastkv.recipes.watch import AsyncTreeCache, CacheEvent, Listener, TreeCache

DEFAULT_PREFIX = "/services"


def _register_steps(key: str, address: str, ttl: int, deadline: float) -> Steps[int]:
    attempt = 0
    while True:
        try:
            resp = yield core.set_call(key, address, ttl)
            return resp.node.created_index  # type: ignore[no-any-return]
        except TRANSIENT:
            if time.monotonic() >= deadline:
                raise
            yield Sleep(backoff(attempt))
            attempt += 1


def _deregister_steps(key: str, address: str, deadline: float) -> Steps[None]:
    attempt = 0
    while True:
        try:
            yield core.delete_call(key, prev_value=address)
            return
        except KeyNotFound:
            return
        except TRANSIENT:
            if time.monotonic() >= deadline:
                raise
            yield Sleep(backoff(attempt))
            attempt += 1


def service_key(service: str, instance_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix.rstrip('/')}/{service}/{instance_id}"


@dataclass(frozen=True, slots=True)
class Instance:
    """A live instance: its id (the key's last segment) and the address it registered."""

    id: str
    address: str


class ServiceRegistration:
    """Register ``instance_id`` of ``service`` at ``address`` for as long as this object is registered.
    ``ttl``: seconds a dead instance stays visible.  Use as a context manager, or `register` /
    `deregister`."""

    def __init__(
        self,
        client: Client,
        service: str,
        instance_id: str,
        address: str,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if ttl < 2:
            raise ValueError("ttl must be at least 2 seconds")
        self.client = client
        self.key = service_key(service, instance_id, prefix)
        self.address = address
        self.ttl = ttl
        self.lease: Lease | None = None
        self._bg: Background | None = None

    def register(self, timeout: float = 30.0) -> None:
        """Write the key (retrying while the cluster has no leader, up to ``timeout``) and start
        refreshing it."""
        sent = time.monotonic()
        created = run(self.client, _register_steps(self.key, self.address, self.ttl, sent + timeout))
        lease = Lease(self.key, self.address, self.ttl, created, sent + self.ttl - 0.5)
        self.lease = lease
        self._bg = Background(
            self.client,
            lambda should_stop: keepalive_steps(lease, should_stop, recreate=True),
            f"keepalive({self.key})",
        )

    def abandon(self) -> None:
        """Stop refreshing but leave the key to expire by its TTL: what a crash looks like to others."""
        if self._bg is not None:
            self._bg.stop()
            self._bg = None

    def deregister(self, timeout: float = 10.0) -> None:
        """Stop refreshing and delete the key (if it still holds this instance's address)."""
        if self._bg is not None:
            self._bg.stop()
            self._bg = None
        run(self.client, _deregister_steps(self.key, self.address, time.monotonic() + timeout))

    def __enter__(self) -> ServiceRegistration:
        self.register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deregister()


class AsyncServiceRegistration:
    """`ServiceRegistration` for asyncio (``async with``)."""

    def __init__(
        self,
        client: AsyncClient,
        service: str,
        instance_id: str,
        address: str,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if ttl < 2:
            raise ValueError("ttl must be at least 2 seconds")
        self.client = client
        self.key = service_key(service, instance_id, prefix)
        self.address = address
        self.ttl = ttl
        self.lease: Lease | None = None
        self._bg: AsyncBackground | None = None

    async def register(self, timeout: float = 30.0) -> None:
        sent = time.monotonic()
        created = await arun(self.client, _register_steps(self.key, self.address, self.ttl, sent + timeout))
        lease = Lease(self.key, self.address, self.ttl, created, sent + self.ttl - 0.5)
        self.lease = lease
        self._bg = AsyncBackground(
            self.client,
            lambda should_stop: keepalive_steps(lease, should_stop, recreate=True),
            f"keepalive({self.key})",
        )

    async def abandon(self) -> None:
        """Stop refreshing but leave the key to expire by its TTL."""
        if self._bg is not None:
            await self._bg.stop()
            self._bg = None

    async def deregister(self, timeout: float = 10.0) -> None:
        if self._bg is not None:
            await self._bg.stop()
            self._bg = None
        await arun(self.client, _deregister_steps(self.key, self.address, time.monotonic() + timeout))

    async def __aenter__(self) -> AsyncServiceRegistration:
        await self.register()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.deregister()


def _instances(items: dict[str, str], directory: str) -> list[Instance]:
    base = directory.rstrip("/") + "/"
    out = [
        Instance(k[len(base) :], v)
        for k, v in items.items()
        if k.startswith(base) and "/" not in k[len(base) :]
    ]
    out.sort(key=lambda i: i.id)
    return out


class ServiceDiscovery:
    """The live instances of ``service``, kept up to date by a `TreeCache` of its directory."""

    def __init__(
        self, client: Client, service: str, prefix: str = DEFAULT_PREFIX, poll_timeout: float = 2.0
    ) -> None:
        self.directory = f"{prefix.rstrip('/')}/{service}"
        self.cache = TreeCache(client, self.directory, poll_timeout)

    def start(self, timeout: float | None = 30.0) -> ServiceDiscovery:
        """Start watching and wait (up to ``timeout``) for the first listing."""
        self.cache.start()
        if not self.cache.wait_synced(timeout):
            raise TimeoutError(f"no listing of {self.directory} within {timeout}s")
        return self

    def instances(self) -> list[Instance]:
        """The live instances, sorted by id."""
        return _instances(self.cache.items(), self.directory)

    def add_listener(self, listener: Listener) -> None:
        """Called with every `CacheEvent` (an instance added, changed or removed)."""
        self.cache.add_listener(listener)

    def stop(self) -> None:
        self.cache.stop()

    def __enter__(self) -> ServiceDiscovery:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncServiceDiscovery:
    """`ServiceDiscovery` for asyncio."""

    def __init__(
        self, client: AsyncClient, service: str, prefix: str = DEFAULT_PREFIX, poll_timeout: float = 2.0
    ) -> None:
        self.directory = f"{prefix.rstrip('/')}/{service}"
        self.cache = AsyncTreeCache(client, self.directory, poll_timeout)

    async def start(self, timeout: float | None = 30.0) -> AsyncServiceDiscovery:
        self.cache.start()
        if not await self.cache.wait_synced(timeout):
            raise TimeoutError(f"no listing of {self.directory} within {timeout}s")
        return self

    def instances(self) -> list[Instance]:
        return _instances(self.cache.items(), self.directory)

    def add_listener(self, listener: Listener) -> None:
        self.cache.add_listener(listener)

    async def stop(self) -> None:
        await self.cache.stop()

    async def __aenter__(self) -> AsyncServiceDiscovery:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class NoInstanceAvailable(LookupError):
    """The balancer has no live instance to hand out."""


class RoundRobinBalancer:
    """Hands out the live instances of a (sync or asyncio) `ServiceDiscovery` in turn.  Thread-safe; the
    list is read at every pick, so an instance whose key went is not handed out again."""

    def __init__(self, discovery: ServiceDiscovery | AsyncServiceDiscovery) -> None:
        self.discovery = discovery
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def pick(self) -> Instance:
        """The next live instance; `NoInstanceAvailable` when there is none."""
        live = self.discovery.instances()
        if not live:
            raise NoInstanceAvailable(self.discovery.directory)
        with self._lock:
            turn = next(self._turn)
        return live[turn % len(live)]


__all__ = [
    "AsyncServiceDiscovery",
    "AsyncServiceRegistration",
    "CacheEvent",
    "Instance",
    "NoInstanceAvailable",
    "RoundRobinBalancer",
    "ServiceDiscovery",
    "ServiceRegistration",
    "service_key",
]
