import Atomics
import CLinux
import PoolThreads
#if canImport(Glibc)
import Glibc
#endif

/// This process's part in freezes (OpenPool+Freeze). Its thread sleeps on
/// the pool's freeze word; when a freeze begins it write-protects this
/// process's mappings of the runs the freeze needs (userfaultfd) and says
/// so in the process's participant slot. Then each write here to a page
/// waits while the thread saves the page as it was, if the freeze still
/// needs it, and lets the write go. Other threads of the process tell it
/// of runs they free, whose pages may be handed out and written by means
/// no protection sees (pwrite, a hole punched, another program's mapping).
///
/// The thread touches no pool page itself, takes no lock another thread
/// holds while it writes a pool page, and allocates nothing while it
/// serves: a thread waiting on its write may hold anything.
final class FreezeHelper: @unchecked Sendable {
    enum Phase: UInt32 { case none = 0, protecting = 1, frozen = 2 }

    /// Generations live in the freeze word's upper 30 bits.
    static func word(generation: UInt32, _ phase: Phase) -> UInt32 { generation << 2 | phase.rawValue }
    static func generation(_ word: UInt32) -> UInt32 { word >> 2 }
    static func phase(_ word: UInt32) -> Phase { Phase(rawValue: word & 3) ?? .none }
    /// Set in a participant's answer when it could not protect its shelves.
    static let failed: UInt32 = 1 << 31

    private unowned let pool: OpenPool
    private var stopEvent: Int32
    private let stopping = ManagedAtomic<Bool>(false)
    private var thread: JoinableThread?
    /// The process the thread runs in: a child forked since has none.
    private var owner: pid_t = 0
    private var started = sem_t()
    private var finished = sem_t()

    /// All below: mutex (the thread, a thread mapping a new shelf, a
    /// thread freeing pages).
    private let mutex = ThreadMutex()
    private var uffd: Int32 = -1
    private var protected: [Shelf] = []
    private var area: FreezeArea?
    /// The last generation this process joined (or tried to).
    private var joined: UInt32 = 0

    init(pool: OpenPool) {
        self.pool = pool
        stopEvent = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        sem_init(&started, 0, 0)
        sem_init(&finished, 0, 0)
    }

    deinit {
        if uffd >= 0 { SystemCall.close(uffd) }
        if stopEvent >= 0 { SystemCall.close(stopEvent) }
        sem_destroy(&started)
        sem_destroy(&finished)
    }

    private var control: UnsafeAtomic<UInt32> { pool.metadata.atomic32(at: Layout.Control.freeze) }

    /// Starts the thread and waits until it has joined a freeze under way,
    /// so nothing this process writes after opening escapes it.
    func start() {
        owner = getpid()
        thread = JoinableThread { [self] in run() }
        if thread != nil { while sem_wait(&started) != 0 && errno == EINTR {} }
    }

    func stop() {
        guard let thread else { return }
        guard owner == getpid() else {
            // Forked: the thread stayed in the parent.
            self.thread = nil
            return
        }
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(stopEvent, &one, 8)
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

    /// In a child forked with the pool open: a thread of its own (the
    /// parent's stayed behind), with a userfaultfd of its own (the
    /// inherited one is the parent's, whose protections the child lost).
    func restartAfterFork() {
        guard thread != nil, owner != getpid() else { return }
        thread = nil
        mutex.withLock {
            if uffd >= 0 { SystemCall.close(uffd) }
            uffd = -1
            protected.removeAll()
            area = nil
            joined = 0
        }
        SystemCall.close(stopEvent)
        stopEvent = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        sem_destroy(&started)
        sem_init(&started, 0, 0)
        sem_destroy(&finished)
        sem_init(&finished, 0, 0)
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
                serve(generation)
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
        let error: Int32 = mutex.withLock {
            joined = generation
            // None: the freeze ended before this process saw it.
            guard let area = FreezeArea.open(in: pool.home, generation: generation) else { return -1 }
            if uffd < 0 {
                uffd = CLinux_uffd_open()
                if uffd < 0 { return errno }
            }
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
        answer(generation, error: error)
    }

    /// Protects here the ranges of a shelf the freeze needs. mutex held.
    private func protect(_ shelf: Shelf) -> Int32 {
        guard shelf.remote == nil, let needed = area?.needed[shelf.index], !needed.isEmpty else { return 0 }
        guard shelf.file.medium == .dram else { return EOPNOTSUPP }
        // Registered whole, protected by range: registering ranges would
        // split the mapping in the kernel once each.
        let start = Int(shelf.geometry.dataOffset)
        var error = shelf.file.register(uffd, offset: start, count: shelf.file.length - start)
        guard error == 0 else { return error }
        protected.append(shelf)
        for range in needed where error == 0 {
            error = shelf.file.writeProtect(uffd, offset: range.lowerBound, count: range.count)
        }
        return error
    }

    private func unprotectAll() {
        for shelf in protected {
            let start = Int(shelf.geometry.dataOffset)
            shelf.file.allowWrites(uffd, offset: start, count: shelf.file.length - start, unregister: true)
        }
        protected.removeAll()
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

    /// Answers writes to protected pages until freeze `generation` ends,
    /// or its freezer dies.
    private func serve(_ generation: UInt32) {
        guard mutex.withLock({ area != nil }) else { return }
        var address: UInt64 = 0
        while !stopping.load(ordering: .acquiring) {
            let word = control.load(ordering: .acquiring)
            guard FreezeHelper.generation(word) == generation, FreezeHelper.phase(word) != .none, freezerLives() else { return }
            guard CLinux_wait_readable(uffd, stopEvent, 50) != 0 else { continue }
            while CLinux_uffd_next_fault(uffd, &address) == 1 {
                if !waitUntilFrozen(generation) { return }
                mutex.withLock { letWrite(at: address) }
            }
        }
    }

    /// Holds writes while the freeze is still protecting other processes:
    /// the instant is when all are. False when it ended instead.
    private func waitUntilFrozen(_ generation: UInt32) -> Bool {
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

    /// Saves the page a write waits on, if needed, and lets it go. mutex held.
    private func letWrite(at address: UInt64) {
        let page = UInt64(FreezeArea.pageBytes)
        for shelf in protected {
            guard let offset = shelf.file.offset(ofAddress: address & ~(page - 1)) else { continue }
            area?.preserve(shelf: shelf.index, offset: offset, from: shelf.file, tag: pool.slot, isAlive: isAlive)
            shelf.file.allowWrites(uffd, offset: offset, count: FreezeArea.pageBytes, unregister: false)
            return
        }
    }

    /// Runs about to be freed (global lock held): pages the freeze still
    /// needs are saved first.
    func willFree(_ shelf: Shelf, pages: Range<Int>) {
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

    private func isAlive(_ slot: Int) -> Bool { pool.isLiveSlot(slot) }

    private func freezerLives() -> Bool {
        let pid = Int32(truncatingIfNeeded: pool.metadata.load(UInt64.self, at: Layout.Control.freezer))
        return pid == getpid() || FileLock.isHeld(pool.metadata.descriptor, byte: Layout.LockByte.freezer)
    }
}
