import PoolThreads
import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the rings' idle-priority threads (RingQueue.swift) from starving.
/// An idle-priority thread runs only when its CPU has nothing else to do;
/// should that CPU stay busy with other work while a request waits on its
/// queue, the request would wait as long. So every `period` this reads how
/// long each thread has waited to run (the kernel's schedstat), and gives a
/// thread that waited more than `patience` of it normal priority for
/// `raise` (a busy CPU tends to stay busy). Waiting time, not the requests
/// answered: on a busy CPU an idle-priority thread still gets a sliver of
/// it, and answers a request now and then.
final class RingWatchdog: @unchecked Sendable {
    private let queues: [RingQueue]
    private var thread: PeriodicThread?
    /// Each queue's thread's /proc schedstat file, opened once (-1 until
    /// then), and how long the thread had waited to run at the last look.
    private var statFiles: [Int32]
    private var waited: [UInt64?]

    static let periodMilliseconds: Int32 = 20
    static let patienceNanoseconds: UInt64 = 10_000_000
    static let raiseNanoseconds: UInt64 = 1_000_000_000

    init(watching queues: [RingQueue]) {
        self.queues = queues
        statFiles = Array(repeating: -1, count: queues.count)
        waited = Array(repeating: nil, count: queues.count)
        // Holds the watchdog until stop(), as the thread did before.
        thread = PeriodicThread(periodMilliseconds: RingWatchdog.periodMilliseconds) { self.look() }
    }

    deinit {
        for file in statFiles where file >= 0 { close(file) }
    }

    func stop() {
        thread?.stop()
        thread = nil
    }

    private func look() {
        let now = FUSETransport.monotonicNanoseconds()
        for (index, queue) in queues.enumerated() {
            let thread = queue.threadID.load(ordering: .relaxed)
            guard let delay = waitingTime(thread, index) else { continue }
            defer { waited[index] = delay }
            guard let before = waited[index], delay > before + RingWatchdog.patienceNanoseconds,
                  queue.raisedUntil.load(ordering: .relaxed) == 0 else { continue }
            queue.raisedUntil.store(now + RingWatchdog.raiseNanoseconds, ordering: .relaxed)
            _ = poolfs_set_idle_priority(thread, 0)
        }
    }

    /// How long this process's thread `id` has waited on a run queue, in
    /// nanoseconds: the second field of /proc/self/task/ID/schedstat.
    private func waitingTime(_ id: Int32, _ index: Int) -> UInt64? {
        if statFiles[index] < 0, id != 0 { statFiles[index] = open("/proc/self/task/\(id)/schedstat", O_RDONLY | O_CLOEXEC) }
        let file = statFiles[index]
        guard file >= 0 else { return nil }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 128) { buffer in
            let count = pread(file, buffer.baseAddress, buffer.count, 0)
            guard count > 0 else { return nil }
            let fields = buffer[..<count].split(separator: UInt8(ascii: " "))
            guard fields.count >= 2 else { return nil }
            return UInt64(String(decoding: fields[1], as: UTF8.self))
        }
    }
}
