import PoolCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// File bytes: reads lend the pool's pages to the caller (no copy), writes
/// land in them in one copy. Pages are allocated as one run per hole a
/// write fills, so a file written in order gets runs as long as its writes.
extension FileSystem {
    var pages: UnsafeFilePages { UnsafeFilePages(pool: pool) }

    /// Runs `body` with segments covering `[offset, offset+size)` clipped at
    /// the end of the file: pointers into the file's pages, and into zeros
    /// for holes. The pages cannot be freed until `body` returns.
    public func withReadSegments<R>(_ number: UInt64, offset: UInt64, size: Int,
                                    _ body: (UnsafeBufferPointer<iovec>) -> R) throws -> R {
        try withReadSegments(number, offset: offset, size: size, unlessAccessDue: false, body)!
    }

    /// The same, but false without running `body` when this read must
    /// first move the file's atime (FileSystem+Access.swift): the caller
    /// calls `accessed`, then reads. A usual read finds and locks the inode
    /// once. Not generic: called from another module on every read, a
    /// generic would look up its type metadata (under a lock) each time.
    public func withReadSegmentsUnlessAccessDue(_ number: UInt64, offset: UInt64, size: Int,
                                                _ body: (UnsafeBufferPointer<iovec>) -> Void) throws -> Bool {
        try withReadSegments(number, offset: offset, size: size,
                             unlessAccessDue: accessTimes.load(ordering: .relaxed), body) != nil
    }

    private func withReadSegments<R>(_ number: UInt64, offset: UInt64, size: Int, unlessAccessDue: Bool,
                                     _ body: (UnsafeBufferPointer<iovec>) -> R) throws -> R? {
        try tree.reading {
            let inode = try inode(number)
            return try inode.lock.reading {
                guard !inode.isDirectory else { throw FileSystemError.isDirectory }
                if unlessAccessDue && FileSystem.accessDue(inode.record, now: .now()) { return nil }
                let fileSize = inode.record.size
                guard offset < fileSize, size > 0 else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
                let end = min(fileSize, offset + UInt64(size))
                let capacity = Int((end - offset) >> pageShift) + 3 + size / UnsafeFilePages.zeroBytes
                return withUnsafeTemporaryAllocation(of: iovec.self, capacity: capacity) { segments in
                    let extents = inode.extents.extents
                    var count = 0
                    var position = offset
                    var index = inode.extents.firstEnding(after: offset >> pageShift)
                    while position < end, count < capacity {
                        if index < extents.count, extents[index].page << pageShift <= position {
                            let extent = extents[index]
                            let runEnd = min(end, extent.byteEnd(pageShift))
                            segments[count] = pages.segment(extent.address, at: position - extent.page << pageShift,
                                                            count: Int(runEnd - position))
                            count += 1
                            position = runEnd
                            index += 1
                        } else {
                            let holeEnd = index < extents.count ? min(end, extents[index].page << pageShift) : end
                            let chunk = min(Int(holeEnd - position), UnsafeFilePages.zeroBytes)
                            segments[count] = UnsafeFilePages.zeroSegment(count: chunk)
                            count += 1
                            position += UInt64(chunk)
                        }
                    }
                    return body(UnsafeBufferPointer(rebasing: segments[0..<count]))
                }
            }
        }
    }

    /// Writes `source` at `offset`, growing the file; all or nothing.
    public func write(_ number: UInt64, offset: UInt64, from source: UnsafeRawBufferPointer,
                      by caller: Caller? = nil) throws -> Int {
        guard let base = source.baseAddress else { return 0 }
        var done = 0
        return try write(number, offset: offset, count: source.count, by: caller) { segment in
            pages.copy(into: segment, from: UnsafeRawBufferPointer(start: base + done, count: segment.count))
            done += segment.count
        }
    }

