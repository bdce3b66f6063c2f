"""Testing your own app against a real fastkv cluster with the pytest plugin that ships with fastkv.

Nothing here comes from fastkv's own test suite: ``pip install fastkv pytest`` registers the plugin,
and its fixtures start the members (on free ports, in a temporary directory, removed afterwards).
Run with ``pytest examples/test_user_app.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from fastkv.client import Client, ClientError, EtcdError

T = TypeVar("T")
KEY_NOT_FOUND = 100


class ServiceRegistry:
    """The app under test: services publish their address under ``/services/<name>`` and callers
    look them up.  A publish is a plain set, so retrying one whose answer was lost in a failover
    is harmless; retries stop after ``deadline_s``.  Lookups are quorum reads, so a caller never
    sees an address older than one already published."""

    def __init__(self, client: Client, deadline_s: float = 20.0) -> None:
        self.client = client
        self.deadline_s = deadline_s

    def _retry(self, op: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.deadline_s
        while True:
            try:
                return op()
            except EtcdError as e:
                if e.code == KEY_NOT_FOUND:
                    raise
                if time.monotonic() > deadline:
                    raise
            except ClientError:  # no member answered (an election is under way)
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def publish(self, service: str, address: str) -> None:
        self._retry(lambda: self.client.set(f"/services/{service}", address))

    def lookup(self, service: str) -> str | None:
        try:
            response = self._retry(lambda: self.client.get(f"/services/{service}", quorum=True))
        except EtcdError as e:
            if e.code == KEY_NOT_FOUND:
                return None
            raise
        return response.node.value


def test_lookups_survive_the_leader_being_killed(fastkv_cluster):
    registry = ServiceRegistry(fastkv_cluster.client())
    registry.publish("billing", "10.0.0.5:8080")

    old_leader = fastkv_cluster.leader()
    old_leader.kill()  # kill -9, in the middle of everything
    registry.publish("search", "10.0.0.6:9200")  # goes through once the others elect a leader
    assert registry.lookup("billing") == "10.0.0.5:8080"
    assert registry.lookup("search") == "10.0.0.6:9200"
    assert registry.lookup("nothing") is None
    assert fastkv_cluster.leader() is not old_leader

    # The old leader comes back with its data dir and catches up.
    old_leader.restart()
    assert ServiceRegistry(old_leader.client()).lookup("search") == "10.0.0.6:9200"


def test_a_paused_leader_is_replaced(fastkv_cluster):
    registry = ServiceRegistry(fastkv_cluster.client())
    frozen = fastkv_cluster.leader()
    frozen.pause()  # SIGSTOP: alive but silent, like a long GC pause
    registry.publish("billing", "10.0.0.7:8080")
    assert fastkv_cluster.leader() is not frozen
    frozen.resume()
    assert ServiceRegistry(frozen.client()).lookup("billing") == "10.0.0.7:8080"


def test_one_member_is_enough_for_the_happy_path(fastkv_member):
    registry = ServiceRegistry(fastkv_member.client())
    registry.publish("billing", "10.0.0.5:8080")
    assert registry.lookup("billing") == "10.0.0.5:8080"
