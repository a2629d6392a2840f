import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// Freezes: Mome's instant of a whole pool, for checkpoints and region
/// clones that programs keep writing. Under the global lock, the freezer
/// lists the runs it needs (a checkpoint: all but the file system's,
/// which its snapshot freezes; a clone: the region's), asks every process
/// that has the pool open to write-protect its mappings of them
/// (FreezeHelper) and waits until all have; a write meanwhile waits too.
/// That moment is the instant. From then on, a page of those runs is
/// saved into the freeze's area before anything writes or frees it, and
/// the freezer reads each page as it was: from its shelf if nobody saved
/// it, from the area if someone did. Programs pause only on their first
/// write to each such page.
extension OpenPool {

    /// How long the freezer waits for every process to protect its shelves.
    static let freezeDeadline: UInt64 = 2_000_000_000

    /// Freezes the allocated runs whose tags `including` accepts (all
    /// others are written on unseen), runs `atInstant` at the instant
    /// (global lock held, every process's writes to them held), and
    /// returns the freeze's area. End it with `thaw()`, whatever happens.
    func freeze<R>(including: (PageEntry.Tag?) -> Bool, atInstant body: () throws -> R) throws -> (FreezeArea, R) {
        let fd = metadata.descriptor
        guard FileLock.tryLock(fd, byte: Layout.LockByte.freezer, .exclusive) else {
            let pid = metadata.load(UInt64.self, at: Layout.Control.freezer)
            throw PoolError.cannotFreeze(name: name, reason: "process \(pid) is freezing it (a checkpoint or a region clone)")
        }
        do {
            return try withGlobalLock {
                guard isFreezable else {
                    throw PoolError.cannotFreeze(name: name, reason: "a shelf is not shared memory (tmpfs), "
                                                 + "the only memory the kernel write-protects for a freeze")
                }
                let control = metadata.atomic32(at: Layout.Control.freeze)
                var generation = (FreezeHelper.generation(control.load(ordering: .acquiring)) &+ 1) & (1 << 30 - 1)
                if generation == 0 { generation = 1 }
                let needed = shelves.all.map { $0.allocatedRuns(including: including) }
                materializeLazyClones(overlapping: needed)
                let area = try FreezeArea.create(in: home, generation: generation, shelfLengths: shelves.all.map(\.file.length),
                                                 needing: needed)
                metadata.store(UInt64(getpid()), at: Layout.Control.freezer)
                control.store(FreezeHelper.word(generation: generation, .protecting), ordering: .releasing)
                metadata.wake(at: Layout.Control.freeze)
                try waitForEveryProcess(generation)
                let value = try body()
                control.store(FreezeHelper.word(generation: generation, .frozen), ordering: .releasing)
                metadata.wake(at: Layout.Control.freeze)
                freezing.withLock { $0 = area }
                return (area, value)
            }
        } catch {
            endFreeze()
            throw error
        }
    }

    /// Lazy clones whose own pages a freeze needs are filled first and
    /// dropped: a freeze reads and saves runs by their files, where a
    /// clone's hole reads as zeros. Global lock held.
    private func materializeLazyClones(overlapping needed: [[Range<UInt64>]]) {
        guard let lazyClones, !lazyClones.isEmpty, let freezeHelper else { return }
        for entry in lazyClones.entries() {
            let clone = entry.clone.offset..<entry.clone.offset + entry.bytes
            guard needed[safe: entry.clone.shelf]?.contains(where: { $0.overlaps(clone) }) == true else { continue }
            freezeHelper.materialize(entry)
            lazyClones.remove(entry)
        }
    }

    /// Ends this process's freeze, if it has one: writes go on everywhere.
    func thaw() {
        guard freezing.withLock({ $0 != nil }) else { return }
        endFreeze()
    }

