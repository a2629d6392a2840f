import PoolCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Pages for a file: one run per hole a write fills, so a file written in
/// order gets runs as long as its writes, and pages taken ahead of appends.
extension FileSystem {
    /// Fills the holes in `range` with new runs, zeroed outside `keeping`
    /// (which the caller is about to write), in memory only: the caller
    /// logs them once their bytes are written, or takes them back. Past
    /// both `keeping` and `visibleTo` (the size the file keeps if it is not
    /// written further) a run is left as it was: bytes past a file's size
    /// are zeroed only when the size grows over them (`zeroGrowing`), so a
    /// small file does not clear a whole page. A full pool leaves the file
    /// as it was and throws ENOSPC. A file that stays small gets a fragment
    /// (FragmentRuns.swift) instead of a page. The inode's lock held.
    ///
    /// `appending`: the last hole's run, when no run follows it, takes pages
    /// ahead (`ahead(of:)`), where the pool has them: a file that grows by
    /// small appends gets a few long runs, not a run per write.
    func allocate(_ inode: Inode, pages range: Range<UInt64>, keeping: Range<UInt64>,
                  visibleTo: UInt64 = .max, logReserved: Bool = false, appending: Bool = false) throws -> [Extent] {
        let holes = inode.extents.holes(in: range)
        guard !holes.isEmpty else { return [] }
        let heap = self.heap(inode.record.heap)
        var fresh: [Extent] = []
        do {
            if !logReserved { try reserveLog() }
            if inode.extents.isEmpty, range == 0..<1,
               let bytes = fragments.capacity(for: max(keeping.upperBound, visibleTo)) {
                fresh.append(try fragments.allocate(bytes: bytes, from: heap))
            } else {
                for hole in holes.dropLast() { try allocateRuns(hole, from: heap, into: &fresh) }
                let last = holes[holes.count - 1]
                let atTheEnd = inode.extents.extents.last.map { $0.end <= last.lowerBound } ?? true
                let ahead = appending && atTheEnd ? self.ahead(of: inode) : 0
                let length = min(UInt64(last.count) + ahead, max(FileSystem.maximumRun, UInt64(last.count)))
                if length > UInt64(last.count), let run = try? heap.allocateTrackedPages(count: Int(length)) {
                    fresh.append(Extent(page: last.lowerBound, address: run, pages: Int(length)))
                } else {
                    try allocateRuns(last, from: heap, into: &fresh)
                }
            }
        } catch {
            free(fresh.map { Release(extent: $0) })
            throw FileSystemError.noSpace
        }
        do {
            for extent in fresh {
                let start = extent.page << pageShift, end = extent.byteEnd(pageShift)
                if keeping.lowerBound > start {
                    try pages.zero(extent.address, at: 0, count: Int(min(keeping.lowerBound, end) - start))
                }
                let from = max(keeping.upperBound, start), to = min(end, max(visibleTo, keeping.upperBound))
                if from < to { try pages.zero(extent.address, at: from - start, count: Int(to - from)) }
            }
        } catch {
            // A remote shelf's node did not answer.
            free(fresh.map { Release(extent: $0) })
            throw FileSystemError.answering(error, otherwise: .io)
        }
        for extent in fresh { inode.extents.insert(extent) }
        return fresh
    }

    /// Runs of `heap` for the file pages `hole`, as long as the pool has them.
    func allocateRuns(_ hole: Range<UInt64>, from heap: Heap, into fresh: inout [Extent]) throws {
        var page = hole.lowerBound
        var longest = FileSystem.maximumRun
        while page < hole.upperBound {
            let count = Int(min(hole.upperBound - page, longest))
            do {
                fresh.append(Extent(page: page, address: try heap.allocateTrackedPages(count: count), pages: count))
                page += UInt64(count)
            } catch PoolError.poolFull where count > 1 {
                // No free run that long: shorter runs may still fit.
                longest = UInt64(count / 2)
            }
        }
    }

    /// Undoes `allocate` for runs a failed change made: the first `logged`
    /// stay, as zeros (a hole reads the same); the others are freed.
    func takeBack(_ fresh: [Extent], logged: Int, of inode: Inode) {
        for (index, extent) in fresh.enumerated() {
            if index < logged {
                try? pages.zero(extent.address, at: 0, count: Int(extent.byteCount(pageShift)))
            } else {
                inode.extents.remove(extent)
                free([Release(extent: extent)])
            }
        }
    }

    static let maximumRun: UInt64 = 1 << 15
    static let maximumAhead: UInt64 = 64 << 20

    /// Pages to take past an append: as many as the file has, so that its
    /// runs double as it grows, up to `maximumAhead`; and at most half of
    /// what the pool has free beyond a sixteenth of its capacity, so that
    /// pages held ahead leave other files their room.
    func ahead(of inode: Inode) -> UInt64 {
        let wanted = min(UInt64(inode.extents.pageCount), FileSystem.maximumAhead >> pageShift)
        guard wanted > 0 else { return 0 }
        let (free, capacity) = freePages()
        return free > capacity / 16 ? min(wanted, (free - capacity / 16) / 2) : 0
    }

    /// The pool's free and total pages, counted again at most every 100 ms
    /// (a count walks every run of the pool).
    private func freePages() -> (free: UInt64, capacity: UInt64) {
        spaceCount.withLock { count in
            let now = Timestamp.monotonicNanoseconds()
            if count.time == 0 || now - count.time > 100_000_000 {
                let usage = pool.usage()
                count = (now, usage.freeBytes >> pageShift, usage.capacityBytes >> pageShift)
            }
            return (count.free, count.capacity)
        }
    }

    /// At a file's last close: the pages taken ahead of its appends that it
    /// did not come to use go back (a size change that keeps the size and
    /// times cuts every run past the size; there are no others while
    /// `aheadOfSize` holds). The inode's lock held.
    func giveBackAhead(_ inode: Inode) {
        guard inode.aheadOfSize, inode.record.nlink > 0 else { return }
        let kept = (inode.record.size + pageSize - 1) >> pageShift
        if let last = inode.extents.extents.last, last.end > kept {
            try? commit(.setAttributes(inode: inode.number, AttributeChange(size: inode.record.size, ctime: inode.record.ctime)))
        }
        noteAhead(inode, false)
    }

    /// Logged, so that a mount after a kill knows which pages to give back
    /// (where the log is full, the note is kept in memory alone).
    func noteAhead(_ inode: Inode, _ taken: Bool) {
        try? durably("logging pages taken ahead") { try log.append(.ahead(inode: inode.number, taken: taken)) }
        inode.aheadOfSize = taken
    }
}
