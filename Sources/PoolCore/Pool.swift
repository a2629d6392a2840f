import DirectFormat
#if canImport(Glibc)
import Glibc
#endif

/// A pool: a named memory space made of shelves, open in this process.
///
/// Every method may be called from any thread. Page runs and regions are
/// named by `GlobalAddress`es, which mean the same bytes in every process
/// that opens the pool and after every restart.
public final class Pool: @unchecked Sendable {
    let core: OpenPool

    /// `/dev/shm/poolfs`: pools live here unless `at:` names another directory.
    public static let defaultHome = "/dev/shm/poolfs"
    public static let defaultPageSize: UInt64 = 64 << 10
    public static let defaultSize: UInt64 = 4 << 30

    init(core: OpenPool) { self.core = core }

    deinit { core.close() }

    public var name: String { core.name }
    /// The directory that holds the shelf files.
    public var path: String { core.directory }
    public var pageSize: Int { Int(core.pageSize) }
    public var uuid: String { core.superblock.uuid.description }
    /// Where heaps and regions go when they name no placement of their own.
    public var defaultPlacement: Placement? { core.superblock.placement }

    public static func directory(_ name: String, _ home: String?) -> String {
        "\(home ?? defaultHome)/\(name)"
    }

    // MARK: Lifetime

    /// Creates a pool of one shelf of `size` bytes and opens it.
    public static func create(name: String, size: UInt64 = defaultSize, pageSize: UInt64 = defaultPageSize,
                              medium: Medium = .dram, placement: Placement? = nil,
                              at home: String? = nil) throws -> Pool {
        try Names.check(name, what: "pool")
        guard pageSize & (pageSize &- 1) == 0, pageSize >= Layout.minimumPageSize,
              pageSize <= Layout.maximumPageSize
        else {
            throw PoolError.invalidPageSize(ByteSize.format(pageSize),
                                            reason: "must be a power of two from 4K to 1G")
        }
        guard size / pageSize < ShelfGeometry.maximumPages else {
            throw PoolError.invalidSize(ByteSize.format(size), reason: "a shelf holds at most 2^32 pages; use larger pages or grow")
        }
        guard let geometry = ShelfGeometry(index: 0, size: size, pageSize: pageSize) else {
            throw PoolError.invalidSize(ByteSize.format(size), reason: "too small for a pool of \(ByteSize.format(pageSize)) pages "
                + "(at least \(ByteSize.format(UInt64(Layout.shelf0Metadata) + 2 * pageSize)))")
        }
        guard medium != .remote else { throw PoolError.invalidMedium(medium.rawValue) }
        if let placement, !placement.isNUMA {
            throw PoolError.invalidPlacement(placement.description, reason: "a new pool has no remote shelf yet (poolfs grow --remote)")
        }
        guard let parent = try PoolHome.open(home, creating: true) else {
            throw PoolError.poolNotFound(name: name, path: Pool.directory(name, home))
        }
        let directory = parent.path(of: name)
        guard !parent.exists(name) else { throw PoolError.poolExists(name: name, path: directory) }
        try Space.check(parent, needs: size)

        // Built under a hidden name and renamed: a crash never leaves half a pool.
        let staging = ".\(name).creating-\(getpid())"
        removePoolFiles(staging, in: parent)
        try parent.makeDirectory(staging)
        do {
            guard let stagingDirectory = try parent.directory(staging) else {
                throw PoolError.system(call: "mkdir", path: parent.path(of: staging), errno: ENOENT)
            }
            let uuid = PoolUUID.random()
            let reserve = medium == .dram ? geometry.dataOffset : size
            let file = try MappedFile.create(in: stagingDirectory, name: OpenPool.shelfName(0), size: size,
                                             reserve: reserve, medium: medium)
            ShelfHeader.format(file, index: 0, uuid: uuid, size: size, pageSize: pageSize,
                               medium: medium, reserved: reserve)
            Superblock.format(file, uuid: uuid, pageSize: pageSize, name: name, placement: placement)
            ShelfTable.publish(file, index: 0, record: ShelfRecord(size: size, medium: medium), uuid: uuid)
            file.persistAll()
            if renameat(parent.descriptor, staging, parent.descriptor, name) != 0 {
                throw errno == EEXIST || errno == ENOTEMPTY
                    ? PoolError.poolExists(name: name, path: directory)
                    : PoolError.system(call: "rename", path: directory, errno: errno)
            }
        } catch {
            removePoolFiles(staging, in: parent)
            throw error
        }
        return try open(name: name, at: home)
    }

