#if canImport(Glibc)
import Glibc
#endif

/// A point on the monotonic clock by which a remote call must be done:
/// UCX waits on a stopped node or a cut link for ever, so every wait here
/// carries one.
struct Deadline: Sendable {
    let nanoseconds: UInt64
    /// The span it was set for, for messages.
    let seconds: Double

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    static func after(seconds: Double) -> Deadline {
        Deadline(nanoseconds: now() + UInt64(max(seconds, 0) * 1e9), seconds: seconds)
    }

    var hasPassed: Bool { Deadline.now() >= nanoseconds }

    /// Milliseconds left, for poll(2) and epoll_wait(2); 0 once passed.
    var millisecondsLeft: Int32 {
        let now = Deadline.now()
        return now >= nanoseconds ? 0 : Int32(min((nanoseconds - now + 999_999) / 1_000_000, 1 << 30))
    }
}
