import Foundation
import Testing
import TestSupport
@testable import PoolCore

@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct MountTests {
    @Test func thePoolShowsAsFiles() throws {
        let mounted = try MountedPool { pool in
            let heap = try pool.createHeap(name: "objects")
            _ = try heap.allocate(size: 100)
            try heap.setPlacement(.bind([0]))
            let region = try pool.createRegion(name: "weights", size: 10_000)
            try region.withUnsafeMutableBytes { bytes in
                for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i * 7) }
            }
        }
        #expect(mounted.list(".pool") == ["heaps", "info", "info.json", "regions", "shelves", "snapshots"])
        #expect(mounted.text(".pool/info")?.hasPrefix("pool       mnt\n") == true)
        let json = try #require(mounted.text(".pool/info.json"))
        let info = try JSONDecoder().decode(PoolInfo.self, from: Data(json.utf8))
        // The mount's files take their pages from heap `default`, made at mount.
        #expect(info.name == "mnt" && Set(info.heaps.map(\.name)) == ["default", "objects"])
        #expect(mounted.list(".pool/heaps") == ["default", "objects"])
        #expect(mounted.list(".pool/heaps/objects") == ["policy", "stats"])
        #expect(mounted.text(".pool/heaps/objects/policy") == "bind 0\n")
        #expect(mounted.text(".pool/heaps/objects/stats")?.contains("objects        1\n") == true)
        #expect(mounted.list(".pool/shelves") == ["0"])
        #expect(mounted.text(".pool/shelves/0")?.hasPrefix("medium dram\nsize 32M\n") == true)
        #expect(mounted.list(".pool/regions") == ["weights"])
        let bytes = try #require(FileManager.default.contents(atPath: mounted.mountpoint + "/.pool/regions/weights"))
        #expect(bytes.count == 10_000)
        #expect(bytes.enumerated().allSatisfy { $0.element == UInt8(truncatingIfNeeded: $0.offset * 7) })
        #expect(mounted.text(".pool/nothing") == nil)
    }

    @Test func countersAreLiveAndDfIsRight() throws {
        let mounted = try MountedPool()
        var st = statvfs()
        #expect(statvfs(mounted.mountpoint, &st) == 0)
        let pool = try Pool.open(name: "mnt", at: mounted.scratch.path)
        let info = pool.info()
        #expect(UInt64(st.f_blocks) * UInt64(st.f_frsize) == info.capacityBytes)
        #expect(UInt64(st.f_bavail) * UInt64(st.f_frsize) == info.freeBytes)
        // A library user changes the pool while it is mounted; the files follow.
        try pool.createHeap(name: "later")
        #expect(mounted.list(".pool/heaps") == ["default", "later"])
        let before = pool.info().usedBytes
        _ = try pool.allocatePages(count: 100)
        #expect(pool.info().usedBytes == before + 400 << 10)
        let used = "used       \(ByteSize.format(before + 400 << 10))"
        #expect(mounted.text(".pool/info")?.contains(used) == true, "\(mounted.text(".pool/info") ?? "")")
        pool.close()
    }

    @Test func oneMountAtATimeAndClearErrors() throws {
        let mounted = try MountedPool()
        let poolfs = builtExecutable("poolfs")
        // Without -f: were the second mount wrongly let through, it would go to
        // the background (not block the test) and be taken away here.
        let elsewhere = mounted.scratch.path + "/second"
        try SystemCall.makeDirectories(elsewhere)
        defer { _ = try? run("fusermount3", ["-u", "-z", elsewhere]) }
        let second = try run(poolfs, ["mount", "mnt", elsewhere, "--path", mounted.scratch.path])
        #expect(second.status == 1)
        #expect(second.output == "poolfs: pool 'mnt' is already mounted by pid \(mounted.daemon.pid)")
        let missing = try run(poolfs, ["mount", "mnt", mounted.scratch.path + "/nope", "--path", mounted.scratch.path])
        #expect(missing.status == 1 && missing.output.contains("No such file or directory"), "\(missing.output)")
        let onFile = try run(poolfs, ["mount", "mnt", mounted.scratch.path + "/mnt/shelf-0", "--path", mounted.scratch.path])
        #expect(onFile.status == 1 && onFile.output.contains("Not a directory"), "\(onFile.output)")
        let unknown = try run(poolfs, ["mount", "nope", mounted.mountpoint, "--path", mounted.scratch.path])
        #expect(unknown.output.hasPrefix("poolfs: pool 'nope' does not exist"), "\(unknown.output)")
        // Writing is refused, not crashed on.
        #expect(open(mounted.mountpoint + "/.pool/info", O_WRONLY) == -1 && errno == EACCES)
    }

    @Test func heapsAreMadeAndPlacedThroughTheTree() throws {
        let mounted = try MountedPool()
        let heaps = mounted.mountpoint + "/.pool/heaps"
        #expect(mkdir(heaps + "/fast", 0o755) == 0)
        #expect(mkdir(heaps + "/fast", 0o755) == -1 && errno == EEXIST)
        #expect(mkdir(heaps + "/bad name", 0o755) == -1 && errno == EINVAL)
        #expect(mkdir(mounted.mountpoint + "/.pool/other", 0o755) == -1 && errno == EPERM)
        #expect(mounted.text(".pool/heaps/fast/policy") == "default\n")
        try "interleave 0\n".write(toFile: heaps + "/fast/policy", atomically: false, encoding: .utf8)
        #expect(mounted.text(".pool/heaps/fast/policy") == "interleave 0\n")
        #expect(throws: (any Error).self) {
            try "bind 999\n".write(toFile: heaps + "/fast/policy", atomically: false, encoding: .utf8)
        }
        let pool = try Pool.open(name: "mnt", at: mounted.scratch.path)
        let heap = try pool.openHeap(name: "fast")
        #expect(heap.placement == .interleave([0]))
        let object = try heap.allocate(size: 64)
        #expect(rmdir(heaps + "/fast") == -1 && errno == ENOTEMPTY)
        try heap.free(object)
        pool.close()
        #expect(rmdir(heaps + "/fast") == 0)
        #expect(mounted.list(".pool/heaps") == ["default"])
        // A full heap table is a full pool, as through the C API: ENOSPC (it was EINVAL).
        var made = 1
        while made < 200, mkdir(heaps + "/h\(made)", 0o755) == 0 { made += 1 }
        #expect(errno == ENOSPC && made == Layout.Heaps.capacity, "\(made) heaps, errno \(errno)")
    }

    @Test func regionsAreWrittenAndRemovedThroughTheTree() throws {
        let mounted = try MountedPool { pool in try pool.createRegion(name: "window", size: 8192) }
        let path = mounted.mountpoint + "/.pool/regions/window"
        let fd = open(path, O_WRONLY)
        #expect(fd >= 0)
        let text = Array("written through the mount".utf8)
        #expect(pwrite(fd, text, text.count, 100) == text.count)
        #expect(pwrite(fd, text, text.count, 8192) == -1 && errno == EFBIG)
        close(fd)
        let pool = try Pool.open(name: "mnt", at: mounted.scratch.path)
        let region = try pool.openRegion(name: "window")
        #expect(try pool.read(at: region.address.advanced(by: 100), count: text.count) == text)
        // The library writes; the file shows it at once.
        try pool.write(at: region.address, bytes: Array("live".utf8))
        let bytes = try #require(FileManager.default.contents(atPath: path))
        #expect(Array(bytes.prefix(4)) == Array("live".utf8))
        pool.close()
        // Made through the tree: a truncate gives a new region file its size.
        let made = mounted.mountpoint + "/.pool/regions/made"
        #expect(try run("truncate", ["-s", "64K", made]).status == 0)
        let madeFD = open(made, O_RDWR)
        #expect(madeFD >= 0 && ftruncate(madeFD, 1 << 20) == -1 && errno == EINVAL)
        let mapping = mmap(nil, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, madeFD, 0)
        let mapped = try #require(mapping == MAP_FAILED ? nil : mapping, "mmap: \(String(cString: strerror(errno)))")
        mapped.storeBytes(of: 0x1234_5678, toByteOffset: 4096, as: UInt32.self)
        #expect(msync(mapped, 65536, MS_SYNC) == 0 && munmap(mapped, 65536) == 0)
        close(madeFD)
        let library = try Pool.open(name: "mnt", at: mounted.scratch.path)
        let madeRegion = try library.openRegion(name: "made")
        #expect(madeRegion.size == 65536)
        #expect(try library.load(at: madeRegion.address.advanced(by: 4096)) & 0xffff_ffff == 0x1234_5678)
        library.close()
        #expect(unlink(made) == 0)
        #expect(mounted.list(".pool/regions") == ["window"])
        #expect(unlink(mounted.mountpoint + "/.pool/info") == -1 && errno == EPERM)
        #expect(unlink(path) == 0)
        #expect(mounted.list(".pool/regions").isEmpty)
        let reopened = try Pool.open(name: "mnt", at: mounted.scratch.path)
        #expect(reopened.regions().isEmpty)
        reopened.close()
    }

    @Test func unmountingEndsTheDaemon() throws {
        let mounted = try MountedPool()
        let result = try run("fusermount3", ["-u", mounted.mountpoint])
        #expect(result.status == 0, "\(result.output)")
        #expect(mounted.daemon.wait() == 0)
        // The pool is free again: it can be checked (no process has it open).
        #expect(try Pool.check(name: "mnt", at: mounted.scratch.path).isClean)
    }

    /// The helper mount(8) runs for `mount -t fuse.poolfs` and fstab lines,
    /// called the way mount(8) calls it.
    @Test func theMountHelperTakesMountsArguments() throws {
        let scratch = Scratch()
        try Pool.create(name: "fstab", size: 16 << 20, pageSize: 4096, at: scratch.path).close()
        let mountpoint = scratch.path + "/mnt"
        try SystemCall.makeDirectories(mountpoint)
        let result = try run(repositoryRoot + "/scripts/mount.poolfs",
                             ["fstab", mountpoint, "-o", "rw,defaults,noauto,path=\(scratch.path)", "-n"],
                             environment: ["POOLFS": builtExecutable("poolfs")])
        #expect(result.status == 0, "\(result.output)")
        defer { _ = try? run("fusermount3", ["-u", "-z", mountpoint]) }
        let info = try String(contentsOfFile: mountpoint + "/.pool/info", encoding: .utf8)
        #expect(info.hasPrefix("pool       fstab\n"))
        // The daemon (forked by the mount) takes part in freezes with a
        // thread of its own, and its slot names it.
        let pool = try Pool.open(name: "fstab", at: scratch.path)
        let daemon = pool.info().processes.first { $0 != getpid() } ?? 0
        #expect(daemon > 0 && kill(daemon, 0) == 0)
        try pool.createRegion(name: "r", size: 1 << 20)
        #expect(throws: Never.self) { try pool.cloneRegion(name: "r", as: "copy") }
        pool.close()
        #expect(try run("umount", [mountpoint]).status == 0)
        // And it ends when unmounted, its thread stopped.
        #expect(eventually(within: 10) { kill(daemon, 0) != 0 || processState(daemon) == "Z" }, "the daemon \(daemon) lingers")
    }

    @Test func sigtermUnmounts() throws {
        let mounted = try MountedPool()
        kill(mounted.daemon.pid, SIGTERM)
        #expect(mounted.daemon.wait() == 0)
        let mounts = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
        #expect(!mounts.contains(mounted.mountpoint))
    }
}

/// A process's state letter from /proc (Z: a zombie, gone but not reaped).
func processState(_ pid: Int32) -> String {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return "" }
    return String(stat[stat.index(close, offsetBy: 2)])
}
