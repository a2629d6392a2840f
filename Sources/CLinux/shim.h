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
__attribute__((target("sse4.2")))
static inline uint32_t CLinux_crc32c_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    uint64_t c = crc;
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

#endif
