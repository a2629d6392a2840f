// The libc calls libpoolfs-direct.so takes over. A descriptor of a poolfs
// file that the mount leased a layout for is in `files`; its reads and
// writes copy between the caller's buffer and the mapped pool pages, inside
// an epoch (a count by the epoch's parity in this process's client words),
// after one check of the layout's generation. Whatever the copy cannot do
// (a hole, past the size, a page that must be allocated or is shared, a
// layout that moved and could not be read again) goes to the real call,
// that is, to the mount: a program sees the same bytes either way.
#define _GNU_SOURCE
#include "poolfs_direct.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

#define MAX_FILES 65536
#define FALLBACK (-2)

// Set while this thread runs the library's own code (Swift's slow path):
// its opens and closes go straight to libc.
static __thread int inside __attribute__((tls_model("initial-exec")));
// Stored and cleared atomically, never under a lock: close and dup must
// not wait in a signal handler for a lock the thread it interrupted holds.
static struct pd_file *files[MAX_FILES];
static int disabled;
// POOLFS_DIRECT_COPY_DELAY_US: a pause between the generation's check and
// the copy, for tests that change a file under a copy in progress.
static unsigned copy_delay;
// Set once the constructor ran: opens before it are not served.
static int started;
static int resolved;

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_preadv)(int, const struct iovec *, int, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_preadv2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fclose)(FILE *);
static int (*real_ioctl)(int, unsigned long, ...);
static int (*real_dup)(int);
static int (*real_fcntl)(int, int, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);
static int (*real_msync)(void *, size_t, int);
static int (*real_close_range)(unsigned, unsigned, int);
static void (*real_closefrom)(int);

static int reporter_started;

// The Swift part, libpoolfs-direct-swift.so beside this library, loaded
// at the first lease: a process that never reads or writes a poolfs file
// never loads the Swift runtime (4 ms at each start, measured).
static struct pd_file *(*swift_attach)(int, int);
static int (*swift_refresh)(struct pd_file *);
static void (*swift_forked)(void);
static pthread_once_t swift_once = PTHREAD_ONCE_INIT;

static void load_swift(void) {
    Dl_info self;
    if (dladdr((void *)load_swift, &self) == 0 || self.dli_fname == NULL) return;
    const char *slash = strrchr(self.dli_fname, '/');
    int directory = slash == NULL ? 0 : (int)(slash - self.dli_fname + 1);
    char path[4096];
    if (snprintf(path, sizeof path, "%.*slibpoolfs-direct-swift.so", directory, self.dli_fname) >= (int)sizeof path) return;
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    void *attach = library ? dlsym(library, "pd_swift_attach") : NULL;
    void *refresh = library ? dlsym(library, "pd_swift_refresh") : NULL;
    void *forked = library ? dlsym(library, "pd_swift_forked") : NULL;
    if (!attach || !refresh || !forked) {
        const char *why = dlerror();
        fprintf(stderr, "libpoolfs-direct: cannot load %s (%s): poolfs files go through the mount\n", path,
                why ? why : "its functions are missing");
        return;
    }
    swift_refresh = (int (*)(struct pd_file *))refresh;
    swift_forked = (void (*)(void))forked;
    __atomic_store_n(&swift_attach, (struct pd_file *(*)(int, int))attach, __ATOMIC_RELEASE);
}

// Whether the Swift part is there, loaded now if it is the first time.
static int swift_loaded(void) {
    pthread_once(&swift_once, load_swift);
    return __atomic_load_n(&swift_attach, __ATOMIC_ACQUIRE) != NULL;
}

static void forked_child(void) {
    reporter_started = 0;
    if (__atomic_load_n(&swift_attach, __ATOMIC_ACQUIRE) != NULL) swift_forked();
    pd_pin_again_after_fork();
}

// The real calls, found on first use: libraries loaded before this one
// (the Swift runtime among them) call some while they start.
static void resolve(void) {
    real_open = dlsym(RTLD_NEXT, "open");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_close = dlsym(RTLD_NEXT, "close");
    real_read = dlsym(RTLD_NEXT, "read");
    real_pread = dlsym(RTLD_NEXT, "pread");
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_readv = dlsym(RTLD_NEXT, "readv");
    real_preadv = dlsym(RTLD_NEXT, "preadv");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_preadv2 = dlsym(RTLD_NEXT, "preadv2");
    real_pwritev2 = dlsym(RTLD_NEXT, "pwritev2");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_dup2 = dlsym(RTLD_NEXT, "dup2");
    real_dup3 = dlsym(RTLD_NEXT, "dup3");
    real_fclose = dlsym(RTLD_NEXT, "fclose");
    real_ioctl = dlsym(RTLD_NEXT, "ioctl");
    real_dup = dlsym(RTLD_NEXT, "dup");
    real_fcntl = dlsym(RTLD_NEXT, "fcntl");
    real_mmap = dlsym(RTLD_NEXT, "mmap");
    real_munmap = dlsym(RTLD_NEXT, "munmap");
    real_msync = dlsym(RTLD_NEXT, "msync");
    real_close_range = dlsym(RTLD_NEXT, "close_range");
    real_closefrom = dlsym(RTLD_NEXT, "closefrom");
    __atomic_store_n(&resolved, 1, __ATOMIC_RELEASE);
}

