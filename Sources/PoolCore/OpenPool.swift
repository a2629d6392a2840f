import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// A pool as this process has it open: the mapped shelves, this process's
/// participant slot, its thread caches and the locks.
///
/// Lock order: `globalMutex` (this process) → the global file lock (all
/// processes) → `registryMutex`. The fast path takes none of them.
final class OpenPool: @unchecked Sendable {
    let name: String
    /// Where its shelf files are (for messages), and that directory held open.
    let directory: String
    let home: PoolDirectory
    let superblock: Superblock
    /// Shelf 0's file: superblock, shelf table, control words, participants,
    /// regions; its descriptor carries the file locks.
    let metadata: MappedFile
    let shelves = ShelfDirectory()
    let pageSize: UInt64
    let pageShift: UInt64
    /// This process's participant slot.
    @exclusivity(unchecked) private(set) var slot = -1
    /// Runs of this many pages or fewer go through the thread caches.
    let cacheBudgetPages: Int
    /// The remote shelves' cache size and deadline, and their pages cached.
    let remoteBudget: RemoteBudget

    let globalMutex = ThreadMutex()
    private let registryMutex = ThreadMutex()
    /// Registered thread caches and free intent-log slots; registryMutex.
    private var caches: [UnsafeThreadCache] = []
    private var freeLogs: [Int] = Array((1..<Layout.Participants.lanes).reversed())
    private var isClosed = false
    /// Serializes the threads that have no lane of their own (heap lane 0).
    let sharedLaneMutex = ThreadMutex()
    /// Serializes their use of lane 0's intent log; taken inside sharedLaneMutex.
    let sharedLogMutex = ThreadMutex()
    /// Held by such a thread while it is inside an epoch (lane 0 has one epoch word).
    let sharedEpochMutex = ThreadMutex()
    /// Placements `poolfs exec` set for this process only, by heap.
    let placementOverrides = Locked<[Int: Placement]>([:])
    /// The freeze this process made and has not ended (OpenPool+Freeze).
    let freezing = Locked<FreezeArea?>(nil)
    /// This process's part in every process's freezes.
    private(set) var freezeHelper: FreezeHelper?
    /// Region clones that still share pages, once the pool has had one.
    private let lazyCloneTable = ManagedAtomicLazyReference<LazyCloneTable>()
    var lazyClones: LazyCloneTable? { lazyCloneTable.load() }
    /// Their heap lanes; sharedLaneMutex.
    var sharedLanes: [Int: UnsafeHeapLane] = [:]
    @exclusivity(unchecked) private(set) var cacheKey = pthread_key_t()
    private var hasCacheKey = false

    private init(name: String, home: PoolDirectory, metadata: MappedFile, superblock: Superblock,
                 shelves: [Shelf], remoteBudget: RemoteBudget) {
        self.remoteBudget = remoteBudget
        self.name = name
        self.directory = home.path
        self.home = home
        self.metadata = metadata
        self.superblock = superblock
        pageSize = superblock.pageSize
        pageShift = UInt64(superblock.pageSize.trailingZeroBitCount)
        for shelf in shelves { self.shelves.append(shelf) }
        let totalPages = shelves.reduce(0) { $0 + $1.pageCount }
        cacheBudgetPages = max(1, min(UnsafeThreadCache.stackCapacity, totalPages / 64))
    }

    deinit {
        if !isClosed { close() }
    }

    static func shelfName(_ index: Int) -> String { "shelf-\(index)" }

    // MARK: Opening

