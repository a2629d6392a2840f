import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct PageAllocatorTests {
    @Test func runsAreDistinctAlignedAndContiguous() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "runs", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var runs: [(GlobalAddress, Int)] = []
        for count in [1, 2, 3, 16, 17, 100, 1, 1] {
            let address = try pool.allocatePages(count: count)
            #expect(address.offset % 4096 == 0)
            runs.append((address, count))
        }
        let intervals = runs.map { ($0.0.offset, $0.0.offset + UInt64($0.1) * 4096) }.sorted { $0.0 < $1.0 }
        for (a, b) in zip(intervals, intervals.dropFirst()) { #expect(a.1 <= b.0) }
        #expect(pool.usedPages == runs.reduce(0) { $0 + $1.1 })
        // Every byte of a run is usable.
        for (address, count) in runs {
            try pool.write(at: address.advanced(by: UInt64(count) * 4096 - 1), bytes: [0xee])
        }
    }

    @Test func freeingARunOfNPagesFreesNPages() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "freeN", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let free0 = pool.freePageCount
        for count in [5, 16, 17, 64] {
            let address = try pool.allocatePages(count: count)
            #expect(pool.freePageCount == free0 - count)
            try pool.freePages(at: address, count: count)
            #expect(pool.freePageCount == free0)
        }
        #expect(pool.usedPages == 0)
    }

    /// A file run cut into pieces (a hole punched in a file): each piece a
    /// run of its own, the pages between free, bad pieces refused.
    @Test func aCarvedRunKeepsItsPiecesAndFreesTheRest() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "carve", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let heap = try pool.openHeap(name: "files", create: true)
        let free0 = pool.freePageCount
        let run = try heap.allocateTrackedPages(count: 10)
        for bad in [[3..<5, 4..<6], [0..<10], [8..<11], [2..<2]] {
            #expect(throws: PoolError.self, "\(bad)") { try heap.reshapeTrackedRun(at: run, count: 10, keeping: bad.map { RunPiece(pages: $0) }) }
        }
        let pieces = [0..<2, 5..<7, 9..<10]
        try heap.reshapeTrackedRun(at: run, count: 10, keeping: pieces.map { RunPiece(pages: $0) })
        #expect(pool.freePageCount == free0 - 5)
        let runs = pool.trackedRuns().map { Int($0.address.offset - run.offset) / 4096 ..< Int($0.address.offset - run.offset) / 4096 + $0.pages }
        #expect(runs.sorted { $0.lowerBound < $1.lowerBound } == pieces)
        #expect(throws: PoolError.self) { try heap.freeTrackedPages(at: run, count: 10) }
        for piece in pieces { try heap.freeTrackedPages(at: run.advanced(by: UInt64(piece.lowerBound) * 4096), count: piece.count) }
        #expect(pool.freePageCount == free0)
        pool.close()
        #expect(try Pool.check(name: "carve", at: scratch.path).isClean)
    }

    /// Killed mid-cut (inner pieces made, the old head not yet shrunk),
    /// the run stays whole for every opener, check calls it recoverable,
    /// and its owner can cut it again.
    @Test func aCutAKillInterruptedLeavesTheRunWhole() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "halfcut", size: 16 << 20, pageSize: 4096, at: scratch.path)
        var heap = try pool.openHeap(name: "files", create: true)
        let run = try heap.allocateTrackedPages(count: 8)
        let shelf = try #require(pool.core.shelf(run.shelf))
        let page = try #require(shelf.page(at: run.offset))
        // The order a cut writes in: as each piece's head is made, the old
        // head still covers the run, and what is written so far reads as a
        // half cut (so a kill at any step leaves it so).
        let other = try heap.allocateTrackedPages(count: 8)
        let otherPage = try #require(shelf.page(at: other.offset))
        let pieces = [0..<1, 3..<4, 5..<8]
        var heads = 0
        shelf.carveRun(at: otherPage, length: 8, keeping: pieces) { index in
            heads += 1
            #expect(shelf.entry(otherPage) == .allocated(length: 8, tag: .tracked(heap.id)))
            #expect(shelf.isHalfCarvedRun(otherPage, 8))
            return .allocated(length: pieces[index].count, tag: .tracked(heap.id))
        }
        #expect(heads == 3)
        for piece in pieces { try heap.freeTrackedPages(at: other.advanced(by: UInt64(piece.lowerBound) * 4096), count: piece.count) }
        // What it writes first for a piece 5..<8, then killed.
        shelf.setEntry(page + 6, .tail(distance: 1))
        shelf.setEntry(page + 7, .tail(distance: 2))
        shelf.setEntry(page + 5, .allocated(length: 3, tag: .tracked(heap.id)))
        pool.close()
        let report = try Pool.check(name: "halfcut", at: scratch.path)
        #expect(report.problems.isEmpty && report.recoverable.contains { $0.contains("half cut into pieces") }, "\(report)")
        pool = try Pool.open(name: "halfcut", at: scratch.path)
        #expect(pool.trackedRuns().map(\.pages) == [8])
        heap = try pool.openHeap(name: "files")
        try heap.reshapeTrackedRun(at: run, count: 8, keeping: [RunPiece(pages: 0..<2), RunPiece(pages: 5..<8)])
        #expect(pool.trackedRuns().map(\.pages).sorted() == [2, 3])
        pool.close()
        #expect(try Pool.check(name: "halfcut", at: scratch.path).isClean)
    }

    @Test func wrongFreesAreRefusedWithTheCause() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "bad", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let run = try pool.allocatePages(count: 4)
        #expect(throws: PoolError.invalidFree(run, reason: "it starts a run of 4 pages, not 2")) {
            try pool.freePages(at: run, count: 2)
        }
        let inside = run.advanced(by: 4096)
        #expect(throws: PoolError.invalidFree(inside, reason: "it lies inside a run, 1 pages after its start")) {
            try pool.freePages(at: inside, count: 1)
        }
        #expect(throws: PoolError.self) { try pool.freePages(at: run.advanced(by: 1), count: 4) }
        #expect(throws: PoolError.self) { try pool.freePages(at: GlobalAddress(shelf: 9, offset: 0), count: 1) }
        #expect(throws: PoolError.self) { try pool.freePages(at: GlobalAddress(shelf: 0, offset: 4096), count: 1) }
        #expect(throws: PoolError.self) { try pool.freePages(at: run, count: 0) }
        try pool.freePages(at: run, count: 4)
        #expect(throws: PoolError.invalidFree(run, reason: "it is not allocated (already freed?)")) {
            try pool.freePages(at: run, count: 4)
        }
        #expect(pool.usedPages == 0)
    }

    @Test func aFullPoolSaysSoAndRecovers() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "full", size: 4 << 20, pageSize: 64 << 10, at: scratch.path)
        let total = pool.freePageCount
        var held: [GlobalAddress] = []
        while let address = try? pool.allocatePages(count: 1) { held.append(address) }
        #expect(held.count == total)
        #expect(throws: PoolError.poolFull(name: "full", pages: 1)) { try pool.allocatePages(count: 1) }
        #expect(throws: PoolError.poolFull(name: "full", pages: 40)) { try pool.allocatePages(count: 40) }
        for address in held { try pool.freePages(at: address, count: 1) }
        // Freed single pages coalesce into runs again.
        let big = try pool.allocatePages(count: total)
        try pool.freePages(at: big, count: total)
    }

    @Test func threadsAllocateWithoutOverlap() async throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "threads", size: 64 << 20, pageSize: 4096, at: scratch.path)
        let results = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for worker in 0..<4 {
                group.addTask {
                    var mine: [(GlobalAddress, Int)] = []
                    var kept: [UInt64] = []
                    for i in 0..<3000 {
                        let count = [1, 2, 5, 16, 20][(i + worker) % 5]
                        if mine.count > 20 || (i % 3 == 2 && !mine.isEmpty) {
                            let (address, n) = mine.removeFirst()
                            guard try pool.load(at: address) == address.rawValue else { throw PoolError.closed(name: "overlap") }
                            try pool.freePages(at: address, count: n)
                        }
                        let address = try pool.allocatePages(count: count)
                        try pool.store(address.rawValue, at: address)
                        mine.append((address, count))
                    }
                    for (address, n) in mine { kept.append(address.rawValue << 8 | UInt64(n)) }
                    return kept
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let runs = results.map { (GlobalAddress(rawValue: $0 >> 8), Int($0 & 0xff)) }
        #expect(pool.usedPages == runs.reduce(0) { $0 + $1.1 })
        for (address, count) in runs {
            #expect(try pool.load(at: address) == address.rawValue)
            try pool.freePages(at: address, count: count)
        }
        #expect(pool.usedPages == 0)
    }

    @Test func closeReturnsCachedPagesToThePool() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "cache", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let address = try pool.allocatePages(count: 1)
        try pool.freePages(at: address, count: 1)
        #expect(pool.info().cachedBytes > 0)
        pool.close()
        let report = try Pool.check(name: "cache", at: scratch.path)
        #expect(report.isClean, "\(report)")
        #expect(report.freePages == report.pages)
    }

    @Test func publishedAllocationsStoreAndClearTheirAddress() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "publish", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let table = try pool.createRegion(name: "table", size: 4096)
        let slot = table.address.advanced(by: 8)
        let run = try pool.allocatePages(count: 3, publishingTo: slot)
        #expect(try pool.load(at: slot) == run.rawValue)
        #expect(throws: PoolError.self) { try pool.allocatePages(count: 1, publishingTo: slot.advanced(by: 3)) }
        try pool.freePages(at: run, count: 3, clearing: slot)
        #expect(try pool.load(at: slot) == 0)
        #expect(pool.usedPages == table.pages)
    }
}

@Suite struct ThreadExitTests {
    /// A thread that used the pool and ended gives its cached runs back.
    @Test func anEndedThreadReturnsItsCache() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "exit", size: 16 << 20, pageSize: 4096, at: scratch.path)
        final class Box: @unchecked Sendable { var pool: Pool?; var failed = false }
        let box = Box()
        box.pool = pool
        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeUnretainedValue()
            do {
                let run = try box.pool!.allocatePages(count: 2)
                try box.pool!.freePages(at: run, count: 2)
            } catch { box.failed = true }
            return nil
        }, Unmanaged.passUnretained(box).toOpaque())
        #expect(started == 0)
        pthread_join(thread, nil)
        #expect(!box.failed)
        #expect(pool.info().cachedBytes == 0)
        #expect(pool.usedPages == 0)
    }
}
