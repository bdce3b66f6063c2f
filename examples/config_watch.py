"""Pub/sub of configuration: a cached view of a subtree with change callbacks (asyncio), fed by a
watcher that resumes from its last index and re-lists when the history was cleared.

    python examples/config_watch.py --endpoints http://127.0.0.1:2379
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from fastkv.client import AsyncClient
from fastkv.recipes.watch import AsyncTreeCache, CacheEvent


async def main(endpoints: list[str]) -> None:
    prefix = f"/config-{uuid.uuid4().hex[:8]}"
    async with AsyncClient(endpoints) as client:
        await client.set(f"{prefix}/db/url", "postgres://db1:5432")
        changes: list[CacheEvent] = []
        cache = AsyncTreeCache(client, prefix, poll_timeout=1)

        def on_change(event: CacheEvent) -> None:
            changes.append(event)
            print(f"{event.kind}: {event.key[len(prefix) :]} = {event.value}")

        cache.add_listener(on_change)
        async with cache:
            await cache.wait_synced(10)
            await client.set(f"{prefix}/db/url", "postgres://db2:5432")
            await client.set(f"{prefix}/feature/search", "on")
            await client.delete(f"{prefix}/feature/search")
            for _ in range(200):
                if len(changes) == 4:
                    break
                await asyncio.sleep(0.05)
            print("view:", cache.items() == {f"{prefix}/db/url": "postgres://db2:5432"})
        await client.delete(prefix, recursive=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    asyncio.run(main(parser.parse_args().endpoints.split(",")))
