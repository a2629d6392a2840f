/// A heap: a named allocator of small objects and page runs inside a pool,
/// safe to use from many threads and processes at once. Objects are named
/// by global addresses; `pool.withUnsafeMutableBytes(at:count:)` reaches them.
public final class Heap: @unchecked Sendable {
    public let pool: Pool
    public let name: String
    let index: Int
    /// The pool's core, reached without reference counting on the fast
    /// path (threads sharing one Heap would contend on its count); `pool`
    /// keeps it alive.
    private let unmanagedCore: Unmanaged<OpenPool>

    init(pool: Pool, name: String, index: Int) {
        self.pool = pool
        self.name = name
        self.index = index
        unmanagedCore = Unmanaged.passUnretained(pool.core)
    }

    @inline(__always)
    private func withCore<R>(_ body: (OpenPool) throws -> R) rethrows -> R {
        try unmanagedCore._withUnsafeGuaranteedRef(body)
    }

    private var core: OpenPool { pool.core }

    /// An object of at least `size` bytes, 16-byte aligned.
    @inline(__always)
    public func allocate(size: Int) throws -> GlobalAddress {
        try withCore { try $0.allocateObject(heap: index, size: size) }
    }

    /// An object of at least `size` bytes, filled with zeros.
    public func allocateZeroed(size: Int) throws -> GlobalAddress {
        let address = try allocate(size: size)
        try pool.withUnsafeMutableBytes(at: address, count: size) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
        return address
    }

    /// An object of `size` bytes at an address that is a multiple of
    /// `alignment` (a power of two).
    public func allocate(size: Int, alignment: Int) throws -> GlobalAddress {
        guard alignment > 0, alignment & (alignment - 1) == 0 else {
            throw PoolError.invalidSize("\(alignment)", reason: "an alignment is a power of two")
        }
        if alignment <= 16 { return try allocate(size: size) }
        let (padded, overflow) = size.addingReportingOverflow(alignment - 1)
        guard !overflow, size >= 0 else { throw PoolError.invalidSize("\(size)", reason: "too large") }
        let block = try allocate(size: padded)
        // The offset is aligned; pointers are too wherever the mapping is
        // aligned that much (mmap aligns to 4 KiB).
        let mask = UInt64(alignment) - 1
        return GlobalAddress(shelf: block.shelf, offset: (block.offset + mask) & ~mask)
    }

    @inline(__always)
    public func free(_ address: GlobalAddress) throws {
        try withCore { core in try core.retryingAfterRecovery { try core.freeObject(heap: index, address) } }
    }

    /// How many bytes from `address` to the end of its block.
    public func usableSize(_ address: GlobalAddress) throws -> Int {
        try core.usableSize(heap: index, address)
    }

    /// Grows or shrinks an object, moving it when it must; its bytes are kept.
    public func reallocate(_ address: GlobalAddress, size: Int) throws -> GlobalAddress {
        if address.isNull { return try allocate(size: size) }
        let usable = try usableSize(address)
        if size <= usable && size >= usable / 2 { return address }
        let moved = try allocate(size: size)
        let count = min(size, usable)
        try pool.withUnsafeMutableBytes(at: address, count: count) { source in
            try pool.withUnsafeMutableBytes(at: moved, count: count) { $0.copyMemory(from: UnsafeRawBufferPointer(source)) }
        }
        try free(address)
        return moved
    }

    /// A run of whole pages, freed with `freePages(at:count:)` of this heap.
    public func allocatePages(count: Int) throws -> GlobalAddress {
        try allocatePages(count: count, tag: .heapPages(index))
    }

    public func freePages(at address: GlobalAddress, count: Int) throws {
        try freePages(at: address, count: count, tag: .heapPages(index))
    }

    /// A run tagged as this heap's (`tag` says whose within it), placed by the heap.
    func allocatePages(count: Int, tag: PageEntry.Tag) throws -> GlobalAddress {
        let placement = core.placement(ofHeap: index)
        if case .remote(let shelf)? = placement {
            return try core.allocateRemotePages(count: count, tag: tag, shelf: shelf)
        }
        let address = try core.allocatePages(count: count, tag: tag)
        if let placement { core.place(run: address.rawValue, pages: count, placement) }
        return address
    }

