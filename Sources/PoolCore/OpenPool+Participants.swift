#if canImport(Glibc)
import Glibc
#endif

/// Participants: one slot per process that has the pool open, held by a file
/// lock the kernel drops when the process dies. A slot whose state says "in
/// use" but whose lock can be taken belonged to a dead process; whoever finds
/// it finishes or rolls back that process's logged operations and returns
/// the runs its thread caches held.
extension OpenPool {

    private func slotState(_ index: Int) -> UInt64 {
        metadata.atomic(at: Layout.Participants.slot(index) + Layout.Participants.state).load(ordering: .acquiring)
    }

    /// Takes a free slot, recovering it first if a dead process left it.
    /// Global lock held: every taking of a slot's lock, to claim or to
    /// recover it, happens under the global lock, so a slot lock found
    /// taken there belongs to a live process, never to a recovery under way.
    func claimSlotLocked() throws -> Int {
        let fd = metadata.descriptor
        for index in 0..<Layout.Participants.capacity {
            guard FileLock.tryLock(fd, byte: Layout.LockByte.participant(index), .exclusive) else { continue }
            if slotState(index) != 0 { reclaim(index) }
            let base = Layout.Participants.slot(index)
            metadata.store(UInt64(getpid()), at: base + Layout.Participants.pid)
            metadata.store(UInt64(time(nil)), at: base + Layout.Participants.openedAt)
            metadata.atomic(at: base + Layout.Participants.state).store(1, ordering: .releasing)
            metadata.persist(offset: base, count: 64)
            return index
        }
        throw PoolError.tooManyProcesses(name: name, limit: Layout.Participants.capacity)
    }

    func releaseSlot() {
        let base = Layout.Participants.slot(slot)
        metadata.atomic(at: base + Layout.Participants.state).store(0, ordering: .releasing)
        metadata.store(UInt64(0), at: base + Layout.Participants.pid)
        metadata.persist(offset: base, count: 64)
        FileLock.unlock(metadata.descriptor, byte: Layout.LockByte.participant(slot))
    }

    /// Recovers every slot left by a dead process: when it returns, no
    /// half-done step of a dead process remains (see claimSlotLocked).
    func reclaimDeadParticipants() throws {
        try withGlobalLock { reclaimDeadParticipantsLocked() }
    }

    func reclaimDeadParticipantsLocked() {
        let fd = metadata.descriptor
        for index in 0..<Layout.Participants.capacity where index != slot && slotState(index) != 0 {
            let byte = Layout.LockByte.participant(index)
            guard FileLock.tryLock(fd, byte: byte, .exclusive) else { continue }
            defer { FileLock.unlock(fd, byte: byte) }
            reclaim(index)
        }
    }

    /// Runs `body`; if it finds memory in a state only a dead process can
    /// have left (its publish cut short), recovers the dead and runs it again.
    @inline(__always)
    func retryingAfterRecovery<R>(_ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch PoolError.invalidFree(let address, let reason) {
            guard !deadSlots().isEmpty else { throw PoolError.invalidFree(address, reason: reason) }
            try reclaimDeadParticipants()
            return try body()
        }
    }

    /// The pids of the processes that have the pool open now.
    func livePids() -> [Int32] { liveSlots().map(participantPid) }

    /// The slots of the processes that have the pool open now.
    func liveSlots() -> [Int] {
        (0..<Layout.Participants.capacity).filter { index in
            slotState(index) != 0 && isLiveSlot(index)
        }
    }

    func isLiveSlot(_ index: Int) -> Bool {
        index == slot || FileLock.isHeld(metadata.descriptor, byte: Layout.LockByte.participant(index))
    }

    func participantPid(_ index: Int) -> Int32 {
        Int32(truncatingIfNeeded: metadata.load(UInt64.self, at: Layout.Participants.slot(index) + Layout.Participants.pid))
    }

    /// Slots that say "in use" though nobody holds their lock.
    func deadSlots() -> [Int] {
        (0..<Layout.Participants.capacity).filter { index in
            index != slot && slotState(index) != 0
                && !FileLock.isHeld(metadata.descriptor, byte: Layout.LockByte.participant(index))
        }
    }

