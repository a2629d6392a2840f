#if canImport(Glibc)
import Glibc
#endif

/// Allocating heap objects: from the thread's own span of the size class,
/// else a span with room (adopted, or new pages), else a large object.
extension OpenPool {
    func heapOwner(_ lane: Int) -> UInt64 { UInt64(slot * Layout.Participants.lanes + lane + 1) }

    /// The process slot of a span owner `heapOwner` made.
    static func ownerSlot(_ owner: UInt64) -> Int { Int((owner - 1) / UInt64(Layout.Participants.lanes)) }

    @inline(__always)
    func allocateObject(heap: Int, size: Int) throws -> GlobalAddress {
        let cache = try threadCache()
        if UInt(bitPattern: size) <= UInt(SizeClass.maximumSmall), cache.lane > 0, let lane = cache.heapLane(heap) {
            let sizeClass = SizeClass.of(size)
            if let span = lane.current(sizeClass), let offset = span.pop() {
                return GlobalAddress(rawValue: lane.currentAddress(sizeClass) &+ UInt64(offset))
            }
        }
        return try allocateObjectSlow(heap: heap, size: size, cache: cache)
    }

    @inline(never)
    private func allocateObjectSlow(heap: Int, size: Int, cache: UnsafeThreadCache) throws -> GlobalAddress {
        guard size >= 0 else { throw PoolError.invalidSize("\(size)", reason: "negative") }
        guard heapIsLive(heap) else { throw PoolError.heapNotFound("#\(heap)") }
        if size > SizeClass.maximumSmall { return try allocateLarge(heap: heap, size: size, cache: cache) }
        if cache.lane == 0 {
            return try sharedLaneMutex.withLock {
                try allocate(heap: heap, sizeClass: SizeClass.of(size), lane: heapLane(heap, cache: cache), cache: cache)
            }
        }
        return try allocate(heap: heap, sizeClass: SizeClass.of(size), lane: heapLane(heap, cache: cache), cache: cache)
    }

    /// Finds the lane a span with a free block and takes one.
    private func allocate(heap: Int, sizeClass: Int, lane: UnsafeHeapLane, cache: UnsafeThreadCache) throws -> GlobalAddress {
        let (span, address) = try spanWithRoom(heap: heap, sizeClass: sizeClass, lane: lane, cache: cache)
        return GlobalAddress(rawValue: address &+ UInt64(span.pop()!))
    }

    /// The lane's current span of the class, made one that has a free block:
    /// the current one's remote frees, another owned span, an abandoned
    /// span, or a new span.
    func spanWithRoom(heap: Int, sizeClass: Int, lane: UnsafeHeapLane,
                      cache: UnsafeThreadCache) throws -> (UnsafeSpan, UInt64) {
        if let span = lane.current(sizeClass) {
            if !span.isExhausted { return (span, lane.currentAddress(sizeClass)) }
            span.drainRemote()
            if !span.isExhausted { return (span, lane.currentAddress(sizeClass)) }
        }
        let owned = lane.spans
        while let address = owned.withRoom[sizeClass].popLast() {
            let span = spanView(address)
            if !span.isExhausted && span.owner == lane.owner {
                lane.setCurrent(sizeClass, span, address: address)
                return (span, address)
            }
        }
        // Spans that others' frees gave room; found by looking.
        for address in owned.byClass[sizeClass] where address != lane.currentAddress(sizeClass) {
            let span = spanView(address)
            if span.hasRemoteFree { span.drainRemote() }
            if !span.isExhausted && span.isWorthUsing {
                lane.setCurrent(sizeClass, span, address: address)
                return (span, address)
            }
        }
        let abandoned = metadata.atomic(at: Layout.Heaps.row(heap) + Layout.Heaps.abandoned + sizeClass * 8)
        while true {
            // The lock only when there may be a span to adopt.
            let adopted = abandoned.load(ordering: .acquiring) == 0 ? nil
                : try withGlobalLock { adoptSpan(heap: heap, sizeClass: sizeClass, owner: lane.owner) }
            let address: UInt64
            do {
                address = try adopted ?? newSpan(heap: heap, sizeClass: sizeClass, owner: lane.owner, cache: cache)
            } catch PoolError.poolFull(let name, let pages) {
                // No pages left: any owned span with a free block will do.
                for address in owned.byClass[sizeClass] {
                    let span = spanView(address)
                    span.drainRemote()
                    if !span.isExhausted {
                        lane.setCurrent(sizeClass, span, address: address)
                        return (span, address)
                    }
                }
                throw PoolError.poolFull(name: name, pages: pages)
            }
            owned.byClass[sizeClass].append(address)
            let span = spanView(address)
            if !span.isExhausted {
                lane.setCurrent(sizeClass, span, address: address)
                return (span, address)
            }
        }
    }

