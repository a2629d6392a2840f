import Testing
import TestSupport
@testable import PoolCore
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// unistd.h's SEEK_DATA and SEEK_HOLE, which Glibc's module shows only under _GNU_SOURCE.
private let seekData: Int32 = 3, seekHole: Int32 = 4

/// lseek's SEEK_DATA and SEEK_HOLE, and rename's RENAME_WHITEOUT, on the mount.
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct SparseMountTests {
    @Test func seekDataAndSeekHoleFollowTheRuns() throws {
        let mounted = try MountedPool(size: 64 << 20)
        let path = mounted.path("sparse")
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        defer { close(fd) }
        let page = 4096, tib: off_t = 1 << 40
        // Data at 1 MiB and 1 MiB + 8 KiB (two runs with a page between), and at 1 TiB - 4 KiB.
        for at in [1 << 20, (1 << 20) + 2 * page] { #expect(pwrite(fd, [UInt8](repeating: 7, count: page), page, off_t(at)) == page) }
        #expect(pwrite(fd, [UInt8](repeating: 9, count: page), page, tib - off_t(page)) == page)
        #expect(ftruncate(fd, tib + (1 << 20)) == 0)
        let expected: [(off_t, Int32, off_t)] = [
            (0, seekData, 1 << 20), (0, seekHole, 0),
            ((1 << 20) + 5, seekData, (1 << 20) + 5), ((1 << 20) + 5, seekHole, (1 << 20) + off_t(page)),
            ((1 << 20) + off_t(page), seekData, (1 << 20) + 2 * off_t(page)),
            ((1 << 20) + 3 * off_t(page), seekData, tib - off_t(page)),
            (tib - 1, seekHole, tib),
            (tib, seekHole, tib),
        ]
        for (offset, whence, answer) in expected {
            #expect(lseek(fd, offset, whence) == answer, "lseek(\(offset), \(whence == seekData ? "SEEK_DATA" : "SEEK_HOLE"))")
        }
        // No data after the last run, and nothing at or past the end.
        #expect(lseek(fd, tib, seekData) == -1 && errno == ENXIO)
        #expect(lseek(fd, tib + (1 << 20), seekHole) == -1 && errno == ENXIO)
        // cp --sparse=always copies the 1 TiB file by its runs, not its zeros: 12 KiB of data.
        let copy = try run("cp", ["--sparse=always", path, mounted.path("copy")])
        #expect(copy.status == 0, "\(copy.output)")
        #expect(status(mounted.path("copy"))?.st_size == tib + (1 << 20))
        #expect((status(mounted.path("copy"))?.st_blocks ?? 0) * 512 <= 3 * page, "\(status(mounted.path("copy"))?.st_blocks ?? -1)")
    }

    @Test func renameWhiteoutLeavesAWhiteoutThatSurvivesAKill() throws {
        let mounted = try MountedPool()
        #expect(store([1, 2, 3], mounted.path("upper")))
        let renameWhiteout: UInt32 = 4
        #expect(renameat2(AT_FDCWD, mounted.path("upper"), AT_FDCWD, mounted.path("moved"), renameWhiteout) == 0,
                "errno \(errno)")
        func check(_ moment: String) {
            let whiteout = status(mounted.path("upper"))
            #expect(whiteout.map { $0.st_mode & S_IFMT } == S_IFCHR && whiteout?.st_rdev == 0, "\(moment)")
            #expect(contents(mounted.path("moved")) == [1, 2, 3], "\(moment)")
        }
        check("live")
        // With RENAME_EXCHANGE it makes no sense: EINVAL, as on tmpfs.
        #expect(renameat2(AT_FDCWD, mounted.path("moved"), AT_FDCWD, mounted.path("upper"), renameWhiteout | 2) == -1
                && errno == EINVAL)
        mounted.killDaemon()
        try mounted.remount()
        check("after a kill")
        // overlayfs over an upper directory on the mount removes a lower file with one.
        let lower = mounted.scratch.path + "/lower"
        #expect(mkdir(lower, 0o755) == 0 && store([5], lower + "/gone"))
        for directory in ["upperdir", "work", "merged"] { #expect(mkdir(mounted.path(directory), 0o755) == 0) }
        let merged = mounted.path("merged")
        let mount = try run("mount", ["-t", "overlay", "overlay", "-o",
                                      "lowerdir=\(lower),upperdir=\(mounted.path("upperdir")),workdir=\(mounted.path("work"))", merged])
        #expect(mount.status == 0, "\(mount.output)")
        guard mount.status == 0 else { return }
        defer { _ = try? run("umount", [merged]) }
        #expect(contents(merged + "/gone") == [5])
        #expect(rename(merged + "/gone", merged + "/kept") == 0, "errno \(errno)")
        #expect(status(merged + "/gone") == nil && contents(merged + "/kept") == [5])
    }
}