    /// Opens an existing pool; damaged, truncated, foreign or newer pools are
    /// refused without writing anything.
    public static func open(name: String, at home: String? = nil) throws -> Pool {
        try Names.check(name, what: "pool")
        let core = try OpenPool.map(name: name, home: home)
        try core.attach()
        return Pool(core: core)
    }

    /// Runs `body` with the pool mapped but not joined, while no process
    /// may open it: no slot is claimed and nothing that dead processes left
    /// is recovered, so a check in `body` sees the pool as it is. `body`
    /// only reads (it cannot allocate or free).
    public static func inspecting<R>(name: String, at home: String? = nil, _ body: (Pool) throws -> R) throws -> R {
        try withNoOtherOpener(name: name, at: home) { try body(Pool(core: $0)) }
    }

    /// Runs `body` with the pool mapped, holding off every opener; fails if
    /// a process has it open.
    static func withNoOtherOpener<R>(name: String, at home: String?, _ body: (OpenPool) throws -> R) throws -> R {
        try Names.check(name, what: "pool")
        let core = try OpenPool.map(name: name, home: home)
        let fd = core.metadata.descriptor
        guard FileLock.tryLock(fd, byte: Layout.LockByte.openers, .exclusive) else {
            throw PoolError.inUse(name: name, pids: recordedPids(core.metadata))
        }
        defer { FileLock.unlock(fd, byte: Layout.LockByte.openers) }
        return try body(core)
    }

    /// Removes a pool that no process has open.
    public static func destroy(name: String, at home: String? = nil) throws {
        try Names.check(name, what: "pool")
        guard let parent = try PoolHome.open(home, creating: false), let directory = try parent.directory(name) else {
            throw PoolError.poolNotFound(name: name, path: Pool.directory(name, home))
        }
        guard directory.list().allSatisfy({ isShelfFileName($0) || keptBeside.contains($0) }) else {
            throw PoolError.damaged(path: directory.path, reason: "holds files that are not shelves; not removing it")
        }
        let shelf0 = OpenPool.shelfName(0)
        if directory.exists(shelf0) {
            // Even a damaged shelf 0 carries the lock of the processes using it.
            let fd = try directory.open(shelf0, flags: O_RDWR)
            defer { SystemCall.close(fd) }
            guard FileLock.tryLock(fd, byte: Layout.LockByte.openers, .exclusive) else {
                let pids = (try? MappedFile.open(in: directory, name: shelf0, medium: .dram)).map(Pool.recordedPids) ?? []
                throw PoolError.inUse(name: name, pids: pids)
            }
        }
        removePoolFiles(name, in: parent)
    }

    /// What a mount keeps beside the shelves, and a killed one leaves:
    /// direct access's area (PoolFS's UnsafeDirectArea).
    public static let directAreaFileName = DirectAreaFormat.fileName
    /// Files a pool keeps beside its shelves: that area, and the table of
    /// region clones that share pages.
    static let keptBeside: Set<String> = [directAreaFileName, LazyCloneTable.fileName]