    /// Maps and verifies every shelf; takes no lock and joins nothing.
    static func map(name: String, home: String?) throws -> OpenPool {
        guard let directory = try PoolHome.poolDirectory(name, home) else {
            throw PoolError.poolNotFound(name: name, path: Pool.directory(name, home))
        }
        let path0 = directory.path(of: shelfName(0))
        guard directory.exists(shelfName(0)) else {
            throw PoolError.damaged(path: directory.path, reason: "shelf-0 is missing")
        }
        // Read shelf 0 with a plain mapping first: its header says its medium.
        let probe = try MappedFile.open(in: directory, name: shelfName(0), medium: .dram)
        guard probe.length >= Layout.shelf0Metadata else {
            try ShelfHeader.verify(probe, index: 0, uuid: nil, size: nil)
            throw PoolError.damaged(path: path0, reason: "truncated to \(probe.length) bytes")
        }
        try ShelfHeader.verify(probe, index: 0, uuid: nil, size: nil)
        let superblock = try Superblock.read(probe)
        let records = try ShelfTable.records(probe, uuid: superblock.uuid)
        guard let medium0 = ShelfHeader.medium(probe) else {
            throw PoolError.damaged(path: path0, reason: "unknown medium")
        }
        let file0 = medium0 == .dram ? probe : try MappedFile.open(in: directory, name: shelfName(0), medium: medium0)
        var shelves: [Shelf] = []
        let remoteBudget = RemoteBudget(pageSize: superblock.pageSize)
        for (index, record) in records.enumerated() {
            let file = index == 0 ? file0 : try openShelfFile(directory, index, record)
            shelves.append(try shelf(index, file, record, superblock: superblock, home: directory, budget: remoteBudget))
        }
        return OpenPool(name: name, home: directory, metadata: file0, superblock: superblock,
                        shelves: shelves, remoteBudget: remoteBudget)
    }

    /// A shelf whose file is open and verified, with its cache if remote.
    private static func shelf(_ index: Int, _ file: MappedFile, _ record: ShelfRecord, superblock: Superblock,
                              home: PoolDirectory, budget: RemoteBudget) throws -> Shelf {
        try ShelfHeader.verify(file, index: index, uuid: superblock.uuid, size: record.size)
        guard let geometry = ShelfGeometry(index: index, size: record.size, pageSize: superblock.pageSize) else {
            throw PoolError.damaged(path: file.path, reason: "impossible shelf size \(record.size)")
        }
        let remote = record.medium == .remote
            ? try RemoteShelfCache(shelf: index, file: file, geometry: geometry, home: home, budget: budget) : nil
        return Shelf(index: index, file: file, geometry: geometry, remote: remote)
    }

    static func openShelfFile(_ directory: PoolDirectory, _ index: Int, _ record: ShelfRecord) throws -> MappedFile {
        guard directory.exists(shelfName(index)) else {
            throw PoolError.damaged(path: directory.path, reason: "shelf-\(index) is missing")
        }
        return try MappedFile.open(in: directory, name: shelfName(index), medium: record.medium)
    }

    /// Joins the pool as a participant: recovers what dead processes left,
    /// takes a slot, and readies the thread caches.
    func attach() throws {
        let created = pthread_key_create(&cacheKey) { raw in
            guard let raw else { return }
            let cache = UnsafeThreadCache(raw)
            cache.owner.takeUnretainedValue().threadDidExit(cache)
        }
        guard created == 0 else {
            throw PoolError.system(call: "pthread_key_create", path: directory, errno: created)
        }
        hasCacheKey = true
        // Before the slot: what this process writes once it has one is
        // protected by a freeze under way.
        _ = try? openLazyClones(creating: false)
        let helper = FreezeHelper(pool: self)
        for shelf in shelves.all { shelf.freeze = helper }
        helper.start()
        freezeHelper = helper
        let fd = metadata.descriptor
        // Shared by all users; `check --repair` and `destroy` take it exclusive.
        FileLock.lock(fd, byte: Layout.LockByte.openers, .shared)
        do {
            try withGlobalLock {
                slot = try claimSlotLocked()
                reclaimDeadParticipantsLocked()
                // Clones made later are announced by their freeze, which
                // waits for this slot.
                try? refreshShelvesLocked()
                try helper.followLazyClones()
            }
        } catch {
            if slot >= 0 { releaseSlot() }
            slot = -1
            FileLock.unlock(fd, byte: Layout.LockByte.openers)
            // Its threads reach this pool unowned: they end with the open.
            helper.stop()
            throw error
        }
    }

