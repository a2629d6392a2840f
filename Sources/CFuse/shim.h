// libfuse3's low-level API, and liburing for FUSE over io_uring. libfuse's
// header refuses to compile without FUSE_USE_VERSION; 314 makes
// fuse_session_loop_mt resolve to a real symbol.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

// FUSE over io_uring (kernel 6.14+): the steps that need the SQE's command
// area or cpu_set_t macros, which Swift cannot reach.
#include <liburing.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <poll.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <errno.h>
#include <unistd.h>

// A ring whose SQEs have room for a uring command (IORING_SETUP_SQE128),
// made by one thread for another: it starts disabled, and the thread that
// serves it enables it (poolfs_ring_enable) and is its only submitter, so
// the kernel can leave the work that hands it a request until it waits
// (DEFER_TASKRUN: no signal-style notification per request; one-job 4 KiB
// reads about 4% faster here). Kernels without those flags get a plain ring.
static inline int poolfs_ring_init(struct io_uring *ring, unsigned entries) {
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER
        | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
    params.cq_entries = entries * 2;
    int result = io_uring_queue_init_params(entries, ring, &params);
    if (result != -EINVAL) return result;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 2;
    return io_uring_queue_init_params(entries, ring, &params);
}

// Called by the ring's own thread before its first submission; 0 or -errno.
static inline int poolfs_ring_enable(struct io_uring *ring) {
    if (!(ring->flags & IORING_SETUP_R_DISABLED)) return 0;
    // IORING_REGISTER_ENABLE_RINGS; liburing 2.3 has no wrapper for it.
    return syscall(__NR_io_uring_register, ring->ring_fd, 12, NULL, 0) < 0 ? -errno : 0;
}

// Queues one FUSE ring command: register an entry's two buffers (`iov`),
// or commit its reply and fetch the next request. linux/fuse.h's
// struct fuse_uring_cmd_req: flags, commit_id, qid.
static inline int poolfs_ring_fuse_command(struct io_uring *ring, int fd, unsigned command, unsigned short queue,
                                           unsigned long long commit, const struct iovec *iov, void *data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = command;
    if (iov) {
        sqe->addr = (unsigned long long)(unsigned long)iov;
        sqe->len = 2;
    }
    unsigned long long *request = (unsigned long long *)sqe->cmd;
    request[0] = 0;
    request[1] = commit;
    *(unsigned short *)&request[2] = queue;
    io_uring_sqe_set_data(sqe, data);
    return 0;
}

// Wakes the ring's thread when `fd` (an eventfd) becomes readable.
static inline int poolfs_ring_poll(struct io_uring *ring, int fd, void *data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data(sqe, data);
    return 0;
}

// Submits what is queued and waits for one completion; 0 and *cqe set, or -errno.
static inline int poolfs_ring_next(struct io_uring *ring, struct io_uring_cqe **cqe) {
    int submitted = io_uring_submit_and_wait(ring, 1);
    if (submitted < 0) return submitted;
    return io_uring_peek_cqe(ring, cqe);
}

// prctl is variadic: Swift cannot call it.
static inline void poolfs_name_thread(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

// gettid() is hidden without _GNU_SOURCE.
static inline int poolfs_thread_id(void) {
    return (int)syscall(SYS_gettid);
}

// Thread `tid` at idle priority (SCHED_IDLE, hidden without _GNU_SOURCE)
// or back to the normal one (SCHED_OTHER).
static inline int poolfs_set_idle_priority(int tid, int idle) {
    struct sched_param param;
    memset(&param, 0, sizeof param);
    return sched_setscheduler(tid, idle ? 5 : SCHED_OTHER, &param);
}

// Whether this thread may go back from SCHED_IDLE to SCHED_OTHER: root,
// or an RLIMIT_NICE (hidden without _GNU_SOURCE, 13) that allows nice 0.
static inline int poolfs_may_leave_idle_priority(void) {
    struct rlimit limit;
    return geteuid() == 0 || (getrlimit((__rlimit_resource_t)13, &limit) == 0 && limit.rlim_cur >= 20);
}

// Every CPU the kernel has (it keeps the ones that exist).
static inline int poolfs_unpin(void) {
    cpu_set_t set;
    memset(&set, 0xff, sizeof set);
    return sched_setaffinity(0, sizeof set, &set);
}

static inline int poolfs_pin_to_cpu(int cpu) {
    // CPU_SET needs _GNU_SOURCE before the first sched.h: set the bit by hand.
    cpu_set_t set;
    memset(&set, 0, sizeof set);
    if (cpu < 0 || (size_t)cpu >= 8 * sizeof set) return -EINVAL;
    set.__bits[cpu / (8 * sizeof set.__bits[0])] |= 1UL << (cpu % (8 * sizeof set.__bits[0]));
    return sched_setaffinity(0, sizeof set, &set);
}
