import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Regions have an owner and a mode, as files do: with `-o allow_other`
/// another user reads a region's bytes only when its mode lets them.
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct RegionAccessMountTests {
    @Test func aRegionIsItsCreatorsUntilChmodOrChownSaysOtherwise() throws {
        let mounted = try MountedPool(options: ["-o", "allow_other"])
        // mkdtemp's 0700 would keep the other user from the mount point.
        #expect(chmod(mounted.scratch.path, 0o755) == 0)
        let file = mounted.path(".pool/regions/shared")
        #expect(store([], file, flags: O_WRONLY | O_CREAT))
        #expect(truncate(file, 64 << 10) == 0)
        func access() -> (mode: UInt32, uid: UInt32)? { status(file).map { ($0.st_mode & 0o7777, $0.st_uid) } }
        func readsAsNobody() -> Bool {
            (try? run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "head", "-c", "1", file]).status) == 0
        }
        #expect(access()?.mode == 0o600 && access()?.uid == 0, "\(String(describing: access()))")
        #expect(!readsAsNobody(), "a new region is its creator's alone")
        #expect(chmod(file, 0o644) == 0)
        #expect(access()?.mode == 0o644)
        #expect(readsAsNobody())
        #expect(chown(file, 65534, 65534) == 0 && chmod(file, 0o600) == 0)
        #expect(access()?.uid == 65534 && access()?.mode == 0o600)
        #expect(readsAsNobody(), "now the other user's")
        // Kept in the pool: the library and the command line see the same.
        let pool = try Pool.open(name: mounted.name, at: mounted.scratch.path)
        #expect(try pool.openRegion(name: "shared").access == RegionAccess(uid: 65534, gid: 65534, mode: 0o600))
        pool.close()
        let poolfs = builtExecutable("poolfs")
        let made = try run(poolfs, ["region", "create", mounted.name, "other", "--size", "64K", "--mode", "640",
                                    "--path", mounted.scratch.path])
        #expect(made.status == 0, "\(made.output)")
        let listed = try run(poolfs, ["region", "list", mounted.name, "--path", mounted.scratch.path]).output
        #expect(listed.contains("\t600 65534:65534") && listed.contains("\t640 0:0"), "\(listed)")
        #expect(try run(poolfs, ["region", "chown", mounted.name, "other", "7:8", "--path", mounted.scratch.path]).status == 0)
        #expect(status(mounted.path(".pool/regions/other")).map { ($0.st_uid, $0.st_gid, $0.st_mode & 0o7777) }
                .map { $0 == (7, 8, 0o640) } == true)
    }
}

/// `.pool/` takes permission bits like any directory: chmod and chown of
/// it and its fixed entries are kept, across a remount too, and the
/// kernel checks them.
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct ControlAccessMountTests {
    @Test func chmodAndChownOfPoolDirectoriesAreKeptAndChecked() throws {
        let mounted = try MountedPool(options: ["-o", "allow_other"])
        #expect(chmod(mounted.scratch.path, 0o755) == 0)
        let control = mounted.path(".pool")
        func listsAsNobody() -> Bool {
            (try? run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "ls", control + "/heaps"]).status) == 0
        }
        #expect(listsAsNobody(), "0755 at first")
        #expect(chmod(control, 0o700) == 0, "errno \(errno)")
        #expect(status(control).map { $0.st_mode & 0o7777 } == 0o700)
        #expect(!listsAsNobody(), "0700: the other user cannot pass")
        #expect(chown(control + "/heaps", 65534, 65534) == 0)
        try mounted.remount()
        #expect(status(control).map { $0.st_mode & 0o7777 } == 0o700, "kept across a remount")
        #expect(status(control + "/heaps").map { ($0.st_uid, $0.st_gid) }.map { $0 == (65534, 65534) } == true)
        // Hidden from the root's xattrs, and not a user's to set.
        let names = try run("getfattr", ["-d", "-m", "-", mounted.mountpoint]).output
        #expect(!names.contains("poolfs.control"), "\(names)")
        #expect(try run("setfattr", ["-n", "trusted.poolfs.control", "-v", "x", mounted.mountpoint]).status != 0)
        #expect(chmod(control, 0o755) == 0 && listsAsNobody())
    }
}
