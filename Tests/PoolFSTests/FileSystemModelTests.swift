import Foundation
import Testing
import TestSupport
@testable import PoolCore
@testable import PoolFS

// The file system model without FUSE: its log replays to the same tree,
// and what a crash can leave behind is repaired at the next mount.

let caller = FileSystem.Caller(uid: 0, gid: 0)

/// Every entry under the root: path, type and mode, links, size, bytes, xattrs.
func describe(_ fs: FileSystem, root: UInt64 = FileSystem.rootInode) throws -> [String] {
    var lines: [String] = []
    func walk(_ directory: UInt64, _ path: String) throws {
        var children: [(FileName, stat)] = []
        try fs.listDirectory(directory, from: 0) { name, attributes, _ in
            if name != "." && name != ".." { children.append((name, attributes)) }
            return true
        }
        for (name, st) in children.sorted(by: { $0.0 < $1.0 }) {
            let inode = UInt64(st.st_ino)
            var line = "\(path)/\(name) \(String(st.st_mode, radix: 8)) n\(st.st_nlink) s\(st.st_size)"
                + " u\(st.st_uid) g\(st.st_gid) r\(st.st_rdev)"
                + " m\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) c\(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)"
                + " a\(st.st_atim.tv_sec).\(st.st_atim.tv_nsec)"
            if st.st_mode & S_IFMT == S_IFREG {
                line += " sum\(try bytes(fs, inode, size: Int(st.st_size)).reduce(0) { $0 &* 31 &+ Int($1) })"
            }
            if st.st_mode & S_IFMT == S_IFLNK { line += " -> " + FileName(try fs.readLink(inode)).description }
            for xattr in try fs.xattrNames(inode) where !xattr.hasPrefix("user.poolfs.") {
                line += " \(xattr)=\(String(decoding: try fs.xattr(inode, name: xattr), as: UTF8.self))"
            }
            lines.append(line)
            if st.st_mode & S_IFMT == S_IFDIR { try walk(inode, "\(path)/\(name)") }
        }
    }
    try walk(root, "")
    return lines
}

/// The pool closed and opened again (as after a kill of the mount when no
/// unmount came before) and its file system mounted.
func remount(_ pool: inout Pool, _ scratch: Scratch) throws -> FileSystem {
    pool.close()
    pool = try Pool.open(name: "model", at: scratch.path)
    return try FileSystem(pool: pool)
}

/// The file system unmounted in order and its pool closed, then checked as
/// `poolfs check` does: on the pool mapped, not joined.
func unmountAndCheck(_ fs: FileSystem, _ pool: Pool, _ scratch: Scratch) throws -> FileSystemReport {
    fs.unmount()
    pool.close()
    return try #require(try Pool.inspecting(name: "model", at: scratch.path) { FileSystem.check(pool: $0, repair: false) })
}

@discardableResult
func write(_ fs: FileSystem, _ inode: UInt64, _ bytes: [UInt8], at offset: UInt64 = 0) throws -> Int {
    try bytes.withUnsafeBytes { try fs.write(inode, offset: offset, from: $0) }
}

func makeFile(_ fs: FileSystem, _ name: FileName) throws -> UInt64 {
    UInt64(try fs.create(parent: 1, name: name, mode: S_IFREG | 0o644, caller: caller).st_ino)
}

/// The file's bytes, as a read of `size` finds them.
func bytes(_ fs: FileSystem, _ inode: UInt64, size: Int = 1 << 20) throws -> [UInt8] {
    try fs.withReadSegments(inode, offset: 0, size: size) { segments in
        segments.flatMap { Array(UnsafeRawBufferPointer(start: $0.iov_base, count: $0.iov_len)) }
    }
}

/// Puts `byte` into the file's first run from `offset` for `count` bytes,
/// past its end: what an earlier file (or a write a kill cut short) left there.
private func scribble(_ fs: FileSystem, _ inode: UInt64, at offset: Int, count: Int) throws {
    try fs.withReadSegments(inode, offset: 0, size: 1) { segments in
        UnsafeMutableRawPointer(mutating: segments[0].iov_base!).advanced(by: offset)
            .initializeMemory(as: UInt8.self, repeating: 0xff, count: count)
    }
}

