#if canImport(Glibc)
import Glibc
#endif

/// One mount per pool: the mount holds a file lock the kernel drops when
/// the mount process ends, however it ends.
extension Pool {
    /// Takes the pool's mount lock, or says which process has it.
    public func lockForMount() throws {
        let file = core.metadata
        guard FileLock.tryLock(file.descriptor, byte: Layout.LockByte.mount, .exclusive) else {
            let pid = Int32(truncatingIfNeeded: file.load(UInt64.self, at: Layout.Control.mountHolder))
            throw PoolError.mounted(name: name, pid: pid)
        }
        recordMountProcess()
    }

    /// Records this process as the mount's, and as its slot's holder
    /// (again after daemonizing: the pid changed, the locks carried over).
    public func recordMountProcess() {
        core.metadata.store(UInt64(getpid()), at: Layout.Control.mountHolder)
        if core.slot >= 0 {
            core.metadata.store(UInt64(getpid()), at: Layout.Participants.slot(core.slot) + Layout.Participants.pid)
        }
    }
}
