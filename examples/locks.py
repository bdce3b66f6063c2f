"""A fair mutex with fencing tokens, and a semaphore.

Three threads take a mutex in turn; each prints the fencing token it got (the lock key's createdIndex,
larger for every later holder).  Then a semaphore lets two of three workers in at once.

    python examples/locks.py --endpoints http://127.0.0.1:2379
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

from fastkv.client import Client
from fastkv.recipes.lock import LockTimeout, Mutex, Semaphore


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    endpoints = parser.parse_args().endpoints.split(",")
    name = f"demo-{uuid.uuid4().hex[:8]}"
    tokens: list[int] = []
    guard = threading.Lock()
    inside = [0]

    def worker() -> None:
        with Client(endpoints) as client:
            mutex = Mutex(client, name, ttl=5, poll=1)
            token = mutex.acquire(timeout=30)
            with guard:
                inside[0] += 1
                assert inside[0] == 1
                tokens.append(token)
            time.sleep(0.1)  # the critical section; check mutex.valid() before acting on it
            with guard:
                inside[0] -= 1
            mutex.release()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("holders:", len(tokens), "tokens increasing:", tokens == sorted(tokens))

    with Client(endpoints) as client:
        held = [Semaphore(client, name + "-sem", 2, ttl=5) for _ in range(2)]
        for s in held:
            s.acquire(timeout=10)
        try:
            Semaphore(client, name + "-sem", 2, ttl=5, poll=0.2).acquire(timeout=0.5)
            print("third permit: granted")
        except LockTimeout:
            print("third permit: timed out (limit 2)")
        for s in held:
            s.release()


if __name__ == "__main__":
    main()
