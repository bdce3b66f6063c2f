"""Coordination: a barrier, a double barrier, and a counter changed by compare-and-swap.

python examples/coordination.py --endpoints http://127.0.0.1:2379
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

from fastkv.client import Client
from fastkv.recipes.coordination import Barrier, Counter, DoubleBarrier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    endpoints = parser.parse_args().endpoints.split(",")
    name = f"demo-{uuid.uuid4().hex[:8]}"

    with Client(endpoints) as client:
        gate = Barrier(client, name + "-gate", poll=1)
        gate.hold()
        opened_at: list[float] = []
        waiter = threading.Thread(target=lambda: gate.wait(timeout=10) and opened_at.append(time.monotonic()))
        waiter.start()
        time.sleep(0.2)
        released = time.monotonic()
        gate.release()
        waiter.join()
        print("barrier: waiter passed after release:", bool(opened_at) and opened_at[0] >= released)

    events: list[str] = []
    lock = threading.Lock()

    def participant(i: int) -> None:
        with Client(endpoints) as client:
            barrier = DoubleBarrier(client, name + "-double", 3, ttl=5, poll=1)
            time.sleep(0.1 * i)
            barrier.enter(timeout=20)
            with lock:
                events.append("enter")
            barrier.leave(timeout=20)
            with lock:
                events.append("leave")

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("double barrier:", " ".join(events))

    def add_many() -> None:
        with Client(endpoints) as client:
            counter = Counter(client, f"/{name}/counter")
            for _ in range(25):
                counter.add(1)

    threads = [threading.Thread(target=add_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Client(endpoints) as client:
        print("counter:", Counter(client, f"/{name}/counter").value())


if __name__ == "__main__":
    main()
