import Foundation
import Testing
import TestSupport
@testable import PoolCore
@testable import PoolFS

/// A pool is input: one flipped byte in the metadata log or in a table of
/// shelf 0 is found (a one-line refusal) or harmless (a mount whose every
/// file reads as before); never a trap, and never silently different bytes.
/// `scripts/fuzz` runs many more cases (POOLFS_FUZZ_CASES).
@Suite(.serialized) struct PoolDamageFuzzTests {
    static let cases = Int(ProcessInfo.processInfo.environment["POOLFS_FUZZ_CASES"] ?? "") ?? 300

    /// A pool with directories, files of a fragment, a page and several
    /// runs, a symlink, xattrs and a hard link, unmounted in order; its tree.
    static func makePool(_ scratch: Scratch) throws -> (expected: [String], log: [Range<Int>]) {
        let pool = try Pool.create(name: "fuzz", size: 8 << 20, pageSize: 4096, at: scratch.path)
        let fs = try FileSystem(pool: pool)
        let caller = FileSystem.Caller(uid: 0, gid: 0)
        let docs = UInt64(try fs.create(parent: 1, name: "docs", mode: S_IFDIR | 0o755, caller: caller).st_ino)
        for (index, size) in [100, 4096, 20_000, 70_000].enumerated() {
            let file = UInt64(try fs.create(parent: index % 2 == 0 ? 1 : docs, name: "f\(index)", mode: S_IFREG | 0o644,
                                            caller: caller).st_ino)
            let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) }
            _ = try bytes.withUnsafeBytes { try fs.write(file, offset: 0, from: $0) }
            try fs.setXattr(file, name: "user.n", value: Array("\(index)".utf8), flags: 0)
            if index == 2 { _ = try fs.link(file, parent: docs, name: "again") }
        }
        _ = try fs.create(parent: docs, name: "link", mode: S_IFLNK | 0o777, target: Array("../f0".utf8), caller: caller)
        let expected = try describe(fs)
        let chunks = fs.log.runs
        fs.unmount()
        pool.close()
        // Each chunk's header and the records its committed word counts.
        let shelf = try #require(FileHandle(forReadingAtPath: scratch.file("fuzz", "shelf-0")))
        defer { try? shelf.close() }
        let log = try chunks.map { chunk -> Range<Int> in
            #expect(chunk.shelf == 0)
            try shelf.seek(toOffset: chunk.offset + MetadataLog.Field.committed)
            let word = try #require(try shelf.read(upToCount: 8)).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            let committed = MetadataLog.committedCount(word, firstFormat: false) ?? 0
            return Int(chunk.offset)..<(Int(chunk.offset) + MetadataLog.headerSize + committed)
        }
        return (expected, log)
    }

    /// Byte ranges of shelf 0's tables that a pool of one shelf uses.
    static let tables: [Range<Int>] = [
        0..<256,                                                          // shelf header
        Layout.Superblock.offset..<(Layout.Superblock.offset + 256),
        Layout.ShelfTable.entry(0)..<(Layout.ShelfTable.entry(0) + 64),
        Layout.Control.offset..<(Layout.Control.offset + 48),
        Layout.Participants.offset..<(Layout.Participants.offset + 64),
        Layout.Heaps.row(0)..<(Layout.Heaps.row(0) + 512),
        Layout.shelf0Metadata..<(Layout.shelf0Metadata + 8 * 200),        // page table: the files' runs
    ]

    @Test func aFlippedByteIsFoundOrHarmless() throws {
        let scratch = Scratch()
        let (expected, log) = try PoolDamageFuzzTests.makePool(scratch)
        let path = scratch.file("fuzz", "shelf-0")
        let pristine = try Data(contentsOf: URL(fileURLWithPath: path))
        var generator = SystemRandomNumberGenerator()
        var outcomes: [String: Int] = [:]
        for index in 0..<PoolDamageFuzzTests.cases {
            let ranges = index % 2 == 0 ? log : PoolDamageFuzzTests.tables
            let range = ranges.randomElement(using: &generator)!
            let offset = Int.random(in: range, using: &generator)
            var damaged = pristine
            damaged[offset] ^= UInt8.random(in: 1...255, using: &generator)
            let what = "byte \(offset) (\(index % 2 == 0 ? "log" : "tables"))"
            try damaged.write(to: URL(fileURLWithPath: path))

            // check changes nothing; it may find damage.
            let found = try? Pool.check(name: "fuzz", at: scratch.path, repair: false) { FileSystem.check(pool: $0, repair: false) }
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == damaged, "check wrote to the pool, \(what)")
            let checkClean = found.map { $0.report.problems.isEmpty && ($0.then?.problems.isEmpty ?? true) } ?? false

            let mounted = PoolDamageFuzzTests.mount(scratch, expected: expected, what: what)
            outcomes[mounted, default: 0] += 1
            // check and mount agree: where check found no damage, the mount
            // comes up; where it found damage, the mount refuses the pool.
            if checkClean { #expect(mounted == "mounted", "check said clean but the mount said \(mounted), \(what)") }
            if !checkClean {
                #expect(mounted != "mounted", "check found damage but the mount went ahead, \(what): \(found.map { "\($0.report.problems) \($0.then?.problems ?? [])" } ?? "refused")")
            }

            // A repair of the damaged pool: then the pool mounts with every file.
            try damaged.write(to: URL(fileURLWithPath: path))
            let repaired = try? Pool.check(name: "fuzz", at: scratch.path, repair: true) { _ in () }
            var fileSystemRepaired = false
            if repaired.map({ $0.report.problems.isEmpty }) == true, let pool = try? Pool.open(name: "fuzz", at: scratch.path) {
                fileSystemRepaired = FileSystem.check(pool: pool, repair: true).map { $0.problems.isEmpty } ?? true
                pool.close()
            }
            // A repair loses nothing a mount would have kept: where the file
            // system was sound before, every file reads back after it.
            let fileSystemWasSound = found.map { $0.then?.problems.isEmpty ?? true } ?? false
            if fileSystemRepaired || fileSystemWasSound {
                let after = PoolDamageFuzzTests.mount(scratch, expected: expected, what: what + " after --repair")
                #expect(after == "mounted", "repair said done but the mount said \(after), \(what)")
            }
        }
        print("fuzz outcomes: \(outcomes)")
    }

    /// The same through the processes a user runs: `poolfs check`, and
    /// `poolfs mount` with every file read back through FUSE. Each exits
    /// with a status (never a signal) and, refusing, says why in one line.
    /// Fewer cases than in-process: each mounts for real.
    @Test(.enabled(if: MountedPool.available, "mounting needs root and /dev/fuse"))
    func aFlippedByteThroughTheCommandLineAndTheMount() throws {
        let scratch = Scratch()
        let (_, log) = try PoolDamageFuzzTests.makePool(scratch)
        let files = [("f0", 0, 100), ("docs/f1", 1, 4096), ("f2", 2, 20_000), ("docs/f3", 3, 70_000), ("docs/again", 2, 20_000)]
        let path = scratch.file("fuzz", "shelf-0")
        let pristine = try Data(contentsOf: URL(fileURLWithPath: path))
        let poolfs = builtExecutable("poolfs")
        let mountpoint = scratch.path + "/mountpoint"
        #expect(mkdir(mountpoint, 0o755) == 0)
        var generator = SystemRandomNumberGenerator()
        for index in 0..<min(PoolDamageFuzzTests.cases / 10, 40) {
            var damaged = pristine
            let range = (index % 2 == 0 ? log : PoolDamageFuzzTests.tables).randomElement(using: &generator)!
            let offset = Int.random(in: range, using: &generator)
            damaged[offset] ^= UInt8.random(in: 1...255, using: &generator)
            try damaged.write(to: URL(fileURLWithPath: path))
            let what = "case \(index), byte \(offset)"
            let check = try run(poolfs, ["check", "fuzz", "--path", scratch.path])
            #expect(check.status == 0 || check.status == 1, "check trapped? \(what): \(check.status) \(check.output.suffix(200))")
            let daemon = try Child(poolfs, ["mount", "fuzz", mountpoint, "-f", "--path", scratch.path])
            let first = daemon.readLine() ?? ""
            if first.hasPrefix("mounted pool") {
                for (name, seed, size) in files {
                    let expected = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) }
                    #expect(contents(mountpoint + "/" + name) == expected, "\(what): \(name) reads other bytes")
                }
                _ = try? run("fusermount3", ["-u", "-z", mountpoint])
                #expect(daemon.wait() == 0, "\(what): the mount did not end in order")
            } else {
                #expect(daemon.wait() == 1 && first.hasPrefix("poolfs: ") && daemon.readLine() == nil,
                        "\(what): a refusal is one line and exit 1: \(first)")
            }
        }
        try pristine.write(to: URL(fileURLWithPath: path))
    }

    /// One flipped byte in heap row 0 (the file system's heap): its state
    /// word or its name. A repair must not drop the heap or free the pages
    /// the files name (it did: "heap 'default' does not exist", 0 files);
    /// after it the pool mounts with every file.
    @Test(arguments: [Layout.Heaps.state, Layout.Heaps.name + 3])
    func aDamagedHeapRowIsRevivedNotDropped(field: Int) throws {
        let scratch = Scratch()
        let (expected, _) = try PoolDamageFuzzTests.makePool(scratch)
        let path = scratch.file("fuzz", "shelf-0")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[Layout.Heaps.row(0) + field] ^= 0x04
        try bytes.write(to: URL(fileURLWithPath: path))
        let poolfs = builtExecutable("poolfs")
        let check = try run(poolfs, ["check", "fuzz", "--path", scratch.path])
        let mounted = PoolDamageFuzzTests.mount(scratch, expected: expected, what: "heap row 0 byte \(field)")
        // check and mount agree, whichever way.
        #expect((check.status == 0) == (mounted == "mounted"), "check: \(check.output); mount: \(mounted)")
        let repair = try run(poolfs, ["check", "fuzz", "--repair", "--path", scratch.path])
        #expect(repair.status == 0, "\(repair.output)")
        #expect(PoolDamageFuzzTests.mount(scratch, expected: expected, what: "heap row 0 byte \(field), repaired") == "mounted")
        let after = try run(poolfs, ["check", "fuzz", "--path", scratch.path])
        #expect(after.status == 0 && after.output.hasSuffix("clean"), "\(after.output)")
    }

    /// A pool whose log was written before records had checksums (format
    /// PFSLOG01: plain committed count, no CRC) mounts with every file, and
    /// the mount rewrites its log in the second format.
    @Test func aLogOfTheFirstFormatIsReadAndRewritten() throws {
        let scratch = Scratch()
        let (expected, _) = try PoolDamageFuzzTests.makePool(scratch)
        var pool = try Pool.open(name: "fuzz", at: scratch.path)
        let fs = try FileSystem(pool: pool)
        // The state as records of the first format: each record without its CRC and flag.
        let records = fs.snapshot().flatMap { change -> [UInt8] in
            var bytes = Array(RecordWriter.encode(change).dropLast(4))
            bytes[4] &= ~RecordReader.checked
            withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
            return bytes
        }
        fs.unmount()
        let head = pool.rootAddress
        #expect(records.count < (1 << 20) - MetadataLog.headerSize)
        var header = [UInt8](repeating: 0, count: MetadataLog.headerSize)
        for (field, value) in [(MetadataLog.Field.magic, MetadataLog.firstMagic), (MetadataLog.Field.committed, UInt64(records.count)),
                               (MetadataLog.Field.clean, 1)] {
            withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(Int(field)..<Int(field) + 8, with: $0) }
        }
        try pool.write(at: head, bytes: header + records)
        pool.close()
        #expect(PoolDamageFuzzTests.mount(scratch, expected: expected, what: "the first format") == "mounted")
        pool = try Pool.open(name: "fuzz", at: scratch.path)
        #expect(try pool.load(at: pool.rootAddress) == MetadataLog.magic, "rewritten in the second format")
        pool.close()
        // In a chunk of the second format, a record without a CRC is damage.
        let refusal = records.withUnsafeBytes { all -> String? in
            let length = Int(all.loadUnaligned(as: UInt32.self))
            do {
                _ = try RecordReader.decode(UnsafeRawBufferPointer(rebasing: all[0..<length]))
                return nil
            } catch {
                return (error as? RecordReader.Malformed)?.reason
            }
        }
        #expect(refusal == "it has no checksum")
    }

    /// "mounted" when the pool mounts and its tree is the expected one, or
    /// the one-line refusal.
    static func mount(_ scratch: Scratch, expected: [String], what: String) -> String {
        do {
            // As `poolfs mount` does: checked first, without writing.
            let before = try? Data(contentsOf: URL(fileURLWithPath: scratch.file("fuzz", "shelf-0")))
            do {
                try FileSystem.checkBeforeMount(name: "fuzz", at: scratch.path)
            } catch {
                let after = try? Data(contentsOf: URL(fileURLWithPath: scratch.file("fuzz", "shelf-0")))
                #expect(after == before, "a refused mount wrote to the pool, \(what)")
                throw error
            }
            let pool = try Pool.open(name: "fuzz", at: scratch.path)
            defer { pool.close() }
            let fs = try FileSystem(pool: pool)
            defer { fs.unmount() }
            let tree = try describe(fs)
            #expect(tree == expected, "a mount after \(what) shows other files")
            return "mounted"
        } catch {
            let line = "\(error)"
            #expect(!line.contains("\n") && !line.isEmpty, "\(what): \(line)")
            return line.contains("damaged") ? "refused: damaged" : "refused: \(line.prefix(60))"
        }
    }
}