    /// Leaves the pool: every thread cache's runs go back, the slot is freed.
    /// Once only: a second close (Pool's deinit after close()) must not free
    /// the slot again, which by then may be another process's.
    func close() {
        let closing: [UnsafeThreadCache]? = registryMutex.withLock {
            guard !isClosed else { return nil }
            isClosed = true
            defer { caches.removeAll() }
            return caches
        }
        guard let orphaned = closing else { return }
        // Last: what closing writes is still seen by a freeze under way.
        defer {
            thaw()
            freezeHelper?.stop()
        }
        if hasCacheKey { pthread_key_delete(cacheKey) }
        hasCacheKey = false
        guard slot >= 0 else { return }
        let retired = (try? withGlobalLock { () -> Bool in
            for cache in orphaned { retire(cache) }
            sharedLaneMutex.withLock {
                for (heap, lane) in sharedLanes {
                    if heapIsLive(heap) { abandon(lane, heap: heap) }
                    lane.deallocate()
                }
                sharedLanes.removeAll()
            }
            return true
        }) ?? false
        for cache in orphaned {
            cache.owner.release()
            cache.deallocate()
        }
        if retired {
            releaseSlot()
        } else {
            // What the caches held is still marked as this slot's: leave the
            // slot for the next opener to recover, as after a crash.
            FileLock.unlock(metadata.descriptor, byte: Layout.LockByte.participant(slot))
        }
        FileLock.unlock(metadata.descriptor, byte: Layout.LockByte.openers)
        FileLock.unlock(metadata.descriptor, byte: Layout.LockByte.exclusive)
        for shelf in shelves.all where shelf.file.medium == .pmem && !shelf.file.isPersistentMemory {
            shelf.file.persistAll()
        }
        for shelf in shelves.all { shelf.remote?.close() }
    }

    /// The table of lazy region clones: made by the first clone, opened by
    /// every process once it exists.
    func openLazyClones(creating: Bool) throws -> LazyCloneTable? {
        if let table = lazyCloneTable.load() { return table }
        guard creating || home.exists(LazyCloneTable.fileName) else { return nil }
        return lazyCloneTable.storeIfNilThenLoad(try LazyCloneTable.openOrCreate(in: home))
    }

    /// In a child that forked with the pool open and goes on with it (a
    /// mount going to the background): its own freeze helper, and its pid
    /// in the slot it took over.
    func didFork() {
        freezeHelper?.restartAfterFork()
        guard slot >= 0 else { return }
        metadata.store(UInt64(getpid()), at: Layout.Participants.slot(slot) + Layout.Participants.pid)
        metadata.persist(offset: Layout.Participants.slot(slot), count: 64)
    }

    /// For tests of recovery: leaves the pool as a process killed now would,
    /// with its slot, thread caches and logs as they are, but its locks gone.
    func abandon() {
        registryMutex.withLock {
            isClosed = true
            caches.removeAll()
        }
        // Deleted once only: a key number deleted twice may by then belong
        // to another pool, whose threads would lose their caches.
        if hasCacheKey { pthread_key_delete(cacheKey) }
        hasCacheKey = false
        freezeHelper?.stop()
        FileLock.unlock(metadata.descriptor, byte: Layout.LockByte.participant(slot))
        FileLock.unlock(metadata.descriptor, byte: Layout.LockByte.openers)
    }

    // MARK: Thread caches

    @inline(__always)
    func threadCache() throws -> UnsafeThreadCache {
        if let raw = pthread_getspecific(cacheKey) { return UnsafeThreadCache(raw) }
        return try makeThreadCache()
    }

