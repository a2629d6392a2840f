import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Damaged, truncated, foreign and newer pools are refused with a message
/// naming the cause, and not a byte of them is changed.
@Suite struct DamageTests {
    func contents(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while case let n = read(fd, &chunk, chunk.count), n > 0 { bytes += chunk[..<n] }
        return bytes
    }

    func patch(_ path: String, at offset: Int, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY)
        _ = pwrite(fd, bytes, bytes.count, off_t(offset))
        close(fd)
    }

    func makePool(_ scratch: Scratch, shelves: Int = 1) throws {
        let pool = try Pool.create(name: "d", size: 4 << 20, pageSize: 4096, at: scratch.path)
        for _ in 1..<shelves { try pool.grow(by: 2 << 20) }
        let run = try pool.allocatePages(count: 3)
        try pool.write(at: run, bytes: [1, 2, 3])
        pool.close()
    }

    /// Opening fails with a message containing `expected`, and changes nothing.
    func expectRefused(_ scratch: Scratch, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let files = directoryNames(scratch.path + "/d").sorted()
        let before = files.map { contents(scratch.file("d", $0)) }
        do {
            _ = try Pool.open(name: "d", at: scratch.path)
            Issue.record("the damaged pool opened", sourceLocation: sourceLocation)
        } catch {
            let message = "\(error)"
            #expect(message.contains(expected), "\(message)", sourceLocation: sourceLocation)
            #expect(!message.contains("\n"), sourceLocation: sourceLocation)
        }
        #expect(throws: PoolError.self, sourceLocation: sourceLocation) {
            try Pool.check(name: "d", at: scratch.path)
        }
        let after = files.map { contents(scratch.file("d", $0)) }
        #expect(before == after, "the pool files changed", sourceLocation: sourceLocation)
    }

    @Test func wrongMagic() throws {
        let scratch = Scratch()
        try makePool(scratch)
        patch(scratch.file("d", "shelf-0"), at: 0, Array("NOTAPOOL".utf8))
        expectRefused(scratch, "bad magic")
    }

    @Test func superblockChecksum() throws {
        let scratch = Scratch()
        try makePool(scratch)
        patch(scratch.file("d", "shelf-0"), at: Layout.Superblock.offset + Layout.Superblock.name, [0x41])
        expectRefused(scratch, "superblock checksum mismatch")
    }

    @Test func newerVersion() throws {
        let scratch = Scratch()
        try makePool(scratch)
        patch(scratch.file("d", "shelf-0"), at: Layout.Superblock.offset + Layout.Superblock.version, [99, 0, 0, 0])
        expectRefused(scratch, "format version 99, newer than this poolfs supports (1)")
    }

    @Test func truncatedShelfZero() throws {
        let scratch = Scratch()
        try makePool(scratch)
        truncate(scratch.file("d", "shelf-0"), 3 << 20)
        expectRefused(scratch, "truncated")
        truncate(scratch.file("d", "shelf-0"), 100)
        expectRefused(scratch, "truncated")
    }

    @Test func truncatedAndMissingShelves() throws {
        let scratch = Scratch()
        try makePool(scratch, shelves: 2)
        truncate(scratch.file("d", "shelf-1"), 1 << 20)
        expectRefused(scratch, "truncated")
        unlink(scratch.file("d", "shelf-1"))
        expectRefused(scratch, "shelf-1 is missing")
    }

    @Test func shelfFromAnotherPool() throws {
        let scratch = Scratch()
        try makePool(scratch, shelves: 2)
        let other = try Pool.create(name: "other", size: 4 << 20, pageSize: 4096, at: scratch.path)
        try other.grow(by: 2 << 20)
        other.close()
        rename(scratch.file("other", "shelf-1"), scratch.file("d", "shelf-1"))
        expectRefused(scratch, "belongs to another pool")
    }

    @Test func emptyShelfFile() throws {
        let scratch = Scratch()
        try makePool(scratch)
        truncate(scratch.file("d", "shelf-0"), 0)
        expectRefused(scratch, "empty")
    }
}
