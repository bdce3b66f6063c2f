"""Listening sockets for the listeners that accept connections themselves (the https client and
peer listeners, which hand each socket to TLS before a byte of it is read)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator


def address_text(addr: object) -> str:
    """``host:port`` for a socket address as Python gives it (a tuple), else its text."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def listen_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking sockets listening on every address ``host`` resolves to, as
    ``loop.create_server`` binds them (SO_REUSEADDR; IPv6 sockets IPv6 only).  Raises OSError,
    with nothing left open."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            lsock = socket.socket(family, kind, proto)
            sockets.append(lsock)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            lsock.bind(addr)
            lsock.listen(backlog)
            lsock.setblocking(False)
    except BaseException:
        for lsock in sockets:
            lsock.close()
        raise
    return sockets


def accept_ready(lsock: socket.socket, limit: int) -> Iterator[tuple[socket.socket, object]]:
    """The connections waiting on a readable listening socket, at most ``limit``, each made
    non-blocking (and TCP_NODELAY).  Stops when none is left; an error such as running out of
    descriptors is raised (OSError), and the connection waits in the backlog for the next try."""
    for _ in range(limit):
        try:
            conn, remote = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield conn, remote


def close_listeners(sockets: list[socket.socket], remove_reader: Callable[[int], object]) -> None:
    """Stops watching and closes each listening socket still open (``remove_reader`` is the
    loop's)."""
    for lsock in sockets:
        if lsock.fileno() >= 0:
            remove_reader(lsock.fileno())
            lsock.close()
