#if canImport(Glibc)
import Glibc
#endif

/// Freeing heap objects: into the owner's span with one CAS; spans that
/// become empty give their pages back.
extension OpenPool {
    /// The span and block offset of an object of heap `heap`, or why not.
    @inline(__always)
    func locateObject(heap: Int, _ address: GlobalAddress) throws -> (UnsafePageTable, Int, UnsafeSpan, Int) {
        guard let table = shelves.table(address.shelf) ?? shelf(address.shelf)?.table,
              let page = table.page(containing: address.offset)
        else {
            throw PoolError.invalidFree(address, reason: "it is not inside the pool's data pages")
        }
        let (head, entry) = table.head(of: page)
        guard entry == .allocated(length: entry.length, tag: .heap(heap)) else {
            throw PoolError.invalidFree(address, reason: describeHeapMismatch(entry, heap: heap))
        }
        let span = UnsafeSpan(base: table.pointer(toPage: head))
        let relative = Int(address.offset - table.offset(ofPage: head)) - UnsafeSpan.headerSize
        guard relative >= 0 else { throw PoolError.invalidFree(address, reason: "it points into a span header") }
        let index = span.blockIndex(relative)
        guard index < span.bump else { throw PoolError.invalidFree(address, reason: "it was never allocated") }
        return (table, head, span, UnsafeSpan.offset(ofBlock: index, size: span.blockSize))
    }

    func describeHeapMismatch(_ entry: PageEntry, heap: Int) -> String {
        switch (entry.kind, entry.tag) {
        case (.allocated?, .heap(let other)?): return "it belongs to heap '\(heapName(other))', not '\(heapName(heap))'"
        case (.allocated?, .heapPages?), (.allocated?, .tracked?): return "it is a page run; free it with freePages"
        case (.allocated?, .region(let index)?): return "it belongs to region '\(regionName(index) ?? "#\(index)")'"
        case (.allocated?, .pages?): return "it is a page run of the pool, not a heap object"
        default: return "it is not allocated (already freed?)"
        }
    }

    @inline(__always)
    func freeObject(heap: Int, _ address: GlobalAddress) throws {
        let (table, head, span, block) = try locateObject(heap: heap, address)
        if span.sizeClass == SizeClass.large { return try freeLarge(table, head, span, address) }
        if let raw = pthread_getspecific(cacheKey) {
            let cache = UnsafeThreadCache(raw)
            if cache.lane > 0, let lane = cache.heapLane(heap), span.owner == lane.owner {
                span.pushLocal(block)
                // Once per span: when its free blocks reach the worth-using mark.
                if span.freeCount == max(1, span.capacity / 8) || span.used == 0 {
                    spanGotRoom(lane, span, table, head, emptied: span.used == 0)
                }
                return
            }
        }
        span.pushRemote(block)
    }

    func freeLarge(_ table: UnsafePageTable, _ head: Int, _ span: UnsafeSpan, _ address: GlobalAddress) throws {
        try giveBack(table, head, expected: .allocated(length: table.entry(head).length, tag: .heap(span.heap)),
                     freeing: address)
    }

    /// A free gave an owned span room: remember it for the next refill;
    /// return an empty span's pages unless it is its lane's current span or
    /// one of the lane's few spares of that class.
    @inline(never)
    private func spanGotRoom(_ lane: UnsafeHeapLane, _ span: UnsafeSpan, _ table: UnsafePageTable, _ head: Int,
                             emptied: Bool) {
        let sizeClass = span.sizeClass
        guard lane.current(sizeClass)?.base != span.base else { return }
        let owned = lane.spans
        if !emptied {
            owned.withRoom[sizeClass].append(table.address(ofPage: head).rawValue)
            return
        }
        let raw = table.address(ofPage: head).rawValue
        guard owned.byClass[sizeClass].count > 4, let i = owned.byClass[sizeClass].firstIndex(of: raw) else { return }
        owned.byClass[sizeClass].remove(at: i)
        owned.withRoom[sizeClass].removeAll { $0 == raw }
        span.drainRemote()
        // Back to this thread's page stock, without the global lock.
        let length = table.entry(head).length
        guard span.used == 0,
              table.exchangeEntry(head, expected: .allocated(length: length, tag: .heap(span.heap)),
                                  desired: .cached(length: length, owner: slot)) == nil
        else {
            owned.byClass[sizeClass].append(raw)
            return
        }
        span.owner = 0
        try? stash(raw: raw, count: length)
    }

    /// Takes pages for a span or a large object; when the pool is full,
    /// first gives back the empty spans this thread keeps as spares.
    func takeRunReleasingSpans(_ pages: Int, cache: UnsafeThreadCache) throws -> UInt64 {
        do {
            return try takeRun(pages, cache: cache)
        } catch PoolError.poolFull {
            guard cache.lane > 0, try withGlobalLock({ releaseEmptySpans(cache) }) > 0 else { throw PoolError.poolFull(name: name, pages: pages) }
            return try takeRun(pages, cache: cache)
        }
    }

    /// Returns every empty span of this thread's lanes to the pool; global
    /// lock held. How many it returned.
    private func releaseEmptySpans(_ cache: UnsafeThreadCache) -> Int {
        var released = 0
        for (_, lane) in cache.heapLanes {
            let owned = lane.spans
            for sizeClass in 0..<SizeClass.count {
                owned.byClass[sizeClass].removeAll { address in
                    let span = spanView(address)
                    span.drainRemote()
                    guard span.used == 0 else { return false }
                    if lane.currentAddress(sizeClass) == address { lane.setCurrent(sizeClass, nil, address: 0) }
                    owned.withRoom[sizeClass].removeAll { $0 == address }
                    span.owner = 0
                    releaseCached(address, spanLength(address))
                    released += 1
                    return true
                }
            }
        }
        return released
    }

    func usableSize(heap: Int, _ address: GlobalAddress) throws -> Int {
        let (table, head, span, block) = try locateObject(heap: heap, address)
        let start = table.offset(ofPage: head) + UInt64(block)
        return span.blockSize - Int(address.offset - start)
    }
}
