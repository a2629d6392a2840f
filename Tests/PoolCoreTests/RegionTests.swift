import Testing
import TestSupport
@testable import PoolCore

@Suite struct RegionTests {
    @Test func createListOpenDestroy() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "reg", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let region = try pool.createRegion(name: "matrix", size: 10_000)
        #expect(region.pages == 3)
        #expect(pool.usedPages == 3)
        try region.withUnsafeMutableBytes { bytes in
            #expect(bytes.count == 10_000)
            #expect(bytes.allSatisfy { $0 == 0 })
            bytes[9_999] = 0x7f
        }
        #expect(throws: PoolError.regionExists("matrix")) { try pool.createRegion(name: "matrix", size: 1) }
        #expect(throws: PoolError.self) { try pool.createRegion(name: "bad/name", size: 1) }
        #expect(throws: PoolError.self) { try pool.createRegion(name: "empty", size: 0) }
        #expect(pool.regions().map(\.name) == ["matrix"])
        let again = try pool.openRegion(name: "matrix")
        #expect(again.address == region.address)
        #expect(try again.withUnsafeMutableBytes { $0[9_999] } == 0x7f)
        // A region's pages cannot be freed as a page run.
        #expect(throws: PoolError.invalidFree(region.address, reason: "it belongs to region 'matrix'")) {
            try pool.freePages(at: region.address, count: 3)
        }
        try pool.destroyRegion(name: "matrix")
        #expect(pool.regions().isEmpty)
        #expect(pool.usedPages == 0)
        #expect(throws: PoolError.regionNotFound("matrix")) { try pool.openRegion(name: "matrix") }
        #expect(throws: PoolError.regionNotFound("matrix")) { try pool.destroyRegion(name: "matrix") }
        // A new region over reused pages reads as zeros.
        let fresh = try pool.createRegion(name: "fresh", size: 10_000)
        #expect(try fresh.withUnsafeMutableBytes { $0.allSatisfy { $0 == 0 } })
    }

    /// A clone has the region's size, owner, mode and bytes, and pages of
    /// its own: later writes on either side stay on that side.
    @Test func aCloneIsAnIndependentCopy() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "reg", size: 16 << 20, pageSize: 4096, at: scratch.path)
        var access = RegionAccess.creators
        access.mode = 0o640
        let region = try pool.createRegion(name: "matrix", size: 10_000, access: access)
        try region.withUnsafeMutableBytes { for i in $0.indices { $0[i] = UInt8(truncatingIfNeeded: i * 7) } }
        let copy = try pool.cloneRegion(name: "matrix", as: "matrix-copy")
        #expect(copy.size == 10_000 && copy.access == region.access && copy.address != region.address)
        #expect(try copy.withUnsafeMutableBytes { Array($0) } == region.withUnsafeMutableBytes { Array($0) })
        try region.withUnsafeMutableBytes { $0[0] = 0xff }
        try copy.withUnsafeMutableBytes { $0[9_999] = 0xee }
        #expect(try copy.withUnsafeMutableBytes { $0[0] } == 0)
        #expect(try region.withUnsafeMutableBytes { $0[9_999] } == UInt8(truncatingIfNeeded: 9_999 * 7))
        #expect(throws: PoolError.regionExists("matrix-copy")) { try pool.cloneRegion(name: "matrix", as: "matrix-copy") }
        #expect(throws: PoolError.regionNotFound("nope")) { try pool.cloneRegion(name: "nope", as: "other") }
        #expect(pool.regions().map(\.name).sorted() == ["matrix", "matrix-copy"])
        pool.close()
        #expect(try Pool.check(name: "reg", at: scratch.path).isClean)
    }

    @Test func twoProcessesSeeEachOthersWrites() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "shared", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let region = try pool.createRegion(name: "window", size: 1 << 20)
        try region.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 3) }

        let child = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "shared"])
        #expect(child.readLine()?.hasPrefix("open") == true)
        #expect(child.ask("region-sum window") == "\(3 << 20)")
        #expect(child.ask("region-fill window 5") == "ok")
        #expect(try region.withUnsafeMutableBytes { $0.allSatisfy { $0 == 5 } })
        #expect(child.ask("quit") == "bye")
        #expect(child.wait() == 0)
    }

    @Test func aRegionLargerThanThePoolIsRefused() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "small", size: 4 << 20, pageSize: 4096, at: scratch.path)
        #expect(throws: PoolError.self) { try pool.createRegion(name: "big", size: 8 << 20) }
        #expect(pool.regions().isEmpty)
        #expect(pool.usedPages == 0)
    }
}