    /// `shelf-N`, and what a shelf keeps beside it: `.tmp` while made, a
    /// remote shelf's `.remote` and `.cache` (and their `.tmp`).
    static func isShelfFileName(_ file: String) -> Bool {
        guard file.hasPrefix("shelf-") else { return false }
        var rest = file.dropFirst(6)
        if rest.hasSuffix(".tmp") { rest = rest.dropLast(4) }
        for suffix in [".remote", ".cache"] where rest.hasSuffix(suffix) { rest = rest.dropLast(suffix.count) }
        return !rest.isEmpty && rest.allSatisfy(\.isNumber)
    }

    /// Removes directory `name` of `parent` with the shelf files in it.
    private static func removePoolFiles(_ name: String, in parent: PoolDirectory) {
        if let directory = try? parent.directory(name) {
            for file in directory.list() where isShelfFileName(file) || keptBeside.contains(file) { directory.remove(file) }
        }
        try? parent.removeDirectory(name)
    }

    /// Pids recorded in the participant slots, for messages about who holds a pool.
    static func recordedPids(_ file: MappedFile) -> [Int32] {
        guard file.length >= Layout.shelf0Metadata else { return [] }
        return (0..<Layout.Participants.capacity).compactMap { index in
            guard file.load(UInt64.self, at: Layout.Participants.slot(index) + Layout.Participants.state) != 0,
                  FileLock.isHeld(file.descriptor, byte: Layout.LockByte.participant(index))
            else { return nil }
            return Int32(truncatingIfNeeded: file.load(UInt64.self, at: Layout.Participants.slot(index) + Layout.Participants.pid))
        }
    }

    /// Leaves the pool: thread caches are emptied and the process slot freed.
    /// No other thread may be using the pool meanwhile.
    public func close() { core.close() }

    // MARK: Pages

    /// Allocates `count` contiguous pages.
    public func allocatePages(count: Int = 1) throws -> GlobalAddress {
        try core.allocatePages(count: count)
    }

    /// Frees a run that `allocatePages(count:)` returned, with the same count.
    public func freePages(at address: GlobalAddress, count: Int = 1) throws {
        try core.retryingAfterRecovery { try core.freePages(at: address, count: count) }
    }

    /// Allocates a run and stores its address at `destination` (an aligned
    /// word in the pool) as one crash-atomic step.
    public func allocatePages(count: Int = 1, publishingTo destination: GlobalAddress) throws -> GlobalAddress {
        try core.allocatePages(count: count, publishingTo: destination)
    }

    /// Zeroes `destination` and frees the run, as one crash-atomic step.
    public func freePages(at address: GlobalAddress, count: Int = 1, clearing destination: GlobalAddress) throws {
        try core.retryingAfterRecovery { try core.freePages(at: address, count: count, clearing: destination) }
    }

    // MARK: Bytes by global address

    public func read(at address: GlobalAddress, into buffer: UnsafeMutableRawBufferPointer) throws {
        try core.read(at: address, into: buffer)
    }

    public func write(at address: GlobalAddress, from buffer: UnsafeRawBufferPointer) throws {
        try core.write(at: address, from: buffer)
    }

    /// Atomically loads the aligned word at `address`.
    public func load(at address: GlobalAddress) throws -> UInt64 {
        try core.dataWord(address).load()
    }

    /// Atomically stores the aligned word at `address`.
    public func store(_ value: UInt64, at address: GlobalAddress) throws {
        try core.dataWord(address).store(value)
    }

    /// Rcmp's CAS: replaces the word at `address` with `desired` if it holds
    /// `expected`; returns whether it did and the value it found.
    @discardableResult
    public func compareAndSwap(at address: GlobalAddress, expected: UInt64, desired: UInt64) throws
        -> (exchanged: Bool, original: UInt64)
    {
        try core.dataWord(address).compareExchange(expected: expected, desired: desired)
    }

    /// Adds `value` to the aligned word at `address`, returning what it held.
    @discardableResult
    public func fetchAndAdd(at address: GlobalAddress, _ value: UInt64) throws -> UInt64 {
        try core.dataWord(address).fetchAndAdd(value)
    }

