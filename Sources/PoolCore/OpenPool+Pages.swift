/// The page allocator: the fast path pops or pushes the thread cache and
/// writes one page-table word, with no lock and no system call; everything
/// else is the slow path, under the global lock.
extension OpenPool {
    static let maximumRun = 1 << 31

    @inline(__always)
    func checkCount(_ count: Int) throws {
        guard count >= 1, count < OpenPool.maximumRun else { try refuseCount(count) }
    }

    @inline(never)
    private func refuseCount(_ count: Int) throws -> Never {
        throw PoolError.invalidSize("\(count) pages", reason: "a run is 1 page or more")
    }

    /// The page table and page of an address this allocator produced.
    @inline(__always)
    func location(of raw: UInt64) -> (UnsafePageTable, Int) {
        let address = GlobalAddress(rawValue: raw)
        let table = shelves.table(address.shelf)!
        return (table, Int((address.offset - table.dataOffset) >> table.pageShift))
    }

    /// A run whose head says `cached(us)`: from this thread's stack, or
    /// from the free space when the stack is empty or the run is large.
    @inline(__always)
    func takeRun(_ count: Int, cache: UnsafeThreadCache) throws -> UInt64 {
        if count <= UnsafeThreadCache.maxRun, let raw = cache.pop(count) {
            internalCheck(isCachedByUs(raw, count), "thread cache handed out \(GlobalAddress(rawValue: raw)), not ours")
            return raw
        }
        return try takeRunSlow(count, cache: cache)
    }

    func allocatePages(count: Int, tag: PageEntry.Tag = .pages) throws -> GlobalAddress {
        try checkCount(count)
        let raw = try takeRun(count, cache: try threadCache())
        let (table, page) = location(of: raw)
        table.setEntry(page, .allocated(length: count, tag: tag))
        return GlobalAddress(rawValue: raw)
    }

    /// Where a run starts, or the reason `address` cannot start one.
    @inline(__always)
    func locateRun(_ address: GlobalAddress) throws -> (UnsafePageTable, Int) {
        if let table = shelves.table(address.shelf), let page = table.page(at: address.offset) {
            return (table, page)
        }
        return try locateRunSlow(address)
    }

    @inline(never)
    private func locateRunSlow(_ address: GlobalAddress) throws -> (UnsafePageTable, Int) {
        guard let shelf = shelf(address.shelf) else {
            throw PoolError.invalidFree(address, reason: "the pool has no shelf \(address.shelf)")
        }
        guard let page = shelf.page(at: address.offset) else {
            throw PoolError.invalidFree(address, reason: "not the start of a data page")
        }
        return (shelf.table, page)
    }

    func describeMismatch(_ actual: PageEntry, count: Int) -> String {
        switch (actual.kind, actual.tag) {
        case (.free?, _), (.cached?, _): return "it is not allocated (already freed?)"
        case (.tail?, _): return "it lies inside a run, \(actual.length) pages after its start"
        case (.allocated?, .region(let index)?): return "it belongs to region '\(regionName(index) ?? "#\(index)")'"
        case (.allocated?, _) where actual.length == count:
            return "its pages are shared with \(actual.shares) other owner\(actual.shares == 1 ? "" : "s")"
        case (.allocated?, _): return "it starts a run of \(actual.length) pages, not \(count)"
        case (nil, _): return "its page-table entry is damaged"
        }
    }

    func freePages(at address: GlobalAddress, count: Int, tag: PageEntry.Tag = .pages) throws {
        try checkCount(count)
        let (table, page) = try locateRun(address)
        try giveBack(table, page, expected: .allocated(length: count, tag: tag), freeing: address)
    }

    /// Makes an allocated run this process's again and keeps it in this
    /// thread's stock. One CAS from exactly `expected` (never a value just
    /// read): of two frees of one run, the second fails here.
    @inline(__always)
    func giveBack(_ table: UnsafePageTable, _ page: Int, expected: PageEntry, freeing address: GlobalAddress) throws {
        if let actual = table.exchangeEntry(page, expected: expected, desired: .cached(length: expected.length, owner: slot)) {
            throw PoolError.invalidFree(address, reason: describeMismatch(actual, count: expected.length))
        }
        try keepGivenBack(table, page, count: expected.length)
    }

    /// A run just made `cached(us)` by a free goes to this thread's stock.
    @inline(__always)
    func keepGivenBack(_ table: UnsafePageTable, _ page: Int, count: Int) throws {
        // A remote run goes straight back: a thread's stock serves any heap.
        if table.isRemote { return try releaseRemote(raw: table.address(ofPage: page).rawValue, count: count) }
        try stash(raw: table.address(ofPage: page).rawValue, count: count)
    }

    @inline(never)
    private func releaseRemote(raw: UInt64, count: Int) throws {
        try withGlobalLock { releaseCached(raw, count) }
    }

    /// Keeps a run whose head says `cached(us)` in this thread's stack, or
    /// gives it back to the free space when it is large or the stack is full.
    @inline(__always)
    func stash(raw: UInt64, count: Int) throws {
        internalCheck(isCachedByUs(raw, count), "stashing \(GlobalAddress(rawValue: raw)), not ours")
        if count <= UnsafeThreadCache.maxRun, let cache = try? threadCache(),
           cache.push(count, raw, capacity: cacheCapacity(count)) {
            return
        }
        try stashSlow(raw: raw, count: count)
    }

    func isCachedByUs(_ raw: UInt64, _ count: Int) -> Bool {
        let (table, page) = location(of: raw)
        return table.entry(page) == .cached(length: count, owner: slot)
    }

