import Atomics

/// Epochs and delayed free (NVMM's EpochManager), epoch-based reclamation
/// across processes. The pool has one global epoch; each lane publishes the
/// epoch it entered (or 0 outside one). A block freed with delayed free goes
/// onto its heap's list for the current epoch (three lists, by epoch mod 3)
/// and is freed when the global epoch is two past it: by then every epoch
/// that could still see it has ended. Any process may advance the epoch and
/// free the blocks, and a dead process's lanes are cleared by its recovery,
/// so reclamation depends on no one process staying alive.
extension OpenPool {
    private var globalEpoch: UnsafeAtomic<UInt64> { metadata.atomic(at: Layout.Control.epoch) }

    private func epochWord(_ slot: Int, _ lane: Int) -> UnsafeAtomic<UInt64> {
        metadata.atomic(at: Layout.Participants.epoch(slot, lane))
    }

    func withEpoch<R>(_ body: () throws -> R) throws -> R {
        try enterEpoch()
        defer { exitEpoch() }
        return try body()
    }

    /// Enters an epoch on this thread (they nest); pair with `exitEpoch`.
    func enterEpoch() throws {
        let cache = try threadCache()
        cache.epochDepth += 1
        guard cache.epochDepth == 1 else { return }
        if cache.lane == 0 { sharedEpochMutex.lock() }
        let word = epochWord(slot, cache.lane)
        var epoch = globalEpoch.load(ordering: .sequentiallyConsistent)
        while true {
            word.store(epoch + 1, ordering: .sequentiallyConsistent)
            let now = globalEpoch.load(ordering: .sequentiallyConsistent)
            if now == epoch { break }
            epoch = now
        }
    }

    /// Leaves the epoch this thread entered last.
    func exitEpoch() {
        guard let cache = try? threadCache(), cache.epochDepth > 0 else { return }
        cache.epochDepth -= 1
        guard cache.epochDepth == 0 else { return }
        epochWord(slot, cache.lane).store(0, ordering: .releasing)
        if cache.lane == 0 { sharedEpochMutex.unlock() }
    }

    private func delayedList(_ heap: Int, _ epoch: UInt64) -> UnsafeAtomic<UInt64> {
        metadata.atomic(at: Layout.Heaps.row(heap) + Layout.Heaps.delayed + Int(epoch % 3) * 8)
    }

    /// Frees an object once no epoch that could see it runs. Readers may
    /// still read it meanwhile, so the list is made of separate 16-byte
    /// nodes (next, object), not of the object's own bytes.
    func delayedFree(heap: Int, _ address: GlobalAddress) throws {
        let (table, head, _, block) = try locateObject(heap: heap, address)
        let canonical = GlobalAddress(shelf: address.shelf, offset: table.offset(ofPage: head) + UInt64(block))
        let node = try allocateObject(heap: heap, size: 16)
        let link = try dataWord(node)
        // Pushed whatever a flush says, so the node is freed with the list;
        // a failed flush is told once the push is done.
        try dataWord(node.advanced(by: 8)).storeUnchecked(canonical.rawValue)
        let pushes = try withEpoch { () -> UInt64 in
            let list = delayedList(heap, globalEpoch.load(ordering: .sequentiallyConsistent))
            var expected = list.load(ordering: .relaxed)
            while true {
                link.storeUnchecked(expected)
                let (done, found) = list.weakCompareExchange(expected: expected, desired: node.rawValue,
                                                             successOrdering: .releasing, failureOrdering: .relaxed)
                if done { break }
                expected = found
            }
            return metadata.atomic(at: Layout.Control.delayedPushes).loadThenWrappingIncrement(ordering: .relaxed)
        }
        if pushes % 64 == 63 { _ = advanceEpoch() }
        try link.shelf.file.checkPersisted()
    }

    /// Moves the global epoch on if every lane inside an epoch has seen the
    /// current one, then frees the blocks that became safe. False when some
    /// live lane still holds an older epoch.
    @discardableResult
    func advanceEpoch() -> Bool {
        let epoch = globalEpoch.load(ordering: .sequentiallyConsistent)
        for other in 0..<Layout.Participants.capacity where metadata.load(UInt64.self, at: Layout.Participants.slot(other) + Layout.Participants.state) != 0 {
            for lane in 0..<Layout.Participants.lanes {
                let seen = epochWord(other, lane).load(ordering: .sequentiallyConsistent)
                guard seen == 0 || seen == epoch + 1 else {
                    // A dead process cannot hold reclamation back; a live
                    // one is only asked whether it lives (no global lock).
                    if other != slot, !FileLock.isHeld(metadata.descriptor, byte: Layout.LockByte.participant(other)) {
                        try? reclaimDeadParticipants()
                    }
                    return false
                }
            }
        }
        guard globalEpoch.compareExchange(expected: epoch, desired: epoch + 1, ordering: .sequentiallyConsistent).exchanged
        else { return false }
        // Now every lane is at epoch or later: what was freed in epoch − 1 is safe.
        for heap in liveHeaps {
            var next = delayedList(heap, epoch + 2).exchange(0, ordering: .acquiring)
            while next != 0, let node = try? dataWord(GlobalAddress(rawValue: next)),
                  let object = try? dataWord(GlobalAddress(rawValue: next + 8)) {
                let following = node.load()
                try? freeObject(heap: heap, GlobalAddress(rawValue: object.load()))
                try? freeObject(heap: heap, GlobalAddress(rawValue: next))
                next = following
            }
        }
        return true
    }

    /// Blocks waiting on the delayed lists of a heap.
    func delayedCount(heap: Int) -> Int {
        var count = 0
        for epoch: UInt64 in 0..<3 {
            var next = delayedList(heap, epoch).load(ordering: .acquiring)
            while next != 0, count < 1 << 30, let node = try? dataWord(GlobalAddress(rawValue: next)) {
                count += 1
                next = node.load()
            }
        }
        return count
    }
}
