import PoolCore

/// One-page runs that the file system shares among small files, so that a
/// file of a few bytes does not take a whole page (64 KiB by default; tmpfs
/// takes 4 KiB). A run is cut into slots of `slotBytes`; a file of at most
/// half a page holds its bytes in contiguous slots of one run, a fragment
/// (Extent.swift), and moves when it outgrows them.
///
/// Which slots are taken is not logged: a mount rebuilds it from the files
/// that name fragments, and a run that none names is one of the runs the
/// recovery frees. A run goes back to its heap when its last slot does,
/// which is after the change that freed the slot was logged.
final class FragmentRuns: @unchecked Sendable {
    /// 4 KiB, as tmpfs's pages; a 64th of a larger page than 256 KiB.
    let slotBytes: Int
    static let smallestSlot = 4096
    /// Slots per run (at most 64: a run's slots are one word).
    let slots: Int
    /// The largest fragment, in bytes; 0 where pages are too small to share.
    let largest: Int

    private struct Run {
        let heap: Int
        var used: UInt64
    }
    private var runs: [GlobalAddress: Run] = [:]
    /// Owners beyond the first of a fragment that snapshots share, by its
    /// address (its slots stay taken until the last one lets go). Rebuilt
    /// at a mount from the names, as the slots are.
    private var shares: [GlobalAddress: Int] = [:]
    /// Runs with room, by heap and by their longest stretch of free slots
    /// (index 1 up to `slots`), so a request for n slots finds one at once.
    private var roomy: [Int: [Set<GlobalAddress>]] = [:]
    private let mutex = ThreadMutex()
    private let pool: Pool

    init(pool: Pool) {
        self.pool = pool
        slotBytes = max(FragmentRuns.smallestSlot, pool.pageSize / 64)
        slots = pool.pageSize / slotBytes
        largest = slots >= 2 ? slots / 2 * slotBytes : 0
    }

    /// The fragment size a file of `bytes` gets, nil if it gets pages.
    func capacity(for bytes: UInt64) -> Int? {
        guard largest > 0, bytes <= UInt64(largest) else { return nil }
        let slotBytes = UInt64(self.slotBytes)
        return Int(max(1, (bytes + slotBytes - 1) / slotBytes) * slotBytes)
    }

    /// A fragment of `bytes` (as `capacity` gives) from a run of `heap`,
    /// which gives a new run when none has room. Its bytes are as the last
    /// owner left them.
    func allocate(bytes: Int, from heap: Heap) throws -> Extent {
        let count = bytes / slotBytes
        guard bytes % slotBytes == 0, count >= 1, count <= slots / 2 else {
            throw FileSystemError.invalid
        }
        if let fragment = mutex.withLock({ take(count, bytes: bytes, heap: heap.id) }) { return fragment }
        // A page of its own, taken outside the lock (the pool's slow path
        // may wait), for this request or, if a free gets in first, the next.
        let address = try heap.allocateTrackedPages(count: 1)
        return mutex.withLock {
            runs[address] = Run(heap: heap.id, used: 0)
            rebucket(address, of: heap.id, from: nil)
            return take(count, bytes: bytes, heap: heap.id)!
        }
    }

    /// `count` slots from a run of `heap` with room; `mutex` held.
    private func take(_ count: Int, bytes: Int, heap: Int) -> Extent? {
        guard let buckets = roomy[heap],
              let address = (count...slots).lazy.compactMap({ buckets[$0].first }).first,
              let before = runs[address]
        else { return nil }
        let mask = FragmentRuns.mask(count)
        let slot = (0...(slots - count)).first { before.used & mask << $0 == 0 }!
        runs[address]!.used |= mask << slot
        rebucket(address, of: heap, from: before.used)
        return .fragment(address.advanced(by: UInt64(slot * slotBytes)), bytes: bytes)
    }

    /// Moves a run of `heap` from the bucket for `used` (what its slots
    /// were) to the one for what they are (to none when it is full or
    /// gone); `mutex` held.
    private func rebucket(_ address: GlobalAddress, of heap: Int, from used: UInt64?) {
        if let used { roomy[heap]?[longestFree(used)].remove(address) }
        guard let run = runs[address] else { return }
        let longest = longestFree(run.used)
        if longest > 0 { roomy[heap, default: Array(repeating: [], count: slots + 1)][longest].insert(address) }
    }

