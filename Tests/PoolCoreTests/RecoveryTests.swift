import Testing
import TestSupport
@testable import PoolCore

/// Recovery, white-box: a second open of the pool in this process plays the
/// process that dies, at exactly the step under test.
@Suite struct RecoveryTests {
    func setUp(_ scratch: Scratch) throws -> (Pool, Pool, GlobalAddress) {
        let survivor = try Pool.create(name: "rec", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let table = try survivor.createRegion(name: "table", size: 4096)
        let victim = try Pool.open(name: "rec", at: scratch.path)
        return (survivor, victim, table.address)
    }

    @Test func aDeadProcessesCachedPagesComeBack() throws {
        let scratch = Scratch()
        let (survivor, victim, _) = try setUp(scratch)
        let run = try victim.allocatePages(count: 2)
        try victim.freePages(at: run, count: 2)
        let kept = try victim.allocatePages(count: 1)
        #expect(survivor.info().cachedBytes > 0)
        victim.core.abandon()
        let offline = try? Pool.check(name: "rec", at: scratch.path)
        #expect(offline == nil, "check must refuse while the survivor has the pool open")
        // The next open of anyone recovers the dead slot.
        let third = try Pool.open(name: "rec", at: scratch.path)
        #expect(third.info().cachedBytes == 0)
        // What the dead process had allocated stays allocated: it may be referenced.
        #expect(survivor.usedPages == 1 + 1)
        try survivor.freePages(at: kept, count: 1)
    }

    @Test func aPublishCutShortIsCompleted() throws {
        let scratch = Scratch()
        let (survivor, victim, table) = try setUp(scratch)
        let core = victim.core
        let cache = try core.threadCache()
        let raw = try core.takeRun(3, cache: cache)
        let address = GlobalAddress(rawValue: raw)
        // Died after logging, before storing the address or marking the run.
        core.withIntentLog(cache) { record in
            core.writeLog(record, .publish, destination: table, address: address, count: 3)
        }
        core.abandon()
        try survivor.core.reclaimDeadParticipants()
        #expect(try survivor.load(at: table) == raw)
        try survivor.freePages(at: address, count: 3)
        #expect(survivor.usedPages == 1)
    }

    @Test func aClearCutShortIsRolledBackOrFinished() throws {
        let scratch = Scratch()
        let (survivor, victim, table) = try setUp(scratch)
        let kept = try victim.allocatePages(count: 4, publishingTo: table)
        let gone = try victim.allocatePages(count: 2, publishingTo: table.advanced(by: 8))
        let core = victim.core
        let cache = try core.threadCache()
        // Died after logging a free, before clearing the word: rolled back.
        core.withIntentLog(cache) { record in
            core.writeLog(record, .clear, destination: table, address: kept, count: 4)
        }
        core.abandon()
        try survivor.core.reclaimDeadParticipants()
        #expect(try survivor.load(at: table) == kept.rawValue)
        #expect(survivor.usedPages == 1 + 4 + 2)

        // Died after clearing the word, before freeing the run: finished.
        let second = try Pool.open(name: "rec", at: scratch.path)
        let secondCache = try second.core.threadCache()
        second.core.withIntentLog(secondCache) { record in
            second.core.writeLog(record, .clear, destination: table.advanced(by: 8), address: gone, count: 2)
        }
        try second.store(0, at: table.advanced(by: 8))
        second.core.abandon()
        try survivor.core.reclaimDeadParticipants()
        #expect(survivor.usedPages == 1 + 4)
        #expect(throws: PoolError.self) { try survivor.freePages(at: gone, count: 2) }
        try survivor.freePages(at: kept, count: 4, clearing: table)
        #expect(try survivor.load(at: table) == 0)
        #expect(survivor.usedPages == 1)
    }

    @Test func aHolderOfTheLockThatDiedLeavesNothingTorn() throws {
        let scratch = Scratch()
        let (survivor, victim, _) = try setUp(scratch)
        survivor.close()
        let core = victim.core
        // Died inside the global lock while claiming a run: tails written,
        // head not, and a region row half created.
        let shelf = core.shelves[0]!
        let page = shelf.findFreeRun(length: 5)!
        for i in 1..<5 { shelf.setEntry(page + i, .tail(distance: i)) }
        core.metadata.store(UInt64(1), at: Layout.Control.lockDirty)
        core.metadata.store(UInt64(1), at: Layout.Regions.entry(7) + Layout.Regions.state)
        core.abandon()
        let report = try Pool.check(name: "rec", at: scratch.path)
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(!report.recoverable.isEmpty)
        let repaired = try Pool.check(name: "rec", at: scratch.path, repair: true)
        #expect(!repaired.repaired.isEmpty)
        let after = try Pool.check(name: "rec", at: scratch.path)
        #expect(after.isClean, "\(after)")
        #expect(after.freePages == after.pages - after.regionPages)
    }

    @Test func checkFindsAndRepairsLeaksAndDamage() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "leaky", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let region = try pool.createRegion(name: "lost", size: 5 * 4096)
        let kept = try pool.allocatePages(count: 2)
        let core = pool.core
        // The region row vanishes, its pages stay claimed: a leak.
        let index = try #require(core.liveRegionIndex("lost"))
        core.metadata.store(UInt64(0), at: Layout.Regions.entry(index) + Layout.Regions.state)
        // A cached run whose owner slot is free: another leak.
        let shelf = core.shelves[0]!
        let page = shelf.findFreeRun(length: 3)!
        shelf.claimRun(at: page, length: 3, head: .cached(length: 3, owner: 99))
        pool.close()
        _ = region

        let report = try Pool.check(name: "leaky", at: scratch.path)
        #expect(report.leakedPages == 5 + 3, "\(report)")
        #expect(report.problems.count == 2)
        #expect(report.allocatedPages == 2)
        let repaired = try Pool.check(name: "leaky", at: scratch.path, repair: true)
        #expect(repaired.repaired.count >= 1)
        #expect(repaired.isClean, "\(repaired)")
        let reopened = try Pool.open(name: "leaky", at: scratch.path)
        #expect(reopened.usedPages == 2)
        try reopened.freePages(at: kept, count: 2)
    }
}