@Suite struct FileSystemModelTests {
    /// relatime: a read moves atime once per change of the file, never its
    /// ctime, and the moved time is logged.
    @Test func readsMoveAccessTimeOncePerChange() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 16 << 20, pageSize: 4096, at: scratch.path)
        defer { pool.close() }
        var fs = try FileSystem(pool: pool)
        let file = try makeFile(fs, "f")
        try write(fs, file, Array("bytes".utf8))
        let written = try fs.attributes(of: file)
        #expect(fs.accessed(file))
        let read = try fs.attributes(of: file)
        #expect(Timestamp(read.st_atim) > Timestamp(written.st_mtim))
        #expect(Timestamp(read.st_ctim) == Timestamp(written.st_ctim))
        #expect(!fs.accessed(file))
        try write(fs, file, Array("more".utf8), at: 5)
        #expect(fs.accessed(file))
        let again = try fs.attributes(of: file)
        fs.accessTimes.store(false, ordering: .relaxed)
        try write(fs, file, Array("!".utf8), at: 9)
        #expect(!fs.accessed(file))
        fs = try remount(&pool, scratch)
        #expect(Timestamp(try fs.attributes(of: file).st_atim) == Timestamp(again.st_atim))
        // Later than mtime and ctime, the atime still moves once it is a day old.
        var record = try fs.tree.reading { try fs.inode(file).record }
        record.mtime = Timestamp(seconds: record.atime.seconds - 1, nanoseconds: 0)
        record.ctime = record.mtime
        func later(_ seconds: Int64) -> Timestamp { Timestamp(seconds: record.atime.seconds + seconds, nanoseconds: 0) }
        #expect(!FileSystem.accessDue(record, now: later(23 * 3600)))
        #expect(FileSystem.accessDue(record, now: later(24 * 3600)))
    }

    @Test func theLogReplaysToTheSameTree() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let docs = UInt64(try fs.create(parent: 1, name: "docs", mode: S_IFDIR | 0o755, caller: caller).st_ino)
        let a = UInt64(try fs.create(parent: docs, name: "a", mode: S_IFREG | 0o644, caller: caller).st_ino)
        try write(fs, a, Array(repeating: 7, count: 10_000))
        try write(fs, a, Array("tail".utf8), at: 50_000)
        let b = UInt64(try fs.create(parent: 1, name: "b", mode: S_IFREG | 0o600, caller: caller).st_ino)
        try write(fs, b, Array(repeating: 9, count: 9000))
        _ = try fs.setAttributes(b, AttributeChange(size: 5000))
        _ = try fs.link(a, parent: 1, name: "a-too")
        _ = try fs.create(parent: docs, name: "link", mode: S_IFLNK | 0o777, target: Array("../b".utf8), caller: caller)
        try fs.rename(from: 1, name: "b", to: docs, newName: "b", noReplace: true, exchange: false)
        try fs.setXattr(a, name: "user.tag", value: Array("x".utf8), flags: 0)
        // Owners, times and a device number must come back too.
        _ = try fs.setAttributes(a, AttributeChange(uid: 1000, gid: 2000, atime: Timestamp(seconds: 5, nanoseconds: 6),
                                                    mtime: Timestamp(seconds: 7, nanoseconds: 8)))
        _ = try fs.create(parent: docs, name: "null", mode: S_IFCHR | 0o666, rdev: 0x103, caller: caller)
        let gone = UInt64(try fs.create(parent: 1, name: "gone", mode: S_IFREG | 0o644, caller: caller).st_ino)
        try write(fs, gone, Array(repeating: 1, count: 20_000))
        try fs.remove(parent: 1, name: "gone", directory: false)
        let before = try describe(fs)
        #expect(before.count == 6)
        #expect(before.contains { $0.hasPrefix("/a-too") && $0.contains(" u1000 g2000 ") && $0.contains(" m7.8 ") })
        fs = try remount(&pool, scratch)
        #expect(try describe(fs) == before)
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.leftByCrash.isEmpty && report.unreferencedPages == 0)
        #expect(report.files == 4 && report.directories == 2, "a (two names), b, link, null; the root and docs")
        #expect(report.filePages == 6, "a: 3 pages and 1 at 50,000; b: 2 after its cut")
    }

    @Test func runsNoFileNamesAreFreedAtTheNextMount() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        let killed = try FileSystem(pool: pool)
        // The log's reserve for removals, which a kill leaves unnamed too.
        let reserve = (killed.log.runs.count - killed.log.chunks.count) * killed.log.chunkPages
        // A run taken for a write that the kill cut short, never logged.
        let stray = try pool.openHeap(name: "default").allocateTrackedPages(count: 5)
        pool.close()
        pool = try Pool.open(name: "model", at: scratch.path)
        let report = try #require(FileSystem.check(pool: pool, repair: false))
        #expect(report.unreferencedPages == 5 + reserve && report.problems.isEmpty, "\(report.unreferencedPages), reserve \(reserve)")
        let fs = try FileSystem(pool: pool)
        // Freed (the mount's new log may have taken its pages since).
        #expect(!pool.trackedRuns().contains { $0.address == stray && $0.pages == 5 })
        fs.unmount()
        #expect(FileSystem.check(pool: pool, repair: false)?.unreferencedPages == 0)
        pool.close()
    }

    @Test func bytesPastACutAreZeroAfterACrash() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let f = try makeFile(fs, "f")
        try write(fs, f, Array(repeating: 3, count: 3000))
        // Bytes past the logged size, as a write the kill interrupted leaves them.
        try scribble(fs, f, at: 3500, count: 1)
        fs = try remount(&pool, scratch)
        _ = try fs.setAttributes(f, AttributeChange(size: 4096))
        let grown = try bytes(fs, f, size: 4096)
        #expect(grown.count == 4096 && grown[3000...].allSatisfy { $0 == 0 } && grown[..<3000].allSatisfy { $0 == 3 })
        fs.unmount()
        pool.close()
    }

    /// A write leaves the rest of its last page as it was (a small file
    /// does not clear a whole page): whatever lay there, the file shows
    /// zeros when it grows over it, by truncate, by a write further on, or
    /// by fallocate.
    @Test func bytesPastTheEndShowAsZerosWhenAFileGrows() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        let fs = try FileSystem(pool: pool)
        let grow: [(UInt64) throws -> Void] = [
            { _ = try fs.setAttributes($0, AttributeChange(size: 4096)) },
            { try write(fs, $0, [7], at: 4095) },
            { try fs.allocateSpace($0, mode: 0, offset: 0, length: 4096) },
        ]
        for (index, grow) in grow.enumerated() {
            let file = try makeFile(fs, "f\(index)")
            try write(fs, file, Array(repeating: 3, count: 100))
            try scribble(fs, file, at: 100, count: 3996)
            try grow(file)
            let grown = try bytes(fs, file)
            #expect(grown.count == 4096)
            #expect(grown[..<100].allSatisfy { $0 == 3 })
            #expect(grown[100..<4095].allSatisfy { $0 == 0 }, "grown by way \(index)")
        }
        fs.unmount()
        pool.close()
    }

    /// fallocate allocates a chunk at a time, letting go of the tree in
    /// between (FileSystem+Fallocate.swift); across chunks it ends as one step
    /// would: the size, zeros, a page for every page. One the pool cannot
    /// hold fails before it allocates anything. An fsync of it flushes a
    /// chunk at a time too.
    @Test func fallocateAcrossChunksEndsAsOneStepAndTooLargeAllocatesNothing() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 256 << 20, pageSize: 65536, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let file = try makeFile(fs, "f")
        try write(fs, file, [9], at: 0)
        // info counts pages in thread caches as free; df's usage, as used.
        let free = pool.info().freeBytes
        #expect(throws: FileSystemError.noSpace) { try fs.allocateSpace(file, mode: 0, offset: 0, length: 300 << 20) }
        #expect(pool.info().freeBytes == free)
        #expect(try fs.attributes(of: file).st_size == 1)
        let end = 2 * FileSystem.stepBytes + 12345
        try fs.allocateSpace(file, mode: 0, offset: 1000, length: end - 1000)
        #expect(try fs.attributes(of: file).st_size == Int(end))
        #expect(try fs.attributes(of: file).st_blocks == Int((end + 65535) / 65536 * 65536 / 512))
        #expect(free - pool.info().freeBytes == (end + 65535) / 65536 * 65536 - 65536, "the first page was there")
        for at in [0, 1, 999, 1000, FileSystem.stepBytes - 1, FileSystem.stepBytes, end - 1] {
            let byte = try fs.withReadSegments(file, offset: at, size: 1) { segments in
                UnsafeRawBufferPointer(start: segments[0].iov_base, count: 1)[0]
            }
            #expect(byte == (at == 0 ? 9 : 0), "byte \(at)")
        }
        // KEEP_SIZE across chunks: pages past the end, the size as it was.
        try fs.allocateSpace(file, mode: FileSystem.keepSize, offset: end, length: FileSystem.stepBytes + 1)
        #expect(try fs.attributes(of: file).st_size == Int(end))
        // After a mount the first fsync flushes the whole file, a chunk at a time.
        fs = try remount(&pool, scratch)
        #expect(try fs.tree.reading { try fs.inode(file).wholeUnsynced })
        try fs.sync(file)
        #expect(try fs.tree.reading { try !fs.inode(file).wholeUnsynced && fs.inode(file).unsynced.isEmpty })
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.unreferencedPages == 0)
        #expect(report.filePages == (end + FileSystem.stepBytes + 1 + 65535) / 65536)
    }

    /// A file grown by small appends gets a few long runs, not one per
    /// write: an append that needs a new run takes as many pages again as
    /// the file has. Those it does not come to use go back at its last
    /// close, or at the next mount after a kill; pages a KEEP_SIZE
    /// fallocate asked for stay, across a kill too.
    @Test func appendsTakePagesAheadAndTheLastCloseGivesThemBack() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 64 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let file = try makeFile(fs, "log")
        func runs() throws -> Int { try fs.tree.reading { try fs.inode(file).extents.extents.count } }
        func blocks() throws -> Int { try fs.attributes(of: file).st_blocks }
        var expected: [UInt8] = []
        func append(_ count: Int) throws {
            for _ in 0..<count {
                let line = [UInt8](repeating: UInt8(truncatingIfNeeded: expected.count / 1000 + 1), count: 1000)
                try write(fs, file, line, at: UInt64(expected.count))
                expected += line
            }
        }
        _ = try fs.open(file, truncate: false)
        try append(1000)
        // 245 pages: a fragment, then runs of 1 (the page it moved to), 2, 4, … 128.
        #expect(try runs() == 8)
        #expect(try blocks() == 255 * 8)
        #expect(try bytes(fs, file, size: 2 << 20) == expected)
        fs.release(file)
        #expect(try blocks() == 245 * 8)
        #expect(try runs() == 8)
        // Asked for past the end: kept at the close.
        _ = try fs.open(file, truncate: false)
        try fs.allocateSpace(file, mode: FileSystem.keepSize, offset: UInt64(expected.count), length: 40960)
        fs.release(file)
        #expect(try blocks() == 255 * 8)
        // A kill while pages are taken ahead: the next mount gives them back.
        _ = try fs.open(file, truncate: false)
        try append(100)
        #expect(try blocks() > 269 * 8)
        fs = try remount(&pool, scratch)
        #expect(try blocks() == 269 * 8)
        #expect(try bytes(fs, file, size: 2 << 20) == expected)
        // Taken ahead, then asked for by KEEP_SIZE, then a kill: kept.
        _ = try fs.open(file, truncate: false)
        try append(100)
        let held = try blocks()
        #expect(held > 293 * 8)
        try fs.allocateSpace(file, mode: FileSystem.keepSize, offset: UInt64(expected.count), length: 4096)
        fs = try remount(&pool, scratch)
        #expect(try blocks() == held)
        _ = try fs.setAttributes(file, AttributeChange(size: UInt64(expected.count)))
        #expect(try blocks() == 293 * 8, "a truncate to the size cuts them")
        // Writes inside a sparse file's size append nothing: it stays sparse.
        let sparse = try makeFile(fs, "sparse")
        _ = try fs.setAttributes(sparse, AttributeChange(size: 1 << 20))
        try write(fs, sparse, Array(repeating: 1, count: 4096), at: 4096)
        try write(fs, sparse, Array(repeating: 2, count: 4096), at: 8192)
        #expect(try fs.attributes(of: sparse).st_blocks == 2 * 8)
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.unreferencedPages == 0 && report.filePages == 293 + 2)
    }

    /// No pages are taken ahead from a pool nearly full: they would leave
    /// other files short.
    @Test func aNearlyFullPoolTakesNoPagesAhead() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 8 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let big = try makeFile(fs, "big")
        // Two steps: the first makes the log take its spare chunk.
        try fs.allocateSpace(big, mode: 0, offset: 0, length: pool.usage().freeBytes - (2 << 20))
        try fs.allocateSpace(big, mode: 0, offset: pool.usage().capacityBytes, length: pool.usage().freeBytes - (400 << 10))
        // A fresh count of the pool's pages.
        fs = try remount(&pool, scratch)
        let file = try makeFile(fs, "log")
        for index in 0..<16 { try write(fs, file, Array(repeating: 1, count: 4096), at: UInt64(index) * 4096) }
        #expect(try fs.tree.reading { try fs.inode(file).extents.extents.count } == 16)
        #expect(try fs.attributes(of: file).st_blocks == 16 * 8)
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.unreferencedPages == 0)
    }

    /// fsync makes durable what was written since the last one (on pmem a
    /// flush costs per byte), and after a mount all of each file once.
    @Test func fsyncFlushesWhatWasWrittenSinceTheLastOne() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let file = try makeFile(fs, "f")
        func unsynced() throws -> [Range<UInt64>] { try fs.tree.reading { try fs.inode(file).unsynced } }
        try write(fs, file, Array(repeating: 1, count: 100))
        try write(fs, file, Array(repeating: 2, count: 100), at: 100)
        try write(fs, file, Array(repeating: 3, count: 10), at: 10000)
        #expect(try unsynced() == [0..<200, 10000..<10010])
        try fs.sync(file)
        #expect(try unsynced().isEmpty)
        for index in 0..<UInt64(Inode.maximumUnsynced + 1) { try write(fs, file, [4], at: 20000 + index * 2) }
        #expect(try unsynced() == [20000..<20000 + UInt64(Inode.maximumUnsynced) * 2 + 1])
        try fs.allocateSpace(file, mode: 0x03, offset: 5000, length: 100)
        #expect(try unsynced().last == 5000..<5100)
        fs = try remount(&pool, scratch)
        #expect(try fs.tree.reading { try fs.inode(file).wholeUnsynced })
        try write(fs, file, [5], at: 0)
        #expect(try unsynced().isEmpty)
        try fs.sync(file)
        #expect(try !fs.tree.reading { try fs.inode(file).wholeUnsynced })
        try write(fs, file, [6], at: 0)
        #expect(try unsynced() == [0..<1])
        fs.unmount()
        pool.close()
    }

    @Test func aTornRecordIsNotReplayed() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        _ = try fs.create(parent: 1, name: "kept", mode: S_IFREG | 0o644, caller: caller)
        let before = try describe(fs)
        // A record written but not yet counted by its chunk's committed word.
        let head = pool.rootAddress
        let committed = UInt64(MetadataLog.committedCount(try pool.load(at: head.advanced(by: MetadataLog.Field.committed)),
                                                          firstFormat: false) ?? -1)
        let torn = RecordWriter.encode(.unlink(parent: 1, name: "kept", time: .now()))
        try pool.write(at: head.advanced(by: UInt64(MetadataLog.headerSize) + committed), bytes: torn)
        fs = try remount(&pool, scratch)
        #expect(try describe(fs) == before)
        fs.unmount()
        pool.close()
    }

    /// fsync flushes a chunk at a time: where a chunk ends counts the bytes
    /// of runs only, so a sparse file's holes cost nothing.
    @Test func aFlushChunkEndsWhereTheRunsHaveCoveredItsBytes() {
        var map = ExtentMap()
        // 4 KiB pages: runs at pages 2..<4 and 10..<11, holes around them.
        map.insert(Extent(page: 2, address: GlobalAddress(shelf: 1, offset: 0x10000), pages: 2))
        map.insert(Extent(page: 10, address: GlobalAddress(shelf: 1, offset: 0x40000), pages: 1))
        func position(_ budget: UInt64, _ from: UInt64, _ to: UInt64 = .max) -> UInt64 {
            map.position(covering: budget, from: from, to: to, pageShift: 12)
        }
        #expect(position(100, 0) == 8192 + 100, "the hole before the first run is free")
        #expect(position(8192, 0) == 16384, "the first run, whole")
        #expect(position(8193, 0) == 40960 + 1, "over the hole to the second run")
        #expect(position(4096, 9000) == 9000 + 4096, "from inside a run")
        #expect(position(8000, 9000) == 40960 + 8000 - (16384 - 9000), "the rest of a run, then the next")
        #expect(position(1 << 20, 0) == .max, "fewer bytes than the budget: to the end")
        #expect(position(1 << 20, 0, 12000) == 12000)
        #expect(position(1, 50000) == .max, "no run past the start")
        #expect(ExtentMap().position(covering: 1, from: 0, to: .max, pageShift: 12) == .max)
    }

    @Test func everyRecordDecodesToWhatWasEncoded() throws {
        let time = Timestamp(seconds: 1_700_000_000, nanoseconds: 42)
        let record = InodeRecord(number: 9, mode: S_IFREG | 0o640, uid: 1, gid: 2, nlink: 1, rdev: 0, size: 12345,
                                 atime: time, mtime: time, ctime: time, heap: 3, parent: 0, target: [])
        let extent = Extent(page: 4, address: GlobalAddress(shelf: 1, offset: 0x10000), pages: 16)
        let changes: [Change] = [
            .inode(record), .entry(parent: 1, name: "é", inode: 9), .create(parent: 1, name: "n", record),
            .link(parent: 1, name: "l", inode: 9, time: time), .unlink(parent: 1, name: "l", time: time),
            .rename(from: 1, name: "a", to: 2, newName: "b", exchange: true, time: time),
            .setAttributes(inode: 9, AttributeChange(mode: 0o600, size: 7, mtime: time, ctime: time)),
            .written(inode: 9, size: 99, time: time), .extent(inode: 9, extent),
            .extent(inode: 9, .fragment(GlobalAddress(shelf: 1, offset: 0x13000), bytes: 8192)),
            .punch(inode: 9, from: 1, to: 3, time: time), .setXattr(inode: 9, name: "user.x", value: [0, 1, 255], time: time),
            .removeXattr(inode: 9, name: "user.x", time: time), .setHeap(inode: 9, heap: 5, time: time), .drop(inode: 9),
            .ahead(inode: 9, taken: true), .ahead(inode: 9, taken: false),
        ]
        for change in changes {
            let bytes = RecordWriter.encode(change)
            let decoded = try bytes.withUnsafeBytes { try RecordReader.decode($0) }
            #expect(RecordWriter.encode(decoded) == bytes, "\(change)")
            // A field swapped alike in writer and reader would pass the line above.
            #expect("\(decoded)" == "\(change)")
        }
        // A fragment that is not whole slots would reach into its neighbours' bytes.
        let ragged = RecordWriter.encode(.extent(inode: 9, .fragment(GlobalAddress(shelf: 1, offset: 0x13000), bytes: 100)))
        #expect(throws: (any Error).self) { try ragged.withUnsafeBytes { try RecordReader.decode($0) } }
        var truncated = RecordWriter.encode(changes[2])
        truncated.removeLast()
        #expect(throws: (any Error).self) { try truncated.withUnsafeBytes { try RecordReader.decode($0) } }
    }

    /// Small files share pages: each takes slots of 4 KiB in a page the
    /// file system splits (a page of 64 KiB here), moves to more slots or
    /// a page of its own as it grows, and keeps its bytes across a crash;
    /// the shared pages go back to the pool with their last file.
    @Test func smallFilesShareAPageAndMoveOutAsTheyGrow() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 64 << 10, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        var files: [UInt64] = []
        for index in 0..<16 {
            let file = try makeFile(fs, "small\(index)")
            try write(fs, file, Array(repeating: UInt8(index + 1), count: 4000))
            files.append(file)
        }
        #expect(pool.trackedRuns().count == fs.log.runs.count + 1, "16 files of 4,000 bytes in one page")
        #expect(try fs.attributes(of: files[0]).st_blocks == 8, "4 KiB, as tmpfs counts it")

        // One file grows in steps: through larger fragments to pages of its own.
        let grown = try makeFile(fs, "grown")
        var expected: [UInt8] = []
        for (offset, count) in [(0, 100), (3000, 3000), (9000, 2), (20_000, 1000), (40_000, 10), (70_000, 5)] {
            let chunk = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ offset) }
            try write(fs, grown, chunk, at: UInt64(offset))
            if expected.count < offset { expected += Array(repeating: 0, count: offset - expected.count) }
            expected.replaceSubrange(offset..<min(expected.count, offset + count), with: chunk)
            #expect(try bytes(fs, grown) == expected, "after \(count) bytes at \(offset)")
        }
        func fragment(_ file: UInt64) -> GlobalAddress? { fs.inodes[file]?.extents.fragment?.address }
        // A fragment freed and taken again shows zeros when its new file grows.
        let freed = try #require(fragment(files[3]))
        try fs.remove(parent: 1, name: "small3", directory: false)
        let reused = try makeFile(fs, "reused")
        try write(fs, reused, [42])
        #expect(fragment(reused) == freed, "small3's slot, the only free one")
        _ = try fs.setAttributes(reused, AttributeChange(size: 4000))
        #expect(try bytes(fs, reused) == [42] + Array(repeating: 0, count: 3999))

        // Killed (no unmount): every byte comes back, nothing leaks, and the
        // mount knows which slots are taken: the one slot small5 left is the
        // one a new file gets.
        let left = try #require(fragment(files[5]))
        try fs.remove(parent: 1, name: "small5", directory: false)
        let before = try describe(fs)
        fs = try remount(&pool, scratch)
        #expect(try describe(fs) == before)
        #expect(try bytes(fs, grown) == expected)
        let again = try makeFile(fs, "after-mount")
        try write(fs, again, Array(repeating: 5, count: 10))
        #expect(fragment(again) == left)
        for (index, file) in files.enumerated() where index != 3 && index != 5 {
            #expect(try bytes(fs, file) == Array(repeating: UInt8(index + 1), count: 4000), "a slot in use is not given again")
        }
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.unreferencedPages == 0)
        pool = try Pool.open(name: "model", at: scratch.path)
        fs = try FileSystem(pool: pool)
        for name in (0..<16).filter({ $0 != 3 && $0 != 5 }).map({ FileName("small\($0)") }) + ["grown", "reused", "after-mount"] {
            try fs.remove(parent: 1, name: name, directory: false)
        }
        #expect(pool.trackedRuns().count == fs.log.runs.count, "the shared pages went back with their last files")
        fs.unmount()
        pool.close()
    }

    /// A log whose fragments overlap (two files naming one slot) is
    /// refused at mount with a one-line reason, and the pool left alone.
    @Test func overlappingFragmentsAreRefusedAtMount() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 64 << 10, at: scratch.path)
        let fs = try FileSystem(pool: pool)
        let a = try makeFile(fs, "a"), b = try makeFile(fs, "b")
        try write(fs, a, [1])
        try write(fs, b, [2])
        let slot = try #require(fs.inodes[a]?.extents.fragment?.address)
        try fs.log.append(.extent(inode: b, .fragment(slot, bytes: 4096)))
        #expect(throws: PoolError.self) { _ = try remount(&pool, scratch) }
        do { _ = try remount(&pool, scratch) } catch {
            #expect("\(error)".contains("names a fragment at \(slot) overlapping another file's"), "\(error)")
        }
        pool.close()
    }

    /// A hole punched inside a run frees the whole pages under it (the run
    /// is cut into the pieces on either side); killed after the punch was
    /// logged and before the run was cut, the next mount cuts it.
    @Test func aHolePunchedInsideARunFreesItsPages() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        func filePages() -> Int {
            let log = Set(fs.log.runs)
            return pool.trackedRuns().filter { !log.contains($0.address) }.reduce(0) { $0 + $1.pages }
        }
        let file = try makeFile(fs, "f")
        var expected = (0..<(16 * 4096)).map { UInt8(truncatingIfNeeded: $0 / 3 + 1) }
        try write(fs, file, expected)
        #expect(filePages() == 16 && fs.inodes[file]?.extents.extents.count == 1)
        try fs.allocateSpace(file, mode: 3, offset: 4 * 4096 - 100, length: 4 * 4096 + 200)
        expected.replaceSubrange((4 * 4096 - 100)..<(8 * 4096 + 100), with: repeatElement(0, count: 4 * 4096 + 200))
        #expect(try bytes(fs, file) == expected)
        #expect(filePages() == 12)
        #expect(try fs.attributes(of: file).st_blocks == 12 * 8)
        // A punch inside one page frees nothing and cuts no run.
        let runs = fs.inodes[file]?.extents.extents.count
        try fs.allocateSpace(file, mode: 3, offset: 13 * 4096 + 100, length: 100)
        expected.replaceSubrange((13 * 4096 + 100)..<(13 * 4096 + 200), with: repeatElement(0, count: 100))
        #expect(fs.inodes[file]?.extents.extents.count == runs && filePages() == 12)
        #expect(try bytes(fs, file) == expected)
        // Logged, then killed before the pool's run was cut.
        try fs.log.append(.punch(inode: file, from: 10, to: 12, time: .now()))
        fs = try remount(&pool, scratch)
        expected.replaceSubrange((10 * 4096)..<(12 * 4096), with: repeatElement(0, count: 2 * 4096))
        #expect(try bytes(fs, file) == expected)
        #expect(filePages() == 10)
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.unreferencedPages == 0 && report.filePages == 10)
        #expect(try Pool.check(name: "model", at: scratch.path).isClean)
    }

    /// A small file through each change that can reach its fragment: fsync
    /// after it shrank, O_TRUNC, truncate past the fragment and back, punch,
    /// and a write across holes once it has pages of its own.
    @Test func smallFilesThroughEveryChange() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 64 << 10, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        // Written far into a fragment, shrunk, written again into a smaller one: fsync.
        let shrunk = try makeFile(fs, "shrunk")
        try write(fs, shrunk, Array(repeating: 9, count: 10), at: 20_000)
        _ = try fs.setAttributes(shrunk, AttributeChange(size: 0))
        try write(fs, shrunk, [1])
        try fs.sync(shrunk)
        #expect(try bytes(fs, shrunk) == [1])
        // O_TRUNC frees the fragment; the next write takes one again.
        _ = try fs.open(shrunk, truncate: true)
        #expect(try fs.attributes(of: shrunk).st_blocks == 0)
        try write(fs, shrunk, [2, 3])
        fs.release(shrunk)
        #expect(try bytes(fs, shrunk) == [2, 3])
        // Truncated past its fragment: into a larger one, then a page.
        let grown = try makeFile(fs, "grown")
        try write(fs, grown, Array(repeating: 4, count: 100))
        _ = try fs.setAttributes(grown, AttributeChange(size: 30_000))
        #expect(fs.inodes[grown]?.extents.fragment?.fragmentBytes == 32_768)
        _ = try fs.setAttributes(grown, AttributeChange(size: 50_000))
        #expect(fs.inodes[grown]?.extents.fragment == nil && fs.inodes[grown]?.extents.pageCount == 1)
        #expect(try bytes(fs, grown) == Array(repeating: 4, count: 100) + Array(repeating: 0, count: 49_900))
        // Cut back: into the smallest fragment that holds it, and its page goes.
        let pages = pool.trackedRuns().count
        _ = try fs.setAttributes(grown, AttributeChange(size: 5000))
        #expect(fs.inodes[grown]?.extents.fragment?.fragmentBytes == 8192 && fs.inodes[grown]?.extents.pageCount == 0)
        #expect(pool.trackedRuns().count < pages)
        _ = try fs.setAttributes(grown, AttributeChange(size: 101))
        #expect(fs.inodes[grown]?.extents.fragment?.fragmentBytes == 4096)
        #expect(try bytes(fs, grown) == Array(repeating: 4, count: 100) + [0])
        // Punched: inside, the bytes go; over its whole page, the fragment does.
        let punched = try makeFile(fs, "punched")
        try write(fs, punched, Array(repeating: 5, count: 3000))
        try fs.allocateSpace(punched, mode: 3, offset: 1000, length: 1000)
        #expect(try bytes(fs, punched) == Array(repeating: 5, count: 1000) + Array(repeating: 0, count: 1000)
            + Array(repeating: 5, count: 1000))
        try fs.allocateSpace(punched, mode: 3, offset: 0, length: 64 << 10)
        #expect(try fs.attributes(of: punched).st_blocks == 0)
        #expect(try bytes(fs, punched) == Array(repeating: 0, count: 3000))
        // From a fragment to pages with holes between, then one write across them all.
        let spanned = try makeFile(fs, "spanned")
        _ = try fs.open(spanned, truncate: false)
        try write(fs, spanned, [6])
        try write(fs, spanned, [7], at: 3 << 16)
        let all = (0..<(5 << 16)).map { UInt8(truncatingIfNeeded: $0 / 7) }
        try write(fs, spanned, all)
        // The last write appended: its run took pages ahead, back at the close.
        #expect(try fs.attributes(of: spanned).st_blocks > 5 << 7)
        fs.release(spanned)
        #expect(try bytes(fs, spanned, size: 6 << 16) == all)
        #expect(try fs.attributes(of: spanned).st_blocks == 5 << 7)
        let before = try describe(fs)
        fs = try remount(&pool, scratch)
        #expect(try describe(fs) == before)
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.unreferencedPages == 0)
    }

    /// A request for n slots takes a run with n free side by side (the
    /// fullest that has them), else a new page; an emptied run goes back.
    @Test func fragmentsFindRoomByTheLongestFreeStretch() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 64 << 10, at: scratch.path)
        let heap = try pool.openHeap(name: "default", create: true)
        let runs = FragmentRuns(pool: pool)
        let ones = try (0..<16).map { _ in try runs.allocate(bytes: 4096, from: heap) }
        #expect(runs.runCount == 1 && Set(ones.map(\.address)).count == 16)
        for index in stride(from: 0, to: 16, by: 2) { #expect(runs.release(ones[index]) == nil) }
        let pair = try runs.allocate(bytes: 8192, from: heap)
        #expect(runs.runCount == 2, "no two free slots side by side in the first run")
        #expect(runs.release(ones[3]) == nil)
        let again = try runs.allocate(bytes: 8192, from: heap)
        #expect(pool.pageStart(containing: again.address) == pool.pageStart(containing: ones[1].address),
                "slots 2 to 4 are free there now")
        let first = try #require(pool.pageStart(containing: ones[1].address))
        var emptied: [GlobalAddress] = []
        for fragment in [pair, again] + stride(from: 1, to: 16, by: 2).filter({ $0 != 3 }).map({ ones[$0] }) {
            if let (run, _) = runs.release(fragment) { emptied.append(run) }
        }
        #expect(emptied.count == 2 && emptied.contains(first) && runs.runCount == 0)
        #expect(throws: (any Error).self) { try runs.allocate(bytes: 64 << 10, from: heap) }
        pool.close()
    }

    /// A run that nothing names, left half cut by a kill (inner pieces
    /// made, its head not yet shrunk), is freed at the next mount entry by
    /// entry: no stale head stays inside pages the pool hands out again.
    @Test func aRunLeftHalfCutIsFreedWholeAtTheNextMount() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "model", size: 32 << 20, pageSize: 4096, at: scratch.path)
        var fs = try FileSystem(pool: pool)
        let heap = try pool.openHeap(name: "default")
        let stray = try heap.allocateTrackedPages(count: 8)
        var shelf = try #require(pool.core.shelf(stray.shelf))
        let page = try #require(shelf.page(at: stray.offset))
        shelf.setEntry(page + 6, .tail(distance: 1))
        shelf.setEntry(page + 5, .allocated(length: 2, tag: .tracked(heap.id)))
        fs = try remount(&pool, scratch)
        #expect(!pool.trackedRuns().contains { $0.address == stray && $0.pages == 8 })
        // Free, or under a run taken since (the mount's new log): no stale head.
        shelf = try #require(pool.core.shelf(stray.shelf))
        #expect(shelf.entry(page + 5) != .allocated(length: 2, tag: .tracked(heap.id)))
        let report = try unmountAndCheck(fs, pool, scratch)
        #expect(report.problems.isEmpty && report.unreferencedPages == 0)
        #expect(try Pool.check(name: "model", at: scratch.path).isClean)
    }
}
