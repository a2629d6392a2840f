import Atomics
import CLinux
import PoolThreads
#if canImport(Glibc)
import Glibc
#endif

/// This process's part in freezes (OpenPool+Freeze) and lazy region
/// clones (FreezeHelper+LazyClones). Its thread sleeps on the pool's
/// freeze word; when a freeze begins it write-protects this process's
/// mappings of the runs the freeze needs (userfaultfd) and says so in the
/// process's participant slot. Then each write here to a page waits while
/// a second thread, which answers the userfaultfd, saves the page as it
/// was, if the freeze still needs it, and lets the write go. Other threads
/// of the process tell it of runs they free, whose pages may be handed out
/// and written by means no protection sees (pwrite, a hole punched,
/// another program's mapping).
///
/// The threads touch no pool page themselves (they read by pread), take no
/// lock another thread holds while it writes a pool page, and allocate
/// nothing while they serve: a thread waiting on its write may hold anything.
final class FreezeHelper: @unchecked Sendable {
    enum Phase: UInt32 { case none = 0, protecting = 1, frozen = 2 }

    /// Generations live in the freeze word's upper 30 bits.
    static func word(generation: UInt32, _ phase: Phase) -> UInt32 { generation << 2 | phase.rawValue }
    static func generation(_ word: UInt32) -> UInt32 { word >> 2 }
    static func phase(_ word: UInt32) -> Phase { Phase(rawValue: word & 3) ?? .none }
    /// Set in a participant's answer when it could not protect its shelves.
    static let failed: UInt32 = 1 << 31

    unowned let pool: OpenPool
    private var stopEvent: Int32
    let stopping = ManagedAtomic<Bool>(false)
    private var thread: JoinableThread?
    /// Answers faults, from the userfaultfd's opening on.
    private var faultThread: JoinableThread?
    /// The process the thread runs in: a child forked since has none.
    private var owner: pid_t = 0
    /// Forked: no freeze thread here until restartAfterFork.
    private var forkedWithoutFreezes = false
    private var started = sem_t()
    private var finished = sem_t()

    /// All below: mutex (the threads, a thread mapping a new shelf, a
    /// thread freeing pages).
    let mutex = ThreadMutex()
    var uffd: Int32 = -1
    /// Shelves whose data range is registered with the userfaultfd.
    var registered: [Shelf] = []
    private(set) var area: FreezeArea?
    /// The last generation this process joined (or tried to).
    private var joined: UInt32 = 0
    /// The lazy clones this process keeps (their clone registered for
    /// missing pages, their source protected).
    var lazy: [LazyClone] = []
    /// Source pages on their way into clones: nothing is allocated there.
    let fillBuffer = UnsafeMutableRawPointer.allocate(byteCount: FreezeHelper.fillBytes, alignment: FreezeArea.pageBytes)
    static let fillBytes = 64 << 10

    init(pool: OpenPool) {
        self.pool = pool
        stopEvent = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        sem_init(&started, 0, 0)
        sem_init(&finished, 0, 0)
    }

    deinit {
        FreezeHelper.leaveForks(self)
        fillBuffer.deallocate()
        if uffd >= 0 { SystemCall.close(uffd) }
        if stopEvent >= 0 { SystemCall.close(stopEvent) }
        sem_destroy(&started)
        sem_destroy(&finished)
    }

    var control: UnsafeAtomic<UInt32> { pool.metadata.atomic32(at: Layout.Control.freeze) }

    /// Starts the thread and waits until it has joined a freeze under way,
    /// so nothing this process writes after opening escapes it.
    func start() {
        owner = getpid()
        FreezeHelper.enrolForForks(self)
        thread = JoinableThread { [self] in run() }
        if thread != nil { while sem_wait(&started) != 0 && errno == EINTR {} }
    }

    func stop() {
        FreezeHelper.leaveForks(self)
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(stopEvent, &one, 8)
        defer {
            faultThread?.join()
            faultThread = nil
            // Nobody answers faults now: a load of a clone's hole after the
            // close reads zeros rather than waiting for ever.
            mutex.withLock {
                lazy.removeAll()
                unprotectAll()
            }
        }
        // Forked without didFork: no freeze thread of its own.
        guard let thread else { return }
        // A wake can come between the thread's look at `stopping` and its
        // wait on the pool's word (which does not change): wake until it ends.
        var soon = timespec()
        repeat {
            pool.metadata.wake(at: Layout.Control.freeze)
            clock_gettime(CLOCK_REALTIME, &soon)
            soon.tv_nsec += 5_000_000
            if soon.tv_nsec >= 1_000_000_000 { soon.tv_sec += 1; soon.tv_nsec -= 1_000_000_000 }
        } while sem_timedwait(&finished, &soon) != 0
        thread.join()
        self.thread = nil
        leave()
    }

