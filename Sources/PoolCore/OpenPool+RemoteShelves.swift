/// Remote shelves' bytes for a caller that keeps eviction away by itself
/// (the file system, under its tree's lock), and their write-back and
/// eviction.
extension OpenPool {
    /// Where `[address, address+count)` is in this process, read into the
    /// cache first where it lies on a remote shelf (`writing`: but pages it
    /// covers whole). Local shelves: the mapping, nothing else.
    @inline(__always)
    func residentPointer(to address: GlobalAddress, count: Int, writing: Bool) throws -> UnsafeMutableRawPointer {
        if let table = shelves.table(address.shelf), !table.isRemote, let page = table.page(containing: address.offset),
           count <= (table.pageCount - page) << Int(table.pageShift) {
            return table.pages + Int(address.offset - table.dataOffset)
        }
        let (shelf, offset) = try resolve(address, count: count)
        guard let remote = shelf.remote else { return shelf.table.pages + Int(address.offset - shelf.table.dataOffset) }
        return try remote.prepare(offset: offset, count: count, writing: writing)
    }

    func noteWritten(at address: GlobalAddress, count: Int) {
        // Local shelves answer from the page table, with no reference counted.
        guard shelves.table(address.shelf)?.isRemote == true, let shelf = shelves[address.shelf],
              let remote = shelf.remote, shelf.containsData(offset: address.offset, count: UInt64(count)) else { return }
        remote.noteWritten(offset: Int(address.offset), count: count)
    }

    /// Sends the dirty cached pages of the range to the node; nothing to
    /// do on a local shelf.
    func writeBack(at address: GlobalAddress, count: Int) throws {
        guard let shelf = shelves[address.shelf], let remote = shelf.remote else { return }
        let (_, offset) = try resolve(address, count: count)
        try remote.writeBack(offset: offset, count: count)
    }

    /// Every remote shelf's dirty pages to its node; the first failure is
    /// thrown once all were tried.
    func writeBackAll() throws {
        var failure: Error?
        for shelf in shelves.all {
            do { try shelf.remote?.writeBackAll() } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    var hasRemoteShelves: Bool { shelves.hasRemote }

    @inline(__always)
    var remoteCacheIsOverBudget: Bool {
        remoteBudget.residentPages.load(ordering: .relaxed) > remoteBudget.limitPages.load(ordering: .relaxed)
    }

    /// Brings the caches down to three quarters of their budget, taking
    /// from each shelf in turn. Nobody may hold a pointer
    /// `residentPointer` gave meanwhile.
    func evictRemotePages() {
        let target = remoteBudget.limitPages.load(ordering: .relaxed) * 3 / 4
        let caches = shelves.all.compactMap(\.remote)
        var progress = true
        while progress, remoteBudget.residentPages.load(ordering: .relaxed) > target {
            progress = false
            let excess = remoteBudget.residentPages.load(ordering: .relaxed) - target
            for cache in caches where excess > 0 {
                if cache.evict(max(1, excess / caches.count + 1)) > 0 { progress = true }
            }
        }
    }

    /// Each remote shelf's place: what `poolfs check` asks the node about.
    func remotePlaces() -> [(shelf: Int, place: RemoteShelfPlace, dataStart: GlobalAddress)] {
        shelves.all.compactMap { shelf in shelf.remote.map { (shelf.index, $0.place, shelf.address(ofPage: 0)) } }
    }
}