#define REAL(name) (__builtin_expect(__atomic_load_n(&resolved, __ATOMIC_ACQUIRE), 1) ? 0 : (resolve(), 0), real_##name)

__attribute__((constructor)) static void load(void) {
    if (!resolved) resolve();
    const char *setting = getenv("POOLFS_DIRECT");
    disabled = setting != NULL && strcmp(setting, "0") == 0;
    const char *delay = getenv("POOLFS_DIRECT_COPY_DELAY_US");
    if (delay != NULL) copy_delay = (unsigned)strtoul(delay, NULL, 10);
    if (!disabled) pthread_atfork(NULL, NULL, forked_child);
    // Until here, no file was attached: nothing opened before counts.
    started = 1;
}

int pd_real_open(const char *path, int flags, unsigned mode) { return REAL(open)(path, flags, mode); }
int pd_real_close(int fd) { return REAL(close)(fd); }
int pd_real_ioctl(int fd, unsigned long request, void *argument) { return REAL(ioctl)(fd, request, argument); }
unsigned long pd_wrote_request(void) { return _IOC(_IOC_WRITE, 'p', 2, 32); }

// MARK: Layouts

struct pd_layout *pd_layout_new(uint64_t generation, uint64_t count) {
    struct pd_layout *layout = calloc(1, sizeof(struct pd_layout) + count * sizeof(struct pd_run));
    if (layout == NULL) return NULL;
    layout->generation = generation;
    layout->count = count;
    return layout;
}

void pd_layout_set(struct pd_layout *layout, uint64_t index, uint64_t start, uint64_t end,
                   unsigned char *base, int writable, int shelf, uint64_t shelf_offset) {
    layout->runs[index] = (struct pd_run){start, end, base, (uint64_t)writable, shelf, shelf_offset};
}

void pd_file_publish(struct pd_file *file, struct pd_layout *layout) {
    layout->older = __atomic_load_n(&file->layout, __ATOMIC_ACQUIRE);
    __atomic_store_n(&file->layout, layout, __ATOMIC_RELEASE);
}

