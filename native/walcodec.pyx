"""WAL record framing: the encoder that builds one group-commit buffer and writes it with
the GIL released, and the decoder that replays segments.

Record layout (all integers little-endian, every record a multiple of 8 bytes long so
that each header starts 8-byte aligned when the segment does):

    0   u32  payload length L
    4   u8   record type (ENTRY_RECORD ... METADATA_RECORD, etcd's numbering)
    5   3    zero
    8   u32  crc:  crc32c(previous record's crc, bytes 0..8 + payload)   (the chain)
    12  u32  hcrc: crc32c(0, bytes 0..12)                               (the header alone)
    16  L    payload, then zero padding up to the next multiple of 8

Rules and invariants:
- The crc chains every record to the one before it, across segments: the first record of
  each segment is a CRC_RECORD whose payload is the running crc at the end of the previous
  segment (0 for the first segment), and its own crc continues from that value.  Replay
  therefore detects a lost, reordered or substituted record anywhere in the log.
- The header has its own check so that a damaged length is never trusted: without it a
  flipped length bit in a middle record could make the reader skip over good records and
  mistake corruption for a torn tail.
- The crc does not cover the padding, so replay checks that it is zero.
- A written header is never all zero (its type byte is 1..5), so sixteen zero bytes mark
  the end of the data in a preallocated (zero-filled) segment.
- Payloads: ENTRY term u64, index u64, type u8, data; STATE term u64, vote u64, commit u64;
  CRC u32; SNAPSHOT term u64, index u64; METADATA opaque bytes.
- Entry replay follows the Raft log (Raft paper §5.3): an entry whose index is at or below
  one already replayed replaces that entry and everything after it (a new leader
  overwrote an uncommitted suffix); entries at or below the snapshot index are skipped; a
  gap is corruption.

Non-goals: deciding whether a bad record is a torn tail or corruption (that needs the
segment's position in the WAL and what follows the record; storage/wal.py decides), and
any file handling beyond write(2)/fdatasync(2) on a descriptor it is given.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_SIZE
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
cimport cython


from fastkv._native.raftentry cimport Entry

cdef extern from "crc32c.h":
    void fastkv_crc32c_init() noexcept nogil
    uint32_t fastkv_crc32c_update(uint32_t crc, const unsigned char* p, size_t n) noexcept nogil

cdef extern from "<unistd.h>" nogil:
    ctypedef long off_t
    ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset)
    int fdatasync(int fd)

fastkv_crc32c_init()

cdef enum:
    _HEADER_SIZE = 16
    _ENTRY_FIXED = 17

cdef enum RecordType:
    R_ENTRY = 1
    R_STATE = 2
    R_CRC = 3
    R_SNAPSHOT = 4
    R_METADATA = 5

# Why decode() stopped.  END: sixteen zero bytes or the end of the buffer at a record
# boundary.  The others leave the offset at the start of the offending record.
cdef enum Status:
    S_END = 0
    S_BAD_HEADER = 1        # header check failed, nonzero reserved bytes or an unknown type
    S_SHORT = 2             # the record runs past the end of the buffer (or a partial header)
    S_BAD_CRC = 3           # the chained crc does not match
    S_BAD_PAYLOAD = 4       # the payload length does not fit the record type
    S_BAD_CHAIN = 5         # a CRC_RECORD disagrees with the running crc of the previous segment
    S_METADATA_MISMATCH = 6
    S_INDEX_GAP = 7
    S_BAD_PADDING = 8       # the crc holds but the padding after the payload is not zero

HEADER_SIZE = _HEADER_SIZE
ENTRY_FIXED_SIZE = _ENTRY_FIXED

ENTRY_RECORD = R_ENTRY
STATE_RECORD = R_STATE
CRC_RECORD = R_CRC
SNAPSHOT_RECORD = R_SNAPSHOT
METADATA_RECORD = R_METADATA

END = S_END
BAD_HEADER = S_BAD_HEADER
SHORT = S_SHORT
BAD_CRC = S_BAD_CRC
BAD_PAYLOAD = S_BAD_PAYLOAD
BAD_CHAIN = S_BAD_CHAIN
METADATA_MISMATCH = S_METADATA_MISMATCH
INDEX_GAP = S_INDEX_GAP
BAD_PADDING = S_BAD_PADDING

STATUS_NAMES = (
    "end", "bad record header", "record runs past the end of the file", "crc mismatch",
    "bad record payload", "crc chain broken between segments", "metadata differs from the first segment",
    "entry index gap", "nonzero padding",
)


cdef inline void put_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xff
    p[1] = (v >> 8) & 0xff
    p[2] = (v >> 16) & 0xff
    p[3] = (v >> 24) & 0xff


cdef inline void put_u64(unsigned char* p, uint64_t v) noexcept nogil:
    put_u32(p, <uint32_t>(v & 0xffffffffu))
    put_u32(p + 4, <uint32_t>(v >> 32))


cdef inline uint32_t get_u32(const unsigned char* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t get_u64(const unsigned char* p) noexcept nogil:
    return <uint64_t>get_u32(p) | (<uint64_t>get_u32(p + 4) << 32)


cdef inline size_t padded(size_t n) noexcept nogil:
    return (n + 7) & ~(<size_t>7)


cdef class Encoder:
    """A growable buffer of framed records and the running crc after the last of them.

    One Encoder lives as long as the WAL; save() adds a batch, writes it and clears it, so
    the buffer is allocated once and grows to the largest batch seen.
    """

    cdef unsigned char* buf
    cdef size_t length
    cdef size_t capacity
    cdef public uint32_t crc

    def __cinit__(self, uint32_t crc=0, size_t capacity=65536):
        self.capacity = capacity if capacity >= 64 else 64
        self.buf = <unsigned char*>malloc(self.capacity)
        if self.buf == NULL:
            raise MemoryError()
        self.length = 0
        self.crc = crc

    def __dealloc__(self):
        free(self.buf)

    def __len__(self):
        return self.length

    cdef int reserve(self, size_t extra) except -1:
        cdef size_t need = self.length + extra
        cdef size_t cap = self.capacity
        cdef unsigned char* nbuf
        if need <= cap:
            return 0
        while cap < need:
            cap *= 2
        nbuf = <unsigned char*>realloc(self.buf, cap)
        if nbuf == NULL:
            raise MemoryError()
        self.buf = nbuf
        self.capacity = cap
        return 0

    cdef unsigned char* begin(self, uint8_t rtype, size_t payload_len) except NULL:
        """Reserves a whole record and writes bytes 0..8 of its header; returns it."""
        if payload_len > 0xffffffffu:
            raise ValueError(f"WAL record payload of {payload_len} bytes is too large")
        self.reserve(_HEADER_SIZE + padded(payload_len))
        cdef unsigned char* rec = self.buf + self.length
        put_u32(rec, <uint32_t>payload_len)
        rec[4] = rtype
        rec[5] = 0
        rec[6] = 0
        rec[7] = 0
        return rec

    cdef void finish(self, unsigned char* rec, size_t payload_len) noexcept nogil:
        """Seals the record begun at rec once its payload is in place."""
        cdef size_t total = _HEADER_SIZE + padded(payload_len)
        cdef uint32_t c = fastkv_crc32c_update(self.crc, rec, 8)
        c = fastkv_crc32c_update(c, rec + _HEADER_SIZE, payload_len)
        put_u32(rec + 8, c)
        put_u32(rec + 12, fastkv_crc32c_update(0, rec, 12))
        if total > _HEADER_SIZE + payload_len:
            memset(rec + _HEADER_SIZE + payload_len, 0, total - _HEADER_SIZE - payload_len)
        self.crc = c
        self.length += total

    cdef int add_raw(self, uint8_t rtype, const unsigned char* payload, size_t n) except -1:
        cdef unsigned char* rec = self.begin(rtype, n)
        if n:
            memcpy(rec + _HEADER_SIZE, payload, n)
        self.finish(rec, n)
        return 0

    cdef int add_one_entry(self, object entry) except -1:
        cdef uint64_t term, index
        cdef uint8_t etype
        cdef object data
        cdef tuple t
        cdef Entry e
        if type(entry) is Entry:
            e = <Entry>entry
            term, index, etype, data = e.term, e.index, e.type, e.data
        elif PyTuple_Check(entry) and PyTuple_GET_SIZE(entry) == 4:
            t = <tuple>entry
            term, index, etype, data = t[0], t[1], t[2], t[3]
        else:
            raise TypeError("a WAL entry is an Entry or a (term, index, type, data) tuple")
        if not PyBytes_Check(data):
            data = bytes(data)
        cdef size_t n = <size_t>PyBytes_GET_SIZE(data)
        cdef unsigned char* rec = self.begin(R_ENTRY, _ENTRY_FIXED + n)
        cdef unsigned char* p = rec + _HEADER_SIZE
        put_u64(p, term)
        put_u64(p + 8, index)
        p[16] = etype
        if n:
            memcpy(p + _ENTRY_FIXED, PyBytes_AS_STRING(data), n)
        self.finish(rec, _ENTRY_FIXED + n)
        return 0

    def add_entries(self, list entries) -> None:
        """Appends one ENTRY_RECORD per (term, index, type, data) tuple, in order."""
        cdef Py_ssize_t i
        cdef Py_ssize_t n = PyList_GET_SIZE(entries)
        for i in range(n):
            self.add_one_entry(entries[i])

    def add_entry(self, entry) -> None:
        self.add_one_entry(entry)

    def add_hard_state(self, hard_state) -> None:
        """Appends a STATE_RECORD from a (term, vote, commit) tuple."""
        cdef unsigned char payload[24]
        if not PyTuple_Check(hard_state) or PyTuple_GET_SIZE(hard_state) != 3:
            raise TypeError("a hard state is a (term, vote, commit) tuple")
        cdef tuple t = <tuple>hard_state
        put_u64(payload, <uint64_t>t[0])
        put_u64(payload + 8, <uint64_t>t[1])
        put_u64(payload + 16, <uint64_t>t[2])
        self.add_raw(R_STATE, payload, 24)

    def add_crc(self) -> None:
        """Appends the CRC_RECORD that opens a segment: the running crc carried over."""
        cdef unsigned char payload[4]
        put_u32(payload, self.crc)
        self.add_raw(R_CRC, payload, 4)

    def add_snapshot(self, uint64_t term, uint64_t index) -> None:
        cdef unsigned char payload[16]
        put_u64(payload, term)
        put_u64(payload + 8, index)
        self.add_raw(R_SNAPSHOT, payload, 16)

    def add_metadata(self, const unsigned char[::1] metadata) -> None:
        cdef size_t n = metadata.shape[0]
        cdef const unsigned char* p = NULL
        if n:
            p = &metadata[0]
        self.add_raw(R_METADATA, p, n)

    def getvalue(self) -> bytes:
        return PyBytes_FromStringAndSize(<char*>self.buf, self.length)

    def clear(self) -> None:
        """Forgets the buffered records (the crc stays: it describes what was written)."""
        self.length = 0

    def write(self, int fd, int64_t offset) -> None:
        """pwrite(2)s the whole buffer at offset with the GIL released; raises OSError.

        A short write is continued (the kernel may split large writes); EINTR is retried.
        """
        cdef size_t done = 0
        cdef ssize_t r = 0
        cdef int err = 0
        with nogil:
            while done < self.length:
                r = pwrite(fd, self.buf + done, self.length - done, <off_t>(offset + <int64_t>done))
                if r < 0:
                    if errno == EINTR:
                        continue
                    err = errno
                    break
                if r == 0:
                    err = 5  # EIO: the device accepted nothing and gave no reason
                    break
                done += <size_t>r
        if err:
            raise OSError(err, f"WAL write of {self.length} bytes at offset {offset} failed")


def datasync(int fd) -> None:
    """fdatasync(2) with the GIL released; raises OSError (never retried: after a failed
    fsync the kernel may have dropped the dirty pages, so the data is not known durable)."""
    cdef int r
    cdef int err = 0
    with nogil:
        r = fdatasync(fd)
        if r != 0:
            err = errno
    if err:
        raise OSError(err, "WAL fdatasync failed")


def data_end(const unsigned char[::1] buf, Py_ssize_t start=0) -> int:
    """One past the last nonzero byte at or after start (start if there is none).

    Segments are preallocated with zeros and written front to back, so this bounds where
    the last write to a segment could have landed.
    """
    cdef Py_ssize_t end = buf.shape[0]
    with nogil:
        while end > start and (end & 7) != 0 and buf[end - 1] == 0:
            end -= 1
        while end - 8 >= start and (end & 7) == 0 and get_u64(&buf[end - 8]) == 0:
            end -= 8
        while end > start and buf[end - 1] == 0:
            end -= 1
    return end


cdef class Decoder:
    """Replays records segment after segment, carrying the crc and the Raft log across them.

    After decode() the public fields describe everything replayed so far: ``entries`` (the
    log after ``first_index - 1``), ``hard_state``, ``metadata``, ``snapshot`` (the last
    marker), ``last_index`` (index of the last entry record, skipped or not), ``crc``.
    """

    cdef public list entries
    cdef public uint64_t first_index
    cdef public object metadata
    cdef public object hard_state
    cdef public object snapshot
    cdef public uint64_t last_index
    cdef public uint32_t crc
    cdef public bint crc_known
    cdef public Py_ssize_t record_end
    cdef object entry_cls
    cdef object state_cls

    def __init__(self, entry_cls, state_cls, uint64_t first_index=1):
        """entry_cls is Entry (built at C level, because a restart replays hundreds of
        thousands of them) or a tuple subclass of (term, index, type, data) fields built with
        tuple.__new__; state_cls(term, vote, commit) builds
        the hard state; first_index is the snapshot index + 1."""
        self.entries = []
        self.first_index = first_index if first_index else 1
        self.metadata = None
        self.hard_state = None
        self.snapshot = None
        self.last_index = 0
        self.crc = 0
        self.crc_known = False
        self.record_end = 0
        self.entry_cls = entry_cls
        self.state_cls = state_cls

    def decode(self, const unsigned char[::1] buf, Py_ssize_t offset=0) -> tuple:
        """Replays records from offset; returns (offset, status) where it stopped.

        On a status other than END, offset is the start of the offending record and
        ``record_end`` the end its header claims (offset + HEADER_SIZE if the header itself
        is bad).  Nothing of the offending record has been applied.
        """
        cdef Py_ssize_t size = buf.shape[0]
        cdef const unsigned char* base = NULL
        cdef const unsigned char* rec
        cdef const unsigned char* payload
        cdef uint32_t length, c, carried
        cdef uint8_t rtype
        cdef Py_ssize_t total, pos, n
        cdef uint64_t term, index
        cdef Py_ssize_t k
        cdef object data
        cdef Entry e
        if size:
            base = &buf[0]
        while True:
            self.record_end = offset + _HEADER_SIZE
            if offset >= size:
                return offset, S_END
            rec = base + offset
            if size - offset < _HEADER_SIZE:
                for k in range(size - offset):
                    if rec[k] != 0:
                        return offset, S_SHORT
                return offset, S_END
            if get_u64(rec) == 0 and get_u64(rec + 8) == 0:
                return offset, S_END
            if (get_u32(rec + 12) != fastkv_crc32c_update(0, rec, 12)
                    or rec[5] != 0 or rec[6] != 0 or rec[7] != 0
                    or rec[4] < R_ENTRY or rec[4] > R_METADATA):
                return offset, S_BAD_HEADER
            length = get_u32(rec)
            rtype = rec[4]
            total = _HEADER_SIZE + <Py_ssize_t>padded(length)
            self.record_end = offset + total
            if total > size - offset:
                return offset, S_SHORT
            payload = rec + _HEADER_SIZE
            if rtype == R_CRC:
                if length != 4:
                    return offset, S_BAD_PAYLOAD
                carried = get_u32(payload)
                if self.crc_known and carried != self.crc:
                    return offset, S_BAD_CHAIN
                c = fastkv_crc32c_update(carried, rec, 8)
            else:
                c = fastkv_crc32c_update(self.crc, rec, 8)
            c = fastkv_crc32c_update(c, payload, length)
            if c != get_u32(rec + 8):
                return offset, S_BAD_CRC
            # The crc does not cover the padding; a changed byte there is still damage.
            for k in range(_HEADER_SIZE + <Py_ssize_t>length, total):
                if rec[k] != 0:
                    return offset, S_BAD_PADDING
            if rtype == R_ENTRY:
                if length < _ENTRY_FIXED:
                    return offset, S_BAD_PAYLOAD
                term = get_u64(payload)
                index = get_u64(payload + 8)
                if index >= self.first_index:
                    n = len(self.entries)
                    # Compared unsigned: an index 2**63 past first_index must not wrap to a
                    # negative position (that would cut entries off the end of the log).
                    if index - self.first_index > <uint64_t>n:
                        return offset, S_INDEX_GAP
                    pos = <Py_ssize_t>(index - self.first_index)
                    data = PyBytes_FromStringAndSize(<const char*>payload + _ENTRY_FIXED, length - _ENTRY_FIXED)
                    if pos < n:
                        # A new leader replaced this suffix (Raft paper §5.3).
                        del self.entries[pos:]
                    if self.entry_cls is Entry:
                        e = Entry.__new__(Entry)
                        e.term, e.index, e.type, e.data = term, index, payload[16], data
                        self.entries.append(e)
                    else:
                        self.entries.append(tuple.__new__(self.entry_cls, (term, index, payload[16], data)))
                self.last_index = index
            elif rtype == R_STATE:
                if length != 24:
                    return offset, S_BAD_PAYLOAD
                self.hard_state = self.state_cls(get_u64(payload), get_u64(payload + 8), get_u64(payload + 16))
            elif rtype == R_SNAPSHOT:
                if length != 16:
                    return offset, S_BAD_PAYLOAD
                self.snapshot = (get_u64(payload), get_u64(payload + 8))
            elif rtype == R_METADATA:
                data = PyBytes_FromStringAndSize(<const char*>payload, length)
                if self.metadata is None:
                    self.metadata = data
                elif self.metadata != data:
                    return offset, S_METADATA_MISMATCH
            self.crc = c
            self.crc_known = True
            offset += total
