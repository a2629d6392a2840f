// Linux calls that Glibc's Swift module leaves out, because they need
// _GNU_SOURCE: each a thin wrapper with the kernel's own names.
#ifndef POOLFS_CLINUX_SHIM_H
#define POOLFS_CLINUX_SHIM_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/magic.h>
#include <sys/eventfd.h>

// fallocate(2) with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: the range's
// blocks go back to the file system and read as zeros.
static inline int CLinux_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

// CRC-32C with the CPU's crc32 instruction (SSE 4.2), 8 bytes a step:
// checkpoint images check every byte they hold. Without it (another CPU),
// CLinux_crc32c_available says 0 and Swift's table serves.
#if defined(__x86_64__)
#include <cpuid.h>
#include <stdint.h>
#include <string.h>
static inline int CLinux_crc32c_available(void) {
    unsigned int a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2) != 0;
}
// a*b modulo CRC-32C's polynomial, bit-reflected (x^0 is the top bit).
static inline uint32_t CLinux_crc32c_multiply(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
        if (a & bit) product ^= b;
        b = b & 1 ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return product;
}

// What n zero bytes do to a CRC register: multiply it by x^(8n).
static inline uint32_t CLinux_crc32c_zeros(size_t n) {
    uint32_t result = 1u << 31, power = 1u << 23;  // x^0, x^8
    for (; n != 0; n >>= 1) {
        if (n & 1) result = CLinux_crc32c_multiply(power, result);
        power = CLinux_crc32c_multiply(power, power);
    }
    return result;
}

// The crc32 instruction takes 3 cycles and starts one each cycle: long
// buffers run as three lanes side by side, joined by the register's
// linearity, crc(A B) = crc(A) * x^(8|B|) + crc0(B) (a checkpoint checksums
// every byte it writes; one lane ran at about 3.5 GB/s here).
__attribute__((target("sse4.2")))
static inline uint32_t CLinux_crc32c_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    uint64_t c = crc;
    if (length >= 3 * 4096) {
        size_t lane = length / 3 / 8 * 8;
        uint64_t c1 = 0, c2 = 0;
        for (size_t at = 0; at < lane; at += 8) {
            uint64_t v0, v1, v2;
            memcpy(&v0, p + at, 8);
            memcpy(&v1, p + lane + at, 8);
            memcpy(&v2, p + 2 * lane + at, 8);
            c = __builtin_ia32_crc32di(c, v0);
            c1 = __builtin_ia32_crc32di(c1, v1);
            c2 = __builtin_ia32_crc32di(c2, v2);
        }
        uint32_t shift = CLinux_crc32c_zeros(lane);
        c = CLinux_crc32c_multiply(shift, (uint32_t)c) ^ (uint32_t)c1;
        c = CLinux_crc32c_multiply(shift, (uint32_t)c) ^ (uint32_t)c2;
        p += 3 * lane;
        length -= 3 * lane;
    }
    for (; length >= 8; p += 8, length -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; length > 0; p++, length--) c32 = __builtin_ia32_crc32qi(c32, *p);
    return c32;
}
#else
static inline int CLinux_crc32c_available(void) { return 0; }
static inline uint32_t CLinux_crc32c_update(uint32_t crc, const void *data, size_t length) { return crc; }
#endif

// lseek(2)'s SEEK_DATA and SEEK_HOLE.
static const int CLinux_SEEK_DATA = SEEK_DATA;
static const int CLinux_SEEK_HOLE = SEEK_HOLE;

// fcntl(2)'s open-file-description locks.
static const int CLinux_F_OFD_GETLK = F_OFD_GETLK;
static const int CLinux_F_OFD_SETLK = F_OFD_SETLK;
static const int CLinux_F_OFD_SETLKW = F_OFD_SETLKW;

// Whether `fd` is a file on tmpfs (0 where it cannot be told). By the
// system call itself: <sys/vfs.h> compiled with _GNU_SOURCE would define
// struct statfs otherwise than Swift's Glibc module does. The kernel's
// struct statfs starts with its f_type, a long.
static inline int CLinux_is_on_tmpfs(int fd) {
    long system[32];
    return syscall(SYS_fstatfs, fd, system) == 0 && system[0] == TMPFS_MAGIC;
}

