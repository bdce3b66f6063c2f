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
- Large fan-outs are split: with ``threads`` > 1 (default: the CPUs this process may use, at most 4)
  and at least ``MIN_PER_THREAD`` sinks for each, the direct writes are made by that many threads at
  once, each on its own contiguous share (the kernel's TCP work per write is most of the cost, and
  it runs in parallel on different sockets).  The caller's thread takes the first share; the others
  go to helper threads (Python threads, writing without the GIL) started on first use and kept
  (parked on a condition variable between fan-outs).  The caller waits for every share before anything else happens, so no socket can be
  closed meanwhile.  One fan-out at a time uses the helpers; a concurrent one writes alone.
- One broken transport does not stop the others: an exception from its ``write`` is swallowed (the
  transport reports its own errors to its protocol).

tests/twins/watchfan.py is the pure-Python twin; a test runs both over real sockets.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, malloc

import os
import threading

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL

# Fewer sockets per thread than this are not worth waking a helper for.
MIN_PER_THREAD = 128
DEFAULT_THREADS = max(1, min(4, len(os.sched_getaffinity(0))))
DEF MAX_THREADS = 8


cdef extern from *:
    """
    static inline Py_ssize_t watchfan_claim(Py_ssize_t *cursor, Py_ssize_t n) {
        return __atomic_fetch_add(cursor, n, __ATOMIC_RELAXED);
    }
    """
    Py_ssize_t watchfan_claim(Py_ssize_t *cursor, Py_ssize_t n) nogil

# Sockets a writer claims at a time from the shared cursor.
DEF CLAIM = 8


cdef struct Share:
    const int *fds
    Py_ssize_t *sent
    Py_ssize_t *cursor  # the next unclaimed index, shared by every writer of the pass
    Py_ssize_t end
    const char *buf
    Py_ssize_t size


cdef void send_share(Share *sh) noexcept nogil:
    """Claim CLAIM sockets at a time from the shared cursor and write them, until none is left:
    a writer that starts late (its core busy) leaves its part to the others instead of ending last."""
    cdef Py_ssize_t i, first, last
    cdef ssize_t r
    cdef int fd
    cdef int flags = MSG_DONTWAIT | MSG_NOSIGNAL
    while True:
        first = watchfan_claim(sh.cursor, CLAIM)
        if first >= sh.end:
            return
        last = first + CLAIM
        if last > sh.end:
            last = sh.end
        for i in range(first, last):
            fd = sh.fds[i]
            if fd < 0:
                continue
            while True:
                r = send(fd, sh.buf, sh.size, flags)
                if r < 0 and errno == EINTR:
                    continue
                break
            sh.sent[i] = r if r > 0 else 0


# The helper threads: Python threads (so the module needs no libpthread symbols newer than what
# the interpreter links), each writing its share with the GIL released.  ``_job_lock`` is held by
# the fan-out using them; ``_posted`` guards the job state below.
_job_lock = threading.Lock()
_posted = threading.Condition()
_helpers: list = []
cdef unsigned long generation = 0  # bumped for every job
cdef Share *job_shares = NULL  # job_shares[k] is helper k's share (index 0 is the caller's)
cdef int job_helpers = 0  # helpers 1..job_helpers have a share in this job
cdef int pending = 0  # shares not finished yet


cdef void run_share(int k) noexcept:
    cdef Share *share = &job_shares[k]
    with nogil:
        send_share(share)


def _helper_main(int k, unsigned long started):
    """Helper k: waits for jobs posted after ``started`` and writes its share of each."""
    global pending
    cdef unsigned long seen = started
    while True:
        with _posted:
            while generation == seen:
                _posted.wait()
            seen = generation
            if k > job_helpers:
                continue
        run_share(k)
        with _posted:
            pending -= 1
            if pending == 0:
                _posted.notify_all()


cdef int ensure_helpers(int wanted):
    """Start helpers up to ``wanted`` (called with ``_job_lock`` held); how many there are."""
    while len(_helpers) < wanted:
        t = threading.Thread(
            target=_helper_main, args=(len(_helpers) + 1, generation), name="watch-fanout", daemon=True
        )
        t.start()
        _helpers.append(t)
    return len(_helpers)


cdef void send_shares(Share *shares, int count):
    """Every socket written: by this thread and the helpers, claiming from the shares' cursor."""
    global generation, job_shares, job_helpers, pending
    cdef int available
    if count > 1 and _job_lock.acquire(False):
        try:
            available = ensure_helpers(count - 1)
            if available > count - 1:
                available = count - 1
            with _posted:
                job_shares = shares
                job_helpers = available
                pending = available
                generation += 1
                _posted.notify_all()
            with nogil:
                # The shares claim from one cursor: this runs until every socket is claimed.
                send_share(&shares[0])
            with _posted:
                while pending > 0:
                    _posted.wait()
                job_shares = NULL
        finally:
            _job_lock.release()
        return
    with nogil:
        send_share(&shares[0])


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


def send_all(bytes data, list sinks, int threads=DEFAULT_THREADS):
    """Write ``data`` to every live sink of ``sinks`` (see the module's rules); the number delivered."""
    cdef Py_ssize_t n = len(sinks)
    cdef Py_ssize_t i, size = PyBytes_GET_SIZE(data)
    cdef int *fds
    cdef Py_ssize_t *sent
    cdef int delivered = 0
    cdef int t
    cdef Py_ssize_t cursor = 0
    cdef Share shares[MAX_THREADS]
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
        # Pass 2: the direct writes, without the GIL, in ``threads`` contiguous shares.
        if threads > MAX_THREADS:
            threads = MAX_THREADS
        if threads > n // MIN_PER_THREAD:
            threads = <int>(n // MIN_PER_THREAD)
        if threads < 1:
            threads = 1
        for t in range(threads):
            shares[t].fds = fds
            shares[t].sent = sent
            shares[t].cursor = &cursor
            shares[t].end = n
            shares[t].buf = PyBytes_AS_STRING(data)
            shares[t].size = size
        send_shares(shares, threads)
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
