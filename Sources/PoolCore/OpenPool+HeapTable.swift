#if canImport(Glibc)
import Glibc
#endif

/// Heaps: named small-object allocators inside the pool (NVMM's Heap, Mome's
/// shared malloc). Objects live in spans (see `UnsafeSpan`); every thread
/// owns the spans it allocates from, and frees of others' blocks go back to
/// the owner's span with one CAS. Only taking pages (a new span) or adopting
/// a span abandoned by an ended thread or a dead process takes the global lock.
///
/// The heap table: one row per heap, by name.
extension OpenPool {
    func heapIsLive(_ index: Int) -> Bool {
        index >= 0 && index < Layout.Heaps.capacity && metadata.load(UInt64.self, at: Layout.Heaps.row(index) + Layout.Heaps.state) == 1
    }

    func heapName(_ index: Int) -> String {
        metadata.text(at: Layout.Heaps.row(index) + Layout.Heaps.name, capacity: Layout.Heaps.nameCapacity)
    }

    func heapIndex(named name: String) -> Int? {
        (0..<Layout.Heaps.capacity).first { heapIsLive($0) && heapName($0) == name }
    }

    var liveHeaps: [Int] { (0..<Layout.Heaps.capacity).filter(heapIsLive) }

    func createHeap(name: String) throws -> Int {
        try Names.check(name, what: "heap")
        return try withGlobalLock {
            guard heapIndex(named: name) == nil else { throw PoolError.heapExists(name) }
            guard let index = (0..<Layout.Heaps.capacity).first(where: { !heapIsLive($0) }) else {
                throw PoolError.tooManyHeaps(limit: Layout.Heaps.capacity)
            }
            let row = Layout.Heaps.row(index)
            metadata.withBytes(at: row, count: Layout.Heaps.rowSize) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            metadata.storeText(name, at: row + Layout.Heaps.name, capacity: Layout.Heaps.nameCapacity)
            metadata.store(UInt64(time(nil)), at: row + Layout.Heaps.createdAt)
            metadata.persist(offset: row, count: Layout.Heaps.rowSize)
            metadata.atomic(at: row + Layout.Heaps.state).store(1, ordering: .releasing)
            metadata.persist(offset: row, count: 8)
            return index
        }
    }

    /// Makes heap row `index` live again, for `check --repair`: the file
    /// system's runs say it is in use, whatever its damaged state word says.
    /// A name that is no longer one (or taken) becomes `recovered-N`.
    /// Global lock held. Returns the name it goes by.
    func reviveHeapRow(_ index: Int) -> String {
        let row = Layout.Heaps.row(index)
        var name = heapName(index)
        if (try? Names.check(name, what: "heap")) == nil || heapIndex(named: name) != nil {
            name = heapIndex(named: "default") == nil ? "default" : "recovered-\(index)"
            metadata.storeText(name, at: row + Layout.Heaps.name, capacity: Layout.Heaps.nameCapacity)
        }
        metadata.persist(offset: row, count: Layout.Heaps.rowSize)
        metadata.atomic(at: row + Layout.Heaps.state).store(1, ordering: .releasing)
        metadata.persist(offset: row, count: 8)
        return name
    }

    /// Destroys an empty heap that no other thread or process is using.
    func destroyHeap(name: String) throws {
        guard let index = heapIndex(named: name) else { throw PoolError.heapNotFound(name) }
        // This thread's own lane is given up first; others' block the destroy.
        if let cache = try? threadCache(), let lane = cache.heapLane(index) {
            try withGlobalLock { abandon(lane, heap: index) }
            cache.setHeapLane(index, nil)
            lane.deallocate()
        }
        try withGlobalLock {
            guard heapIsLive(index) else { throw PoolError.heapNotFound(name) }
            let stats = heapStats(index)
            guard stats.objects == 0, stats.delayedObjects == 0 else {
                throw PoolError.heapInUse(name, reason: "it still holds \(stats.objects + stats.delayedObjects) objects")
            }
            var pageRuns = 0
            var owners: Set<UInt64> = []
            forEachSpan(of: index) { _, _, entry, span in
                if entry.tag?.isHeapPageRun == true { pageRuns += 1 } else if span.owner != 0 { owners.insert(span.owner) }
            }
            guard pageRuns == 0 else {
                throw PoolError.heapInUse(name, reason: "it still holds \(pageRuns) page runs")
            }
            guard owners.isEmpty else {
                let slots = owners.map(OpenPool.ownerSlot)
                    .filter { $0 < Layout.Participants.capacity }
                let pids = Set(slots.map { metadata.load(UInt64.self, at: Layout.Participants.slot($0) + Layout.Participants.pid) })
                throw PoolError.heapInUse(name, reason: "threads of pid \(pids.sorted().map(String.init).joined(separator: ", ")) allocate from it")
            }
            forEachSpan(of: index) { shelf, page, entry, _ in shelf.releaseRun(at: page, length: entry.length) }
            let row = Layout.Heaps.row(index)
            metadata.atomic(at: row + Layout.Heaps.state).store(0, ordering: .releasing)
            metadata.withBytes(at: row, count: Layout.Heaps.rowSize) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            metadata.persist(offset: row, count: Layout.Heaps.rowSize)
        }
    }

    /// Calls `body` for each run of heap `index` (spans, large objects, page runs).
    func forEachSpan(of index: Int, _ body: (Shelf, Int, PageEntry, UnsafeSpan) -> Void) {
        for shelf in shelves.all {
            shelf.forEachHead { page, entry in
                guard entry.kind == .allocated else { return }
                guard entry.tag?.heap == index else { return }
                body(shelf, page, entry, UnsafeSpan(base: shelf.table.pointer(toPage: page)))
            }
        }
    }
}

extension MappedFile {
    func text(at offset: Int, capacity: Int) -> String {
        withBytes(at: offset, count: capacity) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    func storeText(_ text: String, at offset: Int, capacity: Int) {
        withBytes(at: offset, count: capacity) { bytes in
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
            for (i, byte) in text.utf8.prefix(capacity - 1).enumerated() { bytes[i] = byte }
        }
    }
}
