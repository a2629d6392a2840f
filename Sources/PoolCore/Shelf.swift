#if canImport(Glibc)
import Glibc
#endif


/// One mapped shelf: its file, geometry, page table and free-page bitmap.
///
/// Page-table words are read and written atomically by any thread of any
/// process. The bitmap (and `searchHint`) is touched only under the pool's
/// global lock.
final class Shelf: @unchecked Sendable {
    let index: Int
    let file: MappedFile
    let geometry: ShelfGeometry
    let table: UnsafePageTable
    /// A remote shelf's cache of the node's bytes; nil for a local shelf.
    let remote: RemoteShelfCache?
    private let bitmap: UnsafeMutablePointer<UInt64>
    /// Where the next search for free pages starts; global lock.
    private var searchHint = 0
    /// Told of pages about to be freed, which a freeze may still need.
    weak var freeze: FreezeHelper? {
        didSet { remote?.freeze = freeze }
    }

    init(index: Int, file: MappedFile, geometry: ShelfGeometry, remote: RemoteShelfCache? = nil) {
        self.index = index
        self.file = file
        self.geometry = geometry
        self.remote = remote
        table = UnsafePageTable(shelf: index, entries: file.words(at: geometry.pageTableOffset, count: geometry.pageCount),
                                pages: file.pointer(at: Int(geometry.dataOffset), count: Int(geometry.dataBytes)),
                                geometry: geometry, persistent: file.isPersistentMemory, isRemote: remote != nil)
        bitmap = file.words(at: geometry.bitmapOffset, count: geometry.bitmapWords)
    }

    var pageCount: Int { geometry.pageCount }

    // MARK: Addresses

    func address(ofPage page: Int) -> GlobalAddress {
        GlobalAddress(shelf: index, offset: geometry.offset(ofPage: page))
    }

    /// The page an address starts, or nil when it is not the start of a data page.
    func page(at offset: UInt64) -> Int? { table.page(at: offset) }

    /// True when `[offset, offset+count)` lies inside this shelf's data pages.
    func containsData(offset: UInt64, count: UInt64) -> Bool {
        offset >= geometry.dataOffset && count <= geometry.dataBytes
            && offset - geometry.dataOffset <= geometry.dataBytes - count
    }

    // MARK: Page table

    @inline(__always)
    func entry(_ page: Int) -> PageEntry { table.entry(page) }

    @inline(__always)
    func setEntry(_ page: Int, _ entry: PageEntry) { table.setEntry(page, entry) }

    // MARK: Runs (global lock)

    /// Makes `[page, page+length)` a run headed by `head`: tails first, so that
    /// a crash leaves either nothing or a whole run.
    func claimRun(at page: Int, length: Int, head: PageEntry) {
        internalCheck(isFreeRun(page, length), "claiming pages \(page)..<\(page + length) of shelf \(index), not all free")
        for i in 1..<max(length, 1) { setEntry(page + i, .tail(distance: i)) }
        setEntry(page, head)
        setBits(page, length, used: true)
        searchHint = page + length
    }

    /// Returns a run to the free space: head first, so a crash leaves only
    /// uncovered tails, which count as free.
    func releaseRun(at page: Int, length: Int) {
        // A run a kill left half cut is freed whole too: every entry is rewritten.
        internalCheck(isWholeRun(page, length) || isHalfCarvedRun(page, length),
                      "releasing pages \(page)..<\(page + length) of shelf \(index), not one run")
        freeze?.willFree(self, pages: page..<page + length)
        setEntry(page, .free)
        for i in 1..<max(length, 1) { setEntry(page + i, .free) }
        setBits(page, length, used: false)
        if page < searchHint { searchHint = page }
    }

