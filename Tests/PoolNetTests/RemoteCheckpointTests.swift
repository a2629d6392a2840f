import Foundation
import PoolCore
import Testing
import TestSupport
@testable import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// Checkpoints of pools with remote shelves: the image holds their pages
/// as they were at the freeze's instant, from the node and from the cache
/// of the process that keeps it, and a restore makes them local.
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse"))
struct RemoteCheckpointTests {
    /// A pool `near` with a 32 MiB remote shelf on `served` and a heap
    /// `cold` placed there.
    private func nearPool(_ scratch: Scratch, _ served: ServedPool) throws {
        RemoteShelves.install()
        let pool = try Pool.create(name: "near", size: 32 << 20, pageSize: 4096, at: scratch.path)
        defer { pool.close() }
        _ = try pool.grow(by: 32 << 20) { shelf, bytes in
            try RemoteShelves.reserve(on: served.address, keyFile: served.keyFile, poolUUID: pool.uuid, shelf: shelf, bytes: bytes)
        }
        try pool.createHeap(name: "cold").setPlacement(.remote(nil))
    }

    @Test func aRemoteHeapUnderAWriterIsCheckpointedAtTheInstantAndRestoredLocally() throws {
        let served = try ServedPool(size: "128M", pageSize: "4K")
        let scratch = Scratch()
        try nearPool(scratch, served)
        // Another process keeps the shelf's cache and writes a counter into
        // a run's first page, then its last, 8 MiB further (two chunks of the
        // image apart): at any instant the first holds at least the last.
        // Its second page it wrote once, into the cache only.
        let pages = 2048
        let writer = try Child(builtExecutable("PoolTestHelper"), ["remote-heap-writer", scratch.path, "near", "cold", "\(pages)"],
                               environment: ServedPool.environment)
        let started = writer.waitFor("writing").last ?? ""
        let run = try #require(GlobalAddress(String(started.split(separator: " ").last ?? "")), "\(started)")
        #expect(run.shelf == 1)
        let image = scratch.path + "/image"
        let poolfs = builtExecutable("poolfs")
        let checkpoint = try TestSupport.run(poolfs, ["checkpoint", "near", image, "--path", scratch.path], environment: ServedPool.environment)
        writer.send("stop")
        #expect(writer.waitFor("stopped").last?.hasPrefix("stopped") == true)
        #expect(writer.wait() == 0)
        #expect(checkpoint.status == 0 && checkpoint.output.contains("froze heaps and regions in"), "\(checkpoint.output)")

        let restore = try TestSupport.run(poolfs, ["restore", image, "copy", "--path", scratch.path])
        #expect(restore.status == 0 && restore.output.contains("shelf 1 was on a memory node: it is a dram shelf of this machine now"),
                "\(restore.output)")
        // The copy needs no node.
        served.stop()
        let check = try TestSupport.run(poolfs, ["check", "copy", "--path", scratch.path])
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
        let copy = try Pool.open(name: "copy", at: scratch.path)
        defer { copy.close() }
        let first = try copy.load(at: run), last = try copy.load(at: run.advanced(by: UInt64(pages - 1) * 4096))
        #expect(last > 0 && first >= last && first - last <= 1, "torn: first page \(first), last \(last)")
        // A page the writer's cache held newer than the node's.
        #expect(try copy.load(at: run.advanced(by: 4096)) == 0xD1E7_0000_5EAD_BEEF)
        #expect(copy.info().shelves[1].medium == .dram)
        // Heap `cold` was placed remote: it takes this machine's pages now.
        let heap = try copy.openHeap(name: "cold")
        let more = try heap.allocatePages(count: 4)
        try copy.store(7, at: more)
        #expect(try copy.load(at: more) == 7)
        try heap.freePages(at: more, count: 4)
    }

    @Test func aCheckpointWhoseNodeIsDownFailsInOneLineLeavingNoImage() throws {
        let served = try ServedPool(size: "128M", pageSize: "4K")
        let scratch = Scratch()
        try nearPool(scratch, served)
        let pool = try Pool.open(name: "near", at: scratch.path)
        let run = try pool.openHeap(name: "cold").allocatePages(count: 4)
        try withUnsafeBytes(of: UInt64(42)) { try pool.write(at: run, from: $0) }
        pool.close()
        // Nothing cached here: the run's bytes are on the node alone.
        unlink(scratch.path + "/near/shelf-1.cache")
        served.stop()
        let image = scratch.path + "/image"
        let checkpoint = try TestSupport.run(builtExecutable("poolfs"), ["checkpoint", "near", image, "--path", scratch.path],
                                             environment: ServedPool.environment)
        let errors = checkpoint.output.split(separator: "\n").filter { $0.hasPrefix("poolfs:") }
        #expect(checkpoint.status == 1 && errors.count == 1
                && errors[0].hasPrefix("poolfs: remote shelf 1 (node \(served.address)): reading 4 pages failed")
                && errors[0].contains("unreachable"), "\(checkpoint.output)")
        #expect(status(image) == nil && status(image + ".part") == nil)
    }
}
