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
