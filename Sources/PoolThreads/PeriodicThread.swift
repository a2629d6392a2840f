import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// A thread that runs `tick` every `periodMilliseconds` until stopped, for
/// background work (the rings' watchdog, the memory give-back, a remote
/// pool's heartbeat).
/// An eventfd stops it at once, not at its next tick.
public final class PeriodicThread: @unchecked Sendable {
    private let stopping = eventfd(0, Int32(EFD_CLOEXEC))
    private var thread: JoinableThread?

    /// nil-safe: without an eventfd or a thread, nothing runs.
    public init(periodMilliseconds: Int32, _ tick: @escaping () -> Void) {
        guard stopping >= 0 else { return }
        let stopping = self.stopping
        thread = JoinableThread {
            var stop = pollfd(fd: stopping, events: Int16(POLLIN), revents: 0)
            while true {
                let ready = poll(&stop, 1, periodMilliseconds)
                if ready > 0 || (ready < 0 && errno != EINTR) { return }
                tick()
            }
        }
    }

    deinit { if stopping >= 0 { close(stopping) } }

    /// Stops the thread and waits for it; its last tick has ended on return
    /// (unless called from that tick).
    public func stop() {
        guard let thread else { return }
        var one: UInt64 = 1
        _ = write(stopping, &one, MemoryLayout<UInt64>.size)
        // Stopped from its own tick (its owner's last reference went there):
        // it cannot wait for itself, and ends once the tick returns.
        if thread.isCurrent { thread.detach() } else { thread.join() }
        self.thread = nil
    }
}
