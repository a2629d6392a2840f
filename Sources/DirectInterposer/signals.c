// Whether this thread runs a signal handler: the library's slow paths
// (leasing a layout, reading a moved one, loading the Swift part, starting
// its reporter, freeing a closed file's state) allocate or take locks, and a
// handler that interrupted a thread inside malloc or inside one of them would
// deadlock on it. So every handler the program installs runs through a
// trampoline that counts it, and those paths leave a call made in a handler
// to the mount (read, write, open and close stay async-signal-safe).
#define _GNU_SOURCE
#include "poolfs_direct.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#define FRAMES 8

// The program's handler for each signal and its flags, as it asked: what
// the trampoline calls, and what sigaction reports as the old action.
static void *program_handlers[NSIG];
static int program_flags[NSIG];
static __thread unsigned depth __attribute__((tls_model("initial-exec")));
static __thread uintptr_t frames[FRAMES] __attribute__((tls_model("initial-exec")));

static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

static int call_real(int number, const struct sigaction *action, struct sigaction *old) {
    if (__atomic_load_n(&real_sigaction, __ATOMIC_ACQUIRE) == NULL) {
        __atomic_store_n(&real_sigaction, dlsym(RTLD_NEXT, "sigaction"), __ATOMIC_RELEASE);
    }
    return real_sigaction(number, action, old);
}

// Every handler is called with three arguments: a one-argument handler
// ignores the other two (both ABIs Linux runs on pass them in registers).
static void trampoline(int number, siginfo_t *info, void *context) {
    unsigned level = depth;
    if (level < FRAMES) frames[level] = (uintptr_t)__builtin_frame_address(0);
    depth = level + 1;
    void (*handler)(int, siginfo_t *, void *) = __atomic_load_n(&program_handlers[number], __ATOMIC_ACQUIRE);
    if (handler != NULL) handler(number, info, context);
    depth = level;
}

int pd_in_signal_handler(void) {
    // A handler left by siglongjmp never lowered the count: a frame above
    // its trampoline's (the stack grows down) is outside it. A handler on
    // an alternate stack compares against addresses of another stack, and
    // may then be taken as still running: the safe side (the mount serves).
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    while (depth > 0) {
        if (depth > FRAMES || here < frames[depth - 1]) return 1;
        depth--;
    }
    return 0;
}

int sigaction(int number, const struct sigaction *action, struct sigaction *old) {
    if (number <= 0 || number >= NSIG) return call_real(number, action, old);
    void *previous = __atomic_load_n(&program_handlers[number], __ATOMIC_ACQUIRE);
    int previous_flags = program_flags[number];
    struct sigaction wrapped;
    const struct sigaction *installed = action;
    if (action != NULL && action->sa_handler != SIG_DFL && action->sa_handler != SIG_IGN) {
        wrapped = *action;
        wrapped.sa_sigaction = trampoline;
        wrapped.sa_flags |= SA_SIGINFO;
        // Stored first: a signal that arrives once it is installed finds it.
        program_flags[number] = action->sa_flags;
        __atomic_store_n(&program_handlers[number], (void *)action->sa_sigaction, __ATOMIC_RELEASE);
        installed = &wrapped;
    }
    int result = call_real(number, installed, old);
    if (result != 0 && installed != action) {
        program_flags[number] = previous_flags;
        __atomic_store_n(&program_handlers[number], previous, __ATOMIC_RELEASE);
    }
    if (result == 0 && old != NULL && old->sa_sigaction == trampoline) {
        old->sa_sigaction = previous;
        if (!(previous_flags & SA_SIGINFO)) old->sa_flags &= ~SA_SIGINFO;
    }
    return result;
}

// glibc's signal() and its kin call its internal sigaction, not this one.
static sighandler_t install(int number, sighandler_t handler, int flags, int mask_itself) {
    struct sigaction action, old;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    if (mask_itself && number > 0 && number < NSIG) sigaddset(&action.sa_mask, number);
    return sigaction(number, &action, &old) == 0 ? old.sa_handler : SIG_ERR;
}

sighandler_t signal(int number, sighandler_t handler) { return install(number, handler, SA_RESTART, 1); }
sighandler_t bsd_signal(int number, sighandler_t handler) __attribute__((alias("signal")));
sighandler_t ssignal(int number, sighandler_t handler) __attribute__((alias("signal")));
sighandler_t sysv_signal(int number, sighandler_t handler) {
    return install(number, handler, SA_RESETHAND | SA_NODEFER, 0);
}
sighandler_t __sysv_signal(int number, sighandler_t handler) __attribute__((alias("sysv_signal")));
