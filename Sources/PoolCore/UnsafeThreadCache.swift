/// One thread's stock of page runs for one pool, in memory private to this
/// process: the allocator's fast path pops and pushes here without locks.
///
/// Every run in a stack has a head entry `cached(owner: this process)` in the
/// page table, so if the process dies the runs go back to the pool.
/// One allocation holds a `Header`, then the number of runs cached per
/// length 1...maxRun, one heap lane slot per heap, then one stack of
/// `stackCapacity` addresses per run length.
struct UnsafeThreadCache {
    static let maxRun = 16
    static let stackCapacity = 32

    private struct Header {
        /// The OpenPool, unretained.
        let owner: UnsafeMutableRawPointer
        /// The lane of its process slot this thread uses; 0 is shared.
        let lane: Int
        /// How deep this thread is in nested epochs.
        var epochDepth: Int
    }

    private static let countsOffset = MemoryLayout<Header>.stride
    private static let lanesOffset = countsOffset + maxRun * MemoryLayout<Int>.stride
    private static let stacksOffset = lanesOffset + Layout.Heaps.capacity * MemoryLayout<UnsafeMutableRawPointer?>.stride
    private static let totalBytes = stacksOffset + maxRun * stackCapacity * MemoryLayout<UInt64>.stride

    let raw: UnsafeMutableRawPointer

    init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }

    static func allocate(owner: Unmanaged<OpenPool>, lane: Int) -> UnsafeThreadCache {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: totalBytes, alignment: MemoryLayout<Header>.alignment)
        raw.initializeMemory(as: Header.self, repeating: Header(owner: owner.toOpaque(), lane: lane, epochDepth: 0), count: 1)
        (raw + countsOffset).initializeMemory(as: Int.self, repeating: 0, count: maxRun)
        (raw + lanesOffset).initializeMemory(as: UnsafeMutableRawPointer?.self, repeating: nil, count: Layout.Heaps.capacity)
        (raw + stacksOffset).initializeMemory(as: UInt64.self, repeating: 0, count: maxRun * stackCapacity)
        return UnsafeThreadCache(raw)
    }

    func deallocate() { raw.deallocate() }

    private var header: UnsafeMutablePointer<Header> { raw.assumingMemoryBound(to: Header.self) }

    /// Runs cached of each length, at `length - 1`.
    @inline(__always)
    private var counts: UnsafeMutablePointer<Int> {
        (raw + UnsafeThreadCache.countsOffset).assumingMemoryBound(to: Int.self)
    }

    private var lanes: UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        (raw + UnsafeThreadCache.lanesOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    @inline(__always)
    private func stack(_ length: Int) -> UnsafeMutablePointer<UInt64> {
        (raw + UnsafeThreadCache.stacksOffset).assumingMemoryBound(to: UInt64.self) + (length - 1) * UnsafeThreadCache.stackCapacity
    }

    var owner: Unmanaged<OpenPool> { Unmanaged.fromOpaque(header.pointee.owner) }

    /// The lane of its process slot this thread uses; 0 is shared.
    var lane: Int { header.pointee.lane }

    @inline(__always)
    func count(_ length: Int) -> Int { counts[length - 1] }

    /// How deep this thread is in nested epochs.
    var epochDepth: Int {
        get { header.pointee.epochDepth }
        nonmutating set { header.pointee.epochDepth = newValue }
    }

    /// This thread's lane of heap `index`, if it has used that heap.
    @inline(__always)
    func heapLane(_ index: Int) -> UnsafeHeapLane? {
        lanes[index].map(UnsafeHeapLane.init)
    }

    func setHeapLane(_ index: Int, _ lane: UnsafeHeapLane?) {
        lanes[index] = lane?.raw
    }

    var heapLanes: [(Int, UnsafeHeapLane)] {
        (0..<Layout.Heaps.capacity).compactMap { index in heapLane(index).map { (index, $0) } }
    }

    @inline(__always)
    func pop(_ length: Int) -> UInt64? {
        let n = counts[length - 1]
        guard n > 0 else { return nil }
        counts[length - 1] = n - 1
        return stack(length)[n - 1]
    }

    @inline(__always)
    func push(_ length: Int, _ address: UInt64, capacity: Int) -> Bool {
        let n = counts[length - 1]
        guard n < capacity else { return false }
        stack(length)[n] = address
        counts[length - 1] = n + 1
        return true
    }

    /// Removes up to `limit` runs of one length, oldest first.
    func drain(_ length: Int, limit: Int = .max) -> [UInt64] {
        let n = count(length)
        let taken = min(n, limit)
        let base = stack(length)
        let runs = (0..<taken).map { base[$0] }
        for i in taken..<n { base[i - taken] = base[i] }
        counts[length - 1] = n - taken
        return runs
    }
}
