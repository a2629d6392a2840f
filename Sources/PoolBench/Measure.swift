import Atomics
import Foundation

enum Measure {
    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// Runs `body(thread)`, one operation, on `threads` threads for about
    /// `seconds`. Returns operations per second, all threads.
    static func rate(threads: Int, seconds: Double, _ body: @escaping @Sendable (Int) -> Void) -> Double {
        rate(threads: threads, seconds: seconds, setUp: { $0 }, body)
    }

    /// With per-thread state made on the thread that then uses it, before
    /// the clock starts (objects stay with the thread that made them); all
    /// threads start together and each times itself.
    static func rate<State>(threads: Int, seconds: Double, setUp: @escaping @Sendable (Int) -> State,
                            _ body: @escaping @Sendable (State) -> Void) -> Double {
        let results = UnsafeMutablePointer<Double>.allocate(capacity: threads * 16)
        defer { results.deallocate() }
        let ready = ManagedAtomic<Int>(0)
        nonisolated(unsafe) let shared = results
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            let state = setUp(thread)
            ready.wrappingIncrement(ordering: .acquiringAndReleasing)
            while ready.load(ordering: .acquiring) < threads {}
            let start = now()
            let deadline = start + seconds
            var done = 0
            while true {
                for _ in 0..<64 { body(state) }
                done += 64
                if now() >= deadline { break }
            }
            shared[thread * 16] = Double(done) / (now() - start)
            withExtendedLifetime(state) {}
        }
        return (0..<threads).reduce(0) { $0 + results[$1 * 16] }
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted[sorted.count / 2]
    }
}
