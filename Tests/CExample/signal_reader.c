// Reads and closes files from signal handlers, for the direct-access test
// of async-signal safety: run under libpoolfs-direct.so, one command per
// line on standard input, one answer per line:
//   open PATH                    a descriptor (O_RDWR)
//   pread FD OFFSET LENGTH       hex bytes, read here
//   handler-pread FD OFFSET LENGTH   the same, read in a SIGUSR1 handler
//   handler-close FD             closed in a SIGUSR1 handler: "ok"
//   jump                         a SIGUSR2 handler that siglongjmps out: "jumped"
//   swift                        1 if the library's Swift part is mapped
//   old-handler                  "same" if sigaction reports this program's handler
// Or, as `signal_reader storm PATH SECONDS`, a malloc loop interrupted
// every 200 µs by a handler that opens, reads and closes PATH: it prints
// "calls N right M" (M of the reads gave the bytes a read outside gave).
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int handler_fd;
static volatile off_t handler_offset;
static volatile size_t handler_length;
static volatile int handler_closes;
static unsigned char handler_bytes[4096];
static volatile ssize_t handler_result;
static sigjmp_buf jump_back;

static void on_usr1(int number) {
    (void)number;
    if (handler_closes) {
        handler_result = close(handler_fd);
    } else {
        handler_result = pread(handler_fd, handler_bytes, handler_length, handler_offset);
    }
}

static void on_usr2(int number) {
    (void)number;
    siglongjmp(jump_back, 1);
}

static void print_hex(const unsigned char *bytes, ssize_t count) {
    if (count < 0) {
        printf("error\n");
        return;
    }
    for (ssize_t i = 0; i < count; i++) printf("%02x", bytes[i]);
    printf(count == 0 ? "-\n" : "\n");
}

static int swift_mapped(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (maps != NULL && fgets(line, sizeof line, maps) != NULL) {
        if (strstr(line, "libpoolfs-direct-swift.so") != NULL) found = 1;
    }
    if (maps != NULL) fclose(maps);
    return found;
}

static const char *storm_path;
static unsigned char storm_expected[4];
static volatile long storm_calls, storm_right;

static void on_alarm(int number) {
    (void)number;
    int fd = open(storm_path, O_RDONLY);
    unsigned char bytes[4];
    if (fd >= 0 && pread(fd, bytes, 4, 4096) == 4 && memcmp(bytes, storm_expected, 4) == 0) storm_right++;
    if (fd >= 0) close(fd);
    storm_calls++;
}

static double now(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (double)time.tv_sec + (double)time.tv_nsec / 1e9;
}

static int storm(const char *path, double seconds) {
    storm_path = path;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || pread(fd, storm_expected, 4, 4096) != 4) return 1;
    close(fd);
    signal(SIGALRM, on_alarm);
    struct itimerval every = {{0, 200}, {0, 200}};
    setitimer(ITIMER_REAL, &every, NULL);
    void *kept[64] = {0};
    unsigned long random = 1;
    for (double start = now(); now() - start < seconds;) {
        for (int i = 0; i < 10000; i++) {
            random = random * 6364136223846793005ul + 1;
            int slot = (int)((random >> 33) % 64);
            free(kept[slot]);
            kept[slot] = malloc((random >> 20) % 4000 + 1);
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("calls %ld right %ld\n", storm_calls, storm_right);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "storm") == 0) return storm(argv[2], atof(argv[3]));
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_usr1;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGUSR1, &action, NULL) != 0 || signal(SIGUSR2, on_usr2) == SIG_ERR) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    char line[4096], path[4096];
    int fd;
    long long offset, length;
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (sscanf(line, "open %4095s", path) == 1) {
            printf("%d\n", open(path, O_RDWR));
        } else if (sscanf(line, "pread %d %lld %lld", &fd, &offset, &length) == 3 && length <= 4096) {
            unsigned char bytes[4096];
            print_hex(bytes, pread(fd, bytes, (size_t)length, (off_t)offset));
        } else if (sscanf(line, "handler-pread %d %lld %lld", &fd, &offset, &length) == 3 && length <= 4096) {
            handler_fd = fd;
            handler_offset = (off_t)offset;
            handler_length = (size_t)length;
            handler_closes = 0;
            raise(SIGUSR1);
            print_hex(handler_bytes, handler_result);
        } else if (sscanf(line, "handler-close %d", &fd) == 1) {
            handler_fd = fd;
            handler_closes = 1;
            raise(SIGUSR1);
            printf(handler_result == 0 ? "ok\n" : "error\n");
        } else if (strcmp(line, "jump\n") == 0) {
            if (sigsetjmp(jump_back, 1) == 0) raise(SIGUSR2);
            printf("jumped\n");
        } else if (strcmp(line, "swift\n") == 0) {
            printf("%d\n", swift_mapped());
        } else if (strcmp(line, "old-handler\n") == 0) {
            struct sigaction old;
            sigaction(SIGUSR1, NULL, &old);
            printf(old.sa_handler == on_usr1 && !(old.sa_flags & SA_SIGINFO) ? "same\n" : "other\n");
        } else {
            break;
        }
    }
    return 0;
}
