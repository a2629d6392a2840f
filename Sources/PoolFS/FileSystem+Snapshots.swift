import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Snapshots: the whole tree frozen at one instant, each file's metadata
/// copied and its pages shared (FileSystem+CopyOnWrite.swift), shown
/// read-only under `.pool/snapshots/NAME/`. A snapshot's inodes are
/// numbered from `frozenBase` on; the directory `snapshotHome` names each
/// snapshot's root. Nothing changes a frozen inode but dropping its
/// snapshot (EROFS). Making or dropping one rewrites the log (`compact`),
/// whose switch is one store: a kill leaves the snapshot whole or absent.
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
    /// is frozen at one instant.
    public func makeSnapshot(named name: FileName) throws -> stat {
        try FileSystem.checkLength(name)
        guard name != ".", name != "..", !name.bytes.contains(UInt8(ascii: "/")) else { throw FileSystemError.invalid }
        return try tree.writing {
            try refuseIfFailed()
            let home = snapshotHomeInode()
            guard home.directory!.inode(named: name) == nil else { throw FileSystemError.exists }
            let (made, next) = try copyTree(from: FileSystem.rootInode, numberedFrom: nextFrozen, parent: FileSystem.snapshotHome)
            for copy in made { inodes[copy.number] = copy }
            home.directory!.add(name, made[0].number)
            home.record.nlink += 1
            do {
                try compact()
            } catch {
                home.directory!.remove(name)
                home.record.nlink -= 1
                for copy in made { inodes.removeValue(forKey: copy.number) }
                free(releases(of: made))
                throw FileSystemError.answering(error, otherwise: .noSpace)
            }
            nextFrozen = next
            return attributes(made[0])
        }
    }

    /// Makes the live tree snapshot `name`'s again (the snapshot stays):
    /// what the tree holds now goes. For a pool that is not mounted: a
    /// mount's kernel would keep showing the old tree.
    public func restoreSnapshot(named name: FileName) throws {
        try tree.writing {
            try refuseIfFailed()
            guard let root = inodes[FileSystem.snapshotHome]?.directory?.inode(named: name) else { throw FileSystemError.notFound }
            let (made, next) = try copyTree(from: root, numberedFrom: nextInode, root: FileSystem.rootInode,
                                            parent: FileSystem.rootInode)
            let old = reachable(from: FileSystem.rootInode).compactMap { inodes.removeValue(forKey: $0) }
            for copy in made { inodes[copy.number] = copy }
            do {
                try compact()
            } catch {
                for copy in made { inodes.removeValue(forKey: copy.number) }
                for inode in old { inodes[inode.number] = inode }
                free(releases(of: made))
                throw FileSystemError.answering(error, otherwise: .noSpace)
            }
            nextInode = next
            free(releases(of: old))
        }
    }

    /// Copies of every inode `source` reaches (each once: hard links stay
    /// links), numbered from `first` (the copy of `source` as `root`, if
    /// given), whose pages (and small files' fragments) they share up to
    /// each file's size; the copy of `source` has `parent` as its "..".
    /// Not yet in `inodes`. On failure nothing is left shared.
    /// `tree` held for writing.
    private func copyTree(from source: UInt64, numberedFrom first: UInt64, root: UInt64? = nil,
                          parent: UInt64) throws -> (made: [Inode], next: UInt64) {
        var copies: [UInt64: UInt64] = [:]
        var order: [Inode] = []
        var next = first
        var queue = [source]
        while let number = queue.popLast() {
            guard copies[number] == nil, let inode = inodes[number] else { continue }
            if number == source, let root { copies[number] = root } else {
                copies[number] = next
                next += 1
            }
            order.append(inode)
            for (_, child) in (inode.directory?.names ?? []).reversed() { queue.append(child) }
        }
        // The pages each file shows (not those taken ahead of its appends).
        var shared: [UInt64: [Extent]] = [:]
        for inode in order where inode.isRegular {
            let pages = (inode.record.size + pageSize - 1) >> pageShift
            shared[inode.number] = inode.extents.extents.compactMap { extent -> Extent? in
                guard !extent.isFragment, extent.page < pages else { return nil }
                var kept = extent
                kept.pages = Int(min(extent.end, pages) - extent.page)
                return kept
            }
        }
        do {
            try pool.shareTrackedPages(order.flatMap { shared[$0.number] ?? [] }.map { ($0.address, $0.pages) })
        } catch PoolError.tooManyShares {
            throw FileSystemError.tooManyLinks
        } catch {
            throw FileSystemError.answering(error, otherwise: .noSpace)
        }
        var made: [Inode] = []
        for inode in order {
            var record = inode.record
            record.number = copies[inode.number]!
            if inode.isDirectory { record.parent = inode.number == source ? parent : copies[record.parent] ?? parent }
            let copy = Inode(record)
            copy.xattrs = inode.xattrs
            for extent in shared[inode.number] ?? [] { copy.extents.insert(extent) }
            if let fragment = inode.extents.fragment {
                fragments.share(fragment)
                copy.extents.insert(fragment)
            }
            for (name, child) in inode.directory?.names ?? [] { copy.directory!.add(name, copies[child]!) }
            made.append(copy)
        }
        return (made, next)
    }

    /// What dropping `dropped` lets go of: their pages and fragments.
    private func releases(of dropped: [Inode]) -> [Release] {
        dropped.flatMap { inode in inode.extents.extents.map { Release(extent: $0, heap: inode.record.heap) } }
    }

    /// Drops snapshot `name`: its inodes go, and the pages only it held
    /// are freed (the others count one owner fewer).
    public func removeSnapshot(named name: FileName) throws {
        try tree.writing {
            try refuseIfFailed()
            guard let home = inodes[FileSystem.snapshotHome], let root = home.directory?.inode(named: name) else {
                throw FileSystemError.notFound
            }
            let dropped = reachable(from: root).compactMap { inodes.removeValue(forKey: $0) }
            home.directory!.remove(name)
            home.record.nlink -= 1
            do {
                try compact()
            } catch {
                for inode in dropped { inodes[inode.number] = inode }
                home.directory!.add(name, root)
                home.record.nlink += 1
                throw error
            }
            free(releases(of: dropped))
        }
    }

    /// Every inode `root` reaches, each once; `tree` held.
    func reachable(from root: UInt64) -> [UInt64] {
        var seen: Set<UInt64> = []
        var queue = [root]
        while let number = queue.popLast() {
            guard seen.insert(number).inserted, let inode = inodes[number] else { continue }
            for (_, child) in inode.directory?.names ?? [] { queue.append(child) }
        }
        return Array(seen)
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
