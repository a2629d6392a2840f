#if canImport(Glibc)
import Glibc
#endif

/// One process at a time may hold a pool exclusively for a use of its own
/// (the mount, which alone keeps tracked runs and the root address): a
/// file lock the kernel drops when that process ends, however it ends.
extension Pool {
    /// Takes the pool's exclusive hold for `use` (as said in the refusal:
    /// "mounted"), or says which process has it.
    public func holdExclusively(for use: String) throws {
        let file = core.metadata
        guard FileLock.tryLock(file.descriptor, byte: Layout.LockByte.exclusive, .exclusive) else {
            let pid = Int32(truncatingIfNeeded: file.load(UInt64.self, at: Layout.Control.exclusiveHolder))
            throw PoolError.heldExclusively(name: name, use: use, pid: pid)
        }
        recordExclusiveHolder()
    }

    /// Records this process as the exclusive holder, and as its slot's
    /// (again after daemonizing: the pid changed, the locks carried over).
    public func recordExclusiveHolder() {
        core.metadata.store(UInt64(getpid()), at: Layout.Control.exclusiveHolder)
        if core.slot >= 0 {
            core.metadata.store(UInt64(getpid()), at: Layout.Participants.slot(core.slot) + Layout.Participants.pid)
        }
    }
}
