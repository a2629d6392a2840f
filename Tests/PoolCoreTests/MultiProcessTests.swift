import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Helper processes allocate and free page runs at random in one pool,
/// publishing every live run into a shared slot table, and are let finish
/// or killed with SIGKILL mid-storm.
@Suite struct MultiProcessTests {
    static let helpers = 3
    static let slotsPerHelper = 64

    struct Run { let address: GlobalAddress; let count: Int }

    func liveRuns(_ pool: Pool) throws -> [Run] {
        let table = try pool.openRegion(name: "slots")
        var runs: [Run] = []
        for slot in 0..<MultiProcessTests.helpers * MultiProcessTests.slotsPerHelper {
            let base = table.address.advanced(by: UInt64(slot * 16))
            let address = GlobalAddress(rawValue: try pool.load(at: base.advanced(by: 8)))
            if !address.isNull { runs.append(Run(address: address, count: Int(try pool.load(at: base)))) }
        }
        return runs
    }

    /// The live runs never overlap, and they are exactly what the pool
    /// counts as allocated: nothing leaked, nothing doubly owned.
    func verify(_ pool: Pool, stamps: Bool) throws {
        let runs = try liveRuns(pool)
        let pageSize = UInt64(pool.pageSize)
        let intervals = runs.map { ($0.address.rawValue, $0.address.rawValue + UInt64($0.count) * pageSize) }.sorted { $0.0 < $1.0 }
        for (a, b) in zip(intervals, intervals.dropFirst()) { #expect(a.1 <= b.0, "runs overlap") }
        let tablePages = try pool.openRegion(name: "slots").pages
        #expect(pool.usedPages == tablePages + runs.reduce(0) { $0 + $1.count })
        for run in runs where stamps {
            let stamp = run.address.rawValue ^ 0x5a5a_5a5a_5a5a_5a5a
            #expect(try pool.load(at: run.address) == stamp)
            #expect(try pool.load(at: run.address.advanced(by: UInt64(run.count) * pageSize - 8)) == stamp)
        }
        // Each live run frees with its own count: it was allocated, whole.
        for run in runs { try pool.freePages(at: run.address, count: run.count) }
        #expect(pool.usedPages == tablePages)
    }

    func makePool(_ scratch: Scratch) throws -> Pool {
        let pool = try Pool.create(name: "mp", size: 64 << 20, pageSize: 4096, at: scratch.path)
        try pool.createRegion(name: "slots", size: UInt64(MultiProcessTests.helpers * MultiProcessTests.slotsPerHelper * 16))
        return pool
    }

    func storm(_ scratch: Scratch, _ index: Int, operations: Int, seed: Int) throws -> Child {
        try Child(builtExecutable("PoolTestHelper"),
                  ["storm", scratch.path, "mp", "slots", "\(index)", "\(operations)", "\(seed)"])
    }

    @Test func helpersAllocateAndFreeWithoutOverlapOrLeak() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let children = try (0..<MultiProcessTests.helpers).map { try storm(scratch, $0, operations: 4000, seed: $0 * 7919 + 1) }
        for child in children {
            let lines = child.waitFor("done")
            #expect(lines.last == "done 4000", "\(lines.suffix(3))")
            #expect(child.wait() == 0)
        }
        try verify(pool, stamps: true)
        pool.close()
        let report = try Pool.check(name: "mp", at: scratch.path)
        #expect(report.isClean, "\(report)")
    }

    @Test func helpersKilledMidStormLeaveNoDamageAndNoLeak() throws {
        let scratch = Scratch()
        makePoolAndClose: do { try makePool(scratch).close() }
        try killStormsMidway(rounds: 4, storms: MultiProcessTests.helpers) { round, index in
            try storm(scratch, index, operations: 0, seed: round * 104_729 + index + 1)
        }
        // Offline, before anyone recovers: consistent, and the dead
        // processes' leftovers are reported as recoverable, not as damage.
        let before = try Pool.check(name: "mp", at: scratch.path)
        #expect(before.problems.isEmpty, "\(before.problems)")
        // Opening recovers online; then the live set is exactly what is allocated.
        let pool = try Pool.open(name: "mp", at: scratch.path)
        try verify(pool, stamps: false)
        pool.close()
        let after = try Pool.check(name: "mp", at: scratch.path)
        #expect(after.isClean, "\(after)")
        #expect(after.leakedPages == 0)
    }
}
