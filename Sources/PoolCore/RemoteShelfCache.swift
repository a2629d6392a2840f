import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// A remote shelf's data pages as this machine keeps them: the shelf file's
/// data pages are a window onto the node's region, holding the pages read
/// or written lately (Rcmp's remote page swap). One byte per page, in
/// `shelf-N.cache`, says whether the window's page is absent, a clean copy
/// or dirty (newer than the node's); on tmpfs beside the window, it lasts
/// as long as the window does, so a kill -9 of the mount loses neither.
///
/// Every transfer and state change happens under `mutex`. Pointers handed
/// out by `prepare` stay valid while the caller keeps eviction away (the
/// file system holds its tree's lock shared; it evicts under it exclusive).
final class RemoteShelfCache: @unchecked Sendable {
    enum State: UInt8 { case absent = 0, clean = 1, dirty = 2 }

    let shelf: Int
    let place: RemoteShelfPlace
    private let file: MappedFile
    private let geometry: ShelfGeometry
    private let states: MappedFile
    private let state: UnsafeMutablePointer<UInt8>
    private let budget: RemoteBudget
    private let mutex = ThreadMutex()
    /// Pages touched since the clock hand last passed (second chance).
    private var referenced: [UInt64]
    private var hand = 0
    private var link: RemoteShelfLink?
    /// When transfers began to fail (wall seconds), nil while they succeed.
    private var unreachableSince: Int64?
    private var lastFailure = ""
    private var lastAttempt: UInt64 = 0
    private var counters = RemoteShelfCounters()
    /// Where a sequential reader's next miss would start, and how far
    /// ahead of it the cache now reads.
    private var nextSequential = -1
    private var readAheadPages = 0
    static let readAheadBytes = 8 << 20
    /// Whether this process keeps the cache (another may, with the pool open too).
    private var isHeldHere: Bool
    /// This process's part in freezes: writes wait for a freeze's instant
    /// and save what it needs first (FreezeHelper+RemoteShelves).
    weak var freeze: FreezeHelper?
    /// A checkpoint's own link to the node, where another process keeps
    /// the cache, and the memory it registers (nothing goes through it).
    private var readerLink: RemoteShelfLink?
    private var readerWindow: UnsafeMutableRawBufferPointer?

    /// Pages in one transfer at most (bytes in flight stay bounded).
    private static let transferBytes = 1 << 20
    /// While a node is down, a transfer is tried again after this long;
    /// in between, calls fail at once, so no caller waits out a deadline
    /// that another just waited.
    private static let retryNanoseconds: UInt64 = 1_000_000_000

    static func stateFileName(_ shelf: Int) -> String { "shelf-\(shelf).cache" }

    init(shelf: Int, file: MappedFile, geometry: ShelfGeometry, home: PoolDirectory, budget: RemoteBudget) throws {
        self.shelf = shelf
        self.file = file
        self.geometry = geometry
        self.budget = budget
        let placePath = home.path(of: RemoteShelfPlace.fileName(shelf))
        guard let text = try? SystemCall.readText(placePath) else {
            throw PoolError.damaged(path: home.path, reason: "remote shelf \(shelf) has no \(RemoteShelfPlace.fileName(shelf))")
        }
        place = try RemoteShelfPlace(parsing: text, path: placePath)
        guard place.bytes >= geometry.dataBytes else {
            throw PoolError.damaged(path: placePath, reason: "its region holds \(place.bytes) bytes, the shelf \(geometry.dataBytes)")
        }
        let name = RemoteShelfCache.stateFileName(shelf)
        let count = UInt64(geometry.pageCount)
        let fresh = !home.exists(name)
        states = fresh ? try MappedFile.create(in: home, name: name, size: count, reserve: count, medium: .dram)
                       : try MappedFile.open(in: home, name: name, medium: .dram)
        guard states.length == geometry.pageCount else {
            throw PoolError.damaged(path: states.path, reason: "\(states.length) bytes for \(geometry.pageCount) pages")
        }
        state = states.pointer(at: 0, count: geometry.pageCount).assumingMemoryBound(to: UInt8.self)
        referenced = [UInt64](repeating: 0, count: geometry.bitmapWords)
        // One process at a time keeps the cache: two would each think
        // they own the window.
        isHeldHere = FileLock.tryLock(states.descriptor, byte: Layout.LockByte.base, .exclusive)
        guard isHeldHere else { return }
        if fresh {
            // No record of the window: whatever it holds is forgotten.
            try SystemCall.punchHole(file.descriptor, offset: geometry.dataOffset, length: geometry.dataBytes, path: file.path)
        }
        var resident = 0
        var absentFrom: Int?
        for page in 0...geometry.pageCount {
            let kept = page < geometry.pageCount && (state[page] == State.clean.rawValue || state[page] == State.dirty.rawValue)
            if page < geometry.pageCount && !kept {
                state[page] = State.absent.rawValue
                if absentFrom == nil { absentFrom = page }
            }
            if kept { resident += 1 }
            if kept || page == geometry.pageCount, let from = absentFrom {
                // A page forgotten while being evicted may still be there.
                try? punch(from..<page)
                absentFrom = nil
            }
        }
        budget.residentPages.wrappingIncrement(by: resident, ordering: .relaxed)
    }

