"""CRC-32C (Castagnoli) for the WAL, snapshot files and anything else that checksums bytes.

crc32c(data, crc=0) continues a running CRC the way Go's crc32.Update does, so chaining
calls over pieces equals one call over the concatenation; crc32c(b"123456789") ==
0xE3069283.  The GIL is released for inputs of 64 KiB and more (snapshots), so a writer
thread does not stall the event loop while it checksums.
"""

from libc.stdint cimport uint32_t

# The C implementation lives in crc32c.h, shared with walcodec.pyx (see the header).
cdef extern from "crc32c.h":
    void fastkv_crc32c_init() noexcept nogil
    uint32_t fastkv_crc32c_update(uint32_t crc, const unsigned char* p, size_t n) noexcept nogil
    uint32_t fastkv_crc32c_sw(uint32_t crc, const unsigned char* p, size_t n) noexcept nogil
    int fastkv_crc32c_hw

cdef extern from *:
    """
    #define FASTKV_CRC32C_NOGIL_BYTES 65536
    """
    const Py_ssize_t FASTKV_CRC32C_NOGIL_BYTES

fastkv_crc32c_init()

#: True when the SSE4.2 crc32 instruction is used (else slice-by-8 tables).
HARDWARE = bool(fastkv_crc32c_hw)


def crc32c(const unsigned char[::1] data, uint32_t crc=0) -> int:
    """The CRC-32C of ``data`` continued from the finished CRC ``crc`` (0 to start)."""
    cdef Py_ssize_t n = data.shape[0]
    cdef const unsigned char* p
    if n == 0:
        return crc
    p = &data[0]
    if n >= FASTKV_CRC32C_NOGIL_BYTES:
        with nogil:
            crc = fastkv_crc32c_update(crc, p, <size_t>n)
        return crc
    return fastkv_crc32c_update(crc, p, <size_t>n)


def crc32c_software(const unsigned char[::1] data, uint32_t crc=0) -> int:
    """The same function computed with the slice-by-8 tables only (to test both engines)."""
    cdef Py_ssize_t n = data.shape[0]
    if n == 0:
        return crc
    return fastkv_crc32c_sw(crc, &data[0], <size_t>n)
