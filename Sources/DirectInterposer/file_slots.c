// The states of served files, kept in a fixed table rather than taken from
// malloc: a close in a signal handler must not call free, and a thread that
// loads a file's pointer just as another thread closes it must still find
// a pd_file there (it counts itself a user, sees the file gone, and counts
// itself out), never memory malloc gave to something else.
#define _GNU_SOURCE
#include "poolfs_direct.h"

#include <sched.h>
#include <stdlib.h>

#define FILE_SLOTS 4096

enum { FREE, USED, CLOSED, FREEING };

static struct pd_file slots[FILE_SLOTS];
static unsigned char states[FILE_SLOTS];
static unsigned hint;
static unsigned closed_count;

struct pd_file *pd_file_new(void) {
    for (unsigned tried = 0; tried < FILE_SLOTS; tried++) {
        unsigned index = __atomic_fetch_add(&hint, 1, __ATOMIC_RELAXED) % FILE_SLOTS;
        unsigned char expected = FREE;
        if (!__atomic_compare_exchange_n(&states[index], &expected, USED, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) continue;
        struct pd_file *file = &slots[index];
        // Every field but `users`, which a thread holding a stale pointer
        // may be counting in and out of right now.
        file->layout = NULL;
        file->generation = file->size = file->flags = NULL;
        file->area = NULL;
        file->readable = file->writable = 0;
        pthread_mutex_init(&file->offset_lock, NULL);
        pthread_mutex_init(&file->refresh_lock, NULL);
        file->written_start = UINT64_MAX;
        file->written_end = 0;
        file->reported_at = 0;
        file->descriptors = 0;
        file->slot = file->inode = 0;
        file->pool = NULL;
        return file;
    }
    return NULL;
}

static unsigned index_of(struct pd_file *file) { return (unsigned)(file - slots); }

void pd_file_release(struct pd_file *file) {
    struct pd_layout *layout = file->layout;
    while (layout != NULL) {
        struct pd_layout *older = layout->older;
        free(layout);
        layout = older;
    }
    file->layout = NULL;
    pthread_mutex_destroy(&file->offset_lock);
    pthread_mutex_destroy(&file->refresh_lock);
    __atomic_store_n(&states[index_of(file)], FREE, __ATOMIC_RELEASE);
}

void pd_file_close(struct pd_file *file, int in_handler) {
    if (in_handler) {
        // Freed later, outside the handler, once no copy uses it.
        __atomic_store_n(&states[index_of(file)], CLOSED, __ATOMIC_RELEASE);
        __atomic_add_fetch(&closed_count, 1, __ATOMIC_ACQ_REL);
        return;
    }
    // A thread still copying through it (a close racing a read is the
    // program's race, but must not fault) finishes first.
    while (__atomic_load_n(&file->users, __ATOMIC_SEQ_CST) != 0) sched_yield();
    pd_file_release(file);
}

void pd_files_reclaim(void) {
    if (__atomic_load_n(&closed_count, __ATOMIC_ACQUIRE) == 0) return;
    for (unsigned index = 0; index < FILE_SLOTS; index++) {
        unsigned char expected = CLOSED;
        if (__atomic_load_n(&states[index], __ATOMIC_ACQUIRE) != CLOSED
            || __atomic_load_n(&slots[index].users, __ATOMIC_SEQ_CST) != 0
            || !__atomic_compare_exchange_n(&states[index], &expected, FREEING, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            continue;
        }
        __atomic_sub_fetch(&closed_count, 1, __ATOMIC_ACQ_REL);
        pd_file_release(&slots[index]);
    }
}
