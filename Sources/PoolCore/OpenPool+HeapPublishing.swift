/// Heap objects whose address is stored into the pool in the same step as
/// their allocation or free, so that a process killed at any instant leaves
/// no object that nothing refers to. The intent log names the block the
/// owner is about to take (or give back); recovery can tell from the span
/// whether that happened and finishes the step.
extension OpenPool {
    func allocateObject(heap: Int, size: Int, publishingTo destination: GlobalAddress) throws -> GlobalAddress {
        let word = try dataWord(destination)
        let cache = try threadCache()
        guard size >= 0 else { throw PoolError.invalidSize("\(size)", reason: "negative") }
        guard heapIsLive(heap) else { throw PoolError.heapNotFound("#\(heap)") }
        guard word.load() == 0 else { throw PoolError.destinationTaken(destination) }
        if cache.lane == 0 {
            return try sharedLaneMutex.withLock { try publish(heap, size, destination, word, cache) }
        }
        return try publish(heap, size, destination, word, cache)
    }

    private func publish(_ heap: Int, _ size: Int, _ destination: GlobalAddress, _ word: DataWord,
                         _ cache: UnsafeThreadCache) throws -> GlobalAddress {
        try withIntentLog(cache) { record in
            defer { clearLog(record) }
            if size > SizeClass.maximumSmall {
                var taken = false
                let address = try allocateLarge(heap: heap, size: size, cache: cache) { address in
                    writeLog(record, .publishLarge, destination: destination, address: address, count: heap)
                    taken = !word.compareExchange(expected: 0, desired: address.rawValue).exchanged
                }
                if taken {
                    try freeObject(heap: heap, address)
                    throw PoolError.destinationTaken(destination)
                }
                return address
            }
            let lane = heapLane(heap, cache: cache)
            let (span, base) = try spanWithRoom(heap: heap, sizeClass: SizeClass.of(size), lane: lane, cache: cache)
            let block = span.peek()!
            let address = GlobalAddress(rawValue: base &+ UInt64(block))
            writeLog(record, .publishObject, destination: destination, address: address, count: heap)
            _ = span.pop()
            guard word.compareExchange(expected: 0, desired: address.rawValue).exchanged else {
                span.pushLocal(block)
                throw PoolError.destinationTaken(destination)
            }
            return address
        }
    }

    /// Frees the object `destination` holds and zeroes `destination`; false
    /// (and nothing done) when `destination` no longer holds `address`.
    @discardableResult
    func freeObject(heap: Int, _ address: GlobalAddress, clearing destination: GlobalAddress) throws -> Bool {
        let word = try dataWord(destination)
        let cache = try threadCache()
        do {
            // Refused before anything changes (so a retry after recovering a
            // dead process finds the word as it was).
            _ = try locateObject(heap: heap, address)
        } catch {
            if word.load() != address.rawValue { return false }
            throw error
        }
        return try withIntentLog(cache) { record in
            defer { clearLog(record) }
            writeLog(record, .clearObject, destination: destination, address: address, count: heap)
            guard word.compareExchange(expected: address.rawValue, desired: 0).exchanged else { return false }
            try freeObject(heap: heap, address)
            return true
        }
    }

    /// Finishes a dead lane's logged heap step. Global lock held.
    func replayHeapLog(_ operation: LoggedOperation, owner: Int, destination: DataWord,
                       address: GlobalAddress, heap: Int) {
        guard heapIsLive(heap), let table = shelves.table(address.shelf),
              let page = table.page(containing: address.offset)
        else { return }
        let (head, entry) = table.head(of: page)
        let span = UnsafeSpan(base: table.pointer(toPage: head))
        let block = Int(address.offset - table.offset(ofPage: head))
        switch operation {
        case .publishObject:
            // Taken iff no longer free: then it goes where it was going, or
            // back if someone else's address got there first.
            guard entry.tag == .heap(heap), !span.isFree(block) else { return }
            if !destination.compareExchange(expected: 0, desired: address.rawValue).exchanged
                && destination.load() != address.rawValue {
                span.pushRemote(block)
            }
        case .publishLarge:
            // Unfinished only while the dead process still holds the run.
            guard entry == .cached(length: entry.length, owner: owner) else { return }
            if destination.compareExchange(expected: 0, desired: address.rawValue).exchanged
                || destination.load() == address.rawValue {
                table.setEntry(head, .allocated(length: entry.length, tag: .heap(heap)))
            }
        case .clearObject:
            // The word still holding the object: the free never began, or
            // the block was freed, handed out again and put back in the same
            // word; either way it is live and referenced: nothing to do.
            guard destination.load() != address.rawValue, entry.kind == .allocated, entry.tag == .heap(heap),
                  span.sizeClass != SizeClass.large
            else { return }
            // Word cleared, block not yet freed: finish, but only in a span
            // of the dead lane, where no one can have handed it out again
            // (elsewhere at worst one object leaks, never one is owned twice).
            let ownedByDead = span.owner != 0 && OpenPool.ownerSlot(span.owner) == owner
            if ownedByDead && !span.isFree(block) { span.pushRemote(block) }
        default:
            return
        }
    }
}
