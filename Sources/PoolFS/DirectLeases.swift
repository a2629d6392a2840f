import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The mount's side of direct access: the layouts it leases to processes
/// with libpoolfs-direct.so, in the pool's `direct` file
/// (UnsafeDirectArea), and the grace periods that keep their copies safe.
///
/// A client copies only after it entered the epoch (a count by the
/// epoch's parity) and found its layout's generation unchanged. So before
/// pages a layout named are freed or shared, the mount publishes the new
/// layout, then waits until every reader that may have seen the old one
/// has left (`quiesce`): a copy that began before a truncate ends on the
/// old file's bytes, never on a file that reused its pages.
public final class DirectLeases: @unchecked Sendable {
    let area: UnsafeDirectArea
    public let path: String
    /// The pool's directory, where the area and the shelves lie.
    public let directory: String
    /// Layout slots no file holds.
    private let freeSlots: Mutex<[Int]>
    /// One grace period at a time (two flips of the epoch each).
    private let graceMutex = Mutex<Void>(())
    /// One rewrite of a layout at a time: two would each leave the
    /// generation even while the other still writes.
    private let rewriteMutex = Mutex<Void>(())

    /// Makes a fresh `direct` file in `directory`, first retiring one an
    /// earlier mount left (its clients' layouts all change generation, so
    /// they ask again and hear that that mount is gone), and waiting for
    /// its readers: this mount's recovery may free what they copy from.
    public static func create(in directory: String) throws -> DirectLeases {
        let path = "\(directory)/\(UnsafeDirectArea.fileName)"
        let old = open(path, O_RDWR | O_CLOEXEC)
        if old >= 0 {
            if let area = UnsafeDirectArea.mapExisting(descriptor: old) {
                retire(area)
                area.unmap()
            }
            close(old)
            unlink(path)
        }
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DirectAccessError.system("creating \(path)", errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(UnsafeDirectArea.length)) == 0,
              let area = UnsafeDirectArea(descriptor: fd, length: UnsafeDirectArea.length) else {
            let error = errno
            unlink(path)
            throw DirectAccessError.system("mapping \(path)", error)
        }
        area.formatHeader()
        return DirectLeases(area: area, path: path, directory: directory)
    }

    private init(area: UnsafeDirectArea, path: String, directory: String) {
        self.area = area
        self.path = path
        self.directory = directory
        freeSlots = Mutex(Array((0..<area.layoutCount).reversed()))
    }

    /// Tells a client which area its lease is in.
    public var identity: UInt64 { area.header(UnsafeDirectArea.Header.identity).load(ordering: .relaxed) }

    /// At unmount: clients find every layout changed and the area retired.
    public func retire() {
        DirectLeases.retire(area)
        unlink(path)
    }

    private static func retire(_ area: UnsafeDirectArea) {
        area.header(UnsafeDirectArea.Header.retired).store(1, ordering: .releasing)
        for slot in 0..<area.layoutCount {
            let generation = area.layout(slot, UnsafeDirectArea.Layout.generation)
            if generation.load(ordering: .relaxed) != 0 { generation.wrappingIncrement(by: 2, ordering: .sequentiallyConsistent) }
        }
        _ = DirectLeases.quiesce(area, timeoutNanoseconds: 1_000_000_000)
    }

    // MARK: Layouts

    /// A slot for a file's layout; nil when all are taken (its clients go
    /// through the mount).
    func takeSlot() -> Int? { freeSlots.withLock { $0.popLast() } }

    /// The file no longer leased: clients that still look find another
    /// generation and no inode.
    func giveBack(_ slot: Int) {
        rewriting(slot) {
            area.layout(slot, UnsafeDirectArea.Layout.inode).store(0, ordering: .relaxed)
            area.layout(slot, UnsafeDirectArea.Layout.runCount).store(0, ordering: .relaxed)
        }
        freeSlots.withLock { $0.append(slot) }
    }

