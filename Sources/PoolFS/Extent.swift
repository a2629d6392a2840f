import PoolCore

/// A run of pool pages holding a file's pages `page ..< page + pages`.
/// Each extent is one allocation: it is freed whole.
///
/// Or a fragment (`fragmentBytes` > 0): a small file's bytes, in slots of a
/// page the file system shares among small files (FragmentRuns.swift). It
/// stands for file page 0 but holds only its first `fragmentBytes` bytes;
/// such a file has no other extent and is never larger. A file moves into a
/// larger fragment or a page as it grows, into a smaller one when cut.
public struct Extent: Hashable, Sendable {
    /// The file page (offset / page size) where the run starts.
    public var page: UInt64
    public var address: GlobalAddress
    public var pages: Int
    public var fragmentBytes = 0

    public init(page: UInt64, address: GlobalAddress, pages: Int, fragmentBytes: Int = 0) {
        self.page = page
        self.address = address
        self.pages = pages
        self.fragmentBytes = fragmentBytes
    }

    static func fragment(_ address: GlobalAddress, bytes: Int) -> Extent {
        Extent(page: 0, address: address, pages: 1, fragmentBytes: bytes)
    }

    public var end: UInt64 { page + UInt64(pages) }
    public var isFragment: Bool { fragmentBytes > 0 }

    /// The bytes it holds, for pages of `1 << pageShift` bytes.
    func byteCount(_ pageShift: UInt64) -> UInt64 {
        isFragment ? UInt64(fragmentBytes) : UInt64(pages) << pageShift
    }

    /// The file offset where its bytes end.
    func byteEnd(_ pageShift: UInt64) -> UInt64 { page << pageShift + byteCount(pageShift) }
}

/// A file's extents, sorted by file page, never overlapping.
struct ExtentMap: Sendable {
    private(set) var extents: [Extent] = []
    /// Pages in all runs (not the fragment): kept, not summed, since every
    /// stat asks.
    private(set) var pageCount = 0

    var isEmpty: Bool { extents.isEmpty }
    var fragment: Extent? { extents.first.flatMap { $0.isFragment ? $0 : nil } }

    private mutating func count(_ extent: Extent, _ sign: Int) {
        if !extent.isFragment { pageCount += sign * extent.pages }
    }

    /// The index of the first extent that ends after `page`.
    func firstEnding(after page: UInt64) -> Int {
        var low = 0, high = extents.count
        while low < high {
            let middle = (low + high) / 2
            if extents[middle].end <= page { low = middle + 1 } else { high = middle }
        }
        return low
    }

    mutating func insert(_ extent: Extent) {
        count(extent, 1)
        if let last = extents.last, last.end <= extent.page {
            extents.append(extent)
            return
        }
        extents.insert(extent, at: firstEnding(after: extent.page))
    }

    /// Removes the runs that lie wholly at or after `page`.
    mutating func removeAll(from page: UInt64) -> [Extent] {
        var start = firstEnding(after: page)
        if start < extents.count, extents[start].page < page { start += 1 }
        let removed = Array(extents[start...])
        extents.removeSubrange(start...)
        for extent in removed { count(extent, -1) }
        return removed
    }

    mutating func remove(_ extent: Extent) {
        let index = firstEnding(after: extent.page)
        if index < extents.count, extents[index] == extent {
            extents.remove(at: index)
            count(extent, -1)
        }
    }

    /// Cuts the run that straddles `page` to end there; returns it as it was.
    mutating func cut(at page: UInt64) -> Extent? {
        let index = firstEnding(after: page)
        guard index < extents.count, extents[index].page < page, extents[index].end > page,
              !extents[index].isFragment else { return nil }
        let whole = extents[index]
        extents[index].pages = Int(page - whole.page)
        pageCount -= whole.pages - extents[index].pages
        return whole
    }

