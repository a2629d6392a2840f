/// Shared pages: a page named by several owners (files and snapshots'
/// files), whose run head counts the owners beyond the first. A run keeps
/// one count for all its pages, so sharing part of a run, or letting go of
/// part of it, first cuts it where the counts come to differ.
///
/// Crash safety comes from the order the owners keep: a count goes up
/// before the new owner's record names the pages, and down only after the
/// record that drops them is durable. A kill in between leaves a count one
/// too high (pages that would leak), never one too low (pages freed while
/// named); the owner's recovery, which knows every name, sets counts exact
/// again (`reshapeTrackedRun`).

/// A piece of a run: its pages, relative to the run, and its owners beyond
/// the first.
public struct RunPiece: Hashable, Sendable {
    public var pages: Range<Int>
    public var shares: Int

    public init(pages: Range<Int>, shares: Int = 0) {
        self.pages = pages
        self.shares = shares
    }
}

extension OpenPool {
    /// The tracked runs that cover pages `[first, first + count)` of
    /// `table`, each with the pages of it the range covers.
    private func runsCovering(_ table: UnsafePageTable, _ first: Int, _ count: Int, _ address: GlobalAddress)
        throws -> [(head: Int, entry: PageEntry, covered: Range<Int>)] {
        guard first >= 0, count >= 1, count <= table.pageCount - first else {
            throw PoolError.invalidAddress(address, reason: "\(count) pages from it run past its shelf's end")
        }
        var runs: [(head: Int, entry: PageEntry, covered: Range<Int>)] = []
        var page = first
        while page < first + count {
            let (head, entry) = table.head(of: page)
            guard entry.kind == .allocated, case .tracked? = entry.tag, head + entry.length > page else {
                throw PoolError.invalidFree(table.address(ofPage: page),
                                            reason: entry.kind == .allocated ? "it is not a tracked run's" : describeMismatch(entry, count: 1))
            }
            let end = min(head + entry.length, first + count)
            runs.append((head, entry, (page - head)..<(end - head)))
            page = end
        }
        return runs
    }

    /// Cuts the run at `head` so that `covered` is a piece of its own with
    /// `shares` owners beyond the first (nil: freed); global lock held.
    private func setShares(_ table: UnsafePageTable, head: Int, entry: PageEntry, covered: Range<Int>, to shares: Int?) {
        let shelf = shelves[table.shelf]!
        var pieces: [RunPiece] = []
        if covered.lowerBound > 0 { pieces.append(RunPiece(pages: 0..<covered.lowerBound, shares: entry.shares)) }
        if let shares { pieces.append(RunPiece(pages: covered, shares: shares)) }
        if covered.upperBound < entry.length {
            pieces.append(RunPiece(pages: covered.upperBound..<entry.length, shares: entry.shares))
        }
        shelf.carveRun(at: head, length: entry.length, keeping: pieces.map(\.pages)) {
            .allocated(length: pieces[$0].pages.count, tag: entry.tag!, shares: pieces[$0].shares)
        }
    }

    /// One more owner for `count` pages at `address`, which tracked runs
    /// cover; all or nothing.
    func sharePages(at address: GlobalAddress, count: Int) throws {
        try sharePages([(address, count)])
    }

    /// One more owner for the pages of each range, under one hold of the
    /// lock (a snapshot shares every file's); all or nothing.
    func sharePages(_ ranges: [(address: GlobalAddress, count: Int)]) throws {
        for range in ranges { try checkCount(range.count) }
        try withGlobalLock {
            var done = 0
            do {
                for range in ranges {
                    let (table, first) = try locateRun(range.address)
                    let runs = try runsCovering(table, first, range.count, range.address)
                    if runs.contains(where: { $0.entry.shares >= PageEntry.maximumShares }) {
                        throw PoolError.tooManyShares(range.address, limit: PageEntry.maximumShares + 1)
                    }
                    for run in runs { setShares(table, head: run.head, entry: run.entry, covered: run.covered, to: run.entry.shares + 1) }
                    done += 1
                }
            } catch {
                for range in ranges.prefix(done) { try? releaseLocked(range.address, range.count) }
                throw error
            }
        }
    }

    /// One owner fewer for `count` pages at `address`: those it was the
    /// last owner of are freed. A whole run that nothing shares goes by
    /// the fast path (one CAS, into this thread's stock).
    func releasePages(at address: GlobalAddress, count: Int) throws {
        try checkCount(count)
        let (table, first) = try locateRun(address)
        if try releaseUnshared(table, first, count) { return }
        try withGlobalLock { try releaseLocked(address, count) }
    }

    /// The fast path: `count` pages at `first` are one whole tracked run
    /// that nothing shares, made this thread's by one CAS. False otherwise.
    private func releaseUnshared(_ table: UnsafePageTable, _ first: Int, _ count: Int) throws -> Bool {
        let entry = table.entry(first)
        guard entry.kind == .allocated, entry.length == count, entry.shares == 0, case .tracked? = entry.tag,
              table.exchangeEntry(first, expected: entry, desired: .cached(length: count, owner: slot)) == nil else { return false }
        try keepGivenBack(table, first, count: count)
        return true
    }

    /// The same for many ranges (a snapshot's files): those that need the
    /// lock under one hold of it. One that is not owned is skipped, as a
    /// refused release changes nothing.
    func releasePages(_ ranges: [(address: GlobalAddress, count: Int)]) throws {
        var locked: [(address: GlobalAddress, count: Int)] = []
        for range in ranges {
            guard range.count >= 1, range.count < OpenPool.maximumRun, let (table, first) = try? locateRun(range.address) else {
                continue
            }
            if try !releaseUnshared(table, first, range.count) { locked.append(range) }
        }
        guard !locked.isEmpty else { return }
        try withGlobalLock {
            for range in locked { try? releaseLocked(range.address, range.count) }
        }
    }

    /// Global lock held.
    private func releaseLocked(_ address: GlobalAddress, _ count: Int) throws {
        let (table, first) = try locateRun(address)
        for run in try runsCovering(table, first, count, address) {
            setShares(table, head: run.head, entry: run.entry, covered: run.covered,
                      to: run.entry.shares > 0 ? run.entry.shares - 1 : nil)
        }
    }

    /// The pages of `[address, address + count pages)` that have owners
    /// beyond the first, as page ranges from `address`. Without the lock:
    /// a count read while another owner changes it may be stale, never
    /// zero for pages the caller shares (only it could share them).
    func sharedPages(at address: GlobalAddress, count: Int) -> [Range<Int>] {
        guard let table = shelves.table(address.shelf), let first = table.page(at: address.offset),
              count >= 1, count <= table.pageCount - first else { return [] }
        var shared: [Range<Int>] = []
        var page = first
        while page < first + count {
            let (head, entry) = table.head(of: page)
            let end = entry.isHead ? min(head + max(entry.length, 1), first + count) : page + 1
            if entry.shares > 0 {
                if let last = shared.last, last.upperBound == page - first {
                    shared[shared.count - 1] = last.lowerBound..<(end - first)
                } else {
                    shared.append((page - first)..<(end - first))
                }
            }
            page = max(end, page + 1)
        }
        return shared
    }
}