    /// One run of a published layout.
    struct PublishedRun {
        var start: UInt64
        var length: UInt64
        var address: UInt64
        var writable: Bool
    }

    /// Rewrites the layout in `slot`; readers that copy its old runs
    /// meanwhile see the generation move and read it again.
    func publish(_ slot: Int, inode: UInt64, size: UInt64, flags: UInt64, runs: [PublishedRun]) {
        typealias L = UnsafeDirectArea.Layout
        typealias R = UnsafeDirectArea.Run
        rewriting(slot) {
            area.layout(slot, L.inode).store(inode, ordering: .relaxed)
            area.layout(slot, L.size).store(size, ordering: .relaxed)
            area.layout(slot, L.flags).store(flags, ordering: .relaxed)
            let count = min(runs.count, UnsafeDirectArea.maximumRuns)
            for (index, run) in runs.prefix(count).enumerated() {
                area.run(slot, index, R.start).store(run.start, ordering: .relaxed)
                area.run(slot, index, R.length).store(run.length, ordering: .relaxed)
                area.run(slot, index, R.address).store(run.address, ordering: .relaxed)
                area.run(slot, index, R.flags).store(run.writable ? R.writable : 0, ordering: .relaxed)
            }
            area.layout(slot, L.runCount).store(UInt64(count), ordering: .relaxed)
        }
    }

    /// A size that grew: no run went, so the generation stays.
    func publishSize(_ slot: Int, _ size: UInt64) {
        area.layout(slot, UnsafeDirectArea.Layout.size).store(size, ordering: .releasing)
    }

    /// The generation is odd while `body` writes: a client that reads the
    /// layout meanwhile, or began before, reads it again.
    private func rewriting(_ slot: Int, _ body: () -> Void) {
        let generation = area.layout(slot, UnsafeDirectArea.Layout.generation)
        rewriteMutex.withLock { _ in
            generation.wrappingIncrement(ordering: .sequentiallyConsistent)
            body()
            generation.wrappingIncrement(ordering: .sequentiallyConsistent)
        }
    }

    // MARK: Grace periods

    /// Waits until no client can still be copying through a layout older
    /// than those published now. False if one did not leave within the
    /// timeout (a stopped process): the caller keeps the pages for later.
    func quiesce(timeoutNanoseconds: UInt64 = 200_000_000) -> Bool {
        guard hasClients else { return true }
        return graceMutex.withLock { _ in DirectLeases.quiesce(area, timeoutNanoseconds: timeoutNanoseconds) }
    }

    /// Two flips, as SRCU does: a reader that took the epoch's parity
    /// before the first flip and counted itself after it is caught by the
    /// second.
    private static func quiesce(_ area: UnsafeDirectArea, timeoutNanoseconds: UInt64) -> Bool {
        let deadline = monotonicNanoseconds() + timeoutNanoseconds
        for _ in 0..<2 {
            let old = Int(area.header(UnsafeDirectArea.Header.epoch).loadThenWrappingIncrement(ordering: .sequentiallyConsistent) & 1)
            for client in 0..<area.clientCount {
                let readers = area.client(client, UnsafeDirectArea.Client.readers + old)
                var spins = 0
                while readers.load(ordering: .sequentiallyConsistent) != 0 {
                    // No process: a count left by one that died (a forked
                    // child may count in its dead parent's slot for a moment).
                    if area.client(client, UnsafeDirectArea.Client.pid).load(ordering: .acquiring) == 0 { break }
                    if isGone(area, client) { break }
                    if monotonicNanoseconds() > deadline { return false }
                    spins += 1
                    if spins < 100 { sched_yield() } else { usleep(50) }
                }
            }
        }
        return true
    }

