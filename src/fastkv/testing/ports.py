"""Free TCP ports on 127.0.0.1 for servers that cannot be asked which port they bound.

A fastkv member must know its peer URL before it starts (the URL is in every member's
``--initial-cluster``), so letting the kernel pick (port 0) is no option.  Ports are drawn at
random below the kernel's ephemeral range (outgoing connections take their local ports from that
range, so a listener there can collide with one), checked by binding, and never handed out twice
by one process.  Another process can still take a port between the check and the server's own
bind: the starting code retries with fresh ports when a server reports "address already in use".
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

LOWEST_PORT = 20000
_DEFAULT_EPHEMERAL_LOW = 32768

_rng = random.Random(os.getpid() ^ time.monotonic_ns())
_lock = threading.Lock()
# Ports handed out by this process: a port is bound only later, by the server, so two calls in a
# row must never return the same one.
_handed_out: set[int] = set()


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (net.ipv4.ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port below the ephemeral range (and below 32768) that is free on ``host`` right now
    and that this process has not handed out before."""
    high = min(ephemeral_low(), _DEFAULT_EPHEMERAL_LOW) - 1
    low = LOWEST_PORT if high > LOWEST_PORT + 1000 else 1024
    with _lock:
        for _ in range(500):
            port = _rng.randrange(low, high)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port found in [{low}, {high}) on {host}")
