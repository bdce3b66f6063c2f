# cython: language_level=3
"""Raft's log entry (Raft paper, figure 2), a C-level class that the WAL codec and the peer codec
build and read directly (declared in fastkv/_native/raftentry.pxd)."""

cimport cython
from libc.stdint cimport uint64_t


# A member keeps up to --snapshot-count entries (+ a catch-up tail) in
# memory: as tuples or plain objects each would be tracked by the cyclic GC, and every full
# collection walked all of them (100k entries: 100 ms pauses).  An entry refers only to a
# bytes object, so it can never be in a reference cycle and opting out of the GC is safe.
@cython.final
@cython.no_gc
cdef class Entry:
    """One log entry: ``term``, ``index``, ``type`` (0 normal, 1 conf change) and ``data``."""

    def __init__(self, uint64_t term, uint64_t index, int type, bytes data):
        self.term = term
        self.index = index
        self.type = type
        self.data = data

    def __richcmp__(self, other, int op):
        if not isinstance(other, Entry):
            return NotImplemented
        cdef Entry o = <Entry>other
        same = (self.term == o.term and self.index == o.index and self.type == o.type
                and self.data == o.data)
        if op == 2:
            return same
        if op == 3:
            return not same
        return NotImplemented

    def __hash__(self):
        return hash((self.term, self.index, self.type, self.data))

    def __iter__(self):
        return iter((self.term, self.index, self.type, self.data))

    def __repr__(self):
        return f"Entry(term={self.term}, index={self.index}, type={self.type}, data={self.data!r})"

    def __reduce__(self):
        return (Entry, (self.term, self.index, self.type, self.data))
