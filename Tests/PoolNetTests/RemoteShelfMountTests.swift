import Foundation
import PoolCore
import Testing
import TestSupport
@testable import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// A mounted pool with a remote shelf on a node, and a directory `far`
/// whose files' pages go there (heap `cold`, placement `remote`).
final class RemoteMount {
    let served: ServedPool
    let mounted: MountedPool
    let far: String

    init(node: String? = nil, options: [String] = [], served: ServedPool? = nil) throws {
        RemoteShelves.install()
        let served = try served ?? ServedPool(size: "128M", pageSize: "4K")
        self.served = served
        let address = node ?? served.address
        mounted = try MountedPool(name: "near", size: 32 << 20, options: options) { pool in
            try pool.grow(by: 32 << 20) { shelf, bytes in
                try RemoteShelves.reserve(on: address, keyFile: served.keyFile, poolUUID: pool.uuid, shelf: shelf, bytes: bytes)
            }
            try pool.createHeap(name: "cold").setPlacement(.remote(nil))
        }
        far = mounted.path("far")
        guard mkdir(far, 0o755) == 0, setxattr(far, "user.poolfs.heap", "cold", 4, 0) == 0 else {
            throw PoolError.system(call: "mkdir far", path: far, errno: errno)
        }
    }

    /// `.pool/shelves/1`'s `key value` lines.
    func shelf() -> [String: String] {
        var fields: [String: String] = [:]
        for line in (mounted.text(".pool/shelves/1") ?? "").split(separator: "\n") {
            guard let space = line.firstIndex(of: " ") else { continue }
            fields[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        return fields
    }

    func number(_ field: String) -> Int { Int(shelf()[field] ?? "") ?? -1 }

    /// Forgets the cache while unmounted: what reads back after comes from the node.
    func remountCold() throws {
        mounted.unmount()
        unlink(mounted.scratch.path + "/near/shelf-1.cache")
        try mounted.remount()
    }
}

/// Seconds `body` took.
private func timed(_ body: () -> Void) -> Double {
    let start = Deadline.now()
    body()
    return Double(Deadline.now() - start) / 1e9
}

/// A read's errno, 0 when it read the whole file.
private func readErrno(_ path: String) -> Int32 {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 { return errno }
        if n == 0 { return 0 }
    }
}

@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse"))
struct RemoteShelfMountTests {
    /// A tree of files of many sizes: empty, fragments, pages, megabytes.
    private func makeTree(_ root: String) -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        mkdir(root, 0o755)
        mkdir(root + "/sub", 0o755)
        mkdir(root + "/sub/deeper", 0o755)
        for (index, size) in [0, 1, 100, 4095, 4096, 4097, 65_536, 300_000, 1 << 20, 3_000_017].enumerated() {
            let name = (index % 3 == 0 ? "" : index % 3 == 1 ? "sub/" : "sub/deeper/") + "file\(index)"
            files[name] = pattern(size, seed: index + 10)
            _ = store(files[name]!, root + "/" + name)
        }
        return files
    }

    private func check(_ files: [String: [UInt8]], under root: String) {
        for (name, bytes) in files {
            expectFile(root + "/" + name, holds: bytes)
        }
    }