/// Heap steps cut short by a death, white-box as above.
@Suite struct HeapRecoveryTests {
    func setUp(_ scratch: Scratch) throws -> (Pool, Pool, Heap, GlobalAddress) {
        let survivor = try Pool.create(name: "hrec", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let table = try survivor.createRegion(name: "table", size: 4096)
        try survivor.createHeap(name: "h")
        let victim = try Pool.open(name: "hrec", at: scratch.path)
        return (survivor, victim, try victim.openHeap(name: "h"), table.address)
    }

    @Test func anObjectTakenButNotPublishedIsPublished() throws {
        let scratch = Scratch()
        let (survivor, victim, heap, table) = try setUp(scratch)
        let core = victim.core
        let cache = try core.threadCache()
        let lane = core.heapLane(heap.index, cache: cache)
        let (span, base) = try core.spanWithRoom(heap: heap.index, sizeClass: SizeClass.of(40), lane: lane, cache: cache)
        let block = span.peek()!
        let address = GlobalAddress(rawValue: base + UInt64(block))
        // Died after logging and taking the block, before storing its address.
        core.withIntentLog(cache) { record in
            core.writeLog(record, .publishObject, destination: table, address: address, count: heap.index)
        }
        _ = span.pop()
        core.abandon()
        try survivor.core.reclaimDeadParticipants()
        #expect(try survivor.load(at: table) == address.rawValue)
        let mine = try survivor.openHeap(name: "h")
        #expect(mine.stats().objects == 1)
        #expect(try mine.free(address, clearing: table))
        #expect(mine.stats().objects == 0)
    }

    @Test func aFreeCutShortIsFinishedOnce() throws {
        let scratch = Scratch()
        let (survivor, victim, heap, table) = try setUp(scratch)
        let object = try heap.allocate(size: 40, publishingTo: table)
        let other = try heap.allocate(size: 40)
        let core = victim.core
        let cache = try core.threadCache()
        // Died after logging the free and clearing the word, before the free itself.
        core.withIntentLog(cache) { record in
            core.writeLog(record, .clearObject, destination: table, address: object, count: heap.index)
        }
        try victim.store(0, at: table)
        core.abandon()
        try survivor.core.reclaimDeadParticipants()
        let mine = try survivor.openHeap(name: "h")
        #expect(mine.stats().objects == 1)   // `other` only
        try mine.free(other)
        #expect(mine.stats().objects == 0)
        // The recovered span is adopted and its blocks are handed out again, once each.
        var seen = Set<GlobalAddress>()
        for _ in 0..<100 { #expect(seen.insert(try mine.allocate(size: 40)).inserted) }
    }
}
