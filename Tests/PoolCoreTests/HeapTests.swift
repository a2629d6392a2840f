import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SizeClassTests {
    @Test func everySizeFitsItsClassWithLittleWaste() {
        var previous = 0
        for size in 1...SizeClass.maximumSmall {
            let sizeClass = SizeClass.of(size)
            let block = SizeClass.sizes[sizeClass]
            #expect(block >= size)
            #expect(sizeClass >= previous)
            if size > 128 { #expect(Double(block) <= Double(size) * 1.25 + 1) }
            previous = sizeClass
        }
        #expect(SizeClass.of(0) == 0)
        #expect(SizeClass.sizes.last == SizeClass.maximumSmall)
        #expect(Layout.Heaps.offset + Layout.Heaps.capacity * Layout.Heaps.rowSize <= Layout.shelf0Metadata)
    }
}

@Suite struct HeapTests {
    func makePool(_ scratch: Scratch, size: UInt64 = 64 << 20) throws -> Pool {
        try Pool.create(name: "heap", size: size, pageSize: 4096, at: scratch.path)
    }

    @Test func objectsAreAlignedDisjointAndKeepTheirBytes() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "objects")
        var objects: [(GlobalAddress, Int)] = []
        for i in 0..<3000 {
            let size = i % 500 == 7 ? [300_000, 1 << 20][i % 2] : [1, 8, 16, 24, 100, 128, 129, 1000, 5000, 20_000][i % 10]
            let address = try heap.allocate(size: size)
            #expect(address.offset % 16 == 0)
            #expect(try heap.usableSize(address) >= size)
            try pool.withUnsafeMutableBytes(at: address, count: size) { $0.initializeMemory(as: UInt8.self, repeating: UInt8(i & 0xff)) }
            objects.append((address, size))
        }
        #expect(heap.stats().objects == 3000)
        for (i, (address, size)) in objects.enumerated() {
            let intact = try pool.withUnsafeMutableBytes(at: address, count: size) { $0.allSatisfy { $0 == UInt8(i & 0xff) } }
            #expect(intact, "object \(i) at \(address) was overwritten")
            if !intact { break }
        }
        for (address, _) in objects { try heap.free(address) }
        let stats = heap.stats()
        #expect(stats.objects == 0)
        #expect(stats.allocatedBytes == 0)
    }

    @Test func checkCountsLiveObjects() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "counted")
        let kept = try (0..<3).map { _ in try heap.allocate(size: 40) }
        try heap.free(try heap.allocate(size: 40))
        _ = try heap.allocate(size: 1 << 20)
        pool.close()
        let report = try Pool.check(name: "heap", at: scratch.path)
        #expect(report.isClean, "\(report)")
        #expect(report.heapObjects == 3 + 1, "\(report)")
        _ = kept
    }

    @Test func freedBlocksAreReused() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "reuse")
        let first = try heap.allocate(size: 48)
        try heap.free(first)
        #expect(try heap.allocate(size: 48) == first)
    }

    @Test func alignedZeroedAndReallocated() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "shapes")
        for alignment in [32, 64, 256, 4096] {
            let address = try heap.allocate(size: 100, alignment: alignment)
            #expect(address.offset % UInt64(alignment) == 0)
            #expect(try heap.usableSize(address) >= 100)
            try heap.free(address)
        }
        #expect(throws: PoolError.self) { try heap.allocate(size: 10, alignment: 48) }
        let dirty = try heap.allocate(size: 64)
        try pool.write(at: dirty, bytes: [UInt8](repeating: 0xff, count: 64))
        try heap.free(dirty)
        let zeroed = try heap.allocateZeroed(size: 64)
        #expect(try pool.read(at: zeroed, count: 64).allSatisfy { $0 == 0 })

        var object = try heap.allocate(size: 10)
        try pool.write(at: object, bytes: Array(0..<10))
        object = try heap.reallocate(object, size: 100_000)
        #expect(try pool.read(at: object, count: 10) == Array(0..<10))
        object = try heap.reallocate(object, size: 5)
        #expect(try pool.read(at: object, count: 5) == Array(0..<5))
        try heap.free(object)
        #expect(heap.stats().objects == 1)   // `zeroed`
    }

    @Test func wrongFreesAreRefused() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let a = try pool.createHeap(name: "a")
        let b = try pool.createHeap(name: "b")
        let object = try a.allocate(size: 32)
        #expect(throws: PoolError.invalidFree(object, reason: "it belongs to heap 'a', not 'b'")) { try b.free(object) }
        let run = try pool.allocatePages(count: 1)
        #expect(throws: PoolError.self) { try a.free(run) }
        #expect(throws: PoolError.self) { try a.free(GlobalAddress(shelf: 0, offset: 16)) }
        #expect(throws: PoolError.self) { try a.free(GlobalAddress(shelf: 3, offset: 1 << 20)) }
        let pages = try a.allocatePages(count: 3)
        #expect(throws: PoolError.self) { try a.free(pages) }
        try a.freePages(at: pages, count: 3)
        try a.free(object)
    }

    @Test func largeObjectsReturnTheirPages() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "large")
        let used = pool.usedPages
        let big = try heap.allocate(size: 3 << 20)
        #expect(pool.usedPages >= used + 768)
        try heap.free(big)
        #expect(pool.usedPages == used)
    }

    @Test func otherThreadsFreesComeBackToTheOwner() async throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "threads")
        let addresses = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for t in 0..<4 {
                group.addTask {
                    var mine: [UInt64] = []
                    for i in 0..<2000 {
                        let address = try heap.allocate(size: 16 + (i * 7 + t) % 600)
                        try pool.store(address.rawValue, at: address)
                        mine.append(address.rawValue)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(Set(addresses).count == addresses.count)
        // Freed on other threads than the ones that allocated them.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    for raw in addresses.reversed().enumerated().filter({ $0.offset % 4 == t }).map(\.element) {
                        let address = GlobalAddress(rawValue: raw)
                        guard try pool.load(at: address) == raw else { throw PoolError.closed(name: "overwritten") }
                        try heap.free(address)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(heap.stats().objects == 0)
    }

    @Test func aDelayedFreeWaitsForEarlierEpochs() async throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "epochs")
        let victim = try heap.allocate(size: 64)
        try pool.store(0xfeed, at: victim)
        let reader = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "heap"])
        #expect(reader.readLine()?.hasPrefix("open") == true)
        // Another process enters an epoch before the free.
        #expect(reader.ask("epoch-enter epochs") == "ok")
        try heap.delayedFree(victim)
        for _ in 0..<10 { heap.reclaimDelayed() }
        #expect(heap.stats().delayedObjects == 1)
        var fresh: [GlobalAddress] = []
        for _ in 0..<200 { fresh.append(try heap.allocate(size: 64)) }
        #expect(!fresh.contains(victim))
        #expect(try pool.load(at: victim) == 0xfeed)
        #expect(reader.ask("epoch-exit") == "ok")
        for _ in 0..<3 { heap.reclaimDelayed() }
        #expect(heap.stats().delayedObjects == 0)
        for address in fresh { try heap.free(address) }
        #expect(heap.stats().objects == 0)
        #expect(reader.ask("quit") == "bye")
        reader.wait()
    }

    @Test func destroyingAHeapInUseIsRefused() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let heap = try pool.createHeap(name: "busy")
        #expect(throws: PoolError.heapExists("busy")) { try pool.createHeap(name: "busy") }
        let object = try heap.allocate(size: 100)
        #expect(throws: PoolError.heapInUse("busy", reason: "it still holds 1 objects")) { try pool.destroyHeap(name: "busy") }
        try heap.free(object)
        let before = pool.usedPages
        try pool.destroyHeap(name: "busy")
        #expect(before > 0)
        #expect(pool.usedPages < before)
        #expect(pool.heaps().isEmpty)
        #expect(throws: PoolError.heapNotFound("busy")) { try pool.openHeap(name: "busy") }
    }

    @Test func aFullPoolSaysSo() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch, size: 4 << 20)
        let heap = try pool.createHeap(name: "full")
        var objects: [GlobalAddress] = []
        var failure: (any Error)?
        while failure == nil {
            do { objects.append(try heap.allocate(size: 1000)) } catch { failure = error }
        }
        #expect("\(failure!)".contains("pool 'heap' is full"))
        #expect(objects.count > 2000)
        for address in objects { try heap.free(address) }
        #expect(heap.stats().objects == 0)
        _ = try heap.allocate(size: 1 << 20)
    }
}
