import Dispatch
import Foundation
import Synchronization
import Testing
import TestSupport
@testable import PoolCore
@testable import PoolFS
#if canImport(Glibc)
import Glibc
#endif

// Snapshots without FUSE: the whole tree frozen, read-only, kept across
// remounts, and dropped with exactly the pages only it held.

@Suite struct SnapshotTests {
    @Test func aSnapshotFreezesTheTreeAndRefusesChanges() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let docs = UInt64(try fs.create(parent: 1, name: "docs", mode: S_IFDIR | 0o750, caller: caller).st_ino)
        let a = UInt64(try fs.create(parent: docs, name: "a", mode: S_IFREG | 0o640, caller: caller).st_ino)
        try write(fs, a, pattern(5 * 4096 + 7, seed: 3))
        _ = try fs.link(a, parent: 1, name: "a-too")
        let small = try makeFile(fs, "small")
        try write(fs, small, Array("a small file".utf8))
        _ = try fs.create(parent: docs, name: "link", mode: S_IFLNK | 0o777, target: Array("../small".utf8), caller: caller)
        try fs.setXattr(a, name: "user.tag", value: Array("x".utf8), flags: 0)
        let frozen = try describe(fs)
        let pages = filePages(fs, pool)

        let root = UInt64(try fs.makeSnapshot(named: "monday").st_ino)
        #expect(FileSystem.isFrozen(root) && fs.snapshot(named: "monday") == root)
        #expect(try describe(fs, root: root) == frozen)
        #expect(filePages(fs, pool) == pages, "pages shared")
        #expect(throws: FileSystemError.exists) { try fs.makeSnapshot(named: "monday") }

        // The live tree moves on; the snapshot does not.
        try write(fs, a, Array(repeating: 0xee, count: 100), at: 4096)
        try write(fs, small, Array("A".utf8))
        _ = try fs.setAttributes(small, AttributeChange(size: 1))
        try fs.remove(parent: 1, name: "a-too", directory: false)
        _ = try makeFile(fs, "new")
        #expect(try describe(fs, root: root) == frozen)
        #expect(filePages(fs, pool) == pages + 2, "a's page and small's copied on their writes")

