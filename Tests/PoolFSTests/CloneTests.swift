import Testing
import TestSupport
@testable import PoolCore
@testable import PoolFS
#if canImport(Glibc)
import Glibc
#endif

// Clones (copy_file_range) without FUSE: pages shared, copied on write,
// counts exact after a remount and after a kill.

/// Distinct pages the files hold: the file system's runs but its log.
func filePages(_ fs: FileSystem, _ pool: Pool) -> Int {
    pool.trackedRuns().reduce(0) { $0 + $1.pages } - fs.log.runs.count * fs.log.chunkPages
}

@Suite struct CloneTests {
    @Test func eachSideOfACloneSeesOnlyItsOwnWrites() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let content = pattern(5 * 4096 + 100, seed: 1)
        let a = try makeFile(fs, "a"), b = try makeFile(fs, "b")
        try write(fs, a, content)
        let pages = filePages(fs, pool)
        #expect(try fs.copyRange(from: a, at: 0, to: b, at: 0, count: 1 << 30) == content.count)
        #expect(filePages(fs, pool) == pages, "the clone shares every page, the partial last one too")
        #expect(try bytes(fs, b) == content)

        var expectA = content, expectB = content
        try write(fs, a, [0xaa], at: 0)                                   // a's first byte
        expectA[0] = 0xaa
        try write(fs, b, [0xbb], at: UInt64(content.count - 1))            // b's last byte
        expectB[content.count - 1] = 0xbb
        try write(fs, a, Array(repeating: 0xcc, count: 4096), at: 2 * 4096) // a middle page of a
        expectA.replaceSubrange(2 * 4096..<3 * 4096, with: Array(repeating: 0xcc, count: 4096))
        try write(fs, b, [1, 2, 3], at: UInt64(content.count))              // b appended to
        expectB += [1, 2, 3]
        #expect(filePages(fs, pool) == pages + 3, "one copy per page written: a's 0 and 2, b's last")
        _ = try fs.setAttributes(a, AttributeChange(size: 3 * 4096 + 5))     // a cut, then grown
        _ = try fs.setAttributes(a, AttributeChange(size: UInt64(content.count)))
        expectA = Array(expectA[..<(3 * 4096 + 5)]) + Array(repeating: 0, count: content.count - 3 * 4096 - 5)
        #expect(try bytes(fs, a) == expectA)
        #expect(try bytes(fs, b) == expectB)

