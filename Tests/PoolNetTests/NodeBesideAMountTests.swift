import PoolCore
import Testing
import TestSupport
@testable import PoolNet

/// A node serves a pool that is mounted on the same machine: files through
/// the mount and pages through the node come from one allocator and never
/// meet.
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse"))
struct NodeBesideAMountTests {
    @Test func aMountAndRemoteClientsShareOnePool() throws {
        let mounted = try MountedPool(name: "both", size: 64 << 20)
        let served = try ServedPool(existing: "both", at: mounted.scratch.path)
        let remote = try connect(served)
        defer { remote.close() }
        let before = pattern(1 << 20, seed: 1)
        #expect(store(before, mounted.path("before")))
        let runs = try (0..<50).map { _ in try remote.allocatePages(count: 2) }
        for run in runs { try remote.write(at: run, bytes: pattern(8192, seed: Int(run.rawValue & 0xffff))) }
        let after = pattern(1 << 20, seed: 2)
        #expect(store(after, mounted.path("after")))
        #expect(contents(mounted.path("before")) == before)
        #expect(contents(mounted.path("after")) == after)
        for run in runs { #expect(try remote.read(at: run, count: 8192) == pattern(8192, seed: Int(run.rawValue & 0xffff))) }
        for run in runs { try remote.freePages(at: run, count: 2) }
        #expect(contents(mounted.path("after")) == after)
    }
}