    func freePages(at address: GlobalAddress, count: Int, tag: PageEntry.Tag) throws {
        try core.retryingAfterRecovery { try core.freePages(at: address, count: count, tag: tag) }
    }

    /// Runs `body` as a reader: memory freed with `delayedFree` while it
    /// runs is not reused until it (and every other epoch that could see
    /// that memory) has ended. Epochs nest.
    public func withEpoch<R>(_ body: () throws -> R) throws -> R {
        try core.withEpoch(body)
    }

    /// Enters an epoch without a closure, for C callers; pair with `exitEpoch`.
    public func enterEpoch() throws { try core.enterEpoch() }
    public func exitEpoch() { core.exitEpoch() }

    /// Frees an object once no epoch that could still see it is running.
    public func delayedFree(_ address: GlobalAddress) throws {
        try core.delayedFree(heap: index, address)
    }

    /// Tries to move the epoch on and free what became safe; false when a
    /// running epoch holds it back.
    @discardableResult
    public func reclaimDelayed() -> Bool { core.advanceEpoch() }

    /// Where this heap's new pages go: this process's override, else the
    /// heap's own placement, else the pool's default; nil for the kernel's
    /// default (local first touch).
    public var placement: Placement? { core.placement(ofHeap: index) }

    /// Sets the heap's placement for every process (nil: the pool's
    /// default). New pages follow it; with `migrate`, existing pages move.
    public func setPlacement(_ placement: Placement?, migrate: Bool = false) throws {
        try core.setPlacement(placement, ofHeap: index, migrate: migrate)
    }

    /// Sets a placement for this process's allocations from the heap only.
    public func setPlacementForThisProcess(_ placement: Placement?) {
        core.overridePlacement(placement, ofHeap: index)
    }

    /// Pages of the heap per NUMA node, as the kernel reports them.
    public func pagesPerNode() -> [String: Int] { core.pagesPerNode(ofHeap: index) }

    public func stats() -> HeapStats {
        var stats = (try? core.withGlobalLock { core.heapStats(index) }) ?? core.heapStats(index)
        stats.placement = placement?.description ?? ""
        stats.pagesPerNode = pagesPerNode()
        return stats
    }
}

extension Pool {
    @discardableResult
    public func createHeap(name: String) throws -> Heap {
        let index = try core.createHeap(name: name)
        return Heap(pool: self, name: name, index: index)
    }

    /// Opens a heap; with `create`, makes it first if it does not exist.
    public func openHeap(name: String, create: Bool = false) throws -> Heap {
        if let index = core.heapIndex(named: name) { return Heap(pool: self, name: name, index: index) }
        guard create else { throw PoolError.heapNotFound(name) }
        do {
            return try createHeap(name: name)
        } catch PoolError.heapExists {
            return try openHeap(name: name)
        }
    }

    /// Destroys an empty heap that no other thread or process allocates from.
    public func destroyHeap(name: String) throws {
        try core.destroyHeap(name: name)
    }

    public func heaps() -> [String] { heapList().map(\.name) }

    /// Heaps with their table rows: numbers that stay while they live.
    public func heapList() -> [(id: Int, name: String)] {
        core.liveHeaps.map { ($0, core.heapName($0)) }
    }
}

extension Heap {
    /// Allocates an object and stores its address at `destination` (an
    /// aligned word in the pool) as one crash-atomic step.
    public func allocate(size: Int, publishingTo destination: GlobalAddress) throws -> GlobalAddress {
        try core.allocateObject(heap: index, size: size, publishingTo: destination)
    }

    /// If `destination` still holds `address`, zeroes it and frees the
    /// object, as one crash-atomic step; false when another process got there first.
    @discardableResult
    public func free(_ address: GlobalAddress, clearing destination: GlobalAddress) throws -> Bool {
        try core.retryingAfterRecovery { try core.freeObject(heap: index, address, clearing: destination) }
    }
}