    /// Each shelf's data pages as one span: where a memory node registers
    /// the pool for one-sided access, leaving the metadata out.
    public func dataSpans() -> [(start: GlobalAddress, bytes: UInt64)] {
        _ = shelfCount  // maps shelves another process added
        return core.dataSpans()
    }

    /// Lends the bytes of `[address, address+count)` to `body`.
    public func withUnsafeMutableBytes<R>(at address: GlobalAddress, count: Int,
                                          _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        try core.withBytes(at: address, count: count, body)
    }

    /// The start of the data page that `address` lies in; nil outside them.
    public func pageStart(containing address: GlobalAddress) -> GlobalAddress? {
        core.pageStart(containing: address)
    }

    /// Where `address` is mapped in this process (valid while the pool is open).
    public func unsafePointer(to address: GlobalAddress) -> UnsafeMutableRawPointer? {
        core.pointer(to: address)
    }

    /// The global address of a pointer into this process's mapping of the pool.
    public func address(of pointer: UnsafeRawPointer) -> GlobalAddress? {
        core.address(of: pointer)
    }

    /// Copies `source` into the pool at `address`, the fastest way for the
    /// page's state: large copies into pages not yet in memory go through
    /// the shelf file (MappedFile.copy).
    public func copy(to address: GlobalAddress, from source: UnsafeRawBufferPointer) throws {
        try core.copy(to: address, from: source)
    }

    /// Makes the bytes durable (pmem shelves; a no-op on dram).
    public func persist(at address: GlobalAddress, count: Int) throws {
        try core.persist(at: address, count: count)
    }

    // MARK: Regions

    /// A zero-filled region, its pages placed by `placement` (or the
    /// pool's default), owned as `access` says (the creator's, 0600).
    @discardableResult
    public func createRegion(name: String, size: UInt64, placement: Placement? = nil,
                             access: RegionAccess = .creators) throws -> Region {
        let info = try core.createRegion(name: name, size: size, placement: placement ?? defaultPlacement, access: access)
        return Region(pool: self, info: info)
    }

    /// A region's new owner and mode.
    public func setRegionAccess(name: String, _ access: RegionAccess) throws {
        try core.setRegionAccess(name: name, access)
    }

    public func openRegion(name: String) throws -> Region {
        guard let index = core.liveRegionIndex(name) else { throw PoolError.regionNotFound(name) }
        return Region(pool: self, info: core.regionInfo(index))
    }

    public func destroyRegion(name: String) throws {
        try core.destroyRegion(name: name)
    }

    /// Call in a child that forked with the pool open and goes on using it
    /// (a daemon going to the background): it takes the parent's place in
    /// the pool, with a thread of its own for freezes, which the parent's
    /// threads did not follow it into.
    public func didFork() { core.didFork() }