        // Nothing changes a snapshot's files.
        let lookup = { (name: FileName) in UInt64(try fs.lookup(parent: root, name: name).st_ino) }
        let frozenA = try lookup("a-too")
        #expect(throws: FileSystemError.readOnly) { try write(fs, frozenA, [1]) }
        #expect(throws: FileSystemError.readOnly) { try fs.setAttributes(frozenA, AttributeChange(size: 0)) }
        #expect(throws: FileSystemError.readOnly) { try fs.setAttributes(frozenA, AttributeChange(mode: 0o777)) }
        #expect(throws: FileSystemError.readOnly) { try fs.allocateSpace(frozenA, mode: 0, offset: 0, length: 1 << 20) }
        #expect(throws: FileSystemError.readOnly) { try fs.remove(parent: root, name: "a-too", directory: false) }
        #expect(throws: FileSystemError.readOnly) { try fs.create(parent: root, name: "x", mode: S_IFREG | 0o644, caller: caller) }
        #expect(throws: FileSystemError.readOnly) { try fs.setXattr(frozenA, name: "user.y", value: [], flags: 0) }
        #expect(throws: FileSystemError.readOnly) { try fs.copyRange(from: a, at: 0, to: frozenA, at: 0, count: 10) }
        #expect(throws: FileSystemError.readOnly) {
            try fs.rename(from: root, name: "a-too", to: root, newName: "moved", noReplace: false, exchange: false)
        }
        #expect(throws: FileSystemError(EXDEV)) {
            try fs.rename(from: root, name: "docs", to: 1, newName: "docs-back", noReplace: false, exchange: false)
        }
        #expect(fs.failure == nil)
        // A file renamed out of it comes back as it was, the snapshot unchanged.
        let pagesBefore = filePages(fs, pool)
        try fs.rename(from: root, name: "small", to: 1, newName: "new", noReplace: false, exchange: false)
        #expect(try describe(fs, root: root) == frozen)
        #expect(try describe(fs).first { $0.hasPrefix("/new ") }?.replacingOccurrences(of: "/new ", with: "/small ")
                    .replacingOccurrences(of: #" c\d+\.\d+"#, with: "", options: .regularExpression)
                == frozen.first { $0.hasPrefix("/small ") }?.replacingOccurrences(of: #" c\d+\.\d+"#, with: "", options: .regularExpression))
        #expect(filePages(fs, pool) == pagesBefore, "its page shared, the empty 'new' it replaced had none")
        // Bytes come back by copying out of it: shared, not copied.
        let back = try makeFile(fs, "back")
        let before = filePages(fs, pool)
        _ = try fs.copyRange(from: frozenA, at: 0, to: back, at: 0, count: 1 << 30)
        #expect(try bytes(fs, back) == pattern(5 * 4096 + 7, seed: 3))
        #expect(filePages(fs, pool) == before)
        try fs.remove(parent: 1, name: "back", directory: false)

        _ = try fs.makeSnapshot(named: "tuesday")
        fs = try remount(&pool, scratch)
        #expect(fs.snapshots().map(\.name) == ["monday", "tuesday"])
        #expect(try describe(fs, root: try #require(fs.snapshot(named: "monday"))) == frozen)

        // Dropping a snapshot frees what only it held, a's old page (small's
        // is 'new''s too); tuesday's pages stay.
        let held = filePages(fs, pool)
        try fs.removeSnapshot(named: "monday")
        #expect(filePages(fs, pool) == held - 1)
        #expect(throws: FileSystemError.notFound) { try fs.removeSnapshot(named: "monday") }
        try fs.removeSnapshot(named: "tuesday")
        try fs.remove(parent: docs, name: "a", directory: false)
        try fs.remove(parent: 1, name: "small", directory: false)
        #expect(filePages(fs, pool) == 1, "the page of the file 'new'")
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.leftByCrash.isEmpty, "\(report)")
    }

    /// Small files share their slots of a fragment page with a snapshot,
    /// and a write, a truncate or a growth copies them first.
    @Test func smallFilesShareTheirSlotsUntilWritten() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 64 << 10, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let files = try (0..<4).map { try makeFile(fs, FileName("f\($0)")) }
        for (index, file) in files.enumerated() { try write(fs, file, pattern(1000 + index * 5000, seed: index)) }
        let frozen = try describe(fs)
        let pages = filePages(fs, pool)
        let root = UInt64(try fs.makeSnapshot(named: "s").st_ino)
        #expect(filePages(fs, pool) == pages, "no slot copied")
        try write(fs, files[0], [0xaa], at: 10)                          // a write inside
        _ = try fs.setAttributes(files[1], AttributeChange(size: 3))    // a cut
        try write(fs, files[2], pattern(40_000, seed: 9), at: 11_000)   // growth past a fragment
        try fs.allocateSpace(files[3], mode: 0x02 | 0x01, offset: 0, length: 4096)   // a punched hole
        #expect(try describe(fs, root: root) == frozen)
        fs = try remount(&pool, scratch)
        #expect(try describe(fs, root: try #require(fs.snapshot(named: "s"))) == frozen)
        try fs.removeSnapshot(named: "s")
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.leftByCrash.isEmpty, "\(report)")
    }

    /// Each file in a snapshot taken under a writer is the file at one
    /// instant: the writer fills the whole file with one byte per write.
    @Test func aSnapshotUnderAWriterHoldsWholeWrites() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "model", size: 64 << 20, pageSize: 4096, at: scratch.path)
        let fs = try FileSystem(pool: pool)
        let file = try makeFile(fs, "f")
        let size = 64 * 4096
        try write(fs, file, Array(repeating: 0, count: size))
        final class Stop: Sendable {
            let flag = Atomic<Bool>(false)
            let writes = Atomic<Int>(0)
        }
        let stop = Stop()
        let writer = DispatchGroup()
        DispatchQueue.global().async(group: writer) {
            var value: UInt8 = 1
            while !stop.flag.load(ordering: .relaxed) {
                _ = try? write(fs, file, Array(repeating: value, count: size))
                value &+= 1
                stop.writes.add(1, ordering: .releasing)
            }
        }
        var seen: Set<UInt8> = []
        for index in 0..<20 {
            // At least one whole write since the last snapshot.
            let next = stop.writes.load(ordering: .acquiring) + 1
            while stop.writes.load(ordering: .acquiring) < next { sched_yield() }
            let root = UInt64(try fs.makeSnapshot(named: FileName("s\(index)")).st_ino)
            let frozen = try bytes(fs, UInt64(try fs.lookup(parent: root, name: "f").st_ino), size: size)
            #expect(frozen.count == size && Set(frozen).count == 1, "snapshot \(index) mixes writes")
            seen.insert(frozen[0])
        }
        stop.flag.store(true, ordering: .relaxed)
        writer.wait()
        #expect(seen.count > 1, "the writer ran between snapshots")
        for index in 0..<20 { try fs.removeSnapshot(named: FileName("s\(index)")) }
        fs.unmount()
        pool.close()
    }
}
