import PoolCore
import Testing
import TestSupport
@testable import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// The error `body` throws, for checks on its kind and words.
func netError(_ body: () throws -> Void) -> NetError? {
    do {
        try body()
        return nil
    } catch let error as NetError {
        return error
    } catch {
        Issue.record("not a NetError: \(error)")
        return nil
    }
}

func connect(_ served: ServedPool, keyFile: String? = nil, deadline: Double = 2) throws -> RemotePool {
    setenv("UCX_TLS", "tcp", 1)
    return try RemotePool.connect(to: served.address, key: NodeKey.load(from: keyFile ?? served.keyFile),
                                  deadlineSeconds: deadline)
}

/// Every call of RemotePool against a node on loopback, checked against a
/// local opener of the same pool.
@Suite(.serialized) struct RemotePoolTests {
    @Test func everyCallRoundTripsAndLandsInTheNodesPool() throws {
        let served = try ServedPool()
        let remote = try connect(served)
        defer { remote.close() }
        let local = try Pool.open(name: served.name, at: served.home)
        defer { local.close() }
        #expect(remote.pageSize == 4096)
        #expect(remote.poolUUID == local.uuid)

        let used = local.usedPages
        let run = try remote.allocatePages(count: 3)
        #expect(local.usedPages == used + 3)
        let bytes = (0..<3 * 4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try remote.write(at: run, bytes: bytes)
        #expect(try remote.read(at: run, count: bytes.count) == bytes)
        #expect(try local.read(at: run, count: bytes.count) == bytes)
        try local.write(at: run, bytes: [9, 9, 9])
        #expect(try remote.read(at: run, count: 4) == [9, 9, 9, bytes[3]])

        // Large reads and writes move by rendezvous: the same bytes.
        let large = try remote.allocatePages(count: 300)
        let pattern = (0..<300 * 4096).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 12) }
        try local.write(at: large, bytes: pattern)
        #expect(try remote.read(at: large, count: pattern.count) == pattern)
        let half = 128 << 10
        var first = [UInt8](repeating: 0, count: half), second = first
        try first.withUnsafeMutableBytes { first in
            try second.withUnsafeMutableBytes { second in
                try remote.read([(large, first), (large.advanced(by: UInt64(half)), second)])
            }
        }
        #expect(first + second == Array(pattern[0..<2 * half]))
        let reversed = Array(pattern.reversed())
        try remote.write(at: large, bytes: reversed)
        #expect(try local.read(at: large, count: reversed.count) == reversed)
        try remote.freePages(at: large, count: 300)

        let word = run.advanced(by: 4096)
        try local.store(0, at: word)
        let swapped = try remote.compareAndSwap(at: word, expected: 0, desired: 41)
        #expect(swapped.exchanged && swapped.original == 0)
        let kept = try remote.compareAndSwap(at: word, expected: 0, desired: 5)
        #expect(!kept.exchanged && kept.original == 41)
        #expect(try remote.fetchAndAdd(at: word, 1) == 41)
        #expect(try local.load(at: word) == 42)

        let created = try remote.createRegion(name: "shared", size: 10_000)
        #expect(created.size == 10_000)
        #expect(try remote.openRegion(name: "shared") == created)
        #expect(try local.openRegion(name: "shared").address == created.address)

        try remote.freePages(at: run, count: 3)
        #expect(local.usedPages == used + 3 - 3 + Int((10_000 + 4095) / 4096))

        remote.close()
        #expect(!remote.isConnected)
        #expect(netError { _ = try remote.allocatePages(count: 1) }?.description.contains("was closed") == true)
    }

    @Test func mistakesGetOneLineNamingTheCause() throws {
        let served = try ServedPool()
        let remote = try connect(served)
        defer { remote.close() }
        let run = try remote.allocatePages(count: 1)
        try remote.freePages(at: run, count: 1)

        let doubleFree = netError { try remote.freePages(at: run, count: 1) }
        guard case let .node(_, code, message) = doubleFree else { Issue.record("\(String(describing: doubleFree))"); return }
        #expect(code == EINVAL)
        #expect(message.contains("\(run)"))

        let missing = netError { _ = try remote.openRegion(name: "nowhere") }
        #expect(missing?.errno == ENOENT)
        #expect(missing?.description.contains("nowhere") == true)

        let metadata = netError { _ = try remote.read(at: GlobalAddress(shelf: 0, offset: 64), count: 8) }
        guard case .invalidAddress = metadata else { Issue.record("\(String(describing: metadata))"); return }
        #expect(metadata!.description.contains("outside shelf 0's data pages"))
        let noShelf = netError { _ = try remote.read(at: GlobalAddress(shelf: 9, offset: 0), count: 8) }
        #expect(noShelf?.description.contains("no shelf 9") == true)
        let misaligned = netError { _ = try remote.fetchAndAdd(at: run.advanced(by: 4), 1) }
        #expect(misaligned?.description.contains("not 8-byte aligned") == true)
        let tooMany = netError { _ = try remote.allocatePages(count: 1 << 30) }
        #expect(tooMany?.errno == ENOSPC || tooMany?.errno == EINVAL)
        #expect(netError { try remote.freePages(at: run, count: -1) }?.description == "-1 pages: a run is 1 to 2147483647 pages")

        // None of these hurt the connection.
        #expect(remote.isConnected)
        #expect(try remote.allocatePages(count: 1) != .null)
    }

    @Test func aPoolThatGrewIsReachedOnItsNewShelf() throws {
        let served = try ServedPool(size: "1M")
        let remote = try connect(served)
        defer { remote.close() }
        let local = try Pool.open(name: served.name, at: served.home)
        defer { local.close() }
        let shelf = try local.grow(by: 1 << 20)
        let run = try local.allocatePages(count: 200)
        #expect(run.shelf == shelf)
        try local.write(at: run, bytes: [1, 2, 3, 4])
        #expect(try remote.read(at: run, count: 4) == [1, 2, 3, 4])
        #expect(try remote.shelves().count == 2)
    }

    /// A pool on pmem shelves is served as one on dram: writes (which the
    /// node persists before it answers; not observable here) and small and
    /// large reads round-trip.
    @Test func aPmemPoolIsServed() throws {
        let served = try ServedPool(size: "16M", medium: "pmem")
        let remote = try connect(served)
        defer { remote.close() }
        let run = try remote.allocatePages(count: 64)
        let bytes = pattern(64 * 4096, seed: 5)
        try remote.write(at: run, bytes: bytes)
        #expect(try remote.read(at: run, count: bytes.count) == bytes)
        #expect(try remote.read(at: run.advanced(by: 4096), count: 100) == Array(bytes[4096..<4196]))
        let local = try Pool.open(name: served.name, at: served.home)
        defer { local.close() }
        #expect(local.info().shelves[0].medium == .pmem)
        #expect(try local.read(at: run, count: bytes.count) == bytes)
    }

    @Test func writesFromTwoPoolsInOneProcessStayApart() throws {
        let served = try ServedPool()
        let first = try connect(served), second = try connect(served)
        defer { first.close(); second.close() }
        let a = try first.allocatePages(count: 1), b = try second.allocatePages(count: 1)
        #expect(a != b)
        try first.write(at: a, bytes: [1])
        try second.write(at: b, bytes: [2])
        #expect(try second.read(at: a, count: 1) == [1])
        #expect(try first.read(at: b, count: 1) == [2])
    }
}
