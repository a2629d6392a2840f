import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// fsync(2), and the steps that long work on one file is cut into.
extension FileSystem {
    /// fsync(2): what was written is durable (flushed to pmem too), in
    /// steps of `stepBytes` of the file's runs: on a pool kept on disk,
    /// flushing gigabytes takes seconds.
    public func sync(_ number: UInt64) throws {
        try refuseIfFailed()
        try tree.reading { try inode(number) }.syncing.writing { try syncLocked(number) }
    }

    private func syncLocked(_ number: UInt64) throws {
        let (ranges, whole) = try tree.reading {
            let inode = try inode(number)
            return try inode.lock.writing {
                // The size and mtime first: fsync fails while they are not logged.
                if inode.dirty { try logWritten(inode) }
                defer {
                    inode.unsynced = []
                    inode.wholeUnsynced = false
                }
                return (inode.wholeUnsynced ? [0..<UInt64.max] : inode.unsynced, inode.wholeUnsynced)
            }
        }
        for (index, range) in ranges.enumerated() {
            var flushed = range.lowerBound
            do {
                try stepping(number, from: range.lowerBound, to: range.upperBound) { inode, at in
                    // Holes cost nothing: a step is so many bytes of runs.
                    let stop = inode.extents.position(covering: FileSystem.stepBytes, from: at,
                                                      to: range.upperBound, pageShift: pageShift)
                    try persist(inode, from: at, to: stop, except: [])
                    try writeBack(inode, from: at, to: stop)
                    flushed = stop
                    return stop
                }
            } catch {
                // Not durable yet: the next fsync flushes it.
                _ = try? tree.reading {
                    let inode = try inode(number)
                    inode.lock.writing {
                        inode.wholeUnsynced = inode.wholeUnsynced || whole
                        for left in [flushed..<range.upperBound] + ranges[(index + 1)...] { inode.noteUnsynced(left) }
                    }
                }
                throw error
            }
        }
    }

    /// Runs `step` from `start` until it reaches `end` (once at least), each
    /// step under the tree's lock shared and the file's lock, both let go in
    /// between: work of seconds (zeroing or flushing gigabytes) keeps a
    /// create or a rename, which take the tree's lock alone, waiting one
    /// step at most. `step` returns where it stopped.
    func stepping(_ number: UInt64, from start: UInt64, to end: UInt64,
                          _ step: (Inode, UInt64) throws -> UInt64) throws {
        var at = start
        repeat {
            at = try tree.reading {
                let inode = try inode(number)
                return try inode.lock.writing { try step(inode, at) }
            }
        } while at < end
    }
}
