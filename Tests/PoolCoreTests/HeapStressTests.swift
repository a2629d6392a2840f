import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Helper processes allocate objects into a queue in the pool and free each
/// other's, finishing or killed with SIGKILL at random moments.
@Suite struct HeapStressTests {
    static let storms = 3
    static let slots = 512

    func makePool(_ scratch: Scratch) throws -> Pool {
        let pool = try Pool.create(name: "hs", size: 128 << 20, pageSize: 4096, at: scratch.path)
        try pool.createHeap(name: "objects")
        try pool.createRegion(name: "queue", size: UInt64(HeapStressTests.slots * 8))
        return pool
    }

    func storm(_ scratch: Scratch, _ index: Int, operations: Int, seed: Int) throws -> Child {
        try Child(builtExecutable("PoolTestHelper"),
                  ["heap-storm", scratch.path, "hs", "objects", "queue", "\(index)", "\(operations)", "\(seed)"])
    }

    /// Every slot holding an object, private and shared; an object handed
    /// over by a storm killed before it cleared its private slot is in two.
    func liveObjects(_ pool: Pool) throws -> [(slot: GlobalAddress, object: GlobalAddress)] {
        let queue = try pool.openRegion(name: "queue")
        return try (0..<HeapStressTests.slots).compactMap { i in
            let slot = queue.address.advanced(by: UInt64(i * 8))
            let object = GlobalAddress(rawValue: try pool.load(at: slot))
            return object.isNull ? nil : (slot, object)
        }
    }

    /// The heap counts the objects in the shared slots, plus at most two per
    /// killed storm (one filled but not yet handed over, one taken out of
    /// its slot but not yet freed); no address is in two slots; each object
    /// is intact and frees.
    func verify(_ pool: Pool, killed: Int) throws {
        let heap = try pool.openHeap(name: "objects")
        let queue = try pool.openRegion(name: "queue").address
        let live = try liveObjects(pool).filter { $0.slot.offset >= queue.offset + 16 * 8 }
        #expect(Set(live.map(\.object)).count == live.count, "an object is in two slots")
        let counted = heap.stats().objects
        #expect(counted >= live.count && counted <= live.count + 2 * killed, "\(heap.stats()) vs \(live.count) live")
        for (slot, object) in live {
            #expect(try checkObject(pool, object) == true, "object \(object) is not intact")
            #expect(try heap.free(object, clearing: slot))
        }
        let stats = heap.stats()
        #expect(stats.objects <= 2 * killed, "\(stats)")
    }

    func checkObject(_ pool: Pool, _ address: GlobalAddress) throws -> Bool? {
        guard try pool.load(at: address) == address.rawValue ^ 0xa5a5_a5a5_a5a5_a5a5 else { return nil }
        let size = Int(try pool.load(at: address.advanced(by: 8)))
        let byte = UInt8(truncatingIfNeeded: address.rawValue >> 4)
        return try pool.withUnsafeMutableBytes(at: address, count: size) { $0[16...].allSatisfy { $0 == byte } }
    }

    @Test func stormsShareObjectsAcrossProcesses() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let children = try (0..<HeapStressTests.storms).map { try storm(scratch, $0, operations: 6000, seed: $0 * 31 + 7) }
        for child in children {
            let lines = child.waitFor("done")
            #expect(lines.last == "done 6000", "\(lines.suffix(3))")
            #expect(child.wait() == 0)
        }
        try verify(pool, killed: 0)
        pool.close()
        let report = try Pool.check(name: "hs", at: scratch.path)
        #expect(report.isClean, "\(report)")
        #expect(report.heapObjects == 0, "\(report)")
    }

    @Test func stormsKilledMidwayLeaveNoLeakAndNoDoubleOwnership() throws {
        let scratch = Scratch()
        do { try makePool(scratch).close() }
        let kills = try killStormsMidway(rounds: 4, storms: HeapStressTests.storms) { round, index in
            try storm(scratch, index, operations: 0, seed: round * 1009 + index + 1)
        }
        let offline = try Pool.check(name: "hs", at: scratch.path)
        #expect(offline.problems.isEmpty, "\(offline.problems)")
        let pool = try Pool.open(name: "hs", at: scratch.path)
        try verify(pool, killed: kills)
        pool.close()
        let report = try Pool.check(name: "hs", at: scratch.path)
        #expect(report.isClean, "\(report)")
    }
}
