// The interposition layer of libpoolfs-direct.so: the libc calls it takes
// over, the table of descriptors it serves, and the copy that skips the
// FUSE round trip. Everything that is not a copy (leasing a layout,
// mapping shelves) is Swift (Sources/PoolDirect, built as
// libpoolfs-direct-swift.so), called through the pd_swift_* functions
// below, which it defines with @_cdecl; it calls the pd_* ones back.
#ifndef POOLFS_DIRECT_H
#define POOLFS_DIRECT_H

#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

// One run of a layout, as this process maps it: file bytes [start, end)
// are at base.
struct pd_run {
    uint64_t start;
    uint64_t end;
    unsigned char *base;
    uint64_t writable;
    int shelf;                  // the shelf file's descriptor, and where the run is in it: for mmap
    uint64_t shelf_offset;
};

// A layout as copied out of the area at one generation. Never changed once
// published, and kept until the file closes (a copy may still use it).
struct pd_layout {
    struct pd_layout *older;
    uint64_t generation;
    uint64_t count;
    struct pd_run runs[];
};

// A pool's area as this process maps it: shared by its files.
struct pd_area {
    uint64_t *epoch;    // the header's epoch word
    uint64_t *client;   // this process's client words (readers by parity at 1 and 2)
    uint64_t *pins;     // its pins: pairs of (layout slot + 1, mappings), pin_count of them
    uint64_t pin_count;
};

// One open file served directly.
struct pd_file {
    struct pd_layout *layout;          // the newest, loaded and stored atomically
    uint64_t *generation;              // the layout's words in the area
    uint64_t *size;
    uint64_t *flags;
    struct pd_area *area;
    int readable;
    int writable;                      // opened for writing, without O_APPEND
    pthread_mutex_t offset_lock;       // read(2)/write(2): position and copy as one step
    pthread_mutex_t refresh_lock;      // one thread reads a moved layout at a time
    uint64_t written_start, written_end; // written since the last report (atomic; empty: MAX, 0)
    uint64_t reported_at;              // CLOCK_MONOTONIC_COARSE, ns
    uint64_t users;                    // copies under way; a close waits for them
    int descriptors;                   // descriptors that serve it (dup), atomic
    uint64_t slot;                     // the layout's slot in the area, and the file it must name
    uint64_t inode;
    void *pool;                        // Swift's MappedPool, unretained
};

// A file's state, from a fixed table (file_slots.c); NULL when all are
// taken (the mount then serves the file).
struct pd_file *pd_file_new(void);
// Frees its layouts and its slot; no copy may use it.
void pd_file_release(struct pd_file *file);
// Its last descriptor went: released once no copy uses it (later, by
// pd_files_reclaim, when that is a signal handler).
void pd_file_close(struct pd_file *file, int in_handler);
void pd_files_reclaim(void);

// Whether this thread runs a signal handler the program installed
// (signals.c): the slow paths, which allocate and lock, are not taken there.
int pd_in_signal_handler(void);

// The ioctl that tells the mount which bytes were written directly
// (DirectRequest.wrote: _IOW('p', 2, 32 bytes)).
unsigned long pd_wrote_request(void);

// Makes a layout of `count` runs (runs filled by the caller).
struct pd_layout *pd_layout_new(uint64_t generation, uint64_t count);
void pd_layout_set(struct pd_layout *layout, uint64_t index, uint64_t start, uint64_t end,
                   unsigned char *base, int writable, int shelf, uint64_t shelf_offset);
// Publishes `layout` as the file's newest.
void pd_file_publish(struct pd_file *file, struct pd_layout *layout);

// Defined in Swift, in libpoolfs-direct-swift.so, which the C side loads
// at its first lease and calls through pointers.
// After open: a file of a poolfs mount gets its state, anything else NULL.
struct pd_file *pd_swift_attach(int fd, int flags);
// The layout's generation moved: copy it again; 0 on success.
int pd_swift_refresh(struct pd_file *file);
// In the child after fork: its own client slots.
void pd_swift_forked(void);
// Pins again, in the child's own client slots, what the parent's mappings pinned.
void pd_pin_again_after_fork(void);

// The real calls, for Swift's own file work.
int pd_real_open(const char *path, int flags, unsigned mode);
int pd_real_close(int fd);
int pd_real_ioctl(int fd, unsigned long request, void *argument);

#endif
