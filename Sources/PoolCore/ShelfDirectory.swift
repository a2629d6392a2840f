import Atomics

/// The shelves this process has mapped, readable without a lock: a fixed
/// array of references that only grows (under the pool's global mutex), with
/// the count published last.
final class ShelfDirectory: @unchecked Sendable {
    private let slots: UnsafeMutablePointer<Unmanaged<Shelf>?>
    private let tables: UnsafeMutablePointer<UnsafePageTable>
    /// The count, in memory of its own: read on every fast-path lookup.
    private let published = UnsafeAtomic<Int>.create(0)
    /// Set once a remote shelf is mapped: read on every file write and close.
    private let anyRemote = UnsafeAtomic<Bool>.create(false)

    init() {
        slots = .allocate(capacity: Layout.ShelfTable.capacity)
        slots.initialize(repeating: nil, count: Layout.ShelfTable.capacity)
        tables = .allocate(capacity: Layout.ShelfTable.capacity)
    }

    deinit {
        for i in 0..<count { slots[i]?.release() }
        slots.deallocate()
        tables.deallocate()
        published.destroy()
        anyRemote.destroy()
    }

    var count: Int { published.load(ordering: .acquiring) }

    var hasRemote: Bool { anyRemote.load(ordering: .relaxed) }

    @inline(__always)
    subscript(index: Int) -> Shelf? {
        guard index >= 0, index < published.load(ordering: .acquiring) else { return nil }
        return slots[index]?.takeUnretainedValue()
    }

    /// The page table of a mapped shelf, or nil; no reference counting.
    @inline(__always)
    func table(_ index: Int) -> UnsafePageTable? {
        guard index >= 0, index < published.load(ordering: .acquiring) else { return nil }
        return tables[index]
    }

    var all: [Shelf] { (0..<count).compactMap { self[$0] } }

    /// Global mutex held.
    func append(_ shelf: Shelf) {
        let index = count
        precondition(index < Layout.ShelfTable.capacity && shelf.index == index)
        slots[index] = Unmanaged.passRetained(shelf)
        (tables + index).initialize(to: shelf.table)
        if shelf.remote != nil { anyRemote.store(true, ordering: .relaxed) }
        published.store(index + 1, ordering: .releasing)
    }
}
