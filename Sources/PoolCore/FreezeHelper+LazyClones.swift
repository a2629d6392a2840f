import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// Lazy region clones (Mome's copy-on-write regions, LazyCloneTable): the
/// clone's run starts as holes, registered in every process for missing
/// pages, and its source is write-protected in every process. A page is
/// filled once, on whichever comes first:
/// - a load or store in the clone: the fault thread fills it from the
///   source's page;
/// - a store in the source: the fault thread fills the clone's page from
///   the source's page, then lets the store go.
/// A fill puts a whole page into the hole at once (UFFDIO_COPY), and fails
/// where the page is there already. So a page is filled from a source page
/// that no store has reached yet (one would have filled it first), each
/// process needs only its own thread, and a stopped process holds up
/// nobody. The clone's pages take memory as they are filled; the others
/// read the source's.
extension FreezeHelper {
    /// Registers and protects here the clones that the table holds and this
    /// process does not keep yet (at open, at each freeze, after a fork).
    /// Throws where it cannot (no userfaultfd): the clones' holes would
    /// read as zeros here.
    func followLazyClones() throws {
        let error = followLazyClonesReturningErrno()
        guard error == 0 else {
            let cause = error == EPERM ? "userfaultfd is not permitted (it needs root, or sysctl vm.unprivileged_userfaultfd=1)"
                : SystemCall.message(error)
            throw PoolError.cannotFreeze(name: pool.name, reason: "its region clones share pages, which this process cannot follow: \(cause)")
        }
    }

    /// The same, failing with errno (0: done).
    func followLazyClonesReturningErrno() -> Int32 {
        guard let table = try? pool.openLazyClones(creating: false) else { return 0 }
        let entries = table.entries()
        // Shelves another process grew, mapped before the mutex (mapping
        // one takes it in didMap).
        for entry in entries where pool.shelves[entry.clone.shelf] == nil || pool.shelves[entry.source.shelf] == nil {
            _ = pool.shelf(entry.clone.shelf)
            _ = pool.shelf(entry.source.shelf)
        }
        return follow(entries)
    }

    /// Registers and protects `entries`' clones (the shelves they name
    /// mapped already): errno, 0 when done.
    private func follow(_ entries: [LazyClone]) -> Int32 {
        mutex.withLock {
            let new = entries.filter { !lazy.contains($0) }
            lazy = entries
            guard !new.isEmpty else { return 0 }
            var error = openUffd()
            for entry in new where error == 0 {
                guard let source = pool.shelves[entry.source.shelf], let clone = pool.shelves[entry.clone.shelf] else {
                    error = ENOENT
                    break
                }
                error = register(source)
                if error == 0 { error = register(clone) }
                if error == 0 { error = clone.file.registerMissing(uffd, offset: Int(entry.clone.offset), count: Int(entry.bytes)) }
                if error == 0 { error = source.file.writeProtect(uffd, offset: Int(entry.source.offset), count: Int(entry.bytes)) }
            }
            if error != 0 { lazy.removeAll { new.contains($0) } }
            return error
        }
    }

    /// A load or store in a hole. A clone's page is filled from its source;
    /// a hole of a clone since dropped (its run freed and handed out again)
    /// reads as zeros, as a hole does. mutex held.
    func fillMissing(at address: UInt64) {
        let pageBytes = UInt64(FreezeArea.pageBytes)
        let page = address & ~(pageBytes - 1)
        for shelf in registered {
            guard let offset = shelf.file.offset(ofAddress: page) else { continue }
            if let table = pool.lazyClones,
               let entry = lazy.first(where: { $0.cloneRange(in: shelf.index)?.contains(offset) == true }), table.holds(entry) {
                // The next pages too, up to the clone's end: a reader going
                // on through it faults once per batch, not per page.
                let end = min(offset + FreezeHelper.fillBytes, Int(entry.clone.offset + entry.bytes))
                fill(entry, cloneBytes: offset..<end)
            } else {
                fillBuffer.initializeMemory(as: UInt8.self, repeating: 0, count: Int(pageBytes))
                _ = shelf.file.fill(uffd, offset: offset, from: fillBuffer, count: Int(pageBytes))
            }
            return
        }
    }

    /// A store waits on the page at `offset` of `shelf`: the clones it is
    /// the source of get their page first. mutex held.
    func fillClones(ofSource shelf: Shelf, page offset: Int) {
        guard let table = pool.lazyClones else { return }
        for entry in lazy where entry.sourceRange(in: shelf.index)?.contains(offset) == true && table.holds(entry) {
            let at = Int(entry.clone.offset) + (offset - Int(entry.source.offset))
            fill(entry, cloneBytes: at..<at + FreezeArea.pageBytes)
        }
    }

