import Dispatch
import Foundation
import Synchronization
import Testing
import TestSupport
@testable import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// poolfs checkpoint and poolfs restore as a user runs them: a mounted
/// pool under a writer, its heap, region and files, and images refused.
@Suite(.enabled(if: MountedPool.available, "needs root and /dev/fuse"))
struct CheckpointMountTests {

    @Test func aCheckpointUnderAWriterRestoresTheInstantItFroze() throws {
        let mounted = try MountedPool(size: 96 << 20)
        #expect(mkdir(mounted.path("tree"), 0o755) == 0)
        for index in 0..<30 { #expect(store(pattern(9_000 * index + 5, seed: index), mounted.path("tree/f\(index)"))) }
        #expect(store([], mounted.path(".pool/regions/weights")) && truncate(mounted.path(".pool/regions/weights"), 100_000) == 0)
        #expect(store(pattern(100_000, seed: 7), mounted.path(".pool/regions/weights"), flags: O_WRONLY))
        // A heap object, written through the library beside the mount.
        let pool = try Pool.open(name: mounted.name, at: mounted.scratch.path)
        let heap = try pool.openHeap(name: "objects", create: true)
        let object = try heap.allocate(size: 64)
        try pool.store(UInt64(0x1234_5678_9abc_def0), at: object)
        // A program beside the mount writes a counter into a region's first
        // page, then its last (PoolTestHelper region-writer): at any
        // instant the first holds at least the last.
        try pool.createRegion(name: "counter", size: 8 << 20)
        let counter = try Child(builtExecutable("PoolTestHelper"), ["region-writer", mounted.scratch.path, mounted.name, "counter"])
        #expect(counter.waitFor("writing").last == "writing")

        // A writer fills "f" with one byte value per 1 MiB write, over and
        // over, from a page-aligned buffer: one request each (an unaligned
        // one spans 257 pages, and the kernel sends it in two).
        let size = 1 << 20
        #expect(store(Array(repeating: 0, count: size), mounted.path("f")))
        final class Writer: Sendable {
            let stop = Atomic<Bool>(false)
            let writes = Atomic<Int>(0)
        }
        let writer = Writer()
        let group = DispatchGroup()
        let path = mounted.path("f")
        DispatchQueue.global().async(group: group) {
            let fd = open(path, O_WRONLY)
            let block = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
            defer { block.deallocate() }
            var value: UInt8 = 1
            while !writer.stop.load(ordering: .relaxed) {
                block.initializeMemory(as: UInt8.self, repeating: value, count: size)
                _ = pwrite(fd, block, size, 0)
                value = value == 255 ? 1 : value + 1
                writer.writes.add(1, ordering: .releasing)
            }
            close(fd)
        }
        while writer.writes.load(ordering: .acquiring) < 3 { sched_yield() }
        let image = mounted.scratch.path + "/image"
        let checkpoint = try mounted.poolfs("checkpoint", mounted.name, image)
        writer.stop.store(true, ordering: .relaxed)
        group.wait()
        counter.send("stop")
        #expect(counter.waitFor("stopped").last?.hasPrefix("stopped") == true)
        #expect(counter.wait() == 0)
        #expect(checkpoint.status == 0 && checkpoint.output.contains("froze the file system at")
                && checkpoint.output.contains("froze heaps and regions in"), "\(checkpoint.output)")
        #expect(mounted.list(".pool/snapshots").isEmpty, "the checkpoint's snapshot went when it was done")
        pool.close()

        let restore = try mounted.poolfs("restore", image, "copy")
        #expect(restore.status == 0 && restore.output == "restored pool 'copy' from \(image)", "\(restore.output)")
        let check = try mounted.poolfs("check", "copy")
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
        let copy = try MountedPool(existing: "copy", scratch: mounted.scratch, mountpoint: "copy-mount")
        let frozen = try #require(contents(copy.path("f")))
        #expect(frozen.count == size && Set(frozen).count == 1 && frozen[0] != 0, "f is torn: \(Set(frozen).sorted())")
        for index in 0..<30 { #expect(contents(copy.path("tree/f\(index)")) == pattern(9_000 * index + 5, seed: index)) }
        #expect(contents(copy.path(".pool/regions/weights")) == pattern(100_000, seed: 7))
        #expect(copy.list(".pool/snapshots").isEmpty)
        copy.unmount()
        let restored = try Pool.open(name: "copy", at: mounted.scratch.path)
        #expect(try restored.load(at: object) == UInt64(0x1234_5678_9abc_def0))
        try restored.openHeap(name: "objects").free(object)
        let region = try restored.openRegion(name: "counter")
        let first: UInt64 = try restored.load(at: region.address)
        let last: UInt64 = try restored.load(at: region.address.advanced(by: UInt64(region.pages - 1) * UInt64(restored.pageSize)))
        #expect(last > 0 && first >= last, "the region is torn: first page \(first), last \(last)")
        restored.close()
    }

    @Test func damagedCutAndForeignImagesAreRefusedLeavingNoPool() throws {
        let mounted = try MountedPool(size: 32 << 20)
        #expect(store(pattern(3 << 20, seed: 1), mounted.path("big")))
        mounted.unmount()
        let image = mounted.scratch.path + "/image"
        // Not mounted: the checkpoint holds the pool alone, no snapshot.
        let checkpoint = try mounted.poolfs("checkpoint", mounted.name, image)
        #expect(checkpoint.status == 0 && !checkpoint.output.contains("froze the file system"), "\(checkpoint.output)")
        let bytes = try #require(contents(image))

        var damaged = bytes
        damaged[bytes.count / 2] ^= 0x40
        #expect(store(damaged, image + ".damaged"))
        #expect(store(Array(bytes[..<(bytes.count * 2 / 3)]), image + ".cut"))
        #expect(store(Array("not an image".utf8), image + ".foreign"))
        for (suffix, cause) in [(".damaged", "is damaged: chunk"), (".cut", "is truncated"),
                                (".foreign", "is not a poolfs checkpoint image")] {
            let result = try mounted.poolfs("restore", image + suffix, "copy")
            #expect(result.status == 1 && result.output.contains(cause) && !result.output.contains("\n"), "\(suffix): \(result.output)")
            #expect(status(mounted.scratch.path + "/copy") == nil, "\(suffix) left a pool")
        }
        let restore = try mounted.poolfs("restore", image, "copy")
        #expect(restore.status == 0, "\(restore.output)")
        let copy = try MountedPool(existing: "copy", scratch: mounted.scratch, mountpoint: "copy-mount")
        #expect(contents(copy.path("big")) == pattern(3 << 20, seed: 1))
    }

    /// --incremental BASE writes what changed since BASE, and a restore
    /// takes the rest from BASE (which it checks is the same image).
    @Test func anIncrementalCheckpointNamesWhatDidNotChange() throws {
        let mounted = try MountedPool(size: 64 << 20)
        for index in 0..<4 { #expect(store(pattern(5 << 20, seed: index), mounted.path("f\(index)"))) }
        let full = mounted.scratch.path + "/full", delta = mounted.scratch.path + "/delta"
        #expect(try mounted.poolfs("checkpoint", mounted.name, full).status == 0)
        #expect(store(Array(repeating: 9, count: 100), mounted.path("f2"), flags: O_WRONLY))
        #expect(unlink(mounted.path("f3")) == 0)
        let result = try mounted.poolfs("checkpoint", mounted.name, delta, "--incremental", full)
        #expect(result.status == 0 && result.output.contains("unchanged since"), "\(result.output)")
        let sizes = (status(full)?.st_size ?? 0, status(delta)?.st_size ?? 0)
        // f2's first chunk changed in one page: only that page (and the
        // changed pages of the page tables) is written again.
        #expect(sizes.1 * 40 < sizes.0, "the incremental image (\(sizes.1) bytes) holds less than 1/40 of the full one's (\(sizes.0))")
        let restore = try mounted.poolfs("restore", delta, "copy")
        #expect(restore.status == 0, "\(restore.output)")
        let copy = try MountedPool(existing: "copy", scratch: mounted.scratch, mountpoint: "copy-mount")
        #expect(contents(copy.path("f0")) == pattern(5 << 20, seed: 0))
        #expect(contents(copy.path("f2")) == Array(repeating: 9, count: 100) + pattern(5 << 20, seed: 2)[100...])
        #expect(status(copy.path("f3")) == nil)
        copy.unmount()
        // An image against an incremental one: patches over patches.
        let third = mounted.scratch.path + "/third"
        #expect(store(Array(repeating: 7, count: 10), mounted.path("f0"), flags: O_WRONLY))
        #expect(try mounted.poolfs("checkpoint", mounted.name, third, "--incremental", delta).status == 0)
        #expect(try mounted.poolfs("restore", third, "again").status == 0)
        let again = try MountedPool(existing: "again", scratch: mounted.scratch, mountpoint: "again-mount")
        #expect(contents(again.path("f0")) == Array(repeating: 7, count: 10) + pattern(5 << 20, seed: 0)[10...])
        #expect(contents(again.path("f2")) == Array(repeating: 9, count: 100) + pattern(5 << 20, seed: 2)[100...])
        again.unmount()
        // Without its base, or with another image in its place: refused.
        #expect(rename(full, full + ".moved") == 0)
        var refused = try mounted.poolfs("restore", delta, "other")
        #expect(refused.status == 1 && refused.output.contains("cannot be read"), "\(refused.output)")
        #expect(try mounted.poolfs("checkpoint", mounted.name, full).status == 0)
        refused = try mounted.poolfs("restore", delta, "other")
        #expect(refused.status == 1 && refused.output.contains("is not the image this one was made against"), "\(refused.output)")
        #expect(status(mounted.scratch.path + "/other") == nil)
    }
}
