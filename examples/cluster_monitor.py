"""Cluster monitoring: member health as ``etcdctl cluster-health`` shows it, and each member's Raft view.

python examples/cluster_monitor.py --endpoints http://127.0.0.1:2379
"""

from __future__ import annotations

import argparse

from fastkv.client import Client
from fastkv.recipes.monitoring import cluster_health, member_status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    endpoints = parser.parse_args().endpoints.split(",")
    with Client(endpoints) as client:
        health = cluster_health(client)
        for line in health.lines():
            print(line)
        status = member_status(client)
        for m in status.members:
            role = "leader" if m.is_leader else (m.state or "unreachable")
            print(f"member {m.id} ({m.name}): {role}")
        print("cluster leader:", status.leader or "(none)")
        raise SystemExit(0 if health.state == "healthy" else 5)


if __name__ == "__main__":
    main()
