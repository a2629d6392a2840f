import CFuse
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// The mount's background give-back (OpenPool+GiveBack.swift): once a
/// second, the dram shelves' runs that stayed free since the pass before
/// go back to the system, so that removing files frees memory within
/// seconds, as on tmpfs.
final class FreeMemoryReturner: @unchecked Sendable {
    static let periodMilliseconds: Int32 = 1000
    private let pool: Pool
    /// Written once to stop the thread at once, not at its next pass.
    private let stopping = eventfd(0, Int32(EFD_CLOEXEC))
    private var thread: JoinableThread?

    init(pool: Pool) {
        self.pool = pool
        guard stopping >= 0 else { return }
        thread = JoinableThread { self.run() }
    }

    deinit { if stopping >= 0 { close(stopping) } }

    func stop() {
        guard let thread else { return }
        var one: UInt64 = 1
        _ = write(stopping, &one, MemoryLayout<UInt64>.size)
        thread.join()
        self.thread = nil
    }

    private func run() {
        var decay = FreeMemoryDecay()
        var stop = pollfd(fd: stopping, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&stop, 1, FreeMemoryReturner.periodMilliseconds)
            if ready > 0 || (ready < 0 && errno != EINTR) { return }
            pool.giveBackFreeMemory(&decay)
        }
    }
}
