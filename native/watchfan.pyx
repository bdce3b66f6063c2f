# cython: language_level=3
"""Watch fan-out: the same bytes written to many client connections in one pass.

A ``Sink`` stands for one waiting watch answer on a plain TCP connection: its socket's fd, its asyncio
transport and an opaque ``owner`` (the connection's protocol).  ``send_all(data, sinks)`` delivers
``data`` to every live sink and marks it delivered; the caller then finishes the owners off the clock.

Rules:

- Order on a connection is the transport's: a sink whose transport still holds unsent bytes gets
  ``data`` through ``transport.write`` (queued behind them).  Only a sink with an empty transport
  buffer is written directly with ``send(2)``, which is what the transport would do itself.
- The direct writes run in one loop without the GIL and never block (``MSG_DONTWAIT``) nor raise
  SIGPIPE (``MSG_NOSIGNAL``).  What a socket did not take (a partial write, a full buffer, an error)
  goes to ``transport.write``: the transport buffers the rest, or sees the error and closes the
  connection, exactly as if it had made the write.
- A sink is delivered at most once (``live`` drops to False); closed sinks (``close()``, the
  connection went away) and sinks whose transport is closing are skipped: a closing transport may
  have closed its socket already, and the fd number may belong to another connection by now.
- One broken transport does not stop the others: an exception from its ``write`` is swallowed (the
  transport reports its own errors to its protocol).

tests/twins/watchfan.py is the pure-Python twin; a test runs both over real sockets.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, malloc

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL


cdef class Sink:
    """One watch answer waiting on a plain TCP connection."""

    cdef public int fd
    cdef public object transport
    cdef public object owner
    cdef public bint live

    def __init__(self, int fd, object transport, object owner):
        self.fd = fd
        self.transport = transport
        self.owner = owner
        self.live = True

    def close(self):
        """The connection went away: never write to it."""
        self.live = False
        self.transport = None

    def __repr__(self):
        return f"Sink(fd={self.fd}, live={self.live})"


def send_all(bytes data, list sinks):
    """Write ``data`` to every live sink of ``sinks`` (see the module's rules); the number delivered."""
    cdef Py_ssize_t n = len(sinks)
    cdef Py_ssize_t i, size = PyBytes_GET_SIZE(data)
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef int *fds
    cdef Py_ssize_t *sent
    cdef ssize_t r
    cdef int fd
    cdef int delivered = 0
    cdef int flags = MSG_DONTWAIT | MSG_NOSIGNAL
    cdef Sink s
    if n == 0:
        return 0
    fds = <int *>malloc(n * sizeof(int))
    sent = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
    if fds == NULL or sent == NULL:
        free(fds)
        free(sent)
        raise MemoryError()
    try:
        # Pass 1: which sinks take a direct write (-1: skip, -2: through the transport).
        for i in range(n):
            s = <Sink>sinks[i]
            sent[i] = 0
            if not s.live or s.transport is None or s.transport.is_closing():
                fds[i] = -1
            elif s.fd < 0 or s.transport.get_write_buffer_size():
                fds[i] = -2
            else:
                fds[i] = s.fd
        # Pass 2: the direct writes, without the GIL.
        with nogil:
            for i in range(n):
                fd = fds[i]
                if fd < 0:
                    continue
                while True:
                    r = send(fd, buf, size, flags)
                    if r < 0 and errno == EINTR:
                        continue
                    break
                sent[i] = r if r > 0 else 0
        # Pass 3: the rest through the transports; every live sink is now delivered.
        for i in range(n):
            if fds[i] == -1:
                continue
            s = <Sink>sinks[i]
            s.live = False
            delivered += 1
            if sent[i] < size:
                try:
                    s.transport.write(data[sent[i]:] if sent[i] else data)
                except Exception:  # noqa: BLE001 - the transport closes itself; the others go on
                    pass
    finally:
        free(fds)
        free(sent)
    return delivered
