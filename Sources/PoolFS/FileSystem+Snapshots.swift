import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Snapshots: the whole tree frozen at one instant, each file's metadata
/// copied and its pages shared (FileSystem+CopyOnWrite.swift), shown
/// read-only under `.pool/snapshots/NAME/`. A snapshot's inodes are
/// numbered from `frozenBase` on; the directory `snapshotHome` names each
/// snapshot's root. Nothing changes a frozen inode but dropping its
/// snapshot (EROFS). Making or dropping one is one log record: replay
/// makes the same copies of the same tree again, so a kill leaves the
/// snapshot whole or absent, and the log grows by a record, not a tree.
extension FileSystem {
    static let frozenBase: UInt64 = 1 << 61
    static let snapshotHome = frozenBase

    @inline(__always)
    public static func isFrozen(_ number: UInt64) -> Bool { number >= frozenBase }

    /// The snapshots, by name, with the inode of each one's root.
    public func snapshots() -> [(name: FileName, root: UInt64)] {
        tree.reading { (inodes[FileSystem.snapshotHome]?.directory?.names ?? []).sorted { $0.0 < $1.0 }.map { ($0.0, $0.1) } }
    }

    /// A snapshot's root inode, if it exists.
    public func snapshot(named name: FileName) -> UInt64? {
        tree.reading { inodes[FileSystem.snapshotHome]?.directory?.inode(named: name) }
    }

    /// Freezes the tree as snapshot `name`; returns its root's attributes.
    /// Every write in flight ends first (`tree` for writing), so each file
    /// is frozen at one instant; sizes and times writes left unlogged are
    /// logged first, so that replay copies what this copies.
    public func makeSnapshot(named name: FileName) throws -> stat {
        try FileSystem.checkLength(name)
        guard name != ".", name != "..", !name.bytes.contains(UInt8(ascii: "/")) else { throw FileSystemError.invalid }
        return try tree.writing {
            try refuseIfFailed()
            guard inodes[FileSystem.snapshotHome]?.directory?.inode(named: name) == nil else { throw FileSystemError.exists }
            // Pages a program maps writable would change under the snapshot.
            if inodes.values.contains(where: isMappedWritable) { throw FileSystemError.busy }
            for inode in inodes.values where inode.dirty { try logWritten(inode) }
            let order = walk(from: FileSystem.rootInode)
            let named = order.flatMap { frozenExtents(of: $0) }
            let pages = named.filter { !$0.isFragment }
            do {
                try pool.shareTrackedPages(pages.map { ($0.address, $0.pages) })
            } catch PoolError.tooManyShares {
                throw FileSystemError.tooManyLinks
            } catch {
                throw FileSystemError.answering(error, otherwise: .noSpace)
            }
            for fragment in named where fragment.isFragment { fragments.share(fragment) }
            let first = nextFrozen
            do {
                try reserveLog()
                try commitLogOnly(.snapshot(name: name, first: first))
            } catch {
                free(named.map { Release(extent: $0) })
                throw error
            }
            _ = apply(.snapshot(name: name, first: first), replaying: false)
            return attributes(inodes[first]!)
        }
    }

    /// Applies `.snapshot`: copies of every inode the root reaches.
    func copySnapshot(_ name: FileName, first: UInt64) {
        let home = snapshotHomeInode()
        guard home.directory!.inode(named: name) == nil else { return }
        let made = copies(of: walk(from: FileSystem.rootInode), numberedFrom: first, root: nil, parent: FileSystem.snapshotHome)
        for copy in made { inodes[copy.number] = copy }
        home.directory!.add(name, first)
        home.record.nlink += 1
        nextFrozen = max(nextFrozen, first + UInt64(made.count))
    }

    /// Drops snapshot `name`: its inodes go, and the pages only it held
    /// are freed (the others count one owner fewer).
    public func removeSnapshot(named name: FileName) throws {
        try tree.writing {
            try refuseIfFailed()
            guard inodes[FileSystem.snapshotHome]?.directory?.inode(named: name) != nil else { throw FileSystemError.notFound }
            try commit(.dropSnapshot(name: name))
        }
    }

    /// Applies `.dropSnapshot`: the snapshot's inodes, and what they held.
    func dropSnapshot(_ name: FileName) -> [Release] {
        guard let home = inodes[FileSystem.snapshotHome], let root = home.directory?.remove(name) else { return [] }
        home.record.nlink -= 1
        return releases(of: reachable(from: root).compactMap { inodes.removeValue(forKey: $0) })
    }