    /// Fills the holes in `range` (bytes of the clone's shelf) from the
    /// source; pages there already stay. mutex held.
    private func fill(_ entry: LazyClone, cloneBytes range: Range<Int>) {
        guard let source = pool.shelves[entry.source.shelf], let clone = pool.shelves[entry.clone.shelf] else { return }
        var at = range.lowerBound
        while at < range.upperBound {
            let count = min(FreezeHelper.fillBytes, range.upperBound - at)
            let from = Int(entry.source.offset) + (at - Int(entry.clone.offset))
            // Read before the fill: a store to these source pages waits
            // until their clone pages are there, so what was read is what
            // they held at the instant wherever the fill finds a hole.
            guard (try? source.file.readByFile(at: from, into: UnsafeMutableRawBufferPointer(start: fillBuffer, count: count))) != nil else {
                // The source's file cannot be read (it never fails on
                // tmpfs): the load waits, tried again in a moment.
                if stopping.load(ordering: .acquiring) { return }
                usleep(10_000)
                continue
            }
            var done = 0
            while done < count {
                let error = clone.file.fill(uffd, offset: at + done, from: fillBuffer + done, count: count - done)
                if error == 0 { break }
                if error == EEXIST {
                    // That page is there: the rest from the next one.
                    done = (done / FreezeArea.pageBytes + 1) * FreezeArea.pageBytes
                    continue
                }
                if error == EAGAIN || error == EINTR { continue }
                // No memory for it (a full tmpfs): the store waits, as it
                // would for memory; tried again in a moment.
                if stopping.load(ordering: .acquiring) { return }
                usleep(10_000)
            }
            at += count
        }
    }

    /// Runs about to be freed (global lock held): a clone whose source goes
    /// is filled whole first; a clone that goes, or whose source went, is
    /// dropped from the table.
    func dropLazyClones(in shelf: Shelf, pages: Range<Int>) {
        guard let table = pool.lazyClones, !table.isEmpty else { return }
        let start = Int(shelf.geometry.offset(ofPage: pages.lowerBound))
        let end = Int(shelf.geometry.offset(ofPage: pages.upperBound - 1)) + Int(shelf.geometry.pageSize)
        for entry in table.entries() {
            let sourceGoes = entry.sourceRange(in: shelf.index)?.overlaps(start..<end) == true
            guard sourceGoes || entry.cloneRange(in: shelf.index)?.overlaps(start..<end) == true else { continue }
            if sourceGoes { materialize(entry) }
            table.remove(entry)
        }
    }

    /// Fills every hole of `entry`'s clone (global lock held): it no
    /// longer needs its source.
    func materialize(_ entry: LazyClone) {
        if !mutex.withLock({ lazy.contains(entry) }), let table = pool.lazyClones {
            try? pool.refreshShelvesLocked()
            _ = follow(table.entries())
        }
        mutex.withLock {
            guard lazy.contains(entry), let clone = pool.shelves[entry.clone.shelf] else { return }
            let start = Int(entry.clone.offset), end = start + Int(entry.bytes)
            var at = start
            while at < end {
                // Holes only: pages filled already are skipped whole.
                let data = lseek(clone.file.descriptor, off_t(at), SEEK_DATA)
                let hole = data == off_t(at) ? Int(lseek(clone.file.descriptor, off_t(at), SEEK_HOLE)) : at
                if hole > at {
                    at = hole
                    continue
                }
                let next = data < 0 ? end : min(end, Int(data))
                fill(entry, cloneBytes: at..<max(next, at + FreezeArea.pageBytes))
                at = max(next, at + FreezeArea.pageBytes)
            }
        }
    }
}

extension Range where Bound == Int {
    /// What is left of this range once `others` are taken out of it.
    func subtracting(_ others: [Range<Int>]) -> [Range<Int>] {
        var pieces = [self]
        for other in others {
            pieces = pieces.flatMap { piece -> [Range<Int>] in
                guard piece.overlaps(other) else { return [piece] }
                var left: [Range<Int>] = []
                if other.lowerBound > piece.lowerBound { left.append(piece.lowerBound..<other.lowerBound) }
                if other.upperBound < piece.upperBound { left.append(other.upperBound..<piece.upperBound) }
                return left
            }
        }
        return pieces
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
