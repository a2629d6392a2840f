import Foundation
import Testing
import TestSupport
@testable import PoolCore
import PoolFS

/// Access times as on tmpfs (relatime): a read moves atime when it is not
/// later than mtime or ctime; reads change no ctime; the time survives a
/// remount; `-o noatime` leaves it alone, `-o nodiratime` directories'.
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct AccessTimeTests {
    struct Times: Equatable {
        let access, modify, change: Timestamp
    }

    static func times(_ path: String) -> Times? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Times(access: Timestamp(info.st_atim), modify: Timestamp(info.st_mtim), change: Timestamp(info.st_ctim))
    }

    static func read(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    @Test func readsMoveAccessTimesAsRelatimeDoes() throws {
        let mounted = try MountedPool()
        let file = mounted.path("f"), directory = mounted.path("d")
        try "first\n".write(toFile: file, atomically: false, encoding: .utf8)
        #expect(mkdir(directory, 0o755) == 0)
        #expect(FileManager.default.createFile(atPath: directory + "/inside", contents: Data()))
        let made = try #require(AccessTimeTests.times(file))

        #expect(AccessTimeTests.read(file) == Data("first\n".utf8))
        let read = try #require(AccessTimeTests.times(file))
        #expect(read.access > made.access)
        #expect(read.modify == made.modify && read.change == made.change)

        // Later than mtime and ctime now: another read leaves it.
        _ = AccessTimeTests.read(file)
        #expect(AccessTimeTests.times(file) == read)

        // A write makes the next read move it again.
        let handle = try #require(FileHandle(forWritingAtPath: file))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("second\n".utf8))
        try handle.close()
        let written = try #require(AccessTimeTests.times(file))
        #expect(written.access == read.access)
        _ = AccessTimeTests.read(file)
        let reread = try #require(AccessTimeTests.times(file))
        #expect(reread.access > written.modify)

        // Listing a directory is reading it.
        let directoryBefore = try #require(AccessTimeTests.times(directory))
        #expect(mounted.list("d") == ["inside"])
        #expect(try #require(AccessTimeTests.times(directory)).access > directoryBefore.access)

        try mounted.remount()
        #expect(AccessTimeTests.times(file) == reread)
    }

    @Test func noatimeLeavesAccessTimesAlone() throws {
        let mounted = try MountedPool(options: ["-o", "noatime"])
        let file = mounted.path("f")
        try "bytes\n".write(toFile: file, atomically: false, encoding: .utf8)
        let made = try #require(AccessTimeTests.times(file))
        #expect(AccessTimeTests.read(file) == Data("bytes\n".utf8))
        #expect(AccessTimeTests.times(file) == made)
    }

    @Test func nodiratimeLeavesDirectoriesAlone() throws {
        let mounted = try MountedPool(options: ["-o", "nodiratime"])
        let file = mounted.path("d/f")
        #expect(mkdir(mounted.path("d"), 0o755) == 0)
        try "bytes\n".write(toFile: file, atomically: false, encoding: .utf8)
        let directory = try #require(AccessTimeTests.times(mounted.path("d")))
        let made = try #require(AccessTimeTests.times(file))
        #expect(mounted.list("d") == ["f"])
        #expect(AccessTimeTests.times(mounted.path("d")) == directory)
        // Files still follow relatime.
        _ = AccessTimeTests.read(file)
        #expect(try #require(AccessTimeTests.times(file)).access > made.access)
    }
}
