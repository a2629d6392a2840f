import Testing
import TestSupport
@testable import PoolCore

/// Large copies into pages not yet in memory go through the shelf file
/// (MappedFile.copy); whichever way a copy goes, the bytes land where
/// asked and nowhere else.
@Suite struct ColdCopyTests {
    /// Fresh pages, pages written before, pages given back and claimed
    /// again; each copy starts and ends inside a page.
    @Test(arguments: [Medium.dram, .pmem])
    func aCopyLandsWholeIntoFreshWarmAndGivenBackPages(medium: Medium) throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "cold", size: 64 << 20, pageSize: 4096, medium: medium, at: scratch.path)
        defer { pool.close() }
        let pages = 512, bytes = pages << 12
        let count = (1 << 20) + 4097
        let source = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }

        func expectRun(_ run: GlobalAddress, holds expected: [UInt8], _ what: String) throws {
            let firstDifference = try pool.withUnsafeMutableBytes(at: run, count: bytes) { memory in
                memory.indices.first { memory[$0] != expected[$0] }
            }
            #expect(firstDifference == nil, "\(what): first different byte at \(firstDifference ?? -1)")
        }

        // Which way each copy went: pwrite into the shelf file (dram pages
        // not in memory) or a store through the mapping.
        let file = pool.core.shelves[0]!.file
        var throughFile = 0
        func expectWent(throughTheFile: Bool, _ what: String) {
            let now = file.copiesThroughFile.load(ordering: .relaxed)
            #expect(now - throughFile == (throughTheFile && medium == .dram ? 1 : 0), "\(what)")
            throughFile = now
        }

        // Fresh: the blocks reserved by the claim, never written.
        let run = try pool.allocatePages(count: pages)
        var expected = [UInt8](repeating: 0, count: bytes)
        try source.withUnsafeBytes { try pool.copy(to: run.advanced(by: 100), from: $0) }
        expected.replaceSubrange(100..<100 + count, with: source)
        try expectRun(run, holds: expected, "fresh pages")
        expectWent(throughTheFile: true, "fresh pages")

        // Written before: a second copy over part of the first.
        try source.withUnsafeBytes { try pool.copy(to: run.advanced(by: 5000), from: UnsafeRawBufferPointer(rebasing: $0[0..<(1 << 16)])) }
        expected.replaceSubrange(5000..<5000 + (1 << 16), with: source[0..<(1 << 16)])
        try expectRun(run, holds: expected, "pages written before")
        expectWent(throughTheFile: false, "pages written before")

        // Given back, then claimed again: zeros, then the copy.
        try pool.freePages(at: run, count: pages)
        pool.trim()
        let again = try pool.allocatePages(count: pages)
        expected = [UInt8](repeating: 0, count: bytes)
        try source.withUnsafeBytes { try pool.copy(to: again.advanced(by: 4095), from: $0) }
        expected.replaceSubrange(4095..<4095 + count, with: source)
        try expectRun(again, holds: expected, "pages given back")
        expectWent(throughTheFile: true, "pages given back")
        try pool.freePages(at: again, count: pages)
    }
}
