"""Leader election: candidates campaign, the leader resigns, an observer sees every change of leader.

python examples/leader_election.py --endpoints http://127.0.0.1:2379
"""

from __future__ import annotations

import argparse
import threading
import uuid

from fastkv.client import Client
from fastkv.recipes.election import Election, Leader


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    endpoints = parser.parse_args().endpoints.split(",")
    name = f"demo-{uuid.uuid4().hex[:8]}"
    seen: list[Leader | None] = []
    done = threading.Event()
    printing = threading.Lock()

    def say(*words: object) -> None:
        with printing:
            print(*words, flush=True)

    def observe() -> None:
        with Client(endpoints) as client:
            for leader in Election(client, name).observe(poll_timeout=1):
                seen.append(leader)
                say("observed leader:", leader.value if leader else "(none)")
                if len(seen) == 5:
                    done.set()
                    return

    threading.Thread(target=observe, daemon=True).start()
    while not seen:
        done.wait(0.05)
    tokens = []
    with Client(endpoints) as client:
        for candidate in ("alpha", "beta"):
            e = Election(client, name, ttl=5)
            tokens.append(e.campaign(candidate, timeout=10))
            say(f"{candidate} leads: {e.valid()}")
            e.resign()
    done.wait(15)
    say("terms in order:", tokens == sorted(tokens))


if __name__ == "__main__":
    main()
