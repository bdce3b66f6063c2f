"""Service discovery and round-robin load balancing.

Two instances of a "web" service register themselves (TTL keys kept alive by refresh); a client discovers
them and spreads requests over them; one instance crashes (stops refreshing) and drops out once its TTL
lapses; the other leaves cleanly.

    python examples/service_discovery.py --endpoints http://127.0.0.1:2379
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

from fastkv.client import Client
from fastkv.recipes.discovery import RoundRobinBalancer, ServiceDiscovery, ServiceRegistration
from fastkv.recipes.watch import CacheEvent


def wait_for(check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    args = parser.parse_args()
    service = f"web-{uuid.uuid4().hex[:8]}"  # a fresh name, so runs do not see each other
    with (
        Client(args.endpoints.split(",")) as client,
        ServiceDiscovery(client, service, poll_timeout=1) as discovery,
    ):
        balancer = RoundRobinBalancer(discovery)
        events: list[str] = []
        printing = threading.Lock()

        def on_change(event: CacheEvent) -> None:  # called in the discovery's thread
            with printing:
                events.append(f"{event.kind} {event.key.rsplit('/', 1)[1]}")
                print("event:", events[-1], flush=True)

        discovery.add_listener(on_change)
        a = ServiceRegistration(client, service, "a", "10.0.0.1:8080", ttl=2)
        b = ServiceRegistration(client, service, "b", "10.0.0.2:8080", ttl=2)
        a.register()
        b.register()
        wait_for(lambda: len(events) == 2)
        picks = [balancer.pick().id for _ in range(4)]
        with printing:
            print("round robin:", " ".join(sorted(picks)))
        # "a" crashes: nobody refreshes its key any more, so it expires after its TTL.
        a.abandon()
        started = time.monotonic()
        wait_for(lambda: "removed a" in events)
        with printing:
            print(f"a dropped after its TTL: {time.monotonic() - started < 2 + 2.5}")
            print("live:", ", ".join(f"{i.id}={i.address}" for i in discovery.instances()))
        b.deregister()  # a clean exit deletes the key at once
        wait_for(lambda: "removed b" in events)
        with printing:
            print("live after b left:", ", ".join(i.id for i in discovery.instances()) or "none")


if __name__ == "__main__":
    main()
