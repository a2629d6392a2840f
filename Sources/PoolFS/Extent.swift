import PoolCore

/// A run of pool pages holding a file's pages `page ..< page + pages`.
/// Each extent is one allocation: it is freed whole.
public struct Extent: Hashable, Sendable {
    /// The file page (offset / page size) where the run starts.
    public var page: UInt64
    public var address: GlobalAddress
    public var pages: Int

    public var end: UInt64 { page + UInt64(pages) }
}

/// A file's extents, sorted by file page, never overlapping.
struct ExtentMap: Sendable {
    private(set) var extents: [Extent] = []
    /// Pages in all extents: kept, not summed, since every stat asks.
    private(set) var pageCount = 0

    var isEmpty: Bool { extents.isEmpty }

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
        pageCount += extent.pages
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
        pageCount -= removed.reduce(0) { $0 + $1.pages }
        return removed
    }

    mutating func remove(_ extent: Extent) {
        let index = firstEnding(after: extent.page)
        if index < extents.count, extents[index] == extent {
            extents.remove(at: index)
            pageCount -= extent.pages
        }
    }

    /// Cuts the run that straddles `page` to end there; returns it as it was.
    mutating func cut(at page: UInt64) -> Extent? {
        let index = firstEnding(after: page)
        guard index < extents.count, extents[index].page < page, extents[index].end > page else { return nil }
        let whole = extents[index]
        extents[index].pages = Int(page - whole.page)
        pageCount -= whole.pages - extents[index].pages
        return whole
    }

    /// Removes the runs that lie wholly inside `pages`.
    mutating func removeAll(inside pages: Range<UInt64>) -> [Extent] {
        var removed: [Extent] = []
        extents.removeAll { extent in
            guard extent.page >= pages.lowerBound, extent.end <= pages.upperBound else { return false }
            removed.append(extent)
            return true
        }
        pageCount -= removed.reduce(0) { $0 + $1.pages }
        return removed
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

/// Pages a change gave back: a whole run (`keep` 0) or a run's pages after
/// its first `keep`. Freed after the change is logged.
struct Release {
    let extent: Extent
    let heap: Int
    var keep = 0
}