// The file served for `fd`, held (`let_go` after): a close meanwhile
// waits for the copy before it frees the state.
static inline struct pd_file *hold(int fd) {
    if (fd < 0 || fd >= MAX_FILES) return NULL;
    struct pd_file *file = __atomic_load_n(&files[fd], __ATOMIC_ACQUIRE);
    if (file == NULL) return NULL;
    __atomic_fetch_add(&file->users, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&files[fd], __ATOMIC_SEQ_CST) != file) {
        __atomic_fetch_sub(&file->users, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    return file;
}

static inline void let_go(struct pd_file *file) { __atomic_fetch_sub(&file->users, 1, __ATOMIC_RELEASE); }

// MARK: Opening and closing

// Descriptors of regular files on a poolfs mount, not leased yet: leased
// at their first read or write, so that an open that is only a create, a
// stat or a rename target costs the mount no extra round trip.
static unsigned char candidates[MAX_FILES];

// Devices of poolfs mounts (their type in mountinfo is fuse.poolfs), and
// of recent other file systems: an open looks its file's device up here
// instead of asking the file system.
#define DEVICES 32
static pthread_mutex_t devices_mutex = PTHREAD_MUTEX_INITIALIZER;
static dev_t poolfs_devices[DEVICES], other_devices[DEVICES];
static int poolfs_count, other_count, other_next;

// /proc/self/mountinfo's poolfs mounts into poolfs_devices; the mutex held.
static void read_mounts(void) {
    int fd = REAL(open)("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    static char text[1 << 16];
    size_t length = 0;
    ssize_t got;
    while (length < sizeof text - 1 && (got = REAL(read)(fd, text + length, sizeof text - 1 - length)) > 0) length += (size_t)got;
    REAL(close)(fd);
    text[length] = 0;
    poolfs_count = 0;
    for (char *line = text, *next; line != NULL && *line != 0; line = next) {
        next = strchr(line, '\n');
        if (next != NULL) *next++ = 0;
        unsigned major, minor;
        char *separator = strstr(line, " - ");
        if (separator == NULL || strncmp(separator + 3, "fuse.poolfs ", 12) != 0) continue;
        if (sscanf(line, "%*u %*u %u:%u", &major, &minor) == 2 && poolfs_count < DEVICES) {
            poolfs_devices[poolfs_count++] = makedev(major, minor);
        }
    }
}

static int on_poolfs(dev_t device) {
    int found = 0, known = 0;
    // A signal handler's open sees only the devices known already: it
    // neither waits for the lock nor parses mountinfo.
    int in_handler = pd_in_signal_handler();
    if (in_handler ? pthread_mutex_trylock(&devices_mutex) != 0 : pthread_mutex_lock(&devices_mutex) != 0) return 0;
    for (int i = 0; i < poolfs_count && !known; i++) if (poolfs_devices[i] == device) found = known = 1;
    for (int i = 0; i < other_count && !known; i++) if (other_devices[i] == device) known = 1;
    if (!known && !in_handler) {
        read_mounts();
        for (int i = 0; i < poolfs_count; i++) if (poolfs_devices[i] == device) found = 1;
        if (!found) {
            other_devices[other_next] = device;
            other_next = (other_next + 1) % DEVICES;
            if (other_count < DEVICES) other_count++;
        }
    }
    pthread_mutex_unlock(&devices_mutex);
    return found;
}

static void opened(int fd, int flags) {
    if (!started || disabled || fd < 0 || fd >= MAX_FILES || inside) return;
    if (flags & (O_PATH | O_DIRECT | O_DIRECTORY)) return;
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || !on_poolfs(info.st_dev)) return;
    __atomic_store_n(&candidates[fd], 1, __ATOMIC_RELEASE);
}

static void start_reporter(void);

// A candidate's first read or write: its layout leased now. A write to an
// empty file (a create's first write) leaves it a candidate: it grows the
// file, which only the mount does; so does a call in a signal handler.
static struct pd_file *lease(int fd, int writing) {
    if (pd_in_signal_handler()) return NULL;
    pd_files_reclaim();
    if (writing) {
        struct stat info;
        if (fstat(fd, &info) != 0 || info.st_size == 0) return NULL;
    }
    if (!__atomic_exchange_n(&candidates[fd], 0, __ATOMIC_ACQ_REL)) return NULL;
    int flags = REAL(fcntl)(fd, F_GETFL);
    if (flags < 0) return NULL;
    inside = 1;
    struct pd_file *file = swift_loaded() ? swift_attach(fd, flags) : NULL;
    inside = 0;
    if (file == NULL) return NULL;
    file->descriptors = 1;
    struct pd_file *none = NULL;
    if (!__atomic_compare_exchange_n(&files[fd], &none, file, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
        pd_file_release(file);
        return NULL;
    }
    if (file->writable) start_reporter();
    return hold(fd);
}

// The state that serves `fd`, held; leased first if it is a candidate.
static inline struct pd_file *served(int fd, int writing) {
    struct pd_file *file = hold(fd);
    if (file == NULL && fd >= 0 && fd < MAX_FILES && __atomic_load_n(&candidates[fd], __ATOMIC_ACQUIRE)) {
        file = lease(fd, writing);
    }
    return file;
}

static uint64_t coarse_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

// Tells the mount that bytes [start, end) were written directly: an
// ioctl, safe in a signal handler.
static void report_range(int fd, uint64_t start, uint64_t end) {
    uint64_t request[4] = {start, end, 0, 0};
    REAL(ioctl)(fd, pd_wrote_request(), request);
}

// Tells the mount what was written since the last report.
static void report_written(int fd, struct pd_file *file) {
    uint64_t end = __atomic_exchange_n(&file->written_end, 0, __ATOMIC_ACQ_REL);
    if (end == 0) return;
    uint64_t start = __atomic_exchange_n(&file->written_start, UINT64_MAX, __ATOMIC_ACQ_REL);
    // A write between the two exchanges: the range reported is wider, never narrower.
    if (start >= end) start = 0;
    __atomic_store_n(&file->reported_at, coarse_now(), __ATOMIC_RELAXED);
    report_range(fd, start, end);
}

// The descriptor is going (close, dup2 over it, fclose): its writes are
// reported while it is still open, and its state freed.
static void forget(int fd) {
    if (fd < 0 || fd >= MAX_FILES) return;
    __atomic_store_n(&candidates[fd], 0, __ATOMIC_RELEASE);
    if (__atomic_load_n(&files[fd], __ATOMIC_ACQUIRE) == NULL) return;
    struct pd_file *file = __atomic_exchange_n(&files[fd], NULL, __ATOMIC_SEQ_CST);
    if (file == NULL) return;
    int in_handler = pd_in_signal_handler();
    if (__atomic_sub_fetch(&file->descriptors, 1, __ATOMIC_ACQ_REL) != 0) {
        // Another descriptor (dup) still serves it; the reporter, which
        // may be reporting through this one, finishes before it closes.
        while (!in_handler && __atomic_load_n(&file->users, __ATOMIC_SEQ_CST) != 0) sched_yield();
        return;
    }
    report_written(fd, file);
    pd_file_close(file, in_handler);
}

static int open_mode(int flags, va_list arguments) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(arguments, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    int mode = open_mode(flags, arguments);
    va_end(arguments);
    int fd = REAL(open)(path, flags, mode);
    if (fd >= 0) opened(fd, flags);
    return fd;
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int directory, const char *path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    int mode = open_mode(flags, arguments);
    va_end(arguments);
    int fd = REAL(openat)(directory, path, flags, mode);
    if (fd >= 0) opened(fd, flags);
    return fd;
}

int openat64(int directory, const char *path, int flags, ...) __attribute__((alias("openat")));

int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open(path, flags); }
int __openat_2(int directory, const char *path, int flags) { return openat(directory, path, flags); }
int __openat64_2(int directory, const char *path, int flags) { return openat(directory, path, flags); }

int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char *path, mode_t mode) __attribute__((alias("creat")));

