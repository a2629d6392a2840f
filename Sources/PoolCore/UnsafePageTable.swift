import Atomics
import CPmem

/// A shelf's page table as the fast path sees it: plain values and one
/// pointer, so looking a page up costs no reference counting. Valid while
/// the shelf's mapping lives (as long as the pool is open).
struct UnsafePageTable {
    private let entries: UnsafeMutablePointer<UInt64>
    let shelf: Int
    /// Where page 0's bytes are mapped in this process.
    let pages: UnsafeMutableRawPointer
    let pageCount: Int
    let dataOffset: UInt64
    let pageShift: UInt64
    /// Entry stores are flushed to persistence when the shelf is real pmem.
    let persistent: Bool
    /// The pages' bytes live on a memory node (RemoteShelfCache): no
    /// pointer into them leaves PoolCore but through the cache.
    let isRemote: Bool

    init(shelf: Int, entries: UnsafeMutablePointer<UInt64>, pages: UnsafeMutableRawPointer, geometry: ShelfGeometry,
         persistent: Bool, isRemote: Bool = false) {
        self.isRemote = isRemote
        self.shelf = shelf
        self.entries = entries
        self.pages = pages
        pageCount = geometry.pageCount
        dataOffset = geometry.dataOffset
        pageShift = UInt64(geometry.pageSize.trailingZeroBitCount)
        self.persistent = persistent
    }

    /// The page a data offset starts, or nil when it starts none.
    @inline(__always)
    func page(at offset: UInt64) -> Int? {
        guard offset >= dataOffset else { return nil }
        let relative = offset - dataOffset
        guard relative & (1 << pageShift - 1) == 0 else { return nil }
        let page = Int(relative >> pageShift)
        return page < pageCount ? page : nil
    }

    /// The page an offset falls in, if it lies in the data pages.
    @inline(__always)
    func page(containing offset: UInt64) -> Int? {
        guard offset >= dataOffset else { return nil }
        let page = Int((offset - dataOffset) >> pageShift)
        return page < pageCount ? page : nil
    }

    @inline(__always)
    func pointer(toPage page: Int) -> UnsafeMutableRawPointer { pages + page << Int(pageShift) }

    @inline(__always)
    func offset(ofPage page: Int) -> UInt64 { dataOffset + UInt64(page) << pageShift }

    @inline(__always)
    func address(ofPage page: Int) -> GlobalAddress { GlobalAddress(shelf: shelf, offset: offset(ofPage: page)) }

    /// The first page of the run that `page` lies in.
    @inline(__always)
    func head(of page: Int) -> (Int, PageEntry) {
        let e = entry(page)
        if e.kind == .tail, e.length <= page { return (page - e.length, entry(page - e.length)) }
        return (page, e)
    }

    @inline(__always)
    private func atomic(_ page: Int) -> UnsafeAtomic<UInt64> {
        precondition(page >= 0 && page < pageCount)
        return UnsafeAtomic(at: UnsafeMutableRawPointer(entries + page)
            .assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }

    @inline(__always)
    func entry(_ page: Int) -> PageEntry {
        PageEntry(rawValue: atomic(page).load(ordering: .acquiring))
    }

    @inline(__always)
    func setEntry(_ page: Int, _ entry: PageEntry) {
        atomic(page).store(entry.rawValue, ordering: .releasing)
        if persistent { pmem_persist(entries + page, 8) }
    }

    /// Moves an entry from `expected` to `desired`; nil when done, else
    /// what the entry held instead.
    @inline(__always)
    func exchangeEntry(_ page: Int, expected: PageEntry, desired: PageEntry) -> PageEntry? {
        let (done, original) = atomic(page).compareExchange(
            expected: expected.rawValue, desired: desired.rawValue, ordering: .acquiringAndReleasing)
        if persistent && done { pmem_persist(entries + page, 8) }
        return done ? nil : PageEntry(rawValue: original)
    }
}
