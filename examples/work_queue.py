"""Work queues: FIFO where every item is taken exactly once by competing consumers, and a priority queue.

python examples/work_queue.py --endpoints http://127.0.0.1:2379
"""

from __future__ import annotations

import argparse
import threading
import uuid

from fastkv.client import Client
from fastkv.recipes.queue import PriorityQueue, Queue


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    endpoints = parser.parse_args().endpoints.split(",")
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    with Client(endpoints) as client:
        q = Queue(client, name)
        for i in range(10):
            q.put(f"job-{i}")
        print("queued:", q.size())

    taken: list[str] = []
    lock = threading.Lock()

    def consumer() -> None:
        with Client(endpoints) as client:
            mine = Queue(client, name, poll=0.5)
            while (item := mine.take(timeout=1)) is not None:
                with lock:
                    taken.append(item.value)

    threads = [threading.Thread(target=consumer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("taken:", len(taken), "distinct:", len(set(taken)))

    with Client(endpoints) as client:
        pq = PriorityQueue(client, name + "-prio")
        pq.put("cleanup", priority=9)
        pq.put("page-oncall", priority=0)
        pq.put("reindex", priority=5)
        order = []
        while (item := pq.take(timeout=0.5)) is not None:
            order.append(item.value)
        print("priority order:", " ".join(order))


if __name__ == "__main__":
    main()