    /// What dropping `dropped` lets go of: their pages and fragments.
    private func releases(of dropped: [Inode]) -> [Release] {
        dropped.flatMap { inode in inode.extents.extents.map { Release(extent: $0) } }
    }

    /// Makes the live tree snapshot `name`'s again (the snapshot stays):
    /// what the tree holds now goes. For a pool that is not mounted: a
    /// mount's kernel would keep showing the old tree. The log is
    /// rewritten to take it (`compact`).
    public func restoreSnapshot(named name: FileName) throws {
        try tree.writing {
            try refuseIfFailed()
            guard let root = inodes[FileSystem.snapshotHome]?.directory?.inode(named: name) else { throw FileSystemError.notFound }
            let order = walk(from: root)
            let named = order.flatMap { frozenExtents(of: $0) }
            try pool.shareTrackedPages(named.filter { !$0.isFragment }.map { ($0.address, $0.pages) })
            for fragment in named where fragment.isFragment { fragments.share(fragment) }
            let made = copies(of: order, numberedFrom: nextInode, root: FileSystem.rootInode, parent: FileSystem.rootInode)
            let old = reachable(from: FileSystem.rootInode).compactMap { inodes.removeValue(forKey: $0) }
            for copy in made { inodes[copy.number] = copy }
            do {
                try compact()
            } catch {
                for copy in made { inodes.removeValue(forKey: copy.number) }
                for inode in old { inodes[inode.number] = inode }
                free(named.map { Release(extent: $0) })
                throw FileSystemError.answering(error, otherwise: .noSpace)
            }
            nextInode += UInt64(made.count)
            free(releases(of: old))
        }
    }

    /// rename(2) of a file out of a snapshot: the snapshot stays as it is,
    /// and `newName` becomes a file of the live tree with the frozen one's
    /// bytes (its pages shared), mode, owners, times and xattrs. The copy
    /// is named last: a kill before leaves an inode no directory names,
    /// which the next mount drops. A directory is EXDEV (`mv` then copies
    /// it, with `cp`, whose copies share pages too). `tree` held for writing.
    func bringBack(_ frozen: Inode, to target: Inode, newName: FileName, noReplace: Bool) throws {
        guard frozen.isRegular || frozen.record.mode & S_IFMT == S_IFLNK else { throw FileSystemError(EXDEV) }
        let existing = target.directory!.inode(named: newName)
        if let existing {
            guard !noReplace else { throw FileSystemError.exists }
            guard inodes[existing]?.isDirectory != true else { throw FileSystemError.isDirectory }
        }
        let named = frozenExtents(of: frozen)
        do {
            try pool.shareTrackedPages(named.filter { !$0.isFragment }.map { ($0.address, $0.pages) })
        } catch {
            throw FileSystemError.answering(error, otherwise: .noSpace)
        }
        for fragment in named where fragment.isFragment { fragments.share(fragment) }
        var record = frozen.record
        record.number = nextInode
        record.nlink = 0
        record.parent = 0
        var logged = 0
        do {
            try reserveLog()
            try commitLogOnly(.inode(record))
            _ = apply(.inode(record), replaying: false)
            for extent in named {
                try commitLogOnly(.extent(inode: record.number, extent))
                _ = apply(.extent(inode: record.number, extent), replaying: false)
                logged += 1
            }
            for (name, value) in frozen.xattrs.sorted(by: { $0.key < $1.key }) {
                try commit(.setXattr(inode: record.number, name: name, value: value, time: record.ctime))
            }
            let now = Timestamp.now()
            if existing != nil { try commit(.unlink(parent: target.number, name: newName, time: now)) }
            try commit(.link(parent: target.number, name: newName, inode: record.number, time: now))
        } catch {
            free(named.dropFirst(logged).map { Release(extent: $0) })
            throw error
        }
    }

    /// Every inode `source` reaches, each once (hard links), in a walk
    /// that depends on the tree alone: replay walks it the same.
    private func walk(from source: UInt64) -> [Inode] {
        var seen: Set<UInt64> = []
        var order: [Inode] = []
        var queue = [source]
        while let number = queue.popLast() {
            guard seen.insert(number).inserted, let inode = inodes[number] else { continue }
            order.append(inode)
            for (_, child) in (inode.directory?.names ?? []).reversed() { queue.append(child) }
        }
        return order
    }

