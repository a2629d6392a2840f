import Testing
import TestSupport
@testable import PoolCore

/// Shared pages in the core: counts per run, runs cut where counts differ,
/// pages freed with their last owner.
@Suite struct SharedPagesTests {
    private func runs(_ pool: Pool, from base: GlobalAddress) -> [RunPiece] {
        pool.trackedRuns().sorted { $0.address < $1.address }.map {
            let first = Int($0.address.offset - base.offset) / 4096
            return RunPiece(pages: first..<(first + $0.pages), shares: $0.shares)
        }
    }

    @Test func sharingPartOfARunCutsItAndCountsTheOwners() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "share", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let heap = try pool.openHeap(name: "files", create: true)
        let free0 = pool.freePageCount
        let run = try heap.allocateTrackedPages(count: 10)
        func at(_ page: Int) -> GlobalAddress { run.advanced(by: UInt64(page) * 4096) }

        try pool.shareTrackedPages(at: at(3), count: 4)
        #expect(runs(pool, from: run) == [RunPiece(pages: 0..<3), RunPiece(pages: 3..<7, shares: 1), RunPiece(pages: 7..<10)])
        #expect(pool.sharedPages(at: run, count: 10) == [3..<7])
        // A second share across a cut: one count per piece.
        try pool.shareTrackedPages(at: at(5), count: 4)
        #expect(runs(pool, from: run) == [RunPiece(pages: 0..<3), RunPiece(pages: 3..<5, shares: 1),
                                          RunPiece(pages: 5..<7, shares: 2), RunPiece(pages: 7..<9, shares: 1),
                                          RunPiece(pages: 9..<10)])
        #expect(pool.sharedPages(at: run, count: 10) == [3..<9])
        #expect(pool.freePageCount == free0 - 10)

        // The first owner lets go of everything: only what others own stays.
        try pool.releaseTrackedPages(at: run, count: 10)
        #expect(runs(pool, from: run) == [RunPiece(pages: 3..<5), RunPiece(pages: 5..<7, shares: 1), RunPiece(pages: 7..<9)])
        #expect(pool.freePageCount == free0 - 6)
        try pool.releaseTrackedPages(at: at(3), count: 4)
        try pool.releaseTrackedPages(at: at(5), count: 4)
        #expect(pool.freePageCount == free0)
        #expect(pool.trackedRuns().isEmpty)
        // A page released once more than it was owned: refused, nothing changes.
        #expect(throws: PoolError.self) { try pool.releaseTrackedPages(at: at(3), count: 1) }
        pool.close()
        #expect(try Pool.check(name: "share", at: scratch.path).isClean)
    }

    @Test func onlyTrackedRunsAreSharedAndTheCountHasALimit() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "limit", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let heap = try pool.openHeap(name: "files", create: true)
        let plain = try pool.allocatePages(count: 2)
        #expect(throws: PoolError.self) { try pool.shareTrackedPages(at: plain, count: 2) }
        let run = try heap.allocateTrackedPages(count: 2)
        // Past the run's end: refused whole, the run unchanged.
        #expect(throws: PoolError.self) { try pool.shareTrackedPages(at: run, count: 3) }
        #expect(pool.sharedPages(at: run, count: 2).isEmpty)
        for _ in 0..<PageEntry.maximumShares { try pool.shareTrackedPages(at: run, count: 1) }
        #expect(throws: PoolError.tooManyShares(run, limit: PageEntry.maximumShares + 1)) {
            try pool.shareTrackedPages(at: run, count: 2)
        }
        // The refusal changed nothing: page 1 can still be shared.
        #expect(pool.sharedPages(at: run, count: 2) == [0..<1])
        try pool.shareTrackedPages(at: run.advanced(by: 4096), count: 1)
        #expect(pool.sharedPages(at: run, count: 2) == [0..<2])
        // A freed whole run that is shared is refused; released, it counts down.
        #expect(throws: PoolError.self) { try heap.freeTrackedPages(at: run, count: 2) }
        try pool.releaseTrackedPages(at: run, count: 2)
        #expect(pool.trackedRuns().sorted { $0.address < $1.address }.map(\.shares) == [PageEntry.maximumShares - 1, 0])
        try pool.freePages(at: plain, count: 2)
    }

    /// Recovery's tool: a run set to the counts its owner's record names.
    @Test func aRunIsReshapedToTheCountsItsOwnerNames() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "reshape", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let heap = try pool.openHeap(name: "files", create: true)
        let free0 = pool.freePageCount
        let run = try heap.allocateTrackedPages(count: 8)
        try pool.shareTrackedPages(at: run, count: 8)
        // The head must say what the caller found, or nothing is cut.
        #expect(throws: PoolError.self) {
            try heap.reshapeTrackedRun(at: run, count: 8, shares: 0, keeping: [RunPiece(pages: 0..<2)])
        }
        try heap.reshapeTrackedRun(at: run, count: 8, shares: 1, keeping: [RunPiece(pages: 0..<2, shares: 1), RunPiece(pages: 4..<8)])
        #expect(runs(pool, from: run) == [RunPiece(pages: 0..<2, shares: 1), RunPiece(pages: 4..<8)])
        #expect(pool.freePageCount == free0 - 6)
        pool.close()
        #expect(try Pool.check(name: "reshape", at: scratch.path).isClean)
    }
}