// userfaultfd(2) in write-protect mode, for freezes (OpenPool+Freeze): a
// process write-protects its own shelf mappings, and its helper thread is
// told of each write to them before it happens. Shared memory (tmpfs)
// only: the kernel protects no other file's mappings this way.
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>

// A userfaultfd able to write-protect shared memory, or -1 (errno set).
// Not one that sees user-mode faults only (all an unprivileged process
// gets while vm.unprivileged_userfaultfd is 0): with it, a system call
// writing into a protected page (read(2) into a region) fails with EFAULT.
static inline int CLinux_uffd_open(void) {
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct uffdio_api api = { .api = UFFD_API,
                              .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM
                                          | UFFD_FEATURE_MISSING_SHMEM };
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static inline int CLinux_uffd_register(int fd, void *start, size_t length) {
    struct uffdio_register r = { .range = { (uintptr_t)start, length }, .mode = UFFDIO_REGISTER_MODE_WP };
    return ioctl(fd, UFFDIO_REGISTER, &r);
}

// Also for pages missing from the file (holes): a region clone's pages
// not filled yet.
static inline int CLinux_uffd_register_missing(int fd, void *start, size_t length) {
    struct uffdio_register r = { .range = { (uintptr_t)start, length },
                                 .mode = UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MISSING };
    return ioctl(fd, UFFDIO_REGISTER, &r);
}

// Puts `length` bytes from `source` into the hole at `start` (a missing
// page, registered), waking the threads waiting on it: 0, or -1 with
// errno (EEXIST: a page is there already, and the waiters are woken).
static inline int CLinux_uffd_fill(int fd, void *start, const void *source, size_t length) {
    struct uffdio_copy c = { .dst = (uintptr_t)start, .src = (uintptr_t)source, .len = length, .mode = 0 };
    if (ioctl(fd, UFFDIO_COPY, &c) == 0) return 0;
    int saved = errno;
    if (saved == EEXIST) {
        struct uffdio_range r = { (uintptr_t)start, length };
        (void)ioctl(fd, UFFDIO_WAKE, &r);
    }
    errno = saved;
    return -1;
}

static inline int CLinux_uffd_unregister(int fd, void *start, size_t length) {
    struct uffdio_range r = { (uintptr_t)start, length };
    return ioctl(fd, UFFDIO_UNREGISTER, &r);
}

// Protects (or lets go, waking the threads that wait on) the range.
static inline int CLinux_uffd_protect(int fd, void *start, size_t length, int protect) {
    struct uffdio_writeprotect w = { .range = { (uintptr_t)start, length },
                                     .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };
    return ioctl(fd, UFFDIO_WRITEPROTECT, &w);
}

// The next fault's address, and whether it is a write to a protected
// page (else a page missing): 1 when one was read, 0 when none waits (or
// the event was another kind), -1 on error.
static inline int CLinux_uffd_next_fault(int fd, uint64_t *address, int *protected_write) {
    struct uffd_msg message;
    ssize_t n = read(fd, &message, sizeof message);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n != sizeof message || message.event != UFFD_EVENT_PAGEFAULT) return 0;
    *address = message.arg.pagefault.address;
    *protected_write = (message.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) != 0;
    return 1;
}

// Waits until `fd` or `other` is readable, at most `milliseconds`: 1 when
// one is, 0 on time out or a signal.
static inline int CLinux_wait_readable(int fd, int other, int milliseconds) {
    struct pollfd fds[2] = { { fd, POLLIN, 0 }, { other, POLLIN, 0 } };
    return poll(fds, 2, milliseconds) > 0;
}

// futex(2) on a word of shared memory (a mapped file), so processes wait
// for each other: waits while *word == expected, at most `milliseconds`.
static inline void CLinux_futex_wait(uint32_t *word, uint32_t expected, int milliseconds) {
    struct timespec t = { milliseconds / 1000, (long)(milliseconds % 1000) * 1000000L };
    syscall(SYS_futex, word, FUTEX_WAIT, expected, &t, NULL, 0);
}

static inline void CLinux_futex_wake(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

#endif
