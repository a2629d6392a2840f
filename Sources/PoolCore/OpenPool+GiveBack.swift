#if canImport(Glibc)
import Glibc
#endif

/// Memory that no page uses goes back to the system, as tmpfs gives back a
/// removed file's memory: free runs of a shelf have their blocks punched
/// out of the shelf file. The page table stays the truth: a given-back
/// page is a free page whose blocks come back when it is claimed again
/// (Shelf.reserveBlocks), and reads as zeros meanwhile.
extension OpenPool {
    /// Free stretches shorter than this stay: punching them costs more than
    /// the memory is worth, and they are the first a small allocation takes.
    static let givingBackMinimum: UInt64 = 64 << 10

    /// Gives back the blocks of free runs of `media` shelves; with `decay`,
    /// only pages also free at the pass before (`previous`, updated), as
    /// jemalloc's decay spares what is about to be used again. Each run is
    /// checked free and punched under the global lock, a piece at a time,
    /// so allocations wait for one punch at most. Returns the bytes punched
    /// (those that held data).
    func giveBackFreeMemory(media: Set<Medium>, previous: inout [Int: [UInt64]], decay: Bool) -> UInt64 {
        var given: UInt64 = 0
        for shelf in shelves.all where media.contains(shelf.file.medium) {
            let now = shelf.bitmapSnapshot()
            defer { previous[shelf.index] = now }
            guard !decay || previous[shelf.index]?.count == now.count else { continue }
            let before = previous[shelf.index] ?? now
            let pageSize = shelf.geometry.pageSize
            let minimumPages = Int(max(1, OpenPool.givingBackMinimum / pageSize))
            var page = 0
            while page < shelf.pageCount {
                // A stretch free now and (with decay) at the last pass.
                let word = now[page >> 6] | (decay ? before[page >> 6] : 0)
                if word >> UInt64(page & 63) & 1 != 0 { page += 1; continue }
                var end = page
                while end < shelf.pageCount,
                      (now[end >> 6] | (decay ? before[end >> 6] : 0)) >> UInt64(end & 63) & 1 == 0 { end += 1 }
                if end - page >= minimumPages {
                    // A piece at a time under the lock: allocations wait for one punch of 64 MiB at most.
                    let piece = max(minimumPages, Int((64 << 20) / pageSize))
                    for start in stride(from: page, to: end, by: piece) {
                        given += giveBack(shelf, pages: start..<min(end, start + piece))
                    }
                }
                page = end
            }
        }
        return given
    }

    /// Punches the free pages of `pages` that still hold data.
    private func giveBack(_ shelf: Shelf, pages: Range<Int>) -> UInt64 {
        let start = shelf.geometry.offset(ofPage: pages.lowerBound), end = shelf.geometry.offset(ofPage: pages.upperBound)
        let fd = shelf.file.descriptor
        guard SystemCall.hasData(fd, offset: start, length: end - start) else { return 0 }
        let punched = try? withGlobalLock { () -> UInt64 in
            // Taken since the snapshot: left for the next pass.
            guard pages.allSatisfy({ !shelf.bitIsSet($0) }) else { return 0 }
            let before = SystemCall.allocatedBytes(fd)
            try shelf.punch(pages)
            return before - min(before, SystemCall.allocatedBytes(fd))
        }
        return punched ?? 0
    }

    /// Bytes of the pool's shelf files in memory (or on disk, for files there).
    func residentBytes() -> UInt64 {
        shelves.all.reduce(0) { $0 + SystemCall.allocatedBytes($1.file.descriptor) }
    }
}

/// What a give-back pass remembers of the one before: the free pages then.
public struct FreeMemoryDecay: Sendable {
    var previous: [Int: [UInt64]] = [:]
    public init() {}
}

extension Pool {
    /// One pass of the mount's background give-back: the dram shelves'
    /// runs that were free at the last pass too. Returns the bytes given back.
    @discardableResult
    public func giveBackFreeMemory(_ decay: inout FreeMemoryDecay) -> UInt64 {
        core.giveBackFreeMemory(media: [.dram], previous: &decay.previous, decay: true)
    }

    /// `poolfs trim`: every free run of every shelf, pmem too, at once.
    @discardableResult
    public func trim() -> UInt64 {
        var previous: [Int: [UInt64]] = [:]
        return core.giveBackFreeMemory(media: [.dram, .pmem], previous: &previous, decay: false)
    }

    /// Bytes of the pool's shelf files in memory (or on disk).
    public var residentBytes: UInt64 { core.residentBytes() }
}
