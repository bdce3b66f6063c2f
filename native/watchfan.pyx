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
  go to helper threads started on first use and kept (parked on a condition variable between
  fan-outs).  The caller waits for every share before anything else happens, so no socket can be
  closed meanwhile.  One fan-out at a time uses the helpers; a concurrent one writes alone.
- One broken transport does not stop the others: an exception from its ``write`` is swallowed (the
  transport reports its own errors to its protocol).

tests/twins/watchfan.py is the pure-Python twin; a test runs both over real sockets.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, malloc

import os

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t *thread, const void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_detach(pthread_t thread)
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_trylock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, const void *attr)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_broadcast(pthread_cond_t *c)
    int pthread_cond_signal(pthread_cond_t *c)

# A share smaller than this is not worth a thread (creating one costs tens of µs).
MIN_PER_THREAD = 256
DEFAULT_THREADS = max(1, min(4, len(os.sched_getaffinity(0))))
DEF MAX_THREADS = 8


cdef struct Share:
    const int *fds
    Py_ssize_t *sent
    Py_ssize_t start
    Py_ssize_t end
    const char *buf
    Py_ssize_t size


cdef void send_share(Share *sh) noexcept nogil:
    cdef Py_ssize_t i
    cdef ssize_t r
    cdef int fd
    cdef int flags = MSG_DONTWAIT | MSG_NOSIGNAL
    for i in range(sh.start, sh.end):
        fd = sh.fds[i]
        if fd < 0:
            continue
        while True:
            r = send(fd, sh.buf, sh.size, flags)
            if r < 0 and errno == EINTR:
                continue
            break
        sh.sent[i] = r if r > 0 else 0


# The helper threads.  ``job_lock`` is held by the fan-out using them; ``lock`` guards the rest.
cdef pthread_mutex_t job_lock
cdef pthread_mutex_t lock
cdef pthread_cond_t work_posted
cdef pthread_cond_t work_done
cdef unsigned long generation = 0  # bumped for every job
cdef Share *job_shares = NULL  # job_shares[k] is helper k's share (index 0 is the caller's)
cdef int job_helpers = 0  # helpers 1..job_helpers have a share in this job
cdef int pending = 0  # shares not finished yet
cdef int helpers = 0  # helper threads started (numbered 1..helpers)
cdef unsigned long started_at[MAX_THREADS]  # the generation when helper k was started
pthread_mutex_init(&job_lock, NULL)
pthread_mutex_init(&lock, NULL)
pthread_cond_init(&work_posted, NULL)
pthread_cond_init(&work_done, NULL)


cdef void *helper_main(void *arg) noexcept nogil:
    global pending
    cdef int k = <int><Py_ssize_t>arg
    cdef unsigned long seen
    cdef Share *share
    pthread_mutex_lock(&lock)
    seen = started_at[k]  # jobs posted after that are this helper's, even before it first runs
    while True:
        while generation == seen:
            pthread_cond_wait(&work_posted, &lock)
        seen = generation
        if k > job_helpers:
            continue
        share = &job_shares[k]
        pthread_mutex_unlock(&lock)
        send_share(share)
        pthread_mutex_lock(&lock)
        pending -= 1
        if pending == 0:
            pthread_cond_signal(&work_done)
    return NULL


cdef int ensure_helpers(int wanted) noexcept nogil:
    """Start helpers up to ``wanted`` (called with ``job_lock`` held); how many there are."""
    global helpers
    cdef pthread_t tid
    while helpers < wanted:
        started_at[helpers + 1] = generation  # stable: jobs are posted only under job_lock
        if pthread_create(&tid, NULL, helper_main, <void *><Py_ssize_t>(helpers + 1)) != 0:
            break
        pthread_detach(tid)
        helpers += 1
    return helpers


cdef void send_shares(Share *shares, int count) noexcept nogil:
    """Every share written: the first by this thread, the others by helpers when they are free."""
    global generation, job_shares, job_helpers, pending
    cdef int t, available
    if count > 1 and pthread_mutex_trylock(&job_lock) == 0:
        available = ensure_helpers(count - 1)
        if available > count - 1:
            available = count - 1
        pthread_mutex_lock(&lock)
        job_shares = shares
        job_helpers = available
        pending = available
        generation += 1
        pthread_cond_broadcast(&work_posted)
        pthread_mutex_unlock(&lock)
        send_share(&shares[0])
        for t in range(available + 1, count):
            send_share(&shares[t])
        pthread_mutex_lock(&lock)
        while pending > 0:
            pthread_cond_wait(&work_done, &lock)
        job_shares = NULL
        pthread_mutex_unlock(&lock)
        pthread_mutex_unlock(&job_lock)
        return
    for t in range(count):
        send_share(&shares[t])


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
            shares[t].start = n * t // threads
            shares[t].end = n * (t + 1) // threads
            shares[t].buf = PyBytes_AS_STRING(data)
            shares[t].size = size
        with nogil:
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