    /// Cuts a run headed at `page` into the `pieces` it keeps, each a run
    /// headed by `head(its index in pieces)`, and frees the pages between. Pieces
    /// past the first page get their tails, then their heads, while the
    /// old head still covers them: a crash leaves the old run whole (its
    /// owner carves it again). Then the old head shrinks to the first
    /// piece, or goes, so a crash leaves the pages between as uncovered
    /// tails, which count as free.
    func carveRun(at page: Int, length: Int, keeping pieces: [Range<Int>], head: (Int) -> PageEntry) {
        let gaps = zip([0] + pieces.map(\.upperBound), pieces.map(\.lowerBound) + [length]).filter { $0.0 < $0.1 }
        for gap in gaps { freeze?.willFree(self, pages: page + gap.0..<page + gap.1) }
        for (index, piece) in pieces.enumerated().reversed() where piece.lowerBound > 0 {
            for i in 1..<piece.count { setEntry(page + piece.lowerBound + i, .tail(distance: i)) }
            setEntry(page + piece.lowerBound, head(index))
        }
        if let first = pieces.first, first.lowerBound == 0 { setEntry(page, head(0)) } else { setEntry(page, .free) }
        for gap in gaps {
            for i in gap.0..<gap.1 where i > 0 { setEntry(page + i, .free) }
            setBits(page + gap.0, gap.1 - gap.0, used: false)
            if page + gap.0 < searchHint { searchHint = page + gap.0 }
        }
    }

    /// The first page of `length` free pages, next-fit from the last claim.
    func findFreeRun(length: Int) -> Int? {
        guard length <= geometry.pageCount else { return nil }
        let hint = searchHint < geometry.pageCount ? searchHint : 0
        return scan(length, from: hint, to: geometry.pageCount) ?? scan(length, from: 0, to: min(geometry.pageCount, hint + length))
    }

    private func scan(_ length: Int, from start: Int, to end: Int) -> Int? {
        var page = start
        var runStart = start
        var runLength = 0
        while page < end {
            let bit = page & 63
            let word = bitmap[page >> 6] >> UInt64(bit)
            let free = word == 0 ? 64 - bit : word.trailingZeroBitCount
            if free > 0 {
                let take = min(free, end - page)
                if runLength == 0 { runStart = page }
                runLength += take
                page += take
                if runLength >= length { return runStart }
            } else {
                runLength = 0
                page += (~word).trailingZeroBitCount
            }
        }
        return nil
    }

    private func setBits(_ page: Int, _ length: Int, used: Bool) {
        defer {
            // The bitmap is derived, but a stale one under a clean lock word
            // after a power cut would hand out used pages.
            let first = page >> 6, last = (page + max(length, 1) - 1) >> 6
            file.persist(offset: geometry.bitmapOffset + first * 8, count: (last - first + 1) * 8)
        }
        var page = page
        var remaining = length
        while remaining > 0 {
            let bit = page & 63
            let count = min(64 - bit, remaining)
            let mask: UInt64 = (count == 64 ? ~0 : (1 << UInt64(count)) - 1) << UInt64(bit)
            if used { bitmap[page >> 6] |= mask } else { bitmap[page >> 6] &= ~mask }
            page += count
            remaining -= count
        }
    }

    func bitIsSet(_ page: Int) -> Bool { bitmap[page >> 6] >> UInt64(page & 63) & 1 == 1 }

    /// Pages that are not free, by the bitmap (racy without the global
    /// lock, as statistics may be).
    func usedPageCount() -> Int {
        var used = 0
        for index in 0..<geometry.bitmapWords { used += bitmap[index].nonzeroBitCount }
        return used
    }

    /// The bitmap's words as they are now (racy without the global lock:
    /// what the give-back finds is checked again under it).
    func bitmapSnapshot() -> [UInt64] { Array(UnsafeBufferPointer(start: bitmap, count: geometry.bitmapWords)) }

    // MARK: Recovery (global lock)

