/// Allocations whose address is stored into the pool in the same step, so
/// that a process killed at any instant leaves either the run allocated and
/// its address stored, or neither (PMDK's pmemobj_alloc with a destination).
/// The destination must hold zero: the address goes in by compare-and-swap,
/// so two processes publishing into one word cannot lose a run.
extension OpenPool {
    func allocatePages(count: Int, publishingTo destination: GlobalAddress) throws -> GlobalAddress {
        try checkCount(count)
        let word = try dataWord(destination)
        let cache = try threadCache()
        let raw = try takeRun(count, cache: cache)
        let (table, page) = location(of: raw)
        let address = GlobalAddress(rawValue: raw)
        let published = withIntentLog(cache) { record in
            defer { clearLog(record) }
            writeLog(record, .publish, destination: destination, address: address, count: count)
            guard word.compareExchange(expected: 0, desired: raw).exchanged else { return false }
            table.setEntry(page, .allocated(length: count, tag: .pages))
            return true
        }
        guard published else {
            try stash(raw: raw, count: count)
            throw PoolError.destinationTaken(destination)
        }
        return address
    }

    func freePages(at address: GlobalAddress, count: Int, clearing destination: GlobalAddress) throws {
        try checkCount(count)
        let word = try dataWord(destination)
        let (table, page) = try locateRun(address)
        let allocated = PageEntry.allocated(length: count, tag: .pages)
        let actual = table.entry(page)
        guard actual == allocated else {
            throw PoolError.invalidFree(address, reason: describeMismatch(actual, count: count))
        }
        let cache = try threadCache()
        let freed = try withIntentLog(cache) { record -> Bool in
            writeLog(record, .clear, destination: destination, address: address, count: count)
            defer { clearLog(record) }
            guard word.compareExchange(expected: address.rawValue, desired: 0).exchanged else { return false }
            if let lost = table.exchangeEntry(page, expected: allocated, desired: .cached(length: count, owner: slot)) {
                throw PoolError.invalidFree(address, reason: describeMismatch(lost, count: count))
            }
            return true
        }
        guard freed else {
            throw PoolError.invalidFree(address, reason: "\(destination) no longer holds it")
        }
        try stash(raw: address.rawValue, count: count)
    }
}
