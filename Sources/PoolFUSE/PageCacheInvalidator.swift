import CLinux
import PoolThreads
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Drops the kernel's cached pages of ranges written past it (direct
/// access's writes), so that a program mapping the file through the mount
/// sees them. On a thread of its own: the kernel waits there for the page
/// locks of reads in flight, which request threads answer, so a request
/// thread must never wait for it (libfuse's contract for notifications).
final class PageCacheInvalidator: @unchecked Sendable {
    private struct State {
        /// By inode: the span of the ranges reported since the last pass.
        var pending: [UInt64: Range<UInt64>] = [:]
        var stopping = false
    }

    private let wake = eventfd(0, Int32(EFD_CLOEXEC))
    private let state = Mutex(State())
    private var thread: JoinableThread?

    /// nil-safe: without an eventfd or a thread, nothing is dropped (the
    /// mapping then sees direct writes once its pages are evicted).
    init(_ invalidate: @escaping (_ inode: UInt64, _ range: Range<UInt64>) -> Void) {
        guard wake >= 0 else { return }
        thread = JoinableThread { [unowned self] in
            var stop = false
            while !stop {
                var count: UInt64 = 0
                guard read(wake, &count, 8) == 8 || errno == EINTR else { return }
                let work = state.withLock { state in
                    defer { state.pending = [:] }
                    stop = state.stopping
                    return state.pending
                }
                for (inode, range) in work { invalidate(inode, range) }
            }
        }
    }

    deinit { if wake >= 0 { close(wake) } }

    func add(_ inode: UInt64, _ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let first = state.withLock { state in
            let first = state.pending.isEmpty
            let known = state.pending[inode] ?? range
            state.pending[inode] = min(known.lowerBound, range.lowerBound)..<max(known.upperBound, range.upperBound)
            return first
        }
        if first { signal() }
    }

    /// Ends the thread once it has dropped what is pending.
    func stop() {
        guard let thread else { return }
        state.withLock { $0.stopping = true }
        signal()
        thread.join()
        self.thread = nil
    }

    private func signal() {
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }
}
