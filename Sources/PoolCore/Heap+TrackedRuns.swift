#if canImport(Glibc)
import Glibc
#endif

/// Tracked runs: page runs whose client keeps its own record of them (the
/// file system: file data and its metadata log, named in that log). They
/// carry their own tag (one store turns a cached run into a tagged one),
/// so that after a crash the client finds every run it ever held
/// (`trackedRuns`) and frees those its record does not name: nothing
/// leaks, whenever the client died. One client per pool keeps them.
extension Heap {
    /// A tracked run of `count` pages, placed by this heap.
    public func allocateTrackedPages(count: Int) throws -> GlobalAddress {
        try allocatePages(count: count, tag: .tracked(index))
    }

    public func freeTrackedPages(at address: GlobalAddress, count: Int) throws {
        try freePages(at: address, count: count, tag: .tracked(index))
    }

    /// Cuts a tracked run whose head counts `shares` owners beyond the
    /// first into the pieces it keeps, each with its own count, and frees
    /// the rest: a client's recovery setting counts to what its record
    /// names (SharedPages.swift).
    public func reshapeTrackedRun(at address: GlobalAddress, count: Int, shares: Int = 0, keeping pieces: [RunPiece]) throws {
        try pool.core.carveRun(address, count: count, shares: shares, keeping: pieces, tag: .tracked(index))
    }

    /// This heap's number in the pool's table: stable while the heap lives.
    public var id: Int { index }
}

/// One tracked run, as found in the page tables.
public struct TrackedRun: Hashable, Sendable {
    public let address: GlobalAddress
    public let pages: Int
    public let heap: Int
    /// Owners of its pages beyond the first.
    public let shares: Int

    public init(address: GlobalAddress, pages: Int, heap: Int, shares: Int = 0) {
        self.address = address
        self.pages = pages
        self.heap = heap
        self.shares = shares
    }
}

extension Pool {
    /// One more owner for the `count` pages of tracked runs at `address`
    /// (a clone names them): a write by any owner must first copy them
    /// (`sharedPages`). Count up before the new owner's record names them.
    public func shareTrackedPages(at address: GlobalAddress, count: Int) throws {
        try core.sharePages(at: address, count: count)
    }

    /// The same for many ranges at once (a snapshot's files); all or nothing.
    public func shareTrackedPages(_ ranges: [(address: GlobalAddress, count: Int)]) throws {
        try core.sharePages(ranges)
    }

    /// One owner fewer for the `count` pages of tracked runs at `address`;
    /// pages left with none are freed. After the record that drops them.
    public func releaseTrackedPages(at address: GlobalAddress, count: Int) throws {
        try core.releasePages(at: address, count: count)
    }

    /// The same for many ranges at once (a snapshot's files).
    public func releaseTrackedPages(_ ranges: [(address: GlobalAddress, count: Int)]) throws {
        try core.releasePages(ranges)
    }

    /// Which of the `count` pages at `address` other owners share too (page
    /// ranges from `address`): those a write must copy first.
    public func sharedPages(at address: GlobalAddress, count: Int) -> [Range<Int>] {
        core.sharedPages(at: address, count: count)
    }
}

extension Pool {
    /// Every tracked run, in every heap.
    public func trackedRuns() -> [TrackedRun] {
        var runs: [TrackedRun] = []
        for shelf in core.shelves.all {
            shelf.forEachHead { page, entry in
                guard entry.kind == .allocated, case .tracked(let heap)? = entry.tag else { return }
                runs.append(TrackedRun(address: shelf.address(ofPage: page), pages: entry.length, heap: heap, shares: entry.shares))
            }
        }
        return runs
    }

    public func heapExists(id: Int) -> Bool {
        id >= 0 && id < Layout.Heaps.capacity && core.heapIsLive(id)
    }

    /// The heap whose tracked run starts at `address` (for the file system,
    /// the log's first chunk names its heap), if the page table says so.
    public func heapOfTrackedRun(at address: GlobalAddress) -> Int? {
        guard let shelf = core.shelves[address.shelf], let page = shelf.page(at: address.offset),
              shelf.entry(page).kind == .allocated, case .tracked(let heap)? = shelf.entry(page).tag else { return nil }
        return heap
    }

    /// The heap with table number `id`, if it lives.
    public func heap(id: Int) -> Heap? {
        guard heapExists(id: id) else { return nil }
        return Heap(pool: self, name: core.heapName(id), index: id)
    }

    /// A word the pool's client keeps where its own structures start (the
    /// file system: its metadata log; null before the first mount), as
    /// PMDK's root object. One store, made durable, switches it.
    public var rootAddress: GlobalAddress {
        GlobalAddress(rawValue: core.metadata.atomic(at: Layout.Control.rootAddress).load(ordering: .acquiring))
    }

    /// Stores the root address durably; throws if the flush failed (what
    /// the old root named must then not be freed).
    public func setRootAddress(_ address: GlobalAddress) throws {
        core.metadata.atomic(at: Layout.Control.rootAddress).store(address.rawValue, ordering: .releasing)
        core.metadata.persist(offset: Layout.Control.rootAddress, count: 8)
        try core.metadata.checkPersisted()
    }

    /// NUMA nodes of the pages in `runs`, as the kernel reports them.
    public func pagesPerNode(of runs: [TrackedRun]) -> [String: Int] {
        var pointers: [UnsafeMutableRawPointer] = []
        for run in runs {
            guard let base = core.pointer(to: run.address) else { continue }
            // move_pages sees only pages mapped in this process: map them
            // (reading, which changes nothing) before asking.
            madvise(base, run.pages * pageSize, 22 /* MADV_POPULATE_READ */)
            for i in 0..<run.pages { pointers.append(base + i * pageSize) }
        }
        return OpenPool.countPerNode(pointers)
    }
}
