/// Placement of heaps: the policy a heap's row names (or the pool's
/// default, or this process's override), applied with mbind to each new
/// span before its first touch.
extension OpenPool {
    /// What placement a heap's new pages get in this process.
    func placement(ofHeap heap: Int) -> Placement? {
        if let override = placementOverrides.withLock({ $0[heap] }) { return override }
        return storedPlacement(ofHeap: heap) ?? superblock.placement
    }

    func storedPlacement(ofHeap heap: Int) -> Placement? {
        Placement(stored: metadata.text(at: Layout.Heaps.row(heap) + Layout.Heaps.policy, capacity: Layout.Heaps.policyCapacity))
    }

    /// Records a heap's placement for every process; `migrate` also moves
    /// the pages it already has.
    func setPlacement(_ placement: Placement?, ofHeap heap: Int, migrate: Bool) throws {
        try withGlobalLock {
            if case .remote(let wanted)? = placement {
                guard heapName(heap) != "default" else {
                    throw PoolError.invalidPlacement(placement!.description, reason: "heap 'default' holds the mount's metadata log, "
                        + "which stays on this machine: place another heap remote and give it to a directory")
                }
                let remote = shelves.all.filter { $0.remote != nil }.map(\.index)
                guard wanted.map(remote.contains) ?? !remote.isEmpty else {
                    throw PoolError.invalidPlacement(placement!.description, reason: wanted == nil
                        ? "the pool has no remote shelf (add one with poolfs grow --remote)"
                        : "shelf \(wanted!) is not a remote shelf (remote shelves: \(remote.isEmpty ? "none" : remote.map(String.init).joined(separator: ", ")))")
                }
            }
            guard heapIsLive(heap) else { throw PoolError.heapNotFound("#\(heap)") }
            storePlacement(placement, ofHeap: heap)
        }
        if migrate, let effective = placement ?? superblock.placement, effective.isNUMA { try move(heap: heap, to: effective) }
    }

    /// nil: the heap follows the pool's placement. Global lock held, or no other opener.
    func storePlacement(_ placement: Placement?, ofHeap heap: Int) {
        metadata.storeText(placement?.description ?? "", at: Layout.Heaps.row(heap) + Layout.Heaps.policy, capacity: Layout.Heaps.policyCapacity)
        metadata.persist(offset: Layout.Heaps.row(heap) + Layout.Heaps.policy, count: Layout.Heaps.policyCapacity)
    }

    /// This process only, as `poolfs exec` asks (hmctl's way).
    func overridePlacement(_ placement: Placement?, ofHeap heap: Int) {
        placementOverrides.withLock { $0[heap] = placement }
    }

    /// Moves every page of the heap's runs to where `placement` says.
    func move(heap: Int, to placement: Placement) throws {
        var runs: [(UnsafeMutableRawPointer, Int)] = []
        forEachSpan(of: heap) { shelf, page, entry, _ in
            runs.append((shelf.table.pointer(toPage: page), entry.length * Int(pageSize)))
        }
        for (pointer, bytes) in runs { try NodePlacement.apply(placement, to: pointer, bytes: bytes, migrate: true) }
    }

    /// Before a new run of the heap is first touched.
    func place(heap: Int, run raw: UInt64, pages: Int) {
        if let placement = placement(ofHeap: heap) { place(run: raw, pages: pages, placement) }
    }

    /// The same, with the heap's placement already looked up.
    func place(run raw: UInt64, pages: Int, _ placement: Placement) {
        guard placement.isNUMA else { return }
        let (table, page) = location(of: raw)
        try? NodePlacement.apply(placement, to: table.pointer(toPage: page), bytes: pages * Int(pageSize), migrate: true)
    }

    /// Pages of the heap per NUMA node, asked of the kernel (move_pages);
    /// "untouched" for pages never written.
    func pagesPerNode(ofHeap heap: Int) -> [String: Int] {
        var pointers: [UnsafeMutableRawPointer] = []
        forEachSpan(of: heap) { shelf, page, entry, _ in
            for i in 0..<entry.length { pointers.append(shelf.table.pointer(toPage: page + i)) }
        }
        return OpenPool.countPerNode(pointers)
    }

    static func countPerNode(_ pointers: [UnsafeMutableRawPointer]) -> [String: Int] {
        var counts: [String: Int] = [:]
        for node in NodePlacement.nodes(of: pointers) { counts[node.map { "\($0)" } ?? "untouched", default: 0] += 1 }
        return counts
    }
}

/// A value guarded by a ThreadMutex.
final class Locked<Value>: @unchecked Sendable {
    private let mutex = ThreadMutex()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        try mutex.withLock { try body(&value) }
    }
}
