import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// What a mount does before it serves: after a crash, inodes that were
/// unlinked while open are dropped and bytes past each file's logged size
/// are zeroed; then the log is rewritten to the current state, and every
/// run of the file system that nothing names is freed.
extension FileSystem {
    func recover(afterCrash: Bool) throws {
        for inode in inodes.values where inode.record.nlink == 0 { inodes.removeValue(forKey: inode.number) }
        if afterCrash {
            for inode in inodes.values where inode.isRegular { zeroBeyondSize(inode) }
        }
        // What the crash left unnamed goes first: the rewrite may need the room.
        free(try unreferencedRuns())
        try? compact()
        // What earlier mounts wrote may not be durable yet: the first fsync
        // of each file flushes all of it.
        for inode in inodes.values where inode.isRegular { inode.wholeUnsynced = true }
    }

    /// The file system's runs (or their ends) that no file and no log chunk
    /// names; throws when a file names pages that are not the file system's.
    /// Also finds which slots of its shared runs the files' fragments take.
    func unreferencedRuns() throws -> [Release] {
        var named: [GlobalAddress: (pages: Int, owner: UInt64)] = [:]
        for address in log.runs { named[address] = (log.chunkPages, 0) }
        let runs = pool.fileRuns()
        var heapOfRun: [GlobalAddress: Int] = [:]
        for run in runs where run.pages == 1 { heapOfRun[run.address] = run.heap }
        var fragments: [(owner: UInt64, extent: Extent)] = []
        for inode in inodes.values {
            for extent in inode.extents.extents {
                if extent.isFragment {
                    fragments.append((inode.number, extent))
                    if let (run, _) = self.fragments.locate(extent, in: { heapOfRun[$0] != nil }) {
                        named[run] = (1, inode.number)
                    }
                } else {
                    named[extent.address] = (extent.pages, inode.number)
                }
            }
        }
        do {
            try self.fragments.rebuild(fragments, heapOfRun: heapOfRun)
        } catch let damage as FragmentDamage {
            throw PoolError.damaged(path: pool.path, reason: damage.description)
        }
        var unreferenced: [Release] = []
        for run in runs {
            let extent = Extent(page: 0, address: run.address, pages: run.pages)
            if let name = named.removeValue(forKey: run.address) {
                guard name.pages <= run.pages else {
                    throw PoolError.damaged(path: pool.path, reason: "inode \(name.owner) names \(name.pages) pages at \(run.address), a run of \(run.pages)")
                }
                // Cut short in the log, killed before the pool's run was.
                if name.pages < run.pages { unreferenced.append(Release(extent: extent, heap: run.heap, keep: name.pages)) }
            } else {
                unreferenced.append(Release(extent: extent, heap: run.heap))
            }
        }
        if let (address, name) = named.first {
            throw PoolError.damaged(path: pool.path, reason: "inode \(name.owner) names pages at \(address) that the file system does not hold")
        }
        return unreferenced
    }

    /// The current state as records, in an order replay accepts.
    func snapshot() -> [Change] {
        var changes: [Change] = []
        let all = inodes.values.sorted { $0.number < $1.number }
        for inode in all {
            changes.append(.inode(inode.record))
            for extent in inode.extents.extents { changes.append(.extent(inode: inode.number, extent)) }
            for (name, value) in inode.xattrs.sorted(by: { $0.key < $1.key }) {
                changes.append(.setXattr(inode: inode.number, name: name, value: value, time: inode.record.ctime))
            }
        }
        for inode in all {
            for (name, child) in inode.directory?.names ?? [] {
                changes.append(.entry(parent: inode.number, name: name, inode: child))
            }
        }
        return changes
    }

    /// Rewrites the log when it has grown well past the state it holds.
    /// `tree` held for writing.
    func compactIfLarge() {
        guard log.needsRewrite else { return }
        try? compact()
    }

    func compact() throws {
        try log.rewrite(snapshot())
        for inode in inodes.values where inode.dirty { inode.dirty = false }
    }
}
