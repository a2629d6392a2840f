import Testing
import TestSupport
@testable import PoolCore

@Suite struct AccessTests {
    @Test func readWriteAndCASByGlobalAddressSurviveReopen() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "rw", size: 16 << 20, pageSize: 4096, at: scratch.path)
        let run = try pool.allocatePages(count: 2)
        let text = Array("bytes that cross a page boundary".utf8)
        let across = run.advanced(by: 4096 - 10)
        try pool.write(at: across, bytes: text)
        #expect(try pool.read(at: across, count: text.count) == text)

        let word = run.advanced(by: 64)
        try pool.store(7, at: word)
        let failed = try pool.compareAndSwap(at: word, expected: 6, desired: 9)
        #expect(!failed.exchanged && failed.original == 7)
        let done = try pool.compareAndSwap(at: word, expected: 7, desired: 9)
        #expect(done.exchanged && done.original == 7)
        pool.close()

        pool = try Pool.open(name: "rw", at: scratch.path)
        #expect(try pool.read(at: across, count: text.count) == text)
        #expect(try pool.load(at: word) == 9)
        #expect(pool.usedPages == 2)
    }

    @Test func addressesOutsideTheDataPagesAreRefused() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "bounds", size: 8 << 20, pageSize: 4096, at: scratch.path)
        let run = try pool.allocatePages()
        // The superblock and page table are not reachable through the API.
        #expect(throws: PoolError.self) { try pool.write(at: GlobalAddress(shelf: 0, offset: 8), bytes: [1]) }
        #expect(throws: PoolError.self) { try pool.read(at: GlobalAddress(shelf: 0, offset: 0), count: 8) }
        #expect(throws: PoolError.self) { try pool.read(at: GlobalAddress(shelf: 5, offset: run.offset), count: 8) }
        #expect(throws: PoolError.self) { try pool.read(at: run.advanced(by: 8 << 20), count: 8) }
        #expect(throws: PoolError.self) { try pool.compareAndSwap(at: run.advanced(by: 4), expected: 0, desired: 1) }
        #expect(throws: PoolError.self) { try pool.load(at: run.advanced(by: 3)) }
    }
}