    @Test func cpOfATreeGoesToTheNodeAndComesBackThroughRemountsAndAKill() throws {
        let remote = try RemoteMount()
        let source = remote.mounted.scratch.path + "/source"
        let files = makeTree(source)
        #expect(try run("cp", ["-a", source, remote.far + "/tree"]).status == 0)
        check(files, under: remote.far + "/tree")
        // The bytes are on shelf 1, the remote one, and went to the node.
        let runs = xattr(remote.far + "/tree/sub/deeper/file8", "user.poolfs.runs") ?? ""
        #expect(runs.hasPrefix("1:"), "runs \(runs)")
        #expect(remote.number("written") >= 3_000_017 + (1 << 20))
        #expect(remote.number("dirty") == 0)
        #expect(remote.shelf()["state"] == "up")
        // And back, byte for byte, with `cp -a`.
        let back = remote.mounted.scratch.path + "/back"
        #expect(try run("cp", ["-a", remote.far + "/tree", back]).status == 0)
        check(files, under: back)
        // Through a remount that forgot the cache: from the node.
        try remote.remountCold()
        check(files, under: remote.far + "/tree")
        #expect(remote.number("read") >= 3_000_017)
        // Through a kill -9 of the mount.
        #expect(store(pattern(70_000, seed: 99), remote.far + "/late"))
        remote.mounted.killDaemon()
        try remote.mounted.remount()
        check(files, under: remote.far + "/tree")
        expectFile(remote.far + "/late", holds: pattern(70_000, seed: 99))
        try remote.remountCold()
        expectFile(remote.far + "/late", holds: pattern(70_000, seed: 99))
        remote.mounted.unmount()
        let checked = try run(builtExecutable("poolfs"), ["check", "near", "--path", remote.mounted.scratch.path])
        #expect(checked.status == 0, "\(checked.output)")
        #expect(checked.output.contains("remote shelf 1: region"), "\(checked.output)")
        #expect(checked.output.contains("reserved on \(remote.served.address)"), "\(checked.output)")
        // Unmounted, the checkpoint keeps the cache itself; the copy is
        // local and needs no node.
        let image = remote.mounted.scratch.path + "/image"
        let checkpoint = try remote.mounted.poolfs("checkpoint", "near", image)
        #expect(checkpoint.status == 0, "\(checkpoint.output)")
        try expectRestoredLocally(remote, image: image) { copy in
            check(files, under: copy.path("far/tree"))
            expectFile(copy.path("far/late"), holds: pattern(70_000, seed: 99))
        }
        try remote.mounted.remount()
    }

    /// Checkpointed while mounted: the mount keeps the cache, and a file
    /// still open holds pages there that the node has not had yet.
    @Test func aMountedRemoteShelfIsCheckpointedWithThePagesOnlyItsCacheHolds() throws {
        let remote = try RemoteMount()
        let source = remote.mounted.scratch.path + "/source"
        let files = makeTree(source)
        #expect(try run("cp", ["-a", source, remote.far + "/tree"]).status == 0)
        try remote.remountCold()
        let open = remote.far + "/open"
        let fd = Glibc.open(open, O_RDWR | O_CREAT, 0o644)
        defer { close(fd) }
        let before = pattern(300_000, seed: 41)
        #expect(before.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == before.count)
        #expect(remote.number("dirty") > 0, "\(remote.shelf())")
        let image = remote.mounted.scratch.path + "/image"
        let checkpoint = try remote.mounted.poolfs("checkpoint", "near", image)
        #expect(checkpoint.status == 0 && checkpoint.output.contains("froze the file system at"), "\(checkpoint.output)")
        // Written after: not in the image.
        #expect(pwrite(fd, [UInt8](repeating: 9, count: 5000), 5000, 0) == 5000)
        try expectRestoredLocally(remote, image: image) { copy in
            check(files, under: copy.path("far/tree"))
            expectFile(copy.path("far/open"), holds: before)
        }
    }

    /// Restores `image` as pool "copy", with the node stopped, and mounts it.
    private func expectRestoredLocally(_ remote: RemoteMount, image: String, _ body: (MountedPool) throws -> Void) throws {
        let restore = try remote.mounted.poolfs("restore", image, "copy")
        #expect(restore.status == 0 && restore.output.contains("shelf 1 was on a memory node"), "\(restore.output)")
        remote.served.stop()
        defer { try? remote.served.restart() }
        let copy = try MountedPool(existing: "copy", scratch: remote.mounted.scratch, mountpoint: "copy-mount")
        try body(copy)
        #expect(copy.text(".pool/shelves/1")?.contains("remote") == false, "\(copy.text(".pool/shelves/1") ?? "")")
        copy.unmount()
        let checked = try remote.mounted.poolfs("check", "copy")
        #expect(checked.status == 0 && checked.output.hasSuffix("clean"), "\(checked.output)")
        #expect(try remote.mounted.poolfs("destroy", "copy").status == 0)
    }

