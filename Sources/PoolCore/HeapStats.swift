/// Live counters of one heap, computed from its spans.
public struct HeapStats: Codable, Sendable, Equatable {
    public var name: String
    /// Bytes in live objects, counted by their size class.
    public var allocatedBytes: UInt64 = 0
    /// Bytes of the pages the heap holds.
    public var activeBytes: UInt64 = 0
    public var pages = 0
    public var spans = 0
    public var objects = 0
    /// Live objects per size class, by block size in bytes ("large" above).
    public var objectsPerClass: [String: Int] = [:]
    /// Objects freed with delayed free, waiting for their epoch.
    public var delayedObjects = 0
    /// Spans no live thread owns, waiting to be adopted.
    public var abandonedSpans = 0
    /// The heap's placement ("" for the kernel's default).
    public var placement = ""
    /// Its pages per NUMA node, from the kernel ("untouched": never written).
    public var pagesPerNode: [String: Int] = [:]
    /// 1 − allocated / active: the share of the heap's pages not in
    /// objects, to three decimals.
    public var fragmentation: Double = 0

    public init(name: String) { self.name = name }
}

extension OpenPool {
    /// Counts a heap's spans. Exact under the global lock with the heap's
    /// users quiet; a close estimate while they allocate.
    func heapStats(_ heap: Int) -> HeapStats {
        var stats = HeapStats(name: heapName(heap))
        forEachSpan(of: heap) { _, _, entry, span in
            stats.pages += entry.length
            stats.activeBytes += UInt64(entry.length) * pageSize
            if entry.tag?.isHeapPageRun == true {
                stats.allocatedBytes += UInt64(entry.length) * pageSize
                return
            }
            stats.spans += 1
            if span.sizeClass == SizeClass.large {
                stats.objects += 1
                stats.allocatedBytes += UInt64(span.blockSize)
                stats.objectsPerClass["large", default: 0] += 1
                return
            }
            let live = max(0, span.used - (span.remoteFreeBlocks?.count ?? 0))
            stats.objects += live
            stats.allocatedBytes += UInt64(live * span.blockSize)
            if live > 0 { stats.objectsPerClass["\(span.blockSize)", default: 0] += live }
            if span.owner == 0 { stats.abandonedSpans += 1 }
        }
        stats.delayedObjects = delayedCount(heap: heap)
        // Each delayed object and its list node count as live blocks above.
        stats.objects -= min(stats.objects, 2 * stats.delayedObjects)
        if stats.activeBytes > 0 {
            stats.fragmentation = ((1 - Double(stats.allocatedBytes) / Double(stats.activeBytes)) * 1000).rounded() / 1000
        }
        return stats
    }
}
