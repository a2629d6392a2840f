import FUSETransport
import PoolCore
import PoolThreads

/// The mount's background give-back (OpenPool+GiveBack.swift): once a
/// second, the dram shelves' runs that stayed free since the pass before
/// go back to the system, so that removing files frees memory within
/// seconds, as on tmpfs.
enum FreeMemoryReturner {
    static let periodMilliseconds: Int32 = 1000

    /// The running pass; `stop()` it before the pool closes.
    static func start(pool: Pool) -> PeriodicThread {
        // Touched by the thread alone.
        nonisolated(unsafe) var decay = FreeMemoryDecay()
        return PeriodicThread(periodMilliseconds: periodMilliseconds) { pool.giveBackFreeMemory(&decay) }
    }
}
