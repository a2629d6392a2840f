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
    private let stopping = Atomic<Bool>(false)
    private var thread = pthread_t()
    private var running = false

    static let periodNanoseconds = 20_000_000
    static let patienceNanoseconds: UInt64 = 10_000_000
    static let raiseNanoseconds: UInt64 = 1_000_000_000

    init(watching queues: [RingQueue]) {
        self.queues = queues
        let context = Unmanaged.passRetained(self).toOpaque()
        if pthread_create(&thread, nil, { context in
            Unmanaged<RingWatchdog>.fromOpaque(context!).takeRetainedValue().watch()
            return nil
        }, context) == 0 {
            running = true
        } else {
            Unmanaged<RingWatchdog>.fromOpaque(context).release()
        }
    }

    func stop() {
        guard running else { return }
        stopping.store(true, ordering: .relaxed)
        pthread_join(thread, nil)
        running = false
    }

    private func watch() {
        var period = timespec(tv_sec: 0, tv_nsec: RingWatchdog.periodNanoseconds)
        while !stopping.load(ordering: .relaxed) {
            nanosleep(&period, nil)
            let now = RingQueue.now()
            for queue in queues where queue.raisedUntil.load(ordering: .relaxed) == 0 {
                let last = queue.lastActive.load(ordering: .relaxed)
                guard now > last, now - last > RingWatchdog.patienceNanoseconds else { continue }
                let thread = queue.threadID.load(ordering: .relaxed)
                // Asleep in the ring, it has no request, unless the kernel
                // has woken it for one (runnable, state R).
                if queue.asleep.load(ordering: .relaxed) && !RingWatchdog.isRunnable(thread) { continue }
                queue.raisedUntil.store(now + RingWatchdog.raiseNanoseconds, ordering: .relaxed)
                _ = poolfs_set_idle_priority(thread, 0)
            }
        }
    }

    /// Whether this process's thread `id` is runnable: the state in
    /// /proc/self/task/ID/stat, after the parenthesised name.
    static func isRunnable(_ id: Int32) -> Bool {
        let descriptor = open("/proc/self/task/\(id)/stat", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { buffer in
            let count = read(descriptor, buffer.baseAddress, buffer.count)
            guard count > 0, let close = buffer[..<count].lastIndex(of: UInt8(ascii: ")")),
                  close + 2 < count else { return false }
            return buffer[close + 2] == UInt8(ascii: "R")
        }
    }
}