        fs = try remount(&pool, scratch)
        #expect(try bytes(fs, a) == expectA)
        #expect(try bytes(fs, b) == expectB)
        try fs.remove(parent: 1, name: "a", directory: false)
        #expect(try bytes(fs, b) == expectB)
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.leftByCrash.isEmpty, "\(report)")
        #expect(report.filePages == 6, "b alone holds its 6 pages")
    }

    @Test func aCloneOfACloneAndCopiesThatCannotShare() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let content = pattern(8 * 4096, seed: 5)
        let a = try makeFile(fs, "a"), b = try makeFile(fs, "b"), c = try makeFile(fs, "c")
        try write(fs, a, content)
        let pages = filePages(fs, pool)
        _ = try fs.copyRange(from: a, at: 0, to: b, at: 0, count: UInt64(content.count))
        _ = try fs.copyRange(from: b, at: 0, to: c, at: 0, count: UInt64(content.count))
        #expect(filePages(fs, pool) == pages)
        try write(fs, b, Array(repeating: 9, count: 10), at: 4 * 4096 + 7)
        var expectB = content
        expectB.replaceSubrange(4 * 4096 + 7..<4 * 4096 + 17, with: Array(repeating: 9, count: 10))
        #expect(try bytes(fs, a) == content && bytes(fs, c) == content && bytes(fs, b) == expectB)

        // Offsets at different places in a page: bytes copied, nothing shared.
        let d = try makeFile(fs, "d")
        #expect(try fs.copyRange(from: a, at: 100, to: d, at: 200, count: 10_000) == 10_000)
        #expect(try bytes(fs, d) == Array(repeating: 0, count: 200) + Array(content[100..<10_100]))
        // The same place in a page: whole pages shared, head and tail copied,
        // into a file that had bytes there and keeps those around them.
        let e = try makeFile(fs, "e")
        let old = pattern(6 * 4096, seed: 77)
        try write(fs, e, old)
        let before = filePages(fs, pool)
        #expect(try fs.copyRange(from: a, at: 1000, to: e, at: 4096 + 1000, count: 3 * 4096) == 3 * 4096)
        var expectE = old
        expectE.replaceSubrange(5096..<5096 + 3 * 4096, with: content[1000..<1000 + 3 * 4096])
        #expect(try bytes(fs, e) == expectE)
        #expect(filePages(fs, pool) == before - 2, "e's pages 2 and 3 now a's")
        // A copy past the end of the target leaves zeros between.
        let f = try makeFile(fs, "f")
        #expect(try fs.copyRange(from: a, at: 0, to: f, at: 3 * 4096, count: UInt64(content.count)) == content.count)
        #expect(try bytes(fs, f) == Array(repeating: 0, count: 3 * 4096) + content)

        // One file: ranges that overlap are refused; others are copied.
        #expect(throws: FileSystemError.invalid) { try fs.copyRange(from: a, at: 0, to: a, at: 4096, count: 2 * 4096) }
        #expect(try fs.copyRange(from: a, at: 0, to: a, at: UInt64(content.count), count: UInt64(content.count)) == content.count)
        #expect(try bytes(fs, a) == content + content)
        // Nothing past the source's end; directories refused.
        #expect(try fs.copyRange(from: c, at: UInt64(content.count), to: d, at: 0, count: 10) == 0)
        #expect(throws: FileSystemError.isDirectory) { try fs.copyRange(from: 1, at: 0, to: d, at: 0, count: 10) }

        fs = try remount(&pool, scratch)
        #expect(try bytes(fs, a) == content + content && bytes(fs, c) == content && bytes(fs, b) == expectB)
        #expect(try bytes(fs, e) == expectE)
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.leftByCrash.isEmpty, "\(report)")
    }

    /// What a kill between a count going up and the record naming the
    /// pages leaves (a count too high) is repaired at the next mount; a
    /// count too low is damage, refused before anything is freed.
    @Test func countsAKillLeftHighAreRepairedAndLowOnesRefused() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let a = try makeFile(fs, "a"), b = try makeFile(fs, "b")
        try write(fs, a, pattern(4 * 4096, seed: 2))
        _ = try fs.copyRange(from: a, at: 0, to: b, at: 0, count: 4 * 4096)
        let run = try #require(fs.tree.reading { try fs.inode(a).extents.extents.first })
        try pool.shareTrackedPages(at: run.address.advanced(by: 4096), count: 2)
        pool.close()
        pool = try Pool.open(name: "model", at: scratch.path)
        let report = try #require(FileSystem.check(pool: pool, repair: false))
        #expect(report.problems.isEmpty && report.overcountedPages == 2, "\(report)")
        fs = try FileSystem(pool: pool)
        #expect(pool.sharedPages(at: run.address, count: 4) == [0..<4])
        // Both owners let go: every page is freed.
        try fs.remove(parent: 1, name: "a", directory: false)
        try fs.remove(parent: 1, name: "b", directory: false)
        #expect(filePages(fs, pool) == 0)

        // A third name the counts do not know of: damage.
        let c = try makeFile(fs, "c"), d = try makeFile(fs, "d")
        try write(fs, c, pattern(2 * 4096, seed: 3))
        let shared = try #require(fs.tree.reading { try fs.inode(c).extents.extents.first })
        try fs.commit(.extent(inode: d, shared))
        pool.close()
        pool = try Pool.open(name: "model", at: scratch.path)
        #expect(FileSystem.check(pool: pool, repair: false)?.problems.first?.contains("2 owners name pages") == true)
        #expect(throws: PoolError.self) { try FileSystem(pool: pool) }
        pool.close()
    }
}
