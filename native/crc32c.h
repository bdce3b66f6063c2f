#ifndef FASTKV_CRC32C_H
#define FASTKV_CRC32C_H
/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), shared at the C level.
 *
 * The implementation is C text in this header so that every module that includes
 * it gets its own static copy: a cimport of a function across extension modules would need
 * the providing module's C-API capsule at import time, and the WAL codec must not depend on
 * import order for its hottest loop.  Each importing module calls fastkv_crc32c_init() once
 * at module initialisation (it is idempotent).
 *
 * The running value follows Go's hash/crc32.Update (and etcd's chained WAL CRC): the argument
 * and result are the finished (post-inverted) CRC, so crc32c_update(crc32c_update(0, a), b)
 * == crc32c_update(0, a + b).  Two engines: the SSE4.2 crc32 instruction when the CPU has it
 * (checked once with cpuid), else slice-by-8 tables.
 */
#include <stdint.h>
#include <stddef.h>
#include <string.h>

static uint32_t fastkv_crc32c_table[8][256];
static int fastkv_crc32c_ready = 0;
static int fastkv_crc32c_hw = 0;

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTKV_CRC32C_X86 1
__attribute__((target("sse4.2")))
static uint32_t fastkv_crc32c_sse42(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = (uint32_t)~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    while (n--) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    }
    return ~(uint32_t)c;
}
#endif

static void fastkv_crc32c_init(void) {
    uint32_t i, j, c;
    if (fastkv_crc32c_ready) return;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        fastkv_crc32c_table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = fastkv_crc32c_table[0][i];
        for (j = 1; j < 8; j++) {
            c = fastkv_crc32c_table[0][c & 0xff] ^ (c >> 8);
            fastkv_crc32c_table[j][i] = c;
        }
    }
#ifdef FASTKV_CRC32C_X86
    __builtin_cpu_init();
    fastkv_crc32c_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    fastkv_crc32c_ready = 1;
}

/* Slice-by-8: eight table lookups fold eight input bytes per step (little-endian load). */
static uint32_t fastkv_crc32c_sw(uint32_t crc, const unsigned char *p, size_t n) {
    uint32_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = fastkv_crc32c_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | ((uint32_t)p[5] << 8) | ((uint32_t)p[6] << 16) | ((uint32_t)p[7] << 24);
        lo ^= c;
        c = fastkv_crc32c_table[7][lo & 0xff] ^ fastkv_crc32c_table[6][(lo >> 8) & 0xff]
          ^ fastkv_crc32c_table[5][(lo >> 16) & 0xff] ^ fastkv_crc32c_table[4][lo >> 24]
          ^ fastkv_crc32c_table[3][hi & 0xff] ^ fastkv_crc32c_table[2][(hi >> 8) & 0xff]
          ^ fastkv_crc32c_table[1][(hi >> 16) & 0xff] ^ fastkv_crc32c_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) {
        c = fastkv_crc32c_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    }
    return ~c;
}

static uint32_t fastkv_crc32c_update(uint32_t crc, const unsigned char *p, size_t n) {
#ifdef FASTKV_CRC32C_X86
    if (fastkv_crc32c_hw) return fastkv_crc32c_sse42(crc, p, n);
#endif
    return fastkv_crc32c_sw(crc, p, n);
}

#endif
