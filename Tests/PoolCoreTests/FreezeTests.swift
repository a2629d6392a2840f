import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Freezes: region clones and checkpoints see the pool at one instant
/// while another process writes it (PoolTestHelper's region-writer stores
/// a counter into a region's first page, then its last, so at any instant
/// the first holds at least the last; a copy made page by page while it
/// runs finds the last ahead of the first).
@Suite struct FreezeTests {
    static let regionBytes: UInt64 = 32 << 20

    func makePool(_ scratch: Scratch) throws -> Pool {
        let pool = try Pool.create(name: "fz", size: 256 << 20, pageSize: 4096, at: scratch.path)
        try pool.createRegion(name: "counter", size: FreezeTests.regionBytes)
        return pool
    }

    func writer(_ scratch: Scratch) throws -> Child {
        let child = try Child(builtExecutable("PoolTestHelper"), ["region-writer", scratch.path, "fz", "counter"])
        #expect(child.waitFor("writing").last == "writing")
        return child
    }

    /// The first and last words of a region's first and last pages.
    func ends(_ pool: Pool, _ region: Region) throws -> (first: UInt64, last: UInt64) {
        let last = region.address.advanced(by: UInt64(region.pages - 1) * UInt64(pool.pageSize))
        return (try pool.load(at: region.address), try pool.load(at: last))
    }

    @Test func aRegionCloneIsOneInstantWhileAnotherProcessWrites() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let child = try writer(scratch)
        for round in 0..<4 {
            let copy = try pool.cloneRegion(name: "counter", as: "copy\(round)")
            let (first, last) = try ends(pool, copy)
            #expect(last > 0 && first >= last, "clone \(round): first page \(first), last page \(last)")
        }
        // The writer goes on past the last clone, its first store into a
        // page the clone shares included (waited for: on a busy machine it
        // may not have run since).
        let cloned = try ends(pool, try pool.openRegion(name: "copy3")).first
        let counter = try pool.openRegion(name: "counter")
        #expect(eventually(within: 10) { ((try? ends(pool, counter).first) ?? 0) > cloned + 1 })
        child.send("stop")
        let stopped = child.waitFor("stopped").last ?? ""
        #expect(child.wait() == 0)
        // The writer went on through every clone, and its writes stayed its own.
        let (first, last) = try ends(pool, try pool.openRegion(name: "counter"))
        #expect(stopped == "stopped \(first)" && first == last)
        #expect(try ends(pool, try pool.openRegion(name: "copy3")).first == cloned)
        pool.close()
        #expect(try Pool.check(name: "fz", at: scratch.path).isClean)
    }

    @Test func aCheckpointReadsHeapsAndRegionsAsTheyWereAtItsInstant() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let child = try writer(scratch)
        let region = try pool.openRegion(name: "counter")
        let (shelves, unfrozen) = try pool.checkpointShelves()
        #expect(unfrozen == nil)
        // Long after the instant, the pages still read as they were then.
        let live = try ends(pool, region)
        #expect(eventually(within: 5) { (try? ends(pool, region).first) ?? 0 > live.first + 1000 })
        var page = [UInt8](repeating: 0, count: 4096)
        func frozenWord(_ address: GlobalAddress) throws -> UInt64 {
            try page.withUnsafeMutableBytes { try pool.readShelf(address.shelf, offset: address.offset, into: $0) }
            return page.withUnsafeBytes { $0.load(as: UInt64.self) }
        }
        let lastPage = region.address.advanced(by: UInt64(region.pages - 1) * 4096)
        let first = try frozenWord(region.address)
        let last = try frozenWord(lastPage)
        #expect(last > 0 && first >= last && first <= live.first, "frozen first \(first), last \(last), live \(live)")
        #expect(shelves.first?.runs.contains { $0.contains(region.address.offset) } == true)
        pool.thaw()
        child.send("stop")
        #expect(child.waitFor("stopped").last?.hasPrefix("stopped") == true)
        #expect(child.wait() == 0)
        pool.close()
    }

    /// A run freed during the freeze and its pages written by pwrite (as
    /// the mount writes cold pages) still reads as it was.
    @Test func pagesFreedDuringAFreezeAreKeptAsTheyWere() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let old = try pool.createRegion(name: "old", size: 1 << 20)
        try old.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0x5a) }
        _ = try pool.checkpointShelves()
        try pool.destroyRegion(name: "old")
        let new = try pool.allocatePages(count: 256)
        #expect(new == old.address)
        let ones = [UInt8](repeating: 0xff, count: 1 << 20)
        try ones.withUnsafeBytes { try pool.core.writeShelf(new.shelf, offset: new.offset, from: $0) }
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        try bytes.withUnsafeMutableBytes { try pool.readShelf(old.address.shelf, offset: old.address.offset, into: $0) }
        #expect(bytes.allSatisfy { $0 == 0x5a })
        pool.thaw()
        try bytes.withUnsafeMutableBytes { try pool.readShelf(old.address.shelf, offset: old.address.offset, into: $0) }
        #expect(bytes.allSatisfy { $0 == 0xff })
        pool.close()
    }

    /// A process that cannot answer (stopped) makes a freeze fail in one
    /// line naming it, and leaves no clone; a freezer killed mid-freeze
    /// lets every writer go on, and the next freeze works.
    @Test func aStoppedProcessRefusesAndAKilledFreezerReleases() throws {
        let scratch = Scratch()
        let pool = try makePool(scratch)
        let holder = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "fz"])
        let pid = Int32(holder.readLine()?.split(separator: " ").last ?? "") ?? 0
        kill(pid, SIGSTOP)
        do {
            _ = try pool.cloneRegion(name: "counter", as: "copy")
            Issue.record("a clone with a stopped process succeeded")
        } catch let PoolError.cannotFreeze(_, reason) {
            #expect(reason.contains("process \(pid) did not write-protect"), "\(reason)")
        }
        #expect(pool.regions().map(\.name) == ["counter"])
        kill(pid, SIGCONT)
        #expect(holder.ask("freeze") == "frozen")
        let child = try writer(scratch)
        let region = try pool.openRegion(name: "counter")
        holder.kill9()
        _ = holder.wait()
        let seen = try ends(pool, region).first
        #expect(eventually(within: 5) { (try? ends(pool, region).first) ?? 0 > seen + 1000 })
        let copy = try pool.cloneRegion(name: "counter", as: "copy")
        let (first, last) = try ends(pool, copy)
        #expect(last > 0 && first >= last)
        child.send("stop")
        _ = child.waitFor("stopped")
        #expect(child.wait() == 0)
        pool.close()
    }
}
