"""Pure-Python twin of native/watchfan.pyx: the same rules, one sink at a time, no fast paths
(``threads`` is accepted and ignored: the writes are the same, only made one after another)."""

from __future__ import annotations

import os
from typing import Any


class Sink:
    def __init__(self, fd: int, transport: Any, owner: Any) -> None:
        self.fd = fd
        self.transport = transport
        self.owner = owner
        self.live = True

    def close(self) -> None:
        self.live = False
        self.transport = None


def send_all(data: bytes, sinks: list[Sink], threads: int = 1) -> int:
    delivered = 0
    for s in sinks:
        t = s.transport
        if not s.live or t is None or t.is_closing():
            continue
        sent = 0
        if s.fd >= 0 and not t.get_write_buffer_size():
            try:
                sent = os.write(s.fd, data)
            except OSError:  # a full buffer or a broken connection: the transport deals with it
                sent = 0
        s.live = False
        delivered += 1
        if sent < len(data):
            try:
                t.write(data[sent:])
            except Exception:  # noqa: BLE001 - as the compiled module
                pass
    return delivered