    deinit {
        link?.close()
        readerLink?.close()
        readerWindow?.deallocate()
    }

    private var pageSize: Int { Int(geometry.pageSize) }

    private func window(_ page: Int) -> UnsafeMutableRawPointer {
        file.pointer(at: Int(geometry.offset(ofPage: page)), count: pageSize)
    }

    /// The pages `[offset, offset+count)` of the shelf file falls in.
    private func pages(_ offset: Int, _ count: Int) -> Range<Int> {
        let first = (offset - Int(geometry.dataOffset)) / pageSize
        let end = (offset + max(count, 1) - Int(geometry.dataOffset) + pageSize - 1) / pageSize
        return first..<end
    }

    // MARK: Access

    /// Readies `[offset, offset+count)` of the shelf file: absent pages are
    /// read from the node, except, when `writing`, pages the write covers
    /// whole. Returns the bytes' pointer; a writer calls `noteWritten` once
    /// its bytes are in (a page covered whole holds nothing before: marked
    /// dirty earlier, a write that then failed would send that to the node).
    func prepare(offset: Int, count: Int, writing: Bool) throws -> UnsafeMutableRawPointer {
        try locked(writing: writing) { saving in try prepareLocked(offset: offset, count: count, writing: writing, saving: saving) }
        return file.pointer(at: offset, count: count)
    }

    /// Marks written pages dirty, once the bytes are in.
    func noteWritten(offset: Int, count: Int) {
        guard count > 0 else { return }
        mutex.withLock { markDirtyLocked(pages(offset, count)) }
    }

    /// The bytes lent to `body` with the cache's lock held, for callers
    /// that keep no lock of their own against eviction (the library).
    func withBytes<R>(offset: Int, count: Int, writing: Bool, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        try locked(writing: writing) { saving in
            try prepareLocked(offset: offset, count: count, writing: writing, saving: saving)
            let result = try body(UnsafeMutableRawBufferPointer(start: file.pointer(at: offset, count: count), count: count))
            if writing { markDirtyLocked(pages(offset, count)) }
            return result
        }
    }

    /// `body` under the lock, told the freeze whose pages a write must save
    /// first; a write that comes while a freeze is still protecting waits
    /// for its instant, without the lock.
    private func locked<R>(writing: Bool, _ body: (FreezeArea?) throws -> R) throws -> R {
        while true {
            var instant: UInt32 = 0
            let outcome: Result<R, Error>? = mutex.withLock {
                var saving: FreezeArea?
                if writing, let freeze {
                    switch freeze.beforeRemoteWrite(shelf: shelf) {
                    case .go: break
                    case .waitForInstant(let generation): instant = generation; return nil
                    case .save(let area): saving = area
                    }
                }
                return Result { try body(saving) }
            }
            if let outcome { return try outcome.get() }
            _ = freeze?.waitUntilFrozen(instant)
        }
    }

    /// Returns once no thread writes through `withBytes` or readies a write.
    func waitForWritesUnderWay() { mutex.withLock {} }

