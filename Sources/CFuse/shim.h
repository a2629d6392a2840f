// libfuse3's low-level API, the kernel's FUSE protocol (<linux/fuse.h>)
// and liburing for FUSE over io_uring. Not compiled with _GNU_SOURCE:
// glibc's headers then define fd_set and the rusage enum otherwise than
// for Swift's Glibc module, and a clean build refuses the two modules
// together. What glibc hides without it comes from the kernel's own
// headers (<linux/sched.h>: SCHED_IDLE) or glibc's always-present names
// (__CPU_SET_S, SYS_gettid). libfuse's header refuses to compile without
// FUSE_USE_VERSION; 314 makes fuse_session_loop_mt resolve to a real symbol.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <linux/sched.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <errno.h>
#include <unistd.h>

// What newer kernels' <linux/fuse.h> has and the installed one may lack
// (Debian 12's is protocol 7.38): mirrored from the kernel's header,
// their layout pinned below.
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif
#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING (1ULL << 41)
#endif
#ifndef FUSE_URING_IN_OUT_HEADER_SZ
#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128
struct fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;
    uint32_t payload_sz;
    uint32_t padding;
    uint64_t reserved;
};
struct fuse_uring_req_header {
    char in_out[FUSE_URING_IN_OUT_HEADER_SZ];
    char op_in[FUSE_URING_OP_IN_OUT_SZ];
    struct fuse_uring_ent_in_out ring_ent_in_out;
};
enum fuse_uring_cmd {
    FUSE_IO_URING_CMD_INVALID = 0,
    FUSE_IO_URING_CMD_REGISTER = 1,
    FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};
struct fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};
#endif
_Static_assert(sizeof(struct fuse_in_header) == 40, "fuse_in_header");
_Static_assert(sizeof(struct fuse_out_header) == 16, "fuse_out_header");
_Static_assert(offsetof(struct fuse_init_out, flags2) == 32, "fuse_init_out.flags2");
_Static_assert(offsetof(struct fuse_uring_req_header, op_in) == 128, "fuse_uring_req_header.op_in");
_Static_assert(offsetof(struct fuse_uring_req_header, ring_ent_in_out) == 256, "fuse_uring_req_header.ring_ent_in_out");
_Static_assert(offsetof(struct fuse_uring_ent_in_out, commit_id) == 8, "fuse_uring_ent_in_out.commit_id");
_Static_assert(offsetof(struct fuse_uring_ent_in_out, payload_sz) == 16, "fuse_uring_ent_in_out.payload_sz");
_Static_assert(sizeof(struct fuse_uring_cmd_req) == 24, "fuse_uring_cmd_req");

// The three parts of a ring entry's header buffer, typed (Swift sees the
// kernel's char arrays as tuples).
static inline struct fuse_in_header *poolfs_ring_in_header(struct fuse_uring_req_header *header) {
    return (struct fuse_in_header *)header->in_out;
}
static inline struct fuse_out_header *poolfs_ring_out_header(struct fuse_uring_req_header *header) {
    return (struct fuse_out_header *)header->in_out;
}
static inline void *poolfs_ring_operation(struct fuse_uring_req_header *header) {
    return header->op_in;
}

// A ring whose SQEs have room for a uring command (IORING_SETUP_SQE128),
// made by one thread for another: it starts disabled, and the thread that
// serves it enables it (poolfs_ring_enable) and is its only submitter, so
// the kernel can leave the work that hands it a request until it waits
// (DEFER_TASKRUN: no signal-style notification per request). Kernels
// without those flags get a plain ring.
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
    // liburing 2.3 has no wrapper for it.
    return syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0 ? -errno : 0;
}

// Queues one FUSE ring command: register an entry's two buffers (`iov`),
// or commit its reply and fetch the next request.
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
    struct fuse_uring_cmd_req *request = (struct fuse_uring_cmd_req *)sqe->cmd;
    request->flags = 0;
    request->commit_id = commit;
    request->qid = queue;
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

static inline int poolfs_thread_id(void) {
    return (int)syscall(SYS_gettid);
}

// Thread `tid` at idle priority or back to the normal one.
static inline int poolfs_set_idle_priority(int tid, int idle) {
    struct sched_param param;
    memset(&param, 0, sizeof param);
    return sched_setscheduler(tid, idle ? SCHED_IDLE : SCHED_OTHER, &param);
}

// Whether this thread may go back from SCHED_IDLE to SCHED_OTHER: root,
// or an RLIMIT_NICE that allows nice 0.
static inline int poolfs_may_leave_idle_priority(void) {
    struct rlimit limit;
    return geteuid() == 0 || (getrlimit(RLIMIT_NICE, &limit) == 0 && limit.rlim_cur >= 20);
}

// Every CPU the kernel has (it keeps the ones that exist).
static inline int poolfs_unpin(void) {
    cpu_set_t set;
    memset(&set, 0xff, sizeof set);
    return sched_setaffinity(0, sizeof set, &set);
}

static inline int poolfs_pin_to_cpu(int cpu) {
    cpu_set_t set;
    if (cpu < 0 || cpu >= __CPU_SETSIZE) return -EINVAL;
    __CPU_ZERO_S(sizeof set, &set);
    __CPU_SET_S(cpu, sizeof set, &set);
    return sched_setaffinity(0, sizeof set, &set);
}