    /// Writes `count` bytes at `offset`, growing the file: `fill` copies the
    /// bytes, in order, straight into each run of pool pages they land in.
    /// All or nothing: a full pool leaves the file as it was (ENOSPC).
    /// A write by `caller` drops the file's set-user-ID and set-group-ID
    /// bits as Linux does (SetIDBits.swift).
    public func write(_ number: UInt64, offset: UInt64, count: Int, by caller: Caller? = nil,
                      _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws -> Int {
        try refuseIfFailed()
        var setIDBits: UInt32 = 0
        let written = try tree.reading {
            let inode = try inode(number)
            setIDBits = SetIDBits.droppedByWrite(mode: inode.record.mode, gid: inode.record.gid, by: caller)
            guard inode.isRegular else { throw inode.isDirectory ? FileSystemError.isDirectory : FileSystemError.invalid }
            guard count > 0 else { return 0 }
            let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
            guard !overflow, end <= FileSystem.maximumFileSize else { throw FileSystemError.tooBig }
            return try inode.lock.writing {
                try makeRoom(in: inode, upTo: end)
                let oldSize = inode.record.size
                let grows = end > oldSize
                // Room to log the new size (and the frees that make room again).
                if grows { try reserveLog() }
                // A write past the end shows the bytes between: zeros, not what the runs held.
                if offset > oldSize { try zeroGrowing(inode, from: oldSize, to: offset) }
                let lastPage = (end - 1) >> pageShift + 1
                let fresh = try allocate(inode, pages: (offset >> pageShift)..<lastPage, keeping: offset..<end,
                                         visibleTo: oldSize, logReserved: grows, appending: grows && offset <= oldSize)
                let now = Timestamp.now()
                do {
                    let extents = inode.extents.extents
                    var index = inode.extents.firstEnding(after: offset >> pageShift)
                    var position = offset
                    while position < end {
                        let extent = extents[index]
                        let runEnd = min(end, extent.byteEnd(pageShift))
                        try fill(pages.bytes(extent.address, at: position - extent.page << pageShift, count: Int(runEnd - position)))
                        position = runEnd
                        index += 1
                    }
                    // What landed past the old end in a run the file had may
                    // cover a freed file's bytes there: durable before the
                    // size that shows it (a power cut on pmem).
                    if grows { try durably("flushing a write") { try persist(inode, from: max(offset, oldSize), to: end, except: fresh) } }
                    inode.noteUnsynced(offset..<end)
                } catch {
                    takeBack(fresh, logged: 0, of: inode)
                    throw error is FileSystemError ? error : FileSystemError.noSpace
                }
                try name(fresh, of: inode, growingTo: grows ? end : nil, time: now, durableTo: end)
                if let last = fresh.last, last.end > lastPage, !inode.aheadOfSize { noteAhead(inode, true) }
                inode.record.mtime = now
                inode.record.ctime = now
                // Times not yet logged (a growing write logged them with its size).
                inode.dirty = !grows
                return count
            }
        }
        // Rare, and a change of the namespace's kind: after the write, under the tree's lock.
        if setIDBits != 0 { try dropSetIDBits(number, setIDBits) }
        return written
    }

    /// Names in the log the runs `allocate` made, once their bytes are in
    /// and durable (on pmem; nothing to do on dram): a kill before leaves
    /// them unnamed (the next mount frees them), and a named run never
    /// shows some old file's bytes. Then logs the size the file grows to,
    /// if it does, with its times: a close needs no round trip. On failure
    /// the runs are taken back and the file keeps its size: ENOSPC, or EIO
    /// where the log or a flush failed for another reason (`durably`).
    func name(_ fresh: [Extent], of inode: Inode, growingTo size: UInt64?, time: Timestamp,
              durableTo: UInt64 = .max) throws {
        var logged = 0
        do {
            try durably("logging a write") {
                for extent in fresh {
                    // Pages taken ahead (past `durableTo`) show nothing until
                    // the size grows over them, which zeroes them durably.
                    let bytes = min(extent.byteEnd(pageShift), max(durableTo, extent.page << pageShift)) - extent.page << pageShift
                    try pool.persist(at: extent.address, count: Int(bytes))
                    try log.append(.extent(inode: inode.number, extent))
                    logged += 1
                }
                if let size {
                    try log.append(.written(inode: inode.number, size: size, time: time))
                }
            }
            if let size {
                inode.record.size = size
                inode.record.mtime = time
                inode.record.ctime = time
            }
        } catch {
            takeBack(fresh, logged: logged, of: inode)
            throw error
        }
    }

    func reserveLog() throws {
        do { try log.reserveSpares() } catch { throw FileSystemError.noSpace }
    }

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
                if length > UInt64(last.count), let run = try? heap.allocateFilePages(count: Int(length)) {
                    fresh.append(Extent(page: last.lowerBound, address: run, pages: Int(length)))
                } else {
                    try allocateRuns(last, from: heap, into: &fresh)
                }
            }
        } catch {
            free(fresh.map { Release(extent: $0, heap: heap.id) })
            throw FileSystemError.noSpace
        }
        for extent in fresh {
            let start = extent.page << pageShift, end = extent.byteEnd(pageShift)
            if keeping.lowerBound > start {
                pages.zero(extent.address, at: 0, count: Int(min(keeping.lowerBound, end) - start))
            }
            let from = max(keeping.upperBound, start), to = min(end, max(visibleTo, keeping.upperBound))
            if from < to { pages.zero(extent.address, at: from - start, count: Int(to - from)) }
            inode.extents.insert(extent)
        }
        return fresh
    }

    /// Runs of `heap` for the file pages `hole`, as long as the pool has them.
    private func allocateRuns(_ hole: Range<UInt64>, from heap: Heap, into fresh: inout [Extent]) throws {
        var page = hole.lowerBound
        var longest = FileSystem.maximumRun
        while page < hole.upperBound {
            let count = Int(min(hole.upperBound - page, longest))
            do {
                fresh.append(Extent(page: page, address: try heap.allocateFilePages(count: count), pages: count))
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
                pages.zero(extent.address, at: 0, count: Int(extent.byteCount(pageShift)))
            } else {
                inode.extents.remove(extent)
                free([Release(extent: extent, heap: inode.record.heap)])
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

    /// Zeroes the bytes past the end of the file inside its last run (and
    /// in runs wholly past it), so that growing the file reads zeros.
    func zeroBeyondSize(_ inode: Inode) {
        zero(inode, from: inode.record.size, to: .max)
    }

    /// Zeroes `[from, to)` of the file where it has pages.
    func zero(_ inode: Inode, from: UInt64, to: UInt64) {
        try? zero(inode, from: from, to: to, persisting: false)
    }

    /// Zeroes what a file growing from `from` to `to` comes to show of its
    /// runs (what lay past its end), durably before the size that shows it
    /// is logged: on pmem a power cut must not bring the old bytes back.
    func zeroGrowing(_ inode: Inode, from: UInt64, to: UInt64) throws {
        try zero(inode, from: from, to: to, persisting: true)
    }

    private func zero(_ inode: Inode, from: UInt64, to: UInt64, persisting: Bool) throws {
        try forEachPiece(of: inode, from: from, to: to) { extent, offset, count in
            pages.zero(extent.address, at: offset, count: count)
            if persisting { try pool.persist(at: extent.address.advanced(by: offset), count: count) }
        }
    }

    /// Makes durable the bytes of `[from, to)` that lie in runs other than
    /// `fresh` (which `name` makes durable whole).
    func persist(_ inode: Inode, from: UInt64, to: UInt64, except fresh: [Extent]) throws {
        try forEachPiece(of: inode, from: from, to: to) { extent, offset, count in
            if !fresh.contains(where: { $0.address == extent.address }) {
                try pool.persist(at: extent.address.advanced(by: offset), count: count)
            }
        }
    }

    /// `body` with each run under `[from, to)`: the run, where in it the
    /// range starts, and how many of its bytes the range covers.
    private func forEachPiece(of inode: Inode, from: UInt64, to: UInt64,
                              _ body: (Extent, UInt64, Int) throws -> Void) throws {
        guard from < to else { return }
        let extents = inode.extents.extents
        var index = inode.extents.firstEnding(after: from >> pageShift)
        while index < extents.count, extents[index].page << pageShift < to {
            let extent = extents[index]
            let start = extent.page << pageShift
            let low = max(from, start), high = min(to, extent.byteEnd(pageShift))
            // A fragment stands for page 0 but may end before `from`.
            if low < high { try body(extent, low - start, Int(high - low)) }
            index += 1
        }
    }

    // MARK: Opening and closing

    /// How the kernel should treat one open file: `direct` bypasses its page
    /// cache (reads and writes go to the pool in one request each, up to
    /// 1 MiB); `keepCache` says whether pages cached earlier are still good.
    public struct CachePolicy: Sendable, Equatable {
        public let direct: Bool
        public let keepCache: Bool
    }

    /// An open of a file (or directory): counted, so that an unlinked file
    /// keeps its pages until its last close. O_TRUNC arrives here.
    ///
    /// With `directIO` (the kernel keeps shared mappings coherent with
    /// direct I/O), every file is opened direct: its bytes are not held a
    /// second time in the page cache, and a copy is saved on each access.
    /// Without, a file opened only for writing, by nobody else, is written
    /// direct (the page cache would add a copy); while such a writer is
    /// open, other opens are direct too (a cached reader would miss its
    /// writes), and afterwards the cache is dropped once.
    public func open(_ number: UInt64, truncate: Bool, writeOnly: Bool) throws -> CachePolicy {
        if truncate {
            // Truncated and counted in one step: an unlink cannot come between.
            return try tree.writing {
                _ = try setAttributesLocked(number, AttributeChange(size: 0, mtime: .now()))
                return countOpen(try inode(number), writeOnly: writeOnly)
            }
        }
        return try tree.reading {
            let inode = try inode(number)
            return inode.lock.writing { countOpen(inode, writeOnly: writeOnly) }
        }
    }

    /// The inode's lock (or `tree` for writing) held.
    func countOpen(_ inode: Inode, writeOnly: Bool) -> CachePolicy {
        inode.opens += 1
        if inode.isRegular && directIO.load(ordering: .relaxed) {
            // The page cache holds only mapped pages, kept coherent by the
            // kernel: dropping them would unmap others' mappings.
            inode.directOpens += 1
            return CachePolicy(direct: true, keepCache: true)
        }
        if inode.isRegular && (inode.directOpens > 0 || (writeOnly && inode.opens == 1)) {
            inode.directOpens += 1
            inode.cacheStale = true
            return CachePolicy(direct: true, keepCache: false)
        }
        defer { inode.cacheStale = false }
        return CachePolicy(direct: false, keepCache: !inode.cacheStale)
    }

    /// fsync(2): what was written is durable (flushed to pmem too), in
    /// steps of `stepBytes` of the file's runs: on a pool kept on disk,
    /// flushing gigabytes takes seconds.
    public func sync(_ number: UInt64) throws {
        try refuseIfFailed()
        try tree.reading { try inode(number) }.syncing.writing { try syncLocked(number) }
    }

    private func syncLocked(_ number: UInt64) throws {
        let (ranges, whole) = try tree.reading {
            let inode = try inode(number)
            return try inode.lock.writing {
                // The size and mtime first: fsync fails while they are not logged.
                if inode.dirty { try logWritten(inode) }
                defer {
                    inode.unsynced = []
                    inode.wholeUnsynced = false
                }
                return (inode.wholeUnsynced ? [0..<UInt64.max] : inode.unsynced, inode.wholeUnsynced)
            }
        }
        for (index, range) in ranges.enumerated() {
            var flushed = range.lowerBound
            do {
                try stepping(number, from: range.lowerBound, to: range.upperBound) { inode, at in
                    // Holes cost nothing: a step is so many bytes of runs.
                    let stop = inode.extents.position(covering: FileSystem.stepBytes, from: at,
                                                      to: range.upperBound, pageShift: pageShift)
                    try persist(inode, from: at, to: stop, except: [])
                    flushed = stop
                    return stop
                }
            } catch {
                // Not durable yet: the next fsync flushes it.
                _ = try? tree.reading {
                    let inode = try inode(number)
                    inode.lock.writing {
                        inode.wholeUnsynced = inode.wholeUnsynced || whole
                        for left in [flushed..<range.upperBound] + ranges[(index + 1)...] { inode.noteUnsynced(left) }
                    }
                }
                throw error
            }
        }
    }

    /// Runs `step` from `start` until it reaches `end` (once at least), each
    /// step under the tree's lock shared and the file's lock, both let go in
    /// between: work of seconds (zeroing or flushing gigabytes) keeps a
    /// create or a rename, which take the tree's lock alone, waiting one
    /// step at most. `step` returns where it stopped.
    private func stepping(_ number: UInt64, from start: UInt64, to end: UInt64,
                          _ step: (Inode, UInt64) throws -> UInt64) throws {
        var at = start
        repeat {
            at = try tree.reading {
                let inode = try inode(number)
                return try inode.lock.writing { try step(inode, at) }
            }
        } while at < end
    }

    /// The last close of a handle; an unlinked inode's last one frees it.
    public func release(_ number: UInt64, direct: Bool = false) {
        let last = tree.reading { () -> Bool in
            guard let inode = inodes[number] else { return false }
            return inode.lock.writing {
                inode.opens -= 1
                if direct { inode.directOpens -= 1 }
                // A close cannot fail: on a full pool the size stays to be
                // logged by the next fsync, change or unmount.
                if inode.dirty { try? logWritten(inode) }
                if inode.opens == 0 { giveBackAhead(inode) }
                return inode.opens == 0 && (inode.record.nlink == 0 || inode.directory?.isSparse == true)
            }
        }
        // Dropping an unlinked inode or compacting a directory's slots
        // changes the tree; most closes need neither.
        guard last || log.needsRewrite else { return }
        tree.writing {
            if let inode = inodes[number], inode.opens == 0 {
                if inode.record.nlink == 0 {
                    try? commit(.drop(inode: number))
                } else {
                    inode.directory?.compactIfSparse()
                }
            }
            compactIfLarge()
        }
    }

    /// fallocate(2): mode 0 and KEEP_SIZE allocate; PUNCH_HOLE frees.
    public func allocateSpace(_ number: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard length > 0, !overflow else { throw FileSystemError.invalid }
        guard end <= FileSystem.maximumFileSize else { throw FileSystemError.tooBig }
        // Like a write, under the file's lock: no other file waits. Space
        // is allocated `stepBytes` at a time.
        let allocating = mode == 0 || mode == FileSystem.keepSize
        try stepping(number, from: offset, to: end) { inode, at in
            guard inode.isRegular else { throw inode.isDirectory ? FileSystemError.isDirectory : FileSystemError.notSupported }
            if allocating, at == offset { try checkRoom(inode, offset: offset, end: end) }
            let stop = allocating ? min(end, (at / FileSystem.stepBytes + 1) * FileSystem.stepBytes) : end
            try allocateSpaceLocked(inode, mode: mode, offset: at, end: stop)
            return stop
        }
    }

    /// linux/falloc.h
    static let keepSize: Int32 = 0x01, punchHole: Int32 = 0x02
    /// What a fallocate allocates, or an fsync flushes, in one step
    /// (`stepping`).
    static let stepBytes: UInt64 = 64 << 20

    /// Before the first chunk: ENOSPC with nothing allocated when the pool
    /// has fewer free pages than the range has unallocated. (One that runs
    /// out later, racing other writers, keeps the chunks it allocated, as
    /// ext4's does.)
    private func checkRoom(_ inode: Inode, offset: UInt64, end: UInt64) throws {
        let missing = inode.extents.holes(in: (offset >> pageShift)..<((end - 1) >> pageShift + 1)).reduce(0) { $0 + $1.count }
        guard UInt64(missing) <= pool.usage().freeBytes >> pageShift else { throw FileSystemError.noSpace }
    }

    /// The inode's lock held.
    private func allocateSpaceLocked(_ inode: Inode, mode: Int32, offset: UInt64, end: UInt64) throws {
        let keepSize = FileSystem.keepSize, punchHole = FileSystem.punchHole
        switch mode {
        case 0, keepSize:
            // Pages asked for past the size stay, and so do those taken ahead.
            if mode == keepSize, end > inode.record.size, inode.aheadOfSize { noteAhead(inode, false) }
            try makeRoom(in: inode, upTo: end)
            if mode == 0, end > inode.record.size { try zeroGrowing(inode, from: inode.record.size, to: end) }
            let fresh = try allocate(inode, pages: (offset >> pageShift)..<((end - 1) >> pageShift + 1), keeping: 0..<0)
            try name(fresh, of: inode, growingTo: mode == 0 && end > inode.record.size ? end : nil, time: .now())
        case punchHole | keepSize:
            let first = (offset + pageSize - 1) >> pageShift, last = end >> pageShift
            try commit(.punch(inode: inode.number, from: min(first, last), to: last, time: .now()))
            zero(inode, from: offset, to: min(end, inode.record.size))
            inode.noteUnsynced(offset..<max(offset, min(end, inode.record.size)))
        default:
            throw FileSystemError.notSupported
        }
    }
}
