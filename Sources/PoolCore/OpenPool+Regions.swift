#if canImport(Glibc)
import Glibc
#endif

/// Regions: named runs of pages, recorded in shelf 0's region table.
///
/// A row moves free → creating → live → destroying → free, always under the
/// global lock. The row's address is written before its pages are claimed,
/// so a holder that dies in `creating` or `destroying` leaves a row that the
/// next lock holder can settle: the run (if claimed) is released, the row
/// cleared.
extension OpenPool {

    enum RowState: UInt64 { case free = 0, creating = 1, live = 2, destroying = 3 }

    func rowState(_ index: Int) -> RowState? {
        RowState(rawValue: metadata.load(UInt64.self, at: Layout.Regions.entry(index) + Layout.Regions.state))
    }

    func rowName(_ index: Int) -> String {
        metadata.text(at: Layout.Regions.entry(index) + Layout.Regions.name, capacity: Layout.Regions.nameCapacity)
    }

    func regionName(_ index: Int) -> String? {
        guard index >= 0, index < Layout.Regions.capacity, rowState(index) == .live else { return nil }
        return rowName(index)
    }

    func regionInfo(_ index: Int) -> RegionInfo {
        let row = Layout.Regions.entry(index)
        return RegionInfo(
            name: rowName(index),
            address: GlobalAddress(rawValue: metadata.load(UInt64.self, at: row + Layout.Regions.address)),
            size: metadata.load(UInt64.self, at: row + Layout.Regions.size),
            pages: Int(metadata.load(UInt64.self, at: row + Layout.Regions.pages)),
            createdAt: metadata.load(UInt64.self, at: row + Layout.Regions.createdAt),
            access: regionAccess(row))
    }

    private func regionAccess(_ row: Int) -> RegionAccess {
        let mode = metadata.load(UInt32.self, at: row + Layout.Regions.mode)
        guard mode != 0 else { return RegionAccess(uid: 0, gid: 0, mode: 0o600) }
        return RegionAccess(uid: metadata.load(UInt32.self, at: row + Layout.Regions.uid), gid: metadata.load(UInt32.self, at: row + Layout.Regions.gid),
                            mode: mode)
    }

    private func storeAccess(_ access: RegionAccess, row: Int) {
        metadata.store(access.uid, at: row + Layout.Regions.uid)
        metadata.store(access.gid, at: row + Layout.Regions.gid)
        // The file-type bit keeps a mode of 0 apart from a row of before.
        metadata.store(access.mode | S_IFREG, at: row + Layout.Regions.mode)
    }

    /// chmod and chown of a region (its file under the mount, `poolfs region`).
    func setRegionAccess(name: String, _ access: RegionAccess) throws {
        try withGlobalLock {
            guard let index = liveRegionIndex(name) else { throw PoolError.regionNotFound(name) }
            storeAccess(access, row: Layout.Regions.entry(index))
            metadata.persist(offset: Layout.Regions.entry(index), count: Layout.Regions.entrySize)
        }
    }

    func liveRegionIndex(_ name: String) -> Int? {
        (0..<Layout.Regions.capacity).first { rowState($0) == .live && rowName($0) == name }
    }

    /// Live regions with their table rows.
    func regionRows() -> [(id: Int, info: RegionInfo)] {
        (0..<Layout.Regions.capacity).filter { rowState($0) == .live }.map { ($0, regionInfo($0)) }
    }

    func regions() -> [RegionInfo] { regionRows().map(\.info) }

    private func setRowState(_ index: Int, _ state: RowState) {
        metadata.store(state.rawValue, at: Layout.Regions.entry(index) + Layout.Regions.state)
        metadata.persist(offset: Layout.Regions.entry(index), count: Layout.Regions.entrySize)
    }

