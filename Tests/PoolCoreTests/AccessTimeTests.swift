import Foundation
import Testing
@testable import PoolCore

/// Access times as on tmpfs (relatime): a read moves atime when it is not
/// later than mtime or ctime; reads change no ctime; the time survives a
/// remount; `-o noatime` leaves it alone.
@Suite(.serialized) struct AccessTimeTests {
    struct Times: Equatable {
        let access, modify, change: timespec
        static func == (a: Times, b: Times) -> Bool {
            [a.access, a.modify, a.change].map { [$0.tv_sec, $0.tv_nsec] }
                == [b.access, b.modify, b.change].map { [$0.tv_sec, $0.tv_nsec] }
        }
    }

    static func times(_ path: String) -> Times? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Times(access: info.st_atim, modify: info.st_mtim, change: info.st_ctim)
    }

    static func later(_ a: timespec, than b: timespec) -> Bool {
        (a.tv_sec, a.tv_nsec) > (b.tv_sec, b.tv_nsec)
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
        #expect(AccessTimeTests.later(read.access, than: made.access))
        #expect(read.modify.tv_nsec == made.modify.tv_nsec && read.change.tv_nsec == made.change.tv_nsec)

        // Later than mtime and ctime now: another read leaves it.
        _ = AccessTimeTests.read(file)
        #expect(AccessTimeTests.times(file) == read)

        // A write makes the next read move it again.
        let handle = try #require(FileHandle(forWritingAtPath: file))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("second\n".utf8))
        try handle.close()
        let written = try #require(AccessTimeTests.times(file))
        #expect(written.access.tv_sec == read.access.tv_sec && written.access.tv_nsec == read.access.tv_nsec)
        _ = AccessTimeTests.read(file)
        let reread = try #require(AccessTimeTests.times(file))
        #expect(AccessTimeTests.later(reread.access, than: written.modify))

        // Listing a directory is reading it.
        let directoryBefore = try #require(AccessTimeTests.times(directory))
        #expect(mounted.list("d") == ["inside"])
        let directoryAfter = try #require(AccessTimeTests.times(directory))
        #expect(AccessTimeTests.later(directoryAfter.access, than: directoryBefore.access))

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
}
