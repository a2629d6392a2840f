/// The page allocator: the fast path pops and pushes the thread cache and
/// stores one page-table word; everything else is the slow path, under the
/// global lock.
extension OpenPool {
    static let maximumRun = 1 << 31

    func checkCount(_ count: Int) throws {
        guard count >= 1, count < OpenPool.maximumRun else {
            throw PoolError.invalidSize("\(count) pages", reason: "a run is 1 page or more")
        }
    }

    @inline(__always)
    func location(of raw: UInt64) -> (Shelf, Int) {
        let address = GlobalAddress(rawValue: raw)
        let shelf = shelves[address.shelf]!
        return (shelf, Int((address.offset - shelf.geometry.dataOffset) >> pageShift))
    }

    /// Takes a run out of this thread's cache (refilling it if needed); the
    /// run's head still says `cached` until the caller publishes it.
    @inline(__always)
    func takeCachedRun(_ count: Int, cache: UnsafeThreadCache) throws -> UInt64 {
        if let raw = cache.pop(count) { return raw }
        return try refill(cache, count)
    }

    func allocatePages(count: Int) throws -> GlobalAddress {
        try checkCount(count)
        let (raw, shelf, page) = try takeRun(count, cache: try threadCache())
        shelf.setEntry(page, .allocated(length: count, tag: .pages))
        return GlobalAddress(rawValue: raw)
    }

    /// Where a run starts, or the reason `address` cannot start one.
    func locateRun(_ address: GlobalAddress) throws -> (Shelf, Int) {
        guard let shelf = shelf(address.shelf) else {
            throw PoolError.invalidFree(address, reason: "the pool has no shelf \(address.shelf)")
        }
        guard let page = shelf.page(at: address.offset) else {
            throw PoolError.invalidFree(address, reason: "not the start of a data page")
        }
        return (shelf, page)
    }

    func describeMismatch(_ actual: PageEntry, count: Int) -> String {
        switch (actual.kind, actual.tag) {
        case (.free?, _), (.cached?, _): return "it is not allocated (already freed?)"
        case (.tail?, _): return "it lies inside a run, \(actual.length) pages after its start"
        case (.allocated?, .region(let index)?): return "it belongs to region '\(regionName(index) ?? "#\(index)")'"
        case (.allocated?, _): return "it starts a run of \(actual.length) pages, not \(count)"
        case (nil, _): return "its page-table entry is damaged"
        }
    }

    func freePages(at address: GlobalAddress, count: Int) throws {
        try checkCount(count)
        let (shelf, page) = try locateRun(address)
        // One CAS makes the run ours again; a double free fails here.
        if let actual = shelf.exchangeEntry(page, expected: .allocated(length: count, tag: .pages),
                                            desired: .cached(length: count, owner: slot)) {
            throw PoolError.invalidFree(address, reason: describeMismatch(actual, count: count))
        }
        try stash(raw: address.rawValue, count: count, shelf: shelf, page: page)
    }

    /// Puts a run whose head says `cached(us)` into this thread's cache, or
    /// back into the free space when it is large or the cache is full.
    @inline(__always)
    func stash(raw: UInt64, count: Int, shelf: Shelf, page: Int) throws {
        if count <= UnsafeThreadCache.maxRun, let cache = try? threadCache() {
            let capacity = cacheCapacity(count)
            if cache.push(count, raw, capacity: capacity) { return }
            try withGlobalLock {
                for run in cache.drain(count, limit: (capacity + 1) / 2) { releaseCached(run, count) }
            }
            if cache.push(count, raw, capacity: capacity) { return }
        }
        try withGlobalLock { shelf.releaseRun(at: page, length: count) }
    }

    // MARK: Slow path (global lock)

    /// Refills a thread's stack of `count`-page runs with half its capacity.
    @inline(never)
    func refill(_ cache: UnsafeThreadCache, _ count: Int) throws -> UInt64 {
        try withGlobalLock {
            let wanted = max(1, (cacheCapacity(count) + 1) / 2)
            var got: [UInt64] = []
            for _ in 0..<wanted {
                guard let (shelf, page) = try? claimFromFreeSpace(count, head: { _ in .cached(length: count, owner: slot) })
                else { break }
                got.append(shelf.address(ofPage: page).rawValue)
            }
            if got.isEmpty {
                let (shelf, page) = try claimReturningCache(count, cache: cache) { _ in .cached(length: count, owner: slot) }
                return shelf.address(ofPage: page).rawValue
            }
            let first = got.removeFirst()
            for raw in got.reversed() { _ = cache.push(count, raw, capacity: .max) }
            return first
        }
    }

    /// Finds and claims `count` free pages on the first shelf that has them.
    func claimFromFreeSpace(_ count: Int, head: (Shelf) -> PageEntry) throws -> (Shelf, Int) {
        for shelf in shelves.all {
            guard let page = shelf.findFreeRun(length: count) else { continue }
            guard try shelf.reserveBlocks(forPage: page, length: count) else {
                throw PoolError.poolFull(name: name, pages: count)
            }
            shelf.claimRun(at: page, length: count, head: head(shelf))
            return (shelf, page)
        }
        throw PoolError.poolFull(name: name, pages: count)
    }

    /// Claims a run; when none is free, first gives back this thread's own
    /// stock, which may be what fragments the free space. Global lock held.
    func claimReturningCache(_ count: Int, cache: UnsafeThreadCache,
                             head: (Shelf) -> PageEntry) throws -> (Shelf, Int) {
        do {
            return try claimFromFreeSpace(count, head: head)
        } catch PoolError.poolFull {
            returnAll(cache)
            return try claimFromFreeSpace(count, head: head)
        }
    }

    /// Global lock held.
    func releaseCached(_ raw: UInt64, _ count: Int) {
        let (shelf, page) = location(of: raw)
        shelf.releaseRun(at: page, length: count)
    }

    /// Empties a thread cache into the free space; global lock held.
    func returnAll(_ cache: UnsafeThreadCache) {
        for length in 1...UnsafeThreadCache.maxRun {
            for raw in cache.drain(length) { releaseCached(raw, length) }
        }
    }
}