    /// What a copy of `inode` names: its pages up to its size (not those
    /// taken ahead of its appends), and its fragment.
    private func frozenExtents(of inode: Inode) -> [Extent] {
        guard inode.isRegular else { return [] }
        let pages = (inode.record.size + pageSize - 1) >> pageShift
        return inode.extents.extents.compactMap { extent -> Extent? in
            if extent.isFragment { return extent }
            guard extent.page < pages else { return nil }
            var kept = extent
            kept.pages = Int(min(extent.end, pages) - extent.page)
            return kept
        }
    }

    /// Copies of `order` (a walk), numbered from `first` in its order (the
    /// first, the walk's start, as `root` if given), naming what
    /// `frozenExtents` says; the copy of the start has `parent` as "..".
    private func copies(of order: [Inode], numberedFrom first: UInt64, root: UInt64?, parent: UInt64) -> [Inode] {
        var numbers: [UInt64: UInt64] = [:]
        numbers.reserveCapacity(order.count)
        var next = first
        for (index, inode) in order.enumerated() {
            if index == 0, let root { numbers[inode.number] = root } else {
                numbers[inode.number] = next
                next += 1
            }
        }
        return order.enumerated().map { index, inode in
            var record = inode.record
            record.number = numbers[inode.number]!
            if inode.isDirectory { record.parent = index == 0 ? parent : numbers[record.parent] ?? parent }
            let copy = Inode(record)
            copy.xattrs = inode.xattrs
            for extent in frozenExtents(of: inode) { copy.extents.insert(extent) }
            for (name, child) in inode.directory?.names ?? [] { copy.directory!.add(name, numbers[child]!) }
            return copy
        }
    }

    /// Every inode `root` reaches, each once; `tree` held.
    func reachable(from root: UInt64) -> [UInt64] {
        walk(from: root).map(\.number)
    }

    /// The directory whose entries are the snapshots, made on first use.
    private func snapshotHomeInode() -> Inode {
        if let home = inodes[FileSystem.snapshotHome] { return home }
        let now = Timestamp.now()
        let home = Inode(InodeRecord(number: FileSystem.snapshotHome, mode: S_IFDIR | 0o755, uid: 0, gid: 0, nlink: 2, rdev: 0,
                                     size: 0, atime: now, mtime: now, ctime: now, heap: defaultHeap.id,
                                     parent: FileSystem.snapshotHome, target: []))
        inodes[FileSystem.snapshotHome] = home
        nextFrozen = max(nextFrozen, FileSystem.snapshotHome + 1)
        return home
    }
}

/// `du` for shared pages: what `.pool/info` says of snapshots and clones.
public struct Sharing: Sendable, Equatable {
    public var snapshots = 0
    /// Bytes of pages more than one file names (clones, snapshots).
    public var sharedBytes: UInt64 = 0
    /// Bytes of pages only snapshots name: what dropping them all frees.
    public var snapshotOnlyBytes: UInt64 = 0
}

extension FileSystem {
    public func sharing() -> Sharing {
        tree.reading {
            var sharing = Sharing(snapshots: inodes[FileSystem.snapshotHome]?.directory?.names.count ?? 0)
            // Where names of the live tree and of snapshots start and end.
            var edges: [(at: UInt64, live: Int, frozen: Int)] = []
            for inode in inodes.values where inode.isRegular {
                let frozen = FileSystem.isFrozen(inode.number)
                for extent in inode.extents.extents where !extent.isFragment {
                    let start = extent.address.rawValue, end = start + UInt64(extent.pages) << pageShift
                    edges.append((start, frozen ? 0 : 1, frozen ? 1 : 0))
                    edges.append((end, frozen ? 0 : -1, frozen ? -1 : 0))
                }
            }
            edges.sort { $0.at < $1.at }
            var live = 0, frozen = 0
            for (edge, next) in zip(edges, edges.dropFirst()) {
                live += edge.live
                frozen += edge.frozen
                let bytes = next.at - edge.at
                if live + frozen > 1 { sharing.sharedBytes += bytes }
                if live == 0 && frozen > 0 { sharing.snapshotOnlyBytes += bytes }
            }
            return sharing
        }
    }
}