    /// Finishes a dead process's logged operations, returns its cached runs
    /// and frees its slot. Global lock held. Returns the pages it returned.
    @discardableResult
    func reclaim(_ index: Int) -> Int {
        for lane in 0..<Layout.Participants.lanes {
            replayLog(slot: index, lane: lane)
            metadata.atomic(at: Layout.Participants.epoch(index, lane)).store(0, ordering: .releasing)
        }
        adoptOrphanedSpans(ofSlot: index)
        var returned = 0
        for shelf in shelves.all {
            shelf.forEachHead { page, entry in
                if entry.kind == .cached && entry.owner == index {
                    shelf.releaseRun(at: page, length: entry.length)
                    returned += entry.length
                }
            }
        }
        let base = Layout.Participants.slot(index)
        metadata.atomic(at: base + Layout.Participants.state).store(0, ordering: .releasing)
        metadata.store(UInt64(0), at: base + Layout.Participants.pid)
        metadata.persist(offset: base, count: 64)
        return returned
    }

    // MARK: Intent logs

    enum LoggedOperation: UInt64 {
        /// Allocate a run and store its address at a destination word.
        case publish = 1
        /// Clear a destination word and free the run it pointed at.
        case clear = 2
        /// Take a heap block and store its address.
        case publishObject = 3
        /// Store a large heap object's address and mark its run allocated.
        case publishLarge = 4
        /// Clear a destination word and free the heap object it held.
        case clearObject = 5
    }

    /// Runs `body` with this thread's log record (or the shared one).
    func withIntentLog<R>(_ cache: UnsafeThreadCache, _ body: (Int) throws -> R) rethrows -> R {
        if cache.lane > 0 { return try body(Layout.Participants.log(slot, cache.lane)) }
        return try sharedLogMutex.withLock { try body(Layout.Participants.log(slot, 0)) }
    }

    func writeLog(_ record: Int, _ operation: LoggedOperation, destination: GlobalAddress,
                  address: GlobalAddress, count: Int) {
        metadata.store(destination.rawValue, at: record + Layout.Participants.logDestination)
        metadata.store(address.rawValue, at: record + Layout.Participants.logAddress)
        metadata.store(UInt64(count), at: record + Layout.Participants.logCount)
        metadata.atomic(at: record + Layout.Participants.logOperation).store(operation.rawValue, ordering: .releasing)
        metadata.persist(offset: record, count: Layout.Participants.logSize)
    }

    func clearLog(_ record: Int) {
        metadata.atomic(at: record + Layout.Participants.logOperation).store(0, ordering: .releasing)
        metadata.persist(offset: record, count: 8)
    }

    /// Redoes (publish) or completes (clear) what a log record says.
    private func replayLog(slot owner: Int, lane: Int) {
        let record = Layout.Participants.log(owner, lane)
        guard let operation = LoggedOperation(rawValue: metadata.load(UInt64.self, at: record + Layout.Participants.logOperation)) else {
            clearLog(record)
            return
        }
        defer { clearLog(record) }
        let destination = GlobalAddress(rawValue: metadata.load(UInt64.self, at: record + Layout.Participants.logDestination))
        let address = GlobalAddress(rawValue: metadata.load(UInt64.self, at: record + Layout.Participants.logAddress))
        let count = Int(metadata.load(UInt64.self, at: record + Layout.Participants.logCount))
        guard let word = try? dataWord(destination) else { return }
        if operation.rawValue >= LoggedOperation.publishObject.rawValue {
            return replayHeapLog(operation, owner: owner, destination: word, address: address, heap: count)
        }
        guard let (shelf, page) = try? locateRun(address) else { return }
        let allocated = PageEntry.allocated(length: count, tag: .pages)
        let cached = PageEntry.cached(length: count, owner: owner)
        switch operation {
        case .publish:
            // Only a run the dead process still held is unfinished (once it
            // was allocated, others may have freed it through the word since).
            // Finished unless someone else's address got into the word first.
            guard shelf.entry(page) == cached else { return }
            if word.compareExchange(expected: 0, desired: address.rawValue).exchanged || word.load() == address.rawValue {
                shelf.setEntry(page, allocated)
            }
        case .clear:
            // Word cleared but run still allocated: finish the free. Word
            // still holding the run: the free never began; nothing to undo.
            if word.load() != address.rawValue && shelf.entry(page) == allocated { shelf.setEntry(page, cached) }
        default:
            return
        }
    }
}
