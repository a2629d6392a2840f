import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Direct access (DirectLeases.swift): a process with libpoolfs-direct.so
/// leases an open file's layout and copies its bytes itself; the mount
/// keeps the layout true, and reads the process's reports of what it wrote.
extension Change {
    /// The file whose runs or size the change may move: its leased layout
    /// is published again after it.
    var fileLaidOut: UInt64? {
        switch self {
        case let .setAttributes(inode, _), let .written(inode, _, _), let .extent(inode, _), let .punch(inode, _, _, _):
            inode
        default: nil
        }
    }
}

extension FileSystem {
    /// What a lease tells the client: where the layout is, and which file.
    public struct Lease: Sendable {
        public let slot: Int
        public let inode: UInt64
    }

    /// Leases the layout of `number`, an open regular file (or the lease it
    /// has): published now and kept true until its last close. nil where
    /// it cannot be served directly (no area, a snapshot's file, every
    /// slot taken): the client goes through the mount.
    public func leaseLayout(_ number: UInt64) throws -> Lease? {
        guard let leases = directLeases, !FileSystem.isFrozen(number) else { return nil }
        return try tree.reading {
            let inode = try inode(number)
            guard inode.isRegular else { throw FileSystemError.invalid }
            return inode.lock.writing {
                guard inode.opens > 0 else { return nil }
                if inode.lease < 0 {
                    guard let slot = leases.takeSlot() else { return nil }
                    inode.lease = slot
                    publishLayout(inode)
                }
                return Lease(slot: inode.lease, inode: number)
            }
        }
    }

    /// The file's layout as it is now, if leased; the inode's lock (or
    /// `tree` for writing) held. Runs on remote shelves and runs past the
    /// area's room are left out: their bytes go through the mount.
    func publishLayout(_ inode: Inode) {
        guard inode.lease >= 0, let leases = directLeases else { return }
        zeroPastTheEnd(inode)
        let remote = remoteShelves()
        var runs: [DirectLeases.PublishedRun] = []
        for extent in inode.extents.extents where !remote.contains(extent.address.shelf) {
            let start = extent.page << pageShift
            guard !extent.isFragment else {
                runs.append(.init(start: start, length: UInt64(extent.fragmentBytes), address: extent.address.rawValue, writable: false))
                continue
            }
            // Shared pages take no direct write: the mount copies them first.
            var page = 0
            for shared in pool.sharedPages(at: extent.address, count: extent.pages) + [extent.pages..<extent.pages] {
                if shared.lowerBound > page {
                    runs.append(.init(start: start + UInt64(page) << pageShift, length: UInt64(shared.lowerBound - page) << pageShift,
                                      address: extent.address.advanced(by: UInt64(page) << pageShift).rawValue, writable: true))
                }
                if !shared.isEmpty {
                    runs.append(.init(start: start + UInt64(shared.lowerBound) << pageShift, length: UInt64(shared.count) << pageShift,
                                      address: extent.address.advanced(by: UInt64(shared.lowerBound) << pageShift).rawValue,
                                      writable: false))
                }
                page = shared.upperBound
            }
        }
        let setID = inode.record.mode & (S_ISUID | S_ISGID) != 0
        leases.publish(inode.lease, inode: inode.number, size: inode.record.size,
                       flags: setID ? UnsafeDirectArea.Layout.writesThroughMount : 0, runs: runs)
    }

    /// After a write through the mount grew the file: the new size, and the
    /// new runs if it took any.
    func publishWrite(_ inode: Inode, tookRuns: Bool) {
        guard inode.lease >= 0, let leases = directLeases else { return }
        if tookRuns { return publishLayout(inode) }
        zeroPastTheEnd(inode)
        leases.publishSize(inode.lease, inode.record.size)
    }

