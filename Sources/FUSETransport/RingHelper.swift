import PoolThreads
import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Serves a ring's slow requests (fsync, fallocate) on a thread of its
/// own, so that the ring's thread goes on answering its CPU's other
/// requests meanwhile: it answers one request at a time, and the first
/// fsync of a large file on a pool kept on disk, or a fallocate of
/// gigabytes, takes seconds. One request at a time: the ring keeps its
/// other entries. The reply waits in the entry until the ring's thread,
/// its only submitter, sends it (told through `done`).
final class RingHelper: @unchecked Sendable {
    /// Readable once the request handed over has its reply; the ring polls it.
    let done: Int32
    /// The entry handed over (nil: none), set and cleared by the ring's
    /// thread alone; the helper reads it after `posted`.
    private var entry: RingEntry?
    private let leaving = Atomic<Bool>(false)
    private let posted = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    private var thread: JoinableThread?

    /// nil if its eventfd or thread cannot be made.
    init?(name: String) {
        done = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        sem_init(posted, 0, 0)
        guard done >= 0 else { return nil }
        thread = JoinableThread { [unowned self] in
            poolfs_name_thread(name)
            // Made by the ring's thread, it starts bound to that CPU and
            // maybe at idle priority: it is to run beside it, at the normal one.
            _ = poolfs_unpin()
            _ = poolfs_set_idle_priority(poolfs_thread_id(), 0)
            self.serve()
        }
        guard thread != nil else { return nil }
    }

    deinit {
        sem_destroy(posted)
        posted.deallocate()
        if done >= 0 { close(done) }
    }

    /// Takes `entry`'s request, unless one is already being served.
    func take(_ entry: RingEntry) -> Bool {
        guard self.entry == nil else { return false }
        self.entry = entry
        sem_post(posted)
        return true
    }

    /// After `done` fired: the entry whose reply is ready; the helper takes
    /// another request from then on.
    func served() -> RingEntry? {
        var count: UInt64 = 0
        guard read(done, &count, MemoryLayout<UInt64>.size) == MemoryLayout<UInt64>.size else { return nil }
        defer { entry = nil }
        return entry
    }

    /// Waits for the request in hand, if any, then ends the thread.
    func stop() {
        leaving.store(true, ordering: .releasing)
        sem_post(posted)
        thread?.join()
        thread = nil
    }

    private func serve() {
        while true {
            while sem_wait(posted) != 0 && errno == EINTR {}
            if leaving.load(ordering: .acquiring) { return }
            guard let entry else { continue }
            entry.dispatch()
            var one: UInt64 = 1
            _ = write(done, &one, MemoryLayout<UInt64>.size)
        }
    }
}
