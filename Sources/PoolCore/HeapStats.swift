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
    /// 1 − allocated / active: the share of the heap's pages not in objects.
    public var fragmentation: Double {
        activeBytes == 0 ? 0 : 1 - Double(allocatedBytes) / Double(activeBytes)
    }

    enum CodingKeys: String, CodingKey {
        case name, allocatedBytes, activeBytes, pages, spans, objects, objectsPerClass, delayedObjects
        case abandonedSpans, fragmentation, placement, pagesPerNode
    }

    public init(name: String) { self.name = name }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        allocatedBytes = try c.decode(UInt64.self, forKey: .allocatedBytes)
        activeBytes = try c.decode(UInt64.self, forKey: .activeBytes)
        pages = try c.decode(Int.self, forKey: .pages)
        spans = try c.decode(Int.self, forKey: .spans)
        objects = try c.decode(Int.self, forKey: .objects)
        objectsPerClass = try c.decode([String: Int].self, forKey: .objectsPerClass)
        delayedObjects = try c.decode(Int.self, forKey: .delayedObjects)
        abandonedSpans = try c.decode(Int.self, forKey: .abandonedSpans)
        placement = try c.decode(String.self, forKey: .placement)
        pagesPerNode = try c.decode([String: Int].self, forKey: .pagesPerNode)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(allocatedBytes, forKey: .allocatedBytes)
        try c.encode(activeBytes, forKey: .activeBytes)
        try c.encode(pages, forKey: .pages)
        try c.encode(spans, forKey: .spans)
        try c.encode(objects, forKey: .objects)
        try c.encode(objectsPerClass, forKey: .objectsPerClass)
        try c.encode(delayedObjects, forKey: .delayedObjects)
        try c.encode(abandonedSpans, forKey: .abandonedSpans)
        try c.encode((fragmentation * 1000).rounded() / 1000, forKey: .fragmentation)
        try c.encode(placement, forKey: .placement)
        try c.encode(pagesPerNode, forKey: .pagesPerNode)
    }
}

extension OpenPool {
    /// Counts a heap's spans. Exact under the global lock with the heap's
    /// users quiet; a close estimate while they allocate.
    func heapStats(_ heap: Int) -> HeapStats {
        var stats = HeapStats(name: heapName(heap))
        forEachSpan(of: heap) { _, _, entry, span in
            stats.pages += entry.length
            stats.activeBytes += UInt64(entry.length) * pageSize
            if entry.tag == .heapPages(heap) {
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
        return stats
    }

    /// Moves a run between owners' tags (a pool page run becoming a heap's).
    func retag(_ address: GlobalAddress, count: Int, from: PageEntry.Tag, to: PageEntry.Tag) throws {
        try checkCount(count)
        let (table, page) = try locateRun(address)
        if let actual = table.exchangeEntry(page, expected: .allocated(length: count, tag: from),
                                            desired: .allocated(length: count, tag: to)) {
            throw PoolError.invalidFree(address, reason: describeMismatch(actual, count: count))
        }
    }
}