    private func prepareLocked(offset: Int, count: Int, writing: Bool, saving area: FreezeArea? = nil) throws {
        guard count > 0 else { return }
        try refuseUnlessHeldHere()
        let range = pages(offset, count)
        var missing: [Int] = []
        for page in range {
            setReferenced(page)
            guard state[page] == State.absent.rawValue else {
                if !writing { counters.hits += 1 }
                continue
            }
            let start = Int(geometry.offset(ofPage: page))
            let whole = offset <= start && offset + count >= start + pageSize
            // A page the freeze needs is read in, to be saved as it was.
            if writing && whole && area?.needsSaving(shelf: shelf, offset: start, count: pageSize) != true { continue }
            if !writing { counters.misses += 1 }
            missing.append(page)
        }
        if !writing, let last = missing.last {
            missing += readAhead(after: last, sequential: missing[0] == nextSequential)
            nextSequential = missing[missing.count - 1] + 1
        }
        if !missing.isEmpty {
            try transfer(missing, "reading") { link, pieces in
                for piece in pieces {
                    // Pages allocated in one call, not one fault at a time
                    // inside the transfer's copy (MADV_POPULATE_WRITE).
                    madvise(window(piece.lowerBound), piece.count * pageSize, 23)
                }
                try link.read(pieces.map { piece in
                    (UInt64(piece.lowerBound * pageSize), UnsafeMutableRawBufferPointer(start: window(piece.lowerBound), count: piece.count * pageSize))
                })
                counters.bytesRead += UInt64(missing.count * pageSize)
            }
            for page in missing { state[page] = State.clean.rawValue }
            budget.residentPages.wrappingIncrement(by: missing.count, ordering: .relaxed)
        }
        if let area, let freeze {
            let first = Int(geometry.offset(ofPage: range.lowerBound))
            freeze.saveRemote(area, shelf: shelf, file: file, bytes: first..<first + range.count * pageSize)
        }
    }

    private func markDirtyLocked(_ pages: Range<Int>) {
        for page in pages where state[page] != State.dirty.rawValue {
            if state[page] == State.absent.rawValue { budget.residentPages.wrappingIncrement(ordering: .relaxed) }
            state[page] = State.dirty.rawValue
        }
    }

    /// Pages to fetch with a read that missed up to `last`: none unless
    /// the read follows the last fetch (a sequential reader), then the
    /// absent pages after it, twice as many each time, up to `readAheadBytes`
    /// or a quarter of the cache, whichever is less (more would evict what
    /// it read ahead before the reader gets there).
    private func readAhead(after last: Int, sequential: Bool) -> [Int] {
        let most = min(RemoteShelfCache.readAheadBytes / pageSize, budget.limitPages.load(ordering: .relaxed) / 4)
        readAheadPages = sequential ? min(max(readAheadPages * 2, 1), max(most, 0)) : 0
        var pages: [Int] = []
        var page = last + 1
        while pages.count < readAheadPages, page < geometry.pageCount, state[page] == State.absent.rawValue {
            pages.append(page)
            page += 1
        }
        return pages
    }

    // MARK: Write-back

    /// Writes the dirty pages of `[offset, offset+count)` to the node.
    func writeBack(offset: Int, count: Int) throws {
        try mutex.withLock {
            let dirty = pages(offset, count).filter { state[$0] == State.dirty.rawValue }
            try writeBackLocked(dirty)
        }
    }

    /// Every dirty page to the node (fsync of a whole pool, unmount).
    func writeBackAll() throws {
        try mutex.withLock {
            try writeBackLocked((0..<geometry.pageCount).filter { state[$0] == State.dirty.rawValue })
        }
    }

    private func writeBackLocked(_ dirty: [Int]) throws {
        guard !dirty.isEmpty else { return }
        try transfer(dirty, "writing back") { link, pieces in
            try link.write(pieces.map { piece in
                (UInt64(piece.lowerBound * pageSize), UnsafeRawBufferPointer(start: window(piece.lowerBound), count: piece.count * pageSize))
            })
            counters.bytesWritten += UInt64(dirty.count * pageSize)
        }
        for page in dirty { state[page] = State.clean.rawValue }
    }

    // MARK: Eviction

