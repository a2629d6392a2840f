import Foundation
import PoolCore
import Synchronization

/// The pool as files, under MOUNTPOINT/.pool/ (DESIGN.md's mounted tree):
/// `info`, `info.json`, `heaps/HEAP/{stats,policy}`, `regions/REGION`,
/// `shelves/N`. Every file's text is made when it is opened, so counters
/// are live. No FUSE types here: the adapter asks, this answers.
public final class ControlTree: @unchecked Sendable {
    public let pool: Pool
    /// How the mount's requests arrive, for `info`: the adapter says.
    public let requests = Mutex("")

    /// The mounted file system, whose state `info` shows.
    public let fileSystem: FileSystem?

    public init(pool: Pool, fileSystem: FileSystem? = nil) {
        self.pool = pool
        self.fileSystem = fileSystem
    }

    /// "ok", or why the file system refuses changes (FileSystem.failure).
    var state: String { fileSystem?.failure.map { "failed: \($0)" } ?? "ok" }

    public enum Kind: Sendable { case directory, file }

    /// One entry: its inode number, name, kind and permission bits.
    public struct Node: Sendable, Equatable {
        public let inode: UInt64
        public let name: String
        public let kind: Kind
        public let mode: UInt32
        /// Bytes, for files whose size is known without making their text.
        public let size: UInt64?
        /// Its own owner (a region's, or one chown gave); nil: the mount owner's.
        public var owner: Owner? = nil
    }

    public struct Owner: Sendable, Equatable {
        public let uid: UInt32
        public let gid: UInt32
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }

    // Inode numbers: fixed ones, then a range per kind of entry.
    public static let root: UInt64 = 1
    public static let control: UInt64 = 2; static let info: UInt64 = 3, infoJSON: UInt64 = 4
    static let heaps: UInt64 = 5, regions: UInt64 = 6, shelves: UInt64 = 7
    /// `.pool/snapshots/`: its entries are the file system's (each
    /// snapshot's root), which the adapter asks the file system for.
    public static let snapshots: UInt64 = 8
    static let heapBase: UInt64 = 0x1_0000, regionBase: UInt64 = 0x2_0000, shelfBase: UInt64 = 0x3_0000
    /// Region files made by create and not yet sized: the pool has no
    /// region until a truncate gives one its size.
    static let pendingBase: UInt64 = 0x4_0000
    private var pending: [(name: String, access: RegionAccess)?] = []
    private let pendingMutex = ThreadMutex()

    private func directory(_ inode: UInt64, _ name: String) -> Node {
        withAccess(Node(inode: inode, name: name, kind: .directory, mode: 0o755, size: nil))
    }

    private func file(_ inode: UInt64, _ name: String, mode: UInt32 = 0o444, size: UInt64? = nil) -> Node {
        withAccess(Node(inode: inode, name: name, kind: .file, mode: mode, size: size))
    }

    /// `.pool/` and its fixed entries take chmod and chown like any file;
    /// what they were given is kept by the file system.
    static let fixed: Set<UInt64> = [control, info, infoJSON, heaps, regions, shelves]

    /// Whether chmod and chown reach `inode`: a region's file, or `.pool/`
    /// and its fixed entries.
    public func takesAccess(_ inode: UInt64) -> Bool {
        isRegion(inode) || (ControlTree.fixed.contains(inode) && fileSystem != nil)
    }

    private func withAccess(_ node: Node) -> Node {
        guard ControlTree.fixed.contains(node.inode), let access = fileSystem?.controlAccess()[node.inode] else { return node }
        return Node(inode: node.inode, name: node.name, kind: node.kind, mode: access.mode, size: node.size,
                    owner: Owner(uid: access.uid, gid: access.gid))
    }

    /// chmod and chown (the kernel checked who may); nil leaves a field,
    /// and a node of no owner of its own is `mountOwner`'s.
    public func setAccess(_ inode: UInt64, mode: UInt32?, uid: UInt32?, gid: UInt32?, mountOwner: Owner) throws {
        guard takesAccess(inode), let node = node(inode) else { throw Refusal.notPermitted }
        let current = node.owner ?? mountOwner
        let access = RegionAccess(uid: uid ?? current.uid, gid: gid ?? current.gid, mode: mode ?? node.mode)
        guard isRegion(inode) else {
            try fileSystem?.setControlAccess(inode, access)
            return
        }
        if let region = region(inode) {
            try pool.setRegionAccess(name: region.name, access)
            return
        }
        // Not sized yet: the region will be made so.
        let index = Int(inode - ControlTree.pendingBase)
        pendingMutex.withLock { if index < pending.count, pending[index] != nil { pending[index]!.access = access } }
    }