    /// A new region `newName` with `name`'s size, owner, mode and bytes as
    /// they were at one instant, whatever processes write meanwhile: the
    /// pool is frozen (OpenPool+Freeze) while the bytes are copied, and a
    /// writer pauses only on its first write to each page. Copied, not
    /// shared: programs write regions through mappings the pool does not
    /// manage page by page. A pool with a shelf that is not shared memory
    /// (pmem) cannot be frozen: there the bytes are copied as they are, and
    /// a process writing `name` meanwhile may leave a mix of before and after.
    @discardableResult
    public func cloneRegion(name: String, as newName: String, placement: Placement? = nil) throws -> Region {
        let source = try openRegion(name: name)
        let freezable = core.isFreezable
        // Shared pages start as holes, filled from the source as either side is touched.
        let info = try core.createRegion(name: newName, size: source.size, placement: placement ?? defaultPlacement,
                                         access: source.access, holes: freezable)
        let copy = Region(pool: self, info: info)
        do {
            if freezable, let index = core.liveRegionIndex(name) {
                if try core.shareRegion(core.regionInfo(index), index: index, into: info) { return copy }
                _ = try core.freeze(including: { $0 == .region(index) }) {}
                defer { core.thaw() }
                try copyFrozen(UInt64(source.pages) * core.pageSize, from: source.address, to: copy.address)
            } else {
                try source.withUnsafeMutableBytes { from in
                    try copy.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(from)) }
                }
            }
        } catch {
            try? destroyRegion(name: newName)
            throw error
        }
        return copy
    }

    /// Copies `count` bytes as they were at this process's freeze.
    private func copyFrozen(_ count: UInt64, from source: GlobalAddress, to target: GlobalAddress) throws {
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < count {
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(UInt64(chunk), count - done))])
            try core.readShelf(source.shelf, offset: source.offset + done, into: piece)
            try core.writeShelf(target.shelf, offset: target.offset + done, from: UnsafeRawBufferPointer(piece))
            done += UInt64(piece.count)
        }
    }

    public func regions() -> [RegionInfo] { core.regions() }

    /// Region clones that still share pages with their sources, by name.
    public func regionSharing() -> [String: RegionSharing] { core.regionSharing() }

    /// Regions with their table rows: numbers that stay while they live.
    public func regionList() -> [(id: Int, info: RegionInfo)] { core.regionRows() }

    /// The region in table row `id`, if one lives there (one row read).
    public func openRegion(id: Int) -> Region? {
        guard id >= 0, id < Layout.Regions.capacity, core.rowState(id) == .live else { return nil }
        return Region(pool: self, info: core.regionInfo(id))
    }

    // MARK: Shape

    /// Adds a shelf of `size` bytes; other processes see it at once.
    @discardableResult
    public func grow(by size: UInt64, medium: Medium? = nil) throws -> Int {
        try core.grow(by: size, medium: medium)
    }

    /// Adds a remote shelf of `size` bytes (its page table here, its data
    /// pages on a memory node): `reserve` is told the new shelf's index and
    /// its data bytes, reserves them on the node, and says where.
    @discardableResult
    public func grow(by size: UInt64, remote reserve: (_ shelf: Int, _ bytes: UInt64) throws -> RemoteShelfPlace) throws -> Int {
        try withoutActuallyEscaping(reserve) { try core.grow(by: size, remote: $0) }
    }

    public func info() -> PoolInfo { core.info() }

    /// Capacity and free bytes alone (what `df` asks, on every call, and
    /// some programs around every unlink): the free-page bitmaps counted, a
    /// bit a page, not the page tables walked, a word a page. Runs held in
    /// thread caches count as used here (info counts them free).
    public func usage() -> (capacityBytes: UInt64, freeBytes: UInt64) {
        let shelves = core.shelves.all
        let pages = shelves.reduce(0) { $0 + $1.pageCount }
        let used = shelves.reduce(0) { $0 + $1.usedPageCount() }
        return (UInt64(pages) * core.pageSize, UInt64(pages - used) * core.pageSize)
    }

    /// How many shelves the pool has now.
    public var shelfCount: Int {
        _ = core.shelf(core.shelves.count)   // maps any shelf another process added
        return core.shelves.count
    }
}

/// A region: a named run of pages this process uses as plain memory. Another
/// process that opens the same region sees the same bytes.
public final class Region: @unchecked Sendable {
    public let pool: Pool
    public let name: String
    public let address: GlobalAddress
    /// The size asked for; the run is rounded up to whole pages.
    public let size: UInt64
    public let pages: Int
    /// Its owner and mode when opened.
    public let access: RegionAccess

    init(pool: Pool, info: RegionInfo) {
        self.pool = pool
        name = info.name
        address = info.address
        size = info.size
        pages = info.pages
        access = info.access
    }

    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        try pool.withUnsafeMutableBytes(at: address, count: Int(size), body)
    }

    public func persist() throws { try pool.persist(at: address, count: Int(size)) }
}