    /// A client whose process died (mid-copy, or without a word): its
    /// slot is cleared for another.
    private static func isGone(_ area: UnsafeDirectArea, _ client: Int) -> Bool {
        let pid = area.client(client, UnsafeDirectArea.Client.pid).load(ordering: .acquiring)
        guard pid != 0, !isAlive(pid) else { return false }
        for field in [UnsafeDirectArea.Client.readers, UnsafeDirectArea.Client.readers + 1] {
            area.client(client, field).store(0, ordering: .relaxed)
        }
        // The counters it served stay in the totals until the slot is taken again.
        area.client(client, UnsafeDirectArea.Client.pid).store(0, ordering: .releasing)
        return true
    }

    /// Whether a live client maps pages of the layout in `slot`, and
    /// whether one maps them writable. Pages a mapped layout gives up wait
    /// until it is unmapped; pages mapped writable are never shared.
    func pins(_ slot: Int) -> (mapped: Bool, writable: Bool) {
        typealias C = UnsafeDirectArea.Client
        var mapped = false, writable = false
        for client in 0..<area.clientCount {
            let pid = area.client(client, C.pid).load(ordering: .sequentiallyConsistent)
            guard pid != 0 else { continue }
            for pin in 0..<C.pinCount where area.client(client, C.pins + 2 * pin).load(ordering: .sequentiallyConsistent) == UInt64(slot) + 1 {
                let count = area.client(client, C.pins + 2 * pin + 1).load(ordering: .sequentiallyConsistent)
                guard count != 0, DirectLeases.isAlive(pid) else { continue }
                mapped = true
                if count >= C.writablePin { writable = true }
            }
        }
        return (mapped, writable)
    }

    /// Whether the process a slot names lives (one we may not signal does).
    private static func isAlive(_ pid: UInt64) -> Bool {
        kill(pid_t(truncatingIfNeeded: pid), 0) == 0 || errno != ESRCH
    }

    private var hasClients: Bool {
        (0..<area.clientCount).contains { area.client($0, UnsafeDirectArea.Client.pid).load(ordering: .relaxed) != 0 }
    }

    private static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    // MARK: Statistics

    /// Processes with direct access now, and what all served directly.
    public struct Statistics: Sendable, Equatable {
        public var processes = 0
        public var reads: UInt64 = 0
        public var writes: UInt64 = 0
        public var bytesRead: UInt64 = 0
        public var bytesWritten: UInt64 = 0
    }

    public func statistics() -> Statistics { DirectLeases.statistics(area) }

    /// What the area in a pool's `directory` counts, while a mount keeps
    /// one there (for `poolfs info`); nil if none does.
    public static func statistics(in directory: String) -> Statistics? {
        let fd = open("\(directory)/\(UnsafeDirectArea.fileName)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // Read-only: mapped for reading alone.
        guard let area = UnsafeDirectArea.mapExisting(descriptor: fd, writable: false) else { return nil }
        defer { area.unmap() }
        guard area.header(UnsafeDirectArea.Header.retired).load(ordering: .acquiring) == 0,
              isAlive(area.header(UnsafeDirectArea.Header.mount).load(ordering: .relaxed)) else { return nil }
        return statistics(area)
    }

    private static func statistics(_ area: UnsafeDirectArea) -> Statistics {
        var total = Statistics()
        typealias C = UnsafeDirectArea.Client
        for client in 0..<area.clientCount {
            let pid = area.client(client, C.pid).load(ordering: .relaxed)
            if pid != 0, isAlive(pid) { total.processes += 1 }
            total.reads &+= area.client(client, C.reads).load(ordering: .relaxed)
            total.writes &+= area.client(client, C.writes).load(ordering: .relaxed)
            total.bytesRead &+= area.client(client, C.bytesRead).load(ordering: .relaxed)
            total.bytesWritten &+= area.client(client, C.bytesWritten).load(ordering: .relaxed)
        }
        return total
    }
}

public enum DirectAccessError: Error, CustomStringConvertible {
    case system(String, Int32)

    public var description: String {
        switch self {
        case let .system(what, code): "\(what): \(String(cString: strerror(code)))"
        }
    }
}
