import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the rings' idle-priority threads (RingQueue.swift) from starving.
/// An idle-priority thread runs only when its CPU has nothing else to do;
/// should that CPU stay busy with other work while a request waits on its
/// queue, the request would wait as long. So every `period` this looks for
/// a thread that is runnable but has not run for `patience`, and gives it
/// normal priority for `raise` (a busy CPU tends to stay busy).
final class RingWatchdog: @unchecked Sendable {
    private let queues: [RingQueue]
    /// Written once to stop the watchdog at once, not at its next look.
    private let stopping = eventfd(0, Int32(EFD_CLOEXEC))
    private var thread: JoinableThread?
    /// Each queue's thread's /proc stat file, opened once (-1 until then).
    private var statFiles: [Int32]
    /// Each queue's `served` when last looked at, and since when it has
    /// stood still.
    private var served: [UInt64]
    private var stillSince: [UInt64]

    static let periodMilliseconds: Int32 = 20
    static let patienceNanoseconds: UInt64 = 10_000_000
    static let raiseNanoseconds: UInt64 = 1_000_000_000

    init(watching queues: [RingQueue]) {
        self.queues = queues
        statFiles = Array(repeating: -1, count: queues.count)
        served = Array(repeating: 0, count: queues.count)
        stillSince = Array(repeating: RingWatchdog.now(), count: queues.count)
        guard stopping >= 0 else { return }
        thread = JoinableThread { self.watch() }
    }

    deinit {
        if stopping >= 0 { close(stopping) }
        for file in statFiles where file >= 0 { close(file) }
    }

    func stop() {
        guard let thread else { return }
        var one: UInt64 = 1
        _ = write(stopping, &one, MemoryLayout<UInt64>.size)
        thread.join()
        self.thread = nil
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    private func watch() {
        var stop = pollfd(fd: stopping, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&stop, 1, RingWatchdog.periodMilliseconds)
            if ready > 0 || (ready < 0 && errno != EINTR) { return }
            let now = RingWatchdog.now()
            for (index, queue) in queues.enumerated() where queue.raisedUntil.load(ordering: .relaxed) == 0 {
                let count = queue.served.load(ordering: .relaxed)
                if count != served[index] {
                    served[index] = count
                    stillSince[index] = now
                    continue
                }
                guard now - stillSince[index] > RingWatchdog.patienceNanoseconds else { continue }
                let thread = queue.threadID.load(ordering: .relaxed)
                // Asleep in the ring, it has no request, unless the kernel
                // has woken it for one (runnable, state R).
                if queue.asleep.load(ordering: .relaxed) && !isRunnable(thread, index) { continue }
                queue.raisedUntil.store(now + RingWatchdog.raiseNanoseconds, ordering: .relaxed)
                _ = poolfs_set_idle_priority(thread, 0)
            }
        }
    }

    /// Whether this process's thread `id` is runnable: the state in
    /// /proc/self/task/ID/stat, after the parenthesised name.
    private func isRunnable(_ id: Int32, _ index: Int) -> Bool {
        if statFiles[index] < 0, id != 0 { statFiles[index] = open("/proc/self/task/\(id)/stat", O_RDONLY | O_CLOEXEC) }
        let file = statFiles[index]
        guard file >= 0 else { return false }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { buffer in
            let count = pread(file, buffer.baseAddress, buffer.count, 0)
            guard count > 0, let close = buffer[..<count].lastIndex(of: UInt8(ascii: ")")),
                  close + 2 < count else { return false }
            return buffer[close + 2] == UInt8(ascii: "R")
        }
    }
}