    /// kill -9 of the mount while files are written to the remote shelf:
    /// the next mount frees the runs no file names, and check is clean.
    @Test func aMountKilledMidWriteLeavesTheRemoteShelfConsistent() throws {
        let remote = try RemoteMount(options: ["-o", "remote_cache=1M"])
        let writer = try Child("/bin/sh", ["-c", "i=0; while [ $i -lt 3000 ]; do yes abcdefg | head -c 70000 > \(remote.far)/f$i || exit 0; i=$((i+1)); done"])
        #expect(eventually(within: 30) { (try? FileManager.default.contentsOfDirectory(atPath: remote.far).count) ?? 0 >= 40 })
        remote.mounted.killDaemon()
        _ = writer.wait()
        try remote.mounted.remount()
        // Every file closed before the kill holds its bytes, from the node.
        let files = try FileManager.default.contentsOfDirectory(atPath: remote.far)
        #expect(files.count >= 40)
        let whole = files.filter { status(remote.far + "/" + $0)?.st_size == 70_000 }
        #expect(whole.count >= files.count - 1)
        let line = Array("abcdefg\n".utf8)
        let expected = (0..<70_000).map { line[$0 % line.count] }
        for file in whole.prefix(20) { expectFile(remote.far + "/" + file, holds: expected) }
        remote.mounted.unmount()
        let checked = try run(builtExecutable("poolfs"), ["check", "near", "--path", remote.mounted.scratch.path])
        #expect(checked.status == 0 && checked.output.contains("clean"), "\(checked.output)")
        try remote.mounted.remount()
    }

    @Test func fsyncWritesBackAndEvictionKeepsTheCacheToItsSize() throws {
        let remote = try RemoteMount(options: ["-o", "remote_cache=1M"])
        let path = remote.far + "/big"
        let bytes = pattern(8 << 20, seed: 3)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        #expect(fd >= 0)
        #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count)
        // Still open: what went to the node went by eviction, the cache
        // held to its size (and a quarter of slack until the next request).
        #expect(remote.number("cached") <= 2 << 20, "cached \(remote.number("cached"))")
        #expect(remote.number("written") >= 6 << 20, "written \(remote.number("written"))")
        // A small overwrite stays in the cache until fsync.
        #expect(pwrite(fd, [UInt8](repeating: 7, count: 3), 3, 100) == 3)
        #expect(remote.number("dirty") > 0)
        #expect(fsync(fd) == 0)
        #expect(remote.number("dirty") == 0)
        close(fd)
        var expected = bytes
        expected.replaceSubrange(100..<103, with: [7, 7, 7])
        expectFile(path, holds: expected)
        // Eviction runs once a read has been answered: it may still be at it.
        #expect(eventually(within: 5) { remote.number("cached") <= 2 << 20 }, "cached \(remote.number("cached"))")
        try remote.remountCold()
        expectFile(path, holds: expected)
    }