    /// Cuts an allocated run into the `pieces` it keeps (page ranges in
    /// it, in order, not overlapping), each a run of its own after with
    /// its own count of `shares`, and frees its other pages. `shares`: what
    /// the run's head must say (a run shared since is not cut).
    func carveRun(_ address: GlobalAddress, count: Int, shares: Int = 0, keeping pieces: [RunPiece],
                  tag: PageEntry.Tag) throws {
        try checkCount(count)
        var end = 0
        let inOrder = pieces.allSatisfy { piece in
            defer { end = piece.pages.upperBound }
            return piece.pages.lowerBound >= end && !piece.pages.isEmpty && piece.pages.upperBound <= count
                && (0...PageEntry.maximumShares).contains(piece.shares)
        }
        guard inOrder, pieces != [RunPiece(pages: 0..<count, shares: shares)] else {
            throw PoolError.invalidSize("pages \(pieces.map(\.pages))", reason: "a run of \(count) keeps pieces of itself, in order")
        }
        guard let shelf = shelf(address.shelf), let page = shelf.page(at: address.offset) else {
            throw PoolError.invalidFree(address, reason: "not the start of a data page")
        }
        try withGlobalLock {
            let actual = shelf.table.entry(page)
            guard actual == .allocated(length: count, tag: tag, shares: shares) else {
                throw PoolError.invalidFree(address, reason: describeMismatch(actual, count: count))
            }
            shelf.carveRun(at: page, length: count, keeping: pieces.map(\.pages)) {
                .allocated(length: pieces[$0].pages.count, tag: tag, shares: pieces[$0].shares)
            }
        }
    }

    // MARK: Slow path (global lock)

    @inline(never)
    private func stashSlow(raw: UInt64, count: Int) throws {
        try withGlobalLock {
            if count <= UnsafeThreadCache.maxRun, let cache = try? threadCache() {
                let capacity = cacheCapacity(count)
                for run in cache.drain(count, limit: (capacity + 1) / 2) { releaseCached(run, count) }
                if cache.push(count, raw, capacity: capacity) { return }
            }
            releaseCached(raw, count)
        }
    }

    /// Refills a thread's stack of `count`-page runs with half its capacity,
    /// or claims one large run.
    @inline(never)
    private func takeRunSlow(_ count: Int, cache: UnsafeThreadCache) throws -> UInt64 {
        try withGlobalLock {
            let head = PageEntry.cached(length: count, owner: slot)
            let wanted = count <= UnsafeThreadCache.maxRun ? max(1, (cacheCapacity(count) + 1) / 2) : 1
            var got: [UInt64] = []
            for _ in 0..<wanted {
                guard let (shelf, page) = try? claimFromFreeSpace(count, head: head) else { break }
                got.append(shelf.address(ofPage: page).rawValue)
            }
            if got.isEmpty {
                let (shelf, page) = try claimReturningCache(count, cache: cache, head: head)
                return shelf.address(ofPage: page).rawValue
            }
            let first = got.removeFirst()
            for raw in got.reversed() { _ = cache.push(count, raw, capacity: .max) }
            return first
        }
    }

    /// Finds and claims `count` free pages on the first shelf that has them.
    func claimFromFreeSpace(_ count: Int, head: PageEntry) throws -> (Shelf, Int) {
        // Remote shelves hold only what a `remote` placement puts there.
        for shelf in shelves.all where shelf.remote == nil {
            guard let page = shelf.findFreeRun(length: count) else { continue }
            guard try shelf.reserveBlocks(forPage: page, length: count) else {
                throw PoolError.poolFull(name: name, pages: count)
            }
            shelf.claimRun(at: page, length: count, head: head)
            return (shelf, page)
        }
        throw PoolError.poolFull(name: name, pages: count)
    }

    /// Claims a run; when none is free, first gives back this thread's own
    /// stock, which may be what fragments the free space. Global lock held.
    func claimReturningCache(_ count: Int, cache: UnsafeThreadCache, head: PageEntry) throws -> (Shelf, Int) {
        do {
            return try claimFromFreeSpace(count, head: head)
        } catch PoolError.poolFull {
            returnAll(cache)
            return try claimFromFreeSpace(count, head: head)
        }
    }

    /// A run of a remote shelf (`shelf`, or any), allocated at once with
    /// `tag`: remote runs pass through no thread's stock.
    func allocateRemotePages(count: Int, tag: PageEntry.Tag, shelf wanted: Int?) throws -> GlobalAddress {
        try checkCount(count)
        return try withGlobalLock {
            let remote = shelves.all.filter { $0.remote != nil && (wanted == nil || $0.index == wanted) }
            guard !remote.isEmpty else {
                throw PoolError.invalidPlacement(wanted.map { "remote \($0)" } ?? "remote",
                                                 reason: wanted.map { "shelf \($0) is not a remote shelf" } ?? "the pool has no remote shelf (poolfs grow --remote)")
            }
            for shelf in remote {
                guard let page = shelf.findFreeRun(length: count) else { continue }
                shelf.claimRun(at: page, length: count, head: .allocated(length: count, tag: tag))
                return shelf.address(ofPage: page)
            }
            throw PoolError.poolFull(name: name, pages: count)
        }
    }

    /// Global lock held.
    func releaseCached(_ raw: UInt64, _ count: Int) {
        let address = GlobalAddress(rawValue: raw)
        let shelf = shelves[address.shelf]!
        shelf.releaseRun(at: shelf.page(at: address.offset)!, length: count)
    }

    /// Empties a thread cache into the free space; global lock held.
    func returnAll(_ cache: UnsafeThreadCache) {
        for length in 1...UnsafeThreadCache.maxRun {
            for raw in cache.drain(length) { releaseCached(raw, length) }
        }
    }
}