    /// A leased file's last page reads zeros past its size, as the
    /// kernel's page cache shows it: a program may map the page in place
    /// (and pages past a write's end, or taken ahead, hold what their last
    /// owner left). Not a page others share: past this file's end it holds
    /// their bytes (the library maps such a page through the mount). The
    /// inode's lock held.
    private func zeroPastTheEnd(_ inode: Inode) {
        let size = inode.record.size, tail = size & (pageSize - 1)
        guard tail != 0 else { return }
        let page = size >> pageShift
        let index = inode.extents.firstEnding(after: page)
        guard index < inode.extents.extents.count else { return }
        let extent = inode.extents.extents[index]
        guard !extent.isFragment, extent.page <= page, !remoteShelves().contains(extent.address.shelf) else { return }
        let last = extent.address.advanced(by: (page - extent.page) << pageShift)
        guard pool.sharedPages(at: last, count: 1).isEmpty else { return }
        try? pages.zero(last, at: tail, count: Int(pageSize - tail))
    }

    /// Shelves whose bytes live on a node: no direct access to them.
    private func remoteShelves() -> Set<Int> {
        pool.hasRemoteShelves ? Set(pool.remoteShelves().map(\.shelf)) : []
    }

    /// At a leased file's last close: no client holds it open any more.
    func endLease(_ inode: Inode) {
        guard inode.lease >= 0, let leases = directLeases else { return }
        let slot = inode.lease
        freeUnmapped(slot)
        leases.giveBack(slot)
        inode.lease = -1
    }

    /// Every leased file, after a snapshot shared all their pages.
    func publishAllLayouts() {
        guard directLeases != nil else { return }
        for inode in inodes.values where inode.lease >= 0 { publishLayout(inode) }
        _ = directLeases?.quiesce()
    }

    /// After pages a leased layout named became shared (a clone's source):
    /// no direct write that began before may still be landing in them.
    func publishShared(_ inode: Inode) {
        guard inode.lease >= 0, let leases = directLeases else { return }
        publishLayout(inode)
        _ = leases.quiesce()
    }

    /// Frees what a change released once no direct reader can be copying
    /// from it; where one does not leave in time (a stopped process), or a
    /// client maps the file's pages (its leased layout in `slot`), the pages
    /// wait: for the next grace period that completes, and for the file to
    /// be unmapped (or its last close).
    func freeAfterReaders(_ released: [Release], slot: Int = -1) {
        guard let leases = directLeases else { return free(released) }
        let quiet = leases.quiesce()
        let ready = deferredReleases.withLock { deferred -> [Release] in
            guard quiet else {
                deferred.append((slot, released))
                return []
            }
            var ready: [Release] = []
            var waiting: [(slot: Int, releases: [Release])] = []
            for entry in deferred + [(slot, released)] {
                if entry.slot >= 0, leases.pins(entry.slot).mapped { waiting.append(entry) } else { ready += entry.releases }
            }
            deferred = waiting
            return ready
        }
        if !ready.isEmpty { free(ready) }
    }

    /// At a lease's end nothing maps the file (each mapping holds it open):
    /// what waited for it goes.
    private func freeUnmapped(_ slot: Int) {
        let ready = deferredReleases.withLock { deferred -> [Release] in
            let ready = deferred.filter { $0.slot == slot }.flatMap(\.releases)
            deferred.removeAll { $0.slot == slot }
            return ready
        }
        if !ready.isEmpty { free(ready) }
    }

    /// Whether a client maps the file writable: its pages must not be
    /// shared (a clone copies them; a snapshot is refused).
    func isMappedWritable(_ inode: Inode) -> Bool {
        guard inode.lease >= 0, let leases = directLeases else { return false }
        return leases.pins(inode.lease).writable
    }

    /// What a process wrote directly into the file `number` (bytes
    /// `range`): its times move, and fsync makes the range durable.
    public func noteDirectWrite(_ number: UInt64, range: Range<UInt64>) throws {
        try tree.reading {
            let inode = try inode(number)
            guard inode.isRegular else { throw FileSystemError.invalid }
            inode.lock.writing {
                let now = Timestamp.now()
                inode.noteUnsynced(range)
                inode.record.mtime = now
                inode.record.ctime = now
                inode.dirty = true
            }
        }
    }

    /// Processes with direct access and what they served; nil without an area.
    public func directStatistics() -> DirectLeases.Statistics? { directLeases?.statistics() }
}
