"""Watch fan-out: the same bytes to many connections in one pass (see native/watchfan.pyx)."""

from typing import Any

class Sink:
    fd: int
    transport: Any
    owner: Any
    live: bool
    def __init__(self, fd: int, transport: Any, owner: Any) -> None: ...
    def close(self) -> None: ...

MIN_PER_THREAD: int
DEFAULT_THREADS: int

def send_all(data: bytes, sinks: list[Sink], threads: int = ...) -> int: ...