    /// Drops up to `wanted` pages from the window, least lately used first
    /// (CLOCK): dirty ones are written back first, and kept where that
    /// fails. Returns how many went. Nobody may hold a pointer `prepare`
    /// gave into this shelf meanwhile.
    func evict(_ wanted: Int) -> Int {
        mutex.withLock {
            guard isHeldHere else { return 0 }
            var clean: [Int] = [], dirty: [Int] = []
            var steps = 0
            while clean.count + dirty.count < wanted, steps < 2 * geometry.pageCount {
                let page = hand
                hand = hand + 1 == geometry.pageCount ? 0 : hand + 1
                steps += 1
                guard let s = State(rawValue: state[page]), s != .absent else { continue }
                if clearReferenced(page) { continue }
                if s == .dirty { dirty.append(page) } else { clean.append(page) }
            }
            if !dirty.isEmpty, (try? writeBackLocked(dirty.sorted())) != nil { clean += dirty }
            clean.sort()
            for page in clean { state[page] = State.absent.rawValue }
            budget.residentPages.wrappingDecrement(by: clean.count, ordering: .relaxed)
            for piece in RemoteShelfCache.contiguous(clean, limit: .max) { try? punch(piece) }
            counters.evicted += UInt64(clean.count)
            return clean.count
        }
    }

    // MARK: Checkpoints

    /// Reads `[offset, offset+buffer.count)` of the shelf file for a
    /// checkpoint without filling the cache: the node's bytes, but for the
    /// pages the window holds newer (dirty). Where another process keeps
    /// the cache (the mount), those are read from its window, which this
    /// process maps too, by the state file both share: a page dirty before
    /// or after the node's read comes from the window, and from the node
    /// again if it was written back meanwhile (its window page may be gone).
    /// What the keeper writes after a freeze's instant it saves first.
    func readForCheckpoint(offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard !buffer.isEmpty else { return }
        try mutex.withLock {
            let range = pages(offset, buffer.count)
            let isDirty = { (page: Int) in self.state[page] == State.dirty.rawValue }
            if isHeldHere {
                // Nobody else changes the cache: resident pages are the newest.
                try readFromNode(range.filter { state[$0] == State.absent.rawValue }, offset: offset, into: buffer, byReaderLink: false)
                try readWindow(range.filter { state[$0] != State.absent.rawValue }, offset: offset, into: buffer)
                return
            }
            let dirtyBefore = range.filter(isDirty)
            try readFromNode(Array(range), offset: offset, into: buffer, byReaderLink: true)
            let fromWindow = range.filter { isDirty($0) || dirtyBefore.contains($0) }
            try readWindow(fromWindow, offset: offset, into: buffer)
            try readFromNode(fromWindow.filter { !isDirty($0) }, offset: offset, into: buffer, byReaderLink: true)
        }
    }

    /// The bytes of `pages` that a buffer of the shelf's `count` bytes
    /// from `offset` holds, as offsets in that buffer.
    private func part(of pages: Range<Int>, offset: Int, count: Int) -> Range<Int> {
        let start = Int(geometry.offset(ofPage: pages.lowerBound)), end = Int(geometry.offset(ofPage: pages.upperBound))
        return max(start, offset) - offset..<min(end, offset + count) - offset
    }

    /// Sorted `pages`, by pread, a run of them at a time: a hole of the
    /// window (a page being evicted) is not filled.
    private func readWindow(_ pages: [Int], offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        for piece in RemoteShelfCache.contiguous(pages, limit: .max) {
            let bytes = part(of: piece, offset: offset, count: buffer.count)
            try file.readByFile(at: offset + bytes.lowerBound, into: UnsafeMutableRawBufferPointer(rebasing: buffer[bytes]))
        }
    }

    private func readFromNode(_ pages: [Int], offset: Int, into buffer: UnsafeMutableRawBufferPointer, byReaderLink: Bool) throws {
        guard !pages.isEmpty else { return }
        try transfer(pages, "reading", byReaderLink: byReaderLink) { link, pieces in
            try link.read(pieces.map { piece in
                let bytes = part(of: piece, offset: offset, count: buffer.count)
                return (UInt64(offset + bytes.lowerBound) - geometry.dataOffset, UnsafeMutableRawBufferPointer(rebasing: buffer[bytes]))
            })
            counters.bytesRead += UInt64(pages.count * pageSize)
        }
    }

    private func punch(_ pages: Range<Int>) throws {
        guard !pages.isEmpty else { return }
        try SystemCall.punchHole(file.descriptor, offset: geometry.offset(ofPage: pages.lowerBound),
                                 length: UInt64(pages.count) * geometry.pageSize, path: file.path)
    }

    private func setReferenced(_ page: Int) { referenced[page >> 6] |= 1 << UInt64(page & 63) }

    private func clearReferenced(_ page: Int) -> Bool {
        let bit: UInt64 = 1 << UInt64(page & 63)
        defer { referenced[page >> 6] &= ~bit }
        return referenced[page >> 6] & bit != 0
    }