    /// In every child forked with the pool open, before fork returns there
    /// (FreezeHelper+Fork): the parent's threads and userfaultfd stayed
    /// behind, and the inherited mappings lost their registrations, so the
    /// child follows the lazy clones again with a userfaultfd and fault
    /// thread of its own. It takes part in freezes once it calls didFork.
    func forkedChild() {
        guard owner != getpid() else { return }
        owner = getpid()
        thread = nil
        faultThread = nil
        forkedWithoutFreezes = true
        if uffd >= 0 { SystemCall.close(uffd) }
        uffd = -1
        registered.removeAll()
        area = nil
        joined = 0
        lazy.removeAll()
        SystemCall.close(stopEvent)
        stopEvent = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        sem_destroy(&started)
        sem_init(&started, 0, 0)
        sem_destroy(&finished)
        sem_init(&finished, 0, 0)
        FreezeHelper.enrolForForks(self)
        _ = followLazyClonesReturningErrno()
    }

    /// In a child forked with the pool open that goes on as the parent's
    /// successor (a mount going to the background): a freeze thread of its own.
    func restartAfterFork() {
        guard forkedWithoutFreezes else { return }
        forkedWithoutFreezes = false
        start()
    }

    private func run() {
        var first = true
        while !stopping.load(ordering: .acquiring) {
            let word = control.load(ordering: .acquiring)
            let generation = FreezeHelper.generation(word)
            if FreezeHelper.phase(word) != .none, generation != mutex.withLock({ joined }) {
                join(generation)
                if first { first = false; sem_post(&started) }
                awaitEnd(generation)
                leave()
                continue
            }
            if first { first = false; sem_post(&started) }
            pool.metadata.wait(at: Layout.Control.freeze, whileEqualTo: word, milliseconds: 10_000)
        }
        if first { sem_post(&started) }
        sem_post(&finished)
    }

    // MARK: Joining and leaving

    private func join(_ generation: UInt32) {
        // A freeze is how a new lazy clone is announced.
        let failed = followLazyClonesReturningErrno()
        let error: Int32 = failed != 0 ? failed : mutex.withLock {
            joined = generation
            // None: the freeze ended before this process saw it.
            guard let area = FreezeArea.open(in: pool.home, generation: generation) else { return -1 }
            let error = openUffd()
            if error != 0 { return error }
            self.area = area
            for shelf in pool.shelves.all.prefix(area.shelfCount) {
                let error = protect(shelf)
                if error != 0 {
                    unprotectAll()
                    self.area = nil
                    return error
                }
            }
            return 0
        }
        guard error >= 0 else { return }
        // Writes into remote shelves under way when the area came end
        // before the answer; later ones see it (FreezeHelper+RemoteShelves).
        if error == 0 { for shelf in pool.shelves.all { shelf.remote?.waitForWritesUnderWay() } }
        answer(generation, error: error)
    }

    /// The userfaultfd, opened once (with its thread); errno, 0 when open. mutex held.
    func openUffd() -> Int32 {
        guard uffd < 0 else { return 0 }
        uffd = CLinux_uffd_open()
        guard uffd >= 0 else { return errno }
        faultThread = JoinableThread { [self] in serveFaults() }
        return 0
    }

    /// Registers a shelf's data range whole (write protection is then set
    /// by range: registering ranges would split the mapping in the kernel
    /// once each). errno, 0 when done. mutex held.
    func register(_ shelf: Shelf) -> Int32 {
        guard !registered.contains(where: { $0 === shelf }) else { return 0 }
        guard shelf.remote == nil, shelf.file.medium == .dram else { return EOPNOTSUPP }
        let start = Int(shelf.geometry.dataOffset)
        let error = shelf.file.register(uffd, offset: start, count: shelf.file.length - start)
        if error == 0 { registered.append(shelf) }
        return error
    }

    /// Protects here the ranges of a shelf the freeze needs. mutex held.
    private func protect(_ shelf: Shelf) -> Int32 {
        guard shelf.remote == nil, let needed = area?.needed[shelf.index], !needed.isEmpty else { return 0 }
        var error = register(shelf)
        for range in needed where error == 0 {
            error = shelf.file.writeProtect(uffd, offset: range.lowerBound, count: range.count)
        }
        return error
    }

    /// Lets writes go where the freeze protected, but to the sources of
    /// lazy clones (those stay protected); with no lazy clone here, the
    /// shelves leave the userfaultfd. mutex held.
    private func unprotectAll() {
        guard lazy.isEmpty else {
            for shelf in registered {
                for range in area?.needed[safe: shelf.index] ?? [] {
                    for piece in range.subtracting(lazy.compactMap { $0.sourceRange(in: shelf.index) }) {
                        shelf.file.allowWrites(uffd, offset: piece.lowerBound, count: piece.count, unregister: false)
                    }
                }
            }
            return
        }
        for shelf in registered {
            let start = Int(shelf.geometry.dataOffset)
            shelf.file.allowWrites(uffd, offset: start, count: shelf.file.length - start, unregister: true)
        }
        registered.removeAll()
    }

