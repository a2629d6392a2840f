import PoolCore

/// The mount's background give-back (OpenPool+GiveBack.swift): once a
/// second, the dram shelves' runs that stayed free since the pass before
/// go back to the system, so that removing files frees memory within
/// seconds, as on tmpfs.
final class FreeMemoryReturner: @unchecked Sendable {
    static let periodMilliseconds: Int32 = 1000
    private var thread: PeriodicThread?

    init(pool: Pool) {
        // Touched by the thread alone.
        nonisolated(unsafe) var decay = FreeMemoryDecay()
        thread = PeriodicThread(periodMilliseconds: FreeMemoryReturner.periodMilliseconds) {
            pool.giveBackFreeMemory(&decay)
        }
    }

    func stop() { thread?.stop() }
}
