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
            // Every inode the root reaches, each once (hard links).
            var copies: [UInt64: UInt64] = [:]
            var order: [Inode] = []
            var next = nextFrozen
            var queue = [FileSystem.rootInode]
            while let number = queue.popLast() {
                guard copies[number] == nil, let inode = inodes[number] else { continue }
                copies[number] = next
                next += 1
                order.append(inode)
                for (_, child) in inode.directory?.names ?? [] { queue.append(child) }
            }
            // The pages each file shows (not those taken ahead of its appends).
            var shared: [(inode: Inode, extents: [Extent])] = []
            for inode in order where inode.isRegular {
                let pages = (inode.record.size + pageSize - 1) >> pageShift
                let extents = inode.extents.extents.compactMap { extent -> Extent? in
                    guard !extent.isFragment, extent.page < pages else { return nil }
                    var kept = extent
                    kept.pages = Int(min(extent.end, pages) - extent.page)
                    return kept
                }
                shared.append((inode, extents))
            }
            do {
                try pool.shareTrackedPages(shared.flatMap { $0.extents.map { ($0.address, $0.pages) } })
            } catch PoolError.tooManyShares {
                throw FileSystemError(EMLINK)
            } catch {
                throw FileSystemError.noSpace
            }
            let extents = Dictionary(shared.map { ($0.inode.number, $0.extents) }, uniquingKeysWith: { first, _ in first })
            var made: [Inode] = []
            do {
                for inode in order {
                    var record = inode.record
                    record.number = copies[inode.number]!
                    if inode.isDirectory { record.parent = copies[record.parent] ?? FileSystem.snapshotHome }
                    if inode.number == FileSystem.rootInode { record.parent = FileSystem.snapshotHome }
                    let copy = Inode(record)
                    copy.xattrs = inode.xattrs
                    for extent in extents[inode.number] ?? [] { copy.extents.insert(extent) }
                    if let fragment = inode.extents.fragment { copy.extents.insert(try copyFragment(fragment, of: inode)) }
                    for (name, child) in inode.directory?.names ?? [] { copy.directory!.add(name, copies[child]!) }
                    made.append(copy)
                }
            } catch {
                dropCopies(made, unmade: order.dropFirst(made.count).flatMap { extents[$0.number] ?? [] })
                throw FileSystemError.answering(error, otherwise: .noSpace)
            }
            for copy in made { inodes[copy.number] = copy }
            home.directory!.add(name, copies[FileSystem.rootInode]!)
            home.record.nlink += 1
            do {
                try compact()
            } catch {
                home.directory!.remove(name)
                home.record.nlink -= 1
                for copy in made { inodes.removeValue(forKey: copy.number) }
                dropCopies(made, unmade: [])
                throw FileSystemError.answering(error, otherwise: .noSpace)
            }
            nextFrozen = next
            return attributes(inodes[copies[FileSystem.rootInode]!]!)
        }
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
            free(dropped.flatMap { inode in inode.extents.extents.map { Release(extent: $0, heap: inode.record.heap) } })
        }
    }

    /// Undoes a snapshot that failed: its copies' pages and fragments go
    /// back, and so do the counts taken for copies not made.
    private func dropCopies(_ made: [Inode], unmade: [Extent]) {
        free(made.flatMap { copy in copy.extents.extents.map { Release(extent: $0, heap: copy.record.heap) } })
        for extent in unmade { try? pool.releaseTrackedPages(at: extent.address, count: extent.pages) }
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

    /// A small file's bytes in a fragment of the copy's own.
    private func copyFragment(_ fragment: Extent, of inode: Inode) throws -> Extent {
        let heap = self.heap(inode.record.heap)
        let copy = try fragments.allocate(bytes: fragment.fragmentBytes, from: heap)
        do {
            let size = Int(min(inode.record.size, UInt64(fragment.fragmentBytes)))
            try pages.copy(size, from: fragment.address, to: copy.address)
            try pool.persist(at: copy.address, count: size)
        } catch {
            free([Release(extent: copy, heap: heap.id)])
            throw error
        }
        return copy
    }
}
