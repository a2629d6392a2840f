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
            for inode in inodes.values where inode.isRegular && !FileSystem.isFrozen(inode.number) { zeroBeyondSize(inode) }
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

    /// The file system's runs whose page table disagrees with what the
    /// files and log chunks name: pages no one names (a kill before their
    /// free), owners counted that no longer name them (a kill between a
    /// record dropping shared pages and the count going down), a run with
    /// pieces named apart (a cut logged, killed before the pool's run was
    /// cut). Each comes with the pieces and counts it must be cut to.
    /// Throws when a file names pages that are not the file system's, or
    /// more owners name pages than their run counts (a count too low would
    /// free pages still named). Also finds which slots of its shared runs
    /// the files' fragments take.
    /// `recounting` (a checkpoint's restore): counts below their names are
    /// raised too, not damage.
    func unreferencedRuns(recounting: Bool = false) throws -> [Reshape] {
        var named: [Name] = log.runs.map { Name(address: $0, pages: log.chunkPages, owner: 0) }
        let runs = pool.trackedRuns().sorted { $0.address < $1.address }
        var heapOfRun: [GlobalAddress: Int] = [:]
        for run in runs where run.pages == 1 { heapOfRun[run.address] = run.heap }
        var fragments: [(owner: UInt64, extent: Extent)] = []
        for inode in inodes.values {
            for extent in inode.extents.extents {
                if extent.isFragment {
                    fragments.append((inode.number, extent))
                } else {
                    named.append(Name(address: extent.address, pages: extent.pages, owner: inode.number))
                }
            }
        }
        for (run, owner) in try self.fragments.rebuild(fragments, heapOfRun: heapOfRun) {
            named.append(Name(address: run, pages: 1, owner: owner))
        }
        named.sort { $0.address < $1.address }
        func damaged(_ name: Name, _ what: String) -> Error {
            PoolError.damaged(path: pool.path, reason: "inode \(name.owner) names \(name.pages) pages at \(name.address)\(what)")
        }
        for name in named where !held(name, in: runs) { throw damaged(name, ", which the file system does not hold") }
        var reshapes: [Reshape] = []
        // Names that began in this run or earlier ones and may reach into it.
        var open: [Name] = []
        var next = 0
        for run in runs {
            let end = run.address.offset + UInt64(run.pages) << pageShift
            open.removeAll { $0.address.shelf != run.address.shelf || $0.end(pageShift) <= run.address.offset }
            while next < named.count, named[next].address.shelf == run.address.shelf, named[next].address.offset < end {
                open.append(named[next])
                next += 1
            }
            let pieces = owners(of: run, named: open)
            if !recounting, let many = pieces.first(where: { $0.shares > run.shares }) {
                throw PoolError.damaged(path: pool.path, reason: "\(many.shares + 1) owners name pages \(many.pages) of the run at "
                                        + "\(run.address), which counts \(run.shares + 1)")
            }
            if pieces != [RunPiece(pages: 0..<run.pages, shares: run.shares)] {
                reshapes.append(Reshape(run: run, pieces: pieces))
            }
        }
        return reshapes
    }

    /// Whether runs (sorted), one after another, hold all of `name`'s pages.
    private func held(_ name: Name, in runs: [TrackedRun]) -> Bool {
        guard name.address.offset & (pageSize - 1) == 0 else { return false }
        var low = 0, high = runs.count
        while low < high {
            let middle = (low + high) / 2
            if runs[middle].address <= name.address { low = middle + 1 } else { high = middle }
        }
        var index = low - 1, position = name.address.offset
        let end = name.end(pageShift)
        while index >= 0, index < runs.count, runs[index].address.shelf == name.address.shelf,
              runs[index].address.offset <= position {
            position = max(position, runs[index].address.offset + UInt64(runs[index].pages) << pageShift)
            if position >= end { return true }
            index += 1
        }
        return false
    }

    /// The pieces of `run` its names cover, each with its owners beyond the
    /// first (pages no name covers are in no piece).
    private func owners(of run: TrackedRun, named: [Name]) -> [RunPiece] {
        var edges: [(page: Int, delta: Int)] = []
        for name in named {
            let first = Int((Int64(bitPattern: name.address.offset) - Int64(bitPattern: run.address.offset)) >> Int64(pageShift))
            let low = max(first, 0), high = min(first + name.pages, run.pages)
            if low < high { edges += [(low, 1), (high, -1)] }
        }
        edges.sort { $0.page < $1.page }
        var pieces: [RunPiece] = []
        var owners = 0, index = 0
        while index < edges.count {
            let page = edges[index].page
            while index < edges.count, edges[index].page == page { owners += edges[index].delta; index += 1 }
            guard index < edges.count else { break }
            let upto = edges[index].page
            if owners > 0 {
                if let last = pieces.last, last.pages.upperBound == page, last.shares == owners - 1 {
                    pieces[pieces.count - 1].pages = last.pages.lowerBound..<upto
                } else {
                    pieces.append(RunPiece(pages: page..<upto, shares: owners - 1))
                }
            }
        }
        return pieces
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
        guard log.needsRewrite, !checkpointing else { return }
        try? compact()
    }

    func compact() throws {
        try refuseIfFailed()
        try log.rewrite(snapshot())
        for inode in inodes.values where inode.dirty { inode.dirty = false }
    }
}
