/* An LD_PRELOAD library that makes a process's disk fail and its wall clock jump on command,
 * for the nemesis.
 *
 * Disk.  The file named by $NEMESIS_DISK_FAULT holds the fault in force (re-read at most every
 * 20 ms):
 *   "fsync"   fsync/fdatasync/sync_file_range fail with EIO (the disk lost what was written);
 *   "enospc"  writes and preallocations to regular files fail with ENOSPC (the disk is full),
 *             fsync still works;
 *   anything else, or no file: no fault.
 * Only regular files are touched: sockets, pipes and terminals never see a fault.
 *
 * Clock.  The file named by $NEMESIS_CLOCK_OFFSET holds a signed number of seconds added to the
 * wall clock (CLOCK_REALTIME and its coarse variant, gettimeofday, time), re-read at most every
 * 20 ms: a step, as an NTP correction makes.  Monotonic clocks are left alone.  (libfaketime does
 * the same but slowed a fastkv cluster down twentyfold.)
 *
 * Statically linked programs (etcd, written in Go) bypass libc: the library cannot reach them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { NONE = 0, FSYNC_EIO = 1, DISK_FULL = 2 };

static atomic_int mode;
static atomic_llong checked_at_ns = -1;
static atomic_llong offset_s;
static atomic_llong offset_checked_at_ns = -1;

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
static clock_gettime_fn real_clock_gettime;

static int call_real_clock_gettime(clockid_t id, struct timespec *ts) {
    if (!real_clock_gettime) real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    return real_clock_gettime(id, ts);
}

static long long now_ns(void) {
    struct timespec ts;
    call_real_clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define REAL(ret, name, ...)                                   \
    static ret (*real_##name)(__VA_ARGS__);                    \
    static void load_##name(void) {                            \
        if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name); \
    }

REAL(ssize_t, write, int, const void *, size_t)
REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
REAL(ssize_t, pwrite64, int, const void *, size_t, off_t)
REAL(ssize_t, writev, int, const struct iovec *, int)
REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t)
REAL(int, fsync, int)
REAL(int, fdatasync, int)
REAL(int, sync_file_range, int, off_t, off_t, unsigned int)
REAL(int, fallocate, int, int, off_t, off_t)
REAL(int, posix_fallocate, int, off_t, off_t)

static int current_mode(void) {
    long long now = now_ns();
    long long last = atomic_load(&checked_at_ns);
    if (last >= 0 && now - last < 20000000LL) return atomic_load(&mode);
    atomic_store(&checked_at_ns, now);
    const char *path = getenv("NEMESIS_DISK_FAULT");
    int m = NONE;
    if (path && *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[16] = {0};
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n > 0) {
                if (strncmp(buf, "fsync", 5) == 0) m = FSYNC_EIO;
                else if (strncmp(buf, "enospc", 6) == 0) m = DISK_FULL;
            }
        }
    }
    atomic_store(&mode, m);
    return m;
}

static long long clock_offset(void) {
    const char *path = getenv("NEMESIS_CLOCK_OFFSET");
    if (!path || !*path) return 0;
    long long now = now_ns();
    long long last = atomic_load(&offset_checked_at_ns);
    if (last >= 0 && now - last < 20000000LL) return atomic_load(&offset_s);
    atomic_store(&offset_checked_at_ns, now);
    long long off = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[32] = {0};
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) off = strtoll(buf, NULL, 10);
    }
    atomic_store(&offset_s, off);
    return off;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int rc = call_real_clock_gettime(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += clock_offset();
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    clock_gettime(CLOCK_REALTIME, &ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}

static int regular(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static int full(int fd) { return current_mode() == DISK_FULL && regular(fd); }
static int sync_fails(int fd) { return current_mode() == FSYNC_EIO && regular(fd); }

ssize_t write(int fd, const void *buf, size_t n) {
    load_write();
    if (n > 0 && full(fd)) { errno = ENOSPC; return -1; }
    return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    load_pwrite();
    if (n > 0 && full(fd)) { errno = ENOSPC; return -1; }
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    load_pwrite64();
    if (n > 0 && full(fd)) { errno = ENOSPC; return -1; }
    return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    load_writev();
    if (cnt > 0 && full(fd)) { errno = ENOSPC; return -1; }
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    load_pwritev();
    if (cnt > 0 && full(fd)) { errno = ENOSPC; return -1; }
    return real_pwritev(fd, iov, cnt, off);
}

int fallocate(int fd, int m, off_t off, off_t len) {
    load_fallocate();
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real_fallocate(fd, m, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len) {
    load_posix_fallocate();
    if (full(fd)) return ENOSPC;
    return real_posix_fallocate(fd, off, len);
}

int fsync(int fd) {
    load_fsync();
    if (sync_fails(fd)) { errno = EIO; return -1; }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    load_fdatasync();
    if (sync_fails(fd)) { errno = EIO; return -1; }
    return real_fdatasync(fd);
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags) {
    load_sync_file_range();
    if (sync_fails(fd)) { errno = EIO; return -1; }
    return real_sync_file_range(fd, off, n, flags);
}
