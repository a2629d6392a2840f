// Linux calls that Glibc's Swift module leaves out, because they need
// _GNU_SOURCE: each a thin wrapper with the kernel's own names.
#ifndef POOLFS_CLINUX_SHIM_H
#define POOLFS_CLINUX_SHIM_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <linux/magic.h>

// fallocate(2) with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: the range's
// blocks go back to the file system and read as zeros.
static inline int CLinux_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

// lseek(2)'s SEEK_DATA and SEEK_HOLE.
static const int CLinux_SEEK_DATA = SEEK_DATA;
static const int CLinux_SEEK_HOLE = SEEK_HOLE;

// fcntl(2)'s open-file-description locks.
static const int CLinux_F_OFD_GETLK = F_OFD_GETLK;
static const int CLinux_F_OFD_SETLK = F_OFD_SETLK;
static const int CLinux_F_OFD_SETLKW = F_OFD_SETLKW;

// Whether no file size limit (RLIMIT_FSIZE) applies to this process.
static inline int CLinux_file_size_unlimited(void) {
    struct rlimit limit;
    return getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur == RLIM_INFINITY;
}

// Whether `fd` is a file on tmpfs (0 where it cannot be told).
static inline int CLinux_is_on_tmpfs(int fd) {
    struct statfs system;
    return fstatfs(fd, &system) == 0 && system.f_type == TMPFS_MAGIC;
}

#endif
