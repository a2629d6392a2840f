#if canImport(Glibc)
import Glibc
#endif

/// Page runs of the mounted file system. They carry their own tag (one
/// store turns a cached run into a tagged one), so that a mount after a
/// crash finds every run the file system ever held and frees those that no
/// file or metadata log names: nothing leaks, whenever the mount died.
extension Heap {
    /// A run for a file's data (or the file system's log), placed by this
    /// heap. For the mount's file system only: a mount frees every such run
    /// that none of its files names.
    public func allocateFilePages(count: Int) throws -> GlobalAddress {
        try allocatePages(count: count, tag: .files(index))
    }

    public func freeFilePages(at address: GlobalAddress, count: Int) throws {
        try freePages(at: address, count: count, tag: .files(index))
    }

    /// Cuts a file run into the pieces it keeps (page ranges in it, in
    /// order), each a run of its own after, and frees the rest: a file cut
    /// short, or with a hole punched in it.
    public func carveFilePages(at address: GlobalAddress, count: Int, keeping pieces: [Range<Int>]) throws {
        try pool.core.carveRun(address, count: count, keeping: pieces, tag: .files(index))
    }

    /// This heap's number in the pool's table: stable while the heap lives.
    public var id: Int { index }
}

/// One run of the file system's pages, as found in the page tables.
public struct FileRun: Hashable, Sendable {
    public let address: GlobalAddress
    public let pages: Int
    public let heap: Int

    public init(address: GlobalAddress, pages: Int, heap: Int) {
        self.address = address
        self.pages = pages
        self.heap = heap
    }
}

extension Pool {
    /// Every run the file system holds, in every heap.
    public func fileRuns() -> [FileRun] {
        var runs: [FileRun] = []
        for shelf in core.shelves.all {
            shelf.forEachHead { page, entry in
                guard entry.kind == .allocated, case .files(let heap)? = entry.tag else { return }
                runs.append(FileRun(address: shelf.address(ofPage: page), pages: entry.length, heap: heap))
            }
        }
        return runs
    }

    public func heapExists(id: Int) -> Bool {
        id >= 0 && id < Layout.Heaps.capacity && core.heapIsLive(id)
    }

    /// The heap whose file-system run starts at `address` (the log's first
    /// chunk names the file system's own heap), if the page table says so.
    public func heapOfFileRun(at address: GlobalAddress) -> Int? {
        guard let shelf = core.shelves[address.shelf], let page = shelf.page(at: address.offset),
              shelf.entry(page).kind == .allocated, case .files(let heap)? = shelf.entry(page).tag else { return nil }
        return heap
    }

    /// The heap with table number `id`, if it lives.
    public func heap(id: Int) -> Heap? {
        guard heapExists(id: id) else { return nil }
        return Heap(pool: self, name: core.heapName(id), index: id)
    }

    /// Where the file system's metadata log starts (null before the first
    /// mount). Switching logs is this one word's store.
    public var fileSystemLog: GlobalAddress {
        get { GlobalAddress(rawValue: core.metadata.atomic(at: Layout.Control.fileSystemLog).load(ordering: .acquiring)) }
        set {
            core.metadata.atomic(at: Layout.Control.fileSystemLog).store(newValue.rawValue, ordering: .releasing)
            core.metadata.persist(offset: Layout.Control.fileSystemLog, count: 8)
        }
    }

    /// NUMA nodes of the pages in `runs`, as the kernel reports them.
    public func pagesPerNode(of runs: [FileRun]) -> [String: Int] {
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
