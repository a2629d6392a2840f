import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Reading /dev/fuse once the rings serve. Then only forgets and
/// interrupts come through it, and neither needs a quick answer; but a
/// thread waiting on it is woken for each forget (one per unlink), on
/// another CPU, which made every unlink slower. So the device is made
/// non-blocking and looked at every 100 ms: forgets queue up and are read
/// in batches.
final class DevicePolling: Sendable {
    /// Whether rings were started: until then (and for good on a mount
    /// without them) a read is a plain blocking one, with nothing to ask.
    let ringsStarted = Atomic<Bool>(false)
    private let polled = Atomic<Bool>(false)
    /// The mount table, which a poll reports changed as soon as the mount
    /// is taken off it: the device is then looked at every 2 ms for a while
    /// (the connection ends a moment after), so that the session ends at
    /// once rather than at the next look.
    private let mountTable = Glibc.open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
    private let quickLooks = Atomic<Int>(0)
    static let intervalMilliseconds: Int32 = 100

    deinit {
        if mountTable >= 0 { close(mountTable) }
    }

    /// read(2) of `device`, but once `ringsServe` says so, without
    /// blocking: waits between looks instead, and never returns EAGAIN
    /// (libfuse's loop would end on it). `session` ended, EINTR.
    func read(_ device: Int32, _ buffer: UnsafeMutableRawPointer?, _ length: Int, session: OpaquePointer?,
              ringsServe: () -> Bool) -> Int {
        if ringsStarted.load(ordering: .relaxed), !polled.load(ordering: .relaxed), ringsServe(),
           !polled.exchange(true, ordering: .relaxed) {
            _ = fcntl(device, F_SETFL, fcntl(device, F_GETFL) | O_NONBLOCK)
        }
        while true {
            let count = Glibc.read(device, buffer, length)
            guard count < 0 && errno == EAGAIN else { return count }
            // Ended some other way than the main thread's cancel: the loop looks again.
            if let session, fuse_session_exited(session) != 0 {
                errno = EINTR
                return -1
            }
            waitBeforeLooking()
        }
    }

    /// The interval, or a change of the mount table (an unmount).
    private func waitBeforeLooking() {
        if mountTable < 0 {
            usleep(UInt32(DevicePolling.intervalMilliseconds) * 1000)
        } else if quickLooks.load(ordering: .relaxed) > 0 {
            quickLooks.subtract(1, ordering: .relaxed)
            usleep(2000)
        } else {
            var table = pollfd(fd: mountTable, events: Int16(POLLPRI), revents: 0)
            if poll(&table, 1, DevicePolling.intervalMilliseconds) > 0 { quickLooks.store(500, ordering: .relaxed) }
        }
    }
}
