/// Offline recovery (NVMM's OfflineRecover): checks the page tables, the
/// bitmaps, the region table and the participant slots against each other,
/// with no process using the pool, and with `repair` fixes what it finds.
public struct CheckReport: Codable, Sendable {
    /// Damage and leaks: what should never be there.
    public var problems: [String] = []
    /// What dead processes left, which the next open would recover anyway.
    public var recoverable: [String] = []
    /// What `repair` changed.
    public var repaired: [String] = []
    public var pages = 0
    public var allocatedPages = 0
    public var allocatedRuns = 0
    public var regionPages = 0
    public var freePages = 0
    public var leakedPages = 0
    public var heapPages = 0
    public var heapObjects = 0
    /// Heap spans whose owning thread's process died (adopted on next open).
    public var deadOwnedSpans = 0

    public var isClean: Bool { problems.isEmpty && recoverable.isEmpty }
}

extension Pool {
    /// Checks pool `name`, which no process may have open, and repairs it
    /// when asked. `progress` is called with (done, total) pages.
    public static func check(name: String, at home: String? = nil, repair: Bool = false,
                             progress: ((Int, Int) -> Void)? = nil) throws -> CheckReport {
        try check(name: name, at: home, repair: repair, progress: progress) { _ in () }.report
    }

    /// The same, then `then` on the pool as the check left it (mapped, not
    /// joined), under the same hold: no opener comes between the two.
    public static func check<R>(name: String, at home: String? = nil, repair: Bool = false,
                                progress: ((Int, Int) -> Void)? = nil,
                                then: (Pool) throws -> R) throws -> (report: CheckReport, then: R) {
        try withNoOtherOpener(name: name, at: home) { core in
            var report = PoolChecker(core: core, progress: progress).inspect()
            if repair && !report.isClean {
                let repaired = try PoolChecker(core: core, progress: nil).repair()
                report = PoolChecker(core: core, progress: progress).inspect()
                report.repaired = repaired
            }
            return (report, try then(Pool(core: core)))
        }
    }
}

struct PoolChecker {
    let core: OpenPool
    let progress: ((Int, Int) -> Void)?

    private var dirty: Bool { core.metadata.load(UInt64.self, at: Layout.Control.lockDirty) != 0 }

    private func slotInUse(_ slot: Int) -> Bool {
        core.metadata.load(UInt64.self, at: Layout.Participants.slot(slot) + Layout.Participants.state) != 0
    }

    private func bitsAreSet(_ shelf: Shelf, _ page: Int, _ length: Int) -> Bool {
        var i = 0
        while i < length {
            if !shelf.bitIsSet(page + i) { return false }
            i += 1
        }
        return true
    }

    private func ownsRun(_ index: Int, _ address: GlobalAddress, _ length: Int) -> Bool {
        let info = core.regionInfo(index)
        return info.address == address && info.pages == length
    }

    /// A heap's span (or page run): its heap exists, its header and free
    /// lists are sound, no block is free twice.
    private func inspectHeapRun(_ shelf: Shelf, _ page: Int, _ entry: PageEntry, heap: Int, into report: inout CheckReport) {
        let where_ = "shelf \(shelf.index) page \(page)"
        guard core.heapIsLive(heap) else {
            // Tracked runs are never a leak: their client's record names them.
            if case .tracked? = entry.tag, heap < Layout.Heaps.capacity {
                report.problems.append("\(where_): \(entry.length) tracked pages (the mount's files) in heap row \(heap), "
                    + "which is damaged (--repair makes it live again)")
                report.heapPages += entry.length
                return
            }
            report.problems.append("\(where_): \(entry.length) pages of a heap that no longer exists (leaked)")
            report.leakedPages += entry.length
            return
        }
        report.heapPages += entry.length
        guard entry.tag == .heap(heap) else { return }
        let span = UnsafeSpan(base: shelf.table.pointer(toPage: page))
        guard span.isSpan, span.heap == heap, span.sizeClass < SizeClass.count || span.sizeClass == SizeClass.large,
              span.blockSize > 0, span.bump <= span.capacity
        else {
            report.problems.append("\(where_): a span of heap '\(core.heapName(heap))' with a damaged header")
            return
        }
        guard let local = span.localFreeBlocks, let remote = span.remoteFreeBlocks,
              Set(local + remote).count == local.count + remote.count
        else {
            report.problems.append("\(where_): a span of heap '\(core.heapName(heap))' whose free lists are damaged or share a block (doubly owned)")
            return
        }
        report.heapObjects += span.bump - local.count - remote.count
        if span.owner != 0 {
            let slot = OpenPool.ownerSlot(span.owner)
            if slot < Layout.Participants.capacity && slotInUse(slot) {
                report.deadOwnedSpans += 1
            } else {
                report.problems.append("\(where_): a span of heap '\(core.heapName(heap))' owned by no process")
            }
        }
    }