    /// A region's file: its owner and mode are the region's.
    private func regionFile(_ inode: UInt64, _ name: String, _ access: RegionAccess, size: UInt64) -> Node {
        Node(inode: inode, name: name, kind: .file, mode: access.mode, size: size, owner: Owner(uid: access.uid, gid: access.gid))
    }

    /// The entry an inode number names, if it exists now.
    public func node(_ inode: UInt64) -> Node? {
        switch inode {
        case ControlTree.root: return directory(inode, "/")
        case ControlTree.control: return directory(inode, ".pool")
        case ControlTree.info: return file(inode, "info")
        case ControlTree.infoJSON: return file(inode, "info.json")
        case ControlTree.heaps: return directory(inode, "heaps")
        case ControlTree.regions: return directory(inode, "regions")
        case ControlTree.shelves: return directory(inode, "shelves")
        case ControlTree.snapshots where fileSystem != nil: return directory(inode, "snapshots")
        case ControlTree.heapBase..<ControlTree.regionBase:
            let heap = Int((inode - ControlTree.heapBase) / 4)
            guard let name = pool.heap(id: heap)?.name else { return nil }
            switch (inode - ControlTree.heapBase) % 4 {
            case 0: return directory(inode, name)
            case 1: return file(inode, "stats")
            case 2: return file(inode, "policy", mode: 0o644)
            default: return nil
            }
        case ControlTree.regionBase..<ControlTree.shelfBase:
            guard let region = pool.openRegion(id: Int(inode - ControlTree.regionBase)) else { return nil }
            return regionFile(inode, region.name, region.access, size: region.size)
        case ControlTree.shelfBase..<(ControlTree.shelfBase + 64):
            let index = Int(inode - ControlTree.shelfBase)
            guard index < pool.shelfCount else { return nil }
            return file(inode, "\(index)")
        case ControlTree.pendingBase...:
            guard let (name, access) = pendingEntry(inode) else { return nil }
            let region = try? pool.openRegion(name: name)
            return regionFile(inode, name, region?.access ?? access, size: region?.size ?? 0)
        default: return nil
        }
    }

    private func pendingEntry(_ inode: UInt64) -> (name: String, access: RegionAccess)? {
        let index = Int(inode - ControlTree.pendingBase)
        return pendingMutex.withLock { index < pending.count ? pending[index] : nil }
    }

    private func pendingName(_ inode: UInt64) -> String? { pendingEntry(inode)?.name }

    /// The region behind a region file (a sized pending one included).
    func region(_ inode: UInt64) -> Region? {
        if inode >= ControlTree.pendingBase { return pendingName(inode).flatMap { try? pool.openRegion(name: $0) } }
        guard inode >= ControlTree.regionBase, inode < ControlTree.shelfBase else { return nil }
        return pool.openRegion(id: Int(inode - ControlTree.regionBase))
    }

    /// A directory's entries, or nil when `inode` is not a directory.
    public func children(_ inode: UInt64) -> [Node]? {
        switch inode {
        case ControlTree.root: return [directory(ControlTree.control, ".pool")]
        case ControlTree.control:
            return [ControlTree.info, ControlTree.infoJSON, ControlTree.heaps, ControlTree.regions, ControlTree.shelves,
                    ControlTree.snapshots].compactMap(node)
        case ControlTree.heaps:
            return pool.heapList().map { directory(ControlTree.heapBase + UInt64($0.id) * 4, $0.name) }
        case ControlTree.regions:
            let live = pool.regionList().map {
                regionFile(ControlTree.regionBase + UInt64($0.id), $0.info.name, $0.info.access, size: $0.info.size)
            }
            let names = Set(live.map(\.name))
            let waiting = pendingMutex.withLock { pending.enumerated() }.compactMap { index, entry in
                entry.flatMap {
                    names.contains($0.name) ? nil : regionFile(ControlTree.pendingBase + UInt64(index), $0.name, $0.access, size: 0)
                }
            }
            return live + waiting
        case ControlTree.shelves:
            return (0..<pool.shelfCount).map { file(ControlTree.shelfBase + UInt64($0), "\($0)") }
        case ControlTree.heapBase..<ControlTree.regionBase where (inode - ControlTree.heapBase) % 4 == 0:
            guard node(inode) != nil else { return nil }
            return [node(inode + 1), node(inode + 2)].compactMap { $0 }
        default: return nil
        }
    }