    /// Takes `pages` out of the runs under them: a run inside goes, one
    /// across an end keeps its pieces outside, each a run of its own
    /// (a fragment goes only whole). Returns each run as it was, with the
    /// pieces of it that stay (page ranges in it).
    mutating func punch(_ pages: Range<UInt64>, pageShift: UInt64) -> [(extent: Extent, kept: [Range<Int>])] {
        var punched: [(extent: Extent, kept: [Range<Int>])] = []
        // No whole page: nothing to free, and no run to cut for nothing.
        guard !pages.isEmpty else { return punched }
        var index = firstEnding(after: pages.lowerBound)
        while index < extents.count, extents[index].page < pages.upperBound {
            let extent = extents[index]
            guard !extent.isFragment || (extent.page >= pages.lowerBound && extent.end <= pages.upperBound) else {
                index += 1
                continue
            }
            var kept: [Range<Int>] = []
            if extent.page < pages.lowerBound { kept.append(0..<Int(pages.lowerBound - extent.page)) }
            if extent.end > pages.upperBound { kept.append(Int(pages.upperBound - extent.page)..<extent.pages) }
            let pieces = kept.map {
                Extent(page: extent.page + UInt64($0.lowerBound),
                       address: extent.address.advanced(by: UInt64($0.lowerBound) << pageShift), pages: $0.count)
            }
            count(extent, -1)
            extents.replaceSubrange(index...index, with: pieces)
            for piece in pieces { count(piece, 1) }
            index += pieces.count
            punched.append((extent, kept))
        }
        return punched
    }

    /// Where, from `from` toward `to`, the runs have covered `budget`
    /// bytes (holes cost nothing); `to` if they cover fewer. Past `from`
    /// whenever a run lies between.
    func position(covering budget: UInt64, from: UInt64, to: UInt64, pageShift: UInt64) -> UInt64 {
        var left = budget
        var index = firstEnding(after: from >> pageShift)
        while index < extents.count, extents[index].page << pageShift < to {
            let low = max(from, extents[index].page << pageShift), high = min(to, extents[index].byteEnd(pageShift))
            if low < high {
                if high - low >= left { return low + left }
                left -= high - low
            }
            index += 1
        }
        return to
    }

    /// The first byte at or after `offset` that a run holds (SEEK_DATA).
    func dataStart(from offset: UInt64, pageShift: UInt64) -> UInt64? {
        let index = firstEnding(after: offset >> pageShift)
        return index < extents.count ? max(offset, extents[index].page << pageShift) : nil
    }

    /// The first byte at or after `offset` that no run holds (SEEK_HOLE).
    func holeStart(from offset: UInt64, pageShift: UInt64) -> UInt64 {
        var position = offset
        var index = firstEnding(after: offset >> pageShift)
        while index < extents.count, extents[index].page << pageShift <= position {
            position = max(position, extents[index].byteEnd(pageShift))
            index += 1
        }
        return position
    }

    /// The holes inside `pages`, in order.
    func holes(in pages: Range<UInt64>) -> [Range<UInt64>] {
        var holes: [Range<UInt64>] = []
        var page = pages.lowerBound
        var index = firstEnding(after: page)
        while page < pages.upperBound {
            if index < extents.count, extents[index].page <= page {
                page = extents[index].end
                index += 1
                continue
            }
            let next = index < extents.count ? min(extents[index].page, pages.upperBound) : pages.upperBound
            holes.append(page..<next)
            page = next
        }
        return holes
    }
}

/// Pages a change gave back: a whole run, or the pages of a run outside
/// the pieces it keeps (page ranges in it, in order: the start of a file
/// cut short, the two sides of a punched hole). Freed after the change is
/// logged.
struct Release {
    let extent: Extent
    var kept: [Range<Int>] = []

    /// The page ranges of the run it lets go of.
    var freed: [Range<Int>] {
        zip([0] + kept.map(\.upperBound), kept.map(\.lowerBound) + [extent.pages]).compactMap { $0 < $1 ? $0..<$1 : nil }
    }
}

/// Pages a file or log chunk names, for recovery.
struct Name {
    let address: GlobalAddress
    let pages: Int
    let owner: UInt64

    func end(_ pageShift: UInt64) -> UInt64 { address.offset + UInt64(pages) << pageShift }
}

/// A run of the file system cut to what its names say: the pieces they
/// cover, each counting its owners; pages no one names freed.
struct Reshape {
    let run: TrackedRun
    let pieces: [RunPiece]

    var freedPages: Int { run.pages - pieces.reduce(0) { $0 + $1.pages.count } }
    /// Pages still named whose count was higher than their names.
    var overcountedPages: Int {
        pieces.reduce(0) { $0 + ($1.shares < run.shares ? $1.pages.count : 0) }
    }
}