    private func longestFree(_ used: UInt64) -> Int {
        var free = ~used & fullMask, longest = 0
        while free != 0 {
            let start = free.trailingZeroBitCount
            let length = (~(free >> UInt64(start))).trailingZeroBitCount
            longest = max(longest, length)
            free &= start + length >= 64 ? 0 : ~UInt64(0) << UInt64(start + length)
        }
        return longest
    }

    private var fullMask: UInt64 { FragmentRuns.mask(slots) }

    private static func mask(_ count: Int) -> UInt64 { count == 64 ? .max : (1 << count) - 1 }

    /// One more owner for `fragment` (a snapshot's copy of a small file).
    func share(_ fragment: Extent) {
        mutex.withLock { shares[fragment.address, default: 0] += 1 }
    }

    /// Whether another file names `fragment` too: a write copies it first.
    func isShared(_ fragment: Extent) -> Bool {
        mutex.withLock { shares[fragment.address] != nil }
    }

    /// Gives `fragment`'s slots back (or one owner of a shared one);
    /// returns its run and the run's heap if the run is now empty, for the
    /// caller to free.
    func release(_ fragment: Extent) -> (address: GlobalAddress, heap: Int)? {
        mutex.withLock {
            if let owners = shares[fragment.address] {
                shares[fragment.address] = owners > 1 ? owners - 1 : nil
                return nil
            }
            guard let (address, bits) = position(of: fragment), let before = runs[address] else { return nil }
            runs[address]!.used &= ~bits
            let run = runs[address]!
            if run.used == 0 { runs.removeValue(forKey: address) }
            rebucket(address, of: run.heap, from: before.used)
            return run.used == 0 ? (address, run.heap) : nil
        }
    }

    /// The page (the run) that `fragment` lies in, and the bits of its
    /// slots; nil when it is not whole slots inside one page.
    func position(of fragment: Extent) -> (run: GlobalAddress, bits: UInt64)? {
        let count = fragment.fragmentBytes / slotBytes
        guard fragment.fragmentBytes % slotBytes == 0, count >= 1,
              let run = pool.pageStart(containing: fragment.address) else { return nil }
        let offset = Int(fragment.address.offset - run.offset)
        guard offset % slotBytes == 0, offset / slotBytes + count <= slots else { return nil }
        return (run, FragmentRuns.mask(count) << (offset / slotBytes))
    }

    /// After a mount's replay: the slots the files' fragments take, in runs
    /// the pool holds (`heapOfRun`: each one-page run of the file system,
    /// with its heap). Returns the runs, each with a file it holds (for the
    /// recovery's list of named runs). Throws on a fragment outside them or
    /// two that overlap, unless it is one fragment that snapshots share
    /// with at most one file of the live tree.
    func rebuild(_ fragments: [(owner: UInt64, extent: Extent)],
                 heapOfRun: [GlobalAddress: Int]) throws -> [(run: GlobalAddress, owner: UInt64)] {
        try mutex.withLock {
            runs = [:]
            roomy = [:]
            shares = [:]
            var named: [(run: GlobalAddress, owner: UInt64)] = []
            var sizes: [GlobalAddress: Int] = [:]
            var live: Set<GlobalAddress> = []
            func damaged(_ owner: UInt64, _ fragment: Extent, _ reason: String) -> Error {
                PoolError.damaged(path: pool.path, reason: "inode \(owner) names a fragment at \(fragment.address) \(reason)")
            }
            for (owner, fragment) in fragments {
                guard let (address, bits) = position(of: fragment), let heap = heapOfRun[address] else {
                    throw damaged(owner, fragment, "in no run of the file system")
                }
                if runs[address] == nil { named.append((address, owner)) }
                var run = runs[address] ?? Run(heap: heap, used: 0)
                let frozen = FileSystem.isFrozen(owner)
                if sizes[fragment.address] == fragment.fragmentBytes, frozen || !live.contains(fragment.address) {
                    shares[fragment.address, default: 0] += 1
                    if !frozen { live.insert(fragment.address) }
                    continue
                }
                guard run.used & bits == 0 else { throw damaged(owner, fragment, "overlapping another file's") }
                sizes[fragment.address] = fragment.fragmentBytes
                if !frozen { live.insert(fragment.address) }
                run.used |= bits
                runs[address] = run
            }
            for (address, run) in runs { rebucket(address, of: run.heap, from: nil) }
            return named
        }
    }

    /// The runs holding fragments.
    var runCount: Int { mutex.withLock { runs.count } }
}
