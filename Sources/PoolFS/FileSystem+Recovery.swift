import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// What a mount does before it serves: after a crash, inodes that were
/// unlinked while open are dropped, pages taken ahead of appends are given
/// back and bytes past each file's logged size are zeroed; then the log is
/// rewritten to the current state, and every run of the file system that
/// nothing names is freed.
extension FileSystem {
    func recover(afterCrash: Bool) throws {
        for inode in inodes.values where inode.record.nlink == 0 { inodes.removeValue(forKey: inode.number) }
        // Every file's pages are checked to be its own before any is zeroed.
        let unreferenced = try unreferencedRuns()
        // Pages taken ahead of appends that a kill kept from their file's
        // last close (before the zeroing, which would clear them for nothing).
        for inode in inodes.values where inode.aheadOfSize { giveBackAhead(inode) }
        if afterCrash {
            for inode in inodes.values where inode.isRegular { zeroBeyondSize(inode) }
        }
        // What the crash left unnamed goes first: the rewrite may need the room.
        freeFound(unreferenced)
        if afterCrash {
            let pages = unreferenced.reduce(0) { $0 + $1.freedPages }
            SystemLog.write(.notice, pool: pool.name, "the last mount did not end in order: bytes past each file's size "
                + "zeroed, \(pages) pages that no file named freed")
        }
        try? compact()
        // What earlier mounts wrote may not be durable yet: the first fsync
        // of each file flushes all of it.
        for inode in inodes.values where inode.isRegular { inode.wholeUnsynced = true }
    }

    /// The file system's runs, or their pages, that no file and no log
    /// chunk names: a run with a piece named is carved to its pieces (a
    /// cut or punch logged, killed before the pool's run was cut). Throws
    /// when a file names pages that are not the file system's. Also finds
    /// which slots of its shared runs the files' fragments take.
    func unreferencedRuns() throws -> [Release] {
        var named: [(address: GlobalAddress, pages: Int, owner: UInt64)] = log.runs.map { ($0, log.chunkPages, 0) }
        let runs = pool.trackedRuns().sorted { $0.address < $1.address }
        var heapOfRun: [GlobalAddress: Int] = [:]
        for run in runs where run.pages == 1 { heapOfRun[run.address] = run.heap }
        var fragments: [(owner: UInt64, extent: Extent)] = []
        for inode in inodes.values {
            for extent in inode.extents.extents {
                if extent.isFragment {
                    fragments.append((inode.number, extent))
                } else {
                    named.append((extent.address, extent.pages, inode.number))
                }
            }
        }
        for (run, owner) in try self.fragments.rebuild(fragments, heapOfRun: heapOfRun) { named.append((run, 1, owner)) }
        named.sort { $0.address < $1.address }
        func damaged(_ name: (address: GlobalAddress, pages: Int, owner: UInt64), _ what: String) -> Error {
            PoolError.damaged(path: pool.path, reason: "inode \(name.owner) names \(name.pages) pages at \(name.address)\(what)")
        }
        var unreferenced: [Release] = []
        var next = 0
        for run in runs {
            if next < named.count, named[next].address < run.address {
                throw damaged(named[next], ", which the file system does not hold")
            }
            let end = run.address.offset + UInt64(run.pages) << pageShift
            var pieces: [Range<Int>] = []
            while next < named.count, named[next].address.shelf == run.address.shelf, named[next].address.offset < end {
                let name = named[next], distance = name.address.offset - run.address.offset
                let first = Int(distance >> pageShift)
                guard distance & (pageSize - 1) == 0, first >= (pieces.last?.upperBound ?? 0), name.pages <= run.pages - first else {
                    throw damaged(name, " in a run of \(run.pages) at \(run.address), across another's pages or its end")
                }
                pieces.append(first..<(first + name.pages))
                next += 1
            }
            if pieces != [0..<run.pages] {
                unreferenced.append(Release(extent: Extent(page: 0, address: run.address, pages: run.pages), heap: run.heap,
                                            kept: pieces))
            }
        }
        if next < named.count { throw damaged(named[next], ", which the file system does not hold") }
        return unreferenced
    }

    /// The current state as records, in an order replay accepts.
    func snapshot() -> [Change] {
        var changes: [Change] = []
        let all = inodes.values.sorted { $0.number < $1.number }
        for inode in all {
            changes.append(.inode(inode.record))
            for extent in inode.extents.extents { changes.append(.extent(inode: inode.number, extent)) }
            if inode.aheadOfSize { changes.append(.ahead(inode: inode.number, taken: true)) }
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
        try refuseIfFailed()
        try log.rewrite(snapshot())
        for inode in inodes.values where inode.dirty { inode.dirty = false }
    }
}
