"""The watch benchmark's receiving loop, compiled (see native/benchwatch.pyx)."""

from collections.abc import Callable

def collect(
    epfd: int,
    watcher_fds: list[int],
    tails: list[bytes],
    writer_fd: int,
    on_writer: Callable[[bytes], float],
    timeout_s: float,
) -> tuple[list[float], list[int], float, int, float]: ...