    public func lookup(parent: UInt64, name: String) -> Node? {
        children(parent)?.first { $0.name == name }
    }

    /// A file's text, made now.
    public func contents(_ inode: UInt64) -> [UInt8]? {
        switch inode {
        case ControlTree.info:
            return Array((pool.info().report + "requests   \(requests.withLock { $0 })\nstate      \(state)\n"
                + (fileSystem.map { ControlTree.sharingLine($0.sharing()) } ?? "")
                + (fileSystem?.directStatistics().map(ControlTree.directLine) ?? "")).utf8)
        case ControlTree.infoJSON:
            return Array((JSONText.encode(MountInfo(pool: pool.info(), requests: requests.withLock { $0 }, state: state,
                                                    sharing: fileSystem?.sharing(),
                                                    direct: fileSystem?.directStatistics())) + "\n").utf8)
        case ControlTree.heapBase..<ControlTree.regionBase:
            guard let heap = pool.heap(id: Int((inode - ControlTree.heapBase) / 4)) else { return nil }
            switch (inode - ControlTree.heapBase) % 4 {
            case 1: return Array(heap.stats().report.utf8)
            case 2: return Array(((heap.placement?.description ?? "default") + "\n").utf8)
            default: return nil
            }
        case ControlTree.shelfBase..<(ControlTree.shelfBase + 64):
            let index = Int(inode - ControlTree.shelfBase)
            let shelves = pool.info().shelves
            guard index < shelves.count else { return nil }
            let shelf = shelves[index]
            return Array("""
                medium \(shelf.medium.rawValue)\(shelf.persistentMemory ? " (real pmem)" : "")
                size \(ByteSize.format(shelf.sizeBytes))
                pages \(shelf.pages)
                used \(shelf.usedPages)
                free \(shelf.freePages + shelf.cachedPages)
                path \(shelf.path)

                """.utf8) + Array((shelf.remote.map(ControlTree.remoteLines) ?? "").utf8)
        default: return nil
        }
    }

    /// Clones' and snapshots' pages, as `du` would want them counted.
    static func sharingLine(_ sharing: Sharing) -> String {
        "shared     \(ByteSize.format(sharing.sharedBytes)) in pages more than one file names; "
            + "\(sharing.snapshots) snapshot\(sharing.snapshots == 1 ? "" : "s") alone hold \(ByteSize.format(sharing.snapshotOnlyBytes))\n"
    }

    /// Direct access (libpoolfs-direct.so): since this mount began.
    static func directLine(_ direct: DirectLeases.Statistics) -> String {
        "direct     \(direct.processes) process\(direct.processes == 1 ? "" : "es"); read \(ByteSize.format(direct.bytesRead)) "
            + "in \(direct.reads), wrote \(ByteSize.format(direct.bytesWritten)) in \(direct.writes)\n"
    }

    /// A remote shelf's part of `.pool/shelves/N`.
    static func remoteLines(_ remote: RemoteShelfInfo) -> String {
        """
        node \(remote.node)
        region \(remote.region)
        transport \(remote.transport.isEmpty ? "none yet" : remote.transport)
        state \(remote.state)
        read \(remote.bytesRead)
        written \(remote.bytesWritten)
        cached \(remote.cachedBytes)
        dirty \(remote.dirtyBytes)
        hits \(remote.hits)
        misses \(remote.misses)
        hit-rate \(Int((remote.hitRate * 1000).rounded()) / 10).\(Int((remote.hitRate * 1000).rounded()) % 10)%

        """
    }