    /// Freezer lock held.
    private func endFreeze() {
        freezing.withLock { $0 = nil }
        if metadata.load(UInt64.self, at: Layout.Control.freezer) == UInt64(getpid()) {
            let control = metadata.atomic32(at: Layout.Control.freeze)
            let word = control.load(ordering: .acquiring)
            control.store(FreezeHelper.word(generation: FreezeHelper.generation(word), .none), ordering: .releasing)
            metadata.wake(at: Layout.Control.freeze)
            metadata.store(UInt64(0), at: Layout.Control.freezer)
        }
        FreezeArea.remove(from: home)
        FileLock.unlock(metadata.descriptor, byte: Layout.LockByte.freezer)
    }

    /// Waits until every live process has protected its shelves for
    /// `generation`; throws naming one that could not, or did not in time.
    private func waitForEveryProcess(_ generation: UInt32) throws {
        let deadline = SystemCall.monotonicNanoseconds() + OpenPool.freezeDeadline
        for index in liveSlots() {
            let at = Layout.Participants.slot(index) + Layout.Participants.frozen
            let answer = metadata.atomic32(at: at)
            while true {
                let seen = answer.load(ordering: .acquiring)
                if seen == generation { break }
                let pid = participantPid(index)
                if seen == generation | FreezeHelper.failed {
                    let error = Int32(bitPattern: metadata.load(UInt32.self, at: Layout.Participants.slot(index) + Layout.Participants.freezeError))
                    let cause = error == EPERM ? "userfaultfd is not permitted (it needs root, or sysctl vm.unprivileged_userfaultfd=1)"
                        : SystemCall.message(error)
                    throw PoolError.cannotFreeze(name: name, reason: "process \(pid) cannot write-protect its shelves: \(cause)")
                }
                guard isLiveSlot(index) else { break }
                let now = SystemCall.monotonicNanoseconds()
                guard now < deadline else {
                    throw PoolError.cannotFreeze(name: name, reason: "process \(pid) did not write-protect its shelves within "
                                                 + "\(OpenPool.freezeDeadline / 1_000_000_000) s (is it stopped?)")
                }
                metadata.wait(at: at, whileEqualTo: seen, milliseconds: Int32(min((deadline - now) / 1_000_000 + 1, 50)))
            }
        }
    }

    /// Whether every local shelf is shared memory, the only memory a
    /// freeze can write-protect (a pmem shelf is not).
    var isFreezable: Bool {
        shelves.all.allSatisfy { $0.remote != nil || ($0.file.medium == .dram && CLinux_is_on_tmpfs($0.file.descriptor) != 0) }
    }

    /// Reads `buffer.count` bytes of shelf `index` at `offset` by its file
    /// (not this process's mapping, which would fault each page in), as
    /// they were at the instant while this process freezes the pool.
    /// A remote shelf's data pages come from its node and its cache.
    func readShelf(_ index: Int, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        if let remote = shelves[index]?.remote {
            let (_, start) = try resolve(GlobalAddress(shelf: index, offset: offset), count: buffer.count)
            try remote.readForCheckpoint(offset: start, into: buffer)
        } else {
            try localFile(index, offset: offset, count: buffer.count).readByFile(at: Int(offset), into: buffer)
        }
        freezing.withLock { $0 }?.takeAsTheyWere(shelf: index, offset: Int(offset), into: buffer)
    }

    /// Writes `bytes` into shelf `index` at `offset` by its file: no write
    /// fault where this process's mapping is protected by its own freeze.
    func writeShelf(_ index: Int, offset: UInt64, from bytes: UnsafeRawBufferPointer) throws {
        try localFile(index, offset: offset, count: bytes.count).writeByFile(at: Int(offset), bytes)
    }

    /// The file of local shelf `index`, which `count` bytes at `offset` lie in.
    private func localFile(_ index: Int, offset: UInt64, count: Int) throws -> MappedFile {
        guard let shelf = shelves[index], shelf.remote == nil, offset <= UInt64(shelf.file.length),
              count <= shelf.file.length - Int(offset) else {
            throw PoolError.invalidAddress(GlobalAddress(shelf: index, offset: offset), reason: "\(count) bytes past its shelf")
        }
        return shelf.file
    }
}