    @Test func aStoppedNodeFailsReadsWithEIOInTimeAndLocalFilesCarryOn() throws {
        let remote = try RemoteMount(options: ["-o", "remote_cache=256K,remote_timeout=1s"])
        let far = pattern(2 << 20, seed: 5)
        #expect(store(far, remote.far + "/file"))
        let node = remote.served.node!.pid
        kill(node, SIGSTOP)
        var code: Int32 = 0
        let took = timed { code = readErrno(remote.far + "/file") }
        #expect(code == EIO)
        #expect(took < 4, "a read took \(took) s against a deadline of 1 s")
        // Local files carry on meanwhile.
        #expect(store(pattern(100_000, seed: 6), remote.mounted.path("local")))
        expectFile(remote.mounted.path("local"), holds: pattern(100_000, seed: 6))
        #expect(remote.shelf()["state"]?.hasPrefix("unreachable since") == true)
        #expect(remote.mounted.text(".pool/info")?.contains("unreachable since") == true)
        // A new file fills whole pages: they wait in the cache, and fsync says EIO.
        let fd = open(remote.far + "/new", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let written = pattern(64 << 10, seed: 7)
        #expect(written.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == written.count)
        #expect(fsync(fd) == -1 && errno == EIO)
        kill(node, SIGCONT)
        // Back: the dirty pages go at the next fsync, and reads work again.
        #expect(eventually(within: 5) { fsync(fd) == 0 })
        close(fd)
        expectFile(remote.far + "/file", holds: far)
        try remote.remountCold()
        expectFile(remote.far + "/new", holds: written)
        expectFile(remote.far + "/file", holds: far)
    }

    /// A write that needs a page from a node that does not answer fails
    /// before it changes any byte, even of pages the cache holds.
    @Test func aWriteThatCannotReachTheNodeChangesNothing() throws {
        let remote = try RemoteMount(options: ["-o", "remote_cache=256K,remote_timeout=1s"])
        let original = pattern(1 << 20, seed: 13)
        let path = remote.far + "/file"
        // Two runs: pages 0-1, then the rest, appended after a close.
        #expect(store(Array(original[0..<8192]), path))
        #expect(store(Array(original[8192...]), path, flags: O_WRONLY | O_APPEND))
        let runs = xattr(path, "user.poolfs.runs") ?? ""
        #expect(runs.split(separator: " ").count >= 2 && runs.hasSuffix("+2") == false, "runs \(runs)")
        try remote.remountCold()
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        var first = [UInt8](repeating: 0, count: 4096)
        #expect(pread(fd, &first, 4096, 0) == 4096)  // the first page, alone in the cache now
        kill(remote.served.node!.pid, SIGSTOP)
        // One request, from the cached page to part of page 4, which is not.
        let span = [UInt8](repeating: 0xee, count: 20_000)
        #expect(pwrite(fd, span, span.count, 100) == -1 && errno == EIO)
        #expect(pread(fd, &first, 4096, 0) == 4096)
        #expect(first == Array(original[0..<4096]))
        kill(remote.served.node!.pid, SIGCONT)
        // For a second after a failure, transfers to the node fail at once.
        if !eventually(within: 5, { contents(path) == original }) { expectFile(path, holds: original) }
    }

    @Test func aKilledNodeFailsReadsThenItsRestartServesThem() throws {
        let remote = try RemoteMount(options: ["-o", "remote_cache=256K,remote_timeout=1s"])
        let far = pattern(1 << 20, seed: 8)
        #expect(store(far, remote.far + "/file"))
        remote.served.node!.kill9()
        remote.served.node!.wait()
        var code: Int32 = 0
        let took = timed { code = readErrno(remote.far + "/file") }
        #expect(code == EIO)
        #expect(took < 4, "a read took \(took) s")
        #expect(contents(remote.mounted.path(".pool/info")) != nil)
        try remote.served.restart()
        if !eventually(within: 5, { contents(remote.far + "/file") == far }) { expectFile(remote.far + "/file", holds: far) }
    }

    @Test(.enabled(if: NetworkLab.available, "network namespaces need root and iproute2"))
    func aNodeCutOffFailsReadsAndTheLinkBackRestoresThem() throws {
        let lab = try NetworkLab(clients: 0)
        let host = try lab.linkHost()
        let served = try ServedPool(size: "128M", pageSize: "4K", lab: lab)
        let remote = try RemoteMount(node: "\(lab.nodeAddress):\(served.port)", options: ["-o", "remote_cache=256K,remote_timeout=1s"],
                                     served: served)
        let far = pattern(1 << 20, seed: 9)
        #expect(store(far, remote.far + "/file"))
        try lab.setHostLink(host, up: false)
        var code: Int32 = 0
        let took = timed { code = readErrno(remote.far + "/file") }
        #expect(code == EIO)
        #expect(took < 4, "a read took \(took) s")
        #expect(store(pattern(1000, seed: 1), remote.mounted.path("local")))
        try lab.setHostLink(host, up: true)
        if !eventually(within: 10, { contents(remote.far + "/file") == far }) { expectFile(remote.far + "/file", holds: far) }
    }

    /// A local pool with a remote shelf on `served`, closed; its directory's home.
    private func poolWithARemoteShelf(on served: ServedPool) throws -> (Scratch, RemoteShelfPlace) {
        RemoteShelves.install()
        let scratch = Scratch()
        let pool = try Pool.create(name: "p", size: 8 << 20, pageSize: 4096, at: scratch.path)
        defer { pool.close() }
        try pool.grow(by: 8 << 20) { shelf, bytes in
            try RemoteShelves.reserve(on: served.address, keyFile: served.keyFile, poolUUID: pool.uuid, shelf: shelf, bytes: bytes)
        }
        return (scratch, try #require(pool.remoteShelves().first).place)
    }

    /// The library, no mount: a heap placed remote hands out runs on the
    /// remote shelf, and Pool.write puts their bytes on the node.
    @Test func theLibraryReadsAndWritesRemoteRunsThroughTheCache() throws {
        let served = try ServedPool(size: "64M", pageSize: "4K")
        let (scratch, place) = try poolWithARemoteShelf(on: served)
        let pool = try Pool.open(name: "p", at: scratch.path)
        defer { pool.close() }
        let heap = try pool.createHeap(name: "far")
        try heap.setPlacement(.remote(1))
        let run = try heap.allocatePages(count: 4)
        #expect(run.shelf == 1)
        let bytes = pattern(3 * 4096 + 100, seed: 12)
        try pool.write(at: run.advanced(by: 50), bytes: bytes)
        #expect(try pool.read(at: run.advanced(by: 50), count: bytes.count) == bytes)
        // On the node, at the same offset of the shelf's region.
        let remote = try connect(served)
        defer { remote.close() }
        let dataStart = try #require(pool.remoteShelves().first).dataStart
        let offsetInRegion = run.offset + 50 - dataStart.offset
        #expect(try remote.read(at: place.address.advanced(by: offsetInRegion), count: bytes.count) == bytes)
        // Atomic words and raw pointers stay the node's business.
        #expect(throws: PoolError.self) { _ = try pool.load(at: run) }
        #expect(pool.unsafePointer(to: run) == nil)
        try heap.freePages(at: run, count: 4)
    }

    @Test func destroyFreesTheRegionsOnTheNodesOrSaysHow() throws {
        let served = try ServedPool(size: "64M", pageSize: "4K")
        let (scratch, place) = try poolWithARemoteShelf(on: served)
        let remote = try connect(served)
        defer { remote.close() }
        #expect(try remote.openRegion(name: place.region).size >= 8 << 20 - 64 << 10)
        let destroyed = try run(builtExecutable("poolfs"), ["destroy", "p", "--path", scratch.path])
        #expect(destroyed.status == 0 && destroyed.output.contains("freed region '\(place.region)'"), "\(destroyed.output)")
        guard case .node(_, ENOENT, _)? = netError({ _ = try remote.openRegion(name: place.region) }) else {
            Issue.record("the region is still there")
            return
        }
        // A node that does not answer: the pool goes, a line says how to free the region.
        let (again, other) = try poolWithARemoteShelf(on: served)
        served.node!.kill9()
        served.node!.wait()
        let left = try run(builtExecutable("poolfs"), ["destroy", "p", "--path", again.path])
        #expect(left.status == 0, "\(left.output)")
        #expect(left.output.contains("stays reserved on \(served.address)"), "\(left.output)")
        #expect(left.output.contains("poolfs remote region \(served.address) --key-file \(served.keyFile) \(other.region) --destroy"),
                "\(left.output)")
        try served.restart()
        let freed = try run(builtExecutable("poolfs"), ["remote", "region", served.address, "--key-file", served.keyFile,
                                                          other.region, "--destroy"])
        #expect(freed.status == 0 && freed.output.contains("destroyed region"), "\(freed.output)")
    }

    @Test func bytesOnAShelfThatIsNotRemoteRefuseThePlacement() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "p", size: 8 << 20, pageSize: 4096, at: scratch.path)
        defer { pool.close() }
        let refusal = #expect(throws: PoolError.self) { try pool.openHeap(name: "default", create: true).setPlacement(.remote(nil)) }
        #expect(refusal?.description.contains("metadata log") == true)
        let heap = try pool.createHeap(name: "h")
        #expect(throws: PoolError.self) { try heap.setPlacement(.remote(nil)) }
        #expect(throws: PoolError.self) { try heap.setPlacement(.remote(0)) }
        #expect(throws: PoolError.self) { try Placement(parsing: "remote x") }
        #expect(try Placement(parsing: "remote 2") == .remote(2))
        #expect(throws: PoolError.self) { try pool.createRegion(name: "r", size: 4096, placement: .remote(nil)) }
    }
}

/// Records an issue unless the file holds `bytes`, saying where it
/// differs (never the bytes themselves).
func expectFile(_ path: String, holds bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
    let read = contents(path)
    if read == bytes { return }
    Issue.record("\(path): \(read?.count ?? -1) bytes, wanted \(bytes.count), \(same(read, bytes))", sourceLocation: sourceLocation)
}

/// Where two byte strings first differ, for a failure's message (not the bytes).
func same(_ a: [UInt8]?, _ b: [UInt8]) -> String {
    guard let a else { return "(unreadable)" }
    guard let first = (0..<min(a.count, b.count)).first(where: { a[$0] != b[$0] }) else { return a.count == b.count ? "equal" : "one is a prefix" }
    return "first difference at byte \(first)"
}

private func xattr(_ path: String, _ name: String) -> String? {
    var value = [CChar](repeating: 0, count: 4096)
    let n = getxattr(path, name, &value, value.count - 1)
    return n < 0 ? nil : String(cString: value)
}
