/*
 * poolcore.h — the poolfs allocator for C and C++ programs.
 *
 * Link with -lpoolcore (libpoolcore.so, built by `swift build`). The same
 * heaps that Swift programs and the poolfs mount use: objects live in a
 * pool's shared memory, named across processes by pool_addr_t global
 * addresses; pointers are valid in the process that got them.
 *
 * Errors: calls that return int return 0 or an errno-style code; calls that
 * return a pointer return NULL and set errno. pool_strerror(code) names a
 * code; pool_last_error() is this thread's last error as one line. A full
 * pool is ENOSPC, as through the mount.
 */
#ifndef POOLCORE_H
#define POOLCORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct poolcore_pool pool_t;
typedef struct poolcore_heap heap_t;

/* shelf << 48 | offset; the same value means the same bytes in every
   process and after every restart. 0 is null. */
typedef uint64_t pool_addr_t;

/* Pools. dir NULL means /dev/shm/poolfs. */
int pool_create(const char *name, const char *dir, uint64_t size, pool_t **pool);
int pool_open(const char *name, const char *dir, pool_t **pool);
void pool_close(pool_t *pool);

/* Heaps: with create != 0 the heap is made if missing. */
int heap_open(pool_t *pool, const char *name, int create, heap_t **heap);
void heap_close(heap_t *heap);

void *heap_malloc(heap_t *heap, size_t size);
void *heap_calloc(heap_t *heap, size_t count, size_t size);
void *heap_realloc(heap_t *heap, void *ptr, size_t size);
void heap_free(heap_t *heap, void *ptr);
size_t heap_usable_size(heap_t *heap, const void *ptr);
int heap_posix_memalign(heap_t *heap, void **ptr, size_t alignment, size_t size);

/* Epochs and delayed free: memory freed with heap_delayed_free is reused
   only after every epoch that began before the free has ended. */
int heap_epoch_enter(heap_t *heap);
void heap_epoch_exit(heap_t *heap);
int heap_delayed_free(heap_t *heap, void *ptr);

/* Global addresses <-> pointers of this process. */
pool_addr_t pool_addr(pool_t *pool, const void *ptr);
void *pool_ptr(pool_t *pool, pool_addr_t addr);
pool_t *heap_pool(heap_t *heap);

/* hmalloc-style calls on the default heap, chosen by the environment:
   POOLFS_POOL (default "default"), POOLFS_PATH (default /dev/shm/poolfs),
   POOLFS_HEAP (default "default", created when missing).
   `poolfs exec --heap HEAP -- PROGRAM` sets them. */
heap_t *pm_default_heap(void);
void *pm_malloc(size_t size);
void *pm_calloc(size_t count, size_t size);
void *pm_realloc(void *ptr, size_t size);
void pm_free(void *ptr);
size_t pm_usable_size(const void *ptr);
int pm_posix_memalign(void **ptr, size_t alignment, size_t size);

const char *pool_strerror(int code);
const char *pool_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* POOLCORE_H */
