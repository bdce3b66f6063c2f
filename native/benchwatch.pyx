# cython: language_level=3
"""The watch benchmark's receiving loop (fastkv.bench.watch, phase 2), compiled.

``collect`` waits on an epoll set for every watcher's complete event and for the write's answer and
records when each one arrived, exactly as the Python loop in ``fastkv.bench.watch`` does (which stays
as its twin): level-triggered ``epoll_wait``, one ``recv`` of up to 64 KiB per ready socket, a watcher
is done when what it has received since its headers is non-empty and its stream ends with the last
chunk ``0\\r\\n\\r\\n``; the time is taken right after that ``recv``, on the clock of
``time.perf_counter`` (CLOCK_MONOTONIC).  No Python object is made per watcher or per ``recv``:
the loop costs the driver about the ``recv`` itself, so its own time bounds the measured fan-out
less.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EINTR, EAGAIN, errno
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy

cdef extern from "<sys/epoll.h>" nogil:
    cdef union epoll_data_t:
        int fd
        unsigned long long u64
    cdef struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int EPOLL_CTL_DEL

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC

DEF TAIL = 5
DEF RECV_BYTES = 65536
DEF MAX_EVENTS = 1024


cdef inline double now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def collect(int epfd, list watcher_fds, list tails, int writer_fd, object on_writer, double timeout_s):
    """Phase 2 of a round: returns ``(done_at, closed, busy_s, wakeups, t_ack)``.

    ``watcher_fds[i]``: watcher i's socket (registered in ``epfd``); ``tails[i]``: the last bytes it
    received before (its headers' end).  ``on_writer(data)`` is called with what the write's
    connection receives and returns the answer's time once it is complete (else 0.0).  A watcher
    whose connection closes is removed from ``epfd`` and listed in ``closed`` (an error before its
    event).  The loop ends when every watcher is done and the answer is complete."""
    cdef Py_ssize_t n = len(watcher_fds)
    cdef Py_ssize_t i
    cdef int fd, maxfd = writer_fd, k, ready
    cdef int *index_of = NULL
    cdef char *tail = NULL
    cdef unsigned char *state = NULL  # 1: data since the headers, 2: done
    cdef double *done = NULL
    cdef char *buf = NULL
    cdef epoll_event events[MAX_EVENTS]
    cdef ssize_t r, keep
    cdef Py_ssize_t remaining = n
    cdef double t_ack = 0.0, woke, busy = 0.0, deadline
    cdef long wakeups = 0
    cdef bytes t
    closed = []
    for i in range(n):
        fd = watcher_fds[i]
        if fd > maxfd:
            maxfd = fd
    try:
        index_of = <int *>malloc((maxfd + 1) * sizeof(int))
        tail = <char *>calloc(n * TAIL, 1)
        state = <unsigned char *>calloc(n, 1)
        done = <double *>calloc(n, sizeof(double))
        buf = <char *>malloc(RECV_BYTES + TAIL)
        if index_of == NULL or tail == NULL or state == NULL or done == NULL or buf == NULL:
            raise MemoryError()
        for i in range(maxfd + 1):
            index_of[i] = -1
        for i in range(n):
            index_of[<int>watcher_fds[i]] = <int>i
            t = tails[i]
            keep = PyBytes_GET_SIZE(t)
            if keep > TAIL:
                keep = TAIL
            # Right-aligned: tail[i] holds the stream's last TAIL bytes (zeros before the first ones).
            memcpy(tail + i * TAIL + TAIL - keep, PyBytes_AS_STRING(t) + PyBytes_GET_SIZE(t) - keep, keep)
        deadline = now() + timeout_s
        while remaining or t_ack == 0.0:
            if now() > deadline:
                raise TimeoutError(f"{remaining} of {n} watchers got no event within {timeout_s} s")
            with nogil:  # other threads of the process (a test's server side) run meanwhile
                ready = epoll_wait(epfd, events, MAX_EVENTS, 1000)
            woke = now()
            wakeups += 1
            if ready < 0:
                if errno == EINTR:
                    continue
                raise OSError(errno, "epoll_wait")
            for k in range(ready):
                fd = events[k].data.fd
                if fd == writer_fd:
                    r = recv(fd, buf, RECV_BYTES, 0)
                    if r < 0 and (errno == EAGAIN or errno == EINTR):
                        continue
                    if r <= 0:
                        raise ConnectionError("the writer's connection closed")
                    t_ack = on_writer(PyBytes_FromStringAndSize(buf, r))
                    continue
                i = index_of[fd] if fd <= maxfd else -1
                if i < 0:
                    raise RuntimeError(f"epoll reported fd {fd}, which is no watcher's")
                r = recv(fd, buf + TAIL, RECV_BYTES, 0)
                if r < 0 and (errno == EAGAIN or errno == EINTR):
                    continue
                if r <= 0:
                    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL)
                    index_of[fd] = -1
                    closed.append(i)
                    if state[i] != 2:
                        raise ConnectionError(f"watcher {i} closed without an event")
                    continue
                if state[i] == 2:
                    continue  # more after its event: kept out of the figures, as the Python loop
                state[i] = 1
                # The stream's last TAIL bytes: the old tail, then what just arrived.
                memcpy(buf, tail + i * TAIL, TAIL)
                memcpy(tail + i * TAIL, buf + r, TAIL)
                if memcmp(tail + i * TAIL, b"0\r\n\r\n", TAIL) == 0:
                    done[i] = now()
                    state[i] = 2
                    remaining -= 1
            busy += now() - woke
        return [done[i] for i in range(n)], closed, busy, wakeups, t_ack
    finally:
        free(index_of)
        free(tail)
        free(state)
        free(done)
        free(buf)
