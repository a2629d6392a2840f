import Testing
import TestSupport
@testable import PoolCore
@testable import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// A full pool can always be emptied: the log keeps a reserve for the
/// changes that make room, as ext4 and btrfs keep one for deletes.
@Suite struct FullPoolTests {
    @Test func aPoolFullOfEmptyFilesEmptiesAgain() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "full", size: 6 << 20, pageSize: 4096, at: scratch.path)
        defer { pool.close() }
        let fs = try FileSystem(pool: pool)
        defer { fs.unmount() }
        let caller = FileSystem.Caller(uid: 0, gid: 0)
        let directory = UInt64(try fs.create(parent: 1, name: "d", mode: S_IFDIR | 0o755, caller: caller).st_ino)
        // Metadata only, with xattrs and long names, until the pool says no.
        var names: [FileName] = []
        var refusal: Error?
        while names.count < 200_000 {
            let name = FileName("file-\(names.count)-" + String(repeating: "x", count: names.count % 200))
            do {
                let file = UInt64(try fs.create(parent: directory, name: name, mode: S_IFREG | 0o644, caller: caller).st_ino)
                names.append(name)
                if names.count % 3 == 0 { try fs.setXattr(file, name: "user.tag", value: [1, 2, 3], flags: 0) }
            } catch {
                refusal = error
                break
            }
        }
        #expect(refusal as? FileSystemError == .noSpace, "\(String(describing: refusal))")
        #expect(names.count > 1000)
        // Full: every kind of removal still goes through.
        if let first = names.first {
            let renamed: FileName = "renamed"
            try fs.rename(from: directory, name: first, to: 1, newName: renamed, noReplace: false, exchange: false)
            names[0] = renamed
        }
        var failed: [Int] = []
        for (index, name) in names.enumerated() {
            do { try fs.remove(parent: index == 0 ? 1 : directory, name: name, directory: false) } catch { failed.append(index) }
        }
        #expect(failed.isEmpty, "\(failed.count) of \(names.count) removals failed, from \(failed.first ?? -1)")
        try fs.remove(parent: 1, name: "d", directory: true)
        // And the room they took is the pool's again.
        let file = UInt64(try fs.create(parent: 1, name: "after", mode: S_IFREG | 0o644, caller: caller).st_ino)
        _ = try [UInt8](repeating: 5, count: 1 << 20).withUnsafeBytes { try fs.write(file, offset: 0, from: $0) }
    }
}

/// A flush that fails (an msync the kernel could not write back) puts the
/// file system in a failed state, as ext4's errors=remount-ro: the change
/// that met it fails with EIO, not ENOSPC; after it writes, changes and
/// fsync fail with EIO, reads go on, and `.pool/info` says why.
@Suite struct FailedStateTests {
    @Test(arguments: [Medium.dram, .pmem])
    func afterAFailedFlushChangesAndFsyncFailWithEIOAndReadsGoOn(medium: Medium) throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "failing", size: 16 << 20, pageSize: 4096, medium: medium, at: scratch.path)
        defer { pool.close() }
        let fs = try FileSystem(pool: pool)
        defer { fs.unmount() }
        let caller = FileSystem.Caller(uid: 0, gid: 0)
        let file = UInt64(try fs.create(parent: 1, name: "f", mode: S_IFREG | 0o644, caller: caller).st_ino)
        func write(_ byte: UInt8, count: Int, at offset: UInt64) throws {
            _ = try [UInt8](repeating: byte, count: count).withUnsafeBytes { try fs.write(file, offset: offset, from: $0) }
        }
        try write(1, count: 100, at: 0)
        let tree = ControlTree(pool: pool, fileSystem: fs)
        #expect(String(decoding: tree.contents(ControlTree.info) ?? [], as: UTF8.self).contains("state      ok"))

        // Where a failed msync of the shelf file is recorded.
        pool.core.shelves[0]!.file.notePersistFailure(EIO)
        #expect(throws: FileSystemError.io) { try write(2, count: 1 << 16, at: 100) }
        #expect(fs.failure?.contains("msync") == true, "\(fs.failure ?? "no failure")")
        #expect(throws: FileSystemError.io) { try write(3, count: 10, at: 0) }
        #expect(throws: FileSystemError.io) { try fs.sync(file) }
        #expect(throws: FileSystemError.io) { _ = try fs.create(parent: 1, name: "g", mode: S_IFREG | 0o644, caller: caller) }
        #expect(throws: FileSystemError.io) { try fs.remove(parent: 1, name: "f", directory: false) }
        let bytes = try fs.withReadSegments(file, offset: 0, size: 1000) { segments in
            segments.flatMap { Array(UnsafeRawBufferPointer(start: $0.iov_base, count: $0.iov_len)) }
        }
        #expect(bytes == [UInt8](repeating: 1, count: 100), "the file as it was before the failed write")
        let info = String(decoding: tree.contents(ControlTree.info) ?? [], as: UTF8.self)
        #expect(info.contains("state      failed: ") && info.contains("msync"), "\(info)")
    }
}