    /// A region file's bytes, lent to `body` straight from pool memory.
    public func withRegionBytes<R>(_ inode: UInt64, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R? {
        guard let region = region(inode) else { return nil }
        return try? region.withUnsafeMutableBytes(body)
    }

    /// `touch .pool/regions/NAME` (or open with O_CREAT): a region file
    /// with no size yet; a truncate makes the region.
    /// The region will be `access`'s (its creator's, 0600).
    public func createRegionFile(parent: UInt64, name: String, access: RegionAccess) throws -> Node {
        guard parent == ControlTree.regions else { throw Refusal.notPermitted }
        guard (try? Names.check(name, what: "region")) != nil else { throw Refusal.invalid }
        guard lookup(parent: parent, name: name) == nil else { throw Refusal.exists }
        let inode = pendingMutex.withLock {
            pending.append((name, access))
            return ControlTree.pendingBase + UInt64(pending.count - 1)
        }
        return regionFile(inode, name, access, size: 0)
    }


    /// `truncate -s SIZE` of a region file: gives a new region its size. A
    /// region's pages are one run that library users map: its size stays.
    public func resizeRegion(_ inode: UInt64, to size: UInt64) throws {
        if let region = region(inode) {
            guard region.size == size else { throw Refusal.invalid }
            return
        }
        guard let (name, access) = pendingEntry(inode) else { throw Refusal.notFound }
        guard size > 0 else { return }
        // The pool's own errors answer with their errno (PoolError.errno).
        try pool.createRegion(name: name, size: size, access: access)
    }

    /// What a change through the tree can fail with, as errno values.
    public enum Refusal: Error, Equatable {
        case notPermitted, exists, notFound, notEmpty, invalid
    }

    /// `mkdir .pool/heaps/NAME` creates a heap.
    public func makeDirectory(parent: UInt64, name: String) throws -> Node {
        guard parent == ControlTree.heaps else { throw Refusal.notPermitted }
        try pool.createHeap(name: name)
        guard let node = lookup(parent: parent, name: name) else { throw Refusal.notFound }
        return node
    }

    /// `rmdir .pool/heaps/NAME` destroys an empty heap nobody uses.
    public func removeDirectory(parent: UInt64, name: String) throws {
        guard parent == ControlTree.heaps else { throw Refusal.notPermitted }
        do {
            try pool.destroyHeap(name: name)
        } catch PoolError.heapNotFound {
            throw Refusal.notFound
        } catch PoolError.heapInUse {
            throw Refusal.notEmpty
        }
    }

    /// Whether a file takes writes: a heap's `policy`, a region's bytes.
    public func isWritable(_ inode: UInt64) -> Bool {
        if isRegion(inode) { return node(inode) != nil }
        return inode >= ControlTree.heapBase && inode < ControlTree.regionBase && (inode - ControlTree.heapBase) % 4 == 2
            && node(inode) != nil
    }

    /// `rm .pool/regions/NAME` destroys the region.
    public func remove(parent: UInt64, name: String) throws {
        guard parent == ControlTree.regions else { throw Refusal.notPermitted }
        let unsized = pendingMutex.withLock { () -> Bool in
            guard let index = pending.firstIndex(where: { $0?.name == name }) else { return false }
            pending[index] = nil
            return true
        }
        if unsized && (try? pool.openRegion(name: name)) == nil { return }
        do {
            try pool.destroyRegion(name: name)
        } catch PoolError.regionNotFound {
            throw Refusal.notFound
        }
    }

    /// Text written to a heap's `policy`: a new placement (or `default`).
    public func write(_ inode: UInt64, text: String) throws {
        guard isWritable(inode), let heap = pool.heap(id: Int((inode - ControlTree.heapBase) / 4)) else {
            throw Refusal.notPermitted
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            try heap.setPlacement(trimmed == "default" || trimmed.isEmpty ? nil : try Placement(parsing: trimmed))
        } catch {
            throw Refusal.invalid
        }
    }

    public func isRegion(_ inode: UInt64) -> Bool {
        (inode >= ControlTree.regionBase && inode < ControlTree.shelfBase) || inode >= ControlTree.pendingBase
    }
}

/// `info.json`: the pool's info, and how the mount's requests arrive, as
/// one object.
struct MountInfo: Encodable {
    let pool: PoolInfo
    let requests: String
    let state: String
    let sharing: Sharing?
    let direct: DirectLeases.Statistics?

    func encode(to encoder: Encoder) throws {
        try pool.encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(requests, forKey: Key(stringValue: "requests"))
        try container.encode(state, forKey: Key(stringValue: "state"))
        if let sharing {
            try container.encode(sharing.snapshots, forKey: Key(stringValue: "snapshots"))
            try container.encode(sharing.sharedBytes, forKey: Key(stringValue: "sharedBytes"))
            try container.encode(sharing.snapshotOnlyBytes, forKey: Key(stringValue: "snapshotOnlyBytes"))
        }
        if let direct {
            try container.encode(direct.processes, forKey: Key(stringValue: "directProcesses"))
            try container.encode(direct.reads, forKey: Key(stringValue: "directReads"))
            try container.encode(direct.bytesRead, forKey: Key(stringValue: "directBytesRead"))
            try container.encode(direct.writes, forKey: Key(stringValue: "directWrites"))
            try container.encode(direct.bytesWritten, forKey: Key(stringValue: "directBytesWritten"))
        }
    }

    struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