    /// This thread's lane of a heap, made on first use; for lane 0 the caller
    /// holds sharedLaneMutex.
    func heapLane(_ heap: Int, cache: UnsafeThreadCache) -> UnsafeHeapLane {
        if cache.lane == 0 { return sharedHeapLane(heap) }
        if let lane = cache.heapLane(heap) { return lane }
        let lane = UnsafeHeapLane.allocate(owner: heapOwner(cache.lane))
        cache.setHeapLane(heap, lane)
        return lane
    }

    @inline(__always)
    func spanView(_ address: UInt64) -> UnsafeSpan {
        let (table, page) = location(of: address)
        return UnsafeSpan(base: table.pointer(toPage: page))
    }

    /// Takes an abandoned span of the class; global lock held.
    private func adoptSpan(heap: Int, sizeClass: Int, owner: UInt64) -> UInt64? {
        let head = Layout.Heaps.row(heap) + Layout.Heaps.abandoned + sizeClass * 8
        let address = metadata.load(UInt64.self, at: head)
        guard address != 0 else { return nil }
        let span = spanView(address)
        metadata.store(span.next, at: head)
        span.next = 0
        span.owner = owner
        span.drainRemote()
        return address
    }

    private func newSpan(heap: Int, sizeClass: Int, owner: UInt64, cache: UnsafeThreadCache) throws -> UInt64 {
        let pages = SizeClass.spanPages(sizeClass, pageSize: Int(pageSize))
        let raw = try takeRunReleasingSpans(pages, cache: cache)
        place(heap: heap, run: raw, pages: pages)
        let (table, page) = location(of: raw)
        let blockSize = SizeClass.sizes[sizeClass]
        _ = UnsafeSpan.format(table.pointer(toPage: page), heap: heap, sizeClass: sizeClass, blockSize: blockSize,
                              capacity: (pages * Int(pageSize) - UnsafeSpan.headerSize) / blockSize, owner: owner)
        // Marked allocated last: until then a crash returns the run to the pool.
        table.setEntry(page, .allocated(length: pages, tag: .heap(heap)))
        return raw
    }

    /// An object above the largest class: a span of its own, with one block.
    /// `publish` runs between formatting the span and marking it allocated.
    func allocateLarge(heap: Int, size: Int, cache: UnsafeThreadCache,
                       publish: (GlobalAddress) -> Void = { _ in }) throws -> GlobalAddress {
        guard size < 1 << 47 else { throw PoolError.invalidSize(ByteSize.format(UInt64(size)), reason: "larger than any shelf") }
        let bytes = size + UnsafeSpan.headerSize
        let pages = (bytes + Int(pageSize) - 1) >> Int(pageShift)
        try checkCount(pages)
        let raw = try takeRunReleasingSpans(pages, cache: cache)
        place(heap: heap, run: raw, pages: pages)
        let (table, page) = location(of: raw)
        let span = UnsafeSpan.format(table.pointer(toPage: page), heap: heap, sizeClass: SizeClass.large,
                                     blockSize: pages * Int(pageSize) - UnsafeSpan.headerSize, capacity: 1, owner: 0)
        _ = span.pop()
        let address = GlobalAddress(rawValue: raw + UInt64(UnsafeSpan.headerSize))
        publish(address)
        table.setEntry(page, .allocated(length: pages, tag: .heap(heap)))
        return address
    }

    /// The lane the threads without one of their own share; sharedLaneMutex.
    private func sharedHeapLane(_ heap: Int) -> UnsafeHeapLane {
        if let lane = sharedLanes[heap] { return lane }
        let lane = UnsafeHeapLane.allocate(owner: heapOwner(0))
        sharedLanes[heap] = lane
        return lane
    }
}
