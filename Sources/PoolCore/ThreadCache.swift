/// One thread's stock of page runs for one pool, in memory private to this
/// process: the allocator's fast path pops and pushes here without locks.
///
/// Every run in a stack has a head entry `cached(owner: this process)` in the
/// page table, so if the process dies the runs go back to the pool.
/// Layout, in words: [owner][lane][epoch depth][count for each run length
/// 1...16][one heap lane per heap] then one stack of `stackCapacity`
/// addresses per run length.
struct UnsafeThreadCache {
    static let maxRun = 16
    static let stackCapacity = 32
    private static let heapsOffset = 3 + maxRun
    private static let headerWords = heapsOffset + Layout.Heaps.capacity
    private static let totalWords = headerWords + maxRun * stackCapacity

    let words: UnsafeMutablePointer<UInt64>

    init(_ raw: UnsafeMutableRawPointer) {
        words = raw.assumingMemoryBound(to: UInt64.self)
    }

    static func allocate(owner: Unmanaged<OpenPool>, lane: Int) -> UnsafeThreadCache {
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: totalWords)
        words.initialize(repeating: 0, count: totalWords)
        words[0] = UInt64(UInt(bitPattern: owner.toOpaque()))
        words[1] = UInt64(bitPattern: Int64(lane))
        return UnsafeThreadCache(UnsafeMutableRawPointer(words))
    }

    func deallocate() { words.deallocate() }

    var raw: UnsafeMutableRawPointer { UnsafeMutableRawPointer(words) }

    var owner: Unmanaged<OpenPool> {
        Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: UInt(words[0]))!)
    }

    /// The lane of its process slot this thread uses; 0 is shared.
    var lane: Int { Int(Int64(bitPattern: words[1])) }

    @inline(__always)
    func count(_ length: Int) -> Int { Int(words[2 + length]) }

    /// How deep this thread is in nested epochs.
    var epochDepth: Int {
        get { Int(words[2]) }
        nonmutating set { words[2] = UInt64(newValue) }
    }

    /// This thread's lane of heap `index`, if it has used that heap.
    @inline(__always)
    func heapLane(_ index: Int) -> UnsafeHeapLane? {
        let raw = words[UnsafeThreadCache.heapsOffset + index]
        return raw == 0 ? nil : UnsafeHeapLane(UnsafeMutableRawPointer(bitPattern: UInt(raw))!)
    }

    func setHeapLane(_ index: Int, _ lane: UnsafeHeapLane?) {
        words[UnsafeThreadCache.heapsOffset + index] = lane.map { UInt64(UInt(bitPattern: $0.raw)) } ?? 0
    }

    var heapLanes: [(Int, UnsafeHeapLane)] {
        (0..<Layout.Heaps.capacity).compactMap { index in heapLane(index).map { (index, $0) } }
    }

    @inline(__always)
    private func stack(_ length: Int) -> UnsafeMutablePointer<UInt64> {
        words + UnsafeThreadCache.headerWords + (length - 1) * UnsafeThreadCache.stackCapacity
    }

    @inline(__always)
    func pop(_ length: Int) -> UInt64? {
        let n = words[2 + length]
        guard n > 0 else { return nil }
        words[2 + length] = n - 1
        return stack(length)[Int(n - 1)]
    }

    @inline(__always)
    func push(_ length: Int, _ address: UInt64, capacity: Int) -> Bool {
        let n = Int(words[2 + length])
        guard n < capacity else { return false }
        stack(length)[n] = address
        words[2 + length] = UInt64(n + 1)
        return true
    }

    /// Removes up to `limit` runs of one length, oldest first.
    func drain(_ length: Int, limit: Int = .max) -> [UInt64] {
        let n = count(length)
        let taken = min(n, limit)
        let base = stack(length)
        let runs = (0..<taken).map { base[$0] }
        for i in taken..<n { base[i - taken] = base[i] }
        words[2 + length] = UInt64(n - taken)
        return runs
    }
}