    @inline(never)
    private func makeThreadCache() throws -> UnsafeThreadCache {
        try registryMutex.withLock {
            guard !isClosed else { throw PoolError.closed(name: name) }
            let cache = UnsafeThreadCache.allocate(owner: Unmanaged.passRetained(self),
                                                   lane: freeLogs.popLast() ?? 0)
            caches.append(cache)
            pthread_setspecific(cacheKey, cache.raw)
            return cache
        }
    }

    private func threadDidExit(_ cache: UnsafeThreadCache) {
        let registered: Bool = registryMutex.withLock {
            guard !isClosed, let i = caches.firstIndex(where: { $0.raw == cache.raw }) else { return false }
            caches.remove(at: i)
            return true
        }
        guard registered else { return }
        guard (try? withGlobalLock { () -> Bool in retire(cache); return true }) ?? false else {
            // Left registered: close() tries again, or recovery takes it.
            registryMutex.withLock { caches.append(cache) }
            return
        }
        registryMutex.withLock {
            if cache.lane > 0 { freeLogs.append(cache.lane) }
        }
        let owner = cache.owner
        cache.deallocate()
        owner.release()
    }

    /// Gives back everything a thread held: heap spans, cached runs.
    /// Global lock held.
    func retire(_ cache: UnsafeThreadCache) {
        abandonHeapLanes(cache)
        returnAll(cache)
    }

    /// How many runs of `length` pages a thread keeps.
    @inline(__always)
    func cacheCapacity(_ length: Int) -> Int { max(1, cacheBudgetPages / length) }

    // MARK: The global lock

    /// Runs `body` holding the pool-wide lock. A holder that died inside
    /// leaves `lockDirty` set; the next holder rebuilds what it may have torn.
    @discardableResult
    func withGlobalLock<R>(_ body: () throws -> R) throws -> R {
        try globalMutex.withLock {
            let fd = metadata.descriptor
            FileLock.lock(fd, byte: Layout.LockByte.global, .exclusive)
            defer { FileLock.unlock(fd, byte: Layout.LockByte.global) }
            try refreshShelvesLocked()
            let dirty = metadata.atomic(at: Layout.Control.lockDirty)
            if dirty.load(ordering: .acquiring) != 0 {
                recoverTornState()
            }
            dirty.store(1, ordering: .releasing)
            metadata.store(UInt64(getpid()), at: Layout.Control.lockHolder)
            metadata.persist(offset: Layout.Control.offset, count: 16)
            defer {
                dirty.store(0, ordering: .releasing)
                metadata.persist(offset: Layout.Control.offset, count: 8)
            }
            return try body()
        }
    }

    /// Maps shelves that another process published since; global mutex held.
    func refreshShelvesLocked() throws {
        while ShelfTable.isPublished(metadata, index: shelves.count) {
            let index = shelves.count
            let record = try ShelfTable.record(metadata, index: index, uuid: superblock.uuid)
            let file = try OpenPool.openShelfFile(home, index, record)
            let shelf = try OpenPool.shelf(index, file, record, superblock: superblock, home: home, budget: remoteBudget)
            shelves.append(shelf)
            freezeHelper?.didMap(shelf)
        }
    }

    /// The shelf an address names, mapping newly grown shelves on demand.
    @inline(__always)
    func shelf(_ index: Int) -> Shelf? {
        if let shelf = shelves[index] { return shelf }
        return mapNewShelf(index)
    }

    @inline(never)
    private func mapNewShelf(_ index: Int) -> Shelf? {
        // Unpublished (a garbage address): no lock, so a caller holding it
        // (recovery reading a damaged log) cannot deadlock here.
        guard index >= 0, index < Layout.ShelfTable.capacity, ShelfTable.isPublished(metadata, index: index) else {
            return nil
        }
        try? globalMutex.withLock { try refreshShelvesLocked() }
        return shelves[index]
    }
}
