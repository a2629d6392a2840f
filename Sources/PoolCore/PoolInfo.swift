#if canImport(Glibc)
import Glibc
#endif

/// What `poolfs info` shows: capacity, use and layout, read live.
public struct PoolInfo: Codable, Sendable {
    public var name: String
    public var path: String
    public var uuid: String
    public var pageSize: UInt64
    public var capacityBytes: UInt64
    public var usedBytes: UInt64
    public var freeBytes: UInt64
    /// Free pages that processes hold in their thread caches.
    public var cachedBytes: UInt64
    /// The machine's memory (or disk) the shelf files take now: free pages
    /// given back take none (OpenPool+GiveBack.swift).
    public var residentBytes: UInt64
    public var shelves: [ShelfInfo]
    public var regions: [RegionInfo]
    public var heaps: [HeapSummary]
    /// Processes that have the pool open now.
    public var processes: [Int32]
}

public struct ShelfInfo: Codable, Sendable {
    public var index: Int
    public var medium: Medium
    /// True when libpmem maps the file as real persistent memory.
    public var persistentMemory: Bool
    public var path: String
    public var sizeBytes: UInt64
    public var pages: Int
    public var usedPages: Int
    public var cachedPages: Int
    public var freePages: Int
    /// A remote shelf's node, state, traffic and cache; nil for a local one.
    public var remote: RemoteShelfInfo?
}

public struct HeapSummary: Codable, Sendable, Equatable {
    public var name: String
    public var pages: Int
    public var placement: String
}

public struct RegionInfo: Codable, Sendable, Equatable {
    public var name: String
    public var address: GlobalAddress
    public var size: UInt64
    public var pages: Int
    public var createdAt: UInt64
    public var access: RegionAccess
}

/// Who may map a region, as a file's owner and mode say who may open it:
/// the mount shows them on `.pool/regions/NAME` and the kernel checks them.
public struct RegionAccess: Codable, Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    /// Permission bits (0o7777 at most).
    public var mode: UInt32

    public init(uid: UInt32, gid: UInt32, mode: UInt32) {
        self.uid = uid
        self.gid = gid
        self.mode = mode & 0o7777
    }

    /// The creator's, readable and writable by them alone: a region is
    /// memory, often a process's private state.
    public static var creators: RegionAccess { RegionAccess(uid: getuid(), gid: getgid(), mode: 0o600) }
}

extension GlobalAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = GlobalAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad address \(text)"))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension OpenPool {
    /// Pages used and cached per shelf, and (`byHeap`) pages per heap, from
    /// one walk of the page tables.
    func pageCounts(byHeap: Bool = true) -> (shelves: [(used: Int, cached: Int)], heapPages: [Int: Int]) {
        var heapPages: [Int: Int] = [:]
        let shelves = self.shelves.all.map { shelf -> (used: Int, cached: Int) in
            var used = 0, cached = 0
            shelf.forEachHead { _, entry in
                if entry.kind == .cached { cached += entry.length; return }
                used += entry.length
                if byHeap, let heap = entry.tag?.heap { heapPages[heap, default: 0] += entry.length }
            }
            return (used, cached)
        }
        return (shelves, heapPages)
    }

    func info() -> PoolInfo {
        let counts = pageCounts()
        let shelfInfos = zip(shelves.all, counts.shelves).map { shelf, count in
            ShelfInfo(index: shelf.index, medium: shelf.file.medium, persistentMemory: shelf.file.isPersistentMemory,
                      path: shelf.file.path, sizeBytes: shelf.geometry.size, pages: shelf.pageCount,
                      usedPages: count.used, cachedPages: count.cached,
                      freePages: shelf.pageCount - count.used - count.cached, remote: shelf.remote?.status())
        }
        let pages = shelfInfos.reduce(0) { $0 + $1.pages }
        let used = shelfInfos.reduce(0) { $0 + $1.usedPages }
        let cached = shelfInfos.reduce(0) { $0 + $1.cachedPages }
        let heaps = liveHeaps.map { heap in
            HeapSummary(name: heapName(heap), pages: counts.heapPages[heap] ?? 0,
                        placement: storedPlacement(ofHeap: heap)?.description ?? "")
        }
        return PoolInfo(
            name: name, path: directory, uuid: superblock.uuid.description, pageSize: pageSize,
            capacityBytes: UInt64(pages) * pageSize, usedBytes: UInt64(used) * pageSize,
            freeBytes: UInt64(pages - used) * pageSize, cachedBytes: UInt64(cached) * pageSize,
            residentBytes: residentBytes(), shelves: shelfInfos, regions: regions(), heaps: heaps, processes: livePids())
    }
}