    /// `holes`: the region's pages are left as holes instead of zeros
    /// (a lazy clone's, which fills them from its source).
    func createRegion(name: String, size: UInt64, placement: Placement?, access: RegionAccess,
                      holes: Bool = false) throws -> RegionInfo {
        try Names.check(name, what: "region")
        guard size > 0 else { throw PoolError.invalidSize("0", reason: "a region needs at least one byte") }
        if let placement, !placement.isNUMA {
            // A region is plain memory mapped in every process: a node's pages are not.
            throw PoolError.invalidPlacement(placement.description, reason: "regions live on this machine's shelves; remote is for heaps")
        }
        let pages64 = size / pageSize + (size % pageSize == 0 ? 0 : 1)
        guard pages64 < UInt64(OpenPool.maximumRun) else {
            throw PoolError.invalidSize(ByteSize.format(size), reason: "larger than any shelf")
        }
        let pages = Int(pages64)
        return try withGlobalLock {
            guard liveRegionIndex(name) == nil else { throw PoolError.regionExists(name) }
            guard let index = (0..<Layout.Regions.capacity).first(where: { rowState($0) == .free }) else {
                throw PoolError.tooManyRegions(limit: Layout.Regions.capacity)
            }
            func find() -> (Shelf, Int)? {
                shelves.all.lazy.filter { $0.remote == nil }.compactMap { s in s.findFreeRun(length: pages).map { (s, $0) } }.first
            }
            var found = find()
            if found == nil, let cache = try? threadCache() {
                returnAll(cache)
                found = find()
            }
            guard let (shelf, page) = found else { throw PoolError.poolFull(name: self.name, pages: pages) }
            if holes {
                // Blocks are taken as pages are filled.
                try shelf.punch(page..<page + pages)
            } else {
                guard try shelf.reserveBlocks(forPage: page, length: pages) else {
                    throw PoolError.poolFull(name: self.name, pages: pages)
                }
            }
            let row = Layout.Regions.entry(index)
            metadata.withBytes(at: row, count: Layout.Regions.entrySize) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            metadata.storeText(name, at: row + Layout.Regions.name, capacity: Layout.Regions.nameCapacity)
            let address = shelf.address(ofPage: page)
            metadata.store(address.rawValue, at: row + Layout.Regions.address)
            metadata.store(size, at: row + Layout.Regions.size)
            metadata.store(UInt64(pages), at: row + Layout.Regions.pages)
            metadata.store(UInt64(time(nil)), at: row + Layout.Regions.createdAt)
            storeAccess(access, row: row)
            setRowState(index, .creating)
            shelf.claimRun(at: page, length: pages, head: .allocated(length: pages, tag: .region(index)))
            if let placement {
                try? NodePlacement.apply(placement, to: shelf.table.pointer(toPage: page),
                                         bytes: pages * Int(pageSize), migrate: true)
            }
            if !holes {
                // New regions read as zeros, like a new file (and this first touch places them).
                shelf.file.withBytes(at: Int(address.offset), count: pages * Int(pageSize)) {
                    $0.initializeMemory(as: UInt8.self, repeating: 0)
                }
                shelf.file.persist(offset: Int(address.offset), count: pages * Int(pageSize))
            }
            setRowState(index, .live)
            return regionInfo(index)
        }
    }

    func destroyRegion(name: String) throws {
        try withGlobalLock {
            guard let index = liveRegionIndex(name) else { throw PoolError.regionNotFound(name) }
            setRowState(index, .destroying)
            settleRow(index)
        }
    }

    /// Row `index`'s run, where the page table gives it to that row: its
    /// shelf and first page.
    func ownRun(ofRow index: Int) -> (Shelf, Int)? {
        let info = regionInfo(index)
        guard let shelf = shelves[info.address.shelf], let page = shelf.page(at: info.address.offset),
              shelf.entry(page) == .allocated(length: info.pages, tag: .region(index)) else { return nil }
        return (shelf, page)
    }

    /// Releases a creating or destroying row's run (if it holds it) and
    /// clears the row. Global lock held.
    func settleRow(_ index: Int) {
        if let (shelf, page) = ownRun(ofRow: index) { shelf.releaseRun(at: page, length: regionInfo(index).pages) }
        metadata.withBytes(at: Layout.Regions.entry(index), count: Layout.Regions.entrySize) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
        metadata.persist(offset: Layout.Regions.entry(index), count: Layout.Regions.entrySize)
    }

    /// Rows a dead lock holder left half done. Global lock held.
    func unsettledRows() -> [Int] {
        (0..<Layout.Regions.capacity).filter { rowState($0) == .creating || rowState($0) == .destroying }
    }

    /// After a holder of the global lock died inside it: rebuild the bitmaps
    /// from the page tables, settle half-done region rows.
    func recoverTornState() {
        for shelf in shelves.all { shelf.rebuildBitmap() }
        // Without a helper (a check, alone with the pool), a source half
        // destroyed fills its clones here, before its run goes; with one,
        // the helper does as the run is freed.
        if freezeHelper == nil { _ = repairLazyClones() }
        for index in unsettledRows() { settleRow(index) }
        lazyClones?.recount()
        rebuildAbandonedStacks()
    }
}

/// Names of pools, regions and heaps: what a file name may safely be.
public enum Names {
    public static let maximumLength = 63

    public static func check(_ name: String, what: String) throws {
        guard !name.isEmpty else { throw PoolError.invalidName(name, reason: "a \(what) name cannot be empty") }
        guard name.utf8.count <= maximumLength else {
            throw PoolError.invalidName(name, reason: "longer than \(maximumLength) bytes")
        }
        guard name.first != ".", name.first != "-" else {
            throw PoolError.invalidName(name, reason: "may not start with '.' or '-'")
        }
        guard name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)) }) else {
            throw PoolError.invalidName(name, reason: "use letters, digits, '.', '_' and '-' only")
        }
    }
}
