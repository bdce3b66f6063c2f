"""Shared inputs for the micro benchmarks.

Every input is deterministic (fixed seed) and sized like the server's real traffic: a group commit
of 64 entries with 100-byte payloads, a PUT with a 100-byte value.  Native and twin always get the
very same objects, so their timings compare like with like.
"""

from __future__ import annotations

import random

import pytest

BATCH = 64  # entries per group commit / MsgApp
ENTRY_BYTES = 100  # payload of one entry, and the value of a PUT
FIRST_INDEX = 1000
TERM = 5


def payload(seed: int, size: int = ENTRY_BYTES) -> bytes:
    return random.Random(seed).randbytes(size)


def json_value(size: int = ENTRY_BYTES) -> str:
    """A 100-character value that looks like what clients store (JSON: quotes to escape)."""
    base = '{"host":"10.0.0.42","port":2379,"weight":10,"tags":["primary","zone-a"],"meta":"'
    return (base + "x" * size)[: size - 2] + '"}'


@pytest.fixture(scope="session")
def entry_batch() -> list[tuple[int, int, int, bytes]]:
    """(term, index, type, data) of 64 consecutive entries; each side builds its own Entry objects."""
    return [(TERM, FIRST_INDEX + i, 0, payload(i)) for i in range(BATCH)]