    // MARK: The node

    /// Runs `body` with the link and `pages` cut into contiguous pieces of
    /// at most `transferBytes`; a failure is EIO naming the node and why.
    private func transfer(_ pages: [Int], _ what: String, byReaderLink: Bool = false,
                          _ body: (RemoteShelfLink, [Range<Int>]) throws -> Void) throws {
        let pieces = RemoteShelfCache.contiguous(pages, limit: max(1, RemoteShelfCache.transferBytes / pageSize))
        if !byReaderLink { try refuseUnlessHeldHere() }
        let now = SystemCall.monotonicNanoseconds()
        if unreachableSince != nil, now - lastAttempt < RemoteShelfCache.retryNanoseconds {
            throw failure("\(what) failed: unreachable since \(SystemCall.utc(unreachableSince!)) (\(lastFailure))")
        }
        lastAttempt = now
        do {
            try body(try byReaderLink ? connectedReaderLink() : connectedLink(), pieces)
            unreachableSince = nil
        } catch {
            if unreachableSince == nil { unreachableSince = Int64(time(nil)) }
            lastFailure = "\(error)"
            throw failure("\(what) \(pages.count) page\(pages.count == 1 ? "" : "s") failed: \(error)")
        }
    }

    private func connectedLink() throws -> RemoteShelfLink {
        if let link { return link }
        let window = UnsafeMutableRawBufferPointer(start: file.pointer(at: Int(geometry.dataOffset), count: Int(geometry.dataBytes)),
                                                   count: Int(geometry.dataBytes))
        link = try connect(window)
        return link!
    }

    /// Registers one page only: the window is the keeper's, and reads go
    /// into the checkpoint's buffers.
    private func connectedReaderLink() throws -> RemoteShelfLink {
        if let readerLink { return readerLink }
        let window = readerWindow ?? UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: pageSize)
        readerWindow = window
        readerLink = try connect(window)
        return readerLink!
    }

    private func connect(_ window: UnsafeMutableRawBufferPointer) throws -> RemoteShelfLink {
        guard let connect = RemoteShelves.connect else {
            throw PoolError.remoteShelf(shelf, node: place.node, reason: "this program cannot reach memory nodes (no PoolNet)")
        }
        return try connect(place, budget.settings.timeoutSeconds, window)
    }

    private func refuseUnlessHeldHere() throws {
        guard isHeldHere else {
            throw failure("another process that has the pool open keeps this shelf's cache (the mount?); use the pool from it")
        }
    }

    private func failure(_ reason: String) -> PoolError {
        .remoteShelf(shelf, node: place.node, reason: reason)
    }

    /// Sorted pages as ranges of consecutive pages, each at most `limit` long.
    static func contiguous(_ pages: [Int], limit: Int) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        for page in pages {
            if let last = pieces.last, last.upperBound == page, last.count < limit {
                pieces[pieces.count - 1] = last.lowerBound..<page + 1
            } else {
                pieces.append(page..<page + 1)
            }
        }
        return pieces
    }

    // MARK: Status

    func status() -> RemoteShelfInfo {
        mutex.withLock {
            var resident = 0, dirty = 0
            for page in 0..<geometry.pageCount {
                if state[page] != State.absent.rawValue { resident += 1 }
                if state[page] == State.dirty.rawValue { dirty += 1 }
            }
            let state = !isHeldHere ? "cached by another process"
                : unreachableSince.map { "unreachable since \(SystemCall.utc($0)) (\(lastFailure))" }
                ?? (link == nil ? "not connected yet" : "up")
            return RemoteShelfInfo(node: place.node, region: place.region, transport: link?.transport ?? "", state: state,
                                   bytesRead: counters.bytesRead, bytesWritten: counters.bytesWritten,
                                   hits: counters.hits, misses: counters.misses, hitRate: counters.hitRate, cachedBytes: UInt64(resident) * geometry.pageSize,
                                   dirtyBytes: UInt64(dirty) * geometry.pageSize, evictedPages: counters.evicted)
        }
    }

    /// The link closed and the cache left to the next process that opens the pool.
    func close() {
        mutex.withLock {
            link?.close()
            link = nil
            readerLink?.close()
            readerLink = nil
            if isHeldHere { FileLock.unlock(states.descriptor, byte: Layout.LockByte.base) }
            isHeldHere = false
        }
    }
}
