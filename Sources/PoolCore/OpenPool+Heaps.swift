#if canImport(Glibc)
import Glibc
#endif

/// Heaps: named small-object allocators inside the pool (NVMM's Heap, Mome's
/// shared malloc). Objects live in spans (see `UnsafeSpan`); every thread
/// owns the spans it allocates from, and frees of others' blocks go back to
/// the owner's span with one CAS. Only taking pages (a new span) or adopting
/// a span abandoned by an ended thread or a dead process takes the global lock.
extension OpenPool {
    typealias H = Layout.Heaps

    // MARK: The heap table

    func heapIsLive(_ index: Int) -> Bool {
        index >= 0 && index < H.capacity && metadata.load(UInt64.self, at: H.row(index) + H.state) == 1
    }

    func heapName(_ index: Int) -> String {
        metadata.text(at: H.row(index) + H.name, capacity: H.nameCapacity)
    }

    func heapIndex(named name: String) -> Int? {
        (0..<H.capacity).first { heapIsLive($0) && heapName($0) == name }
    }

    var liveHeaps: [Int] { (0..<H.capacity).filter(heapIsLive) }

    func createHeap(name: String) throws -> Int {
        try Names.check(name, what: "heap")
        return try withGlobalLock {
            guard heapIndex(named: name) == nil else { throw PoolError.heapExists(name) }
            guard let index = (0..<H.capacity).first(where: { !heapIsLive($0) }) else {
                throw PoolError.tooManyHeaps(limit: H.capacity)
            }
            let row = H.row(index)
            metadata.withBytes(at: row, count: H.rowSize) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            metadata.storeText(name, at: row + H.name, capacity: H.nameCapacity)
            metadata.store(UInt64(time(nil)), at: row + H.createdAt)
            metadata.persist(offset: row, count: H.rowSize)
            metadata.atomic(at: row + H.state).store(1, ordering: .releasing)
            metadata.persist(offset: row, count: 8)
            return index
        }
    }

    /// Makes heap row `index` live again, for `check --repair`: the file
    /// system's runs say it is in use, whatever its damaged state word says.
    /// A name that is no longer one (or taken) becomes `recovered-N`.
    /// Global lock held. Returns the name it goes by.
    func reviveHeapRow(_ index: Int) -> String {
        let row = H.row(index)
        var name = heapName(index)
        if (try? Names.check(name, what: "heap")) == nil || heapIndex(named: name) != nil {
            name = heapIndex(named: "default") == nil ? "default" : "recovered-\(index)"
            metadata.storeText(name, at: row + H.name, capacity: H.nameCapacity)
        }
        metadata.persist(offset: row, count: H.rowSize)
        metadata.atomic(at: row + H.state).store(1, ordering: .releasing)
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
            let row = H.row(index)
            metadata.atomic(at: row + H.state).store(0, ordering: .releasing)
            metadata.withBytes(at: row, count: H.rowSize) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            metadata.persist(offset: row, count: H.rowSize)
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

    // MARK: Allocation

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
        let abandoned = metadata.atomic(at: H.row(heap) + H.abandoned + sizeClass * 8)
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
        let head = H.row(heap) + H.abandoned + sizeClass * 8
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

    // MARK: Free

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
        case (.allocated?, .heapPages?), (.allocated?, .files?): return "it is a page run; free it with freePages"
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
    private func takeRunReleasingSpans(_ pages: Int, cache: UnsafeThreadCache) throws -> UInt64 {
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

    // MARK: Giving spans up

    /// Gives up every span a lane owns: empty ones go back to the pool, the
    /// others onto the heap's abandoned stacks. Global lock held.
    func abandon(_ lane: UnsafeHeapLane, heap: Int) {
        let owned = lane.spans
        for sizeClass in 0..<SizeClass.count {
            for address in owned.byClass[sizeClass] { abandonSpan(address, heap: heap) }
            owned.byClass[sizeClass].removeAll()
            lane.setCurrent(sizeClass, nil, address: 0)
        }
    }

    /// Global lock held.
    func abandonSpan(_ address: UInt64, heap: Int) {
        let span = spanView(address)
        span.drainRemote()
        span.owner = 0
        if span.used == 0 {
            releaseCached(address, spanLength(address))
        } else {
            pushAbandoned(address, span, heap: heap)
        }
    }

    func spanLength(_ address: UInt64) -> Int {
        let (table, page) = location(of: address)
        return table.entry(page).length
    }

    func pushAbandoned(_ address: UInt64, _ span: UnsafeSpan, heap: Int) {
        let head = H.row(heap) + H.abandoned + span.sizeClass * 8
        span.next = metadata.load(UInt64.self, at: head)
        metadata.store(address, at: head)
    }

    /// Gives up all of a thread cache's heap lanes; global lock held.
    func abandonHeapLanes(_ cache: UnsafeThreadCache) {
        for (heap, lane) in cache.heapLanes {
            if heapIsLive(heap) { abandon(lane, heap: heap) }
            cache.setHeapLane(heap, nil)
            lane.deallocate()
        }
    }

    /// Rebuilds the abandoned stacks from the spans themselves, after a
    /// holder of the global lock died. Global lock held.
    func rebuildAbandonedStacks() {
        for heap in 0..<H.capacity {
            for sizeClass in 0..<SizeClass.count {
                metadata.store(UInt64(0), at: H.row(heap) + H.abandoned + sizeClass * 8)
            }
        }
        for heap in liveHeaps {
            forEachSpan(of: heap) { shelf, page, entry, span in
                guard entry.tag == .heap(heap), span.sizeClass < SizeClass.count, span.owner == 0 else { return }
                pushAbandoned(shelf.address(ofPage: page).rawValue, span, heap: heap)
            }
        }
    }

    /// A dead process's spans: recounted, then released or abandoned.
    /// Global lock held.
    func adoptOrphanedSpans(ofSlot dead: Int) {
        for heap in liveHeaps {
            forEachSpan(of: heap) { shelf, page, entry, span in
                guard entry.tag == .heap(heap), span.sizeClass < SizeClass.count, span.owner != 0,
                      OpenPool.ownerSlot(span.owner) == dead
                else { return }
                _ = span.recount()
                span.owner = 0
                if span.used == 0 && !span.hasRemoteFree {
                    shelf.releaseRun(at: page, length: entry.length)
                } else {
                    pushAbandoned(shelf.address(ofPage: page).rawValue, span, heap: heap)
                }
            }
        }
    }

    // MARK: Sizes

    func usableSize(heap: Int, _ address: GlobalAddress) throws -> Int {
        let (table, head, span, block) = try locateObject(heap: heap, address)
        let start = table.offset(ofPage: head) + UInt64(block)
        return span.blockSize - Int(address.offset - start)
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
