#if canImport(Glibc)
import Glibc
#endif

/// A POSIX thread running `body`, for work that sets its own CPU and
/// scheduling policy or blocks in system calls (so not Swift's task pool):
/// the mount's rings, a memory node's heartbeat.
public struct JoinableThread {
    private var thread = pthread_t()

    /// nil if the thread could not be made.
    public init?(_ body: @escaping () -> Void) {
        final class Box {
            let body: () -> Void
            init(_ body: @escaping () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let made = pthread_create(&thread, nil, { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
        guard made == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            return nil
        }
    }

    public func join() {
        pthread_join(thread, nil)
    }

    /// Whether the caller runs on this thread.
    public var isCurrent: Bool { pthread_equal(thread, pthread_self()) != 0 }

    /// Lets the thread end on its own, unjoined.
    public func detach() {
        pthread_detach(thread)
    }
}
