from libc.stdint cimport uint64_t


cdef class Entry:
    cdef readonly uint64_t term
    cdef readonly uint64_t index
    cdef readonly int type
    cdef readonly bytes data