    /// Says in this process's slot that it joined freeze `generation`
    /// (or could not, and why), and wakes the freezer.
    private func answer(_ generation: UInt32, error: Int32) {
        let slot = pool.slot
        guard slot >= 0 else { return }
        let base = Layout.Participants.slot(slot)
        pool.metadata.store(UInt32(bitPattern: error), at: base + Layout.Participants.freezeError)
        pool.metadata.atomic32(at: base + Layout.Participants.frozen)
            .store(generation | (error == 0 ? 0 : FreezeHelper.failed), ordering: .releasing)
        pool.metadata.wake(at: base + Layout.Participants.frozen)
    }

    private func leave() {
        mutex.withLock {
            unprotectAll()
            area = nil
        }
    }

    /// A shelf this process maps while a freeze it joined goes on: one of
    /// the freeze's instant is protected like the others.
    func didMap(_ shelf: Shelf) {
        shelf.freeze = self
        mutex.withLock {
            guard let area, shelf.index < area.shelfCount else { return }
            _ = protect(shelf)
        }
    }

    // MARK: Serving

    /// Until freeze `generation` ends, or its freezer dies.
    private func awaitEnd(_ generation: UInt32) {
        while !stopping.load(ordering: .acquiring) {
            let word = control.load(ordering: .acquiring)
            guard FreezeHelper.generation(word) == generation, FreezeHelper.phase(word) != .none, freezerLives() else { return }
            pool.metadata.wait(at: Layout.Control.freeze, whileEqualTo: word, milliseconds: 50)
        }
    }

    /// The fault thread: answers writes to protected pages and pages a
    /// lazy clone has not filled yet, until the helper stops.
    private func serveFaults() {
        var address: UInt64 = 0
        var protectedWrite: Int32 = 0
        while !stopping.load(ordering: .acquiring) {
            guard CLinux_wait_readable(uffd, stopEvent, 1000) != 0 else { continue }
            while CLinux_uffd_next_fault(uffd, &address, &protectedWrite) == 1 {
                if protectedWrite != 0 {
                    // A freeze still protecting other processes holds it: the instant is when all are.
                    if let generation = mutex.withLock({ area?.generation }) { _ = waitUntilFrozen(generation) }
                    mutex.withLock { letWrite(at: address) }
                } else {
                    mutex.withLock { fillMissing(at: address) }
                }
            }
        }
    }

    /// Holds writes while the freeze is still protecting other processes:
    /// the instant is when all are. False when it ended instead.
    func waitUntilFrozen(_ generation: UInt32) -> Bool {
        while !stopping.load(ordering: .acquiring) {
            let word = control.load(ordering: .acquiring)
            guard FreezeHelper.generation(word) == generation, freezerLives() else { return false }
            switch FreezeHelper.phase(word) {
            case .frozen: return true
            case .none: return false
            case .protecting: pool.metadata.wait(at: Layout.Control.freeze, whileEqualTo: word, milliseconds: 50)
            }
        }
        return false
    }

    /// Saves the page a write waits on where the freeze needs it, fills
    /// the pages of lazy clones it is the source of, and lets it go. mutex held.
    private func letWrite(at address: UInt64) {
        let page = UInt64(FreezeArea.pageBytes)
        for shelf in registered {
            guard let offset = shelf.file.offset(ofAddress: address & ~(page - 1)) else { continue }
            area?.preserve(shelf: shelf.index, offset: offset, from: shelf.file, tag: pool.slot, isAlive: isAlive)
            fillClones(ofSource: shelf, page: offset)
            shelf.file.allowWrites(uffd, offset: offset, count: FreezeArea.pageBytes, unregister: false)
            return
        }
    }

    /// Runs about to be freed (global lock held): pages the freeze still
    /// needs are saved first.
    func willFree(_ shelf: Shelf, pages: Range<Int>) {
        dropLazyClones(in: shelf, pages: pages)
        // A remote shelf's freed pages keep their bytes until written,
        // and its writes save them first.
        guard shelf.remote == nil else { return }
        // Nearly always no freeze: one load, not the mutex.
        let word = control.load(ordering: .acquiring)
        guard FreezeHelper.phase(word) == .frozen else { return }
        mutex.withLock {
            guard let area, FreezeHelper.generation(word) == area.generation else { return }
            let start = Int(shelf.geometry.offset(ofPage: pages.lowerBound))
            let end = Int(shelf.geometry.offset(ofPage: pages.upperBound - 1)) + Int(shelf.geometry.pageSize)
            for offset in stride(from: start, to: end, by: FreezeArea.pageBytes) {
                area.preserve(shelf: shelf.index, offset: offset, from: shelf.file, tag: pool.slot, isAlive: isAlive)
            }
        }
    }

    func isAlive(_ slot: Int) -> Bool { pool.isLiveSlot(slot) }

    private func freezerLives() -> Bool {
        let pid = Int32(truncatingIfNeeded: pool.metadata.load(UInt64.self, at: Layout.Control.freezer))
        return pid == getpid() || FileLock.isHeld(pool.metadata.descriptor, byte: Layout.LockByte.freezer)
    }
}