    /// Walks the page table, frees tails that no head covers, and rebuilds
    /// the bitmap from the heads. Returns how many orphan tails it freed.
    @discardableResult
    func rebuildBitmap() -> Int {
        for w in 0..<geometry.bitmapWords { bitmap[w] = 0 }
        var orphans = 0
        var page = 0
        while page < geometry.pageCount {
            let e = entry(page)
            if e.isHead, e.length >= 1, page + e.length <= geometry.pageCount {
                setBits(page, e.length, used: true)
                page += e.length
            } else if e.kind == .tail || e.kind == nil || e.isHead {
                // An uncovered tail, or garbage: neither can hold live data.
                setEntry(page, .free)
                orphans += 1
                page += 1
            } else {
                page += 1
            }
        }
        searchHint = 0
        file.persist(offset: geometry.bitmapOffset, count: geometry.bitmapWords * 8)
        return orphans
    }

    /// Calls `body` with each run head: its first page and entry.
    func forEachHead(_ body: (Int, PageEntry) -> Void) {
        var page = 0
        while page < geometry.pageCount {
            let e = entry(page)
            // A head whose length runs off the shelf is damage, left to `check`.
            if e.isHead, e.length >= 1, e.length <= geometry.pageCount - page {
                body(page, e)
                page += e.length
            } else {
                page += 1
            }
        }
    }

    /// The allocated runs (those whose tag `including` accepts), as byte
    /// ranges of the shelf file.
    func allocatedRuns(including: (PageEntry.Tag?) -> Bool = { _ in true }) -> [Range<UInt64>] {
        var runs: [Range<UInt64>] = []
        forEachHead { page, entry in
            guard entry.kind == .allocated, including(entry.tag) else { return }
            let start = geometry.offset(ofPage: page)
            runs.append(start..<(start + UInt64(entry.length) * geometry.pageSize))
        }
        return runs
    }

    // MARK: Reserved file blocks (global lock)

    /// Makes holes of `pages` (their memory goes back), noting it first: a
    /// claim after it always looks for holes to reserve. Global lock held.
    func punch(_ pages: Range<Int>) throws {
        let start = geometry.offset(ofPage: pages.lowerBound), end = geometry.offset(ofPage: pages.upperBound)
        let from = file.load(UInt64.self, at: Layout.ShelfHeader.givenBackFrom)
        if from == 0 || start < from {
            file.store(start, at: Layout.ShelfHeader.givenBackFrom)
            file.persist(offset: Layout.ShelfHeader.givenBackFrom, count: 8)
        }
        try SystemCall.punchHole(file.descriptor, offset: start, length: end - start, path: file.path)
    }

    /// Makes sure the file's blocks under a run exist, so a store cannot
    /// SIGBUS on a full tmpfs. Reserves ahead in 2 MiB steps.
    func reserveBlocks(forPage page: Int, length: Int) throws -> Bool {
        // A remote shelf's file holds only what its cache holds.
        if remote != nil { return true }
        let end = geometry.offset(ofPage: page + length)
        // Past where memory was given back, the run may lie over holes:
        // their blocks come back first.
        let givenBack = file.load(UInt64.self, at: Layout.ShelfHeader.givenBackFrom)
        let start = geometry.offset(ofPage: page)
        if givenBack != 0, end > givenBack, let holes = file.holes(offset: start, count: end - start) {
            do {
                try file.reserve(offset: holes.lowerBound, length: holes.upperBound - holes.lowerBound)
            } catch PoolError.system(_, _, ENOSPC) {
                return false
            }
        }
        let reserved = file.atomic(at: Layout.ShelfHeader.reservedBytes)
        let current = reserved.load(ordering: .acquiring)
        if end <= current { return true }
        let step: UInt64 = 2 << 20
        let target = min(geometry.size, (end + step - 1) / step * step)
        do {
            try file.reserve(offset: current, length: target - current)
        } catch {
            do {
                try file.reserve(offset: current, length: end - current)
                reserved.store(end, ordering: .releasing)
            } catch PoolError.system(_, _, ENOSPC) {
                return false
            }
            return true
        }
        reserved.store(target, ordering: .releasing)
        return true
    }
}
