#if canImport(Glibc)
import Glibc
#endif

/// Forks. A child that goes on using an open pool (a worker forked after
/// the open) keeps its mappings but not their userfaultfd registrations:
/// a lazy clone's holes would read as zeros there, and its stores into a
/// source would not fill the clone first. So every live helper follows the
/// clones again in the child before fork returns there (forkedChild), and
/// the helpers' mutexes are held across the fork, so that none is copied
/// into the child held by a thread the child does not have.
extension FreezeHelper {
    private static let registry = ThreadMutex()
    /// Helpers by identity, unretained: each leaves when it stops. registry.
    nonisolated(unsafe) private static var helpers: [ObjectIdentifier: Unmanaged<FreezeHelper>] = [:]

    private static let installed: Int32 = pthread_atfork(
        {
            FreezeHelper.registry.lock()
            for helper in FreezeHelper.helpers.values { helper.takeUnretainedValue().mutex.lock() }
        },
        {
            for helper in FreezeHelper.helpers.values { helper.takeUnretainedValue().mutex.unlock() }
            FreezeHelper.registry.unlock()
        },
        {
            let helpers = FreezeHelper.helpers.values.map { $0.takeUnretainedValue() }
            for helper in helpers { helper.mutex.unlock() }
            FreezeHelper.registry.unlock()
            for helper in helpers { helper.forkedChild() }
        })

    static func enrolForForks(_ helper: FreezeHelper) {
        _ = installed
        registry.withLock { helpers[ObjectIdentifier(helper)] = .passUnretained(helper) }
    }

    static func leaveForks(_ helper: FreezeHelper) {
        registry.withLock { helpers[ObjectIdentifier(helper)] = nil }
    }
}