    func inspect() -> CheckReport {
        var report = CheckReport()
        let torn = dirty
        if torn {
            report.recoverable.append("a process died holding the pool lock (pid \(core.metadata.load(UInt64.self, at: Layout.Control.lockHolder)))")
        }
        var total = 0
        for shelf in core.shelves.all { total += shelf.pageCount }
        var done = 0
        var cachedByDead: [Int: Int] = [:]
        for shelf in core.shelves.all {
            report.pages += shelf.pageCount
            var orphans = 0, garbage = 0, bitmapWrong = 0
            var page = 0
            while page < shelf.pageCount {
                let entry = shelf.entry(page)
                guard entry.isHead else {
                    if entry.kind == .tail { orphans += 1 } else if entry.kind == nil { garbage += 1 } else {
                        report.freePages += 1
                    }
                    if shelf.bitIsSet(page) { bitmapWrong += 1 }
                    page += 1
                    continue
                }
                let length = entry.length
                if !shelf.isWholeRun(page, length) {
                    // Left so by a kill mid-cut, whether or not an opener has
                    // since recovered the lock: only the run's owner knows its pieces.
                    guard shelf.isHalfCarvedRun(page, length) else {
                        report.problems.append("shelf \(shelf.index) page \(page): a run of \(length) pages with damaged entries")
                        page += 1
                        continue
                    }
                    report.recoverable.append("shelf \(shelf.index) page \(page): a run of \(length) pages half cut into pieces (its owner's next mount finishes the cut)")
                }
                if !bitsAreSet(shelf, page, length) { bitmapWrong += 1 }
                switch (entry.kind, entry.tag) {
                case (.cached?, _):
                    if slotInUse(entry.owner) {
                        cachedByDead[entry.owner, default: 0] += length
                    } else {
                        report.problems.append("shelf \(shelf.index) page \(page): \(length) pages held by no process (leaked)")
                        report.leakedPages += length
                    }
                case (.allocated?, .region(let index)?):
                    let row = index < Layout.Regions.capacity ? core.rowState(index) : nil
                    if row == .live && ownsRun(index, shelf.address(ofPage: page), length) {
                        report.regionPages += length
                    } else if row == .creating || row == .destroying {
                        report.recoverable.append("region row \(index) was left half \(row == .creating ? "created" : "destroyed")")
                    } else {
                        report.problems.append("shelf \(shelf.index) page \(page): \(length) pages of a region that no longer exists (leaked)")
                        report.leakedPages += length
                    }
                case (.allocated?, let tag?) where tag.heap != nil:
                    inspectHeapRun(shelf, page, entry, heap: tag.heap!, into: &report)
                default:
                    report.allocatedPages += length
                    report.allocatedRuns += 1
                }
                page += length
                done += length
                if let progress, done % 65536 < length { progress(done, total) }
            }
            if orphans > 0 {
                let text = "shelf \(shelf.index): \(orphans) page-table entries of a run half claimed or freed"
                if torn { report.recoverable.append(text) } else { report.problems.append(text) }
                report.freePages += orphans
            }
            if garbage > 0 { report.problems.append("shelf \(shelf.index): \(garbage) damaged page-table entries") }
            if bitmapWrong > 0 {
                let text = "shelf \(shelf.index): the free-page bitmap disagrees with the page table in \(bitmapWrong) places"
                if torn { report.recoverable.append(text) } else { report.problems.append(text) }
            }
        }
        progress?(total, total)
        for index in 0..<Layout.Regions.capacity where core.rowState(index) == .live {
            let info = core.regionInfo(index)
            if core.ownRun(ofRow: index) == nil {
                report.problems.append("region '\(info.name)' points at \(info.address), which is not its run")
            }
        }
        for index in 0..<Layout.Regions.capacity where core.rowState(index) == nil {
            report.problems.append("region row \(index) is damaged")
        }
        for entry in (try? core.openLazyClones(creating: false))?.entries() ?? [] {
            if let problem = core.lazyCloneProblem(entry) { report.problems.append(problem) }
        }
        if report.deadOwnedSpans > 0 {
            report.recoverable.append("\(report.deadOwnedSpans) heap spans belong to threads of dead processes")
        }
        for slot in 0..<Layout.Participants.capacity where slotInUse(slot) {
            let pid = core.metadata.load(UInt64.self, at: Layout.Participants.slot(slot) + Layout.Participants.pid)
            report.recoverable.append("process \(pid) died with the pool open, holding \(cachedByDead[slot] ?? 0) cached pages")
        }
        return report
    }

