import PoolCore

extension FileSystem {
    /// Before a mount: the pool and its file system as `poolfs check` sees
    /// them, read without writing a byte, so that a mount never goes ahead
    /// on what check calls damage, and a refused mount changes nothing.
    /// While another process has the pool open it cannot be inspected: the
    /// open's own checks answer then.
    public static func checkBeforeMount(name: String, at home: String? = nil) throws {
        let found: (report: CheckReport, then: FileSystemReport?)
        do {
            found = try Pool.check(name: name, at: home, repair: false) { FileSystem.check(pool: $0, repair: false) }
        } catch PoolError.inUse {
            return
        }
        let problems = found.report.problems + (found.then?.problems ?? [])
        guard let first = problems.first else { return }
        let more = problems.count > 1 ? " (and \(problems.count - 1) more)" : ""
        throw PoolError.damaged(path: Pool.directory(name, home),
                                reason: "\(first)\(more); `poolfs check --repair \(name)` repairs what it can")
    }
}
