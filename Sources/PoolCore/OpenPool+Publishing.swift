/// Allocations whose address is stored into the pool in the same step, so
/// that a process killed at any instant leaves either the run allocated and
/// its address stored, or neither (PMDK's pmemobj_alloc with a destination).
extension OpenPool {
    func allocatePages(count: Int, publishingTo destination: GlobalAddress) throws -> GlobalAddress {
        try checkCount(count)
        let word = try dataWord(destination)
        let cache = try threadCache()
        let raw = try takeRun(count, cache: cache)
        let (table, page) = location(of: raw)
        let address = GlobalAddress(rawValue: raw)
        withIntentLog(cache) { record in
            writeLog(record, .publish, destination: destination, address: address, count: count)
            word.store(raw)
            table.setEntry(page, .allocated(length: count, tag: .pages))
            clearLog(record)
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
        try withIntentLog(cache) { record in
            writeLog(record, .clear, destination: destination, address: address, count: count)
            word.store(0)
            let lost = table.exchangeEntry(page, expected: allocated, desired: .cached(length: count, owner: slot))
            clearLog(record)
            if let lost {
                throw PoolError.invalidFree(address, reason: describeMismatch(lost, count: count))
            }
        }
        try stash(raw: address.rawValue, count: count)
    }
}
