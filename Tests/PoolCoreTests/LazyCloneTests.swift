import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Region clones share their source's pages (Mome's copy-on-write
/// regions): a clone takes memory only for the pages either side touches,
/// a store on one side is never seen on the other, in this process or any
/// other, and the pool's shelf file shows which pages the clone holds.
@Suite struct LazyCloneTests {
    static let bytes = 8 << 20
    static let page = 4096

    func makePool(_ scratch: Scratch) throws -> (Pool, [UInt8]) {
        let pool = try Pool.create(name: "lz", size: 128 << 20, pageSize: 4096, at: scratch.path)
        let source = try pool.createRegion(name: "source", size: UInt64(LazyCloneTests.bytes))
        let content = pattern(LazyCloneTests.bytes, seed: 31)
        try source.withUnsafeMutableBytes { $0.copyBytes(from: content) }
        return (pool, content)
    }

    /// Pages of `region` its shelf file holds (the rest are holes).
    func heldPages(_ pool: Pool, _ region: Region) -> Int {
        pool.core.shelves[region.address.shelf]!.file.heldBytes(offset: Int(region.address.offset),
                                                                 count: region.pages * LazyCloneTests.page) / LazyCloneTests.page
    }

    func bytes(_ region: Region) throws -> [UInt8] { try region.withUnsafeMutableBytes { Array($0) } }

    @Test func aCloneTakesOnlyThePagesEitherSideTouches() throws {
        let scratch = Scratch()
        let (pool, content) = try makePool(scratch)
        let source = try pool.openRegion(name: "source")
        let clone = try pool.cloneRegion(name: "source", as: "clone")
        #expect(heldPages(pool, clone) == 0)
        #expect(pool.core.lazyClones?.entries().count == 1)
        // Stores into the source: its first byte, its last, a middle page.
        let last = LazyCloneTests.bytes - 1, middle = LazyCloneTests.bytes / 2 + 100
        try source.withUnsafeMutableBytes { bytes in
            for at in [0, last, middle] { bytes[at] = ~bytes[at] }
        }
        // Each gave the clone one page, as it was.
        #expect(heldPages(pool, clone) == 3)
        var expectedSource = content
        for at in [0, last, middle] { expectedSource[at] = ~content[at] }
        // A store into the clone: it fills its page and the next (one batch), from the source.
        let mine = 3 * LazyCloneTests.page + 7
        try clone.withUnsafeMutableBytes { $0[mine] = ~$0[mine] }
        var expectedClone = content
        expectedClone[mine] = ~content[mine]
        #expect(heldPages(pool, clone) <= 3 + 16)
        #expect(try bytes(source) == expectedSource)
        #expect(try bytes(clone) == expectedClone)
        // A clone of the clone, then the first clone changes: the second keeps its instant.
        let second = try pool.cloneRegion(name: "clone", as: "second")
        try clone.withUnsafeMutableBytes { $0[0] = 0x5a }
        #expect(try bytes(second) == expectedClone)
        pool.close()
        #expect(try Pool.check(name: "lz", at: scratch.path).isClean)
    }

    /// A process that had the pool open before the clone and one that opens
    /// it after both read the clone as the source was; a store from one of
    /// them into the source changes neither's clone. Then every process
    /// closes, and the clone still shares pages after a reopen.
    @Test func otherProcessesFollowTheCloneAcrossReopens() throws {
        let scratch = Scratch()
        let (pool, content) = try makePool(scratch)
        let before = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "lz"])
        #expect(before.readLine()?.hasPrefix("open") == true)
        let clone = try pool.cloneRegion(name: "source", as: "clone")
        let after = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "lz"])
        #expect(after.readLine()?.hasPrefix("open") == true)
        // Pages far apart: a read fills its page and the next fifteen.
        let at = 5 * LazyCloneTests.page + 1, far = 100 * LazyCloneTests.page + 1
        #expect(before.ask("region-get clone \(at)") == "\(content[at])")
        #expect(before.ask("region-set source \(far) 7") == "ok")
        #expect(after.ask("region-set source 9 7") == "ok")
        #expect(after.ask("region-get clone \(far)") == "\(content[far])")
        #expect(after.ask("region-get clone 9") == "\(content[9])")
        #expect(try pool.openRegion(name: "source").withUnsafeMutableBytes { [$0[9], $0[far]] } == [7, 7])
        #expect(after.ask("region-set clone 100 3") == "ok")
        #expect(try pool.openRegion(name: "source").withUnsafeMutableBytes { $0[100] } == content[100])
        for child in [before, after] {
            #expect(child.ask("quit") == "bye")
            #expect(child.wait() == 0)
        }
        let held = heldPages(pool, clone)
        pool.close()
        let reopened = try Pool.open(name: "lz", at: scratch.path)
        let again = try reopened.openRegion(name: "clone")
        #expect(heldPages(reopened, again) == held)
        var expected = content
        expected[100] = 3
        #expect(try bytes(again) == expected)
        reopened.close()
        #expect(try Pool.check(name: "lz", at: scratch.path).isClean)
    }

    /// Destroying the source fills the clone first; destroying a clone drops
    /// it, and a region made on its pages reads zeros.
    @Test func destroyingEitherSideLeavesTheOtherWhole() throws {
        let scratch = Scratch()
        let (pool, content) = try makePool(scratch)
        let clone = try pool.cloneRegion(name: "source", as: "clone")
        _ = try pool.cloneRegion(name: "source", as: "other")
        try pool.destroyRegion(name: "other")
        #expect(pool.core.lazyClones?.entries().count == 1)
        try pool.destroyRegion(name: "source")
        #expect(pool.core.lazyClones?.isEmpty == true)
        #expect(heldPages(pool, clone) == clone.pages)
        #expect(try bytes(clone) == content)
        let fresh = try pool.createRegion(name: "fresh", size: UInt64(2 * LazyCloneTests.bytes))
        #expect(try fresh.withUnsafeMutableBytes { $0.allSatisfy { $0 == 0 } })
        pool.close()
        #expect(try Pool.check(name: "lz", at: scratch.path).isClean)
    }
}