    /// Recovers what dead processes left, then reclaims leaks.
    func repair() throws -> [String] {
        var done: [String] = []
        try core.withGlobalLock {
            // First, while the runs they name are still allocated.
            done += core.repairLazyClones()
            // withGlobalLock has already rebuilt torn state if the lock was dirty.
            for slot in 0..<Layout.Participants.capacity where slotInUse(slot) {
                let pages = core.reclaim(slot)
                done.append("recovered a dead process's slot \(slot), returning \(pages) pages")
            }
            for index in 0..<Layout.Regions.capacity {
                switch core.rowState(index) {
                case .creating?, .destroying?:
                    core.settleRow(index)
                    done.append("settled half-done region row \(index)")
                case nil:
                    core.settleRow(index)
                    done.append("cleared damaged region row \(index)")
                case .live?:
                    if core.ownRun(ofRow: index) != nil { continue }
                    core.settleRow(index)
                    done.append("removed region '\(core.regionInfo(index).name)', whose pages were not its own")
                case .free?: continue
                }
            }
            // A heap whose row is damaged but that holds tracked runs is in
            // use: it comes back, and none of its pages is freed.
            var revived: Set<Int> = []
            for shelf in core.shelves.all {
                shelf.forEachHead { _, entry in
                    guard entry.kind == .allocated, case .tracked(let heap)? = entry.tag, heap < Layout.Heaps.capacity,
                          !core.heapIsLive(heap), revived.insert(heap).inserted else { return }
                    done.append("made heap row \(heap) ('\(core.reviveHeapRow(heap))') live again: it holds tracked runs (the mount's files)")
                }
            }
            var ownerless: Set<Int> = []
            for heap in core.liveHeaps {
                core.forEachSpan(of: heap) { _, _, entry, span in
                    guard entry.tag == .heap(heap), span.owner != 0 else { return }
                    ownerless.insert(OpenPool.ownerSlot(span.owner))
                }
            }
            for slot in ownerless.sorted() {
                core.adoptOrphanedSpans(ofSlot: slot)
                done.append("gave up the heap spans of process slot \(slot), which no process holds")
            }
            for shelf in core.shelves.all {
                var leaked = 0
                shelf.forEachHead { page, entry in
                    let leak: Bool
                    switch (entry.kind, entry.tag) {
                    case (.cached?, _): leak = true   // every slot is free by now
                    case (.allocated?, .region(let index)?):
                        leak = index >= Layout.Regions.capacity || core.rowState(index) != .live
                            || core.regionInfo(index).address != shelf.address(ofPage: page)
                    case (.allocated?, let tag?) where tag.heap != nil:
                        leak = !core.heapIsLive(tag.heap!)
                    default: leak = false
                    }
                    if leak {
                        shelf.releaseRun(at: page, length: entry.length)
                        leaked += entry.length
                    }
                }
                let orphans = shelf.rebuildBitmap()
                if leaked > 0 { done.append("shelf \(shelf.index): reclaimed \(leaked) leaked pages") }
                if orphans > 0 { done.append("shelf \(shelf.index): freed \(orphans) damaged page-table entries") }
            }
        }
        return done
    }
}
