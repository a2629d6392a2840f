import Foundation
import Testing
import TestSupport
@testable import PoolCore
import PoolFS

/// Freed memory goes back to the system: a mount gives back its dram
/// shelves' free pages within seconds, as tmpfs does a removed file's.
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct MemoryMountTests {
    /// The shelf files' resident bytes, as `.pool/info` says them.
    static func resident(_ mounted: MountedPool) -> UInt64 {
        let pool = try? Pool.open(name: mounted.name, at: mounted.scratch.path)
        defer { pool?.close() }
        return pool?.residentBytes ?? 0
    }

    @Test func aRemovedFilesMemoryGoesBackWithinSeconds() throws {
        let mounted = try MountedPool(size: 256 << 20, pageSize: 64 << 10)
        let baseline = MemoryMountTests.resident(mounted)
        #expect(store([UInt8](repeating: 3, count: 96 << 20), mounted.path("big")))
        #expect(MemoryMountTests.resident(mounted) >= baseline + (96 << 20))
        #expect(unlink(mounted.path("big")) == 0)
        // Within 10 s (the target; a pass a second, free at two passes).
        var now: UInt64 = 0
        #expect(eventually(within: 10) {
            now = MemoryMountTests.resident(mounted)
            return now <= baseline + (4 << 20)
        }, "resident \(now) bytes, \(baseline) before the file")
        #expect(mounted.text(".pool/info")?.contains("resident") == true)
        // The pages given back are used again, and hold what is written there.
        let again = [UInt8](repeating: 9, count: 80 << 20) + pattern(4096, seed: 9)
        #expect(store(again, mounted.path("again")))
        #expect(contents(mounted.path("again")) == again)
        mounted.unmount()
        let check = try run(builtExecutable("poolfs"), ["check", mounted.name, "--path", mounted.scratch.path])
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
    }

    /// `poolfs trim` gives back a closed pool's free pages at once, pmem
    /// shelves' too, and the pages come back whole when claimed again.
    @Test(arguments: [Medium.dram, .pmem])
    func trimGivesBackFreePagesNow(medium: Medium) throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "trim", size: 64 << 20, pageSize: 64 << 10, medium: medium, at: scratch.path)
        let run = try pool.allocatePages(count: 256)
        _ = try pool.withUnsafeMutableBytes(at: run, count: 256 << 16) { $0.initializeMemory(as: UInt8.self, repeating: 7) }
        let held = pool.residentBytes
        try pool.freePages(at: run, count: 256)
        pool.close()
        let trimmed = try TestSupport.run(builtExecutable("poolfs"), ["trim", "trim", "--path", scratch.path])
        #expect(trimmed.status == 0 && trimmed.output.contains("gave back"), "\(trimmed.output)")
        pool = try Pool.open(name: "trim", at: scratch.path)
        let afterTrim = pool.residentBytes
        #expect(afterTrim <= held - (15 << 20), "\(afterTrim) of \(held)")
        let back = try pool.allocatePages(count: 256)
        // Before any store: the claim itself brought the blocks back.
        #expect(pool.residentBytes >= afterTrim + (15 << 20), "claimed again, its blocks are back")
        try pool.withUnsafeMutableBytes(at: back, count: 256 << 16) {
            #expect($0.allSatisfy { $0 == 0 }, "a given-back page reads as zeros")
            $0.initializeMemory(as: UInt8.self, repeating: 9)
        }
        try pool.freePages(at: back, count: 256)
        pool.close()
        let check = try TestSupport.run(builtExecutable("poolfs"), ["check", "trim", "--path", scratch.path])
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
    }
}