extension LazyCloneTests {
    /// A checkpoint fills the clones whose pages it reads (it reads shelves
    /// by their files, where a hole reads as zeros): the restored pool holds
    /// each region's bytes.
    @Test func aCheckpointHoldsTheClonesBytes() throws {
        let scratch = Scratch()
        let (pool, content) = try makePool(scratch)
        _ = try pool.cloneRegion(name: "source", as: "clone")
        try pool.openRegion(name: "source").withUnsafeMutableBytes { $0[0] = ~$0[0] }
        pool.close()
        let image = scratch.path + "/image"
        let poolfs = builtExecutable("poolfs")
        let checkpoint = try run(poolfs, ["checkpoint", "lz", image, "--path", scratch.path])
        #expect(checkpoint.status == 0, "\(checkpoint.output)")
        let restore = try run(poolfs, ["restore", image, "copy", "--path", scratch.path])
        #expect(restore.status == 0, "\(restore.output)")
        let copy = try Pool.open(name: "copy", at: scratch.path)
        var source = content
        source[0] = ~content[0]
        #expect(try bytes(copy.openRegion(name: "clone")) == content)
        #expect(try bytes(copy.openRegion(name: "source")) == source)
        copy.close()
        #expect(try Pool.check(name: "lz", at: scratch.path).isClean)
    }
}

extension LazyCloneTests {
    /// A process making and destroying clones is killed at several
    /// instants: the next opener recovers, `check` is clean, and each clone
    /// the process finished holds the source as it was then.
    @Test(arguments: [1, 3, 6])
    func killsDuringClonesLeaveThePoolSound(after clones: Int) throws {
        let scratch = Scratch()
        let (pool, content) = try makePool(scratch)
        pool.close()
        let child = try Child(builtExecutable("PoolTestHelper"), ["clone-storm", scratch.path, "lz", "source"])
        let lines = child.waitFor("cloned \(clones)")
        child.kill9()
        child.wait()
        #expect(lines.last == "cloned \(clones)", "\(lines)")
        let reopened = try Pool.open(name: "lz", at: scratch.path)
        for index in max(0, clones - 1)...clones {
            var expected = content
            for earlier in 0..<index { expected[earlier * 4096] = 1 }
            #expect(try bytes(reopened.openRegion(name: "c\(index)")) == expected, "c\(index)")
        }
        reopened.close()
        let report = try Pool.check(name: "lz", at: scratch.path)
        #expect(report.isClean, "\(report.problems) \(report.recoverable)")
    }
}

extension LazyCloneTests {
    /// A child forked with the pool open, which never calls didFork, still
    /// reads the clone's holes as the source's bytes, and its store into
    /// the source does not reach the clone.
    @Test func aForkedChildFollowsTheClones() throws {
        let scratch = Scratch()
        let (pool, content) = try makePool(scratch)
        _ = try pool.cloneRegion(name: "source", as: "clone")
        pool.close()
        let (at, store) = (3 * LazyCloneTests.page + 5, 40 * LazyCloneTests.page + 9)
        let result = try run(builtExecutable("PoolTestHelper"), ["fork-use", scratch.path, "lz", "clone", "source", "\(at)", "\(store)"])
        #expect(result.output == "child read \(content[at])\nparent clone \(content[store]) source 238", "\(result.output)")
        #expect(try Pool.check(name: "lz", at: scratch.path).isClean)
    }
}
