"""free_port: below the ephemeral range, free, never the same twice in one process."""

from __future__ import annotations

import socket

from fastkv.testing.ports import ephemeral_low, free_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= p < min(32768, ephemeral_low()) for p in ports)
    for p in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # still free: nothing bound it meanwhile


def test_a_bound_port_is_never_handed_out() -> None:
    held = []
    try:
        for _ in range(50):
            s = socket.socket()
            s.bind(("127.0.0.1", free_port()))
            held.append(s)
        bound = {s.getsockname()[1] for s in held}
        assert not bound & {free_port() for _ in range(200)}
    finally:
        for s in held:
            s.close()
