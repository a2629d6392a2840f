import Atomics

/// What a pool's remote shelves share: the settings, and how many of their
/// pages the caches hold, all shelves together.
final class RemoteBudget: @unchecked Sendable {
    private let stored = Locked(RemoteCacheSettings())
    let residentPages = ManagedAtomic<Int>(0)
    /// The cache size in pages, read on every file operation.
    let limitPages: ManagedAtomic<Int>
    private let pageSize: UInt64

    init(pageSize: UInt64) {
        self.pageSize = pageSize
        limitPages = ManagedAtomic(Int(RemoteCacheSettings().cacheBytes / pageSize))
    }

    var settings: RemoteCacheSettings {
        get { stored.withLock { $0 } }
        set {
            stored.withLock { $0 = newValue }
            limitPages.store(Int(min(newValue.cacheBytes / pageSize, UInt64(Int.max))), ordering: .relaxed)
        }
    }
}

/// Transfers and cache hits of one remote shelf since the pool was opened.
public struct RemoteShelfCounters: Sendable, Equatable {
    public var bytesRead: UInt64 = 0
    public var bytesWritten: UInt64 = 0
    /// Pages a read found in the cache, and pages it had to fetch.
    public var hits: UInt64 = 0
    public var misses: UInt64 = 0
    public var evicted: UInt64 = 0

    /// Hits over reads of pages, 0 before any.
    public var hitRate: Double { hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses) }
}

/// A remote shelf as `.pool/shelves/N` and `poolfs info` show it.
public struct RemoteShelfInfo: Codable, Sendable {
    public var node: String
    public var region: String
    /// The link's transport; empty before the first transfer.
    public var transport: String
    /// `up`, `not connected yet`, or `unreachable since TIME (why)`.
    public var state: String
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
    /// Pages reads found in the cache, and pages they fetched.
    public var hits: UInt64
    public var misses: UInt64
    /// Of the pages reads asked for, the share the cache had.
    public var hitRate: Double
    public var cachedBytes: UInt64
    public var dirtyBytes: UInt64
    public var evictedPages: UInt64

    /// One line: `node 10.0.0.2:7000 (tcp) up; 1.2M cached, 0B dirty, 93% hits; 5M read, 5M written`.
    public var summary: String {
        "node \(node)\(transport.isEmpty ? "" : " (\(transport))") \(state); \(ByteSize.format(cachedBytes)) cached, "
            + "\(ByteSize.format(dirtyBytes)) dirty, \(Int((hitRate * 100).rounded()))% hits; "
            + "\(ByteSize.format(bytesRead)) read, \(ByteSize.format(bytesWritten)) written"
    }
}
