"""A recipe user in its own process, for the fault tests (SIGSTOP pauses a whole process).

``python -m tests.recipes.fault_worker ROLE --endpoints URLS --name NAME --out FILE --stop FILE``
runs until the stop file exists, appending one JSON line per thing it did to ``--out`` (flushed at once,
so a killed worker's record survives).  Times are ``time.monotonic()``, which is one clock for every
process of the machine (CLOCK_MONOTONIC), so the test can compare them across workers.

Roles:
- ``lock``: acquire the mutex, run a fenced critical section, release; record the hold.
- ``semaphore``: acquire a slot of a semaphore of SEMAPHORE_LIMIT, work a little, release; record the hold.
- ``leader``: campaign, act as leader for a while (fenced like the lock), resign; record the term.
- ``consumer``: take queue items and record each.
- ``instance``: register a service instance and keep it alive.

The fence is a key, ``/fence/NAME``, holding the largest token that entered: entering is a
compare-and-swap conditioned on the fence's modifiedIndex and allowed only with a larger token; leaving
is a compare-and-swap conditioned on the index the entry produced, so it fails if anyone entered since.
A holder whose lease lapsed while it was paused is refused at one of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any

from fastkv.client import Client, ClientError, CompareFailed, KeyNotFound, NodeExists
from fastkv.recipes import discovery, election, lock, queue

SEMAPHORE_LIMIT = 2


class Recorder:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def __call__(self, **rec: Any) -> None:
        rec["pid"] = os.getpid()
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()


def fence_enter(c: Client, key: str, token: int) -> tuple[str, int]:
    """("ok", entry index) or ("rejected", 0) when a larger or equal token already entered."""
    while True:
        try:
            cur = c.get(key, quorum=True)
        except KeyNotFound:
            try:
                return "ok", c.create(key, str(token)).node.modified_index
            except NodeExists:
                continue
        if int(cur.node.value or "0") >= token:
            return "rejected", 0
        try:
            return "ok", c.set(key, str(token), prev_index=cur.node.modified_index).node.modified_index
        except CompareFailed:
            continue


def fence_exit(c: Client, key: str, token: int, entered: int) -> tuple[str, int]:
    try:
        return "ok", c.set(key, str(token), prev_index=entered).node.modified_index
    except (CompareFailed, KeyNotFound):
        return "overrun", 0


def retrying(fn: Any, *args: Any) -> Any:
    deadline = time.monotonic() + 20
    while True:
        try:
            return fn(*args)
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_lock(c: Client, a: argparse.Namespace, rec: Recorder) -> None:
    fence = f"/fence/{a.name}"
    while not os.path.exists(a.stop):
        m = lock.Mutex(c, a.name, ttl=a.ttl, poll=0.5)
        try:
            token = m.acquire(timeout=5)
        except lock.LockTimeout:
            continue
        acquired = time.monotonic()
        enter, entered = retrying(fence_enter, c, fence, token)
        if enter == "ok":
            time.sleep(random.uniform(0.05, 0.3))  # the work; SIGSTOP may land here
            result, left = retrying(fence_exit, c, fence, token, entered)
        else:
            result, left = "rejected", 0
        assert m.lease is not None
        end = min(time.monotonic(), m.lease.valid_until)
        rec(kind="hold", token=token, acquired=acquired, end=end, fence=result, entered=entered, left=left)
        try:
            m.release()
        except ClientError:
            pass


def run_semaphore(c: Client, a: argparse.Namespace, rec: Recorder) -> None:
    while not os.path.exists(a.stop):
        sem = lock.Semaphore(c, a.name, SEMAPHORE_LIMIT, ttl=a.ttl, poll=0.5)
        try:
            token = sem.acquire(timeout=5)
        except lock.LockTimeout:
            continue
        acquired = time.monotonic()
        time.sleep(random.uniform(0.05, 0.3))  # the work; SIGSTOP may land here
        assert sem.lease is not None
        end = min(time.monotonic(), sem.lease.valid_until)
        rec(kind="hold", token=token, acquired=acquired, end=end)
        try:
            sem.release()
        except ClientError:
            pass


def run_leader(c: Client, a: argparse.Namespace, rec: Recorder) -> None:
    fence = f"/fence/{a.name}"
    e = election.Election(c, a.name, ttl=a.ttl, poll=0.5)
    while not os.path.exists(a.stop):
        try:
            token = e.campaign(f"cand-{os.getpid()}", timeout=5)
        except election.ElectionTimeout:
            continue
        won = time.monotonic()
        enter, entered = retrying(fence_enter, c, fence, token)
        if enter == "ok":
            time.sleep(random.uniform(0.2, 0.6))
            result, left = retrying(fence_exit, c, fence, token, entered)
        else:
            result, left = "rejected", 0
        assert e.lease is not None
        end = min(time.monotonic(), e.lease.valid_until)
        rec(kind="term", token=token, won=won, end=end, fence=result, entered=entered, left=left)
        try:
            e.resign()
        except ClientError:
            pass
        time.sleep(random.uniform(0.0, 0.2))


def run_consumer(c: Client, a: argparse.Namespace, rec: Recorder) -> None:
    q = queue.Queue(c, a.name, poll=0.5)
    while not os.path.exists(a.stop):
        try:
            item = q.take(timeout=1)
        except ClientError as err:
            rec(kind="error", error=str(err))
            continue
        if item is not None:
            rec(kind="item", value=item.value, at=time.monotonic())
            time.sleep(random.uniform(0.0, 0.05))


def run_instance(c: Client, a: argparse.Namespace, rec: Recorder) -> None:
    reg = discovery.ServiceRegistration(c, a.name, f"i{os.getpid()}", f"127.0.0.1:{os.getpid()}", ttl=a.ttl)
    reg.register()
    rec(kind="registered", id=f"i{os.getpid()}", at=time.monotonic())
    while not os.path.exists(a.stop):
        time.sleep(0.05)
    reg.deregister()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["lock", "semaphore", "leader", "consumer", "instance"])
    p.add_argument("--endpoints", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--ttl", type=int, default=2)
    a = p.parse_args()
    rec = Recorder(a.out)
    with Client(a.endpoints.split(","), timeout=2.0) as c:
        roles = {
            "lock": run_lock,
            "semaphore": run_semaphore,
            "leader": run_leader,
            "consumer": run_consumer,
            "instance": run_instance,
        }
        roles[a.role](c, a, rec)
    rec(kind="exit")
    sys.exit(0)


if __name__ == "__main__":
    main()
