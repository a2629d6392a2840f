/* A C program using poolcore.h the way hmalloc users use hmalloc; the tests
 * compile and run it against libpoolcore.so. It prints "kept ADDRESS" for an
 * object it leaves in the pool, then "ok". */
#include <poolcore.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "example.c:%d: %s failed: %s\n", __LINE__, #cond,    \
                    pool_last_error() ? pool_last_error() : "");                 \
            return 1;                                                            \
        }                                                                        \
    } while (0)

int main(void) {
    /* The default heap, from POOLFS_POOL / POOLFS_PATH / POOLFS_HEAP. */
    char *text = pm_malloc(100);
    CHECK(text != NULL);
    CHECK(pm_usable_size(text) >= 100);
    strcpy(text, "written from C");
    text = pm_realloc(text, 5000);
    CHECK(text != NULL && strcmp(text, "written from C") == 0);

    int *zeros = pm_calloc(1000, sizeof(int));
    CHECK(zeros != NULL);
    for (int i = 0; i < 1000; i++) CHECK(zeros[i] == 0);
    pm_free(zeros);

    void *aligned = NULL;
    CHECK(pm_posix_memalign(&aligned, 256, 100) == 0);
    CHECK(((uintptr_t)aligned & 255) == 0);
    pm_free(aligned);
    CHECK(pm_posix_memalign(&aligned, 3, 100) == EINVAL);

    /* Explicit heaps, global addresses. */
    pool_t *pool = heap_pool(pm_default_heap());
    CHECK(pool != NULL);
    heap_t *heap = NULL;
    CHECK(heap_open(pool, "c-objects", 1, &heap) == 0);
    void *objects[1000];
    for (int i = 0; i < 1000; i++) {
        objects[i] = heap_malloc(heap, 16 + i);
        CHECK(objects[i] != NULL);
        memset(objects[i], i & 0xff, 16 + i);
    }
    for (int i = 0; i < 1000; i++) {
        pool_addr_t addr = pool_addr(pool, objects[i]);
        CHECK(addr != 0 && pool_ptr(pool, addr) == objects[i]);
        CHECK(((unsigned char *)objects[i])[15 + i] == (i & 0xff));
        heap_free(heap, objects[i]);
    }

    /* Epochs. */
    void *shared = heap_malloc(heap, 64);
    CHECK(heap_epoch_enter(heap) == 0);
    CHECK(heap_delayed_free(heap, shared) == 0);
    heap_epoch_exit(heap);

    /* Errors come back as codes, with a message. */
    pool_t *missing = NULL;
    CHECK(pool_open("no-such-pool", getenv("POOLFS_PATH"), &missing) == ENOENT);
    CHECK(strstr(pool_last_error(), "no-such-pool") != NULL);
    CHECK(heap_malloc(heap, (size_t)1 << 40) == NULL && errno == ENOSPC);
    CHECK(pool_strerror(ENOSPC) != NULL);
    heap_close(heap);

    printf("kept %llu\n", (unsigned long long)pool_addr(pool, text));
    printf("ok\n");
    return 0;
}