// A duplicate of a served descriptor serves the same file (dup2, as dd
// does with its input, or a shell's redirection).
static void duplicated(int old, int new) {
    if (new < 0 || new >= MAX_FILES || old == new) return;
    struct pd_file *file = hold(old);
    if (file == NULL) {
        if (old >= 0 && old < MAX_FILES && __atomic_load_n(&candidates[old], __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&candidates[new], 1, __ATOMIC_RELEASE);
        }
        return;
    }
    // Counted only while some descriptor still serves it (a close of
    // `old` in another thread may have just let it go).
    int count = __atomic_load_n(&file->descriptors, __ATOMIC_ACQUIRE);
    while (count > 0 && !__atomic_compare_exchange_n(&file->descriptors, &count, count + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {}
    struct pd_file *none = NULL;
    if (count > 0 && !__atomic_compare_exchange_n(&files[new], &none, file, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
        __atomic_sub_fetch(&file->descriptors, 1, __ATOMIC_ACQ_REL);
    }
    let_go(file);
}

int dup(int old) {
    int new = REAL(dup)(old);
    if (new >= 0) duplicated(old, new);
    return new;
}

int fcntl(int fd, int command, ...) {
    va_list arguments;
    va_start(arguments, command);
    void *argument = va_arg(arguments, void *);
    va_end(arguments);
    int result = REAL(fcntl)(fd, command, argument);
    if (result >= 0 && (command == F_DUPFD || command == F_DUPFD_CLOEXEC)) duplicated(fd, result);
    return result;
}

int fcntl64(int fd, int command, ...) __attribute__((alias("fcntl")));

int close(int fd) {
    if (!inside) forget(fd);
    return REAL(close)(fd);
}

// Descriptors closed in bulk (a daemon's start, a child before exec): a
// number the kernel hands out again must not find this state.
static void forget_range(unsigned first, unsigned last) {
    for (unsigned fd = first; fd <= last && fd < MAX_FILES; fd++) forget((int)fd);
}

int close_range(unsigned first, unsigned last, int flags) {
    // First, while the descriptors can still carry the writes' report.
    if (!(flags & CLOSE_RANGE_CLOEXEC)) forget_range(first, last);
    return REAL(close_range)(first, last, flags);
}

void closefrom(int first) {
    if (first >= 0) forget_range((unsigned)first, MAX_FILES - 1);
    REAL(closefrom)(first);
}

int dup2(int old, int new) {
    if (old == new) return REAL(dup2)(old, new);
    forget(new);
    int result = REAL(dup2)(old, new);
    if (result >= 0) duplicated(old, new);
    return result;
}

int dup3(int old, int new, int flags) {
    forget(new);
    int result = REAL(dup3)(old, new, flags);
    if (result >= 0) duplicated(old, new);
    return result;
}

int fclose(FILE *stream) {
    if (stream != NULL) forget(fileno(stream));
    return REAL(fclose)(stream);
}

// MARK: The copy

static inline unsigned enter(struct pd_area *area) {
    unsigned parity = (unsigned)__atomic_load_n(area->epoch, __ATOMIC_ACQUIRE) & 1;
    __atomic_fetch_add(&area->client[1 + parity], 1, __ATOMIC_SEQ_CST);
    return parity;
}

static inline void leave(struct pd_area *area, unsigned parity) {
    __atomic_fetch_sub(&area->client[1 + parity], 1, __ATOMIC_RELEASE);
}

// The index of the run holding `offset`, or -1.
static inline int64_t run_at(const struct pd_layout *layout, uint64_t offset) {
    uint64_t low = 0, high = layout->count;
    while (low < high) {
        uint64_t middle = (low + high) / 2;
        if (layout->runs[middle].end <= offset) low = middle + 1; else high = middle;
    }
    return low < layout->count && layout->runs[low].start <= offset ? (int64_t)low : -1;
}

// Whether runs from `index` on hold [offset, end) with no gap (and, for a
// write, every one may be written).
static inline int covered(const struct pd_layout *layout, int64_t index, uint64_t offset, uint64_t end, int writing) {
    if (index < 0) return 0;
    for (uint64_t i = (uint64_t)index; i < layout->count; i++) {
        const struct pd_run *run = &layout->runs[i];
        if (run->start > offset || (writing && !run->writable)) return 0;
        if (run->end >= end) return 1;
        offset = run->end;
    }
    return 0;
}

// Adds to a counter of what was served: a plain add, not a locked one
// (two of those cost 4% of a 4 KiB read). Threads of one process copying
// at the same instant may lose an add: the counts are statistics.
static inline void tally(uint64_t *counter, uint64_t amount) {
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + amount, __ATOMIC_RELAXED);
}

// Reads the moved layout again; false where it cannot be read (the lease
// ended, or another thread is reading it: the call goes to the mount).
// No lock is waited for here: read(2) and write(2) must not block in a
// signal handler on a lock the interrupted thread holds.
static int refresh(struct pd_file *file) {
    if (pd_in_signal_handler() || pthread_mutex_trylock(&file->refresh_lock) != 0) return 0;
    int was_inside = inside;
    inside = 1;
    int failed = swift_refresh(file);
    inside = was_inside;
    pthread_mutex_unlock(&file->refresh_lock);
    return !failed;
}

// Widens the range written since the last report (lock-free, as above).
static void note_written(struct pd_file *file, uint64_t start, uint64_t end) {
    uint64_t seen = __atomic_load_n(&file->written_start, __ATOMIC_RELAXED);
    while (start < seen && !__atomic_compare_exchange_n(&file->written_start, &seen, start, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
    seen = __atomic_load_n(&file->written_end, __ATOMIC_RELAXED);
    while (end > seen && !__atomic_compare_exchange_n(&file->written_end, &seen, end, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
    uint64_t never = 0;
    __atomic_compare_exchange_n(&file->reported_at, &never, coarse_now(), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

// Copies between `vector` (whose bytes total `total`) and the file at
// `offset`: the bytes copied, 0 at the end of the file, or FALLBACK.
static ssize_t copy(struct pd_file *file, const struct iovec *vector, int count, size_t total,
                    uint64_t offset, int writing) {
    if (writing ? !file->writable : !file->readable) return FALLBACK;
    if (writing && (__atomic_load_n(file->flags, __ATOMIC_ACQUIRE) & 1)) return FALLBACK;
    struct pd_area *area = file->area;
    // No client slot (every one taken): the mount serves this process.
    if (__atomic_load_n(&area->client, __ATOMIC_ACQUIRE) == NULL) return FALLBACK;
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned parity = enter(area);
        struct pd_layout *layout = __atomic_load_n(&file->layout, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(file->generation, __ATOMIC_SEQ_CST) != layout->generation) {
            leave(area, parity);
            if (!refresh(file)) return FALLBACK;
            continue;
        }
        uint64_t size = __atomic_load_n(file->size, __ATOMIC_ACQUIRE);
        if (total == 0) {
            leave(area, parity);
            return 0;
        }
        // Only inside the size: the end of the file (a read that reaches
        // it, or a write that grows the file) is the mount's to answer, so
        // a size this process has not seen yet can never cut a read short.
        size_t length = total;
        if (offset >= size || length > size - offset) {
            leave(area, parity);
            return FALLBACK;
        }
        int64_t index = run_at(layout, offset);
        if (!covered(layout, index, offset, offset + length, writing)) {
            leave(area, parity);
            return FALLBACK;
        }
        if (__builtin_expect(copy_delay != 0, 0)) usleep(copy_delay);
        size_t done = 0;
        const struct pd_run *run = &layout->runs[index];
        for (int i = 0; i < count && done < length; i++) {
            size_t taken = 0, wanted = vector[i].iov_len;
            while (taken < wanted && done < length) {
                uint64_t at = offset + done;
                while (at >= run->end) run++;
                size_t piece = wanted - taken;
                if (piece > length - done) piece = length - done;
                if (piece > run->end - at) piece = (size_t)(run->end - at);
                unsigned char *pool = run->base + (at - run->start);
                unsigned char *user = (unsigned char *)vector[i].iov_base + taken;
                if (writing) memcpy(pool, user, piece); else memcpy(user, pool, piece);
                taken += piece;
                done += piece;
            }
        }
        leave(area, parity);
        tally(&area->client[writing ? 4 : 3], done);
        tally(&area->client[writing ? 6 : 5], 1);
        if (writing) {
            // A forked child has no reporter until it starts one.
            if (!__atomic_load_n(&reporter_started, __ATOMIC_RELAXED) && !pd_in_signal_handler()) start_reporter();
            note_written(file, offset, offset + done);
        }
        return (ssize_t)done;
    }
    return FALLBACK;
}

static size_t vector_total(const struct iovec *vector, int count) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += vector[i].iov_len;
    return total;
}

// read(2) and write(2): the kernel keeps the position (so dup'ed and
// inherited descriptors, and an exec'ed program, share it); this takes it,
// copies, and moves it, as one step among this process's threads.
static ssize_t at_position(int fd, struct pd_file *file, const struct iovec *vector, int count, int writing) {
    // Held by another thread (or by the thread a signal handler interrupted):
    // the kernel orders this one.
    if (pthread_mutex_trylock(&file->offset_lock) != 0) return FALLBACK;
    off_t position = lseek(fd, 0, SEEK_CUR);
    ssize_t done = position < 0 ? FALLBACK : copy(file, vector, count, vector_total(vector, count), (uint64_t)position, writing);
    if (done > 0) lseek(fd, position + done, SEEK_SET);
    pthread_mutex_unlock(&file->offset_lock);
    return done;
}

// Every read and write call of a served file comes here: at the position
// (offset -1: read, write, readv, writev) or at `offset`; FALLBACK where the
// mount must answer (the caller then makes the real call).
static ssize_t vectored(int fd, const struct iovec *vector, int count, off_t offset, int writing) {
    if (count < 0 || offset < -1) return FALLBACK;
    struct pd_file *file = served(fd, writing);
    if (file == NULL) return FALLBACK;
    ssize_t done = offset == -1 ? at_position(fd, file, vector, count, writing)
                                : copy(file, vector, count, vector_total(vector, count), (uint64_t)offset, writing);
    let_go(file);
    return done;
}

ssize_t pread(int fd, void *buffer, size_t count, off_t offset) {
    struct iovec one = {buffer, count};
    ssize_t done = offset >= 0 ? vectored(fd, &one, 1, offset, 0) : FALLBACK;
    return done != FALLBACK ? done : REAL(pread)(fd, buffer, count, offset);
}

ssize_t pread64(int fd, void *buffer, size_t count, off_t offset) __attribute__((alias("pread")));

ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset) {
    struct iovec one = {(void *)buffer, count};
    ssize_t done = offset >= 0 ? vectored(fd, &one, 1, offset, 1) : FALLBACK;
    return done != FALLBACK ? done : REAL(pwrite)(fd, buffer, count, offset);
}

ssize_t pwrite64(int fd, const void *buffer, size_t count, off_t offset) __attribute__((alias("pwrite")));

ssize_t read(int fd, void *buffer, size_t count) {
    struct iovec one = {buffer, count};
    ssize_t done = vectored(fd, &one, 1, -1, 0);
    return done != FALLBACK ? done : REAL(read)(fd, buffer, count);
}

ssize_t write(int fd, const void *buffer, size_t count) {
    struct iovec one = {(void *)buffer, count};
    ssize_t done = vectored(fd, &one, 1, -1, 1);
    return done != FALLBACK ? done : REAL(write)(fd, buffer, count);
}

ssize_t readv(int fd, const struct iovec *vector, int count) {
    ssize_t done = vectored(fd, vector, count, -1, 0);
    return done != FALLBACK ? done : REAL(readv)(fd, vector, count);
}

ssize_t writev(int fd, const struct iovec *vector, int count) {
    ssize_t done = vectored(fd, vector, count, -1, 1);
    return done != FALLBACK ? done : REAL(writev)(fd, vector, count);
}

ssize_t preadv(int fd, const struct iovec *vector, int count, off_t offset) {
    ssize_t done = offset >= 0 ? vectored(fd, vector, count, offset, 0) : FALLBACK;
    return done != FALLBACK ? done : REAL(preadv)(fd, vector, count, offset);
}

ssize_t preadv64(int fd, const struct iovec *vector, int count, off_t offset) __attribute__((alias("preadv")));

ssize_t pwritev(int fd, const struct iovec *vector, int count, off_t offset) {
    ssize_t done = offset >= 0 ? vectored(fd, vector, count, offset, 1) : FALLBACK;
    return done != FALLBACK ? done : REAL(pwritev)(fd, vector, count, offset);
}

ssize_t pwritev64(int fd, const struct iovec *vector, int count, off_t offset) __attribute__((alias("pwritev")));

// preadv2 and pwritev2 without flags (fsx's way): as preadv and pwritev,
// or at the position for an offset of -1. Any flag is the mount's to answer.
ssize_t preadv2(int fd, const struct iovec *vector, int count, off_t offset, int flags) {
    ssize_t done = flags == 0 ? vectored(fd, vector, count, offset, 0) : FALLBACK;
    return done != FALLBACK ? done : REAL(preadv2)(fd, vector, count, offset, flags);
}

ssize_t preadv64v2(int fd, const struct iovec *vector, int count, off_t offset, int flags) __attribute__((alias("preadv2")));

ssize_t pwritev2(int fd, const struct iovec *vector, int count, off_t offset, int flags) {
    ssize_t done = flags == 0 ? vectored(fd, vector, count, offset, 1) : FALLBACK;
    return done != FALLBACK ? done : REAL(pwritev2)(fd, vector, count, offset, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *vector, int count, off_t offset, int flags) __attribute__((alias("pwritev2")));

// MARK: Reports

static void report(int fd) {
    struct pd_file *file = hold(fd);
    if (file == NULL) return;
    report_written(fd, file);
    let_go(file);
}

int fsync(int fd) {
    report(fd);
    return REAL(fsync)(fd);
}

int fdatasync(int fd) {
    report(fd);
    return REAL(fdatasync)(fd);
}

// Times lag direct writes by at most a second: a thread reports what each
// file wrote more than a second ago, for programs that write and then
// neither close nor sync.
static void *reporter(void *unused) {
    (void)unused;
    inside = 1;
    for (;;) {
        sleep(1);
        uint64_t now = coarse_now();
        for (int fd = 0; fd < MAX_FILES; fd++) {
            if (__atomic_load_n(&files[fd], __ATOMIC_RELAXED) == NULL) continue;
            struct pd_file *file = hold(fd);
            if (file == NULL) continue;
            if (__atomic_load_n(&file->written_end, __ATOMIC_ACQUIRE) != 0
                && now - __atomic_load_n(&file->reported_at, __ATOMIC_RELAXED) >= 900000000u) {
                report_written(fd, file);
            }
            let_go(file);
        }
        pd_files_reclaim();
    }
    return NULL;
}

// Started by the first attached file that may be written; again in a
// forked child, which has no threads but its caller's.

static void start_reporter(void) {
    if (__atomic_exchange_n(&reporter_started, 1, __ATOMIC_ACQ_REL)) return;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    if (pthread_create(&thread, &attributes, reporter, NULL) != 0) reporter_started = 0;
    pthread_attr_destroy(&attributes);
}

// MARK: Mappings

// A file's pages mapped in place (famfs's way): each run of the range is
// mapped from its shelf file at its place in one reserved range, so loads
// and stores are the file's bytes, with no page cache copy. The mapping
// holds a duplicate of the descriptor, so the file stays open (an unlinked
// one keeps its pages) until it is unmapped, or the process dies; and a
// pin in the process's client words, so that pages a truncate gives up
// wait until it is unmapped, and pages mapped writable are never shared.
struct mapping {
    unsigned char *base;
    size_t length;
    uint64_t slot;
    uint64_t offset;
    int writable;
    int descriptor;
    struct pd_area *area;
};

#define MAPPINGS 256
static struct mapping mappings[MAPPINGS];
static pthread_mutex_t mappings_mutex = PTHREAD_MUTEX_INITIALIZER;

// Counts a mapping of `slot` in the client's pins; 0 if there is no room.
// The mappings' mutex held.
static int pin(struct pd_area *area, uint64_t slot, int writable, int64_t sign) {
    uint64_t *pins = area->pins, amount = writable ? (1ull << 32) : 1;
    if (pins == NULL) return 0;
    int64_t empty = -1;
    for (uint64_t i = 0; i < area->pin_count; i++) {
        uint64_t held = __atomic_load_n(&pins[2 * i], __ATOMIC_ACQUIRE);
        if (held == slot + 1) {
            uint64_t count = __atomic_load_n(&pins[2 * i + 1], __ATOMIC_RELAXED);
            count = sign > 0 ? count + amount : count - amount;
            __atomic_store_n(&pins[2 * i + 1], count, __ATOMIC_SEQ_CST);
            if (count == 0) __atomic_store_n(&pins[2 * i], 0, __ATOMIC_SEQ_CST);
            return 1;
        }
        if (held == 0 && empty < 0) empty = (int64_t)i;
    }
    if (sign < 0 || empty < 0) return 0;
    __atomic_store_n(&pins[2 * empty + 1], amount, __ATOMIC_SEQ_CST);
    __atomic_store_n(&pins[2 * empty], slot + 1, __ATOMIC_SEQ_CST);
    return 1;
}

void pd_pin_again_after_fork(void) {
    for (int i = 0; i < MAPPINGS; i++) {
        if (mappings[i].base != NULL) pin(mappings[i].area, mappings[i].slot, mappings[i].writable, 1);
    }
}

// Maps [offset, offset + length) of the file in place, or NULL where the
// mount must: a range past the size's last page, a hole, a run a page
// does not hold whole (a small file's slot), pages shared with a clone or
// a snapshot (for a writable shared mapping), a set-ID file.
static void *map_in_place(int fd, struct pd_file *file, size_t length, int prot, int flags, off_t offset) {
    long page = sysconf(_SC_PAGESIZE);
    int type = flags & MAP_TYPE;
    int shared = type == MAP_SHARED || type == MAP_SHARED_VALIDATE;
    // Anything more (MAP_SYNC, MAP_LOCKED, huge pages…) is the kernel's to answer.
    if ((type != MAP_PRIVATE && !shared) || (flags & ~(MAP_TYPE | MAP_POPULATE | MAP_NONBLOCK | MAP_NORESERVE)) != 0) return NULL;
    int writable = shared && (prot & PROT_WRITE);
    if (offset < 0 || (offset & (page - 1)) != 0 || length == 0) return NULL;
    if (writable && (!file->writable || (__atomic_load_n(file->flags, __ATOMIC_ACQUIRE) & 1))) return NULL;
    if (!file->readable || __atomic_load_n(&file->area->client, __ATOMIC_ACQUIRE) == NULL) return NULL;
    uint64_t start = (uint64_t)offset, end = start + ((length + (size_t)page - 1) & ~((size_t)page - 1));
    pthread_mutex_lock(&mappings_mutex);
    int free_record = -1;
    for (int i = 0; i < MAPPINGS && free_record < 0; i++) if (mappings[i].base == NULL) free_record = i;
    // Pinned before the layout is checked: the mount, which publishes
    // before it looks at pins, either sees the pin or the check sees the
    // new layout.
    if (free_record < 0 || !pin(file->area, file->slot, writable, 1)) {
        pthread_mutex_unlock(&mappings_mutex);
        return NULL;
    }
    unsigned char *base = NULL;
    for (int attempt = 0; attempt < 3 && base == NULL; attempt++) {
        struct pd_layout *layout = __atomic_load_n(&file->layout, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(file->generation, __ATOMIC_SEQ_CST) != layout->generation) {
            if (!refresh(file)) break;
            continue;
        }
        uint64_t size = __atomic_load_n(file->size, __ATOMIC_ACQUIRE);
        int64_t index = run_at(layout, start);
        if (end > ((size + (uint64_t)page - 1) & ~((uint64_t)page - 1)) || !covered(layout, index, start, end, writable)) break;
        int whole = 1;
        for (uint64_t i = (uint64_t)index; i < layout->count && layout->runs[i].start < end; i++) {
            const struct pd_run *run = &layout->runs[i];
            if (((run->start | run->end | run->shelf_offset) & ((uint64_t)page - 1)) != 0) whole = 0;
            // A last page past the size that others share holds their
            // bytes there, not the zeros the mount keeps in its own.
            if (end > size && run->end >= end && !run->writable) whole = 0;
        }
        if (!whole) break;
        unsigned char *reserved = REAL(mmap)(NULL, end - start, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (reserved == MAP_FAILED) break;
        int placed = 1;
        for (uint64_t i = (uint64_t)index; i < layout->count && layout->runs[i].start < end && placed; i++) {
            const struct pd_run *run = &layout->runs[i];
            uint64_t low = run->start > start ? run->start : start, high = run->end < end ? run->end : end;
            void *at = REAL(mmap)(reserved + (low - start), high - low, prot,
                                  (flags & (MAP_TYPE | MAP_POPULATE | MAP_NONBLOCK)) | MAP_FIXED,
                                  run->shelf, (off_t)(run->shelf_offset + (low - run->start)));
            if (at == MAP_FAILED) placed = 0;
        }
        if (!placed) {
            REAL(munmap)(reserved, end - start);
            break;
        }
        base = reserved;
    }
    int holder = base == NULL ? -1 : REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 0);
    if (base != NULL && holder < 0) {
        REAL(munmap)(base, end - start);
        base = NULL;
    }
    if (base == NULL) {
        pin(file->area, file->slot, writable, -1);
    } else {
        mappings[free_record] = (struct mapping){base, end - start, file->slot, start, writable, holder, file->area};
    }
    pthread_mutex_unlock(&mappings_mutex);
    return base;
}

void *mmap(void *address, size_t length, int prot, int flags, int fd, off_t offset) {
    if (address == NULL && !(flags & MAP_ANONYMOUS) && fd >= 0 && !inside && !disabled) {
        struct pd_file *file = served(fd, 0);
        if (file != NULL) {
            void *mapped = map_in_place(fd, file, length, prot, flags, offset);
            let_go(file);
            if (mapped != NULL) return mapped;
        }
    }
    return REAL(mmap)(address, length, prot, flags, fd, offset);
}

void *mmap64(void *address, size_t length, int prot, int flags, int fd, off_t offset) __attribute__((alias("mmap")));

// The mapping that `[address, address + length)` lies in, or -1; the mutex held.
static int mapping_at(const void *address, size_t length) {
    const unsigned char *low = address;
    for (int i = 0; i < MAPPINGS; i++) {
        struct mapping *m = &mappings[i];
        if (m->base != NULL && low >= m->base && low + length <= m->base + m->length) return i;
    }
    return -1;
}

// Tells the mount what a writable mapping may have changed: its times
// move, and its next fsync makes the range durable.
static void report_mapping(const struct mapping *m, const unsigned char *low, size_t length) {
    uint64_t start = m->offset + (uint64_t)(low - m->base);
    report_range(m->descriptor, start, start + length);
}

int msync(void *address, size_t length, int flags) {
    pthread_mutex_lock(&mappings_mutex);
    int index = mapping_at(address, length);
    if (index >= 0 && mappings[index].writable) report_mapping(&mappings[index], address, length);
    pthread_mutex_unlock(&mappings_mutex);
    return REAL(msync)(address, length, flags);
}

int munmap(void *address, size_t length) {
    int result = REAL(munmap)(address, length);
    if (result != 0 || inside) return result;
    pthread_mutex_lock(&mappings_mutex);
    int index = mapping_at(address, length);
    // Only the whole mapping lets go: a part unmapped leaves it pinned
    // (and the file open) until the process ends.
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (index >= 0 && mappings[index].base == address && ((length + page - 1) & ~(page - 1)) >= mappings[index].length) {
        struct mapping gone = mappings[index];
        mappings[index].base = NULL;
        if (gone.writable) report_mapping(&gone, gone.base, gone.length);
        pin(gone.area, gone.slot, gone.writable, -1);
        REAL(close)(gone.descriptor);
    }
    pthread_mutex_unlock(&mappings_mutex);
    return result;
}
